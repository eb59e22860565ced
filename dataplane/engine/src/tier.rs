//! The XDP fast tier, as the engine sees it: whether a flow whose first
//! packet the pipeline just decided can be handed to the kernel-resident
//! tier, and the entry that does to the flow's later packets exactly what
//! the pipeline would.
//!
//! The tier matches on the whole [`FlowKey`], the key the flow cache uses:
//! two packets with the same key get the same rule from the classifier, so a
//! hit in the tier always agrees with what the engine would decide. What an
//! entry does depends only on the key and the rule, with three exceptions
//! that the XDP program takes from each packet, as the pipeline does: the
//! inner TOS (DSCP and ECN) and TTL and the DF bit, for the tunnel's inherit
//! and ECN options; the frame's length (a frame too long for the tunnel's
//! MTU leaves the tier, so the engine drops it with `mtu_exceeded` and
//! answers ICMP); the IPv4 identification, which counts per CPU as the
//! pipeline's counts per worker; and the outer UDP source port and IPv6
//! flow label, a hash of the inner flow's addresses, protocol and ports
//! (`InnerMeta::hash`), which the program computes per packet, bit for bit
//! as encap::inner does, so that an entry need not be one flow's alone.
//!
//! What the tier cannot do exactly stays with the engine, each under a
//! named [`NotInTier`] reason. [`TierEntry::apply`] is the Rust twin of the
//! XDP program's action (dataplane/xdp/steer.bpf.c); the tests here hold it
//! to the pipeline's own encapsulation, and the I/O layer's tests hold the
//! program to it.

use std::net::IpAddr;

use encap::wire::checksum;
use encap::{ecn, DfMode, DscpMode, EcnMode, Encapsulation, InnerMeta, TtlMode, Underlay};
use serde::Serialize;

use crate::compile::Act;
use crate::counters::WorkerCounters;
use crate::flow_key::{field, FlowKey, WORDS};
use crate::pipeline::Worker;

/// Outer header of VXLAN over IPv4, untagged: Ethernet, IPv4, UDP, VXLAN.
pub const VXLAN4_HEADER_LEN: usize = 14 + 20 + 8 + 8;
/// The outer IP header's place in it (over IPv4 and IPv6).
const IP: usize = 14;
/// The outer UDP header's place over IPv4, and over IPv6.
const UDP: usize = 34;
const UDP6: usize = 54;

/// Why a flow stays with the userspace engine (AF_XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum NotInTier {
    /// The rule says `xdp_tier = "off"`.
    RuleOptOut,
    /// It arrived through a Geneve tunnel: the tier decapsulates VXLAN and GRE only.
    Decapsulated,
    /// Not untagged IPv4/IPv6 TCP or UDP: the tier parses only those.
    NotTcpUdp,
    /// The rule pushes, pops or sets a VLAN tag.
    VlanAction,
    /// The rule sends the packet to more than one place.
    Replication,
    /// `forward_l2` (FDB and flood lists) is not in the tier yet.
    ForwardL2,
    /// Output to the port the packet came in on (the engine drops it).
    SelfLoop,
    /// Geneve encapsulation is not in the tier yet.
    GeneveEncap,
    /// The GRE tunnel sends sequence numbers (RFC 2890): one counter per
    /// tunnel, which per-CPU XDP cannot keep.
    GreSequence,
    /// The underlay is VLAN-tagged.
    OuterVlan,
    /// The tunnel's next hop is not resolved (the engine drops with `no_neighbour`).
    NoNextHop,
    /// The rule has no action that decides the packet's fate.
    NoFate,
    /// It arrived through a tunnel and the rule encapsulates it again.
    DecapEncap,
    /// The packet carries a GRE sequence number (RFC 2890): the tier
    /// leaves every such packet to the engine (a property of the packet,
    /// not of its flow: a trace names it, workers never count it).
    GreSequenceReceived,
}

impl NotInTier {
    pub const ALL: [NotInTier; 14] = [
        NotInTier::RuleOptOut,
        NotInTier::Decapsulated,
        NotInTier::NotTcpUdp,
        NotInTier::VlanAction,
        NotInTier::Replication,
        NotInTier::ForwardL2,
        NotInTier::SelfLoop,
        NotInTier::GeneveEncap,
        NotInTier::GreSequence,
        NotInTier::OuterVlan,
        NotInTier::NoNextHop,
        NotInTier::NoFate,
        NotInTier::DecapEncap,
        NotInTier::GreSequenceReceived,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NotInTier::RuleOptOut => "rule_opt_out",
            NotInTier::Decapsulated => "decapsulated",
            NotInTier::NotTcpUdp => "not_tcp_udp",
            NotInTier::VlanAction => "vlan_action",
            NotInTier::Replication => "replication",
            NotInTier::ForwardL2 => "forward_l2",
            NotInTier::SelfLoop => "self_loop",
            NotInTier::GeneveEncap => "geneve_encap",
            NotInTier::GreSequence => "gre_sequence",
            NotInTier::OuterVlan => "outer_vlan",
            NotInTier::NoNextHop => "no_next_hop",
            NotInTier::NoFate => "no_fate",
            NotInTier::DecapEncap => "decap_encap",
            NotInTier::GreSequenceReceived => "gre_sequence_received",
        }
    }
}

/// What an entry does with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierAction {
    /// Drop, counted as `rule_drop`.
    Drop,
    /// Send out of port `port` as it is (after the MAC rewrites).
    Output { port: u16 },
    /// Encapsulate and send out of the tunnel's uplink.
    Encap(TierEncap),
}

/// The tunnel protocols the tier encapsulates in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TierTunnel {
    Vxlan = 0,
    /// Ethernet over GRE (gretap, NVGRE).
    GreTap = 1,
    /// IP over GRE: the frame's Ethernet header is not carried.
    GreL3 = 2,
}

/// VXLAN or GRE over IPv4 or IPv6 with a prebuilt outer header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierEncap {
    pub tunnel: u16,
    pub uplink: u16,
    pub kind: TierTunnel,
    /// The outer header (its first `header_len` bytes) as the pipeline's
    /// template builds it; the UDP source port, the IPv6 flow label, the
    /// IPv4 TOS, total length, identification, flags, TTL and checksum,
    /// the IPv6 traffic class, payload length and hop limit, and the UDP
    /// length and checksum are zero, patched per packet.
    pub header: [u8; VXLAN6_HEADER_LEN],
    /// [`VXLAN4_HEADER_LEN`] or [`VXLAN6_HEADER_LEN`].
    pub header_len: u8,
    /// Ones-complement sum of the outer IPv4 header's constant words.
    pub ip_sum: u16,
    /// The tunnel header's checksum is sent (VXLAN's UDP checksum: over
    /// IPv6 always, as the template does, over IPv4 if the tunnel says so;
    /// GRE's if the tunnel says so): the folded sum of its constant words
    /// (UDP: the pseudo-header's addresses and protocol, the destination
    /// port and the VXLAN header; GRE: its header but an L3 tunnel's
    /// protocol). The rest is the frame's, the UDP source port and length,
    /// or the L3 protocol.
    pub udp_sum: Option<u16>,
    /// VXLAN: the range the flow hash maps the UDP source port into.
    pub sport_min: u16,
    pub sport_max: u16,
    pub df: DfMode,
    pub ttl: TtlMode,
    pub dscp: DscpMode,
    pub ecn: EcnMode,
    /// Longest inner frame the tunnel's MTU carries; a longer one leaves
    /// the tier (the engine drops it and answers ICMP "too big").
    pub max_frame: u16,
    /// Where the header's destination MAC came from: the next hop of
    /// `remote`, unless configured statically. The entry is stale once
    /// that next hop changes.
    pub remote: IpAddr,
    pub static_next_hop: bool,
}

