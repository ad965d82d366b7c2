//! What the tracker needs of a packet, read from an Ethernet frame's first segment: addresses,
//! protocol, ports (or the ICMP echo id), TCP flags / sequence numbers / window, and, for an
//! ICMP error, the flow of the packet it quotes.
//!
//! Fragments: the first fragment of an IPv4 or IPv6 packet is classified by its L4 header like
//! a whole packet; a non-first fragment carries no ports and is refused ([`FlowError::Fragment`],
//! the caller drops and counts it). IPv6 extension headers (hop-by-hop, routing, destination
//! options, fragment) are walked, at most [`MAX_EXT_HEADERS`] of them.

use crate::wire::{ethertype, ip_proto};

/// The most IPv6 extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 4;

/// TCP flags (the wire module's).
pub use crate::wire::tcp::flags as tcp_flags;

/// A packet as the tracker sees it. Addresses are 16 bytes (IPv4 in the last four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// IP protocol (ICMP and ICMPv6 included).
    pub proto: u8,
    /// Source port; ICMP echo: the identifier.
    pub sport: u16,
    /// Destination port; ICMP echo: the identifier.
    pub dport: u16,
    /// TCP flags ([`tcp_flags`]).
    pub flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// TCP window (unscaled).
    pub win: u16,
    /// TCP window scale option of a SYN (0 when absent).
    pub wscale: u8,
    /// TCP segment length (payload, plus one for SYN and for FIN).
    pub seg_len: u32,
    /// ICMP: type and code.
    pub icmp: (u8, u8),
    /// An ICMP echo request or reply (a pseudo-connection keyed by its identifier).
    pub echo: bool,
    /// An ICMP echo request (may start a pseudo-connection).
    pub echo_request: bool,
    /// An ICMP error quoting a packet (the quoted flow comes with it from [`Flow::parse`]).
    pub error: bool,
}

