//! SIGINT / SIGTERM as a stop request.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: async-signal-safe store of a flag that carries no data.
    STOP.store(true, Ordering::Relaxed);
}

/// Installs handlers so that SIGINT and SIGTERM set the flag read by [`stop_requested`].
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler that only stores to an atomic is
        // async-signal-safe; sigaction has no other preconditions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived (after [`install`]).
pub fn stop_requested() -> bool {
    // Relaxed: see on_signal.
    STOP.load(Ordering::Relaxed)
}
