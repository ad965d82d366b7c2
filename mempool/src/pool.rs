//! Pools of fixed-size chunks and the per-core caches in front of them.
//!
//! A [`Mempool`] owns one [`Region`] cut into power-of-two chunks (2048 bytes by default, or
//! 4096), each starting with its [`MbufHeader`]. Free chunks wait in a lock-free MPMC [`Ring`].
//! Each lcore allocates and frees through its own [`PoolCache`] (a LIFO stack of chunk pointers
//! refilled from and flushed to the ring in bulk), so the fast path touches no shared cache line
//! but its own.
//!
//! [`Mempool::available`] counts the ring and every cache, so tests can assert that all mbufs came
//! back. A pool whose handles are all gone while chunks are still out is leaked on purpose (its
//! memory stays valid for those chunks) and logged: an mbuf never points at freed memory.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use crate::batch::Batch;
use crate::mbuf::{Mbuf, MbufHeader, MBUF_HDR_SIZE};
use crate::region::{PageKind, PagePolicy, Region};
use crate::ring::Ring;
use crate::Error;

/// A chunk pointer as it sits in the free ring or a cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct RawMbuf(pub(crate) NonNull<MbufHeader>);

// SAFETY: a free chunk pointer is just an address inside a pool region; ownership of the chunk
// moves with it.
unsafe impl Send for RawMbuf {}

/// Settings of a pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of chunks (mbufs).
    pub mbufs: u32,
    /// Chunk size: 2048 or 4096.
    pub chunk_size: u32,
    /// Page backing.
    pub pages: PagePolicy,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { mbufs: 16384, chunk_size: 2048, pages: PagePolicy::Auto }
    }
}

static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(1);

pub(crate) struct PoolInner {
    handles: AtomicUsize,
    pub(crate) id: u32,
    name: String,
    region: Region,
    chunk_size: u32,
    count: u32,
    ring: Ring<RawMbuf>,
    caches: Mutex<Vec<Arc<CachePadded<AtomicUsize>>>>,
}

impl PoolInner {
    /// Returns a released chunk to the ring of the pool it belongs to.
    pub(crate) fn put_back(c: NonNull<MbufHeader>) {
        // SAFETY: every chunk's `pool` points to its PoolInner, which outlives its chunks.
        let pool = unsafe { &*(*c.as_ptr()).pool };
        if pool.ring.enqueue(RawMbuf(c)).is_err() {
            // The ring holds every chunk of the pool, so this means a chunk was freed twice.
            log::error!("mempool {}: free ring full (double free?); chunk leaked", pool.name);
        }
    }

    fn cached(&self) -> usize {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: a statistics snapshot; each cache publishes its own length.
        caches.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// A handle to a pool of mbufs. Cloning is cheap; the pool lives until the last handle (and
/// every cache) is gone.
pub struct Mempool {
    inner: NonNull<PoolInner>,
}

// SAFETY: PoolInner is Sync (atomics, a Mutex and a lock-free ring); the handle only reads it.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.name())
            .field("mbufs", &self.capacity())
            .field("chunk_size", &self.chunk_size())
            .field("available", &self.available())
            .finish()
    }
}

impl Mempool {
    /// Creates a pool: maps its region, writes every header, fills the free ring.
    pub fn new(name: &str, cfg: &PoolConfig) -> Result<Mempool, Error> {
        if cfg.chunk_size != 2048 && cfg.chunk_size != 4096 {
            return Err(Error::Config(format!("chunk size {} is not supported: use 2048 or 4096", cfg.chunk_size)));
        }
        if cfg.mbufs < 2 {
            return Err(Error::Config(format!("a pool needs at least 2 mbufs (got {})", cfg.mbufs)));
        }
        let len = cfg.mbufs as usize * cfg.chunk_size as usize;
        let region = Region::new(len, cfg.pages)?;
        let inner = Box::new(PoolInner {
            handles: AtomicUsize::new(1),
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            region,
            chunk_size: cfg.chunk_size,
            count: cfg.mbufs,
            ring: Ring::new(cfg.mbufs as usize),
            caches: Mutex::new(Vec::new()),
        });
        let inner = NonNull::from(Box::leak(inner));
        // SAFETY: just leaked, valid until reclaimed in Drop.
        let p = unsafe { inner.as_ref() };
        let mut fill: ArrayVec<RawMbuf, 256> = ArrayVec::new();
        for i in 0..cfg.mbufs {
            // SAFETY: chunk i lies inside the region (len = mbufs * chunk_size) and is aligned to
            // the chunk size (the region is page aligned); nobody else has seen it yet.
            let h = unsafe {
                let h = p.region.base().add(i as usize * cfg.chunk_size as usize).cast::<MbufHeader>();
                MbufHeader::init(h, inner.as_ptr(), cfg.chunk_size as usize, i);
                NonNull::new_unchecked(h)
            };
            fill.push(RawMbuf(h));
            if fill.is_full() {
                p.ring.enqueue_burst(&mut fill);
            }
        }
        p.ring.enqueue_burst(&mut fill);
        debug_assert_eq!(p.ring.len(), cfg.mbufs as usize);
        Ok(Mempool { inner })
    }

