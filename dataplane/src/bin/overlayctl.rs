//! `overlayctl`: the command line of the control API.
//!
//! Exit codes: 0 done, 1 server error, 2 usage, 3 refused (invalid request),
//! 4 cannot reach the daemon, 5 conflict (stale generation: read and retry).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dataplane::api_types::{
    Applied, Counters, ErrorBody, OffloadView, Placement, PortProbe, Representors, RuleView, Sriov,
    Status, TunnelStatus, VfView,
};
use dataplane::client::{request, request_streaming, Response};
use engine::model::{FdbEntry, Port};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Parser)]
#[command(name = "overlayctl", version, about = "Control an overlayd daemon")]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = "/run/overlayd/api.sock")]
    socket: PathBuf,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Daemon version, uptime and generation.
    Status,
    /// The whole configuration document.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Packet, drop, rule, port and tunnel counters.
    Counters,
    /// Rules: list, add, delete.
    Rule {
        #[command(subcommand)]
        cmd: RuleCmd,
    },
    /// Tunnels: list (with traffic, drops, liveness and next hop), delete.
    Tunnel {
        #[command(subcommand)]
        cmd: NamedCmd,
    },
    /// Ports: list, delete.
    Port {
        #[command(subcommand)]
        cmd: NamedCmd,
    },
    /// Static FDB entries: list, add, delete.
    Fdb {
        #[command(subcommand)]
        cmd: FdbCmd,
    },
    /// SR-IOV virtual functions of a physical function: show, set, count.
    Vf {
        #[command(subcommand)]
        cmd: VfCmd,
    },
    /// Flow offload: where each rule runs; turn it on or off.
    Offload {
        #[command(subcommand)]
        cmd: OffloadCmd,
    },
    /// Why can (or can't) one address reach another: the path, or the first
    /// blocker and what to change.
    Why(dataplane::why::WhyArgs),
    /// Record live packets, with their fate, to pcapng (a file, or - for
    /// standard output: `overlayctl capture -w - | tshark -r -`).
    Capture(CaptureArgs),
    /// Cluster mode: the shared store through this daemon (docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        cmd: dataplane::cluster::cli::ClusterCmd,
    },
    /// Explain one packet's path through the live rules.
    Trace {
        #[arg(long)]
        in_port: String,
        #[arg(long, conflicts_with = "hex", required_unless_present = "hex")]
        packet: Option<String>,
        #[arg(long)]
        hex: Option<String>,
    },
}

#[derive(Subcommand)]
enum RuleCmd {
    List,
    /// Add a rule: overlayctl rule add --id 5 --priority 10 --match in_port=wl0,ip_dst=198.51.100.0/24 --action encap=t1
    Add {
        #[arg(long)]
        id: u32,
        #[arg(long, default_value_t = 0)]
        priority: u16,
        /// field=value pairs, comma separated (docs/configuration.md lists the fields).
        #[arg(long = "match", default_value = "")]
        matches: String,
        /// An action: drop, pop_vlan, count, or name=value such as encap=t1 (repeatable, in order).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
    },
    Del {
        id: u32,
    },
}

#[derive(Subcommand)]
enum VfCmd {
    /// The VFs as the device reports them, and its switch's representors.
    Show { pf: String },
    /// Set settings of one VF (only those given change); saved in the configuration.
    Set {
        pf: String,
        vf: u32,
        #[arg(long)]
        mac: Option<String>,
        /// Port VLAN (0 removes it).
        #[arg(long)]
        vlan: Option<u16>,
        /// Priority of the port VLAN (needs --vlan).
        #[arg(long)]
        qos: Option<u8>,
        #[arg(long, value_parser = ["on", "off"])]
        spoof_check: Option<String>,
        #[arg(long, value_parser = ["on", "off"])]
        trust: Option<String>,
        #[arg(long, value_parser = ["auto", "enable", "disable"])]
        link_state: Option<String>,
        /// Mbit/s, with --max-tx-rate.
        #[arg(long, requires = "max_tx_rate")]
        min_tx_rate: Option<u32>,
        /// Mbit/s (0 = no limit), with --min-tx-rate.
        #[arg(long, requires = "min_tx_rate")]
        max_tx_rate: Option<u32>,
    },
    /// Set the number of VFs (sriov_numvfs).
    Count { pf: String, num_vfs: u32 },
}

