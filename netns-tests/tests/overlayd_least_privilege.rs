//! overlayd with no more privilege than its systemd unit grants: a uid of
//! its own (not root) when the unit has `DynamicUser=yes`, and only the
//! capabilities the unit lists in `AmbientCapabilities=` (both read from
//! packaging/overlayd.service, so the test and the unit cannot drift). With those it must attach AF_XDP sockets and
//! the XDP tier, resolve its next hop, and carry traffic both ways, the
//! established flow through the tier.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd (as the unit)   hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//! ```

use std::time::Duration;

use netns_tests::kernel_peer::{hosts, no_ipv6, WA_IP, WB_IP};
use netns_tests::*;

/// The unprivileged uid standing in for the unit's dynamic user (`nobody`):
/// like it, it owns nothing but the daemon's directory.
const UID: u32 = 65534;

/// The packaged unit's value of `key` (its first line `key=...`).
fn unit_setting(key: &str) -> Option<String> {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/overlayd.service");
    let text = std::fs::read_to_string(unit).expect("packaging/overlayd.service");
    let prefix = format!("{key}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// `AmbientCapabilities=` of the packaged unit, as setpriv names them
/// (`net_admin`).
fn unit_capabilities() -> Vec<String> {
    let line = unit_setting("AmbientCapabilities").expect("the unit has AmbientCapabilities=");
    line.split_whitespace()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ name").to_lowercase())
        .collect()
}

/// Whether the locked-memory limit is, or can be made, unlimited (what the
/// unit's LimitMEMLOCK=infinity gives the daemon).
fn memlock_unlimited() -> bool {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard_unlimited = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .is_some_and(|l| l.split_whitespace().nth(4) == Some("unlimited"));
    hard_unlimited || output(&["prlimit", "--memlock=unlimited", "true"]).status.success()
}

/// setpriv: with `uid`, that uid and gid and no supplementary groups (else
/// root), no new privileges, and exactly `caps` (inheritable, ambient and
/// bounding), as systemd does for a unit with `AmbientCapabilities=` and
/// `CapabilityBoundingSet=`.
fn setpriv(uid: Option<u32>, caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut v = vec!["setpriv".to_string()];
    if let Some(uid) = uid {
        v.extend([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()]);
    }
    v.extend([
        "--no-new-privs".into(),
        format!("--inh-caps=-all{set}"),
        format!("--ambient-caps=-all{set}"),
        format!("--bounding-set=-all{set}"),
        "--".into(),
    ]);
    v
}

#[test]
fn overlayd_runs_with_the_units_capabilities_only() {
    if !require_root("overlayd_runs_with_the_units_capabilities_only") {
        return;
    }
    require_program("setpriv");
    let mut caps = unit_capabilities();
    if !memlock_unlimited() {
        // The unit sets LimitMEMLOCK=infinity (AF_XDP UMEMs count against
        // it); where root cannot raise the limit (no CAP_SYS_RESOURCE, as in
        // some sandboxes) CAP_IPC_LOCK stands in for it, as in the DaemonSet.
        eprintln!("RLIMIT_MEMLOCK cannot be raised here: CAP_IPC_LOCK stands in for LimitMEMLOCK=infinity");
        caps.push("ipc_lock".into());
    }
    let h = hosts(no_ipv6);
    for (ns, dev, ip) in [(&h.wa, &h.we, WA_IP), (&h.wb, &h.wbe, WB_IP)] {
        ns.ip(&["link", "set", dev, "mtu", "1450"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
    }
    // Host B's uplink finishes checksums (as a NIC would) and has NAPI, so
    // the tier may redirect out of `up`.
    h.hb.exec(&["ethtool", "-K", &h.ub, "tx", "off"]);
    h.hb.exec(&["ethtool", "-K", &h.ub, "gro", "on"]);
    let config = format!(
        r#"
xdp_tier = "auto"

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
match = {{ in_port = "wl" }}
actions = [{{ encap = "to-b" }}]

[[rules]]
id = 20
match = {{ tunnel = "to-b", vni = 42 }}
actions = [{{ output = "wl" }}]
"#,
        wl = h.wl,
        up = h.up
    );
    // A dynamic user is a uid of its own; without one the unit runs as root
    // bounded to its capabilities.
    let uid = (unit_setting("DynamicUser").as_deref() == Some("yes")).then_some(UID);
    let mut wrapper = setpriv(uid, &caps);
    if memlock_unlimited() {
        let prlimit = ["prlimit", "--memlock=unlimited:unlimited"];
        wrapper.splice(0..0, prlimit.iter().map(|s| s.to_string()));
    }
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // The test (root) uses overlayctl, as the unit's --allow-uid 0 allows.
    let d = Overlayd::start_as(&h.ha, &config, &["--allow-uid", "0"], &wrapper, uid);
    let why = || format!("capabilities {caps:?}\nstatus: {:#}\nlog:\n{}", d.status(), d.log());

    let pid = d.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let want = uid.unwrap_or(0).to_string();
    assert!(ids.split_whitespace().skip(1).all(|u| u == want), "not uid {want}: {ids}");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    let eff = u64::from_str_radix(eff, 16).unwrap();
    assert_eq!(
        eff.count_ones() as usize,
        caps.len(),
        "effective capabilities {eff:#x}, want {caps:?}"
    );

    let s = d.status();
    for p in s["io"]["ports"].as_array().expect("io ports") {
        assert_eq!(p["backend"], "af_xdp", "port not on AF_XDP: {}", why());
    }
    assert!(s["io"]["tier"].is_object(), "no XDP tier: {}", why());
    d.wait_neighbours();
    assert!(pings(&h.wa, WB_IP, 3), "A -> B ping failed: {}", why());

    // An established UDP flow: most of it forwarded by the tier.
    let sink = Background::spawn(
        h.wb.command(&[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('198.51.100.2', 9000))\nwhile True: s.recv(4096)",
        ]),
        "udp sink",
    );
    let send = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 20000))
for i in range(1000):
    s.sendto(b"least-privilege", ("198.51.100.2", 9000))
    time.sleep(0.001)
"#;
    let hits0 = d.status()["io"]["tier"]["hits"].as_u64().unwrap_or(0);
    h.wa.exec(&["timeout", "30", "python3", "-c", send]);
    let hit = wait_until(Duration::from_secs(5), || {
        d.status()["io"]["tier"]["hits"].as_u64().unwrap_or(0) - hits0 >= 500
    });
    assert!(hit, "the tier forwarded fewer than half the flow: {}", why());
    drop(sink);
    d.stop();
    assert!(!xdp_attached(&h.ha), "an XDP program was left attached");
}
