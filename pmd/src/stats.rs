//! Counters: written by one thread (the queue's or lcore's owner), read by any.
//!
//! A [`Counter`] is an `AtomicU64` updated with a relaxed load and store rather than a
//! read-modify-write: there is exactly one writer, so no update is lost, and on x86 this is a
//! plain `add` to a cache line the writer owns. Readers sum counters when they ask.

use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer statistics counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the owning thread may call this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Relaxed: a statistic with a single writer; it orders nothing.
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Sets the value (for counters mirrored from elsewhere, e.g. kernel statistics).
    #[inline(always)]
    pub fn set(&self, v: u64) {
        // Relaxed: see add.
        self.0.store(v, Ordering::Relaxed)
    }

    /// The current value.
    #[inline(always)]
    pub fn get(&self) -> u64 {
        // Relaxed: a snapshot.
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one rx or tx queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Packets received or sent.
    pub packets: Counter,
    /// Bytes received or sent.
    pub bytes: Counter,
    /// Packets dropped at this queue (tx: not accepted by the port; rx: no mbuf or ring full).
    pub drops: Counter,
    /// Malformed input (bad frames, guest errors).
    pub errors: Counter,
}

/// A port's statistics, summed over its queues when read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets dropped on receive (no mbuf, ring full, kernel drops).
    pub rx_drops: u64,
    /// Malformed frames received.
    pub rx_errors: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the port did not accept (freed and counted).
    pub tx_drops: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

impl PortStats {
    /// Adds a queue's counters on the receive side.
    pub fn add_rx(&mut self, q: &QueueStats) {
        self.rx_packets += q.packets.get();
        self.rx_bytes += q.bytes.get();
        self.rx_drops += q.drops.get();
        self.rx_errors += q.errors.get();
    }

    /// Adds a queue's counters on the transmit side.
    pub fn add_tx(&mut self, q: &QueueStats) {
        self.tx_packets += q.packets.get();
        self.tx_bytes += q.bytes.get();
        self.tx_drops += q.drops.get();
        self.tx_errors += q.errors.get();
    }

    /// All drops of the port.
    pub fn drops(&self) -> u64 {
        self.rx_drops + self.tx_drops
    }
}
