//! The packet-socket steering decision (`io::packet::steer`) is the Rust twin
//! of the XDP program `dataplane/xdp/steer.bpf.c`: this test runs the built
//! program on the same frames with `BPF_PROG_TEST_RUN` and checks the two
//! decide alike, VLAN tags included (the program takes one 802.1Q tag, which
//! the twin names as `encap::wire::l2::TagRule::XdpSteer`). Needs root (to
//! load BPF); skipped otherwise unless CI is set.

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::Ebpf;
use dataplane::io::steer::{steer, Steer, SteerRole};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// `struct steer_cfg` of the C program.
#[repr(C)]
#[derive(Clone, Copy)]
struct SteerCfg {
    role: u32,
    vxlan_ports: [u16; 4],
    gre: u32,
    tier: u32,
    in_port: u32,
    tc_tier: u32,
}

// SAFETY: plain integers with the C layout; the kernel copies the bytes as they are.
unsafe impl aya::Pod for SteerCfg {}

/// Indices of the program's `stats` map (`enum stat`).
const ST_PASS_NOT_IP: u32 = 1;
const ST_PASS_NOT_TUNNEL: u32 = 2;
const ST_PASS_NOT_LOCAL_VTEP: u32 = 3;
/// With no AF_XDP socket registered, a frame the program takes is counted here.
const ST_PASS_NO_SOCKET: u32 = 4;
const ST_PASS_FRAGMENT: u32 = 5;
const ST_MAX: u32 = 6;

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if ci {
        panic!("this test needs root (loading a BPF program), and CI is set");
    }
    eprintln!("SKIPPED: needs root (loading a BPF program)");
    false
}

/// The XDP program, loaded (not attached) as an uplink for 192.0.2.1 and
/// 2001:db8::1 with VXLAN port 4789 and GRE.
struct Program {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
}

impl Program {
    fn load() -> Program {
        let mut ebpf = Ebpf::load(PROGRAM).expect("load the steering object");
        let mut cfg: Array<MapData, SteerCfg> =
            Array::try_from(ebpf.take_map("cfg").unwrap()).unwrap();
        let mut v4: HashMap<MapData, u32, u8> =
            HashMap::try_from(ebpf.take_map("vteps_v4").unwrap()).unwrap();
        let mut v6: HashMap<MapData, [u8; 16], u8> =
            HashMap::try_from(ebpf.take_map("vteps_v6").unwrap()).unwrap();
        let stats = PerCpuArray::try_from(ebpf.take_map("stats").unwrap()).unwrap();
        v4.insert(u32::from_ne_bytes([192, 0, 2, 1]), 1, 0).unwrap();
        let a6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        v6.insert(a6.octets(), 1, 0).unwrap();
        cfg.set(
            0,
            SteerCfg {
                role: 1,
                vxlan_ports: [4789u16.to_be(), 0, 0, 0],
                gre: 1,
                tier: 0,
                in_port: 0,
                tc_tier: 0,
            },
            0,
        )
        .unwrap();
        let prog: &mut Xdp =
            ebpf.program_mut("overlayd_steer").unwrap().try_into().expect("an XDP program");
        prog.load().expect("the verifier accepts the program");
        Program { ebpf, stats }
    }

    fn counts(&self) -> Vec<u64> {
        (0..ST_MAX).map(|i| self.stats.get(&i, 0).unwrap().iter().sum()).collect()
    }

    /// What the program decided for `frame`, read from the counter it bumped.
    fn decide(&self, frame: &[u8]) -> Steer {
        let before = self.counts();
        let prog: &Xdp = self.ebpf.program("overlayd_steer").unwrap().try_into().unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() })
            .expect("BPF_PROG_TEST_RUN");
        let after = self.counts();
        let bumped: Vec<u32> =
            (0..ST_MAX).filter(|&i| after[i as usize] != before[i as usize]).collect();
        match bumped.as_slice() {
            [ST_PASS_NO_SOCKET] => Steer::Ours,
            [ST_PASS_NOT_IP] => Steer::PassNotIp,
            [ST_PASS_NOT_TUNNEL] => Steer::PassNotTunnel,
            [ST_PASS_NOT_LOCAL_VTEP] => Steer::PassNotLocalVtep,
            [ST_PASS_FRAGMENT] => Steer::PassFragment,
            other => panic!("the program bumped counters {other:?}"),
        }
    }
}

fn f(spec: &str) -> Vec<u8> {
    engine::packet_spec::build(spec).unwrap()
}

