//! The XDP fast tier's maps and their one owner.
//!
//! The engine decides the first packet of every flow; a worker hands the
//! entries the engine says the tier can take ([`engine::tier::decide`]) to
//! the owner through a bounded queue ([`TierLink`]: no system call, lock or
//! allocation in the worker). The owner ([`Tier`], one thread per datapath)
//! installs them in the ingress port's program, each in a slot of its own
//! (its entry in `tier_entries`, its counters in `tier_counts`, per CPU)
//! found through `tier_flows`, a hash table from [`tier_hash`] of the
//! entry's masked key to the slot; harvests those counters into the engine's
//! counters where the pipeline would have counted the same packets, and
//! retires entries: when the rule set changes, when a tunnel's next hop
//! changes, when an output port stops taking redirected frames, and when a
//! flow has been idle for [`IDLE`]. Whatever it cannot install is left on
//! AF_XDP and counted under a named reason; nothing is dropped because of
//! the tier.
//!
//! **Generations.** Every entry carries the generation of the rule set it
//! was decided under; the program ignores an entry whose generation is not
//! the one in `tier_gen`. The daemon's commit path publishes a new rule set
//! and then, before the API answers, writes its generation into every
//! program's `tier_gen` ([`TierGenerations::publish`], called through the
//! daemon's publish hook). That write is atomic: the value is one aligned
//! 64-bit word of an array map, which the kernel updates in place with a
//! single store, and the program reads it with a single load, so a packet
//! sees either the old generation or the new one, never a mix; once the
//! system call returns, every lookup that starts sees the new one. So after
//! the 2xx, no frame that arrives is forwarded by an entry of an older rule
//! set (a frame the program judged a moment before the write may still be
//! on its way out of the same NAPI poll, as a frame in a worker's batch may
//! be). A worker that is still on the old rule set may install an entry of
//! the old generation afterwards: the program ignores it.
//!
//! **Per-CPU copies.** Each program keeps per-CPU copies of the entries it
//! hits (`tier_cache`), each stamped with `tier_epoch` as it was when the
//! program read it, before looking in `tier_flows`. The owner moves
//! `tier_epoch` on after every delete and overwrite
//! ([`TierMaps::delete`], [`TierMaps::overwrite`]), so a copy stops being
//! used as the entry does: a run that read the epoch before the write may
//! still use it, as a run that found the entry before the delete may.
//!
//! **Room.** Only the owner removes entries (idle or retired): the table
//! is a plain hash the size of the owner's slots, so an entry it installed
//! stays until it deletes it. (An LRU map evicted live entries before it
//! was full, and could not tell busy ones, whose hits the per-CPU copies
//! serve.)
//!
//! **Slots.** The entries live in an array by slot, not in the hash table:
//! the kernel reuses a hash element as soon as it is deleted or replaced,
//! so a program run that found an entry there just before the owner
//! removed it could read it half overwritten by the next. A slot is
//! written only once it has been free for [`GRACE`] (as its counters are
//! reused), or in place with nothing but a new generation (adoption), so a
//! run reads either the entry it found or, past a deleted hash, another
//! flow's entry that its own key check refuses.
//!
//! **Counting.** An entry's counters live apart from the entry, in the
//! slot the owner gave it. A retired entry is deleted first and harvested
//! for the last time after [`GRACE`], longer than any program run that
//! found the entry before the delete takes (one NAPI poll, microseconds);
//! only then is its slot reused. Counters are harvested every [`TICK`] and
//! whenever someone reads the counters (the counter board's refresh), so
//! `counters` is exact once traffic stops, and the conservation identity
//! holds across both tiers.
//!
//! **Output ports.** The owner asks the kernel every [`PROBE_EVERY`]
//! whether each output port's driver takes redirected frames
//! (`ndo_xdp_xmit`). A veth takes them only while its peer has NAPI (an XDP
//! program, or GRO on); if the peer loses it, frames the tier redirects
//! there are dropped by the kernel until the next probe retires the port's
//! entries: a window of at most a second, on veths whose far end changes
//! its settings. A port whose MTU changes has its entries retired likewise.

use std::collections::{BTreeMap, HashMap as StdHashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Array, DevMap, HashMap, MapData, PerCpuArray};
use aya::Ebpf;
use encap::{DfMode, DscpMode, EcnMode, TtlMode};
use engine::compile::RuleSet;
use engine::counters::WorkerCounters;
use engine::flow_key::field;
use engine::flow_key::{v4_mapped, FlowKey, WORDS};
use engine::next_hop::NextHops;
use engine::pipeline::Published;
use engine::tier::{
    NotInTier, TierAction, TierDecap, TierEncap, TierEntry, TierTunnel, VXLAN6_HEADER_LEN,
};
use serde::{Deserialize, Serialize};

use super::map_batch::PerCpuPairs;
use super::netdev;
use super::pin::PinMeta;
use engine::counters::CounterBoard;

/// How often the owner harvests counters and looks for stale entries.
pub const TICK: Duration = Duration::from_millis(200);
/// How long a deleted entry's counters wait for their last harvest.
pub const GRACE: Duration = Duration::from_millis(50);
/// An entry whose counters have not moved for this long is removed.
pub const IDLE: Duration = Duration::from_secs(10);
/// How often output ports are asked whether they take redirected frames.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Entries waiting for the owner; beyond, offers are refused (and counted).
pub const QUEUE: usize = 4096;
/// Ports the program's devmap (`tier_tx`) holds: port numbers below this.
const MAX_TX_PORTS: u16 = 64;

