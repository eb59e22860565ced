//! Each tunnel's status: what it carried each way, what was dropped going
//! into it or coming out of it, when it last carried a packet, and its next
//! hop. `status`, `GET /v1/tunnels/status`, `overlayctl tunnel list` and
//! `/metrics` all show this one answer.

use std::time::Instant;

use engine::compile::RuleSet;
use engine::counters::Snapshot;
use engine::model::Mac;

use crate::api_types::{tunnel_drops, NextHopStatus, TunnelStatus};
use crate::history::History;
use crate::neigh::NeighState;

/// The status of every tunnel of `rs`, from the totals `c` (numbered by
/// `rs`), what `h` observed by `now`, and the neighbour watcher's states
/// (`None` when no watcher runs: control only, or offline).
pub fn tunnel_status(
    rs: &RuleSet,
    c: &Snapshot,
    h: &History,
    now: Instant,
    neighbours: Option<&[NeighState]>,
) -> Vec<TunnelStatus> {
    rs.tunnels
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (encap, decap) = c.tunnels.get(i).copied().unwrap_or_default();
            let seen = h.last_seen(&t.name);
            let ago = |at: Option<Instant>| at.map(|a| now.saturating_duration_since(a).as_secs());
            let uplink = &rs.ports[t.uplink as usize].name;
            let cfg = &rs.config.tunnels[i];
            TunnelStatus {
                name: t.name.clone(),
                kind: cfg.kind,
                vni_or_key: engine::model::Config::tunnel_id(cfg),
                uplink: uplink.clone(),
                local: t.local,
                remote: t.remote,
                encap: encap.into(),
                decap: decap.into(),
                drops: tunnel_drops(c, i),
                last_rx_secs: ago(seen.rx),
                last_tx_secs: ago(seen.tx),
                next_hop: next_hop(rs, i, neighbours),
            }
        })
        .collect()
}

/// Tunnel `i`'s next hop: configured, or the neighbour entry the watcher
/// follows for its remote on its uplink's interface.
pub fn next_hop(rs: &RuleSet, i: usize, neighbours: Option<&[NeighState]>) -> NextHopStatus {
    let t = &rs.tunnels[i];
    if t.static_next_hop {
        return NextHopStatus::Static { mac: Mac(t.params.dst_mac).to_string() };
    }
    let Some(states) = neighbours else {
        return NextHopStatus::Unknown {
            why: "no neighbour watcher runs (control only, or offline)".into(),
        };
    };
    let port = &rs.ports[t.uplink as usize].name;
    let interface =
        rs.config.ports.iter().find(|p| &p.name == port).and_then(|p| p.interface.as_deref());
    match states.iter().find(|n| n.remote == t.remote && Some(n.interface.as_str()) == interface) {
        Some(n) => NextHopStatus::Neighbour(n.clone()),
        None => {
            NextHopStatus::Unknown { why: "the neighbour watcher has not looked it up yet".into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::counters::{FlowSnapshot, WorkerCounters};

    const DOC: &str = r#"
[[ports]]
name = "up0"
kind = "uplink"
interface = "eth1"
[[tunnels]]
name = "learned"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
[[tunnels]]
name = "fixed"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 42
next_hop_mac = "02:00:00:00:00:33"
"#;

    #[test]
    fn status_has_traffic_drops_liveness_and_next_hop() {
        let rs = engine::compile::compile(&engine::model::Config::from_toml(DOC).unwrap()).unwrap();
        let w = WorkerCounters::new(1, 2, 0);
        w.tunnels[0].encap.add(100);
        w.tunnels[0].decap.add(60);
        w.drop_in_tunnel(encap::DropReason::NoNeighbour, 2);
        let c = Snapshot::sum([&w]);
        let t0 = Instant::now();
        let mut h = History::default();
        h.observe(t0, &rs, &c);
        let n = NeighState {
            remote: "192.0.2.2".parse().unwrap(),
            interface: "eth1".into(),
            via: None,
            mac: Some("02:00:00:00:00:22".into()),
            state: "reachable".into(),
        };
        let now = t0 + std::time::Duration::from_secs(3);
        let s = tunnel_status(&rs, &c, &h, now, Some(std::slice::from_ref(&n)));
        assert_eq!(s[0].encap, FlowSnapshot { packets: 1, bytes: 100 }.into());
        assert_eq!((s[0].kind, s[0].vni_or_key), (engine::model::TunnelType::Vxlan, Some(42)));
        assert_eq!(s[0].decap.bytes, 60);
        assert_eq!((s[0].last_rx_secs, s[0].last_tx_secs), (Some(3), Some(3)));
        assert_eq!(s[0].next_hop, NextHopStatus::Neighbour(n));
        assert!(s[0].next_hop.resolved());
        assert!(s[0].drops.is_empty());
        assert_eq!(s[1].drops.get("no_neighbour"), Some(&1));
        assert_eq!((s[1].last_rx_secs, s[1].last_tx_secs), (None, None));
        assert_eq!(s[1].next_hop, NextHopStatus::Static { mac: "02:00:00:00:00:33".into() });
        let offline = tunnel_status(&rs, &c, &h, now, None);
        assert!(matches!(offline[0].next_hop, NextHopStatus::Unknown { .. }));
        assert!(!offline[0].next_hop.resolved());
    }
}
