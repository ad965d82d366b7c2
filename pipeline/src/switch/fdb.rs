//! The forwarding database: (segment, MAC) -> place, read by every lcore without a lock,
//! written by the control thread alone.
//!
//! # Layout
//!
//! A bucket is one cache line: a sequence counter and four slots of {key, place, last seen}.
//! Every key has two candidate buckets (two halves of one 64-bit hash, each mapped onto the
//! bucket count by a multiply-shift, so the table need not be a power of two). A key lives in
//! either; lookups read both. An empty slot has key 0, and no key is 0 (the segment is stored
//! plus one), so there are no tombstones: a removal just empties its slot. Inserting into two
//! full buckets moves entries to their other bucket (cuckoo hashing, a breadth-first search for
//! the shortest path to a free slot), which keeps the table working up to about 95% full; the
//! table is sized for [`crate::switch::FdbConfig::capacity`] at 85%.
//!
//! # Concurrency (single writer, lock-free readers)
//!
//! Only [`FdbWriter`] writes, and there is one (the switch's control side). Every field is an
//! atomic, so nothing is ever torn at the word level; a bucket's words are kept consistent
//! with each other by its sequence counter (a seqlock): the writer makes it odd, writes, makes
//! it even again; a reader reads the counter, the slots, the counter again, and uses what it
//! read only when the counter was even and unchanged. A cuckoo move copies the entry to its new
//! bucket first, then bumps a table-wide move counter, then empties the old slot, so an entry
//! is never absent from both buckets; a reader that finds nothing checks the move counter and
//! looks again when it changed (the miss may have raced a move). Reads are bounded: a reader
//! that keeps finding a bucket being written (the writer thread preempted mid-write) gives up
//! after a few tries and reports a miss, which the switch treats as an unknown MAC (it floods,
//! and asks to learn): an lcore never waits for the control thread.
//!
//! The last-seen time is outside the seqlock: one relaxed 32-bit store by the lcore that sees
//! the MAC at its known place, at most once a second per entry (the time is in seconds), so a
//! busy MAC costs one cache-line write per second, not one per packet.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use fastpath_mempool::{PagePolicy, RegionSlice, Zeroable};

/// Slots per bucket.
pub const SLOTS: usize = 4;
/// Largest port or VTEP id a place can hold.
pub const MAX_ID: u16 = 0x3fff;
/// How many times a reader retries a bucket that is being written before it gives up.
const READ_TRIES: u32 = 64;
/// Largest number of buckets the cuckoo search visits for one insert.
const SEARCH_LIMIT: usize = 512;

/// Where a MAC lives: a local port (an access port, or the uplink for a MAC behind its VLAN)
/// or a remote VTEP, and whether the entry is static.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place(u16);

const STATIC: u16 = 0x8000;
const REMOTE: u16 = 0x4000;

impl Place {
    /// Port `id` (`id <= MAX_ID`).
    pub const fn port(id: u16) -> Place {
        Place(id & MAX_ID)
    }

    /// Remote VTEP `id` (`id <= MAX_ID`).
    pub const fn vtep(id: u16) -> Place {
        Place(REMOTE | (id & MAX_ID))
    }

    /// The same place, as a static entry.
    pub const fn as_static(self) -> Place {
        Place(self.0 | STATIC)
    }

    /// The same place without the static mark.
    pub const fn dynamic(self) -> Place {
        Place(self.0 & !STATIC)
    }

    /// True for a remote VTEP.
    pub const fn is_remote(self) -> bool {
        self.0 & REMOTE != 0
    }

    /// True for a static entry.
    pub const fn is_static(self) -> bool {
        self.0 & STATIC != 0
    }

    /// The port or VTEP id.
    pub const fn id(self) -> u16 {
        self.0 & MAX_ID
    }

    /// The raw value.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// From a raw value.
    pub const fn from_raw(v: u16) -> Place {
        Place(v)
    }
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_remote() { "vtep" } else { "port" };
        let st = if self.is_static() { " static" } else { "" };
        write!(f, "{kind} {}{st}", self.id())
    }
}

/// The key of (segment, MAC): never 0.
#[inline(always)]
pub fn key(segment: u16, mac: &[u8]) -> u64 {
    let m = u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    ((segment as u64 + 1) << 48) | m
}

