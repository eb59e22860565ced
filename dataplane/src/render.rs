//! How rule sets, counters and traces are shown to people, as text. The
//! JSON documents for scripts are the types of `api_types`.

use std::fmt::Write;

use encap::DropReason;
use engine::compile::{RuleSet, TunnelRt};
use engine::counters::Snapshot;
use engine::flow_key::mask_fields;
use engine::trace::TraceReport;

/// One compiled tunnel in one line.
pub(crate) fn tunnel_line(t: &TunnelRt, rs: &RuleSet) -> String {
    let hop = if t.static_next_hop {
        format!("{} (static)", engine::model::Mac(t.params.dst_mac))
    } else {
        "from the neighbour table".into()
    };
    format!(
        "{:?} {} -> {} via {}, next hop {hop}, underlay mtu {} (inner IP {})",
        t.id,
        t.local,
        t.remote,
        rs.ports[t.uplink as usize].name,
        t.params.options.underlay_mtu,
        t.inner_ip_mtu
    )
}

/// `overlayd check`: what a configuration compiles to.
pub fn summary(rs: &RuleSet) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "generation {} (schema {})", rs.generation, rs.config.schema_version);
    let _ = writeln!(s, "ports ({}):", rs.ports.len());
    for (i, p) in rs.ports.iter().enumerate() {
        let mac = p.mac.map(|m| engine::model::Mac(m).to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "  {i:>3} {:<16} {:<9} mac {mac}",
            p.name,
            format!("{:?}", p.kind).to_lowercase()
        );
    }
    let _ = writeln!(s, "tunnels ({}):", rs.tunnels.len());
    for (i, t) in rs.tunnels.iter().enumerate() {
        let _ = writeln!(s, "  {i:>3} {:<16} {}", t.name, tunnel_line(t, rs));
    }
    let tables = rs.classifier.tuple_summary();
    let _ = writeln!(
        s,
        "rules ({}) in {} tables (tuple space search, best table first):",
        rs.rules.len(),
        tables.len()
    );
    for (i, (mask, n)) in tables.iter().enumerate() {
        let _ =
            writeln!(s, "  table {i:>3}: {n:>6} entries  match {}", mask_fields(mask).join(", "));
    }
    let d = &rs.decap;
    let _ = writeln!(
        s,
        "decap: local VTEPs {}; vxlan ports {:?}; strict {}; verify udp checksum {}; accept zero checksum over IPv6 {}; verify gre checksum {}",
        d.local_v4
            .iter()
            .map(|a| std::net::Ipv4Addr::from(*a).to_string())
            .chain(d.local_v6.iter().map(|a| std::net::Ipv6Addr::from(*a).to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        d.vxlan_ports,
        d.vxlan_strict,
        d.verify_udp_checksum_v4,
        d.accept_zero_checksum_v6,
        d.verify_gre_checksum
    );
    let _ = writeln!(s, "fdb: {} entries", rs.fdb.len());
    let mut flood: Vec<_> = rs.flood.iter().collect();
    flood.sort_by_key(|(v, _)| **v);
    for (vni, f) in flood {
        let names: Vec<&str> = f
            .tunnels
            .iter()
            .map(|t| rs.tunnels[*t as usize].name.as_str())
            .chain(f.ports.iter().map(|p| rs.ports[*p as usize].name.as_str()))
            .collect();
        let _ = writeln!(s, "flood vni {vni}: {}", names.join(", "));
    }
    s
}

/// Counters as tables.
pub fn counters(rs: &RuleSet, c: &Snapshot) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "packets: rx {}  tx {}  replicas {}  generated {}  dropped {}  ({})",
        c.rx,
        c.tx,
        c.replicas,
        c.generated,
        c.dropped(),
        if c.conserved() { "rx + replicas + generated = tx + dropped" } else { "DO NOT ADD UP" }
    );
    let _ = writeln!(
        s,
        "{:<16} {:>10} {:>12} {:>10} {:>12}",
        "port", "rx pkts", "rx bytes", "tx pkts", "tx bytes"
    );
    for (p, (rx, tx)) in rs.ports.iter().zip(&c.ports) {
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>12} {:>10} {:>12}",
            p.name, rx.packets, rx.bytes, tx.packets, tx.bytes
        );
    }
    if !rs.tunnels.is_empty() {
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>12} {:>10} {:>12}",
            "tunnel", "encap pkts", "encap bytes", "decap pkts", "decap bytes"
        );
        for (t, (e, d)) in rs.tunnels.iter().zip(&c.tunnels) {
            let _ = writeln!(
                s,
                "{:<16} {:>10} {:>12} {:>10} {:>12}",
                t.name, e.packets, e.bytes, d.packets, d.bytes
            );
        }
    }
    let _ = writeln!(s, "{:<10} {:>8} {:>10} {:>12}", "rule", "priority", "packets", "bytes");
    for (r, f) in rs.rules.iter().zip(&c.rules) {
        let _ = writeln!(s, "{:<10} {:>8} {:>10} {:>12}", r.id, r.priority, f.packets, f.bytes);
    }
    if !c.drops.is_empty() {
        let _ = writeln!(s, "{:<24} {:>10}  why", "drop reason", "packets");
        for (name, n) in &c.drops {
            let desc = DropReason::from_name(name).map(|r| r.description()).unwrap_or("");
            let _ = writeln!(s, "{name:<24} {n:>10}  {desc}");
        }
    }
    let lookups = c.cache_hit + c.cache_miss;
    if lookups > 0 {
        let _ = writeln!(
            s,
            "lookups: flow cache hits {} ({:.1}%), classifier {} (mean {:.2} tables probed)",
            c.cache_hit,
            100.0 * c.cache_hit as f64 / lookups as f64,
            c.cache_miss,
            if c.cache_miss > 0 { c.tuples_probed as f64 / c.cache_miss as f64 } else { 0.0 }
        );
    }
    s
}

/// A trace as numbered steps, the frames produced and the counters moved.
pub fn trace(r: &TraceReport) -> String {
    r.to_string()
}
