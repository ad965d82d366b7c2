//! The segmentation engine behind the `lso` stage and the `tx-offload` fallback: TCP
//! segmentation (TSO) and UDP segmentation (USO) in software, plain or inside VXLAN, GENEVE and
//! NVGRE tunnels.
//!
//! # What a segment is made of
//!
//! Every segment gets a fresh mbuf (from the lcore's cache of the packet's own pool) holding a
//! copy of the packet's headers, outer and inner, patched for the segment:
//!
//! - inner (or only) IPv4: total length, identification `id + i`, header checksum; IPv6: payload
//!   length (extension headers are kept, and counted in it);
//! - TCP: sequence number `seq + i * mss`, CWR on the first segment only, FIN and PSH on the last
//!   only, options copied as they are, checksum; UDP (USO): length and checksum of each datagram;
//! - outer IPv4: total length, identification `id + i`, header checksum; outer IPv6: payload
//!   length; outer UDP: length, and its checksum when the packet had one (a non-zero field, or a
//!   `TX_OUTER_UDP_CKSUM` request), else 0; the source port is copied, so the flow keeps it.
//!
//! The payload is attached without a copy when the output port takes chains
//! ([`Offloads::TX_MULTI_SEGS`]): the packet's chain is taken apart segment by segment; a segment
//! whose bytes all go to one output segment is moved there (its window narrowed with
//! [`Mbuf::set_window`]), one whose bytes are shared by two output segments is given to the first
//! as an indirect mbuf ([`fastpath_mempool::PoolCache::clone_shallow`] + `set_window`) and moved
//! to the last. Where the port needs one contiguous frame, the payload is copied behind the
//! headers. Copies are counted (`copied-bytes` against `out-bytes`).
//!
//! # Checksums
//!
//! Checksums the output port computes itself (its [`Offloads`]: `TX_IPV4_CKSUM`, `TX_TCP_CKSUM`,
//! `TX_UDP_CKSUM`, `TX_OUTER_IPV4_CKSUM`, `TX_OUTER_UDP_CKSUM`) are left as requests in the
//! segment's `ol_flags` with DPDK's conventions: an IPv4 checksum field holds 0, an L4 checksum
//! field the pseudo-header sum with the L4 length. The rest are computed here. Inside a tunnel
//! the inner checksums are always computed here, because the outer UDP checksum covers them.
//!
//! # Where the headers are
//!
//! From the mbuf's metadata when it has them (DPDK's model): a tunnel flag (`TX_TUNNEL_*`, set by
//! an encap stage) means `outer_l2_len`, `outer_l3_len`, and an `l2_len` that spans the outer UDP
//! header, the tunnel header and the inner L2 header; otherwise `TX_IPV4` / `TX_IPV6` with
//! `l2_len`. Without them, from the packet-type parser ([`crate::parse`]), which also finds
//! tunnels that arrive already encapsulated. Either way every header is checked against the bytes
//! (versions, protocols, header lengths, IP and UDP lengths against each other and against the
//! packet) before anything is cut.
//!
//! # Emitting more than was received
//!
//! One 64 KiB packet becomes 46 segments at MSS 1448, so a batch cannot hold the output of a
//! burst. The engine takes the packets that need work out of the batch into its own backlog
//! (an inline [`Batch`], in reverse so that the next one pops off the end), then fills the batch
//! with output, in input order, until it is full; the rest comes out through
//! [`crate::Stage::resume`], batch after batch. Nothing is allocated on the heap.

use std::sync::Arc;

use fastpath_mempool::offload::{self, ptype};
use fastpath_mempool::{Batch, Mbuf, Mempool, PoolCache};
use fastpath_pmd::{Ctx, LiveOffloads, Offloads, PortInfo};

use crate::checksum::{self, Sum};
use crate::parse::{self, TunnelPorts};
use crate::stage::{Stage, StageCounters};
use crate::wire::tcp::flags::{CWR, FIN, PSH};
use crate::wire::{ethertype, get_u16, get_u32, ip_proto, set_u16, set_u32};

/// Largest header stack (outer and inner, through the L4 header) a packet may have.
pub const MAX_HDR: usize = 512;
/// Bytes of the next input segment prefetched (the hardware prefetcher streams the rest).
const PREFETCH_BYTES: usize = 512;
/// Smallest segment payload accepted (from a spec or a packet's `tso_segsz`).
pub const MIN_SEGSZ: usize = 64;

/// Drop reasons of the segmenting stages, by code.
pub const REASONS: &[&str] = &[
    "malformed",
    "fragment",
    "not-segmentable",
    "bad-segment-size",
    "headers-too-long",
    "no-mbuf",
    "segment-too-big",
    "shared-buffer",
    "overflow",
];
/// Headers that cannot be read, or lengths that disagree with each other or the packet.
pub const E_MALFORMED: u8 = 0;
/// An IP fragment (no L4 header to segment by).
pub const E_FRAGMENT: u8 = 1;
/// Larger than the MTU but not TCP (nor UDP asking for USO): it cannot be cut.
pub const E_NOT_SEGMENTABLE: u8 = 2;
/// `tso_segsz` below [`MIN_SEGSZ`], or an MTU that leaves no room for payload.
pub const E_SEGSZ: u8 = 3;
/// More than [`MAX_HDR`] bytes of headers.
pub const E_HDR_LEN: u8 = 4;
/// The pool ran dry: the rest of the packet is dropped, what was built is freed.
pub const E_NO_MBUF: u8 = 5;
/// A segment does not fit one mbuf, and the output port takes no chains.
pub const E_SEG_TOO_BIG: u8 = 6;
/// A checksum had to be written into a buffer shared with a clone, and no copy could be made.
pub const E_SHARED: u8 = 7;
/// The backlog was full (a caller ran the pipeline again without draining `resume`).
pub const E_OVERFLOW: u8 = 8;

