//! Bounded lock-free rings, after DPDK's `rte_ring`.
//!
//! [`Ring`] is multi-producer / multi-consumer: each side reserves a span of slots by moving its
//! `head` with a compare-and-swap, fills or drains the span, then publishes it by moving its `tail`
//! in reservation order. [`spsc::channel`] is the single-producer / single-consumer form used for
//! hand-off between two lcores: no compare-and-swap, and the producer and consumer are separate
//! types so that each side is owned by exactly one thread.
//!
//! Naming follows DPDK (style rule 7): `*_burst` moves `0..=n` items, `*_bulk` moves `n` or none.
//! Items not moved stay with the caller. Indices are free-running `u32` counters; a slot is
//! `index & mask`. Capacity is a power of two and every slot is usable.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

/// Moves `n` items from `src` into the slots starting at free-running index `idx`, in at most two
/// contiguous copies.
///
/// # Safety
/// The `n` slots must be reserved for the caller and free; `src` must hold `n` initialised items
/// that the caller gives up (they must not be dropped by the caller afterwards).
#[inline(always)]
unsafe fn copy_in<T>(slots: &[UnsafeCell<MaybeUninit<T>>], mask: u32, idx: u32, src: *const T, n: usize) {
    let cap = mask as usize + 1;
    let start = (idx & mask) as usize;
    let first = n.min(cap - start);
    // UnsafeCell<MaybeUninit<T>> has the layout of T; the slice is `cap` slots long.
    let base = slots.as_ptr() as *mut T;
    // SAFETY: per the contract; start + first <= cap and n - first <= start, so both copies stay
    // inside the slot array and do not overlap the source (a different allocation).
    unsafe {
        std::ptr::copy_nonoverlapping(src, base.add(start), first);
        std::ptr::copy_nonoverlapping(src.add(first), base, n - first);
    }
}

/// Moves `n` items out of the slots starting at free-running index `idx` into `dst`.
///
/// # Safety
/// The `n` slots must be reserved for the caller and hold initialised items, which the caller now
/// owns (the slots count as empty afterwards); `dst` must have room for `n` items.
#[inline(always)]
unsafe fn copy_out<T>(slots: &[UnsafeCell<MaybeUninit<T>>], mask: u32, idx: u32, dst: *mut T, n: usize) {
    let cap = mask as usize + 1;
    let start = (idx & mask) as usize;
    let first = n.min(cap - start);
    let base = slots.as_ptr() as *const T;
    // SAFETY: per the contract; bounds as in copy_in.
    unsafe {
        std::ptr::copy_nonoverlapping(base.add(start), dst, first);
        std::ptr::copy_nonoverlapping(base, dst.add(first), n - first);
    }
}

/// Moves the first `n` items of `src` out through `f` (which takes ownership of them) and shifts
/// the rest to the front.
#[inline(always)]
fn take_front<T, const N: usize>(src: &mut ArrayVec<T, N>, n: usize, f: impl FnOnce(*const T)) {
    let len = src.len();
    debug_assert!(n <= len);
    // Soundness: the length drops to 0 first so that nothing is dropped twice if `f` panicked; `f` takes the
    // first n items by bitwise copy, the remaining len - n are moved down (overlapping copy), and the length is set to
    // cover exactly them.
    // SAFETY: the length is 0 while items move, and each item is taken or moved exactly once.
    unsafe {
        src.set_len(0);
        let p = src.as_mut_ptr();
        f(p);
        std::ptr::copy(p.add(n), p, len - n);
        src.set_len(len - n);
    }
}

/// Appends `n` items to `dst` written by `f` into its spare room.
#[inline(always)]
fn fill_back<T, const N: usize>(dst: &mut ArrayVec<T, N>, n: usize, f: impl FnOnce(*mut T)) {
    let len = dst.len();
    debug_assert!(n <= N - len);
    // SAFETY: n <= remaining capacity; `f` initialises exactly n items at len.., then they are
    // counted.
    unsafe {
        f(dst.as_mut_ptr().add(len));
        dst.set_len(len + n);
    }
}

