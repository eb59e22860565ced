//! Every refusal the API gives is JSON (`ErrorBody`) with the status that
//! says what kind of mistake it was: the ones our handlers make, the ones
//! axum makes (405, 413, body errors), and the ones hyper answers on its own
//! when it cannot parse a request head (400, 414, 431). Writes must say
//! their body is JSON, or get 415.

/// Largest request body accepted (a configuration with tens of thousands of rules fits).
pub const MAX_BODY: usize = 8 << 20;
/// The largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = 256 << 10;
/// The most header fields one request may carry.
pub const MAX_HEADERS: usize = 100;

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api_types::ErrorBody;

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Refuses a write whose body is not declared as JSON, or is declared
/// larger than the limit, before it is read.
pub async fn require_json(req: Request, next: Next) -> Response {
    let writes = [Method::PUT, Method::POST, Method::PATCH];
    if writes.contains(req.method()) && !is_json(req.headers()) {
        let error = "a write must carry Content-Type: application/json".to_string();
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(ErrorBody { error, path: None }))
            .into_response();
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        let error = format!("length limit exceeded: the body may be at most {} bytes", MAX_BODY);
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(ErrorBody { error, path: None }))
            .into_response();
    }
    next.run(req).await
}

/// Longest text of a non-JSON refusal kept as its error message.
const MAX_REFUSAL_TEXT: usize = 4096;

/// Turns a refusal made outside our handlers (axum's 405, 413, body and
/// extractor errors) into the JSON error body, keeping its status and
/// headers such as `Allow`.
pub async fn json_refusals(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(res.headers()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_REFUSAL_TEXT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let error = if !text.is_empty() {
        text
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = parts.headers.get(ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
        format!("method not allowed on this resource (allowed: {allow})")
    } else {
        status.canonical_reason().unwrap_or("refused").to_lowercase()
    };
    let body = serde_json::to_vec(&ErrorBody { error, path: None }).expect("serialisable");
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// What hyper refused when it answers by itself, for its status.
fn hyper_refusal_text(code: u16) -> String {
    match code {
        414 => "the request target is too long (at most 65534 bytes)".into(),
        431 => format!(
            "the request head is too large (at most {} bytes and {} header fields)",
            MAX_HEAD, MAX_HEADERS
        ),
        400 => "the request is not valid HTTP/1.1".into(),
        _ => StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("refused")
            .to_lowercase(),
    }
}

/// If `buf` is exactly a refusal hyper wrote by itself (a 4xx/5xx head with
/// `content-length: 0` and no content type: our own refusals always carry a
/// JSON body), the same refusal with a JSON body.
fn rewrite_hyper_refusal(buf: &[u8]) -> Option<Vec<u8>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !(400..600).contains(&code) {
        return None;
    }
    let mut empty = false;
    let mut kept = String::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
            continue;
        }
        if !name.eq_ignore_ascii_case("connection") {
            kept += line;
            kept += "\r\n";
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody { error: hyper_refusal_text(code), path: None })
        .expect("serialisable");
    let mut out = format!(
        "{status_line}\r\n{kept}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// A connection's stream, on which hyper's own refusals are sent with a
/// JSON body. hyper writes such a refusal as one head with nothing before
/// or after it (it answers only before any response of the request, and
/// then closes), and we offer no vectored writes, so it arrives here whole.
pub struct JsonRefusals<S> {
    io: S,
    pending: Vec<u8>,
    sent: usize,
}

impl<S> JsonRefusals<S> {
    pub fn new(io: S) -> Self {
        JsonRefusals { io, pending: Vec::new(), sent: 0 }
    }
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    /// Writes out a replaced refusal still pending.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(json) = rewrite_hyper_refusal(buf) {
            this.pending = json;
            // Whatever is not written now goes out on the flush that follows.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_refusals_get_a_json_body() {
        let raw =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite_hyper_refusal(raw).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 ") && head.contains("date: x"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let e: ErrorBody = serde_json::from_str(body).unwrap();
        assert!(e.error.contains("request head is too large"), "{e:?}");
    }

    #[test]
    fn our_own_answers_pass_unchanged() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK",
        ] {
            assert!(rewrite_hyper_refusal(raw).is_none(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
