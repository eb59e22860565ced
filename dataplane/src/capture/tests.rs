//! A capture armed on a worker's pipeline, without any I/O: what it records,
//! what its filters select, what it cannot record, and that the pipeline's
//! work and counters are the same with it as without it.

use std::sync::Arc;

use encap::PacketBuf;
use engine::compile::{compile, RuleSet};
use engine::counters::Snapshot;
use engine::model::Config;
use engine::pipeline::{Outputs, Worker};
use engine::trace::NoTrace;

use super::*;

const CONFIG: &str = r#"
[[ports]]
name = "wl"
kind = "workload"

[[ports]]
name = "up"
kind = "uplink"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "t1"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:00:20"

[[tunnels]]
name = "t2"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 43

[[rules]]
id = 10
priority = 100
match = { in_port = "wl" }
actions = [{ encap = "t1" }]

[[rules]]
id = 20
priority = 100
match = { tunnel = "t1", vni = 42 }
actions = [{ output = "wl" }]

[[rules]]
id = 30
priority = 200
match = { in_port = "wl", ip_dst = "198.51.100.66" }
actions = ["drop"]

[[rules]]
id = 40
priority = 200
match = { in_port = "wl", ip_dst = "198.51.100.3" }
actions = [{ encap = "t2" }]
"#;

fn rules() -> Arc<RuleSet> {
    Arc::new(compile(&Config::from_toml(CONFIG).unwrap()).unwrap())
}

fn inner(dst: &str) -> Vec<u8> {
    engine::packet_spec::build(&format!(
        "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst={dst})/udp(sport=4000,dport=9)/payload(len=20)"
    ))
    .unwrap()
}

fn from_t1() -> Vec<u8> {
    engine::packet_spec::build(
        "eth(src=02:00:00:00:00:20,dst=02:00:00:00:00:10)/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42)/eth(src=02:00:00:00:0b:01,dst=02:00:00:00:0a:01)/ipv4(src=198.51.100.2,dst=198.51.100.1)/udp(sport=9,dport=4000)",
    )
    .unwrap()
}

/// The wl batch: forwarded into t1, dropped by rule 30, no neighbour on t2.
fn wl_batch() -> Vec<Vec<u8>> {
    vec![inner("198.51.100.2"), inner("198.51.100.66"), inner("198.51.100.3")]
}

const HEAD: usize = 256;

/// What one batch through the pipeline gave: each port's frames, and the
/// worker's counters.
struct Ran {
    sent: Vec<Vec<Vec<u8>>>,
    counters: Snapshot,
}

/// Runs `frames` arriving on `port` through a fresh worker, through the
/// capture when `armed` is given.
fn run(port: &str, frames: &[Vec<u8>], armed: Option<&mut Armed>) -> Ran {
    let rs = rules();
    let mut w = Worker::new(Arc::clone(&rs));
    let mut arena: Vec<Vec<u8>> = (0..frames.len() * 4 + 8).map(|_| vec![0u8; 2048]).collect();
    let (rx, spare) = arena.split_at_mut(frames.len());
    let mut batch: Vec<PacketBuf> = rx
        .iter_mut()
        .zip(frames)
        .map(|(b, f)| {
            b[HEAD..HEAD + f.len()].copy_from_slice(f);
            PacketBuf::new(b, HEAD, f.len()).unwrap()
        })
        .collect();
    let mut spare = spare.iter_mut();
    let mut pool = || spare.next().and_then(|b| PacketBuf::new(b, HEAD, 0));
    let mut out = Outputs::new(rs.ports.len(), 16);
    let p = rs.port_index(port).unwrap();
    match armed {
        Some(a) => a.process(&mut w, p, &mut batch, &mut pool, &mut out, 0),
        None => w.process(p, &mut batch, &mut pool, &mut out, 0, &mut NoTrace),
    }
    let sent = out.ports.iter().map(|f| f.iter().map(|b| b.data().to_vec()).collect()).collect();
    Ran { sent, counters: Snapshot::sum([&*w.counters()]) }
}

fn session(req: CaptureRequest) -> Arc<Session> {
    Arc::new(Session::new(&rules(), &req).unwrap())
}

fn armed(s: &Arc<Session>) -> Armed {
    Armed::new(Arc::clone(s), &rules())
}

fn records(s: &Session) -> Vec<Captured> {
    std::iter::from_fn(|| s.full.pop()).map(|b| *b).collect()
}

