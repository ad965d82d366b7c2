//! LPM lookups: bursts of 32 random addresses against IPv4 tables of 1k and 100k routes (DPDK's
//! prefix-length distribution, see `lpm-perf`) and an IPv6 table of 1000 routes; and the cost
//! of a route change (add then delete a /25, which opens and folds a group).

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_pipeline::lpm::{Lpm4, Lpm6, LpmConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Lengths weighted like a BGP table (mostly /24, then /16 to /23).
fn length(r: &mut Rng) -> u8 {
    match r.next() % 100 {
        0..=54 => 24,
        55..=61 => 16,
        62..=93 => 17 + (r.next() % 7) as u8,
        94..=97 => 8 + (r.next() % 8) as u8,
        _ => 25 + (r.next() % 8) as u8,
    }
}

fn lpm4(routes: usize, r: &mut Rng) -> Lpm4 {
    let mut t = Lpm4::new(&LpmConfig { max_groups: 8192 }).unwrap();
    while t.len() < routes {
        let _ = t.add(Ipv4Addr::from(r.next() as u32 & 0xdfff_ffff), length(r), (r.next() % 64) as u16);
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut r = Rng(0x1234_5678);
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(32));
    for routes in [1_000, 100_000] {
        let t = lpm4(routes, &mut r);
        let mut reader = t.reader();
        let addrs: Vec<u32> = (0..4096).map(|_| r.next() as u32).collect();
        let mut hops = [0u16; 32];
        let mut i = 0;
        g.bench_function(format!("v4 bulk 32, {routes} routes"), |b| {
            b.iter(|| {
                i = (i + 32) % addrs.len();
                reader.lookup_bulk(black_box(&addrs[i..i + 32]), &mut hops);
                black_box(&hops);
            })
        });
    }
    let mut t6 = Lpm6::new(&LpmConfig { max_groups: 16384 }).unwrap();
    while t6.len() < 1000 {
        let p = (r.next() as u128) << 64 | r.next() as u128;
        let _ = t6.add(Ipv6Addr::from(p), 1 + (r.next() % 128) as u8, 1);
    }
    let mut reader6 = t6.reader();
    let addrs6: Vec<u128> = (0..4096).map(|_| (r.next() as u128) << 64 | r.next() as u128).collect();
    let mut hops = [0u16; 32];
    let mut i = 0;
    g.bench_function("v6 bulk 32, 1000 routes", |b| {
        b.iter(|| {
            i = (i + 32) % addrs6.len();
            reader6.lookup_bulk(black_box(&addrs6[i..i + 32]), &mut hops);
            black_box(&hops);
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut t = lpm4(1_000, &mut r);
    let _reader = t.reader();
    g.bench_function("v4 add + delete a /25 (a group made and folded)", |b| {
        b.iter(|| {
            t.add(Ipv4Addr::new(100, 64, 1, 128), 25, 7).unwrap();
            assert!(t.delete(Ipv4Addr::new(100, 64, 1, 128), 25));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
