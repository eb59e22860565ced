//! The per-batch pipeline, read top to bottom:
//!
//! 1. receive: count, and on an uplink decapsulate and name the tunnel;
//! 2. parse: build the flow key once;
//! 3. classify: flow cache, then the classifier; no rule is a named drop;
//! 4. act: rewrite actions in order; each send action (output, encap,
//!    forward_l2) delivers the packet as it is at that point, copying it only
//!    when it still has somewhere else to go;
//! 5. deliver: encapsulate through the worker's own header template, or hand
//!    the frame to its output port's batch.
//!
//! Every packet ends in exactly one of two places: an output batch (counted as
//! `tx`) or the free list with a `DropReason` counted (also under its tunnel
//! when it was going into one or came out of one). A `Worker` is owned by
//! one thread; it allocates nothing per packet (output vectors are reserved by
//! the caller) and takes no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use encap::wire::ethernet::{self, EtherType, Frame, VlanTag};
use encap::wire::l2::TPID_8021Q;
use encap::{decap, icmp, DropReason, EncapTemplate, InnerMeta, PacketBuf, TunnelId};

use crate::compile::{Act, RuleSet};
use crate::counters::WorkerCounters;
use crate::flow_cache::{FlowCache, NO_RULE};
use crate::flow_key::{extract, field, FlowKey, L2Info};
use crate::learn::{L2Step, Learner, Loc};
use crate::model::PortKind;
use crate::trace::{OuterHeader, Stage, Step, Tracer};

/// Gives the pipeline empty frames for copies and generated replies.
pub trait FramePool<'a> {
    /// An empty packet buffer with headroom, or `None` if none is free.
    fn alloc(&mut self) -> Option<PacketBuf<'a>>;
}

impl<'a, F: FnMut() -> Option<PacketBuf<'a>>> FramePool<'a> for F {
    fn alloc(&mut self) -> Option<PacketBuf<'a>> {
        self()
    }
}

/// What a batch produced: one batch per output port, and the frames to recycle.
pub struct Outputs<'a> {
    /// Indexed by port.
    pub ports: Vec<Vec<PacketBuf<'a>>>,
    /// Frames of dropped packets (already counted) and unused frames.
    pub free: Vec<PacketBuf<'a>>,
}

impl<'a> Outputs<'a> {
    /// Output batches for `ports` ports, each reserved for `per_port` packets.
    pub fn new(ports: usize, per_port: usize) -> Self {
        Outputs {
            ports: (0..ports).map(|_| Vec::with_capacity(per_port)).collect(),
            free: Vec::with_capacity(per_port),
        }
    }

    pub fn sent(&self) -> usize {
        self.ports.iter().map(Vec::len).sum()
    }
}

/// Where a send action delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Port(u16),
    Tunnel(u16),
}

/// Where one send action delivers: one place, or a flood list's tunnels
/// and ports, walked where the rule set holds them, so a list of any length
/// is sent in full without an array or an allocation.
#[derive(Clone, Copy)]
enum Dests<'r> {
    One(Dest),
    Flood { tunnels: &'r [u16], ports: &'r [u16], skip_port: u16 },
}

