//! The pipeline over real buffers: every path a packet can take, with exact
//! accounting checked after each run.

use std::sync::Arc;

use encap::wire::{checksum, ipv4};
use encap::{DecapConfig, DropReason, PacketBuf, TunnelId};
use engine::compile::{compile, RuleSet};
use engine::counters::Snapshot;
use engine::model::Config;
use engine::pipeline::{Outputs, Published, Worker};
use engine::trace::{render, trace_packet, CounterMoves, NoTrace, Recorder, Step, TraceContext};

const HEADROOM: usize = 128;
const FRAME: usize = 2048;

const CONFIG: &str = r#"
generation = 1

[[ports]]
name = "wl0"
kind = "workload"

[[ports]]
name = "wl1"
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
mtu = 1000

[[tunnels]]
name = "t2"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 42
next_hop_mac = "02:00:00:00:00:30"

[[tunnels]]
name = "g1"
type = "gretap"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.4"
key = 7

[[rules]]
id = 1
priority = 10
match = { in_port = "wl0", ip_dst = "198.51.100.0/24" }
actions = [{ encap = "t1" }]

[[rules]]
id = 2
priority = 10
match = { tunnel = "t1" }
actions = [{ output = "wl0" }]

[[rules]]
id = 3
priority = 20
match = { in_port = "wl0", eth_dst = "ff:ff:ff:ff:ff:ff" }
actions = [{ forward_l2 = 42 }]

[[rules]]
id = 4
priority = 30
match = { in_port = "wl1", vlan = 0 }
actions = [{ push_vlan = 100 }, { output = "wl0" }]

[[rules]]
id = 5
priority = 30
match = { in_port = "wl1", vlan = 200 }
actions = [{ set_vlan = 300 }, { output = "wl0" }, "pop_vlan", { output = "up0" }]

[[rules]]
id = 6
priority = 5
match = { in_port = "wl0", ip_dst = "203.0.113.0/24" }
actions = [{ encap = "g1" }]

[[rules]]
id = 7
priority = 5
match = { in_port = "wl0", ip_dst = "192.0.2.99" }
actions = ["count", "drop"]

[[flood]]
vni = 42
tunnels = ["t1", "t2"]
ports = ["wl1"]
"#;

fn rules() -> Arc<RuleSet> {
    Arc::new(compile(&Config::from_toml(CONFIG).unwrap()).unwrap())
}

/// An IPv4/UDP frame from 198.51.100.1 (MAC ..:01) with `payload` bytes.
fn udp_frame(dst_mac: [u8; 6], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let repr = ipv4::Ipv4Repr {
        src: [198, 51, 100, 1],
        dst,
        protocol: encap::wire::IpProtocol::Udp,
        payload_len: (8 + payload) as u16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        dont_frag: true,
        ident: 1,
    };
    let mut ip = [0u8; 20];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(0x61, payload));
    f
}

const WL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// Runs `frames` arriving on `port` through a worker; returns the output
/// frames per port, the counter snapshot and the last packet's trace.
struct Run {
    out: Vec<Vec<Vec<u8>>>,
    snap: Snapshot,
    trace: Recorder,
    /// The trace as people read it (offline context).
    text: String,
}

