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
    match &cli.cmd {
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
