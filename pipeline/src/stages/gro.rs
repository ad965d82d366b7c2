//! `gro[,max=BYTES]`: generic receive offload in software — in-order TCP segments of a flow
//! within a burst become one large packet, so that a port that takes TSO packets (a vhost-user
//! guest that negotiated GUEST_TSO4/6, a TAP device with offloads) receives one packet instead of
//! dozens, and a port that cannot gets them cut again by the `tx-offload` fallback.
//!
//! Only what the packet shows is trusted; the rules follow Linux's `tcp_gro_receive` and
//! `inet_gro_receive`. A segment joins the flow's open packet only when:
//!
//! - it is TCP over IPv4 without options and not a fragment, or over IPv6 without extension
//!   headers, behind Ethernet with up to two VLAN tags, and asks for no offload itself;
//! - its sequence number is the next one expected, its acknowledgement number and window are the
//!   open packet's, and its flags are the same except PSH and FIN (CWR only on the first);
//! - its TCP options are byte for byte the same (timestamps included, as in Linux), its L2
//!   header and IP header fields (TOS / traffic class, TTL / hop limit, DF, flow label) too;
//! - its IPv4 identification is the previous one + 1, or the same for every segment with DF set
//!   (RFC 6864 atomic datagrams), the mode chosen by the second segment;
//! - it carries payload, no more than the first segment's (the MSS), and the merged IP packet
//!   stays within `max` bytes (default 65535);
//! - its checksums are good: `RX_*_CKSUM_GOOD` or `RX_L4_CKSUM_PARTIAL` from the port, else
//!   verified here (IPv4 header, and TCP over the whole segment with its pseudo-header).
//!
//! A segment of the flow that cannot join closes the open packet (so nothing of the flow is ever
//! reordered) and may start the next one. A segment with PSH or FIN, or shorter than the MSS,
//! joins and closes it; one with SYN, RST or URG never joins. Merging copies nothing: the
//! segments after the first lose their headers ([`Mbuf::adj`]) and are chained behind it.
//!
//! The merged packet keeps the first segment's headers with the total length, PSH/FIN of the
//! segments and a fresh IPv4 header checksum; it asks for TSO (`TX_TCP_SEG`, `TX_TCP_CKSUM`,
//! `TX_IPV4` + `TX_IP_CKSUM` or `TX_IPV6`, `tso_segsz` = the MSS, lengths set) and its TCP
//! checksum field holds the pseudo-header sum without the length (DPDK's TSO convention). It
//! takes the place of its first segment in the batch. Packets that merge with nothing are not
//! touched. Nothing is held across bursts, nothing is dropped.

use std::sync::Arc;

use fastpath_mempool::offload::{self, ptype};
use fastpath_mempool::{Batch, Mbuf, MAX_BURST};
use fastpath_pmd::{Ctx, Error, Spec};

use crate::checksum::{self, Sum};
use crate::parse;
use crate::stage::{Stage, StageCounters};
use crate::wire::tcp::flags::{CWR, FIN, PSH, RST, SYN, URG};
use crate::wire::{ethertype, get_u16, get_u32, ip_proto, set_u16};

/// The accepted form.
pub const FORM: &str = "gro[,max=BYTES]";

/// Named counters: segments merged into another packet, packets made of several segments,
/// segments left alone because a checksum was bad.
pub const STATS: &[&str] = &["merged", "coalesced", "bad-checksum"];
const S_MERGED: u8 = 0;
const S_COALESCED: u8 = 1;
const S_BAD_CSUM: u8 = 2;

/// Flow table slots (a power of two, more than a burst).
const TABLE: usize = 2 * MAX_BURST;
/// `state` of a position: merged into an earlier packet.
const MERGED: u16 = u16::MAX;
/// `state` of a position: not the head of a merge.
const PLAIN: u16 = u16::MAX - 1;
/// End of a follower list.
const NONE: u16 = u16::MAX;

/// The headers of one TCP segment, as GRO reads them.
#[derive(Debug, Clone, Copy, Default)]
struct Seg {
    l3: usize,
    v6: bool,
    l4: usize,
    thl: usize,
    payload: usize,
    /// The frame has bytes after the IP packet (Ethernet padding).
    padded: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    id: u16,
    df: bool,
    hash: u32,
    /// Can be merged at all (see the module doc); a segment that cannot still closes its flow.
    mergeable: bool,
}

