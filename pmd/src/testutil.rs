//! Helpers for tests that need privileges or outside tools (feature `test-utils`).
//!
//! A privileged test calls [`require`] first: on a laptop without root it prints why it skips
//! and returns false; when the `CI` variable is set it panics instead, because CI must run it.

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when `CI` is set (to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// True when `cmd` is on the PATH.
pub fn have_cmd(cmd: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file())).unwrap_or(false)
}

/// Checks a test's preconditions: `root` when it needs root, and the commands it runs.
/// Returns false (after printing the reason) when it should skip; panics under CI instead.
pub fn require(test: &str, root: bool, cmds: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root (CAP_NET_ADMIN, CAP_BPF): run the tests as root".to_string());
    }
    for c in cmds {
        if !have_cmd(c) {
            missing.push(format!("the command '{c}' (bash .ci/run installs it)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test}: needs {}", missing.join(", and "));
    if in_ci() {
        panic!("{why}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// The machine-wide lock held by every test that starts busy-polling threads (fastpath lcores,
/// the `fastpath` command, testpmd forwarding lcores, pktgen, a QEMU vCPU), so that no two such
/// tests ever run at once, whichever test binary, test thread or checkout they come from: on a
/// 2-CPU machine two busy pollers on one CPU get one scheduler tick each in turn. Take it first
/// thing in the test and keep the guard to the end:
///
/// ```no_run
/// let _cpus = fastpath_pmd::testutil::pollers();
/// ```
///
/// It is an `flock` on `$TMPDIR/fastpath-test-pollers.lock`; the lock goes with the guard (or
/// with the process, if it dies).
pub fn pollers() -> PollersGuard {
    let path = std::env::temp_dir().join("fastpath-test-pollers.lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .unwrap_or_else(|e| panic!("cannot open the test lock {}: {e}", path.display()));
    let t0 = std::time::Instant::now();
    crate::sys::flock_exclusive(&f, true).unwrap_or_else(|e| panic!("flock {}: {e}", path.display()));
    if t0.elapsed() > std::time::Duration::from_secs(1) {
        eprintln!("(waited {:.1} s for the busy-poller test lock)", t0.elapsed().as_secs_f64());
    }
    PollersGuard { _file: f }
}

/// Held while a busy-polling test runs (see [`pollers`]).
#[derive(Debug)]
pub struct PollersGuard {
    _file: std::fs::File,
}

/// A global allocator that counts allocations (and reallocations), for tests that prove a path
/// allocates nothing: `#[global_allocator] static A: CountingAlloc = CountingAlloc::new();`, then
/// compare [`CountingAlloc::count`] (all threads: for work on other threads, e.g. lcores) or
/// [`CountingAlloc::thread_count`] (this thread only: immune to the test harness's own threads)
/// before and after. Keep one such test per test binary when counting all threads, so that no
/// other test allocates while it counts.
#[derive(Debug)]
pub struct CountingAlloc(std::sync::atomic::AtomicU64);

impl CountingAlloc {
    /// A counter at zero.
    pub const fn new() -> CountingAlloc {
        CountingAlloc(std::sync::atomic::AtomicU64::new(0))
    }

    /// Allocations so far, on every thread.
    pub fn count(&self) -> u64 {
        // Relaxed: a statistic, read after the work on the thread that did it.
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Allocations so far on the calling thread.
    pub fn thread_count(&self) -> u64 {
        THREAD_ALLOCS.with(std::cell::Cell::get)
    }

    fn counted(&self) {
        // Relaxed: see count().
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // try_with: during thread teardown the slot may be gone; that allocation is not ours.
        let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
}

thread_local! {
    // A const initialiser and no destructor: touching it never allocates.
    static THREAD_ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        self.counted();
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which System's is.
        unsafe { std::alloc::System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: p was allocated by System with layout l (every allocation went there).
        unsafe { std::alloc::System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        self.counted();
        // SAFETY: as in dealloc, and the caller upholds realloc's contract.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}
