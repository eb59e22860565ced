//! The cluster agent: this node's view of the store, its health, the merge
//! hook every commit goes through, and the writes `overlayctl cluster`
//! makes. The store session itself (connect, register, list, watch) is in
//! `session.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use engine::model::Config;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;

use super::derive::{self, Conflict};
use super::layout::{Endpoint, Key, Layout, Network};
use super::settings::ClusterSettings;
use super::view::{InvalidRecord, View};
use crate::daemon::{ApplyError, Daemon};

/// How long a write through `overlayctl cluster` may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the agent stands with the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Never reached the store yet (since start).
    Connecting,
    Connected,
    /// The store cannot be reached: forwarding runs on the last-known state.
    Degraded,
}

#[derive(Clone, Debug)]
struct Health {
    connection: Connection,
    /// When the store stopped answering (or when connecting started).
    since: SystemTime,
    last_error: Option<String>,
    revision: i64,
    lease: Option<i64>,
    relists: u64,
    resumes: u64,
    batches: u64,
    last_generation: Option<u64>,
    apply_error: Option<String>,
    conflicts: Vec<Conflict>,
}

/// `GET /v1/cluster/status`.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ClusterStatus {
    pub node: String,
    pub prefix: String,
    pub endpoints: Vec<String>,
    pub connection: Connection,
    /// `degraded: store unreachable since <time> (<n> s)`, when degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The store revision this node's view is at.
    pub revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub lease_ttl_secs: u32,
    /// Full relists (at start, and when a watch fell behind a compaction).
    pub relists: u64,
    /// Watches resumed from a revision after a disconnect.
    pub resumes: u64,
    /// Converged batches applied, each one generation.
    pub batches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_generation: Option<u64>,
    pub nodes: usize,
    pub networks: usize,
    pub endpoint_count: usize,
    pub rules: usize,
    /// What the cluster asked for that this node left out, and why.
    pub conflicts: Vec<Conflict>,
    /// Why the merged configuration could not be applied at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_error: Option<String>,
    pub invalid_records: Vec<InvalidRecord>,
}

