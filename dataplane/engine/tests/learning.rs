//! MAC learning and ARP/ND suppression through the real pipeline: frames in,
//! the control side's `apply` between batches, frames out.

use std::sync::Arc;

use encap::PacketBuf;
use engine::compile::{compile, RuleSet};
use engine::counters::Snapshot;
use engine::learn::{L2State, L2View};
use engine::model::Config;
use engine::packet_spec::build;
use engine::pipeline::{Outputs, Worker};
use engine::trace::{render, Recorder, TraceContext};

const HEADROOM: usize = 128;
const FRAME: usize = 2048;
const SEC: u64 = 1_000_000_000;

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

[[tunnels]]
name = "t2"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 42
next_hop_mac = "02:00:00:00:00:30"

[[rules]]
id = 1
match = { in_port = "wl0" }
actions = [{ forward_l2 = 42 }]

[[rules]]
id = 2
match = { in_port = "wl1" }
actions = [{ forward_l2 = 42 }]

[[rules]]
id = 3
match = { tunnel = "t1" }
actions = [{ forward_l2 = 42 }]

[[rules]]
id = 4
match = { tunnel = "t2" }
actions = [{ forward_l2 = 42 }]

[[fdb]]
vni = 42
mac = "02:00:00:00:00:5e"
tunnel = "t1"

[[flood]]
vni = 42
tunnels = ["t1", "t2"]
ports = ["wl0", "wl1"]

[[networks]]
vni = 42
ageing_secs = 2
mac_limit = 3
suppress_arp_nd = true
bindings = [{ ip = "198.51.100.50", mac = "02:00:00:00:00:50" }]
"#;

const WL0: u16 = 0;
const WL1: u16 = 1;
const UP0: u16 = 2;
const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";

fn rules() -> Arc<RuleSet> {
    Arc::new(compile(&Config::from_toml(CONFIG).unwrap()).unwrap())
}

fn setup() -> (Arc<RuleSet>, Arc<L2State>, Worker) {
    let rs = rules();
    let l2 = L2State::new();
    l2.apply(&rs, 0);
    let mut w = Worker::new(Arc::clone(&rs));
    w.set_learner(l2.learner());
    (rs, l2, w)
}

fn frame(src: &str, dst: &str) -> Vec<u8> {
    build(&format!(
        "eth(src={src},dst={dst})/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=1,dport=2)"
    ))
    .unwrap()
}

/// `inner` as it arrives from the VTEP `remote` (192.0.2.x) in VNI 42.
fn from_vtep(remote: &str, inner_src: &str, inner_dst: &str) -> Vec<u8> {
    build(&format!(
        "eth(src=02:00:00:00:00:20,dst=02:00:00:00:00:10)/ipv4(src={remote},dst=192.0.2.1)/\
         udp(sport=50000,dport=4789)/vxlan(vni=42)/eth(src={inner_src},dst={inner_dst})/\
         ipv4(src=198.51.100.2,dst=198.51.100.1)/udp(sport=2,dport=1)"
    ))
    .unwrap()
}

fn arp_request(sha: &str, spa: &str, tpa: &str) -> Vec<u8> {
    build(&format!("eth(src={sha},dst=ff:ff:ff:ff:ff:ff)/arp(op=1,sha={sha},spa={spa},tpa={tpa})"))
        .unwrap()
}

/// What one frame became: frames per output port, and its trace in words.
struct Out {
    ports: Vec<Vec<Vec<u8>>>,
    text: String,
}

impl Out {
    fn counts(&self) -> Vec<usize> {
        self.ports.iter().map(Vec::len).collect()
    }

    /// The outer destination address of a frame sent to the uplink.
    fn vtep(&self, i: usize) -> [u8; 4] {
        self.ports[UP0 as usize][i][30..34].try_into().unwrap()
    }
}

/// Runs one frame arriving on `port` at `now` (traced), checking that every
/// packet is accounted for.
fn run(w: &mut Worker, port: u16, f: &[u8], now: u64) -> Out {
    let mut arena: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; FRAME]).collect();
    let (rx, pool_bufs) = arena.split_at_mut(1);
    rx[0][HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
    let mut batch = vec![PacketBuf::new(&mut rx[0], HEADROOM, f.len()).unwrap()];
    let mut pool_iter = pool_bufs.iter_mut();
    let mut pool = || pool_iter.next().map(|b| PacketBuf::new(b, HEADROOM, 0).unwrap());
    let before = Snapshot::sum([&*w.counters()]);
    let mut out = Outputs::new(w.rules().ports.len(), 8);
    let mut trace = Recorder::default();
    w.process(port, &mut batch, &mut pool, &mut out, now, &mut trace);
    let snap = Snapshot::sum([&*w.counters()]).since(&before);
    assert!(snap.conserved(), "conservation broken: {snap:?}");
    assert_eq!(snap.tx as usize, out.sent());
    let text = render(&trace.steps, w.rules(), &TraceContext::default())
        .iter()
        .map(|s| format!("{s}\n"))
        .collect();
    Out {
        ports: out.ports.iter().map(|v| v.iter().map(|p| p.data().to_vec()).collect()).collect(),
        text,
    }
}

