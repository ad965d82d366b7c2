//! Cheap timestamps: the TSC on x86_64 (constant-rate on every machine we run on), calibrated
//! once against the monotonic clock; a monotonic-clock fallback elsewhere.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions and is available on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// TSC ticks per second (measured once, over 50 ms).
pub fn tsc_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return 1_000_000_000;
        }
        let (t0, c0) = (Instant::now(), rdtsc());
        std::thread::sleep(Duration::from_millis(50));
        let (t1, c1) = (Instant::now(), rdtsc());
        let ns = (t1 - t0).as_nanos().max(1);
        ((c1.wrapping_sub(c0) as u128 * 1_000_000_000) / ns) as u64
    })
}

/// Converts TSC ticks to seconds.
pub fn tsc_to_secs(ticks: u64) -> f64 {
    ticks as f64 / tsc_hz() as f64
}
