//! The control API's client: hyper's HTTP/1.1 client connection over the
//! daemon's Unix socket or over TCP (with a bearer token), one request per
//! connection, driven by a small current-thread runtime so callers stay
//! blocking. The documents it carries are the types of `api_types`.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a whole request may take (not a streamed answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the daemon's API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The Unix socket: the peer's uid is the credential.
    Unix(PathBuf),
    /// `host:port` over TCP: every request carries the bearer token.
    Tcp { addr: String, token: String },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp {addr}"),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("{endpoint}: HTTP: {source}")]
    Http { endpoint: String, source: hyper::Error },
    #[error("{endpoint}: no answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { endpoint: String },
    #[error("cannot start the client's runtime: {0}")]
    Runtime(io::Error),
    /// The streamed body's consumer failed (a closed pipe, a full disk).
    #[error("{0}")]
    Sink(io::Error),
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> io::Error {
        match e {
            ClientError::Connect { source, .. } | ClientError::Sink(source) => source,
            ClientError::Runtime(e) => e,
            e @ ClientError::Timeout { .. } => io::Error::new(io::ErrorKind::TimedOut, e),
            e => io::Error::other(e),
        }
    }
}

/// An answer: status, headers and (for a plain request) the whole body.
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

    /// The body read as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A client of one daemon.
pub struct Client {
    endpoint: Endpoint,
    rt: tokio::runtime::Runtime,
    /// How long `request` waits for a whole answer.
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Client, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Client { endpoint, rt, timeout: REQUEST_TIMEOUT })
    }

    /// Waits up to `d` for answers (a request that takes long on purpose,
    /// such as an upgrade).
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and reads its whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let req = self.build(method, path, headers, body.unwrap_or(&[]));
        let timeout = || ClientError::Timeout { endpoint: self.endpoint.to_string() };
        self.rt.block_on(async {
            let work = async {
                let res = self.send(req).await?;
                let (head, body) = res.into_parts();
                let body = body.collect().await.map_err(|e| self.http(e))?.to_bytes();
                Ok(Response {
                    status: head.status.as_u16(),
                    headers: headers_of(&head.headers),
                    body: body.to_vec(),
                })
            };
            tokio::time::timeout(self.timeout, work).await.map_err(|_| timeout())?
        })
    }

    /// Sends one request and, if the answer is a success, hands its body to
    /// `sink` piece by piece as it arrives, with no time limit, until the
    /// body ends or `stop` resolves (which ends it as a success). Any other
    /// answer is returned whole, for its error document; a success is
    /// returned with an empty body.
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
        stop: impl Future<Output = ()>,
    ) -> Result<Response, ClientError> {
        let req = self.build(method, path, &[], body);
        self.rt.block_on(async {
            let res = self.send(req).await?;
            let (head, mut body) = res.into_parts();
            let mut answer = Response {
                status: head.status.as_u16(),
                headers: headers_of(&head.headers),
                body: Vec::new(),
            };
            if !head.status.is_success() {
                answer.body = body.collect().await.map_err(|e| self.http(e))?.to_bytes().to_vec();
                return Ok(answer);
            }
            tokio::pin!(stop);
            loop {
                let frame = tokio::select! {
                    _ = &mut stop => break,
                    f = body.frame() => f,
                };
                match frame {
                    None => break,
                    Some(Err(e)) => return Err(self.http(e)),
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            sink(data).map_err(ClientError::Sink)?;
                        }
                    }
                }
            }
            Ok(answer)
        })
    }

    fn http(&self, source: hyper::Error) -> ClientError {
        ClientError::Http { endpoint: self.endpoint.to_string(), source }
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "overlayd")
            .header("content-type", "application/json")
            .header("content-length", body.len());
        if let Endpoint::Tcp { token, .. } = &self.endpoint {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        // Only a caller's malformed method, path or header fails here; the
        // request then goes out without it and the daemon says what is wrong.
        b.body(Full::new(Bytes::copy_from_slice(body))).unwrap_or_else(|_| {
            let mut r = hyper::Request::new(Full::new(Bytes::copy_from_slice(body)));
            *r.uri_mut() = path.parse().unwrap_or_default();
            r
        })
    }

    async fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let connect = |source| ClientError::Connect { endpoint: self.endpoint.to_string(), source };
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let io = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
                self.exchange(io, req).await
            }
            Endpoint::Tcp { addr, .. } => {
                let io = tokio::net::TcpStream::connect(addr.as_str()).await.map_err(connect)?;
                self.exchange(io, req).await
            }
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        io: S,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let io = TokioIo::new(AnswerFirst { io, closed: false });
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| self.http(e))?;
        // The connection runs beside the request; it ends when the answer
        // has been read and the sender dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(req).await.map_err(|e| self.http(e))
    }
}

/// A connection on which the daemon may answer before it has read the
/// whole request body, and close (413: the body is too large; 415): the
/// rest of the body is dropped as if sent, so that hyper goes on to read
/// the answer, which is waiting in the socket.
struct AnswerFirst<S> {
    io: S,
    closed: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for AnswerFirst<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnswerFirst<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(Err(e)) if peer_gone(&e) => {
                self.closed = true;
                Poll::Ready(Ok(buf.len()))
            }
            r => r,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Err(e)) if peer_gone(&e) => Poll::Ready(Ok(())),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn headers_of(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

/// One request to the daemon on `socket` (kept for the tests and tools that
/// call the API directly).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    Ok(Client::new(Endpoint::Unix(socket.into()))?.request(method, path, headers, body)?)
}

/// [`Client::stream`] on `socket`, until the body ends.
pub fn request_streaming(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Response> {
    let c = Client::new(Endpoint::Unix(socket.into()))?;
    Ok(c.stream(method, path, body, sink, std::future::pending())?)
}
