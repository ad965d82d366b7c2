//! Guest memory: the regions of a SET_MEM_TABLE, mapped once, and every access to them.
//!
//! This is the one place of the crate that turns guest addresses into host pointers. Every
//! `(address, length)` pair from a guest or a frontend is checked against the region table with
//! checked arithmetic before a pointer is formed; a range that leaves its region, wraps around or
//! touches no region is refused (`None` / `false`), never clamped.
//!
//! Two address spaces are kept apart, as the vhost-user protocol requires:
//! - *guest-physical* addresses (GPA): descriptor buffers and indirect tables
//!   ([`GuestMemory::gpa_ptr`], [`GuestMemory::read`], [`GuestMemory::write`]);
//! - *frontend-virtual* addresses (the frontend process's own pointers, "user addresses"): the
//!   ring addresses of SET_VRING_ADDR ([`GuestMemory::uva_ptr`]).
//!
//! DPDK's virtio-user makes the two equal; QEMU does not, so mixing them up fails only there.
//!
//! The guest writes its memory concurrently with us. Therefore we never form Rust references
//! (`&[u8]`) into guest memory: bytes move with `ptr::copy_nonoverlapping` between raw guest
//! pointers and our own buffers, and ring indices are read and written as atomics by
//! [`crate::ring`]. A racing guest can corrupt only the bytes of its own packets.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::Arc;

/// The most regions a table may have (QEMU's and DPDK's limit for SET_MEM_TABLE is 8; we allow
/// the CONFIGURE_MEM_SLOTS-sized 32).
pub const MAX_REGIONS: usize = 32;

/// One mmap of a frontend's memory file, unmapped when the last region using it goes.
/// Registered with the SIGBUS guard ([`crate::sigbus`]) for as long as it is mapped, so that a
/// frontend truncating the file under us breaks its connection, not the process.
pub struct Mapping {
    base: *mut u8,
    len: usize,
    guard: Option<crate::sigbus::Guard>,
}

// SAFETY: a Mapping is an address range owned by this value; it is only unmapped in Drop, after
// every user (held through Arc) is gone.
unsafe impl Send for Mapping {}
// SAFETY: as above; the Mapping itself is never mutated.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("base", &self.base).field("len", &self.len).finish()
    }
}

impl Mapping {
    /// Maps `len` bytes of `file` shared, read-write, from offset 0.
    pub fn map_file(file: &File, len: usize) -> std::io::Result<Mapping> {
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a memory region of 0 bytes"));
        }
        // SAFETY: a fresh shared mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut m = Mapping { base: p.cast(), len, guard: None };
        // On failure `m` is dropped, which unmaps it.
        m.guard = Some(crate::sigbus::register(m.base, len).map_err(|_| {
            std::io::Error::other(format!(
                "{} guest mappings are registered already (the SIGBUS guard's limit): \
                 fewer ports or memory regions",
                crate::sigbus::SLOTS
            ))
        })?);
        Ok(m)
    }

    /// True once the frontend's file lost memory under this mapping (it was truncated) and the
    /// SIGBUS guard replaced the mapping with zero-filled memory: its connection must go.
    pub fn faulted(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.faulted())
    }

    /// Start of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (a mapping has at least one byte); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Out of the SIGBUS guard's table first: nobody touches the range any more, and it must
        // not be found there once the address range can be reused.
        self.guard = None;
        // SAFETY: base/len are exactly what mmap returned; every pointer into it came from a
        // region that holds an Arc to this mapping, so none is left.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A region as the frontend describes it (SET_MEM_TABLE's `VhostUserMemoryRegion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    /// Guest-physical start.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// Start in the frontend's virtual address space.
    pub uva: u64,
    /// Offset of the region inside the frontend's memory file.
    pub mmap_offset: u64,
}

/// One mapped region.
#[derive(Debug, Clone)]
pub struct Region {
    gpa: u64,
    size: u64,
    uva: u64,
    host: *mut u8,
    map: Arc<Mapping>,
}

