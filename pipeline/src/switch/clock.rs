//! The switch's clock: the TSC in production (read once per burst), or a clock that tests set.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fastpath_pmd::time::{rdtsc, tsc_hz};

/// Nanoseconds since the switch started, from the TSC or set by hand.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    /// TSC ticks since `base`, scaled by `mult / 2^32` into nanoseconds.
    Tsc {
        base: u64,
        mult: u64,
    },
    Manual(Arc<AtomicU64>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Tsc { .. } => f.write_str("Clock(tsc)"),
            Source::Manual(t) => write!(f, "Clock(manual {} ns)", t.load(Ordering::Relaxed)),
        }
    }
}

/// The handle that sets a manual clock.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        // Relaxed: a time value; whoever reads it next uses it.
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Sets the clock.
    pub fn set(&self, since_start: Duration) {
        // Relaxed: see advance().
        self.0.store(since_start.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock {
    /// The TSC, from now.
    pub fn system() -> Clock {
        let hz = tsc_hz().max(1);
        let mult = ((1_000_000_000u128 << 32) / hz as u128) as u64;
        Clock(Source::Tsc { base: rdtsc(), mult })
    }

    /// A clock that stays where its handle sets it (starting at 1 s, so that time 0 is never
    /// "now").
    pub fn manual() -> (Clock, ManualClock) {
        let t = Arc::new(AtomicU64::new(1_000_000_000));
        (Clock(Source::Manual(t.clone())), ManualClock(t))
    }

    /// Nanoseconds since the start.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match &self.0 {
            Source::Tsc { base, mult } => ((rdtsc().wrapping_sub(*base) as u128 * *mult as u128) >> 32) as u64,
            // Relaxed: a time value.
            Source::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// The time of one burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    /// Nanoseconds since the start.
    pub ns: u64,
    /// Whole seconds since the start (FDB last-seen times).
    pub secs: u32,
}

impl Now {
    /// The time `ns`.
    pub fn at(ns: u64) -> Now {
        Now { ns, secs: (ns / 1_000_000_000) as u32 }
    }
}
