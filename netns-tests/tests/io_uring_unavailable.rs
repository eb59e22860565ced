//! With io_uring disabled by sysctl, `overlayd run` with an io_uring port
//! refuses to start and says what is missing; nothing is left attached.
//! (Its own test binary: it flips a system-wide setting for a moment.)

use std::process::{Command, Stdio};
use std::time::Duration;

use netns_tests::*;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Puts the sysctl back however the test ends.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn start_fails_naming_io_uring_when_it_is_disabled() {
    if !require_root("start_fails_naming_io_uring_when_it_is_disabled") {
        return;
    }
    let before = match std::fs::read_to_string(SYSCTL) {
        Ok(s) => s.trim().to_string(),
        Err(e) => {
            assert!(!under_ci(), "{SYSCTL}: {e}: this kernel cannot disable io_uring by sysctl");
            eprintln!("skipping: {SYSCTL}: {e}");
            return;
        }
    };
    let ha = Netns::new("ha");
    let (up, ub) = (unique("up"), unique("ub"));
    veth(&ha, &up, &ha, &ub);
    let dir = TempDir::new("nouring");
    let config = format!(
        "[[ports]]\nname = \"up\"\nkind = \"uplink\"\ninterface = \"{up}\"\nbackend = \"af_packet\"\n"
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let bin = project_bin("overlayd");
    let (cfg, state, sock) = (dir.join("config.toml"), dir.join("state"), dir.join("api.sock"));
    let args = [
        bin.to_str().unwrap(),
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--socket",
        sock.to_str().unwrap(),
    ];

    let _restore = Restore(before);
    std::fs::write(SYSCTL, "2").unwrap();
    let mut cmd = ha.command(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("cannot run overlayd");
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(_restore);
    drop(killer);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "overlayd started without io_uring: {log}");
    assert!(
        log.contains("io_uring") && log.contains("io_uring_disabled = 2"),
        "the error does not say io_uring is disabled: {log}"
    );
    assert!(!sock.exists(), "the API socket was left behind");
    assert!(!xdp_attached(&ha));
}
