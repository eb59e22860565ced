//! MAC learning and IP -> MAC bindings per network, kept off the packet
//! path's critical section.
//!
//! Workers never write the table. Each has a [`Learner`]: when a frame's
//! source MAC is new to it, has moved, or is due for a refresh, it pushes an
//! event onto its own bounded queue (lock-free; a full queue loses the event,
//! counted as `queue_full`). A control thread calls [`L2State::apply`]: it
//! drains the queues into the table, ages entries out, and publishes an
//! immutable [`L2Snapshot`] through arc-swap, which workers pick up between
//! batches as they pick up rule sets. The thread sleeps until something
//! needs it ([`L2State::wake`]): a new or moved address, a queue a quarter
//! full, a new rule set, or (while the table holds entries) the next ageing
//! walk. Refreshes of addresses that stay put wait for that walk.
//!
//! Per packet of a learning network a worker pays a hash and a compare in a
//! small per-worker filter of recent sightings (which also lets its own
//! moves take effect before the next snapshot), and, for a unicast
//! destination the static FDB does not know, one lookup in the snapshot.
//!
//! Static FDB entries and static bindings always win: a learned entry never
//! shadows one (the `static_entry` no-learn reason). Port and tunnel numbers
//! are those of one rule-set generation; when the generation changes the
//! table carries its entries over by name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};

use crate::compile::{FastMap, NetworkRt, RuleSet};
use crate::model::Mac;

/// Events a worker may queue before the control thread drains them.
const QUEUE_LEN: usize = 4096;
/// A worker reports a MAC it keeps seeing at the same place at most this
/// often (the refresh that keeps it from ageing out).
pub const REFRESH_NS: u64 = 500_000_000;
/// Slots of a worker's filter of recent sightings (a power of two).
const FILTER_SLOTS: usize = 512;
/// How often the control thread walks the table for expired entries.
pub const AGE_EVERY_NS: u64 = 100_000_000;

/// Where a MAC address was seen: behind a local port or a tunnel (that is,
/// a remote VTEP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    Port(u16),
    Tunnel(u16),
}

/// Why a sighting was not learned. Named like drop reasons: the stable name
/// is what the API and metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NoLearn {
    /// The network holds `mac_limit` learned MACs already.
    MacLimit,
    /// A static FDB entry (or static binding) covers the address.
    StaticEntry,
    /// The worker's event queue was full.
    QueueFull,
    /// Seen under a rule-set generation that is no longer current.
    StaleGeneration,
}

impl NoLearn {
    pub const ALL: [NoLearn; 4] =
        [NoLearn::MacLimit, NoLearn::StaticEntry, NoLearn::QueueFull, NoLearn::StaleGeneration];

    pub const fn name(self) -> &'static str {
        match self {
            NoLearn::MacLimit => "mac_limit",
            NoLearn::StaticEntry => "static_entry",
            NoLearn::QueueFull => "queue_full",
            NoLearn::StaleGeneration => "stale_generation",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Mac { generation: u64, vni: u32, mac: [u8; 6], at: Loc },
    Binding { vni: u32, ip: IpAddr, mac: [u8; 6] },
}

/// Counters of learning and suppression, for every network together.
#[derive(Default)]
pub struct L2Stats {
    learned: AtomicU64,
    moved: AtomicU64,
    aged: AtomicU64,
    bindings_learned: AtomicU64,
    answered: AtomicU64,
    flooded: AtomicU64,
    conflicting: AtomicU64,
    no_learn: [AtomicU64; NoLearn::ALL.len()],
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl L2Stats {
    fn no_learn(&self, r: NoLearn) {
        inc(&self.no_learn[r as usize]);
    }

    /// A question answered locally (counted by the worker that answered).
    pub fn answered(&self) {
        inc(&self.answered);
    }

    /// A question with no known binding, left to flood.
    pub fn flooded(&self) {
        inc(&self.flooded);
    }

    pub fn counts(&self) -> L2Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        L2Counts {
            learned: get(&self.learned),
            moved: get(&self.moved),
            aged: get(&self.aged),
            bindings_learned: get(&self.bindings_learned),
            answered: get(&self.answered),
            flooded: get(&self.flooded),
            conflicting: get(&self.conflicting),
            no_learn: NoLearn::ALL
                .iter()
                .map(|r| (r.name().to_string(), get(&self.no_learn[*r as usize])))
                .collect(),
        }
    }
}

/// Counter values, as the API shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct L2Counts {
    /// MACs learned (new entries).
    pub learned: u64,
    /// Learned MACs seen at a new place (port or remote VTEP).
    pub moved: u64,
    /// Entries (MACs and bindings) removed by ageing.
    pub aged: u64,
    pub bindings_learned: u64,
    /// ARP requests and neighbour solicitations answered locally.
    pub answered: u64,
    /// Those with no known binding, flooded as before.
    pub flooded: u64,
    /// Bindings seen for an address bound to another MAC.
    pub conflicting: u64,
    /// Sightings not learned, by reason.
    pub no_learn: std::collections::BTreeMap<String, u64>,
}

