//! One io-forwarding iteration over null ports (rx burst of 32, tx burst), as the lcore loop
//! does it, without the thread: the per-packet cost of the framework. Three variants of the
//! transmit side: the whole burst to one port (sent at once), the burst spread over four ports
//! (the output buffers, flushed once per iteration as the loop does), and one port through a
//! shared transmit queue handle (`txshare`: the lock taken, uncontended).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::lcore::{LcoreStats, Output};
use fastpath_pmd::{Ctx, Port, TxQueue};

fn null_io(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut a = NullPort::new(0, &pool, NullConfig::default());
    let mut rx = a.rx_queue(0).unwrap();
    let two = NullConfig { queues: 2, ..Default::default() };
    let mut sinks: Vec<NullPort> = (1..=4).map(|i| NullPort::new(i, &pool, two.clone())).collect();
    let mut ctx = Ctx::new(0, &pool);
    let mut batch = Batch::new();
    let st = LcoreStats::default();
    let mut g = c.benchmark_group("null_io");
    g.throughput(Throughput::Elements(32));

    let tx: Vec<Option<Box<dyn TxQueue>>> = vec![None, Some(sinks[0].tx_queue(0).unwrap())];
    let mut out = Output::new(tx, 32);
    g.bench_function("rx_tx_burst_32", |bn| {
        bn.iter(|| {
            let n = rx.rx_burst(&mut ctx, &mut batch, 32);
            for m in batch.iter_mut() {
                m.set_out_port(1);
            }
            out.transmit(&mut ctx, &mut batch, &st);
            out.flush(&mut ctx, &st);
            n
        })
    });
    drop(out);

    let mut tx: Vec<Option<Box<dyn TxQueue>>> = vec![None];
    for s in sinks.iter_mut() {
        tx.push(Some(s.tx_queue(1).unwrap()));
    }
    let mut out = Output::new(tx, 32);
    g.bench_function("rx_tx_burst_32_over_4_ports", |bn| {
        bn.iter(|| {
            let n = rx.rx_burst(&mut ctx, &mut batch, 32);
            for (i, m) in batch.iter_mut().enumerate() {
                m.set_out_port(1 + (i % 4) as u16);
            }
            out.transmit(&mut ctx, &mut batch, &st);
            out.flush(&mut ctx, &st);
            n
        })
    });
    drop(out);

    let mut b = NullPort::new(5, &pool, NullConfig::default());
    let mut handles = fastpath_pmd::txshare::share(b.tx_queue(0).unwrap(), 2);
    let _other = handles.pop();
    let tx: Vec<Option<Box<dyn TxQueue>>> = vec![None, handles.pop()];
    let mut out = Output::new(tx, 32);
    g.bench_function("rx_tx_burst_32_shared_txq", |bn| {
        bn.iter(|| {
            let n = rx.rx_burst(&mut ctx, &mut batch, 32);
            for m in batch.iter_mut() {
                m.set_out_port(1);
            }
            out.transmit(&mut ctx, &mut batch, &st);
            out.flush(&mut ctx, &st);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, null_io);
criterion_main!(benches);
