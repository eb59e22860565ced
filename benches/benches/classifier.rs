//! Classifier lookups with 10, 1,000 and 10,000 wildcard rules over 16 mask
//! shapes, through the flow cache (hit) and without it (miss), and the time
//! to compile 100,000 rules.

use benches::{pipeline_config, pipeline_rules};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::flow_cache::FlowCache;
use engine::flow_key::extract;
use std::hint::black_box;

fn keys(n: u32) -> Vec<engine::flow_key::FlowKey> {
    (0..n).map(|i| extract(&benches::inner_frame(64, i), 0, 0, 0).0).collect()
}

fn lookups(c: &mut Criterion) {
    for rules in [10usize, 1_000, 10_000] {
        let rs = pipeline_rules(rules);
        let ks = keys(256);
        let mut g = c.benchmark_group(format!("classifier/{rules}_rules"));
        g.throughput(Throughput::Elements(ks.len() as u64));
        g.bench_function("miss_tuple_search", |b| {
            b.iter(|| {
                let mut found = 0u32;
                for k in &ks {
                    found += rs.classifier.lookup(k).rule.is_some() as u32;
                }
                black_box(found)
            })
        });
        let mut cache = FlowCache::new();
        for k in &ks {
            cache.insert(k, k.hash(), 1, rs.classifier.lookup(k).rule.unwrap());
        }
        g.bench_function("hit_flow_cache", |b| {
            b.iter(|| {
                let mut found = 0u32;
                for k in &ks {
                    found += cache.get(k, k.hash(), 1).is_some() as u32;
                }
                black_box(found)
            })
        });
        g.finish();
        eprintln!("{rules} rules: {} tables", rs.classifier.tuple_count());
    }
}

fn compile_100k(c: &mut Criterion) {
    let cfg = pipeline_config(100_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("100000_rules", |b| {
        b.iter(|| black_box(engine::compile::compile(&cfg).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, lookups, compile_100k);
criterion_main!(benches);
