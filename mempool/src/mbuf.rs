//! The mbuf: an owning handle to a packet buffer whose header lives at the start of its chunk.
//!
//! ```text
//!  chunk (2048 or 4096 bytes, aligned to its size inside the pool's region)
//!  +----------------+----------------------+--------------------------------------+
//!  | MbufHeader     | headroom (256 bytes) | data room                            |
//!  | 128 bytes      | <- prepend / encap    | frame ... tailroom                   |
//!  +----------------+----------------------+--------------------------------------+
//!  ^ chunk start    ^ buf_addr             ^ buf_addr + data_off (default 256)
//! ```
//!
//! The header keeps every field the receive path and the pipeline touch in its first cache line
//! (after DPDK's `rte_mbuf_core.h`); the second line holds the owning pool, the attached buffer of
//! an indirect mbuf, user metadata and the switch's per-packet metadata (segment, destination,
//! disposition), like DPDK's `vnet_buffer` opaque area in VPP. Its layout is pinned by tests.
//!
//! Multi-segment packets chain headers through `next`; the first segment holds `pkt_len` and
//! `nb_segs`. A *clone* ([`crate::PoolCache::clone_shallow`]) is a chain of indirect mbufs: their own
//! headers, pointing into the buffers of the cloned (direct) segments, whose reference count they
//! hold. A buffer with more than one reference is read-only; [`Mbuf::data_mut`] checks it.

use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use crate::pool::PoolInner;

/// Bytes of the header at the start of each chunk.
pub const MBUF_HDR_SIZE: usize = 128;
/// Default headroom in front of the frame: room for any outer header stack.
pub const HEADROOM: u16 = 256;
/// `port` / `out_port` value meaning "none".
pub const PORT_NONE: u16 = u16::MAX;

/// The mbuf header. `repr(C)`, 128 bytes, cache-line aligned; fields are private and reached
/// through [`Mbuf`] accessors.
#[repr(C, align(64))]
pub struct MbufHeader {
    // ---- cache line 0: receive path and pipeline ----
    /// Start of the data buffer (this chunk's, or the attached one for an indirect mbuf).
    pub(crate) buf_addr: *mut u8,
    /// Next segment of the chain, null at the end.
    pub(crate) next: *mut MbufHeader,
    /// Offload flags (see [`crate::offload`]).
    pub(crate) ol_flags: u64,
    /// Offset of the first data byte from `buf_addr`.
    pub(crate) data_off: u16,
    /// Bytes of data in this segment.
    pub(crate) data_len: u16,
    /// Bytes of data in the whole chain (first segment only).
    pub(crate) pkt_len: u32,
    /// References to this chunk's buffer: 1 + attached indirect mbufs.
    pub(crate) refcnt: AtomicU16,
    /// Segments in the chain (first segment only).
    pub(crate) nb_segs: u16,
    /// Input port.
    pub(crate) port: u16,
    /// Input queue.
    pub(crate) queue: u16,
    /// Packet type (see [`crate::offload::ptype`]).
    pub(crate) packet_type: u32,
    /// Flow hash.
    pub(crate) rss_hash: u32,
    /// VLAN tag control information (stripped or to insert).
    pub(crate) vlan_tci: u16,
    /// Outer VLAN TCI (QinQ).
    pub(crate) vlan_tci_outer: u16,
    /// Payload bytes per segment for TSO/USO.
    pub(crate) tso_segsz: u16,
    /// Output port chosen by the pipeline.
    pub(crate) out_port: u16,
    /// L2 header length (inner L2 for tunnels, including the tunnel header as in DPDK).
    pub(crate) l2_len: u8,
    /// L4 header length.
    pub(crate) l4_len: u8,
    /// L3 header length.
    pub(crate) l3_len: u16,
    /// Outer L2 length.
    pub(crate) outer_l2_len: u8,
    /// Outer L3 length.
    pub(crate) outer_l3_len: u8,
    /// Bytes of buffer behind `buf_addr` owned by this chunk.
    pub(crate) buf_len: u16,
    // ---- cache line 1: pool and attachment ----
    /// The pool this chunk belongs to.
    pub(crate) pool: *const PoolInner,
    /// For an indirect mbuf: the direct header whose buffer is attached; null when direct.
    pub(crate) shared: *mut MbufHeader,
    /// Timestamp (TSC or nanoseconds; set by whoever needs it).
    pub(crate) timestamp: u64,
    /// Free for applications and stages.
    pub(crate) userdata: u64,
    /// Index of the chunk in its pool.
    pub(crate) index: u32,
    /// The L2 segment (switching domain) a switch placed the packet in.
    pub(crate) segment: u16,
    /// A destination chosen by a switch stage for later ones (a remote VTEP, a drop reason).
    pub(crate) dest: u16,
    /// What a switch stage decided to do with the packet, for later stages to act on.
    pub(crate) disposition: u8,
    _pad: [u8; 23],
}

