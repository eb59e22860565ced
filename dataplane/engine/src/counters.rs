//! Packet accounting: every packet the engine receives is either sent or dropped
//! under a named reason, and the counters prove it.
//!
//! Each worker owns one `WorkerCounters` and is its only writer; readers (the
//! API, metrics, tests) sum all workers' counters. Counters are atomics written
//! with a plain load + store (no locked read-modify-write), which costs the
//! worker the same as a `u64` increment while letting other threads read
//! without tearing.
//!
//! The invariant, for any set of workers at a quiescent point:
//! `rx + replicas + generated == tx + dropped`, where `replicas` counts the
//! extra copies made by replication (a flooded packet sent to three tunnels is
//! one packet in, two replicas, three packets out) and `generated` the packets
//! the dataplane built itself (ICMP "too big" replies).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use encap::DropReason;

use crate::compile::RuleSet;

/// One single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Single writer: a load and a store are enough, and avoid a locked add.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Takes back a count (a packet the pipeline sent that the I/O layer could
    /// not queue, and counts as a drop instead).
    #[inline(always)]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Packets and bytes.
#[derive(Debug, Default)]
pub struct Flow {
    pub packets: Counter,
    pub bytes: Counter,
}

impl Flow {
    #[inline(always)]
    pub fn add(&self, bytes: usize) {
        self.packets.inc();
        self.bytes.add(bytes as u64);
    }

    pub fn snapshot(&self) -> FlowSnapshot {
        FlowSnapshot { packets: self.packets.get(), bytes: self.bytes.get() }
    }
}

/// Per-port counters.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx: Flow,
    pub tx: Flow,
}

/// Per-tunnel counters.
#[derive(Debug)]
pub struct TunnelCounters {
    pub encap: Flow,
    pub decap: Flow,
    /// Drops of packets going into the tunnel (encapsulation failed) or
    /// coming out of it (dropped after decapsulation), by reason: a subset of
    /// the worker's `drops`, counted at the same place.
    pub drops: Vec<Counter>,
}

impl Default for TunnelCounters {
    fn default() -> Self {
        TunnelCounters {
            encap: Flow::default(),
            decap: Flow::default(),
            drops: (0..DropReason::SLOTS).map(|_| Counter::default()).collect(),
        }
    }
}

/// Which tier of the classifier answered.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hit: Counter,
    pub miss: Counter,
    /// Tuples probed on misses (divide by `miss` for the mean).
    pub tuples_probed: Counter,
}

/// Batch sizes seen, in power-of-two buckets: 1, 2-3, 4-7, ..., 256-511, 512+.
pub const BATCH_BUCKETS: usize = 10;

/// One worker's counters, sized for one generation's ports, tunnels and rules.
#[derive(Debug)]
pub struct WorkerCounters {
    pub rx: Counter,
    pub tx: Counter,
    pub replicas: Counter,
    pub generated: Counter,
    pub drops: Vec<Counter>,
    pub ports: Vec<PortCounters>,
    pub tunnels: Vec<TunnelCounters>,
    pub rules: Vec<Flow>,
    pub cache: CacheCounters,
    pub batches: [Counter; BATCH_BUCKETS],
    /// Nanoseconds spent processing batches (for the busy ratio).
    pub busy_ns: Counter,
}

