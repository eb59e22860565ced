//! Faults with traffic flowing (issue 18): overlayd on host A against the
//! kernel's VXLAN device on host B (`netns_tests::kernel_peer`), a ping every
//! 10 ms from workload A to workload B while one thing goes wrong at a time:
//! the uplink goes down and up, its MTU is lowered and raised, the neighbour
//! table is flushed, the peer's MAC changes, another program tries to attach
//! XDP to overlayd's ports, the state directory turns read-only, the daemon
//! is stopped and continued. After each, forwarding resumes within a stated
//! time, nothing is forwarded wrongly, and the counters are conserved.
//!
//! Each test prints what it measured (`faults: ...`); docs/operations.md
//! records the figures.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_tests::kernel_peer::*;
use netns_tests::*;

/// Ping interval (a loaded machine sends slower; outages are measured in
/// time between replies, not in pings).
const INTERVAL: &str = "0.01";

/// A paced ping from workload A to workload B for a fixed time, its
/// timestamped replies read at the end.
struct PingRun {
    bg: Background,
    out: PathBuf,
    _dir: TempDir,
    secs: u64,
    started: Instant,
}

impl PingRun {
    fn start(o: &Overlay, secs: u64) -> PingRun {
        let dir = TempDir::new("faults-ping");
        let out = dir.join("ping.txt");
        let cmd =
            format!("exec ping -D -n -i {INTERVAL} -W 1 -w {secs} {WB_IP} > {}", out.display());
        let started = Instant::now();
        let bg = Background::spawn(o.wa.command(&["sh", "-c", &cmd]), "ping");
        PingRun { bg, out, _dir: dir, secs, started }
    }

    /// Waits for the run to end; its replies.
    fn finish(mut self) -> Replies {
        let limit = Duration::from_secs(self.secs + 15);
        assert!(self.bg.wait_timeout(limit).is_some(), "ping did not end in {limit:?}");
        let took = self.started.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        if std::env::var_os("FAULTS_DEBUG").is_some() {
            eprintln!("{text}");
        }
        // "[1764253262.123456] 64 bytes from ...: icmp_seq=12 ttl=64 time=0.2 ms"
        let replies: Vec<(f64, u32)> = text
            .lines()
            .filter_map(|l| {
                let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
                let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()?;
                Some((t, seq))
            })
            .collect();
        let sent = text
            .lines()
            .find_map(|l| {
                l.split(" packets transmitted").next().filter(|_| l.contains("packets transmitted"))
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Replies { replies, sent, took }
    }
}

struct Replies {
    /// (receive time, sequence number)
    replies: Vec<(f64, u32)>,
    sent: u32,
    took: f64,
}

impl Replies {
    /// The longest time without a reply between the first and the last.
    fn longest_gap_ms(&self) -> u64 {
        let gap = self.replies.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
        (gap * 1000.0) as u64
    }

    fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.replies.len() as u32)
    }

    /// The pings of the last fifth of the run that went unanswered (but the
    /// last five, whose replies the deadline may cut off).
    fn lost_at_end(&self) -> Vec<u32> {
        let seqs: BTreeSet<u32> = self.replies.iter().map(|r| r.1).collect();
        let (from, to) = (self.sent - self.sent / 5, self.sent.saturating_sub(5));
        (from..to).filter(|s| !seqs.contains(s)).collect()
    }

    /// Forwarding came back: the end of the run was answered.
    fn resumed(&self) -> bool {
        self.sent >= 20 && self.lost_at_end().is_empty()
    }
}

/// Counters after the fault: conserved, and no packet dropped for a reason
/// outside `allowed` (a fault explains those; anything else is a wrong turn).
fn check_counters(o: &Overlay, allowed: &[&str]) -> serde_json::Value {
    let c = o.d.settled_counters();
    assert_eq!(c["conserved"], true, "counters not conserved after the fault: {c:#}");
    if let Some(drops) = c["drops"].as_object() {
        for (reason, n) in drops {
            assert!(
                allowed.contains(&reason.as_str()),
                "{n} packets dropped as {reason}, which this fault does not explain: {c:#}"
            );
        }
    }
    c
}

/// Runs `fault` while pings flow, then checks forwarding resumed within
/// `resume_limit_ms` and nothing else went wrong. Returns the outage.
fn with_traffic(
    name: &str,
    o: &Overlay,
    secs: u64,
    resume_limit_ms: u64,
    allowed_drops: &[&str],
    fault: impl FnOnce(),
) -> Replies {
    assert!(pings(&o.wa, WB_IP, 2), "{name}: no forwarding before the fault");
    let run = PingRun::start(o, secs);
    // a second of clean traffic first
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    fault();
    let fault_took = t.elapsed();
    let r = run.finish();
    eprintln!(
        "faults: {name}: fault applied in {} ms; {} of {} pings lost in {:.1} s, longest time without a reply {} ms",
        fault_took.as_millis(),
        r.lost(),
        r.sent,
        r.took,
        r.longest_gap_ms()
    );
    assert!(
        r.resumed(),
        "{name}: forwarding did not resume: {} of {} answered, unanswered at the end: {:?}; status {:#}\nlog:\n{}",
        r.replies.len(),
        r.sent,
        r.lost_at_end(),
        o.d.status(),
        o.d.log()
    );
    assert!(
        r.longest_gap_ms() <= resume_limit_ms,
        "{name}: forwarding was out for {} ms (limit {resume_limit_ms} ms)",
        r.longest_gap_ms()
    );
    check_counters(o, allowed_drops);
    // and a full exchange still works both ways
    tcp_transfer(&o.wa, &o.wb, WB_IP, 200_000);
    tcp_transfer(&o.wb, &o.wa, WA_IP, 200_000);
    o.assert_workload_offloads_unchanged();
    r
}

