//! The whole pipeline per packet (parse, classify, VXLAN encap, hand to the
//! output batch) in batches of 256: one flow, and 100,000 flows (the flow cache
//! holds 8,192, so most lookups go to the classifier).

use benches::{pipeline_rules, run_pipeline_batch, Frames};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::pipeline::Worker;
use std::hint::black_box;

fn pipeline(c: &mut Criterion) {
    for rules in [10usize, 10_000] {
        let mut g = c.benchmark_group(format!("pipeline_vxlan4_64B/{rules}_rules"));
        g.throughput(Throughput::Elements(256));
        let mut w = Worker::new(pipeline_rules(rules));
        let mut one = Frames::new(256, 64, 1);
        assert_eq!(run_pipeline_batch(&mut w, &mut one), 256);
        g.bench_function("1_flow", |b| b.iter(|| black_box(run_pipeline_batch(&mut w, &mut one))));
        let mut many = Frames::new(256, 64, 256);
        let mut next = 0u32;
        g.bench_function("100000_flows", |b| {
            b.iter(|| {
                many.set_flows(next);
                next = (next + 256) % 100_000;
                black_box(run_pipeline_batch(&mut w, &mut many))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
