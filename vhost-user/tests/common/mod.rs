//! Helpers shared by the data-path tests of both ring layouts (`virtqueue.rs`: split,
//! `packed.rs`: packed): a device queue over a fake guest with its pool, frames, eventfds.
// Each test crate uses its own subset.
#![allow(dead_code)]

use std::os::fd::FromRawFd;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolCache, PoolConfig};
use fastpath_vhost_user::queue::{DropReason, GuestError, VirtQueue, VringStats};
use fastpath_vhost_user::testutil::FakeGuest;

/// A pool of 512 mbufs of 2 KiB.
pub fn pool() -> Mempool {
    Mempool::new("vq-test", &PoolConfig { mbufs: 512, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

/// An IPv4-typed frame of `len` bytes whose content depends on `tag`.
pub fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(tag)).collect();
    f[12] = 0x08;
    f[13] = 0x00;
    f
}

/// A non-blocking eventfd (the call fd a frontend gives).
pub fn eventfd() -> std::fs::File {
    // SAFETY: a fresh eventfd that the File owns.
    unsafe { std::fs::File::from_raw_fd(libc::eventfd(0, libc::EFD_NONBLOCK)) }
}

/// Calls counted on `f` since the last read (the eventfd sums them).
pub fn read_count(f: &std::fs::File) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let mut f = f;
    f.read(&mut b).map(|_| u64::from_ne_bytes(b)).unwrap_or(0)
}

/// A device queue over a fake guest whose driver side is `R`, with its pool.
pub struct Rig<R> {
    pub g: FakeGuest,
    pub r: R,
    pub q: VirtQueue,
    pub st: VringStats,
    pub pool: Mempool,
    pub cache: PoolCache,
}

impl<R> Rig<R> {
    /// A rig of `q` over `g` and its driver `r`.
    pub fn of(g: FakeGuest, r: R, q: VirtQueue) -> Rig<R> {
        let pool = pool();
        let cache = pool.cache();
        Rig { g, r, q, st: VringStats::default(), pool, cache }
    }

    pub fn dequeue(&mut self, b: &mut Batch) -> usize {
        self.q.dequeue_burst(&self.g.mem, &mut self.cache, b, 32, (3, 1), &self.st).0
    }

    pub fn enqueue(&mut self, b: &mut Batch) -> usize {
        self.q.enqueue_burst(&self.g.mem, &mut self.cache, b, &self.st).0
    }

    /// Appends a packet holding `f` to `b`.
    pub fn push_pkt(&mut self, b: &mut Batch, f: &[u8]) {
        let mut m = self.pool.alloc().unwrap();
        m.append(f.len()).unwrap().copy_from_slice(f);
        b.push(m).unwrap();
    }

    /// Frees `b` and checks that every mbuf is back in the pool.
    pub fn finish(mut self, b: &mut Batch) {
        self.cache.free_batch(b);
        drop(self.cache);
        assert_eq!(self.pool.available(), self.pool.capacity(), "every mbuf is back in the pool");
    }

    pub fn err(&self, e: GuestError) -> u64 {
        self.st.guest_errors[e as usize].get()
    }

    pub fn drops(&self, d: DropReason) -> u64 {
        self.st.drops[d as usize].get()
    }
}
