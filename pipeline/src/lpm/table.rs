//! The multibit trie shared by [`super::Lpm4`] and [`super::Lpm6`]: a first level of `2^L0`
//! entries indexed by the top `L0` bits of the address, then groups of 256 entries, one per
//! further byte (DIR-24-8 for IPv4; 16 then 8 bits per level for IPv6). An entry is a next hop,
//! "no route", or a link to a group. Prefixes are expanded into every entry they cover
//! (controlled prefix expansion), so a lookup is one load per level, with no backtracking.
//!
//! The writer keeps what readers do not need beside the tables: the depth of the rule that set
//! each entry (to know what a new or deleted rule overrides), and the rules themselves (to find
//! what a deleted rule uncovers). Readers see only the entries, all atomics:
//!
//! - a single entry changes with one store, so a reader sees the old or the new one;
//! - a new group is filled completely before the entry linking it is stored (Release; readers
//!   load links with Acquire), so a reader never sees half a group;
//! - a group whose 256 entries became the same rule is folded back into its parent entry, then
//!   freed only after a grace period ([`super::grace`]), so a reader that followed the old link
//!   still reads what it expects.
//!
//! Addresses are `u128`s aligned left (an IPv4 address is shifted up by 96 bits), so one
//! writer serves both families.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fastpath_mempool::{PagePolicy, Region};

use super::grace::Grace;
use super::{Error, MISS};

/// Entries in a group (one address byte).
pub(crate) const GROUP: usize = 256;

/// An atomic table entry: 16 bits (IPv4: more entries per cache line) or 32 bits (IPv6: more
/// groups). In both, the top bit marks a link to a group and the rest is the group index; a
/// next hop is `0..=MAX_NEXT_HOP` and [`MISS`] is "no route".
pub(crate) trait Slot: Send + Sync + 'static {
    /// The link bit.
    const LINK: u32;
    /// Loads the entry.
    fn get(&self, o: Ordering) -> u32;
    /// Stores the entry.
    fn put(&self, v: u32, o: Ordering);
}

impl Slot for AtomicU16 {
    const LINK: u32 = 0x8000;
    #[inline(always)]
    fn get(&self, o: Ordering) -> u32 {
        self.load(o) as u32
    }
    #[inline(always)]
    fn put(&self, v: u32, o: Ordering) {
        self.store(v as u16, o)
    }
}

impl Slot for AtomicU32 {
    const LINK: u32 = 0x8000_0000;
    #[inline(always)]
    fn get(&self, o: Ordering) -> u32 {
        self.load(o)
    }
    #[inline(always)]
    fn put(&self, v: u32, o: Ordering) {
        self.store(v, o)
    }
}

/// A fixed array of entries in its own mapping (hugepages, or 4 KiB pages advised for THP,
/// faulted in up front so that a lookup never page-faults).
pub(crate) struct Entries<S> {
    region: Region,
    len: usize,
    _slot: std::marker::PhantomData<S>,
}

impl<S: Slot> Entries<S> {
    /// `len` entries, all [`MISS`].
    fn new(len: usize) -> Result<Entries<S>, Error> {
        let region = Region::new((len * size_of::<S>()).max(1), PagePolicy::Auto).map_err(Error::Memory)?;
        let e: Entries<S> = Entries { region, len, _slot: std::marker::PhantomData };
        for s in e.slots() {
            s.put(MISS as u32, Ordering::Relaxed);
        }
        Ok(e)
    }

    /// The entries.
    #[inline(always)]
    pub(crate) fn slots(&self) -> &[S] {
        // SAFETY: the region is page aligned (more than any atomic needs), at least
        // len * size_of::<S>() bytes long, zero-filled when mapped (a valid value of every
        // atomic integer), and lives as long as self; every access goes through the atomics.
        unsafe { std::slice::from_raw_parts(self.region.base().cast::<S>(), self.len) }
    }

    /// Bytes mapped.
    pub(crate) fn bytes(&self) -> usize {
        self.region.len()
    }
}

/// What readers share: the first level, the groups, and the readers' registry.
pub(crate) struct Tables<S> {
    pub(crate) l0: Entries<S>,
    pub(crate) groups: Entries<S>,
    pub(crate) grace: Arc<Grace>,
}