fn run(worker: &mut Worker, port: u16, frames: &[Vec<u8>]) -> Run {
    let mut arena: Vec<Vec<u8>> = (0..frames.len() * 4 + 8).map(|_| vec![0u8; FRAME]).collect();
    let (rx_bufs, pool_bufs) = arena.split_at_mut(frames.len());
    let mut batch: Vec<PacketBuf> = rx_bufs
        .iter_mut()
        .zip(frames)
        .map(|(b, f)| {
            b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            PacketBuf::new(b, HEADROOM, f.len()).unwrap()
        })
        .collect();
    let mut pool_iter = pool_bufs.iter_mut();
    let mut pool = || pool_iter.next().map(|b| PacketBuf::new(b, HEADROOM, 0).unwrap());
    let before = Snapshot::sum([&*worker.counters()]);
    let nports = worker.rules().ports.len();
    let mut out = Outputs::new(nports, 64);
    // All but the last packet go through the fast path; the last one is traced,
    // which runs the same code with a recorder.
    let last = batch.pop();
    worker.process(port, &mut batch, &mut pool, &mut out, 0, &mut NoTrace);
    let mut trace = Recorder::default();
    if let Some(l) = last {
        worker.process(port, &mut vec![l], &mut pool, &mut out, 0, &mut trace);
    }
    let total = Snapshot::sum([&*worker.counters()]);
    assert!(total.conserved(), "conservation broken: {total:?}");
    let snap = total.since(&before);
    assert!(snap.conserved(), "conservation broken in this run: {snap:?}");
    assert_eq!(snap.tx as usize, out.sent());
    assert_eq!(out.free.len() as u64, snap.dropped(), "every dropped frame is handed back");
    let text = render(&trace.steps, worker.rules(), &TraceContext::default())
        .iter()
        .map(|s| format!("{s}\n"))
        .collect();
    Run {
        out: out.ports.iter().map(|v| v.iter().map(|p| p.data().to_vec()).collect()).collect(),
        snap,
        trace,
        text,
    }
}

fn decap_v4(frame: &[u8], local: [u8; 4]) -> (TunnelId, Vec<u8>) {
    let mut b = frame.to_vec();
    let len = b.len();
    let mut p = PacketBuf::new(&mut b, 0, len).unwrap();
    let cfg = DecapConfig { local_v4: vec![local], ..DecapConfig::default() };
    let d = encap::decap(&cfg, &mut p).unwrap();
    (d.tunnel, p.data().to_vec())
}

