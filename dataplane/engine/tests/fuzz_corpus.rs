//! Runs the committed seeds of the control-plane fuzz targets (`config`,
//! `ops`) through the targets' own checks, so every test run exercises them
//! without libFuzzer (scripts/fuzz.sh runs the real fuzzer).

#[path = "../../../fuzz/fuzz_targets/control_checks.rs"]
mod control_checks;

use std::path::Path;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn config_seeds_pass() {
    let mut accepted = 0;
    for s in seeds("config") {
        control_checks::config(&s);
        let text = String::from_utf8_lossy(&s);
        accepted += engine::model::Config::from_toml(&text).is_ok() as usize;
        // truncations: where a parser meets the end of its input
        for cut in (0..s.len()).step_by(7) {
            control_checks::config(&s[..cut]);
        }
    }
    // the seeds include the valid examples, so the round trip really ran
    assert!(accepted > 0, "no seed is a valid configuration");
}

#[test]
fn ops_seeds_pass() {
    let base = engine::model::Config::from_toml(control_checks::BASE).unwrap();
    let (mut applied, mut refused) = (0, 0);
    for s in seeds("ops") {
        control_checks::ops(&s);
        if let Ok(ops) = serde_json::from_slice::<Vec<engine::ops::Op>>(&s) {
            match engine::ops::apply(&base, &ops) {
                Ok(_) => applied += 1,
                Err(_) => refused += 1,
            }
        }
        for cut in (0..s.len()).step_by(5) {
            control_checks::ops(&s[..cut]);
        }
    }
    assert!(
        applied > 0 && refused > 0,
        "seeds must cover both outcomes: {applied} applied, {refused} refused"
    );
}
