//! Connection tracking for stateful security groups: one [`Conntrack`] table shared by every
//! lcore, connections kept per zone (one zone per bridge), IPv4 and IPv6, TCP with a state
//! machine ([`tcp`]), UDP and ICMP echo as pseudo-connections, ICMP errors related to a tracked
//! connection. `docs/security.md` has the design; in short:
//!
//! - a fixed number of buckets of [`WAYS`] slots, made when the table is made: nothing is
//!   allocated after that; a connection whose bucket is full is refused (counted, like a full
//!   zone or a full table);
//! - readers look up without a lock: each bucket has a sequence count (a seqlock) that a
//!   writer makes odd while it inserts or removes, and readers retry when it moved;
//! - every field of a slot is an atomic, so a racing reader never reads torn memory (no
//!   `unsafe` here); a slot's state word carries an incarnation number, bumped at each insert,
//!   so that a reader that found a slot just before it was reused fails its compare-and-swap;
//! - a TCP segment updates its connection under the slot's own lock bit (one compare-and-swap;
//!   two lcores may carry the two directions of one connection);
//! - aging is incremental: [`Conntrack::age`] visits a bounded number of buckets per call.

pub mod flow;
pub mod tcp;

use std::cell::Cell;
use std::hint::spin_loop;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use fastpath_pmd::Error;

pub use flow::{Flow, FlowError};
pub use tcp::TcpState;

use crate::wire::ip_proto;

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Timeouts in seconds, by default those of Linux nf_conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT and SYN_SENT2 (120).
    pub syn_sent: u64,
    /// TCP SYN_RECV (60).
    pub syn_recv: u64,
    /// TCP ESTABLISHED (5 days).
    pub established: u64,
    /// TCP FIN_WAIT (120).
    pub fin_wait: u64,
    /// TCP CLOSE_WAIT (60).
    pub close_wait: u64,
    /// TCP LAST_ACK (30).
    pub last_ack: u64,
    /// TCP TIME_WAIT (120).
    pub time_wait: u64,
    /// TCP CLOSE (10).
    pub close: u64,
    /// UDP seen one way (30).
    pub udp: u64,
    /// UDP seen both ways (120).
    pub udp_stream: u64,
    /// ICMP / ICMPv6 echo (30).
    pub icmp: u64,
    /// Other protocols (600).
    pub generic: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            syn_sent: 120,
            syn_recv: 60,
            established: 5 * 86400,
            fin_wait: 120,
            close_wait: 60,
            last_ack: 30,
            time_wait: 120,
            close: 10,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

/// Table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Connections in all zones at most.
    pub capacity: usize,
    /// Zones (zone ids are `0..zones`).
    pub zones: usize,
    /// Connections per zone at most (0: only `capacity`).
    pub zone_limit: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// What the tracker says of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new connection the rules allowed, now tracked.
    New,
    /// A packet the rules allowed that starts no connection (ICMP other than echo and errors):
    /// not tracked.
    Untracked,
    /// A packet of a tracked connection, either direction.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// A new connection (or one re-checked after a rule change) the rules do not allow.
    Denied,
    /// Does not fit a connection: TCP that is not a SYN and not tracked, out-of-window RST, an
    /// echo reply or ICMP error about nothing tracked.
    Invalid,
    /// Allowed, but the table, the zone or the bucket is full (refused, counted).
    Full,
}

// The state word of a slot.
const LOCK: u64 = 1 << 0;
const USED: u64 = 1 << 1;
const ORIG_LO: u64 = 1 << 2;
const REPLIED: u64 = 1 << 3;
const STATE_SHIFT: u32 = 4; // 4 bits: the TCP state code
const INC_SHIFT: u32 = 16; // 16 bits: incarnation
const GEN_SHIFT: u32 = 32; // 32 bits: rule-set generation

const SYN_ACK_RST_FIN: u8 = 0x17;

fn tcp_code(w: u64) -> u8 {
    (w >> STATE_SHIFT & 0xf) as u8
}

#[derive(Debug, Default)]
struct Slot {
    key: [AtomicU64; 6],
    state: AtomicU64,
    /// Last packet, seconds.
    seen: AtomicU64,
    /// TCP: `end` of both directions.
    end: AtomicU64,
    /// TCP: `win` of both directions.
    win: AtomicU64,
    /// TCP: window scales and who sent the first FIN.
    misc: AtomicU32,
}

