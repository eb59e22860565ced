//! tc flower filters as rtnetlink messages: adding one (`RTM_NEWTFILTER`
//! with `skip_sw`), deleting one, reading its counters, and the `clsact`
//! qdisc filters attach to.
//!
//! Attributes come in the order iproute2 emits them for a `tc` command that
//! lists its options in this order: `vlan_id vlan_ethtype dst_mac src_mac
//! src_ip dst_ip ip_proto src_port dst_port enc_src_ip enc_dst_ip
//! enc_key_id enc_dst_port`, then `action`s, with `skip_sw` (tc puts the flags
//! and the EtherType last whatever their place on the command line). The
//! fixtures in dataplane/tests/fixtures/netlink hold what iproute2 sent.

use std::net::IpAddr;

use engine::counters::FlowSnapshot;
use engine::placement::{HwAction, HwFilter, ETH_P_ALL};

use super::nl::{self, Msg, NLA_F_NESTED};

/// `clsact`'s ingress hook (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)): what
/// `tc filter ... ingress` attaches to.
pub const PARENT_INGRESS: u32 = 0xffff_fff2;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;

// TCA_*
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
// TCA_FLOWER_*
const ACT: u16 = 3;
const KEY_ETH_DST: u16 = 4;
const KEY_ETH_DST_MASK: u16 = 5;
const KEY_ETH_SRC: u16 = 6;
const KEY_ETH_SRC_MASK: u16 = 7;
const KEY_ETH_TYPE: u16 = 8;
const KEY_IP_PROTO: u16 = 9;
const KEY_IPV4_SRC: u16 = 10;
const KEY_IPV4_SRC_MASK: u16 = 11;
const KEY_IPV4_DST: u16 = 12;
const KEY_IPV4_DST_MASK: u16 = 13;
const KEY_IPV6_SRC: u16 = 14;
const KEY_IPV6_SRC_MASK: u16 = 15;
const KEY_IPV6_DST: u16 = 16;
const KEY_IPV6_DST_MASK: u16 = 17;
const KEY_TCP_SRC: u16 = 18;
const KEY_TCP_DST: u16 = 19;
const KEY_UDP_SRC: u16 = 20;
const KEY_UDP_DST: u16 = 21;
const FLAGS: u16 = 22;
const KEY_VLAN_ID: u16 = 23;
const KEY_VLAN_ETH_TYPE: u16 = 25;
const KEY_ENC_KEY_ID: u16 = 26;
const KEY_ENC_IPV4_SRC: u16 = 27;
const KEY_ENC_IPV4_SRC_MASK: u16 = 28;
const KEY_ENC_IPV4_DST: u16 = 29;
const KEY_ENC_IPV4_DST_MASK: u16 = 30;
const KEY_ENC_IPV6_SRC: u16 = 31;
const KEY_ENC_IPV6_SRC_MASK: u16 = 32;
const KEY_ENC_IPV6_DST: u16 = 33;
const KEY_ENC_IPV6_DST_MASK: u16 = 34;
const KEY_SCTP_SRC: u16 = 41;
const KEY_SCTP_DST: u16 = 42;
const KEY_ENC_UDP_DST_PORT: u16 = 45;
const TCA_CLS_FLAGS_SKIP_SW: u32 = 1 << 1;
// TCA_ACT_*
const ACT_KIND: u16 = 1;
const ACT_OPTIONS: u16 = 2;
const ACT_STATS: u16 = 4;
const STATS_BASIC: u16 = 1;
// Action results (TC_ACT_*), mirred directions, vlan and tunnel_key verbs.
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_PIPE: u32 = 3;
const TC_ACT_STOLEN: u32 = 4;
const TCA_EGRESS_REDIR: u32 = 1;
const VLAN_POP: u32 = 1;
const VLAN_PUSH: u32 = 2;
const VLAN_MODIFY: u32 = 3;
const TUNNEL_KEY_SET: u32 = 1;
const TUNNEL_KEY_UNSET: u32 = 2;
// Attributes of the actions' options.
const PARMS: u16 = 2;
const VLAN_PUSH_VLAN_ID: u16 = 3;
const TK_ENC_IPV4_SRC: u16 = 3;
const TK_ENC_IPV4_DST: u16 = 4;
const TK_ENC_IPV6_SRC: u16 = 5;
const TK_ENC_IPV6_DST: u16 = 6;
const TK_ENC_KEY_ID: u16 = 7;
const TK_ENC_DST_PORT: u16 = 9;
const TK_NO_CSUM: u16 = 10;
const TK_ENC_TOS: u16 = 12;
const TK_ENC_TTL: u16 = 13;