/// The keys of the destination and source MACs of frame `d` (at least 12 bytes) in `segment`:
/// two 8-byte loads instead of twelve byte loads.
#[inline(always)]
pub fn frame_keys(segment: u16, d: &[u8]) -> (u64, u64) {
    let w = |at: usize| u64::from_be_bytes(d[at..at + 8].try_into().unwrap_or([0; 8]));
    let seg = (segment as u64 + 1) << 48;
    (seg | w(0) >> 16, seg | (w(4) & 0xffff_ffff_ffff))
}

/// True when the MAC of `key` is a group address (multicast or broadcast).
#[inline(always)]
pub fn is_group(key: u64) -> bool {
    key & 0x0100_0000_0000 != 0
}

/// True when the MAC of `key` is a valid source: unicast and not zero.
#[inline(always)]
pub fn is_unicast_source(key: u64) -> bool {
    key & 0x0100_0000_0000 == 0 && key & 0xffff_ffff_ffff != 0
}

/// The segment of a key.
#[inline(always)]
pub fn key_segment(key: u64) -> u16 {
    ((key >> 48) as u16).wrapping_sub(1)
}

/// The MAC of a key.
pub fn key_mac(key: u64) -> [u8; 6] {
    let b = key.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[repr(C, align(64))]
struct Bucket {
    seq: AtomicU32,
    keys: [AtomicU64; SLOTS],
    places: [AtomicU16; SLOTS],
    seen: [AtomicU32; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

// SAFETY: a Bucket is repr(C) of atomic integers only: all-zero bytes are a valid (empty)
// bucket, it needs no drop, and its alignment is 64.
unsafe impl Zeroable for Bucket {}

/// A key's two candidate buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buckets(u32, u32);

/// A key found: its place and where it is (to refresh its last-seen time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The entry's place.
    pub place: Place,
    bucket: u32,
    slot: u8,
}

/// The table (shared by the lcores and the writer).
pub struct Fdb {
    buckets: RegionSlice<Bucket>,
    n: u32,
    /// Worth prefetching (see [`PREFETCH_ABOVE`]).
    big: bool,
    /// Bumped around each cuckoo move (see the module doc).
    moves: CachePadded<AtomicU32>,
}

impl fmt::Debug for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb").field("buckets", &self.n).finish_non_exhaustive()
    }
}

/// Multiply-fold hash (one 64x64->128 multiply, its halves xored): sequential MACs (VM NICs
/// are numbered) spread over the whole table.
#[inline(always)]
fn mix(z: u64) -> u64 {
    let r = (z ^ 0x9e37_79b9_7f4a_7c15) as u128 * 0xbf58_476d_1ce4_e5b9u128;
    r as u64 ^ (r >> 64) as u64
}

/// Tables larger than this are prefetched (smaller ones stay in the caches anyway, where a
/// prefetch only costs an instruction).
const PREFETCH_ABOVE: usize = 256 * 1024;

impl Fdb {
    /// A table for `capacity` entries and its one writer. The buckets get a memory region of
    /// their own (2 MiB pages where the system gives them).
    pub fn new(capacity: usize) -> Result<(Arc<Fdb>, FdbWriter), fastpath_mempool::Error> {
        let n = (capacity.max(1) * 20).div_ceil(SLOTS * 17).max(2);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let buckets = RegionSlice::<Bucket>::new(n as usize, PagePolicy::Auto)?;
        let big = n as usize * std::mem::size_of::<Bucket>() > PREFETCH_ABOVE;
        let fdb = Arc::new(Fdb { buckets, n, big, moves: CachePadded::new(AtomicU32::new(0)) });
        Ok((fdb.clone(), FdbWriter { fdb, len: 0 }))
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.n as usize
    }

    /// Entries moved between buckets by inserts so far (cuckoo moves).
    pub fn relocations(&self) -> u64 {
        // Relaxed: a statistic.
        self.moves.load(Ordering::Relaxed) as u64
    }

    /// The two buckets of `key`.
    #[inline(always)]
    pub fn hash(&self, key: u64) -> Buckets {
        let h = mix(key);
        let b1 = ((h as u32 as u64 * self.n as u64) >> 32) as u32;
        let mut b2 = (((h >> 32) * self.n as u64) >> 32) as u32;
        if b2 == b1 {
            b2 = if b1 + 1 == self.n { 0 } else { b1 + 1 };
        }
        Buckets(b1, b2)
    }

