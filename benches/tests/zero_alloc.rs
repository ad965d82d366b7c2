//! Zero heap allocation on the forwarding path, checked with a counting global allocator.
//!
//! This test binary holds a single test so that nothing else allocates while it counts: the
//! lcore loop runs on its own thread, the test thread only sleeps between two readings.

use std::time::Duration;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{BuildEnv, PipelineSpec};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::drivers::ring::RingPort;
use fastpath_pmd::lcore::{LcoreStats, Output};
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_pmd::{Ctx, LcoreSpec, Port, Processor, Runtime, RuntimeConfig};

#[global_allocator]
static ALLOCS: CountingAlloc = CountingAlloc::new();

fn allocs() -> u64 {
    ALLOCS.count()
}

#[test]
fn forwarding_allocates_nothing() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let pool = Mempool::new("za", &PoolConfig { mbufs: 4096, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let frame: std::sync::Arc<[u8]> = fastpath_benches::example_frame(64).into();

    // 1. The loop body, on this thread: null rx -> macswap -> ring tx, ring rx -> io -> null tx.
    let mut a = NullPort::new(0, &pool, NullConfig { frame: Some(frame.clone()), ..Default::default() });
    let (mut r1, mut r2) = RingPort::pair(1, 2, 256);
    let mut sink = NullPort::new(3, &pool, NullConfig { no_rx: true, ..Default::default() });
    let env = BuildEnv {
        pool: pool.clone(),
        ports: vec![a.info().clone(), r1.info().clone(), r2.info().clone(), sink.info().clone()],
    };
    let spec = PipelineSpec::parse(&["macswap".to_string()], &env).unwrap();
    let mut pipe = spec.build(&env).unwrap();
    let (mut rx_a, mut rx_r2) = (a.rx_queue(0).unwrap(), r2.rx_queue(0).unwrap());
    let tx: Vec<Option<Box<dyn fastpath_pmd::TxQueue>>> =
        vec![None, Some(r1.tx_queue(0).unwrap()), None, Some(sink.tx_queue(0).unwrap())];
    let mut out = Output::new(tx, 32);
    let mut ctx = Ctx::new(0, &pool);
    let mut batch = Batch::new();
    let st = LcoreStats::default();
    let mut step = |ctx: &mut Ctx| {
        rx_a.rx_burst(ctx, &mut batch, 32);
        batch.iter_mut().for_each(|m| m.set_out_port(1));
        pipe.process(&mut batch, ctx);
        out.transmit(ctx, &mut batch, &st);
        rx_r2.rx_burst(ctx, &mut batch, 32);
        // Mixed destinations: the buffered path.
        batch.iter_mut().for_each(|m| m.set_out_port(if m.userdata() % 2 == 0 { 3 } else { 1 }));
        out.transmit(ctx, &mut batch, &st);
        out.flush(ctx, &st);
    };
    for _ in 0..1000 {
        step(&mut ctx);
    }
    let before = allocs();
    for _ in 0..100_000 {
        step(&mut ctx);
    }
    assert_eq!(allocs() - before, 0, "allocations on the forwarding path");
    assert!(st.tx_packets.get() > 1_000_000);
    drop((rx_a, rx_r2, out, ctx, pipe));

    // 2. The real runtime: two lcores-worth of tasks on one lcore thread, measured from outside.
    let mut b = NullPort::new(4, &pool, NullConfig { frame: Some(frame), ..Default::default() });
    let mut c = NullPort::new(5, &pool, NullConfig::default());
    let mut l = LcoreSpec::default();
    let p = l.add_processor(Box::new(spec.build(&env).unwrap()));
    l.add_task(b.rx_queue(0).unwrap(), p, 5);
    l.add_task(c.rx_queue(0).unwrap(), p, 4);
    l.set_tx(4, b.tx_queue(0).unwrap());
    l.set_tx(5, c.tx_queue(0).unwrap());
    let rt = Runtime::launch(vec![l], RuntimeConfig::default()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (before, pk) = (allocs(), rt.stats()[0].tx_packets.get());
    std::thread::sleep(Duration::from_millis(700));
    let (after, pk2) = (allocs(), rt.stats()[0].tx_packets.get());
    rt.join().unwrap();
    assert!(pk2 > pk, "the lcore was forwarding while the allocations were counted");
    assert_eq!(after - before, 0, "allocations while the lcore forwarded {} packets", pk2 - pk);
    drop((a, r1, r2, sink, b, c));
    assert_eq!(pool.available(), pool.capacity());
}