/// What workers read: learned MACs and bindings of one rule-set generation.
#[derive(Debug, Default)]
pub struct L2Snapshot {
    pub generation: u64,
    /// Keyed by (VNI, MAC as a number): two words to hash, not eight bytes.
    macs: FastMap<(u32, u64), Loc>,
    bindings: FastMap<(u32, IpAddr), [u8; 6]>,
}

impl L2Snapshot {
    pub fn mac(&self, vni: u32, mac: [u8; 6]) -> Option<Loc> {
        self.macs.get(&(vni, mac_bits(mac) as u64)).copied()
    }

    pub fn binding(&self, vni: u32, ip: IpAddr) -> Option<[u8; 6]> {
        self.bindings.get(&(vni, ip)).copied()
    }
}

#[derive(Clone, Copy, Debug)]
struct MacEntry {
    at: Loc,
    learned_ns: u64,
    seen_ns: u64,
    moves: u64,
}

#[derive(Clone, Copy, Debug)]
struct BindEntry {
    mac: [u8; 6],
    seen_ns: u64,
}

/// The control thread's table. Indices are those of `generation`, whose
/// port and tunnel names it keeps to carry entries over to the next one.
#[derive(Default)]
struct Table {
    generation: u64,
    ports: Vec<String>,
    tunnels: Vec<String>,
    macs: HashMap<(u32, [u8; 6]), MacEntry>,
    bindings: HashMap<(u32, IpAddr), BindEntry>,
    /// Learned MACs and bindings per network, against `mac_limit`.
    held_macs: HashMap<u32, usize>,
    held_bindings: HashMap<u32, usize>,
    adopted: bool,
    aged_at_ns: u64,
}

/// A learned MAC, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LearnedMac {
    pub vni: u32,
    pub mac: Mac,
    /// The local port it is behind, or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// the tunnel (remote VTEP) it is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// Seconds since it was last seen.
    pub age_secs: f64,
    /// Seconds since it was first learned.
    pub learned_secs: f64,
    /// How often it moved.
    pub moves: u64,
}

/// A learned IP -> MAC binding, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LearnedBinding {
    pub vni: u32,
    pub ip: IpAddr,
    pub mac: Mac,
    pub age_secs: f64,
}

/// Learned state, as `GET /v1/fdb/learned` returns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct L2View {
    pub macs: Vec<LearnedMac>,
    pub bindings: Vec<LearnedBinding>,
    pub counters: L2Counts,
}

/// Learned state shared by the workers (who read snapshots and queue
/// events) and the control thread (who applies them).
#[derive(Default)]
pub struct L2State {
    snapshot: ArcSwap<L2Snapshot>,
    /// Every learner's queue; locked only to register one and to drain.
    queues: Mutex<Vec<Arc<ArrayQueue<Event>>>>,
    table: Mutex<Table>,
    pub stats: L2Stats,
    /// The control thread, woken by [`L2State::wake`].
    waker: ArcSwapOption<std::thread::Thread>,
}

fn secs(ns: u64) -> f64 {
    (ns / 1_000_000) as f64 / 1000.0
}

impl L2State {
    pub fn new() -> Arc<L2State> {
        Arc::new(L2State::default())
    }

