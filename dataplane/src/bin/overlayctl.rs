//! `overlayctl`: the command line of the control API, over the daemon's
//! Unix socket or over TCP with a token file.
//!
//! Exit codes (dataplane::cli::exit, the same as `overlayd`'s): 0 done,
//! 1 failed (server error), 2 usage, 3 invalid (refused request), 4 cannot
//! reach the daemon, 5 conflict (stale generation: read and retry), 6 a file
//! cannot be read or written, 7 not allowed (token, uid). With `--json`
//! every answer, and every failure, is a JSON document on standard output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use dataplane::api_types::{Applied, Counters, ErrorBody, RuleView, Status, TunnelStatus, VfView};
use dataplane::cli::{out, views, CommandError, Exit};
use dataplane::client::{Client, ClientError, Endpoint, Response};
use engine::model::{FdbEntry, Port};
use serde::de::DeserializeOwned;

#[derive(Parser)]
#[command(name = "overlayctl", version = dataplane::VERSION, about = "Control an overlayd daemon")]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = "/run/overlayd/api.sock")]
    socket: PathBuf,
    /// Reach the daemon over TCP at HOST:PORT instead (needs --token-file).
    #[arg(long, global = true, requires = "token_file")]
    tcp: Option<String>,
    /// File holding the bearer token for --tcp (read-write, or read-only).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print JSON documents (answers and failures) instead of tables.
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
    /// FDB entries: list (static and learned, with age and source), add,
    /// delete (static ones).
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
    /// Planned upgrade: the daemon starts BINARY (default: the path it was
    /// started from, i.e. the newly installed binary) with its own
    /// arguments plus --take-over, hands it its sockets, and exits; this
    /// waits and reports the old and new pid and version and the silence,
    /// or why the new one failed (the old one serves on).
    Upgrade {
        /// The new binary (absolute path).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Seconds to wait for the handover.
        #[arg(long, default_value_t = dataplane::upgrade_launch::DEFAULT_TIMEOUT_SECS)]
        timeout: u64,
    },
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
    /// Print the shell completion script (bash, zsh, fish) to standard output.
    Completions { shell: dataplane::cli::generate::CompletionShell },
    /// Write the man pages (overlayctl.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
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

fn match_json(s: &str) -> Result<serde_json::Value, CommandError> {
    let mut m = serde_json::Map::new();
    for kv in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            CommandError::new(Exit::Usage, format!("--match: {kv:?} is not field=value"))
        })?;
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

/// The daemon, and how answers are printed.
struct Ctl {
    client: Client,
    json: bool,
}

impl Ctl {
    fn connect(cli: &Cli) -> Result<Ctl, CommandError> {
        let endpoint = match (&cli.tcp, &cli.token_file) {
            (Some(addr), Some(f)) => Endpoint::Tcp {
                addr: addr.clone(),
                token: dataplane::api_tokens::read_token_file(f)
                    .map_err(|e| CommandError::new(Exit::File, e.to_string()))?,
            },
            _ => Endpoint::Unix(cli.socket.clone()),
        };
        let client =
            Client::new(endpoint).map_err(|e| CommandError::new(Exit::Failed, e.to_string()))?;
        Ok(Ctl { client, json: cli.json })
    }

    /// One request; a refusal becomes the failure with its exit code.
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, CommandError> {
        let r = self.client.request(method, path, headers, body).map_err(unreachable)?;
        refused(r)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(Response, T), CommandError> {
        let r = self.call("GET", path, &[], None)?;
        let t = parse(&r)?;
        Ok((r, t))
    }

    /// Prints the document at `path`: as the daemon sent it with `--json`,
    /// else as `text` makes it.
    fn show<T: DeserializeOwned>(
        &self,
        path: &str,
        text: impl Fn(&T) -> String,
    ) -> Result<(), CommandError> {
        let (r, t) = self.get::<T>(path)?;
        if self.json {
            out::json(&r.json());
        } else {
            out::print(&text(&t));
        }
        Ok(())
    }

    fn generation(&self) -> Result<u64, CommandError> {
        Ok(self.get::<Status>("/v1/status")?.1.generation)
    }

    /// Applies a batch of operations on the current generation.
    fn ops(&self, ops: serde_json::Value) -> Result<(), CommandError> {
        let g = self.generation()?;
        let body = serde_json::json!({ "generation": g, "ops": ops }).to_string();
        let r = self.call("POST", "/v1/config/ops", &[], Some(body.as_bytes()))?;
        self.applied(&r)
    }

    fn applied(&self, r: &Response) -> Result<(), CommandError> {
        let a: Applied = parse(r)?;
        if self.json {
            out::json(&a);
        } else {
            out::line(&format!("applied: generation {}", a.generation));
        }
        Ok(())
    }
}

/// No answer: the daemon is not there, or did not answer in time.
fn unreachable(e: ClientError) -> CommandError {
    CommandError::new(Exit::Unreachable, format!("cannot reach overlayd: {e}"))
}

/// Turns an error answer into the failure scripts rely on.
fn refused(r: Response) -> Result<Response, CommandError> {
    if r.status < 300 {
        return Ok(r);
    }
    let (error, path) = match serde_json::from_slice::<ErrorBody>(&r.body) {
        Ok(ErrorBody { error, path }) => (error, path),
        Err(_) => (String::from_utf8_lossy(&r.body).into_owned(), None),
    };
    Err(CommandError::new(Exit::of_status(r.status), error).with_path(path).with_status(r.status))
}

/// A response read as the document it is.
fn parse<T: DeserializeOwned>(r: &Response) -> Result<T, CommandError> {
    r.parse().map_err(|e| CommandError::new(Exit::Failed, format!("unexpected answer: {e}")))
}

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if json && e.use_stderr() => {
            return CommandError::new(Exit::Usage, e.to_string().trim()).report("overlayctl", true)
        }
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report("overlayctl", cli.json),
    }
}

