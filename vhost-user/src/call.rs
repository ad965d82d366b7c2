//! Calling the guest (writing its call eventfd) from the lcore without ever waiting on it.
//!
//! The call eventfd belongs to the frontend. An eventfd write blocks when the counter would pass
//! `u64::MAX - 1`, so a frontend that pre-fills the counter (or never reads it) could stop the
//! lcore, and with it every queue the lcore polls. Three layers keep that from happening:
//!
//! 1. Only eventfds are accepted as call fds (the device refuses the rest at SET_VRING_CALL:
//!    a full pipe blocks the same way), and the device sets `O_NONBLOCK` on each one
//!    ([`crate::fds`]). A write into a full counter then fails with `EAGAIN`: `call_guest`
//!    counts it (`guest_calls_skipped`) and goes on. The guest loses that interrupt; a driver
//!    that lets its counter fill does not wait for interrupts anyway.
//! 2. `O_NONBLOCK` is a flag of the open file description, which the frontend shares, so it can
//!    clear it again. The control thread checks it on every call fd each round
//!    ([`crate::fds::is_nonblocking`]) and drops a connection whose frontend cleared it.
//! 3. Between that check and the write a racing frontend can still clear the flag and fill the
//!    counter. For that last case the lcore marks each call write in a sequence word
//!    ([`CallWatch`]: odd while inside the write), and the control thread's [`Watchdog`] looks
//!    at it every round: the same odd value seen twice, at least [`STUCK`] apart, means the lcore
//!    is stuck in that write, and the control thread interrupts that thread with a signal
//!    ([`interrupt_signal`], a no-op handler installed without `SA_RESTART`), which makes the
//!    write return `EINTR`. The lcore counts it as a skipped call and goes on. The connection is
//!    dropped first, so the lcore's next burst no longer has the call fd.
//!
//! Cost on the fast path: two relaxed stores around each call (at most one call per burst, and
//! only when the guest asked for one).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::queue::VringStats;

/// How long an lcore may sit in one call write before the watchdog interrupts it. A write to
/// an eventfd that can take the value returns in microseconds; the control thread samples about
/// every 100 ms, so an lcore is held at most about this long plus one round.
pub const STUCK: Duration = Duration::from_millis(50);

/// The lcore's marks around its call writes, read by the control thread's [`Watchdog`].
#[derive(Debug, Default)]
pub struct CallWatch {
    /// Odd while the lcore is inside a call write (single writer: the lcore).
    seq: AtomicU64,
    /// The thread of the last call write (its kernel thread id), 0 before one.
    tid: AtomicI32,
    /// The fd of the last call write (so the control thread knows whose eventfd it is).
    fd: AtomicI32,
}

thread_local! {
    // This thread's kernel id, 0 until first asked (a const initialiser: no allocation, no
    // destructor, one TLS load on the fast path).
    static TID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's kernel thread id (one system call per thread, then cached).
#[inline(always)]
fn this_thread() -> i32 {
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no arguments and cannot fail.
            t.set(unsafe { libc::syscall(libc::SYS_gettid) } as i32);
        }
        t.get()
    })
}

/// Writes 1 to the guest's call eventfd `fd`; never waits (see the module doc). Counts
/// `calls` when the guest got it, `calls_skipped` when the counter was full (or the fd broke).
#[inline(always)]
pub(crate) fn call_guest(fd: RawFd, st: &VringStats) {
    let w = &st.call_watch;
    // The thread that writes (a queue may move between threads) and the fd it writes to.
    // Relaxed: published by the Release store of the odd `seq` below.
    w.tid.store(this_thread(), Ordering::Relaxed);
    w.fd.store(fd, Ordering::Relaxed);
    // Relaxed load: only this thread writes `seq`. Release store: the watchdog that sees the
    // odd value (Acquire) sees our tid. The stores cannot move across the write(2) call (an
    // opaque function the compiler must assume reads them).
    let s = w.seq.load(Ordering::Relaxed);
    w.seq.store(s.wrapping_add(1), Ordering::Release);
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to an fd the vring snapshot keeps open; the
    // device made it a non-blocking eventfd, and a failed write is harmless.
    let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    // Relaxed: the watchdog only compares values; an even one tells it nothing more.
    w.seq.store(s.wrapping_add(2), Ordering::Relaxed);
    if n == 8 {
        st.calls.inc();
    } else {
        st.calls_skipped.inc();
    }
}

/// The signal the watchdog interrupts a stuck lcore with: `SIGRTMIN + 3`, with a handler that
/// does nothing (installed once, without `SA_RESTART`, by [`install_interrupt`]). An embedding
/// application must leave this signal to us and unblocked on lcore threads.
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_interrupt(_: libc::c_int) {}

static INSTALL: Once = Once::new();

/// Installs the no-op handler of [`interrupt_signal`] (once per process).
pub fn install_interrupt() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing (async-signal-safe), an
        // empty mask and no SA_RESTART, so that an interrupted write returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(interrupt_signal(), &sa, std::ptr::null_mut()) != 0 {
                log::error!(
                    "vhost-user: cannot install the handler of signal {}: {}",
                    interrupt_signal(),
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// True when the thread of `w`'s last call write is asleep (`S` or `D` in
/// `/proc/self/task/TID/stat`), or when that cannot be read (then being inside one write for
/// [`STUCK`] is taken as the evidence).
fn asleep(w: &CallWatch) -> bool {
    // Acquire: the tid written before the odd sequence number we saw.
    let _ = w.seq.load(Ordering::Acquire);
    // Relaxed: ordered by the Acquire above.
    let tid = w.tid.load(Ordering::Relaxed);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else { return true };
    // "tid (comm) S ...": the state follows the last ')' (comm may contain anything).
    match stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) {
        Some(st) => st == "S" || st == "D",
        None => true,
    }
}

