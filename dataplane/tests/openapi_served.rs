//! The generated OpenAPI document against the real daemon (`overlayd run
//! --control-only` on its Unix socket): the document it serves is the one
//! generated; every route it documents answers, and every answer and every
//! request body it accepts satisfies the documented schema, `offload`
//! included; a body the schema refuses is refused by the daemon too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::client::{request, Response};
use dataplane::openapi::{error_schema, operations, schema_of, Answer};
use serde_json::{json, Value};

struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("overlayd-openapi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/vxlan.toml");
        let child = Command::new(env!("CARGO_BIN_EXE_overlayd"))
            .args(["run", "--control-only", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(example)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while request(&socket, "GET", "/v1/status", &[], None).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not start serving");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket, dir }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        request(&self.socket, method, path, &[], body.as_deref()).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The schema's complaints about `value` (none: it is admitted).
fn complaints(schema: &Value, value: &Value) -> Vec<String> {
    let v = jsonschema::validator_for(schema).expect("the schema compiles");
    v.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn admitted(what: &str, schema: &Value, value: &Value) {
    let c = complaints(schema, value);
    assert!(c.is_empty(), "{what}: {c:?}\n{value:#}");
}

#[test]
fn every_route_serves_and_accepts_what_the_document_says() {
    let d = Daemon::start("routes");
    let served = d.call("GET", "/v1/openapi.json", None);
    assert_eq!(served.status, 200);
    let doc = dataplane::openapi::document();
    assert_eq!(served.json(), doc, "the daemon serves the generated document");

    // Turn offload on through the whole document, so `offload` is in what
    // is accepted and then served.
    let mut config = d.call("GET", "/v1/config", None).json();
    config["offload"] = json!({ "enabled": true, "vxlan_device": "vxlan0" });
    let put = schema_of(&doc, "PUT", "/v1/config", true).unwrap();
    admitted("PUT /v1/config body", &put, &config);
    let r = d.call("PUT", "/v1/config", Some(&config));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A body the schema refuses, the daemon refuses.
    let mut typo = d.call("GET", "/v1/config", None).json();
    typo["offload"]["enabeld"] = json!(true);
    assert!(!complaints(&put, &typo).is_empty(), "the schema forbids unknown fields");
    assert_eq!(d.call("PUT", "/v1/config", Some(&typo)).status, 400);

    let bodies: Vec<(&str, Value)> = vec![
        (
            "/v1/config/ops",
            json!({ "generation": 2, "ops": [
                { "set_offload": { "enabled": true } },
                { "add_fdb": { "vni": 42, "mac": "02:00:00:00:bb:01", "tunnel": "to-hostb" } },
                { "set_flood": { "vni": 42, "tunnels": ["to-hostb"], "ports": [] } },
            ]}),
        ),
        (
            "/v1/trace",
            json!({ "in_port": "wl0", "packet": "eth/ipv4(dst=198.51.100.2)/udp(dport=53)" }),
        ),
        (
            "/v1/why",
            json!({ "from": "198.51.100.1", "to": "198.51.100.2", "proto": "tcp", "dport": 23 }),
        ),
        ("/v1/capture", json!({ "ports": ["wl0"], "direction": "in", "count": 1 })),
        ("/v1/cluster/networks/{name}", json!({ "vni": 7, "encap": "vxlan" })),
        ("/v1/cluster/endpoints", json!({ "network": "n1", "mac": "02:00:00:00:00:01" })),
        ("/v1/cluster/endpoints/delete", json!({ "network": "n1", "mac": "02:00:00:00:00:01" })),
        ("/v1/upgrade", json!({ "timeout_secs": 5 })),
    ];
    let error = error_schema(&doc);
    let mut seen = 0;
    for o in operations() {
        let path = if o.path == "/v1/offload/vfs" { "/v1/offload/vfs?pf=lo" } else { o.path };
        let body = bodies.iter().find(|(p, _)| *p == o.path && o.method != "GET").map(|(_, b)| b);
        if let Some(b) = body {
            let schema = schema_of(&doc, o.method, o.path, true).expect("a request schema");
            admitted(&format!("{} {} body", o.method, o.path), &schema, b);
        }
        if o.method == "PUT" {
            continue; // done above
        }
        let r = d.call(o.method, path, body);
        let what = format!("{} {path} -> {}", o.method, r.status);
        match (r.status, o.answer) {
            (200, Answer::Json(_)) => {
                let schema = schema_of(&doc, o.method, o.path, false).unwrap();
                admitted(&what, &schema, &r.json());
            }
            (200, Answer::Metrics) => assert!(String::from_utf8_lossy(&r.body).contains("# TYPE")),
            (200, Answer::OpenApi) => {}
            // Control only: no VFs to read, no packets to capture, nothing
            // to hand over to a new binary. Refusals
            // are documented too, and satisfy the error schema.
            (503, _) if matches!(o.path, "/v1/offload/vfs" | "/v1/capture" | "/v1/upgrade") => {
                assert!(
                    doc["paths"][o.path][o.method.to_lowercase()]["responses"]["503"].is_object()
                );
                admitted(&what, &error, &r.json());
            }
            // Not in cluster mode: every cluster route says so.
            (404, _) if o.path.starts_with("/v1/cluster/") => {
                assert!(
                    doc["paths"][o.path][o.method.to_lowercase()]["responses"]["404"].is_object()
                );
                admitted(&what, &error, &r.json());
            }
            _ => panic!("{what}: {}", String::from_utf8_lossy(&r.body)),
        }
        seen += 1;
    }
    let puts = operations().iter().filter(|o| o.method == "PUT").count();
    assert_eq!(seen, operations().len() - puts, "every route but the PUTs asked here");
    let status = d.call("GET", "/v1/status", None).json();
    assert_eq!(status["offload"]["enabled"], true, "{status:#}");
}