fn view(l2: &L2State, now: u64) -> L2View {
    l2.view(now)
}

#[test]
fn learned_macs_end_flooding_in_both_directions() {
    let (rs, l2, mut w) = setup();
    // Unknown unicast floods: both tunnels and the other workload port.
    let o = run(&mut w, WL0, &frame(A, B), 0);
    assert_eq!(o.counts(), vec![0, 1, 2], "{}", o.text);
    assert!(o.text.contains("reported for learning"), "{}", o.text);
    assert!(l2.apply(&rs, 1));
    // B answers from behind t1: it goes to A's port only.
    let o = run(&mut w, UP0, &from_vtep("192.0.2.2", B, A), 2);
    assert_eq!(o.counts(), vec![1, 0, 0], "{}", o.text);
    assert!(o.text.contains("learned at port wl0"), "{}", o.text);
    assert!(l2.apply(&rs, 3));
    // And A's next frame goes into t1 alone.
    let o = run(&mut w, WL0, &frame(A, B), 4);
    assert_eq!(o.counts(), vec![0, 0, 1], "{}", o.text);
    assert_eq!(o.vtep(0), [192, 0, 2, 2]);
    let v = view(&l2, SEC);
    let names: Vec<_> =
        v.macs.iter().map(|m| (m.mac.to_string(), m.port.clone(), m.tunnel.clone())).collect();
    assert_eq!(
        names,
        vec![(A.to_string(), Some("wl0".into()), None), (B.to_string(), None, Some("t1".into()))]
    );
    assert_eq!(v.counters.learned, 2);
}

#[test]
fn a_move_takes_effect_at_once_and_is_counted() {
    let (rs, l2, mut w) = setup();
    run(&mut w, UP0, &from_vtep("192.0.2.2", B, A), 0);
    l2.apply(&rs, 1);
    // B reappears behind t2: this worker sends there with the very next
    // frame, before the control side has published anything.
    run(&mut w, UP0, &from_vtep("192.0.2.3", B, A), 2);
    let o = run(&mut w, WL0, &frame(A, B), 3);
    assert_eq!((o.counts(), o.vtep(0)), (vec![0, 0, 1], [192, 0, 2, 3]), "{}", o.text);
    l2.apply(&rs, 4);
    // A worker that never saw the move reads it from the snapshot.
    let mut other = Worker::new(Arc::clone(&rs));
    other.set_learner(l2.learner());
    let o = run(&mut other, WL0, &frame(A, B), 5);
    assert_eq!(o.vtep(0), [192, 0, 2, 3], "{}", o.text);
    let v = view(&l2, 6);
    assert_eq!(v.counters.moved, 1);
    let b = v.macs.iter().find(|m| m.mac.to_string() == B).unwrap();
    assert_eq!((b.tunnel.as_deref(), b.moves), (Some("t2"), 1));
}

#[test]
fn entries_age_out_unless_seen_again() {
    let (rs, l2, mut w) = setup();
    run(&mut w, WL0, &frame(A, B), 0);
    run(&mut w, UP0, &from_vtep("192.0.2.2", B, A), 0);
    l2.apply(&rs, 0);
    // A keeps talking (a refresh every half second); B falls silent.
    for t in 1..=5 {
        run(&mut w, WL0, &frame(A, "ff:ff:ff:ff:ff:ff"), t * SEC / 2);
        l2.apply(&rs, t * SEC / 2 + 1);
    }
    let v = view(&l2, 3 * SEC);
    assert_eq!(v.macs.len(), 1, "{v:?}");
    assert_eq!(v.macs[0].mac.to_string(), A);
    assert_eq!(v.counters.aged, 1);
    // B is unknown again: frames to it flood.
    let o = run(&mut w, WL0, &frame(A, B), 3 * SEC);
    assert_eq!(o.counts(), vec![0, 1, 2], "{}", o.text);
}