    fn inner(&self) -> &PoolInner {
        // SAFETY: the inner block is valid while any handle exists (reclaimed at the last drop).
        unsafe { self.inner.as_ref() }
    }

    /// Unique id of this pool.
    pub fn id(&self) -> u32 {
        self.inner().id
    }

    /// Name given at creation.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Total number of mbufs.
    pub fn capacity(&self) -> usize {
        self.inner().count as usize
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.inner().chunk_size as usize
    }

    /// Bytes of data room per mbuf behind the default headroom.
    pub fn data_room(&self) -> usize {
        self.chunk_size() - MBUF_HDR_SIZE - crate::HEADROOM as usize
    }

    /// The pool's memory region (base and length), e.g. for registering it as an AF_XDP UMEM.
    pub fn region(&self) -> &Region {
        &self.inner().region
    }

    /// How the region is backed.
    pub fn page_kind(&self) -> PageKind {
        self.inner().region.page_kind()
    }

    /// Mbufs not in use: in the free ring or in any cache. Equal to [`Mempool::capacity`] when
    /// every mbuf came back.
    pub fn available(&self) -> usize {
        self.inner().ring.len() + self.inner().cached()
    }

    /// Mbufs currently in use.
    pub fn in_use(&self) -> usize {
        self.capacity().saturating_sub(self.available())
    }

    /// Allocates one mbuf straight from the shared ring (control path; fast paths use a cache).
    pub fn alloc(&self) -> Option<Mbuf> {
        let r = self.inner().ring.dequeue()?;
        // SAFETY: a chunk from the free ring is owned by nobody; we reset it and own it.
        unsafe {
            MbufHeader::reset(r.0.as_ptr());
            Some(Mbuf::from_raw(r.0))
        }
    }

    /// The mbuf whose chunk holds byte offset `offset` of the region (AF_XDP descriptors carry
    /// such offsets). Its header is as the owner left it.
    ///
    /// # Safety
    /// The chunk must belong to the caller (taken from this pool earlier and given to a device,
    /// now handed back), `offset` must lie in the region.
    pub unsafe fn mbuf_at(&self, offset: usize) -> Mbuf {
        let chunk = offset & !(self.chunk_size() - 1);
        // SAFETY: per the contract the offset is inside the region, so the chunk start is too,
        // and the chunk is owned by the caller.
        unsafe {
            let h = self.region().base().add(chunk).cast::<MbufHeader>();
            Mbuf::from_raw(NonNull::new_unchecked(h))
        }
    }

    /// Byte offset of an mbuf's chunk start inside the region.
    pub fn chunk_offset(&self, m: &Mbuf) -> usize {
        m.as_ptr() as usize - self.region().base() as usize
    }

    /// A handle to the pool that `m` belongs to.
    pub fn of(m: &Mbuf) -> Mempool {
        // SAFETY: a live mbuf's chunk points to its pool's control block, which is never freed
        // while a chunk is out (it is leaked instead), so it is valid to take a new handle on it.
        let inner = unsafe { NonNull::new_unchecked((*m.as_ptr()).pool.cast_mut()) };
        // SAFETY: as above.
        unsafe { inner.as_ref() }.handles.fetch_add(1, Ordering::Relaxed);
        Mempool { inner }
    }

    /// A new per-core cache for this pool.
    pub fn cache(&self) -> PoolCache {
        PoolCache::new(self.clone())
    }

    pub(crate) fn ring(&self) -> &Ring<RawMbuf> {
        &self.inner().ring
    }
}

impl Clone for Mempool {
    fn clone(&self) -> Self {
        // Relaxed: like Arc, a new handle is made from an existing one, which keeps the count > 0.
        self.inner().handles.fetch_add(1, Ordering::Relaxed);
        Mempool { inner: self.inner }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // Release/Acquire as in Arc: everything done through other handles happens before the
        // reclaim below.
        if self.inner().handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        let (home, total) = (self.inner().ring.len(), self.inner().count as usize);
        if home == total {
            // SAFETY: last handle, no cache (caches hold handles) and every chunk is in the ring:
            // nothing can reach the block any more.
            drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
        } else {
            log::warn!(
                "mempool {}: dropped with {} of {} mbufs still in use; leaking its memory",
                self.name(),
                total - home,
                total
            );
        }
    }
}

