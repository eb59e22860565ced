//! The state file's integrity with the real `overlayd run --control-only`: a
//! one-bit change that leaves valid JSON is refused at start with a message
//! naming the file, the fault and the way out; `--restore-previous` brings
//! back the last good state and `--start-empty` starts empty on purpose.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dataplane::client::request;

fn overlayd(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlayd"));
    cmd.args(["run", "--control-only", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

/// Starts overlayd and waits until it serves; the caller kills it.
fn serve(dir: &Path, extra: &[&str]) -> Child {
    let mut child = overlayd(dir, extra).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while request(&dir.join("api.sock"), "GET", "/v1/status", &[], None).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "overlayd exited");
        assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not start serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs overlayd expecting it to refuse to start.
fn refused(dir: &Path, extra: &[&str]) -> String {
    let Output { status, stderr, .. } =
        overlayd(dir, extra).stderr(Stdio::piped()).output().unwrap();
    assert!(!status.success(), "overlayd started");
    String::from_utf8_lossy(&stderr).into_owned()
}

fn generation(dir: &Path) -> u64 {
    let r = request(&dir.join("api.sock"), "GET", "/v1/status", &[], None).unwrap();
    r.json()["generation"].as_u64().unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("overlayd-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_changed_state_file_is_refused_and_the_previous_one_restores() {
    let dir = tempdir("flip");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/vxlan.toml");
    let d = serve(&dir, &["--config", example.to_str().unwrap()]);
    // A second accepted change, so a previous state is kept.
    let socket = dir.join("api.sock");
    let mut doc = request(&socket, "GET", "/v1/config", &[], None).unwrap().json();
    doc["rules"][0]["priority"] = 100.into();
    doc["rules"][1]["actions"] = serde_json::json!(["drop"]);
    let body = serde_json::to_vec(&doc).unwrap();
    let r = request(&socket, "PUT", "/v1/config", &[("If-Match", "1")], Some(&body)).unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    stop(d);

    // One bit: a rule's priority 100 -> 101, still valid JSON.
    let state = dir.join("state/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"priority\":100"), "{text}");
    std::fs::write(&state, text.replacen("\"priority\":100", "\"priority\":101", 1)).unwrap();
    let err = refused(&dir, &[]);
    assert!(err.contains(state.to_str().unwrap()), "names the file: {err}");
    assert!(err.contains("does not match its SHA-256 digest"), "says what is wrong: {err}");
    assert!(
        err.contains("overlayd run --restore-previous") && err.contains("--start-empty"),
        "names the way out: {err}"
    );
    assert!(!err.contains("persist"), "{err}");

    // The previous good state: generation 1, as the configuration file had it.
    let d = serve(&dir, &["--restore-previous"]);
    assert_eq!(generation(&dir), 1);
    let restored = request(&socket, "GET", "/v1/config", &[], None).unwrap().json();
    assert_ne!(restored["rules"][1]["actions"], serde_json::json!(["drop"]));
    stop(d);
    let aside: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.refused-"))
        .collect();
    assert_eq!(aside.len(), 1, "the refused file is kept aside");
    // It now starts normally from the restored state.
    let d = serve(&dir, &[]);
    assert_eq!(generation(&dir), 1);
    stop(d);

    // Starting empty on purpose.
    std::fs::write(&state, "{\"schema_version\":1,\"generation\":9}\nsha256:00\n").unwrap();
    let d = serve(&dir, &["--start-empty"]);
    assert_eq!(generation(&dir), 0);
    stop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_up_says_what_failed() {
    let dir = tempdir("unreadable");
    // A state "file" that cannot be read as one.
    std::fs::create_dir_all(dir.join("state/state.json")).unwrap();
    let err = refused(&dir, &[]);
    assert!(err.contains("could not load the stored state"), "{err}");
    assert!(err.contains("state.json"), "{err}");
    assert!(!err.contains("persist"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
