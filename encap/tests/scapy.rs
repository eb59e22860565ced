//! Cross-check against scapy (whose header layouts, lengths and checksums
//! nobody here wrote), both ways:
//!
//! - `tests/scapy/build.py` builds received frames with scapy: valid VXLAN over
//!   IPv4 and IPv6, gretap and L3 GRE with every C/K/S combination, NVGRE, the
//!   RFC 6040 ECN table, Geneve with and without options (known and unknown,
//!   critical or not, control packets, bad option lengths), and malformed frames (truncated at every header
//!   boundary, bad flags, versions, lengths and checksums, wrong ports and
//!   addresses, fragments, extension headers). Each is decapsulated here with
//!   `encap::decap` and must give scapy's inner frame byte for byte (and the
//!   VNI/key/sequence) or the drop reason scapy's script names.
//! - Frames the crate encapsulates are handed to `tests/scapy/check.py`, which
//!   parses them with scapy and rebuilds them with scapy's own lengths and
//!   checksums: the bytes must not change, and the fields must be as configured.
//!
//! `/usr/bin/python3` must import scapy (`scripts/setup.sh` installs
//! python3-scapy); without it these tests fail.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use encap::wire::ethernet::EtherType;
use encap::wire::gre::{nvgre_key, nvgre_split};
use encap::*;
use serde_json::{json, Value};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("scapy").join(name)
}

