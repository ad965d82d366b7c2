//! Memory regions backing a pool: one anonymous mapping per pool.
//!
//! A region is 2 MiB hugepages (`MAP_HUGETLB`) when the system has enough free ones, else 4 KiB
//! pages with `MADV_HUGEPAGE` so that transparent hugepages can back it. Which one was chosen is
//! logged and kept in [`Region::page_kind`]. The region is page aligned, so it can be registered
//! as an AF_XDP UMEM as it is.

use std::fmt;
use std::ptr::NonNull;

use crate::Error;

/// 2 MiB, the hugepage size used for regions.
pub const HUGEPAGE_SIZE: usize = 2 << 20;

/// How a region's memory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// 2 MiB hugepages from the hugetlb pool.
    Huge2M,
    /// 4 KiB pages, advised for transparent hugepages.
    Small4K,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::Huge2M => "2 MiB hugepages",
            PageKind::Small4K => "4 KiB pages (MADV_HUGEPAGE)",
        })
    }
}

/// Which backing to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PagePolicy {
    /// Hugepages when `/proc/meminfo` shows enough free ones, else 4 KiB pages.
    #[default]
    Auto,
    /// Always 4 KiB pages (with `MADV_HUGEPAGE`).
    Small,
    /// Hugepages or an error.
    Huge,
}

/// An anonymous, page-aligned, zero-filled memory mapping, unmapped on drop.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    kind: PageKind,
}

// SAFETY: a Region is a plain owned mapping; it holds no thread-affine state. Access to its bytes
// goes through raw pointers whose users (the pool) arrange exclusive ownership of each chunk.
unsafe impl Send for Region {}
// SAFETY: &Region only exposes the base address and length; no data is read through it.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region").field("base", &self.base).field("len", &self.len).field("kind", &self.kind).finish()
    }
}

/// Free 2 MiB hugepages as `/proc/meminfo` reports them (0 when unreadable).
pub fn free_hugepages() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Region {
    /// Maps `len` bytes (rounded up to the page size of the chosen backing).
    pub fn new(len: usize, policy: PagePolicy) -> Result<Region, Error> {
        if len == 0 {
            return Err(Error::Config("a memory region needs a non-zero size".into()));
        }
        let want_huge = match policy {
            PagePolicy::Small => false,
            PagePolicy::Huge => true,
            PagePolicy::Auto => free_hugepages() * HUGEPAGE_SIZE >= len,
        };
        if want_huge {
            let hlen = len.next_multiple_of(HUGEPAGE_SIZE);
            match Self::map(hlen, libc::MAP_HUGETLB) {
                Ok(base) => {
                    log::info!("mempool region: {} MiB on 2 MiB hugepages", hlen >> 20);
                    return Ok(Region { base, len: hlen, kind: PageKind::Huge2M });
                }
                Err(e) if policy == PagePolicy::Huge => {
                    return Err(Error::Os {
                        what: "mmap(MAP_HUGETLB)",
                        err: e,
                        fix: "reserve hugepages: echo N > /proc/sys/vm/nr_hugepages",
                    })
                }
                Err(e) => log::info!("mempool region: hugepages refused ({e}), using 4 KiB pages"),
            }
        }
        // 4 KiB pages: map 2 MiB-aligned, advise transparent hugepages *before* the pages are
        // touched (with THP in "madvise" mode, faulting first would pin 4 KiB pages), then fault
        // everything in so the fast path never page-faults.
        let slen = len.next_multiple_of(HUGEPAGE_SIZE);
        let base = Self::map_aligned(slen).map_err(|e| Error::Os {
            what: "mmap",
            err: e,
            fix: "lower the pool size (--mbufs) or raise the memory limit",
        })?;
        // SAFETY: base..base+slen is the mapping just created and owned by us.
        let rc = unsafe { libc::madvise(base.as_ptr().cast(), slen, libc::MADV_HUGEPAGE) };
        for off in (0..slen).step_by(4096) {
            // SAFETY: inside our fresh read/write mapping; a volatile write faults the page in.
            unsafe { base.as_ptr().add(off).write_volatile(0) };
        }
        log::info!(
            "mempool region: {} KiB on 4 KiB pages{}",
            slen >> 10,
            if rc == 0 { " with MADV_HUGEPAGE" } else { " (MADV_HUGEPAGE refused)" }
        );
        Ok(Region { base, len: slen, kind: PageKind::Small4K })
    }

    /// Maps `len` bytes (a multiple of 2 MiB) at a 2 MiB-aligned address, without populating.
    fn map_aligned(len: usize) -> Result<NonNull<u8>, std::io::Error> {
        let raw = Self::map_flags(len + HUGEPAGE_SIZE, 0, false)?;
        let a = raw.as_ptr() as usize;
        let aligned = a.next_multiple_of(HUGEPAGE_SIZE);
        let head = aligned - a;
        let tail = HUGEPAGE_SIZE - head;
        // SAFETY: both trimmed ranges lie inside the mapping we just made and are not used.
        unsafe {
            if head > 0 {
                libc::munmap(raw.as_ptr().cast(), head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        NonNull::new(aligned as *mut u8).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))
    }

    fn map(len: usize, extra: libc::c_int) -> Result<NonNull<u8>, std::io::Error> {
        Self::map_flags(len, extra, true)
    }

    fn map_flags(len: usize, extra: libc::c_int, populate: bool) -> Result<NonNull<u8>, std::io::Error> {
        let populate = if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous private mapping with a null hint has no preconditions; the result
        // is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | populate | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))
    }

    /// First byte of the region.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The backing that was chosen.
    pub fn page_kind(&self) -> PageKind {
        self.kind
    }

    /// True when `p` points inside the region.
    pub fn contains(&self, p: *const u8) -> bool {
        let a = p as usize;
        let b = self.base.as_ptr() as usize;
        a >= b && a < b + self.len
    }
}

/// Types whose all-zero bit pattern is a valid value and that need no drop (atomics, integers,
/// arrays and `repr(C)` structs of them), so that they can live in a fresh zero-filled
/// [`Region`].
///
/// # Safety
/// All-zero bytes must be a valid value of the type, its alignment must be at most 4096, and
/// it must not need `Drop`.
pub unsafe trait Zeroable: Sized {}

/// `len` values of `T` in a region of their own, all zero at the start: for large tables read
/// on the fast path (the switch's FDB), where the region's 2 MiB pages (hugetlb, or transparent
/// hugepages by `MADV_HUGEPAGE`) spare a TLB miss per lookup.
pub struct RegionSlice<T: Zeroable> {
    region: Region,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Zeroable> fmt::Debug for RegionSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionSlice").field("len", &self.len).field("region", &self.region).finish()
    }
}

