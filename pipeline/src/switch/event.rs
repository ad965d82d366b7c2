//! Events from the lcores to the control side, through one bounded SPSC ring per lcore
//! ([`fastpath_mempool::ring::spsc`]): what an lcore saw and cannot write itself, because the
//! control side is the only writer of the FDB and of the neighbour entries.

use std::net::IpAddr;

use crate::switch::fdb::Place;

/// Events in flight per lcore at most; a full ring drops the event (counted `learn-lost`).
pub const RING_SIZE: usize = 4096;

/// One event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// (segment, MAC) `key` was seen at a local port (`place`): new, or moved there.
    Learn {
        /// FDB key.
        key: u64,
        /// Where it was seen.
        place: Place,
    },
    /// `key` came out of a tunnel from the VTEP at `vtep` (which may be new).
    LearnRemote {
        /// FDB key.
        key: u64,
        /// Outer source address.
        vtep: IpAddr,
    },
    /// The VTEP (or any host) at `addr` has MAC `mac` (an ARP reply or request, an NA or NS).
    Neighbour {
        /// Its address.
        addr: IpAddr,
        /// Its MAC.
        mac: [u8; 6],
    },
}
