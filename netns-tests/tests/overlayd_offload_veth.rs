//! Offload on devices without SR-IOV or switchdev (veth): every VF
//! operation fails with an error naming the device and the attribute and
//! changes nothing, every rule stays in software and says why, and the
//! dataplane keeps forwarding with every packet accounted for.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd, offload on     hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//! ```

use std::time::Duration;

use netns_tests::*;

struct Hosts {
    wa: Netns,
    wb: Netns,
    ha: Netns,
    _hb: Netns,
    up: String,
    d: Overlayd,
}

fn build() -> Hosts {
    let ha = Netns::new("of-a");
    let hb = Netns::new("of-b");
    let wa = Netns::new("of-wa");
    let wb = Netns::new("of-wb");
    let (up, ub) = (unique("ofu"), unique("ofb"));
    let (wl, we) = (unique("ofl"), unique("ofe"));
    let (bw, wbe) = (unique("ofw"), unique("ofx"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    ha.ip(&["addr", "add", "192.0.2.1/24", "dev", &up]);
    hb.ip(&["addr", "add", "192.0.2.2/24", "dev", &ub]);
    for (ns, dev, ip) in [(&wa, &we, "198.51.100.1/24"), (&wb, &wbe, "198.51.100.2/24")] {
        ns.ip(&["link", "set", dev, "mtu", "1450"]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
    }
    finish_checksums_like_a_nic(&hb, &ub);
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
        "noudpcsum",
    ]);
    hb.ip(&["link", "add", "br0", "type", "bridge"]);
    hb.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    hb.ip(&["link", "set", &bw, "master", "br0", "up"]);
    hb.ip(&["link", "set", "br0", "up"]);
    // The kernel VXLAN device tc's tunnel_key actions would use (external,
    // on another port so it never competes with the dataplane for 4789).
    ha.ip(&["link", "add", "ofvx0", "type", "vxlan", "external", "dstport", "4790"]);
    ha.ip(&["link", "set", "ofvx0", "up"]);

    // The configuration itself asks for a VF setting on the veth uplink: at
    // start it is refused (and reported), and the daemon runs on.
    let config = format!(
        r#"
[offload]
enabled = true
vxlan_device = "ofvx0"
[[offload.pfs]]
interface = "{up}"
[[offload.pfs.vfs]]
vf = 0
trust = true

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
"#
    );
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    Hosts { wa, wb, ha, _hb: hb, up, d }
}

#[test]
fn vf_operations_fail_clearly_on_veth_and_traffic_is_unaffected() {
    if !require_root("vf_operations_fail_clearly_on_veth_and_traffic_is_unaffected") {
        return;
    }
    let h = build();
    let d = &h.d;
    let why =
        || format!("counters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log());
    assert!(pings(&h.wa, "198.51.100.2", 3), "A -> B ping failed; {}", why());

    // The start-up VF setting was refused, naming the device and attribute.
    let st = d.status();
    let vf_error = st["offload"]["vf_error"].as_str().unwrap_or_else(|| panic!("{st:#}"));
    assert!(vf_error.contains(&format!("{}: vf 0: IFLA_VF_TRUST", h.up)), "{vf_error}");
    assert_eq!(st["offload"]["hardware_rules"], 0, "{st:#}");

    // Every rule stays in software, and says why.
    let off = d.ctl_json(&["offload", "status"]);
    let rules = off["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{off:#}");
    for r in rules {
        assert_eq!(r["runs_in"], "software", "{off:#}");
        assert_eq!(r["code"], "device", "{off:#}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("no phys_switch_id") && reason.contains("not a switchdev port"),
            "{reason}"
        );
    }
    let listed = d.ctl_json(&["rule", "list"]);
    assert_eq!(listed[0]["placement"]["runs_in"], "software", "{listed:#}");
    let text = d.ctl(&["rule", "list"]);
    // In software, after the first packet in the XDP tier; and why not hardware.
    assert!(text.contains("XDP tier after the first packet; not hardware: in port wl:"), "{text}");

    // Each VF operation on VF 1 (a new entry, vfs[1], of the document):
    // refused with the device, the attribute and the field; the generation
    // does not move, so nothing was applied.
    let generation = d.status()["generation"].as_u64().unwrap();
    let up = h.up.as_str();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--mac", "02:00:00:00:00:31"], "IFLA_VF_MAC", "offload.pfs[0].vfs[1].mac"),
        (vec!["--vlan", "100", "--qos", "3"], "IFLA_VF_VLAN", "offload.pfs[0].vfs[1].vlan"),
        (vec!["--spoof-check", "off"], "IFLA_VF_SPOOFCHK", "offload.pfs[0].vfs[1].spoof_check"),
        (vec!["--link-state", "enable"], "IFLA_VF_LINK_STATE", "offload.pfs[0].vfs[1].link_state"),
        (
            vec!["--min-tx-rate", "10", "--max-tx-rate", "100"],
            "IFLA_VF_RATE",
            "offload.pfs[0].vfs[1].max_tx_rate",
        ),
    ];
    // A ping stream runs through all of it.
    let mut stream = Background::spawn(
        h.wa.command(&["ping", "-q", "-c", "150", "-i", "0.02", "-W", "2", "198.51.100.2"]),
        "ping stream",
    );
    for (args, attr, path) in &cases {
        let mut v = vec!["vf", "set", up, "1"];
        v.extend_from_slice(args);
        let o = d.ctl_output(&v);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{v:?}: {err}");
        assert!(err.contains(&format!("{up}: vf 1: {attr}")), "{v:?}: {err}");
        assert!(err.contains(path) && err.contains("HTTP 422"), "{v:?}: {err}");
        assert!(err.contains("not supported"), "{v:?}: {err}");
    }
    let o = d.ctl_output(&["vf", "count", up, "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("{up}: sriov_numvfs: not an SR-IOV physical function")), "{err}");
    assert!(err.contains("offload.pfs[0].num_vfs"), "{err}");
    assert_eq!(
        d.status()["generation"].as_u64().unwrap(),
        generation,
        "a refused change was applied"
    );
    let cfg = d.ctl_json(&["config", "get"]);
    assert_eq!(cfg["offload"]["pfs"][0]["vfs"].as_array().unwrap().len(), 1, "{cfg:#}");

    // Reading the PF: no SR-IOV, no VF, no switch.
    let show = d.ctl_json(&["vf", "show", up]);
    assert!(
        show["sriov"]["error"].as_str().unwrap().contains("not an SR-IOV physical function"),
        "{show:#}"
    );
    assert_eq!(show["vfs"], serde_json::json!([]), "{show:#}");
    assert!(
        show["representors"]["error"].as_str().unwrap().contains("not a switchdev port"),
        "{show:#}"
    );
    let o = d.ctl_output(&["vf", "show", "of-nosuchif"]);
    assert_eq!(o.status.code(), Some(3));

    // The trace says where the rule runs.
    let t = d.ctl(&[
        "trace",
        "--in-port",
        "wl",
        "--packet",
        "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(dport=9)",
    ]);
    assert!(t.contains("rule 10 runs in software: in port wl:"), "{t}");

    // Unrelated changes still apply (the refused VF setting in the document
    // is not sent again), and offload can be switched off and on.
    d.ctl(&["offload", "disable"]);
    let off = d.ctl_json(&["offload", "status"]);
    assert_eq!(off["rules"][0]["code"], "disabled", "{off:#}");
    d.ctl(&["offload", "enable"]);

    let st = stream.wait_timeout(Duration::from_secs(30)).expect("the ping stream did not finish");
    assert!(st.success(), "pings were lost while VF operations failed; {}", why());
    assert!(pings(&h.wb, "198.51.100.1", 3), "B -> A ping failed; {}", why());

    let c = d.settled_counters();
    let t = &c["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() >= 150, "{c:#}");
    assert!(t["decap"]["packets"].as_u64().unwrap() >= 150, "{c:#}");
    assert_eq!(c["dropped"], 0, "unexpected drops: {c:#}");

    let Hosts { d, ha, .. } = h;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}
