//! The remote VTEPs: address, neighbour (the MAC to send to) and the time of the last
//! solicitation, in a table of fixed size shared by the lcores and the control side.
//!
//! Ids are never reused: a VTEP is published once (its address written, then its state stored
//! with Release) and stays; lcores read the state with Acquire before the address. The
//! neighbour is one 64-bit word (MAC and state), so an lcore reads either the old or the new
//! MAC, never half of each: that word is the part of the outer header template that changes,
//! patched into every packet, so a changed MAC needs no template rebuild. The control side is
//! the only writer of addresses and neighbour words; lcores write only the solicitation time
//! (a compare-and-swap, so one lcore sends each solicitation).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::checksum;

/// Most VTEPs (configured and learned).
pub const MAX_VTEPS: usize = 4096;
/// Least time between two solicitations for one VTEP.
pub const SOLICIT_INTERVAL_NS: u64 = 100_000_000;

/// Neighbour states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// No MAC: packets to the VTEP are dropped and a solicitation is sent.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Not confirmed for a while: still used, and a solicitation is sent (rate-limited).
    Stale,
    /// From the config: never expires.
    Permanent,
}

impl NeighState {
    fn code(self) -> u64 {
        match self {
            NeighState::Incomplete => 0,
            NeighState::Reachable => 1,
            NeighState::Stale => 2,
            NeighState::Permanent => 3,
        }
    }

    fn of(code: u64) -> NeighState {
        match code & 3 {
            1 => NeighState::Reachable,
            2 => NeighState::Stale,
            3 => NeighState::Permanent,
            _ => NeighState::Incomplete,
        }
    }

    /// The name shown in stats.
    pub fn name(self) -> &'static str {
        match self {
            NeighState::Incomplete => "incomplete",
            NeighState::Reachable => "reachable",
            NeighState::Stale => "stale",
            NeighState::Permanent => "permanent",
        }
    }
}

/// A VTEP's neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    /// The MAC (meaningless when incomplete).
    pub mac: [u8; 6],
    /// The state.
    pub state: NeighState,
}

impl Neigh {
    fn word(self) -> u64 {
        let m = self.mac;
        u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]) | self.state.code() << 48
    }

    /// The entry stored as `w` (see [`Vteps::neigh_word`]).
    pub fn of(w: u64) -> Neigh {
        let b = w.to_be_bytes();
        Neigh { mac: [b[2], b[3], b[4], b[5], b[6], b[7]], state: NeighState::of(w >> 48) }
    }
}

const FREE: u32 = 0;
const V4: u32 = 1;
const V6: u32 = 2;

#[derive(Default)]
#[repr(align(64))]
struct Slot {
    state: AtomicU32,
    /// One's-complement sum of the address's 16-bit words (for the outer checksums).
    sum: AtomicU32,
    addr: [AtomicU64; 2],
    neigh: AtomicU64,
    solicited: AtomicU64,
}

/// The table.
pub struct Vteps {
    slots: Box<[Slot]>,
}

impl fmt::Debug for Vteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vteps").finish_non_exhaustive()
    }
}

impl Default for Vteps {
    fn default() -> Self {
        Vteps { slots: (0..MAX_VTEPS).map(|_| Slot::default()).collect() }
    }
}

/// An address as the fast path keeps it: two words, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`),
/// read straight from a header (no `IpAddr` enum to build, move and match per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VtepAddr([u64; 2]);

const MAPPED: u64 = 0xffff_0000_0000;

impl VtepAddr {
    /// An IPv4 address from its 4 bytes.
    #[inline(always)]
    pub fn v4(b: &[u8]) -> VtepAddr {
        VtepAddr([0, MAPPED | u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64])
    }

    /// An IPv6 address from its 16 bytes.
    #[inline(always)]
    pub fn v6(b: &[u8]) -> VtepAddr {
        let w = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        VtepAddr([w(0), w(8)])
    }

    /// True for an IPv4 address.
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.0[0] == 0 && self.0[1] >> 32 == 0xffff
    }

    /// The two words (a hash input).
    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        self.0
    }

    /// As an `IpAddr`.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::from((self.0[1] as u32).to_be_bytes())
        } else {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.0[0].to_be_bytes());
            b[8..].copy_from_slice(&self.0[1].to_be_bytes());
            IpAddr::from(b)
        }
    }
}

