//! Runs the committed fuzz seed corpus through the fuzz targets' own checks,
//! so every test run exercises them without libFuzzer (scripts/fuzz.sh runs
//! the real fuzzer for a bounded time).

#[path = "../../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn seed_corpus_passes_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 10] = [
        ("ethernet", checks::ethernet),
        ("ipv4", checks::ipv4),
        ("ipv6", checks::ipv6),
        ("udp", checks::udp),
        ("vxlan", checks::vxlan),
        ("gre", checks::gre),
        ("geneve", checks::geneve),
        ("inner_meta", checks::inner_meta),
        ("decap", checks::decap),
        ("encap_roundtrip", checks::encap_roundtrip),
    ];
    for (name, check) in targets {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            check(&data);
            // every prefix too: truncation is where parsers break
            for cut in 0..data.len().min(96) {
                check(&data[..cut]);
            }
            n += 1;
        }
        assert!(n > 0, "no seeds for {name}");
    }
}
