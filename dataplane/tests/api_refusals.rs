//! Every refusal of the control API is a JSON `ErrorBody` with the status
//! that names the mistake, whether our handlers, axum or hyper made it:
//! 400, 404, 405, 413 (Content-Length and chunked), 414, 415 and 431.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::api_types::ErrorBody;
use dataplane::client::request;

struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = std::env::temp_dir().join(format!("overlayd-refusals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_overlayd"))
            .args(["run", "--control-only", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while request(&socket, "GET", "/v1/status", &[], None).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not start serving");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket, dir }
    }

    /// Sends `raw` (from another thread, so a refusal that comes before the
    /// request is all sent is still read) and returns status, headers and body.
    fn raw(&self, raw: Vec<u8>) -> (u16, String, Vec<u8>) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&raw);
        });
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        drop(s);
        let _ = writer.join();
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
        let head = String::from_utf8_lossy(&out[..end]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = out[end + 4..].to_vec();
        if head.to_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, head, body)
    }

    /// Asserts `raw` is refused with `status` and a JSON error containing `says`.
    fn refused(&self, what: &str, raw: Vec<u8>, status: u16, says: &str) -> String {
        let (st, head, body) = self.raw(raw);
        assert_eq!(st, status, "{what}: {head}\n{}", String::from_utf8_lossy(&body));
        assert!(
            head.to_lowercase().contains("content-type: application/json"),
            "{what}: not JSON: {head}"
        );
        let e: ErrorBody = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&body)));
        assert!(e.error.contains(says), "{what}: {e:?}");
        head
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 4 + n..];
    }
    out
}

fn req(head: &str, body: &[u8]) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn every_refusal_is_json() {
    let d = Daemon::start();
    let json = "Content-Type: application/json\r\n";

    d.refused(
        "unknown path",
        req("GET /v2/status HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", b""),
        404,
        "/v1/",
    );
    let head = d.refused(
        "wrong method",
        req("DELETE /v1/status HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", b""),
        405,
        "method not allowed",
    );
    assert!(head.to_lowercase().contains("allow: get"), "{head}");

    // Writes must say their body is JSON.
    let doc = br#"{"generation":0}"#;
    for ct in
        ["", "Content-Type: text/plain\r\n", "Content-Type: application/x-www-form-urlencoded\r\n"]
    {
        d.refused(
            "write without JSON content type",
            req(&format!("PUT /v1/config HTTP/1.1\r\nHost: o\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n", doc.len()), doc),
            415,
            "Content-Type: application/json",
        );
    }
    let (st, _, body) = d.raw(req(
        "POST /v1/config/ops HTTP/1.1\r\nHost: o\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
        b"{}",
    ));
    assert_ne!(st, 415, "a charset parameter is fine: {}", String::from_utf8_lossy(&body));

    // Too large a body, declared or chunked.
    let big = dataplane::api::MAX_BODY + 1;
    d.refused(
        "Content-Length over the limit",
        req(&format!("PUT /v1/config HTTP/1.1\r\nHost: o\r\n{json}Content-Length: {big}\r\nConnection: close\r\n\r\n"), b""),
        413,
        "length limit",
    );
    let chunk = vec![b' '; 1 << 20];
    let mut chunked = format!("PUT /v1/config HTTP/1.1\r\nHost: o\r\n{json}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for _ in 0..9 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    d.refused("chunked body over the limit", chunked, 413, "length limit");

    // A malformed JSON body and a malformed chunked encoding.
    d.refused(
        "bad JSON",
        req(&format!("PUT /v1/config HTTP/1.1\r\nHost: o\r\n{json}Content-Length: 3\r\nConnection: close\r\n\r\n"), b"{x}"),
        400,
        "key must be a string",
    );
    d.refused(
        "bad chunk",
        req(&format!("PUT /v1/config HTTP/1.1\r\nHost: o\r\n{json}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"), b""),
        400,
        "body",
    );

    // What hyper answers by itself: 414, 431, 400.
    let long = "a".repeat(100 << 10);
    d.refused(
        "request line of 100 KiB",
        req(&format!("GET /v1/{long} HTTP/1.1\r\nHost: o\r\n\r\n"), b""),
        414,
        "request target is too long",
    );
    let mut huge = String::from("GET /v1/status HTTP/1.1\r\nHost: o\r\n");
    for i in 0..1024 {
        huge += &format!("X-Filler-{i}: {}\r\n", "b".repeat(1000));
    }
    huge += "\r\n";
    d.refused("1 MiB of headers", huge.into_bytes(), 431, "request head is too large");
    let mut many = String::from("GET /v1/status HTTP/1.1\r\nHost: o\r\n");
    for i in 0..200 {
        many += &format!("X-{i}: 1\r\n");
    }
    many += "\r\n";
    d.refused("200 header fields", many.into_bytes(), 431, "header fields");
    d.refused("not HTTP", b"HELLO\x01 there\r\n\r\n".to_vec(), 400, "not valid HTTP/1.1");

    // After all that, the daemon serves and nothing changed.
    let st = request(&d.socket, "GET", "/v1/status", &[], None).unwrap();
    assert_eq!((st.status, st.json()["generation"].as_u64()), (200, Some(0)));
}
