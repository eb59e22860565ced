//! `overlayd`: the overlay dataplane.
//!
//! - `check`: validate a configuration and show what it compiles to;
//! - `replay`: run pcap or pcapng files through the real pipeline, no privileges needed;
//! - `trace`: explain one packet's path through the rules;
//! - `why`: whether one address reaches another, and if not what stops it;
//! - `run`: the daemon: the datapath, the control API, persistence;
//! - `completions`, `man`: shell completions and man pages from these definitions.
//!
//! Exit codes are `overlayctl`'s (dataplane::cli::exit, docs/user-guide.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

use dataplane::api_types::{Counters, Summary};
use dataplane::cli::{out, CommandError, Exit};
use dataplane::render;
use engine::compile::{compile, RuleSet};
use engine::model::Config;

/// jemalloc: under a rule change a second, glibc's allocator left resident
/// memory up to 9 % apart from one sample to the next while the live heap
/// stayed flat (docs/decisions.md, "A steady heap, second pass: jemalloc").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its settings from this symbol before `main`.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 = &dataplane::io::sys::JEMALLOC_CONF[0];

#[derive(Parser)]
#[command(name = "overlayd", version = dataplane::VERSION, about = "Userspace VXLAN/GRE overlay dataplane")]
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
        /// File holding the read-write bearer token of TCP clients.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// File holding a read-only bearer token: GET requests, trace, why
        /// and /metrics (for a Prometheus scraper), no change.
        #[arg(long)]
        read_token_file: Option<PathBuf>,
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
        /// Remove the XDP programs and maps a previous overlayd left pinned
        /// (its tier's flows included) instead of taking them over.
        #[arg(long)]
        fresh: bool,
        /// On SIGTERM, remove the XDP programs and maps too (a clean stop
        /// that is not a restart); by default they stay and keep
        /// forwarding the tier's flows until the next start takes them over.
        #[arg(long)]
        remove_on_exit: bool,
        /// Do not pin the XDP programs: they detach when overlayd exits.
        #[arg(long, conflicts_with_all = ["fresh", "remove_on_exit"])]
        no_pin: bool,
        /// Where to pin (a directory on a BPF filesystem; default
        /// /sys/fs/bpf/overlayd, mounting /sys/fs/bpf if need be).
        #[arg(long)]
        bpf_dir: Option<PathBuf>,
        /// Planned upgrade: take the AF_XDP sockets, packet memory and
        /// counters over from the overlayd serving --socket (same
        /// arguments otherwise), which exits once this one serves; if this
        /// one fails first, that one serves on.
        #[arg(long, conflicts_with_all = ["fresh", "no_pin", "control_only"])]
        take_over: bool,
    },
    /// List the XDP programs and maps overlayd left pinned on this host
    /// (every network namespace), and whether each still serves an interface;
    /// and the punt devices of tc ports in this namespace (text only).
    Pinned {
        #[arg(long)]
        json: bool,
        /// Where to pin (a directory on a BPF filesystem; default
        /// /sys/fs/bpf/overlayd, mounting /sys/fs/bpf if need be).
        #[arg(long)]
        bpf_dir: Option<PathBuf>,
    },
    /// Remove what overlayd left pinned in this network namespace (its XDP
    /// programs detach) and its tc ports' punt devices, and whatever is
    /// pinned for interfaces that are gone. Run it only when no overlayd
    /// runs in this namespace.
    Cleanup {
        /// Only this interface's.
        #[arg(long)]
        interface: Option<String>,
        /// Where to pin (a directory on a BPF filesystem; default
        /// /sys/fs/bpf/overlayd, mounting /sys/fs/bpf if need be).
        #[arg(long)]
        bpf_dir: Option<PathBuf>,
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
    /// Print the shell completion script (bash, zsh, fish) to standard output.
    Completions { shell: dataplane::cli::generate::CompletionShell },
    /// Write the man pages (overlayd.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
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

fn load(path: &PathBuf) -> Result<Arc<RuleSet>, CommandError> {
    let (cfg, _cluster) = read_config(path)?;
    compile(&cfg)
        .map(Arc::new)
        .map_err(|e| CommandError::new(Exit::Invalid, format!("{}: {e}", path.display())))
}

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if json && e.use_stderr() => {
            return CommandError::new(Exit::Usage, e.to_string().trim()).report("overlayd", true)
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report("overlayd", json),
    }
}

/// The configuration file of `run`: the document and its `[cluster]` section.
fn read_config(
    path: &PathBuf,
) -> Result<(Config, Option<dataplane::cluster::ClusterSettings>), CommandError> {
    let text = std::fs::read_to_string(path).map_err(|e| CommandError::file(path, e))?;
    dataplane::cluster::settings::read_file_text(&text)
        .map_err(|e| CommandError::new(Exit::Invalid, format!("{}: {e}", path.display())))
}

fn token_from(file: &Option<PathBuf>) -> Result<Option<String>, CommandError> {
    use dataplane::api_tokens::{read_token_file, TokenFileError};
    file.as_deref().map(read_token_file).transpose().map_err(|e| match &e {
        TokenFileError::Read { path, .. } => CommandError::file(path, e.to_string()),
        TokenFileError::Short { .. } => CommandError::new(Exit::Usage, e.to_string()),
    })
}