#[test]
fn every_packet_is_recorded_with_its_fate_and_forwarding_is_unchanged() {
    let s = session(CaptureRequest::default());
    let mut a = armed(&s);
    let with = run("wl", &wl_batch(), Some(&mut a));
    let without = run("wl", &wl_batch(), None);
    assert_eq!(with.sent, without.sent, "the capture changed what was sent");
    assert_eq!(with.counters, without.counters, "the capture changed the counters");
    assert!(with.counters.conserved());

    let r = records(&s);
    let comments: Vec<String> = r.iter().map(Captured::comment).collect();
    assert_eq!(
        comments,
        [
            "in verdict=forwarded rule=10 tunnel=t1 tier=software",
            "in verdict=dropped reason=rule_drop stage=action rule=30 tier=software",
            "in verdict=dropped reason=no_neighbour stage=encap rule=40 tunnel=t2 tier=software",
            "out verdict=forwarded rule=10 tunnel=t1 tier=software",
        ],
    );
    // Inputs as they arrived, the output as it left.
    let batch = wl_batch();
    for (c, f) in r.iter().zip(&batch) {
        assert_eq!((c.interface, &c.data, c.orig_len as usize), (0, f, f.len()));
    }
    assert_eq!((r[3].interface, &r[3].data), (1, &with.sent[1][0]));
    assert!(r[3].data.len() > batch[0].len() + 40, "the output is encapsulated");
    assert_eq!(s.lost(0) + s.lost(1), 0);
}

#[test]
fn decapsulated_packets_name_their_tunnel() {
    let s = session(CaptureRequest::default());
    let mut a = armed(&s);
    let ran = run("up", &[from_t1()], Some(&mut a));
    let r = records(&s);
    let got: Vec<(u32, String)> = r.iter().map(|c| (c.interface, c.comment())).collect();
    assert_eq!(
        got,
        [
            (1, "in verdict=forwarded rule=20 tunnel=t1 tier=software".into()),
            (0, "out verdict=forwarded rule=20 tunnel=t1 tier=software".into()),
        ]
    );
    assert_eq!(r[1].data, ran.sent[0][0]);
}

#[test]
fn filters_select_exactly_what_they_name() {
    let req = |f: fn(&mut CaptureRequest)| {
        let mut r = CaptureRequest::default();
        f(&mut r);
        r
    };
    // (filter, the comments of what it records, in order)
    let cases: Vec<(CaptureRequest, Vec<&str>)> = vec![
        (
            req(|r| r.verdict = Some(Verdict::Dropped)),
            vec!["in verdict=dropped reason=rule_drop", "in verdict=dropped reason=no_neighbour"],
        ),
        (
            req(|r| r.reason = Some("no_neighbour".into())),
            vec!["in verdict=dropped reason=no_neighbour"],
        ),
        (req(|r| r.reason = Some("mtu_exceeded".into())), vec![]),
        (req(|r| r.rule = Some(10)), vec!["in verdict=forwarded", "out verdict=forwarded"]),
        (req(|r| r.rule = Some(20)), vec![]),
        (
            req(|r| r.tunnel = Some("t1".into())),
            vec!["in verdict=forwarded", "out verdict=forwarded"],
        ),
        (req(|r| r.tunnel = Some("t2".into())), vec!["in verdict=dropped reason=no_neighbour"]),
        (req(|r| r.ports = vec!["up".into()]), vec!["out verdict=forwarded"]),
        (
            req(|r| r.direction = CaptureDirection::In),
            vec!["in verdict=forwarded", "in verdict=dropped", "in verdict=dropped"],
        ),
        (req(|r| r.direction = CaptureDirection::Out), vec!["out verdict=forwarded"]),
        (
            req(|r| {
                r.ports = vec!["wl".into()];
                r.direction = CaptureDirection::Out
            }),
            vec![],
        ),
        (
            req(|r| {
                r.verdict = Some(Verdict::Forwarded);
                r.direction = CaptureDirection::In
            }),
            vec!["in verdict=forwarded"],
        ),
    ];
    for (filter, want) in cases {
        let s = session(filter.clone());
        let mut a = armed(&s);
        run("wl", &wl_batch(), Some(&mut a));
        let got: Vec<String> = records(&s).iter().map(Captured::comment).collect();
        assert_eq!(got.len(), want.len(), "{filter:?}: {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.starts_with(w), "{filter:?}: {got:?}");
        }
    }
}

#[test]
fn what_cannot_be_recorded_is_counted_and_forwarding_goes_on() {
    let s = session(CaptureRequest::default());
    // Every buffer is taken, as if the API side had stopped draining.
    let held: Vec<Box<Captured>> = std::iter::from_fn(|| s.take()).collect();
    assert_eq!(held.len(), RING);
    let mut a = armed(&s);
    let with = run("wl", &wl_batch(), Some(&mut a));
    assert_eq!(with.sent, run("wl", &wl_batch(), None).sent);
    assert!(records(&s).is_empty());
    assert_eq!((s.lost(0), s.lost(1)), (3, 1), "three inputs on wl, one output on up");
    // Buffers given back are used again.
    for c in held {
        s.recycle(c);
    }
    run("wl", &wl_batch(), Some(&mut a));
    assert_eq!(records(&s).len(), 4);
}