impl WorkerCounters {
    pub fn new(ports: usize, tunnels: usize, rules: usize) -> Self {
        WorkerCounters {
            rx: Counter::default(),
            tx: Counter::default(),
            replicas: Counter::default(),
            generated: Counter::default(),
            drops: (0..DropReason::SLOTS).map(|_| Counter::default()).collect(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            tunnels: (0..tunnels).map(|_| TunnelCounters::default()).collect(),
            rules: (0..rules).map(|_| Flow::default()).collect(),
            cache: CacheCounters::default(),
            batches: Default::default(),
            busy_ns: Counter::default(),
        }
    }

    #[inline(always)]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    /// Counts a drop under its reason, and under the tunnel the packet was
    /// going into or came out of: `tunnel` is the tunnel's index plus one,
    /// 0 for none (the pipeline's tunnel tag).
    #[inline(always)]
    pub fn drop_in_tunnel(&self, reason: DropReason, tunnel: u16) {
        self.drop(reason);
        if tunnel != 0 {
            self.tunnel_drop(reason, tunnel - 1);
        }
    }

    /// Kept out of line: the packet path only pays for the test above.
    #[cold]
    #[inline(never)]
    fn tunnel_drop(&self, reason: DropReason, tunnel: u16) {
        if let Some(t) = self.tunnels.get(tunnel as usize) {
            t.drops[reason as usize].inc();
        }
    }

    /// Turns a packet counted as sent on `port` into a drop: the I/O layer
    /// could not queue it.
    pub fn unsend(&self, port: u16, bytes: usize, reason: DropReason) {
        self.tx.sub(1);
        if let Some(p) = self.ports.get(port as usize) {
            p.tx.packets.sub(1);
            p.tx.bytes.sub(bytes as u64);
        }
        self.drop(reason);
    }

    /// Counts a packet the I/O layer received on `port` and dropped before
    /// the pipeline saw it (a malformed offload header, no free frame).
    pub fn input_drop(&self, port: u16, bytes: usize, reason: DropReason) {
        self.rx.inc();
        if let Some(p) = self.ports.get(port as usize) {
            p.rx.packets.inc();
            p.rx.bytes.add(bytes as u64);
        }
        self.drop(reason);
    }

    #[inline(always)]
    pub fn batch(&self, size: usize) {
        let b = (usize::BITS - size.max(1).leading_zeros() - 1) as usize;
        self.batches[b.min(BATCH_BUCKETS - 1)].inc();
    }
}

/// Packets and bytes, read.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct FlowSnapshot {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for FlowSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// The sum of several workers' counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub rx: u64,
    pub tx: u64,
    pub replicas: u64,
    pub generated: u64,
    /// Non-zero drop counters by reason name, in code order.
    pub drops: Vec<(&'static str, u64)>,
    pub ports: Vec<(FlowSnapshot, FlowSnapshot)>,
    pub tunnels: Vec<(FlowSnapshot, FlowSnapshot)>,
    /// Per tunnel (numbered as `tunnels`), its non-zero drop counters by
    /// reason name, in code order.
    pub tunnel_drops: Vec<Vec<(&'static str, u64)>>,
    pub rules: Vec<FlowSnapshot>,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub tuples_probed: u64,
    pub batches: [u64; BATCH_BUCKETS],
    pub busy_ns: u64,
}

impl Snapshot {
    /// Sums workers' counters.
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerCounters>) -> Snapshot {
        let mut s = Snapshot::default();
        let mut drops = vec![0u64; DropReason::SLOTS];
        let mut tunnel_drops: Vec<Vec<u64>> = Vec::new();
        for w in workers {
            s.rx += w.rx.get();
            s.tx += w.tx.get();
            s.replicas += w.replicas.get();
            s.generated += w.generated.get();
            for (d, c) in drops.iter_mut().zip(&w.drops) {
                *d += c.get();
            }
            grow(&mut s.ports, w.ports.len());
            for (acc, p) in s.ports.iter_mut().zip(&w.ports) {
                acc.0 += p.rx.snapshot();
                acc.1 += p.tx.snapshot();
            }
            grow(&mut s.tunnels, w.tunnels.len());
            for (acc, t) in s.tunnels.iter_mut().zip(&w.tunnels) {
                acc.0 += t.encap.snapshot();
                acc.1 += t.decap.snapshot();
            }
            grow(&mut tunnel_drops, w.tunnels.len());
            for (acc, t) in tunnel_drops.iter_mut().zip(&w.tunnels) {
                add_drops(acc, &t.drops);
            }
            grow(&mut s.rules, w.rules.len());
            for (acc, r) in s.rules.iter_mut().zip(&w.rules) {
                *acc += r.snapshot();
            }
            s.cache_hit += w.cache.hit.get();
            s.cache_miss += w.cache.miss.get();
            s.tuples_probed += w.cache.tuples_probed.get();
            for (acc, b) in s.batches.iter_mut().zip(&w.batches) {
                *acc += b.get();
            }
            s.busy_ns += w.busy_ns.get();
        }
        s.drops = named_drops(&drops);
        s.tunnel_drops = tunnel_drops.iter().map(|d| named_drops(d)).collect();
        s
    }

    /// What happened between `before` and this snapshot (of the same workers).
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let flow = |a: FlowSnapshot, b: Option<&FlowSnapshot>| {
            let b = b.copied().unwrap_or_default();
            FlowSnapshot { packets: a.packets - b.packets, bytes: a.bytes - b.bytes }
        };
        let pair = |a: &[(FlowSnapshot, FlowSnapshot)], b: &[(FlowSnapshot, FlowSnapshot)]| {
            a.iter()
                .enumerate()
                .map(|(i, x)| {
                    (flow(x.0, b.get(i).map(|y| &y.0)), flow(x.1, b.get(i).map(|y| &y.1)))
                })
                .collect()
        };
        let mut batches = self.batches;
        for (a, b) in batches.iter_mut().zip(before.batches) {
            *a -= b;
        }
        Snapshot {
            rx: self.rx - before.rx,
            tx: self.tx - before.tx,
            replicas: self.replicas - before.replicas,
            generated: self.generated - before.generated,
            drops: drops_since(&self.drops, &before.drops),
            ports: pair(&self.ports, &before.ports),
            tunnels: pair(&self.tunnels, &before.tunnels),
            tunnel_drops: self
                .tunnel_drops
                .iter()
                .enumerate()
                .map(|(i, d)| drops_since(d, before.tunnel_drops.get(i).map_or(&[], Vec::as_slice)))
                .collect(),
            rules: self
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| flow(*r, before.rules.get(i)))
                .collect(),
            cache_hit: self.cache_hit - before.cache_hit,
            cache_miss: self.cache_miss - before.cache_miss,
            tuples_probed: self.tuples_probed - before.tuples_probed,
            batches,
            busy_ns: self.busy_ns - before.busy_ns,
        }
    }

    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops.iter().find(|(n, _)| *n == reason.name()).map_or(0, |(_, c)| *c)
    }

    /// Tunnel `tunnel`'s drops under `reason`.
    pub fn tunnel_drop_count(&self, tunnel: usize, reason: DropReason) -> u64 {
        self.tunnel_drops
            .get(tunnel)
            .and_then(|d| d.iter().find(|(n, _)| *n == reason.name()))
            .map_or(0, |(_, c)| *c)
    }

    /// `rx + replicas + generated == tx + dropped`: every packet accounted for.
    pub fn conserved(&self) -> bool {
        self.rx + self.replicas + self.generated == self.tx + self.dropped()
    }
}

