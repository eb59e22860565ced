//! The agent's session with etcd: connect (TLS, user), register this node
//! under a lease and keep it alive, list the layout root once, then watch it
//! from the next revision. Changes are applied in batches: the first change
//! after a batch opens a short settle window (`settle_ms`), and everything
//! that arrived by its end is one generation.
//!
//! A broken session is resumed: the new watch starts at the revision after
//! the last one seen, so nothing is missed and nothing is listed again. If
//! that revision has been compacted away, the agent lists again (a relist)
//! and carries on from there. While no session can be had the node is
//! degraded: forwarding runs on the last-known state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions,
};
use tokio::time::{sleep, timeout, Instant};

use super::agent::Agent;
use super::layout::{Key, Node};
use super::view::View;

/// How long one connect or request may take before the store counts as
/// unreachable.
const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys fetched per page when listing: etcd counts the whole range for every
/// page, so small pages make a big list quadratic.
const PAGE: i64 = 50_000;
/// Largest gRPC message accepted (a page of a big list, a burst of events).
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}: {1}")]
    Store(&'static str, etcd_client::Error),
    #[error("{0}: no answer within {RPC_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("{0}")]
    Setup(String),
    #[error("the watch ended")]
    WatchEnded,
    #[error("the lease expired (the store forgot this node): registering again")]
    LeaseExpired,
    #[error("lease keep-alive unanswered for {0:?}")]
    KeepAliveSilent(Duration),
    /// Not a failure: the watch fell behind a compaction; list again.
    #[error("revision {0} was compacted: listing again")]
    Compacted(i64),
}

async fn rpc<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SessionError> {
    match timeout(RPC_TIMEOUT, f).await {
        Err(_) => Err(SessionError::Timeout(what)),
        Ok(r) => r.map_err(|e| SessionError::Store(what, e)),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, SessionError> {
    std::fs::read(path).map_err(|e| SessionError::Setup(format!("{}: {e}", path.display())))
}

async fn connect(a: &Agent) -> Result<Client, SessionError> {
    let s = &a.settings;
    let mut o = ConnectOptions::new()
        .with_connect_timeout(RPC_TIMEOUT)
        // etcd closes connections that ping more often than every 5 s
        // (--grpc-keepalive-min-time); a silent member is caught sooner by
        // the lease keep-alive going unanswered.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        // A member cut off from the majority answers with an error instead
        // of serving stale reads.
        .with_require_leader(true);
    if s.endpoints.iter().any(|e| e.starts_with("https://")) {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &s.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(c), Some(k)) = (&s.cert_file, &s.key_file) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        if let Some(d) = &s.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        o = o.with_tls(tls);
    }
    if let (Some(u), Some(p)) = (&s.user, &s.password_file) {
        let pw = String::from_utf8_lossy(&read(p)?).trim().to_string();
        o = o.with_user(u.clone(), pw);
    }
    // One member per session, the next one after a failure: the client's
    // balanced channel keeps sending to a member that is down.
    let at = a.endpoint_turn.load(Ordering::Relaxed) % s.endpoints.len();
    rpc("connect", Client::connect([&s.endpoints[at]], Some(o))).await
}

/// Lists the layout root page by page at one revision; returns the view and
/// that revision.
async fn list(a: &Agent, c: &Client) -> Result<(View, i64), SessionError> {
    let root = a.layout.root().as_bytes().to_vec();
    let mut end = root.clone();
    // The range end of a prefix: its last byte plus one ('/' + 1 = '0').
    *end.last_mut().expect("the root is not empty") += 1;
    let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let mut view = View::default();
    let mut from = root;
    let mut rev = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if rev != 0 {
            opts = opts.with_revision(rev);
        }
        let r = rpc("list", kv.get(from.clone(), Some(opts))).await?;
        if rev == 0 {
            rev = r.header().map_or(0, |h| h.revision());
        }
        for kv in r.kvs() {
            view.put(&a.layout, kv.key(), kv.value());
        }
        match (r.more(), r.kvs().last()) {
            (true, Some(last)) => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((view, rev)),
        }
    }
}

