//! `overlayctl cluster ...`: the cluster through the local daemon.

use std::path::Path;

use clap::Subcommand;

use crate::api_types::ErrorBody;
use crate::client::{request, Response};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Connection to the store, revision, lease, conflicts; `degraded: ...`
    /// while the store is unreachable.
    Status,
    /// Registered nodes (alive: their lease holds).
    Nodes,
    /// Networks: list, or set one.
    Networks {
        #[command(subcommand)]
        cmd: Option<NetworksCmd>,
    },
    /// Workload endpoints: list, add, delete.
    Endpoints {
        #[command(subcommand)]
        cmd: EndpointsCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworksCmd {
    List,
    /// Create or replace a network.
    Set {
        name: String,
        #[arg(long)]
        vni: u32,
        #[arg(long, value_parser = ["vxlan", "gretap"], default_value = "vxlan")]
        encap: String,
        #[arg(long)]
        udp_port: Option<u16>,
        #[arg(long)]
        mtu: Option<u16>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCmd {
    List,
    /// Register a workload's MAC (and IP) in a network, owned by this node
    /// (or --node).
    Add {
        #[arg(long)]
        network: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove an endpoint of this node (--any-owner: of any node).
    Del {
        #[arg(long)]
        network: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        any_owner: bool,
    },
}

type Failure = (u8, String);

fn check(r: Response) -> Result<Response, Failure> {
    if r.status < 300 {
        return Ok(r);
    }
    let msg = match serde_json::from_slice::<ErrorBody>(&r.body) {
        Ok(ErrorBody { error, path: Some(p) }) => format!("{p}: {error}"),
        Ok(ErrorBody { error, path: None }) => error,
        Err(_) => String::from_utf8_lossy(&r.body).into_owned(),
    };
    // overlayctl's exit codes: 5 conflict, 3 refused, 1 server or store.
    let code = match r.status {
        409 => 5,
        400..=499 => 3,
        _ => 1,
    };
    Err((code, format!("{msg} (HTTP {})", r.status)))
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn table(v: &serde_json::Value, cols: &[&str]) {
    println!("{}", cols.join("\t"));
    for row in v.as_array().into_iter().flatten() {
        let cells: Vec<String> = cols.iter().map(|c| text(&row[*c])).collect();
        println!("{}", cells.join("\t"));
    }
}

/// Runs one `overlayctl cluster` command against the daemon at `socket`.
pub fn run(socket: &Path, json: bool, cmd: &ClusterCmd) -> Result<(), Failure> {
    let call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON"));
        request(socket, method, path, &[], body.as_deref())
            .map_err(|e| (4, format!("cannot reach overlayd at {}: {e}", socket.display())))
            .and_then(check)
            .map(|r| r.json())
    };
    let out = |v: &serde_json::Value, cols: &[&str]| {
        if json {
            println!("{v:#}");
        } else {
            table(v, cols);
        }
    };
    match cmd {
        ClusterCmd::Status => {
            let s = call("GET", "/v1/cluster/status", None)?;
            if json {
                println!("{s:#}");
                return Ok(());
            }
            println!(
                "node {} at {} ({})",
                text(&s["node"]),
                text(&s["prefix"]),
                text(&s["endpoints"])
            );
            match s["degraded"].as_str() {
                Some(d) => println!("{d}"),
                None => println!(
                    "connected: revision {}, lease {} (ttl {} s)",
                    s["revision"],
                    text(&s["lease"]),
                    s["lease_ttl_secs"]
                ),
            }
            if let Some(e) = s["last_error"].as_str() {
                println!("last error: {e}");
            }
            println!(
                "{} nodes, {} networks, {} endpoints, {} rules; {} batches applied (last generation {}), {} relists, {} resumes",
                s["nodes"], s["networks"], s["endpoint_count"], s["rules"], s["batches"],
                text(&s["last_generation"]), s["relists"], s["resumes"]
            );
            if let Some(e) = s["apply_error"].as_str() {
                println!("NOT APPLIED: {e}");
            }
            for c in s["conflicts"].as_array().into_iter().flatten() {
                println!("conflict: {}: {}", text(&c["what"]), text(&c["reason"]));
            }
            for c in s["invalid_records"].as_array().into_iter().flatten() {
                println!("invalid record: {}: {}", text(&c["key"]), text(&c["reason"]));
            }
        }
        ClusterCmd::Nodes => out(
            &call("GET", "/v1/cluster/nodes", None)?,
            &["name", "vteps", "labels", "networks", "local"],
        ),
        ClusterCmd::Networks { cmd: None | Some(NetworksCmd::List) } => out(
            &call("GET", "/v1/cluster/networks", None)?,
            &["name", "vni", "encap", "udp_port", "mtu"],
        ),
        ClusterCmd::Networks {
            cmd: Some(NetworksCmd::Set { name, vni, encap, udp_port, mtu }),
        } => {
            let body =
                serde_json::json!({ "vni": vni, "encap": encap, "udp_port": udp_port, "mtu": mtu });
            call("PUT", &format!("/v1/cluster/networks/{name}"), Some(body))?;
            println!("network {name}: vni {vni}");
        }
        ClusterCmd::Endpoints { cmd: EndpointsCmd::List } => {
            out(&call("GET", "/v1/cluster/endpoints", None)?, &["network", "mac", "ip", "node"])
        }
        ClusterCmd::Endpoints { cmd: EndpointsCmd::Add { network, mac, ip, node } } => {
            let body =
                serde_json::json!({ "network": network, "mac": mac, "ip": ip, "node": node });
            let r = call("POST", "/v1/cluster/endpoints", Some(body))?;
            println!(
                "endpoint {} in {} on node {}",
                text(&r["mac"]),
                text(&r["network"]),
                text(&r["node"])
            );
        }
        ClusterCmd::Endpoints { cmd: EndpointsCmd::Del { network, mac, any_owner } } => {
            let body =
                serde_json::json!({ "network": network, "mac": mac, "any_owner": any_owner });
            call("POST", "/v1/cluster/endpoints/delete", Some(body))?;
            println!("endpoint {mac} in {network} removed");
        }
    }
    Ok(())
}
