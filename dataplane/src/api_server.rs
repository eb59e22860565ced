//! The control API's listeners: one accept loop per listener, hyper's HTTP/1.1
//! server with a timer on every connection, and a budget of connections per
//! class of client so that no client, however many sockets it opens, can lock
//! the others out.
//!
//! - Every connection must deliver a complete request head within
//!   [`HEADER_READ_TIMEOUT`] of opening or of its previous answer, or it is
//!   closed: this closes both stalled and idle keep-alive connections.
//! - A request body must arrive within [`BODY_READ_TIMEOUT`].
//! - Each class (see [`Class`]) holds at most its cap of connections; a new
//!   connection beyond the cap evicts the class's oldest connection that is
//!   not running a request (or is refused when all of them are), so a flood
//!   only ever displaces itself and a fresh client is served at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::api::{ApiState, Peer};

/// A connection must send a complete request head within this long of
/// opening, or of its previous answer (idle keep-alive), or it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request body must have arrived in full within this long of its head.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub use crate::api_refusal::{MAX_HEAD, MAX_HEADERS};
/// How long a shutdown waits for requests in flight to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who a connection belongs to, for its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A local process whose uid is allowed, or a TCP client that has
    /// presented the bearer token on this connection.
    Trusted,
    /// Everyone else: a disallowed uid, or a TCP client that has not (yet)
    /// presented the token. Kept to a small cap of its own, so it cannot
    /// displace trusted clients.
    Untrusted,
}

/// Most connections held at once, per listener and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub trusted: usize,
    pub untrusted: usize,
}

/// The caps used with a generous file-descriptor limit.
pub const CAPS: Caps = Caps { trusted: 256, untrusted: 64 };

/// File descriptors kept for everything but the API (state files, netlink,
/// AF_XDP sockets, io_uring, logs).
const FD_RESERVE: u64 = 256;

impl Caps {
    /// The caps for two listeners within `nofile` descriptors: [`CAPS`], or
    /// scaled down to fit.
    pub fn for_fd_limit(nofile: u64) -> Caps {
        let per_listener = CAPS.trusted + CAPS.untrusted;
        let room = nofile.saturating_sub(FD_RESERVE) / 2;
        if room >= per_listener as u64 {
            return CAPS;
        }
        let scale = |n: usize| ((n as u64 * room / per_listener as u64) as usize).max(4);
        Caps { trusted: scale(CAPS.trusted), untrusted: scale(CAPS.untrusted) }
    }
}

/// Raises the soft limit on open files to the hard limit, and returns the
/// limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass by pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// One open connection, as its budget sees it.
struct Entry {
    class: Class,
    busy: Arc<AtomicBool>,
    evict: Option<oneshot::Sender<()>>,
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, Entry>,
}

/// A listener's connection budget.
struct Budget {
    caps: Caps,
    open: Mutex<Open>,
}

impl Budget {
    fn cap(&self, class: Class) -> usize {
        match class {
            Class::Trusted => self.caps.trusted,
            Class::Untrusted => self.caps.untrusted,
        }
    }

    /// Makes room in `class` for one more connection: evicts its oldest
    /// connection not running a request. False if every one is busy.
    fn make_room(&self, open: &mut Open, class: Class, except: u64) -> bool {
        let held = open.conns.values().filter(|e| e.class == class).count();
        if held < self.cap(class) {
            return true;
        }
        let oldest = open
            .conns
            .iter()
            .find(|(id, e)| **id != except && e.class == class && !e.busy.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.conns.remove(&id)) {
            Some(mut e) => {
                if let Some(tx) = e.evict.take() {
                    let _ = tx.send(());
                }
                true
            }
            None => false,
        }
    }

    /// Admits a new connection of `class`, or None if there is no room.
    fn admit(self: &Arc<Self>, class: Class) -> Option<Ticket> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !self.make_room(&mut open, class, u64::MAX) {
            return None;
        }
        let id = open.next;
        open.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        open.conns.insert(id, Entry { class, busy: Arc::clone(&busy), evict: Some(tx) });
        Some(Ticket { budget: Arc::clone(self), id, busy, evicted: Some(rx) })
    }

    /// Moves connection `id` to the trusted class (its client presented the
    /// token), making room there if need be.
    fn promote(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(open.conns.get(&id), Some(e) if e.class == Class::Untrusted) {
            return;
        }
        if self.make_room(&mut open, Class::Trusted, id) {
            if let Some(e) = open.conns.get_mut(&id) {
                e.class = Class::Trusted;
            }
        }
    }
}

/// A connection's place in its budget, given back when it closes.
struct Ticket {
    budget: Arc<Budget>,
    id: u64,
    busy: Arc<AtomicBool>,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.budget.open.lock().unwrap_or_else(|p| p.into_inner());
        open.conns.remove(&self.id);
    }
}

/// Marks a connection busy while a request runs.
struct BusyGuard(Arc<AtomicBool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A stream the API can be served on.
trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
    /// The peer of a new connection, as the API's authorisation sees it.
    fn peer(io: &Self::Io) -> Peer;
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(io, _)| io)
    }
    fn peer(io: &Self::Io) -> Peer {
        Peer::Unix { uid: io.peer_cred().ok().map(|c| c.uid()) }
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        TcpListener::accept(self).await.map(|(io, _)| io)
    }
    fn peer(_: &Self::Io) -> Peer {
        Peer::Tcp
    }
}

