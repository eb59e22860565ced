//! Two hosts: `overlayd` on host A, the Linux kernel's VXLAN device on host
//! B, a workload behind each. The workloads keep their devices' default
//! offloads (checksum offload, TSO and GSO on), as a container's veth does.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//! ```
//!
//! The workloads also have 2001:db8:1::1 and ::2, for IPv6 inner packets.

use crate::one_tunnel::OneTunnel;
pub use crate::one_tunnel::TierMode;
use crate::*;

/// Workload A's and B's inner addresses, IPv4 and IPv6.
pub const WA_IP: &str = "198.51.100.1";
pub const WB_IP: &str = "198.51.100.2";
pub const WA_IP6: &str = "2001:db8:1::1";
pub const WB_IP6: &str = "2001:db8:1::2";

pub struct Overlay {
    pub wa: Netns,
    pub wb: Netns,
    pub hb: Netns,
    pub d: Overlayd,
    pub ha: Netns,
    pub up: String,
    /// Host B's end of the underlay link.
    pub ub: String,
    /// The workloads' devices as they were when set up (A's and B's).
    pub workload_features: Vec<Features>,
}

impl Overlay {
    /// Panics if a workload's offloads changed since it was set up.
    pub fn assert_workload_offloads_unchanged(&self) {
        for f in &self.workload_features {
            f.assert_unchanged();
        }
    }
}

/// Builds both hosts and starts overlayd on host A with a VXLAN tunnel to B's
/// kernel VTEP.
pub fn build(v6: bool, udp_checksum: bool) -> Overlay {
    build_opts(&Opts { v6, udp_checksum, ..Opts::default() })
}

/// As `build`, with `extra` appended to overlayd's configuration.
pub fn build_with(v6: bool, udp_checksum: bool, extra: &str) -> Overlay {
    build_opts(&Opts { v6, udp_checksum, extra, ..Opts::default() })
}

/// How host A is built.
pub struct Opts<'a> {
    /// IPv6 underlay.
    pub v6: bool,
    pub udp_checksum: bool,
    /// Appended to overlayd's configuration.
    pub extra: &'a str,
    /// Queues of host A's uplink and workload links.
    pub queues: u32,
    /// Host A's uplink backend.
    pub backend: &'a str,
    /// Host A's workload port backend when it is a veth ("af_xdp" or
    /// "af_packet").
    pub wl_backend: &'a str,
    /// Attach workload A through a TAP port (created by overlayd, then moved
    /// into the workload's namespace), with virtio-net offloads "on" or "off".
    pub tap_offloads: Option<&'a str>,
    /// Turn checksum offload off on host B's uplink veth, so that its kernel
    /// finishes the checksums it would leave to a NIC. Off (the default),
    /// tunnel packets from B reach A with partial outer or inner checksums.
    pub peer_uplink_tx_off: bool,
    /// overlayd's `xdp_tier`.
    pub tier: TierMode,
    /// Put in front of the namespaces' names, for a test that wants its
    /// own (they are unique whatever it is).
    pub ns_prefix: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            v6: false,
            udp_checksum: false,
            extra: "",
            queues: 1,
            backend: "af_xdp",
            wl_backend: "af_xdp",
            tap_offloads: None,
            peer_uplink_tx_off: true,
            tier: TierMode::Auto,
            ns_prefix: "",
        }
    }
}

