//! Surviving a frontend that shrinks its memory file under us.
//!
//! Guest memory is the frontend's file mapped shared. SET_MEM_TABLE refuses a region its file
//! does not hold, but the frontend keeps the file and may truncate it (or punch a hole in a
//! hugetlbfs file whose pool then runs dry) at any time afterwards: the next access to a lost
//! page raises SIGBUS on whichever thread touched it, usually an lcore in the middle of a copy.
//! Refusing files that *can* shrink is not an option on its own: DPDK's virtio-user with
//! `--no-huge` passes a memfd created without `MFD_ALLOW_SEALING`, which can never be sealed.
//!
//! So every guest mapping is registered here ([`register`]) for as long as it exists, in a
//! fixed table that a signal handler can read without locks or allocation. Our SIGBUS handler
//! looks the fault address up; when it lies in a registered mapping it maps anonymous memory
//! over the whole mapping (`mmap(MAP_FIXED)`, a plain system call), marks the mapping faulted and
//! returns: the faulting instruction runs again on zero-filled memory and the thread goes on.
//! The control thread of the connection sees the mark ([`Guard::faulted`]) and drops that
//! connection; the anonymous memory goes away with the mapping when the lcores let go of it.
//! A fault anywhere else is passed on to the handler that was installed before ours (Rust's
//! own, which reports stack overflows and otherwise restores the default action), so a real
//! bug still dies of SIGBUS as before.
//!
//! Why replacing the mapping is sound: the faulting thread is inside an access to a mapping it
//! holds a reference to (every pointer into guest memory lives under a snapshot that keeps its
//! table alive, see [`crate::shared`]), so that mapping is registered and cannot be unmapped
//! (nor its address range reused) until the handler has returned. Readers of the table use a
//! per-slot sequence number, so a slot being rewritten by another thread is skipped, never
//! misread.