#[test]
fn requests_are_checked_against_the_rule_set() {
    let rs = rules();
    let refused = |f: fn(&mut CaptureRequest)| {
        let mut r = CaptureRequest::default();
        f(&mut r);
        Session::new(&rs, &r).err().and_then(|e| e.path())
    };
    assert_eq!(refused(|r| r.ports = vec!["wl".into(), "nope".into()]), Some("ports[1]".into()));
    assert_eq!(refused(|r| r.tunnel = Some("nope".into())), Some("tunnel".into()));
    assert_eq!(refused(|r| r.rule = Some(99)), Some("rule".into()));
    assert_eq!(refused(|r| r.reason = Some("nope".into())), Some("reason".into()));
    assert_eq!(refused(|r| r.count = Some(0)), Some("count".into()));
    assert_eq!(refused(|r| r.duration_ms = Some(0)), Some("duration_ms".into()));
    assert_eq!(refused(|r| r.snaplen = Some(10)), Some("snaplen".into()));
    assert_eq!(refused(|r| r.reason = Some("rule_drop".into())), None);
}

#[test]
fn a_snapshot_length_cuts_what_is_kept_not_the_length() {
    let s = session(CaptureRequest { snaplen: Some(64), ..CaptureRequest::default() });
    let mut a = armed(&s);
    run("wl", &wl_batch(), Some(&mut a));
    let r = records(&s);
    assert!(r.iter().all(|c| c.data.len() == (c.orig_len as usize).min(64)), "{r:?}");
    assert!(r.iter().any(|c| c.orig_len > 64), "the encapsulated output is longer: {r:?}");
}

#[test]
fn workers_follow_the_tap_one_capture_at_a_time() {
    let tap = CaptureTap::default();
    let rs = rules();
    let mut w = WorkerCapture::default();
    w.sync(&tap, &rs);
    assert!(w.armed().is_none());
    let s = session(CaptureRequest::default());
    tap.arm(Arc::clone(&s)).unwrap();
    assert!(matches!(tap.arm(session(CaptureRequest::default())), Err(CaptureError::Busy)));
    w.sync(&tap, &rs);
    assert!(w.armed().is_some());
    // A new generation re-resolves the filter against its numbering.
    let rs2 = rules();
    w.sync(&tap, &rs2);
    assert!(w.armed().is_some_and(|a| Arc::ptr_eq(&a.rules, &rs2)));
    tap.disarm(&s);
    w.sync(&tap, &rs2);
    assert!(w.armed().is_none());
    tap.close();
    assert!(matches!(tap.arm(s), Err(CaptureError::Closed)));
}

#[test]
fn the_stream_is_pcapng_with_an_interface_per_port_and_ends_at_its_count() {
    let tap = CaptureTap::default();
    let s = session(CaptureRequest::default());
    tap.arm(Arc::clone(&s)).unwrap();
    let mut a = armed(&s);
    run("wl", &wl_batch(), Some(&mut a));
    let mut bytes = Vec::new();
    let n = stream(
        &tap,
        Arc::clone(&s),
        Bounds { count: Some(2), duration: Some(std::time::Duration::from_secs(5)) },
        |p| format!("port {p}"),
        |chunk| {
            bytes.extend_from_slice(&chunk);
            true
        },
    );
    assert_eq!(n, 2);
    assert!(!tap.armed(), "the capture disarmed at its count");
    let mut summary = crate::io::pcapng::StreamSummary::default();
    summary.feed(&bytes);
    assert_eq!((summary.packets, summary.lost(), summary.garbled), (2, 0, false));
    let recs = crate::io::pcap::PcapReader::new(&bytes[..]).unwrap().read_all().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].data, wl_batch()[0]);
}

#[test]
fn an_icmp_reply_the_pipeline_makes_is_recorded_as_generated() {
    let s = session(CaptureRequest::default());
    let mut a = armed(&s);
    let big = engine::packet_spec::build(
        "eth(src=02:00:00:00:0a:01,dst=02:00:00:00:0b:01)/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=4000,dport=9)/payload(len=1432)",
    )
    .unwrap();
    let ran = run("wl", &[big], Some(&mut a));
    let got: Vec<(u32, String)> = records(&s).iter().map(|c| (c.interface, c.comment())).collect();
    assert_eq!(
        got,
        [
            (0, "in verdict=dropped reason=mtu_exceeded stage=encap rule=10 tunnel=t1 tier=software".into()),
            (
                0,
                "out verdict=dropped reason=mtu_exceeded stage=encap rule=10 tunnel=t1 generated=icmp_too_big tier=software"
                    .into()
            ),
        ]
    );
    assert_eq!(ran.sent[0].len(), 1, "the ICMP reply went back out of wl");
}
