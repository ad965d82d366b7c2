//! The packed virtqueue (virtio 1.1+, 2.8): its layout, raw access to a ring in guest memory
//! ([`PackedRing`]) and its data path ([`PackedQueue`], the same interface as
//! [`crate::queue::SplitQueue`]).
//!
//! ```text
//!  descriptor ring                          driver event suppression   device event suppression
//!  {addr u64, len u32, id u16, flags u16}   {off_wrap u16, flags u16}  {off_wrap u16, flags u16}
//!  16 B x size, align 16                    align 4 (SET_VRING_ADDR's   align 4 (its "used")
//!                                           "avail")
//! ```
//!
//! One ring holds both directions. The driver makes a chain of `n` descriptors available at
//! consecutive positions (wrapping at the ring size, which flips its wrap counter), writing the
//! head's flags last: a descriptor is available when its AVAIL bit equals our avail wrap counter
//! and its USED bit differs from it. The device returns a chain by writing **one** used
//! descriptor (the chain's buffer id, the bytes written, AVAIL = USED = our used wrap counter) at
//! the used position, which then skips the chain's `n` descriptors.
//!
//! Ring sizes need not be powers of two: positions are kept below the size by compare-and-wrap
//! (every increment), and every ring access goes through `PackedRing::slot`, which clamps
//! instead of trusting the caller.
//!
//! **Bursts.** Used descriptors are collected in a shadow array (allocated when the queue is
//! built, one entry per ring slot) and written back once per burst: every entry's id and length,
//! the flags of all but the burst's first, then the first one's flags with a Release store. The
//! driver reads used descriptors strictly in order, so that last store publishes the whole burst
//! (and a mergeable packet that does not fit is rolled back by forgetting its shadow entries,
//! before anything reached the ring). Then the driver is called at most once, as its event
//! suppression asks (ENABLE / DISABLE / DESC with EVENT_IDX's `off_wrap`). While we poll, the
//! device event suppression says DISABLE: the driver does not kick.
//!
//! **A hostile guest.** Every buffer id below the ring size; a chain no longer than the ring
//! (and every one of its descriptors available in the current wrap, else
//! [`GuestError::Wrap`]); indirect tables negotiated, never with NEXT, never nested, never inside
//! a chain, non-empty, a multiple of 16 bytes, at most a ring of entries, inside one region;
//! every buffer inside guest memory; directions. A burst never consumes more than a ring of
//! descriptors, even from a driver that rewrites descriptors we hold. A violation stops this
//! queue only, as on the split ring.
//!
//! **In order.** Chains are consumed and returned strictly in ring order, one used descriptor
//! per chain, which is what IN_ORDER asks (the device may also batch several chains into one used
//! descriptor; we do not).

use std::sync::atomic::{fence, Ordering};

use fastpath_mempool::{Batch, Mbuf, PoolCache};

use crate::mem::{copy_to_guest, GuestMemory};
use crate::net::{NetHdr, HDR_MAX};
use crate::queue::{
    chain_to_mbuf, fill_guest_rx, prefetch, prefetch_w, reset_for_reuse, Chain, GuestError, GuestRx, QueueFeatures,
    Src, Step, VringStats,
};
use crate::ring::{
    guest_u16, RingAddrs, RingSetupError, MAX_QUEUE_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};

/// Descriptor flag: available (compared with the avail wrap counter).
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: used (compared with the used wrap counter).
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;
/// Event suppression flags: notify on every used / available descriptor.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression flags: do not notify.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression flags: notify when the position in `off_wrap` is reached (EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;

/// One packed descriptor, as laid out in guest memory (little-endian).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedDesc {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length (used descriptors: bytes written).
    pub len: u32,
    /// Buffer id (meaningful in a chain's last descriptor and in used descriptors).
    pub id: u16,
    /// `VIRTQ_DESC_F_*` including AVAIL / USED.
    pub flags: u16,
}

const _: () = assert!(std::mem::size_of::<PackedDesc>() == 16);

/// Bytes of an event suppression structure.
pub const EVENT_BYTES: u64 = 4;

/// Flags that mark a descriptor available (driver) or used (device) for wrap counter `wrap`.
#[inline(always)]
pub const fn avail_used_flags(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// Flags of a used descriptor written with used wrap counter `wrap`.
#[inline(always)]
pub const fn used_flags(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
    } else {
        0
    }
}

