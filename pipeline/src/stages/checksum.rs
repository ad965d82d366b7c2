//! `checksum[,mode=verify|fill|offload][,drop=on|off]`: the software checksum stage.
//!
//! - `verify` (default): parses each frame ([`crate::parse`]) and checks the IPv4 header
//!   checksums and the TCP / UDP checksums with their IPv4 / IPv6 pseudo-headers, outer and inner
//!   (a UDP checksum of 0 over IPv4 means "none" and passes). It records the outcome in the
//!   receive flags as a NIC would (`RX_IP_CKSUM_GOOD/BAD`, `RX_L4_CKSUM_GOOD/BAD` for the inner or
//!   only packet, `RX_OUTER_IP_CKSUM_BAD`, `RX_OUTER_L4_CKSUM_GOOD/BAD` for a tunnel's outer
//!   headers) and, with `drop=on` (default), drops bad packets, counted per reason. With
//!   `drop=off` it only flags them.
//! - `fill`: computes every checksum it finds — inner first, then outer, because the outer UDP
//!   checksum covers the inner packet. A UDP checksum computed as 0 is sent as 0xffff.
//! - `offload`: does exactly what each mbuf's transmit flags ask, as a NIC would (DPDK's model):
//!   `TX_IP_CKSUM` (the IPv4 header at `l2_len`), `TX_TCP_CKSUM` / `TX_UDP_CKSUM` (the L4 at
//!   `l2_len + l3_len`, pseudo-header by `TX_IPV4` / `TX_IPV6`), `TX_OUTER_IP_CKSUM`,
//!   `TX_OUTER_UDP_CKSUM` (at `outer_l2_len`, `outer_l2_len + outer_l3_len`). For a tunnel
//!   (`TX_TUNNEL_*` or `TX_OUTER_IPV4/6` set) the inner offsets start after the outer headers,
//!   `outer_l2_len + outer_l3_len + l2_len`. Done requests are cleared from `ol_flags`. Packets
//!   that ask for segmentation (`TX_TCP_SEG`, `TX_UDP_SEG`) are left alone: the LSO stage computes
//!   the checksums of each segment it makes.
//!
//! L4 checksums cover every segment of a chain (the headers are in the first). Drop reasons:
//! `bad-ip-checksum`, `bad-l4-checksum`, `bad-outer-ip-checksum`, `bad-outer-l4-checksum`,
//! `bad-length` (an IP or UDP length that runs past the packet, or offsets that do not fit),
//! `shared-buffer` (fill / offload cannot write a clone's buffer).

use std::sync::Arc;

use fastpath_mempool::offload::{self, ptype};
use fastpath_mempool::{Batch, Mbuf};
use fastpath_pmd::{Ctx, Error, Spec};

use crate::checksum::{self, Sum};
use crate::parse::{self, Parsed, TunnelPorts};
use crate::stage::{filter, Stage, StageCounters};
use crate::wire::{get_u16, ip_proto};

/// The accepted form.
pub const FORM: &str = "checksum[,mode=verify|fill|offload][,drop=on|off]";

/// What the stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check and flag (and drop bad ones unless told not to).
    Verify {
        /// Drop packets with a bad checksum.
        drop: bool,
    },
    /// Compute every checksum.
    Fill,
    /// Do what the transmit flags ask.
    Offload,
}

const REASONS: &[&str] = &[
    "bad-ip-checksum",
    "bad-l4-checksum",
    "bad-outer-ip-checksum",
    "bad-outer-l4-checksum",
    "bad-length",
    "shared-buffer",
];
const E_IP: u8 = 0;
const E_L4: u8 = 1;
const E_OUTER_IP: u8 = 2;
const E_OUTER_L4: u8 = 3;
const E_LENGTH: u8 = 4;
const E_SHARED: u8 = 5;

/// The checksum stage.
#[derive(Debug)]
pub struct ChecksumStage {
    mode: Mode,
    ports: TunnelPorts,
    counters: Arc<StageCounters>,
}

