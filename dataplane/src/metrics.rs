//! Prometheus metrics, built at scrape time from the summed worker counters.
//!
//! The workers keep their own single-writer counters (engine::counters); a
//! scrape sums them into a snapshot and encodes it in the OpenMetrics text
//! format with `prometheus-client`. Nothing here runs on a worker thread.

use encap::DropReason;
use engine::compile::RuleSet;
use engine::counters::{Snapshot, BATCH_BUCKETS};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::io::tier::TierStatus;

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

/// The text exposition of `c` for rule set `rs`, and of the XDP tier's
/// status when it is on.
pub fn encode_metrics(
    rs: &RuleSet,
    c: &Snapshot,
    tier: Option<&TierStatus>,
    uptime_secs: u64,
) -> String {
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
    if let Some(t) = tier {
        encode_tier(&mut reg, t);
    }

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
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
        let text = encode_metrics(&rs, &Snapshot::sum([&w]), Some(&tier), 3);
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
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