/// Why a frame has no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowError {
    /// Not IPv4 or IPv6.
    NotIp,
    /// Headers cut short or malformed.
    Malformed,
    /// A non-first fragment.
    Fragment,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Flow {
    /// The flow of an Ethernet frame (untagged).
    pub fn parse(frame: &[u8]) -> Result<(Flow, Option<Flow>), FlowError> {
        let (mut f, mut q) = (Flow::default(), Flow::default());
        let related = Flow::parse_into(frame, &mut f, &mut q)?;
        Ok((f, related.then_some(q)))
    }

    /// [`Flow::parse`] into `f` (and the quoted flow of an ICMP error into `q`; true when there
    /// is one): the data path's form, which moves no flow around.
    #[inline(always)]
    pub fn parse_into(frame: &[u8], f: &mut Flow, q: &mut Flow) -> Result<bool, FlowError> {
        let v6 = match u16_at(frame, 12) {
            Some(ethertype::IPV4) => false,
            Some(ethertype::IPV6) => true,
            _ => return Err(FlowError::NotIp),
        };
        Flow::ip_into(frame.get(14..).ok_or(FlowError::Malformed)?, v6, f, q)
    }

    /// The flow of an IP packet; with the quoted flow of an ICMP error.
    pub fn ip(p: &[u8], v6: bool) -> Result<(Flow, Option<Flow>), FlowError> {
        let (mut f, mut q) = (Flow::default(), Flow::default());
        let related = Flow::ip_into(p, v6, &mut f, &mut q)?;
        Ok((f, related.then_some(q)))
    }

    #[inline(always)]
    fn ip_into(p: &[u8], v6: bool, f: &mut Flow, q: &mut Flow) -> Result<bool, FlowError> {
        let l4 = f.ip_header(p, v6)?;
        f.l4(l4, false)?;
        if !f.error {
            return Ok(false);
        }
        Flow::quoted(l4, v6, q)?;
        Ok(true)
    }

    /// The packet an ICMP error quotes: IP header and at least 8 bytes of its L4 header.
    #[inline(never)]
    fn quoted(l4: &[u8], v6: bool, q: &mut Flow) -> Result<(), FlowError> {
        let inner = l4.get(8..).ok_or(FlowError::Malformed)?;
        let ql4 = q.ip_header(inner, v6)?;
        q.l4(ql4, true)
    }

    /// Sets every field from `v6` to the protocol (the rest to their defaults); the L4 bytes.
    /// Each address is stored whole (an IPv4 one as the low word of a 16-byte value), so that
    /// the tracker's wide reads of it are forwarded from one store instead of waiting for
    /// several narrow ones.
    #[inline(always)]
    fn ip_header<'a>(&mut self, p: &'a [u8], v6: bool) -> Result<&'a [u8], FlowError> {
        *self = Flow { v6, ..Flow::default() };
        let f = self;
        if !v6 {
            let h = p.get(..20).ok_or(FlowError::Malformed)?;
            let ihl = (h[0] & 0x0f) as usize * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return Err(FlowError::Malformed);
            }
            if u16_at(h, 6).unwrap_or(0) & 0x1fff != 0 {
                return Err(FlowError::Fragment);
            }
            f.proto = h[9];
            let a = |at: usize| (u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]) as u128).to_be_bytes();
            f.src = a(12);
            f.dst = a(16);
            return p.get(ihl..).ok_or(FlowError::Malformed);
        }
        let h = p.get(..40).ok_or(FlowError::Malformed)?;
        if h[0] >> 4 != 6 {
            return Err(FlowError::Malformed);
        }
        let a = |at: usize| h[at..at + 16].try_into().unwrap_or([0; 16]);
        f.src = a(8);
        f.dst = a(24);
        let (mut nh, mut at) = (h[6], 40);
        for _ in 0..MAX_EXT_HEADERS {
            match nh {
                ip_proto::HOPOPTS | ip_proto::ROUTING | 60 => {
                    let e = p.get(at..at + 2).ok_or(FlowError::Malformed)?;
                    nh = e[0];
                    at += (e[1] as usize + 1) * 8;
                }
                ip_proto::FRAGMENT => {
                    let e = p.get(at..at + 8).ok_or(FlowError::Malformed)?;
                    if u16_at(e, 2).unwrap_or(0) & 0xfff8 != 0 {
                        return Err(FlowError::Fragment);
                    }
                    nh = e[0];
                    at += 8;
                }
                _ => break,
            }
        }
        f.proto = nh;
        p.get(at..).ok_or(FlowError::Malformed)
    }

    /// The L4 fields; of a `quoted` packet (in an ICMP error, which may quote only 8 bytes of
    /// it) only the ports or the echo identifier.
    #[inline(always)]
    fn l4(&mut self, l4: &[u8], quoted: bool) -> Result<(), FlowError> {
        let m = FlowError::Malformed;
        match self.proto {
            ip_proto::TCP if quoted => {
                self.ports(u32_at(l4, 0).ok_or(m)?);
            }
            ip_proto::TCP => {
                self.ports(u32_at(l4, 0).ok_or(m)?);
                self.seq = u32_at(l4, 4).ok_or(m)?;
                self.ack = u32_at(l4, 8).ok_or(m)?;
                let off = (*l4.get(12).ok_or(m)? >> 4) as usize * 4;
                self.flags = *l4.get(13).ok_or(m)?;
                self.win = u16_at(l4, 14).ok_or(m)?;
                let opts = l4.get(20..off).ok_or(m)?;
                if self.flags & tcp_flags::SYN != 0 {
                    self.wscale = window_scale(opts);
                }
                let payload = l4.len().saturating_sub(off) as u32;
                self.seg_len =
                    payload + (self.flags & tcp_flags::SYN != 0) as u32 + (self.flags & tcp_flags::FIN != 0) as u32;
            }
            ip_proto::UDP | 132 => {
                self.ports(u32_at(l4, 0).ok_or(m)?);
            }
            ip_proto::ICMP | ip_proto::ICMPV6 => {
                let h = l4.get(..8).ok_or(m)?;
                self.icmp = (h[0], h[1]);
                let v6 = self.proto == ip_proto::ICMPV6;
                let (req, rep) = if v6 { (128, 129) } else { (8, 0) };
                if h[0] == req || h[0] == rep {
                    let id = u16_at(h, 4).ok_or(m)?;
                    (self.sport, self.dport) = (id, id);
                    self.echo = true;
                    self.echo_request = h[0] == req;
                } else {
                    self.error = if v6 { (1..=4).contains(&h[0]) } else { matches!(h[0], 3 | 4 | 5 | 11 | 12) };
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Both ports from their four bytes, in one step: two stores from one value, which the
    /// compiler merges into one (two separate loads, each stored apart, would make the
    /// tracker's single read of both wait for two stores).
    #[inline(always)]
    fn ports(&mut self, both: u32) {
        self.sport = (both >> 16) as u16;
        self.dport = both as u16;
    }

    /// The flow of the other direction (an echo request's is a reply and the other way).
    pub fn reversed(&self) -> Flow {
        let mut r = Flow { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self };
        if self.echo {
            let (req, rep) = if self.proto == ip_proto::ICMPV6 { (128, 129) } else { (8, 0) };
            r.echo_request = !self.echo_request;
            r.icmp.0 = if r.echo_request { req } else { rep };
        }
        r
    }
}

/// The window scale option (kind 3) in TCP options; 0 when absent. At most 14 (RFC 7323).
fn window_scale(mut o: &[u8]) -> u8 {
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => o = &o[1..],
            _ => {
                let len = o.get(1).copied().unwrap_or(0) as usize;
                if len < 2 || len > o.len() {
                    break;
                }
                if kind == 3 && len == 3 {
                    return o[2].min(14);
                }
                o = &o[len..];
            }
        }
    }
    0
}