#[derive(Subcommand)]
enum OffloadCmd {
    /// Devices, and where each rule runs (hardware, or software and why).
    Status,
    Enable,
    Disable,
}

/// One row of `tunnel list`: configuration, traffic, liveness, next hop, drops.
fn tunnel_row(t: &TunnelStatus) -> Vec<String> {
    let ago = |s: Option<u64>| s.map_or_else(|| "never".into(), |s| format!("{s}s ago"));
    let drops: Vec<String> = t.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
    vec![
        cell(&t.name),
        cell(t.kind),
        cell(t.local),
        cell(t.remote),
        cell(t.vni_or_key),
        cell(&t.uplink),
        format!("{}/{}", t.encap.packets, t.encap.bytes),
        format!("{}/{}", t.decap.packets, t.decap.bytes),
        ago(t.last_rx_secs),
        ago(t.last_tx_secs),
        dataplane::render::next_hop_text(&t.next_hop),
        if drops.is_empty() { "-".into() } else { drops.join(",") },
    ]
}

/// Percent-encodes a query value.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// "hardware on DEV" or "software: reason".
fn placement_text(p: Option<&Placement>) -> String {
    match p {
        Some(Placement::Hardware { device, pref, handle }) => {
            format!("hardware on {device} (pref {pref}, handle {handle})")
        }
        Some(Placement::Software { reason, .. }) => format!("software: {reason}"),
        None => "-".into(),
    }
}

/// A field as a table cell: strings and words as they are, numbers as
/// digits, nothing as "-", anything else as compact JSON.
fn cell(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) => "-".into(),
        Ok(v) => v.to_string(),
        Err(e) => format!("({e})"),
    }
}

#[derive(Subcommand)]
enum NamedCmd {
    List,
    Del { name: String },
}

#[derive(Subcommand)]
enum FdbCmd {
    List,
    Add {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        tunnel: String,
    },
    Del {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        mac: String,
    },
}

/// A value as typed: numbers stay numbers, everything else is a string.
fn typed(v: &str) -> serde_json::Value {
    match v.parse::<u64>() {
        Ok(n) => n.into(),
        Err(_) => match v.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            Some(n) => n.into(),
            None => v.into(),
        },
    }
}

fn match_json(s: &str) -> Result<serde_json::Value, (u8, String)> {
    let mut m = serde_json::Map::new();
    for kv in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (k, v) =
            kv.split_once('=').ok_or_else(|| (2, format!("--match: {kv:?} is not field=value")))?;
        m.insert(k.trim().to_string(), typed(v.trim()));
    }
    Ok(m.into())
}

fn action_json(a: &str) -> serde_json::Value {
    match a.split_once('=') {
        Some((k, v)) => serde_json::json!({ k.trim(): typed(v.trim()) }),
        None => a.trim().into(),
    }
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the accepted configuration (TOML, or JSON with --json).
    Get,
    /// Replace the configuration with FILE (TOML), based on the current generation.
    Apply {
        file: PathBuf,
        /// Apply only if the daemon is still at this generation.
        #[arg(long)]
        if_generation: Option<u64>,
    },
}

fn fail(code: u8, msg: String) -> ExitCode {
    eprintln!("overlayctl: {msg}");
    ExitCode::from(code)
}

/// Turns an error response into the message and exit code scripts rely on.
fn check(r: Response) -> Result<Response, (u8, String)> {
    if r.status < 300 {
        return Ok(r);
    }
    let msg = match serde_json::from_slice::<ErrorBody>(&r.body) {
        Ok(ErrorBody { error, path: Some(p) }) => format!("{p}: {error}"),
        Ok(ErrorBody { error, path: None }) => error,
        Err(_) => String::from_utf8_lossy(&r.body).into_owned(),
    };
    let code = match r.status {
        409 => 5,
        400..=499 => 3,
        _ => 1,
    };
    Err((code, format!("{msg} (HTTP {})", r.status)))
}

fn table(head: &str, rows: impl Iterator<Item = Vec<String>>) {
    println!("{head}");
    for row in rows {
        println!("{}", row.join("\t"));
    }
}