#[inline(always)]
fn mix(h: u32, v: u32) -> u32 {
    (h ^ v).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

/// Reads the headers of a TCP segment; `None` when it is not TCP over IP (it belongs to no flow).
#[inline]
fn read_seg(m: &Mbuf) -> Option<Seg> {
    let d = m.data();
    let (et, l3, _) = parse::l2(d)?;
    let mut s = Seg { l3, ..Seg::default() };
    let ip_end;
    match et {
        ethertype::IPV4 => {
            let h = d.get(l3..l3 + 20)?;
            if h[0] >> 4 != 4 || h[9] != ip_proto::TCP {
                return None;
            }
            let ihl = (h[0] & 0x0f) as usize * 4;
            let frag = get_u16(h, 6);
            s.l4 = l3 + ihl;
            s.id = get_u16(h, 4);
            s.df = frag & 0x4000 != 0;
            s.mergeable = ihl == 20 && frag & 0x3fff == 0;
            ip_end = l3 + get_u16(h, 2) as usize;
            s.hash = mix(mix(0, get_u32(h, 12)), get_u32(h, 16));
        }
        ethertype::IPV6 => {
            let h = d.get(l3..l3 + 40)?;
            if h[0] >> 4 != 6 || h[6] != ip_proto::TCP {
                return None;
            }
            s.v6 = true;
            s.l4 = l3 + 40;
            s.mergeable = true;
            ip_end = l3 + 40 + get_u16(h, 4) as usize;
            let mut x = 0;
            for i in (8..40).step_by(4) {
                x = mix(x, get_u32(h, i));
            }
            s.hash = x;
        }
        _ => return None,
    }
    let t = d.get(s.l4..s.l4 + 20)?;
    s.hash = mix(s.hash, get_u32(t, 0));
    s.thl = (t[12] >> 4) as usize * 4;
    s.seq = get_u32(t, 4);
    s.ack = get_u32(t, 8);
    s.flags = t[13];
    s.window = get_u16(t, 14);
    let hdr_end = s.l4 + s.thl;
    if s.thl < 20 || hdr_end > d.len() || ip_end < hdr_end || ip_end > m.pkt_len() {
        s.mergeable = false;
        return Some(s);
    }
    s.payload = ip_end - hdr_end;
    s.padded = ip_end < m.pkt_len();
    s.mergeable &= m.ol_flags() & (offload::TX_SEG_MASK | offload::TX_TUNNEL_MASK) == 0
        && (!s.padded || m.nb_segs() == 1)
        && s.flags & (SYN | RST | URG) == 0;
    Some(s)
}

/// True when the checksums of `m` are known or found good.
#[inline]
fn checksums_good(m: &Mbuf, s: &Seg) -> bool {
    let f = m.ol_flags();
    if f & (offload::RX_IP_CKSUM_BAD | offload::RX_L4_CKSUM_BAD) != 0 {
        return false;
    }
    let d = m.data();
    if !s.v6 && f & offload::RX_IP_CKSUM_GOOD == 0 && checksum::sum(&d[s.l3..s.l3 + 20]) != 0xffff {
        return false;
    }
    if f & (offload::RX_L4_CKSUM_GOOD | offload::RX_L4_CKSUM_PARTIAL) != 0 {
        return true;
    }
    let len = s.thl + s.payload;
    let mut sum = Sum::new(pseudo(d, s, len as u32));
    checksum::add_chain(&mut sum, m, s.l4, len).is_some() && sum.sum() == 0xffff
}

/// Pseudo-header sum of the segment's IP header, with L4 length `len`.
fn pseudo(d: &[u8], s: &Seg, len: u32) -> u16 {
    if s.v6 {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a.copy_from_slice(&d[s.l3 + 8..s.l3 + 24]);
        b.copy_from_slice(&d[s.l3 + 24..s.l3 + 40]);
        checksum::pseudo_v6(&a, &b, ip_proto::TCP, len)
    } else {
        let w = |o: usize| [d[s.l3 + o], d[s.l3 + o + 1], d[s.l3 + o + 2], d[s.l3 + o + 3]];
        checksum::pseudo_v4(w(12), w(16), ip_proto::TCP, len)
    }
}

/// A flow seen in this burst, and its open merged packet.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// Position of the first segment.
    pos: u16,
    /// Position of the last merged segment.
    last: u16,
    /// Segments merged (the first included).
    count: u16,
    /// More segments may join.
    open: bool,
    /// Table slot pointing here.
    slot: u16,
    mss: usize,
    next_seq: u32,
    /// IP bytes of the merged packet so far.
    ip_bytes: usize,
    last_id: u16,
    /// IPv4 identification: 0 not known yet, 1 incrementing, 2 fixed.
    id_mode: u8,
    /// FIN / PSH of the merged segments.
    end_flags: u8,
    /// The first segment's headers.
    first: Seg,
}