/// struct tcmsg.
fn tcmsg(m: &mut Msg, ifindex: u32, handle: u32, parent: u32, info: u32) {
    m.put(&[0, 0, 0, 0]);
    m.put(&(ifindex as i32).to_ne_bytes());
    m.put(&handle.to_ne_bytes());
    m.put(&parent.to_ne_bytes());
    m.put(&info.to_ne_bytes());
}

/// tcm_info of a filter: pref in the upper half, protocol (network order) in the lower.
fn info(pref: u16, protocol: u16) -> u32 {
    ((pref as u32) << 16) | protocol.to_be() as u32
}

/// The interface indices a filter names (its device and redirect targets).
pub trait Resolve {
    fn index(&self, ifname: &str) -> Option<u32>;
}

impl<F: Fn(&str) -> Option<u32>> Resolve for F {
    fn index(&self, ifname: &str) -> Option<u32> {
        self(ifname)
    }
}

/// A filter that cannot be written as a flower request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("no interface index for {0:?}")]
    UnknownInterface(String),
    #[error("ports without TCP, UDP or SCTP")]
    PortsWithoutProtocol,
}

fn index(r: &dyn Resolve, ifname: &str) -> Result<u32, FilterError> {
    r.index(ifname).ok_or_else(|| FilterError::UnknownInterface(ifname.into()))
}

fn prefix_mask(len: u8, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| {
            let bits = (len as usize).saturating_sub(i * 8).min(8);
            if bits == 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            }
        })
        .collect()
}

fn ip_key(m: &mut Msg, v4: (u16, u16), v6: (u16, u16), addr: IpAddr, len: u8) {
    match addr {
        IpAddr::V4(a) => {
            m.attr(v4.0, &a.octets());
            m.attr(v4.1, &prefix_mask(len, 4));
        }
        IpAddr::V6(a) => {
            m.attr(v6.0, &a.octets());
            m.attr(v6.1, &prefix_mask(len, 16));
        }
    }
}

