//! The tier's owner: the state of every port's table (which slot holds
//! which flow's entry, which are retiring), and what it does with it:
//! installs what workers offer, adopts what a previous overlayd left,
//! harvests counters into the engine's, retires entries when the rule set,
//! a next hop or an output port changes or a flow goes idle, and frees
//! their slots after [`GRACE`]. What crosses a restart (adoption, the
//! counters' baselines) is in `adopt`.

use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::compile::RuleSet;
use engine::counters::{CounterBoard, WorkerCounters};
use engine::flow_key::FlowKey;
use engine::next_hop::NextHops;
use engine::pipeline::Published;
use engine::tier::{NotInTier, TierAction, TierEntry, TierTunnel};

use super::key::tier_hash;
use super::layout::{TierMask, TierValue, CHECK_SETTLE, TIER_MASKS};
use super::maps::TierMaps;
use super::status::{InstallFailure, Stats, TierPortStatus, TierStatus};
use crate::io::map_batch::PerCpuPairs;
use crate::io::netdev;
use crate::lock;

mod adopt;

pub use adopt::{fingerprint, SlotBaseline, TierBaselines};

/// How often the owner harvests counters and looks for stale entries.
pub const TICK: Duration = Duration::from_millis(200);
/// The tick of an owner whose tier holds no entry, live or retiring: all
/// it has to do is probe the output ports (`PROBE_EVERY`) and follow a new
/// rule set, which the next offer does first anyway.
pub const REST_TICK: Duration = Duration::from_secs(1);
/// How long a deleted entry's counters wait for their last harvest.
pub const GRACE: Duration = Duration::from_millis(50);
/// An entry whose counters have not moved for this long is removed.
pub const IDLE: Duration = Duration::from_secs(10);
/// How often output ports are asked whether they take redirected frames.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Ports the program's devmap (`tier_tx`) holds: port numbers below this.
const MAX_TX_PORTS: u16 = 64;

/// A port as the tier sees it.
pub struct TierPort {
    /// Its number in the rule set.
    pub port: u16,
    pub name: String,
    pub ifindex: u32,
    /// Its program's tier maps, if flows arriving on it may be in the tier.
    pub ingress: Option<TierMaps>,
    /// True if the tc tier (io/tc.rs) serves this port's entries too: they
    /// may then send out of ports that take no redirected frames.
    pub tc: bool,
    /// True if the port has no XDP program, only tc (io/tc_port.rs): on an
    /// uplink its program runs the decap entries, whose skbs any output
    /// port takes.
    pub tc_only: bool,
    /// Why frames cannot be redirected out of it (`None`: they may be,
    /// if its driver takes them).
    pub not_output: Option<String>,
}

/// What the owner needs from the control plane.
pub struct TierLinks {
    pub published: Arc<Published>,
    pub hops: Arc<NextHops>,
    pub board: Arc<CounterBoard>,
    /// Its place on the counter board (one past the workers).
    pub board_id: usize,
}

#[derive(Clone, Debug)]
enum Slot {
    Free,
    Live { entry: TierEntry, active: Instant },
    Retiring { entry: TierEntry, since: Instant },
}

struct Ingress {
    maps: TierMaps,
    slots: Vec<Slot>,
    /// Cumulative counts of each slot at its last harvest.
    seen: Vec<(u64, u64)>,
    free: Vec<u32>,
    /// Live entries' slots by the [`tier_hash`] of their key (the map key).
    by_hash: StdHashMap<u64, u32>,
    /// The masks in the program's `tier_masks`, in slot order.
    masks: Vec<FlowKey>,
    tc: bool,
    tc_only: bool,
    /// Slots below this have been used: the ones a harvest reads.
    high: u32,
    /// Each slot's counters as the last batch read found them.
    totals: Vec<(u64, u64)>,
}

pub(super) struct Output {
    name: String,
    ifindex: u32,
    /// Why it can never be an output, if so.
    fixed: Option<String>,
    /// Why frames may not be redirected out of it now (`None`: they may).
    refused: Option<String>,
    /// Largest frame it sends (MTU + Ethernet header).
    max_frame: usize,
}