/// Counters summed across workers and rule-set generations, keyed by name.
///
/// Per-port, per-tunnel and per-rule counters are indexed by the numbering of
/// the generation that counted them; when a worker moves to a new generation,
/// its retired counters (final: nobody writes them any more) are folded into
/// totals by port name, tunnel name and rule id, so a rule keeps its count
/// across unrelated changes and memory does not grow with every update.
#[derive(Default)]
pub struct Ledger {
    retired: Snapshot,
    retired_drops: Vec<u64>,
    ports: HashMap<String, (FlowSnapshot, FlowSnapshot)>,
    tunnels: HashMap<String, (FlowSnapshot, FlowSnapshot)>,
    /// Retired per-tunnel drops by tunnel name, indexed by reason.
    tunnel_drops: HashMap<String, Vec<u64>>,
    rules: HashMap<u32, FlowSnapshot>,
    /// Each worker's current counters and the rule set they are numbered by.
    live: Vec<Option<(Arc<RuleSet>, Arc<WorkerCounters>)>>,
}

impl Ledger {
    /// Makes `c` (numbered by `rs`) worker `worker`'s live counters, folding
    /// the ones it replaces into the totals.
    pub fn set_live(&mut self, worker: usize, rs: Arc<RuleSet>, c: Arc<WorkerCounters>) {
        if self.live.len() <= worker {
            self.live.resize_with(worker + 1, || None);
        }
        if let Some((old_rs, old)) = self.live[worker].replace((rs, c)) {
            self.fold(&old_rs, &old);
        }
    }