/// The tunnel a decapsulated flow came through: what the XDP program looks
/// its tunnel up by (outer destination and source, VNI or GRE key) and how
/// much longer a tunnel packet is than the frame decapsulation leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierDecap {
    pub tunnel: u16,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The VNI, or the GRE key (0 without one).
    pub vni: u32,
    pub kind: TierTunnel,
    /// GRE: the tunnel's packets carry a key (its identity has one).
    pub gre_key: bool,
    /// GRE: the tunnel's packets carry a checksum, as the tunnel sends
    /// them (`gre_checksum`); the program takes only packets that match,
    /// so every one it strips has this entry's outer length.
    pub gre_checksum: bool,
    /// What decapsulation takes off the frame: Ethernet + IP + UDP + VXLAN
    /// (50 over IPv4, 70 over IPv6); Ethernet + IP + GRE with its key and
    /// checksum; over L3 GRE less 14, the Ethernet header made up from
    /// the outer one (as encap::decap does).
    pub outer_len: u16,
}

impl TierDecap {
    /// The outer headers' length: Ethernet, IP and the tunnel header.
    pub fn header_len(&self) -> usize {
        self.outer_len as usize + if self.kind == TierTunnel::GreL3 { 14 } else { 0 }
    }
}

/// Outer header of VXLAN over IPv6, untagged.
pub const VXLAN6_HEADER_LEN: usize = 14 + 40 + 8 + 8;

/// The tunnel of a flow keyed after decapsulation (`key`'s tunnel field),
/// if it is of a kind the tier decapsulates: VXLAN, gretap, NVGRE, L3 GRE.
pub fn decap_of(rs: &crate::compile::RuleSet, key: &FlowKey) -> Option<TierDecap> {
    let tn = (key.get(field::TUNNEL) as usize).checked_sub(1)?;
    let t = rs.tunnels.get(tn)?;
    let ip = if t.local.is_ipv4() { 20 } else { 40 };
    let gre_key = matches!(t.id, encap::TunnelId::Gre { key: Some(_) });
    let gre_checksum = t.params.options.gre_checksum;
    let gre = 14 + ip + 4 + 4 * (gre_key as usize + gre_checksum as usize);
    let (kind, outer_len) = match t.params.encap {
        Encapsulation::Vxlan { .. } => (TierTunnel::Vxlan, 14 + ip + 16),
        Encapsulation::GreTap { .. } => (TierTunnel::GreTap, gre),
        Encapsulation::GreL3 { .. } => (TierTunnel::GreL3, gre - 14),
        Encapsulation::Geneve { .. } => return None,
    };
    let gre = kind != TierTunnel::Vxlan;
    Some(TierDecap {
        tunnel: tn as u16,
        local: t.local,
        remote: t.remote,
        vni: key.get(field::VNI) as u32,
        kind,
        gre_key: gre && gre_key,
        gre_checksum: gre && gre_checksum,
        outer_len: outer_len as u16,
    })
}

/// A flow entry for the XDP tier: the flow's key under its mask, the
/// generation it was decided under, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierEntry {
    pub generation: u64,
    /// The first packet's key ANDed with `mask`: the entry serves every
    /// packet whose key, masked, equals it.
    pub key: FlowKey,
    /// The bits of the key the engine's decision depended on ([`mask_of`]).
    pub mask: FlowKey,
    pub in_port: u16,
    /// The rule's index in the generation's rule set.
    pub rule: u32,
    /// MAC rewrites of the rule, applied before the packet is sent.
    pub set_eth_src: Option<[u8; 6]>,
    pub set_eth_dst: Option<[u8; 6]>,
    pub action: TierAction,
    /// Set when the flow arrives through a tunnel (on an uplink): the
    /// program strips the outer headers first.
    pub decap: Option<TierDecap>,
}

/// What the tier does with one frame that matched an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierVerdict {
    Drop,
    /// Sent out of this port (rule-set numbering).
    Send(u16),
    /// Left to the engine, unchanged.
    Miss,
}

/// Decides whether the flow of `key`, which matched rule `rule` of `w`'s rule
/// set, can be handed to the tier; if so, returns its entry.
pub fn decide(w: &Worker, key: &FlowKey, rule: u32) -> Result<TierEntry, NotInTier> {
    let rs = w.rules();
    let r = rs.rules.get(rule as usize).ok_or(NotInTier::NoFate)?;
    if !r.xdp_tier {
        return Err(NotInTier::RuleOptOut);
    }
    // Decapsulated flows: VXLAN and GRE (Geneve headers carry options the
    // engine checks). Learning needs no
    // exception: only `forward_l2` learns, and it is never in the tier.
    let decap = match key.get(field::TUNNEL) {
        0 => None,
        _ => Some(decap_of(rs, key).ok_or(NotInTier::Decapsulated)?),
    };
    let et = key.get(field::ETHERTYPE);
    let ip = et == 0x0800 || et == 0x86dd;
    if !ip || key.get(field::VLAN) != 0 || !matches!(key.get(field::IP_PROTO), 6 | 17) {
        return Err(NotInTier::NotTcpUdp);
    }
    if r.actions.iter().filter(|a| a.sends()).count() > 1 {
        return Err(NotInTier::Replication);
    }
    let in_port = key.get(field::IN_PORT) as u16;
    let mask = mask_of(rs, key);
    let mut e = TierEntry {
        generation: rs.generation,
        key: key.masked(&mask),
        mask,
        in_port,
        rule,
        set_eth_src: None,
        set_eth_dst: None,
        action: TierAction::Drop,
        decap,
    };
    // The pipeline runs the actions in order and stops at the first that
    // decides the packet's fate (with one send action, that one).
    for a in &r.actions {
        match *a {
            Act::Count => {}
            Act::SetEthSrc(m) => e.set_eth_src = Some(m),
            Act::SetEthDst(m) => e.set_eth_dst = Some(m),
            Act::PushVlan(_) | Act::PopVlan | Act::SetVlan(_) => return Err(NotInTier::VlanAction),
            Act::ForwardL2(_) => return Err(NotInTier::ForwardL2),
            Act::Drop => return Ok(e),
            Act::Output(p) if p == in_port => return Err(NotInTier::SelfLoop),
            Act::Output(port) => {
                e.action = TierAction::Output { port };
                return Ok(e);
            }
            Act::Encap(_) if e.decap.is_some() => return Err(NotInTier::DecapEncap),
            Act::Encap(tn) => {
                e.action = TierAction::Encap(encap(w, tn)?);
                return Ok(e);
            }
        }
    }
    Err(NotInTier::NoFate)
}

/// The bits of `key` that the tier decision for its flow depends on: the
/// classifier's (which rule wins: [`Classifier::wildcards`]), and what
/// [`decide`] and the entry read from the key: the in-port, tunnel and VNI
/// (word 0: the entry's counters and, after decapsulation, its tunnel), the
/// EtherType, VLAN and IP protocol (what the tier takes at all). Everything
/// else an entry does per packet (the source port, TOS, TTL, lengths,
/// checksums) it takes from the packet itself. No other key field is read
/// for a flow the tier takes: learning (eth_src) and the FDB (eth_dst) are
/// `forward_l2`'s, which never enters the tier, and only a rule that reads
/// them can make them matter, when the classifier's wildcards hold them.
///
/// [`Classifier::wildcards`]: crate::classifier::Classifier::wildcards
pub fn mask_of(rs: &crate::compile::RuleSet, key: &FlowKey) -> FlowKey {
    let mut m = rs.classifier.wildcards(key);
    m.0[0] = u64::MAX;
    for f in [field::ETHERTYPE, field::VLAN, field::IP_PROTO] {
        m.set(f, u64::MAX);
    }
    m
}

