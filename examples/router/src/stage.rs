//! [`RouterStage`]: the router's fast path, one instance per lcore task.
//!
//! Per burst, in three passes:
//!
//! 1. classify each packet: ARP and neighbour discovery for the router's addresses are answered
//!    in place (the mbuf turns into the reply) and what they teach is sent to the control
//!    thread; pings to the router are answered in place; packets to route are checked (IPv4
//!    header checksum, lengths) and their destinations collected;
//! 2. look every collected destination up at once ([`fastpath_pipeline::lpm`], prefetched);
//! 3. forward: no route gives ICMP destination unreachable, an expiring TTL / hop limit ICMP
//!    time exceeded (both rate-limited), an unknown neighbour an ARP request / neighbour
//!    solicitation (one per second per neighbour); else the TTL or hop limit goes down (the
//!    IPv4 checksum updated incrementally, RFC 1624), the MACs are rewritten and the packet
//!    leaves on the next hop's port.
//!
//! Packets the router makes (ICMP errors, solicitations) come from the pool and join the burst
//! after it; every packet that leaves the burst is freed and counted under a reason. Nothing
//! here allocates, locks or panics on packet contents.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use fastpath_mempool::ring::spsc;
use fastpath_mempool::{Batch, Mbuf, Mempool, MAX_BURST};
use fastpath_pipeline::lpm::{Lpm4Reader, Lpm6Reader, MISS};
use fastpath_pipeline::wire::{
    arp, ethertype, icmp, ip_proto, ArpPacket, EthernetAddress, EthernetPacket, IcmpPacket, IcmpRepr, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr,
};
use fastpath_pipeline::{checksum, Stage, StageCounters};
use fastpath_pmd::time::{rdtsc, tsc_hz};
use fastpath_pmd::Ctx;

use crate::neighbour::{key4, Event, Neighbours};
use crate::{NextHops, PortView};

/// Drop reasons (indexes are the codes).
pub const REASONS: &[&str] = &[
    "not-for-us",
    "malformed",
    "bad-checksum",
    "unsupported",
    "shared-buffer",
    "to-router",
    "consumed",
    "no-route",
    "ttl-exceeded",
    "no-neighbour",
];
const NOT_FOR_US: u8 = 0;
const MALFORMED: u8 = 1;
const BAD_CHECKSUM: u8 = 2;
const UNSUPPORTED: u8 = 3;
const SHARED: u8 = 4;
const TO_ROUTER: u8 = 5;
const CONSUMED: u8 = 6;
const NO_ROUTE: u8 = 7;
const TTL_EXCEEDED: u8 = 8;
const NO_NEIGHBOUR: u8 = 9;
/// Verdicts that are not drops.
const KEEP: u8 = 0xff;
const PENDING: u8 = 0xfe;

/// The stage's own counters (indexes are the codes).
pub const STATS: &[&str] = &[
    "forwarded",
    "arp-replies",
    "nd-adverts",
    "echo-replies",
    "icmp-errors",
    "icmp-rate-limited",
    "solicitations",
    "no-mbuf",
    "events-lost",
];
const FORWARDED: u8 = 0;
const ARP_REPLIES: u8 = 1;
const ND_ADVERTS: u8 = 2;
const ECHO_REPLIES: u8 = 3;
const ICMP_ERRORS: u8 = 4;
const ICMP_LIMITED: u8 = 5;
const SOLICITATIONS: u8 = 6;
const NO_MBUF: u8 = 7;
const EVENTS_LOST: u8 = 8;

const ETH: usize = 14;
/// Bytes of the offending packet an ICMP error quotes: all that fits in 576 (IPv4, RFC 1812)
/// or 1280 bytes (IPv6, RFC 4443).
const QUOTE4: usize = 576 - 20 - 8;
const QUOTE6: usize = 1280 - 40 - 8;

