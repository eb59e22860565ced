//! The daemon's control state: the accepted configuration, its store, and the
//! rule set the workers run. A change is applied as one transaction: check the
//! generation it was based on, validate and compile it, persist it, then
//! publish it to the workers. Any failure leaves everything as it was.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::compile::{compile, RuleSet};
use engine::counters::Snapshot;
use engine::model::{Config, ConfigError};
use engine::pipeline::Published;

use crate::api_types::{MemoryStatus, TunnelStatus, WhyBasis, WhyReport, WhyRequest};
use crate::capture::CaptureTap;
use crate::history::{History, Recent};
use crate::io::doorbell::Doorbells;
use crate::offload::Offloader;
use crate::report::{CounterBoard, IoStatus, LiveInputs};
use crate::store::{Store, StoreError};
use crate::why::{Observed, WhyError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("stale generation: the change was based on generation {based_on}, the current one is {current}")]
    Stale { based_on: u64, current: u64 },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("could not persist the change: {0}")]
    Store(#[from] StoreError),
}

/// Why the daemon could not start from its stored state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not load the stored state: {0}")]
    Load(StoreError),
    #[error("could not write the initial state: {0}")]
    Save(StoreError),
    #[error("the stored state does not compile: {0}")]
    Compile(ConfigError),
}

/// The control plane's state, shared by the API handlers. It publishes rule
/// sets to the workers and reads what they report; it never reaches into
/// them.
pub struct Daemon {
    store: Store,
    published: Arc<Published>,
    /// The accepted document. The lock serialises writers; readers of the fast
    /// path never take it (they read `published`).
    config: Mutex<Config>,
    /// Counters of every worker, current and retired generations alike.
    counters: Arc<CounterBoard>,
    /// Where the API arms a live capture and the workers find it.
    capture: Arc<CaptureTap>,
    /// Wakes idle workers after a publish (the capture tap rings them too).
    bells: Arc<Doorbells>,
    started: Instant,
    /// The generation published last, for those that follow changes (the
    /// datapath re-steers and re-resolves when tunnels or ports change).
    changed: tokio::sync::watch::Sender<u64>,
    /// Checks a document against this host (its interfaces exist) before it
    /// is accepted; set by `run` when it attaches interfaces.
    host_check: std::sync::OnceLock<HostCheck>,
    /// What `status` shows about the packet I/O; set by `run`.
    io: std::sync::OnceLock<Box<dyn IoReport>>,
    /// VF settings and flow offload; set by `run` when it attaches interfaces.
    offload: std::sync::OnceLock<Arc<Offloader>>,
    /// What the counters did lately (liveness, recent moves).
    history: Mutex<History>,
    /// Called after each publish, before the API answers; set by `run`.
    publish_hook: std::sync::OnceLock<Box<dyn PublishHook>>,
    /// Learned MACs and IP -> MAC bindings (`[[networks]]`).
    learning: Arc<crate::learning::Learning>,
    /// Cluster mode's agent (docs/cluster.md); set by `run`.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Agent>>,
    /// Starts a new binary for `POST /v1/upgrade`; set by `run` when there
    /// is a datapath to hand over.
    upgrader: std::sync::OnceLock<Arc<crate::upgrade_launch::Upgrader>>,
    /// Resident memory as read right after the last purge (`release_memory`).
    memory: Mutex<MemoryStatus>,
}

pub type HostCheck = Box<dyn Fn(&Config) -> Result<(), ConfigError> + Send + Sync>;

/// Told of every rule set the commit path publishes, before the change is
/// acknowledged: the datapath's XDP tier makes its older entries inert here.
pub trait PublishHook: Send + Sync {
    fn published(&self, rs: &RuleSet);
}

/// What the running packet I/O lets the control plane read: its state for
/// `status`, and what the workers run with besides the rule set, for the
/// live trace (so a trace runs with exactly the workers' state).
pub trait IoReport: Send + Sync {
    fn io_status(&self) -> IoStatus;
    fn live_inputs(&self) -> LiveInputs;
}