    /// Folds a worker's counters into the totals for good (the worker stopped).
    pub fn retire(&mut self, worker: usize) {
        if let Some((rs, c)) = self.live.get_mut(worker).and_then(Option::take) {
            self.fold(&rs, &c);
        }
    }

    fn fold(&mut self, rs: &RuleSet, c: &WorkerCounters) {
        let s = Snapshot::sum([c]);
        add_scalars(&mut self.retired, &s);
        self.retired_drops.resize(DropReason::SLOTS, 0);
        for (acc, d) in self.retired_drops.iter_mut().zip(&c.drops) {
            *acc += d.get();
        }
        for (p, v) in rs.ports.iter().zip(&s.ports) {
            let e = self.ports.entry(p.name.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        for (t, v) in rs.tunnels.iter().zip(&s.tunnels) {
            let e = self.tunnels.entry(t.name.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        for (t, c) in rs.tunnels.iter().zip(&c.tunnels) {
            let e = self.tunnel_drops.entry(t.name.clone()).or_default();
            add_drops(e, &c.drops);
        }
        for (r, v) in rs.rules.iter().zip(&s.rules) {
            *self.rules.entry(r.id).or_default() += *v;
        }
    }

    /// Everything counted so far, numbered by `current`. Ports, tunnels and
    /// rules that no longer exist still count in the totals.
    pub fn snapshot(&self, current: &RuleSet) -> Snapshot {
        let mut s = Snapshot::default();
        add_scalars(&mut s, &self.retired);
        let mut drops = self.retired_drops.clone();
        drops.resize(DropReason::SLOTS, 0);
        s.ports = current
            .ports
            .iter()
            .map(|p| self.ports.get(&p.name).copied().unwrap_or_default())
            .collect();
        s.tunnels = current
            .tunnels
            .iter()
            .map(|t| self.tunnels.get(&t.name).copied().unwrap_or_default())
            .collect();
        let mut tunnel_drops: Vec<Vec<u64>> = current
            .tunnels
            .iter()
            .map(|t| self.tunnel_drops.get(&t.name).cloned().unwrap_or_default())
            .collect();
        s.rules = current
            .rules
            .iter()
            .map(|r| self.rules.get(&r.id).copied().unwrap_or_default())
            .collect();
        for (rs, c) in self.live.iter().flatten() {
            let w = Snapshot::sum([&**c]);
            add_scalars(&mut s, &w);
            for (acc, d) in drops.iter_mut().zip(&c.drops) {
                *acc += d.get();
            }
            let same = std::ptr::eq(Arc::as_ptr(rs), current);
            for (i, p) in rs.ports.iter().enumerate() {
                let at = if same { Some(i) } else { current.port_index(&p.name).map(usize::from) };
                if let (Some(at), Some(v)) = (at, w.ports.get(i)) {
                    s.ports[at].0 += v.0;
                    s.ports[at].1 += v.1;
                }
            }
            for (i, t) in rs.tunnels.iter().enumerate() {
                let at =
                    if same { Some(i) } else { current.tunnel_index(&t.name).map(usize::from) };
                if let (Some(at), Some(v)) = (at, w.tunnels.get(i)) {
                    s.tunnels[at].0 += v.0;
                    s.tunnels[at].1 += v.1;
                }
                if let (Some(at), Some(t)) = (at, c.tunnels.get(i)) {
                    add_drops(&mut tunnel_drops[at], &t.drops);
                }
            }
            for (i, r) in rs.rules.iter().enumerate() {
                let at =
                    if same { Some(i) } else { current.rules.iter().position(|x| x.id == r.id) };
                if let (Some(at), Some(v)) = (at, w.rules.get(i)) {
                    s.rules[at] += *v;
                }
            }
        }
        s.drops = named_drops(&drops);
        s.tunnel_drops = tunnel_drops.iter().map(|d| named_drops(d)).collect();
        s
    }
}

/// A ledger's totals by name, carried into the next process (a restart or
/// a planned upgrade) so the counters stay monotonic across it: scalars,
/// drops by reason name, ports and tunnels by name, rules by id.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub rx: u64,
    pub tx: u64,
    pub replicas: u64,
    pub generated: u64,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub tuples_probed: u64,
    pub busy_ns: u64,
    pub batches: Vec<u64>,
    pub drops: std::collections::BTreeMap<String, u64>,
    pub ports: std::collections::BTreeMap<String, (FlowSnapshot, FlowSnapshot)>,
    pub tunnels: std::collections::BTreeMap<String, (FlowSnapshot, FlowSnapshot)>,
    pub tunnel_drops: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    pub rules: std::collections::BTreeMap<u32, FlowSnapshot>,
}

fn drops_by_name(by_reason: &[u64]) -> std::collections::BTreeMap<String, u64> {
    named_drops(by_reason).into_iter().map(|(n, c)| (n.to_string(), c)).collect()
}

/// Adds drops named as in [`Carried`] into `acc` (indexed by reason code);
/// a name this version does not know is counted under the last reason code
/// (so the totals still add up).
fn add_named_drops(acc: &mut Vec<u64>, named: &std::collections::BTreeMap<String, u64>) {
    grow(acc, DropReason::SLOTS);
    for (name, n) in named {
        let r = DropReason::ALL.iter().find(|r| r.name() == name).copied();
        let r = r.unwrap_or(DropReason::ALL[DropReason::ALL.len() - 1]);
        acc[r as usize] += n;
    }
}

impl Ledger {
    /// Everything counted so far, by name (live workers included).
    pub fn carried(&self) -> Carried {
        let mut l = Ledger {
            retired: self.retired.clone(),
            retired_drops: self.retired_drops.clone(),
            ports: self.ports.clone(),
            tunnels: self.tunnels.clone(),
            tunnel_drops: self.tunnel_drops.clone(),
            rules: self.rules.clone(),
            live: Vec::new(),
        };
        for (rs, c) in self.live.iter().flatten() {
            l.fold(rs, c);
        }
        let r = &l.retired;
        Carried {
            rx: r.rx,
            tx: r.tx,
            replicas: r.replicas,
            generated: r.generated,
            cache_hit: r.cache_hit,
            cache_miss: r.cache_miss,
            tuples_probed: r.tuples_probed,
            busy_ns: r.busy_ns,
            batches: r.batches.to_vec(),
            drops: drops_by_name(&l.retired_drops),
            ports: l.ports.into_iter().collect(),
            tunnels: l.tunnels.into_iter().collect(),
            tunnel_drops: l
                .tunnel_drops
                .iter()
                .map(|(t, d)| (t.clone(), drops_by_name(d)))
                .collect(),
            rules: l.rules.into_iter().collect(),
        }
    }

    /// Adds what a previous process counted to the totals.
    pub fn absorb(&mut self, c: &Carried) {
        let r = &mut self.retired;
        r.rx += c.rx;
        r.tx += c.tx;
        r.replicas += c.replicas;
        r.generated += c.generated;
        r.cache_hit += c.cache_hit;
        r.cache_miss += c.cache_miss;
        r.tuples_probed += c.tuples_probed;
        r.busy_ns += c.busy_ns;
        for (a, b) in r.batches.iter_mut().zip(&c.batches) {
            *a += b;
        }
        add_named_drops(&mut self.retired_drops, &c.drops);
        for (name, v) in &c.ports {
            let e = self.ports.entry(name.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        for (name, v) in &c.tunnels {
            let e = self.tunnels.entry(name.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        for (name, d) in &c.tunnel_drops {
            add_named_drops(self.tunnel_drops.entry(name.clone()).or_default(), d);
        }
        for (id, v) in &c.rules {
            *self.rules.entry(*id).or_default() += *v;
        }
    }
}

/// Non-zero counts of `by_reason` (indexed by reason code), named, in code order.
fn named_drops(by_reason: &[u64]) -> Vec<(&'static str, u64)> {
    DropReason::ALL
        .iter()
        .filter_map(|r| by_reason.get(*r as usize).filter(|n| **n > 0).map(|n| (r.name(), *n)))
        .collect()
}

/// Named drop counts `now` minus `before`, non-zero only.
fn drops_since(
    now: &[(&'static str, u64)],
    before: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    now.iter()
        .map(|(n, c)| (*n, c - before.iter().find(|(m, _)| m == n).map_or(0, |x| x.1)))
        .filter(|(_, c)| *c > 0)
        .collect()
}

/// Adds drop counters (indexed by reason code) into `acc`.
fn add_drops(acc: &mut Vec<u64>, drops: &[Counter]) {
    grow(acc, drops.len());
    for (a, c) in acc.iter_mut().zip(drops) {
        *a += c.get();
    }
}

/// Adds the totals that do not depend on numbering.
fn add_scalars(acc: &mut Snapshot, s: &Snapshot) {
    acc.rx += s.rx;
    acc.tx += s.tx;
    acc.replicas += s.replicas;
    acc.generated += s.generated;
    acc.cache_hit += s.cache_hit;
    acc.cache_miss += s.cache_miss;
    acc.tuples_probed += s.tuples_probed;
    for (a, b) in acc.batches.iter_mut().zip(s.batches) {
        *a += b;
    }
    acc.busy_ns += s.busy_ns;
}

fn grow<T: Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize_with(n, T::default);
    }
}

fn lock_ledger<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Brings counters kept elsewhere up to date before they are read (the
/// XDP tier harvests its per-entry counters).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Every worker's counters, current and retired generations alike.
#[derive(Default)]
pub struct CounterBoard {
    ledger: std::sync::Mutex<Ledger>,
    refresh: std::sync::Mutex<Option<Refresh>>,
}

impl CounterBoard {
    /// Makes `c`, numbered by `rs`, worker `worker`'s current counters; the
    /// ones they replace are folded into the totals.
    pub fn set_live(&self, worker: usize, rs: Arc<RuleSet>, c: Arc<WorkerCounters>) {
        lock_ledger(&self.ledger).set_live(worker, rs, c);
    }

    /// Folds a stopped worker's counters into the totals.
    pub fn retire(&self, worker: usize) {
        lock_ledger(&self.ledger).retire(worker);
    }

    /// Sets (or clears) what runs before every snapshot.
    pub fn set_refresh(&self, r: Option<Refresh>) {
        *lock_ledger(&self.refresh) = r;
    }

    /// Everything counted so far, by name, for the next process.
    pub fn carried(&self) -> Carried {
        let refresh = lock_ledger(&self.refresh).clone();
        if let Some(r) = refresh {
            r();
        }
        lock_ledger(&self.ledger).carried()
    }

    /// Adds what a previous process counted (a restart or an upgrade).
    pub fn absorb(&self, c: &Carried) {
        lock_ledger(&self.ledger).absorb(c);
    }

    /// Everything counted since start, numbered by `current`.
    pub fn snapshot(&self, current: &RuleSet) -> Snapshot {
        let refresh = lock_ledger(&self.refresh).clone();
        if let Some(r) = refresh {
            r();
        }
        lock_ledger(&self.ledger).snapshot(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_sum_and_conserve() {
        let a = WorkerCounters::new(2, 1, 3);
        let b = WorkerCounters::new(2, 1, 3);
        for _ in 0..5 {
            a.rx.inc();
        }
        a.tx.add(3);
        a.drop(DropReason::NoMatchingRule);
        a.drop(DropReason::MtuExceeded);
        b.rx.inc();
        b.replicas.add(2);
        b.tx.add(3);
        b.rules[2].add(100);
        let s = Snapshot::sum([&a, &b]);
        assert_eq!((s.rx, s.tx, s.replicas, s.dropped()), (6, 6, 2, 2));
        assert!(s.conserved());
        assert_eq!(s.drop_count(DropReason::MtuExceeded), 1);
        assert_eq!(s.rules[2], FlowSnapshot { packets: 1, bytes: 100 });
        a.rx.inc();
        assert!(!Snapshot::sum([&a, &b]).conserved());
    }

    #[test]
    fn tunnel_drops_sum_and_follow_the_tunnel_across_generations() {
        let rs = |tunnels: &[&str]| {
            let mut doc = String::from(
                "[[ports]]\nname = \"up0\"\nkind = \"uplink\"\nmac = \"02:00:00:00:00:10\"\n",
            );
            for (i, t) in tunnels.iter().enumerate() {
                doc += &format!(
                    "[[tunnels]]\nname = \"{t}\"\ntype = \"vxlan\"\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.{}\"\nvni = 42\n",
                    i + 2
                );
            }
            Arc::new(
                crate::compile::compile(&crate::model::Config::from_toml(&doc).unwrap()).unwrap(),
            )
        };
        let (g1, g2) = (rs(&["a", "b"]), rs(&["b"]));
        let w = Arc::new(WorkerCounters::new(1, 2, 0));
        w.drop_in_tunnel(DropReason::NoNeighbour, 2);
        w.drop_in_tunnel(DropReason::NoNeighbour, 2);
        w.drop_in_tunnel(DropReason::MtuExceeded, 1);
        w.drop_in_tunnel(DropReason::RuleDrop, 0);
        let s = Snapshot::sum([&*w]);
        assert_eq!(s.tunnel_drops, vec![vec![("mtu_exceeded", 1)], vec![("no_neighbour", 2)]]);
        assert_eq!(s.dropped(), 4, "counted in the totals as well");

        // Tunnel b is index 1 in g1 and index 0 in g2: its drops follow its name.
        let mut l = Ledger::default();
        l.set_live(0, Arc::clone(&g1), Arc::clone(&w));
        let w2 = Arc::new(WorkerCounters::new(1, 1, 0));
        w2.drop_in_tunnel(DropReason::NoNeighbour, 1);
        l.set_live(0, Arc::clone(&g2), w2);
        let s = l.snapshot(&g2);
        assert_eq!(s.tunnel_drops, vec![vec![("no_neighbour", 3)]]);
        assert_eq!(s.tunnel_drop_count(0, DropReason::NoNeighbour), 3);
        let before = s.clone();
        assert!(l.snapshot(&g2).since(&before).tunnel_drops[0].is_empty());
    }

    #[test]
    fn carried_totals_add_up_in_the_next_ledger() {
        let doc = "[[ports]]\nname = \"up0\"\nkind = \"uplink\"\nmac = \"02:00:00:00:00:10\"\n";
        let rs = Arc::new(
            crate::compile::compile(&crate::model::Config::from_toml(doc).unwrap()).unwrap(),
        );
        let w = WorkerCounters::new(1, 0, 0);
        w.rx.add(7);
        w.tx.add(5);
        w.drop(DropReason::NoMatchingRule);
        w.drop(DropReason::NoMatchingRule);
        for _ in 0..7 {
            w.ports[0].rx.add(100);
        }
        let mut before = Ledger::default();
        before.set_live(0, Arc::clone(&rs), Arc::new(w));
        let carried = before.carried();
        let text = serde_json::to_string(&carried).unwrap();
        let mut after = Ledger::default();
        after.absorb(&serde_json::from_str(&text).unwrap());
        let w2 = Arc::new(WorkerCounters::new(1, 0, 0));
        w2.rx.add(1);
        w2.tx.add(1);
        after.set_live(0, Arc::clone(&rs), w2);
        let s = after.snapshot(&rs);
        assert_eq!((s.rx, s.tx, s.dropped()), (8, 6, 2));
        assert!(s.conserved());
        assert_eq!(s.ports[0].0, FlowSnapshot { packets: 7, bytes: 700 });
        assert_eq!(s.drop_count(DropReason::NoMatchingRule), 2);
    }

    #[test]
    fn batch_buckets() {
        let w = WorkerCounters::new(0, 0, 0);
        for n in [1, 2, 3, 4, 255, 256, 1000] {
            w.batch(n);
        }
        let got: Vec<u64> = w.batches.iter().map(Counter::get).collect();
        assert_eq!(got, vec![1, 2, 1, 0, 0, 0, 0, 1, 1, 1]);
    }
}