#[test]
fn the_limit_stops_learning_under_a_named_reason() {
    let (rs, l2, mut w) = setup();
    for i in 1..=4 {
        run(&mut w, WL0, &frame(&format!("02:00:00:00:01:0{i}"), B), i);
    }
    l2.apply(&rs, 10);
    let v = view(&l2, 10);
    assert_eq!(v.macs.len(), 3);
    assert_eq!(v.counters.no_learn["mac_limit"], 1);
    // The fourth still floods, as unknown unicast does.
    let o = run(&mut w, UP0, &from_vtep("192.0.2.2", B, "02:00:00:00:01:04"), 11);
    assert_eq!(o.counts(), vec![1, 1, 0], "{}", o.text);
}

#[test]
fn static_entries_win_over_sightings() {
    let (rs, l2, mut w) = setup();
    let s = "02:00:00:00:00:5e";
    run(&mut w, UP0, &from_vtep("192.0.2.3", s, A), 0);
    l2.apply(&rs, 1);
    let v = view(&l2, 1);
    assert!(v.macs.is_empty(), "{v:?}");
    assert_eq!(v.counters.no_learn["static_entry"], 1);
    let o = run(&mut w, WL0, &frame(A, s), 2);
    assert_eq!(o.vtep(0), [192, 0, 2, 2], "{}", o.text);
}

#[test]
fn arp_for_a_known_binding_is_answered_on_the_asking_port() {
    let (rs, l2, mut w) = setup();
    let o = run(&mut w, WL0, &arp_request(A, "198.51.100.10", "198.51.100.50"), 0);
    assert_eq!(o.counts(), vec![1, 0, 0], "{}", o.text);
    assert!(o.text.contains("198.51.100.50 is at 02:00:00:00:00:50, answered"), "{}", o.text);
    let reply = &o.ports[WL0 as usize][0];
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..28], &[2, 0, 0, 0, 0, 0x50]);
    // Unknown: flooded as before, and counted.
    let o = run(&mut w, WL0, &arp_request(A, "198.51.100.10", "198.51.100.77"), 1);
    assert_eq!(o.counts(), vec![0, 1, 2], "{}", o.text);
    assert!(o.text.contains("no binding for 198.51.100.77, flooded"), "{}", o.text);
    // A binding learned from a workload's ARP answers the next question.
    run(&mut w, WL1, &arp_request(B, "198.51.100.60", "198.51.100.10"), 2);
    l2.apply(&rs, 3);
    let o = run(&mut w, WL0, &arp_request(A, "198.51.100.10", "198.51.100.60"), 4);
    assert_eq!(o.counts(), vec![1, 0, 0], "{}", o.text);
    assert_eq!(&o.ports[WL0 as usize][0][22..28], &[2, 0, 0, 0, 0, 0x0b]);
    let c = view(&l2, 5).counters;
    // The second question (198.51.100.10 from B) was unknown too.
    assert_eq!((c.answered, c.flooded), (2, 2));
    assert!(c.bindings_learned >= 2);
}

#[test]
fn a_binding_claimed_by_another_mac_is_a_conflict() {
    let (rs, l2, mut w) = setup();
    run(&mut w, WL1, &arp_request(B, "198.51.100.50", "198.51.100.10"), 0);
    l2.apply(&rs, 1);
    let c = view(&l2, 1).counters;
    assert_eq!(c.conflicting, 1);
    // The static binding still answers.
    let o = run(&mut w, WL0, &arp_request(A, "198.51.100.10", "198.51.100.50"), 2);
    assert_eq!(&o.ports[WL0 as usize][0][22..28], &[2, 0, 0, 0, 0, 0x50]);
}

#[test]
fn learned_entries_follow_a_new_generation_by_name() {
    let (rs, l2, mut w) = setup();
    run(&mut w, UP0, &from_vtep("192.0.2.3", B, A), 0);
    l2.apply(&rs, 1);
    // Remove t1: t2 becomes tunnel 0.
    let mut c = Config::from_toml(CONFIG).unwrap();
    c.generation = 2;
    c.tunnels.remove(0);
    c.rules.retain(|r| r.id != 3);
    c.fdb.clear();
    c.flood[0].tunnels = vec!["t2".into()];
    let rs2 = Arc::new(compile(&c).unwrap());
    w.set_rules(Arc::clone(&rs2));
    l2.apply(&rs2, 2);
    let o = run(&mut w, WL0, &frame(A, B), 3);
    assert_eq!((o.counts(), o.vtep(0)), (vec![0, 0, 1], [192, 0, 2, 3]), "{}", o.text);
    assert_eq!(view(&l2, 3).macs[0].tunnel.as_deref(), Some("t2"));
}