// Actions and flags of `struct tier_entry` (steer.bpf.c).
const TIER_OUTPUT: u8 = 1;
const TIER_ENCAP: u8 = 2;
const TIER_DROP: u8 = 3;
const TF_SET_SRC: u8 = 0x01;
const TF_SET_DST: u8 = 0x02;
const TF_DF_SET: u8 = 0x04;
const TF_DF_INHERIT: u8 = 0x08;
const TF_TTL_INHERIT: u8 = 0x10;
const TF_DSCP_INHERIT: u8 = 0x20;
const TF_ECN_COPY: u8 = 0x40;
const TF_UDP_CSUM: u8 = 0x80;
// Checks of `struct tier_entry`.
const CHECK_SETTLE: u8 = 0x01;

/// `struct tier_entry` of the C program, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierValue {
    pub generation: u64,
    pub slot: u32,
    pub tx_port: u32,
    pub max_len: u16,
    pub action: u8,
    pub flags: u8,
    pub ttl: u8,
    pub dscp: u8,
    pub ip_sum: u16,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// The outer header: its first `hdr_len` bytes.
    pub hdr: [u8; VXLAN6_HEADER_LEN],
    /// The entry's tunnel and rule (read only by an owner adopting it).
    pub tunnel: u16,
    pub rule: u32,
    /// With `TF_UDP_CSUM`: the UDP checksum's constant words, folded.
    pub udp_sum: u16,
    pub hdr_len: u8,
    /// `CHECK_SETTLE`: a decapsulated flow sent to a workload, whose
    /// checksum the program verifies as the software path settles it.
    pub checks: u8,
    /// The tunnel protocol of an encapsulation (`TierTunnel`).
    pub kind: u8,
    pub pad2: u8,
    /// VXLAN: the range the program maps each packet's flow hash into.
    pub sport_min: u16,
    pub sport_max: u16,
    pub pad3: [u8; 6],
    /// The bits of the key the entry's decision depended on (its mask).
    pub mask: [u64; WORDS],
    /// Its key (masked), which `tier_flows` holds it under as [`tier_hash`].
    pub key: [u64; WORDS],
}

/// `struct tier_mask` of the C program: one mask entries are keyed under.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierMask {
    pub w: [u64; WORDS],
    /// 0: this slot and every later one are unused.
    pub live: u64,
}

// SAFETY: nine u64s with the C layout, no padding.
unsafe impl aya::Pod for TierMask {}

/// Slots of `tier_masks` (`TIER_MASKS` in steer.bpf.c).
pub const TIER_MASKS: u32 = 16;

// SAFETY: integers and byte arrays with the C layout; the explicit `pad`
// leaves no implicit padding, so every byte the kernel copies is defined.
unsafe impl aya::Pod for TierValue {}

/// `struct tier_tunnel_key` of the C program: outer destination and source
/// (IPv4 as ::ffff:a.b.c.d), VNI or GRE key, UDP destination port (host
/// order; 0 for GRE), and which of VXLAN, keyless GRE and keyed GRE.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelKey {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub vni: u32,
    pub port: u16,
    pub kind: u16,
}

// Kinds of `struct tier_tunnel_key`.
const TK_VXLAN: u16 = 0;
const TK_GRE: u16 = 1;
const TK_GRE_KEY: u16 = 2;

// SAFETY: byte arrays and integers with the C layout, explicit padding.
unsafe impl aya::Pod for TunnelKey {}

/// `struct tier_tunnel` of the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelValue {
    pub generation: u64,
    /// The flow key's tunnel field: index + 1.
    pub tag: u16,
    pub flags: u16,
    pub pad: u32,
}

// SAFETY: integers with the C layout, explicit padding.
unsafe impl aya::Pod for TunnelValue {}

// Flags of `struct tier_tunnel`: the engine's checksum policy, and what a
// GRE tunnel's packets carry.
const TT_V4_CSUM_UNCHECKED: u16 = 0x01;
const TT_V6_ZERO_OK: u16 = 0x02;
const TT_GRE_CSUM: u16 = 0x04;
const TT_GRE_VERIFY: u16 = 0x08;
const TT_GRE_L3: u16 = 0x10;

/// The tunnel map's entries for a decapsulated flow's tunnel under `rs`:
/// for VXLAN one per UDP port the engine decapsulates VXLAN from, for GRE
/// one.
pub fn tunnel_entries(rs: &RuleSet, d: &TierDecap) -> Vec<(TunnelKey, TunnelValue)> {
    let addr = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => v4_mapped(a.octets()),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let mut flags = 0;
    if !rs.decap.verify_udp_checksum_v4 {
        flags |= TT_V4_CSUM_UNCHECKED;
    }
    if rs.decap.accept_zero_checksum_v6 {
        flags |= TT_V6_ZERO_OK;
    }
    let key = |port, kind| TunnelKey {
        local: addr(d.local),
        remote: addr(d.remote),
        vni: d.vni,
        port,
        kind,
    };
    if d.kind != TierTunnel::Vxlan {
        if d.gre_checksum {
            flags |= TT_GRE_CSUM;
        }
        if rs.decap.verify_gre_checksum {
            flags |= TT_GRE_VERIFY;
        }
        if d.kind == TierTunnel::GreL3 {
            flags |= TT_GRE_L3;
        }
        let value = TunnelValue { generation: rs.generation, tag: d.tunnel + 1, flags, pad: 0 };
        let kind = if d.gre_key { TK_GRE_KEY } else { TK_GRE };
        return vec![(key(0, kind), value)];
    }
    let value = TunnelValue { generation: rs.generation, tag: d.tunnel + 1, flags, pad: 0 };
    rs.decap.vxlan_ports.iter().map(|&port| (key(port, TK_VXLAN), value)).collect()
}

/// `struct tier_count` of the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierCount {
    pub packets: u64,
    pub bytes: u64,
}

// SAFETY: two integers with the C layout, no padding.
unsafe impl aya::Pod for TierCount {}

