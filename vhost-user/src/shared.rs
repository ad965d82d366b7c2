//! Handing a vring's configuration from the control thread to the lcore that polls it, without a
//! lock on the fast path.
//!
//! The control thread owns the socket; the lcore owns the queue. Every change the frontend makes
//! (memory table, ring addresses, base, call fd, enable, stop) becomes a new immutable
//! [`VringConfig`] snapshot that the control thread publishes through an atomic pointer and an
//! epoch counter ([`Publisher::publish`]). The lcore compares the epoch once per burst (one
//! Acquire load); when it moved, it takes a reference to the current snapshot, rebuilds its queue
//! from it, drops the old one and acknowledges the epoch ([`Cursor::live`]). The control thread
//! keeps every replaced snapshot (and so the memory table it maps) until the lcore has
//! acknowledged an epoch at least as new: an old table is unmapped only once nobody can be
//! reading it, and always on the control thread.
//!
//! The lcore checks the epoch at the start of every burst and touches a ring only inside a
//! burst, so a configuration is in force from the lcore's next burst on. An lcore that gets no
//! traffic (a transmit queue nobody sends to) acknowledges only at its next burst; the control
//! thread therefore never waits long for an acknowledgement: a stop reads the avail index the
//! lcore publishes after every burst ([`Cursor::progress`]), and an unacknowledged old snapshot
//! simply stays mapped until the acknowledgement comes.
//!
//! A queue that no lcore polls (not taken yet, or its lcore ended) is not *attached*; then
//! nothing needs an acknowledgement. The attach flag and the snapshot pointer form a Dekker pair
//! (all SeqCst, both rare): either the control thread sees the lcore attached and waits for its
//! acknowledgement, or the lcore's first load already sees the newest snapshot.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mem::GuestMemory;
use crate::queue::{QueueFeatures, VirtQueue, VringStats};
use crate::ring::Ring;

/// One immutable configuration of a vring.
#[derive(Debug)]
pub struct VringConfig {
    /// The memory table the ring pointers point into (kept alive by this snapshot).
    pub mem: Arc<GuestMemory>,
    /// The translated ring; `None` while the vring is not live (not set up, disabled, stopped,
    /// or its addresses do not translate).
    pub ring: Option<Ring>,
    /// Avail state to start from when `start_gen` changes (split: the avail index; packed:
    /// position | wrap counter << 15).
    pub base: u16,
    /// Bumped by each SET_VRING_BASE: the lcore restarts its indices from `base`.
    pub start_gen: u64,
    /// Negotiated features.
    pub feat: QueueFeatures,
    /// The eventfd to call the guest through.
    pub call: Option<Arc<File>>,
}

impl VringConfig {
    /// A vring that is not live.
    pub fn idle() -> VringConfig {
        VringConfig {
            mem: Arc::new(GuestMemory::empty()),
            ring: None,
            base: 0,
            start_gen: 0,
            feat: QueueFeatures::default(),
            call: None,
        }
    }
}

// SAFETY: the ring's raw pointers point into `mem`, which the snapshot owns; nothing in a
// snapshot is mutated after publication.
unsafe impl Send for VringConfig {}
// SAFETY: as above (immutable).
unsafe impl Sync for VringConfig {}

/// The state a vring's control side and its lcore share.
#[derive(Debug)]
pub struct VringShared {
    /// `port:vring` for logs.
    pub name: String,
    cfg: AtomicPtr<VringConfig>,
    epoch: AtomicU64,
    acked: AtomicU64,
    attached: AtomicBool,
    /// The lcore's next avail index, published at each acknowledgement and when it detaches.
    last_avail: AtomicU32,
    /// True while the queue is stopped by a guest error.
    pub broken: AtomicBool,
    /// Counters.
    pub stats: VringStats,
}

/// The control side of one vring: publishes snapshots and retires old ones.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<VringShared>,
    current: Arc<VringConfig>,
    epoch: u64,
    retired: Vec<(u64, Arc<VringConfig>)>,
}