// SAFETY: `host` points into `map`, which the region keeps alive; see Mapping.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// A translation failure, for control-path messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTable(pub String);

impl fmt::Display for BadTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The guest memory table of one SET_MEM_TABLE: immutable once built, shared by the vrings
/// through `Arc`, unmapped when the last user drops it.
#[derive(Debug, Clone, Default)]
pub struct GuestMemory {
    regions: Vec<Region>,
    /// Regions whose file is sealed against shrinking (see [`crate::fds::check_memory_file`]).
    sealed: usize,
}

impl GuestMemory {
    /// An empty table (every translation fails).
    pub fn empty() -> GuestMemory {
        GuestMemory { regions: Vec::new(), sealed: 0 }
    }

    /// Maps the regions of a SET_MEM_TABLE, one file each. Each file is mapped from offset 0 to
    /// `mmap_offset + size` (QEMU passes region offsets inside a larger file).
    pub fn map(descs: &[RegionDesc], files: &[File]) -> Result<GuestMemory, BadTable> {
        if descs.len() != files.len() {
            return Err(BadTable(format!("{} regions but {} file descriptors", descs.len(), files.len())));
        }
        let mut maps = Vec::with_capacity(descs.len());
        let mut sealed = 0;
        for (d, f) in descs.iter().zip(files) {
            // Shared memory only: a page fault on another filesystem could wait on a process or
            // a server and stall the lcore (see fds.rs).
            let info =
                crate::fds::check_memory_file(f).map_err(|e| BadTable(format!("region at gpa {:#x}: {e}", d.gpa)))?;
            sealed += info.sealed as usize;
            let len = d
                .mmap_offset
                .checked_add(d.size)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(|| BadTable(format!("region at gpa {:#x}: offset + size overflows", d.gpa)))?;
            // Mapping past the end of the file succeeds, but touching it raises SIGBUS: refuse
            // a region that the file does not hold.
            let flen = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len as u64 > flen {
                return Err(BadTable(format!(
                    "region at gpa {:#x}: offset + size {len:#x} is beyond its file's {flen:#x} bytes",
                    d.gpa
                )));
            }
            let m = Mapping::map_file(f, len)
                .map_err(|e| BadTable(format!("region at gpa {:#x}: mmap of {len} bytes failed: {e}", d.gpa)))?;
            maps.push((*d, Arc::new(m)));
        }
        let mut t = GuestMemory::from_mappings(maps)?;
        t.sealed = sealed;
        Ok(t)
    }

    /// Builds a table from regions and the mappings holding them (`mmap_offset` is the region's
    /// offset inside its mapping). Checks sizes, overflow and overlaps.
    pub fn from_mappings(regions: Vec<(RegionDesc, Arc<Mapping>)>) -> Result<GuestMemory, BadTable> {
        if regions.len() > MAX_REGIONS {
            return Err(BadTable(format!("{} regions: at most {MAX_REGIONS} are supported", regions.len())));
        }
        let mut out: Vec<Region> = Vec::with_capacity(regions.len());
        for (d, map) in regions {
            let end_ok = d.gpa.checked_add(d.size).is_some() && d.uva.checked_add(d.size).is_some();
            let in_map = d.mmap_offset.checked_add(d.size).is_some_and(|e| e <= map.len() as u64);
            if d.size == 0 || !end_ok || !in_map {
                return Err(BadTable(format!(
                    "region gpa {:#x} size {:#x} uva {:#x} offset {:#x} does not fit its mapping of {:#x} bytes",
                    d.gpa,
                    d.size,
                    d.uva,
                    d.mmap_offset,
                    map.len()
                )));
            }
            for r in &out {
                let overlap = d.gpa < r.gpa + r.size && r.gpa < d.gpa + d.size;
                if overlap {
                    return Err(BadTable(format!("regions at gpa {:#x} and {:#x} overlap", r.gpa, d.gpa)));
                }
            }
            // SAFETY: mmap_offset + size <= map.len() was checked just above, so the region lies
            // inside the mapping.
            let host = unsafe { map.base().add(d.mmap_offset as usize) };
            out.push(Region { gpa: d.gpa, size: d.size, uva: d.uva, host, map });
        }
        // Largest region first: guests usually put nearly all RAM in one, so most lookups end
        // at the first comparison.
        out.sort_by_key(|r| std::cmp::Reverse(r.size));
        Ok(GuestMemory { regions: out, sealed: 0 })
    }

