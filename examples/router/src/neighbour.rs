//! The neighbour table (ARP and ND cache): one writer, the control thread, and lock-free readers,
//! the lcores; plus the events lcores send the control thread when they learn a neighbour.
//!
//! Lcores never write the table: two of them could learn at once. They send what they learn
//! through their own SPSC ring ([`Event`]); the control thread validates it and writes. An entry
//! is claimed once (key, then MAC, then its state with Release: a reader that sees the state
//! sees the key) and never removed, so a reader needs no lock and no retry; a MAC that changes
//! is one atomic 64-bit store.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fastpath_pipeline::wire::EthernetAddress;

/// What an lcore tells the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `ip` on `port` has `mac` (from an ARP message or a neighbour solicitation or
    /// advertisement addressed to us).
    Learn {
        /// The port it was heard on.
        port: u16,
        /// Its address.
        ip: IpAddr,
        /// Its MAC.
        mac: EthernetAddress,
    },
}

/// Slots in the table (a power of two); a key is looked for in at most [`PROBES`] of them.
pub const CAPACITY: usize = 4096;
/// Slots probed per lookup.
pub const PROBES: usize = 16;

#[derive(Default)]
struct Slot {
    /// 0: free; else the port + 1.
    state: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
    /// The MAC in the low 48 bits.
    mac: AtomicU64,
}

/// The table readers share.
pub struct Neighbours {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbours").finish_non_exhaustive()
    }
}

/// An address as one 128-bit key (IPv4 as `::ffff:a.b.c.d`).
pub fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The key of an IPv4 address given as a host-order `u32`.
#[inline]
pub fn key4(a: u32) -> u128 {
    0xffff_0000_0000 | a as u128
}

#[inline]
fn start(port: u16, k: u128) -> usize {
    let h = (k as u64 ^ (k >> 64) as u64 ^ port as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 52) as usize & (CAPACITY - 1)
}

fn mac_bits(m: EthernetAddress) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&m.0);
    u64::from_le_bytes(b)
}

impl Neighbours {
    /// The MAC of `k` (see [`key`]) on `port`.
    #[inline]
    pub fn get(&self, port: u16, k: u128) -> Option<EthernetAddress> {
        let s0 = start(port, k);
        for i in 0..PROBES {
            let s = &self.slots[(s0 + i) & (CAPACITY - 1)];
            // Acquire: the key was stored before the state.
            let state = s.state.load(Ordering::Acquire);
            if state == 0 {
                return None;
            }
            // Relaxed: written once, before the state (above).
            if state == port as u64 + 1
                && s.hi.load(Ordering::Relaxed) == (k >> 64) as u64
                && s.lo.load(Ordering::Relaxed) == k as u64
            {
                // Relaxed: one atomic word; which of two MACs a racing change gives is moot.
                let b = s.mac.load(Ordering::Relaxed).to_le_bytes();
                return Some(EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]]));
            }
        }
        None
    }
}

/// The control thread's side: the only writer.
#[derive(Debug)]
pub struct NeighbourWriter {
    table: Arc<Neighbours>,
    len: usize,
}

/// What [`NeighbourWriter::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// The MAC changed.
    Changed,
    /// Nothing new.
    Same,
    /// No free slot near the key.
    Full,
}

impl NeighbourWriter {
    /// An empty table.
    pub fn new() -> NeighbourWriter {
        let slots = (0..CAPACITY).map(|_| Slot::default()).collect();
        NeighbourWriter { table: Arc::new(Neighbours { slots }), len: 0 }
    }

    /// The table, for readers.
    pub fn table(&self) -> Arc<Neighbours> {
        self.table.clone()
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records `ip` on `port` at `mac`.
    pub fn learn(&mut self, port: u16, ip: IpAddr, mac: EthernetAddress) -> Learned {
        let k = key(ip);
        let s0 = start(port, k);
        for i in 0..PROBES {
            let s = &self.table.slots[(s0 + i) & (CAPACITY - 1)];
            // Relaxed: this thread is the only writer.
            let state = s.state.load(Ordering::Relaxed);
            if state == 0 {
                // Relaxed stores, then the state with Release: readers load it with Acquire.
                s.hi.store((k >> 64) as u64, Ordering::Relaxed);
                s.lo.store(k as u64, Ordering::Relaxed);
                s.mac.store(mac_bits(mac), Ordering::Relaxed);
                s.state.store(port as u64 + 1, Ordering::Release);
                self.len += 1;
                return Learned::New;
            }
            // Relaxed: our own earlier stores.
            if state == port as u64 + 1
                && s.hi.load(Ordering::Relaxed) == (k >> 64) as u64
                && s.lo.load(Ordering::Relaxed) == k as u64
            {
                // Relaxed: as in the read; one word.
                return if s.mac.swap(mac_bits(mac), Ordering::Relaxed) == mac_bits(mac) {
                    Learned::Same
                } else {
                    Learned::Changed
                };
            }
        }
        Learned::Full
    }
}

impl Default for NeighbourWriter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_and_look_up() {
        let mut w = NeighbourWriter::new();
        let t = w.table();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let m1 = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let m2 = EthernetAddress([2, 0, 0, 0, 0, 2]);
        assert_eq!(t.get(0, key(a)), None);
        assert_eq!(w.learn(0, a, m1), Learned::New);
        assert_eq!(t.get(0, key4(0x0a00_0002)), Some(m1));
        assert_eq!(t.get(1, key(a)), None, "per port");
        assert_eq!(w.learn(0, a, m1), Learned::Same);
        assert_eq!(w.learn(0, a, m2), Learned::Changed);
        assert_eq!(t.get(0, key(a)), Some(m2));
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(w.learn(0, v6, m1), Learned::New);
        assert_eq!(t.get(0, key(v6)), Some(m1));
        // Fill a neighbourhood: many keys, all found.
        for i in 0..2000u32 {
            assert_ne!(w.learn(1, IpAddr::V4((0x0b00_0000 + i).into()), m1), Learned::Full);
        }
        assert!((0..2000u32).all(|i| t.get(1, key4(0x0b00_0000 + i)) == Some(m1)));
        assert_eq!(w.len(), 2002);
    }
}