fn encap(w: &Worker, tn: u16) -> Result<TierEncap, NotInTier> {
    let tun = &w.rules().tunnels[tn as usize];
    let tpl = w.encap_template(tn).ok_or(NotInTier::NoNextHop)?;
    let p = tpl.params();
    let o = &p.options;
    let kind = match p.encap {
        Encapsulation::Vxlan { .. } => TierTunnel::Vxlan,
        Encapsulation::GreTap { .. } => TierTunnel::GreTap,
        Encapsulation::GreL3 { .. } => TierTunnel::GreL3,
        Encapsulation::Geneve { .. } => return Err(NotInTier::GeneveEncap),
    };
    if kind != TierTunnel::Vxlan && o.gre_sequence {
        return Err(NotInTier::GreSequence);
    }
    if p.outer_vlan.is_some() {
        return Err(NotInTier::OuterVlan);
    }
    let v6 = matches!(p.underlay, Underlay::V6 { .. });
    let l4 = if v6 { UDP6 } else { UDP };
    let len = tpl.outer_len();
    let mut header = [0u8; VXLAN6_HEADER_LEN];
    header[..len].copy_from_slice(tpl.header());
    if v6 {
        // The flow label is the packet's (its flow hash, RFC 6438).
        header[IP + 1] &= 0xf0;
        header[IP + 2..IP + 4].fill(0);
    }
    let udp_sum = if kind == TierTunnel::Vxlan {
        // The source port is the packet's too.
        header[l4..l4 + 2].fill(0);
        // The pseudo-header without its length, and the UDP and VXLAN
        // headers with the source port, length and checksum zero.
        let pseudo = match p.underlay {
            Underlay::V4 { src, dst } => checksum::pseudo_v4(src, dst, 17, 0),
            Underlay::V6 { src, dst } => checksum::pseudo_v6(&src, &dst, 17, 0),
        };
        (v6 || o.udp_checksum).then(|| checksum::fold(checksum::add(pseudo, &header[l4..len])))
    } else {
        // The GRE header with the checksum zero; an L3 tunnel's protocol
        // is the frame's, added per packet.
        let sum = match kind {
            TierTunnel::GreL3 => {
                checksum::add(checksum::add(0, &header[l4..l4 + 2]), &header[l4 + 4..len])
            }
            _ => checksum::add(0, &header[l4..len]),
        };
        o.gre_checksum.then(|| checksum::fold(sum))
    };
    // The pipeline refuses a frame whose outer IP packet (the frame, less
    // its Ethernet header over L3 GRE, plus the outer IP and tunnel
    // headers) exceeds the underlay MTU.
    let strip = if kind == TierTunnel::GreL3 { 14 } else { 0 };
    let max_frame = (o.underlay_mtu as usize + strip).saturating_sub(len - IP);
    Ok(TierEncap {
        tunnel: tn,
        uplink: tun.uplink,
        kind,
        header,
        header_len: len as u8,
        ip_sum: if v6 { 0 } else { checksum::fold(checksum::add(0, &header[IP..UDP])) },
        udp_sum,
        sport_min: o.src_port_min,
        sport_max: o.src_port_max,
        df: o.df,
        ttl: o.ttl,
        dscp: o.dscp,
        ecn: o.ecn,
        max_frame: max_frame.min(u16::MAX as usize) as u16,
        remote: tun.remote,
        static_next_hop: tun.static_next_hop,
    })
}

impl TierEntry {
    /// The key as the XDP program builds it: the eight words in host order.
    pub fn key_bytes(&self) -> [u8; WORDS * 8] {
        key_bytes(&self.key)
    }

    /// The Rust twin of the XDP program's action for a frame whose key
    /// matched this entry (and whose generation is current): what it sends,
    /// drops or leaves to the engine, with `ident` as the outer IPv4
    /// identification.
    /// For a decapsulated flow `frame` is the tunnel packet, and a hit
    /// leaves the inner frame in it.
    pub fn apply(&self, frame: &mut Vec<u8>, ident: u16) -> TierVerdict {
        if let Some(d) = &self.decap {
            // The ECN field of an untagged IPv4 or IPv6 frame.
            let ecn_of = |f: &[u8]| match f[12..14] {
                [0x08, 0x00] => f[15] & 3,
                _ => (f[15] >> 4) & 3,
            };
            let hl = d.header_len();
            let inner = if d.kind == TierTunnel::GreL3 {
                // An Ethernet header from the outer MACs and the GRE
                // protocol, in front of the IP packet (encap::decap).
                let gre = if frame[12..14] == [0x86, 0xdd] { 54 } else { 34 };
                let mut f = frame[..12].to_vec();
                f.extend_from_slice(&frame[gre + 2..gre + 4]);
                f.extend_from_slice(&frame[hl..]);
                f
            } else {
                frame[hl..].to_vec()
            };
            let (outer_ecn, inner_ecn) = (ecn_of(frame), ecn_of(&inner));
            if ecn::decap(outer_ecn, inner_ecn) != Ok(inner_ecn) {
                return TierVerdict::Miss;
            }
            *frame = inner;
        }
        let (port, e) = match &self.action {
            TierAction::Drop => return TierVerdict::Drop,
            TierAction::Output { port } => (*port, None),
            TierAction::Encap(e) => (e.uplink, Some(e)),
        };
        if let Some(e) = e {
            if frame.len() > e.max_frame as usize {
                return TierVerdict::Miss;
            }
        }
        if let Some(m) = self.set_eth_dst {
            frame[0..6].copy_from_slice(&m);
        }
        if let Some(m) = self.set_eth_src {
            frame[6..12].copy_from_slice(&m);
        }
        if let Some(e) = e {
            let outer = e.outer(frame, ident);
            let strip = if e.kind == TierTunnel::GreL3 { 14 } else { 0 };
            frame.splice(0..strip, outer[..e.header_len as usize].iter().copied());
        }
        TierVerdict::Send(port)
    }

    /// Adds what the tier did for this entry (`packets` frames of `bytes`
    /// bytes as received) to `c`, where the pipeline would have counted the
    /// same packets: `c` must be numbered by the entry's generation.
    /// For a decapsulated flow, `bytes` are the inner frames' bytes.
    pub fn count(&self, c: &WorkerCounters, packets: u64, bytes: u64) {
        c.rx.add(packets);
        let outer = self.decap.as_ref().map_or(0, |d| d.outer_len as u64);
        if let Some(p) = c.ports.get(self.in_port as usize) {
            p.rx.packets.add(packets);
            p.rx.bytes.add(bytes + packets * outer);
        }
        if let Some(t) = self.decap.as_ref().and_then(|d| c.tunnels.get(d.tunnel as usize)) {
            t.decap.packets.add(packets);
            t.decap.bytes.add(bytes);
        }
        if let Some(r) = c.rules.get(self.rule as usize) {
            r.packets.add(packets);
            r.bytes.add(bytes);
        }
        let (port, sent_bytes) = match &self.action {
            TierAction::Drop => {
                c.drops[encap::DropReason::RuleDrop as usize].add(packets);
                if let Some(t) = self.decap.as_ref().and_then(|d| c.tunnels.get(d.tunnel as usize))
                {
                    t.drops[encap::DropReason::RuleDrop as usize].add(packets);
                }
                return;
            }
            TierAction::Output { port } => (*port, bytes),
            TierAction::Encap(e) => {
                let strip = if e.kind == TierTunnel::GreL3 { 14 } else { 0 };
                let b = bytes + packets * e.header_len as u64 - packets * strip;
                if let Some(t) = c.tunnels.get(e.tunnel as usize) {
                    t.encap.packets.add(packets);
                    t.encap.bytes.add(b);
                }
                (e.uplink, b)
            }
        };
        c.tx.add(packets);
        if let Some(p) = c.ports.get(port as usize) {
            p.tx.packets.add(packets);
            p.tx.bytes.add(sent_bytes);
        }
    }
}