use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Guest mappings that can be registered at once, over all ports (each region of a
/// SET_MEM_TABLE is one; a port keeps at most [`crate::device::MAX_LIVE_TABLES`] tables of up
/// to [`crate::mem::MAX_REGIONS`] regions). 32 bytes each; the handler scans them in a few
/// microseconds.
pub const SLOTS: usize = 4096;

struct Slot {
    /// Even: stable; odd: being written (see the module doc).
    seq: AtomicU64,
    base: AtomicUsize,
    /// 0: free.
    len: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Faults survived by this process.
static FAULTS: AtomicU64 = AtomicU64::new(0);
/// The SIGBUS action in force before ours (leaked once, read by the handler).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: Once = Once::new();

/// A registered guest mapping; unregisters on drop (drop it before unmapping).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

/// Every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Registers `[base, base + len)` as a guest mapping and makes sure our handler is installed.
pub fn register(base: *mut u8, len: usize) -> Result<Guard, Full> {
    INSTALL.call_once(install);
    for (i, s) in TABLE.iter().enumerate() {
        // Relaxed: a hint; the CAS below decides.
        let q = s.seq.load(Ordering::Relaxed);
        if q & 1 == 1 || s.len.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // Acquire: we see the last writer's stores to this slot; the Release fence keeps our
        // stores below after the odd sequence number (a seqlock's write side).
        if s.seq.compare_exchange(q, q + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            continue;
        }
        fence(Ordering::Release);
        if s.len.load(Ordering::Relaxed) != 0 {
            // Taken between our hint and the CAS.
            s.seq.store(q + 2, Ordering::Release);
            continue;
        }
        // Relaxed inside the write section: published by the Release store of `seq`.
        s.base.store(base as usize, Ordering::Relaxed);
        s.len.store(len, Ordering::Relaxed);
        s.faulted.store(false, Ordering::Relaxed);
        // Release: the slot's contents before the even sequence number.
        s.seq.store(q + 2, Ordering::Release);
        return Ok(Guard { slot: i });
    }
    Err(Full)
}

impl Guard {
    /// True once a fault inside this mapping was survived (its contents are now zeros).
    pub fn faulted(&self) -> bool {
        // Acquire: pairs with the handler's Release store.
        TABLE[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        // Only the owner changes a taken slot, so the sequence number is even and ours here.
        // Relaxed load + Release fence: the seqlock write side, as in register.
        let q = s.seq.load(Ordering::Relaxed);
        s.seq.store(q + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        s.base.store(0, Ordering::Relaxed);
        s.len.store(0, Ordering::Relaxed);
        // Release: the cleared slot before the even sequence number.
        s.seq.store(q + 2, Ordering::Release);
    }
}

/// Faults inside guest mappings this process survived.
pub fn faults() -> u64 {
    // Relaxed: a statistic.
    FAULTS.load(Ordering::Relaxed)
}

/// The registered mapping holding `addr`: (slot, base, len). Async-signal-safe: atomics only.
fn find(addr: usize) -> Option<(usize, usize, usize)> {
    for (i, s) in TABLE.iter().enumerate() {
        // Acquire / fence / re-read: a seqlock read; a slot that changes meanwhile is skipped
        // (it cannot be the faulting mapping, which is held alive, see the module doc).
        let q = s.seq.load(Ordering::Acquire);
        if q & 1 == 1 {
            continue;
        }
        let (base, len) = (s.base.load(Ordering::Relaxed), s.len.load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != q || len == 0 {
            continue;
        }
        if addr >= base && addr - base < len {
            return Some((i, base, len));
        }
    }
    None
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a handler installed with SA_SIGINFO;
    // si_addr is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: __errno_location returns this thread's errno; saved and restored around our
    // system call so that the interrupted code sees its own.
    let errno = unsafe { *libc::__errno_location() };
    if let Some((slot, base, len)) = find(addr) {
        // SAFETY: [base, base + len) is a guest mapping that stays mapped while the faulting
        // thread uses it (module doc); replacing it with private anonymous memory of the same
        // size affects nothing else. mmap is a plain system call (no lock, no allocation).
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            // Release: the replacement before the mark the control thread reads (Acquire).
            TABLE[slot].faulted.store(true, Ordering::Release);
            // Relaxed: a statistic.
            FAULTS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    // SAFETY: `info` and `ctx` are the kernel's, passed on unchanged.
    unsafe { pass_on(sig, info, ctx) };
}

/// Hands a SIGBUS that is not ours to the action installed before ours; with none (or the
/// default), restores the default action, so that the fault raised again when we return kills
/// the process as it would have without us.
///
/// # Safety
/// Only from [`on_sigbus`], with the kernel's arguments.
unsafe fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Acquire: the saved action was written before the pointer was published.
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is null or a leaked, never freed, never modified sigaction.
    let prev = unsafe { prev.as_ref() };
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; sigaction is a system call.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        return;
    }
    let flags = prev.map_or(0, |p| p.sa_flags);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO action's handler has this signature; we pass the kernel's
        // arguments through.
        let f = unsafe {
            std::mem::transmute::<libc::sighandler_t, extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)>(
                handler,
            )
        };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let f = unsafe { std::mem::transmute::<libc::sighandler_t, extern "C" fn(libc::c_int)>(handler) };
        f(sig);
    }
}

fn install() {
    // SAFETY: zeroed sigactions are valid; the first call only reads the action in force, the
    // second installs ours (SA_SIGINFO handler, empty mask, on the alternate stack if the thread
    // has one). The previous action is leaked so that the handler may read it at any time.
    unsafe {
        let mut prev: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut prev) == 0 {
            // Release: the action's fields before the pointer.
            PREVIOUS.store(Box::into_raw(Box::new(prev)), Ordering::Release);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            log::error!(
                "vhost-user: cannot install the SIGBUS handler ({}): a frontend that truncates its memory \
                 file will kill the process",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::Mapping;
    use crate::testutil::memfd;

    #[test]
    fn slots_are_found_and_freed() {
        let a = register(0x1000_0000 as *mut u8, 0x2000).unwrap();
        assert_eq!(find(0x1000_1fff).map(|f| f.0), Some(a.slot));
        assert_eq!(find(0x1000_2000), None, "one past the end");
        drop(a);
        assert_eq!(find(0x1000_0000), None);
        let b = register(0x2000_0000 as *mut u8, 0x1000).unwrap();
        assert!(!b.faulted());
    }

    #[test]
    fn a_truncated_file_is_survived() {
        let f = memfd("sigbus-test", 4 * 4096);
        let m = Mapping::map_file(&f, 4 * 4096).unwrap();
        let p = m.base();
        // SAFETY: inside the live mapping.
        unsafe { p.add(3 * 4096).write_volatile(7) };
        f.set_len(4096).unwrap();
        // Beyond the new end of the file: SIGBUS without the guard. With it, the mapping is
        // now zero-filled anonymous memory and the access completes.
        // SAFETY: still inside our mapping (the handler keeps it mapped).
        let v = unsafe { p.add(3 * 4096).read_volatile() };
        assert_eq!(v, 0, "the lost page reads as zeros");
        assert!(m.faulted(), "the mapping is marked");
        assert!(faults() >= 1);
        // SAFETY: as above; writable too.
        unsafe { p.add(2 * 4096).write_volatile(1) };
    }
}