/// Named counters of the segmenting stages, by code.
pub const STATS: &[&str] = &["segmented", "segments", "out-bytes", "copied-bytes", "checksummed"];
/// Packets cut into segments.
pub const S_SEGMENTED: u8 = 0;
/// Segments made.
pub const S_SEGMENTS: u8 = 1;
/// Bytes of the segments made (headers and payload).
pub const S_OUT_BYTES: u8 = 2;
/// Bytes copied to make them (headers always; payload when the output needs one frame).
pub const S_COPIED: u8 = 3;
/// Packets whose checksum requests were completed in place (tx-offload).
pub const S_CHECKSUMMED: u8 = 4;

/// What a stage asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The `lso` stage: serve every TSO/USO request, and also cut TCP packets whose payload
    /// exceeds `mss`, and packets whose L3 size exceeds `mtu`.
    Lso {
        /// Largest TCP payload per segment.
        mss: Option<u16>,
        /// Largest L3 packet (the outermost IP header and what follows).
        mtu: Option<u16>,
    },
    /// The `tx-offload` fallback: do in software what the output port cannot do itself.
    TxOffload,
}

/// Outer headers of a tunnel packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// Offset of the outer IP header.
    pub l3: usize,
    /// Its length (with options / extension headers).
    pub l3_len: usize,
    /// IPv6.
    pub v6: bool,
    /// The tunnel runs over UDP (VXLAN, GENEVE), whose header follows the outer IP header.
    pub udp: bool,
    /// The tunnel's `TX_TUNNEL_*` flag.
    pub kind: u64,
}

/// Where the headers of a TCP or UDP packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Outer headers, for a tunnel.
    pub outer: Option<Outer>,
    /// Offset of the (inner) IP header.
    pub l3: usize,
    /// Its length.
    pub l3_len: usize,
    /// IPv6.
    pub v6: bool,
    /// Offset of the L4 header.
    pub l4: usize,
    /// Its length (TCP with options, or 8).
    pub l4_len: usize,
    /// [`ip_proto::TCP`] or [`ip_proto::UDP`].
    pub proto: u8,
    /// End of the (inner) IP packet: what follows is Ethernet padding.
    pub end: usize,
}

impl Layout {
    /// Bytes of headers, outer and inner.
    pub fn hdr_len(&self) -> usize {
        self.l4 + self.l4_len
    }

    /// Offset of the outermost IP header.
    pub fn l3_outermost(&self) -> usize {
        self.outer.map_or(self.l3, |o| o.l3)
    }

    /// Payload bytes (behind the L4 header).
    pub fn payload(&self) -> usize {
        self.end - self.hdr_len()
    }
}

/// Why [`analyze`] found nothing to segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotL4 {
    /// Not TCP or UDP over IP (ARP, ICMP, ...): nothing wrong with it.
    Other,
    /// Broken: the drop reason.
    Bad(u8),
}

/// The IP header at `d[at..]` whose first nibble gives the version: (L3 info, ethertype).
fn ip_at(d: &[u8], at: usize) -> Result<parse::L3, NotL4> {
    let b = d.get(at..).ok_or(NotL4::Bad(E_MALFORMED))?;
    let et = match b.first().map(|v| v >> 4) {
        Some(4) => ethertype::IPV4,
        Some(6) => ethertype::IPV6,
        _ => return Err(NotL4::Bad(E_MALFORMED)),
    };
    parse::l3(b, et).ok_or(NotL4::Bad(E_MALFORMED))
}

/// End offset of the IP packet at `at` (total length / payload length), checked to fit.
fn ip_end(d: &[u8], at: usize, l: &parse::L3, pkt_len: usize) -> Result<usize, NotL4> {
    let end = if l.v6 { at + 40 + get_u16(d, at + 4) as usize } else { at + get_u16(d, at + 2) as usize };
    if end > pkt_len || end < at + l.len {
        return Err(NotL4::Bad(E_MALFORMED));
    }
    Ok(end)
}

/// Finds and checks the headers of `m`, whose first bytes are `d` (at least every header, up
/// to [`MAX_HDR`] bytes).
pub fn analyze(m: &Mbuf, d: &[u8], ports: &TunnelPorts) -> Result<Layout, NotL4> {
    let f = m.ol_flags();
    let pkt_len = m.pkt_len();
    // Offsets: (outer: (l3, kind)), inner l3.
    let (outer, l3) = if f & offload::TX_TUNNEL_MASK != 0 {
        let (ol3, ol3_len) = (m.outer_l2_len() as usize, m.outer_l3_len() as usize);
        if ol3 < 14 || ol3_len < 20 {
            return Err(NotL4::Bad(E_MALFORMED));
        }
        (Some((ol3, f & offload::TX_TUNNEL_MASK)), ol3 + ol3_len + m.l2_len() as usize)
    } else if f & (offload::TX_IPV4 | offload::TX_IPV6) != 0 && m.l2_len() != 0 {
        (None, m.l2_len() as usize)
    } else {
        let p = parse::parse_with(d, ports);
        if p.ptype & ptype::L3_MASK == 0 {
            return Err(NotL4::Other);
        }
        if p.is_tunnel() {
            if p.ptype & ptype::INNER_L3_MASK == 0 {
                return Err(NotL4::Other);
            }
            let kind = match p.ptype & ptype::TUNNEL_MASK {
                ptype::TUNNEL_VXLAN => offload::TX_TUNNEL_VXLAN,
                ptype::TUNNEL_GENEVE => offload::TX_TUNNEL_GENEVE,
                _ => offload::TX_TUNNEL_GRE,
            };
            (Some((p.l3_offset(), kind)), p.inner_offset() + p.lens.inner_l2_len as usize)
        } else {
            (None, p.l3_offset())
        }
    };
    let inner = ip_at(d, l3)?;
    if inner.fragment {
        return Err(NotL4::Bad(E_FRAGMENT));
    }
    let l4 = l3 + inner.len;
    let (l4t, l4_len) = parse::l4(&d[l4.min(d.len())..], &inner);
    let proto = match l4t {
        ptype::L4_TCP => ip_proto::TCP,
        ptype::L4_UDP => ip_proto::UDP,
        _ if matches!(inner.proto, ip_proto::TCP | ip_proto::UDP) => return Err(NotL4::Bad(E_MALFORMED)),
        _ => return Err(NotL4::Other),
    };
    if l4 + l4_len > MAX_HDR {
        return Err(NotL4::Bad(E_HDR_LEN));
    }
    let end = ip_end(d, l3, &inner, pkt_len)?;
    if end < l4 + l4_len {
        return Err(NotL4::Bad(E_MALFORMED));
    }
    let outer = match outer {
        None => None,
        Some((ol3, kind)) => {
            let o = ip_at(d, ol3)?;
            if o.fragment {
                return Err(NotL4::Bad(E_FRAGMENT));
            }
            let udp = kind != offload::TX_TUNNEL_GRE;
            let want = if udp { ip_proto::UDP } else { ip_proto::GRE };
            let ol4 = ol3 + o.len;
            // The outer headers must end where the inner frame starts, and the outer lengths
            // must cover exactly the inner packet.
            if o.proto != want || ol4 + if udp { 8 } else { 4 } > l3 || ip_end(d, ol3, &o, pkt_len)? != end {
                return Err(NotL4::Bad(E_MALFORMED));
            }
            if f & offload::TX_TUNNEL_MASK != 0 && m.outer_l3_len() as usize != o.len {
                return Err(NotL4::Bad(E_MALFORMED));
            }
            if udp && ol4 + get_u16(d, ol4 + 4) as usize != end {
                return Err(NotL4::Bad(E_MALFORMED));
            }
            Some(Outer { l3: ol3, l3_len: o.len, v6: o.v6, udp, kind })
        }
    };
    Ok(Layout { outer, l3, l3_len: inner.len, v6: inner.v6, l4, l4_len, proto, end })
}

