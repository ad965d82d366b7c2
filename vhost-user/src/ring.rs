//! The split virtqueue layout (virtio 1.x, 2.7) and raw access to a ring in guest memory.
//!
//! ```text
//!  descriptor table   avail ring (driver -> device)       used ring (device -> driver)
//!  16 B x size        flags idx ring[size] used_event     flags idx {id,len}[size] avail_event
//!  align 16           2     2   2 x size   2              2     2   8 x size       2
//!                     align 2                              align 4
//! ```
//!
//! [`SplitRing`] holds host pointers to the three parts, each checked once against the memory
//! table for its whole size when the ring is set up ([`SplitRing::new`]); after that every access
//! indexes with `& (size - 1)`, so it cannot leave the checked area. Indices (`avail.idx`,
//! `used.idx`) and flags are accessed as atomics because the guest writes them concurrently;
//! descriptors and ring entries are read with volatile loads after the Acquire of `avail.idx`.

use std::sync::atomic::{AtomicU16, Ordering};

use crate::mem::GuestMemory;

/// Largest ring size (virtio: 32768 for split rings).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor flag: the chain continues at `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (receive buffers).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// avail.flags: the driver does not want interrupts (without EVENT_IDX).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// used.flags: the device does not want kicks (without EVENT_IDX).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// One descriptor, as laid out in guest memory (little-endian; we run on little-endian hosts).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor when `NEXT` is set.
    pub next: u16,
}

/// One used-ring element.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsedElem {
    /// Head descriptor index of the chain returned.
    pub id: u32,
    /// Bytes written into the chain.
    pub len: u32,
}

const _: () = assert!(std::mem::size_of::<Desc>() == 16 && std::mem::size_of::<UsedElem>() == 8);
const _: () = assert!(cfg!(target_endian = "little"), "virtio 1.x rings are little-endian");

/// Bytes of the descriptor table of a ring of `size`.
pub const fn desc_bytes(size: u16) -> u64 {
    16 * size as u64
}

/// Bytes of the avail ring of `size` (with `used_event`).
pub const fn avail_bytes(size: u16) -> u64 {
    6 + 2 * size as u64
}

/// Bytes of the used ring of `size` (with `avail_event`).
pub const fn used_bytes(size: u16) -> u64 {
    6 + 8 * size as u64
}

/// virtio's `vring_need_event`: true when `event` lies in `[old, new)` (mod 2^16), i.e. the other
/// side asked to be told once the index passes `event`.
#[inline(always)]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Frontend-virtual ring addresses from SET_VRING_ADDR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Avail ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

/// Why a ring cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingSetupError {
    /// The size is 0, above 32768 or not a power of two.
    Size(u32),
    /// A part is misaligned.
    Align(&'static str, u64),
    /// A part is not (wholly) inside one memory region.
    Unmapped(&'static str, u64),
}

impl std::fmt::Display for RingSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingSetupError::Size(n) => write!(f, "ring size {n} is not a power of two in 1..=32768"),
            RingSetupError::Align(p, a) => write!(f, "{p} ring address {a:#x} is misaligned"),
            RingSetupError::Unmapped(p, a) => {
                write!(f, "{p} ring at frontend address {a:#x} is not inside one memory region")
            }
        }
    }
}

/// A translated ring of either layout (the frontend chooses with RING_PACKED).
#[derive(Debug, Clone, Copy)]
pub enum Ring {
    /// A split ring.
    Split(SplitRing),
    /// A packed ring.
    Packed(crate::packed::PackedRing),
}

/// Host pointers to the three parts of a split ring, checked for their whole size.
#[derive(Debug, Clone, Copy)]
pub struct SplitRing {
    desc: *const Desc,
    avail: *mut u16,
    used: *mut u16,
    size: u16,
}

