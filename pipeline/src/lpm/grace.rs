//! Grace periods for lock-free readers: the writer frees nothing a reader may still be looking at.
//!
//! Each reader owns a slot holding a sequence number: odd while it is inside a read-side section
//! (a burst of lookups), even outside. The writer unlinks what it wants to free, then calls
//! [`Grace::synchronize`]: every reader seen inside a section is waited for until it leaves it.
//! Readers outside a section cost the writer nothing, so an lcore that gets no traffic never
//! delays an update (the scheme of DPDK's `rte_rcu_qsbr` with "online/offline" readers, folded
//! into one counter).
//!
//! Ordering (a store-buffer pattern, so both sides use a SeqCst fence): the reader stores its odd
//! number, fences, then loads the table; the writer stores the unlink, fences, then loads the
//! reader's number. Either the reader's loads see the unlink, or the writer sees the odd number
//! and waits for the section to end; the reader's Release store of its next even number orders
//! its loads before the writer's (Acquire) reuse of the memory.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// The readers of one table.
#[derive(Debug, Default)]
pub(crate) struct Grace {
    readers: Mutex<Vec<Arc<CachePadded<AtomicU64>>>>,
}

impl Grace {
    /// Registers a reader (control path).
    pub(crate) fn register(self: &Arc<Self>) -> ReadHandle {
        let slot = Arc::new(CachePadded::new(AtomicU64::new(0)));
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).push(slot.clone());
        ReadHandle { grace: self.clone(), slot, seq: 0 }
    }

    /// Waits until every reader that was inside a read-side section when this was called has
    /// left it. False when some reader stayed inside for `timeout` (a reader held by the
    /// caller itself, or a stalled thread): then nothing unlinked may be reused yet.
    pub(crate) fn synchronize(&self, timeout: Duration) -> bool {
        // SeqCst: pairs with the readers' fence in `enter` (see the module doc).
        fence(Ordering::SeqCst);
        let readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        for r in readers.iter() {
            // Acquire: a changed number means the section ended, and its loads happened before.
            let s = r.load(Ordering::Acquire);
            if s & 1 == 0 {
                continue;
            }
            let mut spins = 0u32;
            while r.load(Ordering::Acquire) == s {
                if start.elapsed() > timeout {
                    return false;
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        true
    }

    /// Readers registered now.
    pub(crate) fn readers(&self) -> usize {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One reader's side: owned by one thread (an lcore's stage), not shared.
#[derive(Debug)]
pub(crate) struct ReadHandle {
    grace: Arc<Grace>,
    slot: Arc<CachePadded<AtomicU64>>,
    seq: u64,
}

impl ReadHandle {
    /// Enters a read-side section: loads after this see every unlink that a writer's
    /// `synchronize` did not wait for.
    #[inline(always)]
    pub(crate) fn enter(&mut self) {
        self.seq += 1;
        // Relaxed store + SeqCst fence: the store-buffer pattern of the module doc.
        self.slot.store(self.seq, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Leaves the section.
    #[inline(always)]
    pub(crate) fn exit(&mut self) {
        self.seq += 1;
        // Release: the section's loads happen before a writer that sees this number reuses memory.
        self.slot.store(self.seq, Ordering::Release);
    }
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        let mut v = self.grace.readers.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronize_waits_for_a_reader_inside_only() {
        let g = Arc::new(Grace::default());
        let mut r = g.register();
        assert_eq!(g.readers(), 1);
        assert!(g.synchronize(Duration::from_millis(10)), "a reader outside costs nothing");
        r.enter();
        assert!(!g.synchronize(Duration::from_millis(20)), "a reader inside is waited for");
        r.exit();
        assert!(g.synchronize(Duration::from_millis(10)));
        r.enter();
        std::thread::scope(|s| {
            let h = s.spawn(|| g.synchronize(Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            r.exit();
            assert!(h.join().unwrap(), "the section ended");
        });
        drop(r);
        assert_eq!(g.readers(), 0);
    }
}
