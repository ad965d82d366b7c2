//! The split-virtqueue data path: guest TX -> mbufs (dequeue) and mbufs -> guest RX (enqueue).
//!
//! Both directions work a burst at a time: heads are taken from the avail ring, chains walked and
//! copied, used elements written to their slots, then `used.idx` is published **once** per burst
//! (Release) and the guest is called **at most once** per burst, only when it asked for it
//! (`VRING_AVAIL_F_NO_INTERRUPT` clear, or `used_event` passed with EVENT_IDX). While we poll,
//! the guest is told not to kick (`VRING_USED_F_NO_NOTIFY`, or a stale `avail_event` with
//! EVENT_IDX).
//!
//! The guest is hostile. Every head index, `next` index, indirect table, address and length is
//! checked; chains are bounded by the ring size (indirect: by the table size), which also ends
//! descriptor loops; `avail.idx` may not run more than a ring ahead of us. A violation
//! ([`GuestError`]) stops this queue only: what was finished before it is published, the queue is
//! marked broken and does nothing more until the frontend sets it up again. A packet that is
//! merely unusable (too long, bad virtio-net header, no room) is dropped and counted under a
//! [`DropReason`] reason; its descriptors go back to the guest.

use std::sync::atomic::{fence, Ordering};

use fastpath_mempool::{Batch, Mbuf, PoolCache};
use fastpath_pmd::Counter;

use crate::mem::{copy_from_guest, copy_to_guest, GuestMemory};
use crate::net::{self, NetHdr, TxPrep, HDR_MAX};
use crate::ring::{
    need_event, Desc, SplitRing, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
    VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY,
};

/// Longest frame accepted from or given to a guest: a 64 KiB IP packet with two VLAN tags.
pub const MAX_PKT_LEN: usize = 65535 + 22;

/// A guest violation that stops the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestError {
    /// `avail.idx` ran more than a ring size ahead of what we consumed.
    AvailIdx,
    /// A head or `next` index is not below the ring size.
    DescIndex,
    /// A buffer address / length is not guest memory.
    DescAddr,
    /// A chain is longer than the ring (or its indirect table): a loop.
    ChainTooLong,
    /// An indirect table is misused (nested, with NEXT, empty, misaligned length, unmapped, not
    /// negotiated).
    Indirect,
    /// A device-writable buffer in a TX chain, or a read-only one in an RX chain.
    Direction,
    /// Packed ring: a descriptor inside a chain is not marked available for the current wrap
    /// counter (the driver publishes a chain's head last, so the rest must be there already).
    Wrap,
}

impl GuestError {
    /// Every error, in counter order.
    pub const ALL: [GuestError; 7] = [
        GuestError::AvailIdx,
        GuestError::DescIndex,
        GuestError::DescAddr,
        GuestError::ChainTooLong,
        GuestError::Indirect,
        GuestError::Direction,
        GuestError::Wrap,
    ];

    /// Name used in xstats and logs.
    pub fn name(self) -> &'static str {
        match self {
            GuestError::AvailIdx => "guest_err_avail_idx",
            GuestError::DescIndex => "guest_err_desc_index",
            GuestError::DescAddr => "guest_err_desc_addr",
            GuestError::ChainTooLong => "guest_err_chain_too_long",
            GuestError::Indirect => "guest_err_indirect",
            GuestError::Direction => "guest_err_direction",
            GuestError::Wrap => "guest_err_wrap",
        }
    }
}

/// Why a packet was dropped (the queue goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Guest TX: longer than [`MAX_PKT_LEN`].
    Oversize,
    /// Guest TX: shorter than an Ethernet header, or than the virtio-net header.
    Runt,
    /// Guest TX: the virtio-net header asks for something inconsistent or not negotiated.
    BadHeader,
    /// Guest TX: the pool ran dry in the middle of a multi-segment packet.
    NoMbufs,
    /// Guest RX: a non-mergeable receive chain is too small for the packet.
    BufTooSmall,
    /// Guest RX: TSO/USO requested but the guest did not negotiate it (run the LSO stage).
    GsoNotNegotiated,
    /// Guest RX: a checksum request could not be completed in software.
    CsumFailed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::Oversize,
        DropReason::Runt,
        DropReason::BadHeader,
        DropReason::NoMbufs,
        DropReason::BufTooSmall,
        DropReason::GsoNotNegotiated,
        DropReason::CsumFailed,
    ];

    /// Name used in xstats.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversize => "drop_oversize",
            DropReason::Runt => "drop_runt",
            DropReason::BadHeader => "drop_bad_header",
            DropReason::NoMbufs => "drop_no_mbufs",
            DropReason::BufTooSmall => "drop_buf_too_small",
            DropReason::GsoNotNegotiated => "drop_gso_not_negotiated",
            DropReason::CsumFailed => "drop_csum_failed",
        }
    }
}