/// True when `flags` mark a descriptor available for avail wrap counter `wrap`.
#[inline(always)]
pub fn is_avail(flags: u16, wrap: bool) -> bool {
    ((flags & VIRTQ_DESC_F_AVAIL != 0) == wrap) && ((flags & VIRTQ_DESC_F_USED != 0) != wrap)
}

/// A ring position and its wrap counter as one number in `0..2 * size` (the pair's period).
#[inline(always)]
fn linear(pos: u16, wrap: bool, size: u16) -> u32 {
    pos as u32 + if wrap { size as u32 } else { 0 }
}

/// The packed form of `vring_need_event`: true when the driver's event position `off_wrap`
/// (offset in bits 0-14, wrap counter in bit 15) is one of the `moved` positions this burst
/// passed, the ones just before `new` (given by `linear`; a burst moves at most one ring).
pub fn need_event_packed(off_wrap: u16, new: u32, moved: u32, size: u16) -> bool {
    let period = 2 * size as u32;
    let ev = linear(off_wrap & 0x7fff, off_wrap & 0x8000 != 0, size) % period;
    let back = (new % period + period - ev) % period;
    back >= 1 && back <= moved
}

/// Host pointers to a packed ring's three parts, checked for their whole size.
#[derive(Debug, Clone, Copy)]
pub struct PackedRing {
    desc: *mut PackedDesc,
    driver: *mut u16,
    device: *mut u16,
    size: u16,
}

// SAFETY: raw pointers into a memory table that the owner keeps alive (the vring snapshot holds
// an Arc to it); the ring moves with its owner.
unsafe impl Send for PackedRing {}

impl PackedRing {
    /// Translates and checks the ring of `size` at frontend-virtual `addrs` (`avail`: the driver
    /// event suppression area, `used`: the device's) through `mem`.
    pub fn new(mem: &GuestMemory, addrs: RingAddrs, size: u32) -> Result<PackedRing, RingSetupError> {
        if size == 0 || size > MAX_QUEUE_SIZE as u32 {
            return Err(RingSetupError::Size(size));
        }
        let align = [("descriptor", addrs.desc, 16), ("driver event", addrs.avail, 4), ("device event", addrs.used, 4)];
        for (name, a, al) in align {
            if a % al != 0 {
                return Err(RingSetupError::Align(name, a));
            }
        }
        let desc =
            mem.uva_ptr(addrs.desc, 16 * size as u64).ok_or(RingSetupError::Unmapped("descriptor", addrs.desc))?;
        let driver =
            mem.uva_ptr(addrs.avail, EVENT_BYTES).ok_or(RingSetupError::Unmapped("driver event", addrs.avail))?;
        let device =
            mem.uva_ptr(addrs.used, EVENT_BYTES).ok_or(RingSetupError::Unmapped("device event", addrs.used))?;
        Ok(PackedRing { desc: desc.cast(), driver: driver.cast(), device: device.cast(), size: size as u16 })
    }