/// Chunks kept by a cache before it flushes half of them to the ring.
pub const CACHE_FLUSH: usize = 512;
/// Chunks a cache keeps after a refill or a flush.
pub const CACHE_TARGET: usize = 256;
const CACHE_CAP: usize = CACHE_FLUSH + crate::MAX_BURST;

/// A per-core cache in front of a pool: LIFO, bulk refill and flush, no atomics except one
/// relaxed store that publishes its length for [`Mempool::available`]. Dropping it returns its
/// chunks to the pool.
pub struct PoolCache {
    objs: Box<ArrayVec<RawMbuf, CACHE_CAP>>,
    published: Arc<CachePadded<AtomicUsize>>,
    pool: Mempool,
    pool_ptr: *const PoolInner,
}

// SAFETY: pool_ptr is only compared, never dereferenced through the cache; the rest is owned data
// and a Mempool handle (Send).
unsafe impl Send for PoolCache {}

impl fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCache").field("pool", &self.pool.name()).field("len", &self.objs.len()).finish()
    }
}

impl PoolCache {
    fn new(pool: Mempool) -> PoolCache {
        let published = Arc::new(CachePadded::new(AtomicUsize::new(0)));
        pool.inner().caches.lock().unwrap_or_else(|e| e.into_inner()).push(published.clone());
        let pool_ptr = pool.inner.as_ptr().cast_const();
        PoolCache { objs: Box::new(ArrayVec::new()), published, pool, pool_ptr }
    }

    /// The pool behind this cache.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// Chunks held right now.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }

    #[inline(always)]
    fn publish(&self) {
        // Relaxed: a statistics value read by `available()`; it orders nothing.
        self.published.store(self.objs.len(), Ordering::Relaxed);
    }

    #[inline]
    fn refill(&mut self, need: usize) -> bool {
        let want = (CACHE_TARGET + need).saturating_sub(self.objs.len());
        self.pool.ring().dequeue_burst(&mut self.objs, want);
        self.objs.len() >= need
    }

    /// Appends exactly `n` fresh mbufs to `batch`, or none (returns false) when the pool cannot
    /// supply them or the batch has no room.
    #[inline]
    pub fn alloc_bulk(&mut self, batch: &mut Batch, n: usize) -> bool {
        if n > batch.remaining_capacity() {
            return false;
        }
        if self.objs.len() < n && !self.refill(n) {
            self.publish();
            return false;
        }
        let start = self.objs.len() - n;
        for r in self.objs.drain(start..).rev() {
            // SAFETY: a chunk in the cache is owned by nobody; reset and hand it to a handle.
            unsafe {
                MbufHeader::reset(r.0.as_ptr());
                batch.push_unchecked(Mbuf::from_raw(r.0));
            }
        }
        self.publish();
        true
    }

    /// Allocates one mbuf. The header of the one the next call will hand out is prefetched:
    /// code that allocates one by one (segmentation) does not wait for each header in turn.
    #[inline]
    pub fn alloc(&mut self) -> Option<Mbuf> {
        if self.objs.is_empty() && !self.refill(1) {
            return None;
        }
        let r = self.objs.pop()?;
        if let Some(n) = self.objs.last() {
            crate::mbuf::prefetch_header(n.0.as_ptr());
        }
        self.publish();
        // SAFETY: as in alloc_bulk.
        unsafe {
            MbufHeader::reset(r.0.as_ptr());
            Some(Mbuf::from_raw(r.0))
        }
    }

    #[inline(always)]
    fn take_back(&mut self, c: NonNull<MbufHeader>) {
        // SAFETY: released chunks carry their pool pointer (compared, not dereferenced).
        if unsafe { (*c.as_ptr()).pool } == self.pool_ptr {
            if self.objs.is_full() {
                self.flush();
            }
            // SAFETY: not full (flushed above).
            unsafe { self.objs.push_unchecked(RawMbuf(c)) };
        } else {
            PoolInner::put_back(c);
        }
    }

    #[cold]
    fn flush(&mut self) {
        let keep = CACHE_TARGET.min(self.objs.len());
        let mut spill: ArrayVec<RawMbuf, CACHE_CAP> = self.objs.drain(keep..).collect();
        while !spill.is_empty() {
            if self.pool.ring().enqueue_burst(&mut spill) == 0 {
                log::error!("mempool {}: free ring full while flushing a cache", self.pool.name());
                break;
            }
        }
    }

