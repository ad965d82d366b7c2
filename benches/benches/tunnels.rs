//! Tunnel stages on bursts of 32 frames: encap, decap, and the whole `*-roundtrip` bench path
//! (null rx copying a 64-byte frame into each mbuf, encap, decap, null tx freeing), for VXLAN,
//! GENEVE and NVGRE over IPv4 (and VXLAN over IPv6).
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a shared machine
//! it still measures what the code costs, not how often the scheduler ran it.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_benches::{encapsulated_frame, example_frame};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{make_stage, BuildEnv, Stage};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::lcore::{LcoreStats, Output};
use fastpath_pmd::{Ctx, Port};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const CASES: &[(&str, &str, &str)] = &[
    ("vxlan4", "vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2", "vxlan-decap,vni=42"),
    ("vxlan4-udpcsum", "vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2,udp-csum=on", "vxlan-decap,vni=42"),
    ("vxlan6", "vxlan-encap,vni=42,local=2001:db8::1,remote=2001:db8::2", "vxlan-decap,vni=42"),
    ("geneve4", "geneve-encap,vni=42,local=192.0.2.1,remote=192.0.2.2", "geneve-decap,vni=42"),
    ("nvgre4", "nvgre-encap,vni=42,local=192.0.2.1,remote=192.0.2.2", "nvgre-decap,vni=42"),
];

fn stage(spec: &str, pool: &Mempool) -> Box<dyn Stage> {
    make_stage(spec, &BuildEnv { pool: pool.clone(), ports: vec![] }).unwrap()
}

fn tunnels(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut g = c.benchmark_group("tunnels");
    g.throughput(Throughput::Elements(32));
    for &(name, enc, dec) in CASES {
        let mut ctx = Ctx::new(0, &pool);
        let inner: Arc<[u8]> = Arc::from(&example_frame(64)[..]);
        let outer: Arc<[u8]> = Arc::from(&encapsulated_frame(enc, 64)[..]);
        let mut e = stage(enc, &pool);
        let mut d = stage(dec, &pool);
        let mut batch = Batch::new();
        let st = LcoreStats::default();
        for (what, frame) in [("encap", inner.clone()), ("decap", outer), ("roundtrip", inner)] {
            let mut a = NullPort::new(0, &pool, NullConfig { frame: Some(frame), ..NullConfig::default() });
            let mut b = NullPort::new(1, &pool, NullConfig::default());
            let mut rx = a.rx_queue(0).unwrap();
            let mut out = Output::new(vec![None, Some(b.tx_queue(0).unwrap())], 32);
            g.bench_function(format!("{name}/{what}_burst_32"), |bn| {
                bn.iter_custom(|iters| {
                    let t0 = cpu_time();
                    for _ in 0..iters {
                        rx.rx_burst(&mut ctx, &mut batch, 32);
                        for m in batch.iter_mut() {
                            m.set_out_port(1);
                        }
                        if what != "decap" {
                            e.process(&mut batch, &mut ctx);
                        }
                        if what != "encap" {
                            d.process(&mut batch, &mut ctx);
                        }
                        assert_eq!(batch.len(), 32, "{name} {what}: a stage dropped frames");
                        out.transmit(&mut ctx, &mut batch, &st);
                    }
                    cpu_time() - t0
                })
            });
        }
    }
    // The yardstick: the same path without stages.
    let mut ctx = Ctx::new(0, &pool);
    let frame: Arc<[u8]> = Arc::from(&example_frame(64)[..]);
    let mut a = NullPort::new(0, &pool, NullConfig { frame: Some(frame), ..NullConfig::default() });
    let mut b = NullPort::new(1, &pool, NullConfig::default());
    let mut rx = a.rx_queue(0).unwrap();
    let mut out = Output::new(vec![None, Some(b.tx_queue(0).unwrap())], 32);
    let (mut batch, st) = (Batch::new(), LcoreStats::default());
    g.bench_function("none/rx_copy_tx_burst_32", |bn| {
        bn.iter_custom(|iters| {
            let t0 = cpu_time();
            for _ in 0..iters {
                rx.rx_burst(&mut ctx, &mut batch, 32);
                for m in batch.iter_mut() {
                    m.set_out_port(1);
                }
                out.transmit(&mut ctx, &mut batch, &st);
            }
            cpu_time() - t0
        })
    });
    g.finish();
}

criterion_group!(benches, tunnels);
criterion_main!(benches);