impl TierEncap {
    /// The outer header for `frame` (an untagged IPv4 or IPv6 frame, its
    /// MACs rewritten): its first `header_len` bytes.
    fn outer(&self, frame: &[u8], ident: u16) -> [u8; VXLAN6_HEADER_LEN] {
        let l3 = &frame[14..];
        let (tos, ttl, df) = if frame[12..14] == [0x08, 0x00] {
            (l3[1], l3[8], l3[6] & 0x40 != 0)
        } else {
            ((l3[0] << 4) | (l3[1] >> 4), l3[7], true)
        };
        let dscp = match self.dscp {
            DscpMode::Fixed(d) => d,
            DscpMode::Inherit => tos >> 2,
        };
        let tos = (dscp << 2) | ecn::encap(self.ecn, tos & 3);
        let ttl = match self.ttl {
            TtlMode::Fixed(t) => t,
            TtlMode::Inherit => ttl,
        };
        let len = self.header_len as usize;
        let mut h = self.header;
        // The hash the pipeline's template takes for this frame: the tier
        // keys only untagged IPv4/IPv6 TCP or UDP frames, which parse.
        let hash = InnerMeta::parse(frame).map_or(0, |m| m.hash);
        // What follows the header: the frame, or over L3 GRE its IP packet.
        let payload = match self.kind {
            TierTunnel::GreL3 => &frame[14..],
            _ => frame,
        };
        let l4 = if h[12..14] == [0x86, 0xdd] {
            let l4_len = (payload.len() + len - UDP6) as u16;
            h[IP] = 0x60 | (tos >> 4);
            h[IP + 1] = (tos << 4) | ((hash >> 16) & 0x0f) as u8;
            h[IP + 2..IP + 4].copy_from_slice(&(hash as u16).to_be_bytes());
            h[IP + 4..IP + 6].copy_from_slice(&l4_len.to_be_bytes());
            h[IP + 7] = ttl;
            UDP6
        } else {
            let df = match self.df {
                DfMode::Set => true,
                DfMode::Unset => false,
                DfMode::Inherit => df,
            };
            let total = (payload.len() + len - IP) as u16;
            let flags: u16 = if df { 0x4000 } else { 0 };
            h[IP + 1] = tos;
            h[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
            h[IP + 4..IP + 6].copy_from_slice(&ident.to_be_bytes());
            h[IP + 6..IP + 8].copy_from_slice(&flags.to_be_bytes());
            h[IP + 8] = ttl;
            let mut acc = checksum::add_u16(self.ip_sum as u32, tos as u16);
            acc = checksum::add_u16(acc, total);
            acc = checksum::add_u16(acc, ident);
            acc = checksum::add_u16(acc, flags);
            acc = checksum::add_u16(acc, (ttl as u16) << 8);
            h[IP + 10..IP + 12].copy_from_slice(&checksum::finish(acc).to_be_bytes());
            UDP
        };
        if self.kind != TierTunnel::Vxlan {
            // GRE: the protocol of an L3 tunnel is the frame's EtherType;
            // the checksum (if sent) covers the header and what follows.
            let mut acc = self.udp_sum.unwrap_or(0) as u32;
            if self.kind == TierTunnel::GreL3 {
                h[l4 + 2..l4 + 4].copy_from_slice(&frame[12..14]);
                acc = checksum::add(acc, &frame[12..14]);
            }
            if self.udp_sum.is_some() {
                acc = checksum::add(acc, payload);
                h[l4 + 4..l4 + 6].copy_from_slice(&checksum::finish(acc).to_be_bytes());
            }
            return h;
        }
        let l4_len = (payload.len() + len - l4) as u16;
        let sport = encap::inner::port_in_range(hash, self.sport_min, self.sport_max);
        h[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        h[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
        if let Some(sum) = self.udp_sum {
            // The length counts twice: in the pseudo-header and the UDP header.
            let mut acc = checksum::add_u16(sum as u32, sport);
            acc = checksum::add_u16(acc, l4_len);
            acc = checksum::add_u16(acc, l4_len);
            acc = checksum::add(acc, payload);
            let c = match checksum::finish(acc) {
                0 => 0xffff,
                c => c,
            };
            h[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        h
    }
}

/// A key as the XDP program builds it: the eight words in host order.
pub fn key_bytes(k: &FlowKey) -> [u8; WORDS * 8] {
    let mut b = [0u8; WORDS * 8];
    for (o, w) in b.chunks_exact_mut(8).zip(k.0) {
        o.copy_from_slice(&w.to_ne_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use encap::PacketBuf;

    use super::*;
    use crate::compile::compile;
    use crate::counters::Snapshot;
    use crate::flow_key::extract;
    use crate::model::Config;
    use crate::pipeline::{Outputs, Worker};
    use crate::trace::NoTrace;

    const BASE: &str = r#"
generation = 7

[[ports]]
name = "wl0"
kind = "workload"

[[ports]]
name = "wl1"
kind = "workload"

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "t4"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:00:20"
"#;

    /// A worker over BASE plus `extra` (tunnels, rules).
    fn worker(extra: &str) -> Worker {
        let c = Config::from_toml(&format!("{BASE}{extra}")).unwrap();
        Worker::new(Arc::new(compile(&c).unwrap()))
    }

    fn rule(m: &str, actions: &str) -> String {
        format!("[[rules]]\nid = 1\nmatch = {{ {m} }}\nactions = [{actions}]\n")
    }

    fn frame(spec: &str) -> Vec<u8> {
        crate::packet_spec::build(spec).unwrap()
    }

    const UDP4: &str = "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2,ttl=17,tos=185)/udp(sport=4000,dport=53)/hex(data=0102030405060708)";
    const TCP6: &str = "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv6(src=2001:db8::1,dst=2001:db8::2,hlim=9,tc=42)/tcp(sport=4000,dport=80)";

    /// The decision for the first frame of `spec` arriving on port 0.
    fn decide_for(w: &Worker, spec: &str) -> Result<TierEntry, NotInTier> {
        let (key, _) = extract(&frame(spec), 0, 0, 0);
        let f = w.rules().classifier.lookup(&key);
        decide(w, &key, f.rule.expect("a rule matches"))
    }

    /// Tunnel t4's addresses over IPv6 (BASE's IPv4 ones removed).
    const V6: &str = "local = \"2001:db8::1\"\nremote = \"2001:db8::2\"\n";

    /// A worker whose tunnel t4 has `extra` lines (`V6` first: over IPv6)
    /// and whose one rule encapsulates what wl0 sends.
    fn encap_worker(extra: &str) -> Worker {
        let conf = BASE.replace("vni = 42\n", &format!("vni = 42\n{extra}"));
        let conf = if extra.starts_with(V6) {
            conf.replace("local = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n", "")
        } else {
            conf
        };
        let c = Config::from_toml(&format!(
            "{conf}{}",
            rule("in_port = \"wl0\"", "{ encap = \"t4\" }")
        ));
        Worker::new(Arc::new(compile(&c.unwrap()).unwrap()))
    }

    /// GRE entries (gretap, NVGRE, L3; key and checksum options; IPv4 and
    /// IPv6 underlays) send what the pipeline sends, byte for byte.
    #[test]
    fn gre_entries_do_what_the_pipeline_does() {
        let kinds = [
            "type = \"gretap\"\n",
            "type = \"gretap\"\nkey = 7\n",
            "type = \"gretap\"\nkey = 7\ngre_checksum = true\nttl = \"inherit\"\n",
            "type = \"nvgre\"\nvsid = 5000\nflow_id = 3\ngre_checksum = true\n",
            "type = \"gre\"\n",
            "type = \"gre\"\nkey = 9\ngre_checksum = true\ndscp = \"inherit\"\n",
        ];
        let frames = [
            UDP4,
            TCP6,
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.3,tos=3,df=0)/udp(sport=7,dport=8)/hex(data=010203)",
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::3,tc=255)/tcp(sport=7,dport=8)/hex(data=ff)",
        ];
        for v6 in [false, true] {
            for k in kinds {
                let mut conf = BASE.replace("type = \"vxlan\"\n", k).replace("vni = 42\n", "");
                if v6 {
                    conf = conf.replace("local = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n", V6);
                }
                for actions in [
                    "{ encap = \"t4\" }",
                    "{ set_eth_dst = \"02:00:00:00:0c:01\" }, { encap = \"t4\" }",
                ] {
                    let c =
                        Config::from_toml(&format!("{conf}{}", rule("in_port = \"wl0\"", actions)))
                            .unwrap();
                    let mut w = Worker::new(Arc::new(compile(&c).unwrap()));
                    for spec in frames {
                        let f = frame(spec);
                        let e = decide_for(&w, spec).unwrap();
                        let TierAction::Encap(x) = &e.action else { panic!("{e:?}") };
                        assert_ne!(x.kind, TierTunnel::Vxlan, "{k}");
                        let (port, want) = pipeline(&mut w, &f).expect("the pipeline sends it");
                        let mut got = f.clone();
                        let ident = u16::from_be_bytes([want[18], want[19]]);
                        assert_eq!(e.apply(&mut got, ident), TierVerdict::Send(port), "{k} {spec}");
                        assert_eq!(hex(&got), hex(&want), "{k} v6={v6} {actions} {spec}");
                        // Counted where the pipeline counts it.
                        let tier = WorkerCounters::new(3, 1, 1);
                        e.count(&tier, 1, f.len() as u64);
                        let by_tier = Snapshot::sum([&tier]);
                        assert_eq!(by_tier.ports[2].1.bytes, want.len() as u64, "{k}");
                        assert_eq!(by_tier.tunnels[0].0.bytes, want.len() as u64, "{k}");
                    }
                }
            }
        }
    }

    /// A UDP checksum that computes to zero is sent as all ones, by the
    /// pipeline and the entry alike: the payload word that makes it so is
    /// the checksum sent for a zero word there (the sum grows by it).
    #[test]
    fn a_computed_zero_udp_checksum_is_sent_as_all_ones() {
        for t in [V6, "udp_checksum = true\n"] {
            let mut w = encap_worker(t);
            let spec = |word: u16| {
                format!("eth/ipv4(src=198.51.100.1,dst=198.51.100.3)/udp(sport=7,dport=8,csum=0)/hex(data={word:04x})")
            };
            let e = decide_for(&w, &spec(0)).unwrap();
            let (_, sent) = pipeline(&mut w, &frame(&spec(0))).unwrap();
            let u = if t == V6 { UDP6 } else { UDP };
            let c = u16::from_be_bytes([sent[u + 6], sent[u + 7]]);
            let f = frame(&spec(c));
            let (_, want) = pipeline(&mut w, &f).unwrap();
            assert_eq!(&want[u + 6..u + 8], &[0xff, 0xff], "{t}");
            let mut got = f.clone();
            let ident = u16::from_be_bytes([want[18], want[19]]);
            e.apply(&mut got, ident);
            assert_eq!(hex(&got), hex(&want), "{t}");
        }
    }

    /// What the pipeline sends for `f` on port 0: (port, frame), or None if dropped.
    fn pipeline(w: &mut Worker, f: &[u8]) -> Option<(u16, Vec<u8>)> {
        let mut buf = vec![0u8; 256 + 2048];
        buf[256..256 + f.len()].copy_from_slice(f);
        let pkt = PacketBuf::new(&mut buf, 256, f.len()).unwrap();
        let mut out = Outputs::new(w.rules().ports.len(), 4);
        let mut pool = || None;
        w.process(0, &mut vec![pkt], &mut pool, &mut out, 0, &mut NoTrace);
        out.ports
            .iter()
            .enumerate()
            .find_map(|(i, v)| v.first().map(|p| (i as u16, p.data().to_vec())))
    }

    #[test]
    fn expressible_flows_and_why_the_others_are_not() {
        use NotInTier::*;
        let cases: Vec<(String, &str, Result<(), NotInTier>)> = vec![
            (rule("in_port = \"wl0\"", "{ encap = \"t4\" }"), UDP4, Ok(())),
            (rule("in_port = \"wl0\"", "\"count\", { encap = \"t4\" }"), TCP6, Ok(())),
            (rule("in_port = \"wl0\"", "{ output = \"wl1\" }"), UDP4, Ok(())),
            (rule("in_port = \"wl0\"", "\"drop\", { push_vlan = 5 }"), UDP4, Ok(())),
            (rule("in_port = \"wl0\"", "{ output = \"wl0\" }"), UDP4, Err(SelfLoop)),
            (rule("in_port = \"wl0\"", "{ push_vlan = 5 }, \"drop\""), UDP4, Err(VlanAction)),
            (
                rule("in_port = \"wl0\"", "{ output = \"wl1\" }, { encap = \"t4\" }"),
                UDP4,
                Err(Replication),
            ),
            (rule("in_port = \"wl0\"", "{ forward_l2 = 42 }"), UDP4, Err(ForwardL2)),
            (
                rule("in_port = \"wl0\"", "{ output = \"wl1\" }") + "xdp_tier = \"off\"\n",
                UDP4,
                Err(RuleOptOut),
            ),
            (
                rule("in_port = \"wl0\"", "{ output = \"wl1\" }"),
                "eth/vlan(vid=3)/ipv4/udp",
                Err(NotTcpUdp),
            ),
            (rule("in_port = \"wl0\"", "{ output = \"wl1\" }"), "eth/ipv4/icmp", Err(NotTcpUdp)),
            (rule("in_port = \"wl0\"", "{ output = \"wl1\" }"), "eth/arp", Err(NotTcpUdp)),
        ];
        for (rules, spec, want) in cases {
            let w = worker(&rules);
            let got = decide_for(&w, spec).map(|_| ());
            assert_eq!(got, want, "{rules} {spec}");
        }
    }

    #[test]
    fn tunnels_the_tier_cannot_encapsulate_exactly() {
        use NotInTier::*;
        let tunnel = |extra: &str| {
            format!(
                "[[tunnels]]\nname = \"x\"\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.9\"\n{extra}\n{}",
                rule("in_port = \"wl0\"", "{ encap = \"x\" }")
            )
        };
        let cases = [
            ("type = \"vxlan\"\nvni = 5\nnext_hop_mac = \"02:00:00:00:00:21\"", Ok(())),
            ("type = \"vxlan\"\nvni = 5", Err(NoNextHop)),
            (
                "type = \"vxlan\"\nvni = 5\nnext_hop_mac = \"02:00:00:00:00:21\"\nudp_checksum = true",
                Ok(()),
            ),
            ("type = \"gretap\"\nkey = 5\nnext_hop_mac = \"02:00:00:00:00:21\"", Ok(())),
            (
                "type = \"gretap\"\nkey = 5\nnext_hop_mac = \"02:00:00:00:00:21\"\ngre_sequence = true",
                Err(GreSequence),
            ),
            ("type = \"geneve\"\nvni = 5\nnext_hop_mac = \"02:00:00:00:00:21\"", Err(GeneveEncap)),
        ];
        for (t, want) in cases {
            let w = worker(&tunnel(t));
            assert_eq!(decide_for(&w, UDP4).map(|_| ()), want, "{t}");
        }
        let v6 = "[[tunnels]]\nname = \"x\"\ntype = \"vxlan\"\nvni = 5\nuplink = \"up0\"\nlocal = \"2001:db8::1\"\nremote = \"2001:db8::9\"\nnext_hop_mac = \"02:00:00:00:00:21\"\n";
        let w = worker(&format!("{v6}{}", rule("in_port = \"wl0\"", "{ encap = \"x\" }")));
        let e = decide_for(&w, UDP4).expect("VXLAN over IPv6 is the tier's");
        let TierAction::Encap(x) = e.action else { panic!("{e:?}") };
        assert_eq!(x.header_len as usize, VXLAN6_HEADER_LEN);
        assert!(x.udp_sum.is_some(), "IPv6 always sends the UDP checksum");
    }

    /// The entry's action on a frame gives what the pipeline sends for it,
    /// byte for byte but for the outer IPv4 identification, which counts
    /// per worker there and per CPU in the tier.
    #[test]
    fn entries_do_what_the_pipeline_does() {
        let tunnels = [
            "",
            "df = \"inherit\"\nttl = \"inherit\"\ndscp = \"inherit\"\n",
            "df = \"unset\"\nttl = 3\ndscp = 10\necn = \"compat\"\nsrc_port_range = [1000, 1003]\n",
            "udp_checksum = true\nttl = \"inherit\"\n",
            V6,
            &format!("{V6}ttl = \"inherit\"\ndscp = \"inherit\"\n"),
            &format!("{V6}ttl = 3\ndscp = 10\necn = \"compat\"\nsrc_port_range = [1000, 1003]\n"),
        ];
        let frames = [
            UDP4,
            TCP6,
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.3,tos=3,df=0)/tcp(sport=1,dport=2)",
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.3)/udp(sport=65535,dport=0)/hex(data=00)",
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::3,tc=255)/udp(sport=9,dport=9)",
            // Odd lengths: the last byte of the UDP checksum's sum is padded.
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.3)/udp(sport=7,dport=8)/hex(data=010203)",
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::3)/tcp(sport=7,dport=8)/hex(data=ff)",
        ];
        for t in tunnels {
            let conf = BASE.replace("vni = 42\n", &format!("vni = 42\n{t}"));
            let conf = if t.starts_with(V6) {
                conf.replace("local = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n", "")
            } else {
                conf
            };
            for actions in [
                "{ encap = \"t4\" }",
                "{ set_eth_dst = \"02:00:00:00:0c:01\" }, { encap = \"t4\" }",
            ] {
                let c = Config::from_toml(&format!("{conf}{}", rule("in_port = \"wl0\"", actions)))
                    .unwrap();
                let mut w = Worker::new(Arc::new(compile(&c).unwrap()));
                for spec in frames {
                    let f = frame(spec);
                    let e = decide_for(&w, spec).unwrap();
                    assert_eq!(e.generation, 7);
                    let (port, want) = pipeline(&mut w, &f).expect("the pipeline sends it");
                    let mut got = f.clone();
                    let ident = u16::from_be_bytes([want[18], want[19]]);
                    assert_eq!(e.apply(&mut got, ident), TierVerdict::Send(port), "{t} {spec}");
                    assert_eq!(hex(&got), hex(&want), "{t} {actions} {spec}");
                }
            }
        }
    }