    /// Starts loading both buckets into the cache (call early, look up later); nothing for a
    /// small table.
    #[inline(always)]
    pub fn prefetch(&self, b: Buckets) {
        if !self.big {
            return;
        }
        for i in [b.0, b.1] {
            if let Some(bk) = self.buckets.get(i as usize) {
                fastpath_mempool::prefetch0((bk as *const Bucket).cast());
            }
        }
    }

    /// Looks `key` up in its buckets `b` (from [`Fdb::hash`]).
    #[inline(always)]
    pub fn lookup_at(&self, key: u64, b: Buckets) -> Option<Hit> {
        for _ in 0..READ_TRIES {
            // Acquire: a move that completed before this load is seen whole by the reads below.
            let moves = self.moves.load(Ordering::Acquire);
            if let Some(h) = self.read(b.0, key) {
                return Some(h);
            }
            if let Some(h) = self.read(b.1, key) {
                return Some(h);
            }
            // Relaxed: ordered after the buckets' Acquire loads; a move that emptied a slot we
            // read synchronised with us through that bucket's counter, so its bump shows here.
            if self.moves.load(Ordering::Relaxed) == moves {
                return None;
            }
        }
        None
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: u64) -> Option<Hit> {
        self.lookup_at(key, self.hash(key))
    }

    /// One bucket, read consistently (seqlock), or `None` when `key` is not in it (or the
    /// bucket stayed busy).
    #[inline(always)]
    fn read(&self, b: u32, key: u64) -> Option<Hit> {
        let bk = self.buckets.get(b as usize)?;
        for _ in 0..READ_TRIES {
            // Acquire: pairs with the writer's Release store that ended its last write.
            let s1 = bk.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let mut found = None;
                for i in 0..SLOTS {
                    // Relaxed: validated by the sequence check below.
                    if bk.keys[i].load(Ordering::Relaxed) == key {
                        found = Some((i, bk.places[i].load(Ordering::Relaxed)));
                    }
                }
                // Acquire fence: the slot loads above are ordered before the re-check.
                fence(Ordering::Acquire);
                if bk.seq.load(Ordering::Relaxed) == s1 {
                    return found.map(|(i, p)| Hit { place: Place(p), bucket: b, slot: i as u8 });
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The last-seen time (seconds) of a hit's entry.
    #[inline(always)]
    pub fn seen(&self, h: &Hit) -> u32 {
        // Relaxed: a time stamp, outside the seqlock; a stale or neighbouring value only moves
        // aging by a second.
        self.buckets[h.bucket as usize].seen[h.slot as usize].load(Ordering::Relaxed)
    }

    /// Sets the last-seen time of a hit's entry (lcores: only when it changed, so at most once
    /// a second per entry). If the entry was replaced meanwhile, the new one gets a time that
    /// is about now anyway.
    #[inline(always)]
    pub fn touch(&self, h: &Hit, now: u32) {
        // Relaxed: see seen().
        self.buckets[h.bucket as usize].seen[h.slot as usize].store(now, Ordering::Relaxed)
    }
}

/// The one writer of an [`Fdb`] (not `Clone`).
pub struct FdbWriter {
    fdb: Arc<Fdb>,
    len: usize,
}

impl fmt::Debug for FdbWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdbWriter").field("len", &self.len).finish()
    }
}

/// The table is full: no free slot within reach of the key's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// An entry as the writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its key.
    pub key: u64,
    /// Its place.
    pub place: Place,
    /// Last seen (seconds).
    pub seen: u32,
}

