//! The per-lcore context every rx, stage and tx call receives.

use std::fmt;

use fastpath_mempool::{Batch, Mbuf, Mempool, PoolCache};
use smallvec::SmallVec;

/// What one lcore owns for the fast path: a cache per pool it allocates from, and a scratch
/// batch for drops. Nothing in it is shared; nothing in its fast-path methods allocates (a
/// cache is created the first time a pool is used, during warm-up).
pub struct Ctx {
    caches: SmallVec<[PoolCache; 2]>,
    /// The lcore index (0-based position in the runtime), or 0 outside a runtime.
    pub lcore: usize,
    /// Scratch batch for stages that drop: fill it, then [`Ctx::free_drops`].
    pub drops: Batch,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("lcore", &self.lcore).field("caches", &self.caches.len()).finish()
    }
}

impl Ctx {
    /// A context for lcore `lcore`, with a cache for `pool`.
    pub fn new(lcore: usize, pool: &Mempool) -> Ctx {
        let mut c = Ctx { caches: SmallVec::new(), lcore, drops: Batch::new() };
        c.caches.push(pool.cache());
        c
    }

    /// A context with no cache yet (one is made for each pool on first use).
    pub fn empty(lcore: usize) -> Ctx {
        Ctx { caches: SmallVec::new(), lcore, drops: Batch::new() }
    }

    /// The cache for `pool`, made on first use.
    #[inline(always)]
    pub fn cache(&mut self, pool: &Mempool) -> &mut PoolCache {
        let id = pool.id();
        let i = match self.caches.iter().position(|c| c.pool().id() == id) {
            Some(i) => i,
            None => self.add_cache(pool),
        };
        &mut self.caches[i]
    }

    #[cold]
    fn add_cache(&mut self, pool: &Mempool) -> usize {
        self.caches.push(pool.cache());
        self.caches.len() - 1
    }

    /// The first (default) cache, if any.
    #[inline(always)]
    pub fn default_cache(&mut self) -> Option<&mut PoolCache> {
        self.caches.first_mut()
    }

    /// The cache that frees go to: the first one, made from the pool of `m` when there is none
    /// yet (an lcore that only receives from rings allocates nothing but still frees).
    #[inline(always)]
    fn free_cache(&mut self, m: &Mbuf) -> &mut PoolCache {
        if self.caches.is_empty() {
            self.add_cache(&Mempool::of(m));
        }
        &mut self.caches[0]
    }

    /// Frees every mbuf of `batch` into this lcore's cache (mbufs of another pool go straight
    /// back to their own pool's ring).
    #[inline]
    pub fn free_batch(&mut self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let c = self.free_cache(&batch[0]);
        c.free_batch(batch);
    }

    /// Frees the mbufs of `batch` from index `from` on.
    #[inline]
    pub fn free_tail(&mut self, batch: &mut Batch, from: usize) {
        if from >= batch.len() {
            return;
        }
        let c = self.free_cache(&batch[from]);
        c.free_tail(batch, from);
    }

    /// Frees one mbuf.
    #[inline]
    pub fn free(&mut self, m: Mbuf) {
        self.free_cache(&m).free(m);
    }

    /// Frees what stages put in [`Ctx::drops`].
    #[inline]
    pub fn free_drops(&mut self) {
        if self.drops.is_empty() {
            return;
        }
        let mut d = std::mem::take(&mut self.drops);
        self.free_batch(&mut d);
        self.drops = d;
    }
}