/// The per-packet metadata every segment inherits.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    port: u16,
    queue: u16,
    out_port: u16,
    packet_type: u32,
    rss_hash: u32,
    vlan_tci: u16,
    vlan_tci_outer: u16,
    timestamp: u64,
    userdata: u64,
}

impl Meta {
    fn of(m: &Mbuf) -> Meta {
        Meta {
            port: m.port(),
            queue: m.queue(),
            out_port: m.out_port(),
            packet_type: m.packet_type(),
            rss_hash: m.rss_hash(),
            vlan_tci: m.vlan_tci(),
            vlan_tci_outer: m.vlan_tci_outer(),
            timestamp: m.timestamp(),
            userdata: m.userdata(),
        }
    }

    fn apply(&self, m: &mut Mbuf, ol_flags: u64) {
        m.set_ol_flags(ol_flags);
        m.set_port(self.port);
        m.set_queue(self.queue);
        m.set_out_port(self.out_port);
        m.set_packet_type(self.packet_type);
        m.set_rss_hash(self.rss_hash);
        m.set_vlan_tci(self.vlan_tci);
        m.set_vlan_tci_outer(self.vlan_tci_outer);
        m.set_timestamp(self.timestamp);
        m.set_userdata(self.userdata);
    }
}

/// How to cut one packet.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    lay: Layout,
    hdr_len: usize,
    payload: usize,
    segsz: usize,
    nsegs: usize,
    chain: bool,
    /// Which checksums are computed here (the rest are requested of the port).
    sw_ip: bool,
    sw_l4: bool,
    sw_outer_ip: bool,
    outer_udp_csum: bool,
    sw_outer_udp: bool,
    ip_sum: u16,
    ip_id: u16,
    seq: u32,
    tcp_flags: u8,
    pseudo: u16,
    outer_ip_sum: u16,
    outer_ip_id: u16,
    outer_pseudo: u16,
    /// `ol_flags` of every segment.
    flags: u64,
    meta: Meta,
}

/// The packet being cut, and where its payload has been read to.
#[derive(Debug)]
struct Active {
    plan: Plan,
    /// The input segment being read (a single segment).
    seg: Option<Mbuf>,
    /// The input segments after it (a chain).
    rest: Option<Mbuf>,
    /// Bytes of `seg` already used.
    off: usize,
    /// Header bytes still to skip before the payload (they may span input segments).
    skip: usize,
    /// Next output segment.
    next: usize,
}

impl Active {
    /// Moves to the next input segment, freeing the one used up.
    fn advance(&mut self, cache: &mut PoolCache) {
        if let Some(s) = self.seg.take() {
            cache.free(s);
        }
        self.next_input();
    }

    /// Takes the next input segment off `rest`. Input is often cold (written by a device or
    /// another core): the data of the segment after it and the header of the one after that
    /// are prefetched, so that neither the chain walk nor the payload waits on memory.
    #[inline(always)]
    fn next_input(&mut self) {
        self.seg = self.rest.take();
        if let Some(s) = self.seg.as_mut() {
            self.rest = s.split_first();
        }
        self.off = 0;
        if let Some(r) = self.rest.as_ref() {
            r.prefetch_data(PREFETCH_BYTES);
            r.prefetch_next();
        }
    }

    /// Skips the header bytes left in front of the payload, freeing segments that held only
    /// headers.
    fn skip_headers(&mut self, cache: &mut PoolCache) {
        while self.skip > 0 {
            let Some(seg) = self.seg.as_ref() else { return };
            let left = seg.data_len() - self.off;
            if self.skip < left || (self.skip == left && self.rest.is_none()) {
                self.off += self.skip;
                self.skip = 0;
                return;
            }
            self.skip -= left;
            self.advance(cache);
        }
    }

