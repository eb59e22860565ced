//! The API's side of a capture: drains the recorded packets into pcapng
//! chunks for the HTTP answer, recycles their buffers, and ends the capture
//! when its bounds are reached or the client goes away. It runs on a
//! blocking thread of its own and never touches a worker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{CaptureTap, Session};
use crate::io::pcapng::{InterfaceStats, Packet, PcapNgWriter};

/// How often the records are drained while none are waiting.
const POLL: Duration = Duration::from_millis(2);
/// A chunk is sent when it holds this much, or when the records run out.
const CHUNK: usize = 64 * 1024;
/// While nothing is recorded, an interface statistics block is sent this
/// often: writing is how a client that went away is noticed.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// When a capture ends (besides the client going away).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Streams `session` as pcapng through `send` until a bound is reached,
/// `send` fails (the client is gone) or the tap is closed, then disarms it
/// and ends the stream with each interface's statistics: packets written,
/// and packets selected but not recorded. `describe` gives each port's
/// interface description. Returns the packets written.
pub fn stream(
    tap: &CaptureTap,
    session: Arc<Session>,
    bounds: Bounds,
    describe: impl Fn(&str) -> String,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> u64 {
    let start = Instant::now();
    let start_ns = now_ns();
    let deadline = bounds.duration.map(|d| start + d);
    let limit = bounds.count.unwrap_or(u64::MAX);
    let app = concat!("overlayd ", env!("CARGO_PKG_VERSION"));
    let mut w = PcapNgWriter::new(Vec::with_capacity(CHUNK), app).expect("writing to memory");
    for p in &session.ports {
        w.add_interface(p, &describe(p)).expect("writing to memory");
    }
    let mut delivered = vec![0u64; session.ports.len()];
    let mut written = 0u64;
    let stats = |i: usize, delivered: &[u64]| InterfaceStats {
        start_ns,
        end_ns: now_ns(),
        dropped: session.lost(i as u32),
        delivered: delivered[i],
    };
    let mut client_gone = !send(std::mem::take(w.get_mut()));
    let mut last_send = Instant::now();
    while !client_gone
        && written < limit
        && !tap.closed()
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let mut drained = false;
        while let Some(c) = session.full.pop() {
            drained = true;
            if written < limit {
                let comment = c.comment();
                let p = Packet {
                    interface: c.interface,
                    ts_ns: c.ts_ns,
                    orig_len: c.orig_len,
                    data: &c.data,
                    direction: Some(c.direction),
                    comment: Some(&comment),
                };
                w.write_packet(&p).expect("writing to memory");
                written += 1;
                delivered[c.interface as usize] += 1;
            }
            session.recycle(c);
            if w.get_mut().len() >= CHUNK {
                break;
            }
        }
        if w.get_mut().is_empty() && last_send.elapsed() >= HEARTBEAT && !delivered.is_empty() {
            w.write_stats(0, &stats(0, &delivered)).expect("writing to memory");
        }
        if !w.get_mut().is_empty() {
            client_gone = !send(std::mem::take(w.get_mut()));
            last_send = Instant::now();
        }
        if !drained {
            std::thread::sleep(POLL);
        }
    }
    tap.disarm(&session);
    if !client_gone {
        for i in 0..delivered.len() {
            w.write_stats(i as u32, &stats(i, &delivered)).expect("writing to memory");
        }
        send(std::mem::take(w.get_mut()));
    }
    written
}