/// A list of `T` (when not printed as JSON already) as a table.
fn list<T: DeserializeOwned>(
    r: Option<Response>,
    head: &str,
    row: impl Fn(&T) -> Vec<String>,
) -> Result<(), (u8, String)> {
    if let Some(r) = r {
        table(head, parse::<Vec<T>>(&r)?.iter().map(row));
    }
    Ok(())
}

/// A response read as the document it is.
fn parse<T: DeserializeOwned>(r: &Response) -> Result<T, (u8, String)> {
    serde_json::from_slice(&r.body).map_err(|e| (1, format!("unexpected answer: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => fail(code, msg),
    }
}

fn run(cli: &Cli) -> Result<(), (u8, String)> {
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
        request(&cli.socket, method, path, headers, body)
            .map_err(|e| (4, format!("cannot reach overlayd at {}: {e}", cli.socket.display())))
            .and_then(check)
    };
    // With --json, the server's document as it came; without, the typed
    // document (None), for the caller to print.
    let get = |path: &str| -> Result<Option<Response>, (u8, String)> {
        let r = call("GET", path, &[], None)?;
        if cli.json {
            println!("{:#}", r.json());
            return Ok(None);
        }
        Ok(Some(r))
    };
    let generation = || -> Result<u64, (u8, String)> {
        Ok(parse::<Status>(&call("GET", "/v1/status", &[], None)?)?.generation)
    };
    let ops = |ops: serde_json::Value| -> Result<(), (u8, String)> {
        let g = generation()?;
        let body = serde_json::to_vec(&serde_json::json!({ "generation": g, "ops": ops })).unwrap();
        let r = call("POST", "/v1/config/ops", &[], Some(&body))?;
        println!("applied: generation {}", parse::<Applied>(&r)?.generation);
        Ok(())
    };
    match &cli.cmd {
        Cmd::Cluster { cmd } => dataplane::cluster::cli::run(&cli.socket, cli.json, cmd)?,
        Cmd::Rule { cmd: RuleCmd::List } => {
            if let Some(r) = get("/v1/rules")? {
                let rules: Vec<RuleView> = parse(&r)?;
                println!("id\tpriority\tmatch\tactions\truns in");
                for r in &rules {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.rule.id,
                        r.rule.priority,
                        cell(&r.rule.matches),
                        cell(&r.rule.actions),
                        placement_text(r.placement.as_ref())
                    );
                }
            }
        }
        Cmd::Vf { cmd: VfCmd::Show { pf } } => {
            if let Some(r) = get(&format!("/v1/offload/vfs?pf={}", query_value(pf)))? {
                let v: VfView = parse(&r)?;
                match &v.sriov {
                    Sriov::Unavailable { error } => println!("{pf}: {error}"),
                    Sriov::Counts { num_vfs, total_vfs } => {
                        println!("{pf}: {num_vfs} of {total_vfs} VFs")
                    }
                }
                table(
                    "vf\tmac\tvlan\tqos\tspoof_check\ttrust\tlink_state\tmin_tx_rate\tmax_tx_rate",
                    v.vfs.iter().map(|s| {
                        vec![
                            cell(s.vf),
                            cell(s.mac),
                            cell(s.vlan),
                            cell(s.qos),
                            cell(s.spoof_check),
                            cell(s.trust),
                            cell(s.link_state),
                            cell(s.min_tx_rate),
                            cell(s.max_tx_rate),
                        ]
                    }),
                );
                match &v.representors {
                    Representors::Found(r) => {
                        println!(
                            "switch {}: {} other ports",
                            v.switch_id.as_deref().unwrap_or("?"),
                            r.len()
                        );
                        for x in r {
                            println!(
                                "  {}\t{}",
                                x.interface,
                                x.port_name.as_deref().unwrap_or("-")
                            );
                        }
                    }
                    Representors::Unavailable { error } => println!("representors: {error}"),
                }
            }
        }
        Cmd::Vf {
            cmd:
                VfCmd::Set {
                    pf,
                    vf,
                    mac,
                    vlan,
                    qos,
                    spoof_check,
                    trust,
                    link_state,
                    min_tx_rate,
                    max_tx_rate,
                },
        } => {
            let mut v = serde_json::json!({ "pf": pf, "vf": vf });
            let on = |x: &Option<String>| x.as_ref().map(|s| s == "on");
            for (k, val) in [
                ("mac", mac.as_ref().map(|m| serde_json::json!(m))),
                ("vlan", vlan.map(|x| serde_json::json!(x))),
                ("qos", qos.map(|x| serde_json::json!(x))),
                ("spoof_check", on(spoof_check).map(|x| serde_json::json!(x))),
                ("trust", on(trust).map(|x| serde_json::json!(x))),
                ("link_state", link_state.as_ref().map(|x| serde_json::json!(x))),
                ("min_tx_rate", min_tx_rate.map(|x| serde_json::json!(x))),
                ("max_tx_rate", max_tx_rate.map(|x| serde_json::json!(x))),
            ] {
                if let Some(val) = val {
                    v[k] = val;
                }
            }
            ops(serde_json::json!([{ "set_vf": v }]))?
        }
        Cmd::Vf { cmd: VfCmd::Count { pf, num_vfs } } => {
            ops(serde_json::json!([{ "set_num_vfs": { "pf": pf, "num_vfs": num_vfs } }]))?
        }
        Cmd::Offload { cmd: OffloadCmd::Enable } => {
            ops(serde_json::json!([{ "set_offload": { "enabled": true } }]))?
        }
        Cmd::Offload { cmd: OffloadCmd::Disable } => {
            ops(serde_json::json!([{ "set_offload": { "enabled": false } }]))?
        }
        Cmd::Offload { cmd: OffloadCmd::Status } => {
            if let Some(r) = get("/v1/offload")? {
                let v: OffloadView = parse(&r)?;
                let o = &v.status;
                println!(
                    "offload {}: {} rules in hardware, {} in software",
                    match (o.active, o.enabled) {
                        (false, _) => "inactive",
                        (true, true) => "enabled",
                        (true, false) => "disabled",
                    },
                    o.hardware_rules,
                    o.software_rules
                );
                for (k, p) in &o.ports {
                    match p {
                        PortProbe::Switchdev { switch_id } => {
                            println!("  port {k}: switch {switch_id}")
                        }
                        PortProbe::NotSwitchdev { error } => println!("  port {k}: {error}"),
                    }
                }
                for (k, d) in &o.devices {
                    println!(
                        "  device {k}: {} filters{}",
                        d.filters,
                        d.error.as_ref().map(|e| format!(", error: {e}")).unwrap_or_default()
                    );
                }
                table(
                    "rule\tpriority\truns in",
                    v.rules.iter().map(|r| {
                        vec![
                            r.id.to_string(),
                            r.priority.to_string(),
                            placement_text(Some(&r.placement)),
                        ]
                    }),
                );
            }
        }
        Cmd::Rule { cmd: RuleCmd::Add { id, priority, matches, actions } } => {
            let rule = serde_json::json!({
                "id": id, "priority": priority, "match": match_json(matches)?,
                "actions": actions.iter().map(|a| action_json(a)).collect::<Vec<_>>(),
            });
            ops(serde_json::json!([{ "add_rule": rule }]))?
        }
        Cmd::Rule { cmd: RuleCmd::Del { id } } => ops(serde_json::json!([{ "remove_rule": id }]))?,
        Cmd::Tunnel { cmd: NamedCmd::List } => list(
            get("/v1/tunnels/status")?,
            "name\ttype\tlocal\tremote\tvni/key\tuplink\tsent (pkts/bytes)\treceived (pkts/bytes)\tlast rx\tlast tx\tnext hop\tdrops",
            tunnel_row,
        )?,
        Cmd::Tunnel { cmd: NamedCmd::Del { name } } => {
            ops(serde_json::json!([{ "remove_tunnel": name }]))?
        }
        Cmd::Port { cmd: NamedCmd::List } => {
            list(get("/v1/ports")?, "name\tkind\tinterface\tmac", |p: &Port| {
                vec![cell(&p.name), cell(p.kind), cell(&p.interface), cell(p.mac)]
            })?
        }
        Cmd::Port { cmd: NamedCmd::Del { name } } => {
            ops(serde_json::json!([{ "remove_port": name }]))?
        }
        Cmd::Fdb { cmd: FdbCmd::List } => {
            list(get("/v1/fdb")?, "vni\tmac\ttunnel", |f: &FdbEntry| {
                vec![cell(f.vni), cell(f.mac), cell(&f.tunnel)]
            })?
        }
        Cmd::Fdb { cmd: FdbCmd::Add { vni, mac, tunnel } } => {
            ops(serde_json::json!([{ "add_fdb": { "vni": vni, "mac": mac, "tunnel": tunnel } }]))?
        }
        Cmd::Fdb { cmd: FdbCmd::Del { vni, mac } } => {
            ops(serde_json::json!([{ "remove_fdb": { "vni": vni, "mac": mac } }]))?
        }
        Cmd::Status => {
            if let Some(r) = get("/v1/status")? {
                let s: Status = parse(&r)?;
                println!(
                    "overlayd {} (api {}), up {} s, generation {}",
                    s.version, s.api, s.uptime_secs, s.generation
                );
                for t in &s.tunnels {
                    let r = tunnel_row(t);
                    println!(
                        "tunnel {}: sent {}, received {}, last rx {}, last tx {}, next hop {}, drops {}",
                        r[0], r[6], r[7], r[8], r[9], r[10], r[11]
                    );
                }
                let o = &s.offload;
                if o.active {
                    println!(
                        "offload {}: {} rules in hardware, {} in software{}",
                        if o.enabled { "enabled" } else { "disabled" },
                        o.hardware_rules,
                        o.software_rules,
                        o.vf_error
                            .as_ref()
                            .map(|e| format!("; VF settings refused: {e}"))
                            .unwrap_or_default()
                    );
                }
                if let Some(t) = s.io.as_ref().and_then(|io| io.tier.as_ref()) {
                    let named = |m: &std::collections::BTreeMap<String, u64>| -> String {
                        let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
                        if parts.is_empty() {
                            "none".into()
                        } else {
                            parts.join(", ")
                        }
                    };
                    println!(
                        "xdp tier: {} entries (of {} per port), {} hits, {} installs, {} evictions, {} invalidations",
                        t.entries, t.capacity, t.hits, t.installs, t.evictions, t.invalidations
                    );
                    println!("  install failures: {}", named(&t.install_failures));
                    println!("  kept on AF_XDP: {}", named(&t.not_in_tier));
                    for p in &t.ports {
                        if let Some(e) = &p.not_output {
                            println!("  port {}: not an output: {e}", p.port);
                        }
                    }
                }
            }
        }
        Cmd::Config { cmd: ConfigCmd::Get } => {
            if let Some(r) = get("/v1/config")? {
                print!("{}", parse::<engine::model::Config>(&r)?.to_toml());
            }
        }
        Cmd::Config { cmd: ConfigCmd::Apply { file, if_generation } } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| (2, format!("{}: {e}", file.display())))?;
            // Parse only: the daemon validates, and answers with the field path.
            let doc: toml::Value =
                toml::from_str(&text).map_err(|e| (3, format!("{}: {e}", file.display())))?;
            let base = match if_generation {
                Some(g) => *g,
                None => generation()?,
            };
            let body = serde_json::to_vec(&doc).expect("TOML values serialise as JSON");
            let g = base.to_string();
            let r = call("PUT", "/v1/config", &[("If-Match", g.as_str())], Some(&body))?;
            println!("applied: generation {}", parse::<Applied>(&r)?.generation);
        }
        Cmd::Counters => {
            if let Some(r) = get("/v1/counters")? {
                let c: Counters = parse(&r)?;
                println!(
                    "rx {}  tx {}  dropped {}  conserved {}",
                    c.rx, c.tx, c.dropped, c.conserved
                );
                for (k, v) in &c.drops {
                    println!("  {k:<24} {v}");
                }
            }
        }
        Cmd::Why(args) => {
            let body = serde_json::to_vec(&args.request()).expect("a request serialises");
            let r = call("POST", "/v1/why", &[], Some(&body))?;
            if cli.json {
                println!("{:#}", r.json());
            } else {
                print!("{}", dataplane::render::why(&parse(&r)?));
            }
        }
        Cmd::Capture(args) => capture(&cli.socket, args)?,
        Cmd::Trace { in_port, packet, hex } => {
            let req = serde_json::json!({ "in_port": in_port, "packet": packet, "hex": hex });
            let body = serde_json::to_vec(&req).unwrap();
            let r = call("POST", "/v1/trace", &[], Some(&body))?;
            if cli.json {
                println!("{:#}", r.json());
            } else {
                let t: engine::trace::TraceReport = serde_json::from_slice(&r.body)
                    .map_err(|e| (1, format!("unexpected answer: {e}")))?;
                print!("{}", dataplane::render::trace(&t));
            }
        }
    }
    Ok(())
}