#[derive(Default)]
struct HeadTail {
    head: AtomicU32,
    tail: AtomicU32,
}

/// A bounded multi-producer / multi-consumer ring of `T`.
pub struct Ring<T> {
    prod: CachePadded<HeadTail>,
    cons: CachePadded<HeadTail>,
    mask: u32,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: items move between threads through the ring (hence T: Send); each slot is accessed by at
// most one thread at a time because a slot is only touched inside a span reserved by the CAS on
// head and released by the ordered tail store.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; all shared state is atomics, slot access is serialised by the head/tail protocol.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

impl<T> Ring<T> {
    /// A ring holding `capacity` items, rounded up to a power of two (at least 2, at most 2^31).
    pub fn new(capacity: usize) -> Ring<T> {
        let cap = capacity.clamp(2, 1 << 31).next_power_of_two();
        let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
        Ring {
            prod: CachePadded::new(HeadTail::default()),
            cons: CachePadded::new(HeadTail::default()),
            mask: (cap - 1) as u32,
            slots,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// Items published and not yet consumed (a snapshot: other threads may be moving it).
    pub fn len(&self) -> usize {
        // Acquire on both: a consistent-enough snapshot for accounting; never used for safety.
        let c = self.cons.tail.load(Ordering::Acquire);
        let p = self.prod.tail.load(Ordering::Acquire);
        (p.wrapping_sub(c) as usize).min(self.capacity())
    }

    /// True when no item is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, idx: u32) -> *mut MaybeUninit<T> {
        self.slots[(idx & self.mask) as usize].get()
    }

    /// Reserves up to `n` free slots (exactly `n` when `fixed`); returns (first index, count).
    fn reserve_prod(&self, n: u32, fixed: bool) -> (u32, u32) {
        // Relaxed: our own side's head; the CAS below is what makes the reservation exclusive.
        let mut old = self.prod.head.load(Ordering::Relaxed);
        loop {
            // Acquire: the consumers' tail publishes that slots before it were read out, so they
            // may be overwritten.
            let cons_tail = self.cons.tail.load(Ordering::Acquire);
            let free = (self.mask + 1).wrapping_add(cons_tail).wrapping_sub(old);
            let take = if n > free {
                if fixed {
                    return (old, 0);
                }
                free
            } else {
                n
            };
            if take == 0 {
                return (old, 0);
            }
            // Relaxed on success: slot contents are published by the tail store, not the head.
            match self.prod.head.compare_exchange_weak(
                old,
                old.wrapping_add(take),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (old, take),
                Err(cur) => old = cur,
            }
        }
    }

    fn publish_prod(&self, old: u32, n: u32) {
        // Earlier producers publish first: wait until the tail reaches our span. Relaxed load:
        // we only order our own store after theirs, which the Release store below carries.
        while self.prod.tail.load(Ordering::Relaxed) != old {
            std::hint::spin_loop();
        }
        // Release: publishes the slot writes of this span to consumers (their Acquire load).
        self.prod.tail.store(old.wrapping_add(n), Ordering::Release);
    }

    fn reserve_cons(&self, n: u32, fixed: bool) -> (u32, u32) {
        // Relaxed: our own side's head, made exclusive by the CAS.
        let mut old = self.cons.head.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the producers' Release tail store; slot contents are visible.
            let prod_tail = self.prod.tail.load(Ordering::Acquire);
            let avail = prod_tail.wrapping_sub(old);
            let take = if n > avail {
                if fixed || avail > self.mask + 1 {
                    return (old, 0);
                }
                avail
            } else {
                n
            };
            if take == 0 {
                return (old, 0);
            }
            match self.cons.head.compare_exchange_weak(
                old,
                old.wrapping_add(take),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (old, take),
                Err(cur) => old = cur,
            }
        }
    }

    fn publish_cons(&self, old: u32, n: u32) {
        while self.cons.tail.load(Ordering::Relaxed) != old {
            std::hint::spin_loop();
        }
        // Release: our reads of the slots happen before producers may overwrite them.
        self.cons.tail.store(old.wrapping_add(n), Ordering::Release);
    }