pub(super) struct State {
    ingress: Vec<Option<Ingress>>,
    outputs: Vec<Output>,
    rules: Arc<RuleSet>,
    counters: Arc<WorkerCounters>,
    links: TierLinks,
    stats: Arc<Stats>,
    hops_seen: u64,
    /// The path MTUs the live entries were built under.
    mtus_seen: Arc<std::collections::HashMap<std::net::IpAddr, u16>>,
    last_tick: Instant,
    last_probe: Instant,
    /// Reads the counter slots in batches; `None` once the kernel refused
    /// (then one system call per slot).
    batch: Option<PerCpuPairs>,
}

/// What reaches the owner's thread.
// Entries travel by value, as they did before `Wake`: boxing them would
// allocate on the workers' path for every offer.
#[allow(clippy::large_enum_variant)]
pub(super) enum Offer {
    /// A flow a worker decided, to install.
    Entry(TierEntry),
    /// Nothing: the stop flag is set (the owner may sleep a `REST_TICK`).
    Wake,
}

/// The owner's loop: installs what workers offer, ticks.
pub(super) fn run(state: &Mutex<State>, rx: Receiver<Offer>, stop: &AtomicBool) {
    let mut wait = TICK;
    while !stop.load(Ordering::Acquire) {
        let first = match rx.recv_timeout(wait) {
            Ok(Offer::Entry(e)) => Some(e),
            Ok(Offer::Wake) | Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(TICK);
                None
            }
        };
        let mut st = lock(state);
        if let Some(e) = first {
            st.install(e);
            // Bounded, so status readers and the tick are not held off.
            for o in rx.try_iter().take(1024) {
                if let Offer::Entry(e) = o {
                    st.install(e);
                }
            }
        }
        if st.last_tick.elapsed() >= TICK {
            st.tick();
        }
        wait = if st.at_rest() { REST_TICK } else { TICK };
    }
}

impl State {
    /// The owner's state over `ports` (indexed by port number), every slot
    /// free: [`State::adopt`] then takes what the maps hold.
    pub(super) fn new(ports: Vec<TierPort>, links: TierLinks, stats: Arc<Stats>) -> State {
        let rules = links.published.current();
        let counters = Arc::new(WorkerCounters::new(
            rules.ports.len(),
            rules.tunnels.len(),
            rules.rules.len(),
        ));
        links.board.set_live(links.board_id, Arc::clone(&rules), Arc::clone(&counters));
        let mut ingress = Vec::new();
        let mut outputs = Vec::new();
        for p in ports {
            let max_frame = max_frame(p.ifindex);
            let fixed = match p.not_output {
                Some(r) => Some(r),
                None if p.port >= MAX_TX_PORTS => {
                    Some(format!("only ports 0..{MAX_TX_PORTS} can be tier outputs"))
                }
                None => None,
            };
            outputs.push(Output {
                name: p.name.clone(),
                ifindex: p.ifindex,
                refused: Some("not probed yet".into()),
                fixed,
                max_frame,
            });
            ingress.push(p.ingress.map(|maps| {
                let n = maps.capacity;
                Ingress {
                    maps,
                    slots: vec![Slot::Free; n as usize],
                    seen: vec![(0, 0); n as usize],
                    free: (0..n).rev().collect(),
                    by_hash: StdHashMap::new(),
                    masks: Vec::new(),
                    tc: p.tc,
                    tc_only: p.tc_only,
                    high: 0,
                    totals: Vec::new(),
                }
            }));
        }
        State {
            ingress,
            outputs,
            rules,
            counters,
            hops_seen: links.hops.version(),
            mtus_seen: links.hops.mtus(),
            links,
            stats,
            last_tick: Instant::now(),
            last_probe: Instant::now(),
            batch: aya::util::nr_cpus().ok().map(PerCpuPairs::new),
        }
    }

