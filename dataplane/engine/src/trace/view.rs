//! Recorded steps made readable: indices become names, numbers become
//! sentences. Runs only when a trace is shown, never on the packet path.

use std::fmt;

use encap::TunnelId;
use serde::{Deserialize, Serialize};

use crate::compile::{Act, RuleSet};
use crate::flow_key::{field, mask_fields, FlowKey};
use crate::model::Mac;

use super::{hex, Step, TraceContext};

/// One step with names instead of indices: what `/v1/trace` returns and what
/// `overlayctl` and `overlayd trace` print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepView {
    Received {
        port: String,
        len: usize,
    },
    Parsed {
        summary: String,
    },
    Decapsulated {
        tunnel: String,
        detail: String,
    },
    Lookup {
        tier: String,
        detail: String,
    },
    Matched {
        rule: u32,
        priority: u16,
    },
    /// Where the matched rule runs, when offload is active.
    Placement {
        rule: u32,
        hardware: bool,
        detail: String,
    },
    /// Where this packet's flow runs after it (a live trace says so): `place`
    /// is `hardware`, `xdp_tier` or `af_xdp`, `reason` why not the tier (a
    /// `not_in_tier` reason, `tier_off` or `port_backend`), `text` the words
    /// `rule list` uses.
    FlowRunsIn {
        place: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        text: String,
    },
    Action {
        action: String,
    },
    Replicated {
        copies: usize,
    },
    /// The MAC a tunnel sends to, or why it has none.
    NextHop {
        tunnel: String,
        remote: String,
        mac: Option<String>,
        detail: String,
    },
    Encapsulated {
        tunnel: String,
        header: String,
    },
    Output {
        port: String,
        len: usize,
    },
    IcmpTooBig {
        port: String,
        mtu: u16,
        len: usize,
    },
    Dropped {
        stage: String,
        reason: String,
        description: String,
    },
    /// MAC learning or ARP/ND suppression.
    L2 {
        detail: String,
    },
}

impl fmt::Display for StepView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepView::Received { port, len } => write!(f, "received on port {port}, {len} bytes"),
            StepView::Parsed { summary } => write!(f, "parsed: {summary}"),
            StepView::Decapsulated { tunnel, detail } => {
                write!(f, "decapsulated from tunnel {tunnel} ({detail})")
            }
            StepView::Lookup { tier, detail } => write!(f, "lookup answered by {tier}: {detail}"),
            StepView::Matched { rule, priority } => {
                write!(f, "matched rule {rule} (priority {priority})")
            }
            StepView::Placement { rule, hardware: true, detail } => write!(
                f,
                "rule {rule} runs in hardware ({detail}): the NIC handles such packets before they reach this path"
            ),
            StepView::Placement { rule, hardware: false, detail } => {
                write!(f, "rule {rule} runs in software: {detail}")
            }
            StepView::FlowRunsIn { text, .. } => {
                write!(f, "after this packet the flow runs in: {text}")
            }
            StepView::Action { action } => write!(f, "action: {action}"),
            StepView::Replicated { copies } => write!(f, "replicated to {copies} copies"),
            StepView::NextHop { tunnel, remote, mac: Some(mac), detail } => {
                write!(f, "next hop of tunnel {tunnel} (remote {remote}): {mac}, {detail}")
            }
            StepView::NextHop { tunnel, remote, mac: None, detail } => {
                write!(f, "next hop of tunnel {tunnel} (remote {remote}) is unresolved: {detail}")
            }
            StepView::Encapsulated { tunnel, header } => {
                write!(f, "encapsulated into tunnel {tunnel}, outer header {header}")
            }
            StepView::Output { port, len } => write!(f, "output to port {port}, {len} bytes"),
            StepView::IcmpTooBig { port, mtu, len } => {
                write!(f, "ICMP too big (mtu {mtu}) sent back out of port {port}, {len} bytes")
            }
            StepView::Dropped { stage, reason, description } => {
                write!(f, "DROPPED at {stage}: {reason} ({description})")
            }
            StepView::L2 { detail } => write!(f, "l2: {detail}"),
        }
    }
}