    /// Frees one mbuf (its whole chain) into the cache.
    #[inline]
    pub fn free(&mut self, m: Mbuf) {
        self.free_raw(m.into_raw());
        self.publish();
    }

    #[inline(always)]
    fn free_raw(&mut self, p: NonNull<MbufHeader>) {
        let h = p.as_ptr();
        // SAFETY: we own the chain given up by the caller. Fast path: a single direct segment
        // with one reference goes straight back without touching the refcount.
        unsafe {
            if (*h).next.is_null() && (*h).shared.is_null() && (*h).refcnt.load(Ordering::Relaxed) == 1 {
                self.take_back(p);
                return;
            }
            let mut s = h;
            while !s.is_null() {
                let next = (*s).next;
                MbufHeader::release(s, &mut |c| self.take_back(c));
                s = next;
            }
        }
    }

    /// Frees every mbuf of `batch` into the cache; the batch is left empty.
    #[inline]
    pub fn free_batch(&mut self, batch: &mut Batch) {
        if self.objs.len() + batch.len() > CACHE_CAP {
            self.flush();
        }
        for m in batch.drain_all() {
            self.free_raw(m.into_raw());
        }
        if self.objs.len() > CACHE_FLUSH {
            self.flush();
        }
        self.publish();
    }

    /// Frees the mbufs of `batch` from index `from` on; the first `from` stay.
    #[inline]
    pub fn free_tail(&mut self, batch: &mut Batch, from: usize) {
        if from >= batch.len() {
            return;
        }
        if self.objs.len() + batch.len() - from > CACHE_CAP {
            self.flush();
        }
        for m in batch.drain_from(from) {
            self.free_raw(m.into_raw());
        }
        if self.objs.len() > CACHE_FLUSH {
            self.flush();
        }
        self.publish();
    }

    /// A shallow clone of `m`: a chain of indirect mbufs sharing `m`'s buffers (read-only while
    /// shared), with a copy of `m`'s metadata. `None` when the pool is empty.
    pub fn clone_shallow(&mut self, m: &Mbuf) -> Option<Mbuf> {
        let mut head: Option<Mbuf> = None;
        let mut src = m.as_ptr();
        while !src.is_null() {
            let Some(mut c) = self.alloc() else {
                if let Some(h) = head {
                    self.free(h);
                }
                return None;
            };
            // Soundness: src is a segment of m's chain (borrowed, live); c is ours. The direct header we attach
            // to gains one reference (Relaxed increment, as Arc::clone: we hold a reference through m already, so it
            // cannot reach zero meanwhile).
            // SAFETY: src is a live segment of m's chain and c is ours; the extra reference keeps it alive.
            unsafe {
                let direct = if (*src).shared.is_null() { src } else { (*src).shared };
                (*direct).refcnt.fetch_add(1, Ordering::Relaxed);
                attach(c.as_ptr(), src, direct);
                src = (*src).next;
            }
            match head.as_mut() {
                None => {
                    copy_metadata(m, &mut c);
                    head = Some(c);
                }
                Some(h) => {
                    if let Err(c) = h.chain(c) {
                        self.free(c);
                        let h = head.take()?;
                        self.free(h);
                        return None;
                    }
                }
            }
        }
        head
    }

    /// Up to `n` shallow clones of `m` (as [`PoolCache::clone_shallow`] makes them), appended
    /// to `out`; returns how many were made (fewer when `out` has no room or the pool runs
    /// dry). For a single-segment `m` (the common case when flooding) the buffer gains all its
    /// references with one atomic add instead of one per clone; a chain takes the general path.
    pub fn clone_n(&mut self, m: &Mbuf, n: usize, out: &mut Batch) -> usize {
        let n = n.min(out.remaining_capacity());
        if !m.is_contiguous() {
            let mut made = 0;
            while made < n {
                let Some(c) = self.clone_shallow(m) else { break };
                // Room was checked above.
                let _ = out.push(c);
                made += 1;
            }
            return made;
        }
        let start = out.len();
        if !self.alloc_bulk(out, n) {
            while out.len() - start < n {
                let Some(c) = self.alloc() else { break };
                let _ = out.push(c);
            }
        }
        let made = out.len() - start;
        let src = m.as_ptr();
        // SAFETY: src is m's live (single) segment, borrowed for this call.
        let direct = unsafe {
            if (*src).shared.is_null() {
                src
            } else {
                (*src).shared
            }
        };
        // Relaxed, as Arc::clone: we hold a reference through m, so the count cannot reach zero
        // meanwhile, and the clones are handed to other threads only through synchronising
        // hand-offs (rings) later. A count that would overflow makes no clones.
        // SAFETY: direct is live (m holds a reference to it); refcnt is atomic.
        let rc = unsafe { &(*direct).refcnt };
        if made == 0 || rc.load(Ordering::Relaxed) as usize + made >= u16::MAX as usize {
            self.free_tail(out, start);
            return 0;
        }
        rc.fetch_add(made as u16, Ordering::Relaxed);
        for c in out[start..].iter_mut() {
            // SAFETY: c is a fresh mbuf we own; src is m's live segment; the reference for this
            // attachment was taken by the add above.
            unsafe { attach(c.as_ptr(), src, direct) };
            copy_metadata(m, c);
        }
        made
    }