    /// What `status` shows: the owner's entries and masks, the counts in
    /// `s`, and each port's place.
    pub(super) fn status(&self, s: &Stats) -> TierStatus {
        let mut masks: Vec<FlowKey> = Vec::new();
        for m in self.ingress.iter().flatten().flat_map(|i| &i.masks) {
            if !masks.contains(m) {
                masks.push(*m);
            }
        }
        let live = |i: &Ingress| i.slots.iter().filter(|s| matches!(s, Slot::Live { .. })).count();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let named = |names: &mut dyn Iterator<Item = (&'static str, u64)>| {
            names.filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect()
        };
        TierStatus {
            entries: self.ingress.iter().flatten().map(|i| live(i) as u64).sum(),
            capacity: self.ingress.iter().flatten().map(|i| i.maps.capacity).max().unwrap_or(0),
            hits: get(&s.hits),
            installs: get(&s.installs),
            adopted: get(&s.adopted),
            evictions: get(&s.evictions),
            invalidations: get(&s.invalidations),
            install_failures: named(
                &mut InstallFailure::ALL.iter().map(|f| (f.name(), get(&s.failures[*f as usize]))),
            ),
            not_in_tier: named(
                &mut NotInTier::ALL.iter().map(|r| (r.name(), get(&s.not_in_tier[*r as usize]))),
            ),
            masks: masks.iter().map(|m| engine::flow_key::mask_fields(m).join(",")).collect(),
            ports: self
                .outputs
                .iter()
                .zip(&self.ingress)
                .map(|(o, i)| TierPortStatus {
                    port: o.name.clone(),
                    entries: i.as_ref().map(|i| live(i) as u64),
                    not_output: o.refused.clone(),
                })
                .collect(),
        }
    }

    /// Takes the owner's counters off the counter board (the owner stopped;
    /// what they counted is in the totals).
    pub(super) fn retire_from_board(&self) {
        self.links.board.retire(self.links.board_id);
    }