    /// Attaches `need` payload bytes to `out` as moved or indirect segments, summing them.
    fn attach(&mut self, out: &mut Mbuf, mut need: usize, cache: &mut PoolCache, sum: &mut Sum) -> Result<(), u8> {
        while need > 0 {
            let Some(seg) = self.seg.as_ref() else { return Err(E_MALFORMED) };
            let avail = seg.data_len() - self.off;
            if avail == 0 {
                self.advance(cache);
                continue;
            }
            let n = avail.min(need);
            let start = seg.data_off() + self.off;
            let piece = if n == avail {
                // Every byte left in this input segment goes here: move it.
                let mut p = self.seg.take().ok_or(E_MALFORMED)?;
                self.next_input();
                p.set_window(start, n);
                p
            } else {
                // Later output segments need the rest of it: share it.
                let mut p = cache.clone_shallow(seg).ok_or(E_NO_MBUF)?;
                p.set_window(start, n);
                self.off += n;
                p
            };
            sum.add_bytes(piece.data());
            out.chain(piece).map_err(|p| {
                cache.free(p);
                E_MALFORMED
            })?;
            need -= n;
        }
        Ok(())
    }

    /// Copies `dst.len()` payload bytes into `dst`; returns their sum (as if they started at an
    /// even offset), made while copying.
    fn copy(&mut self, dst: &mut [u8], cache: &mut PoolCache) -> Result<u16, u8> {
        let mut done = 0;
        let mut acc = 0u16;
        while done < dst.len() {
            let Some(seg) = self.seg.as_ref() else { return Err(E_MALFORMED) };
            let src = &seg.data()[self.off..];
            if src.is_empty() {
                self.advance(cache);
                continue;
            }
            let n = src.len().min(dst.len() - done);
            let mut s = checksum::copy_sum(&mut dst[done..done + n], &src[..n]);
            if done & 1 == 1 {
                s = s.swap_bytes();
            }
            acc = checksum::add(acc, s);
            self.off += n;
            done += n;
        }
        Ok(acc)
    }

    /// Frees whatever input is left (the Ethernet padding, or everything after a failure).
    fn release(&mut self, cache: &mut PoolCache) {
        if let Some(s) = self.seg.take() {
            cache.free(s);
        }
        if let Some(r) = self.rest.take() {
            cache.free(r);
        }
    }
}

/// The engine: a backlog of packets to look at, the packet being cut, and what it needs to
/// know about the ports.
pub struct Segmenter {
    mode: Mode,
    caps: PortCaps,
    ports: TunnelPorts,
    backlog: Batch,
    active: Option<Active>,
    pool: Option<Mempool>,
    tmpl: [u8; MAX_HDR],
    counters: Arc<StageCounters>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("mode", &self.mode)
            .field("backlog", &self.backlog.len())
            .field("active", &self.active.is_some())
            .finish()
    }
}

/// A stage around the engine: `lso` ([`crate::stages::lso`]) or `tx-offload`
/// ([`crate::stages::txoffload`]).
#[derive(Debug)]
pub struct SegmentStage {
    name: &'static str,
    engine: Segmenter,
}

impl SegmentStage {
    /// A stage named `name` running the engine in `mode` for packets going to `ports`.
    pub fn new(name: &'static str, mode: Mode, ports: &[PortInfo]) -> SegmentStage {
        let counters = StageCounters::with_stats(name, REASONS, STATS);
        SegmentStage { name, engine: Segmenter::new(mode, ports, counters) }
    }

    /// Room for ports with ids below `slots`, so that [`SegmentStage::set_port`] allocates
    /// nothing on an lcore.
    pub fn reserve_ports(&mut self, slots: usize) {
        self.engine.caps.reserve(slots);
    }

    /// What port `id` can do from now on (a port plugged or unplugged while the stage runs);
    /// gives back the live offloads it replaced, to be dropped off the lcore.
    pub fn set_port(&mut self, id: u16, offloads: Offloads, live: Option<LiveOffloads>) -> Option<LiveOffloads> {
        self.engine.caps.set(id, offloads, live)
    }

    /// The stage's table of what each port can do, read again from the ports whose peer
    /// decides it (for a caller that decides by the same table, e.g. where to merge for TSO).
    pub fn refreshed_caps(&mut self) -> &PortCaps {
        self.engine.caps.refresh();
        &self.engine.caps
    }
}

/// The offloads of each port by id (ports not listed can do nothing), refreshed once per burst
/// of work from the ports whose peer decides them (a vhost-user guest's negotiation).
#[derive(Debug, Default)]
pub struct PortCaps {
    caps: Vec<Offloads>,
    live: Vec<(usize, LiveOffloads)>,
}

impl PortCaps {
    /// The table of `ports`; a port with live offloads starts at what it can do at best.
    pub fn new(ports: &[PortInfo]) -> PortCaps {
        PortCaps {
            caps: capability_table(ports).into_vec(),
            live: ports.iter().filter_map(|p| Some((p.id as usize, p.live.clone()?))).collect(),
        }
    }

    /// Room for ports with ids below `slots` (so that [`PortCaps::set`] allocates nothing).
    pub fn reserve(&mut self, slots: usize) {
        if self.caps.len() < slots {
            self.caps.resize(slots, Offloads::NONE);
        }
        self.live.reserve(slots.saturating_sub(self.live.len()));
    }

    /// Reads the live offloads again.
    #[inline]
    pub fn refresh(&mut self) {
        for (id, l) in self.live.iter() {
            if let Some(c) = self.caps.get_mut(*id) {
                *c = l.get();
            }
        }
    }

    /// What port `port` can do.
    #[inline(always)]
    pub fn get(&self, port: u16) -> Offloads {
        self.caps.get(port as usize).copied().unwrap_or(Offloads::NONE)
    }

    /// Sets what port `id` can do (NONE and no live offloads for a port taken out); gives back
    /// the live offloads it replaced. Allocates nothing for an id below the reserved slots.
    pub fn set(&mut self, id: u16, offloads: Offloads, live: Option<LiveOffloads>) -> Option<LiveOffloads> {
        let i = id as usize;
        if self.caps.len() <= i {
            self.caps.resize(i + 1, Offloads::NONE);
        }
        self.caps[i] = offloads;
        let old = self.live.iter().position(|(p, _)| *p == i).map(|k| self.live.swap_remove(k).1);
        if let Some(l) = live {
            self.live.push((i, l));
        }
        old
    }
}

