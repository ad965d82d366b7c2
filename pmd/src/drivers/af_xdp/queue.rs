//! The AF_XDP receive and transmit queues: the fast path.
//!
//! Receive: descriptors from the rx ring become mbufs in place ([`Mempool::mbuf_at`] plus
//! [`fastpath_mempool::Mbuf::set_window`]); the fill ring is topped up from the lcore's pool cache
//! in batches, so that the kernel holds at most `ring_size` chunks of this queue.
//!
//! Transmit: an mbuf of the UMEM's pool that is a single, unshared segment is posted by address
//! and comes back through the completion ring, where it is freed to the lcore's cache. Any other
//! mbuf (another pool, a chain, a clone sharing its buffer) is copied into a fresh chunk, counted
//! in `tx_copies`, and the original is freed: DPDK's net_af_xdp does the same for foreign mbufs.
//! A frame larger than a chunk's data room cannot be sent and is dropped and counted.

use std::sync::Arc;

use arrayvec::ArrayVec;
use fastpath_mempool::{Batch, Mempool, MAX_BURST, MBUF_HDR_SIZE};

use super::ring::{ConsRing, ProdRing, XdpDesc};
use super::xsk::{ChunkSet, Xsk};
use super::Shared;
use crate::ctx::Ctx;
use crate::port::{RxQueue, TxQueue};
use crate::stats::{Counter, QueueStats};

/// Fill-ring refills happen when at least this many slots are missing.
const REFILL_BATCH: usize = 32;

/// Counters of one queue beyond [`QueueStats`].
#[derive(Debug, Default)]
pub struct XdpQueueCounters {
    /// Mbufs copied into a UMEM chunk before transmit.
    pub tx_copies: Counter,
    /// Frames too large for one chunk (dropped).
    pub tx_oversize: Counter,
    /// Wakeup syscalls made (`sendto` / `recvfrom`).
    pub wakeups: Counter,
    /// Receive descriptors outside the UMEM (dropped; never expected from the kernel).
    pub rx_bad_desc: Counter,
    /// Polls in which the pool could not refill the fill ring.
    pub rx_no_mbuf: Counter,
}

/// Receive side of one AF_XDP socket.
pub struct XskRx {
    pub(super) xsk: Arc<Xsk>,
    pub(super) _shared: Arc<Shared>,
    pub(super) rx: ConsRing<XdpDesc>,
    pub(super) fill: ProdRing<u64>,
    pub(super) pool: Mempool,
    pub(super) owned: ChunkSet,
    pub(super) target: usize,
    pub(super) scratch: Batch,
    pub(super) port: u16,
    pub(super) queue: u16,
    pub(super) busy_poll: bool,
    pub(super) stats: Arc<QueueStats>,
    pub(super) counters: Arc<XdpQueueCounters>,
}

impl std::fmt::Debug for XskRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskRx").field("queue", &self.queue).field("owned", &self.owned.len()).finish()
    }
}

impl XskRx {
    /// Posts fresh chunks to the fill ring until the kernel holds `target` of this queue's.
    #[inline]
    fn refill(&mut self, ctx: &mut Ctx) {
        let missing = self.target.saturating_sub(self.owned.len());
        if missing < REFILL_BATCH {
            return;
        }
        let n = self.fill.reserve(missing.min(MAX_BURST) as u32) as usize;
        if n == 0 {
            return;
        }
        if !ctx.cache(&self.pool).alloc_bulk(&mut self.scratch, n) {
            self.counters.rx_no_mbuf.inc();
            return;
        }
        let cs = self.pool.chunk_size();
        for (i, m) in self.scratch.drain_all().enumerate() {
            let off = self.pool.chunk_offset(&m);
            self.owned.insert(off / cs);
            // The kernel owns the chunk now; it comes back through the rx ring (or at close).
            let _ = m.into_raw();
            self.fill.write(i as u32, off as u64);
        }
        self.fill.commit(n as u32);
    }
}