/// Names the recorded `steps` of a packet judged by `rs`, and adds what the
/// context explains: where the matched rule runs, where next hops come from.
pub fn render(steps: &[Step], rs: &RuleSet, cx: &TraceContext) -> Vec<StepView> {
    let port = |p: u16| rs.ports[p as usize].name.clone();
    let tunnel = |t: u16| rs.tunnels[t as usize].name.clone();
    let mut out = Vec::with_capacity(steps.len() + 1);
    for s in steps {
        let v = match *s {
            Step::Received { port: p, len } => {
                StepView::Received { port: port(p), len: len as usize }
            }
            Step::Decapsulated { tunnel: t, outer: d } => StepView::Decapsulated {
                tunnel: t.map_or_else(|| "(not configured)".into(), tunnel),
                detail: match (t, d.tunnel) {
                    (Some(_), TunnelId::Vxlan { .. }) => format!(
                        "{} from {} to {}, outer UDP source port {}",
                        tunnel_id(d.tunnel),
                        d.remote,
                        d.local,
                        d.src_port
                    ),
                    _ => format!("{} from {} to {}", tunnel_id(d.tunnel), d.remote, d.local),
                },
            },
            Step::Parsed { key } => StepView::Parsed { summary: describe(&key) },
            Step::CacheHit => {
                StepView::Lookup { tier: "flow cache".into(), detail: "exact-match hit".into() }
            }
            Step::Classified { table, probed } => StepView::Lookup {
                tier: "classifier".into(),
                detail: match table.and_then(|i| rs.classifier.table_mask(i).map(|m| (i, m))) {
                    Some((i, m)) => format!(
                        "table {i} (match {}) after {probed} of {} tables probed (flow cache miss)",
                        mask_fields(&m).join(", "),
                        rs.classifier.tuple_count()
                    ),
                    None => format!(
                        "no table matched, {probed} of {} probed (flow cache miss)",
                        rs.classifier.tuple_count()
                    ),
                },
            },
            Step::Matched { rule } => {
                let r = &rs.rules[rule as usize];
                out.push(StepView::Matched { rule: r.id, priority: r.priority });
                // Say where the rule runs: a packet like this one may never
                // reach the software path this trace walks.
                match cx.placement.iter().find(|p| p.rule == r.id) {
                    Some(p) => match (&p.hardware, &p.software) {
                        (Some(f), _) => StepView::Placement {
                            rule: r.id,
                            hardware: true,
                            detail: format!(
                                "tc flower on {}, pref {}, handle {}",
                                f.dev, f.pref, f.handle
                            ),
                        },
                        (None, w) => StepView::Placement {
                            rule: r.id,
                            hardware: false,
                            detail: w.as_ref().map_or_else(String::new, |w| w.text.clone()),
                        },
                    },
                    None => continue,
                }
            }
            Step::Action { act } => StepView::Action { action: describe_act(rs, &act) },
            Step::Replicated { copies } => StepView::Replicated { copies: copies as usize },
            Step::NextHop { tunnel: t, mac } => next_hop(rs, cx, t, mac),
            Step::Encapsulated { tunnel: t, header } => {
                StepView::Encapsulated { tunnel: tunnel(t), header: hex(header.bytes()) }
            }
            Step::Output { port: p, len } => StepView::Output { port: port(p), len: len as usize },
            Step::TooBig { port: p, mtu, len } => {
                StepView::IcmpTooBig { port: port(p), mtu, len: len as usize }
            }
            Step::Dropped { stage, reason } => StepView::Dropped {
                stage: stage.name().into(),
                reason: reason.name().into(),
                description: reason.description().into(),
            },
            Step::L2(s) => StepView::L2 { detail: crate::learn::describe(rs, &s) },
        };
        out.push(v);
    }
    out
}