#[test]
fn workload_to_vxlan_and_back() {
    let mut w = Worker::new(rules());
    let frames: Vec<Vec<u8>> =
        (0..10).map(|i| udp_frame(WL_MAC, [198, 51, 100, 2 + i], 32)).collect();
    let r = run(&mut w, 0, &frames);
    assert_eq!(r.snap.rx, 10);
    assert_eq!(r.out[2].len(), 10, "all leave through up0");
    let (id, inner) = decap_v4(&r.out[2][3], [192, 0, 2, 2]);
    assert_eq!(id, TunnelId::Vxlan { vni: 42 });
    assert_eq!(inner, frames[3]);
    assert_eq!(&r.out[2][0][0..6], &[2, 0, 0, 0, 0, 0x20], "next hop MAC");
    assert_eq!(&r.out[2][0][6..12], &[2, 0, 0, 0, 0, 0x10], "uplink MAC");
    assert_eq!(r.snap.rules[0].packets, 10);
    assert_eq!(r.snap.tunnels[0].0.packets, 10, "t1 encap");
    assert_eq!((r.snap.cache_miss, r.snap.cache_hit), (10, 0), "ten distinct flows");
    assert!(r.trace.steps.iter().any(|s| matches!(s, Step::Encapsulated { tunnel: 0, .. })));
    assert!(
        r.text.contains("encapsulated into tunnel t1, outer header 020000000020"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("next hop of tunnel t1 (remote 192.0.2.2): 02:00:00:00:00:20, configured"),
        "{}",
        r.text
    );

    // Same flows again: all cache hits.
    let r = run(&mut w, 0, &frames);
    assert_eq!(r.snap.cache_hit, 10);

    // The peer's answer comes back through the tunnel and reaches wl0.
    let reply = udp_frame([2, 0, 0, 0, 0, 1], [198, 51, 100, 1], 16);
    let mut tpl_params = w.rules().tunnels[0].params;
    tpl_params.underlay = encap::Underlay::V4 { src: [192, 0, 2, 2], dst: [192, 0, 2, 1] };
    let mut tpl = encap::EncapTemplate::new(&tpl_params).unwrap();
    let mut b = vec![0u8; FRAME];
    b[HEADROOM..HEADROOM + reply.len()].copy_from_slice(&reply);
    let mut p = PacketBuf::new(&mut b, HEADROOM, reply.len()).unwrap();
    tpl.encap(&mut p).unwrap();
    let wire = p.data().to_vec();
    let r = run(&mut w, 2, std::slice::from_ref(&wire));
    assert_eq!(r.out[0], vec![reply], "decapsulated to wl0");
    assert_eq!(r.snap.tunnels[0].1.packets, 1, "t1 decap");

    // What comes out of t1 and is then dropped counts under t1 too: here
    // no rule matches once rule 2 is gone.
    let mut cfg = w.rules().config.clone();
    cfg.rules.retain(|r| r.id != 2);
    let mut w2 = Worker::new(Arc::new(compile(&cfg).unwrap()));
    let r = run(&mut w2, 2, std::slice::from_ref(&wire));
    assert_eq!(r.snap.drop_count(DropReason::NoMatchingRule), 1);
    assert_eq!(r.snap.tunnel_drops[0], vec![("no_matching_rule", 1)]);

    // Same packet from an unknown remote VTEP: named drop.
    let mut stranger = wire;
    stranger[14 + 15] = 77; // outer source 192.0.2.77
    stranger[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&stranger[14..34]);
    stranger[24..26].copy_from_slice(&c.to_be_bytes());
    let r = run(&mut w, 2, &[stranger]);
    assert_eq!(r.snap.drop_count(DropReason::UnknownTunnel), 1);
    assert!(
        r.text.contains(
            "decapsulated from tunnel (not configured) (VXLAN VNI 42 from 192.0.2.77 to 192.0.2.1)"
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains("DROPPED at decap: unknown_tunnel"), "{}", r.text);
}

#[test]
fn drops_are_named() {
    let mut w = Worker::new(rules());
    let no_rule = udp_frame(WL_MAC, [203, 0, 114, 1], 8); // no rule for 203.0.114.0
    let rule_drop = udp_frame(WL_MAC, [192, 0, 2, 99], 8);
    let big = udp_frame(WL_MAC, [198, 51, 100, 9], 1000); // t1 mtu is 1000
    let no_neighbour = udp_frame(WL_MAC, [203, 0, 113, 5], 8); // g1 has no next hop
    let short = vec![0u8; 10];
    let r = run(&mut w, 0, &[no_rule, rule_drop, big, no_neighbour, short.clone()]);
    for reason in [
        DropReason::NoMatchingRule,
        DropReason::RuleDrop,
        DropReason::MtuExceeded,
        DropReason::NoNeighbour,
        DropReason::EthTruncated,
    ] {
        assert_eq!(r.snap.drop_count(reason), 1, "{reason}");
    }
    // The too-big packet earned its sender an ICMP fragmentation-needed reply.
    assert_eq!(r.snap.generated, 1);
    let icmp = &r.out[0][0];
    let ip = ipv4::Packet::new_checked(&icmp[14..]).unwrap();
    assert_eq!(ip.dst_addr(), [198, 51, 100, 1]);
    assert_eq!(&ip.payload()[..2], &[3, 4]);
    let mtu = u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]);
    assert_eq!(mtu, 1000 - 36 - 14);
    assert!(r.text.contains("DROPPED at parse: eth_truncated"), "{}", r.text);

    // Rule 7 counts what it drops.
    assert_eq!(r.snap.rules[6].packets, 1);
    // Drops on the way into a tunnel are counted under it as well, and only those.
    assert_eq!(r.snap.tunnel_drop_count(0, DropReason::MtuExceeded), 1, "t1");
    assert_eq!(r.snap.tunnel_drop_count(2, DropReason::NoNeighbour), 1, "g1");
    let under_tunnels: u64 = r.snap.tunnel_drops.iter().flatten().map(|(_, n)| n).sum();
    assert_eq!(under_tunnels, 2, "{:?}", r.snap.tunnel_drops);

    // Once the neighbour resolves, g1 carries the packet with its GRE key.
    w.set_next_hop(2, [2, 0, 0, 0, 0, 0x40]);
    let r = run(&mut w, 0, &[udp_frame(WL_MAC, [203, 0, 113, 5], 8)]);
    let (id, _) = decap_v4(&r.out[2][0], [192, 0, 2, 4]);
    assert_eq!(id, TunnelId::Gre { key: Some(7) });
}