/// Runs one of the scapy scripts with Debian's interpreter.
fn run_python(name: &str, args: &[&Path]) {
    require_scapy();
    let out = Command::new(SYSTEM_PYTHON)
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {SYSTEM_PYTHON} {name}: {e}; {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The receive side the cases in build.py assume.
fn base_config() -> DecapConfig {
    DecapConfig {
        local_v4: vec![V4_LOCAL, [203, 0, 113, 1]],
        local_v6: vec![v6("2001:db8::1")],
        ..DecapConfig::default()
    }
}

fn configure(cfg: &mut DecapConfig, overrides: &serde_json::Map<String, Value>) {
    for (k, v) in overrides {
        let flag = || v.as_bool().unwrap_or_else(|| panic!("{k}: not a boolean: {v}"));
        match k.as_str() {
            "vxlan_strict" => cfg.vxlan_strict = flag(),
            "verify_udp_checksum_v4" => cfg.verify_udp_checksum_v4 = flag(),
            "accept_zero_checksum_v6" => cfg.accept_zero_checksum_v6 = flag(),
            "verify_gre_checksum" => cfg.verify_gre_checksum = flag(),
            "vxlan_ports" => {
                cfg.vxlan_ports =
                    v.as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect()
            }
            "geneve_ports" => {
                cfg.geneve_ports =
                    v.as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect()
            }
            "geneve_matches" => {
                cfg.geneve_matches = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| GeneveOptionMatch {
                        class: m[0].as_u64().unwrap() as u16,
                        kind: m[1].as_u64().unwrap() as u8,
                        data: unhex(m[2].as_str().unwrap()),
                    })
                    .collect()
            }
            other => panic!("build.py uses an unknown config key {other}"),
        }
    }
}

fn opt_u32(v: &Value) -> Option<u32> {
    v.as_u64().map(|x| u32::try_from(x).unwrap())
}

/// Decapsulates one case and returns what is wrong with the result, if anything.
fn check_case(c: &Value) -> Result<Option<DropReason>, String> {
    let frame = unhex(c["frame"].as_str().unwrap());
    let mut cfg = base_config();
    configure(&mut cfg, c["config"].as_object().unwrap());
    const HEAD: usize = 64;
    let mut buf = vec![0x5au8; HEAD + frame.len() + 32];
    buf[HEAD..HEAD + frame.len()].copy_from_slice(&frame);
    let mut pkt = PacketBuf::new(&mut buf, HEAD, frame.len()).unwrap();
    let got = decap(&cfg, &mut pkt);
    if let Some(name) = c["drop"].as_str() {
        let want = DropReason::from_name(name)
            .unwrap_or_else(|| panic!("build.py names an unknown drop reason {name:?}"));
        return match got {
            Err(r) if r == want => {
                if pkt.data() != frame.as_slice() {
                    Err(format!("dropped as {r} but the packet was modified"))
                } else {
                    Ok(Some(r))
                }
            }
            Err(r) => Err(format!("dropped as {r}, expected {want}")),
            Ok(d) => Err(format!("accepted ({d:?}), expected drop {want}")),
        };
    }
    let d = got.map_err(|r| format!("dropped as {r}, expected to be accepted"))?;
    let mut errs = Vec::new();
    let want_inner = unhex(c["inner"].as_str().unwrap());
    if pkt.data() != want_inner.as_slice() {
        errs.push(format!("inner frame\n   got {}\n  want {}", hex(pkt.data()), hex(&want_inner)));
    }
    let want_tunnel = match c["tunnel"].as_str().unwrap() {
        "vxlan" => TunnelId::Vxlan { vni: opt_u32(&c["vni"]).unwrap() },
        "gre" => TunnelId::Gre { key: opt_u32(&c["key"]) },
        "geneve" => TunnelId::Geneve { vni: opt_u32(&c["vni"]).unwrap() },
        t => panic!("unknown tunnel {t}"),
    };
    if u64::from(d.geneve_options) != c["geneve_options"].as_u64().unwrap() {
        errs.push(format!(
            "geneve option matches {:#b}, want {:#b}",
            d.geneve_options,
            c["geneve_options"].as_u64().unwrap()
        ));
    }
    if d.tunnel != want_tunnel {
        errs.push(format!("tunnel {:?}, want {want_tunnel:?}", d.tunnel));
    }
    if let (Some(nv), TunnelId::Gre { key: Some(k) }) = (c["nvgre"].as_array(), d.tunnel) {
        let want = (nv[0].as_u64().unwrap() as u32, nv[1].as_u64().unwrap() as u8);
        if nvgre_split(k) != want || nvgre_key(want.0, want.1) != k {
            errs.push(format!("NVGRE key {k:#010x} does not split into {want:?}"));
        }
    }
    let want_payload = match c["payload"].as_str().unwrap() {
        "eth" => EtherType::TransEther,
        "ipv4" => EtherType::Ipv4,
        "ipv6" => EtherType::Ipv6,
        p => panic!("unknown payload {p}"),
    };
    if d.payload != want_payload {
        errs.push(format!("payload {:?}, want {want_payload:?}", d.payload));
    }
    if d.seq != opt_u32(&c["seq"]) {
        errs.push(format!("sequence {:?}, want {:?}", d.seq, c["seq"]));
    }
    if u64::from(d.src_port) != c["src_port"].as_u64().unwrap() {
        errs.push(format!("source port {}, want {}", d.src_port, c["src_port"]));
    }
    if u64::from(d.outer_ecn) != c["outer_ecn"].as_u64().unwrap() {
        errs.push(format!("outer ECN {}, want {}", d.outer_ecn, c["outer_ecn"]));
    }
    let local: IpAddr = c["local"].as_str().unwrap().parse().unwrap();
    let remote: IpAddr = c["remote"].as_str().unwrap().parse().unwrap();
    if (d.local, d.remote) != (local, remote) {
        errs.push(format!("endpoints {}/{}, want {local}/{remote}", d.local, d.remote));
    }
    if errs.is_empty() {
        Ok(None)
    } else {
        Err(errs.join("; "))
    }
}

#[test]
fn scapy_built_frames_decapsulate_to_scapy_inner_frames_or_named_drops() {
    let dir = TempDir::new("scapy-build");
    run_python("build.py", &[dir.path()]);
    let cases = read_json(&dir.path().join("cases.json"));
    let cases = cases["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut per_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut accepted = 0;
    let mut names = HashSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        assert!(names.insert(name), "duplicate case {name}");
        match check_case(c) {
            Ok(Some(r)) => *per_reason.entry(r.name()).or_default() += 1,
            Ok(None) => accepted += 1,
            Err(e) => {
                failures.push(format!("{name}: {e}\n  frame {}", c["frame"].as_str().unwrap()))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scapy cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every reason decap() can give (codes 20-61 and the Geneve ones, 90-95;
    // 62 and gre_payload_mismatch, which needs the tunnel's kind, are the
    // engine's) is reached.
    let engine_only = [DropReason::GrePayloadMismatch];
    let missing: Vec<&str> = DropReason::ALL
        .iter()
        .filter(|r| {
            let code = **r as u16;
            ((20..=61).contains(&code) || (90..=95).contains(&code)) && !engine_only.contains(r)
        })
        .filter(|r| !per_reason.contains_key(r.name()))
        .map(|r| r.name())
        .collect();
    assert!(missing.is_empty(), "no scapy case reaches {missing:?}");
    assert!(accepted >= 150, "only {accepted} accepted cases");
    assert!(cases.len() >= 350, "only {} cases", cases.len());
    eprintln!("{} scapy cases: {accepted} accepted, drops {per_reason:?}", cases.len());
}

/// One frame the crate encapsulates for check.py, and what scapy must find.
struct Emitted {
    name: String,
    frame: Vec<u8>,
    /// What the tunnel carries: the inner frame, or its IP packet for L3 GRE.
    carried: Vec<u8>,
    expect: Value,
}

fn inner_frames(l3_only: bool) -> Vec<(&'static str, Vec<u8>)> {
    let (a, b) = ([198, 51, 100, 10], [198, 51, 100, 20]);
    let mut v = vec![
        ("v4udp_a", ipv4_udp(a, b, 40000, 9, 0xb8, 33, true, 24)),
        ("v4udp_b", ipv4_udp(a, b, 40001, 9, 0x02, 200, false, 301)),
        ("v6tcp", ipv6_tcp(v6("2001:db8:100::10"), v6("2001:db8:100::20"), 40000, 80, 0x69, 44)),
    ];
    if !l3_only {
        v.push(("arp", arp_request(a, b)));
        v.push(("vlan_v4icmp", vlan_tagged(&ipv4_icmp_echo(a, b, 0, 64, true), 7)));
    }
    v
}

fn emit_tunnel(out: &mut Vec<Emitted>, label: &str, p: &TunnelParams) {
    let l3 = matches!(p.encap, Encapsulation::GreL3 { .. });
    let mut tpl = EncapTemplate::new(p).unwrap();
    for (i, (kind, inner)) in inner_frames(l3).into_iter().enumerate() {
        let frame = encap_one(&mut tpl, &inner).unwrap();
        let carried = if l3 {
            let off = if inner[12..14] == [0x81, 0x00] { 18 } else { 14 };
            inner[off..].to_vec()
        } else {
            inner.clone()
        };
        let o = &p.options;
        let mut expect = json!({
            "v6": matches!(p.underlay, Underlay::V6 { .. }),
            "vlan": p.outer_vlan,
        });
        match p.encap {
            Encapsulation::Vxlan { vni, dst_port } => {
                expect["vni"] = json!(vni);
                expect["dport"] = json!(dst_port);
                expect["udp_zero"] = json!(!o.udp_checksum && !expect["v6"].as_bool().unwrap());
                expect["sport_range"] = json!([o.src_port_min, o.src_port_max]);
            }
            Encapsulation::Geneve { vni, dst_port, options } => {
                expect["vni"] = json!(vni);
                expect["dport"] = json!(dst_port);
                expect["udp_zero"] = json!(!o.udp_checksum && !expect["v6"].as_bool().unwrap());
                expect["sport_range"] = json!([o.src_port_min, o.src_port_max]);
                let opts: Vec<Value> = encap::wire::geneve::Options::new(options.as_bytes())
                    .map(|o| o.unwrap())
                    .map(|o| json!([o.class, o.kind, hex(o.data)]))
                    .collect();
                expect["geneve_options"] = json!(opts);
                expect["geneve_critical"] = json!(options.has_critical() as u8);
            }
            Encapsulation::GreTap { key } | Encapsulation::GreL3 { key } => {
                expect["key"] = json!(key);
                expect["seq"] = json!(o.gre_sequence.then_some(i as u32 + 1));
                expect["gre_csum"] = json!(o.gre_checksum);
                expect["gre_proto"] = json!(match (l3, kind) {
                    (false, _) => 0x6558,
                    (true, "v6tcp") => 0x86dd,
                    (true, _) => 0x0800,
                });
            }
        }
        out.push(Emitted { name: format!("{label}/{kind}"), frame, carried, expect });
    }
}

fn emitted_frames() -> Vec<Emitted> {
    let mut out = Vec::new();
    let d = EncapOptions::default;
    let vx = |vni| Encapsulation::Vxlan { vni, dst_port: 4789 };
    emit_tunnel(&mut out, "vxlan4/csum_off", &params(vx(42), false, d()));
    emit_tunnel(
        &mut out,
        "vxlan4/csum_on",
        &params(vx(0xffffff), false, EncapOptions { udp_checksum: true, ..d() }),
    );
    emit_tunnel(&mut out, "vxlan6", &params(vx(0xabcdef), true, d()));
    let mut p = params(
        Encapsulation::Vxlan { vni: 7, dst_port: 8472 },
        false,
        EncapOptions { udp_checksum: true, src_port_min: 1024, src_port_max: 1031, ..d() },
    );
    p.outer_vlan = Some(100);
    emit_tunnel(&mut out, "vxlan4/linux_port_vlan_range", &p);
    let gv = |vni, opts: &[(u16, u8, &[u8])]| {
        let mut options = GeneveOptions::default();
        for (c, t, d) in opts {
            options.push(*c, *t, d).unwrap();
        }
        Encapsulation::Geneve { vni, dst_port: 6081, options }
    };
    emit_tunnel(&mut out, "geneve4/no_options", &params(gv(42, &[]), false, d()));
    let ovn: &[(u16, u8, &[u8])] = &[(0x0102, 0x80, &[0, 1, 0, 2])];
    emit_tunnel(
        &mut out,
        "geneve4/critical_option_csum_on",
        &params(gv(0xffffff, ovn), false, EncapOptions { udp_checksum: true, ..d() }),
    );
    let two: &[(u16, u8, &[u8])] =
        &[(0xfff0, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8]), (0xfff1, 0x02, &[9; 4])];
    emit_tunnel(&mut out, "geneve6/two_options", &params(gv(0xabcdef, two), true, d()));
    for v6_outer in [false, true] {
        let fam = if v6_outer { "gre6" } else { "gre4" };
        for combo in 0..8u32 {
            let (c, k, s) = (combo & 1 != 0, combo & 2 != 0, combo & 4 != 0);
            let key = k.then_some(0x0a0b_0c00 | combo);
            let o = EncapOptions { gre_checksum: c, gre_sequence: s, ..d() };
            let tag = format!("C{}K{}S{}", c as u8, k as u8, s as u8);
            emit_tunnel(
                &mut out,
                &format!("{fam}/tap/{tag}"),
                &params(Encapsulation::GreTap { key }, v6_outer, o),
            );
            emit_tunnel(
                &mut out,
                &format!("{fam}/l3/{tag}"),
                &params(Encapsulation::GreL3 { key }, v6_outer, o),
            );
        }
        let nv = Encapsulation::GreTap { key: Some(nvgre_key(0xabcdef, 0x5a)) };
        emit_tunnel(&mut out, &format!("{fam}/nvgre"), &params(nv, v6_outer, d()));
    }
    out
}

#[test]
fn scapy_parses_and_rebuilds_what_the_crate_emits_unchanged() {
    let frames = emitted_frames();
    let dir = TempDir::new("scapy-check");
    let input = dir.path().join("emitted.json");
    let output = dir.path().join("report.json");
    let list: Vec<Value> =
        frames.iter().map(|e| json!({ "name": e.name, "frame": hex(&e.frame) })).collect();
    std::fs::write(&input, serde_json::to_string(&json!({ "frames": list })).unwrap()).unwrap();
    run_python("check.py", &[&input, &output]);
    let report = read_json(&output);
    let report = report["frames"].as_array().unwrap();
    assert_eq!(report.len(), frames.len());
    let mut failures = Vec::new();
    for (e, r) in frames.iter().zip(report) {
        assert_eq!(r["name"].as_str(), Some(e.name.as_str()));
        let mut errs = Vec::new();
        let x = &e.expect;
        let mut want_eq = |what: &str, got: &Value, want: &Value| {
            if got != want {
                errs.push(format!("{what}: scapy says {got}, want {want}"));
            }
        };
        want_eq("rebuilt frame", &r["rebuilt"], &json!(hex(&e.frame)));
        want_eq("carried payload", &r["payload"], &json!(hex(&e.carried)));
        want_eq("outer IPv6", &json!(r["ipv6"].is_object()), &x["v6"]);
        want_eq("outer VLAN", &r["vlan"], &x["vlan"]);
        if let Some(opts) = x.get("geneve_options") {
            want_eq("layer", &r["tunnel"], &json!("geneve"));
            want_eq("VNI", &r["vni"], &x["vni"]);
            want_eq("Geneve version", &r["geneve_version"], &json!(0));
            want_eq("Geneve O bit", &r["geneve_oam"], &json!(0));
            want_eq("Geneve C bit", &r["geneve_critical"], &x["geneve_critical"]);
            want_eq("Geneve reserved", &r["geneve_reserved"], &json!([0, 0]));
            want_eq("Geneve protocol", &r["geneve_proto"], &json!(0x6558));
            want_eq("Geneve options", &r["geneve_options"], opts);
            want_eq("UDP dport", &r["dport"], &x["dport"]);
            want_eq("UDP checksum zero", &json!(r["udp_chksum"] == json!(0)), &x["udp_zero"]);
        } else if let Some(vni) = x.get("vni") {
            want_eq("layer", &r["tunnel"], &json!("vxlan"));
            want_eq("VNI", &r["vni"], vni);
            want_eq("VXLAN flags", &r["vxlan_flags"], &json!(0x08));
            want_eq("VXLAN reserved", &r["vxlan_reserved"], &json!([0, 0]));
            want_eq("UDP dport", &r["dport"], &x["dport"]);
            want_eq("UDP checksum zero", &json!(r["udp_chksum"] == json!(0)), &x["udp_zero"]);
            let sport = r["sport"].as_u64().unwrap();
            let range = x["sport_range"].as_array().unwrap();
            if sport < range[0].as_u64().unwrap() || sport > range[1].as_u64().unwrap() {
                errs.push(format!("source port {sport} outside {range:?}"));
            }
        } else {
            want_eq("layer", &r["tunnel"], &json!("gre"));
            want_eq("GRE key", &r["key"], &x["key"]);
            want_eq("GRE sequence", &r["seq"], &x["seq"]);
            want_eq("GRE checksum present", &r["gre_chksum_present"], &x["gre_csum"]);
            want_eq("GRE protocol", &r["gre_proto"], &x["gre_proto"]);
            want_eq("GRE version", &r["gre_version"], &json!(0));
            want_eq("GRE reserved bits", &r["gre_reserved"], &json!(0));
        }
        if !errs.is_empty() {
            failures.push(format!("{}: {}\n  frame {}", e.name, errs.join("; "), hex(&e.frame)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} frames:\n{}",
        failures.len(),
        frames.len(),
        failures.join("\n")
    );
}