    /// Ring size (any value in 1..=32768).
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The slot of position `i`: `i` itself, which the queue keeps below the size; clamped (never
    /// out of the checked table) should that invariant ever break.
    #[inline(always)]
    fn slot(&self, i: u16) -> usize {
        debug_assert!(i < self.size, "packed ring position {i} >= size {}", self.size);
        (if i < self.size { i } else { self.size - 1 }) as usize
    }

    #[inline(always)]
    fn flags_ptr(&self, i: u16) -> *mut u16 {
        // SAFETY: slot < size: inside the table checked for 16 * size bytes; flags are bytes 14..16
        // of the 16-aligned descriptor.
        unsafe { self.desc.add(self.slot(i)).cast::<u16>().add(7) }
    }

    /// The flags of descriptor `i` (Acquire: the rest of a descriptor the driver made available
    /// with them, and of the chain behind it, is visible after this load).
    #[inline(always)]
    pub fn flags(&self, i: u16) -> u16 {
        guest_u16(self.flags_ptr(i)).load(Ordering::Acquire)
    }

    /// Descriptor `i` (a volatile read, ordered by the Acquire load of its flags before it).
    #[inline(always)]
    pub fn desc(&self, i: u16) -> PackedDesc {
        // SAFETY: slot < size inside the checked, 16-aligned table.
        unsafe { self.desc.add(self.slot(i)).read_volatile() }
    }

    /// Address of descriptor `i` (for prefetching).
    #[inline(always)]
    pub fn desc_ptr(&self, i: u16) -> *const u8 {
        self.desc.wrapping_add(self.slot(i)).cast()
    }

    /// Writes the id and length of a used descriptor at `i` (not yet visible: its flags are).
    #[inline(always)]
    pub fn set_used(&self, i: u16, id: u16, len: u32) {
        // SAFETY: slot < size inside the checked table; len at byte 8 (4-aligned), id at byte 12
        // (2-aligned) of a 16-aligned descriptor.
        unsafe {
            let d = self.desc.add(self.slot(i)).cast::<u8>();
            d.add(8).cast::<u32>().write_volatile(len);
            d.add(12).cast::<u16>().write_volatile(id);
        }
    }

    /// Writes a whole used descriptor at `i` (id, length and flags; the address is reserved in a
    /// used descriptor and written as 0) in one 16-byte write: for a position the driver does
    /// not read before an earlier one's flags say used (see [`PackedQueue`]'s write-back).
    #[inline(always)]
    pub fn set_used_whole(&self, i: u16, id: u16, len: u32, flags: u16) {
        // SAFETY: slot < size inside the checked, 16-aligned table.
        unsafe { self.desc.add(self.slot(i)).write_volatile(PackedDesc { addr: 0, len, id, flags }) };
    }

    /// Sets the flags of descriptor `i`; `publish`: with a Release store (everything written
    /// before becomes visible to a driver that sees these flags), else Relaxed (made visible by a
    /// later Release store on a position the driver reads first).
    #[inline(always)]
    pub fn set_flags(&self, i: u16, flags: u16, publish: bool) {
        let a = guest_u16(self.flags_ptr(i));
        if publish {
            a.store(flags, Ordering::Release);
        } else {
            a.store(flags, Ordering::Relaxed);
        }
    }

    /// The driver's event suppression `(off_wrap, flags)` (Relaxed: read after a SeqCst fence).
    #[inline(always)]
    pub fn driver_event(&self) -> (u16, u16) {
        // SAFETY: u16 index 1 of the 4-byte area checked at setup.
        let flags = guest_u16(unsafe { self.driver.add(1) }).load(Ordering::Relaxed);
        (guest_u16(self.driver).load(Ordering::Relaxed), flags)
    }

    /// Sets our (device) event suppression flags, asking the driver to kick or not (Relaxed: a
    /// hint to the driver).
    #[inline(always)]
    pub fn set_device_event(&self, flags: u16) {
        guest_u16(self.device).store(0, Ordering::Relaxed);
        // SAFETY: u16 index 1 of the 4-byte area checked at setup.
        guest_u16(unsafe { self.device.add(1) }).store(flags, Ordering::Relaxed);
    }
}

/// One used descriptor waiting for the end of the burst.
#[derive(Debug, Clone, Copy, Default)]
struct Shadow {
    id: u16,
    ndesc: u16,
    len: u32,
}

/// One live packed virtqueue, owned by the lcore that polls it.
#[derive(Debug)]
pub struct PackedQueue {
    ring: PackedRing,
    avail: u16,
    avail_wrap: bool,
    used: u16,
    used_wrap: bool,
    feat: QueueFeatures,
    call: Option<i32>,
    broken: Option<GuestError>,
    shadow: Box<[Shadow]>,
    nshadow: usize,
    /// Descriptors consumed in this burst (at most a ring).
    taken: u32,
    /// IN_ORDER guest TX: descriptors consumed but not yet returned, and the last buffer id
    /// among them (returned together as one used descriptor, see [`PackedQueue::flush_held`]).
    held: u32,
    held_id: u16,
}

/// Position after `pos` (below `size`) moved by `n`, wrapping and flipping `wrap` at each pass
/// over the ring's end (compare-and-subtract: sizes need not be powers of two).
#[inline(always)]
fn advance(pos: u16, wrap: bool, n: u32, size: u16) -> (u16, bool) {
    let (mut p, mut w) = (pos as u32 + n, wrap);
    while p >= size as u32 {
        p -= size as u32;
        w = !w;
    }
    (p as u16, w)
}

/// The packed state of a position as vhost-user carries it: index | wrap counter << 15.
#[inline(always)]
pub fn state(pos: u16, wrap: bool) -> u16 {
    pos | (wrap as u16) << 15
}

/// The chain at a packed ring position.
struct PackedChain<'a> {
    ring: &'a PackedRing,
    feat: &'a QueueFeatures,
    pos: u16,
    wrap: bool,
    /// Out: descriptors of the chain in the ring (1 for an indirect one) and its buffer id.
    ndesc: u16,
    id: u16,
}