impl TierValue {
    /// Every field zero: no action the program takes (a base for the
    /// fields an entry sets).
    pub fn zeroed() -> TierValue {
        TierValue {
            generation: 0,
            slot: 0,
            tx_port: 0,
            max_len: 0,
            action: 0,
            flags: 0,
            ttl: 0,
            dscp: 0,
            ip_sum: 0,
            eth_dst: [0; 6],
            eth_src: [0; 6],
            hdr: [0; VXLAN6_HEADER_LEN],
            tunnel: 0,
            rule: 0,
            udp_sum: 0,
            hdr_len: 0,
            checks: 0,
            kind: 0,
            pad2: 0,
            sport_min: 0,
            sport_max: 0,
            pad3: [0; 6],
            mask: [0; WORDS],
            key: [0; WORDS],
        }
    }

    /// The program's form of `e`: counters in `slot`, output through
    /// `tx_port` of the devmap, frames longer than `max_len` left to AF_XDP.
    pub fn new(e: &TierEntry, slot: u32, tx_port: u16, max_len: u16) -> TierValue {
        let mut v = TierValue {
            generation: e.generation,
            slot,
            tx_port: tx_port as u32,
            max_len,
            action: TIER_DROP,
            eth_dst: e.set_eth_dst.unwrap_or_default(),
            eth_src: e.set_eth_src.unwrap_or_default(),
            rule: e.rule,
            mask: e.mask.0,
            key: e.key.0,
            ..TierValue::zeroed()
        };
        if e.set_eth_src.is_some() {
            v.flags |= TF_SET_SRC;
        }
        if e.set_eth_dst.is_some() {
            v.flags |= TF_SET_DST;
        }
        match &e.action {
            TierAction::Drop => {}
            TierAction::Output { .. } => v.action = TIER_OUTPUT,
            TierAction::Encap(x) => {
                v.action = TIER_ENCAP;
                v.tunnel = x.tunnel;
                v.hdr = x.header;
                v.hdr_len = x.header_len;
                v.kind = x.kind as u8;
                v.sport_min = x.sport_min;
                v.sport_max = x.sport_max;
                v.ip_sum = x.ip_sum;
                if let Some(sum) = x.udp_sum {
                    v.flags |= TF_UDP_CSUM;
                    v.udp_sum = sum;
                }
                v.flags |= match x.df {
                    DfMode::Set => TF_DF_SET,
                    DfMode::Unset => 0,
                    DfMode::Inherit => TF_DF_INHERIT,
                };
                match x.ttl {
                    TtlMode::Fixed(t) => v.ttl = t,
                    TtlMode::Inherit => v.flags |= TF_TTL_INHERIT,
                }
                match x.dscp {
                    DscpMode::Fixed(d) => v.dscp = d,
                    DscpMode::Inherit => v.flags |= TF_DSCP_INHERIT,
                }
                if x.ecn == EcnMode::Normal {
                    v.flags |= TF_ECN_COPY;
                }
            }
        }
        v
    }

    /// The engine's entry this value was made from, under `rs` (the rule
    /// set it was decided under, or one with the same content) for `key`;
    /// `None` if `rs` cannot have produced it.
    pub fn entry(&self, key: FlowKey, rs: &RuleSet) -> Option<TierEntry> {
        rs.rules.get(self.rule as usize)?;
        let decap = engine::tier::decap_of(rs, &key);
        if key.get(field::TUNNEL) != 0 && decap.is_none() {
            return None;
        }
        let has = |f: u8| self.flags & f != 0;
        let action = match self.action {
            TIER_DROP => TierAction::Drop,
            TIER_OUTPUT => TierAction::Output { port: self.tx_port as u16 },
            TIER_ENCAP => {
                let t = rs.tunnels.get(self.tunnel as usize)?;
                if t.uplink as u32 != self.tx_port {
                    return None;
                }
                TierAction::Encap(TierEncap {
                    tunnel: self.tunnel,
                    uplink: t.uplink,
                    kind: match self.kind {
                        0 => TierTunnel::Vxlan,
                        1 => TierTunnel::GreTap,
                        2 => TierTunnel::GreL3,
                        _ => return None,
                    },
                    header: self.hdr,
                    header_len: self.hdr_len,
                    ip_sum: self.ip_sum,
                    udp_sum: has(TF_UDP_CSUM).then_some(self.udp_sum),
                    sport_min: self.sport_min,
                    sport_max: self.sport_max,
                    df: if has(TF_DF_INHERIT) {
                        DfMode::Inherit
                    } else if has(TF_DF_SET) {
                        DfMode::Set
                    } else {
                        DfMode::Unset
                    },
                    ttl: if has(TF_TTL_INHERIT) {
                        TtlMode::Inherit
                    } else {
                        TtlMode::Fixed(self.ttl)
                    },
                    dscp: if has(TF_DSCP_INHERIT) {
                        DscpMode::Inherit
                    } else {
                        DscpMode::Fixed(self.dscp)
                    },
                    ecn: if has(TF_ECN_COPY) { EcnMode::Normal } else { EcnMode::Compat },
                    max_frame: self.max_len,
                    remote: t.remote,
                    static_next_hop: t.static_next_hop,
                })
            }
            _ => return None,
        };
        Some(TierEntry {
            generation: self.generation,
            key,
            mask: FlowKey(self.mask),
            in_port: key.get(field::IN_PORT) as u16,
            rule: self.rule,
            set_eth_src: has(TF_SET_SRC).then_some(self.eth_src),
            set_eth_dst: has(TF_SET_DST).then_some(self.eth_dst),
            action,
            decap,
        })
    }
}

/// What the rule set `rs` decides, as one number: two rule sets with the
/// same configuration (whatever their generation) have the same one. A
/// restarted owner adopts pinned entries only under the rule set they were
/// decided under (see [`Tier::start`]).
pub fn fingerprint(rs: &RuleSet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut c = rs.config.clone();
    c.generation = 0;
    // SipHash with fixed keys: the same in every process of this binary.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&c).unwrap_or_default().hash(&mut h);
    h.finish().max(1)
}

