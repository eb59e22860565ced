//! From the cluster's state to this node's configuration, and the merge
//! rules with the local configuration (docs/cluster.md, "Merge rules"):
//!
//! - the cluster owns tunnels named `cl.<vni>.<peer>`, the FDB entries and
//!   flood-list members that point at them, and rules with ids from
//!   `CLUSTER_RULE_BASE` up; everything else is local and never touched;
//! - a derived object that collides with a local one (same tunnel endpoints
//!   and VNI, same FDB key, same rule id) is left out and reported as a
//!   conflict: local wins, loudly;
//! - a derived object the configuration refuses (a cluster rule naming a port
//!   this node lacks, say) is left out and reported the same way.
//!
//! `merge` is a pure function of the current document and the view, and
//! idempotent: merging its own output changes nothing, which is how the
//! agent knows a batch changes nothing and skips the generation.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use engine::model::{Config, FdbEntry, FloodList, Mac, Tunnel, TunnelType};
use serde::Serialize;

use super::layout::{Encap, CLUSTER_RULE_BASE};
use super::settings::ClusterSettings;
use super::view::View;

/// Names of the tunnels the cluster owns start with this.
pub const TUNNEL_PREFIX: &str = "cl.";

pub fn is_cluster_tunnel(name: &str) -> bool {
    name.starts_with(TUNNEL_PREFIX)
}

pub fn is_cluster_rule(id: u32) -> bool {
    id >= CLUSTER_RULE_BASE
}

pub fn tunnel_name(vni: u32, peer: &str) -> String {
    format!("{TUNNEL_PREFIX}{vni}.{peer}")
}

/// Something from the cluster this node did not apply, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Conflict {
    /// What was left out: `tunnel cl.42.host-b`, `fdb 42 02:..`, `rule 2147483649`.
    pub what: String,
    pub reason: String,
}

/// The merged document and what was left out of it.
#[derive(Clone, Debug)]
pub struct Merged {
    pub config: Config,
    pub conflicts: Vec<Conflict>,
    /// Set when the merged document is still refused because of a local
    /// object (a local rule naming a cluster tunnel that is gone): nothing
    /// can be applied until the local configuration is fixed.
    pub error: Option<String>,
}

/// The local part of a document: everything the cluster does not own.
pub fn local_part(c: &Config) -> Config {
    let mut l = c.clone();
    l.tunnels.retain(|t| !is_cluster_tunnel(&t.name));
    l.fdb.retain(|e| !is_cluster_tunnel(&e.tunnel));
    for f in &mut l.flood {
        f.tunnels.retain(|t| !is_cluster_tunnel(t));
    }
    // A flood list that only the cluster filled goes with its tunnels.
    l.flood.retain(|f| !f.tunnels.is_empty() || !f.ports.is_empty());
    l.rules.retain(|r| !is_cluster_rule(r.id));
    l
}

/// The VTEP of a peer this node can reach: the peer's first address of a
/// family this node has, and this node's address of that family.
fn pair(mine: &[IpAddr], theirs: &[IpAddr]) -> Option<(IpAddr, IpAddr)> {
    theirs.iter().find_map(|r| mine.iter().find(|l| l.is_ipv4() == r.is_ipv4()).map(|l| (*l, *r)))
}

fn conflict(what: impl Into<String>, reason: impl Into<String>) -> Conflict {
    Conflict { what: what.into(), reason: reason.into() }
}

