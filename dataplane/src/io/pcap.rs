//! Capture files, read: classic pcap (tcpdump, `tshark -F pcap`, scapy's
//! `wrpcap`) and pcapng (what tshark, dumpcap and editcap write by default);
//! written: classic pcap here, pcapng in `pcapng.rs`. The offline I/O backend
//! behind `overlayd replay` and the tests.
//!
//! Parsing is `pcap-parser`'s (docs/decisions.md): a streaming reader over a
//! buffer of fixed size, so a corrupt length field can neither make us
//! allocate more than that buffer nor read past it. Only Ethernet interfaces
//! are accepted. Classic files in either byte order and either timestamp
//! resolution; pcapng sections in either byte order, with each interface's
//! timestamp resolution and offset. Only packets are returned: statistics,
//! name resolution and unknown blocks are skipped.

use std::io::{self, Chain, Cursor, Read, Write};

use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{
    Block, LegacyPcapBlock, LegacyPcapReader, Linktype, PcapBlockOwned, PcapHeader, PcapNGReader,
    ToVec,
};

/// Largest record we accept; a corrupt length field must not make us allocate
/// gigabytes.
pub const MAX_RECORD: usize = 256 * 1024;
/// The reader's buffer: the largest record, and room for its block's header
/// and options.
const BUFFER: usize = MAX_RECORD + 64 * 1024;
/// Read before choosing the format: the reader parses the file's header from
/// what its first read returns, so that read must hold all of it.
const PREFIX: usize = 64 * 1024;

const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("reading the capture file: {0}")]
    Io(#[from] io::Error),
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
    #[error("record {index} is larger than the {MAX_RECORD}-byte limit")]
    RecordTooLong { index: u64 },
    #[error("the file ends inside record {0}")]
    Truncated(u64),
    #[error("record {index}: {what}")]
    Malformed { index: u64, what: String },
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time in nanoseconds since the epoch.
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

type Input<R> = Chain<Cursor<Vec<u8>>, R>;

/// The parser of the format the file turned out to be.
enum Blocks<R: Read> {
    Pcap(LegacyPcapReader<Input<R>>),
    PcapNg(PcapNGReader<Input<R>>),
}

/// A pcapng interface as its packets need it.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (`if_tsresol`).
    units: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset: i64,
}

/// What one block was.
enum Parsed {
    Record(Record),
    /// A header, an interface, statistics: no packet.
    Other,
    /// The clean end of the file.
    End,
}

/// What earlier blocks said about the packets that follow.
#[derive(Default)]
struct State {
    /// Classic pcap: timestamps' fraction is in nanoseconds.
    nanos: bool,
    /// pcapng: the interfaces of the current section.
    interfaces: Vec<Interface>,
    /// A simple packet block has no timestamp: it gets the one before it.
    last_ts: u64,
    /// pcapng: the current section is big-endian.
    big_endian: bool,
}

/// Reads the records of a pcap or pcapng file, one at a time.
pub struct PcapReader<R: Read> {
    blocks: Blocks<R>,
    state: State,
    index: u64,
}