    /// A deep copy of `m` into fresh, writable mbufs (a chain when it does not fit one), with a
    /// copy of `m`'s metadata. `None` when the pool is empty.
    pub fn copy(&mut self, m: &Mbuf) -> Option<Mbuf> {
        let mut head: Option<Mbuf> = None;
        let mut seg_iter = m.segments().peekable();
        let mut cur: &[u8] = seg_iter.next().unwrap_or(&[]);
        loop {
            let Some(mut c) = self.alloc() else {
                if let Some(h) = head {
                    self.free(h);
                }
                return None;
            };
            // Fill this new segment from the source segments.
            while c.tailroom() > 0 {
                if cur.is_empty() {
                    match seg_iter.next() {
                        Some(s) => cur = s,
                        None => break,
                    }
                    continue;
                }
                let n = cur.len().min(c.tailroom());
                if let Some(dst) = c.append(n) {
                    dst.copy_from_slice(&cur[..n]);
                }
                cur = &cur[n..];
            }
            let done = cur.is_empty() && seg_iter.peek().is_none();
            match head.as_mut() {
                None => {
                    copy_metadata(m, &mut c);
                    head = Some(c);
                }
                Some(h) => {
                    if let Err(c) = h.chain(c) {
                        self.free(c);
                        let h = head.take()?;
                        self.free(h);
                        return None;
                    }
                }
            }
            if done {
                return head;
            }
        }
    }
}

/// Points the fresh header `c` at the buffer window of segment `src`, whose direct header
/// `direct` already counts the reference `c` now holds.
///
/// # Safety
/// `c` must be a fresh header owned by the caller; `src` and `direct` live headers, with one
/// reference of `direct` taken for `c`.
unsafe fn attach(c: *mut MbufHeader, src: *const MbufHeader, direct: *mut MbufHeader) {
    // SAFETY: per the contract both headers are live and `c` is ours to write.
    unsafe {
        let s = &*src;
        (*c).shared = direct;
        (*c).buf_addr = s.buf_addr;
        (*c).buf_len = s.buf_len;
        (*c).data_off = s.data_off;
        (*c).data_len = s.data_len;
        (*c).pkt_len = s.data_len as u32;
    }
}

/// Copies the per-packet metadata (not the data window) from `src` to `dst`.
pub fn copy_metadata(src: &Mbuf, dst: &mut Mbuf) {
    dst.set_ol_flags(src.ol_flags());
    dst.set_port(src.port());
    dst.set_queue(src.queue());
    dst.set_out_port(src.out_port());
    dst.set_packet_type(src.packet_type());
    dst.set_rss_hash(src.rss_hash());
    dst.set_vlan_tci(src.vlan_tci());
    dst.set_vlan_tci_outer(src.vlan_tci_outer());
    dst.set_tso_segsz(src.tso_segsz());
    dst.set_l2_len(src.l2_len());
    dst.set_l3_len(src.l3_len());
    dst.set_l4_len(src.l4_len());
    dst.set_outer_l2_len(src.outer_l2_len());
    dst.set_outer_l3_len(src.outer_l3_len());
    dst.set_timestamp(src.timestamp());
    dst.set_userdata(src.userdata());
    dst.set_segment(src.segment());
    dst.set_dest(src.dest());
    dst.set_disposition(src.disposition());
}

impl Drop for PoolCache {
    fn drop(&mut self) {
        let mut rest: ArrayVec<RawMbuf, CACHE_CAP> = self.objs.drain(..).collect();
        while !rest.is_empty() {
            if self.pool.ring().enqueue_burst(&mut rest) == 0 {
                log::error!("mempool {}: free ring full while dropping a cache", self.pool.name());
                break;
            }
        }
        let mut caches = self.pool.inner().caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|c| !Arc::ptr_eq(c, &self.published));
    }
}
