//! Pool cache bulk alloc + free of 32 mbufs, and the same through the shared ring (no cache).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};

fn pool() -> Mempool {
    Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap()
}

fn bulk(c: &mut Criterion) {
    let p = pool();
    let mut g = c.benchmark_group("mempool");
    g.throughput(Throughput::Elements(32));
    let mut cache = p.cache();
    let mut b = Batch::new();
    g.bench_function("cache_alloc_free_bulk_32", |bn| {
        bn.iter(|| {
            assert!(cache.alloc_bulk(&mut b, 32));
            cache.free_batch(&mut b);
        })
    });
    g.bench_function("ring_alloc_free_32", |bn| {
        bn.iter(|| {
            for _ in 0..32 {
                let _ = b.push(p.alloc().unwrap());
            }
            b.drain_all().for_each(drop);
        })
    });
    g.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
