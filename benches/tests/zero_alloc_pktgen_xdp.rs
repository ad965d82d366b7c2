//! Zero heap allocation while `fastpath pktgen` sends and analyses (over an in-memory loopback),
//! and on the AF_XDP fast path (rx, tx, fill refills, completions; as root on a veth pair).
//! One test per binary, so that nothing else allocates while it counts.

#[allow(dead_code)]
#[path = "../../apps/src/pktgen/gen.rs"]
mod gen;

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::af_xdp::{AfXdpConfig, AfXdpPort};
use fastpath_pmd::drivers::ring::RingPort;
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_pmd::{Ctx, Port, Processor, RxQueue, TxQueue};
use gen::{Analyzer, AnalyzerStats, FrameSpec, GenQueue};

#[global_allocator]
static ALLOCS: CountingAlloc = CountingAlloc::new();

fn allocs() -> u64 {
    ALLOCS.count()
}

struct DelLink(String);

impl Drop for DelLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Runs `n` rounds of generator -> `tx`, `rx` -> analyzer; returns the allocations made.
fn pump(
    n: usize,
    gen: &mut GenQueue,
    tx: &mut dyn TxQueue,
    rx: &mut dyn RxQueue,
    an: &mut Analyzer,
    ctx: &mut Ctx,
    b: &mut Batch,
) -> u64 {
    let before = allocs();
    for _ in 0..n {
        gen.rx_burst(ctx, b, 32);
        tx.tx_burst(ctx, b);
        ctx.free_batch(b);
        rx.rx_burst(ctx, b, 32);
        an.process(b, ctx);
    }
    allocs() - before
}

#[test]
fn pktgen_and_af_xdp_allocate_nothing() {
    let pool = Mempool::new("za", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let spec = FrameSpec { flows: 16, ..FrameSpec::default() };
    let stats = Arc::new(AnalyzerStats::default());
    let mut gen = GenQueue::new(0, &pool, &spec, 0, 0, Arc::new(AtomicBool::new(false)));
    let mut an = Analyzer::new(9, stats.clone());
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();

    // 1. pktgen: generate -> ring -> receive -> analyse.
    let (mut r1, mut r2) = RingPort::pair(0, 1, 1024);
    let (mut tx, mut rx) = (r1.tx_queue(0).unwrap(), r2.rx_queue(0).unwrap());
    pump(1000, &mut gen, tx.as_mut(), rx.as_mut(), &mut an, &mut ctx, &mut b);
    let n = pump(50_000, &mut gen, tx.as_mut(), rx.as_mut(), &mut an, &mut ctx, &mut b);
    assert_eq!(n, 0, "allocations while generating and analysing");
    assert!(stats.matched.get() > 1_000_000);
    drop((tx, rx, r1, r2));

    // 2. AF_XDP: tx on one end of a veth pair, rx on the other.
    if !fastpath_pmd::testutil::require("pktgen_and_af_xdp_allocate_nothing (AF_XDP part)", true, &["ip"]) {
        return;
    }
    let (a, z) = (format!("fpza{}", std::process::id() % 100_000), format!("fpzb{}", std::process::id() % 100_000));
    assert!(Command::new("ip")
        .args(["link", "add", &a, "type", "veth", "peer", "name", &z])
        .status()
        .unwrap()
        .success());
    let _g = DelLink(a.clone());
    for i in [&a, &z] {
        let _ = Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{i}.disable_ipv6=1")]).status();
        assert!(Command::new("ip").args(["link", "set", i, "up"]).status().unwrap().success());
    }
    let cfg = |i: &str| {
        let mut c = AfXdpConfig::new(i);
        c.ring_size = 512;
        c
    };
    let mut pa = AfXdpPort::open(0, &cfg(&a), &pool).unwrap();
    let mut pz = AfXdpPort::open(1, &cfg(&z), &pool).unwrap();
    let (mut tx, mut rx) = (pa.tx_queue(0).unwrap(), pz.rx_queue(0).unwrap());
    let mut gen = GenQueue::new(0, &pool, &spec, 0, 0, Arc::new(AtomicBool::new(false)));
    let before_matched = stats.matched.get();
    let mut an = Analyzer::new(9, stats.clone());
    pump(2000, &mut gen, tx.as_mut(), rx.as_mut(), &mut an, &mut ctx, &mut b);
    let n = pump(20_000, &mut gen, tx.as_mut(), rx.as_mut(), &mut an, &mut ctx, &mut b);
    assert_eq!(n, 0, "allocations on the AF_XDP rx/tx path");
    assert!(stats.matched.get() - before_matched > 10_000, "frames went through the veth");
    drop((tx, rx, ctx));
    drop((pa, pz));
    assert_eq!(pool.available(), pool.capacity());
}