/// struct tc_gen: index, capab, action, refcnt, bindcnt.
fn tc_gen(action: u32) -> Vec<u8> {
    [0u32, 0, action, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn action(m: &mut Msg, prio: u16, a: &HwAction, r: &dyn Resolve) -> Result<(), FilterError> {
    let at = m.begin(prio);
    let kind = match a {
        HwAction::VlanPush(_) | HwAction::VlanPop | HwAction::VlanModify(_) => "vlan",
        HwAction::TunnelSet(_) | HwAction::TunnelUnset => "tunnel_key",
        HwAction::Redirect(_) => "mirred",
        HwAction::Drop => "gact",
    };
    m.str(ACT_KIND, kind);
    let opts = m.begin(ACT_OPTIONS | NLA_F_NESTED);
    match a {
        HwAction::VlanPush(v) | HwAction::VlanModify(v) => {
            let verb = if matches!(a, HwAction::VlanPush(_)) { VLAN_PUSH } else { VLAN_MODIFY };
            let mut p = tc_gen(TC_ACT_PIPE);
            p.extend_from_slice(&verb.to_ne_bytes());
            m.attr(PARMS, &p);
            m.u16(VLAN_PUSH_VLAN_ID, *v);
        }
        HwAction::VlanPop => {
            let mut p = tc_gen(TC_ACT_PIPE);
            p.extend_from_slice(&VLAN_POP.to_ne_bytes());
            m.attr(PARMS, &p);
        }
        HwAction::TunnelSet(t) => {
            match (t.src, t.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    m.attr(TK_ENC_IPV4_SRC, &s.octets());
                    m.attr(TK_ENC_IPV4_DST, &d.octets());
                }
                (s, d) => {
                    let v6 = |a: IpAddr| match a {
                        IpAddr::V6(a) => a.octets(),
                        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    };
                    m.attr(TK_ENC_IPV6_SRC, &v6(s));
                    m.attr(TK_ENC_IPV6_DST, &v6(d));
                }
            }
            if let Some(k) = t.key_id {
                m.be32(TK_ENC_KEY_ID, k);
            }
            if let Some(p) = t.dst_port {
                m.be16(TK_ENC_DST_PORT, p);
            }
            m.u8(TK_ENC_TOS, t.tos);
            m.u8(TK_ENC_TTL, t.ttl);
            m.u8(TK_NO_CSUM, !t.csum as u8);
            let mut p = tc_gen(TC_ACT_PIPE);
            p.extend_from_slice(&TUNNEL_KEY_SET.to_ne_bytes());
            m.attr(PARMS, &p);
        }
        HwAction::TunnelUnset => {
            // iproute2 always sends the checksum flag, even for unset.
            m.u8(TK_NO_CSUM, 0);
            let mut p = tc_gen(TC_ACT_PIPE);
            p.extend_from_slice(&TUNNEL_KEY_UNSET.to_ne_bytes());
            m.attr(PARMS, &p);
        }
        HwAction::Redirect(dev) => {
            let mut p = tc_gen(TC_ACT_STOLEN);
            p.extend_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
            p.extend_from_slice(&index(r, dev)?.to_ne_bytes());
            m.attr(PARMS, &p);
        }
        HwAction::Drop => m.attr(PARMS, &tc_gen(TC_ACT_SHOT)),
    }
    m.end(opts);
    m.end(at);
    Ok(())
}

/// RTM_NEWTFILTER for `f`, as `tc filter add dev DEV ingress protocol P pref
/// N handle H flower skip_sw ...` sends it (NLM_F_EXCL: an existing filter
/// with the same handle is an error, not silently replaced).
pub fn add(f: &HwFilter, seq: u32, r: &dyn Resolve) -> Result<Vec<u8>, FilterError> {
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_EXCL | nl::NLM_F_CREATE;
    let mut m = Msg::new(nl::RTM_NEWTFILTER, flags, seq);
    tcmsg(&mut m, index(r, &f.dev)?, f.handle, PARENT_INGRESS, info(f.pref, f.protocol));
    m.str(TCA_KIND, "flower");
    let opts = m.begin(TCA_OPTIONS);
    let k = &f.keys;
    if let Some(v) = k.vlan_id {
        m.u16(KEY_VLAN_ID, v);
    }
    if let Some(e) = k.vlan_ethtype {
        m.be16(KEY_VLAN_ETH_TYPE, e);
    }
    if let Some(a) = k.eth_dst {
        m.attr(KEY_ETH_DST, &a);
        m.attr(KEY_ETH_DST_MASK, &[0xff; 6]);
    }
    if let Some(a) = k.eth_src {
        m.attr(KEY_ETH_SRC, &a);
        m.attr(KEY_ETH_SRC_MASK, &[0xff; 6]);
    }
    if let Some((a, l)) = k.ip_src {
        ip_key(&mut m, (KEY_IPV4_SRC, KEY_IPV4_SRC_MASK), (KEY_IPV6_SRC, KEY_IPV6_SRC_MASK), a, l);
    }
    if let Some((a, l)) = k.ip_dst {
        ip_key(&mut m, (KEY_IPV4_DST, KEY_IPV4_DST_MASK), (KEY_IPV6_DST, KEY_IPV6_DST_MASK), a, l);
    }
    if let Some(p) = k.ip_proto {
        m.u8(KEY_IP_PROTO, p);
    }
    let ports = match k.ip_proto {
        Some(6) => Some((KEY_TCP_SRC, KEY_TCP_DST)),
        Some(17) => Some((KEY_UDP_SRC, KEY_UDP_DST)),
        Some(132) => Some((KEY_SCTP_SRC, KEY_SCTP_DST)),
        _ => None,
    };
    match ports {
        Some((s, d)) => {
            if let Some(p) = k.l4_src {
                m.be16(s, p);
            }
            if let Some(p) = k.l4_dst {
                m.be16(d, p);
            }
        }
        None if k.l4_src.is_some() || k.l4_dst.is_some() => {
            return Err(FilterError::PortsWithoutProtocol)
        }
        None => {}
    }
    if let Some(e) = &k.enc {
        let full = |a: IpAddr| if a.is_ipv4() { 32 } else { 128 };
        ip_key(
            &mut m,
            (KEY_ENC_IPV4_SRC, KEY_ENC_IPV4_SRC_MASK),
            (KEY_ENC_IPV6_SRC, KEY_ENC_IPV6_SRC_MASK),
            e.src,
            full(e.src),
        );
        ip_key(
            &mut m,
            (KEY_ENC_IPV4_DST, KEY_ENC_IPV4_DST_MASK),
            (KEY_ENC_IPV6_DST, KEY_ENC_IPV6_DST_MASK),
            e.dst,
            full(e.dst),
        );
        if let Some(id) = e.key_id {
            m.be32(KEY_ENC_KEY_ID, id);
        }
        if let Some(p) = e.dst_port {
            m.be16(KEY_ENC_UDP_DST_PORT, p);
        }
    }
    let acts = m.begin(ACT);
    for (i, a) in f.actions.iter().enumerate() {
        action(&mut m, i as u16 + 1, a, r)?;
    }
    m.end(acts);
    m.u32(FLAGS, TCA_CLS_FLAGS_SKIP_SW);
    if f.protocol != ETH_P_ALL {
        m.be16(KEY_ETH_TYPE, f.protocol);
    }
    m.end(opts);
    Ok(m.finish())
}

/// The request naming one filter, as `tc filter del|get dev DEV ingress
/// protocol P pref N handle H flower` sends it.
fn by_handle(ty: u16, flags: u16, f: &HwFilter, seq: u32, ifindex: u32) -> Vec<u8> {
    let mut m = Msg::new(ty, flags, seq);
    tcmsg(&mut m, ifindex, f.handle, PARENT_INGRESS, info(f.pref, f.protocol));
    m.str(TCA_KIND, "flower");
    let opts = m.begin(TCA_OPTIONS);
    m.u32(FLAGS, 0);
    if f.protocol != ETH_P_ALL {
        m.be16(KEY_ETH_TYPE, f.protocol);
    }
    m.end(opts);
    m.finish()
}

/// RTM_DELTFILTER. iproute2 sends REQUEST|ACK; the offload manager adds
/// NLM_F_ECHO so the kernel answers with the filter as it was removed,
/// final counters included (none are lost between a last read and the removal).
pub fn del(f: &HwFilter, seq: u32, ifindex: u32, flags: u16) -> Vec<u8> {
    by_handle(nl::RTM_DELTFILTER, flags, f, seq, ifindex)
}

/// RTM_GETTFILTER (REQUEST|ECHO, as tc sends it): the filter with its counters.
pub fn get(f: &HwFilter, seq: u32, ifindex: u32) -> Vec<u8> {
    by_handle(nl::RTM_GETTFILTER, nl::NLM_F_REQUEST | nl::NLM_F_ECHO, f, seq, ifindex)
}

/// RTM_NEWQDISC for `tc qdisc add dev DEV clsact`.
pub fn add_clsact(ifindex: u32, seq: u32) -> Vec<u8> {
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_EXCL | nl::NLM_F_CREATE;
    let mut m = Msg::new(nl::RTM_NEWQDISC, flags, seq);
    tcmsg(&mut m, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    m.str(TCA_KIND, "clsact");
    m.finish()
}

/// The packets and bytes of a filter message from the kernel (an answer to
/// `get`, or the echo of `del`): the first action's basic counters, which
/// for a `skip_sw` filter are all hardware counts. Every action of a filter
/// sees the same packets (all but the last are `pipe`).
pub fn stats(msg: &[u8]) -> Option<FlowSnapshot> {
    let attrs = msg.get(nl::HEADER_LEN + 20..)?;
    let opts = nl::find(attrs, TCA_OPTIONS)?;
    let acts = nl::find(opts, ACT)?;
    let (_, first) = nl::attrs(acts).next()?;
    let st = nl::find(first, ACT_STATS)?;
    let basic = nl::find(st, STATS_BASIC)?;
    // struct gnet_stats_basic { __u64 bytes; __u32 packets; }
    let bytes = u64::from_ne_bytes(basic.get(0..8)?.try_into().ok()?);
    let packets = u32::from_ne_bytes(basic.get(8..12)?.try_into().ok()?);
    Some(FlowSnapshot { packets: packets as u64, bytes })
}

/// A kernel-shaped filter message carrying counters, for tests of the
/// code that reads them.
#[cfg(test)]
pub(crate) fn stats_msg(ty: u16, f: FlowSnapshot) -> Vec<u8> {
    let mut m = Msg::new(ty, 0, 1);
    tcmsg(&mut m, 3, 6, PARENT_INGRESS, info(10, 0x0800));
    m.str(TCA_KIND, "flower");
    let o = m.begin(TCA_OPTIONS);
    let a = m.begin(ACT);
    let one = m.begin(1);
    m.str(ACT_KIND, "mirred");
    let st = m.begin(ACT_STATS);
    let mut basic = f.bytes.to_ne_bytes().to_vec();
    basic.extend_from_slice(&(f.packets as u32).to_ne_bytes());
    basic.extend_from_slice(&[0; 4]);
    m.attr(STATS_BASIC, &basic);
    m.end(st);
    m.end(one);
    m.end(a);
    m.end(o);
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(24, 4), vec![0xff, 0xff, 0xff, 0]);
        assert_eq!(prefix_mask(20, 4), vec![0xff, 0xff, 0xf0, 0]);
        assert_eq!(prefix_mask(0, 4), vec![0; 4]);
        assert_eq!(prefix_mask(128, 16), vec![0xff; 16]);
    }

    #[test]
    fn counters_are_read_from_the_first_action() {
        let m = stats_msg(nl::RTM_NEWTFILTER, FlowSnapshot { packets: 789, bytes: 123_456 });
        let got = stats(&m).unwrap();
        assert_eq!(got, FlowSnapshot { packets: 789, bytes: 123_456 });
        assert_eq!(stats(&[0; 40]), None);
    }
}