impl Daemon {
    /// Starts from the stored state if there is one, else from `initial`
    /// (a configuration file), else from an empty configuration.
    pub fn start(store: Store, initial: Option<Config>) -> Result<Daemon, StartError> {
        let config = match store.load().map_err(StartError::Load)? {
            Some(c) => c,
            None => {
                let c = initial.unwrap_or_default();
                store.save(&c).map_err(StartError::Save)?;
                c
            }
        };
        let rs = compile(&config).map_err(StartError::Compile)?;
        let generation = config.generation;
        let bells = Arc::new(Doorbells::default());
        Ok(Daemon {
            store,
            published: Arc::new(Published::new(rs)),
            config: Mutex::new(config),
            counters: Arc::new(CounterBoard::default()),
            capture: Arc::new(CaptureTap::ringing(Arc::clone(&bells))),
            bells,
            started: Instant::now(),
            changed: tokio::sync::watch::Sender::new(generation),
            host_check: std::sync::OnceLock::new(),
            io: std::sync::OnceLock::new(),
            offload: std::sync::OnceLock::new(),
            history: Mutex::new(History::default()),
            publish_hook: std::sync::OnceLock::new(),
            learning: Arc::default(),
            cluster: std::sync::OnceLock::new(),
            upgrader: std::sync::OnceLock::new(),
            memory: Mutex::default(),
        })
    }

    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn generation(&self) -> u64 {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).generation
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.published.current()
    }

    /// Frees the rule sets replaced since the last call that no worker
    /// holds any more, and gives every free heap page back to the kernel:
    /// a change's scratch memory, and what the XDP tier's owner used to
    /// re-install flows after it. Called once a second, so resident memory
    /// is what the daemon holds plus at most a second of churn.
    ///
    /// Resident memory is read right after, and kept for `status` and
    /// `/metrics`: the one moment the figure is what the daemon holds,
    /// not a change's or an answer's scratch waiting for the next purge.
    pub fn release_memory(&self) {
        self.published.reclaim();
        crate::io::sys::release_free_heap();
        let read = crate::resident::read();
        let at_ms = self.started.elapsed().as_millis() as u64;
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let r = read.unwrap_or_else(|e| {
            // Once, not every second: when the last reading was good.
            if m.purges == 0 || m.resident_kib != 0 {
                tracing::warn!(error = %e, "resident memory not readable; status shows 0");
            }
            crate::resident::Resident { resident_kib: 0, anon_kib: 0 }
        });
        *m = MemoryStatus {
            resident_kib: r.resident_kib,
            anon_kib: r.anon_kib,
            purges: m.purges + 1,
            at_ms,
        };
    }

    /// Resident memory after the last purge (zeros before the first).
    pub fn memory(&self) -> MemoryStatus {
        *self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// Installs the host check; later changes must pass it. Also checks the
    /// current document, so a daemon never runs one its host cannot serve.
    pub fn set_host_check(&self, check: HostCheck) -> Result<(), ConfigError> {
        check(&self.config())?;
        let _ = self.host_check.set(check);
        Ok(())
    }

    /// Installs the offloader: the current document's VF settings are
    /// applied (a refusal is logged and shown by `status`; the daemon runs on
    /// in software), and its rules placed. Later changes go through it.
    pub fn set_offload(&self, o: Arc<Offloader>) {
        let cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = o.apply_vfs(None, &cur) {
            tracing::error!(error = %e, "VF settings of the configuration refused");
            o.set_vf_error(e.to_string());
        }
        o.sync(&self.published.current());
        let _ = self.offload.set(o);
    }

    pub fn offload(&self) -> Option<&Arc<Offloader>> {
        self.offload.get()
    }

    /// Installs the hook told of every published rule set.
    pub fn set_publish_hook(&self, h: Box<dyn PublishHook>) {
        let _ = self.publish_hook.set(h);
    }

    /// Installs cluster mode's agent: from now on every new document gets
    /// the cluster's objects merged in before it is validated (cluster/derive.rs).
    pub fn set_cluster(&self, a: Arc<crate::cluster::Agent>) {
        let _ = self.cluster.set(a);
    }

    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Agent>> {
        self.cluster.get()
    }

    pub fn set_upgrader(&self, u: Arc<crate::upgrade_launch::Upgrader>) {
        let _ = self.upgrader.set(u);
    }

    pub fn upgrader(&self) -> Option<&Arc<crate::upgrade_launch::Upgrader>> {
        self.upgrader.get()
    }

    pub fn set_io_report(&self, r: Box<dyn IoReport>) {
        let _ = self.io.set(r);
    }

    /// The packet I/O's state (`None` when only the control plane runs).
    pub fn io_status(&self) -> Option<IoStatus> {
        self.io.get().map(|r| r.io_status())
    }

    /// What the workers run with (`None` when only the control plane runs).
    pub fn live_inputs(&self) -> Option<LiveInputs> {
        self.io.get().map(|r| r.live_inputs())
    }

    /// Wakes whenever a new generation is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Where workers report their counters.
    pub fn counter_board(&self) -> Arc<CounterBoard> {
        Arc::clone(&self.counters)
    }

    /// Learned state, for the workers, its thread and the API.
    pub fn learning(&self) -> Arc<crate::learning::Learning> {
        Arc::clone(&self.learning)
    }

    /// The workers' doorbells, rung on every publish.
    pub fn doorbells(&self) -> Arc<Doorbells> {
        Arc::clone(&self.bells)
    }

    /// Where a live capture is armed, for the workers and the API.
    pub fn capture_tap(&self) -> Arc<CaptureTap> {
        Arc::clone(&self.capture)
    }

    /// Everything counted since start, numbered by the current rule set.
    pub fn counters(&self) -> Snapshot {
        self.counters_of(&self.published.current())
    }

    fn counters_of(&self, rs: &RuleSet) -> Snapshot {
        let mut s = self.counters.snapshot(rs);
        // What the hardware ran, counted where software would have counted it.
        if let Some(o) = self.offload.get() {
            o.add_counters(&mut s, rs);
        }
        s
    }

    /// Reads the counters and takes note of them in the history (called
    /// every second by `run`, and by every reader, so what it shows is fresh).
    /// Returns them with the rule set that numbers them.
    pub fn observe(&self) -> (Arc<RuleSet>, Snapshot, Instant) {
        let rs = self.published.current();
        let s = self.counters_of(&rs);
        let now = Instant::now();
        self.history.lock().unwrap_or_else(|p| p.into_inner()).observe(now, &rs, &s);
        (rs, s, now)
    }

    /// `GET /v1/counters`: the counters, with when each rule last matched.
    pub fn counters_view(&self) -> crate::api_types::Counters {
        let (rs, s, now) = self.observe();
        let mut c = crate::api_types::Counters::new(&rs, &s);
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for r in &mut c.rules {
            r.last_hit_secs = h.rule_last_hit(r.id).map(|t| now.duration_since(t).as_secs());
        }
        c
    }

    /// Each tunnel's traffic, drops, liveness and next hop.
    pub fn tunnel_status(&self) -> Vec<TunnelStatus> {
        let (rs, s, now) = self.observe();
        self.tunnels_of(&rs, &s, now, self.io_status().as_ref())
    }

    /// The tunnels' status from what `observe` returned and the I/O's
    /// status, for answers that show both and must agree.
    pub fn tunnels_of(
        &self,
        rs: &RuleSet,
        s: &Snapshot,
        now: Instant,
        io: Option<&IoStatus>,
    ) -> Vec<TunnelStatus> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        crate::tunnels::tunnel_status(rs, s, &h, now, io.map(|io| io.neighbours.as_slice()))
    }

    /// What the counters moved over the last seconds, numbered by `rs`
    /// (`None` until there is a sample of its generation old enough).
    pub fn recent(&self, rs: &RuleSet) -> Option<Recent> {
        let (cur, s, now) = self.observe();
        if cur.generation != rs.generation {
            return None;
        }
        self.history.lock().unwrap_or_else(|p| p.into_inner()).recent(now, rs, &s)
    }

    /// Answers `why` with everything the daemon knows: the published rules,
    /// the I/O's state, the workers' inputs, placement and recent counters.
    pub fn why(&self, q: &WhyRequest) -> Result<WhyReport, WhyError> {
        let rs = self.rules();
        let io = self.io_status();
        let o = Observed {
            basis: if io.is_some() { WhyBasis::Live } else { WhyBasis::ControlOnly },
            live: self.live_inputs(),
            io,
            placement: self.offload.get().map(|o| o.placement()).unwrap_or_default(),
            recent: self.recent(&rs),
        };
        crate::why::why(rs, &o, q)
    }

    /// Replaces the whole configuration, if it was based on the current
    /// generation. Returns the new generation.
    pub fn apply(&self, new: Config, based_on: u64) -> Result<u64, ApplyError> {
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        Self::check(&cur, based_on)?;
        self.commit(&mut cur, new)
    }

    /// Applies a batch of operations, all or nothing, if it was based on the
    /// current generation. Returns the new generation.
    pub fn apply_ops(&self, ops: &[engine::ops::Op], based_on: u64) -> Result<u64, ApplyError> {
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        Self::check(&cur, based_on)?;
        let new = engine::ops::apply(&cur, ops)?;
        self.commit(&mut cur, new)
    }

    fn check(cur: &Config, based_on: u64) -> Result<(), ApplyError> {
        if based_on != cur.generation {
            return Err(ApplyError::Stale { based_on, current: cur.generation });
        }
        Ok(())
    }

    /// Validates, compiles, persists and publishes `new` as the next generation.
    fn commit(&self, cur: &mut Config, mut new: Config) -> Result<u64, ApplyError> {
        new.generation = cur.generation + 1;
        new.schema_version = engine::model::SCHEMA_VERSION;
        if let Some(a) = self.cluster.get() {
            new = a.merge(new);
        }
        let rs = compile(&new)?;
        if let Some(check) = self.host_check.get() {
            check(&new)?;
        }
        // VF settings are part of the transaction: refused ones change
        // nothing, and a failure to persist puts applied ones back.
        let offload = self.offload.get();
        let undo = offload.map(|o| o.apply_vfs(Some(cur), &new)).transpose()?;
        if let Err(e) = self.store.save(&new) {
            if let (Some(o), Some(u)) = (offload, undo) {
                o.undo_vfs(u);
            }
            return Err(e.into());
        }
        let (rules, tunnels, tables) =
            (rs.rules.len(), rs.tunnels.len(), rs.classifier.tuple_count());
        self.published.publish(rs);
        // Idle workers take the new generation now: until they do, they
        // hold the old one's memory and report its counters.
        self.bells.ring();
        // Learned entries carry over to the new rule set's numbering now,
        // not at the learning thread's next wake.
        self.learning.wake();
        if let Some(h) = self.publish_hook.get() {
            h.published(&self.published.current());
        }
        // The hardware follows the software, never the other way round: a
        // refused filter leaves its rule in software.
        if let Some(o) = offload {
            o.sync(&self.published.current());
        }
        *cur = new;
        self.changed.send_replace(cur.generation);
        tracing::info!(
            generation = cur.generation,
            rules,
            tunnels,
            tables,
            "configuration applied"
        );
        Ok(cur.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra_rule: u32) -> Config {
        Config::from_toml(&format!(
            "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n[[rules]]\nid = {extra_rule}\nactions = [\"drop\"]\n"
        ))
        .unwrap()
    }

    #[test]
    fn apply_is_transactional_and_survives_restart() {
        let dir = std::env::temp_dir().join(format!("overlayd-daemon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = Daemon::start(Store::open(&dir).unwrap(), None).unwrap();
        assert_eq!(d.generation(), 0);
        assert_eq!(d.apply(doc(1), 0).unwrap(), 1);
        assert_eq!(d.rules().generation, 1, "published to the workers");
        assert!(matches!(d.apply(doc(2), 0), Err(ApplyError::Stale { based_on: 0, current: 1 })));
        let mut bad = doc(3);
        bad.rules[0].actions = vec![engine::model::Action::Output("nope".into())];
        assert!(matches!(d.apply(bad, 1), Err(ApplyError::Invalid(_))));
        assert_eq!(d.config(), {
            let mut c = doc(1);
            c.generation = 1;
            c
        });
        drop(d);
        let again = Daemon::start(Store::open(&dir).unwrap(), Some(doc(9))).unwrap();
        assert_eq!(again.generation(), 1, "the stored state wins over the configuration file");
        assert_eq!(again.config().rules[0].id, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_purge_is_followed_by_a_reading() {
        let dir = std::env::temp_dir().join(format!("overlayd-daemon-mem-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = Daemon::start(Store::open(&dir).unwrap(), None).unwrap();
        assert_eq!(d.memory(), MemoryStatus::default(), "nothing read before the first purge");
        d.release_memory();
        d.release_memory();
        let m = d.memory();
        assert_eq!(m.purges, 2);
        assert!(m.resident_kib > 0 && m.anon_kib > 0 && m.anon_kib <= m.resident_kib, "{m:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
