//! `overlayd`: the overlay dataplane.
//!
//! - `check`: validate a configuration and show what it compiles to;
//! - `replay`: run pcap or pcapng files through the real pipeline, no privileges needed;
//! - `trace`: explain one packet's path through the rules;
//! - `why`: whether one address reaches another, and if not what stops it;
//! - `run`: the daemon (today its control plane: the API, persistence and
//!   rule publication; the AF_XDP I/O layer is issue 5).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use dataplane::api_types::{Counters, Summary};
use dataplane::render;
use engine::compile::{compile, RuleSet};
use engine::model::Config;

#[derive(Parser)]
#[command(name = "overlayd", version, about = "Userspace VXLAN/GRE overlay dataplane")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: restore the accepted state and serve the control API.
    Run {
        /// Where accepted state is kept (created mode 0700).
        #[arg(long, default_value = "/var/lib/overlayd")]
        state_dir: PathBuf,
        /// The API's Unix socket (created mode 0600).
        #[arg(long, default_value = "/run/overlayd/api.sock")]
        socket: PathBuf,
        /// Configuration used when the state directory is empty; re-read on SIGHUP.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Uids allowed on the socket besides the daemon's own (repeatable).
        #[arg(long = "allow-uid")]
        allow_uids: Vec<u32>,
        /// Also serve the API on this TCP address (needs --token-file).
        #[arg(long)]
        listen_tcp: Option<std::net::SocketAddr>,
        /// File holding the bearer token TCP clients must present.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve the control API only: attach no interface, move no packet.
        #[arg(long)]
        control_only: bool,
        /// Worker threads (default: one per queue, at most one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Start from the state before the last accepted change
        /// (state.json.prev), setting state.json aside: the way out when
        /// state.json is refused. Use once, by hand.
        #[arg(long, conflicts_with = "start_empty")]
        restore_previous: bool,
        /// Start as from an empty state directory (from --config if given),
        /// setting the stored state aside. Use once, by hand.
        #[arg(long)]
        start_empty: bool,
    },
    /// Validate a configuration and print the compiled summary.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run pcap or pcapng files through the pipeline and print the counters.
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// PORT=FILE: traffic arriving on PORT, pcap or pcapng (repeatable).
        #[arg(long = "input", value_parser = port_file, required = true)]
        inputs: Vec<(String, PathBuf)>,
        /// PORT=FILE: where to write what PORT sends, pcapng if FILE ends in
        /// .pcapng, else pcap (repeatable).
        #[arg(long = "output", value_parser = port_file)]
        outputs: Vec<(String, PathBuf)>,
        #[arg(long)]
        json: bool,
    },
    /// Why can (or can't) one address reach another, from the configuration
    /// alone: the path, or the first blocker and what to change.
    Why {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        question: dataplane::why::WhyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Explain the path of one packet.
    Trace {
        #[arg(long)]
        config: PathBuf,
        /// The port the packet arrives on.
        #[arg(long)]
        in_port: String,
        /// The frame as hex digits.
        #[arg(long, conflicts_with = "packet", required_unless_present = "packet")]
        hex: Option<String>,
        /// A description such as eth(dst=02:00:00:00:00:02)/ipv4(dst=198.51.100.2)/udp(dport=53).
        #[arg(long)]
        packet: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not PORT=FILE")]
struct NotPortFile(String);

fn port_file(s: &str) -> Result<(String, PathBuf), NotPortFile> {
    match s.split_once('=') {
        Some((p, f)) if !p.is_empty() && !f.is_empty() => Ok((p.to_string(), PathBuf::from(f))),
        _ => Err(NotPortFile(s.into())),
    }
}

/// Exit codes scripts can rely on.
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_IO: u8 = 4;

fn load(path: &PathBuf) -> Result<Arc<RuleSet>, (u8, String)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| (EXIT_IO, format!("{}: {e}", path.display())))?;
    let cfg =
        Config::from_toml(&text).map_err(|e| (EXIT_CONFIG, format!("{}: {e}", path.display())))?;
    compile(&cfg).map(Arc::new).map_err(|e| (EXIT_CONFIG, format!("{}: {e}", path.display())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("overlayd: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The configuration file of `run`: the document and its `[cluster]` section.
fn read_config(
    path: &PathBuf,
) -> Result<(Config, Option<dataplane::cluster::ClusterSettings>), (u8, String)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| (EXIT_IO, format!("{}: {e}", path.display())))?;
    dataplane::cluster::settings::read_file_text(&text)
        .map_err(|e| (EXIT_CONFIG, format!("{}: {e}", path.display())))
}

fn run(cli: Cli) -> Result<(), (u8, String)> {
    match cli.cmd {
        Cmd::Run {
            state_dir,
            socket,
            config,
            allow_uids,
            listen_tcp,
            token_file,
            control_only,
            workers,
            restore_previous,
            start_empty,
        } => {
            let (initial, cluster) = match config.as_ref().map(read_config).transpose()? {
                Some((c, s)) => (Some(c), s),
                None => (None, None),
            };
            let token = match &token_file {
                Some(f) => {
                    let t = std::fs::read_to_string(f)
                        .map_err(|e| (EXIT_IO, format!("{}: {e}", f.display())))?;
                    let t = t.trim().to_string();
                    if t.len() < 16 {
                        return Err((
                            EXIT_USAGE,
                            format!("{}: the token must be at least 16 characters", f.display()),
                        ));
                    }
                    Some(t)
                }
                None => None,
            };
            if listen_tcp.is_some() && token.is_none() {
                return Err((EXIT_USAGE, "--listen-tcp needs --token-file".into()));
            }
            let opts = dataplane::run::RunOptions {
                state_dir,
                socket,
                config,
                initial,
                allow_uids,
                recovery: match (restore_previous, start_empty) {
                    (true, _) => dataplane::store::Recovery::RestorePrevious,
                    (_, true) => dataplane::store::Recovery::StartEmpty,
                    _ => dataplane::store::Recovery::None,
                },
                tcp: listen_tcp,
                token,
                datapath: (!control_only).then_some(dataplane::datapath::DatapathOptions {
                    workers,
                    ..Default::default()
                }),
                cluster,
            };
            dataplane::run::run(opts).map_err(|e| (EXIT_IO, e.to_string()))?;
        }
        Cmd::Check { config, json } => {
            let rs = load(&config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&Summary::new(&rs)).unwrap());
            } else {
                print!("{}", render::summary(&rs));
            }
        }
        Cmd::Replay { config, inputs, outputs, json } => {
            let rs = load(&config)?;
            let report = dataplane::replay::replay(rs.clone(), &inputs, &outputs).map_err(|e| {
                let code = if matches!(e, dataplane::replay::ReplayError::UnknownPort { .. }) {
                    EXIT_USAGE
                } else {
                    EXIT_IO
                };
                (code, e.to_string())
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&Counters::new(&rs, &report.counters)).unwrap()
                );
            } else {
                print!("{}", render::counters(&rs, &report.counters));
                for (port, n) in &report.written {
                    println!("wrote {n} frames for port {port}");
                }
            }
            if !report.conserved {
                return Err((1, "counters do not add up: this is a bug, please report it".into()));
            }
        }
        Cmd::Why { config, question, json } => {
            let rs = load(&config)?;
            let o = dataplane::why::Observed::offline();
            let report = dataplane::why::why(rs, &o, &question.request())
                .map_err(|e| (EXIT_USAGE, format!("--{}: {e}", e.field())))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            } else {
                print!("{}", render::why(&report));
            }
        }
        Cmd::Trace { config, in_port, hex, packet, json } => {
            let rs = load(&config)?;
            let port = rs.port_index(&in_port).ok_or_else(|| {
                (EXIT_USAGE, format!("--in-port: no port named {in_port:?} in the configuration"))
            })?;
            let frame = match (hex, packet) {
                (Some(h), _) => engine::packet_spec::parse_hex(&h)
                    .map_err(|e| (EXIT_USAGE, format!("--hex: {e}")))?,
                (None, Some(p)) => engine::packet_spec::build(&p)
                    .map_err(|e| (EXIT_USAGE, format!("--packet: {e}")))?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            // Offline: the rules alone, no learned next hops or interface MACs.
            let cx = engine::trace::TraceContext::default();
            let report = engine::trace::trace_packet(rs, &cx, port, &frame, 0);
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            } else {
                print!("{}", render::trace(&report));
            }
        }
    }
    Ok(())
}