#[derive(Debug, Default)]
struct Bucket {
    seq: AtomicU32,
    slots: [Slot; WAYS],
}

type Key = [u64; 6];

/// The packet's own words, in its direction: zone, protocol, family and ports (source,
/// destination), source address, destination address (each as two big-endian halves, so that
/// the numbers order as the bytes do), point. Eight-byte reads, as the parser writes an IPv4
/// address (a sixteen-byte read of two eight-byte stores would wait for both to reach the
/// cache instead of being forwarded).
#[inline(always)]
fn raw_key(zone: u16, point: u32, f: &Flow) -> Key {
    let half = |x: &[u8; 16], i: usize| u64::from_be_bytes(x[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let k0 =
        (zone as u64) << 48 | (f.proto as u64) << 40 | (f.v6 as u64) << 39 | (f.sport as u64) << 16 | f.dport as u64;
    [k0, half(&f.src, 0), half(&f.src, 1), half(&f.dst, 0), half(&f.dst, 1), point as u64]
}

/// The connection's key from a packet's [`raw_key`] (the lower endpoint, address then port,
/// first: both directions make one key), and whether the packet's source is that endpoint.
#[inline(always)]
fn ordered(r: Key) -> (Key, bool) {
    let (sport, dport) = ((r[0] >> 16) as u16, r[0] as u16);
    let src_lo = (r[1], r[2], sport) <= (r[3], r[4], dport);
    if src_lo {
        return (r, true);
    }
    let k0 = r[0] & !0xffff_ffff | (dport as u64) << 16 | sport as u64;
    ([k0, r[3], r[4], r[1], r[2], r[5]], false)
}

/// A key and whether the packet's source is the key's low endpoint.
#[inline(always)]
fn key_of(zone: u16, point: u32, f: &Flow) -> (Key, bool) {
    ordered(raw_key(zone, point, f))
}

/// The high and low halves of the 128-bit product, folded.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    r as u64 ^ (r >> 64) as u64
}

/// A keyed hash of a connection key: three independent multiplies of the key's word pairs,
/// each word mixed with a secret of the table first, then one more to spread every bit over
/// the low ones the bucket is taken from (about a dozen cycles, where a chain of six rounds
/// took forty). The secrets are drawn when the table is made, so a guest cannot aim its
/// connections at one bucket (each bucket is [`WAYS`] slots: one that fills refuses).
#[inline(always)]
fn hash(k: &Key, s: &[u64; 7]) -> u64 {
    let h = mum(k[0] ^ s[0], k[1] ^ s[1]) ^ mum(k[2] ^ s[2], k[3] ^ s[3]) ^ mum(k[4] ^ s[4], k[5] ^ s[5]);
    mum(h ^ s[6], 0x9e37_79b9_7f4a_7c15)
}

/// Seven secrets from the standard library's per-process random keys.
fn secrets() -> [u64; 7] {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new();
    // Odd, never zero: a word that is zero in every key (the top of an IPv4 address) is
    // then never a zero factor.
    std::array::from_fn(|i| r.hash_one(i) | 1)
}

/// The connection one checking thread found last (see [`Conntrack::track_with`]): the key,
/// and its slot with the incarnation it had. Per thread (not `Sync`).
#[derive(Debug)]
pub struct LastConn {
    /// The packet's [`raw_key`] (its direction).
    raw: Cell<Key>,
    /// [`Found::at`], or [`NONE`].
    at: Cell<u32>,
    word: Cell<u64>,
    src_lo: Cell<bool>,
}

/// No slot remembered.
const NONE: u32 = u32::MAX;

impl Default for LastConn {
    fn default() -> Self {
        LastConn { raw: Cell::new([0; 6]), at: Cell::new(NONE), word: Cell::new(0), src_lo: Cell::new(false) }
    }
}

impl LastConn {
    /// Forgets the connection (call it at the start of every burst).
    #[inline]
    pub fn forget(&self) {
        self.at.set(NONE);
    }
}

/// The connection table (see the module doc). Share it in an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Conntrack {
    buckets: Box<[Bucket]>,
    secrets: [u64; 7],
    mask: usize,
    cfg: ConntrackConfig,
    count: AtomicUsize,
    zone_count: Box<[AtomicUsize]>,
    zone_new: Box<[AtomicU64]>,
    refused: AtomicU64,
    aged: AtomicU64,
    cursor: AtomicUsize,
}