/// Per-vring counters besides packets and bytes (single writer: the lcore; `kicks`: the control
/// thread).
#[derive(Debug, Default)]
pub struct VringStats {
    /// Drops by [`DropReason`] reason.
    pub drops: [Counter; 7],
    /// Guest errors by [`GuestError`] (each stopped the queue once).
    pub guest_errors: [Counter; 7],
    /// Eventfd writes to the guest (interrupts) that went through.
    pub calls: Counter,
    /// Calls not delivered: the call eventfd's counter was full (the frontend does not read it)
    /// or the write was interrupted by the watchdog (see [`crate::call`]).
    pub calls_skipped: Counter,
    /// Kick notifications from the guest (counted by the control thread: one per wakeup of its
    /// edge-triggered watch on the kick eventfd, whatever value the frontend wrote into it).
    pub kicks: Counter,
    /// The lcore's marks around call writes, for the control thread's watchdog.
    pub call_watch: crate::call::CallWatch,
    /// Polls that found packets but no mbuf to take them (they stay in the ring).
    pub alloc_failed: Counter,
}

impl VringStats {
    #[inline(always)]
    pub(crate) fn drop(&self, d: DropReason) {
        self.drops[d as usize].inc();
    }
}

/// Negotiated properties a queue needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueFeatures {
    /// All negotiated virtio feature bits.
    pub bits: u64,
    /// virtio-net header length (10 or 12).
    pub hdr_len: usize,
    /// Mergeable receive buffers.
    pub mrg_rxbuf: bool,
    /// EVENT_IDX.
    pub event_idx: bool,
    /// INDIRECT_DESC.
    pub indirect: bool,
    /// RING_PACKED: the vrings are packed ones.
    pub packed: bool,
    /// IN_ORDER: buffers are used in the order they were made available.
    pub in_order: bool,
}

impl QueueFeatures {
    /// From negotiated feature bits.
    pub fn from_bits(bits: u64) -> QueueFeatures {
        QueueFeatures {
            bits,
            hdr_len: net::hdr_len(bits),
            mrg_rxbuf: bits & net::VIRTIO_NET_F_MRG_RXBUF != 0,
            event_idx: bits & net::VIRTIO_RING_F_EVENT_IDX != 0,
            indirect: bits & net::VIRTIO_RING_F_INDIRECT_DESC != 0,
            packed: bits & net::VIRTIO_F_RING_PACKED != 0,
            in_order: bits & net::VIRTIO_F_IN_ORDER != 0,
        }
    }
}

/// One live split virtqueue, owned by the lcore that polls it.
#[derive(Debug)]
pub struct SplitQueue {
    ring: SplitRing,
    last_avail: u16,
    last_used: u16,
    signalled: u16,
    feat: QueueFeatures,
    call: Option<i32>,
    broken: Option<GuestError>,
}

/// Chain walk control.
pub(crate) enum Step {
    Go,
    Stop,
}

impl SplitQueue {
    /// A queue over `ring` starting at avail index `base` (SET_VRING_BASE); the used index is
    /// taken from the ring as the guest sees it. Tells the guest not to kick while we poll.
    /// `call` is the eventfd to interrupt the guest (none: never).
    pub fn new(ring: SplitRing, base: u16, feat: QueueFeatures, call: Option<i32>) -> SplitQueue {
        let used = ring.used_idx();
        if feat.event_idx {
            // A stale avail_event: the guest kicks only when its index passes it, i.e. never
            // while we keep up (and once per 64 Ki buffers otherwise).
            ring.set_avail_event(base.wrapping_sub(1));
            ring.set_used_flags(0);
        } else {
            ring.set_used_flags(VRING_USED_F_NO_NOTIFY);
        }
        SplitQueue { ring, last_avail: base, last_used: used, signalled: used, feat, call, broken: None }
    }

    /// Continues from our own used index (the ring was set up again without a new base) and
    /// keeps a guest error in force.
    pub fn resume(&mut self, used: u16, broken: Option<GuestError>) {
        self.last_used = used;
        self.signalled = used;
        self.broken = broken;
    }

