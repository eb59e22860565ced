//! Our netlink requests against iproute2's, byte for byte.
//!
//! Each fixture in tests/fixtures/netlink holds one request that `ip` or `tc`
//! sent (captured with strace by scripts/capture-netlink.sh; the kernel here
//! may refuse it, the bytes were sent anyway), the command that sent it, and
//! the interface indices it ran with. For each, this test builds the same
//! request with our encoder and compares every byte, except the netlink
//! header's sequence number (bytes 8..12, iproute2 uses the time) and port
//! id (bytes 12..16, 0 in both): those two fields are zeroed on both sides
//! before comparing, and nothing else is.

use std::collections::HashMap;
use std::net::IpAddr;

use dataplane::offload::nl;
use dataplane::offload::{flower, vf};
use engine::model::VfLinkState;
use engine::placement::{
    Account, EncKeys, FlowerKeys, HwAction, HwFilter, TunnelSet, ETH_P_8021Q, ETH_P_ALL, ETH_P_IP,
    ETH_P_IPV6,
};

struct Fixture {
    command: String,
    ifindex: HashMap<String, u32>,
    bytes: Vec<u8>,
}

fn fixture(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/netlink/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut command = None;
    let mut ifindex = HashMap::new();
    let mut hex = String::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# command: ") {
            command = Some(c.to_string());
        } else if let Some(list) = line.strip_prefix("# interfaces: ") {
            for kv in list.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap();
                ifindex.insert(k.to_string(), v.parse().unwrap());
            }
        } else if !line.starts_with('#') {
            hex.push_str(line.trim());
        }
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    assert!(bytes.len() >= 16, "{path}: no message");
    Fixture { command: command.expect("# command: line"), ifindex, bytes }
}

/// Zeroes the header's sequence number and port id.
fn normalised(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v[8..16].fill(0);
    v
}

fn hexdump(b: &[u8]) -> String {
    b.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{:04x}  {}\n",
                i * 16,
                c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
            )
        })
        .collect()
}

fn same(name: &str, fx: &Fixture, ours: &[u8]) {
    let (a, b) = (normalised(&fx.bytes), normalised(ours));
    if a != b {
        let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        panic!(
            "{name}: our request differs from `{}` at byte {at} (lengths {} and {})\niproute2:\n{}ours:\n{}",
            fx.command,
            a.len(),
            b.len(),
            hexdump(&a),
            hexdump(&b)
        );
    }
}

#[test]
fn vf_settings_match_ip_link() {
    use vf::VfAttr::*;
    let mac = |b: u8| [2, 0, 0, 0, 0, b];
    let cases: Vec<(&str, u32, Vec<vf::VfAttr>)> = vec![
        ("vf_mac", 0, vec![Mac(mac(1))]),
        ("vf_vlan", 1, vec![Vlan { vlan: 100, qos: 0 }]),
        ("vf_vlan_qos", 2, vec![Vlan { vlan: 100, qos: 3 }]),
        ("vf_vlan_clear", 0, vec![Vlan { vlan: 0, qos: 0 }]),
        ("vf_spoofchk_on", 0, vec![SpoofChk(true)]),
        ("vf_spoofchk_off", 5, vec![SpoofChk(false)]),
        ("vf_trust_on", 0, vec![Trust(true)]),
        ("vf_trust_off", 7, vec![Trust(false)]),
        ("vf_state_auto", 0, vec![LinkState(VfLinkState::Auto)]),
        ("vf_state_enable", 1, vec![LinkState(VfLinkState::Enable)]),
        ("vf_state_disable", 2, vec![LinkState(VfLinkState::Disable)]),
        ("vf_rate", 3, vec![Rate { min: 10, max: 1000 }]),
        ("vf_mac_vlan_qos", 4, vec![Mac(mac(4)), Vlan { vlan: 4094, qos: 7 }]),
    ];
    for (name, vfn, attrs) in cases {
        let fx = fixture(name);
        assert!(fx.command.starts_with("ip link set dev pf0 vf"), "{name}: {}", fx.command);
        same(name, &fx, &vf::set_msg(fx.ifindex["pf0"], vfn, &attrs, 1));
    }
}

