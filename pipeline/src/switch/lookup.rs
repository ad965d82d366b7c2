//! Batched FDB lookups: the whole burst's keys are computed and both buckets of each are
//! prefetched before the first is read (DPDK's `rte_hash_lookup_bulk`, VPP's `l2fib_lookup_4`),
//! so that the cache misses of a large table overlap instead of queueing one behind another.

use fastpath_mempool::{Batch, MAX_BURST};

use crate::switch::fdb::{self, Buckets, Fdb};
use crate::switch::meta;
use crate::switch::vtep::VtepAddr;

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
    pub outer: [VtepAddr; MAX_BURST],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            src: [0; MAX_BURST],
            src_b: [Buckets::default(); MAX_BURST],
            dst: [0; MAX_BURST],
            dst_b: [Buckets::default(); MAX_BURST],
            outer: [VtepAddr::default(); MAX_BURST],
        }
    }
}

/// Computes the keys of every packet to learn and look up, and prefetches their buckets (a
/// key the same as the one before reuses its buckets); returns how many keys it hashed.
#[inline]
pub fn prepare(fdb: &Fdb, batch: &Batch, s: &mut Scratch) -> usize {
    let (mut last_src, mut last_dst) = ((0, Buckets::default()), (0, Buckets::default()));
    let mut hashed = 0;
    for (i, m) in batch.iter().enumerate() {
        if meta::action(m) != meta::LEARN {
            continue;
        }
        let (dst, src) = fdb::frame_keys(m.segment(), m.data());
        if src != last_src.0 {
            last_src = (src, fdb.hash(src));
            fdb.prefetch(last_src.1);
            hashed += 1;
        }
        s.src[i] = src;
        s.src_b[i] = last_src.1;
        if fdb::is_group(dst) {
            s.dst[i] = 0;
            continue;
        }
        if dst != last_dst.0 {
            last_dst = (dst, fdb.hash(dst));
            fdb.prefetch(last_dst.1);
            hashed += 1;
        }
        s.dst[i] = dst;
        s.dst_b[i] = last_dst.1;
    }
    hashed
}
