//! A bounded UDP flood with sequence numbers, and the sink that counts it
//! (the restart and upgrade tests: overlayd_restart.rs). Python cannot send
//! or count 100 000 packets a second; this can.
//!
//! ```text
//! flood send SRC_IP DST_IP:PORT PPS SECONDS   prints: sent N
//! flood sink BIND_IP:PORT SECONDS STOP_FILE   prints: received N max S missing M gap_ms G
//! ```
//!
//! Every datagram carries `ovlflood`, a u64 sequence number and the send
//! time. The sender paces in slices of 1 ms and never runs past SECONDS;
//! the sink stops at SECONDS, or 1 s after STOP_FILE appears.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"ovlflood";

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("send") if a.len() == 6 => send(&a[2], &a[3], &a[4], &a[5]),
        Some("sink") if a.len() == 5 => sink(&a[2], &a[3], &a[4]),
        _ => {
            eprintln!("usage: flood send SRC_IP DST:PORT PPS SECONDS | flood sink BIND:PORT SECONDS STOP_FILE");
            std::process::exit(2);
        }
    }
}

fn send(src: &str, dst: &str, pps: &str, secs: &str) {
    let dst: SocketAddr = dst.parse().expect("DST:PORT");
    let pps: u64 = pps.parse().expect("PPS");
    let secs: f64 = secs.parse().expect("SECONDS");
    let s = UdpSocket::bind((src, 0)).expect("bind");
    s.connect(dst).expect("connect");
    set_buf(&s, libc::SO_SNDBUFFORCE);
    let mut buf = [0u8; 64];
    buf[..8].copy_from_slice(MAGIC);
    let t0 = Instant::now();
    let mut seq: u64 = 0;
    let mut failed = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        // Due by now at `pps`, in slices of 1 ms.
        let due = (t0.elapsed().as_secs_f64() * pps as f64) as u64;
        if seq >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while seq < due {
            buf[8..16].copy_from_slice(&seq.to_be_bytes());
            let now = t0.elapsed().as_nanos() as u64;
            buf[16..24].copy_from_slice(&now.to_be_bytes());
            // ENOBUFS from a full queue is a send we retry, not a loss to blame on overlayd.
            match s.send(&buf) {
                Ok(_) => seq += 1,
                Err(_) => {
                    failed += 1;
                    std::thread::yield_now();
                }
            }
        }
    }
    println!("sent {seq} retried {failed} seconds {:.3}", t0.elapsed().as_secs_f64());
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

fn sink(bind: &str, secs: &str, stop: &str) {
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
