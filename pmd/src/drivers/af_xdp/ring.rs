//! The four AF_XDP rings (fill, completion, rx, tx), mapped from the socket.
//!
//! Each ring is a single-producer single-consumer queue shared with the kernel: a `u32` producer
//! index, a `u32` consumer index, a `u32` flags word and a power-of-two array of entries. The
//! indices run freely (wrapping u32) and are masked on access. We are the producer of the fill and
//! tx rings ([`ProdRing`]) and the consumer of the rx and completion rings ([`ConsRing`]); the two
//! sides are separate types (style rule 7), each owned by one lcore.
//!
//! Memory ordering, at every access:
//! - our own index: we are its only writer, so we keep a cached copy and never load it;
//! - the peer's index: loaded with Acquire, so the entries it published (rx, completion) or
//!   finished reading (fill, tx) are visible / free before we touch them;
//! - publishing our index: stored with Release, so the entries we wrote (fill, tx) or finished
//!   reading (rx, completion) are complete before the kernel sees the new index;
//! - the flags word (need_wakeup): loaded after a SeqCst fence that orders it after our Release
//!   store of the index, so that we cannot miss a wakeup request the kernel made after it last
//!   looked at our index (the store-load pair the fence prevents from reordering).
//!
//! Producing is reserve / write / commit (style rule 8): [`ProdRing::reserve`] hands out free
//! slots, [`ProdRing::write`] fills them, [`ProdRing::commit`] publishes what was written; slots
//! reserved and never committed are simply reused by the next reservation.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// One rx/tx descriptor (`struct xdp_desc`).
pub type XdpDesc = libc::xdp_desc;

/// A mapped ring: the mapping and pointers to its parts.
struct Mapped<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    size: u32,
}

// SAFETY: the mapping is owned by the ring; the atomics are shared with the kernel only.
unsafe impl<T> Send for Mapped<T> {}

impl<T> Mapped<T> {
    /// Maps `size` entries of ring `pgoff` of socket `fd`, laid out as `off` says.
    fn new(fd: BorrowedFd<'_>, pgoff: u64, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Mapped<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping the socket's ring at the kernel-defined page offset; the length covers
        // the indices, flags and entries as the kernel reported; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        // SAFETY: every offset lies inside the mapping (the kernel placed them there), and the
        // kernel aligns indices to 4 and entries to their size.
        unsafe {
            Ok(Mapped {
                map: NonNull::new_unchecked(base),
                map_len,
                producer: NonNull::new_unchecked(base.add(off.producer as usize).cast()),
                consumer: NonNull::new_unchecked(base.add(off.consumer as usize).cast()),
                flags: NonNull::new_unchecked(base.add(off.flags as usize).cast()),
                descs: NonNull::new_unchecked(base.add(off.desc as usize).cast()),
                size,
            })
        }
    }

    #[inline(always)]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping; the kernel only accesses it atomically.
        unsafe { self.producer.as_ref() }
    }

    #[inline(always)]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }

    #[inline(always)]
    fn need_wakeup(&self) -> bool {
        // See the module doc: the fence orders this load after our last Release store of an index.
        fence(Ordering::SeqCst);
        // SAFETY: points into our live mapping.
        let f = unsafe { self.flags.as_ref() };
        // Relaxed: ordered by the fence above; the flag carries no data.
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[inline(always)]
    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: idx is masked into 0..size, inside the entry array.
        unsafe { self.descs.as_ptr().add((idx & (self.size - 1)) as usize) }
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// The side of a ring we produce into (fill: chunk addresses; tx: descriptors).
pub struct ProdRing<T> {
    m: Mapped<T>,
    /// Our producer index (we are its only writer).
    prod: u32,
    /// The kernel's consumer index plus the ring size, as last loaded: slots below it are free.
    cons_limit: u32,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for ProdRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProdRing").field("size", &self.m.size).field("prod", &self.prod).finish()
    }
}

impl<T: Copy> ProdRing<T> {
    /// Maps a producer ring.
    pub fn new(fd: BorrowedFd<'_>, pgoff: u64, off: &libc::xdp_ring_offset, size: u32) -> io::Result<ProdRing<T>> {
        let m = Mapped::new(fd, pgoff, off, size)?;
        // Relaxed: nothing was produced yet; these are the initial values.
        let prod = m.producer().load(Ordering::Relaxed);
        let cons = m.consumer().load(Ordering::Relaxed);
        Ok(ProdRing { prod, cons_limit: cons.wrapping_add(size), m, _t: PhantomData })
    }