const _: () = assert!(std::mem::size_of::<MbufHeader>() == MBUF_HDR_SIZE);

impl fmt::Debug for MbufHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufHeader")
            .field("index", &self.index)
            .field("data_off", &self.data_off)
            .field("data_len", &self.data_len)
            .field("pkt_len", &self.pkt_len)
            .finish_non_exhaustive()
    }
}

impl MbufHeader {
    /// The buffer that belongs to the chunk of `h` (right after the header).
    ///
    /// # Safety
    /// `h` must point to a header at the start of a pool chunk.
    pub(crate) unsafe fn own_buf(h: *mut MbufHeader) -> *mut u8 {
        // SAFETY: the chunk is at least MBUF_HDR_SIZE + buf_len bytes; the result stays inside it.
        unsafe { h.cast::<u8>().add(MBUF_HDR_SIZE) }
    }

    /// Writes a fresh header into a chunk of `pool`.
    ///
    /// # Safety
    /// `h` must be the start of an unused chunk of `chunk_size` bytes, writable and aligned.
    pub(crate) unsafe fn init(h: *mut MbufHeader, pool: *const PoolInner, chunk_size: usize, index: u32) {
        // SAFETY: per the contract the chunk is ours; writing a whole header is in bounds.
        unsafe {
            h.write(MbufHeader {
                buf_addr: Self::own_buf(h),
                next: ptr::null_mut(),
                ol_flags: 0,
                data_off: HEADROOM,
                data_len: 0,
                pkt_len: 0,
                refcnt: AtomicU16::new(1),
                nb_segs: 1,
                port: PORT_NONE,
                queue: 0,
                packet_type: 0,
                rss_hash: 0,
                vlan_tci: 0,
                vlan_tci_outer: 0,
                tso_segsz: 0,
                out_port: PORT_NONE,
                l2_len: 0,
                l4_len: 0,
                l3_len: 0,
                outer_l2_len: 0,
                outer_l3_len: 0,
                buf_len: (chunk_size - MBUF_HDR_SIZE) as u16,
                pool,
                shared: ptr::null_mut(),
                timestamp: 0,
                userdata: 0,
                index,
                segment: 0,
                dest: 0,
                disposition: 0,
                _pad: [0; 23],
            })
        }
    }

    /// Resets the per-packet fields of a chunk just taken from its pool (DPDK's
    /// `rte_pktmbuf_reset`). `buf_addr`, `refcnt`, `next`, `shared` are already clean.
    ///
    /// # Safety
    /// `h` must be a chunk owned by the caller and not reachable by anyone else.
    #[inline(always)]
    pub(crate) unsafe fn reset(h: *mut MbufHeader) {
        // SAFETY: per the contract we own the header; plain field stores through the raw pointer.
        unsafe {
            (*h).ol_flags = 0;
            (*h).data_off = HEADROOM;
            (*h).data_len = 0;
            (*h).pkt_len = 0;
            (*h).nb_segs = 1;
            (*h).port = PORT_NONE;
            (*h).queue = 0;
            (*h).packet_type = 0;
            (*h).rss_hash = 0;
            (*h).vlan_tci = 0;
            (*h).vlan_tci_outer = 0;
            (*h).tso_segsz = 0;
            (*h).out_port = PORT_NONE;
            (*h).l2_len = 0;
            (*h).l4_len = 0;
            (*h).l3_len = 0;
            (*h).outer_l2_len = 0;
            (*h).outer_l3_len = 0;
        }
    }