impl Dests<'_> {
    fn len(&self) -> usize {
        match *self {
            Dests::One(_) => 1,
            Dests::Flood { tunnels, ports, skip_port } => {
                tunnels.len() + ports.iter().filter(|p| **p != skip_port).count()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = Dest> + '_ {
        let (one, tunnels, ports, skip_port) = match *self {
            Dests::One(d) => (Some(d), &[][..], &[][..], u16::MAX),
            Dests::Flood { tunnels, ports, skip_port } => (None, tunnels, ports, skip_port),
        };
        one.into_iter()
            .chain(tunnels.iter().map(|t| Dest::Tunnel(*t)))
            .chain(ports.iter().filter(move |p| **p != skip_port).map(|p| Dest::Port(*p)))
    }
}

/// Most copies one packet can become under `rs`: what a trace must have
/// frames for. Each send action makes one copy, or one per member of the
/// largest flood list.
pub(crate) fn max_copies(rs: &RuleSet) -> usize {
    let flood = rs.flood.values().map(|f| f.tunnels.len() + f.ports.len()).max().unwrap_or(0);
    let sends = rs.rules.iter().map(|r| r.actions.len()).max().unwrap_or(0);
    sends * flood.max(1)
}

/// ICMP "too big" replies per second per worker, and the burst allowed.
const ICMP_PER_SEC: u64 = 100;

/// A rule set shared by the control plane and the workers. Workers pick up a
/// new one between batches, so no packet is judged by two generations.
///
/// A replaced set is kept here until every worker has let go of it and the
/// control plane frees it ([`Published::reclaim`]): otherwise the last
/// worker to move on would free thousands of allocations between two
/// batches, on the fast path's time.
pub struct Published {
    current: ArcSwap<RuleSet>,
    retired: std::sync::Mutex<Vec<Arc<RuleSet>>>,
}

impl Published {
    pub fn new(rs: RuleSet) -> Self {
        Published { current: ArcSwap::from_pointee(rs), retired: Default::default() }
    }

    pub fn publish(&self, rs: RuleSet) {
        // `swap` settles every reader's borrowed reference into a counted
        // one before it returns, so the count `reclaim` reads is exact.
        let old = self.current.swap(Arc::new(rs));
        self.retired.lock().unwrap_or_else(|p| p.into_inner()).push(old);
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Frees the replaced sets nobody else holds any more; returns how many.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let before = retired.len();
        retired.retain(|rs| Arc::strong_count(rs) > 1);
        before - retired.len()
    }
}

/// What every packet of one batch shares: the rule set and counters it is
/// judged and counted by, the port it came in on, where copies come from and
/// where results go.
struct Batch<'b, 'a, P, T> {
    rs: &'b RuleSet,
    c: &'b WorkerCounters,
    in_port: u16,
    pool: &'b mut P,
    out: &'b mut Outputs<'a>,
    now_ns: u64,
    t: &'b mut T,
}

impl<'a, P: FramePool<'a>, T: Tracer> Batch<'_, 'a, P, T> {
    /// Counts a drop under its reason (and under the tunnel the packet was
    /// going into or came out of: `tunnel` is the tunnel tag, index + 1, or
    /// 0) and hands the frame back for recycling. Out of line: drops are the
    /// rare path, and keeping them out of the per-packet code keeps it tight.
    #[cold]
    #[inline(never)]
    fn drop(&mut self, pkt: PacketBuf<'a>, reason: DropReason, stage: Stage, tunnel: u16) {
        self.c.drop_in_tunnel(reason, tunnel);
        self.t.step(|| Step::Dropped { stage, reason });
        self.out.free.push(pkt);
    }
}

/// One worker's pipeline state.
pub struct Worker {
    rules: Arc<RuleSet>,
    /// Bumped whenever the rule set changes: the flow cache's generation.
    epoch: u64,
    cache: FlowCache,
    templates: Vec<EncapTemplate>,
    /// Each tunnel's largest inner IP packet under the current path MTU
    /// (the compiled `inner_ip_mtu`, less what a lowered interface MTU takes).
    inner_mtu: Vec<u16>,
    next_hop_known: Vec<bool>,
    counters: Arc<WorkerCounters>,
    /// VPP's one-entry cache in front of the decap table.
    last_tunnel: Option<((IpAddr, IpAddr, TunnelId), u16)>,
    icmp_tokens: u64,
    icmp_refill_ns: u64,
    /// Flows whose first packet a batch decided (classifier misses that
    /// matched a rule), for the XDP tier: (key, rule); the first
    /// `decided_len` are set. A fixed slice, not a growing vector: the
    /// classify step's code stays small.
    decided: Box<[(FlowKey, u32)]>,
    decided_len: usize,
    /// MAC learning and ARP/ND suppression, when attached.
    l2: Option<Learner>,
}

impl Worker {
    pub fn new(rules: Arc<RuleSet>) -> Worker {
        let mut w = Worker {
            rules: Arc::clone(&rules),
            epoch: 0,
            cache: FlowCache::new(),
            templates: Vec::new(),
            inner_mtu: Vec::new(),
            next_hop_known: Vec::new(),
            counters: Arc::new(WorkerCounters::new(0, 0, 0)),
            last_tunnel: None,
            icmp_tokens: ICMP_PER_SEC,
            icmp_refill_ns: 0,
            decided: Box::default(),
            decided_len: 0,
            l2: None,
        };
        w.set_rules(rules);
        w
    }

    /// Switches to a new rule set (between batches). Returns the counters of
    /// the old generation, which the caller keeps for totals: per-rule, per-port
    /// and per-tunnel counters are indexed by the generation's own numbering.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) -> Arc<WorkerCounters> {
        self.epoch += 1;
        self.templates = rules
            .tunnels
            .iter()
            .map(|t| EncapTemplate::new(&t.params).expect("the compiler validated the tunnel"))
            .collect();
        self.inner_mtu = rules.tunnels.iter().map(|t| t.inner_ip_mtu).collect();
        self.next_hop_known = rules.tunnels.iter().map(|t| t.static_next_hop).collect();
        self.last_tunnel = None;
        // Rule numbers of the old generation mean nothing in the new one.
        self.decided_len = 0;
        if let Some(l) = &mut self.l2 {
            l.new_generation();
        }
        let fresh = Arc::new(WorkerCounters::new(
            rules.ports.len(),
            rules.tunnels.len(),
            rules.rules.len(),
        ));
        self.rules = rules;
        std::mem::replace(&mut self.counters, fresh)
    }

    /// Picks up a newly published rule set, if any; returns the retired counters.
    pub fn sync(&mut self, published: &Published) -> Option<Arc<WorkerCounters>> {
        let cur = published.current.load();
        if Arc::ptr_eq(&cur, &self.rules) {
            return None;
        }
        Some(self.set_rules(arc_swap::Guard::into_inner(cur)))
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn counters(&self) -> Arc<WorkerCounters> {
        Arc::clone(&self.counters)
    }

    /// Attaches MAC learning and ARP/ND suppression (`learn`): without a
    /// learner, networks forward by the static FDB and flood lists only.
    pub fn set_learner(&mut self, l: Learner) {
        self.l2 = Some(l);
    }

    /// Records up to `max` flows per batch whose first packet was decided
    /// (see [`Worker::drain_decided`]); 0, the default, records none.
    pub fn record_decided(&mut self, max: usize) {
        self.decided = vec![(FlowKey::default(), 0); max].into_boxed_slice();
        self.decided_len = 0;
    }

    /// Calls `f` with each flow decided since the last call: (key, rule
    /// index).
    pub fn drain_decided(&mut self, mut f: impl FnMut(&Worker, &FlowKey, u32)) {
        for i in 0..std::mem::take(&mut self.decided_len) {
            let (k, r) = self.decided[i];
            f(self, &k, r);
        }
    }

    /// Forgets the cached decision for `key`, so its next packet is decided
    /// (and recorded by [`Worker::record_decided`]) again: for a flow the
    /// caller could not hand on, so it is not left out for good.
    pub fn forget_flow(&mut self, key: &FlowKey) {
        self.cache.forget(key, key.hash());
    }

    /// Tunnel `tn`'s header template, if its next hop is resolved.
    pub fn encap_template(&self, tn: u16) -> Option<&EncapTemplate> {
        let known = *self.next_hop_known.get(tn as usize)?;
        self.templates.get(tn as usize).filter(|_| known)
    }

    /// Records a resolved next hop for a tunnel (from the neighbour table).
    pub fn set_next_hop(&mut self, tunnel: u16, mac: [u8; 6]) {
        if let Some(t) = self.templates.get_mut(tunnel as usize) {
            t.set_dst_mac(mac);
            self.next_hop_known[tunnel as usize] = true;
        }
    }

    /// Applies resolved next hops to every tunnel without a static one; a
    /// tunnel whose remote is missing from `hops` becomes unresolved again.
    pub fn apply_next_hops(&mut self, hops: &HashMap<IpAddr, [u8; 6]>) {
        for (i, t) in self.rules.tunnels.iter().enumerate() {
            if t.static_next_hop {
                continue;
            }
            match hops.get(&t.remote) {
                Some(&mac) => {
                    self.templates[i].set_dst_mac(mac);
                    self.next_hop_known[i] = true;
                }
                None => self.next_hop_known[i] = false,
            }
        }
    }

    /// Caps each tunnel's underlay MTU at the MTU of the interface its remote
    /// is reached by (`mtus`: remote -> interface MTU, from the neighbour
    /// watcher), so a lowered interface MTU turns oversized packets into
    /// ICMP "too big" replies instead of frames the interface cannot carry.
    pub fn apply_path_mtus(&mut self, mtus: &HashMap<IpAddr, u16>) {
        for (i, t) in self.rules.tunnels.iter().enumerate() {
            let configured = t.params.options.underlay_mtu;
            let path = mtus.get(&t.remote).map_or(configured, |&m| m.min(configured));
            self.templates[i].set_underlay_mtu(path);
            self.inner_mtu[i] = t.inner_ip_mtu.saturating_sub(configured - path);
        }
    }

    /// The smallest inner MTU of the tunnels under the current path MTUs.
    pub fn smallest_inner_mtu(&self) -> Option<u16> {
        self.inner_mtu.iter().copied().min()
    }

    /// Gives tunnels whose uplink has no configured MAC address the address of
    /// the uplink's interface (`macs`: port name -> MAC, from the I/O layer).
    pub fn apply_interface_macs(&mut self, macs: &HashMap<String, [u8; 6]>) {
        for (i, t) in self.rules.tunnels.iter().enumerate() {
            let port = &self.rules.ports[t.uplink as usize];
            if port.mac.is_none() {
                if let Some(m) = macs.get(&port.name) {
                    self.templates[i].set_src_mac(*m);
                }
            }
        }
    }

    /// Processes one batch received on `in_port`, draining `batch`.
    pub fn process<'a, T: Tracer>(
        &mut self,
        in_port: u16,
        batch: &mut Vec<PacketBuf<'a>>,
        pool: &mut impl FramePool<'a>,
        out: &mut Outputs<'a>,
        now_ns: u64,
        t: &mut T,
    ) {
        let rs = Arc::clone(&self.rules);
        let c = Arc::clone(&self.counters);
        c.batch(batch.len());
        if let Some(l) = &mut self.l2 {
            l.sync();
        }
        let mut b = Batch { rs: &rs, c: &c, in_port, pool, out, now_ns, t };
        for pkt in batch.drain(..) {
            self.one(&mut b, pkt);
        }
    }

    #[inline]
    fn one<'a, P: FramePool<'a>, T: Tracer>(
        &mut self,
        b: &mut Batch<'_, 'a, P, T>,
        mut pkt: PacketBuf<'a>,
    ) {
        let (rs, c, in_port) = (b.rs, b.c, b.in_port);
        c.rx.inc();
        let Some(port) = rs.ports.get(in_port as usize) else {
            return b.drop(pkt, DropReason::UnknownPort, Stage::Receive, 0);
        };
        c.ports[in_port as usize].rx.add(pkt.len());
        b.t.step(|| Step::Received { port: in_port, len: pkt.len() as u32 });

        // 1. receive: decapsulate what arrives on an uplink.
        let (tunnel_tag, vni, geneve_options) = if port.kind == PortKind::Uplink {
            let d = match decap(&rs.decap, &mut pkt) {
                Ok(d) => d,
                Err(r) => return b.drop(pkt, r, Stage::Decap, 0),
            };
            let key = (d.local, d.remote, d.tunnel);
            let idx = match self.last_tunnel {
                Some((k, i)) if k == key => i,
                _ => match rs.decap_index.get(&key) {
                    Some(&i) => {
                        self.last_tunnel = Some((key, i));
                        i
                    }
                    None => {
                        b.t.step(|| Step::Decapsulated { tunnel: None, outer: d });
                        return b.drop(pkt, DropReason::UnknownTunnel, Stage::Decap, 0);
                    }
                },
            };
            b.t.step(|| Step::Decapsulated { tunnel: Some(idx), outer: d });
            // An IP payload on an Ethernet tunnel (or the reverse) would be
            // delivered as a frame made up from the outer MACs: routed
            // traffic injected into an L2 segment.
            if rs.tunnels[idx as usize].ethernet != (d.payload == EtherType::TransEther) {
                return b.drop(pkt, DropReason::GrePayloadMismatch, Stage::Decap, idx + 1);
            }
            c.tunnels[idx as usize].decap.add(pkt.len());
            let vni = match d.tunnel {
                TunnelId::Vxlan { vni } | TunnelId::Geneve { vni } => vni,
                TunnelId::Gre { key } => key.unwrap_or(0),
            };
            (idx + 1, vni, d.geneve_options)
        } else {
            (0, 0, 0)
        };
        if pkt.len() < encap::wire::ethernet::HEADER_LEN {
            return b.drop(pkt, DropReason::EthTruncated, Stage::Parse, tunnel_tag);
        }

        // 2. parse, once.
        let (mut key, mut l2) = extract(pkt.data(), in_port, tunnel_tag, vni);
        key.set(field::GENEVE_OPTIONS, geneve_options as u64);
        b.t.step(|| Step::Parsed { key });

        // 3. classify: flow cache, then the classifier.
        let h = key.hash();
        let rule = match self.cache.get(&key, h, self.epoch) {
            Some(r) => {
                c.cache.hit.inc();
                b.t.step(|| Step::CacheHit);
                r
            }
            None => {
                let f = classify(rs, &key);
                c.cache.miss.inc();
                c.cache.tuples_probed.add(f.tuples_probed as u64);
                let r = f.rule.unwrap_or(NO_RULE);
                self.cache.insert(&key, h, self.epoch, r);
                if r != NO_RULE && self.decided_len < self.decided.len() {
                    self.decided[self.decided_len] = (key, r);
                    self.decided_len += 1;
                }
                b.t.step(|| Step::Classified { table: f.table, probed: f.tuples_probed });
                r
            }
        };
        if rule == NO_RULE {
            return b.drop(pkt, DropReason::NoMatchingRule, Stage::Classify, tunnel_tag);
        }
        let r = &rs.rules[rule as usize];
        c.rules[rule as usize].add(pkt.len());
        b.t.step(|| Step::Matched { rule });

        // 4. act, in order.
        let mut sends_left = r.actions.iter().filter(|a| a.sends()).count();
        for a in &r.actions {
            b.t.step(|| Step::Action { act: *a });
            let res = match *a {
                Act::PushVlan(vid) => push_vlan(&mut pkt, &mut l2, vid),
                Act::PopVlan => pop_vlan(&mut pkt, &mut l2),
                Act::SetVlan(vid) => set_vlan(&mut pkt, &l2, vid),
                Act::SetEthSrc(m) => {
                    Frame::new_unchecked(pkt.data_mut()).set_src_addr(m);
                    Ok(())
                }
                Act::SetEthDst(m) => {
                    Frame::new_unchecked(pkt.data_mut()).set_dst_addr(m);
                    Ok(())
                }
                Act::Count => Ok(()),
                Act::Drop => Err(DropReason::RuleDrop),
                Act::Encap(_) | Act::Output(_) | Act::ForwardL2(_) => {
                    sends_left -= 1;
                    if let Act::ForwardL2(vni) = *a {
                        if !rs.networks.is_empty()
                            && self.l2_ingress(b, vni, &mut pkt, tunnel_tag, sends_left == 0)
                        {
                            return self.deliver(b, Dest::Port(in_port), tunnel_tag, pkt);
                        }
                    }
                    let dests = match self.destinations(b, *a, &pkt, tunnel_tag) {
                        Ok(d) => d,
                        Err(reason) => {
                            if sends_left == 0 {
                                return b.drop(pkt, reason, Stage::Forward, tunnel_tag);
                            }
                            c.drop_in_tunnel(reason, tunnel_tag);
                            b.t.step(|| Step::Dropped { stage: Stage::Forward, reason });
                            continue;
                        }
                    };
                    let n = dests.len();
                    if n > 1 {
                        b.t.step(|| Step::Replicated { copies: n as u32 });
                    }
                    for (i, d) in dests.iter().enumerate() {
                        let last = sends_left == 0 && i + 1 == n;
                        if last {
                            return self.deliver(b, d, tunnel_tag, pkt);
                        }
                        c.replicas.inc();
                        match copy_of(&pkt, b.pool) {
                            Some(copy) => self.deliver(b, d, tunnel_tag, copy),
                            None => {
                                c.drop_in_tunnel(DropReason::NoFreeFrame, tunnel_tag);
                                b.t.step(|| Step::Dropped {
                                    stage: Stage::Replicate,
                                    reason: DropReason::NoFreeFrame,
                                });
                            }
                        }
                    }
                    Ok(())
                }
            };
            if let Err(reason) = res {
                return b.drop(pkt, reason, Stage::Action, tunnel_tag);
            }
        }
        // A rule whose send actions all failed early still owns the packet here.
        b.drop(pkt, DropReason::RuleDrop, Stage::Action, tunnel_tag)
    }

    /// Resolves a send action to its destinations.
    fn destinations<'r, 'a, P: FramePool<'a>, T: Tracer>(
        &self,
        b: &mut Batch<'r, 'a, P, T>,
        a: Act,
        pkt: &PacketBuf<'_>,
        tunnel_tag: u16,
    ) -> Result<Dests<'r>, DropReason> {
        let (rs, in_port) = (b.rs, b.in_port);
        match a {
            Act::Output(p) if p == in_port => Err(DropReason::SelfLoop),
            Act::Output(p) => Ok(Dests::One(Dest::Port(p))),
            Act::Encap(tn) => Ok(Dests::One(Dest::Tunnel(tn))),
            Act::ForwardL2(vni) => {
                let dst: [u8; 6] = pkt.data()[0..6].try_into().unwrap();
                let unicast = dst[0] & 1 == 0;
                if unicast {
                    if let Some(&tn) = rs.fdb.get(&(vni, dst)) {
                        // Split horizon: never send a tunnel's packet back into a tunnel.
                        if tunnel_tag != 0 {
                            return Err(DropReason::SelfLoop);
                        }
                        return Ok(Dests::One(Dest::Tunnel(tn)));
                    }
                    let learned =
                        self.l2.as_ref().and_then(|l| l.lookup(rs.generation, vni, dst, b.now_ns));
                    if let Some(at) = learned {
                        b.t.step(|| Step::L2(L2Step::Known { vni, mac: dst, at }));
                        return Ok(Dests::One(match at {
                            Loc::Port(p) if p == in_port => return Err(DropReason::SelfLoop),
                            Loc::Tunnel(_) if tunnel_tag != 0 => return Err(DropReason::SelfLoop),
                            Loc::Port(p) => Dest::Port(p),
                            Loc::Tunnel(tn) => Dest::Tunnel(tn),
                        }));
                    }
                }
                let Some(f) = rs.flood.get(&vni) else {
                    return Err(DropReason::FloodListEmpty);
                };
                // Split horizon: a tunnel's packet floods to ports only.
                let tunnels = if tunnel_tag == 0 { &f.tunnels[..] } else { &[] };
                let d = Dests::Flood { tunnels, ports: &f.ports, skip_port: in_port };
                if d.len() == 0 {
                    Err(DropReason::FloodListEmpty)
                } else {
                    Ok(d)
                }
            }
            _ => Ok(Dests::Flood { tunnels: &[], ports: &[], skip_port: in_port }),
        }
    }

    /// MAC learning and ARP/ND suppression for a frame entering network
    /// `vni` (modules `learn` and `suppress`). True if the frame was a
    /// question answered in place, to be sent back out of its input port
    /// (only when this is the rule's last send: the answer replaces it).
    fn l2_ingress<'a, P: FramePool<'a>, T: Tracer>(
        &mut self,
        b: &mut Batch<'_, 'a, P, T>,
        vni: u32,
        pkt: &mut PacketBuf<'a>,
        tunnel_tag: u16,
        last_send: bool,
    ) -> bool {
        let (rs, in_port, now) = (b.rs, b.in_port, b.now_ns);
        let (Some(net), Some(l)) = (rs.networks.get(&vni), &mut self.l2) else {
            return false;
        };
        let src: [u8; 6] = pkt.data()[6..12].try_into().unwrap();
        if net.learning && src[0] & 1 == 0 {
            let at = if tunnel_tag == 0 { Loc::Port(in_port) } else { Loc::Tunnel(tunnel_tag - 1) };
            if l.saw_mac(rs.generation, vni, src, at, now) {
                b.t.step(|| Step::L2(L2Step::Learn { vni, mac: src, at }));
            }
        }
        if !net.suppress || tunnel_tag != 0 {
            return false;
        }
        let Some(n) = crate::suppress::inspect(pkt.data()) else { return false };
        if let Some((ip, mac)) = n.binding {
            l.saw_binding(vni, ip, mac, now);
        }
        let Some(q) = n.question else { return false };
        match l.binding(net, rs.generation, vni, q.target) {
            Some(mac) if last_send && mac != src && crate::suppress::answer(pkt, &q, mac) => {
                l.stats().answered();
                b.t.step(|| Step::L2(L2Step::Answered { vni, ip: q.target, mac }));
                true
            }
            _ => {
                l.stats().flooded();
                b.t.step(|| Step::L2(L2Step::Unanswered { vni, ip: q.target }));
                false
            }
        }
    }

    /// Sends one packet to one destination, or drops it with its reason.
    fn deliver<'a, P: FramePool<'a>, T: Tracer>(
        &mut self,
        b: &mut Batch<'_, 'a, P, T>,
        d: Dest,
        tunnel_tag: u16,
        mut pkt: PacketBuf<'a>,
    ) {
        let (rs, c) = (b.rs, b.c);
        match d {
            Dest::Port(p) => {
                c.ports[p as usize].tx.add(pkt.len());
                c.tx.inc();
                b.t.step(|| Step::Output { port: p, len: pkt.len() as u32 });
                b.out.ports[p as usize].push(pkt);
            }
            Dest::Tunnel(tn) => {
                let tun = &rs.tunnels[tn as usize];
                let known = self.next_hop_known[tn as usize];
                b.t.step(|| Step::NextHop {
                    tunnel: tn,
                    mac: known
                        .then(|| self.templates[tn as usize].header()[..6].try_into().unwrap()),
                });
                if !known {
                    return self.encap_failed(b, pkt, DropReason::NoNeighbour, tn, tunnel_tag);
                }
                let meta = match InnerMeta::parse(pkt.data()) {
                    Ok(m) => m,
                    Err(r) => return self.encap_failed(b, pkt, r, tn, tunnel_tag),
                };
                match self.templates[tn as usize].encap_with_meta(&mut pkt, &meta) {
                    Ok(()) => {
                        c.tunnels[tn as usize].encap.add(pkt.len());
                        c.ports[tun.uplink as usize].tx.add(pkt.len());
                        c.tx.inc();
                        b.t.step(|| Step::Encapsulated {
                            tunnel: tn,
                            header: OuterHeader::copy(
                                pkt.data(),
                                self.templates[tn as usize].outer_len(),
                            ),
                        });
                        b.t.step(|| Step::Output { port: tun.uplink, len: pkt.len() as u32 });
                        b.out.ports[tun.uplink as usize].push(pkt);
                    }
                    Err(r) => self.encap_failed(b, pkt, r, tn, tunnel_tag),
                }
            }
        }
    }

    /// A packet that could not be encapsulated into tunnel `tn`: dropped
    /// (counted under the tunnel too), and if it was too big, its sender is
    /// told so. Out of line, like every drop.
    #[cold]
    #[inline(never)]
    fn encap_failed<'a, P: FramePool<'a>, T: Tracer>(
        &mut self,
        b: &mut Batch<'_, 'a, P, T>,
        pkt: PacketBuf<'a>,
        reason: DropReason,
        tn: u16,
        tunnel_tag: u16,
    ) {
        if reason == DropReason::MtuExceeded && tunnel_tag == 0 && self.icmp_allowed(b.now_ns) {
            self.reply_too_big(b, &pkt, self.inner_mtu[tn as usize]);
        }
        b.drop(pkt, reason, Stage::Encap, tn + 1)
    }

    fn icmp_allowed(&mut self, now_ns: u64) -> bool {
        // Divide first: `now_ns` is wall-clock time in replay and would overflow a product.
        let elapsed = now_ns.saturating_sub(self.icmp_refill_ns);
        let refill = elapsed / (1_000_000_000 / ICMP_PER_SEC);
        if refill > 0 {
            self.icmp_tokens = (self.icmp_tokens + refill).min(ICMP_PER_SEC);
            self.icmp_refill_ns = now_ns;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Sends the ICMP "too big" reply for `pkt` back out of its input port.
    fn reply_too_big<'a, P: FramePool<'a>, T: Tracer>(
        &mut self,
        b: &mut Batch<'_, 'a, P, T>,
        pkt: &PacketBuf<'_>,
        mtu: u16,
    ) {
        let (c, in_port) = (b.c, b.in_port);
        let Some(mut f) = b.pool.alloc() else { return };
        let head = f.headroom();
        f.reset(head, &[]);
        let n = match f.push_back(icmp::MAX_REPLY_LEN) {
            Some(buf) => icmp::too_big_reply(pkt.data(), mtu, buf),
            None => None,
        };
        match n {
            Some(n) => {
                f.truncate(n);
                c.generated.inc();
                c.tx.inc();
                c.ports[in_port as usize].tx.add(n);
                b.t.step(|| Step::TooBig { port: in_port, mtu, len: n as u32 });
                b.out.ports[in_port as usize].push(f);
            }
            None => b.out.free.push(f),
        }
    }
}

/// The classifier, on a flow cache miss. Its own function: the probe loop
/// is compiled for itself, not reshaped by whatever the per-packet code
/// around it holds in registers.
#[inline(never)]
fn classify(rs: &RuleSet, key: &crate::flow_key::FlowKey) -> crate::classifier::Found {
    rs.classifier.lookup(key)
}

fn copy_of<'a>(pkt: &PacketBuf<'_>, pool: &mut impl FramePool<'a>) -> Option<PacketBuf<'a>> {
    let mut f = pool.alloc()?;
    let head = f.headroom();
    f.reset(head, pkt.data()).then_some(f)
}

// Tags are pushed and popped right behind the MAC addresses: the outermost.
const TAG_AT: usize = ethernet::field::ETHERTYPE.start;

fn push_vlan(pkt: &mut PacketBuf<'_>, l2: &mut L2Info, vid: u16) -> Result<(), DropReason> {
    if l2.vlan_tags >= 2 {
        return Err(DropReason::VlanTagFull);
    }
    let gap = pkt.insert_at(TAG_AT, ethernet::TAG_LEN).ok_or(DropReason::NoHeadroom)?;
    gap.copy_from_slice(&ethernet::tag_bytes(TPID_8021Q, ethernet::tci(0, false, vid)));
    l2.vlan_tags += 1;
    Ok(())
}

fn pop_vlan(pkt: &mut PacketBuf<'_>, l2: &mut L2Info) -> Result<(), DropReason> {
    if l2.vlan_tags == 0 || !pkt.remove_at(TAG_AT, ethernet::TAG_LEN) {
        return Err(DropReason::NoVlanTag);
    }
    l2.vlan_tags -= 1;
    Ok(())
}

fn set_vlan(pkt: &mut PacketBuf<'_>, l2: &L2Info, vid: u16) -> Result<(), DropReason> {
    if l2.vlan_tags == 0 {
        return Err(DropReason::NoVlanTag);
    }
    let mut f = Frame::new_unchecked(pkt.data_mut());
    VlanTag::new_unchecked(f.payload_mut()).set_vlan_id(vid);
    Ok(())
}
