//! Classic pcap files (the format tcpdump, tshark `-F pcap` and scapy's `wrpcap`
//! write): the offline I/O backend behind `overlayd replay` and the tests.
//!
//! Only Ethernet (link type 1) captures are accepted. Both byte orders and both
//! timestamp resolutions are read; files are written little-endian with
//! microsecond timestamps.

use std::io::{self, Read, Write};

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record we accept; a corrupt length field must not make us allocate
/// gigabytes.
const MAX_RECORD: u32 = 256 * 1024;

/// Why a pcap file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("reading pcap: {0}")]
    Io(#[from] io::Error),
    #[error("not a pcap file (magic {0:#010x}); pcapng is not supported, convert with `editcap -F pcap`")]
    BadMagic(u32),
    #[error("pcap link type {0} is not Ethernet (1)")]
    LinkType(u32),
    #[error("pcap record {index} claims {len} bytes, more than the {MAX_RECORD}-byte limit")]
    RecordTooLong { index: u64, len: u32 },
    #[error("pcap file ends inside record {0}")]
    Truncated(u64),
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time in nanoseconds since the epoch.
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

/// Reads records one at a time.
pub struct PcapReader<R: Read> {
    inner: R,
    swapped: bool,
    nanos: bool,
    index: u64,
}

impl<R: Read> PcapReader<R> {
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        inner.read_exact(&mut h)?;
        let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let (swapped, nanos) = match magic {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            m => return Err(PcapError::BadMagic(m)),
        };
        let r = PcapReader { inner, swapped, nanos, index: 0 };
        let link = r.u32(&h[20..24]);
        if link != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(link));
        }
        Ok(r)
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let v = u32::from_le_bytes(b.try_into().unwrap());
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        match read_full(&mut self.inner, &mut h)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(PcapError::Truncated(self.index)),
        }
        let (sec, frac, caplen) = (self.u32(&h[0..4]), self.u32(&h[4..8]), self.u32(&h[8..12]));
        if caplen > MAX_RECORD {
            return Err(PcapError::RecordTooLong { index: self.index, len: caplen });
        }
        let mut data = vec![0u8; caplen as usize];
        if read_full(&mut self.inner, &mut data)? != data.len() {
            return Err(PcapError::Truncated(self.index));
        }
        self.index += 1;
        let frac_ns = if self.nanos { frac as u64 } else { frac as u64 * 1000 };
        Ok(Some(Record { ts_ns: sec as u64 * 1_000_000_000 + frac_ns, data }))
    }

    /// Every remaining record.
    pub fn read_all(mut self) -> Result<Vec<Record>, PcapError> {
        let mut out = Vec::new();
        while let Some(r) = self.next_record()? {
            out.push(r);
        }
        Ok(out)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes Ethernet records.
pub struct PcapWriter<W: Write> {
    inner: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut inner: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_US.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&h)?;
        Ok(PcapWriter { inner })
    }

    pub fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(data)
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1_500_000_123_000, &[1, 2, 3]).unwrap();
        w.write(2_000_000_000, &[]).unwrap();
        let bytes = w.into_inner();
        let recs = PcapReader::new(&bytes[..]).unwrap().read_all().unwrap();
        assert_eq!(
            recs,
            vec![
                Record { ts_ns: 1_500_000_123_000, data: vec![1, 2, 3] },
                Record { ts_ns: 2_000_000_000, data: vec![] },
            ]
        );
    }

    #[test]
    fn big_endian_nanosecond_files_are_read() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_NS.to_be_bytes());
        f.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1]);
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2, 0xab, 0xcd]);
        let recs = PcapReader::new(&f[..]).unwrap().read_all().unwrap();
        assert_eq!(recs, vec![Record { ts_ns: 1_000_000_005, data: vec![0xab, 0xcd] }]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(PcapReader::new(&[0u8; 24][..]), Err(PcapError::BadMagic(0))));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.into_inner();
        bytes.truncate(bytes.len() - 1);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated(0))));
        let mut raw = bytes.clone();
        raw[20] = 113; // Linux cooked capture
        assert!(matches!(PcapReader::new(&raw[..]), Err(PcapError::LinkType(113))));
        let mut huge = bytes;
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&huge[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::RecordTooLong { .. })));
    }
}