/// Where a tunnel's next hop came from, or why there is none.
fn next_hop(rs: &RuleSet, cx: &TraceContext, t: u16, mac: Option<[u8; 6]>) -> StepView {
    let tun = &rs.tunnels[t as usize];
    let uplink = &rs.ports[tun.uplink as usize].name;
    let neighbour = cx.neighbours.get(&tun.remote);
    let detail = match (mac, tun.static_next_hop, cx.live, neighbour) {
        (_, true, _, _) => "configured (next_hop_mac)".into(),
        (Some(_), false, true, Some(n)) => format!("from the kernel's neighbour table ({n})"),
        (Some(_), false, _, _) => "from the kernel's neighbour table".into(),
        (None, false, true, Some(n)) => format!("no usable neighbour entry ({n})"),
        (None, false, true, None) => {
            format!("the kernel's neighbour table has not been asked about it on {uplink} yet")
        }
        (None, false, false, _) => "next hops are learned from the kernel's neighbour table at \
             run time, which an offline trace does not have: trace on the running daemon \
             (`overlayctl trace`) or give the tunnel a next_hop_mac"
            .into(),
    };
    StepView::NextHop {
        tunnel: tun.name.clone(),
        remote: tun.remote.to_string(),
        mac: mac.map(|m| Mac(m).to_string()),
        detail,
    }
}

fn tunnel_id(id: TunnelId) -> String {
    match id {
        TunnelId::Vxlan { vni } => format!("VXLAN VNI {vni}"),
        TunnelId::Geneve { vni } => format!("Geneve VNI {vni}"),
        TunnelId::Gre { key: Some(k) } => format!("GRE key {k}"),
        TunnelId::Gre { key: None } => "GRE without key".into(),
    }
}

/// An action with names instead of indices.
pub fn describe_act(rs: &RuleSet, a: &Act) -> String {
    match a {
        Act::Encap(t) => format!("encap into tunnel {}", rs.tunnels[*t as usize].name),
        Act::Output(p) => format!("output to port {}", rs.ports[*p as usize].name),
        Act::Drop => "drop".into(),
        Act::PushVlan(v) => format!("push vlan {v}"),
        Act::PopVlan => "pop vlan".into(),
        Act::SetVlan(v) => format!("set vlan {v}"),
        Act::SetEthSrc(m) => format!("set eth_src {}", Mac(*m)),
        Act::SetEthDst(m) => format!("set eth_dst {}", Mac(*m)),
        Act::Count => "count".into(),
        Act::ForwardL2(v) => format!("forward_l2 in vni {v} (FDB, else flood list)"),
    }
}

/// A one-line description of a flow key.
pub fn describe(k: &FlowKey) -> String {
    let mac = |v: u64| {
        let b = v.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]]).to_string()
    };
    let mut s = format!("eth {} > {}", mac(k.get(field::ETH_SRC)), mac(k.get(field::ETH_DST)));
    let vlan = k.get(field::VLAN);
    if vlan != 0 {
        s += &format!(" vlan {}", vlan & 0x0fff);
    }
    let et = k.get(field::ETHERTYPE);
    let addr = |a: [u8; 16]| -> String {
        let v6 = std::net::Ipv6Addr::from(a);
        match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        }
    };
    match et {
        0x0800 | 0x86dd => {
            let proto = k.get(field::IP_PROTO);
            s += &format!(
                " {} {} > {} proto {proto}",
                if et == 0x0800 { "ipv4" } else { "ipv6" },
                addr(k.ip_src()),
                addr(k.ip_dst())
            );
            if matches!(proto, 6 | 17 | 132) {
                s += &format!(" ports {} > {}", k.get(field::L4_SRC), k.get(field::L4_DST));
            }
        }
        other => s += &format!(" ethertype {other:#06x}"),
    }
    if k.get(field::TUNNEL) != 0 {
        s +=
            &format!(" (from tunnel #{}, vni/key {})", k.get(field::TUNNEL) - 1, k.get(field::VNI));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_render_as_numbered_sentences_and_tagged_json() {
        let v = StepView::Dropped {
            stage: "classify".into(),
            reason: "no_matching_rule".into(),
            description: "x".into(),
        };
        assert_eq!(v.to_string(), "DROPPED at classify: no_matching_rule (x)");
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains(r#""step":"dropped""#), "{json}");
        assert_eq!(serde_json::from_str::<StepView>(&json).unwrap(), v);
    }
}
