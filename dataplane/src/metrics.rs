//! Prometheus metrics, built at scrape time from the summed worker counters.
//!
//! The workers keep their own single-writer counters (engine::counters); a
//! scrape sums them into a snapshot and encodes it in the OpenMetrics text
//! format with `prometheus-client`, with what `status` shows of the tunnels
//! and the packet I/O (the same values: built from the same documents).
//! Nothing here runs on a worker thread.

use encap::DropReason;
use engine::compile::RuleSet;
use engine::counters::{Snapshot, BATCH_BUCKETS};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api_types::{MemoryStatus, TunnelStatus};
use crate::io::tier::TierStatus;
use crate::io::RingStats;
use crate::report::IoStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Port {
    port: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tunnel {
    tunnel: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelReason {
    tunnel: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelName {
    tunnel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    port: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    port: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Neighbour {
    remote: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeighbourState {
    remote: String,
    interface: String,
    state: String,
}

/// The reasons the pipeline counts under a tunnel (drops on the way into
/// it, and of what came out of it): exported for every tunnel, zero or not.
/// Any other reason a tunnel counts is exported once it is not zero.
pub const TUNNEL_DROP_REASONS: &[DropReason] = &[
    DropReason::NoNeighbour,
    DropReason::MtuExceeded,
    DropReason::InnerTooShort,
    DropReason::InnerMalformed,
    DropReason::InnerNotIp,
    DropReason::NoHeadroom,
    DropReason::EthTruncated,
    DropReason::NoMatchingRule,
    DropReason::RuleDrop,
    DropReason::SelfLoop,
    DropReason::FloodListEmpty,
    DropReason::VlanTagFull,
    DropReason::NoVlanTag,
    DropReason::NoFreeFrame,
];

/// What a scrape shows besides the counters: the tunnels and the packet I/O
/// as `status` shows them.
pub struct Live<'a> {
    pub tunnels: &'a [TunnelStatus],
    /// `None` with `--control-only`.
    pub io: Option<IoStatus>,
    /// Resident memory after the last purge, as `status` shows it.
    pub memory: MemoryStatus,
}

fn gauges<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    reg: &mut Registry,
    name: &str,
    help: &str,
) -> Family<L, Gauge> {
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counters<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    reg: &mut Registry,
    name: &str,
    help: &str,
) -> Family<L, Counter> {
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

/// The text exposition of `c` for rule set `rs`, and of `live`.
pub fn encode_metrics(rs: &RuleSet, c: &Snapshot, uptime_secs: u64, live: &Live) -> String {
    let mut reg = Registry::default();
    let gen = Gauge::<i64>::default();
    reg.register("overlayd_generation", "Generation of the rule set in force", gen.clone());
    gen.set(rs.generation as i64);
    let up = Gauge::<i64>::default();
    reg.register("overlayd_uptime_seconds", "Seconds since the daemon started", up.clone());
    up.set(uptime_secs as i64);

    let packets = counters::<Kind>(
        &mut reg,
        "overlayd_packets",
        "Packets by fate: rx + replicas + generated = tx + dropped",
    );
    for (k, v) in [
        ("rx", c.rx),
        ("tx", c.tx),
        ("replica", c.replicas),
        ("generated", c.generated),
        ("dropped", c.dropped()),
    ] {
        packets.get_or_create(&Kind { kind: k.into() }).inc_by(v);
    }

    let pp = counters::<Port>(&mut reg, "overlayd_port_packets", "Packets per port and direction");
    let pb = counters::<Port>(&mut reg, "overlayd_port_bytes", "Bytes per port and direction");
    for (p, (rx, tx)) in rs.ports.iter().zip(&c.ports) {
        for (dir, f) in [("rx", rx), ("tx", tx)] {
            let l = Port { port: p.name.clone(), direction: dir.into() };
            pp.get_or_create(&l).inc_by(f.packets);
            pb.get_or_create(&l).inc_by(f.bytes);
        }
    }

    let tp = counters::<Tunnel>(
        &mut reg,
        "overlayd_tunnel_packets",
        "Packets encapsulated into and decapsulated from each tunnel",
    );
    let tb = counters::<Tunnel>(
        &mut reg,
        "overlayd_tunnel_bytes",
        "Bytes encapsulated into and decapsulated from each tunnel",
    );
    for (t, (e, d)) in rs.tunnels.iter().zip(&c.tunnels) {
        for (dir, f) in [("encap", e), ("decap", d)] {
            let l = Tunnel { tunnel: t.name.clone(), direction: dir.into() };
            tp.get_or_create(&l).inc_by(f.packets);
            tb.get_or_create(&l).inc_by(f.bytes);
        }
    }

    let rp = counters::<Rule>(&mut reg, "overlayd_rule_packets", "Packets that matched each rule");
    let rb = counters::<Rule>(&mut reg, "overlayd_rule_bytes", "Bytes that matched each rule");
    for (r, f) in rs.rules.iter().zip(&c.rules) {
        let l = Rule { rule: r.id.to_string() };
        rp.get_or_create(&l).inc_by(f.packets);
        rb.get_or_create(&l).inc_by(f.bytes);
    }

    // Every reason is exported, zero or not, so dashboards and alerts can
    // refer to a reason before it first happens.
    let drops = counters::<Reason>(&mut reg, "overlayd_drops", "Dropped packets by reason");
    for r in DropReason::ALL {
        drops.get_or_create(&Reason { reason: r.name().into() }).inc_by(c.drop_count(*r));
    }

    let lookups =
        counters::<Kind>(&mut reg, "overlayd_lookups", "Lookups by the tier that answered");
    lookups.get_or_create(&Kind { kind: "flow_cache".into() }).inc_by(c.cache_hit);
    lookups.get_or_create(&Kind { kind: "classifier".into() }).inc_by(c.cache_miss);
    let probed = Counter::<u64>::default();
    reg.register(
        "overlayd_classifier_tables_probed",
        "Classifier tables probed on flow cache misses",
        probed.clone(),
    );
    probed.inc_by(c.tuples_probed);

    let batches = counters::<Kind>(
        &mut reg,
        "overlayd_batches",
        "Batches by size (power-of-two buckets: 1, 2-3, 4-7, ..., 512+)",
    );
    for i in 0..BATCH_BUCKETS {
        let lo = 1u64 << i;
        let label = if i + 1 == BATCH_BUCKETS {
            format!("{lo}+")
        } else {
            format!("{lo}-{}", (lo << 1) - 1)
        };
        batches.get_or_create(&Kind { kind: label }).inc_by(c.batches[i]);
    }
    let busy = Counter::<f64>::default();
    reg.register("overlayd_worker_busy_seconds", "Time workers spent processing batches (busy ratio: rate of this over the number of workers)", busy.clone());
    busy.inc_by(c.busy_ns as f64 / 1e9);
    if let Some(t) = live.io.as_ref().and_then(|io| io.tier.as_ref()) {
        encode_tier(&mut reg, t);
    }

    encode_tunnels(&mut reg, live.tunnels);
    if let Some(io) = &live.io {
        encode_io(&mut reg, io);
    }
    encode_memory(&mut reg, &live.memory);

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// Resident memory after the last purge, as `status` shows it. The gauge
/// is absent until the first purge (a 0 there would read as a figure).
fn encode_memory(reg: &mut Registry, m: &MemoryStatus) {
    let purges = Counter::<u64>::default();
    reg.register(
        "overlayd_memory_purges",
        "Times the daemon gave its free heap pages back, each followed by a reading of its memory",
        purges.clone(),
    );
    purges.inc_by(m.purges);
    if m.purges == 0 || m.resident_kib == 0 {
        return;
    }
    let held = gauges::<Kind>(
        reg,
        "overlayd_memory_after_purge_bytes",
        "Memory the daemon held right after it last gave free heap pages back: resident, and its anonymous part",
    );
    held.get_or_create(&Kind { kind: "resident".into() }).set((m.resident_kib * 1024) as i64);
    held.get_or_create(&Kind { kind: "anonymous".into() }).set((m.anon_kib * 1024) as i64);
}

/// Per-tunnel drops by reason and liveness, as `status` shows them.
fn encode_tunnels(reg: &mut Registry, tunnels: &[TunnelStatus]) {
    let drops = counters::<TunnelReason>(
        reg,
        "overlayd_tunnel_drops",
        "Packets dropped going into or coming out of each tunnel, by reason",
    );
    let since = gauges::<Tunnel>(
        reg,
        "overlayd_tunnel_seconds_since_last_packet",
        "Seconds since the tunnel last carried a packet (direction rx: decapsulated, tx: encapsulated); absent until it has",
    );
    let resolved = gauges::<TunnelName>(
        reg,
        "overlayd_tunnel_next_hop_resolved",
        "1 when the tunnel has a next-hop MAC address to send to (configured or learned), else 0",
    );
    for t in tunnels {
        let reason = |r: &str| TunnelReason { tunnel: t.name.clone(), reason: r.into() };
        for r in TUNNEL_DROP_REASONS {
            drops
                .get_or_create(&reason(r.name()))
                .inc_by(t.drops.get(r.name()).copied().unwrap_or(0));
        }
        for (r, n) in &t.drops {
            if !TUNNEL_DROP_REASONS.iter().any(|x| x.name() == r) {
                drops.get_or_create(&reason(r)).inc_by(*n);
            }
        }
        for (dir, secs) in [("rx", t.last_rx_secs), ("tx", t.last_tx_secs)] {
            if let Some(secs) = secs {
                let l = Tunnel { tunnel: t.name.clone(), direction: dir.into() };
                since.get_or_create(&l).set(secs as i64);
            }
        }
        resolved
            .get_or_create(&TunnelName { tunnel: t.name.clone() })
            .set(t.next_hop.resolved() as i64);
    }
}

/// The AF_XDP sockets' ring statistics, the steering program's decisions
/// and the neighbour states, as `status` shows them.
fn encode_io(reg: &mut Registry, io: &IoStatus) {
    type Pick = fn(&RingStats) -> u64;
    let rings: [(&str, &str, Pick); 6] = [
        (
            "overlayd_xsk_rx_dropped",
            "Frames the kernel dropped before an AF_XDP socket (no fill-ring frame, or too large)",
            |r| r.rx_dropped,
        ),
        (
            "overlayd_xsk_rx_ring_full",
            "Frames dropped because an AF_XDP socket's RX ring was full (its worker fell behind)",
            |r| r.rx_ring_full,
        ),
        ("overlayd_xsk_rx_fill_ring_empty", "Times an AF_XDP socket's fill ring was empty", |r| {
            r.rx_fill_ring_empty
        }),
        ("overlayd_xsk_rx_invalid_descs", "Invalid RX descriptors of an AF_XDP socket", |r| {
            r.rx_invalid_descs
        }),
        (
            "overlayd_xsk_tx_invalid_descs",
            "Invalid TX descriptors an AF_XDP socket was given",
            |r| r.tx_invalid_descs,
        ),
        ("overlayd_xsk_tx_ring_empty", "Times an AF_XDP socket's TX ring was empty", |r| {
            r.tx_ring_empty
        }),
    ];
    for (name, help, pick) in rings {
        let f = counters::<Queue>(reg, name, help);
        for p in &io.ports {
            for q in &p.sockets {
                if let Some(r) = &q.rings {
                    let l = Queue { port: p.port.clone(), queue: q.queue.to_string() };
                    f.get_or_create(&l).inc_by(pick(r));
                }
            }
        }
    }

    let steer = counters::<Decision>(
        reg,
        "overlayd_steer_packets",
        "Packets an uplink's steering decision gave the dataplane (redirected) or left to the kernel, and why",
    );
    for p in &io.ports {
        if let Some(st) = &p.steering {
            for (decision, n) in [
                ("redirected", st.redirected),
                ("pass_not_ip", st.pass_not_ip),
                ("pass_not_tunnel", st.pass_not_tunnel),
                ("pass_not_local_vtep", st.pass_not_local_vtep),
                ("pass_no_socket", st.pass_no_socket),
                ("pass_fragment", st.pass_fragment),
            ] {
                let l = Decision { port: p.port.clone(), decision: decision.into() };
                steer.get_or_create(&l).inc_by(n);
            }
        }
    }

    let state = gauges::<NeighbourState>(
        reg,
        "overlayd_neighbour_state",
        "The next hop of each remote VTEP: 1 for its current state (the kernel's neighbour state, or why there is none)",
    );
    let resolved = gauges::<Neighbour>(
        reg,
        "overlayd_neighbour_resolved",
        "1 when the next hop of a remote VTEP has a MAC address, else 0",
    );
    for n in &io.neighbours {
        let (remote, interface) = (n.remote.to_string(), n.interface.clone());
        state
            .get_or_create(&NeighbourState {
                remote: remote.clone(),
                interface: interface.clone(),
                state: n.state.clone(),
            })
            .set(1);
        resolved.get_or_create(&Neighbour { remote, interface }).set(n.mac.is_some() as i64);
    }
}

fn encode_tier(reg: &mut Registry, t: &TierStatus) {
    let entries = Gauge::<i64>::default();
    reg.register("overlayd_xdp_tier_entries", "Flow entries in the XDP tier", entries.clone());
    entries.set(t.entries as i64);
    for (name, help, v) in [
        ("overlayd_xdp_tier_hits", "Packets the XDP tier handled", t.hits),
        ("overlayd_xdp_tier_installs", "Flow entries installed in the XDP tier", t.installs),
        ("overlayd_xdp_tier_evictions", "XDP tier entries removed after being idle", t.evictions),
        (
            "overlayd_xdp_tier_invalidations",
            "XDP tier entries removed because the rule set, a next hop or an output port changed",
            t.invalidations,
        ),
    ] {
        let c = Counter::<u64>::default();
        reg.register(name, help, c.clone());
        c.inc_by(v);
    }
    let failures = counters::<Reason>(
        reg,
        "overlayd_xdp_tier_install_failures",
        "Entries offered to the XDP tier and not installed, by reason (the flows stay on AF_XDP)",
    );
    for (r, n) in &t.install_failures {
        failures.get_or_create(&Reason { reason: r.clone() }).inc_by(*n);
    }
    let kept = counters::<Reason>(
        reg,
        "overlayd_xdp_tier_kept_on_af_xdp",
        "Flows the engine kept out of the XDP tier, by reason",
    );
    for (r, n) in &t.not_in_tier {
        kept.get_or_create(&Reason { reason: r.clone() }).inc_by(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::counters::WorkerCounters;

    #[test]
    fn exposition_has_every_family_and_value() {
        let cfg = engine::model::Config::from_toml(
            "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n[[rules]]\nid = 7\nactions = [\"drop\"]\n",
        )
        .unwrap();
        let rs = engine::compile::compile(&cfg).unwrap();
        let w = WorkerCounters::new(1, 0, 1);
        w.rx.add(5);
        w.drop(DropReason::RuleDrop);
        w.ports[0].rx.add(100);
        w.rules[0].add(100);
        w.batch(5);
        let mut tier = TierStatus { entries: 2, hits: 9, ..TierStatus::default() };
        tier.install_failures.insert("table_full".into(), 4);
        let io = IoStatus {
            running: true,
            workers: 1,
            ports: Vec::new(),
            neighbours: Vec::new(),
            tier: Some(tier),
        };
        let memory = MemoryStatus { resident_kib: 150_000, anon_kib: 100_000, purges: 7, at_ms: 1 };
        let text = encode_metrics(
            &rs,
            &Snapshot::sum([&w]),
            3,
            &Live { tunnels: &[], io: Some(io), memory },
        );
        for want in [
            "overlayd_packets_total{kind=\"rx\"} 5",
            "overlayd_port_bytes_total{port=\"wl0\",direction=\"rx\"} 100",
            "overlayd_rule_packets_total{rule=\"7\"} 1",
            "overlayd_drops_total{reason=\"rule_drop\"} 1",
            "overlayd_drops_total{reason=\"no_matching_rule\"} 0",
            "overlayd_batches_total{kind=\"4-7\"} 1",
            "overlayd_uptime_seconds 3",
            "overlayd_xdp_tier_entries 2",
            "overlayd_xdp_tier_hits_total 9",
            "overlayd_xdp_tier_install_failures_total{reason=\"table_full\"} 4",
            "overlayd_memory_purges_total 7",
            "overlayd_memory_after_purge_bytes{kind=\"resident\"} 153600000",
            "overlayd_memory_after_purge_bytes{kind=\"anonymous\"} 102400000",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("overlayd_xsk_"), "no I/O, no socket series:\n{text}");
    }

    #[test]
    fn tunnels_rings_steering_and_neighbours_are_exported_as_status_shows_them() {
        use crate::api_types::{NextHopStatus, Traffic};
        use crate::io::steer::SteerStats;
        use crate::io::{QueueStats, RingStats};
        use crate::neigh::NeighState;
        use crate::report::PortStatus;
        let cfg = engine::model::Config::default();
        let rs = engine::compile::compile(&cfg).unwrap();
        let neighbour = NeighState {
            remote: "192.0.2.2".parse().unwrap(),
            interface: "eth1".into(),
            via: None,
            mac: None,
            state: "failed".into(),
        };
        let tunnels = [TunnelStatus {
            name: "t1".into(),
            kind: engine::model::TunnelType::Vxlan,
            vni_or_key: Some(42),
            uplink: "up0".into(),
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            encap: Traffic { packets: 1, bytes: 2 },
            decap: Traffic::default(),
            drops: [("no_neighbour".to_string(), 7), ("tx_failed".to_string(), 2)].into(),
            last_rx_secs: None,
            last_tx_secs: Some(4),
            next_hop: NextHopStatus::Neighbour(neighbour.clone()),
        }];
        let rings = RingStats {
            rx_dropped: 11,
            rx_invalid_descs: 0,
            tx_invalid_descs: 13,
            rx_ring_full: 12,
            rx_fill_ring_empty: 14,
            tx_ring_empty: 0,
        };
        let io = IoStatus {
            running: true,
            workers: 1,
            ports: vec![PortStatus {
                port: "up0".into(),
                interface: "eth1".into(),
                kind: engine::model::PortKind::Uplink,
                backend: engine::model::Backend::AfXdp,
                backend_auto: false,
                xdp_mode: None,
                zero_copy: Some(false),
                offloads: None,
                queues: 1,
                mtu: Some(1500),
                steering: Some(SteerStats {
                    redirected: 20,
                    pass_not_tunnel: 3,
                    ..Default::default()
                }),
                sockets: vec![QueueStats { queue: 0, rings: Some(rings), ..Default::default() }],
                tier: None,
                advice: Vec::new(),
            }],
            neighbours: vec![neighbour],
            tier: None,
        };
        let text = encode_metrics(
            &rs,
            &Snapshot::default(),
            0,
            &Live { tunnels: &tunnels, io: Some(io), memory: MemoryStatus::default() },
        );
        for want in [
            "overlayd_tunnel_drops_total{tunnel=\"t1\",reason=\"no_neighbour\"} 7",
            "overlayd_tunnel_drops_total{tunnel=\"t1\",reason=\"mtu_exceeded\"} 0",
            "overlayd_tunnel_drops_total{tunnel=\"t1\",reason=\"tx_failed\"} 2",
            "overlayd_tunnel_seconds_since_last_packet{tunnel=\"t1\",direction=\"tx\"} 4",
            "overlayd_tunnel_next_hop_resolved{tunnel=\"t1\"} 0",
            "overlayd_xsk_rx_dropped_total{port=\"up0\",queue=\"0\"} 11",
            "overlayd_xsk_rx_ring_full_total{port=\"up0\",queue=\"0\"} 12",
            "overlayd_xsk_tx_invalid_descs_total{port=\"up0\",queue=\"0\"} 13",
            "overlayd_xsk_rx_fill_ring_empty_total{port=\"up0\",queue=\"0\"} 14",
            "overlayd_steer_packets_total{port=\"up0\",decision=\"redirected\"} 20",
            "overlayd_steer_packets_total{port=\"up0\",decision=\"pass_not_tunnel\"} 3",
            "overlayd_neighbour_state{remote=\"192.0.2.2\",interface=\"eth1\",state=\"failed\"} 1",
            "overlayd_neighbour_resolved{remote=\"192.0.2.2\",interface=\"eth1\"} 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("direction=\"rx\"} "),
            "no rx series before the first packet:\n{text}"
        );
        assert!(
            text.contains("overlayd_memory_purges_total 0")
                && !text.contains("overlayd_memory_after_purge_bytes{"),
            "no memory figure before the first purge:\n{text}"
        );
    }
}
