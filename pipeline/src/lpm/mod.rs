//! Longest-prefix match for IPv4 and IPv6 routes: built and changed on the control path, looked
//! up in bursts on the fast path while it changes.
//!
//! - [`Lpm4`]: DIR-24-8 (a first level of 2^24 entries, then groups of 256 for longer
//!   prefixes) with 16-bit entries: 32 MiB for the first level, half of what 32-bit entries
//!   take, so more of it stays in the last-level cache. A lookup is one load, two for the few
//!   addresses under a prefix longer than /24.
//! - [`Lpm6`]: the same trie with a 16-bit first level and one level per further byte, 32-bit
//!   entries: a lookup is one load per byte of the longest prefix that matches, past the first
//!   two.
//!
//! Both hold up to [`MAX_NEXT_HOP`]` + 1` next hops: a next hop is a small number that the
//! application maps to what it needs (an output port and a neighbour, an adjacency), as DPDK's
//! `rte_lpm` does. Lookups return [`MISS`] where no route matches.
//!
//! Tables live in their own memory mappings (hugepages when reserved, else 4 KiB pages advised
//! for transparent hugepages) faulted in when made, so a lookup never page-faults.
//!
//! # Updates while lcores look up
//!
//! There is one writer ([`Lpm4`] / [`Lpm6`], `&mut self` to change) and any number of readers
//! ([`Lpm4::reader`], one per lcore, `Send`). A change is a sequence of single-entry atomic
//! stores in an order that never shows a reader half a route: an entry moves from one next hop
//! to the other, a new group is filled before it is linked, and a group that a deletion made
//! redundant is folded into its parent entry and reused only after every reader that may have
//! followed the old link has finished its burst (a grace period; readers mark their bursts with
//! one fenced store, and a reader that is not in a burst never delays the writer). So a lookup
//! racing a change returns the next hop of the old route set or of the new one, never garbage,
//! and nothing is copied or allocated on the fast path.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use fastpath_pipeline::lpm::{Lpm4, LpmConfig, MISS};
//!
//! let mut lpm = Lpm4::new(&LpmConfig::default()).unwrap();
//! lpm.add(Ipv4Addr::new(10, 0, 0, 0), 8, 1).unwrap();
//! lpm.add(Ipv4Addr::new(10, 1, 2, 0), 25, 2).unwrap();
//! let mut reader = lpm.reader(); // one per lcore
//! let addrs = [u32::from(Ipv4Addr::new(10, 1, 2, 3)), u32::from(Ipv4Addr::new(10, 9, 9, 9)), 0];
//! let mut hops = [0u16; 3];
//! reader.lookup_bulk(&addrs, &mut hops);
//! assert_eq!(hops, [2, 1, MISS]);
//! assert!(lpm.delete(Ipv4Addr::new(10, 1, 2, 0), 25));
//! assert_eq!(reader.lookup(Ipv4Addr::new(10, 1, 2, 3)), Some(1));
//! ```

mod grace;
mod table;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use fastpath_mempool::prefetch0;

use grace::ReadHandle;
use table::{Slot, Tables, Trie, GROUP};

/// The largest next hop a table holds.
pub const MAX_NEXT_HOP: u16 = 0x7ffe;
/// What a lookup returns where no route matches.
pub const MISS: u16 = 0x7fff;

/// Errors of the control path.
#[derive(Debug)]
pub enum Error {
    /// A bad setting.
    Config(String),
    /// A prefix length beyond the address width.
    Length {
        /// The length given.
        len: u8,
        /// The address width (32 or 128).
        max: u8,
    },
    /// A next hop above [`MAX_NEXT_HOP`].
    NextHop(u16),
    /// Every group is in use: the route needs more than [`LpmConfig::max_groups`].
    Full {
        /// The configured number of groups.
        max_groups: u32,
    },
    /// The tables could not be mapped.
    Memory(fastpath_mempool::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => f.write_str(m),
            Error::Length { len, max } => write!(f, "prefix length /{len} is longer than the address (/{max} at most)"),
            Error::NextHop(nh) => write!(f, "next hop {nh} is out of range: use 0..={MAX_NEXT_HOP}"),
            Error::Full { max_groups } => write!(
                f,
                "the table is full: all {max_groups} groups for prefixes longer than the first level are in use; \
                 raise LpmConfig::max_groups"
            ),
            Error::Memory(e) => write!(f, "cannot map the lookup tables: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Memory(e) => Some(e),
            _ => None,
        }
    }
}

