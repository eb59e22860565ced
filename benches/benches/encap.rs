//! Encapsulation and decapsulation per packet: 64- and 1400-byte inner frames,
//! batches of 32 and 256, VXLAN over IPv4 and IPv6, gretap over IPv4. Also the
//! outer-header parse with our views against etherparse.

use benches::{receiver, tunnel, Frames, Kind};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use encap::EncapTemplate;
use std::hint::black_box;

fn encap_decap(c: &mut Criterion) {
    for kind in Kind::ALL {
        for len in [64usize, 1400] {
            for batch in [32usize, 256] {
                let mut g = c.benchmark_group(format!("{}/{len}B/batch{batch}", kind.name()));
                g.throughput(Throughput::Elements(batch as u64));
                let mut tpl = EncapTemplate::new(&tunnel(kind)).unwrap();
                let mut frames = Frames::new(batch, len, batch as u32);
                g.bench_function("encap", |b| b.iter(|| black_box(frames.encap(&mut tpl))));
                assert_eq!(frames.encap(&mut tpl), batch);
                let rx = receiver(kind);
                let outer = tpl.outer_len();
                g.bench_function("decap", |b| b.iter(|| black_box(frames.decap(&rx, outer))));
                assert_eq!(frames.decap(&rx, outer), batch);
                g.finish();
            }
        }
    }
}

/// Parsing an outer VXLAN/IPv4 frame: our checked views (what decap does up to
/// the inner frame, without the policy checks) against etherparse's slicer.
fn parse_views_vs_etherparse(c: &mut Criterion) {
    let mut tpl = EncapTemplate::new(&tunnel(Kind::VxlanV4)).unwrap();
    let mut frames = Frames::new(256, 64, 256);
    frames.encap(&mut tpl);
    let outer = tpl.outer_len();
    let wire: Vec<Vec<u8>> = frames
        .bufs
        .iter()
        .map(|b| b[benches::HEADROOM - outer..benches::HEADROOM + 64].to_vec())
        .collect();
    let mut g = c.benchmark_group("parse_outer_vxlan4_64B");
    g.throughput(Throughput::Elements(wire.len() as u64));
    g.bench_function("own_views", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for f in &wire {
                use encap::wire::*;
                let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
                let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
                let ok = ip.verify_checksum();
                let u = udp::Packet::new_checked(ip.payload()).unwrap();
                let v = vxlan::Packet::new_checked(u.payload()).unwrap();
                n = n.wrapping_add(v.vni() + ok as u32 + u.src_port() as u32);
            }
            black_box(n)
        })
    });
    g.bench_function("etherparse", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for f in &wire {
                let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
                let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!() };
                let h = ip.header();
                let ok = h.header_checksum() == h.to_header().calc_header_checksum();
                let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else { panic!() };
                let pl = u.payload();
                n = n.wrapping_add(
                    u32::from_be_bytes([0, pl[4], pl[5], pl[6]])
                        + ok as u32
                        + u.source_port() as u32,
                );
            }
            black_box(n)
        })
    });
    g.finish();
    let _ = BatchSize::SmallInput;
}

criterion_group!(benches, encap_decap, parse_views_vs_etherparse);
criterion_main!(benches);
