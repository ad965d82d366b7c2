//! Ring enqueue + dequeue of bursts of 32 pointers: MPMC and SPSC, same thread.

use arrayvec::ArrayVec;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::ring::{spsc, Ring};

fn rings(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(32));
    let r: Ring<usize> = Ring::new(1024);
    let mut buf: ArrayVec<usize, 32> = (0..32).collect();
    g.bench_function("mpmc_enqueue_dequeue_bulk_32", |b| {
        b.iter(|| {
            assert_eq!(r.enqueue_bulk(&mut buf), 32);
            assert_eq!(r.dequeue_bulk(&mut buf, 32), 32);
        })
    });
    let (mut tx, mut rx) = spsc::channel::<usize>(1024);
    g.bench_function("spsc_enqueue_dequeue_bulk_32", |b| {
        b.iter(|| {
            assert_eq!(tx.enqueue_bulk(&mut buf), 32);
            assert_eq!(rx.dequeue_bulk(&mut buf, 32), 32);
        })
    });
    g.finish();
}

criterion_group!(benches, rings);
criterion_main!(benches);
