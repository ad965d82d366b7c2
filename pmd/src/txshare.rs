//! Transmit queues shared by several lcores.
//!
//! Any lcore of a switch may send to any port, but a port may have fewer transmit queues than
//! there are lcores (a VM with one queue pair). Where that happens, and only there, the lcores
//! that share a queue each get a [`SharedTxQueue`] handle to it: a spin lock around the queue,
//! taken for one `tx_burst` (or `flush`, or the drop count) at a time, as OVS-DPDK does for its
//! shared (`concurrent_txq`) queues. Everything the queue counts is counted under the lock: its
//! counters are single-writer load + store, so two lcores counting at once would lose updates.
//! Ports with a queue per lcore get the queue itself and pay nothing.
//!
//! The critical section is one burst (a copy into a guest ring, a descriptor post): the lock is
//! held for about a microsecond, and a waiter spins (`PAUSE`) rather than sleeping, because a
//! sleeping lcore would lose far more than it waits for. Pin lcores to their own CPUs: a holder
//! descheduled by a CPU's other tenant makes its waiters spin for a scheduler tick.

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fastpath_mempool::Batch;

use crate::ctx::Ctx;
use crate::port::TxQueue;
use crate::stats::{Counter, QueueStats};

/// The queue and its lock, behind the handles.
struct Shared {
    locked: AtomicBool,
    queue: UnsafeCell<Box<dyn TxQueue>>,
    /// Times a handle found the lock taken and had to wait (contention, for the stats).
    waits: Counter,
}

// SAFETY: `queue` is only reached by the holder of `locked` (see `Guard`), so it is never used
// by two threads at once; the queue itself is `Send`.
unsafe impl Sync for Shared {}

/// The lock held: exclusive access to the queue until dropped.
struct Guard<'a>(&'a Shared);

impl Shared {
    #[inline]
    fn lock(&self) -> Guard<'_> {
        // Acquire: what the previous holder did to the queue (its ring indices, its counters)
        // is visible to us.
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        Guard(self)
    }

    #[cold]
    fn lock_contended(&self) {
        loop {
            // Relaxed: only a hint to stop spinning; the exchange below orders.
            while self.locked.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            // Acquire: as in lock().
            if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break;
            }
        }
        // Counted while holding the lock: one writer at a time.
        self.waits.inc();
    }
}

impl Guard<'_> {
    #[inline]
    fn queue(&mut self) -> &mut dyn TxQueue {
        // SAFETY: we hold the lock (this guard exists only while `locked` is ours), so nobody
        // else touches the queue until we release it.
        unsafe { &mut **self.0.queue.get() }
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: our use of the queue happens before the next holder's Acquire.
        self.0.locked.store(false, Ordering::Release);
    }
}

/// One lcore's handle on a transmit queue shared with other lcores.
pub struct SharedTxQueue {
    shared: Arc<Shared>,
    /// Never counted into: see `stats`.
    none: QueueStats,
}

impl fmt::Debug for SharedTxQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTxQueue").field("handles", &Arc::strong_count(&self.shared)).finish_non_exhaustive()
    }
}

/// Wraps `queue` for `n` lcores: `n` handles, one per lcore. With `n == 1` the queue is not
/// shared: it is returned as it is (no lock).
pub fn share(queue: Box<dyn TxQueue>, n: usize) -> Vec<Box<dyn TxQueue>> {
    if n <= 1 {
        return vec![queue];
    }
    let shared =
        Arc::new(Shared { locked: AtomicBool::new(false), queue: UnsafeCell::new(queue), waits: Counter::new() });
    (0..n)
        .map(|_| Box::new(SharedTxQueue { shared: shared.clone(), none: QueueStats::default() }) as Box<dyn TxQueue>)
        .collect()
}

impl SharedTxQueue {
    /// Times some handle of this queue waited for the lock.
    pub fn waits(&self) -> u64 {
        self.shared.waits.get()
    }
}

impl TxQueue for SharedTxQueue {
    #[inline]
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        self.shared.lock().queue().tx_burst(ctx, batch)
    }

    fn flush(&mut self, ctx: &mut Ctx) {
        self.shared.lock().queue().flush(ctx)
    }

    /// Empty counters: the queue's own are read through its port (`Port::stats`), and a caller
    /// counting into them through a handle, without the lock, would race the other lcores. The
    /// runtime counts drops through `dropped`, which takes the lock.
    fn stats(&self) -> &QueueStats {
        &self.none
    }

    fn dropped(&mut self, n: u64) {
        self.shared.lock().queue().dropped(n)
    }
}