#[test]
fn bad_networks_are_refused_with_the_field() {
    let cases = [
        ("ageing_secs = 1", "networks[0].ageing_secs", "minimum"),
        ("mac_limit = 0", "networks[0].mac_limit", "out of range"),
        (
            "bindings = [{ ip = \"198.51.100.9\", mac = \"01:00:5e:00:00:01\" }]",
            "networks[0].bindings[0].mac",
            "not a unicast",
        ),
    ];
    for (line, path, reason) in cases {
        let doc = format!("[[networks]]\nvni = 42\n{line}\n");
        let e = Config::from_toml(&doc).unwrap_err();
        assert_eq!(e.path(), Some(path), "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }
    let twice = "[[networks]]\nvni = 42\n[[networks]]\nvni = 42\n";
    assert_eq!(Config::from_toml(twice).unwrap_err().path(), Some("networks[1].vni"));
}

/// A neighbour solicitation from 2001:db8:1::a (MAC A) for `target`, to its
/// solicited-node group, with a source link-layer address option.
fn ns(target: std::net::Ipv6Addr) -> Vec<u8> {
    use encap::wire::checksum;
    let t = target.octets();
    let src: std::net::Ipv6Addr = "2001:db8:1::a".parse().unwrap();
    let group: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]];
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 0x0a]);
    let sum = checksum::pseudo_v6(&src.octets(), &group, 58, icmp.len() as u32);
    let c = checksum::finish(checksum::add(sum, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15], 2, 0, 0, 0, 0, 0x0a, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&group);
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn a_solicitation_for_a_learned_binding_is_answered_with_an_advertisement() {
    let (rs, l2, mut w) = setup();
    let target: std::net::Ipv6Addr = "2001:db8:1::b".parse().unwrap();
    // Unknown yet: flooded.
    let o = run(&mut w, WL0, &ns(target), 0);
    assert_eq!(o.counts(), vec![0, 1, 2], "{}", o.text);
    // B's solicitation for A carries B's binding, and is answered from A's
    // binding, learned from A's solicitation.
    let mut from_b = ns("2001:db8:1::a".parse().unwrap());
    from_b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
    from_b[22 + 15] = 0x0b; // source address 2001:db8:1::b
    from_b[14 + 40 + 24 + 2 + 5] = 0x0b; // source link-layer option
    let icmp_at = 14 + 40;
    from_b[icmp_at + 2..icmp_at + 4].copy_from_slice(&[0, 0]);
    let sum = encap::wire::checksum::pseudo_v6(
        &from_b[22..38].try_into().unwrap(),
        &from_b[38..54].try_into().unwrap(),
        58,
        32,
    );
    let c = encap::wire::checksum::finish(encap::wire::checksum::add(sum, &from_b[icmp_at..]));
    from_b[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    l2.apply(&rs, 1);
    let o = run(&mut w, WL1, &from_b, 2);
    assert_eq!(o.counts(), vec![0, 1, 0], "answered on B's port: {}", o.text);
    l2.apply(&rs, 3);
    let o = run(&mut w, WL0, &ns(target), 4);
    assert_eq!(o.counts(), vec![1, 0, 0], "{}", o.text);
    let na = &o.ports[WL0 as usize][0];
    assert_eq!(na[14 + 40], 136, "an NA");
    assert_eq!(&na[14 + 40 + 8..14 + 40 + 24], &target.octets());
    assert_eq!(&na[na.len() - 6..], &[2, 0, 0, 0, 0, 0x0b], "target link-layer address");
    assert!(o.text.contains("2001:db8:1::b is at 02:00:00:00:00:0b, answered"), "{}", o.text);
}

#[test]
fn a_full_queue_loses_sightings_under_a_named_reason() {
    let (rs, l2, mut w) = setup();
    // More new sources than a worker's queue holds, with no apply between.
    let n = 4200u32;
    for i in 0..n {
        let b = i.to_be_bytes();
        let src = format!("02:00:01:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3]);
        run(&mut w, WL0, &frame(&src, B), i as u64);
    }
    l2.apply(&rs, SEC);
    let c = view(&l2, SEC).counters;
    assert!(c.no_learn["queue_full"] >= (n - 4096) as u64, "{c:?}");
    assert_eq!(c.learned, 3, "the rest stop at mac_limit: {c:?}");
}