/// What a stage shares with the control plane ([`crate::Router::stage`] makes it).
#[derive(Debug)]
pub struct Shared {
    pub(crate) lpm4: Lpm4Reader,
    pub(crate) lpm6: Lpm6Reader,
    pub(crate) hops: Arc<NextHops>,
    pub(crate) neighbours: Arc<Neighbours>,
    pub(crate) ports: Arc<[PortView]>,
    pub(crate) events: spsc::Producer<Event>,
    pub(crate) pool: Mempool,
    pub(crate) icmp_rate: u32,
}

/// A rate limit (GCRA over the TSC): `rate` per second, bursts of `burst`.
#[derive(Debug)]
struct Limiter {
    tat: u64,
    interval: u64,
    tolerance: u64,
}

impl Limiter {
    fn new(rate: u32, burst: u64) -> Limiter {
        let interval = if rate == 0 { u64::MAX } else { tsc_hz() / rate as u64 };
        Limiter { tat: 0, interval, tolerance: interval.saturating_mul(burst) }
    }

    fn allow(&mut self, now: u64) -> bool {
        let tat = self.tat.max(now);
        if self.interval == u64::MAX || tat - now > self.tolerance {
            return false;
        }
        self.tat = tat + self.interval;
        true
    }
}

/// The router's stage: see the module doc.
pub struct RouterStage {
    s: Shared,
    counters: Arc<StageCounters>,
    local4: Vec<u32>,
    local6: Vec<u128>,
    icmp: Limiter,
    /// Neighbours solicited lately: (port, key) and when, by a hash of the key.
    asked: [(u16, u128, u64); 64],
    hz: u64,
    // Per burst: each packet's verdict, and the destinations to look up with their packet.
    verdict: [u8; MAX_BURST],
    n4: usize,
    dst4: [u32; MAX_BURST],
    at4: [u16; MAX_BURST],
    hop4: [u16; MAX_BURST],
    n6: usize,
    dst6: [u128; MAX_BURST],
    at6: [u16; MAX_BURST],
    hop6: [u16; MAX_BURST],
    /// Packets made during the burst (ICMP errors, solicitations), sent after it.
    out: Batch,
}

impl std::fmt::Debug for RouterStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterStage").field("counters", &self.counters).finish_non_exhaustive()
    }
}

impl RouterStage {
    pub(crate) fn new(s: Shared) -> RouterStage {
        let local4 = s.ports.iter().flat_map(|p| p.v4.iter().map(|a| u32::from(a.0))).collect();
        let local6 = s.ports.iter().flat_map(|p| p.v6.iter().map(|a| u128::from(a.0))).collect();
        let icmp = Limiter::new(s.icmp_rate, 50);
        RouterStage {
            s,
            counters: StageCounters::with_stats("router", REASONS, STATS),
            local4,
            local6,
            icmp,
            asked: [(0, 0, 0); 64],
            hz: tsc_hz(),
            verdict: [KEEP; MAX_BURST],
            n4: 0,
            dst4: [0; MAX_BURST],
            at4: [0; MAX_BURST],
            hop4: [0; MAX_BURST],
            n6: 0,
            dst6: [0; MAX_BURST],
            at6: [0; MAX_BURST],
            hop6: [0; MAX_BURST],
            out: Batch::new(),
        }
    }

    /// Pass 1 for one packet: a verdict, or PENDING with its destination collected.
    fn classify(&mut self, i: usize, m: &mut Mbuf, ctx: &mut Ctx) -> u8 {
        let port = m.port();
        let Some(pv) = self.s.ports.get(port as usize) else { return NOT_FOR_US };
        let Ok(eth) = EthernetPacket::new_checked(m.data()) else { return MALFORMED };
        let (to_us, multicast) = (eth.dst_addr() == pv.mac, eth.dst_addr().is_multicast());
        match eth.ethertype() {
            ethertype::ARP if to_us || multicast => self.arp(m, port),
            ethertype::IPV4 if to_us => self.ipv4(i, m, port),
            ethertype::IPV6 if to_us || multicast => self.ipv6(i, m, port, to_us, ctx),
            ethertype::ARP | ethertype::IPV4 | ethertype::IPV6 => NOT_FOR_US,
            _ => UNSUPPORTED,
        }
    }

