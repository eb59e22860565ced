//! An idle overlayd's workers sleep until a packet arrives or the control
//! plane rings their doorbell (`io/doorbell.rs`): they do not wake to look
//! for news, yet a commit reaches them at once. The XDP tier's owner, with
//! no entry to look after, ticks once a second, and a stop reaches both at
//! once.
//!
//! ```text
//!  wa: we ---veth--- wl [workload]  ha: overlayd  up [uplink] ---veth--- ub  hb (192.0.2.2)
//! ```

use std::time::{Duration, Instant};

use netns_tests::one_tunnel::OneTunnel;
use netns_tests::*;

/// Context switches of each of `pid`'s worker threads (`overlayd-w*`).
fn worker_switches(pid: u32) -> Vec<(String, u64)> {
    switches(pid, "overlayd-w")
}

/// Context switches of each of `pid`'s threads whose name starts `prefix`.
fn switches(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((comm.trim().to_string(), n));
    }
    out.sort();
    out
}

fn total(s: &[(String, u64)]) -> u64 {
    s.iter().map(|(_, n)| n).sum()
}

#[test]
fn an_idle_overlayd_sleeps_yet_sees_commits_and_stops_at_once() {
    if !require_root("an_idle_overlayd_sleeps_yet_sees_commits_and_stops_at_once") {
        return;
    }
    let (ha, hb, wa) = (Netns::new("ia"), Netns::new("ib"), Netns::new("iw"));
    let (up, ub, wl, we) = (unique("up"), unique("ub"), unique("wl"), unique("we"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    ha.ip(&["addr", "add", "192.0.2.1/24", "dev", &up, "nodad"]);
    hb.ip(&["addr", "add", "192.0.2.2/24", "dev", &ub, "nodad"]);
    for ns in [&wa, &hb] {
        // Nothing of their own reaches overlayd's ports while it idles.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    }
    let body = "type = \"vxlan\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42";
    let config = OneTunnel { wl: &wl, up: &up, tunnel_body: body, ..Default::default() }.render();
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    let pid = d.pid();
    assert!(!worker_switches(pid).is_empty(), "no overlayd-w* thread: {}", d.log());

    // Idle: the only wakes left are the bound on a lost ring (1 s), and
    // the tier owner's tick at rest (1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let (before, tier_before, secs) = (worker_switches(pid), switches(pid, "overlayd-tier"), 4);
    std::thread::sleep(Duration::from_secs(secs));
    let (after, tier_after) = (worker_switches(pid), switches(pid, "overlayd-tier"));
    let per_worker = (total(&after) - total(&before)) as f64 / secs as f64 / after.len() as f64;
    let tier = (total(&tier_after) - total(&tier_before)) as f64 / secs as f64;
    eprintln!("idle: {per_worker:.1} wakes a second per worker, {tier:.1} of the tier owner");
    assert!(per_worker <= 2.5, "idle workers woke {per_worker:.1} times a second, want about 1");
    assert_eq!(tier_after.len(), 1, "no tier owner thread (xdp_tier is auto): {}", d.log());
    assert!(tier <= 2.5, "the tier owner woke {tier:.1} times a second at rest, want about 1");

    // A commit wakes them at once: within 100 ms, every time (the 1 s
    // bound alone would do it by chance in about one try in eight).
    for i in 0..5 {
        let id = (100 + i).to_string();
        let before = worker_switches(pid);
        let t0 = Instant::now();
        d.ctl(&[
            "rule",
            "add",
            "--id",
            &id,
            "--match",
            "in_port=wl,ip_proto=6",
            "--action",
            "drop",
        ]);
        let woke = wait_until(Duration::from_millis(100), || {
            let now = worker_switches(pid);
            now.iter().zip(&before).all(|((_, a), (_, b))| a > b)
        });
        assert!(
            woke,
            "commit {i}: a worker did not wake within 100 ms of the API's answer ({:?} after {:?})",
            worker_switches(pid),
            t0.elapsed()
        );
    }

    // A stop reaches the sleeping threads at once: the daemon exits in
    // about 150 ms here, against up to a second more if either slept on.
    let t0 = Instant::now();
    d.stop();
    let took = t0.elapsed();
    eprintln!("idle overlayd stopped in {took:?}");
    assert!(took < Duration::from_millis(700), "an idle overlayd took {took:?} to stop");
}
