//! The offloader against a scripted kernel: what it sends, in which order,
//! what it does when the kernel refuses, and how counters add up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use engine::compile::compile;
use engine::counters::{FlowSnapshot, Snapshot};
use engine::model::Config;

use super::*;

/// What the scripted kernel was asked, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Add { dev: u32, pref: u16, handle: u32 },
    Del { dev: u32, pref: u16, handle: u32 },
    Get { handle: u32 },
    Qdisc { dev: u32 },
    SetVf { attr: u16, vf: u32, value: Vec<u8> },
    GetLink,
}

#[derive(Default)]
struct Kernel {
    log: Vec<Op>,
    /// (ifindex, pref, handle) of the filters the "hardware" holds.
    table: BTreeSet<(u32, u16, u32)>,
    /// Filter handles whose addition fails.
    refuse_add: Vec<u32>,
    /// VF attribute types that fail with EOPNOTSUPP.
    refuse_vf: Vec<u16>,
    /// Packets counted by each handle.
    packets: std::collections::HashMap<u32, u64>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Kernel>>);

fn tc(m: &[u8]) -> (u32, u32, u16) {
    let w = |o: usize| u32::from_ne_bytes(m[o..o + 4].try_into().unwrap());
    (w(20), w(24), (w(32) >> 16) as u16)
}

