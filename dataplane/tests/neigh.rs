//! The neighbour watcher against the kernel: two network namespaces joined by
//! a veth pair, the watcher running inside the first (its netlink sockets are
//! created on a thread that entered it). Needs root; skipped otherwise unless
//! CI is set.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::neigh::{trigger_by_datagram, NeighState, NeighWatcher, Target};
use engine::next_hop::NextHops;

/// MACs of the two ends, set at creation so "the peer's real MAC" is known.
const MAC_A: [u8; 6] = [0x02, 0, 0, 0x0a, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0x0b, 0, 2];
const STATIC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x99];
/// How long a change may take to reach the table.
const QUICK: Duration = Duration::from_secs(3);

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Root, or a reason to skip: under CI (set, non-empty, not "0"/"false") a
/// missing privilege is a failure, not a skip.
fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if ci {
        panic!("this test needs root (network namespaces and veth), and CI is set");
    }
    eprintln!("SKIPPED: needs root (network namespaces and veth)");
    false
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run a command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces: `a` (the watcher's, interface up0 = 192.0.2.1,
/// 2001:db8::1) and `b` (the peer, peer0 = 192.0.2.2, 2001:db8::2).
/// Deleted on drop, also when a test panics.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new() -> Pair {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("nh{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let p = Pair { a: format!("{id}a"), b: format!("{id}b") };
        run(&["ip", "netns", "add", &p.a]);
        run(&["ip", "netns", "add", &p.b]);
        let (ma, mb) = (mac(MAC_A), mac(MAC_B));
        p.a(&["link", "add", "up0", "address", &ma, "type", "veth"]
            .into_iter()
            .chain(["peer", "name", "peer0", "address", &mb, "netns", &p.b])
            .collect::<Vec<_>>());
        p.a(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        p.a(&["addr", "add", "2001:db8::1/64", "dev", "up0", "nodad"]);
        p.b(&["addr", "add", "192.0.2.2/24", "dev", "peer0"]);
        p.b(&["addr", "add", "2001:db8::2/64", "dev", "peer0", "nodad"]);
        // Without DAD on the link-local addresses too: the kernel sends no
        // neighbour solicitation while its link-local address is tentative,
        // which would add a second to the first IPv6 resolution.
        for (ns, dev) in [(&p.a, "up0"), (&p.b, "peer0")] {
            let dad = format!("net.ipv6.conf.{dev}.accept_dad=0");
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &dad]);
        }
        for (ns, dev) in [(&p.a, "up0"), (&p.b, "peer0"), (&p.a, "lo"), (&p.b, "lo")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // The kernel activates a link's queue (linkwatch) up to a second after
        // its carrier comes up, and drops what is sent before: wait for that,
        // so what is measured is the watcher.
        let t0 = Instant::now();
        for (ns, dev) in [(&p.a, "up0"), (&p.b, "peer0")] {
            while !run(&["ip", "-n", ns, "-br", "link", "show", dev]).contains(" UP ") {
                assert!(t0.elapsed() < Duration::from_secs(5), "{dev} in {ns} not up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        p
    }

    fn a(&self, args: &[&str]) -> String {
        run(&[&["ip", "-n", &self.a], args].concat())
    }

    fn b(&self, args: &[&str]) -> String {
        run(&[&["ip", "-n", &self.b], args].concat())
    }

    /// Makes the kernel of `a` give up on a silent neighbour within about a
    /// second instead of about eight.
    fn fast_probes(&self) {
        for fam in ["ipv4", "ipv6"] {
            run(&[
                "ip",
                "netns",
                "exec",
                &self.a,
                "sysctl",
                "-qw",
                &format!("net.{fam}.neigh.up0.delay_first_probe_time=1"),
                &format!("net.{fam}.neigh.up0.retrans_time_ms=200"),
            ]);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).expect("open the namespace");
        // SAFETY: a valid namespace fd; only this thread moves, and everything
        // it creates from here on (sockets, the runtime) belongs to `ns`.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A watcher on its own single-threaded runtime inside a namespace. Stopped
/// on drop.
struct InNs {
    watcher: Option<Arc<NeighWatcher>>,
    table: Arc<NextHops>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InNs {
    fn start(ns: &str) -> InNs {
        InNs::start_with(ns, || {})
    }

    /// `before` runs on the watcher's thread, in the namespace, before the
    /// watcher opens its sockets.
    fn start_with(ns: &str, before: fn()) -> InNs {
        // The watcher's log lines, shown for failing tests (or --nocapture).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("dataplane=debug"))
            .try_init();
        let (tx, rx) = mpsc::channel();
        let thread = in_ns(ns, move || {
            before();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let table = NextHops::new();
                let w = NeighWatcher::start(Arc::clone(&table)).await.expect("start the watcher");
                let (stop, stopped) = tokio::sync::oneshot::channel();
                tx.send((Arc::new(w), table, stop)).unwrap();
                let _ = stopped.await;
            });
        });
        let (watcher, table, stop) = rx.recv().expect("the watcher thread failed");
        InNs { watcher: Some(watcher), table, stop: Some(stop), thread: Some(thread) }
    }

    fn w(&self) -> &NeighWatcher {
        self.watcher.as_ref().unwrap()
    }

    fn state(&self, remote: &str) -> Option<NeighState> {
        self.w().states().into_iter().find(|s| s.remote == ip(remote))
    }

    /// Polls until `f` holds, at most `limit`.
    fn wait(&self, what: &str, limit: Duration, mut f: impl FnMut(&InNs) -> bool) {
        let t0 = Instant::now();
        while !f(self) {
            assert!(
                t0.elapsed() < limit,
                "not within {limit:?}: {what}\nstates: {:#?}\ntable: {:?}",
                self.w().states(),
                self.table.snapshot()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: {:?}", t0.elapsed());
    }

    fn wait_mac(&self, remote: &str, want: Option<[u8; 6]>, limit: Duration) {
        self.wait(&format!("{remote} -> {:?}", want.map(mac)), limit, |s| {
            s.table.get(&ip(remote)) == want
        });
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        self.watcher.take();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn targets(remotes: &[&str]) -> Vec<Target> {
    remotes.iter().map(|r| Target { remote: ip(r), ifname: "up0".into() }).collect()
}

const RESOLVED: [&str; 6] = ["reachable", "stale", "delay", "probe", "permanent", "noarp"];

/// (a) No neighbour entry and no traffic of ours: the watcher makes the
/// kernel resolve the peer, IPv4 and IPv6. Removing the targets empties the
/// table.
#[test]
fn resolves_without_traffic() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    for r in ["192.0.2.2", "2001:db8::2"] {
        assert_eq!(p.a(&["neigh", "show", "to", r, "dev", "up0"]).trim(), "", "entry for {r}");
    }
    let n = InNs::start(&p.a);
    n.w().set_targets(targets(&["192.0.2.2", "2001:db8::2"]));
    for r in ["192.0.2.2", "2001:db8::2"] {
        n.wait_mac(r, Some(MAC_B), QUICK);
        n.wait(&format!("{r} state"), QUICK, |n| n.state(r).is_some_and(|s| s.mac.is_some()));
        let s = n.state(r).unwrap();
        assert_eq!(
            (s.via, s.mac.as_deref(), s.interface.as_str()),
            (None, Some(&*mac(MAC_B)), "up0")
        );
        assert!(RESOLVED.contains(&s.state.as_str()), "{s:?}");
    }
    // Nothing of ours reached the peer: no datagram to its discard port.
    assert_eq!(udp_no_ports(&p), (0, 0));
    n.w().set_targets(Vec::new());
    n.wait("targets removed", QUICK, |n| {
        n.table.snapshot().is_empty() && n.w().states().is_empty()
    });
}

/// (b) A static entry replaces the resolved MAC; (c) deleting it makes the
/// target unresolved, and the watcher has the kernel resolve the real MAC
/// again.
#[test]
fn static_entry_then_delete() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    let n = InNs::start(&p.a);
    n.w().set_targets(targets(&["192.0.2.2", "2001:db8::2"]));
    for r in ["192.0.2.2", "2001:db8::2"] {
        n.wait_mac(r, Some(MAC_B), QUICK);
        let x = mac(STATIC);
        p.a(&["neigh", "replace", r, "lladdr", &x, "nud", "permanent", "dev", "up0"]);
        n.wait_mac(r, Some(STATIC), QUICK);
        n.wait(&format!("{r} permanent"), QUICK, |n| {
            n.state(r).is_some_and(|s| s.state == "permanent")
        });
        let before = n.table.version();
        p.a(&["neigh", "del", r, "dev", "up0"]);
        n.wait_mac(r, Some(MAC_B), QUICK);
        // STATIC -> none -> MAC_B: unresolved in between.
        assert!(n.table.version() >= before + 2, "{r}: {} -> {}", before, n.table.version());
    }
}

/// (c) The peer goes away: once its entry is stale the watcher has the kernel
/// re-probe it, the probe fails and the target becomes unresolved; when the
/// peer is back it is resolved again.
#[test]
fn peer_gone_is_noticed() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    p.fast_probes();
    let n = InNs::start(&p.a);
    n.w().set_targets(targets(&["192.0.2.2", "2001:db8::2"]));
    for (r, plen) in [("192.0.2.2", 24), ("2001:db8::2", 64)] {
        n.wait_mac(r, Some(MAC_B), QUICK);
        let addr = format!("{r}/{plen}");
        p.b(&["addr", "del", &addr, "dev", "peer0"]);
        // As the entry would be some time after the kernel's last use of it.
        p.a(&["neigh", "change", r, "dev", "up0", "nud", "stale"]);
        n.wait_mac(r, None, Duration::from_secs(10));
        n.wait(&format!("{r} unresolved"), QUICK, |n| {
            n.state(r).is_some_and(|s| {
                s.mac.is_none()
                    && ["incomplete", "failed", "no neighbour entry"].contains(&&*s.state)
            })
        });
        let mut back = vec!["addr", "add", &addr, "dev", "peer0"];
        if r.contains(':') {
            back.push("nodad");
        }
        p.b(&back);
        n.wait_mac(r, Some(MAC_B), Duration::from_secs(5));
    }
}

/// (d) A remote behind a gateway resolves to the gateway's MAC and shows it
/// as `via`; the route's arrival and removal are followed.
#[test]
fn route_via_gateway() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    let n = InNs::start(&p.a);
    let remotes = [
        ("203.0.113.9", "203.0.113.0/24", "192.0.2.2"),
        ("2001:db8:1::9", "2001:db8:1::/64", "2001:db8::2"),
    ];
    n.w().set_targets(targets(&remotes.map(|r| r.0)));
    for (r, _, _) in remotes {
        n.wait(&format!("{r} no route"), QUICK, |n| {
            n.state(r).is_some_and(|s| s.state == "no route")
        });
    }
    for (r, net, gw) in remotes {
        p.a(&["route", "add", net, "via", gw]);
        n.wait_mac(r, Some(MAC_B), QUICK);
        n.wait(&format!("{r} via {gw}"), QUICK, |n| {
            n.state(r).is_some_and(|s| s.via == Some(ip(gw)) && s.mac.is_some())
        });
        p.a(&["route", "del", net, "via", gw]);
        n.wait_mac(r, None, QUICK);
        n.wait(&format!("{r} no route again"), QUICK, |n| {
            n.state(r).is_some_and(|s| s.state == "no route" && s.via.is_none())
        });
    }
}

/// (e) A remote whose route leaves by another interface stays unresolved,
/// with that reason; so does a target on an interface that does not exist.
#[test]
fn route_by_another_interface() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    // A second uplink (a veth pair inside `a`: this kernel may have no dummy).
    p.a(&["link", "add", "side0", "type", "veth", "peer", "name", "side1"]);
    p.a(&["addr", "add", "198.51.100.1/24", "dev", "side0"]);
    p.a(&["link", "set", "side0", "up"]);
    p.a(&["link", "set", "side1", "up"]);
    let n = InNs::start(&p.a);
    let mut t = targets(&["198.51.100.7", "192.0.2.2"]);
    t.push(Target { remote: ip("2001:db8::2"), ifname: "nosuch0".into() });
    n.w().set_targets(t);
    n.wait_mac("192.0.2.2", Some(MAC_B), QUICK);
    n.wait("reasons", QUICK, |n| {
        n.state("198.51.100.7").is_some_and(|s| s.state == "route via another interface (side0)")
            && n.state("2001:db8::2").is_some_and(|s| s.state == "no interface nosuch0")
    });
    // Still unresolved after a few fallback passes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(n.table.get(&ip("198.51.100.7")), None);
    assert_eq!(n.table.get(&ip("2001:db8::2")), None);
    assert_eq!(p.a(&["neigh", "show", "dev", "side0"]).trim(), "");
}

/// Takes CAP_NET_ADMIN from the calling thread (capabilities are per
/// thread), as if the daemon ran without it.
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut h = Header { version: VERSION_3, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: a v3 header and the two data structs v3 reads and writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    d[0].effective &= !(1 << CAP_NET_ADMIN);
    d[0].permitted &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above; pid 0 is this thread only.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

fn udp_no_ports(p: &Pair) -> (u64, u64) {
    let snmp = run(&["ip", "netns", "exec", &p.b, "cat", "/proc/net/snmp", "/proc/net/snmp6"]);
    let v4 = snmp.lines().filter(|l| l.starts_with("Udp:")).collect::<Vec<_>>();
    let col = v4[0].split_whitespace().position(|f| f == "NoPorts").unwrap();
    let v4 = v4[1].split_whitespace().nth(col).unwrap().parse().unwrap();
    let v6 = snmp
        .lines()
        .find_map(|l| l.strip_prefix("Udp6NoPorts"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    (v4, v6)
}

/// Without CAP_NET_ADMIN the kernel refuses NTF_USE: the watcher falls back
/// to datagrams, which reach the peer's discard port, and resolves all the
/// same.
#[test]
fn falls_back_to_datagrams() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    let n = InNs::start_with(&p.a, drop_net_admin);
    n.w().set_targets(targets(&["192.0.2.2", "2001:db8::2"]));
    n.wait_mac("192.0.2.2", Some(MAC_B), QUICK);
    n.wait_mac("2001:db8::2", Some(MAC_B), QUICK);
    let (v4, v6) = udp_no_ports(&p);
    assert!(v4 >= 1 && v6 >= 1, "datagrams at the peer: {v4} IPv4, {v6} IPv6");
}

/// The fallback trigger alone: one datagram to the discard port makes the
/// kernel resolve the peer.
#[test]
fn datagram_trigger() {
    if !root_or_skip() {
        return;
    }
    let p = Pair::new();
    for r in ["192.0.2.2", "2001:db8::2"] {
        in_ns(&p.a, move || trigger_by_datagram(ip(r), "up0")).join().unwrap().unwrap();
        let t0 = Instant::now();
        while !p.a(&["neigh", "show", "to", r, "dev", "up0"]).contains(&mac(MAC_B)) {
            assert!(t0.elapsed() < QUICK, "{r} not resolved by a datagram");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