impl PackedChain<'_> {
    #[inline(always)]
    fn check_id(&mut self, id: u16) -> Result<(), GuestError> {
        if id >= self.ring.size() {
            return Err(GuestError::DescIndex);
        }
        self.id = id;
        Ok(())
    }

    #[inline(never)]
    fn walk_indirect<F>(&mut self, mem: &GuestMemory, d: PackedDesc, mut f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>,
    {
        if !self.feat.indirect || d.flags & VIRTQ_DESC_F_NEXT != 0 || d.len == 0 || d.len % 16 != 0 {
            return Err(GuestError::Indirect);
        }
        let n = d.len / 16;
        if n > self.ring.size() as u32 {
            return Err(GuestError::ChainTooLong);
        }
        self.check_id(d.id)?;
        self.ndesc = 1;
        let table = mem.gpa_ptr(d.addr, d.len as u64).ok_or(GuestError::Indirect)?.cast::<PackedDesc>();
        for i in 0..n {
            // SAFETY: i < n and the table was checked for n * 16 bytes; read_unaligned because a
            // guest may place it at any address.
            let e = unsafe { table.add(i as usize).read_unaligned() };
            if e.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(GuestError::Indirect);
            }
            // In a table only WRITE counts: the entries are consecutive, NEXT and ids ignored.
            if let Step::Stop = f(e.addr, e.len, e.flags & VIRTQ_DESC_F_WRITE != 0)? {
                break;
            }
        }
        Ok(())
    }
}

impl Chain for PackedChain<'_> {
    #[inline(always)]
    fn single_readable(&mut self) -> Result<Option<(u64, u32)>, GuestError> {
        let d = self.ring.desc(self.pos);
        if d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE) != 0 {
            return Ok(None);
        }
        self.check_id(d.id)?;
        self.ndesc = 1;
        Ok(Some((d.addr, d.len)))
    }

    /// Walks the whole chain (past a `Stop`, without calling `f`, to count its descriptors and
    /// find its id in the last one).
    #[inline(always)]
    fn walk<F>(&mut self, mem: &GuestMemory, mut f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>,
    {
        let size = self.ring.size();
        let (mut pos, mut wrap) = (self.pos, self.wrap);
        let mut d = self.ring.desc(pos);
        if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
            return self.walk_indirect(mem, d, f);
        }
        let mut count: u16 = 1;
        let mut going = true;
        loop {
            if going {
                if let Step::Stop = f(d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE != 0)? {
                    going = false;
                }
            }
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                self.check_id(d.id)?;
                self.ndesc = count;
                return Ok(());
            }
            if count >= size {
                return Err(GuestError::ChainTooLong);
            }
            count += 1;
            (pos, wrap) = advance(pos, wrap, 1, size);
            if !is_avail(self.ring.flags(pos), wrap) {
                return Err(GuestError::Wrap);
            }
            d = self.ring.desc(pos);
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                // Only a chain's only descriptor may point to a table.
                return Err(GuestError::Indirect);
            }
        }
    }
}

impl GuestRx for PackedQueue {
    #[inline(always)]
    fn has_room(&self) -> bool {
        self.head_ready()
    }

    #[inline(always)]
    fn put(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr) -> Result<bool, GuestError> {
        if self.feat.mrg_rxbuf {
            self.enqueue_mrg(mem, m, hdr)
        } else {
            self.enqueue_single(mem, m, hdr)
        }
    }
}

impl PackedQueue {
    /// A queue over `ring` starting at the packed state `base` (SET_VRING_BASE: position | avail
    /// wrap counter << 15; the used position starts there too, as nothing is in flight). Tells
    /// the driver not to kick while we poll. `call` is the eventfd to interrupt the guest.
    pub fn new(ring: PackedRing, base: u16, feat: QueueFeatures, call: Option<i32>) -> PackedQueue {
        let (pos, wrap) = (base & 0x7fff, base & 0x8000 != 0);
        let broken = (pos >= ring.size()).then_some(GuestError::AvailIdx);
        let pos = if broken.is_some() { 0 } else { pos };
        ring.set_device_event(RING_EVENT_FLAGS_DISABLE);
        PackedQueue {
            ring,
            avail: pos,
            avail_wrap: wrap,
            used: pos,
            used_wrap: wrap,
            feat,
            call,
            broken,
            // Allocated here, when the lcore takes a new configuration, never in a burst.
            shadow: vec![Shadow::default(); ring.size() as usize].into_boxed_slice(),
            nshadow: 0,
            taken: 0,
            held: 0,
            held_id: 0,
        }
    }