impl Stage for SegmentStage {
    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        self.engine.process(batch, ctx)
    }

    fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        self.engine.resume(batch, ctx)
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.engine.counters
    }
}

/// The capability table: `Offloads` by port id (ports not listed can do nothing); a port with
/// live offloads starts at what it can do at best and is refreshed per burst.
pub fn capability_table(ports: &[PortInfo]) -> Box<[Offloads]> {
    let n = ports.iter().map(|p| p.id as usize + 1).max().unwrap_or(0);
    let mut t = vec![Offloads::NONE; n];
    for p in ports {
        t[p.id as usize] = p.offloads;
    }
    t.into_boxed_slice()
}

/// What the engine does with one packet.
enum Decision {
    /// Send it on as it is (or as completed in place).
    Pass,
    /// Drop it, for this reason.
    Drop(u8),
    /// Cut it.
    Segment(Plan),
}

impl Segmenter {
    /// An engine for `mode`, sending to the ports `ports`, its counters named after `stage`.
    pub fn new(mode: Mode, ports: &[PortInfo], counters: Arc<StageCounters>) -> Segmenter {
        Segmenter {
            mode,
            caps: PortCaps::new(ports),
            ports: TunnelPorts::default(),
            backlog: Batch::new(),
            active: None,
            pool: None,
            tmpl: [0; MAX_HDR],
            counters,
        }
    }

    #[inline(always)]
    fn caps(&self, port: u16) -> Offloads {
        self.caps.get(port)
    }

    /// A cheap look at the mbuf alone: false means it certainly needs nothing.
    #[inline(always)]
    fn wants(&self, m: &Mbuf) -> bool {
        let f = m.ol_flags();
        match self.mode {
            Mode::Lso { mss, mtu } => {
                f & offload::TX_SEG_MASK != 0
                    // The smallest TCP packet: Ethernet, IPv4 and TCP without options.
                    || mss.is_some_and(|s| m.pkt_len() > s as usize + 54)
                    || mtu.is_some_and(|s| m.pkt_len() > s as usize + 14)
            }
            Mode::TxOffload => f & (offload::TX_SEG_MASK | offload::TX_CKSUM_MASK) != 0,
        }
    }