impl<R: Read> PcapReader<R> {
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut prefix = vec![0u8; PREFIX];
        let n = read_full(&mut inner, &mut prefix)?;
        prefix.truncate(n);
        let mut magic = [0u8; 4];
        let m = n.min(4);
        magic[..m].copy_from_slice(&prefix[..m]);
        let magic = u32::from_le_bytes(magic);
        let input = Cursor::new(prefix).chain(inner);
        let header_error = |e: pcap_parser::PcapError<&[u8]>| match e {
            pcap_parser::PcapError::Incomplete(_) | pcap_parser::PcapError::UnexpectedEof => {
                PcapError::Truncated(0)
            }
            e => PcapError::Malformed { index: 0, what: format!("file header: {e}") },
        };
        let blocks = match magic {
            PCAPNG_MAGIC => Blocks::PcapNg(PcapNGReader::new(BUFFER, input).map_err(header_error)?),
            m if [MAGIC_US, MAGIC_NS].contains(&m)
                || [MAGIC_US, MAGIC_NS].contains(&m.swap_bytes()) =>
            {
                Blocks::Pcap(LegacyPcapReader::new(BUFFER, input).map_err(header_error)?)
            }
            m => return Err(PcapError::BadMagic(m)),
        };
        let mut r = PcapReader { blocks, state: State::default(), index: 0 };
        if matches!(r.blocks, Blocks::Pcap(_)) {
            // The classic reader gives the file header first: a wrong link
            // type is refused now.
            let header = r.next_block()?;
            debug_assert!(matches!(header, Parsed::Other));
        }
        Ok(r)
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        loop {
            match self.next_block()? {
                Parsed::Record(r) => {
                    self.index += 1;
                    return Ok(Some(r));
                }
                Parsed::Other => {}
                Parsed::End => return Ok(None),
            }
        }
    }

    /// Parses one block.
    fn next_block(&mut self) -> Result<Parsed, PcapError> {
        let index = self.index;
        let (it, ng): (&mut dyn PcapReaderIterator, bool) = match &mut self.blocks {
            Blocks::Pcap(r) => (r, false),
            Blocks::PcapNg(r) => (r, true),
        };
        loop {
            let before = it.data().len();
            if ng {
                check_block_length(it.data(), self.state.big_endian, index)?;
            }
            match it.next() {
                Ok((offset, block)) => {
                    let parsed = self.state.take(block, index);
                    it.consume(offset);
                    return parsed;
                }
                Err(pcap_parser::PcapError::Eof) => return Ok(Parsed::End),
                Err(pcap_parser::PcapError::Incomplete(_)) => {
                    it.refill().map_err(|_| io::Error::other("read failed"))?;
                    // A full buffer that still holds no whole block.
                    if it.data().len() == before && !it.reader_exhausted() {
                        return Err(PcapError::RecordTooLong { index });
                    }
                }
                Err(pcap_parser::PcapError::UnexpectedEof) => {
                    return Err(PcapError::Truncated(index))
                }
                Err(pcap_parser::PcapError::BufferTooSmall) => {
                    return Err(PcapError::RecordTooLong { index })
                }
                Err(pcap_parser::PcapError::ReadError) => {
                    return Err(io::Error::other("read failed").into())
                }
                Err(e) => return Err(PcapError::Malformed { index, what: e.to_string() }),
            }
        }
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

impl State {
    fn take(&mut self, block: PcapBlockOwned<'_>, index: u64) -> Result<Parsed, PcapError> {
        let malformed = |what: String| PcapError::Malformed { index, what };
        let (ts_ns, data) = match block {
            PcapBlockOwned::LegacyHeader(h) => {
                if h.network != Linktype::ETHERNET {
                    return Err(PcapError::LinkType(h.network.0 as u32));
                }
                self.nanos = h.is_nanosecond_precision();
                return Ok(Parsed::Other);
            }
            PcapBlockOwned::Legacy(b) => {
                let frac = if self.nanos { b.ts_usec as u64 } else { b.ts_usec as u64 * 1000 };
                (b.ts_sec as u64 * 1_000_000_000 + frac, b.data.to_vec())
            }
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                self.big_endian = shb.big_endian();
                self.interfaces.clear();
                return Ok(Parsed::Other);
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let units = idb.ts_resolution().ok_or_else(|| {
                    malformed(format!("interface {}: bad if_tsresol", self.interfaces.len()))
                })?;
                self.interfaces.push(Interface {
                    linktype: idb.linktype.0 as u32,
                    units,
                    offset: idb.ts_offset(),
                });
                return Ok(Parsed::Other);
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let i = *self.interfaces.get(epb.if_id as usize).ok_or_else(|| {
                    malformed(format!("packet of undeclared interface {}", epb.if_id))
                })?;
                if i.linktype != LINKTYPE_ETHERNET {
                    return Err(PcapError::LinkType(i.linktype));
                }
                let ts = (epb.ts_high as u64) << 32 | epb.ts_low as u64;
                (i.nanoseconds(ts), epb.packet_data().to_vec())
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let i = *self
                    .interfaces
                    .first()
                    .ok_or_else(|| malformed("simple packet before any interface".into()))?;
                if i.linktype != LINKTYPE_ETHERNET {
                    return Err(PcapError::LinkType(i.linktype));
                }
                (self.last_ts, spb.packet_data().to_vec())
            }
            PcapBlockOwned::NG(_) => return Ok(Parsed::Other),
        };
        if data.len() > MAX_RECORD {
            return Err(PcapError::RecordTooLong { index });
        }
        self.last_ts = ts_ns;
        Ok(Parsed::Record(Record { ts_ns, data }))
    }
}

impl Interface {
    /// A timestamp in this interface's units, as nanoseconds since the epoch.
    fn nanoseconds(&self, ts: u64) -> u64 {
        let units = self.units.max(1) as u128;
        let ns = ts as u128 * 1_000_000_000 / units;
        let ns = ns as i128 + self.offset as i128 * 1_000_000_000;
        ns.clamp(0, u64::MAX as i128) as u64
    }
}