fn overlay() -> Overlay {
    build(false, false)
}

fn stop(o: Overlay) {
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// Reasons a packet in flight may be dropped for while the uplink is down:
/// the kernel refuses the transmit (counted by overlayd as a TX failure).
const LINK_DOWN_DROPS: &[&str] = &["tx_failed", "tx_ring_full", "no_neighbour"];

#[test]
fn uplink_down_and_up() {
    if !require_root("uplink_down_and_up") {
        return;
    }
    let o = overlay();
    let r = with_traffic("uplink down 500 ms then up", &o, 5, 3000, LINK_DOWN_DROPS, || {
        o.ha.ip(&["link", "set", &o.up, "down"]);
        std::thread::sleep(Duration::from_millis(500));
        o.ha.ip(&["link", "set", &o.up, "up"]);
    });
    // the outage covers at least the time the link was down
    assert!(r.longest_gap_ms() >= 200, "no outage seen while the uplink was down");
    stop(o);
}

#[test]
fn uplink_mtu_lowered_and_raised() {
    if !require_root("uplink_mtu_lowered_and_raised") {
        return;
    }
    let o = overlay();
    let big = |expect: bool| {
        // 1400 bytes of ICMP payload: 1428 inner, 1478 with VXLAN, DF set
        let ok =
            o.wa.exec_output(&[
                "ping", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1400", WB_IP,
            ])
            .status
            .success();
        assert_eq!(ok, expect, "a 1428-byte inner packet crossed: {ok}, expected {expect}");
    };
    big(true);
    with_traffic("uplink MTU 1500 -> 1400 -> 1500", &o, 5, 1000, &["mtu_exceeded"], || {
        o.ha.ip(&["link", "set", &o.up, "mtu", "1400"]);
        // small packets keep flowing; a big one no longer fits the underlay
        std::thread::sleep(Duration::from_millis(500));
        let c0 = o.d.counters()["dropped"].as_u64().unwrap();
        big(false);
        let c1 = o.d.counters()["dropped"].as_u64().unwrap();
        assert!(c1 > c0, "the too-big packets were not counted as dropped");
        o.ha.ip(&["link", "set", &o.up, "mtu", "1500"]);
        std::thread::sleep(Duration::from_millis(300));
    });
    // Workload A learned the smaller path MTU from overlayd's ICMP "too
    // big" and keeps it until the entry expires (10 minutes by default):
    // forget it, as after a real expiry.
    o.wa.ip(&["route", "flush", "cache"]);
    big(true);
    stop(o);
}

#[test]
fn neighbour_table_flushed() {
    if !require_root("neighbour_table_flushed") {
        return;
    }
    let o = overlay();
    with_traffic("neighbour table flushed", &o, 4, 2000, &["no_neighbour"], || {
        o.ha.ip(&["neigh", "flush", "dev", &o.up]);
    });
    o.d.wait_neighbours();
    stop(o);
}

#[test]
fn peer_mac_changed() {
    if !require_root("peer_mac_changed") {
        return;
    }
    require_program("python3");
    let o = overlay();
    let new_mac = "02:00:00:00:5e:01";
    with_traffic(
        "peer's MAC changed (it announces the change)",
        &o,
        5,
        3000,
        &["no_neighbour"],
        || {
            o.hb.ip(&["link", "set", &o.ub, "address", new_mac]);
            // What a host does when its address moves to a new MAC: a gratuitous
            // ARP, which updates the entry host A's kernel already has.
            let mac: Vec<String> = new_mac.split(':').map(|b| format!("\\x{b}")).collect();
            let mac = mac.concat();
            let garp = format!(
            "import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{}', 0))\n\
             ip = bytes([192, 0, 2, 2])\n\
             f = b'\\xff' * 6 + b'{mac}' + b'\\x08\\x06' + b'\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01' + b'{mac}' + ip + b'\\x00' * 6 + ip\n\
             s.send(f); s.send(f)\n",
            o.ub
        );
            o.hb.exec(&["/usr/bin/python3", "-c", &garp]);
        },
    );
    let ok = wait_until(Duration::from_secs(5), || {
        o.d.status()["io"]["neighbours"].to_string().contains(new_mac)
    });
    assert!(ok, "overlayd did not take the new MAC: {:#}", o.d.status()["io"]["neighbours"]);
    stop(o);
}

/// An XDP program that passes everything, compiled for the test.
fn pass_program(dir: &TempDir) -> PathBuf {
    require_program("clang");
    let src = dir.join("pass.c");
    std::fs::write(
        &src,
        "/* XDP_PASS is 2 */\n__attribute__((section(\"xdp\"), used)) int pass(void *ctx) { return 2; }\n\
         char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )
    .unwrap();
    let obj = dir.join("pass.o");
    run(&[
        "clang",
        "-O2",
        "-target",
        "bpf",
        "-c",
        src.to_str().unwrap(),
        "-o",
        obj.to_str().unwrap(),
    ]);
    obj
}

#[test]
fn another_program_attaching_xdp() {
    if !require_root("another_program_attaching_xdp") {
        return;
    }
    let o = overlay();
    let dir = TempDir::new("faults-xdp");
    let obj = pass_program(&dir);
    let ours = |dev: &str| o.ha.ip(&["-d", "link", "show", dev]);
    let before: Vec<String> = [o.up.as_str()].iter().map(|d| ours(d)).collect();
    with_traffic("another program attaches XDP to overlayd's ports", &o, 4, 1000, &[], || {
        for dev in [o.up.as_str()] {
            for mode in ["xdpdrv", "xdpgeneric", "xdp"] {
                let r = o.ha.exec_output(&[
                    "ip",
                    "link",
                    "set",
                    "dev",
                    dev,
                    mode,
                    "obj",
                    obj.to_str().unwrap(),
                    "sec",
                    "xdp",
                ]);
                assert!(!r.status.success(), "{mode} replaced overlayd's program on {dev}");
            }
            // nor can it be detached behind overlayd's back
            let r = o.ha.exec_output(&["ip", "link", "set", "dev", dev, "xdp", "off"]);
            assert!(!r.status.success(), "`xdp off` detached overlayd's program from {dev}");
        }
    });
    let after: Vec<String> = [o.up.as_str()].iter().map(|d| ours(d)).collect();
    let prog =
        |s: &str| s.split("prog/xdp").nth(1).map(|r| r.split_whitespace().nth(1).map(String::from));
    assert_eq!(
        before.iter().map(|s| prog(s)).collect::<Vec<_>>(),
        after.iter().map(|s| prog(s)).collect::<Vec<_>>(),
        "the program attached to the uplink changed"
    );
    stop(o);
}

#[test]
fn state_directory_read_only() {
    if !require_root("state_directory_read_only") {
        return;
    }
    let o = overlay();
    let state = o.d.state_dir();
    let s = state.to_str().unwrap().to_string();
    let add = [
        "rule",
        "add",
        "--id",
        "77",
        "--priority",
        "5",
        "--match",
        "ip_dst=203.0.113.7/32",
        "--action",
        "drop",
    ];
    with_traffic("state directory read-only", &o, 4, 1000, &[], || {
        // `ip netns exec` gave the daemon a mount namespace of its own: the
        // state directory turns read-only there, as it would for a daemon
        // whose disk was remounted read-only under it.
        let pid = o.d.pid().to_string();
        let in_daemon = |args: &[&str]| {
            let mut a = vec!["nsenter", "-t", &pid, "-m", "--"];
            a.extend_from_slice(args);
            run(&a);
        };
        in_daemon(&["mount", "--bind", &s, &s]);
        in_daemon(&["mount", "-o", "remount,bind,ro", &s]);
        let g0 = o.d.status()["generation"].as_u64().unwrap();
        let r = o.d.ctl_output(&add);
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        in_daemon(&["umount", &s]);
        assert!(!r.status.success(), "a write was accepted while the state could not be saved");
        assert!(
            err.contains("read-only") || err.contains("persist") || err.contains("state"),
            "the refusal does not say what failed: {err}"
        );
        // nothing half-applied: the rule set is the one before the write
        assert_eq!(
            o.d.status()["generation"].as_u64().unwrap(),
            g0,
            "the refused write changed the generation"
        );
        assert!(
            !o.d.ctl(&["--json", "rule", "list"]).contains("\"id\":77"),
            "the refused rule is live"
        );
    });
    // writable again: the same write is accepted
    o.d.ctl(&add);
    stop(o);
}

#[test]
fn daemon_stopped_and_continued() {
    if !require_root("daemon_stopped_and_continued") {
        return;
    }
    let o = overlay();
    let pid = o.d.pid().to_string();
    // Frames that arrive while it is stopped wait in the rings (or the
    // kernel drops them when a ring is full, before overlayd counts them):
    // pings are late rather than lost, and nothing is half-counted.
    with_traffic("SIGSTOP for 1 s, then SIGCONT", &o, 5, 3000, &[], || {
        run(&["kill", "-STOP", &pid]);
        std::thread::sleep(Duration::from_millis(1000));
        run(&["kill", "-CONT", &pid]);
    });
    stop(o);
}