    fn learn(&mut self, port: u16, ip: IpAddr, mac: EthernetAddress) {
        if self.s.events.enqueue(Event::Learn { port, ip, mac }).is_err() {
            self.counters.stat(EVENTS_LOST, 1);
        }
    }

    /// ARP for one of the port's addresses: requests are answered in place; the sender is
    /// learned either way.
    fn arp(&mut self, m: &mut Mbuf, port: u16) -> u8 {
        let Ok(a) = ArpPacket::new_checked(&m.data()[ETH..]) else { return MALFORMED };
        let (op, sha, spa, tpa) = (a.operation(), a.sender_hw_addr(), a.sender_ip(), a.target_ip());
        let pv = &self.s.ports[port as usize];
        if !pv.v4.iter().any(|a| a.0 == tpa) {
            return NOT_FOR_US;
        }
        let mac = pv.mac;
        if !spa.is_unspecified() {
            self.learn(port, IpAddr::V4(spa), sha);
        }
        if op != arp::op::REQUEST {
            return CONSUMED;
        }
        if !m.is_writable() {
            return SHARED;
        }
        let d = m.data_mut();
        let mut e = EthernetPacket::new_unchecked(&mut d[..]);
        e.set_dst_addr(sha);
        e.set_src_addr(mac);
        let mut a = ArpPacket::new_unchecked(&mut d[ETH..]);
        a.set_header(arp::op::REPLY);
        a.set_target(sha, spa);
        a.set_sender(mac, tpa);
        m.set_out_port(port);
        self.counters.stat(ARP_REPLIES, 1);
        KEEP
    }

    fn ipv4(&mut self, i: usize, m: &mut Mbuf, port: u16) -> u8 {
        let d = m.data();
        let Ok(ip) = Ipv4Packet::new_checked(&d[ETH..]) else { return MALFORMED };
        if ip.version() != 4 {
            return MALFORMED;
        }
        if checksum::sum_ipv4_header(&d[ETH..ETH + ip.header_len() as usize]) != 0xffff {
            return BAD_CHECKSUM;
        }
        let dst = u32::from_be_bytes(ip.dst_bytes());
        if self.local4.contains(&dst) {
            return self.ping4(m, port);
        }
        if dst >= 0xe000_0000 || dst == 0 {
            return NOT_FOR_US; // multicast, broadcast, reserved, 0.0.0.0
        }
        self.dst4[self.n4] = dst;
        self.at4[self.n4] = i as u16;
        self.n4 += 1;
        PENDING
    }

    /// A packet for the router itself: echo requests are answered in place.
    fn ping4(&mut self, m: &mut Mbuf, port: u16) -> u8 {
        let d = m.data();
        let ip = Ipv4Packet::new_unchecked(&d[ETH..]);
        let (hl, tl) = (ip.header_len() as usize, ip.total_len() as usize);
        if ip.protocol() != ip_proto::ICMP || ip.is_fragment() || tl < hl + icmp::HEADER_LEN {
            return TO_ROUTER;
        }
        let msg = IcmpPacket::new_unchecked(&d[ETH + hl..ETH + tl]);
        if msg.msg_type() != icmp::v4::ECHO_REQUEST {
            return TO_ROUTER;
        }
        if !msg.verify_checksum(0) {
            return BAD_CHECKSUM;
        }
        if !m.is_writable() {
            return SHARED;
        }
        let mac = self.s.ports[port as usize].mac;
        let d = m.data_mut();
        swap_macs(d, mac);
        let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(64);
        ip.fill_checksum();
        IcmpPacket::new_unchecked(&mut d[ETH + hl..ETH + tl]).retype(icmp::v4::ECHO_REPLY, 0);
        m.set_out_port(port);
        self.counters.stat(ECHO_REPLIES, 1);
        KEEP
    }