    /// A learner for one worker, with its own queue.
    pub fn learner(self: &Arc<Self>) -> Learner {
        let queue = Arc::new(ArrayQueue::new(QUEUE_LEN));
        self.queues.lock().unwrap().push(Arc::clone(&queue));
        Learner {
            state: Arc::clone(self),
            queue,
            snap: self.snapshot.load_full(),
            recent: vec![Recent::default(); FILTER_SLOTS].into_boxed_slice(),
        }
    }

    pub fn snapshot(&self) -> Arc<L2Snapshot> {
        self.snapshot.load_full()
    }

    /// Names the thread that calls [`apply`](Self::apply): the one
    /// [`wake`](Self::wake) wakes.
    pub fn set_waker(&self, t: std::thread::Thread) {
        self.waker.store(Some(Arc::new(t)));
    }

    /// Wakes the control thread (no system call unless it sleeps).
    pub fn wake(&self) {
        if let Some(t) = &*self.waker.load() {
            t.unpark();
        }
    }

    /// Whether the table holds learned entries (which age, so the control
    /// thread must look at them again).
    pub fn holds_entries(&self) -> bool {
        let t = self.table.lock().unwrap();
        !t.macs.is_empty() || !t.bindings.is_empty()
    }

    /// Drains every worker's events into the table under `rs` (the current
    /// rule set), ages entries out, and publishes a new snapshot if anything
    /// workers read changed. Returns whether it published.
    pub fn apply(&self, rs: &RuleSet, now_ns: u64) -> bool {
        let mut t = self.table.lock().unwrap();
        let mut changed = t.adopt(rs);
        let queues: Vec<_> = {
            let mut qs = self.queues.lock().unwrap();
            // A learner that is gone leaves its queue here alone.
            qs.retain(|q| Arc::strong_count(q) > 1 || !q.is_empty());
            qs.clone()
        };
        for q in &queues {
            while let Some(e) = q.pop() {
                changed |= t.apply(rs, e, now_ns, &self.stats);
            }
        }
        if now_ns.saturating_sub(t.aged_at_ns) >= AGE_EVERY_NS {
            t.aged_at_ns = now_ns;
            changed |= t.age(rs, now_ns, &self.stats);
        }
        if changed || self.snapshot.load().generation != t.generation {
            self.snapshot.store(Arc::new(t.snapshot()));
            return true;
        }
        false
    }

    /// Learned MACs and bindings with their ages at `now_ns`, sorted.
    pub fn view(&self, now_ns: u64) -> L2View {
        let t = self.table.lock().unwrap();
        let mut macs: Vec<LearnedMac> = t
            .macs
            .iter()
            .map(|(&(vni, mac), e)| {
                let name = |names: &[String], i: u16| names.get(i as usize).cloned();
                let (port, tunnel) = match e.at {
                    Loc::Port(p) => (name(&t.ports, p), None),
                    Loc::Tunnel(tn) => (None, name(&t.tunnels, tn)),
                };
                LearnedMac {
                    vni,
                    mac: Mac(mac),
                    port,
                    tunnel,
                    age_secs: secs(now_ns.saturating_sub(e.seen_ns)),
                    learned_secs: secs(now_ns.saturating_sub(e.learned_ns)),
                    moves: e.moves,
                }
            })
            .collect();
        macs.sort_by_key(|m| (m.vni, m.mac.0));
        let mut bindings: Vec<LearnedBinding> = t
            .bindings
            .iter()
            .map(|(&(vni, ip), e)| LearnedBinding {
                vni,
                ip,
                mac: Mac(e.mac),
                age_secs: secs(now_ns.saturating_sub(e.seen_ns)),
            })
            .collect();
        bindings.sort_by_key(|b| (b.vni, b.ip));
        L2View { macs, bindings, counters: self.stats.counts() }
    }
}

