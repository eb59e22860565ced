//! The capture_file target's body, also run over the seed corpus by
//! dataplane/tests/capture_file_corpus.rs. Both include it where `crate::pcap`
//! is the reader of dataplane/src/io/pcap.rs.

use crate::pcap::{PcapReader, MAX_RECORD};

/// Any input ends in records within the size limit, a named error or the
/// end: never a panic, a hang or more records than the input can hold.
pub fn capture_file(data: &[u8]) {
    let Ok(mut r) = PcapReader::new(data) else { return };
    let mut n = 0usize;
    while let Ok(Some(rec)) = r.next_record() {
        assert!(rec.data.len() <= MAX_RECORD);
        n += 1;
        // Every record has a header of at least 12 bytes.
        assert!(n <= data.len() / 12);
    }
}