    fn enqueue_from<const N: usize>(&self, src: &mut ArrayVec<T, N>, fixed: bool) -> usize {
        let want = src.len().min(u32::MAX as usize) as u32;
        if want == 0 {
            return 0;
        }
        let (start, n) = self.reserve_prod(want, fixed);
        if n == 0 {
            return 0;
        }
        take_front(src, n as usize, |p| {
            // SAFETY: slots start..start+n were reserved for this thread alone by reserve_prod and
            // are free (consumers released them); take_front hands us n items to give up.
            unsafe { copy_in(&self.slots, self.mask, start, p, n as usize) }
        });
        self.publish_prod(start, n);
        n as usize
    }

    fn dequeue_into<const N: usize>(&self, dst: &mut ArrayVec<T, N>, max: usize, fixed: bool) -> usize {
        let want = max.min(dst.remaining_capacity()).min(u32::MAX as usize) as u32;
        if want == 0 {
            return 0;
        }
        let (start, n) = self.reserve_cons(want, fixed);
        fill_back(dst, n as usize, |p| {
            // Soundness: slots start..start+n were reserved for this thread by reserve_cons and hold items
            // published by a producer's Release store (seen by our Acquire load); each is moved out once and the slots
            // become free when publish_cons runs; n <= dst's room.
            // SAFETY: the slots were reserved for this thread and hold published items, each moved out once.
            unsafe { copy_out(&self.slots, self.mask, start, p, n as usize) }
        });
        if n > 0 {
            self.publish_cons(start, n);
        }
        n as usize
    }

    /// Moves up to all of `src` (from the front) into the ring; returns how many moved.
    pub fn enqueue_burst<const N: usize>(&self, src: &mut ArrayVec<T, N>) -> usize {
        self.enqueue_from(src, false)
    }

    /// Moves all of `src` into the ring, or nothing when it does not fit; returns how many moved.
    pub fn enqueue_bulk<const N: usize>(&self, src: &mut ArrayVec<T, N>) -> usize {
        self.enqueue_from(src, true)
    }

    /// Appends up to `max` items to `dst` (bounded by its spare capacity); returns how many.
    pub fn dequeue_burst<const N: usize>(&self, dst: &mut ArrayVec<T, N>, max: usize) -> usize {
        self.dequeue_into(dst, max, false)
    }

    /// Appends exactly `n` items to `dst`, or none when fewer are available; returns how many.
    pub fn dequeue_bulk<const N: usize>(&self, dst: &mut ArrayVec<T, N>, n: usize) -> usize {
        if n > dst.remaining_capacity() {
            return 0;
        }
        self.dequeue_into(dst, n, true)
    }

    /// Enqueues one item, or gives it back when the ring is full.
    pub fn enqueue(&self, item: T) -> Result<(), T> {
        let (start, n) = self.reserve_prod(1, true);
        if n == 0 {
            return Err(item);
        }
        // SAFETY: the slot was reserved for this thread by reserve_prod and is free.
        unsafe { (*self.slot(start)).write(item) };
        self.publish_prod(start, 1);
        Ok(())
    }