impl Table {
    /// Carries entries over to `rs`'s generation by port and tunnel name,
    /// dropping those whose place, network or learning is gone or which a
    /// static entry now covers. True if the generation changed.
    fn adopt(&mut self, rs: &RuleSet) -> bool {
        if rs.generation == self.generation && self.adopted {
            return false;
        }
        let (ports, tunnels) = (&self.ports, &self.tunnels);
        self.macs.retain(|&(vni, mac), e| {
            let learning = rs.networks.get(&vni).is_some_and(|n| n.learning);
            let moved = match e.at {
                Loc::Port(p) => ports.get(p as usize).and_then(|n| rs.port_index(n)).map(Loc::Port),
                Loc::Tunnel(t) => {
                    tunnels.get(t as usize).and_then(|n| rs.tunnel_index(n)).map(Loc::Tunnel)
                }
            };
            match moved {
                Some(at) if learning && !rs.fdb.contains_key(&(vni, mac)) => {
                    e.at = at;
                    true
                }
                _ => false,
            }
        });
        self.bindings.retain(|&(vni, ip), _| {
            rs.networks.get(&vni).is_some_and(|n| !n.bindings.contains_key(&ip))
        });
        self.generation = rs.generation;
        self.ports = rs.ports.iter().map(|p| p.name.clone()).collect();
        self.tunnels = rs.tunnels.iter().map(|t| t.name.clone()).collect();
        self.adopted = true;
        self.recount();
        true
    }

    fn recount(&mut self) {
        self.held_macs.clear();
        for (vni, _) in self.macs.keys() {
            *self.held_macs.entry(*vni).or_default() += 1;
        }
        self.held_bindings.clear();
        for (vni, _) in self.bindings.keys() {
            *self.held_bindings.entry(*vni).or_default() += 1;
        }
    }

    /// Applies one event; true if the snapshot changes.
    fn apply(&mut self, rs: &RuleSet, e: Event, now_ns: u64, s: &L2Stats) -> bool {
        match e {
            Event::Mac { generation, vni, mac, at } => {
                if generation != self.generation {
                    s.no_learn(NoLearn::StaleGeneration);
                    return false;
                }
                let Some(net) = rs.networks.get(&vni).filter(|n| n.learning) else {
                    return false;
                };
                if rs.fdb.contains_key(&(vni, mac)) {
                    s.no_learn(NoLearn::StaticEntry);
                    return false;
                }
                if let Some(cur) = self.macs.get_mut(&(vni, mac)) {
                    cur.seen_ns = now_ns;
                    if cur.at == at {
                        return false;
                    }
                    cur.at = at;
                    cur.moves += 1;
                    inc(&s.moved);
                    return true;
                }
                let held = self.held_macs.entry(vni).or_default();
                if *held >= net.mac_limit as usize {
                    s.no_learn(NoLearn::MacLimit);
                    return false;
                }
                *held += 1;
                let entry = MacEntry { at, learned_ns: now_ns, seen_ns: now_ns, moves: 0 };
                self.macs.insert((vni, mac), entry);
                inc(&s.learned);
                true
            }
            Event::Binding { vni, ip, mac } => {
                let Some(net) = rs.networks.get(&vni) else { return false };
                if let Some(bound) = net.bindings.get(&ip) {
                    if *bound != mac {
                        inc(&s.conflicting);
                    }
                    s.no_learn(NoLearn::StaticEntry);
                    return false;
                }
                if let Some(cur) = self.bindings.get_mut(&(vni, ip)) {
                    cur.seen_ns = now_ns;
                    if cur.mac == mac {
                        return false;
                    }
                    // The newest claim wins (a workload re-created with a
                    // new MAC), but an operator should know.
                    inc(&s.conflicting);
                    cur.mac = mac;
                    return true;
                }
                let held = self.held_bindings.entry(vni).or_default();
                if *held >= net.mac_limit as usize {
                    s.no_learn(NoLearn::MacLimit);
                    return false;
                }
                *held += 1;
                self.bindings.insert((vni, ip), BindEntry { mac, seen_ns: now_ns });
                inc(&s.bindings_learned);
                true
            }
        }
    }

