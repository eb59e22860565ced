//! What the benchmarks share: frames, tunnels, rule sets and ready-made
//! batches, so the criterion benches and the callgrind driver measure exactly
//! the same work.

use std::sync::Arc;

use encap::wire::ipv4;
use encap::*;
use engine::compile::{compile, RuleSet};
use engine::model::Config;
use engine::pipeline::{Outputs, Worker};
use engine::trace::NoTrace;

pub const HEADROOM: usize = 256;
pub const FRAME: usize = 2048;

/// The tunnel kinds measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    VxlanV4,
    VxlanV6,
    GretapV4,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::VxlanV4, Kind::VxlanV6, Kind::GretapV4];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VxlanV4 => "vxlan4",
            Kind::VxlanV6 => "vxlan6",
            Kind::GretapV4 => "gretap4",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    a
}

/// Tunnel parameters for a kind (defaults otherwise: no UDP checksum over IPv4).
pub fn tunnel(kind: Kind) -> TunnelParams {
    let (encap, underlay) = match kind {
        Kind::VxlanV4 => (
            Encapsulation::Vxlan { vni: 42, dst_port: 4789 },
            Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        ),
        Kind::VxlanV6 => (
            Encapsulation::Vxlan { vni: 42, dst_port: 4789 },
            Underlay::V6 { src: v6(1), dst: v6(2) },
        ),
        Kind::GretapV4 => (
            Encapsulation::GreTap { key: Some(7) },
            Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        ),
    };
    TunnelParams {
        encap,
        underlay,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        outer_vlan: None,
        options: EncapOptions::default(),
    }
}

/// The receiving side of `tunnel(kind)`.
pub fn receiver(kind: Kind) -> DecapConfig {
    match kind {
        Kind::VxlanV6 => DecapConfig { local_v6: vec![v6(2)], ..DecapConfig::default() },
        _ => DecapConfig { local_v4: vec![[192, 0, 2, 2]], ..DecapConfig::default() },
    }
}

