//! Zero heap allocation in the router VNF's stage (examples/router), checked with a counting
//! global allocator: forwarding, and the packets it makes itself (ICMP time exceeded and
//! unreachable, neighbour solicitations) come from the pool, not the heap.
//!
//! A single test in this binary, so that nothing else allocates while it counts.

use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{BuildEnv, Pipeline};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::lcore::{LcoreStats, Output};
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_pmd::{Ctx, Port, Processor};

#[global_allocator]
static ALLOCS: CountingAlloc = CountingAlloc::new();

/// A 64-byte UDP/IPv4 frame to the bench router's MAC, to `dst` with `ttl`.
fn frame(dst: [u8; 4], ttl: u8) -> Arc<[u8]> {
    let mut f = fastpath_benches::example_frame(64);
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x10]);
    f[22] = ttl;
    f[30..34].copy_from_slice(&dst);
    f[24..26].copy_from_slice(&[0, 0]);
    let c = fastpath_pipeline::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    Arc::from(&f[..])
}

#[test]
fn the_router_stage_allocates_nothing() {
    let pool = Mempool::new("zar", &PoolConfig { mbufs: 4096, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let bench = fastpath_benches::pipelines().into_iter().find(|p| p.name == "router").expect("router pipeline");
    // Routed frames (the bench's), then: no route, TTL 1, and a host without a neighbour entry.
    let mut frames: Vec<Arc<[u8]>> = bench.frames.clone().unwrap().iter().take(29).cloned().collect();
    frames.extend([frame([192, 0, 2, 1], 64), frame([10, 0, 2, 2], 1), frame([10, 0, 2, 77], 64)]);
    let cfg = NullConfig { frames: Some(frames.into()), ..Default::default() };
    let mut a = NullPort::new(0, &pool, cfg.clone());
    let mut b = NullPort::new(1, &pool, NullConfig { no_rx: true, ..Default::default() });
    let env = BuildEnv { pool: pool.clone(), ports: vec![a.info().clone(), b.info().clone()] };
    let stages = (bench.build.as_ref().expect("built in code").0)(&env).unwrap();
    let counters = stages[0].counters().clone();
    let mut pipe = Pipeline::new(stages);
    let mut rx = a.rx_queue(0).unwrap();
    let mut out = Output::new(vec![Some(a.tx_queue(0).unwrap()), Some(b.tx_queue(0).unwrap())], 32);
    let mut ctx = Ctx::new(0, &pool);
    let mut batch = Batch::new();
    let st = LcoreStats::default();
    let mut step = |ctx: &mut Ctx| {
        rx.rx_burst(ctx, &mut batch, 32);
        batch.iter_mut().for_each(|m| m.set_out_port(1));
        pipe.process(&mut batch, ctx);
        out.transmit(ctx, &mut batch, &st);
        out.flush(ctx, &st);
    };
    for _ in 0..1000 {
        step(&mut ctx);
    }
    let before = ALLOCS.count();
    for _ in 0..100_000 {
        step(&mut ctx);
    }
    assert_eq!(ALLOCS.count() - before, 0, "allocations in the router stage");
    let drops: std::collections::HashMap<_, _> = counters.drops().into_iter().collect();
    let stats: std::collections::HashMap<_, _> = counters.stats().into_iter().collect();
    assert!(stats["forwarded"] > 0 && drops["no-route"] > 0 && drops["ttl-exceeded"] > 0, "{counters:?}");
    assert!(drops["no-neighbour"] > 0 && stats["icmp-errors"] > 0 && stats["solicitations"] > 0, "{counters:?}");
    drop((rx, out, pipe, ctx, a, b));
    assert_eq!(pool.available(), pool.capacity(), "every mbuf came back");
}