    /// Number of regions.
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Regions whose file is sealed against shrinking (the others can be truncated under us,
    /// which the SIGBUS guard survives).
    pub fn sealed_regions(&self) -> usize {
        self.sealed
    }

    /// True when the frontend truncated a file of this table under us (a page was lost and the
    /// SIGBUS guard replaced that mapping with zeros): the connection must be dropped.
    pub fn faulted(&self) -> bool {
        self.regions.iter().any(|r| r.map.faulted())
    }

    /// The region descriptions, for logs and tests.
    pub fn describe(&self) -> Vec<RegionDesc> {
        self.regions.iter().map(|r| RegionDesc { gpa: r.gpa, size: r.size, uva: r.uva, mmap_offset: 0 }).collect()
    }

    /// Host pointer to the guest-physical range `[gpa, gpa + len)`, which must lie inside one
    /// region. `len` may be 0 (then `gpa` must still be inside a region).
    #[inline(always)]
    pub fn gpa_ptr(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            // `off < size` and `len <= size - off` together keep the range inside the region
            // without any addition that could overflow.
            let off = gpa.wrapping_sub(r.gpa);
            if gpa >= r.gpa && off < r.size && len <= r.size - off {
                // SAFETY: off < size and the region's `size` bytes lie in its live mapping.
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    /// Host pointer to the frontend-virtual range `[uva, uva + len)` (ring addresses of
    /// SET_VRING_ADDR), which must lie inside one region.
    pub fn uva_ptr(&self, uva: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let off = uva.wrapping_sub(r.uva);
            if uva >= r.uva && off < r.size && len <= r.size - off {
                // SAFETY: as in gpa_ptr.
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    /// The longest run starting at `gpa` inside one region, capped at `len`: (host pointer,
    /// bytes). For buffers that cross a region boundary.
    #[inline(always)]
    fn gpa_run(&self, gpa: u64, len: u64) -> Option<(*mut u8, u64)> {
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if gpa >= r.gpa && off < r.size {
                // SAFETY: off < size; the run is capped at the region's end.
                return Some((unsafe { r.host.add(off as usize) }, len.min(r.size - off)));
            }
        }
        None
    }

    /// True when all of `[gpa, gpa + len)` is guest memory (possibly over several regions).
    pub fn check_range(&self, mut gpa: u64, mut len: u64) -> bool {
        if gpa.checked_add(len).is_none() {
            return false;
        }
        while len > 0 {
            let Some((_, n)) = self.gpa_run(gpa, len) else { return false };
            gpa += n;
            len -= n;
        }
        true
    }

    /// Copies `dst.len()` bytes from guest-physical `gpa` (possibly over several regions).
    /// `false` (with `dst` partly written) when the range is not all guest memory.
    #[inline]
    pub fn read(&self, mut gpa: u64, dst: &mut [u8]) -> bool {
        if gpa.checked_add(dst.len() as u64).is_none() {
            return false;
        }
        let mut done = 0usize;
        while done < dst.len() {
            let Some((p, n)) = self.gpa_run(gpa, (dst.len() - done) as u64) else { return false };
            // SAFETY: p..p+n lies inside a live region (gpa_run); dst has n bytes left at
            // `done`; guest memory and our buffer never overlap.
            unsafe { ptr::copy_nonoverlapping(p, dst.as_mut_ptr().add(done), n as usize) };
            done += n as usize;
            gpa += n;
        }
        true
    }

    /// Copies `src` to guest-physical `gpa` (possibly over several regions). `false` when the
    /// range is not all guest memory (nothing is written then).
    #[inline]
    pub fn write(&self, gpa: u64, src: &[u8]) -> bool {
        if !self.check_range(gpa, src.len() as u64) {
            return false;
        }
        let (mut gpa, mut done) = (gpa, 0usize);
        while done < src.len() {
            let Some((p, n)) = self.gpa_run(gpa, (src.len() - done) as u64) else { return false };
            // SAFETY: as in read, in the other direction.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr().add(done), p, n as usize) };
            done += n as usize;
            gpa += n;
        }
        true
    }
}

/// Copies `n` bytes between non-overlapping buffers, inline for the small sizes of headers and
/// minimum-size frames (libc's memcpy call costs more than the copy there).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes; they must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_bytes(dst: *mut u8, src: *const u8, n: usize) {
    type B16 = [u8; 16];
    type B8 = [u8; 8];
    // Soundness: every access below stays within [0, n) of both buffers: for 16 < n <= 64 the 16-byte blocks
    // start at 0, 16 (when n > 32), n - 32 (when n > 32) and n - 16; for 8 <= n <= 16 the 8-byte blocks start at 0 and
    // n - 8. Unaligned accesses are used because guest buffers have any alignment.
    // SAFETY: every block starts at or after 0 and ends at or before n in both buffers.
    unsafe {
        if n > 64 {
            ptr::copy_nonoverlapping(src, dst, n);
        } else if n > 16 {
            let a = src.cast::<B16>().read_unaligned();
            let d = src.add(n - 16).cast::<B16>().read_unaligned();
            if n > 32 {
                let b = src.add(16).cast::<B16>().read_unaligned();
                let c = src.add(n - 32).cast::<B16>().read_unaligned();
                dst.add(16).cast::<B16>().write_unaligned(b);
                dst.add(n - 32).cast::<B16>().write_unaligned(c);
            }
            dst.cast::<B16>().write_unaligned(a);
            dst.add(n - 16).cast::<B16>().write_unaligned(d);
        } else if n >= 8 {
            let a = src.cast::<B8>().read_unaligned();
            let b = src.add(n - 8).cast::<B8>().read_unaligned();
            dst.cast::<B8>().write_unaligned(a);
            dst.add(n - 8).cast::<B8>().write_unaligned(b);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
    }
}

/// Copies `n` bytes from a host pointer into guest memory returned by this module.
///
/// # Safety
/// `dst` must come from [`GuestMemory::gpa_ptr`] (or `uva_ptr`) for at least `n` bytes, on a table
/// that is still alive; `src` must be valid for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn copy_to_guest(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: per the contract; guest memory never overlaps our buffers.
    unsafe { copy_bytes(dst, src, n) }
}

/// Copies `n` bytes out of guest memory returned by this module.
///
/// # Safety
/// `src` must come from [`GuestMemory::gpa_ptr`] for at least `n` bytes on a live table; `dst`
/// must be valid for writes of `n` bytes.
#[inline(always)]
pub(crate) unsafe fn copy_from_guest(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: per the contract.
    unsafe { copy_bytes(dst, src, n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::memfd;

    fn table() -> (GuestMemory, File) {
        let f = memfd("memtest", 3 * 4096);
        let m = Arc::new(Mapping::map_file(&f, 3 * 4096).unwrap());
        let t = GuestMemory::from_mappings(vec![
            (RegionDesc { gpa: 0x10000, size: 4096, uva: 0x7000_0000, mmap_offset: 0 }, m.clone()),
            (RegionDesc { gpa: 0x11000, size: 8192, uva: 0x9000_0000, mmap_offset: 4096 }, m),
        ])
        .unwrap();
        (t, f)
    }

    #[test]
    fn gpa_and_uva_are_separate_spaces() {
        let (t, _f) = table();
        assert!(t.gpa_ptr(0x10000, 16).is_some());
        assert!(t.uva_ptr(0x10000, 16).is_none(), "a GPA is not a frontend address");
        assert!(t.uva_ptr(0x7000_0000, 16).is_some());
        assert!(t.gpa_ptr(0x7000_0000, 16).is_none(), "a frontend address is not a GPA");
        // Both name the same byte.
        assert_eq!(t.gpa_ptr(0x11010, 1), t.uva_ptr(0x9000_0010, 1));
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        let (t, _f) = table();
        assert!(t.gpa_ptr(0x10000, 4096).is_some());
        assert!(t.gpa_ptr(0x10000, 4097).is_none(), "crosses into the next region: not one run");
        assert!(t.gpa_ptr(0x10fff, 1).is_some());
        assert!(t.gpa_ptr(0xffff, 1).is_none());
        assert!(t.gpa_ptr(0x13000, 0).is_none(), "one past the end is outside");
        assert!(t.gpa_ptr(u64::MAX, 2).is_none());
        assert!(t.gpa_ptr(0x10000, u64::MAX).is_none());
        assert!(t.check_range(0x10f00, 0x200), "two adjacent regions form one range");
        assert!(!t.check_range(0x12f00, 0x200));
        assert!(!t.check_range(u64::MAX - 4, 16));
        let mut b = [0u8; 64];
        assert!(!t.read(u64::MAX - 8, &mut b));
        assert!(!t.write(0x12fff, &[1, 2]), "nothing is written when the end is outside");
    }

    #[test]
    fn read_write_across_regions() {
        let (t, _f) = table();
        let data: Vec<u8> = (0..=255u8).collect();
        assert!(t.write(0x10f80, &data));
        let mut back = [0u8; 256];
        assert!(t.read(0x10f80, &mut back));
        assert_eq!(&back[..], &data[..]);
    }

    #[test]
    fn small_copies_are_exact() {
        for n in 0..=80usize {
            let src: Vec<u8> = (0..n as u8).map(|x| x.wrapping_mul(3) ^ 0x5a).collect();
            let mut dst = vec![0xa5u8; n + 8];
            // SAFETY: src has n bytes, dst n + 8; distinct allocations.
            unsafe { copy_bytes(dst.as_mut_ptr().add(4), src.as_ptr(), n) };
            assert_eq!(&dst[4..4 + n], &src[..], "n = {n}");
            assert!(dst[..4].iter().chain(&dst[4 + n..]).all(|&b| b == 0xa5), "n = {n}: wrote outside");
        }
    }

    #[test]
    fn bad_tables_are_refused() {
        let f = memfd("memtest2", 4096);
        let m = Arc::new(Mapping::map_file(&f, 4096).unwrap());
        let r = |gpa, size, off| (RegionDesc { gpa, size, uva: 0, mmap_offset: off }, m.clone());
        assert!(GuestMemory::from_mappings(vec![r(0, 8192, 0)]).is_err(), "larger than its mapping");
        assert!(GuestMemory::from_mappings(vec![r(0, 4096, 1)]).is_err(), "offset pushes it out");
        assert!(GuestMemory::from_mappings(vec![r(0, 0, 0)]).is_err(), "empty");
        assert!(GuestMemory::from_mappings(vec![r(u64::MAX - 10, 4096, 0)]).is_err(), "wraps");
        assert!(GuestMemory::from_mappings(vec![r(0, 4096, 0), r(2048, 1024, 0)]).is_err(), "overlap");
        assert!(GuestMemory::map(&[RegionDesc { gpa: 0, size: 4096, uva: 0, mmap_offset: 0 }], &[]).is_err());
        let big = RegionDesc { gpa: 0, size: 8192, uva: 0, mmap_offset: 0 };
        let e = GuestMemory::map(&[big], &[f.try_clone().unwrap()]).unwrap_err();
        assert!(e.0.contains("beyond its file"), "{e}");
    }
}