/// Puts this node's record under `lease`.
async fn register(a: &Agent, c: &mut Client, lease: i64) -> Result<(), SessionError> {
    let s = &a.settings;
    let rec =
        Node { vteps: s.vteps.clone(), labels: s.labels.clone(), networks: s.networks.clone() };
    let key = a.layout.key(&Key::Node(s.node.clone()));
    let value = serde_json::to_vec(&rec).expect("a node record serialises");
    rpc("register", c.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
    Ok(())
}

/// Lists, replaces the view and applies it.
async fn relist(a: &Arc<Agent>, c: &Client) -> Result<i64, SessionError> {
    let t = std::time::Instant::now();
    let (view, rev) = list(a, c).await?;
    let listed = t.elapsed();
    let n = view.endpoints.len() + view.nodes.len();
    a.with_view(|v| *v = view);
    a.synced.store(true, Ordering::Release);
    a.at_revision(rev);
    a.counted(true);
    let t = std::time::Instant::now();
    let b = Arc::clone(a);
    let _ = tokio::task::spawn_blocking(move || b.reconcile()).await;
    tracing::info!(
        revision = rev,
        records = n,
        list_ms = listed.as_millis() as u64,
        apply_ms = t.elapsed().as_millis() as u64,
        "cluster state listed and applied"
    );
    Ok(rev)
}

/// Applies the view whenever told to, one batch at a time: the first change
/// after a batch waits `settle_ms` for more, and changes that arrive while a
/// batch is being committed make the next one. Runs beside the sessions, so
/// a long commit never holds up the watch or the lease keep-alive.
async fn batches(a: Arc<Agent>) {
    let settle = Duration::from_millis(a.settings.settle_ms);
    loop {
        a.dirty.notified().await;
        sleep(settle).await;
        let b = Arc::clone(&a);
        let _ = tokio::task::spawn_blocking(move || b.reconcile()).await;
    }
}

/// Renews the lease every third of its TTL until a renewal fails, goes
/// unanswered for two periods, or finds the lease gone.
async fn keep_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut alive: etcd_client::LeaseKeepAliveStream,
    period: Duration,
) -> SessionError {
    let mut tick = tokio::time::interval(period);
    let mut last_alive = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_alive.elapsed() > period * 2 {
                    return SessionError::KeepAliveSilent(last_alive.elapsed());
                }
                if let Err(e) = rpc("keep-alive", keeper.keep_alive()).await {
                    return e;
                }
            }
            r = alive.message() => match r {
                Err(e) => return SessionError::Store("keep-alive", e),
                Ok(None) => return SessionError::WatchEnded,
                Ok(Some(r)) if r.ttl() <= 0 => return SessionError::LeaseExpired,
                Ok(Some(_)) => last_alive = Instant::now(),
            }
        }
    }
}

/// One session; returns why it ended. `next` is the revision to watch from
/// (`None`: list first), kept across sessions.
async fn session(a: &Arc<Agent>, next: &mut Option<i64>) -> Result<(), SessionError> {
    let mut c = connect(a).await?;
    let ttl = a.settings.lease_ttl_secs;
    let lease = rpc("lease grant", c.lease_grant(i64::from(ttl), None)).await?.id();
    register(a, &mut c, lease).await?;
    let (keeper, alive) = rpc("keep-alive", c.lease_keep_alive(lease)).await?;
    let period = Duration::from_millis(u64::from(ttl) * 1000 / 3);
    let (failed_tx, mut failed) = tokio::sync::oneshot::channel();
    let renewals = tokio::spawn(async move {
        let _ = failed_tx.send(keep_alive(keeper, alive, period).await);
    });
    // The renewals end with the session, however it ends.
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _renewals = Abort(renewals);
    let start = match *next {
        Some(r) => {
            a.counted(false);
            r
        }
        None => relist(a, &c).await? + 1,
    };
    let mut w = c.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let opts = WatchOptions::new().with_prefix().with_start_revision(start).with_progress_notify();
    let mut events = rpc("watch", w.watch(a.layout.root().as_bytes().to_vec(), Some(opts))).await?;
    a.connected(c.clone(), lease);
    let own_key = a.layout.key(&Key::Node(a.settings.node.clone()));
    loop {
        tokio::select! {
            m = events.message() => {
                let r = m.map_err(|e| SessionError::Store("watch", e))?.ok_or(SessionError::WatchEnded)?;
                if r.compact_revision() > 0 {
                    *next = None;
                    return Err(SessionError::Compacted(r.compact_revision()));
                }
                if r.canceled() {
                    return Err(SessionError::Setup(format!("the watch was cancelled: {}", r.cancel_reason())));
                }
                let mut lost_self = false;
                a.with_view(|v| {
                    for e in r.events() {
                        let Some(kv) = e.kv() else { continue };
                        match e.event_type() {
                            EventType::Put => v.put(&a.layout, kv.key(), kv.value()),
                            EventType::Delete => {
                                lost_self |= kv.key() == own_key.as_bytes();
                                v.delete(&a.layout, kv.key())
                            }
                        }
                    }
                });
                if let Some(h) = r.header() {
                    *next = Some(h.revision() + 1);
                    a.at_revision(h.revision());
                }
                if lost_self {
                    // Deleted by hand, or the lease lapsed while we were away.
                    tracing::warn!("this node's registration vanished: registering again");
                    register(a, &mut c, lease).await?;
                }
                if !r.events().is_empty() {
                    a.dirty.notify_one();
                }
            }
            e = &mut failed => return Err(e.unwrap_or(SessionError::WatchEnded)),
        }
    }
}

/// Sessions, one after the other, for as long as the daemon runs.
pub async fn run(a: Arc<Agent>) {
    tokio::spawn(batches(Arc::clone(&a)));
    let mut next: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let e = match session(&a, &mut next).await {
            Ok(()) => continue,
            Err(e) => e,
        };
        match &e {
            SessionError::Compacted(_) => {
                tracing::info!(reason = %e, "cluster watch fell behind");
                continue;
            }
            SessionError::LeaseExpired => {
                tracing::warn!(reason = %e, "cluster registration lost");
                continue;
            }
            _ => {}
        }
        let was_connected = a.is_connected();
        a.endpoint_turn.fetch_add(1, Ordering::Relaxed);
        a.disconnected(e.to_string());
        failures = if was_connected { 0 } else { failures + 1 };
        // Once at once (a member went away; the others answer), then backing
        // off to a second between attempts.
        let wait = match failures {
            0 => Duration::ZERO,
            n => Duration::from_millis((100 * u64::from(n)).min(1000)),
        };
        sleep(wait).await;
    }
}