    /// The next avail index we will consume (what GET_VRING_BASE reports).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// The used index published so far.
    pub fn last_used(&self) -> u16 {
        self.last_used
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

    /// Entries the guest made available, checked: `None` (queue broken) when it claims more
    /// than a ring.
    #[inline(always)]
    fn pending(&mut self, st: &VringStats) -> Option<u16> {
        let n = self.ring.avail_idx().wrapping_sub(self.last_avail);
        if n > self.ring.size() {
            self.fail(GuestError::AvailIdx, st);
            return None;
        }
        Some(n)
    }

    /// Starts loading the descriptors, then the first buffer lines, of the next `n` avail
    /// entries, so that the copies of the burst find them in cache instead of waiting for each
    /// in turn (every one was just written by the other side's core). Only hints: a bad index or
    /// address is skipped here and caught by the checked walk.
    #[inline(always)]
    fn prefetch_burst<const WRITE: bool>(&self, mem: &GuestMemory, n: usize) {
        let size = self.ring.size();
        // The used slots the burst will write (8 to a line), asked for in the exclusive state
        // now: the guest polls these lines, and a store that finds one in the guest's cache
        // waits a cross-core transfer with every store queued behind it (measured in a PVP
        // loop across L3 domains: 6-13 % fewer cycles per packet; see docs/vhost-user.md).
        // Writing them all after the copies instead (a shadow used ring) made it worse: the
        // transfers then start last.
        if n > 0 {
            for i in (0..n).step_by(8) {
                prefetch_w(self.ring.used_ptr(self.last_used.wrapping_add(i as u16)));
            }
            prefetch_w(self.ring.used_ptr(self.last_used.wrapping_add(n as u16 - 1)));
        }
        for i in 0..n {
            let h = self.ring.avail_entry(self.last_avail.wrapping_add(i as u16));
            if h < size {
                prefetch(self.ring.desc_ptr(h));
            }
        }
        for i in 0..n {
            let h = self.ring.avail_entry(self.last_avail.wrapping_add(i as u16));
            if let Some(d) = self.ring.desc(h) {
                if let Some(p) = mem.gpa_ptr(d.addr, 64.min(d.len as u64)) {
                    // The second line of a header + minimum frame (an address for a hint only).
                    if WRITE {
                        // Receive buffers are about to be written: ask for the lines in the
                        // exclusive state, so that each store does not wait for the frontend's
                        // core to give its copy up after a shared fetch.
                        prefetch_w(p);
                        prefetch_w(p.wrapping_add(64));
                    } else {
                        prefetch(p);
                        prefetch(p.wrapping_add(64));
                    }
                }
            }
        }
    }

    /// Walks the chain at `head`, calling `f(addr, len, writable)` for each buffer until it
    /// returns `Stop` or the chain ends. Bounded by the ring size (direct) or the table size
    /// (indirect).
    #[inline(always)]
    fn walk<F>(&self, mem: &GuestMemory, head: u16, mut f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>,
    {
        let mut d = self.ring.desc(head).ok_or(GuestError::DescIndex)?;
        if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
            return self.walk_indirect(mem, d, f);
        }
        let mut count: u32 = 0;
        loop {
            count += 1;
            if count > self.ring.size() as u32 {
                return Err(GuestError::ChainTooLong);
            }
            if let Step::Stop = f(d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE != 0)? {
                return Ok(());
            }
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            d = self.ring.desc(d.next).ok_or(GuestError::DescIndex)?;
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                // Only a chain's only descriptor may point to a table.
                return Err(GuestError::Indirect);
            }
        }
    }