/// Where an entry lives: the first level, or group `g`.
#[derive(Clone, Copy)]
enum At {
    L0,
    Group(u32),
}

/// How long the writer waits for a reader to leave its section before it keeps a folded group
/// aside for the next update instead.
const GRACE_TIMEOUT: Duration = Duration::from_secs(1);

/// The writer's side of a trie.
pub(crate) struct Trie<S: Slot> {
    pub(crate) tables: Arc<Tables<S>>,
    /// First-level bits.
    l0_bits: u32,
    /// Depth + 1 of the rule behind each entry (0: none); unused for links.
    depth0: Vec<u8>,
    gdepth: Vec<u8>,
    /// Groups never used yet start at `fresh`; freed ones wait in `free`; folded ones wait in
    /// `retired` for a grace period.
    fresh: u32,
    max_groups: u32,
    free: Vec<u32>,
    retired: Vec<u32>,
    /// The rules by depth: prefix (aligned left) -> next hop.
    rules: Vec<HashMap<u128, u16>>,
    routes: usize,
}

impl<S: Slot> Trie<S> {
    pub(crate) fn new(width: u32, l0_bits: u32, max_groups: u32) -> Result<Trie<S>, Error> {
        if max_groups as u64 > (S::LINK - 1) as u64 + 1 {
            return Err(Error::Config(format!(
                "max_groups {max_groups} is too many: this table links at most {} groups",
                S::LINK
            )));
        }
        let tables = Tables {
            l0: Entries::new(1 << l0_bits)?,
            groups: Entries::new(max_groups as usize * GROUP)?,
            grace: Arc::new(Grace::default()),
        };
        Ok(Trie {
            tables: Arc::new(tables),
            l0_bits,
            depth0: vec![0; 1 << l0_bits],
            gdepth: vec![0; max_groups as usize * GROUP],
            fresh: 0,
            max_groups,
            free: Vec::new(),
            retired: Vec::new(),
            rules: vec![HashMap::new(); width as usize + 1],
            routes: 0,
        })
    }

    /// Rules installed.
    pub(crate) fn routes(&self) -> usize {
        self.routes
    }

    /// Groups in use (linked, or folded and waiting for a grace period).
    pub(crate) fn groups_used(&self) -> u32 {
        self.fresh - self.free.len() as u32
    }

    /// Readers registered.
    pub(crate) fn readers(&self) -> usize {
        self.tables.grace.readers()
    }

    pub(crate) fn max_groups(&self) -> u32 {
        self.max_groups
    }

    /// Bytes of the tables readers use, and of the writer's own bookkeeping.
    pub(crate) fn memory(&self) -> (usize, usize) {
        let tables = self.tables.l0.bytes() + self.tables.groups.bytes();
        let rule = size_of::<u128>() + size_of::<u16>() + 8;
        let writer = self.depth0.len() + self.gdepth.len() + self.routes * rule;
        (tables, writer)
    }

    /// The rule for exactly `prefix/len`.
    pub(crate) fn get(&self, prefix: u128, len: u8) -> Option<u16> {
        self.rules.get(len as usize)?.get(&mask(prefix, len)).copied()
    }

    /// Every rule: (prefix, length, next hop), shortest prefixes first.
    pub(crate) fn rules(&self) -> Vec<(u128, u8, u16)> {
        let mut v = Vec::with_capacity(self.routes);
        for (d, m) in self.rules.iter().enumerate() {
            v.extend(m.iter().map(|(&p, &nh)| (p, d as u8, nh)));
        }
        v
    }

    /// A lookup on the writer's side (no concurrent writer can exist: `&self`).
    pub(crate) fn lookup(&self, addr: u128) -> u32 {
        let (l0, g) = (self.tables.l0.slots(), self.tables.groups.slots());
        let mut e = l0[self.index(addr, 0, self.l0_bits)].get(Ordering::Relaxed);
        let mut off = self.l0_bits;
        while e & S::LINK != 0 {
            let base = ((e & !S::LINK) as usize) * GROUP;
            e = g[base + self.index(addr, off, 8)].get(Ordering::Relaxed);
            off += 8;
        }
        e
    }

