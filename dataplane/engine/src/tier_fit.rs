//! Whether a rule's flows can be in the XDP tier, and if not why: what
//! `rule list` shows next to the hardware placement, and what `why` says
//! of one flow.
//!
//! There is one judge, [`tier::decide`], which the workers ask for every
//! flow. Asked of a rule, it is given the rule's representative flow: the
//! values the rule matches on, and for the fields it leaves open an IPv4
//! UDP packet on the rule's ingress port (or a workload port). A reason that
//! depends on the rule (its actions, its tunnel, an opt-out) holds for every
//! flow of the rule; one that depends on the packet (`not_tcp_udp`) holds
//! for the flows like the representative one, which the answer says.

use serde::Serialize;

use crate::compile::match_to_mask;
use crate::flow_key::{field, FlowKey};
use crate::model::{Backend, PortKind};
use std::sync::Arc;

use crate::compile::RuleSet;
use crate::pipeline::Worker;
use crate::tier::{self, NotInTier};
use crate::trace::TraceContext;

/// Where a rule's (or a flow's) packets after the first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "place", content = "reason")]
pub enum TierFit {
    /// In the XDP tier once the engine has decided the first packet (while
    /// the tier has room and the output port takes redirected frames).
    XdpTier,
    /// On the software path (AF_XDP), for this reason.
    Software(NotInTier),
}

impl TierFit {
    /// "XDP tier ..." or "AF_XDP: reason (name)", in the words of the
    /// ingress port's `backend` (`tier_words`).
    pub fn text(self, backend: Backend) -> String {
        let (tier, software) = tier_words(backend);
        match self {
            TierFit::XdpTier => format!("{tier} after the first packet"),
            TierFit::Software(r) => format!("{software}: {} ({})", r.describe(), r.name()),
        }
    }
}

/// What a port on `backend` calls its kernel tier and its software path
/// (`rule list`, `trace`, `why`):
/// on a tc port the tier's entries are served by the tc program and the
/// rest goes to a packet socket on the punt device; `auto` is either until
/// the port is attached.
pub fn tier_words(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Tc => ("tc tier", "a packet socket on the punt device"),
        Backend::Auto => ("XDP or tc tier", "AF_XDP or a packet socket on the punt device"),
        Backend::AfXdp | Backend::AfPacket | Backend::Tap => ("XDP tier", "AF_XDP"),
    }
}

/// A worker to judge by: the rule set with the next hops, path MTUs and
/// interface MACs of `cx` (the workers' live state, or assumed offline), as
/// a trace builds it.
pub fn worker(rules: Arc<RuleSet>, cx: &TraceContext) -> Worker {
    let mut w = Worker::new(rules);
    w.apply_next_hops(&cx.next_hops);
    w.apply_path_mtus(&cx.path_mtus);
    w.apply_interface_macs(&cx.interface_macs);
    w
}

/// Where the flow of `key`, which matched rule `rule`, runs.
pub fn flow(w: &Worker, key: &FlowKey, rule: u32) -> TierFit {
    match tier::decide(w, key, rule) {
        Ok(_) => TierFit::XdpTier,
        Err(r) => TierFit::Software(r),
    }
}

/// Where the flows of rule `rule` (index in the rule set) run, judged by
/// its representative flow.
pub fn rule(w: &Worker, rule: usize) -> TierFit {
    flow(w, &representative(w, rule), rule as u32)
}