/// The class a new connection starts in.
fn class_of(peer: Peer, state: &ApiState) -> Class {
    match peer {
        Peer::Unix { uid: Some(uid) } if state.allowed_uids.contains(&uid) => Class::Trusted,
        _ => Class::Untrusted,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (for up to [`SHUTDOWN_GRACE`]).
async fn serve_on<L: Accept>(
    listener: L,
    router: Router,
    state: Arc<ApiState>,
    caps: Caps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let budget = Arc::new(Budget { caps, open: Mutex::new(Open::default()) });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let io = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(io) => io,
                Err(e) => {
                    // Out of descriptors or memory: wait for some to be freed
                    // rather than spin.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer = L::peer(&io);
        let Some(ticket) = budget.admit(class_of(peer, &state)) else {
            tracing::debug!(?peer, "API connection refused: every held connection is busy");
            continue;
        };
        tasks.spawn(connection(
            io,
            peer,
            ticket,
            router.clone(),
            Arc::clone(&state),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    let _ =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} })
            .await;
    Ok(())
}

/// Serves one connection until it closes, is evicted or the server stops.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    peer: Peer,
    mut ticket: Ticket,
    router: Router,
    state: Arc<ApiState>,
    mut stop: watch::Receiver<bool>,
) {
    let budget = Arc::clone(&ticket.budget);
    let (id, busy) = (ticket.id, Arc::clone(&ticket.busy));
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let _busy = {
            busy.store(true, Ordering::Release);
            BusyGuard(Arc::clone(&busy))
        };
        if matches!(peer, Peer::Tcp) && crate::api::token_ok(req.headers(), &state) {
            budget.promote(id);
        }
        let mut req = req.map(|b| Body::new(Deadline::new(b, BODY_READ_TIMEOUT)));
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let _busy = _busy;
            router.call(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let conn =
        builder.serve_connection(TokioIo::new(crate::api_refusal::JsonRefusals::new(io)), service);
    tokio::pin!(conn);
    let evicted = ticket.evicted.take().expect("a ticket is used once");
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "API connection ended");
            }
        }
        _ = evicted => tracing::debug!("API connection evicted to make room"),
        _ = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(ticket);
}

/// A request body that fails once its deadline passes, so a client that
/// stalls mid-body cannot hold its connection (and a handler) forever.
struct Deadline {
    body: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl Deadline {
    fn new(body: Incoming, limit: Duration) -> Self {
        Deadline { body, sleep: Box::pin(tokio::time::sleep(limit)), limit }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

impl hyper::body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves the API on a Unix socket until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    state: Arc<ApiState>,
    caps: Caps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::api::router(Arc::clone(&state));
    serve_on(listener, router, state, caps, shutdown).await
}

/// Serves the API on TCP (bearer token required) until `shutdown` resolves.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<ApiState>,
    caps: Caps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::api::router(Arc::clone(&state));
    serve_on(listener, router, state, caps, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(trusted: usize, untrusted: usize) -> Arc<Budget> {
        Arc::new(Budget { caps: Caps { trusted, untrusted }, open: Mutex::default() })
    }

    #[test]
    fn a_full_class_evicts_its_oldest_idle_connection() {
        let b = budget(2, 1);
        let mut first = b.admit(Class::Trusted).unwrap();
        let second = b.admit(Class::Trusted).unwrap();
        second.busy.store(true, Ordering::Release);
        let third = b.admit(Class::Trusted).unwrap();
        assert!(first.evicted.take().unwrap().try_recv().is_ok(), "the oldest idle one goes");
        // Now both held connections are busy: a fourth is refused.
        third.busy.store(true, Ordering::Release);
        assert!(b.admit(Class::Trusted).is_none());
        drop(first);
        assert_eq!(b.open.lock().unwrap().conns.len(), 2);
    }

    #[test]
    fn untrusted_connections_never_displace_trusted_ones() {
        let b = budget(1, 2);
        let mut trusted = b.admit(Class::Trusted).unwrap();
        let flood: Vec<_> = (0..10).map(|_| b.admit(Class::Untrusted).unwrap()).collect();
        assert!(trusted.evicted.take().unwrap().try_recv().is_err());
        let open = b.open.lock().unwrap();
        assert_eq!(open.conns.values().filter(|e| e.class == Class::Untrusted).count(), 2);
        drop(open);
        drop(flood);
    }

    #[test]
    fn a_promoted_connection_moves_to_the_trusted_class() {
        let b = budget(1, 1);
        let mut old = b.admit(Class::Trusted).unwrap();
        let new = b.admit(Class::Untrusted).unwrap();
        b.promote(new.id);
        assert!(old.evicted.take().unwrap().try_recv().is_ok(), "room made in the trusted class");
        let open = b.open.lock().unwrap();
        assert_eq!(open.conns[&new.id].class, Class::Trusted);
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        assert_eq!(Caps::for_fd_limit(1 << 20), CAPS);
        let small = Caps::for_fd_limit(1024);
        assert!(2 * (small.trusted + small.untrusted) as u64 + FD_RESERVE <= 1024, "{small:?}");
        assert!(small.untrusted < small.trusted);
    }
}
