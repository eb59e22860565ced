//! The overlayd configuration most two-host tests give host A, built in one
//! place: a workload port `wl`, an uplink `up`, one tunnel, and two rules
//! (rule 10: what arrives on `wl` goes into the tunnel; rule 20: what comes
//! out of the tunnel goes to `wl`), with the XDP tier on or off; and the
//! two hosts the GRE tests against Open vSwitch's userspace GRE port share
//! ([`OvsGre`]).

use std::time::Duration;

use serde_json::Value;

use crate::{finish_checksums_like_a_nic, unique, veth, wait_until, Netns, Overlayd, Ovs};

/// The XDP tier's settings (`xdp_tier`): the interop tests run in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierMode {
    Auto,
    Off,
}

impl TierMode {
    pub const BOTH: [TierMode; 2] = [TierMode::Auto, TierMode::Off];

    pub fn name(self) -> &'static str {
        match self {
            TierMode::Auto => "auto",
            TierMode::Off => "off",
        }
    }

    /// Panics unless `status` shows the tier as this mode has it: present
    /// with the tier on, absent with it off.
    pub fn assert_in_status(self, status: &Value) {
        let present = status["io"]["tier"].is_object();
        assert_eq!(
            present,
            self == TierMode::Auto,
            "xdp_tier = \"{}\" but status shows the tier {}: {status:#}",
            self.name(),
            if present { "on" } else { "off" }
        );
    }
}

/// Host A's configuration; `render` writes it.
pub struct OneTunnel<'a> {
    /// The workload port's interface, and more lines of that port.
    pub wl: &'a str,
    pub wl_port: &'a str,
    /// The uplink's interface, and more lines of that port.
    pub up: &'a str,
    pub up_port: &'a str,
    /// The tunnel's name, and its lines after name and uplink (type,
    /// addresses, identifiers, options).
    pub tunnel: &'a str,
    pub tunnel_body: &'a str,
    /// More match fields of rule 10 (`, ethertype = 0x0800`) and rule 20.
    pub encap_match: &'a str,
    pub decap_match: &'a str,
    /// Actions of rule 20 before its output (`{ set_eth_dst = "..." }, `).
    pub decap_actions: &'a str,
    pub tier: TierMode,
    /// Appended: more tables (rules, networks).
    pub extra: &'a str,
}

impl Default for OneTunnel<'_> {
    fn default() -> Self {
        OneTunnel {
            wl: "",
            wl_port: "",
            up: "",
            up_port: "",
            tunnel: "to-peer",
            tunnel_body: "",
            encap_match: "",
            decap_match: "",
            decap_actions: "",
            tier: TierMode::Auto,
            extra: "",
        }
    }
}

impl OneTunnel<'_> {
    pub fn render(&self) -> String {
        let OneTunnel { wl, wl_port, up, up_port, tunnel, tunnel_body, .. } = self;
        // These tests' subject is the AF_XDP path: a veth port left to
        // `backend = "auto"` would run on tc (default_offloads.rs tests that).
        let backend = |extra: &str| {
            if extra.contains("backend") {
                ""
            } else {
                "backend = \"af_xdp\""
            }
        };
        let (wl_backend, up_backend) = (backend(wl_port), backend(up_port));
        let (em, dm, da, extra) =
            (self.encap_match, self.decap_match, self.decap_actions, self.extra);
        // Top-level keys come before the first table.
        format!(
            r#"xdp_tier = "{tier}"

[[ports]]
name = "wl"
kind = "workload"
interface = "{wl}"
{wl_backend}
{wl_port}

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"
{up_backend}
{up_port}

[[tunnels]]
name = "{tunnel}"
uplink = "up"
{tunnel_body}

[[rules]]
id = 10
match = {{ in_port = "wl"{em} }}
actions = [{{ encap = "{tunnel}" }}]

[[rules]]
id = 20
match = {{ tunnel = "{tunnel}"{dm} }}
actions = [{da}{{ output = "wl" }}]
{extra}
"#,
            tier = self.tier.name(),
        )
    }
}

/// Host A's underlay address (overlayd), host B's (Open vSwitch), and
/// their workloads' addresses, in the GRE tests against OVS.
pub const A_IP: &str = "192.0.2.1";
pub const B_IP: &str = "192.0.2.2";
pub const WA_IP: &str = "198.51.100.1";
pub const WB_IP: &str = "198.51.100.2";
/// Workload A's MAC (fixed, so host A's rules may name it).
pub const WA_MAC: &str = "02:00:00:00:0a:01";

/// What differs between the GRE tests against Open vSwitch.
pub struct OvsGreOpts<'a> {
    /// Prefix of the namespaces' names (the test's name).
    pub prefix: &'a str,
    /// overlayd's tunnel after its addresses: type and options (TOML).
    pub tunnel: &'a str,
    /// The OVS GRE port's options beyond its addresses.
    pub ovs_options: &'a [&'a str],
    /// L3 GRE (`options:packet_type=legacy_l3` on the OVS side): OVS's
    /// br-int gets flows that carry IP between the tunnel and workload B.
    pub l3: bool,
    /// Host A's configuration, as [`OneTunnel`] takes it.
    pub encap_match: &'a str,
    pub decap_actions: &'a str,
    pub extra: &'a str,
    pub tier: TierMode,
}

