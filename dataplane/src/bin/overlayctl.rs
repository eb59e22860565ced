//! `overlayctl`: the command line of the control API.
//!
//! Exit codes: 0 done, 1 server error, 2 usage, 3 refused (invalid request),
//! 4 cannot reach the daemon, 5 conflict (stale generation: read and retry).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dataplane::client::{request, Response};

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
    /// Tunnels: list, delete.
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

/// "hardware on DEV" or "software: reason" from a placement object.
fn placement_text(p: &serde_json::Value) -> String {
    match p["runs_in"].as_str() {
        Some("hardware") => format!(
            "hardware on {} (pref {}, handle {})",
            p["device"].as_str().unwrap_or("?"),
            p["pref"],
            p["handle"]
        ),
        Some(w) => match p["reason"].as_str() {
            Some(r) => format!("{w}: {r}"),
            None => w.to_string(),
        },
        None => "-".into(),
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
    let j = r.json();
    let msg = match (j["error"].as_str(), j["path"].as_str()) {
        (Some(e), Some(p)) => format!("{p}: {e}"),
        (Some(e), None) => e.to_string(),
        _ => String::from_utf8_lossy(&r.body).into_owned(),
    };
    let code = match r.status {
        409 => 5,
        400..=499 => 3,
        _ => 1,
    };
    Err((code, format!("{msg} (HTTP {})", r.status)))
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
    let ops = |ops: serde_json::Value| -> Result<(), (u8, String)> {
        let g = call("GET", "/v1/status", &[], None)?.json()["generation"].as_u64().unwrap_or(0);
        let body = serde_json::to_vec(&serde_json::json!({ "generation": g, "ops": ops })).unwrap();
        let r = call("POST", "/v1/config/ops", &[], Some(&body))?;
        println!("applied: generation {}", r.json()["generation"]);
        Ok(())
    };
    let list = |path: &str, columns: &[&str]| -> Result<(), (u8, String)> {
        let j = call("GET", path, &[], None)?.json();
        if cli.json {
            println!("{j:#}");
            return Ok(());
        }
        println!("{}", columns.join("\t"));
        for item in j.as_array().into_iter().flatten() {
            let row: Vec<String> = columns
                .iter()
                .map(|c| match &item[*c] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".into(),
                    v => v.to_string(),
                })
                .collect();
            println!("{}", row.join("\t"));
        }
        Ok(())
    };
    match &cli.cmd {
        Cmd::Rule { cmd: RuleCmd::List } => {
            let j = call("GET", "/v1/rules", &[], None)?.json();
            if cli.json {
                println!("{j:#}");
            } else {
                println!("id\tpriority\tmatch\tactions\truns in");
                for r in j.as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r["id"],
                        r["priority"],
                        r["match"],
                        r["actions"],
                        placement_text(&r["placement"])
                    );
                }
            }
        }
        Cmd::Vf { cmd: VfCmd::Show { pf } } => {
            let j =
                call("GET", &format!("/v1/offload/vfs?pf={}", query_value(pf)), &[], None)?.json();
            if cli.json {
                println!("{j:#}");
            } else {
                match j["sriov"]["error"].as_str() {
                    Some(e) => println!("{pf}: {e}"),
                    None => println!(
                        "{pf}: {} of {} VFs",
                        j["sriov"]["num_vfs"], j["sriov"]["total_vfs"]
                    ),
                }
                println!(
                    "vf\tmac\tvlan\tqos\tspoof_check\ttrust\tlink_state\tmin_tx_rate\tmax_tx_rate"
                );
                for v in j["vfs"].as_array().into_iter().flatten() {
                    let f = |k: &str| match &v[k] {
                        serde_json::Value::Null => "-".to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        x => x.to_string(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        f("vf"),
                        f("mac"),
                        f("vlan"),
                        f("qos"),
                        f("spoof_check"),
                        f("trust"),
                        f("link_state"),
                        f("min_tx_rate"),
                        f("max_tx_rate")
                    );
                }
                match j["representors"].as_array() {
                    Some(r) => {
                        println!(
                            "switch {}: {} other ports",
                            j["switch_id"].as_str().unwrap_or("?"),
                            r.len()
                        );
                        for x in r {
                            println!(
                                "  {}\t{}",
                                x["interface"].as_str().unwrap_or("?"),
                                x["port_name"].as_str().unwrap_or("-")
                            );
                        }
                    }
                    None => println!(
                        "representors: {}",
                        j["representors"]["error"].as_str().unwrap_or("-")
                    ),
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
            let j = call("GET", "/v1/offload", &[], None)?.json();
            if cli.json {
                println!("{j:#}");
            } else {
                println!(
                    "offload {}: {} rules in hardware, {} in software",
                    if j["active"] == true {
                        if j["enabled"] == true {
                            "enabled"
                        } else {
                            "disabled"
                        }
                    } else {
                        "inactive"
                    },
                    j["hardware_rules"].as_u64().unwrap_or(0),
                    j["software_rules"].as_u64().unwrap_or(0)
                );
                for (k, v) in j["ports"].as_object().into_iter().flatten() {
                    match v["switch_id"].as_str() {
                        Some(id) => println!("  port {k}: switch {id}"),
                        None => println!("  port {k}: {}", v["error"].as_str().unwrap_or("?")),
                    }
                }
                for (k, v) in j["devices"].as_object().into_iter().flatten() {
                    println!(
                        "  device {k}: {} filters{}",
                        v["filters"],
                        v["error"].as_str().map(|e| format!(", error: {e}")).unwrap_or_default()
                    );
                }
                println!("rule\tpriority\truns in");
                for r in j["rules"].as_array().into_iter().flatten() {
                    println!("{}\t{}\t{}", r["id"], r["priority"], placement_text(r));
                }
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
        Cmd::Tunnel { cmd: NamedCmd::List } => {
            list("/v1/tunnels", &["name", "type", "local", "remote", "vni", "key", "uplink"])?
        }
        Cmd::Tunnel { cmd: NamedCmd::Del { name } } => {
            ops(serde_json::json!([{ "remove_tunnel": name }]))?
        }
        Cmd::Port { cmd: NamedCmd::List } => {
            list("/v1/ports", &["name", "kind", "interface", "mac"])?
        }
        Cmd::Port { cmd: NamedCmd::Del { name } } => {
            ops(serde_json::json!([{ "remove_port": name }]))?
        }
        Cmd::Fdb { cmd: FdbCmd::List } => list("/v1/fdb", &["vni", "mac", "tunnel"])?,
        Cmd::Fdb { cmd: FdbCmd::Add { vni, mac, tunnel } } => {
            ops(serde_json::json!([{ "add_fdb": { "vni": vni, "mac": mac, "tunnel": tunnel } }]))?
        }
        Cmd::Fdb { cmd: FdbCmd::Del { vni, mac } } => {
            ops(serde_json::json!([{ "remove_fdb": { "vni": vni, "mac": mac } }]))?
        }
        Cmd::Status => {
            let j = call("GET", "/v1/status", &[], None)?.json();
            if cli.json {
                println!("{j:#}");
            } else {
                println!(
                    "overlayd {} (api {}), up {} s, generation {}",
                    j["version"].as_str().unwrap_or("?"),
                    j["api"].as_str().unwrap_or("?"),
                    j["uptime_secs"],
                    j["generation"]
                );
                let o = &j["offload"];
                if o["active"] == true {
                    println!(
                        "offload {}: {} rules in hardware, {} in software{}",
                        if o["enabled"] == true { "enabled" } else { "disabled" },
                        o["hardware_rules"],
                        o["software_rules"],
                        o["vf_error"]
                            .as_str()
                            .map(|e| format!("; VF settings refused: {e}"))
                            .unwrap_or_default()
                    );
                }
                let t = &j["io"]["tier"];
                if t.is_object() {
                    let named = |v: &serde_json::Value| -> String {
                        let m = v.as_object().into_iter().flatten();
                        let parts: Vec<String> = m.map(|(k, n)| format!("{k} {n}")).collect();
                        if parts.is_empty() {
                            "none".into()
                        } else {
                            parts.join(", ")
                        }
                    };
                    println!(
                        "xdp tier: {} entries (of {} per port), {} hits, {} installs, {} evictions, {} invalidations",
                        t["entries"], t["capacity"], t["hits"], t["installs"], t["evictions"], t["invalidations"]
                    );
                    println!("  install failures: {}", named(&t["install_failures"]));
                    println!("  kept on AF_XDP: {}", named(&t["not_in_tier"]));
                    for p in t["ports"].as_array().into_iter().flatten() {
                        if let Some(e) = p["not_output"].as_str() {
                            println!(
                                "  port {}: not an output: {e}",
                                p["port"].as_str().unwrap_or("?")
                            );
                        }
                    }
                }
            }
        }
        Cmd::Config { cmd: ConfigCmd::Get } => {
            let r = call("GET", "/v1/config", &[], None)?;
            if cli.json {
                println!("{:#}", r.json());
            } else {
                let c: engine::model::Config = serde_json::from_slice(&r.body)
                    .map_err(|e| (1, format!("unexpected answer: {e}")))?;
                print!("{}", c.to_toml());
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
                None => {
                    call("GET", "/v1/status", &[], None)?.json()["generation"].as_u64().unwrap_or(0)
                }
            };
            let body = serde_json::to_vec(&doc).expect("TOML values serialise as JSON");
            let g = base.to_string();
            let r = call("PUT", "/v1/config", &[("If-Match", g.as_str())], Some(&body))?;
            println!("applied: generation {}", r.json()["generation"]);
        }
        Cmd::Counters => {
            let j = call("GET", "/v1/counters", &[], None)?.json();
            if cli.json {
                println!("{j:#}");
            } else {
                println!(
                    "rx {}  tx {}  dropped {}  conserved {}",
                    j["rx"], j["tx"], j["dropped"], j["conserved"]
                );
                if let Some(d) = j["drops"].as_object() {
                    for (k, v) in d {
                        println!("  {k:<24} {v}");
                    }
                }
            }
        }
        Cmd::Trace { in_port, packet, hex } => {
            let req = serde_json::json!({ "in_port": in_port, "packet": packet, "hex": hex });
            let body = serde_json::to_vec(&req).unwrap();
            let r = call("POST", "/v1/trace", &[], Some(&body))?;
            if cli.json {
                println!("{:#}", r.json());
            } else {
                let t: engine::pipeline::TraceReport = serde_json::from_slice(&r.body)
                    .map_err(|e| (1, format!("unexpected answer: {e}")))?;
                print!("{}", dataplane::render::trace(&t));
            }
        }
    }
    Ok(())
}