impl Publisher {
    /// A vring named `name`, idle.
    pub fn new(name: String) -> Publisher {
        let current = Arc::new(VringConfig::idle());
        let shared = Arc::new(VringShared {
            name,
            cfg: AtomicPtr::new(Arc::as_ptr(&current).cast_mut()),
            epoch: AtomicU64::new(1),
            acked: AtomicU64::new(0),
            attached: AtomicBool::new(false),
            last_avail: AtomicU32::new(0),
            broken: AtomicBool::new(false),
            stats: VringStats::default(),
        });
        Publisher { shared, current, epoch: 1, retired: Vec::new() }
    }

    /// The shared half, for the lcore's [`Cursor`] and for counters.
    pub fn shared(&self) -> &Arc<VringShared> {
        &self.shared
    }

    /// The snapshot in force.
    pub fn current(&self) -> &Arc<VringConfig> {
        &self.current
    }

    /// Publishes `cfg` as the vring's new configuration and frees what no lcore can still use.
    /// Returns the new epoch.
    pub fn publish(&mut self, cfg: VringConfig) -> u64 {
        let new = Arc::new(cfg);
        self.epoch += 1;
        if self.current.start_gen != new.start_gen {
            // The lcore starts over from `base`; report it until the lcore says otherwise.
            // Relaxed: read by this thread after an ack (Acquire) or when nobody is attached.
            self.shared.last_avail.store(new.base as u32, Ordering::Relaxed);
        }
        // SeqCst (pointer, epoch, and the attach check below): the Dekker pair with
        // Cursor::reload (see the module doc).
        self.shared.cfg.store(Arc::as_ptr(&new).cast_mut(), Ordering::SeqCst);
        self.shared.epoch.store(self.epoch, Ordering::SeqCst);
        let old = std::mem::replace(&mut self.current, new);
        self.retired.push((self.epoch, old));
        self.reap();
        self.epoch
    }

    /// Drops retired snapshots that no lcore can be using any more.
    pub fn reap(&mut self) {
        if !self.shared.attached.load(Ordering::SeqCst) {
            self.retired.clear();
            return;
        }
        // Acquire: pairs with the lcore's Release of `acked`, after it dropped its reference.
        let acked = self.shared.acked.load(Ordering::Acquire);
        self.retired.retain(|(e, _)| *e > acked);
    }

    /// Snapshots waiting for an acknowledgement.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Waits until the lcore acknowledged the current epoch (true), nobody is attached (true), or
    /// `timeout` passed (false). Then frees what it can.
    pub fn wait_ack(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        let ok = loop {
            if !self.shared.attached.load(Ordering::SeqCst) {
                break true;
            }
            // Acquire: pairs with the lcore's Release store of `acked` (and of last_avail before).
            if self.shared.acked.load(Ordering::Acquire) >= self.epoch {
                break true;
            }
            if t0.elapsed() >= timeout {
                break false;
            }
            std::thread::sleep(Duration::from_micros(50));
        };
        self.reap();
        ok
    }

    /// The avail index the lcore reached (valid after [`Publisher::wait_ack`] of a stop).
    pub fn last_avail(&self) -> u16 {
        // Acquire: pairs with the lcore's Release store.
        self.shared.last_avail.load(Ordering::Acquire) as u16
    }
}

/// The lcore side of one vring: the live queue, rebuilt whenever the epoch moves.
#[derive(Debug)]
pub struct Cursor {
    shared: Arc<VringShared>,
    epoch: u64,
    cfg: Option<Arc<VringConfig>>,
    start_gen: u64,
    queue: Option<VirtQueue>,
    /// Indices (next avail, used, broken) kept while the vring is not live, for when it comes
    /// back without a new base (disable / enable, memory table change).
    saved: Option<(u16, u16, Option<crate::queue::GuestError>)>,
    last_pub: u16,
    logged: bool,
}

impl Cursor {
    /// The lcore side of `shared` (attaches on its first poll).
    pub fn new(shared: Arc<VringShared>) -> Cursor {
        Cursor {
            shared,
            epoch: 0,
            cfg: None,
            start_gen: u64::MAX,
            queue: None,
            saved: None,
            last_pub: 0,
            logged: false,
        }
    }

    /// The shared half.
    pub fn shared(&self) -> &VringShared {
        &self.shared
    }