fn run(cli: Cli) -> Result<(), CommandError> {
    match cli.cmd {
        Cmd::Run {
            state_dir,
            socket,
            config,
            allow_uids,
            listen_tcp,
            token_file,
            read_token_file,
            control_only,
            workers,
            restore_previous,
            start_empty,
            fresh,
            remove_on_exit,
            no_pin,
            bpf_dir,
            take_over,
        } => {
            let pin_required = bpf_dir.is_some();
            if let Some(d) = bpf_dir {
                dataplane::io::pin::set_root(d);
            }
            let (initial, cluster) = match config.as_ref().map(read_config).transpose()? {
                Some((c, s)) => (Some(c), s),
                None => (None, None),
            };
            let token = token_from(&token_file)?;
            let read_token = token_from(&read_token_file)?;
            if listen_tcp.is_some() && token.is_none() && read_token.is_none() {
                return Err(CommandError::new(
                    Exit::Usage,
                    "--listen-tcp needs --token-file (or --read-token-file)",
                ));
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
                read_token,
                datapath: (!control_only).then_some(dataplane::datapath::DatapathOptions {
                    workers,
                    pin: !no_pin,
                    pin_required,
                    ..Default::default()
                }),
                fresh,
                remove_on_exit,
                cluster,
                take_over,
            };
            dataplane::run::run(opts)
                .map_err(|e| CommandError::new(Exit::Failed, e.to_string()))?;
        }
        Cmd::Pinned { json, bpf_dir } => {
            if let Some(d) = bpf_dir {
                dataplane::io::pin::set_root(d);
            }
            let list = dataplane::pinned::list();
            if json {
                out::json(&list);
            } else {
                out::print(&dataplane::pinned::render(&list));
                let punts = dataplane::io::tc_port::punt_devices();
                out::print(&dataplane::pinned::render_punt_devices(&punts));
            }
        }
        Cmd::Cleanup { interface, bpf_dir } => {
            if let Some(d) = bpf_dir {
                dataplane::io::pin::set_root(d);
            }
            for line in dataplane::pinned::cleanup(interface.as_deref())
                .map_err(|e| CommandError::new(Exit::Failed, e.to_string()))?
            {
                out::print(&format!("{line}\n"));
            }
        }
        Cmd::Check { config, json } => {
            let rs = load(&config)?;
            if json {
                out::json(&Summary::new(&rs));
            } else {
                out::print(&render::summary(&rs));
            }
        }
        Cmd::Replay { config, inputs, outputs, json } => {
            let rs = load(&config)?;
            let report = dataplane::replay::replay(rs.clone(), &inputs, &outputs).map_err(|e| {
                let exit = if matches!(e, dataplane::replay::ReplayError::UnknownPort { .. }) {
                    Exit::Usage
                } else {
                    Exit::File
                };
                CommandError::new(exit, e.to_string())
            })?;
            let counters = Counters::new(&rs, &report.counters);
            if json {
                out::json(&counters);
            } else {
                out::print(&render::replay_counters(&counters));
                for (port, n) in &report.written {
                    out::line(&format!("wrote {n} frames for port {port}"));
                }
            }
            if !report.conserved {
                return Err(CommandError::new(
                    Exit::Failed,
                    "counters do not add up: this is a bug, please report it",
                ));
            }
        }
        Cmd::Why { config, question, json } => {
            let rs = load(&config)?;
            let o = dataplane::why::Observed::offline();
            let report = dataplane::why::why(rs, &o, &question.request())
                .map_err(|e| CommandError::new(Exit::Usage, format!("--{}: {e}", e.field())))?;
            if json {
                out::json(&report);
            } else {
                out::print(&render::why(&report));
            }
        }
        Cmd::Trace { config, in_port, hex, packet, json } => {
            let rs = load(&config)?;
            let port = rs.port_index(&in_port).ok_or_else(|| {
                CommandError::new(
                    Exit::Usage,
                    format!("--in-port: no port named {in_port:?} in the configuration"),
                )
            })?;
            let frame = match (hex, packet) {
                (Some(h), _) => engine::packet_spec::parse_hex(&h)
                    .map_err(|e| CommandError::new(Exit::Usage, format!("--hex: {e}")))?,
                (None, Some(p)) => engine::packet_spec::build(&p)
                    .map_err(|e| CommandError::new(Exit::Usage, format!("--packet: {e}")))?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            // Offline: the rules alone, no learned next hops or interface MACs.
            let cx = engine::trace::TraceContext::default();
            let report = engine::trace::trace_packet(rs, &cx, port, &frame, 0);
            if json {
                out::json(&report);
            } else {
                out::print(&render::trace(&report));
            }
        }
        Cmd::Completions { shell } => {
            let script = dataplane::cli::generate::completions(Cli::command(), shell);
            out::print(&String::from_utf8_lossy(&script));
        }
        Cmd::Man { dir } => {
            let pages = dataplane::cli::generate::man_pages(Cli::command(), &dir)
                .map_err(|e| CommandError::file(&dir, e))?;
            out::line(&format!("wrote {} man pages to {}", pages.len(), dir.display()));
        }
    }
    Ok(())
}
