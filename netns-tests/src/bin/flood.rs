//! A bounded UDP flood with sequence numbers, and the sink that counts it
//! (the restart and upgrade tests: overlayd_restart.rs). Python cannot send
//! or count 100 000 packets a second; this can.
//!
//! ```text
//! flood send SRC_IP DST_IP:PORT PPS SECONDS [WARM]   prints: sent N retried R seconds S warm W forgone F
//! flood sink BIND_IP:PORT SECONDS STOP_FILE [FROM]   prints: received N max S missing M gap_ms G
//! ```
//!
//! Every datagram carries `ovlflood`, a u64 sequence number and the send
//! time; all come from one socket, so they are one flow. The sender paces
//! in slices of 1 ms and never runs past SECONDS; with WARM, it first sends
//! WARM datagrams one a millisecond and pauses half a second (the flow is
//! established, and in the XDP tier, before the flood starts; they count
//! in N, not in SECONDS). The sink stops at SECONDS, or 1 s after STOP_FILE
//! appears. A sender that falls more than 1 ms behind (held off the CPU)
//! forgoes the rest rather than send it in one burst (F). With FROM, the
//! sink's longest silence counts from sequence number FROM on (after the
//! sender's warm-up and pause).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"ovlflood";

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("send") if a.len() == 6 || a.len() == 7 => {
            let warm = a.get(6).map_or(0, |w| w.parse().expect("WARM"));
            send(&a[2], &a[3], &a[4], &a[5], warm)
        }
        Some("sink") if a.len() == 5 || a.len() == 6 => {
            let from = a.get(5).map_or(0, |f| f.parse().expect("FROM"));
            sink(&a[2], &a[3], &a[4], from)
        }
        _ => {
            eprintln!("usage: flood send SRC_IP DST:PORT PPS SECONDS [WARM] | flood sink BIND:PORT SECONDS STOP_FILE [FROM]");
            std::process::exit(2);
        }
    }
}

fn send(src: &str, dst: &str, pps: &str, secs: &str, warm: u64) {
    let dst: SocketAddr = dst.parse().expect("DST:PORT");
    let pps: u64 = pps.parse().expect("PPS");
    let secs: f64 = secs.parse().expect("SECONDS");
    let s = UdpSocket::bind((src, 0)).expect("bind");
    s.connect(dst).expect("connect");
    set_buf(&s, libc::SO_SNDBUFFORCE);
    let mut buf = [0u8; 64];
    buf[..8].copy_from_slice(MAGIC);
    let mut seq: u64 = 0;
    let mut failed = 0u64;
    while seq < warm {
        buf[8..16].copy_from_slice(&seq.to_be_bytes());
        if s.send(&buf).is_ok() {
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if warm > 0 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut batch = Batch::new();
    let t0 = Instant::now();
    // A sender held off the CPU does not make up for it in one burst (which
    // would overflow the veth's XDP ring, 256 frames, before any program
    // sees the frames): at most 1 ms' worth at once; the rest is forgone,
    // and the rate printed is what was sent.
    let cap = (pps / 1000).max(1);
    let mut forgone = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        // Due by now at `pps`, in slices of 1 ms.
        let mut due = warm + (t0.elapsed().as_secs_f64() * pps as f64) as u64 - forgone;
        if due > seq + cap {
            forgone += due - (seq + cap);
            due = seq + cap;
        }
        if seq >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while seq < due {
            let now = t0.elapsed().as_nanos() as u64;
            let n = batch.fill(seq, due - seq, now);
            // ENOBUFS from a full queue is a send we retry, not a loss to blame on overlayd.
            match batch.send(&s, n) {
                Ok(sent) => seq += sent as u64,
                Err(_) => {
                    failed += 1;
                    std::thread::yield_now();
                }
            }
        }
    }
    println!(
        "sent {seq} retried {failed} seconds {:.3} warm {warm} forgone {forgone}",
        t0.elapsed().as_secs_f64()
    );
}

/// Datagrams sent with one `sendmmsg`: a system call per datagram is what
/// kept a sender on a busy 2-core VM well under 100 000 a second.
const BATCH: usize = 64;

struct Batch {
    bufs: Box<[[u8; 64]; BATCH]>,
}

impl Batch {
    fn new() -> Batch {
        let mut bufs = Box::new([[0u8; 64]; BATCH]);
        for b in bufs.iter_mut() {
            b[..8].copy_from_slice(MAGIC);
        }
        Batch { bufs }
    }

    /// Numbers up to `want` datagrams from `seq` on; returns how many.
    fn fill(&mut self, seq: u64, want: u64, now: u64) -> usize {
        let n = (want as usize).min(BATCH);
        for (i, b) in self.bufs[..n].iter_mut().enumerate() {
            b[8..16].copy_from_slice(&(seq + i as u64).to_be_bytes());
            b[16..24].copy_from_slice(&now.to_be_bytes());
        }
        n
    }

    /// Sends the first `n` on the connected socket `s`: how many went.
    fn send(&mut self, s: &UdpSocket, n: usize) -> std::io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self.bufs[..n]
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `n` headers, each pointing at one iovec over a live
        // buffer; all outlive the call.
        let r = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

fn set_buf(s: &UdpSocket, opt: libc::c_int) {
    let v: libc::c_int = 64 << 20;
    // SAFETY: a valid int option of the size passed, on our socket.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn sink(bind: &str, secs: &str, stop: &str, from: usize) {
    let s = UdpSocket::bind(bind).expect("bind");
    set_buf(&s, libc::SO_RCVBUFFORCE);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    std::fs::write(format!("{stop}.ready"), b"").expect("ready file");
    let secs: f64 = secs.parse().expect("SECONDS");
    let t0 = Instant::now();
    let mut seen: Vec<bool> = Vec::new();
    let (mut got, mut last, mut gap) = (0u64, None::<Instant>, Duration::ZERO);
    let mut stop_seen: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    while t0.elapsed().as_secs_f64() < secs {
        if stop_seen.is_none() && std::path::Path::new(stop).exists() {
            stop_seen = Some(Instant::now());
        }
        if stop_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        let Ok(n) = s.recv(&mut buf) else { continue };
        if n < 24 || &buf[..8] != MAGIC {
            continue;
        }
        let seq = u64::from_be_bytes(buf[8..16].try_into().unwrap()) as usize;
        if seq >= seen.len() {
            seen.resize(seq + 1, false);
        }
        if !seen[seq] {
            got += 1;
            seen[seq] = true;
        }
        if seq < from {
            continue;
        }
        let now = Instant::now();
        if let Some(l) = last {
            gap = gap.max(now - l);
        }
        last = Some(now);
    }
    let missing = seen.iter().filter(|s| !**s).count();
    println!(
        "received {got} max {} missing {missing} gap_ms {:.1}",
        seen.len() as i64 - 1,
        gap.as_secs_f64() * 1e3
    );
}