impl ChecksumStage {
    /// A stage in `mode`.
    pub fn new(mode: Mode) -> ChecksumStage {
        ChecksumStage { mode, ports: TunnelPorts::default(), counters: StageCounters::new("checksum", REASONS) }
    }

    /// Builds the stage from its spec.
    pub fn from_spec(s: &mut Spec) -> Result<ChecksumStage, Error> {
        let mode = s.take_choice("mode", &["verify", "fill", "offload"])?.unwrap_or("verify");
        let drop = s.take_bool("drop")?;
        s.finish(false)?;
        if drop.is_some() && mode != "verify" {
            return Err(s.error("drop= goes with mode=verify only", None));
        }
        Ok(ChecksumStage::new(match mode {
            "fill" => Mode::Fill,
            "offload" => Mode::Offload,
            _ => Mode::Verify { drop: drop.unwrap_or(true) },
        }))
    }
}

impl Stage for ChecksumStage {
    fn name(&self) -> &'static str {
        "checksum"
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let ports = self.ports;
        match self.mode {
            Mode::Verify { drop } => filter(batch, ctx, &self.counters, |m| verify(m, &ports, drop)),
            Mode::Fill => filter(batch, ctx, &self.counters, |m| fill(m, &ports)),
            Mode::Offload => filter(batch, ctx, &self.counters, offload_one),
        }
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

/// An IP header found at `off`: where its L4 is, how long, and the pseudo-header sum.
#[derive(Debug, Clone, Copy)]
struct Ip {
    v4: bool,
    off: usize,
    hl: usize,
    l4_off: usize,
    l4_len: usize,
    pseudo: u16,
}

/// Reads the IP header at `off` whose header (with options / extensions) is `hl` bytes, for an L4
/// of protocol `proto`. `None` when the lengths do not fit the packet.
#[inline]
fn ip_at(m: &Mbuf, off: usize, hl: usize, proto: u8) -> Option<Ip> {
    let d = m.data();
    let h = d.get(off..off + hl)?;
    if h.len() < 20 {
        return None;
    }
    let (v4, l4_len) = match h[0] >> 4 {
        4 => (true, (get_u16(h, 2) as usize).checked_sub(hl)?),
        6 if hl >= 40 => (false, (get_u16(h, 4) as usize + 40).checked_sub(hl)?),
        _ => return None,
    };
    if off + hl + l4_len > m.pkt_len() {
        return None;
    }
    let pseudo = if v4 {
        checksum::pseudo_v4([h[12], h[13], h[14], h[15]], [h[16], h[17], h[18], h[19]], proto, l4_len as u32)
    } else {
        let mut s = [0u8; 16];
        let mut t = [0u8; 16];
        s.copy_from_slice(&h[8..24]);
        t.copy_from_slice(&h[24..40]);
        checksum::pseudo_v6(&s, &t, proto, l4_len as u32)
    };
    Some(Ip { v4, off, hl, l4_off: off + hl, l4_len, pseudo })
}

/// Sum of pseudo-header and the L4 bytes (checksum field included) across segments.
#[inline]
fn l4_sum(m: &Mbuf, ip: &Ip) -> Option<u16> {
    let mut s = Sum::new(ip.pseudo);
    checksum::add_chain(&mut s, m, ip.l4_off, ip.l4_len)?;
    Some(s.sum())
}

/// Offset of the checksum field in an L4 header of `proto`.
#[inline]
fn csum_field(proto: u8) -> usize {
    if proto == ip_proto::TCP {
        16
    } else {
        6
    }
}

/// Computes and writes the L4 checksum (TCP or UDP) of `ip`'s payload.
#[inline]
fn fill_l4(m: &mut Mbuf, ip: &Ip, proto: u8) -> Result<(), u8> {
    let at = ip.l4_off + csum_field(proto);
    if at + 2 > m.data_len() || ip.l4_len < at + 2 - ip.l4_off {
        return Err(E_LENGTH);
    }
    let old = get_u16(m.data(), at);
    let total = l4_sum(m, ip).ok_or(E_LENGTH)?;
    // The sum without the old field: S0 = S + ~old (one's complement subtraction).
    let mut c = !checksum::add(total, !old);
    if proto == ip_proto::UDP {
        c = checksum::udp_wire(c);
    }
    m.data_mut()[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Computes and writes an IPv4 header checksum.
#[inline]
fn fill_ip(m: &mut Mbuf, off: usize, hl: usize) -> Result<(), u8> {
    let d = m.data_mut();
    let h = d.get_mut(off..off + hl).ok_or(E_LENGTH)?;
    if hl < 20 {
        return Err(E_LENGTH);
    }
    h[10] = 0;
    h[11] = 0;
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn l4_proto(nibble: u32) -> Option<u8> {
    match nibble {
        ptype::L4_TCP => Some(ip_proto::TCP),
        ptype::L4_UDP => Some(ip_proto::UDP),
        _ => None,
    }
}

/// An IP header and its L4 protocol when TCP or UDP.
type Layer = (Ip, Option<u8>);

/// The IP layers of a parsed frame: (outer or only, inner), each with its L4 protocol if TCP/UDP.
#[inline]
fn layers(m: &Mbuf, p: &Parsed) -> Result<[Option<Layer>; 2], u8> {
    let mut out = [None, None];
    if p.ptype & ptype::L3_MASK == 0 {
        return Ok(out);
    }
    let proto = l4_proto(p.ptype & ptype::L4_MASK);
    let ip = ip_at(m, p.l3_offset(), p.lens.l3_len as usize, proto.unwrap_or(0)).ok_or(E_LENGTH)?;
    out[0] = Some((ip, proto));
    if p.is_tunnel() && p.ptype & ptype::INNER_L3_MASK != 0 {
        let iproto = l4_proto((p.ptype & ptype::INNER_L4_MASK) >> 16);
        let off = p.inner_offset() + p.lens.inner_l2_len as usize;
        let ip = ip_at(m, off, p.lens.inner_l3_len as usize, iproto.unwrap_or(0)).ok_or(E_LENGTH)?;
        out[1] = Some((ip, iproto));
    }
    Ok(out)
}

#[inline]
fn verify(m: &mut Mbuf, ports: &TunnelPorts, drop: bool) -> Result<(), u8> {
    let p = parse::parse_with(m.data(), ports);
    let ls = layers(m, &p)?;
    let tunnel = ls[1].is_some();
    let mut flags = 0u64;
    let mut err = None;
    for (i, l) in ls.iter().enumerate() {
        let Some((ip, proto)) = l else { continue };
        let outer = tunnel && i == 0;
        if ip.v4 {
            let good = checksum::sum(&m.data()[ip.off..ip.off + ip.hl]) == 0xffff;
            flags |= match (outer, good) {
                (true, true) => 0,
                (true, false) => offload::RX_OUTER_IP_CKSUM_BAD,
                (false, true) => offload::RX_IP_CKSUM_GOOD,
                (false, false) => offload::RX_IP_CKSUM_BAD,
            };
            if !good {
                err = err.or(Some(if outer { E_OUTER_IP } else { E_IP }));
            }
        }
        let Some(proto) = *proto else { continue };
        let at = ip.l4_off + csum_field(proto);
        if at + 2 > m.data_len() {
            return Err(E_LENGTH);
        }
        if proto == ip_proto::UDP && ip.v4 && get_u16(m.data(), at) == 0 {
            continue;
        }
        let good = l4_sum(m, ip).ok_or(E_LENGTH)? == 0xffff;
        flags |= match (outer, good) {
            (true, true) => offload::RX_OUTER_L4_CKSUM_GOOD,
            (true, false) => offload::RX_OUTER_L4_CKSUM_BAD,
            (false, true) => offload::RX_L4_CKSUM_GOOD,
            (false, false) => offload::RX_L4_CKSUM_BAD,
        };
        if !good {
            err = err.or(Some(if outer { E_OUTER_L4 } else { E_L4 }));
        }
    }
    let clear = offload::RX_IP_CKSUM_GOOD
        | offload::RX_IP_CKSUM_BAD
        | offload::RX_L4_CKSUM_GOOD
        | offload::RX_L4_CKSUM_BAD
        | offload::RX_OUTER_IP_CKSUM_BAD
        | offload::RX_OUTER_L4_CKSUM_GOOD
        | offload::RX_OUTER_L4_CKSUM_BAD;
    m.set_ol_flags((m.ol_flags() & !clear) | flags);
    match err {
        Some(e) if drop => Err(e),
        _ => Ok(()),
    }
}

#[inline]
fn fill(m: &mut Mbuf, ports: &TunnelPorts) -> Result<(), u8> {
    if !m.is_writable() {
        return Err(E_SHARED);
    }
    let p = parse::parse_with(m.data(), ports);
    let ls = layers(m, &p)?;
    // Inner first: the outer UDP checksum covers it.
    for (ip, proto) in ls.iter().rev().flatten() {
        if ip.v4 {
            fill_ip(m, ip.off, ip.hl)?;
        }
        if let Some(proto) = *proto {
            fill_l4(m, ip, proto)?;
        }
    }
    Ok(())
}

/// Requests `offload` serves.
const SERVED: u64 = offload::TX_IP_CKSUM
    | offload::TX_TCP_CKSUM
    | offload::TX_UDP_CKSUM
    | offload::TX_OUTER_IP_CKSUM
    | offload::TX_OUTER_UDP_CKSUM;

#[inline]
fn offload_one(m: &mut Mbuf) -> Result<(), u8> {
    offload_masked(m, SERVED)
}

/// Does the checksum requests of `m` that are in `mask`, and clears them (`offload` passes
/// every request; the `tx-offload` fallback passes those the output port cannot do).
#[inline]
pub(crate) fn offload_masked(m: &mut Mbuf, mask: u64) -> Result<(), u8> {
    let f = m.ol_flags();
    let todo = f & SERVED & mask;
    if todo == 0 || f & offload::TX_SEG_MASK != 0 {
        return Ok(());
    }
    if !m.is_writable() {
        return Err(E_SHARED);
    }
    let tunnel = f & (offload::TX_TUNNEL_MASK | offload::TX_OUTER_IPV4 | offload::TX_OUTER_IPV6) != 0;
    let (ol2, ol3) = (m.outer_l2_len() as usize, m.outer_l3_len() as usize);
    let base = if tunnel { ol2 + ol3 } else { 0 };
    let l3 = base + m.l2_len() as usize;
    let hl = m.l3_len() as usize;
    if todo & offload::TX_IP_CKSUM != 0 {
        fill_ip(m, l3, hl)?;
    }
    let l4 = todo & (offload::TX_TCP_CKSUM | offload::TX_UDP_CKSUM);
    if l4 != 0 {
        let proto = if l4 == offload::TX_TCP_CKSUM { ip_proto::TCP } else { ip_proto::UDP };
        let ip = ip_at(m, l3, hl, proto).ok_or(E_LENGTH)?;
        fill_l4(m, &ip, proto)?;
    }
    if tunnel && todo & offload::TX_OUTER_IP_CKSUM != 0 {
        fill_ip(m, ol2, ol3)?;
    }
    if tunnel && todo & offload::TX_OUTER_UDP_CKSUM != 0 {
        let ip = ip_at(m, ol2, ol3, ip_proto::UDP).ok_or(E_LENGTH)?;
        fill_l4(m, &ip, ip_proto::UDP)?;
    }
    m.set_ol_flags(f & !todo);
    Ok(())
}