    /// Dequeues one item.
    pub fn dequeue(&self) -> Option<T> {
        let (start, n) = self.reserve_cons(1, true);
        if n == 0 {
            return None;
        }
        // SAFETY: the slot was reserved for this thread by reserve_cons and holds a published item.
        let item = unsafe { (*self.slot(start)).assume_init_read() };
        self.publish_cons(start, 1);
        Some(item)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        let mut i = *self.cons.tail.get_mut();
        let end = *self.prod.tail.get_mut();
        while i != end {
            // SAFETY: &mut self: no other thread; slots between the tails hold initialised items.
            unsafe { (*self.slot(i)).assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// Single-producer / single-consumer ring with separate ends.
pub mod spsc {
    use super::*;
    use std::sync::Arc;

    struct Shared<T> {
        /// Written by the producer only.
        head: CachePadded<AtomicU32>,
        /// Written by the consumer only.
        tail: CachePadded<AtomicU32>,
        mask: u32,
        slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    }

    // SAFETY: items cross threads (T: Send); a slot is written only by the producer while it is
    // outside [tail, head) and read only by the consumer while inside, ordered by Release/Acquire.
    unsafe impl<T: Send> Send for Shared<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Sync for Shared<T> {}

    impl<T> Shared<T> {
        fn slot(&self, idx: u32) -> *mut MaybeUninit<T> {
            self.slots[(idx & self.mask) as usize].get()
        }
    }

    impl<T> Drop for Shared<T> {
        fn drop(&mut self) {
            let mut i = *self.tail.get_mut();
            let end = *self.head.get_mut();
            while i != end {
                // SAFETY: both ends are gone (we are the last Arc); [tail, head) is initialised.
                unsafe { (*self.slot(i)).assume_init_drop() };
                i = i.wrapping_add(1);
            }
        }
    }

    /// The producing end of an SPSC ring.
    pub struct Producer<T> {
        shared: Arc<Shared<T>>,
        head: u32,
        cached_tail: u32,
    }

    /// The consuming end of an SPSC ring.
    pub struct Consumer<T> {
        shared: Arc<Shared<T>>,
        tail: u32,
        cached_head: u32,
    }

    impl<T> fmt::Debug for Producer<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("spsc::Producer").field("head", &self.head).finish()
        }
    }
    impl<T> fmt::Debug for Consumer<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("spsc::Consumer").field("tail", &self.tail).finish()
        }
    }

    /// A ring of `capacity` items (rounded up to a power of two) and its two ends.
    pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
        let cap = capacity.clamp(2, 1 << 31).next_power_of_two();
        let shared = Arc::new(Shared {
            head: CachePadded::new(AtomicU32::new(0)),
            tail: CachePadded::new(AtomicU32::new(0)),
            mask: (cap - 1) as u32,
            slots: (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
        });
        (Producer { shared: shared.clone(), head: 0, cached_tail: 0 }, Consumer { shared, tail: 0, cached_head: 0 })
    }

    impl<T: Send> Producer<T> {
        /// Slots free right now (refreshes the consumer's position when needed).
        fn free(&mut self, want: u32) -> u32 {
            let cap = self.shared.mask + 1;
            let mut free = cap.wrapping_add(self.cached_tail).wrapping_sub(self.head);
            if free < want {
                // Acquire: the consumer has finished reading slots before its tail.
                self.cached_tail = self.shared.tail.load(Ordering::Acquire);
                free = cap.wrapping_add(self.cached_tail).wrapping_sub(self.head);
            }
            free
        }

        fn push_from<const N: usize>(&mut self, src: &mut ArrayVec<T, N>, fixed: bool) -> usize {
            let want = src.len() as u32;
            let free = self.free(want);
            let n = if want > free {
                if fixed {
                    return 0;
                }
                free
            } else {
                want
            };
            if n == 0 {
                return 0;
            }
            let (head, mask) = (self.head, self.shared.mask);
            take_front(src, n as usize, |p| {
                // SAFETY: the slots are outside [tail, head): the consumer does not touch them, and
                // we are the only producer; take_front hands us n items to give up.
                unsafe { copy_in(&self.shared.slots, mask, head, p, n as usize) }
            });
            self.head = self.head.wrapping_add(n);
            // Release: publishes the slot writes to the consumer's Acquire load of head.
            self.shared.head.store(self.head, Ordering::Release);
            n as usize
        }

        /// Moves up to all of `src` (front first) into the ring; returns how many moved.
        pub fn enqueue_burst<const N: usize>(&mut self, src: &mut ArrayVec<T, N>) -> usize {
            self.push_from(src, false)
        }

        /// Moves all of `src` or nothing; returns how many moved.
        pub fn enqueue_bulk<const N: usize>(&mut self, src: &mut ArrayVec<T, N>) -> usize {
            self.push_from(src, true)
        }

