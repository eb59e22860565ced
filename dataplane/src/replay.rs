//! `overlayd replay`: capture files through the real pipeline, with no
//! privileges. Each input file (pcap or pcapng) is read as the traffic of one
//! port; packets are processed in batches of up to 256 in timestamp order
//! across all inputs, and what each port sends is written to its output file:
//! pcapng when its name ends in `.pcapng`, classic pcap otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use encap::PacketBuf;
use engine::compile::RuleSet;
use engine::counters::Snapshot;
use engine::pipeline::{Outputs, Worker};
use engine::trace::NoTrace;

use crate::io::pcap::{PcapError, PcapReader, PcapWriter};
use crate::io::pcapng::{Direction, Packet, PcapNgWriter};

/// Largest batch, as on the live path.
pub const BATCH: usize = 256;
/// Headroom and size of each frame buffer.
const HEADROOM: usize = 256;
const FRAME: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--input {port}: no port named {port:?} in the configuration")]
    UnknownPort { port: String },
    #[error("{path}: {source}")]
    Pcap { path: PathBuf, source: PcapError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: record {index} is {len} bytes, larger than the {max}-byte frame")]
    TooLong { path: PathBuf, index: usize, len: usize, max: usize },
}

/// One port's output file.
enum Output {
    Pcap(PcapWriter<BufWriter<File>>),
    PcapNg(PcapNgWriter<BufWriter<File>>),
}

impl Output {
    fn create(port: &str, path: &Path) -> io::Result<Output> {
        let f = BufWriter::new(File::create(path)?);
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("pcapng")) {
            let mut w = PcapNgWriter::new(f, "overlayd replay")?;
            w.add_interface(port, "overlayd port (replay output)")?;
            Ok(Output::PcapNg(w))
        } else {
            Ok(Output::Pcap(PcapWriter::new(f)?))
        }
    }

    fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Output::Pcap(w) => w.write(ts_ns, data),
            Output::PcapNg(w) => w.write_packet(&Packet {
                interface: 0,
                ts_ns,
                orig_len: data.len() as u32,
                data,
                direction: Some(Direction::Outbound),
                comment: None,
            }),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Output::Pcap(w) => w.into_inner().flush(),
            Output::PcapNg(w) => w.into_inner().flush(),
        }
    }
}

/// The result of a replay: counters, and how many frames each output got.
#[derive(Debug, serde::Serialize)]
pub struct ReplayReport {
    pub generation: u64,
    pub counters: Snapshot,
    pub written: Vec<(String, usize)>,
    pub conserved: bool,
}

/// Replays `inputs` (port name, file) and writes `outputs` (port name, file).
pub fn replay(
    rules: Arc<RuleSet>,
    inputs: &[(String, PathBuf)],
    outputs: &[(String, PathBuf)],
) -> Result<ReplayReport, ReplayError> {
    let port = |name: &str| {
        rules.port_index(name).ok_or_else(|| ReplayError::UnknownPort { port: name.to_string() })
    };
    // (timestamp, input order, port, frame): a stable order across files.
    let mut packets = Vec::new();
    for (name, path) in inputs {
        let p = port(name)?;
        let f = File::open(path).map_err(|e| ReplayError::Io { path: path.clone(), source: e })?;
        let recs = PcapReader::new(std::io::BufReader::new(f))
            .and_then(|r| r.read_all())
            .map_err(|e| ReplayError::Pcap { path: path.clone(), source: e })?;
        for (i, r) in recs.into_iter().enumerate() {
            if r.data.len() > FRAME - HEADROOM {
                let max = FRAME - HEADROOM;
                return Err(ReplayError::TooLong {
                    path: path.clone(),
                    index: i,
                    len: r.data.len(),
                    max,
                });
            }
            packets.push((r.ts_ns, packets.len(), p, r.data));
        }
    }
    packets.sort_by_key(|(ts, order, _, _)| (*ts, *order));

    let mut writers: HashMap<u16, (String, Output, usize)> = HashMap::new();
    for (name, path) in outputs {
        let p = port(name)?;
        let w = Output::create(name, path)
            .map_err(|e| ReplayError::Io { path: path.clone(), source: e })?;
        writers.insert(p, (name.clone(), w, 0));
    }

    let mut worker = Worker::new(Arc::clone(&rules));
    // Every packet may be copied to a few places (flood lists): room for that,
    // allocated once and reused by every batch.
    let mut arena: Vec<Vec<u8>> = (0..BATCH * 4 + 64).map(|_| vec![0u8; FRAME]).collect();
    // Consecutive packets of one port form a batch, up to BATCH.
    let mut i = 0;
    while i < packets.len() {
        let in_port = packets[i].2;
        let ts = packets[i].0;
        let end = (i..packets.len().min(i + BATCH))
            .find(|&j| packets[j].2 != in_port)
            .unwrap_or(packets.len().min(i + BATCH));
        let n = end - i;
        let (rx, spare) = arena.split_at_mut(n);
        let mut batch: Vec<PacketBuf> = rx
            .iter_mut()
            .zip(&packets[i..end])
            .map(|(b, (_, _, _, data))| {
                b[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
                PacketBuf::new(b, HEADROOM, data.len()).expect("frame fits")
            })
            .collect();
        let mut spare_iter = spare.iter_mut();
        let mut pool = || spare_iter.next().and_then(|b| PacketBuf::new(b, HEADROOM, 0));
        let mut out = Outputs::new(rules.ports.len(), n * 4);
        worker.process(in_port, &mut batch, &mut pool, &mut out, ts, &mut NoTrace);
        for (p, frames) in out.ports.iter().enumerate() {
            if let Some((_, w, count)) = writers.get_mut(&(p as u16)) {
                for f in frames {
                    w.write(ts, f.data()).map_err(|e| ReplayError::Io {
                        path: outputs
                            .iter()
                            .find(|o| o.0 == rules.ports[p].name)
                            .map(|o| o.1.clone())
                            .unwrap_or_default(),
                        source: e,
                    })?;
                    *count += 1;
                }
            }
        }
        i = end;
    }
    let mut written: Vec<(String, usize)> = Vec::new();
    for (_, (name, w, count)) in writers {
        w.finish().map_err(|e| ReplayError::Io { path: name.clone().into(), source: e })?;
        written.push((name, count));
    }
    written.sort();
    let counters = Snapshot::sum([&*worker.counters()]);
    Ok(ReplayReport {
        generation: rules.generation,
        conserved: counters.conserved(),
        counters,
        written,
    })
}