/// An IPv4/UDP Ethernet frame of `len` bytes (at least 42) for flow number `flow`.
pub fn inner_frame(len: usize, flow: u32) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    let payload = len.max(42) - 14 - 20;
    let repr = ipv4::Ipv4Repr {
        src: [198, 51, 100, 1],
        dst: [198, 51, (100 + (flow >> 24)) as u8, (flow >> 16) as u8],
        protocol: wire::IpProtocol::Udp,
        payload_len: payload as u16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        dont_frag: true,
        ident: 0,
    };
    let mut ip = [0u8; 20];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(flow as u16).to_be_bytes());
    f.extend_from_slice(&[0x00, 0x35]);
    f.extend_from_slice(&(payload as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(len.max(42), 0x61);
    f
}

/// A batch of frame buffers with the inner frames in place after the headroom.
pub struct Frames {
    pub bufs: Vec<Vec<u8>>,
    pub len: usize,
}

impl Frames {
    pub fn new(batch: usize, len: usize, flows: u32) -> Frames {
        let bufs = (0..batch)
            .map(|i| {
                let f = inner_frame(len, i as u32 % flows.max(1));
                let mut b = vec![0u8; FRAME];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(&f);
                b
            })
            .collect();
        Frames { bufs, len: len.max(42) }
    }

    /// Encapsulates every frame. Encapsulation writes only into the headroom,
    /// so the inner frames stay intact and this can run again on the same buffers.
    #[inline]
    pub fn encap(&mut self, tpl: &mut EncapTemplate) -> usize {
        let mut ok = 0;
        for b in &mut self.bufs {
            let mut p = PacketBuf::new(b, HEADROOM, self.len).unwrap();
            ok += tpl.encap(&mut p).is_ok() as usize;
        }
        ok
    }

    /// Decapsulates frames left encapsulated by `encap` (with `outer` bytes of
    /// outer header). Decapsulation only reads, so this can run again too.
    #[inline]
    pub fn decap(&mut self, cfg: &DecapConfig, outer: usize) -> usize {
        let mut ok = 0;
        for b in &mut self.bufs {
            let mut p = PacketBuf::new(b, HEADROOM - outer, self.len + outer).unwrap();
            ok += decap(cfg, &mut p).is_ok() as usize;
        }
        ok
    }
}

/// A configuration with one workload port, one uplink, one VXLAN tunnel, and
/// `rules` rules spread over 16 mask shapes, the last of which sends everything
/// from the workload into the tunnel.
pub fn pipeline_config(rules: usize) -> Config {
    let mut text = String::from(
        r#"
generation = 1
[[ports]]
name = "wl0"
kind = "workload"
[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"
[[tunnels]]
name = "t1"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:00:20"
[[rules]]
id = 0
priority = 1
match = { in_port = "wl0" }
actions = [{ encap = "t1" }]
"#,
    );
    text += &noise_rules(rules, "wl0", "up0");
    Config::from_toml(&text).expect("benchmark configuration is valid")
}

/// `pipeline_config(10)` with the workload's traffic forwarded by MAC in
/// VNI 42 (`forward_l2`) instead of encapsulated: its destination
/// (02:00:00:00:00:02) is a static FDB entry, or, with `learning`, an entry
/// the network learned (the worker also reports its source each packet).
pub fn l2_pipeline_config(learning: bool) -> Config {
    let mut c = pipeline_config(10);
    c.rules[0].actions = vec![engine::model::Action::ForwardL2(42)];
    if learning {
        c.networks = Config::from_toml("[[networks]]\nvni = 42").expect("valid").networks;
    } else {
        let mac = engine::model::Mac([2, 0, 0, 0, 0, 2]);
        c.fdb = vec![engine::model::FdbEntry { vni: 42, mac, tunnel: "t1".into() }];
    }
    c
}

/// A worker over `l2_pipeline_config(learning)`; with learning, attached to
/// a learned state that has the destination behind tunnel t1.
pub fn l2_pipeline_worker(learning: bool) -> Worker {
    use engine::learn::{L2State, Loc};
    let rs = Arc::new(compile(&l2_pipeline_config(learning)).expect("compiles"));
    let mut w = Worker::new(Arc::clone(&rs));
    if learning {
        let l2 = L2State::new();
        let mut seen = l2.learner();
        seen.saw_mac(rs.generation, 42, [2, 0, 0, 0, 0, 2], Loc::Tunnel(0), 0);
        l2.apply(&rs, 0);
        w.set_learner(l2.learner());
    }
    w
}

/// The shape (0..16) of rule number `i` of `noise_rules`.
pub fn noise_shape(i: usize) -> usize {
    i % 16
}

/// The match of rule number `i` (from 1) of `noise_rules`.
pub fn noise_match(i: usize, workload: &str, uplink: &str) -> String {
    match noise_shape(i) {
        0 => format!("ip_dst = \"203.0.{}.{}/32\"", (i >> 8) % 256, i % 256),
        1 => format!("ip_src = \"203.0.{}.0/24\"", i % 256),
        2 => format!("l4_dst = {}", 1024 + i % 60000),
        3 => format!("ip_proto = 6, l4_dst = {}", i % 65536),
        4 => format!(
            "eth_dst = \"02:00:00:{:02x}:{:02x}:{:02x}\"",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ),
        5 => format!("vlan = {}", 1 + i % 4000),
        6 => format!("ethertype = {}", 0x9000 + i % 4096),
        7 => format!("ip_dst = \"2001:db8:{:x}::/48\"", i % 65536),
        8 => format!("ip_proto = 17, l4_src = {}", 1 + i % 60000),
        9 => format!("in_port = \"{uplink}\", l4_dst = {}", i % 65536),
        10 => format!("vni = {}", 100_000 + i),
        11 => format!(
            "eth_src = \"02:00:01:{:02x}:{:02x}:{:02x}\"",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ),
        12 => format!("ip_dst = \"203.0.113.0/24\", ip_proto = 6, l4_dst = {}", i % 65536),
        13 => format!("ip_src = \"203.0.{}.{}/32\", ip_proto = 17", (i >> 8) % 256, i % 256),
        14 => format!(
            "vlan = {}, eth_dst = \"02:00:02:00:{:02x}:{:02x}\"",
            1 + i % 4000,
            (i >> 8) & 255,
            i & 255
        ),
        _ => format!(
            "in_port = \"{workload}\", ip_dst = \"203.0.{}.{}/32\"",
            (i >> 8) % 256,
            i % 256
        ),
    }
}

/// Rules 1..`rules` (TOML) that never match the benchmarks' traffic (it goes
/// to 198.51.x.x from 198.51.100.x, untagged, UDP) but spread over 16 mask
/// shapes, as a real policy does; all drop, priorities 10..59, so a packet
/// that matches none of them walks every table before a lower-priority rule.
pub fn noise_rules(rules: usize, workload: &str, uplink: &str) -> String {
    let mut text = String::new();
    for i in 1..rules {
        text += &format!(
            "[[rules]]\nid = {i}\npriority = {}\nmatch = {{ {} }}\nactions = [\"drop\"]\n",
            10 + i % 50,
            noise_match(i, workload, uplink)
        );
    }
    text
}

pub fn pipeline_rules(rules: usize) -> Arc<RuleSet> {
    Arc::new(compile(&pipeline_config(rules)).expect("compiles"))
}

/// Runs one batch through the worker; returns how many packets were sent.
pub fn run_pipeline_batch(worker: &mut Worker, frames: &mut Frames) -> usize {
    let len = frames.len;
    let mut batch: Vec<PacketBuf> =
        frames.bufs.iter_mut().map(|b| PacketBuf::new(b, HEADROOM, len).unwrap()).collect();
    let mut pool = || None;
    let mut out = Outputs::new(2, batch.len());
    worker.process(0, &mut batch, &mut pool, &mut out, 0, &mut NoTrace);
    out.sent()
}

impl Frames {
    /// Gives frame `i` the flow number `first + i` (source port and a byte of
    /// the destination address), so successive batches can walk many flows.
    #[inline]
    pub fn set_flows(&mut self, first: u32) {
        for (i, b) in self.bufs.iter_mut().enumerate() {
            let flow = first.wrapping_add(i as u32);
            let ip = HEADROOM + 14;
            b[ip + 18] = (flow >> 16) as u8;
            b[ip + 20..ip + 22].copy_from_slice(&(flow as u16).to_be_bytes());
        }
    }
}
