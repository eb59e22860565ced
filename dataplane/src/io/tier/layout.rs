//! The tier maps' values as the C program lays them out (steer.bpf.c,
//! `struct tier_entry`, `tier_mask`, `tier_tunnel_key`, `tier_tunnel`,
//! `tier_count`), field for field, with the flags they carry, and how an
//! engine decision becomes one.

use encap::{DfMode, DscpMode, EcnMode, TtlMode};
use engine::compile::RuleSet;
use engine::flow_key::{field, v4_mapped, FlowKey, WORDS};
use engine::tier::{TierAction, TierDecap, TierEncap, TierEntry, TierTunnel, VXLAN6_HEADER_LEN};

// Actions and flags of `struct tier_entry` (steer.bpf.c).
const TIER_OUTPUT: u8 = 1;
const TIER_ENCAP: u8 = 2;
pub(super) const TIER_DROP: u8 = 3;
const TF_SET_SRC: u8 = 0x01;
const TF_SET_DST: u8 = 0x02;
const TF_DF_SET: u8 = 0x04;
const TF_DF_INHERIT: u8 = 0x08;
const TF_TTL_INHERIT: u8 = 0x10;
const TF_DSCP_INHERIT: u8 = 0x20;
const TF_ECN_COPY: u8 = 0x40;
const TF_UDP_CSUM: u8 = 0x80;
// Checks of `struct tier_entry`.
pub(super) const CHECK_SETTLE: u8 = 0x01;

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
