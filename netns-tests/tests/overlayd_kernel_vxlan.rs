//! `overlayd` (AF_XDP, VXLAN) against the Linux kernel's VXLAN device on the
//! other host: pings and a TCP transfer between the two workloads in both
//! directions, over an IPv4 and an IPv6 underlay.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//! ```

use std::time::Duration;

use netns_tests::*;

pub struct Overlay {
    pub wa: Netns,
    pub wb: Netns,
    pub hb: Netns,
    pub d: Overlayd,
    pub ha: Netns,
    pub up: String,
}

/// Builds both hosts and starts overlayd on host A with a VXLAN tunnel to B's
/// kernel VTEP.
pub fn build(v6: bool, udp_checksum: bool) -> Overlay {
    let ha = Netns::new("ha");
    let hb = Netns::new("hb");
    let wa = Netns::new("wa");
    let wb = Netns::new("wb");
    let (up, ub) = (unique("up"), unique("ub"));
    let (wl, we) = (unique("wl"), unique("we"));
    let (bw, wbe) = (unique("bw"), unique("wbe"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    let (a_ip, b_ip, plen, fam) = if v6 {
        ("2001:db8::1", "2001:db8::2", "64", "-6")
    } else {
        ("192.0.2.1", "192.0.2.2", "24", "-4")
    };
    ha.ip(&[fam, "addr", "add", &format!("{a_ip}/{plen}"), "dev", &up, "nodad"]);
    hb.ip(&[fam, "addr", "add", &format!("{b_ip}/{plen}"), "dev", &ub, "nodad"]);
    // The workloads' MTU leaves room for the outer headers (50 or 70 bytes).
    let mtu = if v6 { "1430" } else { "1450" };
    for (ns, dev, ip) in [(&wa, &we, "198.51.100.1/24"), (&wb, &wbe, "198.51.100.2/24")] {
        ns.ip(&["link", "set", dev, "mtu", mtu]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
        // veth leaves checksums to an offload nobody performs on this path:
        // make the senders compute them, as a NIC-less wire needs.
        ns.exec(&["ethtool", "-K", dev, "tx", "off"]);
    }
    hb.exec(&["ethtool", "-K", &ub, "tx", "off"]);
    let mut vx = vec![
        "link", "add", "vx0", "type", "vxlan", "id", "42", "local", b_ip, "remote", a_ip,
        "dstport", "4789", "dev", &ub,
    ];
    if !v6 {
        vx.push(if udp_checksum { "udpcsum" } else { "noudpcsum" });
    }
    hb.ip(&vx);
    hb.ip(&["link", "add", "br0", "type", "bridge"]);
    hb.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    hb.ip(&["link", "set", &bw, "master", "br0", "up"]);
    hb.ip(&["link", "set", "br0", "up"]);

    let config = format!(
        r#"
[[ports]]
name = "wl"
kind = "workload"
interface = "{wl}"

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"

[[tunnels]]
name = "to-b"
type = "vxlan"
uplink = "up"
local = "{a_ip}"
remote = "{b_ip}"
vni = 42
udp_checksum = {udp_checksum}

[[rules]]
id = 10
match = {{ in_port = "wl" }}
actions = [{{ encap = "to-b" }}]

[[rules]]
id = 20
match = {{ tunnel = "to-b", vni = 42 }}
actions = [{{ output = "wl" }}]
"#
    );
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    Overlay { wa, wb, hb, d, ha, up }
}

/// Pings `to` from `from`, `n` times; true if all were answered.
pub fn pings(from: &Netns, to: &str, n: u32) -> bool {
    from.exec_output(&["ping", "-c", &n.to_string(), "-i", "0.2", "-W", "2", to]).status.success()
}

/// Sends `bytes` random bytes over TCP from `from` to `to_ip` (listening in
/// `to`), and checks they arrive intact by comparing SHA-256 at both ends.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, bytes: usize) {
    let tmp = TempDir::new("tcp");
    let src = tmp.join("src");
    let dst = tmp.join("dst");
    let data: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let mut server = Background::spawn(
        to.command(&["sh", "-c", &format!("timeout 30 nc -l -p 5001 > {}", dst.display())]),
        "nc -l",
    );
    // Give the listener a moment to bind.
    std::thread::sleep(Duration::from_millis(300));
    let out = from.exec_output(&[
        "sh",
        "-c",
        &format!("timeout 30 nc -N -w 5 {to_ip} 5001 < {}", src.display()),
    ]);
    assert!(out.status.success(), "nc client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        server.wait_timeout(Duration::from_secs(30)).is_some(),
        "the TCP receiver did not finish"
    );
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), data.len(), "TCP transfer lost bytes");
    assert!(got == data, "TCP transfer corrupted bytes");
}

fn case(v6: bool, udp_checksum: bool) {
    let o = build(v6, udp_checksum);
    let why = |d: &Overlayd| {
        format!("counters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log())
    };
    assert!(pings(&o.wa, "198.51.100.2", 5), "A -> B ping failed; {}", why(&o.d));
    assert!(pings(&o.wb, "198.51.100.1", 5), "B -> A ping failed; {}", why(&o.d));
    tcp_transfer(&o.wa, &o.wb, "198.51.100.2", 2_000_000);
    tcp_transfer(&o.wb, &o.wa, "198.51.100.1", 2_000_000);
    // The host's own traffic on the uplink still reaches its kernel.
    let a_ip = if v6 { "2001:db8::1" } else { "192.0.2.1" };
    assert!(pings(&o.hb, a_ip, 2), "host A's kernel stopped answering on the uplink");

    let c = o.d.settled_counters();
    let t = &c["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert!(t["decap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert_eq!(c["dropped"], 0, "unexpected drops: {c:#}");
    let st = o.d.status();
    assert_eq!(st["io"]["backend"], "af_xdp");
    assert_eq!(st["io"]["ports"][0]["xdp_mode"], "native", "{st:#}");

    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

#[test]
fn vxlan_ipv4_underlay_against_kernel() {
    if require_root("vxlan_ipv4_underlay_against_kernel") {
        case(false, false);
    }
}

#[test]
fn vxlan_ipv4_underlay_udp_checksum_against_kernel() {
    if require_root("vxlan_ipv4_underlay_udp_checksum_against_kernel") {
        case(false, true);
    }
}

#[test]
fn vxlan_ipv6_underlay_against_kernel() {
    if require_root("vxlan_ipv6_underlay_against_kernel") {
        case(true, true);
    }
}