    fn ipv6(&mut self, i: usize, m: &mut Mbuf, port: u16, to_us: bool, ctx: &mut Ctx) -> u8 {
        let d = m.data();
        let Ok(ip) = Ipv6Packet::new_checked(&d[ETH..]) else { return MALFORMED };
        if ip.version() != 6 {
            return MALFORMED;
        }
        let (src, dst) = (u128::from_be_bytes(ip.src_bytes()), u128::from_be_bytes(ip.dst_bytes()));
        let body = ip.payload();
        if ip.next_header() == ip_proto::ICMPV6
            && body.first().is_some_and(|&t| t == icmp::v6::NEIGHBOR_SOLICIT || t == icmp::v6::NEIGHBOR_ADVERT)
        {
            return self.ndisc(m, port, ctx);
        }
        if !to_us {
            return NOT_FOR_US;
        }
        if self.local6.contains(&dst) {
            return self.ping6(m, port);
        }
        // Multicast, link-local and unspecified are not routed.
        if dst >> 120 == 0xff || dst >> 118 == 0x3fa || src >> 118 == 0x3fa || dst == 0 {
            return NOT_FOR_US;
        }
        self.dst6[self.n6] = dst;
        self.at6[self.n6] = i as u16;
        self.n6 += 1;
        PENDING
    }