impl From<IpAddr> for VtepAddr {
    fn from(a: IpAddr) -> VtepAddr {
        match a {
            IpAddr::V4(v) => VtepAddr::v4(&v.octets()),
            IpAddr::V6(v) => VtepAddr::v6(&v.octets()),
        }
    }
}

impl Vteps {
    fn slot(&self, id: u16) -> Option<&Slot> {
        self.slots.get(id as usize)
    }

    /// The address of VTEP `id`, when published.
    #[inline]
    pub fn addr(&self, id: u16) -> Option<IpAddr> {
        self.vtep_addr(id).map(|a| a.ip())
    }

    /// The address of VTEP `id`, when published, as the fast path keeps it.
    #[inline]
    pub fn vtep_addr(&self, id: u16) -> Option<VtepAddr> {
        let s = self.slot(id)?;
        // Acquire: pairs with publish(); the address words are written before.
        if s.state.load(Ordering::Acquire) == FREE {
            return None;
        }
        // Relaxed: written once before the state was published.
        Some(VtepAddr([s.addr[0].load(Ordering::Relaxed), s.addr[1].load(Ordering::Relaxed)]))
    }

    /// True when VTEP `id` has address `a`.
    #[inline]
    pub fn is(&self, id: u16, a: &VtepAddr) -> bool {
        self.vtep_addr(id).is_some_and(|v| v == *a)
    }

    /// The address's checksum sum (see [`crate::stages::tunnel::OuterDest`]).
    #[inline]
    pub fn addr_sum(&self, id: u16) -> u32 {
        // Relaxed: written once before the state was published (read after addr()).
        self.slot(id).map_or(0, |s| s.sum.load(Ordering::Relaxed))
    }

    /// The neighbour of VTEP `id`.
    #[inline]
    pub fn neigh(&self, id: u16) -> Neigh {
        Neigh::of(self.neigh_word(id))
    }

    /// The neighbour word of VTEP `id` as stored (it changes whenever the MAC or the state
    /// does: a cheap test that a cached copy is current).
    #[inline]
    pub fn neigh_word(&self, id: u16) -> u64 {
        // Relaxed: one word, read whole; the MAC and state in it belong together.
        self.slot(id).map_or(0, |s| s.neigh.load(Ordering::Relaxed))
    }

    /// Claims the right to solicit VTEP `id` at time `now_ns`: true for the one caller per
    /// [`SOLICIT_INTERVAL_NS`].
    #[inline]
    pub fn claim_solicit(&self, id: u16, now_ns: u64) -> bool {
        let Some(s) = self.slot(id) else { return false };
        // Relaxed: a rate limiter; the CAS makes one lcore the winner, and nothing else is
        // published with it.
        let last = s.solicited.load(Ordering::Relaxed);
        if last != 0 && now_ns.wrapping_sub(last) < SOLICIT_INTERVAL_NS {
            return false;
        }
        s.solicited.compare_exchange(last, now_ns.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Publishes VTEP `id` at `addr` (control side, once per id).
    pub fn publish(&self, id: u16, addr: IpAddr) {
        let Some(s) = self.slot(id) else { return };
        let w = VtepAddr::from(addr).0;
        let sum = match addr {
            IpAddr::V4(v) => checksum::sum(&v.octets()),
            IpAddr::V6(v) => checksum::sum(&v.octets()),
        };
        // Relaxed: published by the Release store of the state below.
        s.addr[0].store(w[0], Ordering::Relaxed);
        s.addr[1].store(w[1], Ordering::Relaxed);
        s.sum.store(sum as u32, Ordering::Relaxed);
        s.state.store(if addr.is_ipv4() { V4 } else { V6 }, Ordering::Release);
    }

    /// Sets the neighbour of VTEP `id` (control side).
    pub fn set_neigh(&self, id: u16, n: Neigh) {
        if let Some(s) = self.slot(id) {
            // Relaxed: one self-contained word (see neigh()).
            s.neigh.store(n.word(), Ordering::Relaxed);
        }
    }
}
