//! Grace periods for lock-free readers: the writer frees nothing a reader may still be looking at.
//!
//! Each reader owns a slot holding a sequence number: odd while it is inside a read-side section
//! (a burst of lookups), even outside. The writer unlinks what it wants to free, then calls
//! [`Grace::synchronize`]: every reader seen inside a section is waited for until it leaves it.
//! Readers outside a section cost the writer nothing, so an lcore that gets no traffic never
//! delays an update (the scheme of DPDK's `rte_rcu_qsbr` with "online/offline" readers, folded
//! into one counter).
//!
//! Ordering (a store-buffer pattern: each side stores, then loads what the other stored): the
//! reader stores its odd number, then loads the table; the writer stores the unlink, then loads
//! the reader's number. A full barrier must separate the store from the load on both sides, so
//! that either the reader's loads see the unlink, or the writer sees the odd number and waits for
//! the section to end. A fence on the reader's side would cost every burst a drained store
//! buffer, and with it the overlap of one burst's cache misses with the next (a third of the
//! lookup rate), so the writer puts the barrier on the readers' CPUs instead: the kernel's
//! expedited `membarrier` runs one on every CPU that runs a thread of this process, and the
//! readers only stop the compiler from reordering (as liburcu's "memb" flavour does). Where the
//! kernel lacks it, readers fence themselves. The reader's Release store of its next even number
//! orders its loads before the writer's (Acquire) reuse of the memory.

use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// True once readers must fence themselves (no expedited membarrier for this process).
static READERS_FENCE: AtomicBool = AtomicBool::new(false);

/// Registers this process for expedited private membarriers, once; false when the kernel lacks
/// them (then readers fence, see the module doc).
fn membarrier_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        const QUERY: libc::c_long = 0;
        const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
        // SAFETY: membarrier(QUERY) and (REGISTER_...) take no pointers and change no memory.
        let ok = unsafe {
            let cmds = libc::syscall(libc::SYS_membarrier, QUERY, 0);
            cmds >= 0
                && cmds & PRIVATE_EXPEDITED != 0
                && libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0) == 0
        };
        if !ok {
            log::info!("lpm: no expedited membarrier; lookups fence once per burst");
            // Relaxed: read by readers made after this (thread start orders it).
            READERS_FENCE.store(true, Ordering::Relaxed);
        }
        ok
    })
}

/// A full memory barrier on every CPU running a thread of this process (and this one).
fn barrier_everywhere() {
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    // SeqCst: the writer's own side of the store-buffer pattern.
    fence(Ordering::SeqCst);
    if membarrier_ready() {
        // SAFETY: membarrier(PRIVATE_EXPEDITED) takes no pointers; the process registered.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, PRIVATE_EXPEDITED, 0) };
        debug_assert_eq!(rc, 0, "membarrier: {}", std::io::Error::last_os_error());
    }
}

/// The readers of one table.
#[derive(Debug, Default)]
pub(crate) struct Grace {
    readers: Mutex<Vec<Arc<CachePadded<AtomicU64>>>>,
}

impl Grace {
    /// Registers a reader (control path).
    pub(crate) fn register(self: &Arc<Self>) -> ReadHandle {
        membarrier_ready();
        let slot = Arc::new(CachePadded::new(AtomicU64::new(0)));
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).push(slot.clone());
        ReadHandle { grace: self.clone(), slot, seq: 0 }
    }

    /// Waits until every reader that was inside a read-side section when this was called has
    /// left it. False when some reader stayed inside for `timeout` (a reader held by the
    /// caller itself, or a stalled thread): then nothing unlinked may be reused yet.
    pub(crate) fn synchronize(&self, timeout: Duration) -> bool {
        barrier_everywhere();
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
        // Relaxed store, then the reader's side of the barrier (module doc): only the compiler's
        // when the writer makes the CPU's with membarrier.
        self.slot.store(self.seq, Ordering::Relaxed);
        // Relaxed: set once before any reader exists.
        if READERS_FENCE.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
        } else {
            compiler_fence(Ordering::SeqCst);
        }
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