impl FdbWriter {
    /// The table.
    pub fn fdb(&self) -> &Arc<Fdb> {
        &self.fdb
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket(&self, b: u32) -> &Bucket {
        &self.fdb.buckets[b as usize]
    }

    // Relaxed loads below: the writer reads what only it writes (seen excepted, which is a
    // time stamp).
    fn key_at(&self, b: u32, i: usize) -> u64 {
        self.bucket(b).keys[i].load(Ordering::Relaxed)
    }

    fn free_slot(&self, b: u32) -> Option<usize> {
        (0..SLOTS).find(|&i| self.key_at(b, i) == 0)
    }

    /// Writes slot `i` of bucket `b` under its seqlock.
    fn write(&self, b: u32, i: usize, e: Entry) {
        let bk = self.bucket(b);
        let s = bk.seq.load(Ordering::Relaxed);
        // Relaxed store of the odd value, then a Release fence: readers that see any of the
        // slot stores below also see the odd counter (or a later one) and retry.
        bk.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        bk.keys[i].store(e.key, Ordering::Relaxed);
        bk.places[i].store(e.place.0, Ordering::Relaxed);
        bk.seen[i].store(e.seen, Ordering::Relaxed);
        // Release: publishes the slot with the even counter.
        bk.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Finds `key`: its entry and where it is.
    pub fn find(&self, key: u64) -> Option<(Hit, Entry)> {
        let Buckets(b1, b2) = self.fdb.hash(key);
        for b in [b1, b2] {
            for i in 0..SLOTS {
                if self.key_at(b, i) == key {
                    let bk = self.bucket(b);
                    // Relaxed: our own data, and a time stamp.
                    let place = Place(bk.places[i].load(Ordering::Relaxed));
                    let seen = bk.seen[i].load(Ordering::Relaxed);
                    return Some((Hit { place, bucket: b, slot: i as u8 }, Entry { key, place, seen }));
                }
            }
        }
        None
    }

    /// Changes the place of an entry found by [`FdbWriter::find`].
    pub fn set_place(&mut self, h: &Hit, place: Place, seen: u32) {
        let key = self.key_at(h.bucket, h.slot as usize);
        self.write(h.bucket, h.slot as usize, Entry { key, place, seen });
    }

    /// Removes an entry found by [`FdbWriter::find`] or [`FdbWriter::scan`].
    pub fn remove(&mut self, h: &Hit) {
        if self.key_at(h.bucket, h.slot as usize) != 0 {
            self.write(h.bucket, h.slot as usize, Entry { key: 0, place: Place(0), seen: 0 });
            self.len -= 1;
        }
    }

    /// Inserts a key that is not in the table.
    pub fn insert(&mut self, e: Entry) -> Result<(), Full> {
        debug_assert!(e.key != 0 && self.find(e.key).is_none());
        let Buckets(b1, b2) = self.fdb.hash(e.key);
        for b in [b1, b2] {
            if let Some(i) = self.free_slot(b) {
                self.write(b, i, e);
                self.len += 1;
                return Ok(());
            }
        }
        let path = self.search([b1, b2]).ok_or(Full)?;
        let (b, i) = self.shift(&path).ok_or(Full)?;
        self.write(b, i, e);
        self.len += 1;
        Ok(())
    }

    /// Breadth-first search from `start` for a chain of moves that frees a slot in one of them:
    /// the path as (bucket, slot) pairs, from a start bucket to the bucket with a free slot.
    fn search(&self, start: [u32; 2]) -> Option<Vec<(u32, usize)>> {
        // (bucket, the node it was reached from, the slot of that node moved to it)
        let mut nodes: Vec<(u32, usize, usize)> = start.iter().map(|&b| (b, usize::MAX, 0)).collect();
        let mut queue: VecDeque<usize> = (0..nodes.len()).collect();
        while let Some(n) = queue.pop_front() {
            let b = nodes[n].0;
            for i in 0..SLOTS {
                let k = self.key_at(b, i);
                let Buckets(x, y) = self.fdb.hash(k);
                let alt = if x == b { y } else { x };
                if nodes.len() >= SEARCH_LIMIT {
                    return None;
                }
                nodes.push((alt, n, i));
                let m = nodes.len() - 1;
                if self.free_slot(alt).is_some() {
                    // Walk back to a start bucket.
                    let mut path = Vec::new();
                    let mut at = m;
                    while nodes[at].1 != usize::MAX {
                        let (_, from, slot) = nodes[at];
                        path.push((nodes[from].0, slot));
                        at = from;
                    }
                    path.reverse();
                    path.push((alt, usize::MAX));
                    return Some(path);
                }
                queue.push_back(m);
            }
        }
        None
    }

    /// Moves the entries along `path` one step each, from its end (which has a free slot)
    /// back to its start; returns the slot freed in the start bucket.
    fn shift(&mut self, path: &[(u32, usize)]) -> Option<(u32, usize)> {
        for w in (0..path.len() - 1).rev() {
            let (from_b, from_i) = path[w];
            let to_b = path[w + 1].0;
            // Each step frees a slot in the bucket the step before it moves into.
            let to_i = self.free_slot(to_b)?;
            let bk = self.bucket(from_b);
            // Relaxed: our own data.
            let e = Entry {
                key: bk.keys[from_i].load(Ordering::Relaxed),
                place: Place(bk.places[from_i].load(Ordering::Relaxed)),
                seen: bk.seen[from_i].load(Ordering::Relaxed),
            };
            // Copy first, then bump the move counter, then empty the old slot (module doc).
            self.write(to_b, to_i, e);
            // Release: readers that see the bump also see the copy.
            self.fdb.moves.fetch_add(1, Ordering::Release);
            self.write(from_b, from_i, Entry { key: 0, place: Place(0), seen: 0 });
        }
        Some(path[0])
    }

    /// Visits the entries of buckets `from..from + count` (wrapping), with their places;
    /// returns the next bucket to visit.
    pub fn scan(&self, from: usize, count: usize, mut f: impl FnMut(Hit, Entry)) -> usize {
        let n = self.fdb.n as usize;
        let mut b = from % n;
        for _ in 0..count.min(n) {
            for i in 0..SLOTS {
                let k = self.key_at(b as u32, i);
                if k != 0 {
                    let bk = self.bucket(b as u32);
                    // Relaxed: our own data, and a time stamp.
                    let place = Place(bk.places[i].load(Ordering::Relaxed));
                    let seen = bk.seen[i].load(Ordering::Relaxed);
                    f(Hit { place, bucket: b as u32, slot: i as u8 }, Entry { key: k, place, seen });
                }
            }
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u64) -> [u8; 6] {
        let b = mix(i).to_be_bytes();
        [b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]
    }

    #[test]
    fn frame_keys_are_the_mac_keys() {
        let f = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0];
        assert_eq!(frame_keys(3, &f), (key(3, &f[..6]), key(3, &f[6..12])));
        assert!(is_unicast_source(key(0, &[2, 0, 0, 0, 0, 1])));
        assert!(!is_unicast_source(key(0, &[3, 0, 0, 0, 0, 1])));
        assert!(!is_unicast_source(key(0, &[0; 6])));
    }

    #[test]
    fn keys_round_trip_and_are_never_zero() {
        let k = key(0, &[0; 6]);
        assert_ne!(k, 0);
        assert_eq!(key_segment(k), 0);
        let m = [2, 3, 4, 5, 6, 7];
        let k = key(65534, &m);
        assert_eq!((key_segment(k), key_mac(k)), (65534, m));
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn fills_to_capacity_with_moves() {
        let cap = 20_000;
        let (fdb, mut w) = Fdb::new(cap).unwrap();
        for i in 0..cap as u64 {
            let e = Entry { key: key((i % 7) as u16, &mac(i)), place: Place::port((i % 100) as u16), seen: 1 };
            w.insert(e).unwrap_or_else(|_| panic!("full at {i} of {cap}"));
        }
        assert_eq!(w.len(), cap);
        for i in 0..cap as u64 {
            let h = fdb.lookup(key((i % 7) as u16, &mac(i))).unwrap();
            assert_eq!(h.place, Place::port((i % 100) as u16));
        }
        assert!(fdb.lookup(key(8, &mac(1))).is_none());
        let mut n = 0;
        w.scan(0, fdb.buckets(), |_, _| n += 1);
        assert_eq!(n, cap);
        // Remove half; the rest are still there.
        for i in (0..cap as u64).step_by(2) {
            let (h, _) = w.find(key((i % 7) as u16, &mac(i))).unwrap();
            w.remove(&h);
        }
        assert_eq!(w.len(), cap / 2);
        for i in 0..cap as u64 {
            assert_eq!(fdb.lookup(key((i % 7) as u16, &mac(i))).is_some(), i % 2 == 1);
        }
    }

    #[test]
    fn places_encode() {
        let p = Place::vtep(4095).as_static();
        assert!(p.is_remote() && p.is_static() && p.id() == 4095);
        assert_eq!(p.dynamic(), Place::vtep(4095));
        assert!(!Place::port(3).is_remote());
        assert_eq!(format!("{:?}", Place::port(3).as_static()), "port 3 static");
    }
}