        /// Enqueues one item or gives it back.
        pub fn enqueue(&mut self, item: T) -> Result<(), T> {
            if self.free(1) == 0 {
                return Err(item);
            }
            // SAFETY: the slot is free and ours alone (single producer).
            unsafe { (*self.shared.slot(self.head)).write(item) };
            self.head = self.head.wrapping_add(1);
            // Release: publishes the slot write.
            self.shared.head.store(self.head, Ordering::Release);
            Ok(())
        }

        /// Ring capacity.
        pub fn capacity(&self) -> usize {
            self.shared.mask as usize + 1
        }
    }

    impl<T: Send> Consumer<T> {
        fn avail(&mut self, want: u32) -> u32 {
            let mut avail = self.cached_head.wrapping_sub(self.tail);
            if avail < want {
                // Acquire: pairs with the producer's Release store; the slots are initialised.
                self.cached_head = self.shared.head.load(Ordering::Acquire);
                avail = self.cached_head.wrapping_sub(self.tail);
            }
            avail
        }

        fn pop_into<const N: usize>(&mut self, dst: &mut ArrayVec<T, N>, max: usize, fixed: bool) -> usize {
            let want = max.min(dst.remaining_capacity()) as u32;
            if want == 0 {
                return 0;
            }
            let avail = self.avail(want);
            let n = if want > avail {
                if fixed {
                    return 0;
                }
                avail
            } else {
                want
            };
            let (tail, mask) = (self.tail, self.shared.mask);
            fill_back(dst, n as usize, |p| {
                // SAFETY: the slots are inside [tail, head) published by the producer; each is
                // moved out once; n <= dst's room.
                unsafe { copy_out(&self.shared.slots, mask, tail, p, n as usize) }
            });
            if n > 0 {
                self.tail = self.tail.wrapping_add(n);
                // Release: our reads finish before the producer reuses these slots.
                self.shared.tail.store(self.tail, Ordering::Release);
            }
            n as usize
        }

        /// Appends up to `max` items to `dst`; returns how many.
        pub fn dequeue_burst<const N: usize>(&mut self, dst: &mut ArrayVec<T, N>, max: usize) -> usize {
            self.pop_into(dst, max, false)
        }

        /// Appends exactly `n` items or none; returns how many.
        pub fn dequeue_bulk<const N: usize>(&mut self, dst: &mut ArrayVec<T, N>, n: usize) -> usize {
            if n > dst.remaining_capacity() {
                return 0;
            }
            self.pop_into(dst, n, true)
        }

        /// Dequeues one item.
        pub fn dequeue(&mut self) -> Option<T> {
            if self.avail(1) == 0 {
                return None;
            }
            // SAFETY: the slot is published and ours to read once.
            let item = unsafe { (*self.shared.slot(self.tail)).assume_init_read() };
            self.tail = self.tail.wrapping_add(1);
            // Release: the read happens before the producer reuses the slot.
            self.shared.tail.store(self.tail, Ordering::Release);
            Some(item)
        }

        /// Items available now.
        pub fn len(&mut self) -> usize {
            self.avail(u32::MAX) as usize
        }

