//! The control API over its real Unix socket, with the real `overlayd run` and
//! `overlayctl` binaries: happy paths, every kind of refusal, uid checks,
//! `kill -9` during a stream of updates, and a clean SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::client::request;
use serde_json::json;

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: Option<&Path>) -> Daemon {
        let socket = dir.join("api.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlayd"));
        cmd.arg("run")
            .arg("--control-only")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd.stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        while request(&socket, "GET", "/v1/status", &[], None).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not start serving");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket }
    }

    fn get(&self, path: &str) -> dataplane::client::Response {
        request(&self.socket, "GET", path, &[], None).unwrap()
    }

    fn put(&self, body: &serde_json::Value, if_match: Option<u64>) -> dataplane::client::Response {
        let g = if_match.map(|g| g.to_string());
        let h: Vec<(&str, &str)> = g.iter().map(|g| ("If-Match", g.as_str())).collect();
        request(&self.socket, "PUT", "/v1/config", &h, Some(&serde_json::to_vec(body).unwrap()))
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("overlayd-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/vxlan.toml")
}

fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn resources_and_refusals() {
    let dir = tempdir("resources");
    let d = Daemon::start(&dir, Some(&example()));
    let st = d.get("/v1/status");
    assert_eq!(st.status, 200);
    assert_eq!(st.json()["generation"], 1, "started from the file's generation");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777, 0o600);

    let cfg = d.get("/v1/config");
    assert_eq!(cfg.header("etag"), Some("\"1\""));
    let mut doc = cfg.json();
    assert_eq!(doc["tunnels"][0]["name"], "to-hostb");

    // Stale generation: 409, nothing changes.
    let r = d.put(&doc, Some(0));
    assert_eq!(r.status, 409, "{:?}", r.json());
    assert!(r.json()["error"].as_str().unwrap().contains("stale generation"));

    // Invalid documents: 422 with the field path, 400 for unknown fields.
    doc["rules"][1]["actions"] = json!([{ "encap": "t9" }]);
    let r = d.put(&doc, Some(1));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["path"], "rules[1].actions[0].encap");
    assert!(r.json()["error"].as_str().unwrap().contains("unknown tunnel"));
    let r = d.put(&json!({ "generation": 1, "portz": [] }), None);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("unknown field `portz`"),
        "{:?}",
        r.json()
    );
    let r = d.put(&json!({ "generation": 1, "rules": [{ "id": "x", "actions": ["drop"] }] }), None);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["path"], "rules[0].id");
    let big = vec![b' '; dataplane::api::MAX_BODY + 1];
    let r = request(&d.socket, "PUT", "/v1/config", &[], Some(&big)).unwrap();
    assert_eq!(r.status, 413, "body too large");
    assert_eq!(d.get("/v1/status").json()["generation"], 1, "no refusal changed anything");
    assert_eq!(d.get("/v2/status").status, 404);

    // A good change, based on the current generation.
    doc["rules"][1]["actions"] = json!(["drop"]);
    let r = d.put(&doc, Some(1));
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["generation"], 2);

    // Trace against the live rules.
    let t = request(
        &d.socket,
        "POST",
        "/v1/trace",
        &[],
        Some(br#"{"in_port":"wl0","packet":"eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(dport=53)"}"#),
    )
    .unwrap();
    assert_eq!(t.status, 200);
    let steps = t.json()["steps"].as_array().unwrap().clone();
    assert!(
        steps.iter().any(|s| s["step"] == "dropped" && s["reason"] == "rule_drop"),
        "{steps:?}"
    );
    let t = request(&d.socket, "POST", "/v1/trace", &[], Some(br#"{"in_port":"nope","hex":"00"}"#))
        .unwrap();
    assert_eq!((t.status, t.json()["path"].as_str()), (422, Some("in_port")));

    // The OpenAPI document is served.
    let o = d.get("/v1/openapi.json");
    assert_eq!(o.status, 200);
    assert_eq!(o.json()["openapi"], "3.1.0");

    // Memory read after the once-a-second purge, in status and metrics.
    let start = Instant::now();
    let memory = loop {
        let m = d.get("/v1/status").json()["memory"].clone();
        if m["purges"].as_u64().unwrap() >= 1 {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no purge within 5 s: {m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (resident, anon) = (memory["resident_kib"].as_u64(), memory["anon_kib"].as_u64());
    assert!(resident > Some(0) && anon > Some(0) && anon <= resident, "{memory}");
    assert!(memory["at_ms"].as_u64().is_some(), "{memory}");

    // Prometheus metrics.
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("overlayd_generation 2")
            && text.contains("overlayd_drops_total{reason=\"rule_drop\"}")
            && text.contains("overlayd_memory_purges_total ")
            && text.contains("overlayd_memory_after_purge_bytes{kind=\"resident\"} "),
        "{text}"
    );

    // overlayctl: tables, JSON, and exit codes scripts can rely on.
    let (code, out, _) = ctl(&d.socket, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("generation 2") && out.contains("MiB resident"), "{out}");
    let (code, out, _) = ctl(&d.socket, &["config", "get"]);
    assert_eq!(code, 0);
    assert!(out.contains("name = \"to-hostb\""), "{out}");
    let (code, out, err) = ctl(&d.socket, &["config", "apply", example().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 3"), "{out}");
    let (code, _, err) =
        ctl(&d.socket, &["config", "apply", "--if-generation", "1", example().to_str().unwrap()]);
    assert_eq!(code, 5, "stale: {err}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nid = 1\nactions = [{ output = \"nowhere\" }]\n").unwrap();
    let (code, _, err) = ctl(&d.socket, &["config", "apply", bad.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(err.contains("rules[0].actions[0].output: unknown port"), "{err}");
    let (code, out, _) = ctl(&d.socket, &["--json", "counters"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["conserved"], true);
    let (code, out, _) = ctl(
        &d.socket,
        &[
            "trace",
            "--in-port",
            "up0",
            "--packet",
            "eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp/vxlan(vni=42)/eth/ipv4",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("decapsulated from tunnel to-hostb") && out.contains("output to port wl0"),
        "{out}"
    );
    let (code, _, err) = ctl(&dir.join("missing.sock"), &["status"]);
    assert_eq!(code, 4, "{err}");
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_uids_are_refused() {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "other_uids_are_refused needs root (to act as another uid) and CI is set"
        );
        eprintln!("SKIPPED other_uids_are_refused: needs root");
        return;
    }
    let dir = tempdir("uids");
    // Let another user reach the socket file, so only the SO_PEERCRED check stands.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&dir, None);
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .expect("setpriv (util-linux) is installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "not allowed: {err}");
    assert!(err.contains("uid 65534 is not allowed"), "{err}");
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_9_during_updates_loses_no_acknowledged_change() {
    let dir = tempdir("kill9");
    let mut d = Daemon::start(&dir, Some(&example()));
    let base = d.get("/v1/config").json();
    let pid = d.child.id();
    // Kill the daemon at an arbitrary moment while a stream of updates runs.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let mut acked: Option<(u64, serde_json::Value)> = None;
    let mut in_flight = None;
    for i in 0..10_000u32 {
        let mut doc = base.clone();
        doc["rules"][0]["id"] = json!(1000 + i);
        let g = acked.as_ref().map_or(1, |a| a.0);
        in_flight = Some((g + 1, doc.clone()));
        match request(
            &d.socket,
            "PUT",
            "/v1/config",
            &[("If-Match", &g.to_string())],
            Some(&serde_json::to_vec(&doc).unwrap()),
        ) {
            Ok(r) if r.status == 200 => {
                acked = Some((r.json()["generation"].as_u64().unwrap(), doc))
            }
            _ => break,
        }
    }
    killer.join().unwrap();
    let _ = d.child.wait();
    let (acked_gen, acked_doc) = acked.expect("some updates were acknowledged before the kill");
    assert!(acked_gen > 2, "only {acked_gen} generations before the kill");

    d = Daemon::start(&dir, Some(&example()));
    let restored = d.get("/v1/config").json();
    let g = restored["generation"].as_u64().unwrap();
    let same_rules = |a: &serde_json::Value, b: &serde_json::Value| a["rules"] == b["rules"];
    // The last acknowledged state, or the one in flight when the kill came
    // (persisted, but its answer never arrived): never older, never torn.
    let (fg, fdoc) = in_flight.unwrap();
    assert!(
        (g == acked_gen && same_rules(&restored, &acked_doc))
            || (g == fg && same_rules(&restored, &fdoc)),
        "restored generation {g}, acknowledged {acked_gen}"
    );
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_exits_cleanly() {
    let dir = tempdir("term");
    let mut d = Daemon::start(&dir, None);
    Command::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "overlayd did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "the socket is removed on exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_writers_serialise() {
    let dir = tempdir("concurrent");
    let d = Daemon::start(&dir, Some(&example()));
    let base = d.get("/v1/config").json();
    let socket = d.socket.clone();
    // Four clients, each trying 25 times to install its own rule 10 id,
    // always based on the generation it last read, retrying on conflict.
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (socket, base) = (socket.clone(), base.clone());
            std::thread::spawn(move || {
                let mut ok = 0u64;
                for i in 0..25u32 {
                    let g = request(&socket, "GET", "/v1/status", &[], None).unwrap().json()
                        ["generation"]
                        .as_u64()
                        .unwrap();
                    let mut doc = base.clone();
                    doc["rules"][0]["id"] = json!(10_000 * (w + 1) + i);
                    let body = serde_json::to_vec(&doc).unwrap();
                    let r = request(
                        &socket,
                        "PUT",
                        "/v1/config",
                        &[("If-Match", &g.to_string())],
                        Some(&body),
                    )
                    .unwrap();
                    match r.status {
                        200 => ok += 1,
                        409 => {}
                        s => panic!("unexpected status {s}: {:?}", r.json()),
                    }
                }
                ok
            })
        })
        .collect();
    let successes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let fin = d.get("/v1/config").json();
    assert!(successes > 0);
    assert_eq!(
        fin["generation"].as_u64().unwrap(),
        1 + successes,
        "one generation per successful write"
    );
    // The final document is exactly one writer's document: a serial order.
    let id = fin["rules"][0]["id"].as_u64().unwrap();
    assert!(id >= 10_000 && id % 10_000 < 25, "rule id {id} belongs to no writer");
    let mut expect = base.clone();
    expect["rules"][0]["id"] = json!(id);
    expect["generation"] = fin["generation"].clone();
    assert_eq!(fin, expect, "no mix of two writers' documents");
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rule-update latency with 10,000 rules: from sending the new document to
/// its acknowledgement, after which the workers' next batch runs it. Prints
/// the figures; fails only if the median update takes over a second (three
/// in a debug build).
#[test]
fn rule_update_latency_with_10000_rules() {
    let dir = tempdir("latency");
    let d = Daemon::start(&dir, Some(&example()));
    let mut doc = d.get("/v1/config").json();
    let rules: Vec<serde_json::Value> = (0..10_000u32)
        .map(|i| {
            json!({ "id": 100_000 + i, "priority": 10 + i % 50,
                    "match": { "in_port": "wl0", "ip_dst": format!("203.0.{}.{}/32", i / 256, i % 256) },
                    "actions": ["drop"] })
        })
        .collect();
    doc["rules"].as_array_mut().unwrap().extend(rules);
    let mut times = Vec::new();
    for _ in 0..5 {
        let g = d.get("/v1/status").json()["generation"].as_u64().unwrap();
        let body = serde_json::to_vec(&doc).unwrap();
        let t = Instant::now();
        let r =
            request(&d.socket, "PUT", "/v1/config", &[("If-Match", &g.to_string())], Some(&body))
                .unwrap();
        times.push(t.elapsed());
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    times.sort();
    eprintln!(
        "rule update with {} rules, {} bytes: min {:?}, median {:?}, max {:?}",
        doc["rules"].as_array().unwrap().len(),
        serde_json::to_vec(&doc).unwrap().len(),
        times[0],
        times[2],
        times[4]
    );
    // The promise (docs/api.md) is under a second for an optimised build; an
    // unoptimised one on a loaded CI machine takes 0.5-0.9 s here, so it
    // gets room for load but still catches anything worse than linear.
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 3 } else { 1 });
    assert!(times[2] < limit, "median {:?} over {limit:?}", times[2]);
    // The same size of rule set, changed by one operation instead of a whole document.
    let mut op_times = Vec::new();
    for i in 0..5u32 {
        let g = d.get("/v1/status").json()["generation"].as_u64().unwrap();
        let body = serde_json::to_vec(&json!({ "generation": g, "ops": [
            { "add_rule": { "id": 900_000 + i, "priority": 7, "match": { "l4_dst": 1000 + i }, "actions": ["drop"] } }
        ]}))
        .unwrap();
        let t = Instant::now();
        let r = request(&d.socket, "POST", "/v1/config/ops", &[], Some(&body)).unwrap();
        op_times.push(t.elapsed());
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    op_times.sort();
    eprintln!(
        "one-rule operation on {} rules: min {:?}, median {:?}, max {:?}",
        doc["rules"].as_array().unwrap().len(),
        op_times[0],
        op_times[2],
        op_times[4]
    );
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batches_of_operations_apply_entirely_or_not_at_all() {
    let dir = tempdir("ops");
    let d = Daemon::start(&dir, Some(&example()));
    let s = d.socket.clone();
    let post = |body: serde_json::Value| {
        request(&s, "POST", "/v1/config/ops", &[], Some(&serde_json::to_vec(&body).unwrap()))
            .unwrap()
    };

    // overlayctl adds a rule; the trace shows it taking effect.
    let (code, out, err) = ctl(
        &d.socket,
        &[
            "rule",
            "add",
            "--id",
            "77",
            "--priority",
            "300",
            "--match",
            "in_port=wl0,ip_proto=17,l4_dst=53",
            "--action",
            "count",
            "--action",
            "drop",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 2"), "{out}");
    let (_, out, _) = ctl(&d.socket, &["rule", "list"]);
    let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let row = out.lines().map(cells).find(|c| c[0] == "77").unwrap_or_else(|| panic!("{out}"));
    // id, priority, match, actions, packets, bytes, last hit, runs in.
    assert_eq!(
        row[..7],
        ["77", "300", "in_port=wl0,ip_proto=17,l4_dst=53", "count,drop", "0", "0", "never"],
        "{out}"
    );
    // Where it runs: in software (no offload), its flows in the XDP tier.
    // Control only: `backend = "auto"` is not resolved to a port yet.
    assert_eq!(row[7..].join(" "), "XDP or tc tier after the first packet", "{out}");
    let (_, out, _) = ctl(
        &d.socket,
        &["trace", "--in-port", "wl0", "--packet", "eth/ipv4(dst=198.51.100.2)/udp(dport=53)"],
    );
    assert!(out.contains("matched rule 77"), "{out}");

    // A batch whose second operation fails changes nothing, not even its first.
    let r = post(json!({ "generation": 2, "ops": [
        { "add_rule": { "id": 78, "actions": ["drop"] } },
        { "remove_rule": 9999 },
    ]}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["path"], "ops[1].remove_rule");
    let rules = d.get("/v1/rules").json();
    assert!(!rules.as_array().unwrap().iter().any(|r| r["id"] == 78), "half-applied batch");
    assert_eq!(d.get("/v1/status").json()["generation"], 2);

    // Removing a tunnel that rules still use is refused, naming them.
    let r = post(json!({ "generation": 2, "ops": [{ "remove_tunnel": "to-hostb" }] }));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["path"], "ops[0].remove_tunnel", "{:?}", r.json());
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.contains("tunnel \"to-hostb\" is in use by rule 10, rule 20"), "{e}");
    // Stale, and malformed operations.
    assert_eq!(post(json!({ "generation": 1, "ops": [] })).status, 409);
    let r = post(json!({ "generation": 2, "ops": [{ "remove_rulez": 1 }] }));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("remove_rulez"), "{:?}", r.json());

    // FDB entries through overlayctl.
    let (code, _, err) = ctl(
        &d.socket,
        &["fdb", "add", "--vni", "42", "--mac", "02:00:00:00:bb:01", "--tunnel", "to-hostb"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&d.socket, &["fdb", "list"]);
    assert!(
        out.lines()
            .any(|l| cells(l) == ["42", "02:00:00:00:bb:01", "to-hostb", "static", "-", "-"]),
        "{out}"
    );
    let (code, _, err) =
        ctl(&d.socket, &["fdb", "del", "--vni", "42", "--mac", "02:00:00:00:bb:01"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(&d.socket, &["rule", "del", "77"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(&d.socket, &["rule", "del", "77"]);
    assert_eq!(code, 3, "deleting twice is refused: {err}");
    assert!(err.contains("no rule with id 77"), "{err}");
    let (_, out, _) = ctl(&d.socket, &["tunnel", "list"]);
    assert!(
        out.lines().any(|l| cells(l)[..5] == ["to-hostb", "vxlan", "192.0.2.1", "192.0.2.2", "42"]),
        "{out}"
    );
    assert_eq!(d.get("/v1/status").json()["generation"], 5);
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tcp_request(addr: std::net::SocketAddr, auth: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "GET /v1/status HTTP/1.1\r\nHost: overlayd\r\nConnection: close\r\n{auth}\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[test]
fn tcp_requires_the_bearer_token() {
    let dir = tempdir("tcp");
    let token = "0123456789abcdef0123";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    // A free loopback port.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let socket = dir.join("api.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .arg("run")
        .arg("--control-only")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--listen-tcp")
        .arg(addr.to_string())
        .arg("--token-file")
        .arg(dir.join("token"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not listen on TCP");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, body) = tcp_request(addr, None);
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("bearer token is required"), "{body}");
    let (st, body) = tcp_request(addr, Some("Bearer 0123456789abcdef0124"));
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("token is wrong"), "{body}");
    let (st, body) = tcp_request(addr, Some(&format!("Bearer {token}")));
    assert_eq!(st, 200, "{body}");
    // The Unix socket still works alongside, without a token.
    assert_eq!(request(&socket, "GET", "/v1/status", &[], None).unwrap().status, 200);
    let _ = child.kill();
    let _ = child.wait();

    // TCP without a token file is refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .args(["run", "--control-only", "--listen-tcp", "127.0.0.1:1"])
        .arg("--state-dir")
        .arg(dir.join("state2"))
        .arg("--socket")
        .arg(dir.join("s2.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen-tcp needs --token-file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads `r` as a `T` and writes it back: the same document, so the shared
/// types `overlayctl` reads with carry every field the daemon sends.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    what: &str,
    r: &dataplane::client::Response,
) -> T {
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{doc:#}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), doc, "{what}: fields lost or changed");
    typed
}

#[test]
fn every_answer_reads_back_into_the_shared_types() {
    use dataplane::api_types::*;
    let dir = tempdir("types");
    let d = Daemon::start(&dir, Some(&example()));
    let st: Status = round_trip("status", &d.get("/v1/status"));
    assert_eq!((st.api.as_str(), st.generation), ("v1", 1));
    assert!(st.io.is_none(), "control only: no packet I/O");
    assert!(!st.offload.active && st.offload.why.is_some(), "{st:?}");
    let rules: Vec<RuleView> = round_trip("rules", &d.get("/v1/rules"));
    assert_eq!(st.offload.software_rules, rules.len());
    let inactive = Some(Placement::software("inactive", "offload is not active (control only)"));
    assert!(rules.iter().all(|r| r.placement == inactive), "{rules:?}");
    let off: OffloadView = round_trip("offload", &d.get("/v1/offload"));
    let ids: Vec<u32> = rules.iter().map(|r| r.rule.id).collect();
    assert_eq!(off.rules.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    let c: Counters = round_trip("counters", &d.get("/v1/counters"));
    assert!(c.conserved && c.generation == 1, "{c:?}");
    assert_eq!(c.rules.len(), rules.len());
    let _: Vec<engine::model::Tunnel> = round_trip("tunnels", &d.get("/v1/tunnels"));
    let _: Vec<engine::model::Port> = round_trip("ports", &d.get("/v1/ports"));
    let _: Vec<engine::model::FdbEntry> = round_trip("fdb", &d.get("/v1/fdb"));
    let _: TraceReport = round_trip(
        "trace",
        &request(
            &d.socket,
            "POST",
            "/v1/trace",
            &[],
            Some(br#"{"in_port":"wl0","packet":"eth/ipv4(dst=198.51.100.2)/udp(dport=53)"}"#),
        )
        .unwrap(),
    );

    // Writes answer with the generation; refusals with the error body.
    let mut doc = d.get("/v1/config").json();
    let applied: Applied = round_trip("put", &d.put(&doc, Some(1)));
    assert_eq!(applied, Applied { generation: 2 });
    doc["rules"][0]["actions"] = json!([{ "encap": "t9" }]);
    let e: ErrorBody = round_trip("refusal", &d.put(&doc, Some(2)));
    assert_eq!(e.path.as_deref(), Some("rules[0].actions[0].encap"), "{e:?}");
    let r = d.get("/v1/offload/vfs?pf=lo");
    assert_eq!(r.status, 503);
    let e: ErrorBody = round_trip("vfs without offload", &r);
    assert_eq!(e.path, None);

    // overlayctl prints from the same types.
    let (code, out, err) = ctl(&d.socket, &["offload", "status"]);
    assert_eq!(code, 0, "{err}");
    let first = format!("offload inactive: 0 rules in hardware, {} in software", rules.len());
    assert!(out.starts_with(&first), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{} ", ids[0])))
            && out.contains("software: offload is not active"),
        "{out}"
    );
    let (code, out, err) = ctl(&d.socket, &["tunnel", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.split_whitespace().take(2).eq(["to-hostb", "vxlan"])),
        "{out}"
    );
    let ts: Vec<TunnelStatus> = round_trip("tunnel status", &d.get("/v1/tunnels/status"));
    assert_eq!(ts[0].next_hop, NextHopStatus::Static { mac: "02:00:00:00:02:00".into() });
    assert_eq!((ts[0].last_rx_secs, ts[0].last_tx_secs), (None, None), "nothing carried");

    // why: control only knows the rules and counters, and says so.
    let post_why = |body: &[u8]| request(&d.socket, "POST", "/v1/why", &[], Some(body)).unwrap();
    let w: WhyReport = round_trip(
        "why",
        &post_why(br#"{"from":"198.51.100.1","to":"198.51.100.2","proto":"tcp","dport":23}"#),
    );
    assert_eq!(w.basis, WhyBasis::ControlOnly);
    assert_eq!(w.blocker, Some(Blocker::RuleDrops { rule: 50, priority: 200 }), "{w:?}");
    let r = post_why(br#"{"from":"198.51.100.1","to":"nowhere"}"#);
    assert_eq!(r.status, 422);
    let e: ErrorBody = round_trip("why refused", &r);
    assert_eq!(e.path.as_deref(), Some("to"), "{e:?}");
    let (code, out, err) =
        ctl(&d.socket, &["why", "--from", "198.51.100.1", "--to", "198.51.100.2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("control only") && out.contains("path: port wl0 -> rule 20"), "{out}");
}

#[test]
fn capture_needs_a_datapath() {
    let dir = tempdir("capture");
    let d = Daemon::start(&dir, Some(&example()));
    let file = dir.join("c.pcapng");
    let (code, _, err) = ctl(&d.socket, &["capture", "-c", "1", "-w", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("control only") && err.contains("HTTP 503"), "{err}");
    assert!(!file.exists(), "a refused capture leaves no file");
    let (code, _, err) = ctl(&d.socket, &["capture", "--duration", "0", "-w", "-"]);
    assert_eq!(code, 2, "{err}");
}
