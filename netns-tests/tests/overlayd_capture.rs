//! `overlayctl capture` on a running overlayd (AF_XDP, VXLAN to the kernel's
//! VXLAN device) while pings cross the overlay and a flow is dropped by a
//! rule. tshark reads what it wrote: one interface per port, each packet with
//! its direction and a comment naming its verdict, drop reason, rule, tunnel
//! and tier. Each filter selects exactly the packets the counters say moved
//! that way, the count and duration bounds (and Ctrl-C) end a capture, and
//! the counters still add up with a capture armed. `overlayd replay` reads
//! what dumpcap recorded on the workload's side meanwhile (pcapng, its
//! default).
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//!                               192.0.2.1                  192.0.2.2
//! ```
//!
//! Rule 30 drops what wa sends to 198.51.100.66 (wa has a static neighbour
//! entry for it, so its pings leave). IPv6 is off in every namespace and the
//! workloads know each other's MAC, so only the test's pings move the
//! counters.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use netns_tests::*;
use serde_json::Value;

struct Topology {
    wa: Netns,
    /// wa's end of the workload link.
    we: String,
    config: String,
    _wb: Netns,
    _hb: Netns,
    d: Overlayd,
    ha: Netns,
}

fn build() -> Topology {
    let kernel_peer::Hosts { ha, hb, wa, wb, up, ub, wl, we, wbe, .. } =
        kernel_peer::hosts(kernel_peer::no_ipv6);
    for (ns, dev, ip) in [(&wa, &we, "198.51.100.1/24"), (&wb, &wbe, "198.51.100.2/24")] {
        ns.ip(&["link", "set", dev, "mtu", "1450"]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
    }
    // Static neighbours: no ARP crosses the overlay at a moment the test
    // does not choose.
    let (we_mac, wbe_mac) = (wa.mac(&we), wb.mac(&wbe));
    wa.ip(&["neigh", "add", "198.51.100.66", "lladdr", "02:00:00:00:0b:bb", "dev", &we]);
    wa.ip(&["neigh", "add", "198.51.100.2", "lladdr", &wbe_mac, "dev", &we]);
    wb.ip(&["neigh", "add", "198.51.100.1", "lladdr", &we_mac, "dev", &wbe]);
    // Host B's uplink is a veth with tx off: a real NIC would finish the
    // checksums the kernel VTEP leaves partial (the workloads keep theirs on).
    hb.exec(&["ethtool", "-K", &ub, "tx", "off"]);
    let config = format!(
        r#"
[[ports]]
name = "wl"
kind = "workload"
interface = "{wl}"
backend = "af_xdp"

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"
backend = "af_xdp"

[[tunnels]]
name = "to-b"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42

[[rules]]
id = 10
priority = 100
match = {{ in_port = "wl" }}
actions = [{{ encap = "to-b" }}]

[[rules]]
id = 20
priority = 100
match = {{ tunnel = "to-b", vni = 42 }}
actions = [{{ output = "wl" }}]

[[rules]]
id = 30
priority = 200
match = {{ in_port = "wl", ip_dst = "198.51.100.66" }}
actions = ["count", "drop"]
"#
    );
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    assert!(pings(&wa, "198.51.100.2", 1), "the overlay does not work: {}", d.log());
    Topology { wa, we, config, _wb: wb, _hb: hb, d, ha }
}

/// A capture running in the background: `overlayctl capture ARGS -w FILE`.
struct Running {
    proc: Background,
    stderr: PathBuf,
    started: Instant,
}

impl Running {
    /// Starts it and waits until it is armed (the daemon has sent the
    /// file's header).
    fn start(d: &Overlayd, args: &[&str], file: &Path) -> Running {
        let stderr = file.with_extension("stderr");
        let mut cmd = std::process::Command::new(project_bin("overlayctl"));
        cmd.arg("--socket").arg(d.socket()).arg("capture").args(args).arg("-w").arg(file);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(std::fs::File::create(&stderr).unwrap());
        let started = Instant::now();
        let proc = Background::spawn(cmd, "overlayctl capture");
        let armed = wait_until(Duration::from_secs(10), || {
            std::fs::metadata(file).is_ok_and(|m| m.len() > 0)
        });
        assert!(armed, "the capture did not start: {}", std::fs::read_to_string(&stderr).unwrap());
        // Workers notice within a loop (idle ones at once: the capture
        // rings their doorbells).
        std::thread::sleep(Duration::from_millis(200));
        Running { proc, stderr, started }
    }

    /// Waits for it to end by itself; returns how long it ran and what
    /// overlayctl said it captured.
    fn finish(mut self) -> (Duration, u64) {
        let st = self.proc.wait_timeout(Duration::from_secs(40));
        let said = std::fs::read_to_string(&self.stderr).unwrap();
        assert!(st.is_some_and(|s| s.success()), "overlayctl capture: {st:?}: {said}");
        assert!(!said.contains("not recorded"), "packets were lost: {said}");
        let n = said
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary: {said}"));
        (self.started.elapsed(), n)
    }
}

/// One row per packet of `file`: interface name, direction flag (1 in, 2
/// out, in hex), comment, and the innermost IPv4 destination and ICMP type.
fn rows(file: &Path) -> Vec<[String; 5]> {
    let f = file.to_str().unwrap();
    let mut args = vec!["tshark", "-n", "-r", f, "-T", "fields", "-E", "separator=|"];
    args.extend_from_slice(&["-E", "occurrence=l"]);
    for fl in [
        "frame.interface_name",
        "frame.packet_flags_direction",
        "frame.comment",
        "ip.dst",
        "icmp.type",
    ] {
        args.extend_from_slice(&["-e", fl]);
    }
    run(&args)
        .lines()
        .map(|l| {
            let v: Vec<String> = l.split('|').map(str::to_string).collect();
            assert_eq!(v.len(), 5, "{l}");
            [v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone(), v[4].clone()]
        })
        .collect()
}

/// Captures the daemon has started so far.
fn started(d: &Overlayd) -> usize {
    d.log().matches("capture started").count()
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[k]).as_u64().unwrap_or(0)
}