// SAFETY: raw pointers into a memory table that the owner keeps alive (the vring snapshot holds
// an Arc to it); the ring moves with its owner.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Translates and checks the ring of `size` at frontend-virtual `addrs` through `mem`.
    pub fn new(mem: &GuestMemory, addrs: RingAddrs, size: u32) -> Result<SplitRing, RingSetupError> {
        if size == 0 || size > MAX_QUEUE_SIZE as u32 || !size.is_power_of_two() {
            return Err(RingSetupError::Size(size));
        }
        let size16 = size as u16;
        let align = [("descriptor", addrs.desc, 16), ("avail", addrs.avail, 2), ("used", addrs.used, 4)];
        for (name, a, al) in align {
            if a % al != 0 {
                return Err(RingSetupError::Align(name, a));
            }
        }
        let desc =
            mem.uva_ptr(addrs.desc, desc_bytes(size16)).ok_or(RingSetupError::Unmapped("descriptor", addrs.desc))?;
        let avail =
            mem.uva_ptr(addrs.avail, avail_bytes(size16)).ok_or(RingSetupError::Unmapped("avail", addrs.avail))?;
        let used = mem.uva_ptr(addrs.used, used_bytes(size16)).ok_or(RingSetupError::Unmapped("used", addrs.used))?;
        Ok(SplitRing { desc: desc.cast(), avail: avail.cast(), used: used.cast(), size: size16 })
    }

    /// Ring size (a power of two).
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// `avail.idx` (Acquire: the entries and descriptors the guest wrote before it are visible).
    #[inline(always)]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: index 1 of the avail area (checked for 6 + 2 * size bytes).
        guest_u16(unsafe { self.avail.add(1) }).load(Ordering::Acquire)
    }

    /// `avail.flags` (Relaxed: read after the fence that follows a used publish).
    #[inline(always)]
    pub fn avail_flags(&self) -> u16 {
        guest_u16(self.avail).load(Ordering::Relaxed)
    }

    /// `avail.ring[i & (size - 1)]`: a head index as the guest wrote it (unchecked).
    #[inline(always)]
    pub fn avail_entry(&self, i: u16) -> u16 {
        let slot = (i & (self.size - 1)) as usize;
        // SAFETY: slot < size; entries start at u16 index 2 of the checked avail area. A plain
        // (volatile) load: ordered by the Acquire load of avail.idx that preceded it.
        unsafe { self.avail.add(2 + slot).read_volatile() }
    }

    /// `used_event` (the tail of the avail ring; Relaxed, read after a SeqCst fence).
    #[inline(always)]
    pub fn used_event(&self) -> u16 {
        // SAFETY: u16 index 2 + size is the last field of the checked avail area.
        guest_u16(unsafe { self.avail.add(2 + self.size as usize) }).load(Ordering::Relaxed)
    }

    /// Descriptor `i` of the main table; `None` when `i >= size` (a guest error).
    #[inline(always)]
    pub fn desc(&self, i: u16) -> Option<Desc> {
        if i >= self.size {
            return None;
        }
        // SAFETY: i < size; the table was checked for 16 * size bytes and is 16-aligned.
        Some(unsafe { self.desc.add(i as usize).read_volatile() })
    }

    /// Address of descriptor `i` (for prefetching; `i < size` keeps it inside the table).
    #[inline(always)]
    pub fn desc_ptr(&self, i: u16) -> *const u8 {
        self.desc.wrapping_add((i & (self.size - 1)) as usize).cast()
    }

    /// Writes used-ring slot `i & (size - 1)` (not yet visible: see [`SplitRing::publish_used`]).
    #[inline(always)]
    pub fn set_used(&self, i: u16, id: u16, len: u32) {
        let slot = (i & (self.size - 1)) as usize;
        // SAFETY: the elements start at byte 4 of the checked used area (u16 index 2), 8 bytes
        // each, slot < size; 4-aligned because the used ring is.
        unsafe {
            let e = self.used.add(2).cast::<UsedElem>().add(slot);
            e.write_volatile(UsedElem { id: id as u32, len });
        }
    }

    /// Address of used-ring slot `i & (size - 1)` (for prefetching).
    #[inline(always)]
    pub fn used_ptr(&self, i: u16) -> *const u8 {
        self.used.wrapping_add(2 + 4 * (i & (self.size - 1)) as usize).cast_const().cast()
    }

    /// `used.idx` as we last published it.
    #[inline(always)]
    pub fn used_idx(&self) -> u16 {
        // SAFETY: u16 index 1 of the checked used area.
        guest_u16(unsafe { self.used.add(1) }).load(Ordering::Relaxed)
    }

    /// Publishes `used.idx` (Release: the used elements written before it become visible first).
    #[inline(always)]
    pub fn publish_used(&self, idx: u16) {
        // SAFETY: as in used_idx.
        guest_u16(unsafe { self.used.add(1) }).store(idx, Ordering::Release);
    }

    /// Sets `used.flags` (Relaxed: a hint to the guest, ordered by later publishes).
    #[inline(always)]
    pub fn set_used_flags(&self, f: u16) {
        guest_u16(self.used).store(f, Ordering::Relaxed);
    }

    /// Writes `avail_event` (the tail of the used ring).
    #[inline(always)]
    pub fn set_avail_event(&self, v: u16) {
        // SAFETY: byte 4 + 8 * size of the checked used area: u16 index 2 + 4 * size.
        guest_u16(unsafe { self.used.add(2 + 4 * self.size as usize) }).store(v, Ordering::Relaxed);
    }
}

/// A 16-bit ring field the guest writes concurrently, as an atomic: for ring indices and flags
/// of both ring layouts. `p` must point to a 2-aligned `u16` inside a ring area checked against the
/// memory table, which stays mapped while the caller uses the reference (it never escapes a call).
#[inline(always)]
pub(crate) fn guest_u16(p: *mut u16) -> &'static AtomicU16 {
    // Soundness: the guest accesses the field concurrently, which is what atomics are for; the
    // pointer's validity is the callers' precondition above (checked ring areas only).
    // SAFETY: p is a 2-aligned u16 inside the checked ring area, alive for the call.
    unsafe { AtomicU16::from_ptr(p) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(offset_of!(Desc, addr), 0);
        assert_eq!(offset_of!(Desc, len), 8);
        assert_eq!(offset_of!(Desc, flags), 12);
        assert_eq!(offset_of!(Desc, next), 14);
        assert_eq!(offset_of!(UsedElem, id), 0);
        assert_eq!(offset_of!(UsedElem, len), 4);
        assert_eq!(avail_bytes(256), 518);
        assert_eq!(used_bytes(256), 2054);
    }

    #[test]
    fn need_event_matches_virtio() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 3));
        assert!(!need_event(10, 10, 3));
        // wrapping
        assert!(need_event(u16::MAX, 2, u16::MAX - 1));
        assert!(!need_event(u16::MAX - 3, 2, u16::MAX - 1));
    }
}