/// One node as `cluster nodes` lists it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct NodeView {
    pub name: String,
    #[serde(flatten)]
    pub node: super::layout::Node,
    /// This node.
    pub local: bool,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct NetworkView {
    pub name: String,
    #[serde(flatten)]
    pub network: Network,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EndpointView {
    pub network: String,
    pub mac: engine::model::Mac,
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// Why a write through `overlayctl cluster` failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}: the write was not sent")]
    Degraded(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store did not answer within {WRITE_TIMEOUT:?}: the write may still commit (etcd); list to see, or repeat it (it is idempotent)")]
    Timeout,
    #[error("the store refused the write: {0}")]
    Store(String),
}

pub struct Agent {
    pub(super) settings: ClusterSettings,
    pub(super) layout: Layout,
    pub(super) daemon: Arc<Daemon>,
    pub(super) view: Mutex<View>,
    /// The view has been listed at least once: until then the merge leaves
    /// the stored document as it is (a restart with the store down keeps
    /// forwarding on the last-known cluster state).
    pub(super) synced: AtomicBool,
    health: Mutex<Health>,
    /// Changes of the view so far, and the last merge's output with the view
    /// count it was made at: the commit path merges the agent's own batch
    /// again, and finds it already merged.
    view_changes: std::sync::atomic::AtomicU64,
    last_merge: Mutex<Option<(u64, Config)>>,
    /// Set when the view changed: the batch task applies it.
    pub(super) dirty: tokio::sync::Notify,
    /// Which of the endpoints the next session tries.
    pub(super) endpoint_turn: std::sync::atomic::AtomicUsize,
    /// The session's client, for writes; `None` while disconnected.
    pub(super) client: Mutex<Option<etcd_client::Client>>,
}

/// `2026-11-27T16:50:01Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let s = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (s.div_euclid(86400), s.rem_euclid(86400));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

impl Agent {
    pub fn new(settings: ClusterSettings, daemon: Arc<Daemon>) -> Arc<Agent> {
        let layout = Layout::new(&settings.prefix);
        Arc::new(Agent {
            settings,
            layout,
            daemon,
            view: Mutex::new(View::default()),
            synced: AtomicBool::new(false),
            health: Mutex::new(Health {
                connection: Connection::Connecting,
                since: SystemTime::now(),
                last_error: None,
                revision: 0,
                lease: None,
                relists: 0,
                resumes: 0,
                batches: 0,
                last_generation: None,
                apply_error: None,
                conflicts: Vec::new(),
            }),
            view_changes: std::sync::atomic::AtomicU64::new(0),
            last_merge: Mutex::new(None),
            dirty: tokio::sync::Notify::new(),
            endpoint_turn: std::sync::atomic::AtomicUsize::new(0),
            client: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn with_view<T>(&self, f: impl FnOnce(&mut View) -> T) -> T {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        self.view_changes.fetch_add(1, Ordering::AcqRel);
        f(&mut v)
    }

    /// Reads the view without counting a change.
    fn read_view<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        f(&self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The commit path's merge: every new document (API write, reload, or
    /// the agent's own batch) gets the cluster's objects as the view has
    /// them. Before the first list, documents pass unchanged.
    pub fn merge(&self, mut c: Config) -> Config {
        if !self.synced.load(Ordering::Acquire) {
            return c;
        }
        let at = self.view_changes.load(Ordering::Acquire);
        let mut memo = self.last_merge.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, last)) = memo.as_ref() {
            if *n == at {
                let g = std::mem::replace(&mut c.generation, last.generation);
                let same = *last == c;
                c.generation = g;
                if same {
                    return c;
                }
            }
        }
        let m = self.read_view(|v| derive::merge(&c, v, &self.settings));
        *memo = Some((at, m.config.clone()));
        let mut h = self.health();
        h.conflicts = m.conflicts;
        h.apply_error = m.error;
        m.config
    }

    /// Applies the view to the running configuration as one generation, if
    /// it changes anything. Blocking (the commit persists): call from a
    /// blocking context.
    pub(super) fn reconcile(&self) {
        for _ in 0..10 {
            let cur = self.daemon.config();
            let mut merged = self.merge(cur.clone());
            merged.generation = cur.generation;
            if merged == cur {
                return;
            }
            if let Some(e) = self.health().apply_error.clone() {
                tracing::warn!(error = %e, "cluster state not applied: the local configuration refuses it");
                return;
            }
            match self.daemon.apply(merged, cur.generation) {
                Ok(g) => {
                    let mut h = self.health();
                    h.batches += 1;
                    h.last_generation = Some(g);
                    h.apply_error = None;
                    return;
                }
                // A local change came in between: merge again on top of it.
                Err(ApplyError::Stale { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster state not applied");
                    self.health().apply_error = Some(e.to_string());
                    return;
                }
            }
        }
    }

    pub(super) fn connected(&self, client: etcd_client::Client, lease: i64) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
        let mut h = self.health();
        if h.connection != Connection::Connected {
            tracing::info!(node = %self.settings.node, lease = format!("{lease:x}"), "cluster store reached");
        }
        h.connection = Connection::Connected;
        h.since = SystemTime::now();
        h.lease = Some(lease);
    }

    /// The session ended or could not start: degraded until the next one.
    pub(super) fn disconnected(&self, error: String) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut h = self.health();
        match h.connection {
            Connection::Connected => {
                h.since = SystemTime::now();
                tracing::warn!(error = %error, "cluster store unreachable: forwarding on the last-known state");
            }
            Connection::Connecting => {
                tracing::warn!(error = %error, "cluster store unreachable at start: forwarding on the stored state");
            }
            Connection::Degraded => {}
        }
        h.connection = Connection::Degraded;
        h.last_error = Some(error);
    }

    pub(super) fn is_connected(&self) -> bool {
        self.health().connection == Connection::Connected
    }

    pub(super) fn at_revision(&self, rev: i64) {
        self.health().revision = rev;
    }

    pub(super) fn counted(&self, relist: bool) {
        let mut h = self.health();
        if relist {
            h.relists += 1;
        } else {
            h.resumes += 1;
        }
    }

    /// `degraded: store unreachable since ...`, while degraded.
    pub fn degraded(&self) -> Option<String> {
        let h = self.health();
        (h.connection != Connection::Connected).then(|| {
            let secs = h.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            match h.connection {
                Connection::Connecting => {
                    format!(
                        "degraded: store not reached yet (trying since {}, {secs} s)",
                        rfc3339(h.since)
                    )
                }
                _ => format!("degraded: store unreachable since {} ({secs} s)", rfc3339(h.since)),
            }
        })
    }

    pub fn status(&self) -> ClusterStatus {
        let degraded = self.degraded();
        let (nodes, networks, endpoint_count, rules, invalid_records) = self.read_view(|v| {
            (v.nodes.len(), v.networks.len(), v.endpoints.len(), v.rules.len(), v.invalid_records())
        });
        let h = self.health().clone();
        ClusterStatus {
            node: self.settings.node.clone(),
            prefix: self.settings.prefix.clone(),
            endpoints: self.settings.endpoints.clone(),
            connection: h.connection,
            degraded,
            last_error: h.last_error,
            revision: h.revision,
            lease: h.lease.map(|l| format!("{l:x}")),
            lease_ttl_secs: self.settings.lease_ttl_secs,
            relists: h.relists,
            resumes: h.resumes,
            batches: h.batches,
            last_generation: h.last_generation,
            nodes,
            networks,
            endpoint_count,
            rules,
            conflicts: h.conflicts,
            apply_error: h.apply_error,
            invalid_records,
        }
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        self.read_view(|v| {
            v.nodes
                .iter()
                .map(|(n, node)| NodeView {
                    name: n.clone(),
                    node: node.clone(),
                    local: *n == self.settings.node,
                })
                .collect()
        })
    }

    pub fn networks(&self) -> Vec<NetworkView> {
        self.read_view(|v| {
            v.networks
                .iter()
                .map(|(n, net)| NetworkView { name: n.clone(), network: net.clone() })
                .collect()
        })
    }

    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.read_view(|v| {
            v.endpoints
                .iter()
                .map(|((n, mac), ep)| EndpointView {
                    network: n.clone(),
                    mac: engine::model::Mac(*mac),
                    endpoint: ep.clone(),
                })
                .collect()
        })
    }

    /// The session's client, or the degraded message.
    fn writer(&self) -> Result<etcd_client::Client, WriteError> {
        if let Some(d) = self.degraded() {
            return Err(WriteError::Degraded(d));
        }
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| WriteError::Degraded("degraded: store unreachable".into()))
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, WriteError> {
        let mut c = self.writer()?;
        match tokio::time::timeout(WRITE_TIMEOUT, c.txn(txn)).await {
            Err(_) => Err(WriteError::Timeout),
            Ok(Err(e)) => Err(WriteError::Store(e.to_string())),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Adds (or updates the IP of) an endpoint owned by `node` (this node
    /// when `None`). Guarded by a transaction: another node's endpoint with
    /// the same MAC is never overwritten, and repeating the write after a
    /// timeout is harmless.
    pub async fn add_endpoint(&self, e: EndpointView) -> Result<(), WriteError> {
        super::settings::check_name(&e.endpoint.node, super::settings::MAX_NODE_NAME)
            .map_err(WriteError::Invalid)?;
        if !self.read_view(|v| v.networks.contains_key(&e.network)) {
            return Err(WriteError::NotFound(format!("no network {:?} in the cluster", e.network)));
        }
        if e.mac.0[0] & 1 == 1 {
            return Err(WriteError::Invalid(format!("{} is a multicast address", e.mac)));
        }
        let key = self.layout.key(&Key::Endpoint { network: e.network.clone(), mac: e.mac });
        let value = serde_json::to_vec(&e.endpoint).expect("an endpoint serialises");
        let r = self
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]),
            )
            .await?;
        if r.succeeded() {
            return Ok(());
        }
        let existing = r.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let Some(existing) = existing else {
            return Err(WriteError::Conflict("the endpoint changed meanwhile: repeat".into()));
        };
        let owner = serde_json::from_slice::<Endpoint>(&existing).map(|x| x.node).ok();
        if owner.as_deref() != Some(e.endpoint.node.as_str()) {
            return Err(WriteError::Conflict(format!(
                "{} in network {} is node {}'s endpoint",
                e.mac,
                e.network,
                owner.unwrap_or_else(|| "(unreadable record)".into())
            )));
        }
        let r = self
            .txn(
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, existing)])
                    .and_then([TxnOp::put(key, value, None)]),
            )
            .await?;
        if !r.succeeded() {
            return Err(WriteError::Conflict("the endpoint changed meanwhile: repeat".into()));
        }
        Ok(())
    }

    /// Deletes an endpoint; only this node's unless `any_owner`.
    pub async fn del_endpoint(
        &self,
        network: &str,
        mac: engine::model::Mac,
        any_owner: bool,
    ) -> Result<(), WriteError> {
        let key = self.layout.key(&Key::Endpoint { network: network.into(), mac });
        let mut c = self.writer()?;
        let got = tokio::time::timeout(WRITE_TIMEOUT, c.get(key.clone(), None))
            .await
            .map_err(|_| WriteError::Timeout)?
            .map_err(|e| WriteError::Store(e.to_string()))?;
        let Some(kv) = got.kvs().first() else {
            return Err(WriteError::NotFound(format!("no endpoint {mac} in network {network}")));
        };
        let owner = serde_json::from_slice::<Endpoint>(kv.value()).map(|x| x.node).ok();
        if !any_owner && owner.as_deref() != Some(self.settings.node.as_str()) {
            return Err(WriteError::Conflict(format!(
                "{mac} in network {network} is node {}'s endpoint (--any-owner deletes it anyway)",
                owner.unwrap_or_else(|| "(unreadable record)".into())
            )));
        }
        let r = self
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await?;
        if !r.succeeded() {
            return Err(WriteError::Conflict("the endpoint changed meanwhile: repeat".into()));
        }
        Ok(())
    }

    /// Creates or replaces a network (idempotent).
    pub async fn set_network(&self, name: &str, n: Network) -> Result<(), WriteError> {
        super::settings::check_name(name, 64).map_err(WriteError::Invalid)?;
        if n.vni > encap::wire::vxlan::MAX_VNI {
            return Err(WriteError::Invalid(format!("vni {} is out of range", n.vni)));
        }
        let taken = self.read_view(|v| {
            v.networks.iter().find(|(k, x)| *k != name && x.vni == n.vni).map(|(k, _)| k.clone())
        });
        if let Some(other) = taken {
            return Err(WriteError::Conflict(format!("vni {} is network {other}'s", n.vni)));
        }
        let key = self.layout.key(&Key::Network(name.into()));
        let value = serde_json::to_vec(&n).expect("a network serialises");
        self.txn(Txn::new().and_then([TxnOp::put(key, value, None)])).await?;
        Ok(())
    }

    /// Leaves the cluster on a clean removal: revokes this node's lease, so
    /// every peer drops its endpoints now rather than when the lease lapses.
    /// A restart does not call this: peers keep forwarding to this host while
    /// the next process takes over and registers again.
    pub async fn leave(&self, limit: Duration) {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lease = self.health().lease;
        let (Some(mut c), Some(lease)) = (client, lease) else { return };
        match tokio::time::timeout(limit, c.lease_revoke(lease)).await {
            Ok(Ok(_)) => {
                tracing::info!(node = %self.settings.node, "left the cluster (lease revoked)")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not revoke the lease: peers drop this node when it lapses")
            }
            Err(_) => tracing::warn!(
                ?limit,
                "lease revoke unanswered: peers drop this node when it lapses"
            ),
        }
    }

    /// Waits until the agent has its view and has applied it (tests, `run`).
    pub fn wait_synced(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.synced.load(Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn settings() -> ClusterSettings {
        let text = r#"
[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"
[cluster]
endpoints = ["http://192.0.2.100:2379"]
node = "a"
vteps = ["192.0.2.1"]
uplink = "up0"
"#;
        super::super::settings::read_file_text(text).unwrap().1.unwrap()
    }

    /// The agent's batches and local API writes go through one commit path:
    /// a batch is one generation, an unchanged view costs none, and a local
    /// write keeps the cluster's objects.
    #[test]
    fn batches_and_local_writes_share_the_commit_path() {
        let dir =
            std::env::temp_dir().join(format!("overlayd-cluster-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = local_doc();
        let d = Arc::new(Daemon::start(Store::open(&dir).unwrap(), Some(local)).unwrap());
        let a = Agent::new(settings(), Arc::clone(&d));
        d.set_cluster(Arc::clone(&a));
        let l = Layout::new("/overlayd");
        a.with_view(|v| {
            v.put(&l, b"/overlayd/v1/networks/blue", br#"{"vni":42}"#);
            v.put(&l, b"/overlayd/v1/nodes/a", br#"{"vteps":["192.0.2.1"]}"#);
            v.put(&l, b"/overlayd/v1/nodes/b", br#"{"vteps":["192.0.2.2"]}"#);
            v.put(&l, b"/overlayd/v1/endpoints/blue/02:00:00:00:00:0b", br#"{"node":"b"}"#);
        });
        a.reconcile();
        assert_eq!(d.generation(), 0, "nothing applied before the first list");
        a.synced.store(true, Ordering::Release);
        a.reconcile();
        assert_eq!(d.generation(), 1, "one batch, one generation");
        assert_eq!(d.config().tunnels[0].name, "cl.42.b");
        assert_eq!(d.rules().fdb.len(), 1, "published to the workers");
        a.reconcile();
        assert_eq!(d.generation(), 1, "an unchanged view costs no generation");
        // A local write of the whole document without the cluster's objects
        // keeps them: the commit merges.
        let mut mine = local_doc();
        mine.rules.push(engine::model::Rule {
            id: 7,
            priority: 0,
            matches: Default::default(),
            actions: vec![engine::model::Action::Drop],
            xdp_tier: Default::default(),
        });
        assert_eq!(d.apply(mine, 1).unwrap(), 2);
        assert_eq!(d.config().tunnels.len(), 1);
        assert_eq!(d.config().rules.len(), 1);
        a.with_view(|v| v.delete(&l, b"/overlayd/v1/nodes/b"));
        a.reconcile();
        assert_eq!(d.generation(), 3);
        assert!(d.config().tunnels.is_empty() && d.config().fdb.is_empty());
        assert_eq!(a.status().batches, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn local_doc() -> Config {
        Config::from_toml(
            "[[ports]]\nname = \"up0\"\nkind = \"uplink\"\nmac = \"02:00:00:00:00:10\"\n",
        )
        .unwrap()
    }

    #[test]
    fn times_read_as_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_797_001);
        assert_eq!(rfc3339(t), "2026-11-27T16:30:01Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