/// The flow key rule `rule` is judged by: its matched values, and an IPv4
/// UDP packet from a workload port where it leaves fields open.
fn representative(w: &Worker, rule: usize) -> FlowKey {
    let rs = w.rules();
    let port_ix = rs.ports.iter().enumerate().map(|(i, p)| (p.name.as_str(), i as u16)).collect();
    let tun_ix = rs.tunnels.iter().enumerate().map(|(i, t)| (t.name.as_str(), i as u16)).collect();
    let (mask, val) = match_to_mask(&rs.config.rules[rule].matches, &port_ix, &tun_ix);
    let mut k = FlowKey::default();
    let workload = rs.ports.iter().position(|p| p.kind == PortKind::Workload).unwrap_or(0);
    k.set(field::IN_PORT, workload as u64);
    k.set(field::ETHERTYPE, 0x0800);
    k.set(field::IP_PROTO, 17);
    for i in 0..k.0.len() {
        k.0[i] = (k.0[i] & !mask.0[i]) | (val.0[i] & mask.0[i]);
    }
    // A rule on what comes out of a tunnel is judged by a packet that did:
    // in on the tunnel's uplink, with its VNI or key unless the rule names one.
    if let Some(t) = (k.get(field::TUNNEL) as usize).checked_sub(1).and_then(|t| rs.tunnels.get(t))
    {
        let open =
            |(w, shift, width): field::Field| (mask.0[w] >> shift) & ((1u64 << width) - 1) == 0;
        if open(field::IN_PORT) {
            k.set(field::IN_PORT, u64::from(t.uplink));
        }
        if open(field::VNI) {
            let id = match t.id {
                encap::decap::TunnelId::Vxlan { vni } | encap::decap::TunnelId::Geneve { vni } => {
                    vni
                }
                encap::decap::TunnelId::Gre { key } => key.unwrap_or(0),
            };
            k.set(field::VNI, u64::from(id));
        }
    }
    k
}

