//! Runs the committed seeds of the capture_file fuzz target (files written
//! by scapy, editcap and mergecap, and inputs that once broke the reader)
//! through the target's own check, with every prefix of each.

mod pcap {
    pub use dataplane::io::pcap::*;
}

#[path = "../../fuzz/fuzz_targets/capture_check.rs"]
mod capture_check;

#[test]
fn capture_file_seeds_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/capture_file");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for cut in 0..=data.len() {
            capture_check::capture_file(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 6, "only {n} seeds");
}
