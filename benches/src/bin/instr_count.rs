//! Runs one benchmark case for a number of batches of 256 packets, for
//! callgrind to count instructions (benches/callgrind.sh subtracts two runs
//! of different lengths, so set-up cost cancels out).
//!
//! instr_count CASE BATCHES, with CASE one of
//!   encap-{vxlan4,vxlan6,gretap4}-{64,1400}, decap-{...}-{64,1400},
//!   pipeline-1flow, pipeline-100kflows, classify-miss-10000,
//!   pipeline-l2static, pipeline-l2learn (forward_l2 to a static or a
//!   learned FDB entry; learn also reports the source MAC),
//!   settle-{tcp4,tcp6,udp4}-LEN-{valid,partial} (a workload's frame of LEN
//!   bytes through `encap::settle`; udp4zero: without a UDP checksum, as the
//!   pps harness sends), complete-vxlan6-LEN-{valid,partial} (a
//!   VXLAN packet over IPv6 whose inner TCP checksum is partial or not,
//!   through `encap::settle::complete_partial_vxlan`, as an uplink does)

use std::hint::black_box;

use benches::*;
use encap::EncapTemplate;
use engine::pipeline::Worker;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (case, batches) = match (args.get(1), args.get(2).and_then(|n| n.parse::<u32>().ok())) {
        (Some(c), Some(n)) => (c.as_str(), n),
        _ => {
            eprintln!("usage: instr_count CASE BATCHES");
            std::process::exit(2);
        }
    };
    let parts: Vec<&str> = case.split('-').collect();
    let mut done = 0usize;
    match parts.as_slice() {
        [op @ ("encap" | "decap"), kind, len] => {
            let kind = Kind::from_name(kind).expect("kind");
            let len: usize = len.parse().expect("length");
            let mut tpl = EncapTemplate::new(&tunnel(kind)).unwrap();
            let mut frames = Frames::new(256, len, 256);
            if *op == "encap" {
                for _ in 0..batches {
                    done += black_box(frames.encap(&mut tpl));
                }
            } else {
                frames.encap(&mut tpl);
                let rx = receiver(kind);
                for _ in 0..batches {
                    done += black_box(frames.decap(&rx, tpl.outer_len()));
                }
            }
        }
        ["pipeline", l2 @ ("l2static" | "l2learn")] => {
            let mut w = l2_pipeline_worker(*l2 == "l2learn");
            let mut frames = Frames::new(256, 64, 1);
            for _ in 0..batches {
                done += black_box(run_pipeline_batch(&mut w, &mut frames));
            }
            assert_eq!(done, batches as usize * 256, "every frame goes to its tunnel");
        }
        ["pipeline", flows] => {
            let mut w = Worker::new(pipeline_rules(10));
            let mut frames = Frames::new(256, 64, 1);
            for b in 0..batches {
                if *flows == "100kflows" {
                    frames.set_flows((b * 256) % 100_000);
                }
                done += black_box(run_pipeline_batch(&mut w, &mut frames));
            }
        }
        ["classify", "miss", "10000"] => {
            let rs = pipeline_rules(10_000);
            let keys: Vec<_> = (0..256)
                .map(|i| engine::flow_key::extract(&inner_frame(64, i), 0, 0, 0).0)
                .collect();
            for _ in 0..batches {
                for k in &keys {
                    done += black_box(rs.classifier.lookup(k)).rule.is_some() as usize;
                }
            }
        }
        [op @ ("settle" | "complete"), kind, len, state @ ("valid" | "partial")] => {
            let len: usize = len.parse().expect("length");
            let (frame, field, partial) = checksum_frame(kind, len);
            let mut frames = vec![frame; 256];
            let (partial_state, settle) = (*state == "partial", *op == "settle");
            for _ in 0..batches {
                for f in frames.iter_mut() {
                    if partial_state {
                        f[field..field + 2].copy_from_slice(&partial);
                    }
                    let ok = if settle {
                        encap::settle(black_box(f)).is_ok()
                    } else {
                        encap::settle::complete_partial_vxlan(black_box(f))
                    };
                    done += ok as usize;
                }
            }
        }
        _ => {
            eprintln!("unknown case {case}");
            std::process::exit(2);
        }
    }
    println!("{case}: {done} packets");
}

/// A frame of `len` bytes whose TCP (or UDP) checksum is valid, where that
/// checksum is, and its partial form (the folded pseudo-header sum).
fn checksum_frame(kind: &str, len: usize) -> (Vec<u8>, usize, [u8; 2]) {
    let udp = |csum: &str| {
        format!(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=40000,dport=5001,csum={csum})"
        )
    };
    let (l4_hdr, proto) = if kind.starts_with("udp") { (8, 17) } else { (20, 6) };
    let (spec, hdrs) = match kind {
        "udp4" => (udp("auto"), 42),
        "udp4zero" => (udp("0"), 42),
        "tcp4" => ("eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/tcp(sport=40000,dport=5001)".into(), 54),
        "tcp6" => ("eth/ipv6(src=2001:db8::1,dst=2001:db8::2)/tcp(sport=40000,dport=5001)".into(), 74),
        "vxlan6" => (
            "eth/ipv6(src=2001:db8::2,dst=2001:db8::1)/udp(dport=4789,csum=auto)/vxlan(vni=42)/eth/ipv4(src=198.51.100.2,dst=198.51.100.1)/tcp(sport=5001,dport=40000)".into(),
            124,
        ),
        _ => panic!("unknown frame kind {kind}"),
    };
    let payload = "61".repeat(len.saturating_sub(hdrs));
    let f = engine::packet_spec::build(&format!("{spec}/hex(data={payload})")).expect("frame");
    // The L4 header is the last one before the payload.
    let l4 = hdrs - l4_hdr;
    let field = l4 + if proto == 6 { 16 } else { 6 };
    let ip = if kind == "tcp6" { 14 } else { l4 - 20 };
    let l4_len = (f.len() - l4) as u32;
    use encap::wire::checksum;
    let pseudo = if kind == "tcp6" {
        let (s, d) =
            (f[ip + 8..ip + 24].try_into().unwrap(), f[ip + 24..ip + 40].try_into().unwrap());
        checksum::pseudo_v6(s, d, proto, l4_len)
    } else {
        let (s, d) =
            (f[ip + 12..ip + 16].try_into().unwrap(), f[ip + 16..ip + 20].try_into().unwrap());
        checksum::pseudo_v4(s, d, proto, l4_len as u16)
    };
    (f, field, checksum::fold(pseudo).to_be_bytes())
}