fn run(cli: &Cli) -> Result<(), CommandError> {
    // Commands that need no daemon.
    match &cli.cmd {
        Cmd::Completions { shell } => {
            let script = dataplane::cli::generate::completions(Cli::command(), *shell);
            out::print(&String::from_utf8_lossy(&script));
            return Ok(());
        }
        Cmd::Man { dir } => {
            let pages = dataplane::cli::generate::man_pages(Cli::command(), dir)
                .map_err(|e| CommandError::file(dir, e))?;
            out::line(&format!("wrote {} man pages to {}", pages.len(), dir.display()));
            return Ok(());
        }
        // The cluster commands speak to the local daemon's socket themselves.
        Cmd::Cluster { cmd } => {
            return dataplane::cluster::cli::run(&cli.socket, cli.json, cmd).map_err(
                |(code, msg)| {
                    let exit = match code {
                        3 => Exit::Invalid,
                        4 => Exit::Unreachable,
                        5 => Exit::Conflict,
                        _ => Exit::Failed,
                    };
                    CommandError::new(exit, msg)
                },
            );
        }
        _ => {}
    }
    let ctl = Ctl::connect(cli)?;
    match &cli.cmd {
        Cmd::Completions { .. } | Cmd::Man { .. } | Cmd::Cluster { .. } => {
            unreachable!("handled above")
        }
        Cmd::Status => ctl.show("/v1/status", views::status)?,
        Cmd::Counters => ctl.show("/v1/counters", dataplane::render::counters)?,
        Cmd::Rule { cmd: RuleCmd::List } => {
            let (_, rules) = ctl.get::<Vec<RuleView>>("/v1/rules")?;
            let (_, counters) = ctl.get::<Counters>("/v1/counters")?;
            let rows = views::rule_rows(rules, &counters);
            if ctl.json {
                out::json(&rows);
            } else {
                out::print(&views::rules(&rows));
            }
        }
        Cmd::Rule { cmd: RuleCmd::Add { id, priority, matches, actions } } => {
            let rule = serde_json::json!({
                "id": id, "priority": priority, "match": match_json(matches)?,
                "actions": actions.iter().map(|a| action_json(a)).collect::<Vec<_>>(),
            });
            ctl.ops(serde_json::json!([{ "add_rule": rule }]))?
        }
        Cmd::Rule { cmd: RuleCmd::Del { id } } => {
            ctl.ops(serde_json::json!([{ "remove_rule": id }]))?
        }
        Cmd::Tunnel { cmd: NamedCmd::List } => {
            ctl.show("/v1/tunnels/status", |t: &Vec<TunnelStatus>| views::tunnels(t))?
        }
        Cmd::Tunnel { cmd: NamedCmd::Del { name } } => {
            ctl.ops(serde_json::json!([{ "remove_tunnel": name }]))?
        }
        Cmd::Port { cmd: NamedCmd::List } => {
            ctl.show("/v1/ports", |p: &Vec<Port>| views::ports(p))?
        }
        Cmd::Port { cmd: NamedCmd::Del { name } } => {
            ctl.ops(serde_json::json!([{ "remove_port": name }]))?
        }
        Cmd::Fdb { cmd: FdbCmd::List } => {
            let (_, fixed) = ctl.get::<Vec<FdbEntry>>("/v1/fdb")?;
            let (_, learned) = ctl.get::<engine::learn::L2View>("/v1/fdb/learned")?;
            if ctl.json {
                out::json(&serde_json::json!({ "static": fixed, "learned": learned }));
            } else {
                out::print(&views::fdb(&fixed, &learned));
            }
        }
        Cmd::Fdb { cmd: FdbCmd::Add { vni, mac, tunnel } } => ctl.ops(
            serde_json::json!([{ "add_fdb": { "vni": vni, "mac": mac, "tunnel": tunnel } }]),
        )?,
        Cmd::Fdb { cmd: FdbCmd::Del { vni, mac } } => {
            ctl.ops(serde_json::json!([{ "remove_fdb": { "vni": vni, "mac": mac } }]))?
        }
        Cmd::Vf { cmd: VfCmd::Show { pf } } => ctl
            .show(&format!("/v1/offload/vfs?pf={}", query_value(pf)), |v: &VfView| {
                views::vfs(pf, v)
            })?,
        Cmd::Vf { cmd } => ctl.ops(vf_ops(cmd))?,
        Cmd::Offload { cmd: OffloadCmd::Status } => ctl.show("/v1/offload", views::offload)?,
        Cmd::Offload { cmd: OffloadCmd::Enable } => {
            ctl.ops(serde_json::json!([{ "set_offload": { "enabled": true } }]))?
        }
        Cmd::Offload { cmd: OffloadCmd::Disable } => {
            ctl.ops(serde_json::json!([{ "set_offload": { "enabled": false } }]))?
        }
        Cmd::Config { cmd: ConfigCmd::Get } => {
            let (r, c) = ctl.get::<engine::model::Config>("/v1/config")?;
            if ctl.json {
                out::json(&r.json());
            } else {
                out::print(&c.to_toml());
            }
        }
        Cmd::Config { cmd: ConfigCmd::Apply { file, if_generation } } => {
            let text = std::fs::read_to_string(file).map_err(|e| CommandError::file(file, e))?;
            // Parse only: the daemon validates, and answers with the field path.
            let doc: toml::Value = toml::from_str(&text).map_err(|e| {
                CommandError::new(Exit::Invalid, format!("{}: {e}", file.display()))
            })?;
            let base = match if_generation {
                Some(g) => *g,
                None => ctl.generation()?,
            };
            let body = serde_json::to_vec(&doc).expect("TOML values serialise as JSON");
            let g = base.to_string();
            let r = ctl.call("PUT", "/v1/config", &[("If-Match", g.as_str())], Some(&body))?;
            ctl.applied(&r)?;
        }
        Cmd::Why(args) => {
            let body = serde_json::to_vec(&args.request()).expect("a request serialises");
            let r = ctl.call("POST", "/v1/why", &[], Some(&body))?;
            if ctl.json {
                out::json(&r.json());
            } else {
                out::print(&dataplane::render::why(&parse(&r)?));
            }
        }
        Cmd::Capture(args) => capture(&ctl, args)?,
        Cmd::Upgrade { binary, timeout } => {
            use dataplane::upgrade_launch::{UpgradeReport, UpgradeRequest};
            let req = UpgradeRequest { binary: binary.clone(), timeout_secs: Some(*timeout) };
            let body = serde_json::to_vec(&req).expect("a request serialises");
            let mut ctl = ctl;
            // The daemon answers within `timeout`; the margin covers its start.
            ctl.client.set_timeout(std::time::Duration::from_secs(timeout.saturating_add(10)));
            let r = ctl.call("POST", "/v1/upgrade", &[], Some(&body))?;
            if ctl.json {
                out::json(&r.json());
            } else {
                out::print(&parse::<UpgradeReport>(&r)?.summary());
            }
        }
        Cmd::Trace { in_port, packet, hex } => {
            let req = serde_json::json!({ "in_port": in_port, "packet": packet, "hex": hex });
            let r = ctl.call("POST", "/v1/trace", &[], Some(req.to_string().as_bytes()))?;
            if ctl.json {
                out::json(&r.json());
            } else {
                let t: engine::trace::TraceReport = parse(&r)?;
                out::print(&dataplane::render::trace(&t));
            }
        }
    }
    Ok(())
}