    #[inline(never)]
    fn walk_indirect<F>(&self, mem: &GuestMemory, d: Desc, mut f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>,
    {
        if !self.feat.indirect || d.flags & VIRTQ_DESC_F_NEXT != 0 || d.len == 0 || d.len % 16 != 0 {
            return Err(GuestError::Indirect);
        }
        let n = d.len / 16;
        let table = mem.gpa_ptr(d.addr, d.len as u64).ok_or(GuestError::Indirect)?.cast::<Desc>();
        let (mut i, mut count) = (0u32, 0u32);
        loop {
            if i >= n {
                return Err(GuestError::DescIndex);
            }
            count += 1;
            if count > n {
                return Err(GuestError::ChainTooLong);
            }
            // SAFETY: i < n and the table was checked for n * 16 bytes; read_unaligned because a
            // guest may place it at any address.
            let e = unsafe { table.add(i as usize).read_unaligned() };
            if e.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(GuestError::Indirect);
            }
            if let Step::Stop = f(e.addr, e.len, e.flags & VIRTQ_DESC_F_WRITE != 0)? {
                return Ok(());
            }
            if e.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            i = e.next as u32;
        }
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
        let Some(avail) = self.pending(st) else { return (0, 0) };
        let n = (avail as usize).min(max).min(batch.remaining_capacity());
        if n == 0 {
            return (0, 0);
        }
        let start = batch.len();
        if !cache.alloc_bulk(batch, n) {
            st.alloc_failed.inc();
            return (0, 0);
        }
        self.prefetch_burst::<false>(mem, n);
        let (mut w, mut bytes) = (0usize, 0u64);
        let mut consumed = 0u16;
        for i in 0..n {
            let head = self.ring.avail_entry(self.last_avail.wrapping_add(i as u16));
            let m = &mut batch[start + w];
            match self.dequeue_one(mem, cache, head, m, st) {
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
            self.ring.set_used(self.last_used.wrapping_add(consumed), head, 0);
            consumed += 1;
        }
        cache.free_tail(batch, start + w);
        self.last_avail = self.last_avail.wrapping_add(consumed);
        self.publish(consumed, st);
        (w, bytes)
    }

    /// Copies the chain at `head` into `m` (see [`chain_to_mbuf`]).
    #[inline(always)]
    fn dequeue_one(
        &self,
        mem: &GuestMemory,
        cache: &mut PoolCache,
        head: u16,
        m: &mut Mbuf,
        st: &VringStats,
    ) -> Result<bool, GuestError> {
        chain_to_mbuf(&mut SplitChain { q: self, head }, mem, cache, &self.feat, m, st)
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
        let Some(avail) = self.pending(st) else { return (0, 0) };
        self.prefetch_burst::<true>(mem, batch.len().min(avail as usize));
        let used_before = self.last_used;
        let feat = self.feat;
        let (sent, bytes, err) = fill_guest_rx(&mut SplitRx { q: self, avail }, mem, cache, batch, &feat, st);
        if let Some(e) = err {
            self.fail(e, st);
        }
        let n = self.last_used.wrapping_sub(used_before);
        self.publish_only(n, st);
        (sent, bytes)
    }

    /// Fast path of both enqueue forms: a single-segment packet into a head descriptor that
    /// holds it whole. `Ok(false)`: not this case (nothing done).
    #[inline(always)]
    fn enqueue_direct(&mut self, mem: &GuestMemory, m: &Mbuf, hb: &[u8; HDR_MAX]) -> Result<bool, GuestError> {
        let head = self.ring.avail_entry(self.last_avail);
        let d = self.ring.desc(head).ok_or(GuestError::DescIndex)?;
        let (hlen, plen) = (self.feat.hdr_len, m.data_len());
        let need = hlen + plen;
        if !m.is_contiguous()
            || d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT) != 0
            || d.flags & VIRTQ_DESC_F_WRITE == 0
            || (d.len as usize) < need
        {
            return Ok(false);
        }
        let p = mem.gpa_ptr(d.addr, need as u64).ok_or(GuestError::DescAddr)?;
        // SAFETY: p is valid for need = hlen + plen bytes (checked above); hb has HDR_MAX >= hlen
        // bytes and the mbuf's data plen.
        unsafe {
            copy_to_guest(p, hb.as_ptr(), hlen);
            copy_to_guest(p.add(hlen), m.data_addr(), plen);
        }
        self.ring.set_used(self.last_used, head, need as u32);
        self.last_used = self.last_used.wrapping_add(1);
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(true)
    }

    /// Copies the packet into one chain. `Ok(false)`: it does not fit (nothing consumed).
    #[inline(always)]
    fn enqueue_single(
        &mut self,
        mem: &GuestMemory,
        m: &Mbuf,
        hdr: &NetHdr,
        avail: &mut u16,
    ) -> Result<bool, GuestError> {
        let hb = hdr.emit();
        if self.enqueue_direct(mem, m, &hb)? {
            *avail -= 1;
            return Ok(true);
        }
        let head = self.ring.avail_entry(self.last_avail);
        let mut src = Src::new(&hb[..self.feat.hdr_len], m);
        self.walk(mem, head, |addr, len, write| {
            if !write {
                return Err(GuestError::Direction);
            }
            let p = mem.gpa_ptr(addr, len as u64).ok_or(GuestError::DescAddr)?;
            src.copy_into(p, len as usize);
            Ok(if src.is_done() { Step::Stop } else { Step::Go })
        })?;
        if !src.is_done() {
            return Ok(false);
        }
        self.ring.set_used(self.last_used, head, src.written as u32);
        self.last_used = self.last_used.wrapping_add(1);
        self.last_avail = self.last_avail.wrapping_add(1);
        *avail -= 1;
        Ok(true)
    }