// ---- overlayctl capture ----

#[derive(clap::Args)]
struct CaptureArgs {
    /// Where to write the pcapng: a file, or - for standard output.
    #[arg(short = 'w', long = "write")]
    write: PathBuf,
    /// Only packets received or sent on this port (repeatable).
    #[arg(long = "port")]
    ports: Vec<String>,
    /// Packets as received, as sent, or both.
    #[arg(long, value_parser = ["in", "out", "both"], default_value = "both")]
    direction: String,
    /// Only packets decapsulated from, or headed into, this tunnel.
    #[arg(long)]
    tunnel: Option<String>,
    /// Only packets that matched the rule with this id.
    #[arg(long)]
    rule: Option<u32>,
    #[arg(long, value_parser = ["forwarded", "dropped"])]
    verdict: Option<String>,
    /// Only packets dropped (or one of whose copies was) with this reason, as
    /// `overlayctl counters` names it.
    #[arg(long)]
    reason: Option<String>,
    /// Stop after this many packets.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds (decimals allowed).
    #[arg(short = 'd', long)]
    duration: Option<f64>,
    /// Bytes kept of each packet.
    #[arg(long)]
    snaplen: Option<u32>,
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C ends a capture cleanly: the handler is installed without
/// SA_RESTART, so the wait for the next packet returns.
fn catch_interrupt() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); the
    // sigaction structure is fully initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