    /// Neighbour solicitations for the port's addresses are answered in place with an
    /// advertisement; solicitations and advertisements teach the sender's MAC.
    fn ndisc(&mut self, m: &mut Mbuf, port: u16, _ctx: &mut Ctx) -> u8 {
        let d = m.data();
        let ip = Ipv6Packet::new_unchecked(&d[ETH..]);
        let body = ip.payload();
        if ip.hop_limit() != 255 || body.len() < icmp::ND_OPTIONS {
            return MALFORMED;
        }
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        let msg = IcmpPacket::new_unchecked(body);
        if !msg.verify_checksum(checksum::pseudo_v6(&src, &dst, ip_proto::ICMPV6, body.len() as u32)) {
            return BAD_CHECKSUM;
        }
        let t = msg.msg_type();
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[icmp::ND_TARGET..icmp::ND_OPTIONS]).unwrap_or_default());
        let want = if t == icmp::v6::NEIGHBOR_SOLICIT { icmp::v6::OPT_SOURCE_LL } else { icmp::v6::OPT_TARGET_LL };
        let ll = nd_option(&body[icmp::ND_OPTIONS..], want);
        let pv = &self.s.ports[port as usize];
        if t == icmp::v6::NEIGHBOR_ADVERT {
            if let Some(mac) = ll {
                self.learn(port, IpAddr::V6(target), mac);
            }
            return CONSUMED;
        }
        if !pv.v6.iter().any(|a| a.0 == target) {
            return NOT_FOR_US;
        }
        let (mac, src) = (pv.mac, Ipv6Addr::from(src));
        let requester = EthernetPacket::new_unchecked(d).src_addr();
        if let (Some(ll), false) = (ll, src.is_unspecified()) {
            self.learn(port, IpAddr::V6(src), ll);
        }
        if !m.is_writable() || !m.set_len(ETH + 40 + icmp::ND_OPTIONS + 8) {
            return SHARED;
        }
        // The advertisement: to the solicitor, or to all nodes for duplicate address detection.
        let (dst, dst_mac, flags) = if src.is_unspecified() {
            (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), 0)
        } else {
            (src, requester, icmp::v6::NA_SOLICITED)
        };
        let d = m.data_mut();
        let mut e = EthernetPacket::new_unchecked(&mut d[..]);
        e.set_dst_addr(dst_mac);
        e.set_src_addr(mac);
        let len = icmp::ND_OPTIONS + 8;
        Ipv6Repr {
            src_addr: target,
            dst_addr: dst,
            next_header: ip_proto::ICMPV6,
            payload_len: len,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut d[ETH..]));
        let msg = &mut d[ETH + 40..];
        msg[icmp::ND_OPTIONS..len].copy_from_slice(&ll_option(icmp::v6::OPT_TARGET_LL, mac));
        let mut p = IcmpPacket::new_unchecked(&mut msg[..len]);
        let flags = (icmp::v6::NA_ROUTER | icmp::v6::NA_OVERRIDE | flags) as u32;
        IcmpRepr { msg_type: icmp::v6::NEIGHBOR_ADVERT, code: 0, rest: flags << 24 }.emit(&mut p);
        p.fill_checksum(checksum::pseudo_v6(&target.octets(), &dst.octets(), ip_proto::ICMPV6, len as u32));
        m.set_out_port(port);
        self.counters.stat(ND_ADVERTS, 1);
        KEEP
    }

    fn ping6(&mut self, m: &mut Mbuf, port: u16) -> u8 {
        let d = m.data();
        let ip = Ipv6Packet::new_unchecked(&d[ETH..]);
        let body = ip.payload();
        if ip.next_header() != ip_proto::ICMPV6 || body.len() < icmp::HEADER_LEN {
            return TO_ROUTER;
        }
        let msg = IcmpPacket::new_unchecked(body);
        if msg.msg_type() != icmp::v6::ECHO_REQUEST {
            return TO_ROUTER;
        }
        let pseudo = checksum::pseudo_v6(&ip.src_bytes(), &ip.dst_bytes(), ip_proto::ICMPV6, body.len() as u32);
        if !msg.verify_checksum(pseudo) {
            return BAD_CHECKSUM;
        }
        if !m.is_writable() {
            return SHARED;
        }
        let len = body.len();
        let mac = self.s.ports[port as usize].mac;
        let d = m.data_mut();
        swap_macs(d, mac);
        let mut ip = Ipv6Packet::new_unchecked(&mut d[ETH..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(64);
        // Swapping the addresses leaves the pseudo-header sum as it was.
        IcmpPacket::new_unchecked(&mut d[ETH + 40..ETH + 40 + len]).retype(icmp::v6::ECHO_REPLY, 0);
        m.set_out_port(port);
        self.counters.stat(ECHO_REPLIES, 1);
        KEEP
    }

    /// Pass 3 for one packet: the next hop `hop` of its destination `dst` (an IPv4 address as
    /// a key, see [`key4`]).
    fn forward(&mut self, m: &mut Mbuf, v4: bool, dst: u128, hop: u16, ctx: &mut Ctx) -> u8 {
        let in_port = m.port();
        let Some(h) = (hop != MISS).then(|| self.s.hops.get(hop)).flatten() else {
            let (t, code) = if v4 { (icmp::v4::DEST_UNREACHABLE, 0) } else { (icmp::v6::DEST_UNREACHABLE, 0) };
            self.icmp_error(m, in_port, v4, t, code, ctx);
            return NO_ROUTE;
        };
        let ttl_at = if v4 { ETH + 8 } else { ETH + 7 };
        let ttl = m.data()[ttl_at];
        if ttl <= 1 {
            let t = if v4 { icmp::v4::TIME_EXCEEDED } else { icmp::v6::TIME_EXCEEDED };
            self.icmp_error(m, in_port, v4, t, 0, ctx);
            return TTL_EXCEEDED;
        }
        let neighbour = h.gateway.unwrap_or(dst);
        let Some(mac) = self.s.neighbours.get(h.port, neighbour) else {
            self.solicit(h.port, neighbour, ctx);
            return NO_NEIGHBOUR;
        };
        if !m.is_writable() {
            return SHARED;
        }
        let src_mac = self.s.ports[h.port as usize].mac;
        let d = m.data_mut();
        d[0..6].copy_from_slice(&mac.0);
        d[6..12].copy_from_slice(&src_mac.0);
        d[ttl_at] = ttl - 1;
        if v4 {
            // RFC 1624: TTL and protocol share a 16-bit word of the header checksum.
            let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH..]);
            let proto = ip.protocol();
            let c = checksum::update16(
                ip.checksum(),
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([ttl - 1, proto]),
            );
            ip.set_checksum(c);
        }
        m.set_out_port(h.port);
        KEEP
    }

    /// An ICMP error about `m` (received on `port`) back to its source, unless it must not
    /// be sent (about an ICMP error, a fragment, a multicast source; RFC 1812 4.3.2.7, RFC
    /// 4443 2.4) or the rate limit says no.
    fn icmp_error(&mut self, m: &Mbuf, port: u16, v4: bool, t: u8, code: u8, ctx: &mut Ctx) {
        let d = m.data();
        let pv = &self.s.ports[port as usize];
        let (src, from, quote) = if v4 {
            let ip = Ipv4Packet::new_unchecked(&d[ETH..]);
            let hl = ip.header_len() as usize;
            let is_error = ip.protocol() == ip_proto::ICMP && d.get(ETH + hl).is_some_and(|&t| icmp::v4::is_error(t));
            let src = ip.src_addr();
            let Some(&(from, _)) = pv.v4.first() else { return };
            if is_error || ip.frag_offset() != 0 || src.is_multicast() || src.is_broadcast() || src.is_unspecified() {
                return;
            }
            let end = (ETH + ip.total_len() as usize).min(d.len());
            (IpAddr::V4(src), IpAddr::V4(from), &d[ETH..end.min(ETH + QUOTE4)])
        } else {
            let ip = Ipv6Packet::new_unchecked(&d[ETH..]);
            let is_error =
                ip.next_header() == ip_proto::ICMPV6 && ip.payload().first().is_some_and(|&t| icmp::v6::is_error(t));
            let src = ip.src_addr();
            let Some(&(from, _)) = pv.v6.first() else { return };
            if is_error || src.is_multicast() || src.is_unspecified() {
                return;
            }
            let end = (ETH + 40 + ip.payload_len() as usize).min(d.len());
            (IpAddr::V6(src), IpAddr::V6(from), &d[ETH..end.min(ETH + QUOTE6)])
        };
        if !self.icmp.allow(rdtsc()) {
            self.counters.stat(ICMP_LIMITED, 1);
            return;
        }
        let to_mac = EthernetPacket::new_unchecked(d).src_addr();
        let (mac, v4_hdr) = (pv.mac, if v4 { 20 } else { 40 });
        let Some(mut e) = ctx.cache(&self.s.pool).alloc() else {
            self.counters.stat(NO_MBUF, 1);
            return;
        };
        let msg_len = icmp::HEADER_LEN + quote.len();
        if !e.set_len(ETH + v4_hdr + msg_len) {
            ctx.free(e);
            self.counters.stat(NO_MBUF, 1);
            return;
        }
        let o = e.data_mut();
        let ethertype = if v4 { ethertype::IPV4 } else { ethertype::IPV6 };
        write_eth(o, to_mac, mac, ethertype);
        let pseudo = write_ip(&mut o[ETH..], from, src, msg_len);
        let msg = &mut o[ETH + v4_hdr..];
        msg[icmp::HEADER_LEN..].copy_from_slice(quote);
        let mut p = IcmpPacket::new_unchecked(msg);
        IcmpRepr { msg_type: t, code, rest: 0 }.emit(&mut p);
        p.fill_checksum(pseudo);
        e.set_out_port(port);
        self.send(e, ctx);
        self.counters.stat(ICMP_ERRORS, 1);
    }

    /// Asks for the MAC of `neighbour` (a key) on `port`: an ARP request or a neighbour
    /// solicitation, at most one per neighbour and second from this lcore.
    fn solicit(&mut self, port: u16, neighbour: u128, ctx: &mut Ctx) {
        let now = rdtsc();
        let slot = ((neighbour as u64 ^ (neighbour >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize;
        let (p, k, t) = self.asked[slot];
        if p == port && k == neighbour && now.wrapping_sub(t) < self.hz {
            return;
        }
        let pv = &self.s.ports[port as usize];
        let Some(mut e) = ctx.cache(&self.s.pool).alloc() else {
            self.counters.stat(NO_MBUF, 1);
            return;
        };
        let mac = pv.mac;
        let made = if neighbour >> 32 == 0xffff {
            let target = Ipv4Addr::from(neighbour as u32);
            let from = pv.v4.iter().find(|a| same_net4(a.0, target, a.1)).or(pv.v4.first()).map(|a| a.0);
            from.is_some_and(|from| {
                let ok = e.set_len(ETH + arp::HEADER_LEN);
                if ok {
                    let o = e.data_mut();
                    write_eth(o, EthernetAddress::BROADCAST, mac, ethertype::ARP);
                    let mut a = ArpPacket::new_unchecked(&mut o[ETH..]);
                    a.set_header(arp::op::REQUEST);
                    a.set_sender(mac, from);
                    a.set_target(EthernetAddress([0; 6]), target);
                }
                ok
            })
        } else {
            let target = Ipv6Addr::from(neighbour);
            let from = pv.v6.iter().find(|a| same_net6(a.0, target, a.1)).or(pv.v6.first()).map(|a| a.0);
            from.is_some_and(|from| {
                let len = icmp::ND_OPTIONS + 8;
                let ok = e.set_len(ETH + 40 + len);
                if ok {
                    // Solicited-node multicast group of the target (RFC 4291 2.7.1).
                    let t = target.octets();
                    let group = Ipv6Addr::from(0xff02_0000_0000_0000_0000_0001_ff00_0000u128 | (neighbour & 0xff_ffff));
                    let o = e.data_mut();
                    write_eth(o, EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]), mac, ethertype::IPV6);
                    Ipv6Repr {
                        src_addr: from,
                        dst_addr: group,
                        next_header: ip_proto::ICMPV6,
                        payload_len: len,
                        hop_limit: 255,
                        traffic_class: 0,
                        flow_label: 0,
                    }
                    .emit(&mut Ipv6Packet::new_unchecked(&mut o[ETH..]));
                    let msg = &mut o[ETH + 40..ETH + 40 + len];
                    msg[icmp::ND_TARGET..icmp::ND_OPTIONS].copy_from_slice(&t);
                    msg[icmp::ND_OPTIONS..].copy_from_slice(&ll_option(icmp::v6::OPT_SOURCE_LL, mac));
                    let mut p = IcmpPacket::new_unchecked(msg);
                    IcmpRepr { msg_type: icmp::v6::NEIGHBOR_SOLICIT, code: 0, rest: 0 }.emit(&mut p);
                    p.fill_checksum(checksum::pseudo_v6(&from.octets(), &group.octets(), ip_proto::ICMPV6, len as u32));
                }
                ok
            })
        };
        if !made {
            ctx.free(e);
            return;
        }
        self.asked[slot] = (port, neighbour, now);
        e.set_out_port(port);
        self.send(e, ctx);
        self.counters.stat(SOLICITATIONS, 1);
    }

    fn send(&mut self, m: Mbuf, ctx: &mut Ctx) {
        if let Err(m) = self.out.push(m) {
            ctx.free(m);
            self.counters.stat(NO_MBUF, 1);
        }
    }
}