    #[inline]
    fn index(&self, addr: u128, off: u32, bits: u32) -> usize {
        ((addr << off) >> (128 - bits)) as usize
    }

    fn slot(&self, at: At, i: usize) -> &S {
        match at {
            At::L0 => &self.tables.l0.slots()[i],
            At::Group(g) => &self.tables.groups.slots()[g as usize * GROUP + i],
        }
    }

    fn depth(&mut self, at: At, i: usize) -> &mut u8 {
        match at {
            At::L0 => &mut self.depth0[i],
            At::Group(g) => &mut self.gdepth[g as usize * GROUP + i],
        }
    }

    /// Groups a new rule `prefix/len` needs: one per level below the first that its path does
    /// not reach through links yet.
    fn groups_needed(&self, prefix: u128, len: u8) -> u32 {
        let levels = (len as u32).saturating_sub(self.l0_bits).div_ceil(8);
        let mut e = self.tables.l0.slots()[self.index(prefix, 0, self.l0_bits)].get(Ordering::Relaxed);
        let (mut off, mut have) = (self.l0_bits, 0);
        while have < levels && e & S::LINK != 0 {
            have += 1;
            let base = ((e & !S::LINK) as usize) * GROUP;
            e = self.tables.groups.slots()[base + self.index(prefix, off, 8)].get(Ordering::Relaxed);
            off += 8;
        }
        levels - have
    }

    fn groups_left(&self) -> u32 {
        self.free.len() as u32 + (self.max_groups - self.fresh)
    }

    /// Adds or replaces `prefix/len -> nh`.
    pub(crate) fn add(&mut self, prefix: u128, len: u8, nh: u16) -> Result<(), Error> {
        let prefix = mask(prefix, len);
        if self.rules[len as usize].get(&prefix) == Some(&nh) {
            return Ok(());
        }
        let need = self.groups_needed(prefix, len);
        if self.groups_left() < need {
            // Folded groups may be reusable by now.
            self.reclaim();
            if self.groups_left() < need {
                return Err(Error::Full { max_groups: self.max_groups });
            }
        }
        self.add_at(At::L0, 0, self.l0_bits, prefix, len, nh);
        if self.rules[len as usize].insert(prefix, nh).is_none() {
            self.routes += 1;
        }
        Ok(())
    }

    /// Deletes `prefix/len`; false when there is no such rule.
    pub(crate) fn delete(&mut self, prefix: u128, len: u8) -> bool {
        let prefix = mask(prefix, len);
        if self.rules[len as usize].remove(&prefix).is_none() {
            return false;
        }
        self.routes -= 1;
        // What the deleted rule uncovers: the longest shorter rule covering it.
        let (mut rv, mut rd) = (MISS as u32, 0u8);
        for d in (0..len).rev() {
            if let Some(&nh) = self.rules[d as usize].get(&mask(prefix, d)) {
                (rv, rd) = (nh as u32, d + 1);
                break;
            }
        }
        self.del_at(At::L0, 0, self.l0_bits, prefix, len, rv, rd);
        if !self.retired.is_empty() {
            self.reclaim();
        }
        true
    }

    /// Makes folded groups reusable once no reader can be looking at them.
    fn reclaim(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        if self.tables.grace.synchronize(GRACE_TIMEOUT) {
            self.free.append(&mut self.retired);
        } else {
            log::warn!(
                "lpm: a reader stayed inside a lookup for {GRACE_TIMEOUT:?}; {} folded groups wait for the next update",
                self.retired.len()
            );
        }
    }

    fn alloc_group(&mut self) -> u32 {
        if let Some(g) = self.free.pop() {
            return g;
        }
        // groups_left() was checked by the caller.
        let g = self.fresh;
        self.fresh += 1;
        g
    }

