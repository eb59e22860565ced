#![no_main]
//! The capture-file reader behind `overlayd replay` (pcap and pcapng): any
//! input ends in records within the size limit, a named error or the end,
//! never a panic, a hang or a large allocation.

#[allow(dead_code)]
#[path = "../../dataplane/src/io/pcap.rs"]
mod pcap;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = pcap::PcapReader::new(data) else { return };
    let mut n = 0usize;
    while let Ok(Some(rec)) = r.next_record() {
        assert!(rec.data.len() <= pcap::MAX_RECORD);
        n += 1;
        // Every record has a header of at least 12 bytes.
        assert!(n <= data.len() / 12);
    }
});