fn filter(
    dev: &str,
    pref: u16,
    handle: u32,
    protocol: u16,
    keys: FlowerKeys,
    actions: Vec<HwAction>,
) -> HwFilter {
    HwFilter {
        rule: handle - 1,
        dev: dev.into(),
        pref,
        handle,
        protocol,
        keys,
        actions,
        account: Account::default(),
        mask: Default::default(),
        value: Default::default(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(b: u8) -> Option<[u8; 6]> {
    Some([2, 0, 0, 0, 0, b])
}

#[test]
fn flower_filters_match_tc() {
    let redirect = |d: &str| HwAction::Redirect(d.into());
    let cases: Vec<(&str, HwFilter)> = vec![
        (
            "flower_redirect",
            filter(
                "rep0",
                10,
                5,
                ETH_P_IP,
                FlowerKeys { ip_dst: Some((ip("198.51.100.1"), 32)), ..Default::default() },
                vec![redirect("rep1")],
            ),
        ),
        (
            "flower_drop_all",
            filter(
                "rep0",
                1,
                1,
                ETH_P_ALL,
                FlowerKeys { eth_src: mac(1), ..Default::default() },
                vec![HwAction::Drop],
            ),
        ),
        (
            "flower_l2_macs",
            filter(
                "rep1",
                65000,
                100,
                ETH_P_ALL,
                FlowerKeys { eth_dst: mac(2), eth_src: mac(1), ..Default::default() },
                vec![redirect("rep0")],
            ),
        ),
        (
            "flower_encap_vxlan_v4",
            filter(
                "rep0",
                100,
                7,
                ETH_P_IP,
                FlowerKeys {
                    eth_dst: mac(2),
                    ip_src: Some((ip("198.51.100.0"), 24)),
                    ip_proto: Some(17),
                    l4_dst: Some(53),
                    ..Default::default()
                },
                vec![
                    HwAction::VlanPush(100),
                    HwAction::TunnelSet(TunnelSet {
                        src: ip("192.0.2.1"),
                        dst: ip("192.0.2.2"),
                        key_id: Some(42),
                        dst_port: Some(4789),
                        tos: 0,
                        ttl: 64,
                        csum: false,
                    }),
                    redirect("vx0"),
                ],
            ),
        ),
        (
            "flower_encap_vxlan_v6_csum",
            filter(
                "rep0",
                200,
                8,
                ETH_P_IPV6,
                FlowerKeys {
                    ip_dst: Some((ip("2001:db8:1::"), 48)),
                    ip_proto: Some(6),
                    l4_src: Some(1000),
                    ..Default::default()
                },
                vec![
                    HwAction::TunnelSet(TunnelSet {
                        src: ip("2001:db8::1"),
                        dst: ip("2001:db8::2"),
                        key_id: Some(0x00ff_ffff),
                        dst_port: Some(8472),
                        tos: 184,
                        ttl: 255,
                        csum: true,
                    }),
                    redirect("vx0"),
                ],
            ),
        ),
        (
            "flower_encap_gretap",
            filter(
                "rep1",
                300,
                9,
                ETH_P_8021Q,
                FlowerKeys { vlan_id: Some(10), ..Default::default() },
                vec![
                    HwAction::VlanModify(20),
                    HwAction::TunnelSet(TunnelSet {
                        src: ip("203.0.113.1"),
                        dst: ip("203.0.113.2"),
                        key_id: Some(7),
                        dst_port: None,
                        tos: 0,
                        ttl: 64,
                        csum: false,
                    }),
                    redirect("gt0"),
                ],
            ),
        ),
        (
            "flower_decap_vxlan_v6",
            filter(
                "vx0",
                5,
                11,
                ETH_P_8021Q,
                FlowerKeys {
                    vlan_id: Some(100),
                    vlan_ethtype: Some(ETH_P_IPV6),
                    enc: Some(EncKeys {
                        src: ip("2001:db8::2"),
                        dst: ip("2001:db8::1"),
                        key_id: Some(42),
                        dst_port: Some(4789),
                    }),
                    ..Default::default()
                },
                vec![HwAction::TunnelUnset, HwAction::VlanPop, redirect("rep1")],
            ),
        ),
        (
            "flower_decap_gretap_v4",
            filter(
                "gt0",
                65535,
                12,
                ETH_P_ALL,
                FlowerKeys {
                    enc: Some(EncKeys {
                        src: ip("192.0.2.2"),
                        dst: ip("192.0.2.1"),
                        key_id: Some(7),
                        dst_port: None,
                    }),
                    ..Default::default()
                },
                vec![HwAction::TunnelUnset, redirect("rep0")],
            ),
        ),
    ];
    for (name, f) in &cases {
        let fx = fixture(name);
        assert!(fx.command.starts_with("tc filter add"), "{name}: {}", fx.command);
        let r = |n: &str| fx.ifindex.get(n).copied();
        let ours = flower::add(f, 1, &r).unwrap();
        same(name, &fx, &ours);
    }

    // Removing and reading the filter of flower_encap_vxlan_v4.
    let f = &cases[3].1;
    let fx = fixture("flower_del");
    same(
        "flower_del",
        &fx,
        &flower::del(f, 1, fx.ifindex["rep0"], nl::NLM_F_REQUEST | nl::NLM_F_ACK),
    );
    let fx = fixture("flower_get");
    same("flower_get", &fx, &flower::get(f, 1, fx.ifindex["rep0"]));
    let fx = fixture("qdisc_clsact");
    same("qdisc_clsact", &fx, &flower::add_clsact(fx.ifindex["rep0"], 1));
}

/// The placement layer's own output encodes to what tc sends for the same
/// filter: rule 6 of a configuration, offloaded to hardware, and the tc
/// command an operator would type for it (flower_encap_vxlan_v4).
#[test]
fn a_placed_rule_encodes_like_tc() {
    use engine::placement::{place, Caps, PortHw, TunnelDevHw};
    let c = engine::model::Config::from_toml(
        r#"
[offload]
enabled = true
[[ports]]
name = "a"
kind = "workload"
[[ports]]
name = "up"
kind = "uplink"
[[tunnels]]
name = "t"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
[[rules]]
id = 6
priority = 65435
match = { in_port = "a", eth_dst = "02:00:00:00:00:02", ip_src = "198.51.100.0/24", ip_proto = 17, l4_dst = 53 }
actions = [{ push_vlan = 100 }, { encap = "t" }]
"#,
    )
    .unwrap();
    let rs = engine::compile::compile(&c).unwrap();
    let hw = |n: &str| Ok(PortHw { ifname: n.into(), switch_id: "x".into() });
    let caps = Caps {
        enabled: true,
        ports: vec![hw("rep0"), hw("up0")],
        vxlan: Ok(TunnelDevHw { ifname: "vx0".into() }),
        gretap: Err("unused".into()),
    };
    let p = place(&rs, &caps);
    let f = p[0].hardware.as_ref().unwrap_or_else(|| panic!("{:?}", p[0].software));
    let fx = fixture("flower_encap_vxlan_v4");
    let r = |n: &str| fx.ifindex.get(n).copied();
    same("placed rule 6", &fx, &flower::add(f, 1, &r).unwrap());
}