    /// The live queue and its memory, after taking any new configuration. `None` while the
    /// vring is not live or broken.
    #[inline(always)]
    pub fn live(&mut self) -> Option<(&mut VirtQueue, &GuestMemory, &VringStats)> {
        // Acquire: a new epoch's snapshot pointer was stored before it.
        if self.shared.epoch.load(Ordering::Acquire) != self.epoch {
            self.reload();
        }
        let q = self.queue.as_mut()?;
        let mem = &self.cfg.as_ref()?.mem;
        Some((q, mem, &self.shared.stats))
    }

    /// Publishes the queue's avail index after a burst that moved it (one Release store, only
    /// when it changed), so that a stop can read it even when the lcore is not polling.
    #[inline(always)]
    pub fn progress(&mut self) {
        if let Some(q) = &self.queue {
            let a = q.last_avail();
            if a != self.last_pub {
                self.last_pub = a;
                // Release: read by the control thread (Acquire) on GET_VRING_BASE.
                self.shared.last_avail.store(a as u32, Ordering::Release);
            }
        }
    }

    /// True when the live queue was stopped by a guest error not yet reported.
    #[inline(always)]
    pub fn needs_report(&self) -> bool {
        !self.logged && self.queue.as_ref().is_some_and(|q| q.broken().is_some())
    }

    /// Logs and flags a guest error once per queue setup.
    #[cold]
    pub fn report_broken(&mut self) {
        let Some(e) = self.queue.as_ref().and_then(|q| q.broken()) else { return };
        if !self.logged {
            self.logged = true;
            // Relaxed: a status flag for xstats.
            self.shared.broken.store(true, Ordering::Relaxed);
            log::error!(
                "{}: guest error {}: this queue is stopped until the frontend sets it up again",
                self.shared.name,
                e.name()
            );
        }
        // The queue stays allocated (for GET_VRING_BASE) but does no more work.
    }

    #[cold]
    #[inline(never)]
    fn reload(&mut self) {
        if self.epoch == 0 {
            // SeqCst: the Dekker pair with Publisher::publish.
            self.shared.attached.store(true, Ordering::SeqCst);
        }
        let e = self.shared.epoch.load(Ordering::SeqCst);
        let p = self.shared.cfg.load(Ordering::SeqCst);
        // Soundness: `p` is the current snapshot, or one replaced after we read `e`; the control thread keeps
        // every snapshot replaced at an epoch above our last acknowledgement (which is below `e`) alive until we
        // acknowledge it, so `p` is alive and we may take a reference of our own.
        // SAFETY: the control thread keeps `p` alive until we acknowledge an epoch above `e`.
        let cfg = unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        };
        let restart = cfg.start_gen != self.start_gen;
        if let Some(q) = &mut self.queue {
            // Nothing stays in flight across a change: the old memory table is still ours here.
            q.flush_held(&self.shared.stats);
            self.saved = Some((q.last_avail(), q.last_used(), q.broken()));
        }
        if restart {
            self.saved = None;
        }
        let avail = self.saved.map_or(cfg.base, |s| s.0);
        self.queue = cfg.ring.map(|ring| {
            let call = cfg.call.as_ref().map(|f| f.as_raw_fd());
            let mut q = VirtQueue::new(ring, avail, cfg.feat, call);
            if let Some((_, used, broken)) = self.saved {
                q.resume(used, broken);
            }
            q
        });
        if restart {
            self.logged = false;
            // Relaxed: a status flag for xstats.
            self.shared.broken.store(false, Ordering::Relaxed);
        }
        self.start_gen = cfg.start_gen;
        // Our old reference goes first, so that the control thread's is the last one and the
        // old memory table is unmapped there, not here.
        self.cfg = Some(cfg);
        // Release: our new avail index and the drop of the old snapshot happen before the ack.
        self.last_pub = avail;
        self.shared.last_avail.store(avail as u32, Ordering::Release);
        self.shared.acked.store(e, Ordering::Release);
        self.epoch = e;
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if let Some(q) = &mut self.queue {
            q.flush_held(&self.shared.stats);
            // Release: read by the control thread after it sees us detached.
            self.shared.last_avail.store(q.last_avail() as u32, Ordering::Release);
        }
        self.queue = None;
        self.cfg = None;
        // SeqCst: after this, the control thread frees snapshots without waiting for us.
        self.shared.attached.store(false, Ordering::SeqCst);
    }
}