#[test]
fn the_rust_twin_decides_as_the_xdp_program() {
    if !root_or_skip() {
        return;
    }
    let prog = Program::load();
    let role = SteerRole::Uplink {
        vteps: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        vxlan_ports: vec![4789],
        gre: true,
    };
    let vx4 = "ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=4789)/vxlan(vni=1)/eth";
    let vx6 = "ipv6(src=2001:db8::2,dst=2001:db8::1)/udp(dport=4789)";
    let mut frag = f(&format!("eth/{vx4}"));
    frag[21] = 0x10; // fragment offset 16
                     // A frame cut inside its only tag: 16 bytes, the next EtherType missing.
    let cut = f(&format!("eth/vlan(vid=3)/{vx4}"))[..16].to_vec();
    // (frame, what the C rule decides, why)
    let cases: Vec<(Vec<u8>, Steer, &str)> = vec![
        (f(&format!("eth/{vx4}")), Steer::Ours, "untagged VXLAN"),
        (f(&format!("eth/vlan(vid=3)/{vx4}")), Steer::Ours, "one 802.1Q tag is skipped"),
        (f(&format!("eth/vlan(vid=3)/{vx6}")), Steer::Ours, "one 802.1Q tag, IPv6"),
        (
            f(&format!("eth/vlan(vid=3)/vlan(vid=4)/{vx4}")),
            Steer::PassNotIp,
            "a second tag is not skipped",
        ),
        (
            f(&format!("eth(type=0x88a8)/vlan(vid=3)/{vx4}")),
            Steer::PassNotIp,
            "802.1ad is not skipped",
        ),
        (
            f(&format!("eth(type=0x9100)/vlan(vid=3)/{vx4}")),
            Steer::PassNotIp,
            "0x9100 is not skipped",
        ),
        (cut, Steer::PassNotIp, "cut inside the tag"),
        (
            f("eth/vlan(vid=3)/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=53)"),
            Steer::PassNotTunnel,
            "tagged, not a tunnel port",
        ),
        (
            f("eth/vlan(vid=3)/ipv4(src=192.0.2.2,dst=192.0.2.9)/gre"),
            Steer::PassNotLocalVtep,
            "tagged, not our VTEP",
        ),
        (f("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/gre(key=1)/eth"), Steer::Ours, "GRE"),
        (f("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/tcp(dport=22)"), Steer::PassNotTunnel, "TCP"),
        (f("eth/arp(spa=192.0.2.2,tpa=192.0.2.1)"), Steer::PassNotIp, "ARP"),
        (frag, Steer::PassFragment, "a later fragment"),
        (v6_ext(&f(&format!("eth/{vx6}")), &[0]), Steer::Ours, "IPv6 Hop-by-Hop, then VXLAN"),
        (
            v6_ext(&f(&format!("eth/{vx6}")), &[0, 60, 43]),
            Steer::Ours,
            "three option/routing headers",
        ),
        (
            v6_ext(&f(&format!("eth/{vx6}")), &[60, 60, 60, 60, 60]),
            Steer::PassNotTunnel,
            "more headers than the walk takes",
        ),
        (v6_ext(&f(&format!("eth/{vx6}")), &[44]), Steer::PassNotTunnel, "an IPv6 fragment"),
        (
            v6_ext(&f("eth/ipv6(src=2001:db8::2,dst=2001:db8::9)/udp(dport=4789)"), &[0]),
            Steer::PassNotLocalVtep,
            "options, not our VTEP",
        ),
        (
            v6_ext(&f(&format!("eth/{vx6}")), &[0])[..56].to_vec(),
            Steer::PassNotTunnel,
            "cut inside the options",
        ),
    ];
    for (frame, want, why) in &cases {
        let c = prog.decide(frame);
        let rust = steer(frame, &role);
        assert_eq!(c, *want, "{why}: the XDP program");
        assert_eq!(rust, *want, "{why}: the Rust twin");
    }
}

/// `frame` (Ethernet + IPv6 + its upper layer) with 8-byte extension
/// headers of the given types inserted after the IPv6 header, chained.
fn v6_ext(frame: &[u8], types: &[u8]) -> Vec<u8> {
    let mut g = frame[..54].to_vec();
    let upper = g[20];
    g[20] = types[0];
    for (i, _) in types.iter().enumerate() {
        let next = types.get(i + 1).copied().unwrap_or(upper);
        // next header, length 0 (8 bytes), PadN over the other 6
        g.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    g.extend_from_slice(&frame[54..]);
    let plen = u16::from_be_bytes([g[18], g[19]]) + 8 * types.len() as u16;
    g[18..20].copy_from_slice(&plen.to_be_bytes());
    g
}
