//! pcapng files, written: one section, one interface block per port, packets
//! with their direction and a comment, and interface statistics at the end.
//! `overlayd replay` writes its outputs with it, and live captures stream it.
//! Blocks are encoded by `pcap-parser` (little-endian); timestamps are in
//! nanoseconds (`if_tsresol` 9) on every interface.

use std::borrow::Cow;
use std::io::{self, Write};

use pcap_parser::{
    EnhancedPacketBlock, InterfaceDescriptionBlock, InterfaceStatisticsBlock, Linktype, OptionCode,
    PcapNGOption, SectionHeaderBlock, ToVec,
};

use super::pcap::gen_error;

/// The snapshot length declared for every interface.
pub const SNAPLEN: u32 = 65535;

/// Which way a packet crossed its interface (the `epb_flags` direction bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One packet to write.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The interface, as `add_interface` numbered it.
    pub interface: u32,
    pub ts_ns: u64,
    /// Its length on the wire; `data` may be shorter (snapshot length).
    pub orig_len: u32,
    pub data: &'a [u8],
    pub direction: Option<Direction>,
    pub comment: Option<&'a str>,
}

/// What an interface's statistics block says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Packets the capture saw on the interface but could not record
    /// (`isb_osdrop`).
    pub dropped: u64,
    /// Packets written for the interface (`isb_usrdeliv`).
    pub delivered: u64,
}

fn option(code: OptionCode, value: Vec<u8>) -> PcapNGOption<'static> {
    PcapNGOption { code, len: value.len() as u16, value: Cow::Owned(value) }
}

/// A string option; longer strings are cut at the format's 65535 bytes.
fn text(code: OptionCode, s: &str) -> PcapNGOption<'static> {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    option(code, s.as_bytes()[..end].to_vec())
}

/// A timestamp in nanoseconds as the two words pcapng stores.
fn words(ts_ns: u64) -> (u32, u32) {
    ((ts_ns >> 32) as u32, ts_ns as u32)
}

fn time_option(code: OptionCode, ts_ns: u64) -> PcapNGOption<'static> {
    let (high, low) = words(ts_ns);
    let mut v = high.to_le_bytes().to_vec();
    v.extend_from_slice(&low.to_le_bytes());
    option(code, v)
}

/// Writes one pcapng section.
pub struct PcapNgWriter<W: Write> {
    inner: W,
    interfaces: u32,
}

impl<W: Write> PcapNgWriter<W> {
    /// Starts the section; `application` names the writer (`shb_userappl`).
    pub fn new(mut inner: W, application: &str) -> io::Result<Self> {
        let mut shb = SectionHeaderBlock {
            block_type: 0,
            block_len1: 0,
            bom: 0,
            major_version: 1,
            minor_version: 0,
            section_len: -1,
            options: vec![text(OptionCode::ShbUserAppl, application)],
            block_len2: 0,
        };
        inner.write_all(&shb.to_vec().map_err(gen_error)?)?;
        Ok(PcapNgWriter { inner, interfaces: 0 })
    }