impl NotInTier {
    /// What the reason means, in words.
    pub fn describe(self) -> &'static str {
        match self {
            NotInTier::RuleOptOut => "the rule opts out (xdp_tier = \"off\")",
            NotInTier::Decapsulated => {
                "it arrives through a Geneve tunnel (the tier decapsulates VXLAN and GRE only)"
            }
            NotInTier::NotTcpUdp => "the tier takes untagged IPv4/IPv6 TCP and UDP only",
            NotInTier::VlanAction => "the rule pushes, pops or sets a VLAN tag",
            NotInTier::Replication => "the rule sends each packet to more than one place",
            NotInTier::ForwardL2 => "forward_l2 (FDB lookups and flooding) is not in the tier",
            NotInTier::SelfLoop => "output to the input port",
            NotInTier::GeneveEncap => "Geneve encapsulation is not in the tier",
            NotInTier::GreSequence => {
                "the GRE tunnel sends sequence numbers (one counter per tunnel; XDP runs per CPU)"
            }
            NotInTier::OuterVlan => "the tunnel's underlay is VLAN-tagged",
            NotInTier::NoNextHop => "the tunnel's next hop is not resolved",
            NotInTier::NoFate => "the rule has no action that decides the packet's fate",
            NotInTier::DecapEncap => {
                "it arrives through a tunnel and the rule encapsulates it again"
            }
            NotInTier::GreSequenceReceived => {
                "the packet carries a GRE sequence number, which the tier leaves to the engine"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::flow_key::extract;
    use crate::model::Config;

    const BASE: &str = r#"
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
name = "vx"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "gv"
type = "geneve"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 42
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "vx6"
type = "vxlan"
uplink = "up0"
local = "2001:db8::1"
remote = "2001:db8::2"
vni = 43
next_hop_mac = "02:00:00:00:00:20"

[[flood]]
vni = 42
tunnels = ["vx", "gv"]
"#;

    fn worker(rules: &str) -> Worker {
        let c = Config::from_toml(&format!("{BASE}{rules}")).unwrap();
        Worker::new(Arc::new(compile(&c).unwrap()))
    }

    #[test]
    fn each_rule_says_where_its_flows_run_and_why() {
        use NotInTier::*;
        let cases = [
            ("match = { in_port = \"wl0\" }\nactions = [{ encap = \"vx\" }]", TierFit::XdpTier),
            ("match = { in_port = \"wl0\" }\nactions = [{ output = \"wl1\" }]", TierFit::XdpTier),
            ("match = { in_port = \"wl0\" }\nactions = [{ encap = \"vx6\" }]", TierFit::XdpTier),
            ("match = { tunnel = \"vx6\" }\nactions = [{ output = \"wl0\" }]", TierFit::XdpTier),
            ("match = { ip_dst = \"203.0.113.9\" }\nactions = [\"drop\"]", TierFit::XdpTier),
            (
                "match = { in_port = \"wl0\" }\nactions = [{ encap = \"vx\" }]\nxdp_tier = \"off\"",
                TierFit::Software(RuleOptOut),
            ),
            (
                "match = { in_port = \"wl0\" }\nactions = [{ encap = \"gv\" }]",
                TierFit::Software(GeneveEncap),
            ),
            (
                "match = { in_port = \"wl0\" }\nactions = [{ forward_l2 = 42 }]",
                TierFit::Software(ForwardL2),
            ),
            (
                "match = { in_port = \"wl0\" }\nactions = [{ output = \"wl1\" }, { encap = \"vx\" }]",
                TierFit::Software(Replication),
            ),
            (
                "match = { in_port = \"wl0\", ethertype = 0x0806 }\nactions = [{ output = \"wl1\" }]",
                TierFit::Software(NotTcpUdp),
            ),
            ("match = { tunnel = \"vx\" }\nactions = [{ output = \"wl0\" }]", TierFit::XdpTier),
            (
                "match = { tunnel = \"gv\" }\nactions = [{ output = \"wl0\" }]",
                TierFit::Software(Decapsulated),
            ),
        ];
        for (r, want) in cases {
            let w = worker(&format!("[[rules]]\nid = 1\n{r}\n"));
            assert_eq!(rule(&w, 0), want, "{r}");
        }
    }

    /// Flows out of GRE tunnels (gretap, NVGRE, L3 GRE) are the tier's.
    #[test]
    fn rules_on_what_gre_tunnels_deliver_run_in_the_tier() {
        for kind in ["type = \"gretap\"\nkey = 7", "type = \"nvgre\"\nvsid = 9", "type = \"gre\""] {
            let w = worker(&format!(
                "[[tunnels]]\nname = \"g\"\n{kind}\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.9\"\nnext_hop_mac = \"02:00:00:00:00:20\"\n\
                 [[rules]]\nid = 1\nmatch = {{ tunnel = \"g\" }}\nactions = [{{ output = \"wl0\" }}]\n"
            ));
            assert_eq!(rule(&w, 0), TierFit::XdpTier, "{kind}");
        }
    }

    /// A flow's answer is the workers' own: `tier::decide` on its key.
    #[test]
    fn a_flow_is_judged_by_its_own_key() {
        let w = worker(
            "[[rules]]\nid = 1\nmatch = { in_port = \"wl0\" }\nactions = [{ output = \"wl1\" }]\n",
        );
        let f = |spec: &str| extract(&crate::packet_spec::build(spec).unwrap(), 0, 0, 0).0;
        assert_eq!(flow(&w, &f("eth/ipv4/udp(sport=1,dport=2)"), 0), TierFit::XdpTier);
        assert_eq!(flow(&w, &f("eth/ipv4/icmp"), 0), TierFit::Software(NotInTier::NotTcpUdp));
        assert_eq!(
            TierFit::Software(NotInTier::NotTcpUdp).text(Backend::AfXdp),
            "AF_XDP: the tier takes untagged IPv4/IPv6 TCP and UDP only (not_tcp_udp)"
        );
        assert_eq!(TierFit::XdpTier.text(Backend::Tc), "tc tier after the first packet");
        assert_eq!(
            TierFit::Software(NotInTier::NotTcpUdp).text(Backend::Tc),
            "a packet socket on the punt device: the tier takes untagged IPv4/IPv6 TCP and UDP \
             only (not_tcp_udp)"
        );
    }

    #[test]
    fn every_reason_is_described() {
        for r in NotInTier::ALL {
            assert!(!r.describe().is_empty(), "{}", r.name());
        }
    }
}