    /// Continues from our own used state (the ring was set up again without a new base) and
    /// keeps a guest error in force.
    pub fn resume(&mut self, used: u16, broken: Option<GuestError>) {
        let pos = used & 0x7fff;
        if pos < self.ring.size() {
            (self.used, self.used_wrap) = (pos, used & 0x8000 != 0);
        }
        self.broken = broken.or(self.broken);
    }

    /// The next avail state we will consume (position | wrap << 15: what GET_VRING_BASE reports).
    pub fn last_avail(&self) -> u16 {
        state(self.avail, self.avail_wrap)
    }

    /// The used state published so far (position | wrap << 15).
    pub fn last_used(&self) -> u16 {
        state(self.used, self.used_wrap)
    }

    /// The violation that stopped this queue, if any.
    pub fn broken(&self) -> Option<GuestError> {
        self.broken
    }

    /// Features in force.
    pub fn features(&self) -> &QueueFeatures {
        &self.feat
    }

    #[inline(always)]
    fn fail(&mut self, e: GuestError, st: &VringStats) {
        self.broken = Some(e);
        st.guest_errors[e as usize].inc();
    }

    /// True when the descriptor at our avail position is available and the burst may take more.
    #[inline(always)]
    fn head_ready(&self) -> bool {
        self.taken < self.ring.size() as u32 && is_avail(self.ring.flags(self.avail), self.avail_wrap)
    }

