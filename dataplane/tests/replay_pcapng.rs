//! `overlayd replay` reads the pcapng that Wireshark's tools write by default
//! (editcap, tshark, mergecap with one interface per input file) exactly as
//! it reads the same packets in classic pcap, and writes pcapng that tshark
//! reads back with the port as the interface name.

use std::path::{Path, PathBuf};
use std::process::Command;

use dataplane::io::pcap::PcapReader;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

/// Runs a tool that must be installed (scripts/setup.sh installs them).
fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}: run scripts/setup.sh (installs tshark)"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn replay(input: &str, file: &Path, outputs: &[(String, PathBuf)]) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlayd"));
    cmd.arg("replay").arg("--config").arg(here().join("config.toml")).arg("--json");
    cmd.arg("--input").arg(format!("{input}={}", file.display()));
    for (port, path) in outputs {
        cmd.arg("--output").arg(format!("{port}={}", path.display()));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "replay {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn frames(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    PcapReader::new(f).unwrap().read_all().unwrap().into_iter().map(|r| (r.ts_ns, r.data)).collect()
}

#[test]
fn pcapng_from_wiresharks_tools_replays_like_pcap() {
    let dir = std::env::temp_dir().join(format!("overlayd-pcapng-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let gen = Command::new("/usr/bin/python3")
        .arg(here().join("cases.py"))
        .arg("gen")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(gen.status.success(), "cases.py gen: {}", String::from_utf8_lossy(&gen.stderr));
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let ports = ["wl0", "wl1", "up0"];

    for input in ["wl0", "up0"] {
        let files: Vec<String> = cases
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["port"] == input)
            .map(|c| s(&dir.join(format!("{}.pcap", c["name"].as_str().unwrap()))))
            .collect();
        assert!(files.len() >= 10, "{input}: only {} cases", files.len());
        let args = |head: &[&str]| -> Vec<String> {
            head.iter().map(|a| a.to_string()).chain(files.iter().cloned()).collect()
        };
        // The same packets, in order: classic pcap, and pcapng as each tool writes it.
        let pcap = dir.join(format!("{input}.pcap"));
        let a = args(&["-F", "pcap", "-a", "-w", &s(&pcap)]);
        run("mergecap", &a.iter().map(String::as_str).collect::<Vec<_>>());
        let editcap = dir.join(format!("{input}.editcap.pcapng"));
        run("editcap", &[&s(&pcap), &s(&editcap)]);
        let tshark = dir.join(format!("{input}.tshark.pcapng"));
        run("tshark", &["-r", &s(&pcap), "-w", &s(&tshark)]);
        // One interface per input file.
        let mergecap = dir.join(format!("{input}.mergecap.pcapng"));
        let a = args(&["-I", "none", "-a", "-w", &s(&mergecap)]);
        run("mergecap", &a.iter().map(String::as_str).collect::<Vec<_>>());
        let idbs = run("capinfos", &["-M", "-I", &s(&mergecap)]);
        assert!(
            String::from_utf8_lossy(&idbs)
                .contains(&format!("Number of interfaces in file: {}", files.len())),
            "mergecap -I none made one interface per file: {}",
            String::from_utf8_lossy(&idbs)
        );

        let base_out: Vec<(String, PathBuf)> = ports
            .iter()
            .map(|p| (p.to_string(), dir.join(format!("{input}.out.{p}.pcap"))))
            .collect();
        let base = replay(input, &pcap, &base_out);
        assert!(base["tx"].as_u64().unwrap() > 0, "{input}: nothing was forwarded: {base}");
        for file in [&editcap, &tshark, &mergecap] {
            let name = file.file_name().unwrap().to_str().unwrap();
            let outs: Vec<(String, PathBuf)> = ports
                .iter()
                .map(|p| (p.to_string(), dir.join(format!("{name}.out.{p}.pcapng"))))
                .collect();
            let r = replay(input, file, &outs);
            assert_eq!(r, base, "{name}: counters differ from the classic pcap's");
            for ((port, ng), (_, classic)) in outs.iter().zip(&base_out) {
                assert_eq!(frames(ng), frames(classic), "{name}: {port}'s output differs");
                // tshark reads what replay wrote, and names the port.
                let names =
                    run("tshark", &["-r", &s(ng), "-T", "fields", "-e", "frame.interface_name"]);
                let names = String::from_utf8(names).unwrap();
                assert_eq!(names.lines().count(), frames(classic).len(), "{name}: {port}");
                assert!(names.lines().all(|l| l == port), "{name}: {port}: {names}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
