//! A minimal HTTP/1.1 client for the control API's Unix socket: one request
//! per connection (`Connection: close`), so the response ends at end of stream.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    send(&mut s, method, path, headers, body.unwrap_or(&[]))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let (status, headers) = parse_head(&raw[..split])?;
    let mut body = raw[split + 4..].to_vec();
    if chunked(&headers) {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response { status, headers, body })
}

fn bad(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.to_string())
}

fn send(
    s: &mut UnixStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: overlayd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes())?;
    // The daemon may refuse before reading the whole body (413, 415) and
    // close: its answer is still there to read.
    match s.write_all(body) {
        Err(e)
            if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// The status and headers of an answer, from the bytes before its blank line.
fn parse_head(head: &[u8]) -> io::Result<(u16, Vec<(String, String)>)> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| {
            l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok((status, headers))
}

fn chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).ok()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}

/// Sends one request and, if the answer is a success, hands its body to
/// `sink` piece by piece as it arrives (a capture streams for as long as it
/// runs; there is no read timeout). Any other answer is returned whole, for
/// its error document; a success is returned with an empty body. A signal
/// that interrupts the wait for the body (the caller's handler for Ctrl-C)
/// ends it early, as a success.
pub fn request_streaming(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    send(&mut s, method, path, &[], body)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(bad("the connection closed before the end of the headers"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let (status, headers) = parse_head(&raw[..split])?;
    let chunked = chunked(&headers);
    let rest = raw.split_off(split + 4);
    if status >= 300 {
        let mut body = rest;
        s.read_to_end(&mut body)?;
        if chunked {
            body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
        }
        return Ok(Response { status, headers, body });
    }
    let mut d = Dechunker { on: chunked, pending: Vec::new(), left: 0, done: false };
    d.feed(&rest, sink)?;
    while !d.done {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if chunked {
                return Err(bad("the stream ended inside a chunk"));
            }
            break;
        }
        d.feed(&buf[..n], sink)?;
    }
    Ok(Response { status, headers, body: Vec::new() })
}

/// Undoes chunked transfer encoding as the bytes arrive.
struct Dechunker {
    /// False: the body is passed through as it is.
    on: bool,
    /// Bytes of a chunk-size line not complete yet.
    pending: Vec<u8>,
    /// Bytes of the current chunk (and its CRLF) still to come.
    left: usize,
    done: bool,
}

impl Dechunker {
    fn feed(
        &mut self,
        mut b: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.on {
            return if b.is_empty() { Ok(()) } else { sink(b) };
        }
        while !b.is_empty() && !self.done {
            if self.left > 0 {
                let n = self.left.min(b.len());
                // The last two bytes of a chunk are its CRLF.
                let data = self.left.saturating_sub(2).min(n);
                if data > 0 {
                    sink(&b[..data])?;
                }
                self.left -= n;
                b = &b[n..];
                continue;
            }
            // A chunk-size line, perhaps split across reads.
            let Some(nl) = b.iter().position(|&c| c == b'\n') else {
                self.pending.extend_from_slice(b);
                if self.pending.len() > 1024 {
                    return Err(bad("bad chunked body"));
                }
                return Ok(());
            };
            self.pending.extend_from_slice(&b[..nl]);
            b = &b[nl + 1..];
            let line = std::str::from_utf8(&self.pending).map_err(|_| bad("bad chunked body"))?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunked body"))?;
            self.pending.clear();
            if size == 0 {
                self.done = true;
            } else {
                self.left = size + 2;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same chunked body fed whole, and byte by byte, gives the same bytes.
    #[test]
    fn dechunking_as_bytes_arrive() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nb\r\nworld again\r\n0\r\n\r\n";
        for step in [body.len(), 1, 2, 3, 7] {
            let mut got = Vec::new();
            let mut d = Dechunker { on: true, pending: Vec::new(), left: 0, done: false };
            for piece in body.chunks(step) {
                d.feed(piece, &mut |b| {
                    got.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            }
            assert!(d.done, "step {step}");
            assert_eq!(got, b"hello world again", "step {step}");
        }
    }
}