/// The key `tier_flows` holds the entry of (masked) key `key` under: the
/// program's `tier_hash` (steer.bpf.c), word for word. A sum of one
/// multiply-xorshift per word, each a bijection of its word: keys that
/// differ in one word never collide. Two keys of one hash cost the second
/// its place in the tier (`hash_collision`), never a wrong hit: the entry
/// holds its key, which the program checks on every hit.
pub fn tier_hash(key: &[u64; WORDS]) -> u64 {
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    const STEP: u64 = 0x5851_f42d_4c95_7f2d;
    key.iter().enumerate().fold(0u64, |h, (j, &w)| {
        let x = w.wrapping_add((j as u64 + 1).wrapping_mul(STEP)).wrapping_mul(MUL);
        h.wrapping_add(x ^ (x >> 32))
    })
}

/// The Rust twin of the program's key: the engine's flow key of `frame`
/// arriving on `in_port`, for exactly the frames the program builds a key
/// of (untagged Ethernet; IPv4 without options and not a fragment, or IPv6
/// whose next header is TCP or UDP; TCP or UDP with both ports present);
/// `None` for every other frame, which the program leaves to AF_XDP.
pub fn tier_key(frame: &[u8], in_port: u16) -> Option<FlowKey> {
    let eth = frame.get(..14)?;
    let et = u16::from_be_bytes([eth[12], eth[13]]);
    let mac = |b: &[u8]| u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    let mut k = FlowKey::default();
    k.0[0] = (in_port as u64) << 48;
    k.0[1] = mac(&eth[0..6]) << 16;
    k.0[2] = (mac(&eth[6..12]) << 16) | et as u64;
    let (proto, l4) = match et {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ip[0] != 0x45 || frag {
                return None;
            }
            k.set_ip_src(v4_mapped(ip[12..16].try_into().unwrap()));
            k.set_ip_dst(v4_mapped(ip[16..20].try_into().unwrap()));
            (ip[9], 34)
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            k.set_ip_src(ip[8..24].try_into().unwrap());
            k.set_ip_dst(ip[24..40].try_into().unwrap());
            (ip[6], 54)
        }
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    // Through the checksum field, which the program must read (a partial
    // checksum stays with the software path).
    let csum_end = l4 + if proto == 6 { 18 } else { 8 };
    frame.get(..csum_end)?;
    let p = frame.get(l4..l4 + 4)?;
    k.0[7] = ((proto as u64) << 56)
        | ((u16::from_be_bytes([p[0], p[1]]) as u64) << 40)
        | ((u16::from_be_bytes([p[2], p[3]]) as u64) << 24);
    Some(k)
}

/// The program's tier counts on one port, summed over CPUs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct TierProgramStats {
    /// Frames an entry handled.
    pub hit: u64,
    /// Frames with a tier key and no entry (to AF_XDP).
    pub miss: u64,
    /// Frames whose entry is of an older generation (to AF_XDP).
    pub stale: u64,
    /// Frames longer than their entry handles (to AF_XDP).
    pub too_long: u64,
    /// Frames whose output port is not in the devmap (to AF_XDP).
    pub no_tx: u64,
    /// Frames without headroom for the outer header (to AF_XDP).
    pub no_headroom: u64,
    /// Frames with a partial TCP/UDP checksum, left for an offload by a
    /// sender the tier cannot see (to AF_XDP, which finishes it).
    #[serde(default)]
    pub partial_checksum: u64,
    /// Frames with a partial checksum passed up to the tc tier (io/tc.rs).
    #[serde(default)]
    pub to_tc: u64,
    /// Skbs the tc tier encapsulated (a GSO skb is one).
    #[serde(default)]
    pub tc_hit: u64,
    /// Skbs the tc tier dropped: their entry was retired after the XDP
    /// program passed them.
    #[serde(default)]
    pub tc_lost: u64,
    /// Tunnel packets on an uplink the decap tier does not take (outer
    /// options, extension headers, a UDP checksum to verify, reserved
    /// VXLAN bits, ...): to AF_XDP, whose engine judges them.
    #[serde(default)]
    pub decap_punt: u64,
    /// Tunnel packets of no tunnel the tier has a current entry for.
    #[serde(default)]
    pub decap_no_tunnel: u64,
    /// Decapsulated frames whose ECN field RFC 6040 changes (a CE mark to
    /// carry, or a drop): to AF_XDP.
    #[serde(default)]
    pub decap_ecn: u64,
    /// Tunnel packets whose outer UDP checksum, verified here as the
    /// engine verifies it, is wrong or partial (a peer's offload): to
    /// AF_XDP, whose engine finishes or drops them.
    #[serde(default)]
    pub decap_bad_checksum: u64,
    /// Frames whose TCP/UDP checksum the software path would drop, or
    /// whose lengths the tier does not walk (padding after the datagram,
    /// lengths that contradict each other): to AF_XDP, which settles them
    /// (`encap::settle`) as it does every frame it receives bare.
    #[serde(default)]
    pub unsettled: u64,
    /// GRE packets with a sequence number (RFC 2890): to AF_XDP, whose
    /// engine decapsulates them.
    #[serde(default)]
    pub decap_gre_sequence: u64,
    /// Frames whose partial TCP/UDP checksum (a sender's offload left it)
    /// the tier finished, as the software path would, and sent on: also in
    /// `hit`.
    #[serde(default)]
    pub finished_checksum: u64,
}

