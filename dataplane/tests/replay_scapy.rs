//! `overlayd replay` end to end on pcaps built by scapy: VXLAN, Geneve and GRE encap
//! and decap, FDB and flooding, VLAN actions, priorities, and every drop reason
//! a packet can reach, with the outputs checked field by field by scapy.

use std::path::{Path, PathBuf};
use std::process::Command;

use encap::DropReason;

/// Reasons no packet can reach through `replay`, and why.
const UNREACHABLE: &[(DropReason, &str)] = &[
    (
        DropReason::InnerTooShort,
        "the pipeline refuses frames shorter than Ethernet at parse (eth_truncated) first",
    ),
    (
        DropReason::NoHeadroom,
        "replay frames have 256 bytes of headroom, more than any action needs",
    ),
    (DropReason::UnknownPort, "replay refuses an --input port that is not configured"),
    (DropReason::TxRingFull, "an I/O backend's reason; files never fill"),
    (DropReason::NoFreeFrame, "replay sizes its frame pool for the largest flood list"),
    (DropReason::PortNotAttached, "an I/O backend's reason; replay writes every port to a file"),
    (DropReason::TxFailed, "an io_uring backend's reason: a write the kernel refused; files never refuse"),
    (
        DropReason::OffloadInvalid,
        "virtio-net headers come only from TAP and packet sockets; their checks are io::virtio and io::gso unit tests",
    ),
    (DropReason::RxTooLarge, "an io_uring backend's reason; replay frames fit their buffers"),
    (
        DropReason::L4ChecksumBad,
        "an I/O reason: checksums are settled where frames arrive without their checksum state (AF_XDP); its checks are encap::settle unit tests and netns tests",
    ),
    (DropReason::L4Truncated, "an I/O reason, with l4_checksum_bad; checked by encap::settle unit tests"),
];

fn python() -> &'static str {
    let p = "/usr/bin/python3";
    let ok = Command::new(p)
        .args(["-c", "import scapy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{p} cannot import scapy: run scripts/setup.sh (installs python3-scapy)");
    p
}

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

#[test]
fn replay_cases_built_and_checked_by_scapy() {
    let py = python();
    let dir = std::env::temp_dir().join(format!("overlayd-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gen = Command::new(py).arg(here().join("cases.py")).arg("gen").arg(&dir).output().unwrap();
    assert!(gen.status.success(), "cases.py gen: {}", String::from_utf8_lossy(&gen.stderr));
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 50, "only {} cases", cases.len());

    let mut failures = Vec::new();
    let mut reached = std::collections::HashSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let port = c["port"].as_str().unwrap();
        for r in c["drops"].as_object().unwrap().keys() {
            reached.insert(r.clone());
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlayd"));
        cmd.arg("replay").arg("--config").arg(here().join("config.toml")).arg("--json");
        cmd.arg("--input").arg(format!("{port}={}", dir.join(format!("{name}.pcap")).display()));
        for p in ["wl0", "wl1", "up0"] {
            cmd.arg("--output")
                .arg(format!("{p}={}", dir.join(format!("{name}.out.{p}.pcap")).display()));
        }
        let out = cmd.output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: overlayd replay failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        std::fs::write(dir.join(format!("{name}.result.json")), &out.stdout).unwrap();
        let chk = Command::new(py)
            .arg(here().join("cases.py"))
            .args(["check"])
            .arg(&dir)
            .arg(name)
            .output()
            .unwrap();
        if !chk.status.success() {
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&chk.stderr).trim()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Every drop reason is either reached by a case or explained above.
    for r in DropReason::ALL {
        let explained = UNREACHABLE.iter().any(|(u, _)| u == r);
        assert!(
            reached.contains(r.name()) != explained,
            "{}: {}",
            r.name(),
            if explained { "reached, but listed as unreachable" } else { "no case reaches it" }
        );
    }
}
