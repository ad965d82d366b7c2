//! The data path allocates nothing, calls included: delivered, skipped (full counter) and the
//! call watchdog's marks. One test in this binary, because the allocator counts every thread.

use std::io::Write;
use std::os::fd::AsRawFd;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_vhost_user::net;
use fastpath_vhost_user::queue::{QueueFeatures, SplitQueue, VringStats};
use fastpath_vhost_user::testutil::{FakeGuest, FakeRing, GPA_BASE};

#[global_allocator]
static A: CountingAlloc = CountingAlloc::new();

#[test]
fn bursts_with_calls_allocate_nothing() {
    let g = FakeGuest::new(1 << 20);
    let mut r = FakeRing::new(&g, GPA_BASE, 64);
    let pool = Mempool::new("za", &PoolConfig { mbufs: 512, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let mut cache = pool.cache();
    let st = VringStats::default();
    // SAFETY: a fresh eventfd that the File owns.
    let efd = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::eventfd(0, libc::EFD_NONBLOCK)) };
    let mut q =
        SplitQueue::new(r.split(&g.mem), 0, QueueFeatures::from_bits(net::VIRTIO_F_VERSION_1), Some(efd.as_raw_fd()));
    let mut b = Batch::new();
    let hdr = [0u8; 12];
    let frame = [0x5au8; 64];
    let burst = |r: &mut FakeRing, q: &mut SplitQueue, b: &mut Batch, cache: &mut fastpath_mempool::PoolCache| {
        for _ in 0..8 {
            let d = r.avail_idx % r.size;
            r.tx_one(&g, d, GPA_BASE + 0x10000 + 0x800 * d as u64, &hdr, &frame);
        }
        let n = q.dequeue_burst(&g.mem, cache, b, 32, (0, 0), &st).0;
        cache.free_batch(b);
        // The driver takes its buffers back (reading used.idx into an array: the FakeRing
        // helpers build Vecs).
        let mut idx = [0u8; 2];
        assert!(g.mem.read(r.used + 2, &mut idx));
        r.used_seen = u16::from_le_bytes(idx);
        n
    };
    // Warm up (first call on this thread caches its id), then count.
    assert_eq!(burst(&mut r, &mut q, &mut b, &mut cache), 8);
    let before = A.thread_count();
    for _ in 0..50 {
        assert_eq!(burst(&mut r, &mut q, &mut b, &mut cache), 8);
    }
    // The counter full: skipped calls, still nothing allocated.
    (&efd).write_all(&(u64::MAX - 1 - st.calls.get()).to_ne_bytes()).unwrap();
    for _ in 0..50 {
        assert_eq!(burst(&mut r, &mut q, &mut b, &mut cache), 8);
    }
    let allocs = A.thread_count() - before;
    assert!(st.calls.get() >= 50 && st.calls_skipped.get() >= 49, "{} {}", st.calls.get(), st.calls_skipped.get());
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
    assert_eq!(allocs, 0, "allocations on the data path");
}