    /// One entry applied to frames of other flows of the same rule (other
    /// ports and addresses, IPv4 and IPv6 underlays, with and without the
    /// UDP checksum): each leaves with its own flow's source port, flow
    /// label and checksums, byte for byte what the pipeline sends for it.
    #[test]
    fn one_entry_serves_many_flows_as_the_pipeline_would() {
        let tunnels = [
            "",
            "udp_checksum = true
src_port_range = [1000, 1003]
",
            V6,
            &format!(
                "{V6}src_port_range = [40000, 40999]
"
            ),
        ];
        for t in tunnels {
            let mut w = encap_worker(t);
            let e = decide_for(&w, UDP4).unwrap();
            let mut sports = std::collections::BTreeSet::new();
            for i in 0..64u32 {
                let spec = match i % 3 {
                    0 => format!("eth/ipv4(src=198.51.100.1,dst=198.51.100.{})/udp(sport={},dport=53)/hex(data=0102)", i % 200, 1000 + i),
                    1 => format!("eth/ipv4(src=198.51.100.9,dst=198.51.100.2)/tcp(sport={},dport=80)", 7 * i),
                    _ => format!("eth/ipv6(src=2001:db8::1,dst=2001:db8::{})/udp(sport={i},dport=9)/hex(data=ff)", i + 1),
                };
                let f = frame(&spec);
                let (port, want) = pipeline(&mut w, &f).expect("the pipeline sends it");
                let mut got = f.clone();
                let ident = u16::from_be_bytes([want[18], want[19]]);
                assert_eq!(e.apply(&mut got, ident), TierVerdict::Send(port), "{t} {spec}");
                assert_eq!(hex(&got), hex(&want), "{t} {spec}");
                let udp = if t.starts_with(V6) { UDP6 } else { UDP };
                sports.insert(u16::from_be_bytes([got[udp], got[udp + 1]]));
            }
            assert!(sports.len() > 3, "{t}: the flows share source ports: {sports:?}");
        }
    }

