//! What `overlayctl` prints for people, from the API's documents: status,
//! rules with their counters and placement, tunnels, ports, FDB, offload
//! and VFs. With `--json` the documents themselves are printed instead.

use std::collections::BTreeMap;
use std::fmt::Write;

use engine::model::{Backend, FdbEntry, Port};
use engine::tier_fit::tier_words;
use serde::{Deserialize, Serialize};

use crate::api_types::{
    Counters, IoStatus, MemoryStatus, OffloadStatus, OffloadView, Placement, PortProbe,
    Representors, RuleView, Sriov, Status, TunnelStatus, VfView,
};
use crate::io::tier::TierStatus;
use crate::render::table::{ago, Table};
use crate::render::{actions_text, match_text, named_counts, next_hop_text, word};

/// One line of `rule list`: the rule, where it runs, and its counters
/// (`--json` prints these).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRow {
    #[serde(flatten)]
    pub view: RuleView,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since it last matched a packet; `null`: not since start.
    pub last_hit_secs: Option<u64>,
}

/// The rules joined with their counters by id (a rule added between the two
/// reads shows zero).
pub fn rule_rows(rules: Vec<RuleView>, c: &Counters) -> Vec<RuleRow> {
    rules
        .into_iter()
        .map(|view| {
            let n = c.rules.iter().find(|r| r.id == view.rule.id);
            RuleRow {
                packets: n.map_or(0, |n| n.packets),
                bytes: n.map_or(0, |n| n.bytes),
                last_hit_secs: n.and_then(|n| n.last_hit_secs),
                view,
            }
        })
        .collect()
}

pub fn rules(rows: &[RuleRow]) -> String {
    let mut t = Table::new(&[
        "id#",
        "priority#",
        "match",
        "actions",
        "packets#",
        "bytes#",
        "last hit",
        "runs in",
    ]);
    for r in rows {
        let rule = &r.view.rule;
        t.row([
            rule.id.to_string(),
            rule.priority.to_string(),
            match_text(&rule.matches),
            actions_text(&rule.actions),
            r.packets.to_string(),
            r.bytes.to_string(),
            ago(r.last_hit_secs),
            runs_in(&r.view),
        ]);
    }
    t.render()
}

/// Where a rule runs: in hardware, or in software after the first packet
/// either in the XDP tier or on AF_XDP, with why (and, with offload active,
/// why not in hardware).
pub fn runs_in(v: &RuleView) -> String {
    let offload_off = |code: &str| code == "disabled" || code == "inactive";
    match (&v.placement, &v.tier) {
        (Some(Placement::Hardware { .. }), _) | (_, None) => placement_text(v.placement.as_ref()),
        (Some(Placement::Software { code, reason }), Some(t)) if !offload_off(code) => {
            format!("{}; not hardware: {reason}", t.text)
        }
        (_, Some(t)) => t.text.clone(),
    }
}

/// "hardware on DEV" or "software: reason".
pub fn placement_text(p: Option<&Placement>) -> String {
    match p {
        Some(Placement::Hardware { device, pref, handle }) => {
            format!("hardware on {device} (pref {pref}, handle {handle})")
        }
        Some(Placement::Software { reason, .. }) => format!("software: {reason}"),
        None => "-".into(),
    }
}

pub fn tunnels(list: &[TunnelStatus]) -> String {
    let mut t = Table::new(&[
        "name",
        "type",
        "local",
        "remote",
        "vni/key#",
        "uplink",
        "sent pkts#",
        "sent bytes#",
        "rcvd pkts#",
        "rcvd bytes#",
        "last rx",
        "last tx",
        "next hop",
        "drops",
    ]);
    for x in list {
        t.row([
            x.name.clone(),
            word(x.kind),
            x.local.to_string(),
            x.remote.to_string(),
            x.vni_or_key.map_or_else(|| "-".into(), |v| v.to_string()),
            x.uplink.clone(),
            x.encap.packets.to_string(),
            x.encap.bytes.to_string(),
            x.decap.packets.to_string(),
            x.decap.bytes.to_string(),
            ago(x.last_rx_secs),
            ago(x.last_tx_secs),
            next_hop_text(&x.next_hop),
            named_counts(&x.drops),
        ]);
    }
    t.render()
}

pub fn ports(list: &[Port]) -> String {
    let mut t = Table::new(&["name", "kind", "interface", "backend", "mac"]);
    for p in list {
        t.row([
            p.name.clone(),
            word(p.kind),
            p.interface.clone().unwrap_or_else(|| p.name.clone()),
            word(p.backend),
            p.mac.map_or_else(|| "-".into(), |m| m.to_string()),
        ]);
    }
    t.render()
}