    /// Drops one reference to the segment `h`; when it was the last, cleans the chunk (detaching
    /// an attached buffer first) and passes it to `sink` to go back to its pool.
    ///
    /// # Safety
    /// The caller must own one reference to `h` (as its handle or an attached indirect) and give
    /// it up here; `h` must not be used by the caller afterwards.
    pub(crate) unsafe fn release(h: *mut MbufHeader, sink: &mut dyn FnMut(NonNull<MbufHeader>)) {
        // SAFETY: h is live while we hold our reference; refcnt is only touched atomically.
        let rc = unsafe { &(*h).refcnt };
        // A count of 1 means nobody else holds this buffer, so nobody can add a reference
        // concurrently: skip the atomic RMW (DPDK's rte_pktmbuf_prefree_seg). Acquire pairs with
        // the Release decrement of the last indirect that detached.
        let last = rc.load(Ordering::Acquire) == 1 || rc.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            return;
        }
        // SAFETY: we held the last reference: the chunk is ours alone now.
        unsafe {
            let d = (*h).shared;
            if !d.is_null() {
                (*h).shared = ptr::null_mut();
                (*h).buf_addr = Self::own_buf(h);
                Self::release(d, sink);
            }
            (*h).next = ptr::null_mut();
            (*h).nb_segs = 1;
            (*h).refcnt.store(1, Ordering::Relaxed);
            sink(NonNull::new_unchecked(h));
        }
    }
}

/// An owning handle to a packet buffer (a chain of segments). `Send`, not `Clone`, not `Copy`.
///
/// Dropping an `Mbuf` returns its segments to their pools' shared rings (the slow path); the fast
/// path frees whole batches through a [`crate::PoolCache`].
pub struct Mbuf {
    ptr: NonNull<MbufHeader>,
}

// SAFETY: an Mbuf exclusively owns its header; the only field other threads may touch is the
// atomic refcnt (through attached indirect mbufs), so moving the handle between threads is sound.
unsafe impl Send for Mbuf {}
// SAFETY: &Mbuf only reads the header and the (read-only while shared) buffer.
unsafe impl Sync for Mbuf {}

macro_rules! header_fields {
    ($($(#[$doc:meta])* $field:ident, $set:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub fn $field(&self) -> $ty {
            // SAFETY: self.ptr is a live header owned by this handle (type invariant); this field
            // is written only through &mut self.
            unsafe { (*self.ptr.as_ptr()).$field }
        }
        #[doc = concat!("Sets `", stringify!($field), "`.")]
        #[inline(always)]
        pub fn $set(&mut self, v: $ty) {
            // SAFETY: as above, and &mut self makes this handle the only writer.
            unsafe { (*self.ptr.as_ptr()).$field = v }
        }
    )*};
}

impl Mbuf {
    /// Takes ownership of a raw header.
    ///
    /// # Safety
    /// `ptr` must be a live header of a pool chunk, owned by nobody else (one reference given to
    /// this handle).
    #[inline(always)]
    pub unsafe fn from_raw(ptr: NonNull<MbufHeader>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Gives up the handle without freeing; the caller now owns the reference.
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<MbufHeader> {
        let p = self.ptr;
        std::mem::forget(self);
        p
    }

    /// The raw header pointer (the handle keeps ownership).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut MbufHeader {
        self.ptr.as_ptr()
    }

    #[inline(always)]
    fn h(&self) -> *mut MbufHeader {
        self.ptr.as_ptr()
    }

    header_fields! {
        /// Offload flags ([`crate::offload`]).
        ol_flags, set_ol_flags: u64;
        /// Input port.
        port, set_port: u16;
        /// Input queue.
        queue, set_queue: u16;
        /// Output port chosen by the pipeline ([`PORT_NONE`] when unset).
        out_port, set_out_port: u16;
        /// Packet type ([`crate::offload::ptype`]).
        packet_type, set_packet_type: u32;
        /// Flow hash.
        rss_hash, set_rss_hash: u32;
        /// VLAN TCI.
        vlan_tci, set_vlan_tci: u16;
        /// Outer VLAN TCI.
        vlan_tci_outer, set_vlan_tci_outer: u16;
        /// TSO/USO segment payload size.
        tso_segsz, set_tso_segsz: u16;
        /// L2 length.
        l2_len, set_l2_len: u8;
        /// L3 length.
        l3_len, set_l3_len: u16;
        /// L4 length.
        l4_len, set_l4_len: u8;
        /// Outer L2 length.
        outer_l2_len, set_outer_l2_len: u8;
        /// Outer L3 length.
        outer_l3_len, set_outer_l3_len: u8;
        /// Timestamp.
        timestamp, set_timestamp: u64;
        /// Application data.
        userdata, set_userdata: u64;
        /// The L2 segment a switch placed the packet in (switch metadata, cache line 1).
        segment, set_segment: u16;
        /// A destination chosen by a switch stage for later ones (switch metadata).
        dest, set_dest: u16;
        /// What a switch stage decided to do with the packet (switch metadata).
        disposition, set_disposition: u8;
    }

