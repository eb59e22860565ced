//! No client can lock the control API out: with 1,000 hostile connections
//! open on each listener (half stalled mid-request, half idle on keep-alive),
//! a fresh request is answered within 100 ms, untrusted TCP clients hold no
//! more than their cap, and the server closes every hostile connection
//! within the documented timeouts. Real `overlayd run --control-only`, real
//! sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::api_server::{CAPS, HEADER_READ_TIMEOUT};
use dataplane::client::request;

const HOSTILE: usize = 1000;
const TOKEN: &str = "0123456789abcdef0123";

struct Daemon {
    child: Child,
    socket: PathBuf,
    tcp: SocketAddr,
    dir: PathBuf,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("overlayd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let socket = dir.join("api.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_overlayd"))
            .args(["run", "--control-only", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--listen-tcp")
            .arg(tcp.to_string())
            .arg("--token-file")
            .arg(dir.join("token"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while request(&socket, "GET", "/v1/status", &[], None).is_err()
            || TcpStream::connect(tcp).is_err()
        {
            assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not start serving");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket, tcp, dir }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lets this process (and the daemon it starts) open a few thousand sockets.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur >= 4 * HOSTILE as u64 + 256, "RLIMIT_NOFILE {} is too low", lim.rlim_cur);
}

/// Reads one response (head and Content-Length body) off a kept-alive
/// stream, or None if the server closed it first.
fn read_one(s: &mut impl Read) -> Option<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            }
        }
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
}

/// Opens `HOSTILE` connections: even ones send half a request head and
/// stall; odd ones make one complete request (with `auth`) and then idle.
fn hostile<S: Read + Write>(connect: impl Fn() -> S, auth: &str) -> Vec<S> {
    (0..HOSTILE)
        .map(|i| {
            let mut s = connect();
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: overlayd\r\nX-Stall: ");
            } else {
                let req = format!("GET /v1/status HTTP/1.1\r\nHost: overlayd\r\n{auth}\r\n");
                if s.write_all(req.as_bytes()).is_ok() {
                    // Evicted before its answer is possible: the flood displaces itself.
                    let _ = read_one(&mut s);
                }
            }
            s
        })
        .collect()
}

/// How many of `socks` the server still holds open (a read would block).
fn still_open<S>(socks: &[S], peek: impl Fn(&S) -> bool) -> usize {
    socks.iter().filter(|s| peek(s)).count()
}

fn unix_open(s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let open =
        matches!((&*s).read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

fn tcp_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let open =
        matches!((&*s).read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

fn tcp_status(addr: SocketAddr, auth: &str) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v1/status HTTP/1.1\r\nHost: overlayd\r\nConnection: close\r\n{auth}\r\n")
        .unwrap();
    let status = read_one(&mut s).expect("an answer");
    (status, t.elapsed())
}

fn check_fresh_unix(socket: &Path) {
    let t = Instant::now();
    let r = request(socket, "GET", "/v1/status", &[], None).unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took < Duration::from_millis(100), "fresh Unix request took {took:?}");
    eprintln!("fresh request on the Unix socket with {HOSTILE} hostile connections: {took:?}");
}

#[test]
fn a_flood_of_stalled_and_idle_connections_locks_no_one_out() {
    raise_fd_limit();
    let d = Daemon::start("lockout");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    let unix = hostile(|| UnixStream::connect(&d.socket).unwrap(), "");
    // On TCP the stalled half never presents the token (untrusted); the
    // idle half does (trusted clients flooding their own class).
    let tcp = hostile(|| TcpStream::connect(d.tcp).unwrap(), &auth);
    std::thread::sleep(Duration::from_millis(300));
    let flood_done = Instant::now();

    check_fresh_unix(&d.socket);
    let (st, took) = tcp_status(d.tcp, &auth);
    assert_eq!(st, 200);
    assert!(took < Duration::from_millis(100), "fresh TCP request took {took:?}");
    eprintln!("fresh request on TCP with {HOSTILE} hostile connections: {took:?}");

    // The budgets hold: no class keeps more than its cap.
    let unix_open_now = still_open(&unix, unix_open);
    assert!(unix_open_now <= CAPS.trusted, "{unix_open_now} Unix connections held");
    let stalled: Vec<&TcpStream> = tcp.iter().step_by(2).collect();
    let untrusted_open = stalled.iter().filter(|s| tcp_open(s)).count();
    assert!(
        untrusted_open <= CAPS.untrusted,
        "{untrusted_open} unauthenticated TCP connections held (cap {})",
        CAPS.untrusted
    );
    let tcp_open_now = still_open(&tcp, tcp_open);
    assert!(tcp_open_now <= CAPS.trusted + CAPS.untrusted, "{tcp_open_now} TCP connections held");
    eprintln!(
        "held after the flood: {unix_open_now} Unix, {tcp_open_now} TCP ({untrusted_open} unauthenticated)"
    );

    // A fresh unauthenticated client is still answered (with 401), at once.
    let (st, took) = tcp_status(d.tcp, "");
    assert_eq!(st, 401);
    assert!(took < Duration::from_millis(100), "fresh unauthenticated request took {took:?}");

    // Every hostile connection is closed by the server once the header
    // read timeout has passed since it last sent or was answered.
    let wait = HEADER_READ_TIMEOUT + Duration::from_millis(1500);
    std::thread::sleep(wait.saturating_sub(flood_done.elapsed()));
    let left = (still_open(&unix, unix_open), still_open(&tcp, tcp_open));
    assert_eq!(left, (0, 0), "hostile connections still open after {wait:?} (Unix, TCP)");

    // And the daemon serves as before.
    check_fresh_unix(&d.socket);
}