/// Static and learned FDB entries in one table, then the IP bindings
/// learned from ARP and ND, then the learning counters.
pub fn fdb(fixed: &[FdbEntry], learned: &engine::learn::L2View) -> String {
    let mut t = Table::new(&["vni#", "mac", "via", "source", "age s#", "moves#"]);
    for f in fixed {
        t.row([
            f.vni.to_string(),
            f.mac.to_string(),
            f.tunnel.clone(),
            "static".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    for m in &learned.macs {
        let via = m.tunnel.clone().or_else(|| m.port.clone()).unwrap_or_else(|| "-".into());
        t.row([
            m.vni.to_string(),
            word(m.mac),
            via,
            "learned".into(),
            format!("{:.1}", m.age_secs),
            m.moves.to_string(),
        ]);
    }
    let mut s = t.render();
    if !learned.bindings.is_empty() {
        let mut b = Table::new(&["vni#", "ip", "mac", "age s#"]);
        for x in &learned.bindings {
            b.row([x.vni.to_string(), word(x.ip), word(x.mac), format!("{:.1}", x.age_secs)]);
        }
        let _ = write!(s, "\n{b}");
    }
    let c = &learned.counters;
    let no_learn: Vec<String> = c.no_learn.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(
        s,
        "\nlearned {}, moved {}, aged {}, not learned: {}; ARP/ND answered {}, flooded {}, conflicting {}",
        c.learned,
        c.moved,
        c.aged,
        if no_learn.is_empty() { "none".into() } else { no_learn.join(", ") },
        c.answered,
        c.flooded,
        c.conflicting
    );
    s
}

/// `status` for people: the daemon, its I/O (ports, queues, neighbours),
/// tunnels, offload and the XDP tier.
pub fn status(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "overlayd {} (api {}), up {}, generation {}",
        s.version,
        s.api,
        uptime(s.uptime_secs),
        s.generation
    );
    if let Some(d) = &s.cluster {
        let _ = writeln!(o, "cluster: {d}");
    }
    match &s.io {
        None => {
            let _ = writeln!(o, "datapath: none (control only: no interface attached)");
        }
        Some(io) => io_text(&mut o, io),
    }
    if !s.tunnels.is_empty() {
        let mut t = Table::new(&[
            "tunnel",
            "type",
            "remote",
            "sent pkts#",
            "rcvd pkts#",
            "last rx",
            "last tx",
            "next hop",
            "drops",
        ]);
        for x in &s.tunnels {
            t.row([
                x.name.clone(),
                word(x.kind),
                x.remote.to_string(),
                x.encap.packets.to_string(),
                x.decap.packets.to_string(),
                ago(x.last_rx_secs),
                ago(x.last_tx_secs),
                next_hop_text(&x.next_hop),
                named_counts(&x.drops),
            ]);
        }
        let _ = write!(o, "\n{t}");
    }
    let _ = writeln!(o, "\n{}", offload_line(&s.offload));
    if let Some(e) = &s.offload.vf_error {
        let _ = writeln!(o, "  VF settings refused: {e}");
    }
    let _ = writeln!(o, "{}", memory_line(&s.memory));
    o
}

/// What the daemon holds after giving free heap pages back.
fn memory_line(m: &MemoryStatus) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    match (m.purges, m.resident_kib) {
        (0, _) => "memory: not read yet (the first purge comes within a second of start)".into(),
        (n, 0) => format!("memory: not readable after purge {n} (see the daemon's log)"),
        (n, r) => format!(
            "memory: {:.1} MiB resident, {:.1} MiB of it anonymous, right after purge {n} ({:.1} s after start)",
            mib(r),
            mib(m.anon_kib),
            m.at_ms as f64 / 1e3
        ),
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s => format!("{} d {} h", s / 86400, s / 3600 % 24),
    }
}

fn yes_no(b: Option<bool>) -> String {
    b.map_or_else(|| "-".into(), |b| if b { "yes" } else { "no" }.into())
}

fn io_text(o: &mut String, io: &IoStatus) {
    let _ = writeln!(
        o,
        "datapath: {}, {} workers",
        if io.running { "running" } else { "DOWN (see the daemon's log)" },
        io.workers
    );
    let mut ports = Table::new(&[
        "port",
        "interface",
        "kind",
        "backend",
        "xdp mode",
        "zero copy",
        "queues#",
        "mtu#",
        "rx pkts#",
        "tx pkts#",
    ]);
    let mut queues = Table::new(&[
        "port",
        "queue#",
        "rx pkts#",
        "tx pkts#",
        "kernel rx drops#",
        "rx ring full#",
        "fill ring empty#",
        "tx ring empty#",
        "checksums done#",
    ]);
    for p in &io.ports {
        let (rx, tx) =
            p.sockets.iter().fold((0, 0), |(r, t), q| (r + q.rx_packets, t + q.tx_packets));
        ports.row([
            p.port.clone(),
            p.interface.clone(),
            word(p.kind),
            // "tc (auto)": chosen by `backend = "auto"` for this interface.
            if p.backend_auto { format!("{} (auto)", word(p.backend)) } else { word(p.backend) },
            p.xdp_mode.map_or_else(|| "-".into(), word),
            yes_no(p.zero_copy),
            p.queues.to_string(),
            p.mtu.map_or_else(|| "-".into(), |m| m.to_string()),
            rx.to_string(),
            tx.to_string(),
        ]);
        for q in &p.sockets {
            let ring = |f: fn(&crate::io::RingStats) -> u64| {
                q.rings.as_ref().map_or_else(|| "-".into(), |r| f(r).to_string())
            };
            queues.row([
                p.port.clone(),
                q.queue.to_string(),
                q.rx_packets.to_string(),
                q.tx_packets.to_string(),
                ring(|r| r.rx_dropped),
                ring(|r| r.rx_ring_full),
                ring(|r| r.rx_fill_ring_empty),
                ring(|r| r.tx_ring_empty),
                q.rx_checksums_completed.to_string(),
            ]);
        }
    }
    if !ports.is_empty() {
        let _ = write!(o, "\n{ports}");
    }
    for p in &io.ports {
        for a in &p.advice {
            let _ = writeln!(o, "advice: port {}: {a}", p.port);
        }
    }
    if !queues.is_empty() {
        let _ = write!(o, "\n{queues}");
    }
    let mut n = Table::new(&["neighbour", "interface", "via", "mac", "state"]);
    for x in &io.neighbours {
        n.row([
            x.remote.to_string(),
            x.interface.clone(),
            x.via.map_or_else(|| "on-link".into(), |v| v.to_string()),
            x.mac.clone().unwrap_or_else(|| "-".into()),
            x.state.clone(),
        ]);
    }
    if !n.is_empty() {
        let _ = write!(o, "\n{n}");
    }
    match &io.tier {
        None => {
            let _ = writeln!(o, "\ntier: off");
        }
        Some(t) => {
            let _ = writeln!(
                o,
                "\n{}: {} entries (of {} per port), {} hits, {} installs, {} evictions, {} invalidations",
                tier_name(io, t),
                t.entries,
                t.capacity,
                t.hits,
                t.installs,
                t.evictions,
                t.invalidations
            );
            let _ = writeln!(o, "  install failures: {}", names(&t.install_failures));
            let _ = writeln!(o, "  kept on the software path: {}", names(&t.not_in_tier));
            for p in &t.ports {
                if let Some(e) = &p.not_output {
                    let _ = writeln!(o, "  port {}: not an output: {e}", p.port);
                }
            }
        }
    }
}

/// The tier by where its lookups run, in the words `trace` and `why` use
/// (`engine::tier_fit::tier_words`): `XDP tier` on AF_XDP ports, `tc tier`
/// on tc ports, each with its ports when a host has both.
fn tier_name(io: &IoStatus, t: &TierStatus) -> String {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for tp in t.ports.iter().filter(|tp| tp.entries.is_some()) {
        let backend =
            io.ports.iter().find(|p| p.port == tp.port).map_or(Backend::AfXdp, |p| p.backend);
        by_name.entry(tier_words(backend).0).or_default().push(&tp.port);
    }
    match by_name.keys().collect::<Vec<_>>()[..] {
        [] => "tier".into(),
        [name] => name.to_string(),
        _ => by_name
            .iter()
            .map(|(name, ports)| format!("{name} on {}", ports.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn names(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// The offloader in one line.
pub fn offload_line(o: &OffloadStatus) -> String {
    let state = match (o.active, o.enabled) {
        (false, _) => "inactive",
        (true, true) => "enabled",
        (true, false) => "disabled",
    };
    let why = o.why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
    format!(
        "offload {state}: {} rules in hardware, {} in software{why}",
        o.hardware_rules, o.software_rules
    )
}

pub fn offload(v: &OffloadView) -> String {
    let o = &v.status;
    let mut s = String::new();
    let _ = writeln!(s, "{}", offload_line(o));
    let mut t = Table::new(&["interface", "switchdev"]);
    for (k, p) in &o.ports {
        t.row([
            k.clone(),
            match p {
                PortProbe::Switchdev { switch_id } => format!("switch {switch_id}"),
                PortProbe::NotSwitchdev { error } => format!("no: {error}"),
            },
        ]);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    let mut t = Table::new(&["device", "filters#", "error"]);
    for (k, d) in &o.devices {
        t.row([k.clone(), d.filters.to_string(), d.error.clone().unwrap_or_else(|| "-".into())]);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    let mut t = Table::new(&["rule#", "priority#", "runs in"]);
    for r in &v.rules {
        t.row([r.id.to_string(), r.priority.to_string(), placement_text(Some(&r.placement))]);
    }
    let _ = write!(s, "\n{t}");
    s
}

pub fn vfs(pf: &str, v: &VfView) -> String {
    let mut s = String::new();
    match &v.sriov {
        Sriov::Unavailable { error } => {
            let _ = writeln!(s, "{pf}: {error}");
        }
        Sriov::Counts { num_vfs, total_vfs } => {
            let _ = writeln!(s, "{pf}: {num_vfs} of {total_vfs} VFs");
        }
    }
    let mut t = Table::new(&[
        "vf#",
        "mac",
        "vlan#",
        "qos#",
        "spoof check",
        "trust",
        "link state",
        "min tx rate#",
        "max tx rate#",
    ]);
    for x in &v.vfs {
        t.row([
            word(x.vf),
            word(x.mac),
            word(x.vlan),
            word(x.qos),
            word(x.spoof_check),
            word(x.trust),
            word(x.link_state),
            word(x.min_tx_rate),
            word(x.max_tx_rate),
        ]);
    }
    let _ = write!(s, "\n{t}");
    match &v.representors {
        Representors::Found(r) => {
            let _ = writeln!(
                s,
                "\nswitch {}: {} other ports",
                v.switch_id.as_deref().unwrap_or("?"),
                r.len()
            );
            let mut t = Table::new(&["interface", "port name"]);
            for x in r {
                t.row([x.interface.clone(), x.port_name.clone().unwrap_or_else(|| "-".into())]);
            }
            let _ = write!(s, "{t}");
        }
        Representors::Unavailable { error } => {
            let _ = writeln!(s, "\nrepresentors: {error}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_line_says_what_was_read_and_when() {
        let m =
            MemoryStatus { resident_kib: 154_476, anon_kib: 107_852, purges: 520, at_ms: 594_300 };
        assert_eq!(
            memory_line(&m),
            "memory: 150.9 MiB resident, 105.3 MiB of it anonymous, right after purge 520 (594.3 s after start)"
        );
        assert!(memory_line(&MemoryStatus::default()).contains("not read yet"));
        let unreadable = MemoryStatus { purges: 3, ..MemoryStatus::default() };
        assert!(memory_line(&unreadable).contains("not readable after purge 3"));
    }

    /// The status names the tier by the programs that hold its entries: a
    /// host of tc ports (what `backend = "auto"` picks on veths) has a tc
    /// tier, not an XDP one.
    #[test]
    fn the_tier_is_named_by_where_its_entries_are_looked_up() {
        use crate::io::tier::TierPortStatus;
        use crate::report::PortStatus;
        let port = |name: &str, backend| PortStatus {
            port: name.into(),
            interface: name.into(),
            kind: engine::model::PortKind::Workload,
            backend,
            backend_auto: false,
            xdp_mode: None,
            zero_copy: None,
            offloads: None,
            queues: 1,
            mtu: None,
            steering: None,
            sockets: Vec::new(),
            tier: None,
            advice: Vec::new(),
        };
        let tier_port =
            |name: &str, entries| TierPortStatus { port: name.into(), entries, not_output: None };
        let io = |backends: [Backend; 3]| IoStatus {
            running: true,
            workers: 1,
            ports: ["wl0", "wl1", "up0"].iter().zip(backends).map(|(n, b)| port(n, b)).collect(),
            neighbours: Vec::new(),
            tier: None,
        };
        let t = TierStatus {
            ports: vec![
                tier_port("wl0", Some(1)),
                tier_port("wl1", Some(0)),
                tier_port("up0", None),
            ],
            ..TierStatus::default()
        };
        let xdp = io([Backend::AfXdp, Backend::AfXdp, Backend::Tc]);
        assert_eq!(tier_name(&xdp, &t), "XDP tier", "up0 holds no entries");
        let tc = io([Backend::Tc, Backend::Tc, Backend::AfXdp]);
        assert_eq!(tier_name(&tc, &t), "tc tier");
        let both = io([Backend::Tc, Backend::AfXdp, Backend::AfXdp]);
        assert_eq!(tier_name(&both, &t), "XDP tier on wl1; tc tier on wl0");
        let none = TierStatus { ports: vec![tier_port("up0", None)], ..TierStatus::default() };
        assert_eq!(tier_name(&xdp, &none), "tier", "no port holds entries");
        let mut s = String::new();
        io_text(&mut s, &IoStatus { tier: Some(t), ..tc });
        assert!(s.contains("\ntc tier: 0 entries"), "{s}");
    }
}
