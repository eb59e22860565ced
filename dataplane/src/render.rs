//! How rule sets, counters and traces are shown to people, as text. The
//! JSON documents for scripts are the types of `api_types`.

pub mod table;

use std::fmt::Write;

use encap::DropReason;
use engine::compile::RuleSet;
use engine::model::{Action, Match, PortKind};
use engine::trace::TraceReport;

use crate::api_types::{
    Blocker, Check, Counters, Hop, NextHopStatus, Outcome, Placement, Summary, WhyBasis, WhyReport,
};
use table::{ago, Table};

/// `overlayd check`: what a configuration compiles to, and what in its
/// rules is probably a mistake.
pub fn summary(rs: &RuleSet) -> String {
    let sum = Summary::new(rs);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "valid: generation {} (schema {}): {} ports, {} tunnels, {} rules, {} fdb entries, {} flood lists",
        sum.generation,
        sum.schema_version,
        sum.ports.len(),
        sum.tunnels.len(),
        sum.rules,
        sum.fdb_entries,
        sum.flood_lists
    );
    let mut ports = Table::new(&["port", "kind", "interface", "backend", "mac"]);
    for p in &rs.config.ports {
        ports.row([
            p.name.clone(),
            word(p.kind),
            p.interface.clone().unwrap_or_else(|| p.name.clone()),
            word(p.backend),
            p.mac.map_or_else(|| "-".into(), |m| m.to_string()),
        ]);
    }
    let _ = write!(s, "\n{ports}");
    if !rs.tunnels.is_empty() {
        let mut t = Table::new(&[
            "tunnel",
            "kind",
            "local",
            "remote",
            "uplink",
            "next hop",
            "underlay mtu#",
            "inner ip mtu#",
        ]);
        for (rt, c) in rs.tunnels.iter().zip(&sum.tunnels) {
            let kind = rs.config.tunnels.iter().find(|x| x.name == rt.name);
            t.row([
                rt.name.clone(),
                kind.map_or_else(|| "?".into(), crate::api_types::tunnel_kind),
                rt.local.to_string(),
                rt.remote.to_string(),
                c.uplink.clone(),
                if rt.static_next_hop {
                    format!("{} (static)", engine::model::Mac(rt.params.dst_mac))
                } else {
                    "neighbour table".into()
                },
                c.underlay_mtu.to_string(),
                rt.inner_ip_mtu.to_string(),
            ]);
        }
        let _ = write!(s, "\n{t}");
    }
    if !rs.config.rules.is_empty() {
        let mut t = Table::new(&["rule#", "priority#", "match", "actions"]);
        for r in &rs.config.rules {
            t.row([
                r.id.to_string(),
                r.priority.to_string(),
                match_text(&r.matches),
                actions_text(&r.actions),
            ]);
        }
        let _ = write!(s, "\n{t}");
    }
    let mut t = Table::new(&["classifier table#", "entries#", "matches on"]);
    for (i, x) in sum.tables.iter().enumerate() {
        t.row([i.to_string(), x.entries.to_string(), x.fields.join(", ")]);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    let d = &rs.decap;
    let _ = writeln!(
        s,
        "\ndecap: local VTEPs {}; vxlan ports {:?}; strict {}; verify udp checksum {}; accept zero checksum over IPv6 {}; verify gre checksum {}",
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
    if sum.warnings.is_empty() {
        let _ = writeln!(s, "warnings: none");
    } else {
        let _ = writeln!(s, "warnings ({}):", sum.warnings.len());
        for w in &sum.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

/// A serialisable word (an enum in snake_case) as a string.
pub fn word(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) => "-".into(),
        Ok(v) => v.to_string(),
        Err(e) => format!("({e})"),
    }
}

/// A match as `overlayctl rule add --match` takes it: `in_port=wl0,ip_dst=198.51.100.0/24`;
/// `*` for a match of everything.
pub fn match_text(m: &Match) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(m) else {
        return "?".into();
    };
    if fields.is_empty() {
        return "*".into();
    }
    fields
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("ethertype", serde_json::Value::Number(n)) => {
                format!("{k}={:#06x}", n.as_u64().unwrap_or(0))
            }
            _ => format!("{k}={}", word(v)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Actions as `overlayctl rule add --action` takes them, comma separated:
/// `count,encap=t1`.
pub fn actions_text(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| match serde_json::to_value(a) {
            Ok(serde_json::Value::Object(o)) => {
                o.iter().map(|(k, v)| format!("{k}={}", word(v))).collect::<Vec<_>>().join(",")
            }
            Ok(v) => word(v),
            Err(e) => format!("({e})"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Counters as tables: totals, ports, tunnels, rules (with when each last
/// matched), drops and lookups.
pub fn counters(c: &Counters) -> String {
    counter_tables(c, true)
}

/// Counters of a replay: as `counters`, without hit ages (a replay has no
/// clock of its own).
pub fn replay_counters(c: &Counters) -> String {
    counter_tables(c, false)
}

fn counter_tables(c: &Counters, ages: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "packets: rx {}  tx {}  replicas {}  generated {}  dropped {}  ({})",
        c.rx,
        c.tx,
        c.replicas,
        c.generated,
        c.dropped,
        if c.conserved { "rx + replicas + generated = tx + dropped" } else { "DO NOT ADD UP" }
    );
    let mut t = Table::new(&["port", "rx packets#", "rx bytes#", "tx packets#", "tx bytes#"]);
    for p in &c.ports {
        t.row([
            p.name.clone(),
            p.rx.packets.to_string(),
            p.rx.bytes.to_string(),
            p.tx.packets.to_string(),
            p.tx.bytes.to_string(),
        ]);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    let mut t = Table::new(&[
        "tunnel",
        "encap packets#",
        "encap bytes#",
        "decap packets#",
        "decap bytes#",
        "drops",
    ]);
    for x in &c.tunnels {
        t.row([
            x.name.clone(),
            x.encap.packets.to_string(),
            x.encap.bytes.to_string(),
            x.decap.packets.to_string(),
            x.decap.bytes.to_string(),
            named_counts(&x.drops),
        ]);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    let titles: &[&str] = if ages {
        &["rule#", "priority#", "packets#", "bytes#", "last hit"]
    } else {
        &["rule#", "priority#", "packets#", "bytes#"]
    };
    let mut t = Table::new(titles);
    for r in &c.rules {
        let mut row = vec![
            r.id.to_string(),
            r.priority.to_string(),
            r.packets.to_string(),
            r.bytes.to_string(),
        ];
        if ages {
            row.push(ago(r.last_hit_secs));
        }
        t.row(row);
    }
    if !t.is_empty() {
        let _ = write!(s, "\n{t}");
    }
    if !c.drops.is_empty() {
        let mut t = Table::new(&["drop reason", "packets#", "why"]);
        for (name, n) in &c.drops {
            let desc = DropReason::from_name(name).map(|r| r.description()).unwrap_or("");
            t.row([name.clone(), n.to_string(), desc.to_string()]);
        }
        let _ = write!(s, "\n{t}");
    }
    let lookups = c.cache.hit + c.cache.miss;
    if lookups > 0 {
        let _ = writeln!(
            s,
            "\nlookups: flow cache hits {} ({:.1}%), classifier {} (mean {:.2} tables probed)",
            c.cache.hit,
            100.0 * c.cache.hit as f64 / lookups as f64,
            c.cache.miss,
            if c.cache.miss > 0 { c.cache.tuples_probed as f64 / c.cache.miss as f64 } else { 0.0 }
        );
    }
    s
}

/// `name=n,...`, or `-` for none.
pub fn named_counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(",")
}

/// A trace as numbered steps, the frames produced and the counters moved.
pub fn trace(r: &TraceReport) -> String {
    r.to_string()
}

/// `why` as people read it: each check with its verdict, then the path, or
/// the blocker and what to change.
pub fn why(r: &WhyReport) -> String {
    let mut s = String::new();
    let basis = match r.basis {
        WhyBasis::Live => "with the datapath's live state",
        WhyBasis::ControlOnly => {
            "control only: rules and counters, no datapath (next hops and MTUs are not known)"
        }
        WhyBasis::Offline => {
            "offline: the configuration alone (next hops, MTUs and counters are not known)"
        }
    };
    let _ = writeln!(s, "why {} -> {}: generation {} ({basis})", r.from, r.to, r.generation);
    if !r.packet.is_empty() {
        let port = r.port.as_deref().unwrap_or("-");
        let _ = writeln!(s, "traced on port {port}: {}", r.packet);
    }
    for f in &r.checks {
        let v = match f.verdict {
            Outcome::Ok => "ok",
            Outcome::Blocked => "BLOCKED",
            Outcome::Note => "note",
            Outcome::Skipped => "-",
        };
        let _ = writeln!(s, "  {v:<8} {}", check_text(&f.check));
    }
    match (&r.blocker, &r.path) {
        (Some(b), _) => {
            let (what, fix) = blocker_text(b);
            let _ = writeln!(s, "blocked: {what}");
            let _ = writeln!(s, "fix: {fix}");
        }
        (None, Some(p)) => {
            let vlan = p.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default();
            let hops: Vec<String> = p
                .hops
                .iter()
                .map(|h| match h {
                    Hop::Tunnel { tunnel, remote, uplink, next_hop } => format!(
                        "tunnel {tunnel} to {remote} via {uplink} (next hop {})",
                        next_hop.as_deref().unwrap_or("unknown here")
                    ),
                    Hop::Port { port } => format!("port {port}"),
                })
                .collect();
            let _ = writeln!(
                s,
                "path: port {}{vlan} -> rule {} (priority {}): {} -> {}",
                p.port,
                p.rule,
                p.priority,
                p.actions.join(", "),
                if hops.is_empty() { "nowhere".into() } else { hops.join(" + ") }
            );
        }
        (None, None) => {
            let _ = writeln!(s, "no path and no blocker found");
        }
    }
    s
}

fn check_text(c: &Check) -> String {
    let yes_no = |b: Option<bool>, yes: &str, no: &str| match b {
        Some(true) => format!(", {yes}"),
        Some(false) => format!(", {no}"),
        None => String::new(),
    };
    match c {
        Check::Port { port, kind, chosen, vlan, attached, mtu } => {
            let Some(port) = port else { return "port: none could be chosen".into() };
            let kind = match kind {
                Some(PortKind::Uplink) => "uplink (the sender is behind a tunnel)",
                _ => "workload",
            };
            format!(
                "port {port}: {kind}, {chosen}; {}{}{}",
                vlan.map_or_else(|| "untagged".into(), |v| format!("vlan {v}")),
                yes_no(*attached, "attached", "NOT attached"),
                mtu.map(|m| format!(", MTU {m}")).unwrap_or_default()
            )
        }
        Check::Fdb { vni, mac, entry, flood } => {
            let mac = mac.as_deref().unwrap_or("the receiver (MAC not given)");
            let lookup = match entry {
                Some(t) => format!("{mac} -> tunnel {t}"),
                None => format!("no entry for {mac}"),
            };
            let flood = match flood {
                None => "no flood list".to_string(),
                Some(f) => {
                    let all: Vec<&str> =
                        f.tunnels.iter().chain(&f.ports).map(String::as_str).collect();
                    format!("flood list {}", all.join(", "))
                }
            };
            format!("fdb in VNI {vni}: {lookup}; {flood}")
        }
        Check::Rule { rule: Some(id), priority, actions, .. } => format!(
            "rule {id} (priority {}) matches: {}",
            priority.unwrap_or(0),
            actions.join(", ")
        ),
        Check::Rule { rules_on_port, .. } => {
            let on = if rules_on_port.is_empty() {
                "no rule names this port".to_string()
            } else {
                format!(
                    "rules on this port: {}",
                    rules_on_port.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                )
            };
            format!("rule: none matches ({on})")
        }
        Check::Tunnel { tunnel, id, local, remote, uplink, uplink_attached } => format!(
            "tunnel {tunnel}: {id}, {local} -> {remote} via {uplink}{}",
            yes_no(*uplink_attached, "attached", "uplink NOT attached")
        ),
        Check::Neighbour { tunnel, remote, next_hop: NextHopStatus::Unknown { why }, assumed: true } => {
            format!("next hop of tunnel {tunnel} (remote {remote}): not known here, assumed resolved ({why})")
        }
        Check::Neighbour { tunnel, remote, next_hop, .. } => {
            format!("next hop of tunnel {tunnel} (remote {remote}): {}", next_hop_text(next_hop))
        }
        Check::Mtu {
            tunnel,
            inner_mtu,
            workload_mtu,
            workload_mtu_assumed,
            underlay_mtu,
            uplink_mtu,
        } => format!(
            "mtu: tunnel {tunnel} carries inner IP packets up to {inner_mtu} (underlay {underlay_mtu}{}); the sender's MTU is {workload_mtu}{}",
            uplink_mtu.map(|m| format!(", uplink interface {m}")).unwrap_or_default(),
            if *workload_mtu_assumed {
                " (assumed: not known here); if so, larger packets are dropped (mtu_exceeded)"
            } else {
                ""
            }
        ),
        Check::Tier { tier, placement, flow } => {
            let flow = flow.as_ref().map(|f| format!("; this flow: {}", f.text)).unwrap_or_default();
            match placement {
                Some(Placement::Hardware { device, .. }) => format!(
                    "tier: the rule runs in hardware on {device}: such packets never reach {tier}"
                ),
                Some(Placement::Software { reason, .. }) => format!("tier: {tier}; {reason}{flow}"),
                None => format!("tier: {tier}{flow}"),
            }
        }
        Check::Counters { window_secs, moved } => {
            let w = window_secs.map_or_else(|| "-".into(), |s| format!("{s} s"));
            if moved.is_empty() {
                format!("counters over the last {w}: none of this path's moved")
            } else {
                let m: Vec<String> = moved.iter().map(|(k, v)| format!("{k} +{v}")).collect();
                format!("counters over the last {w}: {}", m.join(", "))
            }
        }
        Check::NotChecked { step, why } => format!("{step}: {why}"),
    }
}

/// A tunnel's next hop: its MAC and where it comes from, or why there is none.
pub fn next_hop_text(n: &NextHopStatus) -> String {
    match n {
        NextHopStatus::Static { mac } => format!("{mac} (configured)"),
        NextHopStatus::Neighbour(n) => {
            let via = n.via.map(|v| format!(" via {v}")).unwrap_or_default();
            let mac = n.mac.as_deref().unwrap_or("unresolved");
            format!("{mac} ({}{via} on {})", n.state, n.interface)
        }
        NextHopStatus::Unknown { why } => format!("unknown: {why}"),
    }
}

/// What blocks, and what to change.
fn blocker_text(b: &Blocker) -> (String, String) {
    match b {
        Blocker::DatapathDown => (
            "the datapath is not running (it failed to start after the last change of ports)".into(),
            "read the daemon's log for why, correct the ports and apply again".into(),
        ),
        Blocker::PortNotAttached { port } => (
            format!("port {port} has no socket on the running datapath"),
            format!("check that {port}'s interface exists and is up; `overlayctl status` lists the attached ports"),
        ),
        Blocker::NoWorkloadPort => (
            "the configuration has no workload port".into(),
            "add one (`[[ports]]` with `kind = \"workload\"`)".into(),
        ),
        Blocker::AmbiguousPort { candidates } => (
            format!("the sender could be behind any of {}", candidates.join(", ")),
            "say which with --port".into(),
        ),
        Blocker::NoTunnelOnUplink { port, vni } => (
            format!(
                "no tunnel{} arrives on uplink {port}",
                vni.map(|v| format!(" with VNI/key {v}")).unwrap_or_default()
            ),
            "give the VNI of a tunnel on it with --vni, or add the tunnel".into(),
        ),
        Blocker::NoFdbEntry { vni, mac, tunnels } => (
            format!("no FDB entry for {mac} in VNI {vni}, and VNI {vni} has no flood list"),
            format!(
                "add one with `overlayctl fdb add --vni {vni} --mac {mac} --tunnel {}`",
                match tunnels.as_slice() {
                    [only] => only.as_str(),
                    _ => "<tunnel>",
                }
            ),
        ),
        Blocker::NoFloodList { vni } => (
            format!("broadcast, multicast and unknown unicast in VNI {vni} have nowhere to go: no flood list (ARP requests too)"),
            format!("add a flood list for VNI {vni} (`[[flood]]` with `vni = {vni}` and its tunnels), or FDB entries"),
        ),
        Blocker::VniMismatch { asked, used, by } => (
            format!("the path uses VNI {used} ({by}), not VNI {asked}"),
            "make both ends use the same VNI".into(),
        ),
        Blocker::NoMatchingRule { port, packet, suggestion } => (
            format!("no rule matches {packet} arriving on {port}"),
            format!("add one, e.g. `overlayctl rule add {suggestion}`"),
        ),
        Blocker::RuleDrops { rule, priority } => (
            format!("rule {rule} (priority {priority}) drops it"),
            format!("delete it (`overlayctl rule del {rule}`), or add a rule of higher priority that forwards it"),
        ),
        Blocker::SelfLoop { rule, port } => (
            format!("rule {rule} sends it back out of {port}, the port it came from"),
            format!("change rule {rule}'s output"),
        ),
        Blocker::Dropped { stage, reason, description } => (
            format!("dropped at {stage}: {reason} ({description})"),
            "`overlayctl trace` with the packet above shows each step".into(),
        ),
        Blocker::NeighbourUnresolved { tunnel, remote, hop, interface, state } => {
            let what = format!(
                "neighbour {hop} on {interface} is {} (next hop of tunnel {tunnel} to {remote})",
                state.to_uppercase()
            );
            let fix = if state.starts_with("no route") {
                format!("add a route to {remote} via {interface}")
            } else if state.starts_with("route via another interface") {
                format!("the kernel routes {remote} another way: fix the route, or the tunnel's uplink")
            } else if state.starts_with("no interface") {
                format!("the uplink's interface {interface} does not exist")
            } else {
                format!("check the underlay link, and that {hop} is up and answers ARP/ND on {interface}")
            };
            (what, fix)
        }
        Blocker::MtuTooSmall { tunnel, inner_mtu, workload_mtu, port, assumed } => (
            format!(
                "inner MTU {inner_mtu} < the workload's {workload_mtu}{}: larger packets into tunnel {tunnel} are dropped (mtu_exceeded)",
                if *assumed { " (assumed: the workload's MTU is not known here)" } else { "" }
            ),
            format!(
                "lower the workload MTU to {inner_mtu} (on {port} and the workload's side), or raise the underlay's by {} (tunnel {tunnel}'s mtu and its uplink)",
                workload_mtu.saturating_sub(*inner_mtu as u32)
            ),
        ),
        Blocker::UnderlayMtuTooSmall { tunnel, underlay_mtu, uplink, interface_mtu } => (
            format!("tunnel {tunnel} assumes an underlay MTU of {underlay_mtu}, but uplink {uplink}'s interface has {interface_mtu}"),
            format!("raise {uplink}'s interface MTU to {underlay_mtu}, or set tunnel {tunnel}'s mtu to {interface_mtu}"),
        ),
        Blocker::RecentDrops { tunnel, drops, secs } => {
            let list: Vec<String> = drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let fix = if drops.contains_key("mtu_exceeded") {
                "packets larger than the tunnel carries were dropped: every sender's MTU must fit the tunnel's inner MTU (the mtu check above)"
                    .to_string()
            } else if drops.contains_key("no_neighbour") {
                "the next hop was unresolved for a while: check the underlay link".to_string()
            } else {
                "`overlayctl counters` and `overlayctl trace` show where".to_string()
            };
            (
                format!("tunnel {tunnel} dropped packets in the last {secs} s: {}", list.join(", ")),
                fix,
            )
        }
    }
}