    /// What the pipeline sends for `f` arriving on `port`: (port, frame).
    fn pipeline_on(w: &mut Worker, port: u16, f: &[u8]) -> Option<(u16, Vec<u8>)> {
        let mut buf = vec![0u8; 256 + 2048];
        buf[256..256 + f.len()].copy_from_slice(f);
        let pkt = PacketBuf::new(&mut buf, 256, f.len()).unwrap();
        let mut out = Outputs::new(w.rules().ports.len(), 4);
        let mut pool = || None;
        w.process(port, &mut vec![pkt], &mut pool, &mut out, 0, &mut NoTrace);
        out.ports
            .iter()
            .enumerate()
            .find_map(|(i, v)| v.first().map(|p| (i as u16, p.data().to_vec())))
    }

    const DECAP: &str = r#"
[[tunnels]]
name = "t6"
type = "vxlan"
uplink = "up0"
local = "2001:db8::1"
remote = "2001:db8::2"
vni = 43
next_hop_mac = "02:00:00:00:00:20"

[[rules]]
id = 1
match = { tunnel = "t4", ip_proto = 17 }
actions = [{ set_eth_src = "02:00:00:00:0c:01" }, { output = "wl0" }]

[[rules]]
id = 2
match = { tunnel = "t4", ip_proto = 6 }
actions = ["count", "drop"]

[[rules]]
id = 3
match = { tunnel = "t6" }
actions = [{ output = "wl1" }]

[decap]
accept_zero_checksum_v6 = true
"#;

    /// A VXLAN packet of tunnel t4 (`v6`: t6) carrying `inner`, its outer ECN `ecn`.
    fn tunnel_packet(v6: bool, ecn: u8, inner: &str) -> Vec<u8> {
        let outer = if v6 {
            format!("eth/ipv6(src=2001:db8::2,dst=2001:db8::1,tc={ecn})/udp(csum=0)/vxlan(vni=43)")
        } else {
            format!("eth/ipv4(src=192.0.2.2,dst=192.0.2.1,tos={ecn})/udp(csum=0)/vxlan(vni=42)")
        };
        frame(&format!("{outer}/{inner}"))
    }

    /// A decapsulated flow's entry does what the pipeline does to the
    /// tunnel packet, or leaves it to the engine where RFC 6040 changes the
    /// inner ECN field (a CE mark to carry, or a drop).
    #[test]
    fn decap_entries_do_what_the_pipeline_does() {
        let mut w = worker(DECAP);
        let inners = [
            "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2,tos=TOS)/udp(sport=4000,dport=53)/payload(len=20)",
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::2,tc=TOS)/udp(sport=7,dport=7)",
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2,tos=TOS)/tcp(sport=1,dport=2)",
        ];
        let (mut sent, mut left) = (0, 0);
        for v6 in [false, true] {
            for inner in inners {
                for (outer_ecn, inner_ecn) in (0..4).flat_map(|o| (0..4).map(move |i| (o, i))) {
                    let f = tunnel_packet(
                        v6,
                        outer_ecn,
                        &inner.replace("TOS", &(inner_ecn | 0x20).to_string()),
                    );
                    let (key, _) = {
                        let l = if v6 { VXLAN6_HEADER_LEN } else { VXLAN4_HEADER_LEN };
                        extract(&f[l..], 2, if v6 { 2 } else { 1 }, if v6 { 43 } else { 42 })
                    };
                    let rule = w.rules().classifier.lookup(&key).rule.expect("a rule");
                    let e = decide(&w, &key, rule).unwrap();
                    let d = e.decap.as_ref().expect("a decap entry");
                    assert_eq!(d.outer_len as usize, if v6 { 70 } else { 50 });
                    let by_pipeline = pipeline_on(&mut w, 2, &f);
                    let mut got = f.clone();
                    match (e.apply(&mut got, 0), by_pipeline) {
                        (TierVerdict::Send(p), Some((port, want))) => {
                            assert_eq!((p, hex(&got)), (port, hex(&want)), "{inner} {outer_ecn}");
                            sent += 1;
                        }
                        (TierVerdict::Drop, None) => assert_eq!(e.action, TierAction::Drop),
                        (TierVerdict::Miss, _) => {
                            assert_ne!(encap::ecn::decap(outer_ecn, inner_ecn), Ok(inner_ecn));
                            left += 1;
                        }
                        (v, p) => {
                            panic!("{inner} {outer_ecn}/{inner_ecn}: tier {v:?}, pipeline {p:?}")
                        }
                    }
                }
            }
        }
        // RFC 6040: CE over anything, and ECT(1) over ECT(0), change it.
        assert_eq!(left, 2 * 3 * 4);
        assert!(sent > 0);
    }

    /// The tier's decapsulated packets, counted by the entry, land where the
    /// pipeline counts the same packets (outer bytes on the uplink, inner
    /// ones for the tunnel, rule and output port).
    #[test]
    fn decap_counts_land_where_the_pipeline_counts() {
        for (v6, inner) in
            [(false, "eth/ipv4/udp"), (false, "eth/ipv4/tcp"), (true, "eth/ipv4/tcp")]
        {
            let mut w = worker(DECAP);
            let f = tunnel_packet(v6, 0, inner);
            let l = if v6 { VXLAN6_HEADER_LEN } else { VXLAN4_HEADER_LEN };
            let (key, _) = extract(&f[l..], 2, if v6 { 2 } else { 1 }, if v6 { 43 } else { 42 });
            let e = decide(&w, &key, w.rules().classifier.lookup(&key).rule.unwrap()).unwrap();
            pipeline_on(&mut w, 2, &f);
            pipeline_on(&mut w, 2, &f);
            let by_pipeline = Snapshot::sum([&*w.counters()]);
            let tier = WorkerCounters::new(3, 2, 3);
            e.count(&tier, 2, 2 * (f.len() - l) as u64);
            let by_tier = Snapshot::sum([&tier]);
            assert!(by_tier.conserved(), "{inner}");
            assert_eq!(by_tier.rx, by_pipeline.rx, "{inner}");
            assert_eq!(by_tier.tx, by_pipeline.tx, "{inner}");
            assert_eq!(by_tier.drops, by_pipeline.drops, "{inner}");
            assert_eq!(by_tier.ports, by_pipeline.ports, "{inner}");
            assert_eq!(by_tier.tunnels, by_pipeline.tunnels, "{inner}");
            assert_eq!(by_tier.rules, by_pipeline.rules, "{inner}");
        }
    }

    const GRE_DECAP: &str = r#"