/// Settings of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LpmConfig {
    /// Groups of 256 entries for prefixes longer than the first level (DPDK's `number_tbl8s`).
    /// An IPv4 route longer than /24 takes one per /24 it falls in; an IPv6 route takes one per
    /// byte past the second that no other route opened yet. Memory is mapped for all of them
    /// up front: 512 bytes each for IPv4, 1 KiB for IPv6.
    pub max_groups: u32,
}

impl Default for LpmConfig {
    fn default() -> Self {
        LpmConfig { max_groups: 4096 }
    }
}

/// Size and memory of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LpmStats {
    /// Routes installed.
    pub routes: usize,
    /// Groups in use.
    pub groups_used: u32,
    /// Groups available in all ([`LpmConfig::max_groups`]).
    pub groups_max: u32,
    /// Bytes mapped for the tables the readers use.
    pub table_bytes: usize,
    /// Bytes of the writer's own bookkeeping (rule depths and the rules).
    pub writer_bytes: usize,
    /// Readers (lcores) registered.
    pub readers: usize,
}

fn check(len: u8, max: u8, nh: Option<u16>) -> Result<(), Error> {
    if len > max {
        return Err(Error::Length { len, max });
    }
    match nh {
        Some(nh) if nh > MAX_NEXT_HOP => Err(Error::NextHop(nh)),
        _ => Ok(()),
    }
}

/// What [`Lpm4`] and [`Lpm6`] share: size, stats, readers, `Debug`.
macro_rules! table_common {
    ($table:ident, $reader:ident) => {
        impl $table {
            /// Routes installed.
            pub fn len(&self) -> usize {
                self.trie.routes()
            }

            /// True when no route is installed.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Routes, groups, memory and readers.
            pub fn stats(&self) -> LpmStats {
                let t = &self.trie;
                let (table_bytes, writer_bytes) = t.memory();
                LpmStats {
                    routes: t.routes(),
                    groups_used: t.groups_used(),
                    groups_max: t.max_groups(),
                    table_bytes,
                    writer_bytes,
                    readers: t.readers(),
                }
            }

            /// A reader for one lcore (registered until dropped).
            pub fn reader(&self) -> $reader {
                $reader { tables: self.trie.tables.clone(), handle: self.trie.tables.grace.register() }
            }
        }

        impl fmt::Debug for $table {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($table)).field("stats", &self.stats()).finish()
            }
        }

        impl fmt::Debug for $reader {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($reader)).finish_non_exhaustive()
            }
        }
    };
}

table_common!(Lpm4, Lpm4Reader);
table_common!(Lpm6, Lpm6Reader);

/// Addresses looked up together: their first-level entries are prefetched, then read.
const CHUNK: usize = 16;

/// An IPv4 routing table (the writer). See the module doc.
pub struct Lpm4 {
    trie: Trie<AtomicU16>,
}

impl Lpm4 {
    /// An empty table.
    pub fn new(cfg: &LpmConfig) -> Result<Lpm4, Error> {
        Ok(Lpm4 { trie: Trie::new(32, 24, cfg.max_groups)? })
    }

    /// Adds `prefix/len -> nh`, or changes the next hop of that route. Bits of `prefix` past
    /// `len` are ignored.
    pub fn add(&mut self, prefix: Ipv4Addr, len: u8, nh: u16) -> Result<(), Error> {
        check(len, 32, Some(nh))?;
        self.trie.add(key4(u32::from(prefix)), len, nh)
    }

    /// Deletes `prefix/len`; false when there is no such route.
    pub fn delete(&mut self, prefix: Ipv4Addr, len: u8) -> bool {
        len <= 32 && self.trie.delete(key4(u32::from(prefix)), len)
    }

    /// The next hop of exactly `prefix/len`.
    pub fn get(&self, prefix: Ipv4Addr, len: u8) -> Option<u16> {
        (len <= 32).then(|| self.trie.get(key4(u32::from(prefix)), len)).flatten()
    }

    /// A lookup from the control path.
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<u16> {
        hop(self.trie.lookup(key4(u32::from(addr))) as u16)
    }

    /// Every route: (prefix, length, next hop), shortest prefixes first.
    pub fn routes(&self) -> Vec<(Ipv4Addr, u8, u16)> {
        self.trie.rules().into_iter().map(|(p, l, nh)| (Ipv4Addr::from((p >> 96) as u32), l, nh)).collect()
    }
}