    /// Removes entries not seen for their network's ageing time.
    fn age(&mut self, rs: &RuleSet, now_ns: u64, s: &L2Stats) -> bool {
        let before = self.macs.len() + self.bindings.len();
        let fresh = |vni: u32, seen: u64| {
            rs.networks.get(&vni).is_some_and(|n| now_ns.saturating_sub(seen) <= n.ageing_ns)
        };
        self.macs.retain(|&(vni, _), e| fresh(vni, e.seen_ns));
        self.bindings.retain(|&(vni, _), e| fresh(vni, e.seen_ns));
        let gone = before - self.macs.len() - self.bindings.len();
        if gone > 0 {
            self.recount();
        }
        s.aged.fetch_add(gone as u64, Ordering::Relaxed);
        gone > 0
    }

    fn snapshot(&self) -> L2Snapshot {
        L2Snapshot {
            generation: self.generation,
            macs: self.macs.iter().map(|(&(v, m), e)| ((v, mac_bits(m) as u64), e.at)).collect(),
            bindings: self.bindings.iter().map(|(k, e)| (*k, e.mac)).collect(),
        }
    }
}

/// A worker's recent sighting: the key of (network, MAC), where, and when it
/// was last reported.
#[derive(Clone, Copy, Debug, Default)]
struct Recent {
    key: u64,
    at: Option<Loc>,
    reported_ns: u64,
}

/// One worker's side of learning: its queue, the snapshot it reads, and its
/// filter of recent sightings. Owned by the worker thread; takes no lock.
pub struct Learner {
    state: Arc<L2State>,
    queue: Arc<ArrayQueue<Event>>,
    snap: Arc<L2Snapshot>,
    recent: Box<[Recent]>,
}

/// A well-mixed 64-bit key of a network and an address (never 0, which
/// marks an empty filter slot).
#[inline]
fn key(vni: u32, addr: u128) -> u64 {
    let mut h = (addr as u64) ^ ((addr >> 64) as u64).rotate_left(29) ^ (vni as u64) << 40;
    // The murmur3 finaliser.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h | 1
}

#[inline]
fn mac_bits(mac: [u8; 6]) -> u128 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]) as u128
}

impl Learner {
    /// Picks up the newest snapshot (between batches).
    #[inline]
    pub fn sync(&mut self) {
        let cur = self.state.snapshot.load();
        if !Arc::ptr_eq(&cur, &self.snap) {
            self.snap = arc_swap::Guard::into_inner(cur);
        }
    }

    /// A learner that reads `snap` and reports to nobody (for traces: a
    /// traced packet teaches nothing and counts nowhere).
    pub fn reading(snap: Arc<L2Snapshot>) -> Learner {
        let state = L2State::new();
        state.snapshot.store(Arc::clone(&snap));
        Learner {
            state,
            queue: Arc::new(ArrayQueue::new(1)),
            snap,
            recent: vec![Recent::default(); FILTER_SLOTS].into_boxed_slice(),
        }
    }

    pub fn stats(&self) -> &L2Stats {
        &self.state.stats
    }

    /// Records that `mac` was seen in `vni` at `at`; queues an event if it is
    /// new or moved to this worker's knowledge, or due for a refresh.
    /// Returns whether it queued one.
    #[inline]
    pub fn saw_mac(&mut self, generation: u64, vni: u32, mac: [u8; 6], at: Loc, now: u64) -> bool {
        let k = key(vni, mac_bits(mac));
        let slot = &mut self.recent[k as usize & (FILTER_SLOTS - 1)];
        let same = slot.key == k && slot.at == Some(at);
        if same && now.wrapping_sub(slot.reported_ns) < REFRESH_NS {
            return false;
        }
        *slot = Recent { key: k, at: Some(at), reported_ns: now };
        self.push(k, Event::Mac { generation, vni, mac, at }, !same)
    }

    /// Records a binding a workload announced (ARP, NA).
    pub fn saw_binding(&mut self, vni: u32, ip: IpAddr, mac: [u8; 6], now: u64) -> bool {
        let bits = match ip {
            IpAddr::V4(a) => u32::from(a) as u128 ^ (1 << 127),
            IpAddr::V6(a) => u128::from(a),
        };
        let k = key(vni, bits ^ mac_bits(mac).rotate_left(64));
        let slot = &mut self.recent[k as usize & (FILTER_SLOTS - 1)];
        let same = slot.key == k;
        if same && now.wrapping_sub(slot.reported_ns) < REFRESH_NS {
            return false;
        }
        *slot = Recent { key: k, at: None, reported_ns: now };
        self.push(k, Event::Binding { vni, ip, mac }, !same)
    }

