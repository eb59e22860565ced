#![no_main]
//! The capture-file reader behind `overlayd replay` (pcap and pcapng).

#[allow(dead_code)]
#[path = "../../dataplane/src/io/pcap.rs"]
mod pcap;

#[path = "capture_check.rs"]
mod capture_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| capture_check::capture_file(data));