/// The control thread's side: samples each vring's [`CallWatch`] once per round.
#[derive(Debug, Default)]
pub struct Watchdog {
    last: Vec<u64>,
    at: Option<Instant>,
    pending: Vec<usize>,
}

impl Watchdog {
    /// Samples every vring's watch (at most once per [`STUCK`]) and remembers the vrings whose
    /// lcore has been inside the same call write since the previous sample. True when there
    /// are such vrings: make sure the lcores' next bursts have no call fd (drop the
    /// connection), then [`Watchdog::interrupt_pending`].
    pub fn check<'a>(&mut self, watches: impl Iterator<Item = &'a CallWatch>) -> bool {
        if self.at.is_some_and(|t| t.elapsed() < STUCK) {
            return !self.pending.is_empty();
        }
        let first = self.at.is_none();
        self.at = Some(Instant::now());
        for (i, w) in watches.enumerate() {
            // Relaxed: only successive values are compared (see call_guest).
            let s = w.seq.load(Ordering::Relaxed);
            if self.last.len() <= i {
                self.last.resize(i + 1, 0);
            }
            // Asleep, not merely preempted: a thread descheduled inside a write that can go on is
            // runnable, one waiting on a full counter sleeps.
            if !first && s & 1 == 1 && s == self.last[i] && !self.pending.contains(&i) && asleep(w) {
                self.pending.push(i);
            }
            self.last[i] = s;
        }
        !self.pending.is_empty()
    }

    /// The fds the stuck writes [`Watchdog::check`] found are writing to (to tell whether they
    /// belong to the connection being served or to one that is gone).
    pub fn pending_fds(&self, watches: &[&CallWatch]) -> Vec<RawFd> {
        self.pending
            .iter()
            .filter_map(|&i| watches.get(i))
            // Acquire: pairs with the Release store of the odd `seq`, after which `fd` was set.
            .filter(|w| w.seq.load(Ordering::Acquire) & 1 == 1)
            // Relaxed: ordered by the Acquire above.
            .map(|w| w.fd.load(Ordering::Relaxed))
            .collect()
    }

    /// Interrupts, with [`interrupt_signal`], the lcores [`Watchdog::check`] found stuck that
    /// are still inside that write; returns their vring indices.
    pub fn interrupt_pending(&mut self, watches: &[&CallWatch]) -> Vec<usize> {
        let mut done = Vec::new();
        for i in std::mem::take(&mut self.pending) {
            let Some(w) = watches.get(i) else { continue };
            // Acquire: pairs with the Release store of the odd value, so `tid` is that writer's.
            let s = w.seq.load(Ordering::Acquire);
            // Relaxed: ordered by the Acquire above.
            let tid = w.tid.load(Ordering::Relaxed);
            if s & 1 == 0 || s != self.last[i] || tid == 0 {
                continue;
            }
            // SAFETY: tgkill to a thread of our own process with a signal whose handler does
            // nothing; a thread that has just left the write gets a harmless no-op interruption.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, interrupt_signal()) };
            done.push(i);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_call_write_stuck_on_a_blocking_full_eventfd_is_interrupted() {
        // A blocking eventfd whose counter is full: the write below would sleep for ever.
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        let full = u64::MAX - 1;
        // SAFETY: 8 bytes from a live u64 into our eventfd (empty, so this one does not block).
        assert_eq!(unsafe { libc::write(fd, (&full as *const u64).cast(), 8) }, 8);
        install_interrupt();
        let st = Arc::new(VringStats::default());
        let lcore = {
            let st = st.clone();
            std::thread::spawn(move || call_guest(fd, &st))
        };
        let mut wd = Watchdog::default();
        let t0 = Instant::now();
        let mut fired = Vec::new();
        while fired.is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(30), "the watchdog never saw the stuck write");
            if wd.check(std::iter::once(&st.call_watch)) {
                fired = wd.interrupt_pending(&[&st.call_watch]);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fired, vec![0]);
        let t0 = Instant::now();
        while !lcore.is_finished() {
            assert!(t0.elapsed() < Duration::from_secs(30), "the interrupted write did not return");
            std::thread::sleep(Duration::from_millis(10));
        }
        lcore.join().unwrap();
        assert_eq!((st.calls.get(), st.calls_skipped.get()), (0, 1), "counted as skipped");
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(fd) };
    }

    /// A thread that is inside a call write for a long time but runnable (preempted on a busy
    /// host) is not taken for stuck; a sleeping one is.
    #[test]
    fn only_a_sleeping_writer_counts_as_stuck() {
        for (spin, want) in [(true, false), (false, true)] {
            let w = Arc::new(CallWatch::default());
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let t = {
                let (w, stop) = (w.clone(), stop.clone());
                std::thread::spawn(move || {
                    w.tid.store(this_thread(), Ordering::Relaxed);
                    // An odd sequence number: "inside a write" for as long as this runs.
                    w.seq.store(1, Ordering::Release);
                    // Relaxed: a request flag.
                    while !stop.load(Ordering::Relaxed) {
                        if !spin {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            };
            // Acquire: pairs with the Release store above.
            while w.seq.load(Ordering::Acquire) != 1 {
                std::thread::yield_now();
            }
            let mut wd = Watchdog::default();
            let mut seen = false;
            for _ in 0..5 {
                seen |= wd.check(std::iter::once(&*w));
                std::thread::sleep(STUCK + Duration::from_millis(10));
            }
            // Relaxed: a request flag.
            stop.store(true, Ordering::Relaxed);
            t.join().unwrap();
            assert_eq!(seen, want, "spinning: {spin}");
        }
    }
}