    /// Queues `e`; wakes the control thread if it is `news` (an address
    /// new or moved to this worker's knowledge, which floods or goes the
    /// old way until applied) or the queue is filling.
    fn push(&mut self, k: u64, e: Event, news: bool) -> bool {
        if self.queue.push(e).is_err() {
            self.state.stats.no_learn(NoLearn::QueueFull);
            // Report again with the next frame.
            self.recent[k as usize & (FILTER_SLOTS - 1)].key = 0;
            self.state.wake();
            return false;
        }
        if news || self.queue.len() >= QUEUE_LEN / 4 {
            self.state.wake();
        }
        true
    }

    /// Where `mac` in `vni` is, if the published snapshot of `generation`
    /// knows it; when this worker saw it elsewhere in the last refresh
    /// interval, there (a move counts before the control thread publishes
    /// it; a new MAC waits for the control thread, which applies limits).
    #[inline]
    pub fn lookup(&self, generation: u64, vni: u32, mac: [u8; 6], now: u64) -> Option<Loc> {
        if self.snap.generation != generation {
            return None;
        }
        let known = self.snap.mac(vni, mac)?;
        let k = key(vni, mac_bits(mac));
        let r = &self.recent[k as usize & (FILTER_SLOTS - 1)];
        if r.key == k && now.wrapping_sub(r.reported_ns) < REFRESH_NS {
            return r.at.or(Some(known));
        }
        Some(known)
    }

    /// Forgets recent sightings: their port and tunnel numbers belong to a
    /// rule-set generation that just ended.
    pub fn new_generation(&mut self) {
        self.recent.fill(Recent::default());
    }

    /// The MAC bound to `ip` in `vni`: static first, then learned.
    pub fn binding(
        &self,
        net: &NetworkRt,
        generation: u64,
        vni: u32,
        ip: IpAddr,
    ) -> Option<[u8; 6]> {
        if let Some(m) = net.bindings.get(&ip) {
            return Some(*m);
        }
        if self.snap.generation != generation {
            return None;
        }
        self.snap.binding(vni, ip)
    }
}

/// What learning and suppression did to a packet, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Step {
    /// The source MAC was reported to the control thread (new to this
    /// worker, moved, or due for a refresh).
    Learn { vni: u32, mac: [u8; 6], at: Loc },
    /// A unicast destination found among learned MACs.
    Known { vni: u32, mac: [u8; 6], at: Loc },
    /// An ARP request or NS answered on the asker's port, not flooded.
    Answered { vni: u32, ip: IpAddr, mac: [u8; 6] },
    /// An ARP request or NS with no known binding: it floods.
    Unanswered { vni: u32, ip: IpAddr },
}

/// `s` in words, with names from `rs`.
pub fn describe(rs: &RuleSet, s: &L2Step) -> String {
    let at = |a: &Loc| match *a {
        Loc::Port(p) => format!("port {}", rs.ports.get(p as usize).map_or("?", |p| &p.name)),
        Loc::Tunnel(t) => match rs.tunnels.get(t as usize) {
            Some(t) => format!("tunnel {} (remote {})", t.name, t.remote),
            None => "a tunnel".into(),
        },
    };
    match s {
        L2Step::Learn { vni, mac, at: a } => {
            format!("source {} in vni {vni} seen at {}: reported for learning", Mac(*mac), at(a))
        }
        L2Step::Known { vni, mac, at: a } => {
            format!("destination {} in vni {vni} learned at {}", Mac(*mac), at(a))
        }
        L2Step::Answered { vni, ip, mac } => format!(
            "ARP/ND suppression in vni {vni}: {ip} is at {}, answered on the input port, not flooded",
            Mac(*mac)
        ),
        L2Step::Unanswered { vni, ip } => {
            format!("ARP/ND suppression in vni {vni}: no binding for {ip}, flooded")
        }
    }
}