#[test]
fn broadcast_floods_with_head_end_replication() {
    let mut w = Worker::new(rules());
    let bcast = udp_frame([0xff; 6], [198, 51, 100, 255], 8);
    let r = run(&mut w, 0, std::slice::from_ref(&bcast));
    // t1 and t2 through up0, plus wl1: one in, two replicas, three out.
    assert_eq!((r.snap.rx, r.snap.replicas, r.snap.tx), (1, 2, 3));
    assert_eq!(r.out[2].len(), 2);
    assert_eq!(r.out[1], vec![bcast.clone()]);
    let (_, a) = decap_v4(&r.out[2][0], [192, 0, 2, 2]);
    let (_, b) = decap_v4(&r.out[2][1], [192, 0, 2, 3]);
    assert_eq!((a, b), (bcast.clone(), bcast));
    assert!(r.trace.steps.contains(&Step::Replicated { copies: 3 }));
}

#[test]
fn vlan_actions_apply_in_order() {
    let mut w = Worker::new(rules());
    let plain = udp_frame(WL_MAC, [198, 51, 100, 2], 8);
    let r = run(&mut w, 1, std::slice::from_ref(&plain));
    let tagged = &r.out[0][0];
    assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 100]);
    assert_eq!(&tagged[16..], &plain[12..]);

    // Tagged 200: set to 300 and sent to wl0; then popped and sent to up0.
    let mut t200 = plain.clone();
    t200.splice(12..12, [0x81, 0x00, 0x00, 200]);
    let r = run(&mut w, 1, &[t200]);
    assert_eq!(&r.out[0][0][12..16], &[0x81, 0x00, 0x01, 0x2c]);
    assert_eq!(r.out[2][0], plain, "tag popped for the second output");
    assert_eq!(r.snap.replicas, 1);
}

#[test]
fn a_new_generation_takes_effect_between_batches() {
    let published = Published::new((*rules()).clone());
    let mut w = Worker::new(published.current());
    let frame = udp_frame(WL_MAC, [198, 51, 100, 2], 8);
    let r = run(&mut w, 0, std::slice::from_ref(&frame));
    assert_eq!(r.out[2].len(), 1);

    let mut cfg = Config::from_toml(CONFIG).unwrap();
    cfg.generation = 2;
    cfg.rules[0].actions = vec![engine::model::Action::Drop];
    published.publish(compile(&cfg).unwrap());
    let old = w.sync(&published).expect("the worker sees the new generation");
    assert!(Snapshot::sum([&*old]).conserved());
    assert_eq!(w.rules().generation, 2);
    let r = run(&mut w, 0, &[frame]);
    assert_eq!(r.snap.drop_count(DropReason::RuleDrop), 1, "the cached flow was not reused");
    assert!(w.sync(&published).is_none());
}

#[test]
fn a_replaced_rule_set_is_freed_by_reclaim_once_no_worker_holds_it() {
    let published = Published::new((*rules()).clone());
    let mut w = Worker::new(published.current());
    let mut cfg = Config::from_toml(CONFIG).unwrap();
    cfg.generation = 2;
    published.publish(compile(&cfg).unwrap());
    assert_eq!(published.reclaim(), 0, "the worker still runs generation 1");
    assert!(w.sync(&published).is_some(), "the worker sees the new generation");
    assert_eq!(w.rules().generation, 2);
    assert_eq!(published.reclaim(), 1, "generation 1 is held by nobody else");
    assert_eq!(published.reclaim(), 0);
    assert_eq!(published.current().generation, 2);
}