impl Stage for RouterStage {
    fn name(&self) -> &'static str {
        "router"
    }

    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let n = batch.len();
        self.counters.packets.add(n as u64);
        (self.n4, self.n6) = (0, 0);
        for (i, m) in batch.iter_mut().enumerate() {
            self.verdict[i] = self.classify(i, m, ctx);
        }
        if self.n4 > 0 {
            self.s.lpm4.lookup_bulk(&self.dst4[..self.n4], &mut self.hop4[..self.n4]);
        }
        if self.n6 > 0 {
            self.s.lpm6.lookup_bulk(&self.dst6[..self.n6], &mut self.hop6[..self.n6]);
        }
        let mut forwarded = 0;
        for k in 0..self.n4 {
            let i = self.at4[k] as usize;
            let v = self.forward(&mut batch[i], true, key4(self.dst4[k]), self.hop4[k], ctx);
            forwarded += (v == KEEP) as u64;
            self.verdict[i] = v;
        }
        for k in 0..self.n6 {
            let i = self.at6[k] as usize;
            let v = self.forward(&mut batch[i], false, self.dst6[k], self.hop6[k], ctx);
            forwarded += (v == KEEP) as u64;
            self.verdict[i] = v;
        }
        self.counters.stat(FORWARDED, forwarded);
        // Drop what is not kept, counted per reason, keeping the order of the rest.
        let (verdict, counters) = (&self.verdict, &self.counters);
        let mut i = 0;
        batch.partition_into(&mut ctx.drops, |_| {
            let v = verdict[i];
            i += 1;
            if v != KEEP {
                counters.dropped(v, 1);
            }
            v == KEEP
        });
        ctx.free_drops();
        if !self.out.is_empty() {
            batch.append(&mut self.out);
            if !self.out.is_empty() {
                self.counters.stat(NO_MBUF, self.out.len() as u64);
                ctx.free_batch(&mut self.out);
            }
        }
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