/// A slot found: bucket and way, and its state word when read. Sixteen bytes, so that it
/// travels in two registers.
#[derive(Debug, Clone, Copy)]
struct Found {
    /// `bucket * WAYS + way`.
    at: u32,
    word: u64,
}

impl Found {
    fn new(b: usize, i: usize, word: u64) -> Found {
        Found { at: (b * WAYS + i) as u32, word }
    }

    fn bucket(&self) -> usize {
        self.at as usize / WAYS
    }

    fn way(&self) -> usize {
        self.at as usize % WAYS
    }
}

impl Conntrack {
    /// A table for `cfg.capacity` connections (buckets for twice as many, so that a bucket is
    /// rarely full).
    pub fn new(cfg: ConntrackConfig) -> Result<Conntrack, Error> {
        if cfg.capacity == 0 || cfg.zones == 0 || cfg.zones > 1 << 16 {
            return Err(Error::Config(format!(
                "conntrack: capacity = {} and zones = {}: give a positive capacity and 1..=65536 zones",
                cfg.capacity, cfg.zones
            )));
        }
        if cfg.capacity > 1 << 28 {
            return Err(Error::Config(format!(
                "conntrack: capacity = {}: at most {} connections",
                cfg.capacity,
                1u64 << 28
            )));
        }
        let n = (cfg.capacity * 2).div_ceil(WAYS).next_power_of_two();
        Ok(Conntrack {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            secrets: secrets(),
            mask: n - 1,
            cfg,
            count: AtomicUsize::new(0),
            zone_count: (0..cfg.zones).map(|_| AtomicUsize::new(0)).collect(),
            zone_new: (0..cfg.zones).map(|_| AtomicU64::new(0)).collect(),
            refused: AtomicU64::new(0),
            aged: AtomicU64::new(0),
            cursor: AtomicUsize::new(0),
        })
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        // Relaxed: a statistic.
        self.count.load(Ordering::Relaxed)
    }

    /// Connections it holds at most.
    pub fn capacity(&self) -> usize {
        self.cfg.capacity
    }