fn key4(a: u32) -> u128 {
    (a as u128) << 96
}

fn hop(v: u16) -> Option<u16> {
    (v != MISS).then_some(v)
}

/// An lcore's handle on an [`Lpm4`]: lookups, safe while the table changes.
pub struct Lpm4Reader {
    tables: Arc<Tables<AtomicU16>>,
    handle: ReadHandle,
}

impl Lpm4Reader {
    /// Enters a read-side section (one per burst): lookups through it see the table as some
    /// update left it, and no group they may reach is reused until it ends (when dropped).
    #[inline]
    pub fn read(&mut self) -> Lpm4Section<'_> {
        self.handle.enter();
        Lpm4Section { tables: &self.tables, handle: &mut self.handle }
    }

    /// [`Lpm4Section::lookup_bulk`] in a section of its own.
    #[inline]
    pub fn lookup_bulk(&mut self, addrs: &[u32], hops: &mut [u16]) {
        self.read().lookup_bulk(addrs, hops)
    }

    /// Looks up one address (a section of its own).
    pub fn lookup(&mut self, addr: Ipv4Addr) -> Option<u16> {
        hop(self.read().lookup(u32::from(addr)))
    }
}

/// A read-side section of an [`Lpm4Reader`]: ends when dropped.
pub struct Lpm4Section<'a> {
    tables: &'a Tables<AtomicU16>,
    handle: &'a mut ReadHandle,
}

impl Drop for Lpm4Section<'_> {
    #[inline]
    fn drop(&mut self) {
        self.handle.exit();
    }
}

impl fmt::Debug for Lpm4Section<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm4Section").finish_non_exhaustive()
    }
}

impl Lpm4Section<'_> {
    #[inline(always)]
    fn l0(&self) -> &[AtomicU16; 1 << 24] {
        self.tables.l0.slots().try_into().expect("a 2^24-entry first level")
    }

    #[inline(always)]
    fn resolve(&self, l0: &[AtomicU16; 1 << 24], x: u32) -> u16 {
        // Acquire: a link is followed into a group filled before it was stored.
        let e = l0[(x >> 8) as usize].load(Ordering::Acquire);
        if e & 0x8000 == 0 {
            return e;
        }
        let i = ((e & 0x7fff) as usize) * GROUP + (x & 0xff) as usize;
        // Acquire: as above (a group entry is stored once, before or after the link).
        self.tables.groups.slots().get(i).map_or(MISS, |s| s.load(Ordering::Acquire))
    }

    /// The next hop of `addr` (host order: `u32::from(Ipv4Addr)`), or [`MISS`].
    #[inline]
    pub fn lookup(&self, addr: u32) -> u16 {
        self.resolve(self.l0(), addr)
    }

    /// Looks up `addrs[i]` into `hops[i]` (a next hop or [`MISS`]) for `i` below the shorter
    /// length: the first-level entries of each chunk of addresses are prefetched together, so
    /// their cache misses overlap, then read.
    #[inline]
    pub fn lookup_bulk(&self, addrs: &[u32], hops: &mut [u16]) {
        let l0 = self.l0();
        for (a, h) in addrs.chunks(CHUNK).zip(hops.chunks_mut(CHUNK)) {
            for &x in a {
                prefetch0(l0[(x >> 8) as usize].as_ptr().cast());
            }
            for (&x, h) in a.iter().zip(h.iter_mut()) {
                *h = self.resolve(l0, x);
            }
        }
    }
}

/// An IPv6 routing table (the writer). See the module doc.
pub struct Lpm6 {
    trie: Trie<AtomicU32>,
}

impl Lpm6 {
    /// An empty table.
    pub fn new(cfg: &LpmConfig) -> Result<Lpm6, Error> {
        Ok(Lpm6 { trie: Trie::new(128, 16, cfg.max_groups)? })
    }

    /// Adds `prefix/len -> nh`, or changes the next hop of that route. Bits of `prefix` past
    /// `len` are ignored.
    pub fn add(&mut self, prefix: Ipv6Addr, len: u8, nh: u16) -> Result<(), Error> {
        check(len, 128, Some(nh))?;
        self.trie.add(u128::from(prefix), len, nh)
    }

