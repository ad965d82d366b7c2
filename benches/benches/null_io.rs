//! One io-forwarding iteration over two null ports (rx burst of 32, tx burst), as the lcore
//! loop does it, without the thread: the per-packet cost of the framework.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::lcore::{transmit, LcoreStats};
use fastpath_pmd::{Ctx, Port};

fn null_io(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut a = NullPort::new(0, &pool, NullConfig::default());
    let mut b = NullPort::new(1, &pool, NullConfig::default());
    let mut rx = a.rx_queue(0).unwrap();
    let mut tx = vec![None, Some(b.tx_queue(0).unwrap())];
    let mut ctx = Ctx::new(0, &pool);
    let (mut batch, mut scratch) = (Batch::new(), Batch::new());
    let st = LcoreStats::default();
    let mut g = c.benchmark_group("null_io");
    g.throughput(Throughput::Elements(32));
    g.bench_function("rx_tx_burst_32", |bn| {
        bn.iter(|| {
            let n = rx.rx_burst(&mut ctx, &mut batch, 32);
            for m in batch.iter_mut() {
                m.set_out_port(1);
            }
            transmit(&mut tx, &mut ctx, &mut batch, &mut scratch, &st);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, null_io);
criterion_main!(benches);
