//! Both binaries as an operator and a script use them: the same exit code
//! for the same failure, `--json` for answers, writes and failures, a
//! closed standard output, `overlayd check`'s summary and warnings, shell
//! completions and man pages, and `overlayctl` over TCP with read-write and
//! read-only tokens against the real daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const OVERLAYD: &str = env!("CARGO_BIN_EXE_overlayd");
const OVERLAYCTL: &str = env!("CARGO_BIN_EXE_overlayctl");

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("overlayd-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/vxlan.toml")
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A failure printed with `--json`: on standard output, one JSON object,
/// whose `exit_code` is the process's.
fn json_failure(o: &Output) -> Value {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(v["exit_code"].as_i64(), o.status.code().map(i64::from), "{v}");
    assert!(v["error"].is_string(), "{v}");
    v
}

#[test]
fn the_same_failure_exits_the_same_in_both_binaries() {
    let dir = tempdir("exits");
    let missing = dir.join("missing.toml");
    let m = missing.to_str().unwrap();
    let d = run(OVERLAYD, &["check", "--config", m]);
    let c = run(OVERLAYCTL, &["--socket", "/nonexistent.sock", "config", "apply", m]);
    assert_eq!(d.status.code(), Some(6), "{}", text(&d.stderr));
    assert_eq!(c.status.code(), Some(6), "{}", text(&c.stderr));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nid = 1\nactions = [{ output = \"nowhere\" }]\n").unwrap();
    let d = run(OVERLAYD, &["check", "--json", "--config", bad.to_str().unwrap()]);
    let v = json_failure(&d);
    assert_eq!((v["exit"].as_str(), v["exit_code"].as_i64()), (Some("invalid"), Some(3)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown port"), "{v}");

    // Usage errors too, as JSON when asked.
    let u = run(OVERLAYCTL, &["--json", "rule", "add", "--id", "x"]);
    assert_eq!(json_failure(&u)["exit"], "usage");
    let u = run(OVERLAYD, &["check", "--json"]);
    assert_eq!(json_failure(&u)["exit_code"], 2);

    // Nobody listening.
    let o =
        run(OVERLAYCTL, &["--json", "--socket", dir.join("none.sock").to_str().unwrap(), "status"]);
    assert_eq!(json_failure(&o)["exit"], "unreachable");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `bin args` with standard output a pipe closed before it writes.
fn into_closed_pipe(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let cfg = example();
    let c = cfg.to_str().unwrap();
    for args in [vec!["check", "--config", c], vec!["check", "--json", "--config", c]] {
        let o = into_closed_pipe(OVERLAYD, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o.stderr));
    }
    let o = into_closed_pipe(OVERLAYCTL, &["completions", "bash"]);
    assert_eq!((o.status.code(), o.stderr.is_empty()), (Some(0), true), "{}", text(&o.stderr));
}

#[test]
fn check_names_tunnel_kinds_and_warns_about_rules_with_their_ids() {
    let dir = tempdir("check");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[[ports]]
name = "wl0"
kind = "workload"
[[ports]]
name = "up0"
kind = "uplink"
[[tunnels]]
name = "t-gre"
type = "gretap"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 7
[[tunnels]]
name = "t-nv"
type = "nvgre"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vsid = 100
[[rules]]
id = 1
priority = 10
match = { in_port = "wl0", ethertype = 0x86dd, ip_dst = "198.51.100.0/24" }
actions = [{ encap = "t-gre" }]
[[rules]]
id = 2
priority = 10
match = { in_port = "wl0", ip_dst = "203.0.113.0/24" }
actions = [{ encap = "t-gre" }]
[[rules]]
id = 3
priority = 10
match = { in_port = "wl0", ip_dst = "203.0.113.0/24" }
actions = [{ encap = "t-nv" }]
[[rules]]
id = 4
priority = 5
match = { in_port = "wl0", ip_dst = "203.0.113.9" }
actions = ["drop"]
"#,
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = run(OVERLAYD, &["check", "--config", c]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("gretap key 7") && out.contains("nvgre vsid 100"), "{out}");
    assert!(!out.contains("Gre {"), "no Rust debug text: {out}");
    assert!(
        out.contains("rule 1 can never match: ethertype 0x86dd (IPv6) with an IPv4 prefix"),
        "{out}"
    );
    assert!(out.contains("rule 3 has the same match as rule 2"), "{out}");
    assert!(out.contains("rule 4 is shadowed by rule 2"), "{out}");

    let o = run(OVERLAYD, &["check", "--json", "--config", c]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> =
        v["tunnels"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["gretap", "nvgre"]);
    assert_eq!(v["tunnels"][0]["vni_or_key"], 7);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 3, "{v:#}");
    assert!(warnings.iter().any(|w| w["warning"] == "never_matches" && w["rule"] == 1), "{v:#}");
    assert!(
        warnings.iter().any(|w| w["warning"] == "duplicate_match" && w["duplicate"] == 3),
        "{v:#}"
    );
    assert!(
        warnings.iter().any(|w| w["warning"] == "shadowed" && w["rule"] == 4 && w["by"] == 2),
        "{v:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    for bin in [OVERLAYD, OVERLAYCTL] {
        let name = Path::new(bin).file_name().unwrap().to_str().unwrap();
        for shell in ["bash", "zsh", "fish"] {
            let o = run(bin, &["completions", shell]);
            let script = text(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{name} {shell}");
            assert!(
                script.contains(name) && script.contains("completions"),
                "{name} {shell}: {script}"
            );
        }
        let dir = tempdir(&format!("man-{name}"));
        let o = run(bin, &["man", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let page = std::fs::read_to_string(dir.join(format!("{name}.1"))).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = tempdir("man-pages");
    run(OVERLAYCTL, &["man", dir.to_str().unwrap()]);
    let add = std::fs::read_to_string(dir.join("overlayctl-rule-add.1")).unwrap();
    assert!(add.contains("priority") && add.contains("action"), "{add}");
    assert!(std::fs::read_to_string(dir.join("overlayctl.1")).unwrap().contains("token"));
    std::fs::remove_dir_all(&dir).unwrap();
}

struct Daemon {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A control-only daemon on a Unix socket and on TCP (a free port) with a
/// read-write and a read-only token.
fn daemon_on_tcp(name: &str) -> Daemon {
    let dir = tempdir(&format!("tcp-{name}"));
    std::fs::write(dir.join("rw"), "rw-0123456789abcdef\n").unwrap();
    std::fs::write(dir.join("ro"), "ro-0123456789abcdef\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(OVERLAYD)
        .args(["run", "--control-only", "--listen-tcp", &addr])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .arg("--config")
        .arg(example())
        .arg("--token-file")
        .arg(dir.join("rw"))
        .arg("--read-token-file")
        .arg(dir.join("ro"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon { child, dir, addr };
    let start = Instant::now();
    while std::net::TcpStream::connect(&d.addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "overlayd did not listen on TCP");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

impl Daemon {
    fn ctl(&self, token: &str, args: &[&str]) -> Output {
        let tf = self.dir.join(token);
        let mut all = vec!["--tcp", &self.addr, "--token-file", tf.to_str().unwrap()];
        all.extend_from_slice(args);
        run(OVERLAYCTL, &all)
    }
}

#[test]
fn read_only_tokens_read_and_scrape_but_never_write() {
    let d = daemon_on_tcp("tokens");
    // Reads, and the questions that change nothing, with the read-only token.
    let o = d.ctl("ro", &["--json", "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["generation"], 1);
    let o = d.ctl("ro", &["rule", "list"]);
    assert!(text(&o.stdout).lines().any(|l| l.starts_with("50 ")), "{}", text(&o.stdout));
    let o = d.ctl("ro", &["why", "--from", "198.51.100.1", "--to", "198.51.100.2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let metrics = dataplane::client::Client::new(dataplane::client::Endpoint::Tcp {
        addr: d.addr.clone(),
        token: "ro-0123456789abcdef".into(),
    })
    .unwrap()
    .request("GET", "/metrics", &[], None)
    .unwrap();
    assert_eq!(metrics.status, 200);

    // A write with the read-only token is refused (7), and changes nothing.
    let o = d.ctl("ro", &["--json", "rule", "del", "50"]);
    let v = json_failure(&o);
    assert_eq!((v["exit"].as_str(), v["http_status"].as_u64()), (Some("denied"), Some(403)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("read-only"), "{v}");
    // The read-write token may; the write answers in JSON too.
    let o = d.ctl("rw", &["--json", "rule", "del", "50"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let applied: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(applied, serde_json::json!({ "generation": 2 }));
    // A wrong token is refused as not allowed.
    std::fs::write(d.dir.join("bad"), "xx-0123456789abcdef").unwrap();
    assert_eq!(d.ctl("bad", &["status"]).status.code(), Some(7));
    // Deleting what is in use names the users, in JSON as in text.
    let o = d.ctl("rw", &["--json", "tunnel", "del", "to-hostb"]);
    let v = json_failure(&o);
    assert_eq!(
        (v["exit_code"].as_i64(), v["path"].as_str()),
        (Some(3), Some("ops[0].remove_tunnel"))
    );
    assert!(v["error"].as_str().unwrap().contains("in use by rule 10"), "{v}");
}

#[test]
fn rule_list_shows_counters_and_placement_in_json_too() {
    let d = daemon_on_tcp("rules");
    let o = d.ctl("ro", &["--json", "rule", "list"]);
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = &rows[0];
    for k in
        ["id", "priority", "match", "actions", "placement", "packets", "bytes", "last_hit_secs"]
    {
        assert!(first.get(k).is_some(), "{k} missing: {first:#}");
    }
    let o = d.ctl("ro", &["counters"]);
    let out = text(&o.stdout);
    for head in ["port ", "tunnel ", "rule "] {
        assert!(out.lines().any(|l| l.starts_with(head)), "{head}: {out}");
    }
}