impl<T: Zeroable> RegionSlice<T> {
    /// `len` zero values (at least one).
    pub fn new(len: usize, policy: PagePolicy) -> Result<RegionSlice<T>, Error> {
        let bytes = len
            .max(1)
            .checked_mul(std::mem::size_of::<T>().max(1))
            .ok_or_else(|| Error::Config(format!("a table of {len} entries does not fit the address space")))?;
        let region = Region::new(bytes, policy)?;
        Ok(RegionSlice { region, len: len.max(1), _t: std::marker::PhantomData })
    }

    /// The backing that was chosen.
    pub fn page_kind(&self) -> PageKind {
        self.region.page_kind()
    }
}

impl<T: Zeroable> std::ops::Deref for RegionSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the region holds at least len * size_of::<T>() zero-filled bytes, page aligned
        // (T's alignment is at most 4096 by Zeroable's contract); all-zero bytes are a valid T
        // (Zeroable); the region lives as long as self, and T is only reached through &.
        unsafe { std::slice::from_raw_parts(self.region.base().cast::<T>(), self.len) }
    }
}

// SAFETY: the slice owns its values as a Box<[T]> would; sending it sends the Ts.
unsafe impl<T: Zeroable + Send> Send for RegionSlice<T> {}
// SAFETY: &RegionSlice only gives &[T], as &Box<[T]> would.
unsafe impl<T: Zeroable + Sync> Sync for RegionSlice<T> {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: base/len describe exactly the mapping created in `new`, unmapped once here.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_region_is_zeroed_and_aligned() {
        let r = Region::new(10_000, PagePolicy::Small).unwrap();
        assert_eq!(r.len(), HUGEPAGE_SIZE);
        assert_eq!(r.base() as usize % HUGEPAGE_SIZE, 0);
        assert_eq!(r.page_kind(), PageKind::Small4K);
        // SAFETY: the region is r.len() bytes long and mapped read/write.
        let bytes = unsafe { std::slice::from_raw_parts(r.base(), r.len()) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(r.contains(r.base()));
        assert!(!r.contains(r.base().wrapping_add(r.len())));
    }

    struct Word(u64);

    // SAFETY: zero is a valid u64, which needs no drop and is 8-byte aligned.
    unsafe impl Zeroable for Word {}

    #[test]
    fn region_slices_start_at_zero() {
        let s: RegionSlice<Word> = RegionSlice::new(1000, PagePolicy::Small).unwrap();
        assert_eq!(s.len(), 1000);
        assert!(s.iter().all(|v| v.0 == 0));
    }

    #[test]
    fn zero_size_is_an_error() {
        assert!(Region::new(0, PagePolicy::Auto).is_err());
    }
}