/// This node's document: the local part of `current` and what the cluster
/// state in `view` derives for `me`.
pub fn merge(current: &Config, view: &View, me: &ClusterSettings) -> Merged {
    let mut c = local_part(current);
    let mut conflicts = Vec::new();
    let joins = |n: &str| me.networks.is_empty() || me.networks.iter().any(|x| x == n);

    // Networks, by name; a VNI claimed twice goes to the first name.
    let mut vnis = BTreeMap::new();
    let mut nets = Vec::new();
    for (name, n) in &view.networks {
        if n.vni > encap::wire::vxlan::MAX_VNI {
            conflicts.push(conflict(
                format!("network {name}"),
                format!("vni {} is out of range", n.vni),
            ));
            continue;
        }
        if let Some(first) = vnis.insert(n.vni, name) {
            vnis.insert(n.vni, first);
            conflicts.push(conflict(
                format!("network {name}"),
                format!("vni {} is already network {first}'s", n.vni),
            ));
            continue;
        }
        if joins(name) {
            nets.push((name.as_str(), n));
        }
    }

    let uplink_ok = c.ports.iter().any(|p| p.name == me.uplink);
    if !uplink_ok && !nets.is_empty() && view.nodes.keys().any(|n| n != &me.node) {
        conflicts.push(conflict(
            format!("uplink {}", me.uplink),
            "cluster.uplink names no port of the local configuration: no tunnel derived",
        ));
    }

    // A tunnel per (peer, network both join).
    let local_ends: HashSet<(IpAddr, IpAddr, bool, Option<u32>)> = c
        .tunnels
        .iter()
        .map(|t| (t.local, t.remote, t.kind == TunnelType::Vxlan, Config::tunnel_id(t)))
        .collect();
    // (network, peer) -> tunnel name
    let mut tunnel_of: BTreeMap<(&str, &str), String> = BTreeMap::new();
    let mut derived = Vec::new();
    for (peer, node) in view.nodes.iter().filter(|(n, _)| **n != me.node) {
        if !uplink_ok {
            break;
        }
        let Some((local, remote)) = pair(&me.vteps, &node.vteps) else {
            conflicts.push(conflict(
                format!("node {peer}"),
                "no VTEP of an address family this node has",
            ));
            continue;
        };
        if me.vteps.contains(&remote) {
            conflicts.push(conflict(
                format!("node {peer}"),
                format!("claims this node's VTEP {remote}"),
            ));
            continue;
        }
        for (net, n) in nets.iter().filter(|(net, _)| node.joins(net)) {
            let name = tunnel_name(n.vni, peer);
            let vxlan = n.encap == Encap::Vxlan;
            if local_ends.contains(&(local, remote, vxlan, Some(n.vni))) {
                conflicts.push(conflict(
                    format!("tunnel {name}"),
                    format!(
                        "a local tunnel already runs {local} -> {remote} with vni/key {}",
                        n.vni
                    ),
                ));
                continue;
            }
            derived.push(Tunnel {
                name: name.clone(),
                kind: if vxlan { TunnelType::Vxlan } else { TunnelType::Gretap },
                uplink: me.uplink.clone(),
                local,
                remote,
                vni: vxlan.then_some(n.vni),
                key: (!vxlan).then_some(n.vni),
                vsid: None,
                flow_id: None,
                udp_port: vxlan.then_some(n.udp_port),
                next_hop_mac: None,
                df: Default::default(),
                ttl: engine::model::OrInherit::Value(64),
                dscp: engine::model::OrInherit::Value(0),
                ecn: Default::default(),
                udp_checksum: remote.is_ipv6(),
                gre_checksum: false,
                gre_sequence: false,
                src_port_range: [49152, 65535],
                mtu: n.mtu,
                options: Vec::new(),
            });
            tunnel_of.insert((net, peer.as_str()), name);
        }
    }
    derived.sort_by(|a, b| a.name.cmp(&b.name));
    c.tunnels.extend(derived);

    // FDB entries for the remote endpoints of the networks this node joins.
    let local_fdb: HashSet<(u32, [u8; 6])> = c.fdb.iter().map(|e| (e.vni, e.mac.0)).collect();
    let vni_of: BTreeMap<&str, u32> = nets.iter().map(|(name, n)| (*name, n.vni)).collect();
    for ((net, mac), ep) in &view.endpoints {
        if ep.node == me.node {
            continue;
        }
        let (Some(vni), Some(tunnel)) =
            (vni_of.get(net.as_str()), tunnel_of.get(&(net.as_str(), ep.node.as_str())))
        else {
            continue;
        };
        if local_fdb.contains(&(*vni, *mac)) {
            conflicts.push(conflict(
                format!("fdb {vni} {}", Mac(*mac)),
                "the local configuration has an entry for this MAC address",
            ));
            continue;
        }
        c.fdb.push(FdbEntry { vni: *vni, mac: Mac(*mac), tunnel: tunnel.clone() });
    }

    // Head-end flood lists: every member peer's tunnel, after the local members.
    for (net, n) in &nets {
        let tunnels: Vec<String> =
            tunnel_of.iter().filter(|((nn, _), _)| nn == net).map(|(_, t)| t.clone()).collect();
        if tunnels.is_empty() {
            continue;
        }
        match c.flood.iter_mut().find(|f| f.vni == n.vni) {
            Some(f) => f.tunnels.extend(tunnels),
            None => c.flood.push(FloodList { vni: n.vni, tunnels, ports: Vec::new() }),
        }
    }

    // Cluster-wide rules that select this node.
    let local_ids: HashSet<u32> = c.rules.iter().map(|r| r.id).collect();
    for (id, r) in &view.rules {
        if !r.selects(&me.labels) {
            continue;
        }
        if *id != r.rule.id {
            conflicts.push(conflict(
                format!("rule {id}"),
                format!("the record holds rule id {}", r.rule.id),
            ));
        } else if !is_cluster_rule(*id) {
            conflicts.push(conflict(
                format!("rule {id}"),
                format!("cluster rule ids start at {CLUSTER_RULE_BASE}; lower ids are local"),
            ));
        } else if local_ids.contains(id) {
            conflicts.push(conflict(format!("rule {id}"), "a local rule has this id"));
        } else {
            c.rules.push(r.rule.clone());
        }
    }

    let error = settle(&mut c, &mut conflicts);
    Merged { config: c, conflicts, error }
}