pub fn build_opts(o: &Opts) -> Overlay {
    let (v6, udp_checksum, extra, backend) = (o.v6, o.udp_checksum, o.extra, o.backend);
    let ns = |name: &str| Netns::new(&format!("{}{name}", o.ns_prefix));
    let (ha, hb, wa, wb) = (ns("ha"), ns("hb"), ns("wa"), ns("wb"));
    let (up, ub) = (unique("up"), unique("ub"));
    let (wl, we) = (unique("wl"), unique("we"));
    let (bw, wbe) = (unique("bw"), unique("wbe"));
    veth_queues(&ha, &up, &hb, &ub, o.queues);
    let wl_port = match o.tap_offloads {
        None => {
            veth_queues(&ha, &wl, &wa, &we, o.queues);
            format!("backend = \"{}\"", o.wl_backend)
        }
        Some(off) => format!("backend = \"tap\"\noffloads = \"{off}\"\nqueues = {}", o.queues),
    };
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
    let workload = |ns: &Netns, dev: &str, ip: &str, ip6: &str| {
        ns.ip(&["link", "set", dev, "mtu", mtu]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
        ns.ip(&["-6", "addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"]);
    };
    // The workloads keep their default offloads: what a container's veth
    // has, and what the tests check is left alone.
    let mut workload_features = Vec::new();
    workload(&wb, &wbe, WB_IP, WB_IP6);
    workload_features.push(Features::read(&wb, &wbe));
    if o.tap_offloads.is_none() {
        workload(&wa, &we, WA_IP, WA_IP6);
        workload_features.push(Features::read(&wa, &we));
    }
    if o.peer_uplink_tx_off {
        finish_checksums_like_a_nic(&hb, &ub);
    }
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

    let up_port = format!("backend = \"{backend}\"");
    let tunnel_body = format!(
        "type = \"vxlan\"\nlocal = \"{a_ip}\"\nremote = \"{b_ip}\"\nvni = 42\nudp_checksum = {udp_checksum}"
    );
    let config = OneTunnel {
        wl: &wl,
        wl_port: &wl_port,
        up: &up,
        up_port: &up_port,
        tunnel: "to-b",
        tunnel_body: &tunnel_body,
        decap_match: ", vni = 42",
        tier: o.tier,
        extra,
        ..OneTunnel::default()
    }
    .render();
    let d = Overlayd::start(&ha, &config);
    if o.tap_offloads.is_some() {
        // overlayd made the TAP device in host A; the workload side moves
        // into the workload's namespace while overlayd keeps its queue.
        ha.ip(&["link", "set", &wl, "netns", wa.name()]);
        wa.ip(&["link", "set", &wl, "up"]);
        workload(&wa, &wl, WA_IP, WA_IP6);
        workload_features.push(Features::read(&wa, &wl));
    }
    d.wait_neighbours();
    Overlay { wa, wb, hb, d, ha, up, ub, workload_features }
}

/// The bare two hosts of this module, without overlayd, for tests that
/// write their own configuration: namespaces, links (A's uplink `up` to B's
/// `ub`, workload link `wl`/`we`, B's workload link `bw`/`wbe`), the underlay
/// addresses 192.0.2.1 and .2, and host B's kernel VTEP (VNI 42, UDP 4789)
/// bridged to workload B. Workload addresses and MTUs are the test's;
/// `prepare` runs in each namespace before any link exists.
pub struct Hosts {
    pub ha: Netns,
    pub hb: Netns,
    pub wa: Netns,
    pub wb: Netns,
    pub up: String,
    pub ub: String,
    pub wl: String,
    pub we: String,
    pub bw: String,
    pub wbe: String,
}

pub fn hosts(prepare: impl Fn(&Netns)) -> Hosts {
    let (ha, hb, wa, wb) = (Netns::new("ha"), Netns::new("hb"), Netns::new("wa"), Netns::new("wb"));
    for ns in [&ha, &hb, &wa, &wb] {
        prepare(ns);
    }
    let (up, ub) = (unique("up"), unique("ub"));
    let (wl, we) = (unique("wl"), unique("we"));
    let (bw, wbe) = (unique("bw"), unique("wbe"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    ha.ip(&["addr", "add", "192.0.2.1/24", "dev", &up]);
    hb.ip(&["addr", "add", "192.0.2.2/24", "dev", &ub]);
    hb.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "192.0.2.2",
        "remote",
        "192.0.2.1",
        "dstport",
        "4789",
        "dev",
        &ub,
    ]);
    hb.ip(&["link", "add", "br0", "type", "bridge"]);
    hb.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    hb.ip(&["link", "set", &bw, "master", "br0", "up"]);
    hb.ip(&["link", "set", "br0", "up"]);
    Hosts { ha, hb, wa, wb, up, ub, wl, we, bw, wbe }
}

/// No IPv6 in `ns` (no router solicitations or MLD reports in the counts).
pub fn no_ipv6(ns: &Netns) {
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
}