    /// Deletes `prefix/len`; false when there is no such route.
    pub fn delete(&mut self, prefix: Ipv6Addr, len: u8) -> bool {
        len <= 128 && self.trie.delete(u128::from(prefix), len)
    }

    /// The next hop of exactly `prefix/len`.
    pub fn get(&self, prefix: Ipv6Addr, len: u8) -> Option<u16> {
        (len <= 128).then(|| self.trie.get(u128::from(prefix), len)).flatten()
    }

    /// A lookup from the control path.
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<u16> {
        hop(self.trie.lookup(u128::from(addr)) as u16)
    }

    /// Every route: (prefix, length, next hop), shortest prefixes first.
    pub fn routes(&self) -> Vec<(Ipv6Addr, u8, u16)> {
        self.trie.rules().into_iter().map(|(p, l, nh)| (Ipv6Addr::from(p), l, nh)).collect()
    }
}

/// An lcore's handle on an [`Lpm6`]: lookups, safe while the table changes.
pub struct Lpm6Reader {
    tables: Arc<Tables<AtomicU32>>,
    handle: ReadHandle,
}

impl Lpm6Reader {
    /// Enters a read-side section (one per burst): see [`Lpm4Reader::read`].
    #[inline]
    pub fn read(&mut self) -> Lpm6Section<'_> {
        self.handle.enter();
        Lpm6Section { tables: &self.tables, handle: &mut self.handle }
    }

    /// [`Lpm6Section::lookup_bulk`] in a section of its own.
    #[inline]
    pub fn lookup_bulk(&mut self, addrs: &[u128], hops: &mut [u16]) {
        self.read().lookup_bulk(addrs, hops)
    }

    /// Looks up one address (a section of its own).
    pub fn lookup(&mut self, addr: Ipv6Addr) -> Option<u16> {
        let mut h = [MISS];
        self.read().lookup_bulk(&[u128::from(addr)], &mut h);
        hop(h[0])
    }
}

/// A read-side section of an [`Lpm6Reader`]: ends when dropped.
pub struct Lpm6Section<'a> {
    tables: &'a Tables<AtomicU32>,
    handle: &'a mut ReadHandle,
}

impl Drop for Lpm6Section<'_> {
    #[inline]
    fn drop(&mut self) {
        self.handle.exit();
    }
}

impl fmt::Debug for Lpm6Section<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm6Section").finish_non_exhaustive()
    }
}

impl Lpm6Section<'_> {
    /// The next hop of `addr` (host order: `u128::from(Ipv6Addr)`), or [`MISS`]: one load per
    /// level the address goes down.
    #[inline]
    pub fn lookup(&self, addr: u128) -> u16 {
        const LINK: u32 = <AtomicU32 as Slot>::LINK;
        let l0: &[AtomicU32; 1 << 16] = self.tables.l0.slots().try_into().expect("a 2^16-entry first level");
        let groups = self.tables.groups.slots();
        // Acquire: a link is followed into a group filled before it was stored.
        let mut e = l0[(addr >> 112) as usize].load(Ordering::Acquire);
        let mut shift = 104u32;
        while e & LINK != 0 {
            let i = ((e & !LINK) as usize) * GROUP + ((addr >> shift) & 0xff) as usize;
            // Acquire: as above. A link below the last byte cannot exist (checked shift).
            e = match (groups.get(i), shift.checked_sub(8)) {
                (Some(s), Some(next)) => {
                    shift = next;
                    s.load(Ordering::Acquire)
                }
                (Some(s), None) => s.load(Ordering::Acquire) & !LINK,
                (None, _) => MISS as u32,
            };
        }
        e as u16
    }

    /// Looks up `addrs[i]` into `hops[i]` (a next hop or [`MISS`]) for `i` below the shorter
    /// length. The first-level entries of a chunk are prefetched together; the walks below
    /// them are independent, so the CPU overlaps their loads.
    #[inline]
    pub fn lookup_bulk(&self, addrs: &[u128], hops: &mut [u16]) {
        let l0 = self.tables.l0.slots();
        for (a, h) in addrs.chunks(CHUNK).zip(hops.chunks_mut(CHUNK)) {
            for &x in a {
                if let Some(s) = l0.get((x >> 112) as usize) {
                    prefetch0(s.as_ptr().cast());
                }
            }
            for (&x, h) in a.iter().zip(h.iter_mut()) {
                *h = self.lookup(x);
            }
        }
    }
}