/// One program's flow, counter and output maps: the owner's.
pub struct TierMaps {
    /// Entries' slots by [`tier_hash`] of their key.
    flows: HashMap<MapData, u64, u32>,
    /// Entries by slot: a slot is written only once it has been free for
    /// [`GRACE`] (the kernel would reuse a hash element at once), or in
    /// place with a new generation alone.
    entries: Array<MapData, TierValue>,
    /// The tunnels of decapsulated flows (uplinks).
    tunnels: HashMap<MapData, TunnelKey, TunnelValue>,
    /// The masks the program tries, in order.
    masks: Array<MapData, TierMask>,
    counts: PerCpuArray<MapData, TierCount>,
    tx: DevMap<MapData>,
    /// Where the generation and content of the entries' rule set is
    /// recorded, for a successor to judge them by.
    meta: Array<MapData, PinMeta>,
    /// Moved on after every delete or overwrite in `flows`: the programs'
    /// per-CPU copies of entries are used only under the value they were
    /// made under (steer.bpf.c, `tier_cache`).
    epoch: Array<MapData, u64>,
    capacity: u32,
}

/// One program's generation map: the daemon's commit path writes it.
pub struct TierGen(Array<MapData, u64>);

impl TierMaps {
    /// Takes the tier's maps out of a loaded object whose flow and counter
    /// maps hold `capacity` entries.
    /// `meta`: a descriptor of the program's `meta` map.
    pub fn take(
        ebpf: &mut Ebpf,
        capacity: u32,
        meta: std::os::fd::OwnedFd,
    ) -> Result<(TierMaps, TierGen), TierMapError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(TierMapError { map: name, reason: "the object has no such map".into() })
        };
        let e = |map: &'static str| {
            move |e: aya::maps::MapError| TierMapError { map, reason: e.to_string() }
        };
        let flows = HashMap::try_from(take("tier_flows")?).map_err(e("tier_flows"))?;
        let entries = Array::try_from(take("tier_entries")?).map_err(e("tier_entries"))?;
        let tunnels = HashMap::try_from(take("tier_tunnels")?).map_err(e("tier_tunnels"))?;
        let counts = PerCpuArray::try_from(take("tier_counts")?).map_err(e("tier_counts"))?;
        let masks = Array::try_from(take("tier_masks")?).map_err(e("tier_masks"))?;
        let tx = DevMap::try_from(take("tier_tx")?).map_err(e("tier_tx"))?;
        let gen = Array::try_from(take("tier_gen")?).map_err(e("tier_gen"))?;
        let epoch = Array::try_from(take("tier_epoch")?).map_err(e("tier_epoch"))?;
        let meta = MapData::from_fd(meta).map_err(e("meta"))?;
        let meta = Array::try_from(aya::maps::Map::Array(meta)).map_err(e("meta"))?;
        let maps = TierMaps { flows, entries, tunnels, masks, counts, tx, meta, epoch, capacity };
        Ok((maps, TierGen(gen)))
    }

    /// Deletes the entry under `hash`, then retires every program's copy
    /// of it: from the next program run on, no packet takes its action.
    /// Gone already is not an error.
    fn delete(&mut self, hash: u64) {
        let _ = self.flows.remove(&hash);
        self.next_epoch();
    }

    /// Writes entry `v` into its slot, then makes `hash` find it there.
    /// The slot must be free for [`GRACE`] or hold the same entry (a new
    /// generation is the only change a run may see half made).
    fn put(&mut self, hash: u64, v: TierValue) -> Result<(), aya::maps::MapError> {
        self.entries.set(v.slot, v, 0)?;
        self.flows.insert(hash, v.slot, 0)
    }

    /// Puts `v` under `hash` in place of the entry there, then retires
    /// every program's copy of the one it replaces.
    fn overwrite(&mut self, hash: u64, v: TierValue) -> Result<(), aya::maps::MapError> {
        let r = self.put(hash, v);
        self.next_epoch();
        r
    }

    /// Every entry `tier_flows` finds, with its hash (a slot the map names
    /// that cannot be read, or holds an entry of another slot, is left out).
    fn all(&self) -> Vec<(u64, TierValue)> {
        self.flows
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(h, slot)| self.entries.get(&slot, 0).ok().map(|v| (h, slot, v)))
            .filter(|(_, slot, v)| v.slot == *slot)
            .map(|(h, _, v)| (h, v))
            .collect()
    }

    /// Moves `tier_epoch` on. A failed write would leave copies in use
    /// that should not be; it is a map the program owns, so it cannot
    /// fail but for a kernel out of memory, which is logged.
    fn next_epoch(&mut self) {
        let now = self.epoch.get(&0, 0).unwrap_or(0);
        if let Err(e) = self.epoch.set(0, now.wrapping_add(1), 0) {
            tracing::error!(error = %e, "XDP tier: cannot retire the programs' copies of entries");
        }
    }

    /// Makes the tunnel of decapsulated entry `d` current (generation of
    /// `rs`) in the program's tunnel map.
    fn write_tunnel(&mut self, rs: &RuleSet, d: &TierDecap) -> Result<(), aya::maps::MapError> {
        for (k, v) in tunnel_entries(rs, d) {
            self.tunnels.insert(k, v, 0)?;
        }
        Ok(())
    }

    /// The masks in use, in slot order (up to the first unused slot, where
    /// the program stops).
    fn live_masks(&self) -> Vec<FlowKey> {
        (0..TIER_MASKS)
            .map_while(|i| self.masks.get(&i, 0).ok().filter(|m| m.live != 0))
            .map(|m| FlowKey(m.w))
            .collect()
    }

    /// Marks every mask slot unused, the first one first (the program stops
    /// at the first unused slot).
    fn clear_masks(&mut self) {
        for i in 0..TIER_MASKS {
            let _ = self.masks.set(i, TierMask::default(), 0);
        }
    }

    /// Empties the tunnel map (its values are of an older rule set).
    fn clear_tunnels(&mut self) {
        let keys: Vec<TunnelKey> = self.tunnels.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.tunnels.remove(&k);
        }
    }

    /// Cumulative packets and bytes of slots `0..n` into `out`, in a few
    /// system calls; false if the kernel refused.
    fn read_batch(&self, b: &mut PerCpuPairs, n: u32, out: &mut Vec<(u64, u64)>) -> bool {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let fd = self.counts.map().fd().as_fd();
        match b.read(fd, n, out) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "batch read of the tier's counters");
                false
            }
        }
    }

    /// Cumulative packets and bytes of `slot`, summed over CPUs.
    fn read(&self, slot: u32) -> Option<(u64, u64)> {
        let v = self.counts.get(&slot, 0).ok()?;
        Some(v.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
    }
}