    /// No connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections tracked now in `zone`.
    pub fn zone_len(&self, zone: u16) -> usize {
        self.zone_count.get(zone as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// New connections committed in `zone` so far.
    pub fn zone_new(&self, zone: u16) -> u64 {
        self.zone_new.get(zone as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// New connections refused because the table, a zone or a bucket was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections removed by aging.
    pub fn aged(&self) -> u64 {
        self.aged.load(Ordering::Relaxed)
    }

    /// The TCP state of the connection of `f` in `zone`, if tracked and TCP.
    pub fn tcp_state(&self, zone: u16, f: &Flow) -> Option<TcpState> {
        self.tcp_state_at(zone, 0, f)
    }

    /// The TCP state of the connection of `f` in `zone` at checking point `point` (see
    /// [`Conntrack::track_at`]), if tracked and TCP.
    pub fn tcp_state_at(&self, zone: u16, point: u32, f: &Flow) -> Option<TcpState> {
        let (k, _) = key_of(zone, point, f);
        self.find(&k).and_then(|x| TcpState::from_code(tcp_code(x.word)))
    }

    /// Looks `k` up without a lock (after 64 tries that met a writer, under the bucket's lock:
    /// a miss must be a real one, or a reply would be taken for a new connection).
    fn find(&self, k: &Key) -> Option<Found> {
        let b = hash(k, &self.secrets) as usize & self.mask;
        let bucket = &self.buckets[b];
        let scan = |bucket: &Bucket| {
            bucket.slots.iter().enumerate().find_map(|(i, s)| {
                // Relaxed: validated by the sequence count (or read under the lock).
                let w = s.state.load(Ordering::Relaxed);
                let hit = w & USED != 0 && s.key.iter().zip(k).all(|(a, b)| a.load(Ordering::Relaxed) == *b);
                hit.then_some(Found::new(b, i, w))
            })
        };
        for _ in 0..64 {
            // Acquire: pairs with the writer's Release when it makes the count even again.
            let s1 = bucket.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                spin_loop();
                continue;
            }
            let hit = scan(bucket);
            // Acquire fence: the slot reads above happen before the re-check of the count.
            fence(Ordering::Acquire);
            if bucket.seq.load(Ordering::Relaxed) == s1 {
                return hit;
            }
        }
        let bucket = self.lock_bucket(b);
        let hit = scan(bucket);
        Self::unlock_bucket(bucket);
        hit
    }

    /// Takes bucket `b`'s writer lock.
    fn lock_bucket(&self, b: usize) -> &Bucket {
        let bucket = &self.buckets[b];
        loop {
            let s = bucket.seq.load(Ordering::Relaxed);
            // Acquire: see the previous writer's slot writes. Then a Release fence so that the
            // odd count is visible before any slot write below.
            if s & 1 == 0 && bucket.seq.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                fence(Ordering::Release);
                return bucket;
            }
            spin_loop();
        }
    }

    fn unlock_bucket(bucket: &Bucket) {
        // Release: publishes the slot writes to readers that see the even count.
        bucket.seq.fetch_add(1, Ordering::Release);
    }

    /// Takes a slot's own lock when its state word is still `word` (same incarnation).
    fn lock_slot(&self, x: Found) -> Option<u64> {
        let s = &self.buckets[x.bucket()].slots[x.way()];
        let mut w = x.word & !LOCK;
        for _ in 0..1024 {
            // Acquire: see the previous holder's writes of the TCP words.
            match s.state.compare_exchange_weak(w, w | LOCK, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(w),
                Err(now) if now & USED == 0 || (now ^ x.word) >> INC_SHIFT & 0xffff != 0 => return None,
                Err(now) => {
                    w = now & !LOCK;
                    spin_loop();
                }
            }
        }
        None
    }

    fn timeout(&self, proto: u8, w: u64) -> u64 {
        let t = &self.cfg.timeouts;
        match proto {
            ip_proto::TCP => match TcpState::from_code(tcp_code(w)) {
                Some(TcpState::SynSent | TcpState::SynSent2) => t.syn_sent,
                Some(TcpState::SynRecv) => t.syn_recv,
                Some(TcpState::Established) => t.established,
                Some(TcpState::FinWait) => t.fin_wait,
                Some(TcpState::CloseWait) => t.close_wait,
                Some(TcpState::LastAck) => t.last_ack,
                Some(TcpState::TimeWait) => t.time_wait,
                Some(TcpState::Close) | None => t.close,
            },
            ip_proto::UDP if w & REPLIED != 0 => t.udp_stream,
            ip_proto::UDP => t.udp,
            ip_proto::ICMP | ip_proto::ICMPV6 => t.icmp,
            _ => t.generic,
        }
    }

    /// Tracks packet `f` (with the quoted flow of an ICMP error) in `zone` at `now` (seconds).
    /// `generation` is the rule-set generation of the checking side: a new connection is
    /// checked with `allow(f)`; a tracked one whose generation differs is re-checked with
    /// `allow(original direction)` and removed when no longer allowed. Allocates nothing and
    /// takes no lock but, for TCP, the connection's own. [`Conntrack::track_at`] at point 0.
    pub fn track(
        &self,
        zone: u16,
        f: &Flow,
        related: Option<&Flow>,
        now: u64,
        generation: u32,
        allow: impl Fn(&Flow) -> bool,
    ) -> Verdict {
        self.track_at(zone, 0, f, related, now, generation, allow)
    }

    /// [`Conntrack::track`] at checking point `point`: the same connection seen at two points
    /// of one zone (the switch: two VM ports of one bridge, each with its own rules) is two
    /// entries, each checked against its point's rules and counted in the zone.
    #[allow(clippy::too_many_arguments)]
    pub fn track_at(
        &self,
        zone: u16,
        point: u32,
        f: &Flow,
        related: Option<&Flow>,
        now: u64,
        generation: u32,
        allow: impl Fn(&Flow) -> bool,
    ) -> Verdict {
        self.track_in(None, zone, point, f, related, now, generation, allow)
    }

    /// [`Conntrack::track_at`] remembering the connection found in `last`, so that the next
    /// packet of the same connection (a burst is often one flow) skips the hash and the bucket
    /// scan: it checks only that the slot still holds that incarnation. One `LastConn` per
    /// checking thread, forgotten ([`LastConn::forget`]) at least once per burst.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn track_with(
        &self,
        last: &LastConn,
        zone: u16,
        point: u32,
        f: &Flow,
        related: Option<&Flow>,
        now: u64,
        generation: u32,
        allow: impl Fn(&Flow) -> bool,
    ) -> Verdict {
        self.track_in(Some(last), zone, point, f, related, now, generation, allow)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_in(
        &self,
        last: Option<&LastConn>,
        zone: u16,
        point: u32,
        f: &Flow,
        related: Option<&Flow>,
        now: u64,
        generation: u32,
        allow: impl Fn(&Flow) -> bool,
    ) -> Verdict {
        if f.error {
            // The quoted packet went the other way: its connection is the one to find.
            return match related.map(|q| key_of(zone, point, q)).and_then(|(k, _)| self.find(&k)) {
                Some(_) => Verdict::Related,
                None => Verdict::Invalid,
            };
        }
        let icmp = matches!(f.proto, ip_proto::ICMP | ip_proto::ICMPV6);
        if icmp && !f.echo {
            return if allow(f) { Verdict::Untracked } else { Verdict::Denied };
        }
        let raw = raw_key(zone, point, f);
        let (x, src_lo) = match last.and_then(|l| Some((self.remembered(l, &raw)?, l.src_lo.get()))) {
            Some(hit) => hit,
            None => {
                let (k, src_lo) = ordered(raw);
                let found = self.find(&k);
                if let Some(l) = last {
                    l.raw.set(raw);
                    l.at.set(found.map_or(NONE, |x| x.at));
                    l.word.set(found.map_or(0, |x| x.word));
                    l.src_lo.set(src_lo);
                }
                match found {
                    Some(x) => (x, src_lo),
                    None => return self.create(zone, &k, src_lo, f, now, generation, &allow),
                }
            }
        };
        if self.settled(x, f, src_lo, now, generation) {
            return Verdict::Established;
        }
        self.update(x, f, src_lo, now, generation, &allow)
    }

    /// The slot `l` remembers, when the packet is the one it remembers (the same words, the
    /// same direction) and the slot still holds the same incarnation (bumped at every insert
    /// into the slot), so still that connection, whatever happened to its bucket meanwhile. A
    /// burst lasts microseconds; the 65536 inserts into one slot that would wrap the
    /// incarnation cannot happen within it.
    #[inline(always)]
    fn remembered(&self, l: &LastConn, raw: &Key) -> Option<Found> {
        let at = l.at.get();
        if at == NONE {
            return None;
        }
        let mine = l.raw.get();
        // Word by word, no early exit (an array `==` here is a call to memcmp).
        if (0..6).fold(0, |d, j| d | (mine[j] ^ raw[j])) != 0 {
            return None;
        }
        let x = Found { at, word: l.word.get() };
        // Acquire: pairs with the Release that published the slot's state (an insert under the
        // bucket lock, or a TCP update under the slot lock).
        let w = self.buckets[x.bucket()].slots[x.way()].state.load(Ordering::Acquire);
        (w & USED != 0 && (w ^ x.word) >> INC_SHIFT & 0xffff == 0).then_some(Found { at, word: w })
    }

    /// The common case of a connection without TCP state (UDP, ICMP echo, other protocols): a
    /// packet of the current rule generation in a direction already recorded changes no bit of
    /// the state word, so it needs neither the slot's lock (an atomic read-modify-write per
    /// packet) nor a store to the word; only the timestamp, written when it changes (so lcores
    /// sharing a connection do not bounce its line every packet). True when `f` was that case
    /// (it passes, refreshed). The caller saw the slot in use with this incarnation; if the
    /// ager removes it right now (it had been idle past its timeout), this packet still
    /// passes, as one a moment earlier would have, and the timestamp lands in a free slot
    /// (rewritten when it is taken again).
    #[inline(always)]
    fn settled(&self, x: Found, f: &Flow, src_lo: bool, now: u64, generation: u32) -> bool {
        let d = src_lo != (x.word & ORIG_LO != 0);
        let settled = x.word >> GEN_SHIFT == generation as u64 && (!d || x.word & REPLIED != 0);
        if !settled || f.proto == ip_proto::TCP || (f.echo && !d && !f.echo_request) {
            return false;
        }
        let s = &self.buckets[x.bucket()].slots[x.way()];
        // Relaxed: a timestamp read by the ager, which re-checks under the bucket lock.
        if s.seen.load(Ordering::Relaxed) != now {
            s.seen.store(now, Ordering::Relaxed);
        }
        true
    }

    /// A packet of a tracked connection that is not [`Conntrack::settled`]: the rule
    /// re-check of a new generation, then the state word under the slot's lock.
    fn update(
        &self,
        x: Found,
        f: &Flow,
        src_lo: bool,
        now: u64,
        generation: u32,
        allow: &dyn Fn(&Flow) -> bool,
    ) -> Verdict {
        let d = (src_lo != (x.word & ORIG_LO != 0)) as usize;
        if (x.word >> GEN_SHIFT) as u32 != generation {
            let orig = if d == 0 { *f } else { f.reversed() };
            if !allow(&orig) {
                self.remove(x, None);
                return Verdict::Denied;
            }
        }
        let s = &self.buckets[x.bucket()].slots[x.way()];
        let Some(w) = self.lock_slot(x) else {
            return Verdict::Invalid;
        };
        let mut nw = w & !(0xffff_ffffu64 << GEN_SHIFT) | (generation as u64) << GEN_SHIFT;
        if d == 1 {
            nw |= REPLIED;
        }
        let mut verdict = Verdict::Established;
        if f.proto == ip_proto::TCP {
            let mut q = self.load_seq(s);
            match TcpState::from_code(tcp_code(w)).and_then(|st| tcp::next(st, d, f, &mut q)) {
                Some(st) => {
                    // A reopened connection takes the new SYN's direction as original.
                    if st == TcpState::SynSent && tcp_code(w) != TcpState::SynSent as u8 && src_lo != (w & ORIG_LO != 0)
                    {
                        nw ^= ORIG_LO;
                    }
                    nw = nw & !(0xf << STATE_SHIFT) | (st as u64) << STATE_SHIFT;
                    self.store_seq(s, &q);
                }
                None => verdict = Verdict::Invalid,
            }
        } else if f.echo && d == 0 && !f.echo_request {
            // An echo reply in the original direction: not this connection's.
            verdict = Verdict::Invalid;
        }
        if verdict != Verdict::Invalid {
            // Relaxed: a timestamp read by the ager, which re-checks under the bucket lock.
            s.seen.store(now, Ordering::Relaxed);
        } else {
            nw = w;
        }
        // Release: publishes the TCP words and unlocks.
        s.state.store(nw & !LOCK, Ordering::Release);
        verdict
    }

    fn load_seq(&self, s: &Slot) -> tcp::Seq {
        let (e, w, m) = (s.end.load(Ordering::Relaxed), s.win.load(Ordering::Relaxed), s.misc.load(Ordering::Relaxed));
        tcp::Seq {
            end: [e as u32, (e >> 32) as u32],
            win: [w as u32, (w >> 32) as u32],
            wscale: [m as u8, (m >> 8) as u8],
            fin: (m >> 16) as u8,
        }
    }

    fn store_seq(&self, s: &Slot, q: &tcp::Seq) {
        // Relaxed: written under the slot lock (or the bucket lock), published by its release.
        s.end.store(q.end[0] as u64 | (q.end[1] as u64) << 32, Ordering::Relaxed);
        s.win.store(q.win[0] as u64 | (q.win[1] as u64) << 32, Ordering::Relaxed);
        s.misc.store(q.wscale[0] as u32 | (q.wscale[1] as u32) << 8 | (q.fin as u32) << 16, Ordering::Relaxed);
    }

    /// A packet of no tracked connection.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        zone: u16,
        k: &Key,
        src_lo: bool,
        f: &Flow,
        now: u64,
        generation: u32,
        allow: &dyn Fn(&Flow) -> bool,
    ) -> Verdict {
        let starts = match f.proto {
            ip_proto::TCP => f.flags & SYN_ACK_RST_FIN == flow::tcp_flags::SYN,
            ip_proto::ICMP | ip_proto::ICMPV6 => f.echo_request,
            _ => true,
        };
        if !starts {
            return Verdict::Invalid;
        }
        if !allow(f) {
            return Verdict::Denied;
        }
        let Some(zc) = self.zone_count.get(zone as usize) else {
            return Verdict::Denied;
        };
        // Relaxed: the counts are limits, not synchronisation.
        let in_zone = zc.fetch_add(1, Ordering::Relaxed);
        let zone_full = self.cfg.zone_limit != 0 && in_zone >= self.cfg.zone_limit;
        let full = self.count.fetch_add(1, Ordering::Relaxed) >= self.cfg.capacity;
        if zone_full || full {
            return self.refuse(zc);
        }
        let b = hash(k, &self.secrets) as usize & self.mask;
        let bucket = self.lock_bucket(b);
        // Another lcore may have inserted it since the lookup.
        let dup = bucket.slots.iter().any(|s| {
            s.state.load(Ordering::Relaxed) & USED != 0
                && s.key.iter().zip(k).all(|(a, b)| a.load(Ordering::Relaxed) == *b)
        });
        let free = bucket.slots.iter().find(|s| s.state.load(Ordering::Relaxed) & USED == 0);
        let (true, Some(s)) = (!dup, free) else {
            Self::unlock_bucket(bucket);
            if dup {
                zc.fetch_sub(1, Ordering::Relaxed);
                self.count.fetch_sub(1, Ordering::Relaxed);
                return Verdict::Established;
            }
            return self.refuse(zc);
        };
        for (a, v) in s.key.iter().zip(k) {
            a.store(*v, Ordering::Relaxed);
        }
        let old = s.state.load(Ordering::Relaxed);
        let inc = (old >> INC_SHIFT).wrapping_add(1) & 0xffff;
        let mut w = USED | inc << INC_SHIFT | (generation as u64) << GEN_SHIFT;
        if src_lo {
            w |= ORIG_LO;
        }
        if f.proto == ip_proto::TCP {
            w |= (TcpState::SynSent as u64) << STATE_SHIFT;
            self.store_seq(s, &tcp::Seq::open(f));
        }
        s.seen.store(now, Ordering::Relaxed);
        s.state.store(w, Ordering::Relaxed);
        Self::unlock_bucket(bucket);
        self.zone_new[zone as usize].fetch_add(1, Ordering::Relaxed);
        Verdict::New
    }

    fn refuse(&self, zc: &AtomicUsize) -> Verdict {
        zc.fetch_sub(1, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        Verdict::Full
    }

    /// Removes the slot found as `x` if it is still that incarnation (and, with `now`, still
    /// expired).
    fn remove(&self, x: Found, now: Option<u64>) -> bool {
        let bucket = self.lock_bucket(x.bucket());
        let s = &bucket.slots[x.way()];
        let w = s.state.load(Ordering::Relaxed);
        let mut same = w & USED != 0 && w & LOCK == 0 && (w ^ x.word) >> INC_SHIFT & 0xffff == 0;
        if let (true, Some(now)) = (same, now) {
            same = self.expired(s, w, now);
        }
        if same {
            s.state.store(w & (0xffff << INC_SHIFT), Ordering::Relaxed);
            let zone = (s.key[0].load(Ordering::Relaxed) >> 48) as usize;
            self.zone_count[zone].fetch_sub(1, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Self::unlock_bucket(bucket);
        same
    }

    fn expired(&self, s: &Slot, w: u64, now: u64) -> bool {
        let proto = (s.key[0].load(Ordering::Relaxed) >> 40) as u8;
        s.seen.load(Ordering::Relaxed).saturating_add(self.timeout(proto, w)) < now
    }

    /// Visits the next `buckets` buckets and removes the connections idle longer than their
    /// state's timeout at `now` (seconds); returns how many. Call it from one thread (the
    /// control thread) about every millisecond: it never takes more than `buckets` bucket locks.
    pub fn age(&self, now: u64, buckets: usize) -> usize {
        let mut removed = 0;
        for _ in 0..buckets.min(self.buckets.len()) {
            let b = self.cursor.fetch_add(1, Ordering::Relaxed) & self.mask;
            for (i, s) in self.buckets[b].slots.iter().enumerate() {
                let w = s.state.load(Ordering::Relaxed);
                if w & USED == 0 {
                    continue;
                }
                if self.expired(s, w, now) && self.remove(Found::new(b, i, w), Some(now)) {
                    removed += 1;
                }
            }
        }
        self.aged.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }
}