/// A port's packet counter, one way.
fn port(c: &Value, name: &str, way: &str) -> u64 {
    let p = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
    n(p, &[way, "packets"])
}

#[test]
fn capture_records_live_packets_with_their_fate() {
    if !require_root("capture_records_live_packets_with_their_fate") {
        return;
    }
    require_program("tshark");
    require_program("dumpcap");
    let t = build();
    let dir = TempDir::new("capture");
    let why = |what: &str| format!("{what}; log:\n{}", t.d.log());

    // 1. Everything, for six seconds, while pings cross and a flow is dropped;
    // dumpcap records the same pings on the workload's side.
    let before = t.d.settled_counters();
    let dumped = dir.join("dumpcap.pcapng");
    let mut cmd = t.wa.command(&["dumpcap", "-q", "-i", &t.we, "-a", "duration:8", "-w"]);
    cmd.arg(&dumped).stdout(Stdio::null()).stderr(Stdio::null());
    let mut dumpcap = Background::spawn(cmd, "dumpcap");
    assert!(wait_until(Duration::from_secs(10), || dumped.exists()), "dumpcap did not start");
    let all = dir.join("all.pcapng");
    let cap = Running::start(&t.d, &["--duration", "6"], &all);
    assert!(pings(&t.wa, "198.51.100.2", 5), "{}", why("A -> B ping failed"));
    assert!(!pings(&t.wa, "198.51.100.66", 3), "rule 30 let a ping through");
    let (ran, said) = cap.finish();
    let after = t.d.settled_counters();
    assert!(ran >= Duration::from_secs(6) && ran < Duration::from_secs(14), "ran {ran:?}");

    let info = run(&["capinfos", "-M", all.to_str().unwrap()]);
    assert!(info.contains("Number of interfaces in file: 2"), "one interface per port: {info}");
    assert!(info.contains("Name = wl") && info.contains("Name = up"), "{info}");
    let r = rows(&all);
    assert_eq!(r.len() as u64, said, "overlayctl's count is tshark's");
    // Conservation: every packet the datapath received was recorded once as
    // it came in, every frame it sent once as it went out.
    let ins: Vec<_> = r.iter().filter(|x| x[2].starts_with("in ")).collect();
    let outs: Vec<_> = r.iter().filter(|x| x[2].starts_with("out ")).collect();
    assert_eq!(ins.len() + outs.len(), r.len());
    assert_eq!(ins.len() as u64, n(&after, &["rx"]) - n(&before, &["rx"]), "rx");
    assert_eq!(outs.len() as u64, n(&after, &["tx"]) - n(&before, &["tx"]), "tx");
    let flag = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok();
    assert!(ins.iter().all(|x| flag(&x[1]) == Some(1)), "inbound flags: {r:?}");
    assert!(outs.iter().all(|x| flag(&x[1]) == Some(2)), "outbound flags: {r:?}");
    let dropped: Vec<_> = r.iter().filter(|x| x[2].contains("verdict=dropped")).collect();
    assert_eq!(dropped.len() as u64, n(&after, &["dropped"]) - n(&before, &["dropped"]));
    // The rule's drops, named.
    let rule_drops: Vec<_> = r.iter().filter(|x| x[3] == "198.51.100.66").collect();
    assert_eq!(rule_drops.len(), 3, "{r:?}");
    assert_eq!(drops(&after, "rule_drop") - drops(&before, "rule_drop"), 3);
    for x in &rule_drops {
        assert_eq!(x[0], "wl");
        assert_eq!(x[2], "in verdict=dropped reason=rule_drop stage=action rule=30 tier=software");
    }
    // The pings: requests in on wl and out on up inside the tunnel, replies
    // in on up and out on wl.
    let count = |iface: &str, comment: &str, dst: &str, icmp: &str| {
        r.iter().filter(|x| x[0] == iface && x[2] == comment && x[3] == dst && x[4] == icmp).count()
    };
    let fwd = |dir: &str, rule: u32| {
        format!("{dir} verdict=forwarded rule={rule} tunnel=to-b tier=software")
    };
    assert_eq!(count("wl", &fwd("in", 10), "198.51.100.2", "8"), 5, "{r:?}");
    assert_eq!(count("up", &fwd("out", 10), "198.51.100.2", "8"), 5, "{r:?}");
    assert_eq!(count("up", &fwd("in", 20), "198.51.100.1", "0"), 5, "{r:?}");
    assert_eq!(count("wl", &fwd("out", 20), "198.51.100.1", "0"), 5, "{r:?}");

    // replay reads dumpcap's pcapng (its default format): every frame wa
    // sent or received, all taken as arriving on wl, and rule 30 drops the
    // three to 198.51.100.66.
    assert!(dumpcap.wait_timeout(Duration::from_secs(20)).is_some(), "dumpcap did not stop");
    let frames = run(&["tshark", "-r", dumped.to_str().unwrap(), "-T", "fields", "-e", "ip.dst"]);
    let config = dir.join("config.toml");
    std::fs::write(&config, &t.config).unwrap();
    let replayed = std::process::Command::new(project_bin("overlayd"))
        .args(["replay", "--json", "--config", config.to_str().unwrap(), "--input"])
        .arg(format!("wl={}", dumped.display()))
        .output()
        .unwrap();
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    let replayed: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(n(&replayed, &["rx"]), frames.lines().count() as u64, "{replayed:#}");
    assert!(frames.lines().filter(|l| *l == "198.51.100.2").count() >= 5, "{frames}");
    assert_eq!(drops(&replayed, "rule_drop"), 3, "{replayed:#}");

    // 2. By reason, ended by its count before its duration.
    let f = dir.join("reason.pcapng");
    let cap = Running::start(&t.d, &["--reason", "rule_drop", "-c", "2", "--duration", "30"], &f);
    pings(&t.wa, "198.51.100.66", 4);
    let (ran, said) = cap.finish();
    assert!(ran < Duration::from_secs(20), "the count did not end the capture: {ran:?}");
    let r = rows(&f);
    assert_eq!((said, r.len()), (2, 2), "{r:?}");
    for x in &r {
        assert_eq!(x[0], "wl");
        assert!(x[2].contains("reason=rule_drop") && x[2].contains("rule=30"), "{r:?}");
    }

    // 3. By port: exactly what the uplink's counters saw, both ways.
    let before = t.d.settled_counters();
    let f = dir.join("up.pcapng");
    let cap = Running::start(&t.d, &["--port", "up", "--duration", "5"], &f);
    assert!(pings(&t.wa, "198.51.100.2", 3));
    pings(&t.wa, "198.51.100.66", 2);
    cap.finish();
    let after = t.d.settled_counters();
    let r = rows(&f);
    let moved = port(&after, "up", "rx") + port(&after, "up", "tx")
        - port(&before, "up", "rx")
        - port(&before, "up", "tx");
    assert_eq!(r.len() as u64, moved, "{r:?}");
    assert!(r.len() >= 6 && r.iter().all(|x| x[0] == "up"), "{r:?}");
    assert!(!r.iter().any(|x| x[2].contains("dropped")), "{r:?}");

    // 4. By verdict: exactly the drops the counters counted.
    let before = t.d.settled_counters();
    let f = dir.join("dropped.pcapng");
    let cap = Running::start(&t.d, &["--verdict", "dropped", "--duration", "5"], &f);
    assert!(pings(&t.wa, "198.51.100.2", 2));
    pings(&t.wa, "198.51.100.66", 2);
    cap.finish();
    let after = t.d.settled_counters();
    let r = rows(&f);
    assert_eq!(r.len() as u64, n(&after, &["dropped"]) - n(&before, &["dropped"]), "{r:?}");
    assert!(r.len() >= 2 && r.iter().all(|x| x[2].starts_with("in verdict=dropped")), "{r:?}");

    // 5. To standard output, read by tshark from the pipe, by rule and
    // direction, ended by its duration.
    let before = t.d.settled_counters();
    let captures = started(&t.d);
    let out = dir.join("pipe.txt");
    let script = format!(
        "{} --socket {} capture --rule 10 --direction in --duration 4 -w - | tshark -r - -T fields -e frame.comment > {}",
        project_bin("overlayctl").display(),
        t.d.socket().display(),
        out.display()
    );
    let mut pipe = Background::spawn(
        {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &script]).stdin(Stdio::null());
            c
        },
        "overlayctl capture | tshark",
    );
    let armed = wait_until(Duration::from_secs(10), || started(&t.d) > captures);
    assert!(armed, "{}", why("the piped capture did not start"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(pings(&t.wa, "198.51.100.2", 3));
    assert!(pipe.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.success()));
    let after = t.d.settled_counters();
    let lines = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len() as u64, port(&after, "wl", "rx") - port(&before, "wl", "rx"));
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| *l == "in verdict=forwarded rule=10 tunnel=to-b tier=software"),
        "{lines:?}"
    );

    // 6. Unbounded, ended by Ctrl-C: the file keeps what was captured, and
    // the daemon notices the client left, so the next capture can start.
    let f = dir.join("sigint.pcapng");
    let cap = Running::start(&t.d, &["--port", "wl"], &f);
    assert!(pings(&t.wa, "198.51.100.2", 2));
    std::thread::sleep(Duration::from_millis(300));
    let pid = cap.proc.id().unwrap().to_string();
    run(&["kill", "-INT", &pid]);
    let (_, said) = cap.finish();
    let r = rows(&f);
    assert_eq!((said, r.len()), (4, 4), "two requests in, two replies out: {r:?}");
    let next = dir.join("next.pcapng");
    let again = wait_until(Duration::from_secs(10), || {
        let o = t.d.ctl_output(
            &["capture", "-c", "1", "--duration", "0.2", "-w"]
                .into_iter()
                .chain([next.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        o.status.success()
    });
    assert!(again, "{}", why("the capture Ctrl-C ended was still armed"));

    assert!(!t.d.log().contains("panicked"), "{}", t.d.log());
    let Topology { d, ha, .. } = t;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}