    /// Processes a batch: packets that need nothing stay; from the first that may need work on,
    /// everything goes through the backlog, and the batch is refilled with output in order.
    #[inline]
    pub fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        self.counters.packets.add(batch.len() as u64);
        if self.mode == Mode::TxOffload {
            // The common case, nothing asked: one OR over the flags, no branch per packet.
            let any = batch.iter().fold(0, |a, m| a | m.ol_flags());
            if any & (offload::TX_SEG_MASK | offload::TX_CKSUM_MASK) == 0 {
                return;
            }
        }
        let Some(first) = batch.iter().position(|m| self.wants(m)) else { return };
        while batch.len() > first {
            let Some(m) = batch.pop() else { break };
            if let Err(m) = self.backlog.push(m) {
                self.counters.dropped(E_OVERFLOW, 1);
                ctx.free(m);
            }
        }
        // Popped from the back and pushed, the first input is now on top of the backlog.
        self.fill(batch, ctx);
    }

    /// Hands out more held output (see [`crate::Stage::resume`]).
    pub fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        if self.active.is_none() && self.backlog.is_empty() {
            return false;
        }
        self.fill(batch, ctx);
        true
    }

    fn fill(&mut self, out: &mut Batch, ctx: &mut Ctx) {
        // What ports with live offloads (a vhost-user guest) take now: once per burst of work.
        self.caps.refresh();
        while out.remaining_capacity() > 0 {
            if self.active.is_some() {
                self.emit(out, ctx);
                continue;
            }
            let Some(mut m) = self.backlog.pop() else { return };
            if !self.wants(&m) {
                // Room was checked by the loop condition.
                let _ = out.push(m);
                continue;
            }
            match self.decide(&mut m, ctx) {
                Decision::Pass => {
                    let _ = out.push(m);
                }
                Decision::Drop(r) => {
                    self.counters.dropped(r, 1);
                    ctx.free(m);
                }
                Decision::Segment(plan) => self.start(plan, m),
            }
        }
    }

    /// Copies the first bytes of `m` (every header) into the template buffer; returns how many.
    fn read_headers(&mut self, m: &Mbuf) -> usize {
        let n = m.pkt_len().min(MAX_HDR);
        m.read_at(0, &mut self.tmpl[..n]);
        n
    }

    fn decide(&mut self, m: &mut Mbuf, ctx: &mut Ctx) -> Decision {
        match self.mode {
            Mode::Lso { mss, mtu } => self.decide_lso(m, mss, mtu),
            Mode::TxOffload => self.decide_tx(m, ctx),
        }
    }

    fn decide_lso(&mut self, m: &Mbuf, mss: Option<u16>, mtu: Option<u16>) -> Decision {
        let f = m.ol_flags();
        let req = f & offload::TX_SEG_MASK;
        let n = self.read_headers(m);
        let lay = match analyze(m, &self.tmpl[..n], &self.ports) {
            Ok(l) => l,
            Err(e) => {
                let l3 = parse::l2(&self.tmpl[..n]).map_or(14, |l| l.1);
                let too_big = mtu.is_some_and(|u| m.pkt_len().saturating_sub(l3) > u as usize);
                return match e {
                    NotL4::Bad(r) if req != 0 || too_big => Decision::Drop(r),
                    NotL4::Other if req != 0 => Decision::Drop(E_MALFORMED),
                    NotL4::Other if too_big => Decision::Drop(E_NOT_SEGMENTABLE),
                    _ => Decision::Pass,
                };
            }
        };
        let tcp = lay.proto == ip_proto::TCP;
        if (req == offload::TX_TCP_SEG && !tcp) || (req == offload::TX_UDP_SEG && tcp) || req == offload::TX_SEG_MASK {
            return Decision::Drop(E_MALFORMED);
        }
        let l3_size = lay.end - lay.l3_outermost();
        let over_mtu = mtu.is_some_and(|u| l3_size > u as usize);
        let over_mss = tcp && mss.is_some_and(|s| lay.payload() > s as usize);
        if req == 0 && !over_mtu && !over_mss {
            return Decision::Pass;
        }
        if req == 0 && !tcp {
            // A UDP datagram larger than the MTU that did not ask for USO: cutting it would make
            // several datagrams of one.
            return Decision::Drop(E_NOT_SEGMENTABLE);
        }
        let mut segsz = usize::MAX;
        if req != 0 {
            segsz = m.tso_segsz() as usize;
        }
        if tcp {
            if let Some(s) = mss {
                segsz = segsz.min(s as usize);
            }
        }
        if let Some(u) = mtu {
            match (u as usize).checked_sub(lay.hdr_len() - lay.l3_outermost()) {
                Some(s) => segsz = segsz.min(s),
                None => return Decision::Drop(E_SEGSZ),
            }
        }
        self.plan(m, lay, segsz)
    }

    fn decide_tx(&mut self, m: &mut Mbuf, ctx: &mut Ctx) -> Decision {
        let f = m.ol_flags();
        let caps = self.caps(m.out_port());
        if f & offload::TX_SEG_MASK != 0 {
            let need = if f & offload::TX_TCP_SEG != 0 {
                match f & offload::TX_TUNNEL_MASK {
                    0 => Offloads::TX_TCP_TSO,
                    offload::TX_TUNNEL_VXLAN => Offloads::TX_VXLAN_TNL_TSO,
                    offload::TX_TUNNEL_GENEVE => Offloads::TX_GENEVE_TNL_TSO,
                    _ => Offloads::TX_GRE_TNL_TSO,
                }
            } else if f & offload::TX_TUNNEL_MASK == 0 {
                Offloads::TX_UDP_TSO
            } else {
                // No port offers USO inside a tunnel.
                Offloads(u32::MAX)
            };
            if caps.contains(need) {
                return Decision::Pass;
            }
            let n = self.read_headers(m);
            return match analyze(m, &self.tmpl[..n], &self.ports) {
                Ok(lay) => {
                    let tcp = lay.proto == ip_proto::TCP;
                    if (f & offload::TX_TCP_SEG != 0) != tcp || f & offload::TX_SEG_MASK == offload::TX_SEG_MASK {
                        return Decision::Drop(E_MALFORMED);
                    }
                    self.plan(m, lay, m.tso_segsz() as usize)
                }
                Err(NotL4::Bad(r)) => Decision::Drop(r),
                Err(NotL4::Other) => Decision::Drop(E_MALFORMED),
            };
        }
        let mut lacking = f & offload::TX_CKSUM_MASK & !served(caps);
        if lacking & offload::TX_OUTER_UDP_CKSUM != 0 {
            // The outer UDP checksum covers the inner packet: finish that first, here.
            lacking |= f & (offload::TX_IP_CKSUM | offload::TX_TCP_CKSUM | offload::TX_UDP_CKSUM);
        }
        if lacking == 0 {
            return Decision::Pass;
        }
        if !m.is_writable() {
            // A clone (e.g. flooded to several ports): write into a private copy of it.
            let Some(c) = ctx.cache(&Mempool::of(m)).copy(m) else { return Decision::Drop(E_SHARED) };
            self.counters.stat(S_COPIED, c.pkt_len() as u64);
            ctx.free(std::mem::replace(m, c));
        }
        match crate::stages::checksum::offload_masked(m, lacking) {
            Ok(()) => {
                self.counters.stat(S_CHECKSUMMED, 1);
                Decision::Pass
            }
            Err(_) => Decision::Drop(E_MALFORMED),
        }
    }

    /// Plans the cut of `m` (headers analysed as `lay`) into segments of `segsz` payload bytes.
    fn plan(&mut self, m: &Mbuf, lay: Layout, segsz: usize) -> Decision {
        if segsz < MIN_SEGSZ {
            return Decision::Drop(E_SEGSZ);
        }
        let hdr_len = lay.hdr_len();
        let payload = lay.payload();
        let caps = self.caps(m.out_port());
        let chain = caps.contains(Offloads::TX_MULTI_SEGS);
        if self.pool.as_ref().is_none_or(|p| p.id() != m.pool_id()) {
            self.pool = Some(Mempool::of(m));
        }
        let room = self.pool.as_ref().map_or(0, Mempool::data_room);
        if hdr_len > room || (!chain && hdr_len + segsz.min(payload) > room) {
            return Decision::Drop(E_SEG_TOO_BIG);
        }
        let d = &self.tmpl;
        let tcp = lay.proto == ip_proto::TCP;
        let tunnel = lay.outer.is_some();
        // Lengths must fit their mbuf fields for the port to find the headers.
        let fits = match lay.outer {
            Some(o) => o.l3 <= 255 && o.l3_len <= 255 && lay.l3 - o.l3 - o.l3_len <= 255 && lay.l4_len <= 255,
            None => lay.l3 <= 255 && lay.l4_len <= 255,
        };
        let (ip_cap, l4_cap) = if tcp {
            (Offloads::TX_IPV4_CKSUM, Offloads::TX_TCP_CKSUM)
        } else {
            (Offloads::TX_IPV4_CKSUM, Offloads::TX_UDP_CKSUM)
        };
        let sw_ip = tunnel || !fits || !caps.contains(ip_cap);
        let sw_l4 = tunnel || !fits || !caps.contains(l4_cap);
        let (mut sw_outer_ip, mut outer_udp_csum, mut sw_outer_udp) = (false, false, false);
        let (mut outer_ip_sum, mut outer_ip_id, mut outer_pseudo) = (0, 0, 0);
        let mut flags = m.ol_flags()
            & !(offload::TX_SEG_MASK
                | offload::TX_CKSUM_MASK
                | offload::TX_IPV4
                | offload::TX_IPV6
                | offload::TX_OUTER_IPV4
                | offload::TX_OUTER_IPV6
                | offload::TX_TUNNEL_MASK
                | offload::RX_L4_CKSUM_PARTIAL);
        let ip_req = !lay.v6 && !sw_ip;
        if ip_req {
            flags |= offload::TX_IP_CKSUM;
        }
        if !sw_l4 {
            flags |= if tcp { offload::TX_TCP_CKSUM } else { offload::TX_UDP_CKSUM };
        }
        if ip_req || !sw_l4 {
            flags |= if lay.v6 { offload::TX_IPV6 } else { offload::TX_IPV4 };
        }
        if let Some(o) = lay.outer {
            flags |= o.kind | if o.v6 { offload::TX_OUTER_IPV6 } else { offload::TX_OUTER_IPV4 };
            sw_outer_ip = !o.v6 && (!fits || !caps.contains(Offloads::TX_OUTER_IPV4_CKSUM));
            if !o.v6 {
                if !sw_outer_ip {
                    flags |= offload::TX_OUTER_IP_CKSUM;
                }
                outer_ip_sum = ip_header_sum(&d[o.l3..o.l3 + o.l3_len]);
                outer_ip_id = get_u16(d, o.l3 + 4);
            }
            if o.udp {
                let ol4 = o.l3 + o.l3_len;
                outer_udp_csum = get_u16(d, ol4 + 6) != 0 || m.ol_flags() & offload::TX_OUTER_UDP_CKSUM != 0;
                sw_outer_udp = !fits || !caps.contains(Offloads::TX_OUTER_UDP_CKSUM);
                if outer_udp_csum && !sw_outer_udp {
                    flags |= offload::TX_OUTER_UDP_CKSUM;
                }
                outer_pseudo = pseudo(d, o.l3, o.v6, ip_proto::UDP);
            }
        }
        let (ip_sum, ip_id) = if lay.v6 { (0, 0) } else { (ip_header_sum(&d[lay.l3..lay.l4]), get_u16(d, lay.l3 + 4)) };
        let nsegs = payload.div_ceil(segsz).max(1);
        Decision::Segment(Plan {
            lay,
            hdr_len,
            payload,
            segsz,
            nsegs,
            chain,
            sw_ip,
            sw_l4,
            sw_outer_ip,
            outer_udp_csum,
            sw_outer_udp,
            ip_sum,
            ip_id,
            seq: if tcp { get_u32(d, lay.l4 + 4) } else { 0 },
            tcp_flags: if tcp { d[lay.l4 + 13] } else { 0 },
            pseudo: pseudo(d, lay.l3, lay.v6, lay.proto),
            outer_ip_sum,
            outer_ip_id,
            outer_pseudo,
            flags,
            meta: Meta::of(m),
        })
    }

    fn start(&mut self, plan: Plan, mut m: Mbuf) {
        self.counters.stat(S_SEGMENTED, 1);
        let rest = m.split_first();
        if let Some(r) = rest.as_ref() {
            r.prefetch_data(PREFETCH_BYTES);
            r.prefetch_next();
        }
        self.active = Some(Active { plan, seg: Some(m), rest, off: 0, skip: plan.hdr_len, next: 0 });
    }

    /// Emits segments of the active packet into `out` until it is full or the packet is done.
    fn emit(&mut self, out: &mut Batch, ctx: &mut Ctx) {
        let Some(pool) = self.pool.as_ref() else { return };
        let cache = ctx.cache(pool);
        let Some(a) = self.active.as_mut() else { return };
        a.skip_headers(cache);
        while out.remaining_capacity() > 0 && a.next < a.plan.nsegs {
            match build_segment(a, &self.tmpl, cache) {
                Ok(s) => {
                    self.counters.stat(S_SEGMENTS, 1);
                    self.counters.stat(S_OUT_BYTES, s.pkt_len() as u64);
                    let copied = if a.plan.chain { a.plan.hdr_len } else { s.pkt_len() };
                    self.counters.stat(S_COPIED, copied as u64);
                    let _ = out.push(s);
                }
                Err(r) => {
                    // Whatever was sent of this packet is gone; the rest is dropped.
                    self.counters.dropped(r, 1);
                    a.next = a.plan.nsegs;
                }
            }
        }
        if a.next >= a.plan.nsegs {
            a.release(cache);
            self.active = None;
        }
    }
}

