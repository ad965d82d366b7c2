//! A burst of mbufs: the unit every rx, stage and tx call works on.

use std::fmt;
use std::ops::{Deref, DerefMut};

use arrayvec::ArrayVec;

use crate::mbuf::Mbuf;

/// Largest burst a [`Batch`] holds.
pub const MAX_BURST: usize = 256;
/// Default burst size (DPDK's usual 32).
pub const DEFAULT_BURST: usize = 32;

/// Up to [`MAX_BURST`] mbufs, inline (no heap). Dropping a batch drops its mbufs (slow path);
/// the fast path empties it into a [`crate::PoolCache`].
#[derive(Default)]
pub struct Batch {
    v: ArrayVec<Mbuf, MAX_BURST>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("len", &self.v.len()).finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch { v: ArrayVec::new() }
    }

    /// Room left.
    #[inline(always)]
    pub fn remaining_capacity(&self) -> usize {
        self.v.remaining_capacity()
    }

    /// Appends `m`, or gives it back when full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        self.v.try_push(m).map_err(|e| e.element())
    }

    /// Appends without checking room.
    ///
    /// # Safety
    /// The batch must not be full.
    #[inline(always)]
    pub unsafe fn push_unchecked(&mut self, m: Mbuf) {
        // SAFETY: per the contract there is room.
        unsafe { self.v.push_unchecked(m) }
    }

    /// Removes the last mbuf.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<Mbuf> {
        self.v.pop()
    }

    /// Takes every mbuf out, in order.
    #[inline(always)]
    pub fn drain_all(&mut self) -> arrayvec::Drain<'_, Mbuf, MAX_BURST> {
        self.v.drain(..)
    }

    /// Takes the mbufs from index `from` on, in order.
    #[inline(always)]
    pub fn drain_from(&mut self, from: usize) -> arrayvec::Drain<'_, Mbuf, MAX_BURST> {
        self.v.drain(from..)
    }

    /// Takes the first `n` mbufs, in order; the rest move to the front.
    #[inline(always)]
    pub fn drain_front(&mut self, n: usize) -> arrayvec::Drain<'_, Mbuf, MAX_BURST> {
        self.v.drain(..n)
    }

    /// Moves every mbuf of `other` to the end of this batch, as many as fit; returns how many.
    pub fn append(&mut self, other: &mut Batch) -> usize {
        let n = other.len().min(self.remaining_capacity());
        for m in other.v.drain(..n) {
            // SAFETY: n is bounded by the remaining capacity.
            unsafe { self.v.push_unchecked(m) };
        }
        n
    }

    /// The underlying vector, for rings that move mbufs in and out in bulk.
    #[inline(always)]
    pub fn as_vec_mut(&mut self) -> &mut ArrayVec<Mbuf, MAX_BURST> {
        &mut self.v
    }

    /// Keeps the mbufs for which `keep` returns true and moves the others to the end of `out`.
    /// Both keep their relative order. When `out` is full, the rest are kept.
    #[inline]
    pub fn partition_into(&mut self, out: &mut Batch, mut keep: impl FnMut(&mut Mbuf) -> bool) {
        let len = self.v.len();
        // Soundness: the length is set to 0 while elements are moved, so a panic in `keep` leaks the remaining
        // mbufs instead of dropping any twice. Each element r < len is either moved down to w <= r (non-overlapping
        // when w != r) or read out exactly once into `out`, which has room (checked before each push); finally the w
        // kept ones are the prefix.
        // SAFETY: every element is moved or read out exactly once and the length is 0 meanwhile.
        unsafe {
            self.v.set_len(0);
            let base = self.v.as_mut_ptr();
            let mut w = 0;
            for r in 0..len {
                let p = base.add(r);
                if out.v.is_full() || keep(&mut *p) {
                    if w != r {
                        std::ptr::copy_nonoverlapping(p, base.add(w), 1);
                    }
                    w += 1;
                } else {
                    out.v.push_unchecked(std::ptr::read(p));
                }
            }
            self.v.set_len(w);
        }
    }
}

impl Deref for Batch {
    type Target = [Mbuf];
    #[inline(always)]
    fn deref(&self) -> &[Mbuf] {
        &self.v
    }
}

impl DerefMut for Batch {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [Mbuf] {
        &mut self.v
    }
}