fn err(errno: i32) -> nl::NlError {
    nl::NlError {
        errno: Some(errno),
        message: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

impl Backend for Fake {
    fn ifindex(&mut self, ifname: &str) -> Result<u32, IfindexError> {
        match ifname {
            "rep0" => Ok(10),
            "rep1" => Ok(11),
            "up0" => Ok(12),
            "vx0" => Ok(13),
            "pf0" => Ok(20),
            n => Err(IfindexError {
                name: n.into(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            }),
        }
    }
    fn probe_port(&mut self, ifname: &str) -> Result<PortHw, SwitchdevError> {
        match ifname {
            "rep0" | "rep1" | "up0" => {
                Ok(PortHw { ifname: ifname.into(), switch_id: "aabb".into() })
            }
            n => Err(SwitchdevError::NotSwitchdev {
                ifname: n.into(),
                reason: switchdev::AttrError::Unreadable {
                    attr: "phys_switch_id",
                    source: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                },
            }),
        }
    }
    fn request(&mut self, m: Vec<u8>) -> Result<Vec<Vec<u8>>, nl::NlError> {
        let mut k = self.0.lock().unwrap();
        match nl::msg_type(&m) {
            nl::RTM_NEWQDISC => {
                k.log.push(Op::Qdisc { dev: tc(&m).0 });
                Ok(vec![])
            }
            nl::RTM_NEWTFILTER => {
                let (dev, handle, pref) = tc(&m);
                k.log.push(Op::Add { dev, pref, handle });
                if k.refuse_add.contains(&handle) {
                    return Err(err(libc::EOPNOTSUPP));
                }
                if !k.table.insert((dev, pref, handle)) {
                    return Err(err(libc::EEXIST));
                }
                Ok(vec![])
            }
            nl::RTM_DELTFILTER => {
                let (dev, handle, pref) = tc(&m);
                k.log.push(Op::Del { dev, pref, handle });
                if !k.table.remove(&(dev, pref, handle)) {
                    return Err(err(libc::ENOENT));
                }
                assert!(
                    nl::msg_flags(&m) & nl::NLM_F_ECHO != 0,
                    "removals ask for the final counters"
                );
                let p = k.packets.remove(&handle).unwrap_or(0);
                let s = FlowSnapshot { packets: p, bytes: p * 100 };
                Ok(vec![flower::stats_msg(nl::RTM_DELTFILTER, s)])
            }
            nl::RTM_GETTFILTER => {
                let (dev, handle, pref) = tc(&m);
                k.log.push(Op::Get { handle });
                if !k.table.contains(&(dev, pref, handle)) {
                    return Err(err(libc::ENOENT));
                }
                let p = k.packets.get(&handle).copied().unwrap_or(0);
                Ok(vec![flower::stats_msg(
                    nl::RTM_NEWTFILTER,
                    FlowSnapshot { packets: p, bytes: p * 100 },
                )])
            }
            nl::RTM_GETLINK => {
                k.log.push(Op::GetLink);
                // PF with VF 0: MAC 02:00:00:00:00:aa, trust off.
                let mut a = nl::Msg::new(nl::RTM_NEWLINK, 0, 0);
                a.put(&[0; 16]);
                a.u32(21, 1);
                let l = a.begin(22);
                let i = a.begin(1);
                let mut mac = 0u32.to_ne_bytes().to_vec();
                mac.extend_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
                mac.extend_from_slice(&[0; 26]);
                a.attr(1, &mac);
                let mut trust = 0u32.to_ne_bytes().to_vec();
                trust.extend_from_slice(&0u32.to_ne_bytes());
                a.attr(9, &trust);
                a.end(i);
                a.end(l);
                Ok(vec![a.finish()])
            }
            nl::RTM_NEWLINK => {
                // RTM_NEWLINK | ifinfomsg | VFINFO_LIST | VF_INFO | attr
                let attr = u16::from_ne_bytes([m[42], m[43]]);
                let vf = u32::from_ne_bytes(m[44..48].try_into().unwrap());
                let len = u16::from_ne_bytes([m[40], m[41]]) as usize;
                k.log.push(Op::SetVf { attr, vf, value: m[48..40 + len].to_vec() });
                if k.refuse_vf.contains(&attr) {
                    return Err(err(libc::EOPNOTSUPP));
                }
                Ok(vec![])
            }
            t => panic!("unexpected request type {t}"),
        }
    }
    fn num_vfs(&mut self, pf: &str) -> Result<(u32, u32), SriovError> {
        let path = format!("/sys/class/net/{pf}/device/sriov_numvfs").into();
        Err(SriovError::NotPf { path })
    }
    fn set_num_vfs(&mut self, _: &str, _: u32) -> Result<(), SriovError> {
        unreachable!("num_vfs fails first")
    }
}

const BASE: &str = r#"
[offload]
enabled = true
vxlan_device = "vx0"
[[ports]]
name = "a"
kind = "workload"
interface = "rep0"
[[ports]]
name = "b"
kind = "workload"
interface = "rep1"
[[ports]]
name = "up"
kind = "uplink"
interface = "up0"
[[ports]]
name = "veth"
kind = "workload"
interface = "veth9"
[[tunnels]]
name = "t"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
"#;

fn rules(extra: &str) -> engine::compile::RuleSet {
    compile(&Config::from_toml(&format!("{BASE}{extra}")).unwrap()).unwrap()
}

const R1: &str = "[[rules]]\nid = 1\npriority = 10\nmatch = { in_port = \"a\" }\nactions = [{ encap = \"t\" }]\n";
const R2: &str =
    "[[rules]]\nid = 2\npriority = 5\nmatch = { tunnel = \"t\" }\nactions = [{ output = \"a\" }]\n";
const R3: &str =
    "[[rules]]\nid = 3\nmatch = { in_port = \"veth\" }\nactions = [{ output = \"a\" }]\n";
/// Above R1 and overlapping it.
const R4: &str = "[[rules]]\nid = 4\npriority = 20\nmatch = { in_port = \"a\", eth_dst = \"02:00:00:00:00:02\" }\nactions = [\"drop\"]\n";

fn setup() -> (Fake, Offloader) {
    let k = Fake::default();
    (k.clone(), Offloader::new(Box::new(k)))
}

#[test]
fn offloadable_rules_go_to_hardware_the_rest_say_why_not() {
    let (k, o) = setup();
    let rs = rules(&format!("{R1}{R2}{R3}"));
    o.sync(&rs);
    let p = o.placement();
    assert_eq!(p[0].hardware.as_ref().map(|f| f.dev.as_str()), Some("rep0"));
    assert_eq!(p[1].hardware.as_ref().map(|f| f.dev.as_str()), Some("vx0"));
    let w = p[2].software.as_ref().unwrap();
    assert_eq!(w.code, "device");
    assert!(w.text.contains("veth9: no phys_switch_id"), "{}", w.text);
    let g = k.0.lock().unwrap();
    // Rule 1's handle is 2 on rep0 (10), rule 2's is 3 on vx0 (13).
    assert_eq!(g.table, BTreeSet::from([(10, 65525, 2), (13, 65530, 3)]));
    assert!(g.log.contains(&Op::Qdisc { dev: 10 }) && g.log.contains(&Op::Qdisc { dev: 13 }));
}

#[test]
fn a_new_generation_sends_only_the_difference_in_a_safe_order() {
    let (k, o) = setup();
    o.sync(&rules(&format!("{R1}{R2}")));
    k.0.lock().unwrap().log.clear();
    // Same rules again: nothing is sent.
    o.sync(&rules(&format!("{R1}{R2}")));
    assert_eq!(k.0.lock().unwrap().log, vec![]);
    // R4 lands above R1 and overlaps it: until it is in, R1 gives the old
    // answer, after that R4 the new one. Only R4 is sent.
    o.sync(&rules(&format!("{R1}{R2}{R4}")));
    let changes = |k: &Fake| -> Vec<Op> {
        let mut g = k.0.lock().unwrap();
        let v = g.log.iter().filter(|o| !matches!(o, Op::Qdisc { .. })).cloned().collect();
        g.log.clear();
        v
    };
    assert_eq!(changes(&k), vec![Op::Add { dev: 10, pref: 65515, handle: 5 }]);
    // R4 changes (drop -> output): between the old filter leaving and the
    // new one arriving, R1 would answer for R4's packets, which is right
    // for neither generation. So R1 goes out first and comes back last.
    let r4b = R4.replace("[\"drop\"]", "[{ output = \"b\" }]");
    o.sync(&rules(&format!("{R1}{R2}{r4b}")));
    assert_eq!(
        changes(&k),
        vec![
            Op::Del { dev: 10, pref: 65525, handle: 2 },
            Op::Del { dev: 10, pref: 65515, handle: 5 },
            Op::Add { dev: 10, pref: 65515, handle: 5 },
            Op::Add { dev: 10, pref: 65525, handle: 2 },
        ]
    );
    // R4 leaves: only its filter goes; after that R1 gives the new answer.
    o.sync(&rules(&format!("{R1}{R2}")));
    assert_eq!(changes(&k), vec![Op::Del { dev: 10, pref: 65515, handle: 5 }]);
    assert_eq!(k.0.lock().unwrap().table, BTreeSet::from([(10, 65525, 2), (13, 65530, 3)]));
}

#[test]
fn a_refused_filter_rolls_the_device_back_and_software_takes_over() {
    let (k, o) = setup();
    o.sync(&rules(R1));
    k.0.lock().unwrap().packets.insert(2, 7);
    // Rule 5 (between rule 4 and rule 1) is refused by the device, after
    // rule 4 went in (highest first).
    k.0.lock().unwrap().refuse_add.push(6);
    let r5 = "[[rules]]\nid = 5\npriority = 15\nmatch = { in_port = \"a\", ethertype = 0x86dd }\nactions = [{ output = \"b\" }]\n";
    let r6 = "[[rules]]\nid = 6\npriority = 1\nmatch = { in_port = \"b\" }\nactions = [{ output = \"a\" }]\n";
    let rs = rules(&format!("{R1}{r5}{r6}{R4}"));
    o.sync(&rs);
    let p = o.placement();
    let by = |id: u32| p.iter().find(|x| x.rule == id).unwrap();
    for id in [5, 4] {
        let w = by(id).software.as_ref().unwrap_or_else(|| panic!("rule {id} in hardware"));
        assert_eq!(w.code, "update_failed", "rule {id}: {}", w.text);
        assert!(
            w.text.contains("rep0") && w.text.contains("Operation not supported"),
            "{}",
            w.text
        );
    }
    // Rule 1 is unchanged and valid in both generations: it stays. Rule 6
    // is on another device (rep1) and went in.
    assert!(by(1).hardware.is_some());
    assert!(by(6).hardware.is_some());
    let g = k.0.lock().unwrap();
    assert_eq!(
        g.table,
        BTreeSet::from([(10, 65525, 2), (11, 65534, 7)]),
        "rep0 keeps rule 1 and nothing half-done (rule 4 went in before rule 5 failed, and out again)"
    );
    assert!(g.log.contains(&Op::Del { dev: 10, pref: 65515, handle: 5 }));
    drop(g);
    let mut s = Snapshot::default();
    o.add_counters(&mut s, &rs);
    let i1 = rs.rules.iter().position(|r| r.id == 1).unwrap();
    assert_eq!(s.rules[i1].packets, 7);
    assert_eq!((s.rx, s.tx), (7, 7));
    assert!(s.conserved());
    let st = o.status();
    let error = st.devices["rep0"].error.as_deref().unwrap_or_else(|| panic!("{st:?}"));
    assert!(error.contains("adding rule 5's filter"), "{st:?}");

    // The device works again: the next generation retries.
    k.0.lock().unwrap().refuse_add.clear();
    let rs2 = rules(&format!("{R1}{r5}{r6}"));
    o.sync(&rs2);
    assert!(o.placement().iter().all(|p| p.hardware.is_some()), "{:?}", o.placement());
    assert_eq!(o.status().devices["rep0"].error, None);
}

#[test]
fn hardware_counters_merge_and_survive_removal() {
    let (k, o) = setup();
    let rs = rules(&format!("{R1}{R2}"));
    o.sync(&rs);
    k.0.lock().unwrap().packets.extend([(2, 10), (3, 4)]);
    let mut s = Snapshot::default();
    o.add_counters(&mut s, &rs);
    assert_eq!((s.rules[0].packets, s.rules[1].packets), (10, 4));
    assert_eq!(s.tunnels[0].0.packets, 10, "encapsulated by the hardware");
    assert_eq!(s.tunnels[0].1.packets, 4, "decapsulated by the hardware");
    assert!(s.conserved());
    // Rule 2 goes away; its count stays in the totals (like software's).
    k.0.lock().unwrap().packets.insert(3, 6);
    let rs2 = rules(R1);
    o.sync(&rs2);
    let mut s = Snapshot::default();
    o.add_counters(&mut s, &rs2);
    assert_eq!(s.rules[0].packets, 10);
    assert_eq!(s.rx, 16, "rule 2's six final packets still count");
    assert_eq!(s.tunnels[0].1.packets, 6);
}

#[test]
fn disabling_offload_empties_the_hardware() {
    let (k, o) = setup();
    o.sync(&rules(&format!("{R1}{R2}")));
    let c =
        Config::from_toml(&format!("{BASE}{R1}{R2}").replace("enabled = true", "enabled = false"))
            .unwrap();
    o.sync(&compile(&c).unwrap());
    assert!(k.0.lock().unwrap().table.is_empty());
    assert!(o.placement().iter().all(|p| p.software.as_ref().unwrap().code == "disabled"));
}

fn vf_doc(settings: &str) -> Config {
    Config::from_toml(&format!(
        "[[offload.pfs]]\ninterface = \"pf0\"\n[[offload.pfs.vfs]]\nvf = 0\n{settings}"
    ))
    .unwrap()
}

#[test]
fn a_refused_vf_setting_names_it_and_puts_the_others_back() {
    let (k, o) = setup();
    k.0.lock().unwrap().refuse_vf.push(9); // IFLA_VF_TRUST
    let old = Config::default();
    let new = vf_doc("mac = \"02:00:00:00:00:01\"\nspoof_check = true\ntrust = true\n");
    let e = o.apply_vfs(Some(&old), &new).unwrap_err();
    assert_eq!(e.path(), Some("offload.pfs[0].vfs[0].trust"));
    let text = e.to_string();
    assert!(text.contains("pf0: vf 0: IFLA_VF_TRUST: Operation not supported"), "{text}");
    let log = k.0.lock().unwrap().log.clone();
    let sets: Vec<(u16, Vec<u8>)> = log
        .iter()
        .filter_map(|o| match o {
            Op::SetVf { attr, vf: 0, value } => Some((*attr, value.clone())),
            _ => None,
        })
        .collect();
    let mac = |b: u8| {
        let mut v = vec![2, 0, 0, 0, 0, b];
        v.extend_from_slice(&[0; 26]);
        v
    };
    assert_eq!(
        sets,
        vec![
            (1, mac(0x01)),                   // MAC set
            (4, 1u32.to_ne_bytes().to_vec()), // spoof check set (no known previous value)
            (9, 1u32.to_ne_bytes().to_vec()), // trust refused
            (1, mac(0xaa)),                   // MAC put back to what the device had
        ]
    );
}

#[test]
fn only_changed_vf_settings_are_sent() {
    let (k, o) = setup();
    let old = vf_doc("mac = \"02:00:00:00:00:01\"\n");
    let new = vf_doc("mac = \"02:00:00:00:00:01\"\nvlan = 100\nqos = 3\n");
    o.apply_vfs(Some(&old), &new).unwrap();
    let log = k.0.lock().unwrap().log.clone();
    let attrs: Vec<u16> = log
        .iter()
        .filter_map(|o| if let Op::SetVf { attr, .. } = o { Some(*attr) } else { None })
        .collect();
    assert_eq!(attrs, vec![2], "only IFLA_VF_VLAN");
    // num_vfs on a device without SR-IOV: refused with the sysfs reason.
    let mut c = new.clone();
    c.offload.pfs[0].num_vfs = Some(4);
    let e = o.apply_vfs(Some(&new), &c).unwrap_err();
    assert_eq!(e.path(), Some("offload.pfs[0].num_vfs"));
    assert!(e.to_string().contains("pf0: sriov_numvfs: not an SR-IOV physical function"), "{e}");
}
