//! SIGINT / SIGTERM as a stop request, and SIGHUP as a reload request.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: async-signal-safe store of a flag that carries no data.
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_hangup(_: libc::c_int) {
    // Relaxed: as in on_signal.
    RELOAD.store(true, Ordering::Relaxed);
}

fn handle(sig: libc::c_int, f: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a plain handler that only stores to an atomic is
    // async-signal-safe; sigaction has no other preconditions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = f as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Installs handlers so that SIGINT and SIGTERM set the flag read by [`stop_requested`].
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        handle(sig, on_signal);
    }
}

/// True once SIGINT or SIGTERM arrived (after [`install`]).
pub fn stop_requested() -> bool {
    // Relaxed: see on_signal.
    STOP.load(Ordering::Relaxed)
}

/// Installs a handler so that SIGHUP sets the flag taken by [`reload_requested`] (the Unix
/// convention for "read your configuration again"), instead of ending the process.
pub fn install_reload() {
    handle(libc::SIGHUP, on_hangup);
}

/// True once per SIGHUP received since the last call (after [`install_reload`]); several
/// signals between two calls count once.
pub fn reload_requested() -> bool {
    // Relaxed: see on_hangup.
    RELOAD.swap(false, Ordering::Relaxed)
}
