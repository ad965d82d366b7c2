//! Batched FDB lookups: the whole burst's keys are computed and both buckets of each are
//! prefetched before the first is read (DPDK's `rte_hash_lookup_bulk`, VPP's `l2fib_lookup_4`),
//! so that the cache misses of a large table overlap instead of queueing one behind another.

use std::net::{IpAddr, Ipv4Addr};

use fastpath_mempool::{Batch, MAX_BURST};

use crate::switch::fdb::{self, Buckets, Fdb};
use crate::switch::meta;

/// Per-burst lookup state, by position in the batch.
#[derive(Debug)]
pub struct Scratch {
    /// Source keys.
    pub src: [u64; MAX_BURST],
    /// Their buckets.
    pub src_b: [Buckets; MAX_BURST],
    /// Destination keys (0: not unicast, nothing to look up).
    pub dst: [u64; MAX_BURST],
    /// Their buckets.
    pub dst_b: [Buckets; MAX_BURST],
    /// Outer source of decapsulated packets.
    pub outer: [IpAddr; MAX_BURST],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            src: [0; MAX_BURST],
            src_b: [Buckets::default(); MAX_BURST],
            dst: [0; MAX_BURST],
            dst_b: [Buckets::default(); MAX_BURST],
            outer: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MAX_BURST],
        }
    }
}

/// Computes the keys of every packet to learn and look up, and prefetches their buckets.
#[inline]
pub fn prepare(fdb: &Fdb, batch: &Batch, s: &mut Scratch) {
    for (i, m) in batch.iter().enumerate() {
        if meta::action(m) != meta::LEARN {
            continue;
        }
        let (d, seg) = (m.data(), m.segment());
        let k = fdb::key(seg, &d[6..12]);
        let b = fdb.hash(k);
        fdb.prefetch(b);
        s.src[i] = k;
        s.src_b[i] = b;
        if d[0] & 1 == 0 {
            let k = fdb::key(seg, &d[0..6]);
            let b = fdb.hash(k);
            fdb.prefetch(b);
            s.dst[i] = k;
            s.dst_b[i] = b;
        } else {
            s.dst[i] = 0;
        }
    }
}