/// The GRO stage.
pub struct Gro {
    max: usize,
    counters: Arc<StageCounters>,
    slots: Box<[Option<Mbuf>; MAX_BURST]>,
    /// Per position: the next follower of the same merged packet.
    link: Box<[u16; MAX_BURST]>,
    /// Per position: [`MERGED`], [`PLAIN`] or the index of the flow it heads.
    state: Box<[u16; MAX_BURST]>,
    /// Per position: payload bytes of a merged segment.
    payload: Box<[u32; MAX_BURST]>,
    flows: Box<[Flow; MAX_BURST]>,
    /// Flow table: `flow index + 1`, 0 for empty.
    table: Box<[u16; TABLE]>,
}

impl std::fmt::Debug for Gro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gro").field("max", &self.max).finish_non_exhaustive()
    }
}

impl Gro {
    /// A stage merging up to `max` bytes of IP packet (at most 65535).
    pub fn new(max: usize) -> Gro {
        Gro {
            max: max.min(u16::MAX as usize),
            counters: StageCounters::with_stats("gro", &[], STATS),
            slots: Box::new(std::array::from_fn(|_| None)),
            link: Box::new([NONE; MAX_BURST]),
            state: Box::new([PLAIN; MAX_BURST]),
            payload: Box::new([0; MAX_BURST]),
            flows: Box::new([Flow::default(); MAX_BURST]),
            table: Box::new([0; TABLE]),
        }
    }

    /// Builds the stage from its spec.
    pub fn from_spec(s: &mut Spec) -> Result<Gro, Error> {
        let max = s.take_num("max", 1280u32, 65535)?.unwrap_or(65535);
        s.finish(false)?;
        Ok(Gro::new(max as usize))
    }

    /// The flow of `s`, looking it up by hash and comparing addresses and ports with its head.
    fn lookup(&self, s: &Seg, d: &[u8]) -> (usize, Option<usize>) {
        let mut i = s.hash as usize & (TABLE - 1);
        loop {
            let e = self.table[i];
            if e == 0 {
                return (i, None);
            }
            let fi = e as usize - 1;
            let f = &self.flows[fi];
            if f.first.hash == s.hash && f.first.v6 == s.v6 {
                if let Some(hm) = self.slots[f.pos as usize].as_ref() {
                    if same_flow(hm.data(), &f.first, d, s) {
                        return (i, Some(fi));
                    }
                }
            }
            i = (i + 1) & (TABLE - 1);
        }
    }