#[test]
fn icmp_rate_limit_survives_wall_clock_timestamps() {
    let mut w = Worker::new(rules());
    let big = udp_frame(WL_MAC, [198, 51, 100, 9], 1000);
    // A replayed capture carries epoch timestamps in nanoseconds.
    let now = 1_764_000_000_000_000_000u64;
    let mut arena: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; FRAME]).collect();
    let (rx, spare) = arena.split_at_mut(1);
    rx[0][HEADROOM..HEADROOM + big.len()].copy_from_slice(&big);
    let mut batch = vec![PacketBuf::new(&mut rx[0], HEADROOM, big.len()).unwrap()];
    let mut it = spare.iter_mut();
    let mut pool = || it.next().map(|b| PacketBuf::new(b, HEADROOM, 0).unwrap());
    let mut out = Outputs::new(3, 4);
    w.process(0, &mut batch, &mut pool, &mut out, now, &mut NoTrace);
    assert_eq!(out.ports[0].len(), 1, "the ICMP reply was sent");
}

/// The reply of t1's remote to 198.51.100.1, as it arrives on up0.
fn from_t1(w: &Worker) -> Vec<u8> {
    let reply = udp_frame([2, 0, 0, 0, 0, 1], [198, 51, 100, 1], 16);
    let mut params = w.rules().tunnels[0].params;
    params.underlay = encap::Underlay::V4 { src: [192, 0, 2, 2], dst: [192, 0, 2, 1] };
    let mut tpl = encap::EncapTemplate::new(&params).unwrap();
    let mut b = vec![0u8; FRAME];
    b[HEADROOM..HEADROOM + reply.len()].copy_from_slice(&reply);
    let mut p = PacketBuf::new(&mut b, HEADROOM, reply.len()).unwrap();
    tpl.encap(&mut p).unwrap();
    p.data().to_vec()
}

#[test]
fn trace_predicts_the_fast_path() {
    // The state a running daemon gives its workers: g1's next hop learned.
    let live = TraceContext {
        live: true,
        next_hops: Arc::new([("192.0.2.4".parse().unwrap(), [2, 0, 0, 0, 0, 0x40])].into()),
        neighbours: [("192.0.2.4".parse().unwrap(), "reachable on up0".to_string())].into(),
        ..TraceContext::default()
    };
    let offline = TraceContext::default();
    let w = Worker::new(rules());
    let cases: Vec<(&str, &TraceContext, u16, Vec<u8>, &str)> = vec![
        ("encap", &live, 0, udp_frame(WL_MAC, [198, 51, 100, 2], 32), "output to port up0"),
        ("decap", &live, 2, from_t1(&w), "output to port wl0"),
        ("rule drop", &live, 0, udp_frame(WL_MAC, [192, 0, 2, 99], 8), "rule_drop"),
        ("mtu", &live, 0, udp_frame(WL_MAC, [198, 51, 100, 9], 1000), "mtu_exceeded"),
        ("flood", &live, 0, udp_frame([0xff; 6], [198, 51, 100, 255], 8), "replicated to 3"),
        (
            "learned hop",
            &live,
            0,
            udp_frame(WL_MAC, [203, 0, 113, 5], 8),
            "02:00:00:00:00:40, from the kernel's neighbour table (reachable on up0)",
        ),
        (
            "no hop offline",
            &offline,
            0,
            udp_frame(WL_MAC, [203, 0, 113, 5], 8),
            "an offline trace does not have",
        ),
    ];
    for (what, cx, port, frame, says) in cases {
        let t = trace_packet(rules(), cx, port, &frame, 0);
        let text = t.to_string();
        assert!(text.contains(says), "{what}: {text}");
        // A worker set up as the datapath sets up its own, on the fast path.
        let mut w = Worker::new(rules());
        w.apply_next_hops(&cx.next_hops);
        w.apply_interface_macs(&cx.interface_macs);
        let r = run(&mut w, port, std::slice::from_ref(&frame));
        assert_eq!(t.counters, CounterMoves::named(w.rules(), &r.snap), "{what}: {text}");
        let sent: Vec<(String, String)> = r
            .out
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.iter().map(move |f| (i, f)))
            .map(|(i, f)| (w.rules().ports[i].name.clone(), engine::trace::hex(f)))
            .collect();
        assert_eq!(t.outputs, sent, "{what}: {text}");
    }
    let t = trace_packet(rules(), &offline, 0, &udp_frame(WL_MAC, [203, 0, 113, 5], 8), 0);
    assert_eq!(t.counters.drops.get("no_neighbour"), Some(&1), "{t}");
    assert_eq!(t.counters.rules.get(&6).map(|f| f.packets), Some(1), "{t}");
    assert!(!t.live && t.to_string().contains("rules only: no learned next hops"), "{t}");
}

