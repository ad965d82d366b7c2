//! The switch's FDB and the whole switch, per packet, as the table grows (1, 1k, 100k, 1M MACs):
//!
//! - `fdb/lookup_batch_32/N`: 32 random keys hashed and both buckets of each prefetched, then
//!   looked up (what the switch does per burst);
//! - `fdb/lookup_single/N`: the same keys looked up one after the other, no prefetch;
//! - `switch/unicast_burst_32/N`: the whole switch processor on bursts of 32 64-byte frames
//!   (null rx copying the frame, MACs set from a counter over the N MACs, learn + forward,
//!   null tx freeing): the `switch-*` bench pipelines without the lcore loop;
//! - `switch/vxlan_encap_burst_32`, `switch/vxlan_decap_burst_32`: VM -> VTEP and back;
//! - `switch/io_burst_32`: the same rx and tx with nothing between them (the yardstick).
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a shared machine
//! it still measures what the code costs, not how often the scheduler ran it.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_benches::switch::pipelines;
use fastpath_benches::{example_frame, BenchPipeline, BuiltProcessors};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::switch::fdb::{key, Entry, Fdb, Place};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::lcore::{LcoreStats, Output};
use fastpath_pmd::{Ctx, Passthrough, Port, Processor, RxQueue};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const SIZES: [usize; 4] = [1, 1_000, 100_000, 1_000_000];

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x10, b[0], b[1], b[2], b[3]]
}

/// A table of `n` MACs and 65536 of its keys in a scrambled order.
fn table(n: usize) -> (std::sync::Arc<Fdb>, Vec<u64>) {
    let (fdb, mut w) = Fdb::new(n).unwrap();
    for i in 0..n as u32 {
        w.insert(Entry { key: key(0, &mac(i)), place: Place::port((i % 8) as u16), seen: 0 }).unwrap();
    }
    std::mem::forget(w);
    let keys = (0..65536u64).map(|i| key(0, &mac((i.wrapping_mul(2_654_435_761) % n as u64) as u32))).collect();
    (fdb, keys)
}

/// Looks up 32 keys per iteration, walking `keys`: hashed and both buckets prefetched first
/// (`batched`, as the switch does), or one after the other.
fn run_lookups(fdb: &Fdb, keys: &[u64], batched: bool, iters: u64) -> Duration {
    let mut at = 0usize;
    let mut hits = 0u64;
    let t0 = cpu_time();
    for _ in 0..iters {
        let ks = &keys[at..at + 32];
        if batched {
            let bs: [_; 32] = std::array::from_fn(|i| fdb.hash(ks[i]));
            bs.iter().for_each(|b| fdb.prefetch(*b));
            for (k, b) in ks.iter().zip(bs) {
                hits += fdb.lookup_at(*k, b).is_some() as u64;
            }
        } else {
            for k in ks {
                hits += fdb.lookup(*k).is_some() as u64;
            }
        }
        at = (at + 32) % keys.len();
    }
    let t = cpu_time() - t0;
    assert_eq!(hits, iters * 32, "every key is in the table");
    t
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(32));
    for n in SIZES {
        let (fdb, keys) = table(n);
        for (what, batched) in [("lookup_batch_32", true), ("lookup_single", false)] {
            g.bench_function(format!("{what}/{n}"), |b| {
                b.iter_custom(|iters| run_lookups(&fdb, &keys, batched, iters))
            });
        }
    }
    g.finish();
}

/// One bench pipeline's processor between two null ports, with what it runs on.
struct Rig {
    processor: Box<dyn Processor>,
    drops: Box<dyn Fn() -> u64 + Send>,
    rx: Box<dyn RxQueue>,
    out: Output,
    ctx: Ctx,
    batch: Batch,
    st: LcoreStats,
}

impl Rig {
    /// The rig of the `switch*` pipeline `name`, or of plain io for "".
    fn new(pool: &Mempool, name: &str) -> Rig {
        let io = BenchPipeline { frame: Some(example_frame(64).into()), ..BenchPipeline::default() };
        let p = pipelines().into_iter().find(|p| p.name == name).unwrap_or(io);
        let ncfg = NullConfig { frame: p.frame.clone(), ..NullConfig::default() };
        let mut a = NullPort::new(0, pool, ncfg.clone());
        let mut b = NullPort::new(1, pool, ncfg);
        let built = match p.processors {
            Some(build) => build(pool, &[a.info().clone(), b.info().clone()]).unwrap(),
            None => BuiltProcessors { processors: vec![Box::new(Passthrough)], drops: Box::new(|| 0) },
        };
        Rig {
            processor: built.processors.into_iter().next().unwrap(),
            drops: built.drops,
            rx: a.rx_queue(0).unwrap(),
            out: Output::new(vec![Some(a.tx_queue(0).unwrap()), Some(b.tx_queue(0).unwrap())], 32),
            ctx: Ctx::new(0, pool),
            batch: Batch::new(),
            st: LcoreStats::default(),
        }
    }

    /// `iters` bursts of 32: receive, switch, transmit; the thread's CPU time they took.
    fn run(&mut self, iters: u64) -> Duration {
        let t0 = cpu_time();
        for _ in 0..iters {
            self.rx.rx_burst(&mut self.ctx, &mut self.batch, 32);
            self.batch.iter_mut().for_each(|m| m.set_out_port(1));
            self.processor.process(&mut self.batch, &mut self.ctx);
            self.out.transmit(&mut self.ctx, &mut self.batch, &self.st);
            while self.processor.resume(&mut self.batch, &mut self.ctx) {
                self.out.transmit(&mut self.ctx, &mut self.batch, &self.st);
            }
            self.out.flush(&mut self.ctx, &self.st);
        }
        cpu_time() - t0
    }
}

/// The switch bench pipelines' processors on bursts from a null port, transmitted to another
/// (each built only when its bench runs: the 1M table takes a while to fill).
fn switch(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(32));
    let cases = [
        ("", "io_burst_32"),
        ("switch", "unicast_burst_32/2"),
        ("switch-1k", "unicast_burst_32/1000"),
        ("switch-100k", "unicast_burst_32/100000"),
        ("switch-1m", "unicast_burst_32/1000000"),
        ("switch-vxlan-encap", "vxlan_encap_burst_32"),
        ("switch-vxlan-decap", "vxlan_decap_burst_32"),
    ];
    for (pipeline, name) in cases {
        let mut rig: Option<Rig> = None;
        g.bench_function(name, |bn| {
            let r = rig.get_or_insert_with(|| Rig::new(&pool, pipeline));
            bn.iter_custom(|iters| r.run(iters))
        });
        if let Some(r) = rig {
            assert_eq!((r.drops)(), 0, "{pipeline}: the switch dropped packets");
            assert!(r.st.tx_packets.get() > 0, "{pipeline}: nothing was sent");
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = lookups, switch
}
criterion_main!(benches);