    /// Copies the packet over as many chains as it needs (MRG_RXBUF), `num_buffers` set in the
    /// header. `Ok(false)`: not enough chains (nothing consumed).
    #[inline(always)]
    fn enqueue_mrg(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr, avail: &mut u16) -> Result<bool, GuestError> {
        let mut h = *hdr;
        h.num_buffers = 1;
        let hb = h.emit();
        if self.enqueue_direct(mem, m, &hb)? {
            *avail -= 1;
            return Ok(true);
        }
        let mut src = Src::new(&hb[..self.feat.hdr_len], m);
        let (save_avail, save_used, save_count) = (self.last_avail, self.last_used, *avail);
        let mut nb: u16 = 0;
        while !src.is_done() {
            if *avail == 0 {
                self.last_avail = save_avail;
                self.last_used = save_used;
                *avail = save_count;
                return Ok(false);
            }
            let head = self.ring.avail_entry(self.last_avail);
            let before = src.written;
            self.walk(mem, head, |addr, len, write| {
                if !write {
                    return Err(GuestError::Direction);
                }
                let p = mem.gpa_ptr(addr, len as u64).ok_or(GuestError::DescAddr)?;
                src.copy_into(p, len as usize);
                Ok(if src.is_done() { Step::Stop } else { Step::Go })
            })?;
            self.ring.set_used(self.last_used, head, (src.written - before) as u32);
            self.last_used = self.last_used.wrapping_add(1);
            self.last_avail = self.last_avail.wrapping_add(1);
            *avail -= 1;
            nb += 1;
        }
        if nb > 1 {
            src.patch_num_buffers(nb);
        }
        Ok(true)
    }

    /// Publishes `n` used entries written since the last publish (one store) and calls the guest
    /// if it asked for it. `n` counts heads consumed by a dequeue (used == avail progress).
    #[inline(always)]
    fn publish(&mut self, n: u16, st: &VringStats) {
        self.last_used = self.last_used.wrapping_add(n);
        self.publish_only(n, st);
    }

    #[inline(always)]
    fn publish_only(&mut self, n: u16, st: &VringStats) {
        if n == 0 {
            return;
        }
        self.ring.publish_used(self.last_used);
        self.notify(st);
    }

    /// At most one call per burst: after the used index is visible, ask whether the guest wants
    /// an interrupt. SeqCst fence: our used.idx store must be visible before we read the
    /// guest's flags / used_event, pairing with the guest's barrier between enabling interrupts
    /// and re-checking used.idx (otherwise both sides could miss each other).
    #[inline(always)]
    fn notify(&mut self, st: &VringStats) {
        let Some(fd) = self.call else { return };
        fence(Ordering::SeqCst);
        let want = if self.feat.event_idx {
            need_event(self.ring.used_event(), self.last_used, self.signalled)
        } else {
            self.ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0
        };
        self.signalled = self.last_used;
        if want {
            crate::call::call_guest(fd, st);
        }
    }
}

/// The live queue of a vring: the data path of the negotiated ring layout. One `match` per
/// burst; both arms have the same interface.
#[derive(Debug)]
pub enum VirtQueue {
    /// A split ring.
    Split(SplitQueue),
    /// A packed ring.
    Packed(crate::packed::PackedQueue),
}

impl VirtQueue {
    /// A queue over `ring` starting at `base` (split: the avail index; packed: position | wrap
    /// counter << 15).
    pub fn new(ring: crate::ring::Ring, base: u16, feat: QueueFeatures, call: Option<i32>) -> VirtQueue {
        match ring {
            crate::ring::Ring::Split(r) => VirtQueue::Split(SplitQueue::new(r, base, feat, call)),
            crate::ring::Ring::Packed(r) => VirtQueue::Packed(crate::packed::PackedQueue::new(r, base, feat, call)),
        }
    }

    /// See [`SplitQueue::dequeue_burst`].
    #[inline(always)]
    pub fn dequeue_burst(
        &mut self,
        mem: &GuestMemory,
        cache: &mut PoolCache,
        batch: &mut Batch,
        max: usize,
        origin: (u16, u16),
        st: &VringStats,
    ) -> (usize, u64) {
        match self {
            VirtQueue::Split(q) => q.dequeue_burst(mem, cache, batch, max, origin, st),
            VirtQueue::Packed(q) => q.dequeue_burst(mem, cache, batch, max, origin, st),
        }
    }

    /// See [`SplitQueue::enqueue_burst`].
    #[inline(always)]
    pub fn enqueue_burst(
        &mut self,
        mem: &GuestMemory,
        cache: &mut PoolCache,
        batch: &mut Batch,
        st: &VringStats,
    ) -> (usize, u64) {
        match self {
            VirtQueue::Split(q) => q.enqueue_burst(mem, cache, batch, st),
            VirtQueue::Packed(q) => q.enqueue_burst(mem, cache, batch, st),
        }
    }

    /// The avail state GET_VRING_BASE reports.
    pub fn last_avail(&self) -> u16 {
        match self {
            VirtQueue::Split(q) => q.last_avail(),
            VirtQueue::Packed(q) => q.last_avail(),
        }
    }

    /// The used state published so far.
    pub fn last_used(&self) -> u16 {
        match self {
            VirtQueue::Split(q) => q.last_used(),
            VirtQueue::Packed(q) => q.last_used(),
        }
    }

    /// The violation that stopped this queue, if any.
    pub fn broken(&self) -> Option<GuestError> {
        match self {
            VirtQueue::Split(q) => q.broken(),
            VirtQueue::Packed(q) => q.broken(),
        }
    }