/// The operations of `vf set` and `vf count`.
fn vf_ops(cmd: &VfCmd) -> serde_json::Value {
    match cmd {
        VfCmd::Show { .. } => serde_json::json!([]),
        VfCmd::Count { pf, num_vfs } => {
            serde_json::json!([{ "set_num_vfs": { "pf": pf, "num_vfs": num_vfs } }])
        }
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
            serde_json::json!([{ "set_vf": v }])
        }
    }
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

fn capture(ctl: &Ctl, a: &CaptureArgs) -> Result<(), CommandError> {
    use dataplane::api_types::{CaptureDirection, CaptureRequest, Verdict};
    use dataplane::io::pcapng::StreamSummary;
    use std::io::Write;

    let duration_ms = match a.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            return Err(CommandError::new(
                Exit::Usage,
                "--duration must be a positive number of seconds",
            ))
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
        let f = std::fs::File::create(&a.write).map_err(|e| CommandError::file(&a.write, e))?;
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
    let body = serde_json::to_vec(&req).expect("a request serialises");
    // Ctrl-C ends the capture as a success: what was captured is kept.
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let r = ctl.client.stream("POST", "/v1/capture", &body, &mut sink, interrupted);
    drop(out);
    let refused_here = |e: CommandError| {
        if !to_stdout {
            let _ = std::fs::remove_file(&a.write);
        }
        e
    };
    match r {
        Ok(r) => drop(refused(r).map_err(refused_here)?),
        // Whoever read the pipe stopped reading: the capture ends there.
        Err(ClientError::Sink(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(ClientError::Sink(e)) => return Err(CommandError::file(&a.write, e)),
        Err(e) => return Err(refused_here(unreachable(e))),
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
    if ctl.json && !to_stdout {
        // Standard output is free: the summary as a document.
        out::json(&serde_json::json!({
            "packets": summary.packets, "not_recorded": lost, "file": a.write,
        }));
        return Ok(());
    }
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