    /// Entries in the ring.
    pub fn size(&self) -> u32 {
        self.m.size
    }

    /// Free slots, at most `want` (reloads the kernel's consumer index only when the cached
    /// view shows fewer than `want`).
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cons_limit.wrapping_sub(self.prod);
        if free >= want {
            return want;
        }
        // Acquire: the kernel has finished reading every entry below its consumer index before
        // it published it, so those slots may be overwritten.
        self.cons_limit = self.m.consumer().load(Ordering::Acquire).wrapping_add(self.m.size);
        self.cons_limit.wrapping_sub(self.prod).min(want)
    }

    /// Reserves up to `n` slots; returns how many (write them with [`ProdRing::write`], then
    /// [`ProdRing::commit`]).
    #[inline]
    pub fn reserve(&mut self, n: u32) -> u32 {
        self.free(n)
    }

    /// Writes reserved slot `i` (0-based from the first uncommitted slot).
    #[inline(always)]
    pub fn write(&mut self, i: u32, v: T) {
        // SAFETY: the slot is in the array (masked) and free (reserved: the kernel does not read
        // it until we commit).
        unsafe { self.m.slot(self.prod.wrapping_add(i)).write(v) }
    }

    /// Publishes the first `n` reserved slots.
    #[inline]
    pub fn commit(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.prod = self.prod.wrapping_add(n);
        // Release: the entries written above are visible before the kernel sees the index.
        self.m.producer().store(self.prod, Ordering::Release);
    }

    /// Entries published and not yet taken by the kernel.
    #[inline]
    pub fn pending(&self) -> u32 {
        // Acquire: as in `free`.
        self.prod.wrapping_sub(self.m.consumer().load(Ordering::Acquire))
    }

    /// True when the kernel asks for a syscall to process this ring.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.m.need_wakeup()
    }
}

/// The side of a ring we consume from (rx: descriptors; completion: chunk addresses).
pub struct ConsRing<T> {
    m: Mapped<T>,
    /// Our consumer index (we are its only writer).
    cons: u32,
    /// The kernel's producer index as last loaded: entries below it are ready.
    prod: u32,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for ConsRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsRing").field("size", &self.m.size).field("cons", &self.cons).finish()
    }
}

impl<T: Copy> ConsRing<T> {
    /// Maps a consumer ring.
    pub fn new(fd: BorrowedFd<'_>, pgoff: u64, off: &libc::xdp_ring_offset, size: u32) -> io::Result<ConsRing<T>> {
        let m = Mapped::new(fd, pgoff, off, size)?;
        // Relaxed: initial values, nothing was produced yet.
        let cons = m.consumer().load(Ordering::Relaxed);
        let prod = m.producer().load(Ordering::Relaxed);
        Ok(ConsRing { cons, prod, m, _t: PhantomData })
    }

    /// Entries ready, at most `max` (reloads the kernel's producer index when the cached view
    /// shows fewer than `max`).
    #[inline]
    pub fn peek(&mut self, max: u32) -> u32 {
        let ready = self.prod.wrapping_sub(self.cons);
        if ready >= max {
            return max;
        }
        // Acquire: the entries the kernel wrote before publishing its producer index are
        // visible to the reads below.
        self.prod = self.m.producer().load(Ordering::Acquire);
        self.prod.wrapping_sub(self.cons).min(max)
    }

    /// Reads ready entry `i` (0-based from our consumer index; `i` below what `peek` returned).
    #[inline(always)]
    pub fn read(&self, i: u32) -> T {
        // SAFETY: the slot is in the array (masked) and was published by the kernel (peek), which
        // does not overwrite it until we release it.
        unsafe { self.m.slot(self.cons.wrapping_add(i)).read() }
    }

    /// Gives the first `n` read entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cons = self.cons.wrapping_add(n);
        // Release: our reads of the entries are done before the kernel may reuse the slots.
        self.m.consumer().store(self.cons, Ordering::Release);
    }
}