    /// Adds offload flags.
    #[inline(always)]
    pub fn add_ol_flags(&mut self, f: u64) {
        let v = self.ol_flags() | f;
        self.set_ol_flags(v);
    }

    /// Bytes of data in this (first) segment.
    #[inline(always)]
    pub fn data_len(&self) -> usize {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).data_len as usize }
    }

    /// Bytes of data in the whole chain.
    #[inline(always)]
    pub fn pkt_len(&self) -> usize {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).pkt_len as usize }
    }

    /// Segments in the chain.
    #[inline(always)]
    pub fn nb_segs(&self) -> usize {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).nb_segs as usize }
    }

    /// True when the packet is a single segment.
    #[inline(always)]
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).next.is_null() }
    }

    /// Offset of the data from the start of the buffer.
    #[inline(always)]
    pub fn data_off(&self) -> usize {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).data_off as usize }
    }

    /// Bytes free in front of the data.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.data_off()
    }

    /// Bytes free behind the data in this segment.
    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        // SAFETY: live header owned by this handle.
        let h = unsafe { &*self.h() };
        h.buf_len as usize - h.data_off as usize - h.data_len as usize
    }

    /// Bytes of buffer this segment can hold (headroom + data + tailroom).
    #[inline(always)]
    pub fn buf_len(&self) -> usize {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).buf_len as usize }
    }

    /// Index of the chunk in its pool.
    #[inline(always)]
    pub fn chunk_index(&self) -> u32 {
        // SAFETY: live header owned by this handle.
        unsafe { (*self.h()).index }
    }

    /// Identity of the owning pool (compare with [`crate::Mempool::id`]).
    #[inline(always)]
    pub fn pool_id(&self) -> u32 {
        // SAFETY: the pool outlives every chunk (pools with chunks out are never freed).
        unsafe { (*(*self.h()).pool).id }
    }

    /// True when this segment's buffer is attached from another mbuf (a clone).
    #[inline(always)]
    pub fn is_indirect(&self) -> bool {
        // SAFETY: live header owned by this handle.
        unsafe { !(*self.h()).shared.is_null() }
    }

    /// True when this handle may write the first segment's buffer: it is direct and no clone
    /// refers to it.
    #[inline(always)]
    pub fn is_writable(&self) -> bool {
        // SAFETY: live header; refcnt is atomic. Acquire: a clone that detached on another thread
        // finished reading before we write.
        unsafe { (*self.h()).shared.is_null() && (*self.h()).refcnt.load(Ordering::Acquire) == 1 }
    }

    /// Reference count of this segment's buffer.
    pub fn refcnt(&self) -> u16 {
        // SAFETY: live header; atomic load.
        unsafe { (*self.h()).refcnt.load(Ordering::Acquire) }
    }

    /// The data of the first segment.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // Soundness: buf_addr + data_off .. + data_len lies inside the (own or attached) buffer by the header
        // invariant (data_off + data_len <= buf_len); the buffer is not written while shared, and otherwise only
        // through &mut self.
        // SAFETY: the data window lies inside the buffer (data_off + data_len <= buf_len).
        unsafe {
            let h = &*self.h();
            std::slice::from_raw_parts(h.buf_addr.add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The data of the first segment, writable.
    ///
    /// # Panics
    /// When the buffer is shared (a clone or cloned); check [`Mbuf::is_writable`] first.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        assert!(self.is_writable(), "mbuf buffer is shared: copy it before writing");
        // SAFETY: as in data(); is_writable() proved no other handle reads this buffer, and
        // &mut self excludes other borrows.
        unsafe {
            let h = &*self.h();
            std::slice::from_raw_parts_mut(h.buf_addr.add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The whole data room of the first segment behind `data_off` (for receiving into it).
    ///
    /// # Panics
    /// When the buffer is shared.
    pub fn room_mut(&mut self) -> &mut [u8] {
        assert!(self.is_writable(), "mbuf buffer is shared: copy it before writing");
        // SAFETY: data_off <= buf_len by invariant; writable as in data_mut.
        unsafe {
            let h = &*self.h();
            std::slice::from_raw_parts_mut(h.buf_addr.add(h.data_off as usize), (h.buf_len - h.data_off) as usize)
        }
    }

    /// Sets the data length of a single-segment packet (both `data_len` and `pkt_len`).
    /// Returns false (and changes nothing) when it exceeds the room.
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) -> bool {
        // SAFETY: header owned by this handle; bounds checked before the store.
        unsafe {
            let h = self.h();
            if len > ((*h).buf_len - (*h).data_off) as usize || !(*h).next.is_null() {
                return false;
            }
            (*h).data_len = len as u16;
            (*h).pkt_len = len as u32;
        }
        true
    }

    /// Like [`Mbuf::set_len`] without the checks, for drivers that just bounded `len`.
    ///
    /// # Safety
    /// `len` must fit the room behind `data_off` and the mbuf must be a single segment.
    #[inline(always)]
    pub unsafe fn set_len_unchecked(&mut self, len: u16) {
        // SAFETY: per the contract.
        unsafe {
            (*self.h()).data_len = len;
            (*self.h()).pkt_len = len as u32;
        }
    }

    /// Grows the data at the front by `n` bytes into the headroom and returns the new front.
    /// `None` (nothing changed) when the headroom is too small or the buffer is shared.
    #[inline(always)]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.headroom() || !self.is_writable() {
            return None;
        }
        // SAFETY: n <= data_off: the new front stays in the buffer; header owned by this handle.
        unsafe {
            let h = self.h();
            (*h).data_off -= n as u16;
            (*h).data_len += n as u16;
            (*h).pkt_len += n as u32;
        }
        Some(&mut self.data_mut()[..n])
    }

    /// Removes `n` bytes from the front of the first segment. `false` when it holds fewer.
    #[inline(always)]
    pub fn adj(&mut self, n: usize) -> bool {
        if n > self.data_len() {
            return false;
        }
        // SAFETY: n <= data_len; header owned by this handle.
        unsafe {
            let h = self.h();
            (*h).data_off += n as u16;
            (*h).data_len -= n as u16;
            (*h).pkt_len -= n as u32;
        }
        true
    }

    /// Grows the data at the back of the first segment (single-segment packets) by `n` bytes and
    /// returns them. `None` when the tailroom is too small, the packet is chained or shared.
    #[inline]
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() || !self.is_contiguous() || !self.is_writable() {
            return None;
        }
        let old = self.data_len();
        // SAFETY: n <= tailroom; header owned by this handle.
        unsafe {
            (*self.h()).data_len += n as u16;
            (*self.h()).pkt_len += n as u32;
        }
        Some(&mut self.data_mut()[old..])
    }

    /// Removes `n` bytes from the end of a single-segment packet. `false` when it is chained or
    /// holds fewer.
    pub fn trim(&mut self, n: usize) -> bool {
        if n > self.data_len() || !self.is_contiguous() {
            return false;
        }
        // SAFETY: n <= data_len; header owned by this handle.
        unsafe {
            (*self.h()).data_len -= n as u16;
            (*self.h()).pkt_len -= n as u32;
        }
        true
    }

    /// Iterates over the data of every segment.
    pub fn segments(&self) -> Segments<'_> {
        Segments { next: self.h(), _m: std::marker::PhantomData }
    }

    /// Copies the whole packet into a `Vec` (control path and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len());
        for s in self.segments() {
            v.extend_from_slice(s);
        }
        v
    }

    /// Copies `dst.len()` bytes starting at packet offset `off` across segments. `false` when
    /// the packet is shorter.
    pub fn read_at(&self, mut off: usize, dst: &mut [u8]) -> bool {
        if off.checked_add(dst.len()).is_none_or(|e| e > self.pkt_len()) {
            return false;
        }
        let mut done = 0;
        for s in self.segments() {
            if done == dst.len() {
                break;
            }
            if off >= s.len() {
                off -= s.len();
                continue;
            }
            let n = (s.len() - off).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&s[off..off + n]);
            done += n;
            off = 0;
        }
        done == dst.len()
    }

    /// Appends `seg` (and its own chain) at the end of this packet. Returns it back when the
    /// chain would exceed 65535 segments or 4 GiB.
    pub fn chain(&mut self, seg: Mbuf) -> Result<(), Mbuf> {
        let (segs, len) = (seg.nb_segs(), seg.pkt_len());
        if self.nb_segs() + segs > u16::MAX as usize || self.pkt_len() + len > u32::MAX as usize {
            return Err(seg);
        }
        let raw = seg.into_raw().as_ptr();
        // SAFETY: we own our chain and now `raw`'s; walking our `next` links stays inside our
        // chain, which is finite (nb_segs bounds it).
        unsafe {
            let mut last = self.h();
            while !(*last).next.is_null() {
                last = (*last).next;
            }
            (*last).next = raw;
            let h = self.h();
            (*h).nb_segs += segs as u16;
            (*h).pkt_len += len as u32;
            (*raw).nb_segs = 1;
            (*raw).pkt_len = (*raw).data_len as u32;
        }
        Ok(())
    }

    /// Detaches the segments after the first and returns them as a packet of their own.
    pub fn split_first(&mut self) -> Option<Mbuf> {
        // SAFETY: header owned by this handle; the tail chain is owned through it and handed out
        // as a new handle exactly once (our next is cleared).
        unsafe {
            let h = self.h();
            let next = (*h).next;
            let nn = NonNull::new(next)?;
            (*h).next = ptr::null_mut();
            (*nn.as_ptr()).nb_segs = (*h).nb_segs - 1;
            (*nn.as_ptr()).pkt_len = (*h).pkt_len - (*h).data_len as u32;
            (*h).nb_segs = 1;
            (*h).pkt_len = (*h).data_len as u32;
            Some(Mbuf::from_raw(nn))
        }
    }

    /// Sets this segment's data window (offset from the buffer start and length) and, for a
    /// single segment, `pkt_len`. `false` when it does not fit the buffer.
    pub fn set_window(&mut self, off: usize, len: usize) -> bool {
        if off.checked_add(len).is_none_or(|e| e > self.buf_len()) {
            return false;
        }
        // SAFETY: bounds checked above; header owned by this handle.
        unsafe {
            let h = self.h();
            let old = (*h).data_len as u32;
            (*h).data_off = off as u16;
            (*h).data_len = len as u16;
            (*h).pkt_len = (*h).pkt_len - old + len as u32;
        }
        true
    }

    /// Asks the CPU to start loading the first `bytes` bytes of this segment's data window into
    /// the cache: a hint that never faults and changes nothing (DPDK's `rte_prefetch0`). For
    /// code about to read data that is likely cold, such as the next segment of a chain: a few
    /// lines are enough to start the hardware's own stream prefetcher on the rest, and asking
    /// for more only fills the line-fill buffers.
    #[inline(always)]
    pub fn prefetch_data(&self, bytes: usize) {
        let (p, n) = (self.data_addr(), self.data_len().min(bytes));
        let mut off = 0;
        while off < n {
            // p + off stays inside the data window (off < data_len).
            prefetch0(p.wrapping_add(off));
            off += 64;
        }
    }

    /// Asks the CPU to start loading the header (both cache lines) of the segment after this
    /// one, when there is one, so that walking and freeing a chain does not wait for each
    /// header in turn.
    #[inline(always)]
    pub fn prefetch_next(&self) {
        // SAFETY: live header owned by this handle; `next` is read, not followed.
        let next = unsafe { (*self.h()).next };
        if !next.is_null() {
            prefetch_header(next);
        }
    }

    /// Address of the first data byte (for drivers that hand it to a device).
    #[inline(always)]
    pub fn data_addr(&self) -> *const u8 {
        // SAFETY: inside the buffer by invariant.
        unsafe { (*self.h()).buf_addr.add((*self.h()).data_off as usize) }
    }
}