    /// Declares an Ethernet interface; returns its number.
    pub fn add_interface(&mut self, name: &str, description: &str) -> io::Result<u32> {
        let mut options = vec![text(OptionCode::IfName, name)];
        if !description.is_empty() {
            options.push(text(OptionCode::IfDescription, description));
        }
        let mut idb = InterfaceDescriptionBlock {
            block_type: 0,
            block_len1: 0,
            linktype: Linktype::ETHERNET,
            reserved: 0,
            snaplen: SNAPLEN,
            options,
            block_len2: 0,
            if_tsresol: 9,
            if_tsoffset: 0,
        };
        self.inner.write_all(&idb.to_vec().map_err(gen_error)?)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// How many interfaces were declared.
    pub fn interfaces(&self) -> u32 {
        self.interfaces
    }

    pub fn write_packet(&mut self, p: &Packet<'_>) -> io::Result<()> {
        let mut options = Vec::new();
        if let Some(c) = p.comment {
            options.push(text(OptionCode::Comment, c));
        }
        if let Some(d) = p.direction {
            let flags: u32 = match d {
                Direction::Inbound => 1,
                Direction::Outbound => 2,
            };
            // epb_flags
            options.push(option(OptionCode(2), flags.to_le_bytes().to_vec()));
        }
        let (ts_high, ts_low) = words(p.ts_ns);
        let mut epb = EnhancedPacketBlock {
            block_type: 0,
            block_len1: 0,
            if_id: p.interface,
            ts_high,
            ts_low,
            caplen: p.data.len() as u32,
            origlen: p.orig_len.max(p.data.len() as u32),
            data: p.data,
            options,
            block_len2: 0,
        };
        self.inner.write_all(&epb.to_vec().map_err(gen_error)?)
    }

    pub fn write_stats(&mut self, interface: u32, s: &InterfaceStats) -> io::Result<()> {
        let (ts_high, ts_low) = words(s.end_ns);
        let mut isb = InterfaceStatisticsBlock {
            block_type: 0,
            block_len1: 0,
            if_id: interface,
            ts_high,
            ts_low,
            options: vec![
                time_option(OptionCode::IsbStartTime, s.start_ns),
                time_option(OptionCode::IsbEndTime, s.end_ns),
                option(OptionCode::IsbOsDrop, s.dropped.to_le_bytes().to_vec()),
                option(OptionCode::IsbUsrDeliv, s.delivered.to_le_bytes().to_vec()),
            ],
            block_len2: 0,
        };
        self.inner.write_all(&isb.to_vec().map_err(gen_error)?)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Counts, as a capture stream passes, its packets and what its last
/// statistics blocks say was lost (`isb_osdrop`, per interface).
#[derive(Debug, Default)]
pub struct StreamSummary {
    pending: Vec<u8>,
    pub packets: u64,
    lost: Vec<u64>,
    /// Bytes that were not pcapng: counting stopped there.
    pub garbled: bool,
}

impl StreamSummary {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.garbled {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match pcap_parser::parse_block_le(&self.pending[used..]) {
                Ok((rest, block)) => {
                    match block {
                        pcap_parser::Block::EnhancedPacket(_) => self.packets += 1,
                        pcap_parser::Block::InterfaceStatistics(isb) => {
                            let i = isb.if_id as usize;
                            let dropped = isb
                                .options
                                .iter()
                                .find(|o| o.code == OptionCode::IsbOsDrop)
                                .and_then(|o| o.as_bytes().ok())
                                .and_then(|v| v.get(..8)?.try_into().ok())
                                .map(u64::from_le_bytes);
                            if let Some(d) = dropped {
                                if self.lost.len() <= i {
                                    self.lost.resize(i + 1, 0);
                                }
                                self.lost[i] = d;
                            }
                        }
                        _ => {}
                    }
                    used = self.pending.len() - rest.len();
                }
                Err(pcap_parser::nom::Err::Incomplete(_)) => break,
                Err(_) => {
                    self.garbled = true;
                    break;
                }
            }
        }
        self.pending.drain(..used);
    }

    /// The bytes of a block not complete yet.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Packets selected but not recorded, over all interfaces.
    pub fn lost(&self) -> u64 {
        self.lost.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pcap::{PcapReader, Record};

    #[test]
    fn packets_written_are_read_back_with_their_times() {
        let mut w = PcapNgWriter::new(Vec::new(), "test").unwrap();
        assert_eq!(w.add_interface("wl0", "a workload").unwrap(), 0);
        assert_eq!(w.add_interface("up0", "").unwrap(), 1);
        let p = |interface, ts_ns, data: &'static [u8], comment| Packet {
            interface,
            ts_ns,
            orig_len: data.len() as u32,
            data,
            direction: Some(Direction::Inbound),
            comment,
        };
        w.write_packet(&p(0, 1_700_000_000_123_456_789, &[1, 2, 3], Some("in verdict=forwarded")))
            .unwrap();
        w.write_packet(&p(1, 5, &[4; 61], None)).unwrap();
        w.write_stats(0, &InterfaceStats { start_ns: 1, end_ns: 2, dropped: 3, delivered: 1 })
            .unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() % 4, 0);
        let recs = PcapReader::new(&bytes[..]).unwrap().read_all().unwrap();
        assert_eq!(
            recs,
            vec![
                Record { ts_ns: 1_700_000_000_123_456_789, data: vec![1, 2, 3] },
                Record { ts_ns: 5, data: vec![4; 61] },
            ]
        );
    }

    #[test]
    fn a_stream_is_summed_up_as_it_passes() {
        let mut w = PcapNgWriter::new(Vec::new(), "test").unwrap();
        w.add_interface("a", "").unwrap();
        w.add_interface("b", "").unwrap();
        let p = Packet {
            interface: 1,
            ts_ns: 0,
            orig_len: 3,
            data: &[1, 2, 3],
            direction: None,
            comment: Some("x"),
        };
        w.write_packet(&p).unwrap();
        w.write_stats(1, &InterfaceStats { dropped: 2, ..InterfaceStats::default() }).unwrap();
        w.write_packet(&p).unwrap();
        w.write_stats(0, &InterfaceStats { dropped: 1, ..InterfaceStats::default() }).unwrap();
        w.write_stats(1, &InterfaceStats { dropped: 5, ..InterfaceStats::default() }).unwrap();
        let bytes = w.into_inner();
        for step in [1, 5, bytes.len()] {
            let mut s = StreamSummary::default();
            for piece in bytes.chunks(step) {
                s.feed(piece);
            }
            assert!(!s.garbled);
            assert_eq!((s.packets, s.lost()), (2, 6), "step {step}");
        }
    }

    #[test]
    fn long_comments_are_cut_on_a_character_boundary() {
        let long = "é".repeat(40_000);
        let o = text(OptionCode::Comment, &long);
        assert!(o.value.len() <= u16::MAX as usize);
        assert!(std::str::from_utf8(&o.value).is_ok());
    }
}