/// The requests a port with `caps` serves itself.
pub fn served(caps: Offloads) -> u64 {
    let mut s = 0;
    if caps.contains(Offloads::TX_IPV4_CKSUM) {
        s |= offload::TX_IP_CKSUM;
    }
    if caps.contains(Offloads::TX_TCP_CKSUM) {
        s |= offload::TX_TCP_CKSUM;
    }
    if caps.contains(Offloads::TX_UDP_CKSUM) {
        s |= offload::TX_UDP_CKSUM;
    }
    if caps.contains(Offloads::TX_OUTER_IPV4_CKSUM) {
        s |= offload::TX_OUTER_IP_CKSUM;
    }
    if caps.contains(Offloads::TX_OUTER_UDP_CKSUM) {
        s |= offload::TX_OUTER_UDP_CKSUM;
    }
    s
}

/// Sum of an IPv4 header with its total length, identification and checksum taken as 0.
fn ip_header_sum(h: &[u8]) -> u16 {
    let s = checksum::sum(h);
    // Remove the three fields: one's-complement subtraction of each word.
    let mut acc = s as u64;
    for at in [2, 4, 10] {
        acc += (!get_u16(h, at)) as u64;
    }
    checksum::fold(acc)
}

/// Pseudo-header sum (addresses and protocol, no length) of the IP header at `at`.
fn pseudo(d: &[u8], at: usize, v6: bool, proto: u8) -> u16 {
    if v6 {
        let mut s = [0u8; 16];
        let mut t = [0u8; 16];
        s.copy_from_slice(&d[at + 8..at + 24]);
        t.copy_from_slice(&d[at + 24..at + 40]);
        checksum::pseudo_v6(&s, &t, proto, 0)
    } else {
        let a = |o: usize| [d[at + o], d[at + o + 1], d[at + o + 2], d[at + o + 3]];
        checksum::pseudo_v4(a(12), a(16), proto, 0)
    }
}