/// Validates the merged document; each refusal that points at a derived
/// object removes that object (and what refers to it) and is reported. A
/// refusal that points at a local object stops here: it is returned.
fn settle(c: &mut Config, conflicts: &mut Vec<Conflict>) -> Option<String> {
    for _ in 0..1000 {
        let e = match c.validate() {
            Ok(()) => return None,
            Err(e) => e,
        };
        let path = e.path().unwrap_or_default().to_string();
        let reason = e.to_string();
        let index = |field: &str| -> Option<usize> {
            let rest = path.strip_prefix(field)?.strip_prefix('[')?;
            rest[..rest.find(']')?].parse().ok()
        };
        if let Some(i) = index("tunnels").filter(|i| is_cluster_tunnel(&c.tunnels[*i].name)) {
            let t = c.tunnels.remove(i);
            c.fdb.retain(|e| e.tunnel != t.name);
            for f in &mut c.flood {
                f.tunnels.retain(|x| *x != t.name);
            }
            conflicts.push(conflict(format!("tunnel {}", t.name), reason));
        } else if let Some(i) = index("fdb").filter(|i| is_cluster_tunnel(&c.fdb[*i].tunnel)) {
            let e = c.fdb.remove(i);
            conflicts.push(conflict(format!("fdb {} {}", e.vni, e.mac), reason));
        } else if let Some(i) = index("rules").filter(|i| is_cluster_rule(c.rules[*i].id)) {
            let r = c.rules.remove(i);
            conflicts.push(conflict(format!("rule {}", r.id), reason));
        } else {
            return Some(reason);
        }
    }
    Some("too many derived objects refused; see the conflicts".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::layout::Layout;

    const LOCAL: &str = r#"
[[ports]]
name = "wl0"
kind = "workload"
[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"
[[rules]]
id = 1
match = { in_port = "wl0" }
actions = [{ forward_l2 = 42 }]
[[rules]]
id = 2
match = { vni = 42 }
actions = [{ forward_l2 = 42 }]
[[flood]]
vni = 42
tunnels = []
ports = ["wl0"]
"#;

    fn me(node: &str, vtep: &str) -> ClusterSettings {
        ClusterSettings {
            endpoints: vec!["http://192.0.2.100:2379".into()],
            prefix: "/o".into(),
            node: node.into(),
            vteps: vec![vtep.parse().unwrap()],
            uplink: "up0".into(),
            labels: [("rack".to_string(), "r1".to_string())].into(),
            networks: vec![],
            lease_ttl_secs: 10,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_domain: None,
            user: None,
            password_file: None,
            settle_ms: 20,
        }
    }

    fn view(puts: &[(&str, &str)]) -> View {
        let l = Layout::new("/o");
        let mut v = View::default();
        for (k, val) in puts {
            v.put(&l, format!("/o/v1/{k}").as_bytes(), val.as_bytes());
        }
        assert!(v.invalid.is_empty(), "{:?}", v.invalid);
        v
    }

    fn three() -> View {
        view(&[
            ("networks/blue", r#"{"vni":42}"#),
            ("nodes/a", r#"{"vteps":["192.0.2.1"]}"#),
            ("nodes/b", r#"{"vteps":["192.0.2.2"]}"#),
            ("nodes/c", r#"{"vteps":["2001:db8::3","192.0.2.3"]}"#),
            ("endpoints/blue/02:00:00:00:00:0a", r#"{"node":"a","ip":"198.51.100.1"}"#),
            ("endpoints/blue/02:00:00:00:00:0b", r#"{"node":"b"}"#),
            ("endpoints/blue/02:00:00:00:00:0c", r#"{"node":"c"}"#),
            ("endpoints/blue/02:00:00:00:00:0d", r#"{"node":"gone"}"#),
        ])
    }

    #[test]
    fn tunnels_fdb_and_flood_from_membership() {
        let local = Config::from_toml(LOCAL).unwrap();
        let m = merge(&local, &three(), &me("a", "192.0.2.1"));
        assert_eq!(m.error, None);
        assert_eq!(m.conflicts, vec![]);
        let names: Vec<_> = m.config.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["cl.42.b", "cl.42.c"]);
        assert_eq!(m.config.tunnels[1].remote.to_string(), "192.0.2.3", "same family as ours");
        let fdb: Vec<_> =
            m.config.fdb.iter().map(|e| (e.mac.to_string(), e.tunnel.as_str())).collect();
        assert_eq!(
            fdb,
            [
                ("02:00:00:00:00:0b".to_string(), "cl.42.b"),
                ("02:00:00:00:00:0c".to_string(), "cl.42.c")
            ],
            "no entry for our own endpoint nor for an absent node's"
        );
        assert_eq!(m.config.flood[0].ports, ["wl0"]);
        assert_eq!(m.config.flood[0].tunnels, ["cl.42.b", "cl.42.c"]);
        // Idempotent, and the local part is what it was.
        let again = merge(&m.config, &three(), &me("a", "192.0.2.1"));
        assert_eq!(again.config, m.config);
        assert_eq!(local_part(&m.config), local);
    }

    #[test]
    fn a_peer_that_leaves_takes_its_tunnel_and_entries() {
        let local = Config::from_toml(LOCAL).unwrap();
        let mut v = three();
        let before = merge(&local, &v, &me("a", "192.0.2.1")).config;
        v.delete(&Layout::new("/o"), b"/o/v1/nodes/b");
        let after = merge(&before, &v, &me("a", "192.0.2.1")).config;
        assert!(after.tunnels.iter().all(|t| t.name != "cl.42.b"));
        assert!(after.fdb.iter().all(|e| e.tunnel != "cl.42.b"));
        assert_eq!(after.flood[0].tunnels, ["cl.42.c"]);
    }

    #[test]
    fn local_wins_and_says_so() {
        let mut local = Config::from_toml(LOCAL).unwrap();
        local.tunnels.push(Tunnel {
            name: "mine".into(),
            ..merge(&local, &three(), &me("a", "192.0.2.1")).config.tunnels[0].clone()
        });
        local.fdb.push(FdbEntry {
            vni: 42,
            mac: "02:00:00:00:00:0c".parse().unwrap(),
            tunnel: "mine".into(),
        });
        let mut v = three();
        let l = Layout::new("/o");
        v.put(&l, b"/o/v1/rules/1", br#"{"rule":{"id":1,"actions":["drop"]}}"#);
        v.put(
            &l,
            b"/o/v1/rules/2147483650",
            br#"{"rule":{"id":2147483650,"match":{"in_port":"nope"},"actions":["drop"]}}"#,
        );
        v.put(&l, b"/o/v1/rules/2147483651", br#"{"selector":{"rack":"r1"},"rule":{"id":2147483651,"match":{"in_port":"wl0","l4_dst":23,"ip_proto":6},"actions":["drop"]}}"#);
        v.put(
            &l,
            b"/o/v1/rules/2147483652",
            br#"{"selector":{"rack":"r2"},"rule":{"id":2147483652,"actions":["drop"]}}"#,
        );
        let m = merge(&local, &v, &me("a", "192.0.2.1"));
        assert_eq!(m.error, None);
        let what: Vec<_> = m.conflicts.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            what,
            ["tunnel cl.42.b", "fdb 42 02:00:00:00:00:0c", "rule 1", "rule 2147483650"],
            "{:#?}",
            m.conflicts
        );
        assert!(m.conflicts[3].reason.contains("unknown port"), "{:?}", m.conflicts[3]);
        let ids: Vec<u32> = m.config.rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 2147483651], "the selected rule, not the other rack's");
        // No FDB entry rides on the tunnel that was left out.
        assert!(m.config.fdb.iter().all(|e| e.tunnel != "cl.42.b"));
    }

    #[test]
    fn a_local_object_naming_a_vanished_cluster_tunnel_is_an_error() {
        let mut local = Config::from_toml(LOCAL).unwrap();
        let v = three();
        let mut cur = merge(&local, &v, &me("a", "192.0.2.1")).config;
        local.rules.push(engine::model::Rule {
            id: 3,
            priority: 0,
            matches: Default::default(),
            actions: vec![engine::model::Action::Encap("cl.42.b".into())],
            xdp_tier: Default::default(),
        });
        cur.rules.push(local.rules[2].clone());
        let mut gone = v.clone();
        gone.delete(&Layout::new("/o"), b"/o/v1/nodes/b");
        let m = merge(&cur, &gone, &me("a", "192.0.2.1"));
        assert!(m.error.unwrap().contains("unknown tunnel"));
    }
}