    #[inline(always)]
    fn chain(&self) -> PackedChain<'_> {
        PackedChain { ring: &self.ring, feat: &self.feat, pos: self.avail, wrap: self.avail_wrap, ndesc: 1, id: 0 }
    }

    /// Records a chain of `ndesc` descriptors as used (written back at the end of the burst) and
    /// moves past it.
    #[inline(always)]
    fn consume(&mut self, id: u16, ndesc: u16, len: u32) {
        // nshadow < size: a burst takes at most a ring of descriptors (`taken`), each chain at
        // least one. `get_mut` keeps even a broken invariant in bounds.
        if let Some(s) = self.shadow.get_mut(self.nshadow) {
            *s = Shadow { id, ndesc, len };
            self.nshadow += 1;
        }
        self.taken += ndesc as u32;
        (self.avail, self.avail_wrap) = advance(self.avail, self.avail_wrap, ndesc as u32, self.ring.size());
    }

    /// IN_ORDER guest TX: consumes a chain whose return is held back (see
    /// [`PackedQueue::flush_held`]).
    #[inline(always)]
    fn hold(&mut self, id: u16, ndesc: u16) {
        self.held += ndesc as u32;
        self.held_id = id;
        self.taken += ndesc as u32;
        (self.avail, self.avail_wrap) = advance(self.avail, self.avail_wrap, ndesc as u32, self.ring.size());
    }

    /// Held guest TX descriptors that trigger a write-back: half a ring.
    #[inline(always)]
    fn hold_max(&self) -> u32 {
        (self.ring.size() as u32 / 2).max(1)
    }

    /// IN_ORDER guest TX: returns every held chain as **one** used descriptor carrying the last
    /// buffer's id (virtio 1.1, 2.8.20: the driver frees every buffer up to it), with a Release
    /// store of its flags, then calls the driver if it asked for it. Guest TX buffers come back
    /// without a length, so one descriptor says all; and writing it rarely keeps us off the
    /// cache lines the driver is filling with its next packets. Called when half a ring is held,
    /// when a poll finds nothing new (so an idle guest gets everything back within one poll),
    /// when the queue breaks, and before the lcore lets the queue go (new configuration, stop:
    /// GET_VRING_BASE then finds nothing in flight).
    pub fn flush_held(&mut self, st: &VringStats) {
        let n = self.held;
        if n == 0 {
            return;
        }
        let (first, first_wrap) = (self.used, self.used_wrap);
        self.ring.set_used(first, self.held_id, 0);
        self.ring.set_flags(first, used_flags(first_wrap), true);
        (self.used, self.used_wrap) = advance(first, first_wrap, n, self.ring.size());
        self.held = 0;
        self.notify(n, st);
    }

    /// Descriptors available from our position on, up to `max`; the next line of the ring and
    /// the first buffer lines of those descriptors are prefetched, so that the copies of the
    /// burst find them in cache instead of waiting for each in turn (every one was just written
    /// by the driver's core). The buffer prefetches are hints: a bad address is skipped here and
    /// caught by the checked walk.
    #[inline(always)]
    fn ready(&self, mem: &GuestMemory, max: usize) -> usize {
        let size = self.ring.size();
        let (mut pos, mut wrap) = (self.avail, self.avail_wrap);
        let max = max.min(size as usize);
        let mut n = 0;
        while n < max && is_avail(self.ring.flags(pos), wrap) {
            let d = self.ring.desc(pos);
            if d.flags & VIRTQ_DESC_F_INDIRECT == 0 {
                if let Some(p) = mem.gpa_ptr(d.addr, 64.min(d.len as u64)) {
                    // The second line of a header + minimum frame (an address for a hint only).
                    // Receive buffers (device-writable) are fetched for writing.
                    if d.flags & VIRTQ_DESC_F_WRITE != 0 {
                        prefetch_w(p);
                        prefetch_w(p.wrapping_add(64));
                    } else {
                        prefetch(p);
                        prefetch(p.wrapping_add(64));
                    }
                }
            }
            n += 1;
            (pos, wrap) = advance(pos, wrap, 1, size);
        }
        prefetch(self.ring.desc_ptr(pos));
        n
    }

    /// Guest TX -> mbufs: appends up to `max` packets to `batch` (bounded by its room), each
    /// with the `(port, queue)` of `origin` set and the virtio-net header mapped to offload flags.
    /// Returns the packets added and their bytes.
    pub fn dequeue_burst(
        &mut self,
        mem: &GuestMemory,
        cache: &mut PoolCache,
        batch: &mut Batch,
        max: usize,
        origin: (u16, u16),
        st: &VringStats,
    ) -> (usize, u64) {
        let (port, queue) = origin;
        if self.broken.is_some() {
            return (0, 0);
        }
        let room = max.min(batch.remaining_capacity());
        if room == 0 {
            return (0, 0);
        }
        // At least one packet per available descriptor is the most this burst can take.
        let n = self.ready(mem, room);
        if n == 0 {
            // Idle: return what an in-order burst held back.
            self.flush_held(st);
            return (0, 0);
        }
        let start = batch.len();
        if !cache.alloc_bulk(batch, n) {
            st.alloc_failed.inc();
            return (0, 0);
        }
        self.taken = 0;
        let in_order = self.feat.in_order;
        let (mut w, mut bytes) = (0usize, 0u64);
        for _ in 0..n {
            if !self.head_ready() {
                break;
            }
            let m = &mut batch[start + w];
            let mut c = self.chain();
            let r = chain_to_mbuf(&mut c, mem, cache, &self.feat, m, st);
            let (id, ndesc) = (c.id, c.ndesc);
            match r {
                Ok(true) => {
                    m.set_port(port);
                    m.set_queue(queue);
                    bytes += m.pkt_len() as u64;
                    w += 1;
                }
                Ok(false) => reset_for_reuse(m),
                Err(e) => {
                    reset_for_reuse(m);
                    self.fail(e, st);
                    break;
                }
            }
            if in_order {
                self.hold(id, ndesc);
            } else {
                self.consume(id, ndesc, 0);
            }
        }
        cache.free_tail(batch, start + w);
        if in_order {
            if self.held >= self.hold_max() || self.broken.is_some() {
                self.flush_held(st);
            }
        } else {
            self.flush(st);
        }
        (w, bytes)
    }

    /// Mbufs -> guest RX: copies packets from the front of `batch` into guest receive buffers
    /// until the batch is empty or the guest has no room. Delivered and dropped packets are
    /// freed (into `cache`) and removed; the rest stay in order. Returns packets delivered and
    /// their bytes.
    pub fn enqueue_burst(
        &mut self,
        mem: &GuestMemory,
        cache: &mut PoolCache,
        batch: &mut Batch,
        st: &VringStats,
    ) -> (usize, u64) {
        if self.broken.is_some() || batch.is_empty() {
            return (0, 0);
        }
        self.taken = 0;
        if !self.head_ready() {
            return (0, 0);
        }
        self.ready(mem, batch.len());
        let feat = self.feat;
        let (sent, bytes, err) = fill_guest_rx(self, mem, cache, batch, &feat, st);
        if let Some(e) = err {
            self.fail(e, st);
        }
        self.flush(st);
        (sent, bytes)
    }

    /// Fast path of both enqueue forms: a single-segment packet into one plain writable
    /// descriptor that holds it whole. `Ok(false)`: not this case (nothing done).
    #[inline(always)]
    fn enqueue_direct(&mut self, mem: &GuestMemory, m: &Mbuf, hb: &[u8; HDR_MAX]) -> Result<bool, GuestError> {
        let d = self.ring.desc(self.avail);
        let (hlen, plen) = (self.feat.hdr_len, m.data_len());
        let need = hlen + plen;
        if !m.is_contiguous()
            || d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT) != 0
            || d.flags & VIRTQ_DESC_F_WRITE == 0
            || (d.len as usize) < need
        {
            return Ok(false);
        }
        if d.id >= self.ring.size() {
            return Err(GuestError::DescIndex);
        }
        let p = mem.gpa_ptr(d.addr, need as u64).ok_or(GuestError::DescAddr)?;
        // SAFETY: p is valid for need = hlen + plen bytes (checked above); hb has HDR_MAX >= hlen
        // bytes and the mbuf's data plen.
        unsafe {
            copy_to_guest(p, hb.as_ptr(), hlen);
            copy_to_guest(p.add(hlen), m.data_addr(), plen);
        }
        self.consume(d.id, 1, need as u32);
        Ok(true)
    }

    /// Copies the chain at our position full of what `src` has left; returns the chain's id,
    /// descriptors and bytes written.
    #[inline(always)]
    fn fill_chain(&self, mem: &GuestMemory, src: &mut Src<'_>) -> Result<(u16, u16, usize), GuestError> {
        let before = src.written;
        let mut c = self.chain();
        c.walk(mem, |addr, len, write| {
            if !write {
                return Err(GuestError::Direction);
            }
            let p = mem.gpa_ptr(addr, len as u64).ok_or(GuestError::DescAddr)?;
            src.copy_into(p, len as usize);
            Ok(if src.is_done() { Step::Stop } else { Step::Go })
        })?;
        Ok((c.id, c.ndesc, src.written - before))
    }

    /// Copies the packet into one chain. `Ok(false)`: it does not fit (nothing consumed).
    #[inline(always)]
    fn enqueue_single(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr) -> Result<bool, GuestError> {
        let hb = hdr.emit();
        if self.enqueue_direct(mem, m, &hb)? {
            return Ok(true);
        }
        let mut src = Src::new(&hb[..self.feat.hdr_len], m);
        let (id, ndesc, n) = self.fill_chain(mem, &mut src)?;
        if !src.is_done() {
            return Ok(false);
        }
        self.consume(id, ndesc, n as u32);
        Ok(true)
    }

    /// Copies the packet over as many chains as it needs (MRG_RXBUF), `num_buffers` set in the
    /// header. `Ok(false)`: not enough chains (nothing consumed: its shadow entries are dropped
    /// before they reach the ring).
    #[inline(always)]
    fn enqueue_mrg(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr) -> Result<bool, GuestError> {
        let mut h = *hdr;
        h.num_buffers = 1;
        let hb = h.emit();
        if self.enqueue_direct(mem, m, &hb)? {
            return Ok(true);
        }
        let mut src = Src::new(&hb[..self.feat.hdr_len], m);
        let save = (self.avail, self.avail_wrap, self.nshadow, self.taken);
        let mut nb: u16 = 0;
        while !src.is_done() {
            if !self.head_ready() {
                (self.avail, self.avail_wrap, self.nshadow, self.taken) = save;
                return Ok(false);
            }
            let (id, ndesc, n) = self.fill_chain(mem, &mut src)?;
            self.consume(id, ndesc, n as u32);
            nb += 1;
        }
        if nb > 1 {
            src.patch_num_buffers(nb);
        }
        Ok(true)
    }

    /// Writes the burst's used descriptors back (the first one's flags last, Release: the
    /// publish) and calls the driver if it asked for it.
    #[inline(always)]
    fn flush(&mut self, st: &VringStats) {
        let n = self.nshadow;
        if n == 0 {
            return;
        }
        let size = self.ring.size();
        let (first, first_wrap) = (self.used, self.used_wrap);
        // Where the burst ends, then the entries written backwards: the driver polls the first
        // position's cache line (waiting for its flags), so that line is written last and with
        // as few stores as possible (each store there costs a cache-line round trip while the
        // driver spins on it): one 16-byte store per entry after the first, then the first's id
        // and length, then its flags (Release: everything before becomes visible with them).
        let moved: u32 = self.shadow[..n].iter().map(|s| s.ndesc as u32).sum();
        let (end, end_wrap) = advance(first, first_wrap, moved, size);
        let mut back = moved;
        for s in self.shadow[1..n].iter().rev() {
            back -= s.ndesc as u32;
            let (pos, wrap) = advance(first, first_wrap, back, size);
            self.ring.set_used_whole(pos, s.id, s.len, used_flags(wrap));
        }
        let s0 = self.shadow[0];
        self.ring.set_used(first, s0.id, s0.len);
        self.ring.set_flags(first, used_flags(first_wrap), true);
        (self.used, self.used_wrap) = (end, end_wrap);
        self.nshadow = 0;
        self.notify(moved, st);
    }

    /// At most one call per burst. SeqCst fence: our used flags must be visible before we read
    /// the driver's event suppression, pairing with the driver's barrier between enabling
    /// notifications and re-checking the used descriptor (otherwise both could miss each other).
    #[inline(always)]
    fn notify(&mut self, moved: u32, st: &VringStats) {
        let Some(fd) = self.call else { return };
        fence(Ordering::SeqCst);
        let (off_wrap, flags) = self.ring.driver_event();
        let want = match flags & 3 {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.feat.event_idx => {
                let size = self.ring.size();
                need_event_packed(off_wrap, linear(self.used, self.used_wrap, size), moved, size)
            }
            // ENABLE; DESC without EVENT_IDX and the reserved value are treated as ENABLE.
            _ => true,
        };
        if want {
            crate::call::call_guest(fd, st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_is_pinned() {
        assert_eq!(offset_of!(PackedDesc, addr), 0);
        assert_eq!(offset_of!(PackedDesc, len), 8);
        assert_eq!(offset_of!(PackedDesc, id), 12);
        assert_eq!(offset_of!(PackedDesc, flags), 14);
        assert_eq!((VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED), (0x80, 0x8000));
    }

    #[test]
    fn availability_follows_the_wrap_counter() {
        assert!(is_avail(avail_used_flags(true), true));
        assert!(!is_avail(avail_used_flags(true), false));
        assert!(is_avail(avail_used_flags(false), false));
        // A used descriptor is never available, in either wrap.
        assert!(!is_avail(used_flags(true), true) && !is_avail(used_flags(true), false));
        assert!(!is_avail(used_flags(false), true) && !is_avail(used_flags(false), false));
    }

    #[test]
    fn advance_wraps_any_size() {
        assert_eq!(advance(4, true, 1, 5), (0, false));
        assert_eq!(advance(3, false, 2, 5), (0, true));
        assert_eq!(advance(3, false, 5, 5), (3, true));
        assert_eq!(advance(0, true, 2, 3), (2, true));
        assert_eq!(advance(2, true, 7, 3), (0, false), "three passes over the end");
    }

    #[test]
    fn need_event_packed_matches_the_split_rule() {
        let s = 10;
        // Positions 2..5 (wrap 1) written this burst: an event at 2, 3 or 4 (wrap 1) fires.
        let new = linear(5, true, s);
        for (off, want) in [(1, false), (2, true), (4, true), (5, false)] {
            assert_eq!(need_event_packed(off | 0x8000, new, 3, s), want, "{off}");
        }
        // The same offsets with the other wrap counter are a ring away: no.
        assert!(!need_event_packed(3, new, 3, s));
        // Across the wrap: 8 (wrap 1) .. 2 (wrap 0).
        let new = linear(2, false, s);
        assert!(need_event_packed(9 | 0x8000, new, 4, s));
        assert!(need_event_packed(1, new, 4, s));
        assert!(!need_event_packed(2, new, 4, s));
        assert!(!need_event_packed(7 | 0x8000, new, 4, s));
        // A whole ring in one burst: every position passed (the one a ring back included).
        assert!(need_event_packed(2 | 0x8000, new, 10, s));
        assert!(!need_event_packed(3, new, 10, s) && need_event_packed(1, new, 10, s));
        // A hostile offset beyond the ring does not panic.
        let _ = need_event_packed(0x7fff, new, 4, s);
    }
}
