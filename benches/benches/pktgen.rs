//! `fastpath pktgen`'s hot paths: generating a burst of 32 frames (alloc, template copy, flow,
//! sequence and TSC stamps) and analysing a returning burst (signature check, latency into the
//! histogram, free). The generator is built from the command's own source file.

#[allow(dead_code)]
#[path = "../../apps/src/pktgen/gen.rs"]
mod gen;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::{Ctx, Processor, RxQueue};
use gen::{Analyzer, AnalyzerStats, FrameSpec, GenQueue};

fn pktgen(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let spec = FrameSpec { flows: 64, ..FrameSpec::default() };
    let mut g = GenQueue::new(0, &pool, &spec, 0, 0, Arc::new(AtomicBool::new(false)));
    let mut an = Analyzer::new(9, Arc::new(AnalyzerStats::default()));
    let mut ctx = Ctx::new(0, &pool);
    let mut batch = Batch::new();
    let mut grp = c.benchmark_group("pktgen");
    grp.throughput(Throughput::Elements(32));
    grp.bench_function("generate_32", |b| {
        b.iter(|| {
            let n = g.rx_burst(&mut ctx, &mut batch, 32);
            ctx.free_batch(&mut batch);
            n
        })
    });
    grp.bench_function("generate_and_analyse_32", |b| {
        b.iter(|| {
            let n = g.rx_burst(&mut ctx, &mut batch, 32);
            an.process(&mut batch, &mut ctx);
            n
        })
    });
    grp.finish();
}

criterion_group!(benches, pktgen);
criterion_main!(benches);