[[tunnels]]
name = "g1"
type = "gretap"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.5"
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "g2"
type = "gretap"
key = 7
gre_checksum = true
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.6"
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "g3"
type = "nvgre"
vsid = 5000
flow_id = 3
uplink = "up0"
local = "2001:db8::1"
remote = "2001:db8::5"
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "g4"
type = "gre"
key = 9
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.7"
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "g5"
type = "gre"
gre_checksum = true
uplink = "up0"
local = "2001:db8::1"
remote = "2001:db8::7"
next_hop_mac = "02:00:00:00:00:20"

[[rules]]
id = 1
match = { tunnel = "g1" }
actions = [{ output = "wl0" }]

[[rules]]
id = 2
match = { tunnel = "g2", ip_proto = 17 }
actions = [{ set_eth_src = "02:00:00:00:0c:01" }, { output = "wl1" }]

[[rules]]
id = 3
match = { tunnel = "g2", ip_proto = 6 }
actions = ["count", "drop"]

[[rules]]
id = 4
match = { tunnel = "g3" }
actions = [{ output = "wl0" }]

[[rules]]
id = 5
match = { tunnel = "g4" }
actions = [{ set_eth_dst = "02:00:00:00:0c:02" }, { output = "wl0" }]

[[rules]]
id = 6
match = { tunnel = "g5" }
actions = [{ output = "wl1" }]
"#;

    /// GRE tunnel packets of each GRE_DECAP tunnel carrying `inner` (an
    /// Ethernet frame's spec; L3 tunnels carry its IP packet), outer ECN
    /// `ecn`.
    fn gre_packets(ecn: u8, inner: &str) -> Vec<(&'static str, Vec<u8>)> {
        let ip = inner.split_once('/').map_or(inner, |(_, ip)| ip);
        let v4 = |remote: &str| format!("eth/ipv4(src={remote},dst=192.0.2.1,tos={ecn})");
        let v6 = |remote: &str| format!("eth/ipv6(src={remote},dst=2001:db8::1,tc={ecn})");
        [
            ("g1", format!("{}/gre/{inner}", v4("192.0.2.5"))),
            ("g2", format!("{}/gre(key=7,csum=1)/{inner}", v4("192.0.2.6"))),
            ("g3", format!("{}/gre(key={})/{inner}", v6("2001:db8::5"), (5000 << 8) | 3)),
            ("g4", format!("{}/gre(key=9)/{ip}", v4("192.0.2.7"))),
            ("g5", format!("{}/gre(csum=1)/{ip}", v6("2001:db8::7"))),
        ]
        .into_iter()
        .map(|(t, spec)| (t, frame(&spec)))
        .collect()
    }

    /// The flow key the engine builds for tunnel packet `f` on the uplink
    /// (port 2): decapsulated by the engine's own code.
    fn decap_key(w: &Worker, f: &[u8]) -> FlowKey {
        let mut buf = f.to_vec();
        let n = buf.len();
        let mut pkt = PacketBuf::new(&mut buf, 0, n).unwrap();
        let d = encap::decap(&w.rules().decap, &mut pkt).expect("a valid tunnel packet");
        let tn = w.rules().decap_index[&(d.local, d.remote, d.tunnel)];
        let id = match d.tunnel {
            encap::TunnelId::Gre { key } => key.unwrap_or(0),
            encap::TunnelId::Vxlan { vni } | encap::TunnelId::Geneve { vni } => vni,
        };
        extract(pkt.data(), 2, tn + 1, id).0
    }

    /// A GRE-decapsulated flow's entry (gretap, NVGRE, L3 GRE; with and
    /// without key and checksum; IPv4 and IPv6 underlays) does what the
    /// pipeline does to the tunnel packet, byte for byte, or leaves it to
    /// the engine where RFC 6040 changes the inner ECN field.
    #[test]
    fn gre_decap_entries_do_what_the_pipeline_does() {
        let mut w = worker(GRE_DECAP);
        let inners = [
            "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2,tos=TOS)/udp(sport=4000,dport=53)/payload(len=21)",
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::2,tc=TOS)/udp(sport=7,dport=7)",
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2,tos=TOS)/tcp(sport=1,dport=2)",
        ];
        let (mut sent, mut dropped, mut left) = (0, 0, 0);
        for inner in inners {
            for (outer_ecn, inner_ecn) in (0..4).flat_map(|o| (0..4).map(move |i| (o, i))) {
                let inner = inner.replace("TOS", &(inner_ecn | 0x20).to_string());
                // (Keyed from the same packets with outer ECN 0: the
                // engine's decapsulation refuses CE over Not-ECT.)
                let plain = gre_packets(0, &inner);
                for ((t, f), (_, p)) in gre_packets(outer_ecn, &inner).into_iter().zip(plain) {
                    let key = decap_key(&w, &p);
                    let rule = w.rules().classifier.lookup(&key).rule.expect("a rule");
                    let e = decide(&w, &key, rule).unwrap_or_else(|r| panic!("{t}: {r:?}"));
                    let d = e.decap.as_ref().expect("a decap entry");
                    assert_ne!(d.kind, TierTunnel::Vxlan);
                    let by_pipeline = pipeline_on(&mut w, 2, &f);
                    let mut got = f.clone();
                    match (e.apply(&mut got, 0), by_pipeline) {
                        (TierVerdict::Send(p), Some((port, want))) => {
                            assert_eq!((p, hex(&got)), (port, hex(&want)), "{t} {inner}");
                            // What the counts assume: the outer length.
                            assert_eq!(f.len() - got.len(), d.outer_len as usize, "{t}");
                            sent += 1;
                        }
                        (TierVerdict::Drop, None) => {
                            assert_eq!(e.action, TierAction::Drop);
                            dropped += 1;
                        }
                        (TierVerdict::Miss, _) => {
                            assert_eq!(got, f, "{t}: a miss leaves the packet unchanged");
                            assert_ne!(encap::ecn::decap(outer_ecn, inner_ecn), Ok(inner_ecn));
                            left += 1;
                        }
                        (v, p) => panic!("{t} {inner}: tier {v:?}, pipeline {p:?}"),
                    }
                }
            }
        }
        // RFC 6040: CE over anything, and ECT(1) over ECT(0), change it.
        assert_eq!(left, 3 * 4 * 5);
        assert!(sent > 0 && dropped > 0);
    }

    /// The tier's GRE-decapsulated packets, counted by the entry, land
    /// where the pipeline counts the same packets.
    #[test]
    fn gre_decap_counts_land_where_the_pipeline_counts() {
        let inner = "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=4000,dport=53)/payload(len=33)";
        for (t, f) in gre_packets(0, inner) {
            let mut w = worker(GRE_DECAP);
            let key = decap_key(&w, &f);
            let e = decide(&w, &key, w.rules().classifier.lookup(&key).rule.unwrap()).unwrap();
            let mut inner_frame = f.clone();
            assert!(matches!(e.apply(&mut inner_frame, 0), TierVerdict::Send(_)), "{t}");
            pipeline_on(&mut w, 2, &f);
            pipeline_on(&mut w, 2, &f);
            let by_pipeline = Snapshot::sum([&*w.counters()]);
            let tier = WorkerCounters::new(3, 6, 6);
            e.count(&tier, 2, 2 * inner_frame.len() as u64);
            let by_tier = Snapshot::sum([&tier]);
            assert!(by_tier.conserved(), "{t}");
            assert_eq!(by_tier.rx, by_pipeline.rx, "{t}");
            assert_eq!(by_tier.tx, by_pipeline.tx, "{t}");
            assert_eq!(by_tier.drops, by_pipeline.drops, "{t}");
            assert_eq!(by_tier.ports, by_pipeline.ports, "{t}");
            assert_eq!(by_tier.tunnels, by_pipeline.tunnels, "{t}");
            assert_eq!(by_tier.rules, by_pipeline.rules, "{t}");
        }
    }

    #[test]
    fn decapsulated_flows_the_tier_leaves_to_the_engine() {
        let w = worker(
            "[[tunnels]]\nname = \"g\"\ntype = \"geneve\"\nvni = 5\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.7\"\nnext_hop_mac = \"02:00:00:00:00:21\"\n\
             [[rules]]\nid = 1\nmatch = { tunnel = \"g\" }\nactions = [{ output = \"wl0\" }]\n\
             [[rules]]\nid = 2\nmatch = { tunnel = \"t4\" }\nactions = [{ encap = \"g\" }]\n",
        );
        let (key, _) = extract(&frame(UDP4), 2, 2, 5);
        assert_eq!(decide(&w, &key, 0).map(|_| ()), Err(NotInTier::Decapsulated));
        let (key, _) = extract(&frame(UDP4), 2, 1, 42);
        assert_eq!(decide(&w, &key, 1).map(|_| ()), Err(NotInTier::DecapEncap));
    }

    #[test]
    fn output_and_drop_entries() {
        let w = worker(&rule(
            "in_port = \"wl0\"",
            "{ set_eth_src = \"02:00:00:00:0c:01\" }, { output = \"wl1\" }",
        ));
        let e = decide_for(&w, UDP4).unwrap();
        let mut w = w;
        let f = frame(UDP4);
        let (port, want) = pipeline(&mut w, &f).unwrap();
        let mut got = f.clone();
        assert_eq!(e.apply(&mut got, 0), TierVerdict::Send(port));
        assert_eq!(got, want);

        let w =
            worker(&rule("in_port = \"wl0\"", "{ set_eth_src = \"02:00:00:00:0c:01\" }, \"drop\""));
        let e = decide_for(&w, UDP4).unwrap();
        assert_eq!(e.action, TierAction::Drop);
        assert_eq!(e.apply(&mut frame(UDP4), 0), TierVerdict::Drop);
    }

    /// A frame longer than the tunnel's MTU allows stays with the engine,
    /// which drops it as `mtu_exceeded` and answers ICMP; one byte shorter
    /// is the tier's.
    #[test]
    fn frames_over_the_mtu_leave_the_tier() {
        let conf = BASE.replace("vni = 42\n", "vni = 42\nmtu = 600\n");
        let c = Config::from_toml(&format!(
            "{conf}{}",
            rule("in_port = \"wl0\"", "{ encap = \"t4\" }")
        ))
        .unwrap();
        let mut w = Worker::new(Arc::new(compile(&c).unwrap()));
        let e = decide_for(&w, UDP4).unwrap();
        let TierAction::Encap(enc) = &e.action else { panic!("{e:?}") };
        assert_eq!(enc.max_frame, 600 - 36);
        for len in [enc.max_frame as usize, enc.max_frame as usize + 1] {
            let mut f = frame(UDP4);
            f.resize(len, 0);
            let sent = pipeline(&mut w, &f);
            let v = e.apply(&mut f.clone(), 1);
            match sent {
                Some(_) => assert_eq!(v, TierVerdict::Send(2), "len {len}"),
                None => assert_eq!(v, TierVerdict::Miss, "len {len}"),
            }
        }
        let s = Snapshot::sum([&*w.counters()]);
        assert_eq!(s.drop_count(encap::DropReason::MtuExceeded), 1);
    }

    /// The tier's packets, counted by the entry, land where the pipeline
    /// counts the same packets.
    #[test]
    fn counts_land_where_the_pipeline_counts() {
        for actions in ["{ encap = \"t4\" }", "{ output = \"wl1\" }", "\"drop\""] {
            let mut w = worker(&rule("in_port = \"wl0\"", actions));
            let e = decide_for(&w, UDP4).unwrap();
            let f = frame(UDP4);
            pipeline(&mut w, &f);
            pipeline(&mut w, &f);
            let by_pipeline = Snapshot::sum([&*w.counters()]);
            let tier = WorkerCounters::new(3, 1, 1);
            e.count(&tier, 2, 2 * f.len() as u64);
            let by_tier = Snapshot::sum([&tier]);
            assert!(by_tier.conserved(), "{actions}");
            assert_eq!(by_tier.rx, by_pipeline.rx, "{actions}");
            assert_eq!(by_tier.tx, by_pipeline.tx, "{actions}");
            assert_eq!(by_tier.drops, by_pipeline.drops, "{actions}");
            assert_eq!(by_tier.ports, by_pipeline.ports, "{actions}");
            assert_eq!(by_tier.tunnels, by_pipeline.tunnels, "{actions}");
            assert_eq!(by_tier.rules, by_pipeline.rules, "{actions}");
        }
        // Over IPv6 the outer header is 70 bytes.
        let mut w = encap_worker(V6);
        let e = decide_for(&w, UDP4).unwrap();
        let f = frame(UDP4);
        pipeline(&mut w, &f);
        let by_pipeline = Snapshot::sum([&*w.counters()]);
        let tier = WorkerCounters::new(3, 1, 1);
        e.count(&tier, 1, f.len() as u64);
        let by_tier = Snapshot::sum([&tier]);
        assert_eq!(by_tier.ports, by_pipeline.ports);
        assert_eq!(by_tier.tunnels, by_pipeline.tunnels);
    }

    #[test]
    fn the_pipeline_records_first_packets_only_when_asked() {
        let mut w = worker(&rule("in_port = \"wl0\"", "{ output = \"wl1\" }"));
        let decided = |w: &mut Worker| {
            let mut v = Vec::new();
            w.drain_decided(|_, k, r| v.push((*k, r)));
            v
        };
        let f = frame(UDP4);
        pipeline(&mut w, &f);
        assert!(decided(&mut w).is_empty(), "nothing recorded by default");
        w.record_decided(2);
        let other = frame(&UDP4.replace("sport=4000", "sport=4001"));
        let third = frame(&UDP4.replace("sport=4000", "sport=4002"));
        let fourth = frame(&UDP4.replace("sport=4000", "sport=4003"));
        for f in [&f, &f, &other, &third, &fourth] {
            pipeline(&mut w, f);
        }
        let key = |f: &[u8]| extract(f, 0, 0, 0).0;
        assert_eq!(
            decided(&mut w),
            vec![(key(&other), 0), (key(&third), 0)],
            "cache hits are not recorded, and at most 2"
        );
        assert!(decided(&mut w).is_empty(), "drained");
    }

    #[test]
    fn key_bytes_are_the_words_in_host_order() {
        let k = FlowKey([1, 2, 3, 4, 5, 6, 7, 0x0102_0304_0506_0708]);
        let b = key_bytes(&k);
        assert_eq!(&b[56..], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&b[..8], &1u64.to_ne_bytes());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