    /// True when `s` (frame `d`, mbuf `m`) can join flow `fi`.
    fn can_join(&self, fi: usize, m: &Mbuf, s: &Seg) -> bool {
        let f = &self.flows[fi];
        let h = &f.first;
        if !f.open || !s.mergeable || s.payload == 0 || s.payload > f.mss {
            return false;
        }
        if s.seq != f.next_seq || s.ack != h.ack || s.window != h.window || s.thl != h.thl || s.l3 != h.l3 {
            return false;
        }
        if s.flags & !(PSH | FIN) != h.flags & !CWR {
            return false;
        }
        if f.ip_bytes + s.payload > self.max {
            return false;
        }
        let Some(hm) = self.slots[f.pos as usize].as_ref() else { return false };
        let (hd, d) = (hm.data(), m.data());
        // L2 header, and the TCP options.
        if !same(&hd[..h.l3], &d[..s.l3]) || !same(&hd[h.l4 + 20..h.l4 + h.thl], &d[s.l4 + 20..s.l4 + s.thl]) {
            return false;
        }
        if s.v6 {
            // Version, traffic class, flow label; hop limit.
            if hd[h.l3..h.l3 + 4] != d[s.l3..s.l3 + 4] || hd[h.l3 + 7] != d[s.l3 + 7] {
                return false;
            }
        } else {
            // TOS, TTL and DF must match; the ID must follow the flow's rule.
            if hd[h.l3 + 1] != d[s.l3 + 1] || hd[h.l3 + 8] != d[s.l3 + 8] || h.df != s.df {
                return false;
            }
            let inc = s.id == f.last_id.wrapping_add(1);
            let fixed = s.df && s.id == f.last_id;
            let ok = match f.id_mode {
                0 => inc || fixed,
                1 => inc,
                _ => fixed,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Byte equality of short header slices, eight bytes at a time (no call to `memcmp`).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if u64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
            != u64::from_ne_bytes([q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]])
        {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

/// Same addresses and ports (the flow key).
#[inline]
fn same_flow(hd: &[u8], h: &Seg, d: &[u8], s: &Seg) -> bool {
    let (a, b) = if s.v6 { (8, 40) } else { (12, 20) };
    same(&hd[h.l3 + a..h.l3 + b], &d[s.l3 + a..s.l3 + b]) && hd[h.l4..h.l4 + 4] == d[s.l4..s.l4 + 4]
}

impl Stage for Gro {
    fn name(&self) -> &'static str {
        "gro"
    }

    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let n = batch.len();
        self.counters.packets.add(n as u64);
        if n < 2 {
            return;
        }
        for (i, m) in batch.drain_all().enumerate() {
            self.slots[i] = Some(m);
            self.state[i] = PLAIN;
            self.link[i] = NONE;
        }
        let nflows = self.merge(n);
        // Rebuild the batch: merged packets at the place of their first segment.
        for q in 0..n {
            let st = self.state[q];
            // A merged segment's slot was emptied by its first segment's `finish` (earlier).
            let Some(mut m) = self.slots[q].take() else { continue };
            if st != PLAIN && st != MERGED && self.flows[st as usize].count > 1 {
                self.finish(st as usize, &mut m, ctx);
            }
            // The batch was drained: there is room for every packet.
            let _ = batch.push(m);
        }
        for f in &self.flows[..nflows] {
            self.table[f.slot as usize] = 0;
        }
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

impl Gro {
    /// Decides, in order, which segment joins which: fills `state`, `link` and the flows;
    /// returns how many flows were started.
    fn merge(&mut self, n: usize) -> usize {
        let mut nflows = 0usize;
        // Known-good checksums per position (each verified at most once).
        let mut verified = [false; MAX_BURST];
        for q in 0..n {
            let Some(m) = self.slots[q].as_ref() else { continue };
            let Some(s) = read_seg(m) else { continue };
            let (slot, found) = self.lookup(&s, m.data());
            if let Some(fi) = found {
                if self.can_join(fi, m, &s) {
                    let head = self.flows[fi].pos as usize;
                    let head_ok = verified[head] || {
                        let hs = self.flows[fi].first;
                        self.slots[head].as_ref().is_some_and(|hm| checksums_good(hm, &hs))
                    };
                    verified[head] = head_ok;
                    let seg_ok = head_ok && checksums_good(m, &s);
                    if seg_ok {
                        let f = &mut self.flows[fi];
                        self.link[f.last as usize] = q as u16;
                        f.last = q as u16;
                        f.count += 1;
                        f.next_seq = f.next_seq.wrapping_add(s.payload as u32);
                        f.ip_bytes += s.payload;
                        if f.id_mode == 0 && !s.v6 {
                            f.id_mode = if s.id == f.last_id { 2 } else { 1 };
                        }
                        f.last_id = s.id;
                        f.end_flags |= s.flags & (FIN | PSH);
                        if s.payload < f.mss || s.flags & (FIN | PSH) != 0 {
                            f.open = false;
                        }
                        self.state[q] = MERGED;
                        self.payload[q] = s.payload as u32;
                        self.counters.stat(S_MERGED, 1);
                        continue;
                    }
                    self.counters.stat(S_BAD_CSUM, 1);
                    self.flows[fi].open = false;
                    if head_ok {
                        // The segment itself is bad: it goes on as it is, after what came
                        // before it, and starts nothing.
                        continue;
                    }
                }
                // It cannot join: the open packet is closed, so that nothing overtakes it.
                self.flows[fi].open = false;
            }
            // Can it start a packet?
            let ip_bytes = s.l4 + s.thl + s.payload - s.l3;
            if !s.mergeable || s.payload == 0 || s.flags & (FIN | PSH) != 0 || ip_bytes >= self.max || !m.is_writable()
            {
                continue;
            }
            let fi = nflows;
            nflows += 1;
            self.flows[fi] = Flow {
                pos: q as u16,
                last: q as u16,
                count: 1,
                open: true,
                slot: slot as u16,
                mss: s.payload,
                next_seq: s.seq.wrapping_add(s.payload as u32),
                ip_bytes,
                last_id: s.id,
                id_mode: 0,
                end_flags: 0,
                first: s,
            };
            self.table[slot] = fi as u16 + 1;
            self.state[q] = fi as u16;
        }
        nflows
    }

    /// Chains the followers of flow `fi` behind its head `m` and fixes the head's headers.
    fn finish(&mut self, fi: usize, m: &mut Mbuf, ctx: &mut Ctx) {
        let f = self.flows[fi];
        let h = f.first;
        let hdr = h.l4 + h.thl;
        // Collect the followers, then chain them from the back (each link is O(1) that way).
        let mut order = [0u16; MAX_BURST];
        let mut k = 0;
        let mut p = self.link[f.pos as usize];
        while p != NONE {
            order[k] = p;
            k += 1;
            p = self.link[p as usize];
        }
        let mut tail: Option<Mbuf> = None;
        for &p in order[..k].iter().rev() {
            let Some(mut s) = self.slots[p as usize].take() else { continue };
            let payload = self.payload[p as usize] as usize;
            // Headers are in the first segment (checked by read_seg).
            s.adj(hdr);
            if s.nb_segs() == 1 && s.data_len() > payload {
                // Ethernet padding behind the IP packet.
                s.trim(s.data_len() - payload);
            }
            if s.data_len() == 0 {
                // The first segment held only headers.
                if let Some(rest) = s.split_first() {
                    ctx.free(std::mem::replace(&mut s, rest));
                }
            }
            if let Some(t) = tail.take() {
                if let Err(t) = s.chain(t) {
                    // More than 65535 segments cannot come from one burst.
                    ctx.free(t);
                }
            }
            tail = Some(s);
        }
        if m.nb_segs() == 1 && m.data_len() > hdr + h.payload {
            m.trim(m.data_len() - hdr - h.payload);
        }
        if let Some(t) = tail {
            if let Err(t) = m.chain(t) {
                ctx.free(t);
                return;
            }
        }
        self.counters.stat(S_COALESCED, 1);
        let total = f.ip_bytes;
        let d = m.data_mut();
        if h.v6 {
            set_u16(d, h.l3 + 4, (total - 40) as u16);
        } else {
            set_u16(d, h.l3 + 2, total as u16);
            set_u16(d, h.l3 + 10, 0);
            let c = checksum::checksum(&d[h.l3..h.l3 + 20]);
            set_u16(d, h.l3 + 10, c);
        }
        d[h.l4 + 13] |= f.end_flags;
        // TSO convention: the pseudo-header sum without the length.
        let ph = pseudo(d, &h, 0);
        set_u16(d, h.l4 + 16, ph);
        let mut fl = m.ol_flags()
            & !(offload::RX_L4_CKSUM_BAD
                | offload::RX_L4_CKSUM_PARTIAL
                | offload::RX_IP_CKSUM_BAD
                | offload::TX_CKSUM_MASK
                | offload::TX_SEG_MASK);
        fl |= offload::TX_TCP_SEG | offload::TX_TCP_CKSUM | offload::RX_L4_CKSUM_GOOD;
        fl |= if h.v6 { offload::TX_IPV6 } else { offload::TX_IPV4 | offload::TX_IP_CKSUM | offload::RX_IP_CKSUM_GOOD };
        m.set_ol_flags(fl);
        m.set_tso_segsz(f.mss as u16);
        m.set_l2_len(h.l3 as u8);
        m.set_l3_len((h.l4 - h.l3) as u16);
        m.set_l4_len(h.thl as u8);
        m.set_outer_l2_len(0);
        m.set_outer_l3_len(0);
        let l2t = if h.l3 > 14 { ptype::L2_ETHER_VLAN } else { ptype::L2_ETHER };
        let l3t = if h.v6 { ptype::L3_IPV6 } else { ptype::L3_IPV4 };
        m.set_packet_type(l2t | l3t | ptype::L4_TCP);
    }
}