/// A map of the tier that the loaded object lacks or that has the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("the tier's map {map}: {reason}")]
pub struct TierMapError {
    pub map: &'static str,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[error("setting the XDP tier's generation on {ifname}: {reason}")]
pub struct TierGenError {
    ifname: String,
    reason: String,
}

/// The generation maps of the running datapath's programs, written by the
/// daemon's commit path (see the module docs: why it is atomic).
#[derive(Default)]
pub struct TierGenerations {
    maps: Mutex<Vec<(String, TierGen)>>,
    /// The rule set's generation last published, and whether the tier is
    /// paused (a live capture runs): then the programs hold [`PAUSED`],
    /// which no entry carries, so every packet misses and takes the AF_XDP
    /// path where the capture sees it.
    state: Mutex<(u64, bool)>,
}

/// The generation programs hold while the tier is paused.
pub const PAUSED: u64 = u64::MAX;

impl TierGenerations {
    /// Writes `generation` into every program's generation map (or keeps
    /// them paused, remembering it).
    pub fn publish(&self, generation: u64) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        st.0 = generation;
        self.write(if st.1 { PAUSED } else { generation })
    }

    /// Pauses the tier (every entry inert) or resumes it (the entries of the
    /// current rule set live again), before returning.
    pub fn pause(&self, paused: bool) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        st.1 = paused;
        self.write(if paused { PAUSED } else { st.0 })
    }

    fn write(&self, value: u64) -> Result<(), TierGenError> {
        let mut maps = lock(&self.maps);
        let mut first_err = None;
        for (ifname, g) in maps.iter_mut() {
            if let Err(e) = g.0.set(0, value, 0) {
                first_err
                    .get_or_insert(TierGenError { ifname: ifname.clone(), reason: e.to_string() });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Makes `maps` the ones to write, each set to the current generation
    /// (read under the same lock as `publish` writes, so a commit running
    /// meanwhile cannot be overtaken by an older value).
    pub fn replace(
        &self,
        maps: Vec<(String, TierGen)>,
        current: impl Fn() -> u64,
    ) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        let mut g = lock(&self.maps);
        *g = maps;
        st.0 = current();
        let generation = if st.1 { PAUSED } else { st.0 };
        for (ifname, m) in g.iter_mut() {
            m.0.set(0, generation, 0)
                .map_err(|e| TierGenError { ifname: ifname.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    /// Forgets the maps (their datapath stopped).
    pub fn clear(&self) {
        lock(&self.maps).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an entry the engine offered was not installed (the flow stays on AF_XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InstallFailure {
    /// The owner's queue was full.
    QueueFull,
    /// The rule set changed before the entry was installed.
    StaleGeneration,
    /// The ingress port has no tier (not an AF_XDP port).
    NoTierOnPort,
    /// The output port's driver does not take redirected frames.
    CannotRedirect,
    /// Every slot of the ingress port's table is in use.
    TableFull,
    /// The kernel refused the map update.
    MapUpdate,
    /// The entry needs a mask and every slot of the port's mask list holds
    /// another one.
    MasksFull,
    /// A live entry of another key has the same [`tier_hash`].
    HashCollision,
}

impl InstallFailure {
    const ALL: [InstallFailure; 8] = [
        InstallFailure::QueueFull,
        InstallFailure::StaleGeneration,
        InstallFailure::NoTierOnPort,
        InstallFailure::CannotRedirect,
        InstallFailure::TableFull,
        InstallFailure::MapUpdate,
        InstallFailure::MasksFull,
        InstallFailure::HashCollision,
    ];

    fn name(self) -> &'static str {
        match self {
            InstallFailure::QueueFull => "queue_full",
            InstallFailure::StaleGeneration => "stale_generation",
            InstallFailure::NoTierOnPort => "no_tier_on_port",
            InstallFailure::CannotRedirect => "cannot_redirect",
            InstallFailure::TableFull => "table_full",
            InstallFailure::MapUpdate => "map_update",
            InstallFailure::MasksFull => "masks_full",
            InstallFailure::HashCollision => "hash_collision",
        }
    }
}

/// The tier's counts of what it did, written by the owner and the workers.
#[derive(Default)]
struct Stats {
    installs: AtomicU64,
    adopted: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    hits: AtomicU64,
    failures: [AtomicU64; InstallFailure::ALL.len()],
    not_in_tier: [AtomicU64; NotInTier::ALL.len()],
}

impl Stats {
    fn fail(&self, f: InstallFailure) {
        self.failures[f as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What `status` shows of the tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierStatus {
    /// Flow entries installed now, over all ingress ports.
    pub entries: u64,
    /// Entries each ingress port holds at most.
    pub capacity: u32,
    /// Packets the tier handled (harvested from its counters).
    pub hits: u64,
    pub installs: u64,
    /// Entries taken over at start from a previous overlayd's pinned maps.
    #[serde(default)]
    pub adopted: u64,
    /// Entries removed after being idle.
    pub evictions: u64,
    /// Entries removed because the rule set, a next hop or an output port changed.
    pub invalidations: u64,
    /// Entries offered and not installed, by reason (the flows stay on AF_XDP).
    pub install_failures: BTreeMap<String, u64>,
    /// Flows the engine kept for itself, by reason.
    pub not_in_tier: BTreeMap<String, u64>,
    /// The masks entries are keyed under now (over all ports), each as the
    /// fields it keeps (`ip_dst/8`: a prefix): an entry serves every flow
    /// equal to its first one on those fields.
    #[serde(default)]
    pub masks: Vec<String>,
    pub ports: Vec<TierPortStatus>,
}

/// One port's place in the tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierPortStatus {
    pub port: String,
    /// Entries installed for flows arriving here; `None`: no tier on this port.
    pub entries: Option<u64>,
    /// Why frames may not be redirected out of it (absent: they may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_output: Option<String>,
}

/// A worker's end: offers entries to the owner and counts the flows the
/// engine kept for itself.
#[derive(Clone)]
pub struct TierLink {
    tx: SyncSender<TierEntry>,
    stats: Arc<Stats>,
}

impl TierLink {
    /// Hands `e` to the owner; never blocks. False if the queue was full
    /// (counted): the flow stays on AF_XDP until it is offered again.
    #[inline]
    pub fn offer(&self, e: TierEntry) -> bool {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(e) {
            self.stats.fail(InstallFailure::QueueFull);
            return false;
        }
        true
    }

    #[inline]
    pub fn not_in_tier(&self, r: NotInTier) {
        self.stats.not_in_tier[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

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

/// The owner: a thread and the state it shares with status readers.
pub struct Tier {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    stats: Arc<Stats>,
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

struct Output {
    name: String,
    ifindex: u32,
    /// Why it can never be an output, if so.
    fixed: Option<String>,
    /// Why frames may not be redirected out of it now (`None`: they may).
    refused: Option<String>,
    /// Largest frame it sends (MTU + Ethernet header).
    max_frame: usize,
}

struct State {
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

/// Where a stopped owner's last harvest left each live entry's counters:
/// per port number, (slot, key, packets, bytes). A successor adopting the
/// entries counts from there, so what the tier forwarded between the two
/// owners is counted once (io/upgrade.rs hands it over).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBaselines(pub Vec<(u16, Vec<SlotBaseline>)>);

/// A slot, the key of its entry, and its packets and bytes at the harvest.
pub type SlotBaseline = (u32, [u64; WORDS], u64, u64);

impl TierBaselines {
    fn find(&self, port: usize, slot: u32, key: &[u64; WORDS]) -> Option<(u64, u64)> {
        let (_, slots) = self.0.iter().find(|(p, _)| *p as usize == port)?;
        let (_, _, p, b) = slots.iter().find(|(s, k, _, _)| *s == slot && k == key)?;
        Some((*p, *b))
    }
}

impl Tier {
    /// Starts the owner over `ports` (indexed by port number), adopting the
    /// entries their maps hold (pinned by a previous overlayd) that the
    /// current rule set would decide the same way, and deleting the others
    /// before any worker runs ([`State::adopt`]).
    ///
    /// `handed`: where the previous owner's last harvest left the entries
    /// (a planned upgrade); entries it does not name are counted from what
    /// their counters hold now.
    pub fn start(
        ports: Vec<TierPort>,
        links: TierLinks,
        handed: &TierBaselines,
    ) -> std::io::Result<(Tier, TierLink)> {
        let stats = Arc::new(Stats::default());
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
        let mut st = State {
            ingress,
            outputs,
            rules,
            counters,
            hops_seen: links.hops.version(),
            mtus_seen: links.hops.mtus(),
            links,
            stats: Arc::clone(&stats),
            last_tick: Instant::now(),
            last_probe: Instant::now(),
            batch: aya::util::nr_cpus().ok().map(PerCpuPairs::new),
        };
        st.adopt(handed);
        st.probe_outputs(true);
        let shared = Arc::new(Shared { state: Mutex::new(st), stats: Arc::clone(&stats) });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("overlayd-tier".into())
            .spawn(move || owner(s2, rx, stop2))?;
        Ok((Tier { shared, stop, thread: Some(thread) }, TierLink { tx, stats }))
    }

    /// What the counter board runs before each snapshot: every entry's
    /// counters harvested, so `counters` is exact.
    pub fn refresher(&self) -> engine::counters::Refresh {
        let s = Arc::clone(&self.shared);
        Arc::new(move || lock(&s.state).harvest())
    }

    pub fn status(&self) -> TierStatus {
        let st = lock(&self.shared.state);
        let mut masks: Vec<FlowKey> = Vec::new();
        for m in st.ingress.iter().flatten().flat_map(|i| &i.masks) {
            if !masks.contains(m) {
                masks.push(*m);
            }
        }
        let s = &self.shared.stats;
        let live = |i: &Ingress| i.slots.iter().filter(|s| matches!(s, Slot::Live { .. })).count();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let named = |names: &mut dyn Iterator<Item = (&'static str, u64)>| {
            names.filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect()
        };
        TierStatus {
            entries: st.ingress.iter().flatten().map(|i| live(i) as u64).sum(),
            capacity: st.ingress.iter().flatten().map(|i| i.maps.capacity).max().unwrap_or(0),
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
            ports: st
                .outputs
                .iter()
                .zip(&st.ingress)
                .map(|(o, i)| TierPortStatus {
                    port: o.name.clone(),
                    entries: i.as_ref().map(|i| live(i) as u64),
                    not_output: o.refused.clone(),
                })
                .collect(),
        }
    }

    /// Stops the owner, harvests for the last time and folds the tier's
    /// counters into the totals: where that harvest left each live entry.
    /// The programs' tier lookups must be off, or their entries handed on.
    pub fn stop(mut self) -> TierBaselines {
        self.stop_thread();
        let mut st = lock(&self.shared.state);
        std::thread::sleep(GRACE);
        st.harvest();
        st.links.board.retire(st.links.board_id);
        st.baselines()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The owner's loop: installs what workers offer, ticks.
fn owner(shared: Arc<Shared>, rx: Receiver<TierEntry>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let first = match rx.recv_timeout(TICK) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(TICK);
                None
            }
        };
        let mut st = lock(&shared.state);
        if let Some(e) = first {
            st.install(e);
            // Bounded, so status readers and the tick are not held off.
            for e in rx.try_iter().take(1024) {
                st.install(e);
            }
        }
        if st.last_tick.elapsed() >= TICK {
            st.tick();
        }
    }
}

impl State {
    /// Installs an entry a worker offered, or counts why not.
    fn install(&mut self, e: TierEntry) {
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

    /// Takes over the entries left in the maps by a previous owner (the maps
    /// are pinned and outlive the process). An entry is kept only if it was
    /// decided under the rule set recorded in the port's `meta` map (its
    /// generation) and that rule set had the same content as the current
    /// one (its fingerprint): then the current rule set decides its flow
    /// the same way. Every other entry is deleted now, before the workers
    /// start and before the current generation is written, so no rule the
    /// current rule set does not hold is applied by an adopted entry. Kept
    /// entries are restamped with the current generation and counted from
    /// where `handed` says the previous owner's last harvest left them, or
    /// else from what their counters hold now.
    fn adopt(&mut self, handed: &TierBaselines) {
        let fp = fingerprint(&self.rules);
        let generation = self.rules.generation;
        let now = Instant::now();
        let (mut kept, mut deleted) = (0u64, 0u64);
        for (port, ing) in self.ingress.iter_mut().enumerate() {
            let Some(ing) = ing else { continue };
            let meta = ing.maps.meta.get(&0, 0).unwrap_or_default();
            let trusted = meta.fingerprint == fp;
            ing.maps.clear_tunnels();
            // The predecessor's list is kept as it is: its pinned program
            // is forwarding with it while this one adopts, and a cleared
            // slot would send the kept entries' packets to AF_XDP (lost
            // after a kill -9, counted twice across an upgrade). A mask of
            // an entry deleted here only costs a lookup; the list is
            // cleared at the next rule-set change.
            ing.masks = ing.maps.live_masks();
            let found: Vec<(u64, TierValue)> = ing.maps.all();
            // Taken off the free list in one pass at the end: one pass per
            // entry over a list as long as the tier (131 072 by default)
            // made adopting a few thousand entries take seconds.
            let mut taken = std::collections::HashSet::new();
            for (hash, v) in found {
                let k = v.key;
                let key = FlowKey(k);
                let slot = v.slot as usize;
                let free = ing.slots.get(slot).is_some_and(|s| matches!(s, Slot::Free));
                let entry =
                    (trusted && v.generation == meta.generation && free && hash == tier_hash(&k))
                        .then(|| v.entry(key, &self.rules))
                        .flatten()
                        .filter(|e| e.in_port as usize == port);
                let restamped = TierValue { generation, ..v };
                let tunnel_ok = match entry.as_ref().and_then(|e| e.decap.as_ref()) {
                    Some(d) => ing.maps.write_tunnel(&self.rules, d).is_ok(),
                    None => true,
                };
                let mask_ok = entry.as_ref().is_some_and(|e| ing.add_mask(&e.mask).is_ok());
                let ok = entry.is_some()
                    && tunnel_ok
                    && mask_ok
                    && (v.generation == generation || ing.maps.overwrite(hash, restamped).is_ok());
                let (Some(mut e), true) = (entry, ok) else {
                    ing.maps.delete(hash);
                    deleted += 1;
                    continue;
                };
                e.generation = generation;
                ing.seen[slot] = handed
                    .find(port, slot as u32, &k)
                    .or_else(|| ing.maps.read(slot as u32))
                    .unwrap_or_default();
                taken.insert(slot as u32);
                ing.by_hash.insert(hash, slot as u32);
                ing.high = ing.high.max(slot as u32 + 1);
                ing.slots[slot] = Slot::Live { entry: e, active: now };
                kept += 1;
            }
            if !taken.is_empty() {
                ing.free.retain(|s| !taken.contains(s));
            }
            let m = PinMeta { generation, fingerprint: fp, ..meta };
            if let Err(e) = ing.maps.meta.set(0, m, 0) {
                tracing::error!(error = %e, "XDP tier: cannot record the rule set of its entries");
            }
        }
        self.stats.adopted.fetch_add(kept, Ordering::Relaxed);
        self.stats.invalidations.fetch_add(deleted, Ordering::Relaxed);
        if kept + deleted > 0 {
            tracing::info!(
                adopted = kept,
                invalidated = deleted,
                generation,
                "XDP tier: took over the entries a previous overlayd left"
            );
        }
    }

    /// Records the current rule set in every port's `meta` map: the entries
    /// installed from now on were decided under it.
    fn record_rules(&mut self) {
        let fp = fingerprint(&self.rules);
        for ing in self.ingress.iter_mut().flatten() {
            let meta = ing.maps.meta.get(&0, 0).unwrap_or_default();
            let m = PinMeta { generation: self.rules.generation, fingerprint: fp, ..meta };
            if let Err(e) = ing.maps.meta.set(0, m, 0) {
                tracing::error!(error = %e, "XDP tier: cannot record the rule set of its entries");
            }
        }
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
    fn probe_outputs(&mut self, first: bool) {
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

    fn baselines(&self) -> TierBaselines {
        let ports = self.ingress.iter().enumerate().filter_map(|(port, ing)| {
            let ing = ing.as_ref()?;
            let slots = ing
                .by_hash
                .values()
                .filter_map(|&slot| match &ing.slots[slot as usize] {
                    Slot::Live { entry, .. } => {
                        let (p, b) = ing.seen[slot as usize];
                        Some((slot, entry.key.0, p, b))
                    }
                    _ => None,
                })
                .collect();
            Some((port as u16, slots))
        });
        TierBaselines(ports.collect())
    }

    /// Adds what every live or retiring entry did since the last harvest
    /// to the counters; marks live entries that moved as active.
    fn harvest(&mut self) {
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
fn max_frame(ifindex: u32) -> usize {
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
    fn retire(&mut self, i: u32, now: Instant) {
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

#[cfg(test)]
mod tests;