/// Prefetches both cache lines of the header at `h` (a hint: any address is fine).
#[inline(always)]
pub(crate) fn prefetch_header(h: *const MbufHeader) {
    prefetch0(h.cast::<u8>());
    prefetch0(h.cast::<u8>().wrapping_add(64));
}

/// Prefetches the cache line at `p` into every cache level (a hint: any address is fine, it
/// never faults), like DPDK's `rte_prefetch0`: for fast paths about to read memory that is
/// likely cold, such as the entries of a lookup table for a burst of keys.
#[inline(always)]
pub fn prefetch0(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address, and writes nothing.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the chain; each segment is released once, its successor read first.
        unsafe { free_chain_to_rings(self.ptr.as_ptr()) }
    }
}

/// Releases a whole chain, returning chunks straight to their pools' rings (slow path).
///
/// # Safety
/// The caller owns the chain starting at `h` and gives it up.
pub(crate) unsafe fn free_chain_to_rings(mut h: *mut MbufHeader) {
    while !h.is_null() {
        // SAFETY: we own h; read the link before releasing it (the chunk may be reused at once).
        let next = unsafe { (*h).next };
        // SAFETY: we give up our reference to h here and do not touch it again.
        unsafe { MbufHeader::release(h, &mut |c| PoolInner::put_back(c)) };
        h = next;
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("index", &self.chunk_index())
            .field("data_off", &self.data_off())
            .field("data_len", &self.data_len())
            .field("pkt_len", &self.pkt_len())
            .field("nb_segs", &self.nb_segs())
            .field("port", &self.port())
            .field("out_port", &self.out_port())
            .field("ol_flags", &format_args!("{:#x}", self.ol_flags()))
            .finish()
    }
}