    /// Installs an entry a worker offered, or counts why not.
    pub(super) fn install(&mut self, e: TierEntry) {
        self.follow_generation();
        let s = Arc::clone(&self.stats);
        if e.generation != self.rules.generation {
            return s.fail(InstallFailure::StaleGeneration);
        }
        let (out, added) = match &e.action {
            TierAction::Drop => (None, 0),
            TierAction::Output { port } => (Some(*port), 0),
            // What the header adds to the frame: L3 GRE drops its Ethernet header.
            TierAction::Encap(x) if x.kind == TierTunnel::GreL3 => {
                (Some(x.uplink), x.header_len as usize - 14)
            }
            TierAction::Encap(x) => (Some(x.uplink), x.header_len as usize),
        };
        let mut max_len = u16::MAX as usize;
        // The tc tier redirects skbs, which any port takes; the XDP program
        // passes it what it cannot redirect itself (the encapsulations it
        // does; other actions go to AF_XDP, `no_tx`).
        let tc = match self.ingress.get(e.in_port as usize) {
            Some(Some(i)) => (i.tc && tc_takes(&e)) || (i.tc_only && tc_decap_takes(&e)),
            _ => false,
        };
        if let Some(p) = out {
            match self.outputs.get(p as usize) {
                Some(o) if o.refused.is_none() || (tc && o.fixed.is_none()) => {
                    max_len = o.max_frame.saturating_sub(added);
                }
                _ => return s.fail(InstallFailure::CannotRedirect),
            }
        }
        if let TierAction::Encap(x) = &e.action {
            max_len = max_len.min(x.max_frame as usize);
        }
        let Some(Some(ing)) = self.ingress.get_mut(e.in_port as usize) else {
            return s.fail(InstallFailure::NoTierOnPort);
        };
        let hash = tier_hash(&e.key.0);
        if let Some(&slot) = ing.by_hash.get(&hash) {
            return match &ing.slots[slot as usize] {
                Slot::Live { entry, .. } if entry.key == e.key => {} // offered again by another worker
                _ => s.fail(InstallFailure::HashCollision),
            };
        }
        let Some(slot) = ing.free.pop() else {
            return s.fail(InstallFailure::TableFull);
        };
        // Counting starts from what the slot holds before the entry can hit.
        ing.seen[slot as usize] = ing.maps.read(slot).unwrap_or(ing.seen[slot as usize]);
        let mut v =
            TierValue::new(&e, slot, out.unwrap_or(0), max_len.min(u16::MAX as usize) as u16);
        if settles(&self.rules, &e) {
            v.checks |= CHECK_SETTLE;
        }
        if let Err(f) = ing.add_mask(&e.mask) {
            ing.free.push(slot);
            return s.fail(f);
        }
        // The tunnel first: an entry whose tunnel is unknown is never hit.
        let tunnel = e.decap.as_ref().map_or(Ok(()), |d| ing.maps.write_tunnel(&self.rules, d));
        if let Err(err) = tunnel.and_then(|()| ing.maps.put(hash, v)) {
            tracing::debug!(error = %err, "tier entry refused by the kernel");
            ing.free.push(slot);
            return s.fail(InstallFailure::MapUpdate);
        }
        ing.by_hash.insert(hash, slot);
        ing.high = ing.high.max(slot + 1);
        ing.slots[slot as usize] = Slot::Live { entry: e, active: Instant::now() };
        s.installs.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves to the published rule set if it changed: every entry of the
    /// old one is deleted, harvested into the old counters after the grace
    /// period, and freed; the new counters replace the old on the board.
    fn follow_generation(&mut self) {
        let cur = self.links.published.current();
        if Arc::ptr_eq(&cur, &self.rules) {
            return;
        }
        let n = self.retire_where(|_| true);
        self.stats.invalidations.fetch_add(n, Ordering::Relaxed);
        std::thread::sleep(GRACE);
        self.harvest();
        self.free_retired(Instant::now());
        for ing in self.ingress.iter_mut().flatten() {
            ing.maps.clear_tunnels();
            // The old rule set's masks: its entries are gone.
            ing.maps.clear_masks();
            ing.masks.clear();
        }
        self.counters =
            Arc::new(WorkerCounters::new(cur.ports.len(), cur.tunnels.len(), cur.rules.len()));
        self.rules = cur;
        self.record_rules();
        let l = &self.links;
        l.board.set_live(l.board_id, Arc::clone(&self.rules), Arc::clone(&self.counters));
    }

    /// True when no slot holds an entry, live or retiring: a tick has
    /// nothing to age, harvest or free.
    fn at_rest(&self) -> bool {
        self.ingress.iter().flatten().all(|i| i.free.len() == i.slots.len())
    }

    /// Housekeeping: generation, next hops, output ports, counters, idle
    /// entries, retired slots.
    fn tick(&mut self) {
        let now = Instant::now();
        self.last_tick = now;
        self.follow_generation();
        let v = self.links.hops.version();
        if v != self.hops_seen {
            self.hops_seen = v;
            let hops = self.links.hops.snapshot();
            let mtus = self.links.hops.mtus();
            let old = std::mem::replace(&mut self.mtus_seen, Arc::clone(&mtus));
            // an entry's largest frame follows the path MTU it was built under
            let n = self.retire_where(|e| match &e.action {
                TierAction::Encap(x) if mtus.get(&x.remote) != old.get(&x.remote) => true,
                TierAction::Encap(x) if !x.static_next_hop => {
                    hops.get(&x.remote).is_none_or(|m| m[..] != x.header[..6])
                }
                _ => false,
            });
            self.stats.invalidations.fetch_add(n, Ordering::Relaxed);
        }
        if now.duration_since(self.last_probe) >= PROBE_EVERY {
            self.last_probe = now;
            self.probe_outputs(false);
        }
        self.harvest();
        let mut idle = 0;
        // Slots at or above `high` were never used: scanning only below it
        // keeps an idle tick cheap at any capacity (131,072 slots scanned
        // twice per tick cost 3.6 % of a core).
        for ing in self.ingress.iter_mut().flatten() {
            for i in 0..(ing.high as usize).min(ing.slots.len()) {
                if let Slot::Live { active, .. } = &ing.slots[i] {
                    if now.duration_since(*active) >= IDLE {
                        ing.retire(i as u32, now);
                        idle += 1;
                    }
                }
            }
        }
        self.stats.evictions.fetch_add(idle, Ordering::Relaxed);
        // Harvested above, at least a grace period after their delete.
        if let Some(before) = now.checked_sub(GRACE) {
            self.free_retired(before);
        }
    }

    /// Asks each output port whether its driver takes redirected frames,
    /// and keeps the programs' devmaps and entries in line with the answer.
    pub(super) fn probe_outputs(&mut self, first: bool) {
        for i in 0..self.outputs.len() {
            let o = &self.outputs[i];
            let now = match &o.fixed {
                Some(r) => Some(r.clone()),
                None => match netdev::xdp_features(o.ifindex) {
                    Ok(f) if f.takes_redirects() => None,
                    Ok(_) => Some(
                        "its driver does not take redirected frames (ndo_xdp_xmit; a veth \
                         takes them only while its peer runs XDP or has GRO on)"
                            .to_string(),
                    ),
                    Err(e) => Some(format!("cannot read its XDP features: {e}")),
                },
            };
            // A new MTU changes what the entries out of the port may send.
            let mtu_changed = now.is_none() && max_frame(o.ifindex) != o.max_frame;
            if !first && now == o.refused && !mtu_changed {
                continue;
            }
            if mtu_changed && !first {
                let p = i as u16;
                let n = self.retire_where(|e| sends_to(e, p));
                self.stats.invalidations.fetch_add(n, Ordering::Relaxed);
            }
            self.outputs[i].max_frame = max_frame(self.outputs[i].ifindex);
            let o = &self.outputs[i];
            let (name, ifindex, fixed) = (o.name.clone(), o.ifindex, o.fixed.is_some());
            let mut now = now;
            if now.is_none() {
                for ing in self.ingress.iter_mut().flatten() {
                    if let Err(e) = ing.maps.tx.set(i as u32, ifindex, None, 0) {
                        now = Some(format!("the devmap refused it: {e}"));
                    }
                }
            }
            match &now {
                None => {
                    tracing::info!(port = %name, "XDP tier: frames may be redirected out of this port")
                }
                Some(reason) => {
                    let p = i as u16;
                    // Interface 0 empties the slot: entries installed for
                    // the tc tier (which a refused port still serves) must
                    // not keep redirecting XDP frames the kernel now drops.
                    for ing in self.ingress.iter_mut().flatten() {
                        let _ = ing.maps.tx.set(i as u32, 0, None, 0);
                    }
                    // An owner's first look (adopted entries, after a
                    // restart or upgrade) keeps the encapsulations the tc
                    // tier serves, as `install` would accept them: deleting
                    // them would hand their flows to AF_XDP sockets that
                    // may not be registered yet, and the empty slot sends
                    // their frames to the tc tier anyway.
                    let tc_ingress: Vec<u16> = (0..self.ingress.len() as u16)
                        .filter(|&i| matches!(self.ingress[i as usize], Some(ref g) if g.tc))
                        .collect();
                    let tc_only: Vec<u16> = (0..self.ingress.len() as u16)
                        .filter(|&i| matches!(self.ingress[i as usize], Some(ref g) if g.tc_only))
                        .collect();
                    let tc_serves = |e: &TierEntry| {
                        let adopted = first
                            && matches!(e.action, TierAction::Encap(_))
                            && tc_ingress.contains(&e.in_port);
                        // A tc uplink's decap entries never go through XDP.
                        let decap = tc_only.contains(&e.in_port) && tc_decap_takes(e);
                        !fixed && (adopted || decap)
                    };
                    let n = self.retire_where(|e| sends_to(e, p) && !tc_serves(e));
                    self.stats.invalidations.fetch_add(n, Ordering::Relaxed);
                    if !fixed {
                        tracing::info!(port = %name, reason = %reason, "XDP tier: no redirection out of this port; flows to it stay on AF_XDP");
                    }
                }
            }
            self.outputs[i].refused = now;
        }
    }

    /// Deletes every live entry `pred` picks; returns how many.
    fn retire_where(&mut self, pred: impl Fn(&TierEntry) -> bool) -> u64 {
        let now = Instant::now();
        let mut n = 0;
        for ing in self.ingress.iter_mut().flatten() {
            for i in 0..ing.slots.len() {
                if matches!(&ing.slots[i], Slot::Live { entry, .. } if pred(entry)) {
                    ing.retire(i as u32, now);
                    n += 1;
                }
            }
        }
        n
    }

    /// Adds what every live or retiring entry did since the last harvest
    /// to the counters; marks live entries that moved as active.
    pub(super) fn harvest(&mut self) {
        let now = Instant::now();
        let mut hits = 0;
        for ing in self.ingress.iter_mut().flatten() {
            let batched = match &mut self.batch {
                Some(b) => ing.maps.read_batch(b, ing.high, &mut ing.totals),
                None => false,
            };
            if !batched && self.batch.take().is_some() {
                tracing::info!(
                    "XDP tier: no batch reads of its counters; one system call per entry"
                );
            }
            for i in 0..(ing.high as usize).min(ing.slots.len()) {
                let entry = match &ing.slots[i] {
                    Slot::Free => continue,
                    Slot::Live { entry, .. } | Slot::Retiring { entry, .. } => entry,
                };
                let read =
                    if batched { ing.totals.get(i).copied() } else { ing.maps.read(i as u32) };
                let Some((p, b)) = read else { continue };
                let (sp, sb) = ing.seen[i];
                let (dp, db) = (p.wrapping_sub(sp), b.wrapping_sub(sb));
                if dp == 0 {
                    continue;
                }
                entry.count(&self.counters, dp, db);
                ing.seen[i] = (p, b);
                hits += dp;
                if let Slot::Live { active, .. } = &mut ing.slots[i] {
                    *active = now;
                }
            }
        }
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// Frees the slots retired before `before` (harvested for the last time).
    fn free_retired(&mut self, before: Instant) {
        for ing in self.ingress.iter_mut().flatten() {
            for i in 0..(ing.high as usize).min(ing.slots.len()) {
                if matches!(ing.slots[i], Slot::Retiring { since, .. } if since <= before) {
                    ing.slots[i] = Slot::Free;
                    ing.free.push(i as u32);
                }
            }
        }
    }
}

/// True if the software path settles the TCP/UDP checksum of what `e`
/// sends on its way out (worker.rs, `PortMap::settles`): a decapsulated
/// frame, from an uplink to a workload. (A workload's frames are settled as
/// they arrive: the program checks those always.)
pub fn settles(rs: &RuleSet, e: &TierEntry) -> bool {
    use engine::model::PortKind;
    let kind = |p: u16| rs.ports.get(p as usize).map(|p| p.kind);
    match e.action {
        TierAction::Output { port } => {
            kind(e.in_port) == Some(PortKind::Uplink) && kind(port) == Some(PortKind::Workload)
        }
        _ => false,
    }
}

/// True if the tc tier (tc/tier.bpf.c) does what `e` does, as the XDP
/// program's `tc_takes` says: VXLAN over IPv4 without a UDP checksum.
fn tc_takes(e: &TierEntry) -> bool {
    matches!(&e.action, TierAction::Encap(x)
        if x.kind == TierTunnel::Vxlan
            && x.header_len as usize == engine::tier::VXLAN4_HEADER_LEN
            && x.udp_sum.is_none())
}

/// True if a tc uplink's program (tc/uplink.bpf.c) does what `e` does:
/// a decapsulated flow's output or drop. (Whether its packet is one the
/// program takes, VXLAN over IPv4, is the packet's: the others go to the
/// engine.)
fn tc_decap_takes(e: &TierEntry) -> bool {
    e.decap.is_some() && matches!(e.action, TierAction::Output { .. } | TierAction::Drop)
}

/// True if `e` sends its frames out of port `p`.
fn sends_to(e: &TierEntry, p: u16) -> bool {
    match &e.action {
        TierAction::Output { port } => *port == p,
        TierAction::Encap(x) => x.uplink == p,
        TierAction::Drop => false,
    }
}

/// The largest frame interface `ifindex` sends: its MTU and an Ethernet
/// header (0 if it cannot be read: nothing is sent out of it then).
pub(super) fn max_frame(ifindex: u32) -> usize {
    let Some(name) = netdev::ifname(ifindex) else { return 0 };
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(0, |m| m + 14)
}

impl Ingress {
    /// Makes `m` one of the masks the program tries (appended to its list).
    fn add_mask(&mut self, m: &FlowKey) -> Result<(), InstallFailure> {
        if self.masks.contains(m) {
            return Ok(());
        }
        let i = self.masks.len() as u32;
        if i >= TIER_MASKS {
            return Err(InstallFailure::MasksFull);
        }
        let v = TierMask { w: m.0, live: 1 };
        self.maps.masks.set(i, v, 0).map_err(|_| InstallFailure::MapUpdate)?;
        self.masks.push(*m);
        Ok(())
    }

    /// Deletes slot `i`'s entry from the map; its counters wait for their
    /// last harvest.
    pub(super) fn retire(&mut self, i: u32, now: Instant) {
        let Slot::Live { entry, .. } = std::mem::replace(&mut self.slots[i as usize], Slot::Free)
        else {
            return;
        };
        let hash = tier_hash(&entry.key.0);
        self.maps.delete(hash);
        self.by_hash.remove(&hash);
        self.slots[i as usize] = Slot::Retiring { entry, since: now };
    }
}