/// Fills a fill ring at start (control path), straight from the pool, recording the chunks.
pub(super) fn prefill(fill: &mut ProdRing<u64>, pool: &Mempool, owned: &mut ChunkSet, target: usize) {
    let n = fill.reserve(target as u32);
    let mut k = 0;
    let cs = pool.chunk_size();
    while k < n {
        let Some(m) = pool.alloc() else { break };
        let off = pool.chunk_offset(&m);
        owned.insert(off / cs);
        // The kernel owns the chunk now; it comes back through the rx ring (or at close).
        let _ = m.into_raw();
        fill.write(k, off as u64);
        k += 1;
    }
    fill.commit(k);
}

impl RxQueue for XskRx {
    #[inline]
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let want = max.min(batch.remaining_capacity()) as u32;
        let n = self.rx.peek(want);
        if n == 0 {
            self.refill(ctx);
            if self.busy_poll || self.fill.needs_wakeup() {
                self.counters.wakeups.inc();
                self.xsk.kick_rx();
            }
            return 0;
        }
        let cs = self.pool.chunk_size();
        let limit = self.pool.capacity() * cs;
        let mut bytes = 0u64;
        let mut got = 0usize;
        for i in 0..n {
            let d = self.rx.read(i);
            let addr = d.addr as usize;
            let chunk = addr & !(cs - 1);
            if addr >= limit || addr - chunk < MBUF_HDR_SIZE || !self.owned.remove(chunk / cs) {
                self.counters.rx_bad_desc.inc();
                continue;
            }
            // Soundness: the chunk is one of this pool's (inside the first capacity * chunk_size bytes of its
            // region) and was handed to the kernel by this queue (it was in `owned`), which now gives it back through
            // the rx ring.
            // SAFETY: the chunk is one of this pool's and the kernel gave back the one we lent it.
            let mut m = unsafe { self.pool.mbuf_at(chunk) };
            if !m.set_window(addr - chunk - MBUF_HDR_SIZE, d.len as usize) {
                self.counters.rx_bad_desc.inc();
                ctx.free(m);
                continue;
            }
            m.set_port(self.port);
            m.set_queue(self.queue);
            bytes += d.len as u64;
            got += 1;
            // SAFETY: at most `want` <= remaining capacity mbufs are pushed.
            unsafe { batch.push_unchecked(m) };
        }
        self.rx.release(n);
        self.refill(ctx);
        self.stats.packets.add(got as u64);
        self.stats.bytes.add(bytes);
        got
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }

    fn port_id(&self) -> u16 {
        self.port
    }

    fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl Drop for XskRx {
    fn drop(&mut self) {
        let mut v = Vec::with_capacity(self.owned.len());
        self.owned.drain_into(&mut v);
        self.xsk.reclaim.lock().unwrap_or_else(|e| e.into_inner()).extend(v);
    }
}

/// Transmit side of one AF_XDP socket.
pub struct XskTx {
    pub(super) xsk: Arc<Xsk>,
    pub(super) _shared: Arc<Shared>,
    pub(super) tx: ProdRing<XdpDesc>,
    pub(super) comp: ConsRing<u64>,
    pub(super) pool: Mempool,
    pub(super) owned: ChunkSet,
    pub(super) done: Batch,
    pub(super) busy_poll: bool,
    pub(super) stats: Arc<QueueStats>,
    pub(super) counters: Arc<XdpQueueCounters>,
}

impl std::fmt::Debug for XskTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskTx").field("queue", &self.xsk.queue).field("owned", &self.owned.len()).finish()
    }
}

/// What happened to each mbuf of a burst.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Posted by address: the kernel owns the chunk.
    Posted,
    /// Copied into a fresh chunk: free the original.
    Copied,
    /// Cannot be sent: free and count.
    Dropped,
}

impl XskTx {
    /// Frees every chunk the kernel finished sending.
    #[inline]
    fn complete(&mut self, ctx: &mut Ctx) {
        let cs = self.pool.chunk_size();
        loop {
            let n = self.comp.peek(MAX_BURST as u32);
            if n == 0 {
                return;
            }
            for i in 0..n {
                let chunk = self.comp.read(i) as usize & !(cs - 1);
                if !self.owned.remove(chunk / cs) {
                    // Not one of ours: never expected from the kernel; leave it alone.
                    continue;
                }
                // SAFETY: the chunk was posted by this queue (it was in `owned`) and the kernel
                // gives it back through the completion ring.
                let m = unsafe { self.pool.mbuf_at(chunk) };
                // SAFETY: at most MAX_BURST mbufs per round; `done` is emptied below.
                unsafe { self.done.push_unchecked(m) };
            }
            self.comp.release(n);
            ctx.cache(&self.pool).free_batch(&mut self.done);
        }
    }