/// Iterator over the data slices of a chain.
#[derive(Debug)]
pub struct Segments<'a> {
    next: *mut MbufHeader,
    _m: std::marker::PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: the chain is owned by the borrowed Mbuf for 'a; each segment's window lies in
        // its buffer (header invariant).
        unsafe {
            let h = &*self.next;
            self.next = h.next;
            Some(std::slice::from_raw_parts(h.buf_addr.add(h.data_off as usize), h.data_len as usize))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The layout other code (and later, AF_XDP headroom math) depends on.
    #[test]
    fn header_layout_is_pinned() {
        assert_eq!(std::mem::size_of::<MbufHeader>(), 128);
        assert_eq!(std::mem::align_of::<MbufHeader>(), 64);
        // cache line 0
        assert_eq!(offset_of!(MbufHeader, buf_addr), 0);
        assert_eq!(offset_of!(MbufHeader, next), 8);
        assert_eq!(offset_of!(MbufHeader, ol_flags), 16);
        assert_eq!(offset_of!(MbufHeader, data_off), 24);
        assert_eq!(offset_of!(MbufHeader, data_len), 26);
        assert_eq!(offset_of!(MbufHeader, pkt_len), 28);
        assert_eq!(offset_of!(MbufHeader, refcnt), 32);
        assert_eq!(offset_of!(MbufHeader, nb_segs), 34);
        assert_eq!(offset_of!(MbufHeader, port), 36);
        assert_eq!(offset_of!(MbufHeader, queue), 38);
        assert_eq!(offset_of!(MbufHeader, packet_type), 40);
        assert_eq!(offset_of!(MbufHeader, rss_hash), 44);
        assert_eq!(offset_of!(MbufHeader, vlan_tci), 48);
        assert_eq!(offset_of!(MbufHeader, vlan_tci_outer), 50);
        assert_eq!(offset_of!(MbufHeader, tso_segsz), 52);
        assert_eq!(offset_of!(MbufHeader, out_port), 54);
        assert_eq!(offset_of!(MbufHeader, l2_len), 56);
        assert_eq!(offset_of!(MbufHeader, l4_len), 57);
        assert_eq!(offset_of!(MbufHeader, l3_len), 58);
        assert_eq!(offset_of!(MbufHeader, outer_l2_len), 60);
        assert_eq!(offset_of!(MbufHeader, outer_l3_len), 61);
        assert_eq!(offset_of!(MbufHeader, buf_len), 62);
        // cache line 1
        assert_eq!(offset_of!(MbufHeader, pool), 64);
        assert_eq!(offset_of!(MbufHeader, shared), 72);
        assert_eq!(offset_of!(MbufHeader, timestamp), 80);
        assert_eq!(offset_of!(MbufHeader, userdata), 88);
        assert_eq!(offset_of!(MbufHeader, index), 96);
        assert_eq!(offset_of!(MbufHeader, segment), 100);
        assert_eq!(offset_of!(MbufHeader, dest), 102);
        assert_eq!(offset_of!(MbufHeader, disposition), 104);
    }
}