fn swap_macs(d: &mut [u8], ours: EthernetAddress) {
    let mut e = EthernetPacket::new_unchecked(d);
    let peer = e.src_addr();
    e.set_dst_addr(peer);
    e.set_src_addr(ours);
}

fn write_eth(o: &mut [u8], dst: EthernetAddress, src: EthernetAddress, ethertype: u16) {
    let mut e = EthernetPacket::new_unchecked(o);
    e.set_dst_addr(dst);
    e.set_src_addr(src);
    e.set_ethertype(ethertype);
}

/// Writes an IP header from `from` to `to` carrying `len` bytes of ICMP; returns the sum of
/// the pseudo-header the ICMP checksum covers (0 for IPv4).
fn write_ip(o: &mut [u8], from: IpAddr, to: IpAddr, len: usize) -> u16 {
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            Ipv4Repr {
                src_addr: from,
                dst_addr: to,
                protocol: ip_proto::ICMP,
                payload_len: len,
                ttl: 64,
                tos: 0xc0,
                ident: 0,
                dont_frag: false,
            }
            .emit(&mut Ipv4Packet::new_unchecked(o));
            0
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            Ipv6Repr {
                src_addr: from,
                dst_addr: to,
                next_header: ip_proto::ICMPV6,
                payload_len: len,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut Ipv6Packet::new_unchecked(o));
            checksum::pseudo_v6(&from.octets(), &to.octets(), ip_proto::ICMPV6, len as u32)
        }
        _ => 0,
    }
}

/// The link-layer address in the first option of type `want` (8-byte units, RFC 4861 4.6).
fn nd_option(mut opts: &[u8], want: u8) -> Option<EthernetAddress> {
    while opts.len() >= 8 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == want && len == 8 {
            return Some(EthernetAddress(opts[2..8].try_into().ok()?));
        }
        opts = &opts[len..];
    }
    None
}

fn ll_option(t: u8, mac: EthernetAddress) -> [u8; 8] {
    let m = mac.0;
    [t, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

fn same_net4(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

fn same_net6(a: Ipv6Addr, b: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
    u128::from(a) & mask == u128::from(b) & mask
}