    #[inline]
    fn wake(&mut self) {
        if self.busy_poll || self.tx.needs_wakeup() {
            self.counters.wakeups.inc();
            if self.xsk.kick_tx().is_err() {
                self.stats.errors.inc();
            }
        }
    }
}

impl TxQueue for XskTx {
    #[inline]
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        self.complete(ctx);
        let n = self.tx.reserve(batch.len() as u32) as usize;
        if n == 0 {
            self.wake();
            return 0;
        }
        let cs = self.pool.chunk_size();
        let pool_id = self.pool.id();
        let mut fates: ArrayVec<Fate, MAX_BURST> = ArrayVec::new();
        let mut k = 0u32;
        let mut bytes = 0u64;
        for m in batch[..n].iter() {
            let direct = m.pool_id() == pool_id && m.nb_segs() == 1 && m.is_writable();
            let (off, len, fate) = if direct {
                (self.pool.chunk_offset(m), m.data_len(), Fate::Posted)
            } else if m.pkt_len() > self.pool.data_room() {
                self.counters.tx_oversize.inc();
                fates.push(Fate::Dropped);
                continue;
            } else {
                let Some(mut c) = ctx.cache(&self.pool).alloc() else { break };
                let len = m.pkt_len();
                if let Some(dst) = c.append(len) {
                    let mut at = 0;
                    for s in m.segments() {
                        dst[at..at + s.len()].copy_from_slice(s);
                        at += s.len();
                    }
                }
                self.counters.tx_copies.inc();
                let off = self.pool.chunk_offset(&c);
                let data_off = c.data_off();
                let _ = c.into_raw();
                self.owned.insert(off / cs);
                self.tx
                    .write(k, XdpDesc { addr: (off + MBUF_HDR_SIZE + data_off) as u64, len: len as u32, options: 0 });
                k += 1;
                bytes += len as u64;
                fates.push(Fate::Copied);
                continue;
            };
            self.owned.insert(off / cs);
            self.tx
                .write(k, XdpDesc { addr: (off + MBUF_HDR_SIZE + m.data_off()) as u64, len: len as u32, options: 0 });
            k += 1;
            bytes += len as u64;
            fates.push(fate);
        }
        self.tx.commit(k);
        let decided = fates.len();
        let mut dropped = 0u64;
        for (m, f) in batch.drain_front(decided).zip(fates.iter()) {
            match f {
                // The kernel owns it until the completion ring gives it back.
                Fate::Posted => {
                    let _ = m.into_raw();
                }
                Fate::Copied => {
                    // SAFETY: at most MAX_BURST pushes; `done` is emptied below.
                    unsafe { self.done.push_unchecked(m) };
                }
                Fate::Dropped => {
                    dropped += 1;
                    // SAFETY: as above.
                    unsafe { self.done.push_unchecked(m) };
                }
            }
        }
        ctx.free_batch(&mut self.done);
        if k > 0 {
            self.wake();
        }
        self.stats.packets.add(k as u64);
        self.stats.bytes.add(bytes);
        self.stats.drops.add(dropped);
        k as usize
    }

    fn flush(&mut self, ctx: &mut Ctx) {
        self.complete(ctx);
        if self.tx.pending() > 0 {
            self.wake();
        }
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

impl Drop for XskTx {
    fn drop(&mut self) {
        // Completed chunks go straight back; the rest wait for the socket to close.
        let cs = self.pool.chunk_size();
        loop {
            let n = self.comp.peek(MAX_BURST as u32);
            if n == 0 {
                break;
            }
            for i in 0..n {
                let chunk = self.comp.read(i) as usize & !(cs - 1);
                if self.owned.remove(chunk / cs) {
                    // SAFETY: posted by this queue and given back by the kernel, as in complete().
                    drop(unsafe { self.pool.mbuf_at(chunk) });
                }
            }
            self.comp.release(n);
        }
        let mut v = Vec::with_capacity(self.owned.len());
        self.owned.drain_into(&mut v);
        self.xsk.reclaim.lock().unwrap_or_else(|e| e.into_inner()).extend(v);
    }
}