    /// Returns what the queue holds back (packed IN_ORDER guest TX) before the lcore lets it go.
    pub fn flush_held(&mut self, st: &VringStats) {
        if let VirtQueue::Packed(q) = self {
            q.flush_held(st);
        }
    }

    /// Continues from our own used state and keeps a guest error in force.
    pub fn resume(&mut self, used: u16, broken: Option<GuestError>) {
        match self {
            VirtQueue::Split(q) => q.resume(used, broken),
            VirtQueue::Packed(q) => q.resume(used, broken),
        }
    }
}

/// The virtio-net header for a packet going to the guest, with what the guest did not negotiate
/// done in software. `None`: dropped (counted).
#[inline(always)]
pub(crate) fn guest_rx_hdr(m: &mut Mbuf, bits: u64, st: &VringStats) -> Option<NetHdr> {
    if m.ol_flags() & fastpath_mempool::offload::TX_IP_CKSUM != 0 && !net::fill_ip_csum(m) {
        st.drop(DropReason::CsumFailed);
        return None;
    }
    match net::mbuf_to_hdr(m, bits) {
        TxPrep::Send(h) => Some(h),
        TxPrep::SendGso(h, at) => {
            let l4 = (m.pkt_len() - h.csum_start as usize) as u16;
            if !net::adjust_sum(m, at, l4, false) {
                st.drop(DropReason::CsumFailed);
                return None;
            }
            Some(h)
        }
        TxPrep::NoGso => {
            st.drop(DropReason::GsoNotNegotiated);
            None
        }
        TxPrep::SoftCsum { start, offset } => {
            if !net::finish_csum(m, start, offset) {
                st.drop(DropReason::CsumFailed);
                return None;
            }
            Some(NetHdr::default())
        }
    }
}

/// The ring-specific half of guest RX (mbufs -> guest receive buffers), for [`fill_guest_rx`].
pub(crate) trait GuestRx {
    /// True while the guest has a receive buffer for us (in this burst).
    fn has_room(&self) -> bool;

    /// Copies one packet, `hdr` first, into the guest's buffers (several with MRG_RXBUF).
    /// `Ok(false)`: it does not fit (nothing consumed).
    fn put(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr) -> Result<bool, GuestError>;
}

/// The split ring's guest RX: the queue and the avail entries left in this burst.
struct SplitRx<'a> {
    q: &'a mut SplitQueue,
    avail: u16,
}

impl GuestRx for SplitRx<'_> {
    #[inline(always)]
    fn has_room(&self) -> bool {
        self.avail > 0
    }

    #[inline(always)]
    fn put(&mut self, mem: &GuestMemory, m: &Mbuf, hdr: &NetHdr) -> Result<bool, GuestError> {
        if self.q.feat.mrg_rxbuf {
            self.q.enqueue_mrg(mem, m, hdr, &mut self.avail)
        } else {
            self.q.enqueue_single(mem, m, hdr, &mut self.avail)
        }
    }
}