fn capture(socket: &std::path::Path, a: &CaptureArgs) -> Result<(), (u8, String)> {
    use dataplane::api_types::{CaptureDirection, CaptureRequest, Verdict};
    use dataplane::io::pcapng::StreamSummary;
    use std::io::Write;

    let duration_ms = match a.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            return Err((2, "--duration must be a positive number of seconds".into()))
        }
        Some(d) => Some(((d * 1000.0).round() as u64).max(1)),
        None => None,
    };
    let req = CaptureRequest {
        ports: a.ports.clone(),
        direction: match a.direction.as_str() {
            "in" => CaptureDirection::In,
            "out" => CaptureDirection::Out,
            _ => CaptureDirection::Both,
        },
        tunnel: a.tunnel.clone(),
        rule: a.rule,
        verdict: a.verdict.as_deref().map(|v| match v {
            "forwarded" => Verdict::Forwarded,
            _ => Verdict::Dropped,
        }),
        reason: a.reason.clone(),
        count: a.count,
        duration_ms,
        snaplen: a.snaplen,
    };
    let to_stdout = a.write.as_os_str() == "-";
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let f = std::fs::File::create(&a.write)
            .map_err(|e| (2, format!("{}: {e}", a.write.display())))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let mut summary = StreamSummary::default();
    let mut written = 0u64;
    let mut sink = |b: &[u8]| -> std::io::Result<()> {
        summary.feed(b);
        out.write_all(b)?;
        written += b.len() as u64;
        // Whoever reads the pipe sees each packet as it comes.
        out.flush()
    };
    catch_interrupt();
    let body = serde_json::to_vec(&req).expect("a request serialises");
    let r = request_streaming(socket, "POST", "/v1/capture", &body, &mut sink);
    drop(out);
    let refused = |e: (u8, String)| {
        if !to_stdout {
            let _ = std::fs::remove_file(&a.write);
        }
        e
    };
    match r {
        Ok(r) => drop(check(r).map_err(refused)?),
        // Whoever read the pipe stopped reading: the capture ends there.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            return Err(refused((4, format!("capture from overlayd at {}: {e}", socket.display()))))
        }
    }
    let dest = if to_stdout { "standard output".into() } else { a.write.display().to_string() };
    if !summary.pending().is_empty() && !to_stdout {
        // Interrupted inside a block: keep the whole ones.
        let keep = written - summary.pending().len() as u64;
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&a.write) {
            let _ = f.set_len(keep);
        }
    }
    let lost = summary.lost();
    eprintln!(
        "overlayctl: {} packets captured to {dest}{}",
        summary.packets,
        if lost > 0 {
            format!("; {lost} selected but not recorded (the capture buffer was full)")
        } else {
            String::new()
        }
    );
    Ok(())
}
