//! Runs one benchmark case for a number of batches of 256 packets, for
//! callgrind to count instructions (benches/callgrind.sh subtracts two runs
//! of different lengths, so set-up cost cancels out).
//!
//! instr_count CASE BATCHES, with CASE one of
//!   encap-{vxlan4,vxlan6,gretap4}-{64,1400}, decap-{...}-{64,1400},
//!   pipeline-1flow, pipeline-100kflows, classify-miss-10000

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
        _ => {
            eprintln!("unknown case {case}");
            std::process::exit(2);
        }
    }
    println!("{case}: {done} packets");
}