        /// True when nothing is available now.
        pub fn is_empty(&mut self) -> bool {
            self.len() == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn burst_and_bulk_semantics() {
        let r: Ring<u32> = Ring::new(8);
        let mut src: ArrayVec<u32, 16> = (0..10).collect();
        assert_eq!(r.enqueue_bulk(&mut src), 0, "bulk of 10 into 8 moves nothing");
        assert_eq!(src.len(), 10);
        assert_eq!(r.enqueue_burst(&mut src), 8);
        assert_eq!(&src[..], &[8, 9], "unsent items stay with the caller, in order");
        let mut dst: ArrayVec<u32, 16> = ArrayVec::new();
        assert_eq!(r.dequeue_bulk(&mut dst, 9), 0);
        assert_eq!(r.dequeue_burst(&mut dst, 5), 5);
        assert_eq!(&dst[..], &[0, 1, 2, 3, 4]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.enqueue_burst(&mut src), 2);
        assert_eq!(r.dequeue_burst(&mut dst, 100), 5);
        assert_eq!(&dst[5..], &[5, 6, 7, 8, 9]);
        assert!(r.is_empty());
    }

    #[test]
    fn drops_remaining_items() {
        let item = Arc::new(());
        let r = Ring::new(4);
        r.enqueue(item.clone()).unwrap();
        r.enqueue(item.clone()).unwrap();
        drop(r);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    /// Two producers and two consumers; every value arrives exactly once and each producer's
    /// values arrive in order at any one consumer.
    #[test]
    fn mpmc_sequence_under_threads() {
        const PER: u64 = 200_000;
        let r: Arc<Ring<u64>> = Arc::new(Ring::new(64));
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut next = 0;
                    let mut buf: ArrayVec<u64, 32> = ArrayVec::new();
                    while next < PER || !buf.is_empty() {
                        while !buf.is_full() && next < PER {
                            buf.push((p << 32) | next);
                            next += 1;
                        }
                        if r.enqueue_burst(&mut buf) == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                let consumed = consumed.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut last = [None::<u64>; 2];
                    let mut buf: ArrayVec<u64, 32> = ArrayVec::new();
                    while consumed.load(std::sync::atomic::Ordering::Relaxed) < 2 * PER {
                        buf.clear();
                        let n = r.dequeue_burst(&mut buf, 32);
                        if n == 0 {
                            std::thread::yield_now();
                            continue;
                        }
                        consumed.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        for &v in &buf {
                            let (p, s) = ((v >> 32) as usize, v & 0xffff_ffff);
                            if let Some(l) = last[p] {
                                assert!(s > l, "producer {p}: {s} after {l}");
                            }
                            last[p] = Some(s);
                            seen.push(v);
                        }
                    }
                    seen
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers.into_iter().flat_map(|c| c.join().unwrap()).collect();
        assert!(r.is_empty());
        all.sort_unstable();
        let want: Vec<u64> = (0..2u64).flat_map(|p| (0..PER).map(move |s| (p << 32) | s)).collect();
        assert_eq!(all.len(), want.len());
        assert!(all == want, "every value exactly once");
    }

    #[test]
    fn spsc_sequence_under_threads() {
        const N: u64 = 1_000_000;
        let (mut tx, mut rx) = spsc::channel::<u64>(128);
        let t = std::thread::spawn(move || {
            let mut next = 0;
            let mut buf: ArrayVec<u64, 32> = ArrayVec::new();
            while next < N || !buf.is_empty() {
                while !buf.is_full() && next < N {
                    buf.push(next);
                    next += 1;
                }
                if tx.enqueue_burst(&mut buf) == 0 {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0;
        let mut buf: ArrayVec<u64, 64> = ArrayVec::new();
        while expect < N {
            buf.clear();
            rx.dequeue_burst(&mut buf, 64);
            for &v in &buf {
                assert_eq!(v, expect, "sequence broken");
                expect += 1;
            }
        }
        t.join().unwrap();
        assert!(rx.is_empty());
    }

    #[test]
    fn spsc_bulk_and_drop() {
        let (mut tx, mut rx) = spsc::channel::<Arc<()>>(4);
        let a = Arc::new(());
        let mut src: ArrayVec<Arc<()>, 8> = (0..5).map(|_| a.clone()).collect();
        assert_eq!(tx.enqueue_bulk(&mut src), 0);
        assert_eq!(tx.enqueue_burst(&mut src), 4);
        assert!(tx.enqueue(a.clone()).is_err());
        let mut dst: ArrayVec<Arc<()>, 8> = ArrayVec::new();
        assert_eq!(rx.dequeue_bulk(&mut dst, 5), 0);
        assert_eq!(rx.dequeue_bulk(&mut dst, 2), 2);
        drop(src);
        drop(dst);
        drop(tx);
        drop(rx);
        assert_eq!(Arc::strong_count(&a), 1, "items left in the ring are dropped with it");
    }
}