/// Mbufs -> guest RX, the loop both ring layouts share: copies packets from the front of
/// `batch` until it is empty or the guest has no room. Delivered and dropped packets are freed
/// (into `cache`) and removed; the rest stay in order. Returns packets delivered, their bytes,
/// and the guest error that ended the burst, if one did.
#[inline(always)]
pub(crate) fn fill_guest_rx<Q: GuestRx>(
    q: &mut Q,
    mem: &GuestMemory,
    cache: &mut PoolCache,
    batch: &mut Batch,
    feat: &QueueFeatures,
    st: &VringStats,
) -> (usize, u64, Option<GuestError>) {
    let (mut done, mut sent, mut bytes, mut err) = (0usize, 0usize, 0u64, None);
    while done < batch.len() && q.has_room() {
        let Some(hdr) = guest_rx_hdr(&mut batch[done], feat.bits, st) else {
            done += 1;
            continue;
        };
        match q.put(mem, &batch[done], &hdr) {
            Ok(true) => {
                bytes += batch[done].pkt_len() as u64;
                sent += 1;
                done += 1;
            }
            Ok(false) => {
                if !feat.mrg_rxbuf && q.has_room() {
                    // The chain is too small for this packet; it stays for the next one.
                    st.drop(DropReason::BufTooSmall);
                    done += 1;
                    continue;
                }
                break; // out of guest buffers: the rest stays in the batch
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    if done == batch.len() {
        cache.free_batch(batch);
    } else {
        for m in batch.drain_front(done) {
            cache.free(m);
        }
    }
    (sent, bytes, err)
}

/// One descriptor chain of a ring, as the copy loops shared by the split and the packed ring
/// see it.
pub(crate) trait Chain {
    /// `Some((addr, len))` when the chain is one plain device-readable descriptor (the fast
    /// path of guest TX); `None` otherwise. Errors as the walk would report them.
    fn single_readable(&mut self) -> Result<Option<(u64, u32)>, GuestError>;

    /// Calls `f(addr, len, writable)` for each buffer until it returns `Stop` or the chain
    /// ends, with every ring rule checked.
    fn walk<F>(&mut self, mem: &GuestMemory, f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>;
}

/// The chain at `head` of a split ring.
struct SplitChain<'a> {
    q: &'a SplitQueue,
    head: u16,
}

impl Chain for SplitChain<'_> {
    #[inline(always)]
    fn single_readable(&mut self) -> Result<Option<(u64, u32)>, GuestError> {
        let d = self.q.ring.desc(self.head).ok_or(GuestError::DescIndex)?;
        Ok((d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE) == 0).then_some((d.addr, d.len)))
    }

    #[inline(always)]
    fn walk<F>(&mut self, mem: &GuestMemory, f: F) -> Result<(), GuestError>
    where
        F: FnMut(u64, u32, bool) -> Result<Step, GuestError>,
    {
        self.q.walk(mem, self.head, f)
    }
}

/// Copies one guest TX chain into `m` (a fresh single-segment mbuf, chained further when
/// needed), the virtio-net header mapped to offload flags. `Ok(false)`: dropped (counted), `m`
/// needs a reset. Shared by the split and the packed ring: only the walk differs.
#[inline(always)]
pub(crate) fn chain_to_mbuf<C: Chain>(
    c: &mut C,
    mem: &GuestMemory,
    cache: &mut PoolCache,
    feat: &QueueFeatures,
    m: &mut Mbuf,
    st: &VringStats,
) -> Result<bool, GuestError> {
    let hlen = feat.hdr_len;
    let mut hdr = [0u8; HDR_MAX];
    // Fast path: the whole packet in one buffer that fits one mbuf (what DPDK's virtio-user
    // and Linux send for small packets).
    if let Some((addr, len)) = c.single_readable()? {
        let len = len as usize;
        if len >= hlen + 14 && len - hlen <= m.tailroom() {
            let p = mem.gpa_ptr(addr, len as u64).ok_or(GuestError::DescAddr)?;
            // SAFETY: p is valid for len >= hlen bytes; hdr has HDR_MAX >= hlen.
            unsafe { copy_from_guest(hdr.as_mut_ptr(), p, hlen) };
            let Some(dst) = m.append(len - hlen) else {
                st.drop(DropReason::NoMbufs);
                return Ok(false);
            };
            // SAFETY: p + hlen .. + (len - hlen) is inside the checked buffer; dst has that many.
            unsafe { copy_from_guest(dst.as_mut_ptr(), p.add(hlen), len - hlen) };
            if (hdr[0] != 0 || hdr[1] != 0) && net::hdr_to_mbuf(&NetHdr::parse(&hdr), m, feat.bits).is_err() {
                st.drop(DropReason::BadHeader);
                return Ok(false);
            }
            return Ok(true);
        }
    }
    let mut hgot = 0usize;
    let mut total = 0usize;
    let mut tail: Option<Mbuf> = None;
    let mut fail: Option<DropReason> = None;
    let walked = c.walk(mem, |addr, len, write| {
        if write {
            return Err(GuestError::Direction);
        }
        let p = mem.gpa_ptr(addr, len as u64).ok_or(GuestError::DescAddr)?;
        let mut off = 0usize;
        let len = len as usize;
        if hgot < hlen {
            let k = (hlen - hgot).min(len);
            // SAFETY: p is valid for len >= k bytes (gpa_ptr); hdr has room for k at hgot.
            unsafe { copy_from_guest(hdr.as_mut_ptr().add(hgot), p, k) };
            hgot += k;
            off = k;
        }
        let mut left = len - off;
        if left == 0 {
            return Ok(Step::Go);
        }
        if total + left > MAX_PKT_LEN {
            fail = Some(DropReason::Oversize);
            return Ok(Step::Stop);
        }
        total += left;
        while left > 0 {
            let seg: &mut Mbuf = match tail.as_mut() {
                Some(t) => t,
                None => &mut *m,
            };
            let k = seg.tailroom().min(left);
            if k == 0 {
                let Some(new) = cache.alloc() else {
                    fail = Some(DropReason::NoMbufs);
                    return Ok(Step::Stop);
                };
                if let Some(full) = tail.replace(new) {
                    if let Err(full) = m.chain(full) {
                        cache.free(full);
                        fail = Some(DropReason::Oversize);
                        return Ok(Step::Stop);
                    }
                }
                continue;
            }
            let Some(dst) = seg.append(k) else {
                fail = Some(DropReason::NoMbufs);
                return Ok(Step::Stop);
            };
            // SAFETY: p + off .. + k lies inside the checked buffer (off + k <= len); dst has
            // exactly k bytes.
            unsafe { copy_from_guest(dst.as_mut_ptr(), p.add(off), k) };
            off += k;
            left -= k;
        }
        Ok(Step::Go)
    });
    if let Some(t) = tail.take() {
        if let Err(t) = m.chain(t) {
            cache.free(t);
            fail = fail.or(Some(DropReason::Oversize));
        }
    }
    walked?;
    if fail.is_none() && (hgot < hlen || total < 14) {
        fail = Some(DropReason::Runt);
    }
    if fail.is_none() && (hdr[0] != 0 || hdr[1] != 0) {
        let h = NetHdr::parse(&hdr);
        if net::hdr_to_mbuf(&h, m, feat.bits).is_err() {
            fail = Some(DropReason::BadHeader);
        }
    }
    match fail {
        None => Ok(true),
        Some(d) => {
            st.drop(d);
            if let Some(rest) = m.split_first() {
                cache.free(rest);
            }
            Ok(false)
        }
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: never faults, whatever `p` is).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults or changes memory, for any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to fetch the cache line at `p` for writing (PREFETCHW: exclusive state). A hint
/// that never faults, whatever `p` is; a CPU without the instruction executes it as a NOP.
#[inline(always)]
pub(crate) fn prefetch_w(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW only hints the cache; it never faults, reads or writes memory, for any
    // address, and touches no register but its address operand.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Resets an mbuf whose packet was dropped so that it can take the next one.
#[inline(always)]
pub(crate) fn reset_for_reuse(m: &mut Mbuf) {
    m.set_len(0);
    m.set_ol_flags(0);
    m.set_l2_len(0);
    m.set_l3_len(0);
    m.set_l4_len(0);
    m.set_tso_segsz(0);
}

/// The bytes of one packet going to the guest: the virtio-net header, then every segment.
pub(crate) struct Src<'a> {
    hdr: &'a [u8],
    segs: fastpath_mempool::mbuf::Segments<'a>,
    cur: &'a [u8],
    in_hdr: bool,
    pub(crate) written: usize,
    /// Host pointers of the two `num_buffers` bytes (header offsets 10 and 11).
    nb_at: [*mut u8; 2],
}

impl<'a> Src<'a> {
    #[inline(always)]
    pub(crate) fn new(hdr: &'a [u8], m: &'a Mbuf) -> Src<'a> {
        Src { hdr, segs: m.segments(), cur: hdr, in_hdr: true, written: 0, nb_at: [std::ptr::null_mut(); 2] }
    }

    #[inline(always)]
    pub(crate) fn is_done(&self) -> bool {
        self.cur.is_empty() && !self.in_hdr
    }

    /// Fills the guest buffer at `p` (checked for `len` bytes) with what comes next.
    #[inline(always)]
    pub(crate) fn copy_into(&mut self, p: *mut u8, len: usize) {
        let mut off = 0;
        while off < len {
            if self.cur.is_empty() {
                if self.in_hdr {
                    self.in_hdr = false;
                }
                match self.segs.next() {
                    Some(s) => self.cur = s,
                    None => return,
                }
                continue;
            }
            let k = self.cur.len().min(len - off);
            if self.in_hdr && self.hdr.len() == HDR_MAX {
                // Remember where num_buffers lands, byte by byte (a header may be split).
                let hoff = self.hdr.len() - self.cur.len();
                for (j, b) in (10..12).enumerate() {
                    if b >= hoff && b < hoff + k {
                        // SAFETY: off + (b - hoff) < off + k <= len: inside the checked buffer.
                        self.nb_at[j] = unsafe { p.add(off + b - hoff) };
                    }
                }
            }
            // SAFETY: p + off .. + k is inside the buffer checked for len bytes; cur has k bytes.
            unsafe { copy_to_guest(p.add(off), self.cur.as_ptr(), k) };
            self.cur = &self.cur[k..];
            off += k;
            self.written += k;
        }
        if self.cur.is_empty() {
            // Pull the next segment now so that is_done() is exact at a buffer boundary.
            if self.in_hdr {
                self.in_hdr = false;
            }
            for s in self.segs.by_ref() {
                if !s.is_empty() {
                    self.cur = s;
                    break;
                }
            }
        }
    }

    pub(crate) fn patch_num_buffers(&self, nb: u16) {
        let b = nb.to_le_bytes();
        for (p, v) in self.nb_at.iter().zip(b) {
            if !p.is_null() {
                // SAFETY: pointers recorded inside checked guest buffers of this packet, whose
                // memory table is alive for this call.
                unsafe { copy_to_guest(*p, &v, 1) };
            }
        }
    }
}