/// Two hosts over one veth, and a workload on each:
///
/// ```text
///  wa (198.51.100.1)            ha: overlayd                hb: OVS (netdev)            wb (198.51.100.2)
///  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  br-phy (192.0.2.2)
///                 192.0.2.1                                br-int: tun0 + bw ---veth--- wbe
/// ```
///
/// Both workloads send full checksums (tx off: a partial one is not the
/// tier's) and know each other's MAC (no ARP crosses the tunnel); both
/// ends of the underlay and workload A's end have GRO on (NAPI), so XDP
/// may redirect out of `up` and `wl`. overlayd has learned its next hops.
pub struct OvsGre {
    pub ha: Netns,
    pub hb: Netns,
    pub wa: Netns,
    pub wb: Netns,
    pub up: String,
    pub ub: String,
    pub we: String,
    pub wbe: String,
    pub ovs: Ovs,
    pub d: Overlayd,
}

impl OvsGre {
    pub fn start(o: &OvsGreOpts) -> OvsGre {
        let p = o.prefix;
        let ns = |n: &str| Netns::new(&format!("{p}-{n}"));
        let (ha, hb, wa, wb) = (ns("ha"), ns("hb"), ns("wa"), ns("wb"));
        for ns in [&wa, &wb] {
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        }
        let (up, ub) = (unique("up"), unique("ub"));
        let (wl, we) = (unique("wl"), unique("we"));
        let (bw, wbe) = (unique("bw"), unique("wbe"));
        veth(&ha, &up, &hb, &ub);
        veth(&ha, &wl, &wa, &we);
        veth(&hb, &bw, &wb, &wbe);
        wa.ip(&["link", "set", &we, "address", WA_MAC]);
        ha.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", &up]);
        for (ns, dev, ip) in [(&wa, &we, WA_IP), (&wb, &wbe, WB_IP)] {
            ns.ip(&["link", "set", dev, "mtu", "1400"]);
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
        }
        // Open vSwitch's workload: tx off, as its documentation requires;
        // overlayd's keeps its default offloads.
        wb.exec(&["ethtool", "-K", &wbe, "tx", "off"]);
        finish_checksums_like_a_nic(&hb, &ub);
        hb.exec(&["ethtool", "-K", &ub, "gro", "on"]);
        hb.exec(&["ethtool", "-K", &bw, "tx", "off"]);
        wa.exec(&["ethtool", "-K", &we, "gro", "on"]);

        let ovs = Ovs::start(&hb);
        ovs.vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
        let mut port: Vec<String> =
            ["add-port", "br-int", "tun0", "--", "set", "interface", "tun0", "type=gre"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        port.push(format!("options:remote_ip={A_IP}"));
        port.push(format!("options:local_ip={B_IP}"));
        port.extend(o.ovs_options.iter().map(|s| s.to_string()));
        ovs.vsctl(&port.iter().map(String::as_str).collect::<Vec<_>>());
        ovs.vsctl(&["add-port", "br-int", &bw]);
        let hw = format!("other_config:hwaddr={}", hb.mac(&ub));
        ovs.vsctl(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            &hw,
        ]);
        ovs.vsctl(&["add-port", "br-phy", &ub]);
        hb.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "br-phy"]);
        hb.ip(&["link", "set", "br-phy", "up"]);
        ovs.appctl(&["tnl/neigh/set", "br-phy", A_IP, &ha.mac(&up)]);
        let wbe_mac = wb.mac(&wbe);
        wa.ip(&["neigh", "replace", WB_IP, "lladdr", &wbe_mac, "dev", &we]);
        wb.ip(&["neigh", "replace", WA_IP, "lladdr", WA_MAC, "dev", &wbe]);
        if o.l3 {
            // An IP tunnel port has no MACs: give what it delivers B's, and
            // send B's IP packets into it (OVS strips their Ethernet header).
            ovs.ofctl("del-flows", "br-int", &[]);
            let to_b = format!(
                "priority=10,in_port=tun0,ip,actions=mod_dl_src:02:00:00:00:00:01,mod_dl_dst:{wbe_mac},output:{bw}"
            );
            let to_a = format!("priority=10,in_port={bw},ip,actions=output:tun0");
            ovs.ofctl("add-flow", "br-int", &[&to_b]);
            ovs.ofctl("add-flow", "br-int", &[&to_a]);
        }

        let up_mac = ha.mac(&up);
        let config = OneTunnel {
            wl: &wl,
            up: &up,
            up_port: &format!("backend = \"af_xdp\"\nmac = \"{up_mac}\""),
            tunnel_body: &format!("local = \"{A_IP}\"\nremote = \"{B_IP}\"\n{}", o.tunnel),
            encap_match: o.encap_match,
            decap_actions: o.decap_actions,
            tier: o.tier,
            extra: o.extra,
            ..OneTunnel::default()
        }
        .render();
        let d = Overlayd::start(&ha, &config);
        d.wait_neighbours();
        OvsGre { ha, hb, wa, wb, up, ub, we, wbe, ovs, d }
    }

    /// Waits until the tier's owner has seen that `port` (`wl` or `up`)
    /// takes redirected frames (it probes every second); false if not
    /// within 5 s.
    pub fn wait_for_tier_output(&self, port: &str) -> bool {
        wait_until(Duration::from_secs(5), || {
            let st = self.d.status();
            let ports = st["io"]["tier"]["ports"].as_array().cloned().unwrap_or_default();
            ports.iter().any(|p| p["port"] == port && p["not_output"].is_null())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_configuration_overlayd_reads() {
        let c = OneTunnel {
            wl: "wl0",
            up: "up0",
            up_port: "backend = \"af_packet\"",
            tunnel_body:
                "type = \"vxlan\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42",
            decap_match: ", vni = 42",
            tier: TierMode::Off,
            ..OneTunnel::default()
        }
        .render();
        let cfg = engine::model::Config::from_toml(&c).unwrap_or_else(|e| panic!("{e}\n{c}"));
        assert_eq!(cfg.xdp_tier, engine::model::TierSpec::Off);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.tunnels[0].name, "to-peer");
    }
}
