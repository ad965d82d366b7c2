//! The vhost-user virtqueue data paths against a fake guest in memory: a burst of 32 64-byte
//! packets dequeued from a guest TX ring (guest TX -> mbufs) and enqueued into a guest RX ring
//! (mbufs -> guest RX, mergeable buffers), as the io loopback does it, over split rings and over
//! packed rings (RING_PACKED). Each iteration also does the guest's share (re-posting 32 buffers
//! on each ring through checked writes).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_vhost_user::net;
use fastpath_vhost_user::packed::PackedQueue;
use fastpath_vhost_user::queue::{QueueFeatures, SplitQueue, VringStats};
use fastpath_vhost_user::testutil::{Buf, FakeGuest, FakePackedRing, FakeRing, GPA_BASE};

const SIZE: u16 = 1024;
const BURST: u16 = 32;

fn vhost_queue(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 4096, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut cache = pool.cache();
    let g = FakeGuest::new(8 << 20);
    let mut txr = FakeRing::new(&g, GPA_BASE, SIZE);
    let mut rxr = FakeRing::new(&g, GPA_BASE + 0x40000, SIZE);
    let bufs = GPA_BASE + 0x100000;
    let feat = QueueFeatures::from_bits(
        net::VIRTIO_F_VERSION_1 | net::VIRTIO_NET_F_MRG_RXBUF | net::VIRTIO_RING_F_INDIRECT_DESC,
    );
    let frame = {
        let mut f = vec![0u8; 64];
        f[12] = 0x08;
        f
    };
    // Every descriptor of both rings set up once, like a driver's.
    for i in 0..SIZE {
        let b = bufs + 2048 * i as u64;
        g.write(b, &[0u8; 12]);
        g.write(b + 12, &frame);
        txr.set_desc(&g, i, fastpath_vhost_user::ring::Desc { addr: b, len: 76, flags: 0, next: 0 });
        rxr.set_desc(
            &g,
            i,
            fastpath_vhost_user::ring::Desc {
                addr: b + 0x200000 * 2,
                len: 2048,
                flags: fastpath_vhost_user::ring::VIRTQ_DESC_F_WRITE,
                next: 0,
            },
        );
    }
    let mut txq = SplitQueue::new(txr.split(&g.mem), 0, feat, None);
    let mut rxq = SplitQueue::new(rxr.split(&g.mem), 0, feat, None);
    let st = VringStats::default();
    let mut batch = Batch::new();
    let mut gr = c.benchmark_group("vhost_queue");
    gr.throughput(Throughput::Elements(BURST as u64));
    gr.bench_function("loopback_burst_32_64B", |bn| {
        bn.iter(|| {
            // The driver re-posts the same 32 buffers (warm in cache, as a driver's recycled
            // mbufs mostly are).
            for i in 0..BURST {
                txr.push(&g, i);
                rxr.push(&g, i);
            }
            let (n, _) = txq.dequeue_burst(&g.mem, &mut cache, &mut batch, 32, (0, 0), &st);
            let (m, _) = rxq.enqueue_burst(&g.mem, &mut cache, &mut batch, &st);
            assert_eq!((n, m), (32, 32));
            txr.used_seen = txr.used_idx(&g);
            rxr.used_seen = rxr.used_idx(&g);
            n
        })
    });
    gr.finish();
}

/// The same loopback burst over two packed rings (RING_PACKED): the driver re-posts 32
/// descriptors on each ring per iteration (a packed driver rewrites every descriptor it posts).
fn vhost_queue_packed(c: &mut Criterion) {
    let pool =
        Mempool::new("bench-packed", &PoolConfig { mbufs: 4096, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut cache = pool.cache();
    let g = FakeGuest::new(8 << 20);
    let mut txr = FakePackedRing::new(&g, GPA_BASE, SIZE);
    let mut rxr = FakePackedRing::new(&g, GPA_BASE + 0x40000, SIZE);
    let bufs = GPA_BASE + 0x100000;
    let feat = QueueFeatures::from_bits(
        net::VIRTIO_F_VERSION_1
            | net::VIRTIO_F_RING_PACKED
            | net::VIRTIO_NET_F_MRG_RXBUF
            | net::VIRTIO_RING_F_INDIRECT_DESC,
    );
    let frame = {
        let mut f = vec![0u8; 64];
        f[12] = 0x08;
        f
    };
    for i in 0..BURST as u64 {
        let b = bufs + 2048 * i;
        g.write(b, &[0u8; 12]);
        g.write(b + 12, &frame);
    }
    let mut txq = PackedQueue::new(txr.packed(&g.mem), txr.base(), feat, None);
    let mut rxq = PackedQueue::new(rxr.packed(&g.mem), rxr.base(), feat, None);
    let st = VringStats::default();
    let mut batch = Batch::new();
    let mut gr = c.benchmark_group("vhost_queue");
    gr.throughput(Throughput::Elements(BURST as u64));
    gr.bench_function("packed_loopback_burst_32_64B", |bn| {
        bn.iter(|| {
            for i in 0..BURST {
                let b = bufs + 2048 * i as u64;
                txr.post(&g, i, &[Buf { addr: b, len: 76, write: false }]);
                rxr.post(&g, i, &[Buf { addr: b + 0x400000, len: 2048, write: true }]);
            }
            let (n, _) = txq.dequeue_burst(&g.mem, &mut cache, &mut batch, 32, (0, 0), &st);
            let (m, _) = rxq.enqueue_burst(&g.mem, &mut cache, &mut batch, &st);
            assert_eq!((n, m), (32, 32));
            // Every chain came back (one descriptor each): the driver's used position follows.
            txr.forget_used();
            rxr.forget_used();
            n
        })
    });
    gr.finish();
}

criterion_group!(benches, vhost_queue, vhost_queue_packed);
criterion_main!(benches);