/// A flood list longer than any fixed array: every member gets its copy
/// (there is no cap), and when packet memory runs out each copy not made
/// is a `no_free_frame` drop, so rx + replicas = tx + dropped either way.
#[test]
fn flood_lists_of_any_length_are_sent_in_full() {
    const TUNNELS: usize = 150;
    let mut conf = String::from(
        "generation = 1\n[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n\
         [[ports]]\nname = \"up0\"\nkind = \"uplink\"\nmac = \"02:00:00:00:00:10\"\n",
    );
    for i in 0..TUNNELS {
        conf += &format!(
            "[[tunnels]]\nname = \"t{i}\"\ntype = \"vxlan\"\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\n\
             remote = \"10.{}.{}.1\"\nvni = 42\nnext_hop_mac = \"02:00:00:00:01:01\"\n",
            i / 256,
            i % 256
        );
    }
    conf += "[[rules]]\nid = 1\nmatch = { in_port = \"wl0\" }\nactions = [{ forward_l2 = 42 }]\n";
    let names: Vec<String> = (0..TUNNELS).map(|i| format!("\"t{i}\"")).collect();
    conf += &format!("[[flood]]\nvni = 42\ntunnels = [{}]\n", names.join(", "));
    let rs = Arc::new(compile(&Config::from_toml(&conf).unwrap()).unwrap());
    let bcast = udp_frame([0xff; 6], [198, 51, 100, 255], 8);
    for spare in [TUNNELS, 20] {
        let mut w = Worker::new(Arc::clone(&rs));
        let mut rx = vec![0u8; FRAME];
        rx[HEADROOM..HEADROOM + bcast.len()].copy_from_slice(&bcast);
        let mut bufs: Vec<Vec<u8>> = (0..spare).map(|_| vec![0u8; FRAME]).collect();
        let mut it = bufs.iter_mut();
        let mut pool = || it.next().map(|b| PacketBuf::new(b, HEADROOM, 0).unwrap());
        let mut out = Outputs::new(rs.ports.len(), TUNNELS);
        let pkt = PacketBuf::new(&mut rx, HEADROOM, bcast.len()).unwrap();
        w.process(0, &mut vec![pkt], &mut pool, &mut out, 0, &mut NoTrace);
        let s = Snapshot::sum([&*w.counters()]);
        assert!(s.conserved(), "{spare} spare frames: {s:?}");
        assert_eq!((s.rx, s.replicas), (1, TUNNELS as u64 - 1), "{spare} spare frames");
        // The original goes to the last tunnel; each copy needs a frame.
        let sent = TUNNELS.min(spare + 1);
        assert_eq!(out.ports[1].len(), sent, "{spare} spare frames");
        assert_eq!(s.tx as usize, sent);
        assert_eq!(s.drop_count(DropReason::NoFreeFrame) as usize, TUNNELS - sent);
        let remotes: std::collections::BTreeSet<[u8; 4]> =
            out.ports[1].iter().map(|p| p.data()[30..34].try_into().unwrap()).collect();
        assert_eq!(remotes.len(), sent, "each copy to its own tunnel");
    }
}