/// Builds output segment `a.next` of the active packet.
fn build_segment(a: &mut Active, tmpl: &[u8; MAX_HDR], cache: &mut PoolCache) -> Result<Mbuf, u8> {
    let p = a.plan;
    let i = a.next;
    a.next += 1;
    let len = p.segsz.min(p.payload - (i * p.segsz).min(p.payload));
    let mut h = cache.alloc().ok_or(E_NO_MBUF)?;
    match h.append(p.hdr_len) {
        Some(dst) => dst.copy_from_slice(&tmpl[..p.hdr_len]),
        None => {
            cache.free(h);
            return Err(E_SEG_TOO_BIG);
        }
    }
    let psum = if p.chain {
        let mut s = Sum::new(0);
        if let Err(e) = a.attach(&mut h, len, cache, &mut s) {
            cache.free(h);
            return Err(e);
        }
        s.sum()
    } else {
        let Some(dst) = h.append(len) else {
            cache.free(h);
            return Err(E_SEG_TOO_BIG);
        };
        match a.copy(dst, cache) {
            Ok(s) => s,
            Err(e) => {
                cache.free(h);
                return Err(e);
            }
        }
    };
    patch(&mut h.data_mut()[..p.hdr_len], &p, i, len, psum);
    p.meta.apply(&mut h, p.flags);
    set_lengths(&mut h, &p.lay);
    Ok(h)
}

/// Writes the lengths of a segment's headers into its metadata (DPDK's conventions).
fn set_lengths(m: &mut Mbuf, l: &Layout) {
    let u8_of = |v: usize| u8::try_from(v).unwrap_or(0);
    match l.outer {
        Some(o) => {
            m.set_outer_l2_len(u8_of(o.l3));
            m.set_outer_l3_len(u8_of(o.l3_len));
            m.set_l2_len(u8_of(l.l3 - o.l3 - o.l3_len));
        }
        None => {
            m.set_outer_l2_len(0);
            m.set_outer_l3_len(0);
            m.set_l2_len(u8_of(l.l3));
        }
    }
    m.set_l3_len(l.l3_len as u16);
    m.set_l4_len(u8_of(l.l4_len));
}

/// Sets the length of the IP header at `at` in a frame of `end` bytes; for IPv4 also the
/// identification `id` and the header checksum (from `sum`, the header's sum without length,
/// identification and checksum) when `sw`, else 0 for the port to fill.
#[inline(always)]
fn patch_ip(h: &mut [u8], at: usize, v6: bool, end: usize, id: u16, sum: u16, sw: bool) {
    if v6 {
        set_u16(h, at + 4, (end - at - 40) as u16);
    } else {
        let tot = (end - at) as u16;
        set_u16(h, at + 2, tot);
        set_u16(h, at + 4, id);
        let c = if sw { !checksum::fold(sum as u64 + tot as u64 + id as u64) } else { 0 };
        set_u16(h, at + 10, c);
    }
}

/// Patches the copied headers `h` for segment `i` carrying `len` payload bytes whose sum is
/// `psum` (as if they started at an even offset).
#[inline]
fn patch(h: &mut [u8], p: &Plan, i: usize, len: usize, psum: u16) {
    let l = &p.lay;
    let last = i + 1 == p.nsegs;
    let tcp = l.proto == ip_proto::TCP;
    let l4_bytes = p.hdr_len - l.l4 + len;
    // Inner L4 header.
    let csum_at = if tcp {
        set_u32(h, l.l4 + 4, p.seq.wrapping_add((i * p.segsz) as u32));
        let mut fl = p.tcp_flags;
        if i > 0 {
            fl &= !CWR;
        }
        if !last {
            fl &= !(FIN | PSH);
        }
        h[l.l4 + 13] = fl;
        l.l4 + 16
    } else {
        set_u16(h, l.l4 + 4, l4_bytes as u16);
        l.l4 + 6
    };
    // Inner IP header.
    patch_ip(h, l.l3, l.v6, p.hdr_len + len, p.ip_id.wrapping_add(i as u16), p.ip_sum, p.sw_ip);
    // Inner L4 checksum.
    h[csum_at] = 0;
    h[csum_at + 1] = 0;
    let c = if p.sw_l4 {
        let s = p.pseudo as u64 + l4_bytes as u64 + checksum::sum(&h[l.l4..]) as u64 + psum as u64;
        let c = !checksum::fold(s);
        if tcp {
            c
        } else {
            checksum::udp_wire(c)
        }
    } else {
        checksum::fold(p.pseudo as u64 + l4_bytes as u64)
    };
    set_u16(h, csum_at, c);
    // Outer headers.
    let Some(o) = l.outer else { return };
    let id = p.outer_ip_id.wrapping_add(i as u16);
    patch_ip(h, o.l3, o.v6, p.hdr_len + len, id, p.outer_ip_sum, p.sw_outer_ip);
    if o.udp {
        let ol4 = o.l3 + o.l3_len;
        let ulen = (p.hdr_len - ol4 + len) as u16;
        set_u16(h, ol4 + 4, ulen);
        set_u16(h, ol4 + 6, 0);
        if p.outer_udp_csum {
            let c = if p.sw_outer_udp {
                // The payload starts (hdr_len - ol4) bytes into the UDP datagram.
                let ps = if (p.hdr_len - ol4) & 1 == 1 { psum.swap_bytes() } else { psum };
                let s = p.outer_pseudo as u64 + ulen as u64 + checksum::sum(&h[ol4..]) as u64 + ps as u64;
                checksum::udp_wire(!checksum::fold(s))
            } else {
                checksum::fold(p.outer_pseudo as u64 + ulen as u64)
            };
            set_u16(h, ol4 + 6, c);
        }
    }
}