/// Refuses a pcapng block whose length cannot be a block's (shorter than a
/// block's header and trailer, or not a multiple of 4) before the parser
/// sees it: `pcap-parser` 0.17 computes `length - 12` for some block types
/// without checking, which panics in a build with overflow checks.
fn check_block_length(data: &[u8], big_endian: bool, index: u64) -> Result<(), PcapError> {
    let word = |b: &[u8], be: bool| {
        let w: [u8; 4] = b.try_into().expect("four bytes");
        if be {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    if data.len() < 8 {
        return Ok(());
    }
    let be = if word(&data[0..4], false) == PCAPNG_MAGIC {
        // A section header says its own byte order after its length.
        match data.get(8..12) {
            Some(bom) => bom == [0x1a, 0x2b, 0x3c, 0x4d],
            None => return Ok(()),
        }
    } else {
        big_endian
    };
    let len = word(&data[4..8], be);
    if len < 12 || len % 4 != 0 {
        return Err(PcapError::Malformed {
            index,
            what: format!("a block claims {len} bytes, which no block can be"),
        });
    }
    Ok(())
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

/// A serialisation error of `pcap-parser`, as an I/O error.
pub(crate) fn gen_error(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("encoding a capture block: {e:?}"))
}

/// Writes Ethernet records to a classic pcap file (little-endian,
/// microsecond timestamps).
pub struct PcapWriter<W: Write> {
    inner: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut inner: W) -> io::Result<Self> {
        let mut h = PcapHeader::new();
        h.snaplen = 65535;
        h.network = Linktype::ETHERNET;
        inner.write_all(&h.to_vec().map_err(gen_error)?)?;
        Ok(PcapWriter { inner })
    }

    pub fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        let b = LegacyPcapBlock {
            ts_sec: (ts_ns / 1_000_000_000) as u32,
            ts_usec: (ts_ns % 1_000_000_000 / 1000) as u32,
            caplen: data.len() as u32,
            origlen: data.len() as u32,
            data,
        };
        self.inner.write_all(&b.to_vec_raw().map_err(gen_error)?)
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
        assert!(matches!(PcapReader::new(&[][..]), Err(PcapError::BadMagic(0))));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.into_inner();
        bytes.truncate(bytes.len() - 1);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated(0))), "{:?}", r.next_record());
        let mut raw = bytes.clone();
        raw[20] = 113; // Linux cooked capture
        assert!(matches!(PcapReader::new(&raw[..]), Err(PcapError::LinkType(113))));
        let mut huge = bytes;
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&huge[..]).unwrap();
        let e = r.next_record();
        assert!(
            matches!(e, Err(PcapError::RecordTooLong { .. } | PcapError::Truncated(0))),
            "{e:?}"
        );
    }

    /// Reads every record of `bytes`, as replay does: an error or the end,
    /// never a panic, and never more records than bytes allow.
    fn read_to_end(bytes: &[u8]) -> Result<usize, PcapError> {
        let mut r = PcapReader::new(bytes)?;
        let mut n = 0;
        while let Some(rec) = r.next_record()? {
            assert!(rec.data.len() <= MAX_RECORD);
            n += 1;
            assert!(n <= bytes.len() / 12, "more records than the file can hold");
        }
        Ok(n)
    }

    /// Every truncation and many corruptions of a pcap and a pcapng file end
    /// in a named error or fewer records, never a panic or a hang.
    #[test]
    fn corrupt_files_end_in_an_error() {
        let mut classic = PcapWriter::new(Vec::new()).unwrap();
        let mut ng = crate::io::pcapng::PcapNgWriter::new(Vec::new(), "test").unwrap();
        ng.add_interface("a", "first").unwrap();
        ng.add_interface("b", "").unwrap();
        for (i, len) in [60usize, 1, 0, 301].into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|b| b as u8).collect();
            classic.write(i as u64 * 1000, &data).unwrap();
            let p = crate::io::pcapng::Packet {
                interface: (i % 2) as u32,
                ts_ns: i as u64,
                orig_len: len as u32,
                data: &data,
                direction: Some(crate::io::pcapng::Direction::Inbound),
                comment: Some("in verdict=forwarded"),
            };
            ng.write_packet(&p).unwrap();
        }
        let stats = crate::io::pcapng::InterfaceStats::default();
        ng.write_stats(1, &stats).unwrap();
        for file in [classic.into_inner(), ng.into_inner()] {
            assert_eq!(read_to_end(&file).unwrap(), 4);
            for cut in 0..file.len() {
                if let Ok(n) = read_to_end(&file[..cut]) {
                    assert!(n <= 4);
                }
            }
            // A deterministic spread of byte corruptions.
            let mut x: u32 = 0x2545_f491;
            for i in 0..file.len() * 4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let mut bad = file.clone();
                bad[i % file.len()] = [0x00, 0xff, x as u8, 0x80][i / file.len()];
                let _ = read_to_end(&bad);
            }
        }
    }

    /// Found by the capture_file fuzz target: a process information block
    /// of 8 bytes made pcap-parser subtract past zero.
    #[test]
    fn a_block_shorter_than_its_header_is_refused() {
        let mut ng = crate::io::pcapng::PcapNgWriter::new(Vec::new(), "test").unwrap();
        ng.add_interface("a", "").unwrap();
        let mut f = ng.into_inner();
        f.extend_from_slice(&[1, 0, 0, 0x80, 8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Malformed { index: 0, .. })));
        // Also when the file ends right after the length.
        let cut = &f[..f.len() - 7];
        let mut r = PcapReader::new(cut).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Malformed { index: 0, .. })));
        // So is one whose length is not a multiple of 4.
        let n = f.len();
        f[n - 12] = 13;
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Malformed { .. })));
    }

    /// A record of the largest size is read; one byte more is refused
    /// without reading it.
    #[test]
    fn the_record_limit_holds() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &vec![7u8; MAX_RECORD]).unwrap();
        w.write(0, &vec![7u8; MAX_RECORD + 1]).unwrap();
        let bytes = w.into_inner();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), MAX_RECORD);
        assert!(matches!(r.next_record(), Err(PcapError::RecordTooLong { index: 1 })));
    }
}