    fn add_at(&mut self, at: At, off: u32, bits: u32, prefix: u128, len: u8, nh: u16) {
        let idx = self.index(prefix, off, bits);
        let end = off + bits;
        if len as u32 <= end {
            // The rule covers 2^(end - len) whole entries here.
            self.fill(at, idx..idx + (1usize << (end - len as u32)), len, nh);
            return;
        }
        let v = self.slot(at, idx).get(Ordering::Relaxed);
        if v & S::LINK != 0 {
            self.add_at(At::Group(v & !S::LINK), end, 8, prefix, len, nh);
            return;
        }
        // A new group below this entry: it inherits the entry's rule, takes the new one, and
        // only then is linked.
        let g = self.alloc_group();
        let d = *self.depth(at, idx);
        for j in 0..GROUP {
            self.slot(At::Group(g), j).put(v, Ordering::Relaxed);
            *self.depth(At::Group(g), j) = d;
        }
        self.add_at(At::Group(g), end, 8, prefix, len, nh);
        // Release: publishes the group's entries with the link (readers load links with Acquire).
        self.slot(at, idx).put(S::LINK | g, Ordering::Release);
        *self.depth(at, idx) = 0;
    }

    /// Sets the entries `range` of `at` (and every group below them) whose rule is no longer
    /// than `len`.
    fn fill(&mut self, at: At, range: std::ops::Range<usize>, len: u8, nh: u16) {
        for i in range {
            let v = self.slot(at, i).get(Ordering::Relaxed);
            if v & S::LINK != 0 {
                self.fill(At::Group(v & !S::LINK), 0..GROUP, len, nh);
            } else if *self.depth(at, i) <= len + 1 {
                // Release: a reader that sees the new hop also sees what was stored before.
                self.slot(at, i).put(nh as u32, Ordering::Release);
                *self.depth(at, i) = len + 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn del_at(&mut self, at: At, off: u32, bits: u32, prefix: u128, len: u8, rv: u32, rd: u8) {
        let idx = self.index(prefix, off, bits);
        let end = off + bits;
        if len as u32 <= end {
            self.unfill(at, idx..idx + (1usize << (end - len as u32)), end, len, rv, rd);
            return;
        }
        let v = self.slot(at, idx).get(Ordering::Relaxed);
        if v & S::LINK != 0 {
            self.del_at(At::Group(v & !S::LINK), end, 8, prefix, len, rv, rd);
            self.fold(at, idx, end);
        }
    }

    /// Replaces the deleted rule (length `len`) by `rv` / `rd` in the entries `range` of `at`
    /// (which stand for `end` address bits) and in every group below them, folding groups
    /// that become alike.
    #[allow(clippy::too_many_arguments)]
    fn unfill(&mut self, at: At, range: std::ops::Range<usize>, end: u32, len: u8, rv: u32, rd: u8) {
        for i in range {
            let v = self.slot(at, i).get(Ordering::Relaxed);
            if v & S::LINK != 0 {
                self.unfill(At::Group(v & !S::LINK), 0..GROUP, end + 8, len, rv, rd);
                self.fold(at, i, end);
            } else if *self.depth(at, i) == len + 1 {
                // Release: as in fill.
                self.slot(at, i).put(rv, Ordering::Release);
                *self.depth(at, i) = rd;
            }
        }
    }

    /// Folds the group linked from `at[i]` back into that entry when its 256 entries hold the
    /// same rule, one that covers the whole entry (no longer than `end` bits).
    fn fold(&mut self, at: At, i: usize, end: u32) {
        let v = self.slot(at, i).get(Ordering::Relaxed);
        if v & S::LINK == 0 {
            return;
        }
        let g = v & !S::LINK;
        let base = g as usize * GROUP;
        let first = self.tables.groups.slots()[base].get(Ordering::Relaxed);
        let d = self.gdepth[base];
        if first & S::LINK != 0 || d as u32 > end + 1 {
            return;
        }
        let same = (0..GROUP).all(|j| {
            self.tables.groups.slots()[base + j].get(Ordering::Relaxed) == first && self.gdepth[base + j] == d
        });
        if !same {
            return;
        }
        // Release: as in fill. Readers that already followed the link still find the same
        // hop in the group, which is reused only after a grace period.
        self.slot(at, i).put(first, Ordering::Release);
        *self.depth(at, i) = d;
        self.retired.push(g);
    }
}

/// `prefix` with everything after its first `len` bits cleared.
#[inline]
pub(crate) fn mask(prefix: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        prefix & (!0u128 << (128 - len as u32))
    }
}
