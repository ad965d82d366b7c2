//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes, little-endian) and its mapping to
//! and from the mbuf's offload flags ([`fastpath_mempool::offload`]).
//!
//! ```text
//!  0        1          2          4          6            8             10
//!  +--------+----------+----------+----------+------------+-------------+
//!  | flags  | gso_type | hdr_len  | gso_size | csum_start | csum_offset |
//!  +--------+----------+----------+----------+------------+-------------+
//! ```
//!
//! Checksum convention (DPDK's, kept by every fastpath port): when an mbuf asks for an L4
//! checksum offload, its checksum field holds the pseudo-header sum (not inverted), *with* the L4
//! length for a plain checksum request and *without* it for TSO/USO. Linux's GSO wants the length
//! in it in both cases, so transmit adds the L4 length for TSO/USO (on a stack copy of the headers,
//! the mbuf is never written) and receive subtracts it from a GSO frame (as DPDK's virtio PMD
//! `virtio_tso_fix_cksum` does, in the other direction).
//!
//! Transmit also computes the IPv4 header checksums asked for (`TX_IP_CKSUM`, `TX_OUTER_IP_CKSUM`)
//! on the same stack copy: the kernel validates the IPv4 header of every frame it is given, and
//! the virtio header has no way to ask for it.
//!
//! GSO over a UDP tunnel (VXLAN, GENEVE) takes the longer header of Linux 6.17 and later
//! (`struct virtio_net_hdr_v1_hash_tunnel`, [`TNL_HDR_LEN`] bytes, chosen with
//! `TUNSETVNETHDRSZ`): the ten bytes above, the unused `num_buffers` and hash fields, then the
//! offsets of the outer UDP header and of the inner network header.
//!
//! ```text
//!  0 ........ 10          12           16            18        20               22              24
//!  | as above | num_buffers| hash_value | hash_report | padding | outer_th_offset | inner_nh_offset |
//! ```
//!
//! `gso_type` is then the inner type (TCPV4/TCPV6) or'ed with [`GSO_UDP_TUNNEL_IPV4`] or
//! [`GSO_UDP_TUNNEL_IPV6`] (the outer family), `csum_start`/`csum_offset` point at the inner TCP
//! checksum, and [`F_UDP_TUNNEL_CSUM`] asks the kernel for each segment's outer UDP checksum, whose
//! field then holds the outer pseudo-header sum with the UDP length (as Linux keeps it).

use fastpath_mempool::offload::*;
use fastpath_mempool::Mbuf;

use crate::virtio_net::l2_and_ethertype;
pub use crate::virtio_net::{
    csum_add, csum_sub, fold, ones_sum, NetHdr as VirtioNetHdr, HDR_LEN, VIRTIO_NET_HDR_F_DATA_VALID as F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM as F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN as GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE as GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4 as GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 as GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP as GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4 as GSO_UDP_L4,
};

/// Largest header prefix patched on a stack copy at transmit.
pub const PATCH_MAX: usize = 256;

/// Bytes of `struct virtio_net_hdr_v1_hash_tunnel` (GSO over UDP tunnels, Linux 6.17+).
pub const TNL_HDR_LEN: usize = 24;
/// `gso_type` bit: GSO over a UDP tunnel whose outer header is IPv4.
pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// `gso_type` bit: GSO over a UDP tunnel whose outer header is IPv6.
pub const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
/// Header flag: compute the outer UDP checksum of every segment of a tunnel GSO frame.
pub const F_UDP_TUNNEL_CSUM: u8 = 8;

/// Why a frame's offload request cannot be expressed in a virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// The l2/l3/l4 lengths are missing or do not fit the packet.
    BadLengths,
    /// TSO/USO of a tunnelled packet that the header cannot carry (GRE, USO inside a tunnel,
    /// or a queue without the tunnel header): segment in software first.
    TunnelSeg,
    /// TSO/USO without a segment size.
    NoSegSize,
}

/// What transmit writes: the header, and the patches to apply to a stack copy of the first
/// `patch_len` bytes of the frame (0: send the mbuf's bytes as they are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxPlan {
    /// The header to send in front of the frame.
    pub hdr: VirtioNetHdr,
    /// IPv4 headers whose checksum to compute: (offset, header length); 0 length for none.
    pub ip_csum: [(u16, u16); 2],
    /// Offset of the L4 checksum field and the L4 length to add to it (TSO/USO).
    pub len_fix: Option<(u16, u16)>,
    /// Bytes of the frame copied and patched.
    pub patch_len: usize,
    /// Tunnel GSO: offsets of the outer UDP header and of the inner network header (0: none).
    pub tunnel: (u16, u16),
    /// Tunnel GSO with the outer UDP checksum: the field's offset and the outer pseudo-header
    /// sum (with the UDP length) to put in it.
    pub outer_udp: Option<(u16, u16)>,
}

impl TxPlan {
    /// The header bytes for a queue whose header is `len` bytes (`HDR_LEN` or `TNL_HDR_LEN`).
    pub fn emit(&self, len: usize) -> [u8; TNL_HDR_LEN] {
        let mut b = [0u8; TNL_HDR_LEN];
        b[..HDR_LEN].copy_from_slice(&self.hdr.emit_short());
        if len >= TNL_HDR_LEN {
            b[20..22].copy_from_slice(&self.tunnel.0.to_le_bytes());
            b[22..24].copy_from_slice(&self.tunnel.1.to_le_bytes());
        }
        b
    }
}

/// Builds the header (and patches) for `m` from its transmit offload flags. `tunnel_gso`: the
/// queue's header has the tunnel fields ([`TNL_HDR_LEN`]), so TSO inside VXLAN or GENEVE can be
/// left to the kernel.
pub fn tx_plan(m: &Mbuf, tunnel_gso: bool) -> Result<TxPlan, TxError> {
    let f = m.ol_flags();
    let mut p = TxPlan::default();
    let want_l4 = f & (TX_TCP_CKSUM | TX_UDP_CKSUM | TX_SEG_MASK) != 0;
    let want_ip = f & TX_IP_CKSUM != 0 && f & TX_IPV6 == 0;
    let tunnel = f & TX_TUNNEL_MASK != 0;
    let want_outer_ip = tunnel && f & TX_OUTER_IP_CKSUM != 0 && f & TX_OUTER_IPV6 == 0;
    if !want_l4 && !want_ip && !want_outer_ip {
        return Ok(p);
    }
    let outer = if tunnel { m.outer_l2_len() as usize + m.outer_l3_len() as usize } else { 0 };
    let l3_start = outer + m.l2_len() as usize;
    let l4_start = l3_start + m.l3_len() as usize;
    let pkt = m.pkt_len();
    let first = m.data_len();
    if want_outer_ip {
        let (o, l) = (m.outer_l2_len() as usize, m.outer_l3_len() as usize);
        if l < 20 || o + l > first {
            return Err(TxError::BadLengths);
        }
        p.ip_csum[0] = (o as u16, l as u16);
        p.patch_len = o + l;
    }
    let seg = f & TX_SEG_MASK != 0;
    // The kernel checks every IPv4 header it is given, so a GSO frame's is filled in too.
    if want_ip || (seg && f & TX_IPV6 == 0) {
        let l = m.l3_len() as usize;
        if m.l2_len() == 0 || l < 20 || l4_start > first {
            return Err(TxError::BadLengths);
        }
        p.ip_csum[1] = (l3_start as u16, l as u16);
        p.patch_len = p.patch_len.max(l4_start);
    }
    if want_l4 {
        let tcp = f & (TX_TCP_SEG | TX_TCP_CKSUM) != 0 && f & TX_UDP_SEG == 0;
        let off: usize = if tcp { 16 } else { 6 };
        if m.l2_len() == 0 || m.l3_len() == 0 || l4_start + off + 2 > pkt || l4_start > u16::MAX as usize {
            return Err(TxError::BadLengths);
        }
        p.hdr.flags = F_NEEDS_CSUM;
        p.hdr.csum_start = l4_start as u16;
        p.hdr.csum_offset = off as u16;
        if seg {
            let udp_tunnel = f & (TX_TUNNEL_VXLAN | TX_TUNNEL_GENEVE) != 0;
            if tunnel && !(tunnel_gso && tcp && udp_tunnel) {
                return Err(TxError::TunnelSeg);
            }
            if m.tso_segsz() == 0 {
                return Err(TxError::NoSegSize);
            }
            let l4_len = m.l4_len() as usize;
            let l4_bytes = pkt - l4_start;
            if l4_len < if tcp { 20 } else { 8 } || l4_start + l4_len > first || l4_bytes > u16::MAX as usize {
                return Err(TxError::BadLengths);
            }
            p.hdr.gso_type = match (tcp, f & TX_IPV6 != 0) {
                (true, false) => GSO_TCPV4,
                (true, true) => GSO_TCPV6,
                (false, _) => GSO_UDP_L4,
            };
            p.hdr.gso_size = m.tso_segsz();
            p.hdr.hdr_len = (l4_start + l4_len) as u16;
            p.len_fix = Some(((l4_start + off) as u16, l4_bytes as u16));
            p.patch_len = p.patch_len.max(l4_start + off + 2);
            if tunnel {
                tunnel_fields(m, &mut p, outer, l3_start)?;
            }
        }
    }
    if p.patch_len > PATCH_MAX || p.patch_len > first {
        return Err(TxError::BadLengths);
    }
    Ok(p)
}

/// The tunnel half of a TSO plan: the outer family in `gso_type`, the two offsets, the outer
/// length checks and the outer UDP checksum request. `outer`: bytes of outer L2 + L3;
/// `inner_nh`: where the inner network header starts.
fn tunnel_fields(m: &Mbuf, p: &mut TxPlan, outer: usize, inner_nh: usize) -> Result<(), TxError> {
    let f = m.ol_flags();
    let v6 = f & TX_OUTER_IPV6 != 0;
    let ol2 = m.outer_l2_len() as usize;
    let pkt = m.pkt_len();
    // Outer UDP header (8) and at least the inner network header before the inner L4.
    if outer < ol2 + if v6 { 40 } else { 20 } || inner_nh < outer + 8 || outer + 8 > m.data_len() {
        return Err(TxError::BadLengths);
    }
    // The outer IPv4 total length must hold the whole GSO packet (the kernel trims to it).
    let ip_len = pkt - ol2;
    if (!v6 && ip_len > u16::MAX as usize) || pkt - outer > u16::MAX as usize {
        return Err(TxError::BadLengths);
    }
    p.hdr.gso_type |= if v6 { GSO_UDP_TUNNEL_IPV6 } else { GSO_UDP_TUNNEL_IPV4 };
    p.tunnel = (outer as u16, inner_nh as u16);
    if f & TX_OUTER_UDP_CKSUM != 0 {
        let d = m.data();
        let udp_len = (pkt - outer) as u64;
        let addrs = if v6 { &d[ol2 + 8..ol2 + 40] } else { &d[ol2 + 12..ol2 + 20] };
        p.hdr.flags |= F_UDP_TUNNEL_CSUM;
        p.outer_udp = Some(((outer + 6) as u16, fold(ones_sum(addrs, false) + 17 + udp_len)));
        p.patch_len = p.patch_len.max(outer + 8);
    }
    Ok(())
}

/// Applies a plan's patches to `head`, a copy of the first `plan.patch_len` bytes of the frame.
pub fn apply_patches(plan: &TxPlan, head: &mut [u8]) {
    if let Some((at, sum)) = plan.outer_udp {
        let at = at as usize;
        head[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    if let Some((at, add)) = plan.len_fix {
        let at = at as usize;
        let old = u16::from_be_bytes([head[at], head[at + 1]]);
        head[at..at + 2].copy_from_slice(&csum_add(old, add).to_be_bytes());
    }
    for &(at, len) in &plan.ip_csum {
        if len == 0 {
            continue;
        }
        let (at, len) = (at as usize, len as usize);
        let h = &mut head[at..at + len];
        h[10] = 0;
        h[11] = 0;
        let c = !fold(ones_sum(h, false));
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Why a received header cannot be mapped (the frame is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxError {
    /// `csum_start`/`csum_offset` point outside the frame.
    BadCsum,
    /// An unsupported GSO type, or GSO without the headers it needs.
    BadGso,
}

/// Maps a received header onto `m`'s flags and lengths (see the module doc for the checksum
/// convention). `m` must be writable (a freshly received mbuf).
pub fn apply_rx(h: &VirtioNetHdr, m: &mut Mbuf) -> Result<(), RxError> {
    if h.flags & F_DATA_VALID != 0 {
        m.add_ol_flags(RX_L4_CKSUM_GOOD);
    }
    let gso = h.gso_type & !GSO_ECN;
    if gso & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6) != 0 {
        // Only the long header carries the offsets ([`apply_rx_tunnel`]).
        return Err(RxError::BadGso);
    }
    if h.flags & F_NEEDS_CSUM == 0 {
        return if gso == GSO_NONE { Ok(()) } else { Err(RxError::BadGso) };
    }
    let pkt = m.pkt_len();
    let (cs, co) = (h.csum_start as usize, h.csum_offset as usize);
    if cs + co + 2 > pkt || cs + co + 2 > m.data_len() {
        return Err(RxError::BadCsum);
    }
    let mut flags = RX_L4_CKSUM_PARTIAL;
    let (l2, ip) = l2_and_ethertype(m.data()).unwrap_or((0, 0));
    let v4 = ip == 0x0800;
    if (v4 || ip == 0x86dd) && cs > l2 {
        flags |= if v4 { TX_IPV4 } else { TX_IPV6 };
        m.set_l2_len(l2 as u8);
        m.set_l3_len((cs - l2) as u16);
        match co {
            16 => flags |= TX_TCP_CKSUM,
            6 => flags |= TX_UDP_CKSUM,
            _ => {}
        }
    } else if gso != GSO_NONE {
        return Err(RxError::BadGso);
    }
    if gso != GSO_NONE {
        if h.gso_size == 0 {
            return Err(RxError::BadGso);
        }
        let d = m.data();
        let l4_len = match gso {
            GSO_TCPV4 | GSO_TCPV6 if co == 16 && cs + 13 < d.len() => ((d[cs + 12] >> 4) as usize) * 4,
            GSO_UDP_L4 if co == 6 => 8,
            _ => return Err(RxError::BadGso),
        };
        if l4_len < 8 || pkt - cs > u16::MAX as usize {
            return Err(RxError::BadGso);
        }
        flags |= if gso == GSO_UDP_L4 { TX_UDP_SEG } else { TX_TCP_SEG };
        if v4 {
            flags |= TX_IP_CKSUM;
        }
        m.set_l4_len(l4_len as u8);
        m.set_tso_segsz(h.gso_size);
        // Linux leaves the pseudo-header sum with the L4 length in the field; the convention
        // for TSO/USO mbufs is without it.
        let at = cs + co;
        let d = m.data_mut();
        let old = u16::from_be_bytes([d[at], d[at + 1]]);
        d[at..at + 2].copy_from_slice(&csum_sub(old, (pkt - cs) as u16).to_be_bytes());
    }
    m.add_ol_flags(flags);
    Ok(())
}

/// The GENEVE UDP port; any other tunnel port is taken for VXLAN (the two are cut alike).
const GENEVE_PORT: u16 = 6081;

/// Maps a received tunnel GSO header (`gso_type` with [`GSO_UDP_TUNNEL_IPV4`] or
/// [`GSO_UDP_TUNNEL_IPV6`]; `outer_th` and `inner_nh` from the long header) onto `m`: a TSO (or
/// USO) request inside a UDP tunnel (`TX_TCP_SEG` / `TX_UDP_SEG`, `TX_TUNNEL_VXLAN` or
/// `TX_TUNNEL_GENEVE` by the UDP destination port, the outer family, the outer and inner
/// lengths, `tso_segsz`), the inner L4 checksum field brought to the TSO convention (without
/// the length). The outer checksums stay
/// as the kernel left them (`RX_L4_CKSUM_PARTIAL`: valid data; decap strips them).
pub fn apply_rx_tunnel(h: &VirtioNetHdr, outer_th: usize, inner_nh: usize, m: &mut Mbuf) -> Result<(), RxError> {
    let tnl = h.gso_type & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6);
    let outer_v6 = match tnl {
        GSO_UDP_TUNNEL_IPV4 => false,
        GSO_UDP_TUNNEL_IPV6 => true,
        _ => return Err(RxError::BadGso),
    };
    // The inner packet: TCP (its family in the type) or UDP (USO: the family from the header).
    let inner = h.gso_type & !(tnl | GSO_ECN);
    let tcp = match inner {
        GSO_TCPV4 | GSO_TCPV6 => true,
        GSO_UDP_L4 => false,
        _ => return Err(RxError::BadGso),
    };
    if h.flags & F_NEEDS_CSUM == 0 || h.gso_size == 0 || h.csum_offset != if tcp { 16 } else { 6 } {
        return Err(RxError::BadGso);
    }
    let cs = h.csum_start as usize;
    let (pkt, first) = (m.pkt_len(), m.data_len());
    let d = m.data();
    let Some((ol2, et)) = l2_and_ethertype(d) else { return Err(RxError::BadGso) };
    if et != if outer_v6 { 0x86dd } else { 0x0800 } || inner_nh >= first {
        return Err(RxError::BadGso);
    }
    let inner_v6 = match inner {
        GSO_TCPV4 => false,
        GSO_TCPV6 => true,
        _ => d[inner_nh] >> 4 == 6,
    };
    let ol3 = outer_th.wrapping_sub(ol2);
    let l2 = inner_nh.wrapping_sub(outer_th);
    let l3 = cs.wrapping_sub(inner_nh);
    if outer_th < ol2 + if outer_v6 { 40 } else { 20 }
        || ol3 > u8::MAX as usize
        || l2 < 8 + 14
        || l2 > u8::MAX as usize
        || l3 < if inner_v6 { 40 } else { 20 }
        || cs + 20 > first
        || cs + 18 > pkt
    {
        return Err(RxError::BadCsum);
    }
    let l4_len = if tcp { ((d[cs + 12] >> 4) as usize) * 4 } else { 8 };
    if l4_len < 8 || cs + l4_len > first || pkt - cs > u16::MAX as usize {
        return Err(RxError::BadGso);
    }
    let dport = u16::from_be_bytes([d[outer_th + 2], d[outer_th + 3]]);
    let mut flags = RX_L4_CKSUM_PARTIAL | if tcp { TX_TCP_SEG | TX_TCP_CKSUM } else { TX_UDP_SEG | TX_UDP_CKSUM };
    flags |= if dport == GENEVE_PORT { TX_TUNNEL_GENEVE } else { TX_TUNNEL_VXLAN };
    flags |= if outer_v6 { TX_OUTER_IPV6 } else { TX_OUTER_IPV4 | TX_OUTER_IP_CKSUM };
    flags |= if inner_v6 { TX_IPV6 } else { TX_IPV4 | TX_IP_CKSUM };
    if h.flags & F_UDP_TUNNEL_CSUM != 0 {
        flags |= TX_OUTER_UDP_CKSUM;
    }
    m.set_outer_l2_len(ol2 as u8);
    m.set_outer_l3_len(ol3 as u8);
    m.set_l2_len(l2 as u8);
    m.set_l3_len(l3 as u16);
    m.set_l4_len(l4_len as u8);
    m.set_tso_segsz(h.gso_size);
    // Linux leaves the inner pseudo-header sum with the L4 length; TSO/USO mbufs hold it without.
    let at = cs + h.csum_offset as usize;
    let d = m.data_mut();
    let old = u16::from_be_bytes([d[at], d[at + 1]]);
    d[at..at + 2].copy_from_slice(&csum_sub(old, (pkt - cs) as u16).to_be_bytes());
    m.add_ol_flags(flags);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};

    fn pool() -> Mempool {
        Mempool::new("vnet", &PoolConfig { mbufs: 64, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
    }

    /// A TCP/IPv4 frame: 14 + 20 + 20 + payload.
    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 54 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        let tot = (40 + payload) as u16;
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[46] = 0x50;
        f
    }

    #[test]
    fn golden_header_bytes() {
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        let b = h.emit_short();
        assert_eq!(b, [0x01, 0x01, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00]);
        assert_eq!(VirtioNetHdr::parse_short(&b), h);
    }

    #[test]
    fn plain_frame_gets_an_empty_header() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        m.append(60).unwrap();
        assert_eq!(tx_plan(&m, false).unwrap(), TxPlan::default());
    }

    #[test]
    fn tso_plan_and_patches() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let f = tcp4(1000);
        m.append(f.len()).unwrap().copy_from_slice(&f);
        m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG);
        m.set_l2_len(14);
        m.set_l3_len(20);
        m.set_l4_len(20);
        m.set_tso_segsz(400);
        // DPDK convention: pseudo-header sum without the length.
        let ph = fold(ones_sum(&f[26..34], false) + 6);
        m.data_mut()[50..52].copy_from_slice(&ph.to_be_bytes());
        let plan = tx_plan(&m, false).unwrap();
        assert_eq!(plan.hdr.gso_type, GSO_TCPV4);
        assert_eq!((plan.hdr.csum_start, plan.hdr.csum_offset, plan.hdr.hdr_len, plan.hdr.gso_size), (34, 16, 54, 400));
        assert_eq!(plan.len_fix, Some((50, 1020)));
        let mut head = m.data()[..plan.patch_len].to_vec();
        apply_patches(&plan, &mut head);
        // The field now holds the pseudo-header with the TCP length, as Linux wants.
        let want = fold(ones_sum(&f[26..34], false) + 6 + 1020);
        assert_eq!(u16::from_be_bytes([head[50], head[51]]), want);
        // And the IPv4 header checksums to zero.
        assert_eq!(fold(ones_sum(&head[14..34], false)), 0xffff);
        // The mbuf itself is untouched.
        assert_eq!(u16::from_be_bytes([m.data()[50], m.data()[51]]), ph);
    }

    /// A VXLAN frame (outer Ethernet + IPv4 + UDP + VXLAN) around `tcp4(payload)`.
    fn vxlan4(payload: usize, v6_outer: bool) -> Vec<u8> {
        let inner = tcp4(payload);
        let ol3 = if v6_outer { 40 } else { 20 };
        let mut f = vec![0u8; 14 + ol3 + 16];
        f[12..14].copy_from_slice(if v6_outer { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        if v6_outer {
            f[14] = 0x60;
            f[18..20].copy_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
            f[20] = 17;
            f[22..38].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f[38..54].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            f[14] = 0x45;
            f[16..18].copy_from_slice(&((20 + 16 + inner.len()) as u16).to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&[10, 50, 0, 1]);
            f[30..34].copy_from_slice(&[10, 50, 0, 2]);
        }
        let u = 14 + ol3;
        f[u + 2..u + 4].copy_from_slice(&4789u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
        f[u + 8] = 0x08;
        f.extend_from_slice(&inner);
        f
    }

    fn tunnel_tso_mbuf(p: &Mempool, v6_outer: bool) -> Mbuf {
        let mut m = p.alloc().unwrap();
        let f = vxlan4(1000, v6_outer);
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let mut fl = TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG | TX_TUNNEL_VXLAN;
        fl |= if v6_outer { TX_OUTER_IPV6 | TX_OUTER_UDP_CKSUM } else { TX_OUTER_IPV4 | TX_OUTER_IP_CKSUM };
        m.set_ol_flags(fl);
        m.set_outer_l2_len(14);
        m.set_outer_l3_len(if v6_outer { 40 } else { 20 });
        m.set_l2_len(30);
        m.set_l3_len(20);
        m.set_l4_len(20);
        m.set_tso_segsz(400);
        m
    }

    #[test]
    fn tunnel_tso_plan_fills_the_tunnel_fields() {
        let p = pool();
        let m = tunnel_tso_mbuf(&p, false);
        // A queue with the short header cannot carry it.
        assert_eq!(tx_plan(&m, false), Err(TxError::TunnelSeg));
        let plan = tx_plan(&m, true).unwrap();
        assert_eq!(plan.hdr.gso_type, GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4);
        assert_eq!(plan.hdr.flags, F_NEEDS_CSUM);
        // Inner TCP at 14 + 20 + 8 + 8 + 14 + 20 = 84; the UDP header at 34; inner IPv4 at 64.
        assert_eq!((plan.hdr.csum_start, plan.hdr.csum_offset, plan.hdr.hdr_len), (84, 16, 104));
        assert_eq!(plan.tunnel, (34, 64));
        assert_eq!(plan.outer_udp, None);
        let b = plan.emit(TNL_HDR_LEN);
        assert_eq!(b[1], 0x21);
        assert_eq!(&b[10..20], &[0; 10]);
        assert_eq!(&b[20..24], &[34, 0, 64, 0]);
        // The short header leaves the tunnel fields out.
        assert_eq!(&plan.emit(HDR_LEN)[20..24], &[0; 4]);
        let mut head = m.data()[..plan.patch_len].to_vec();
        apply_patches(&plan, &mut head);
        // Both IPv4 headers are checksummed.
        assert_eq!(fold(ones_sum(&head[14..34], false)), 0xffff);
        assert_eq!(fold(ones_sum(&head[64..84], false)), 0xffff);
        // GRE cannot go as tunnel GSO.
        let mut g = tunnel_tso_mbuf(&p, false);
        g.set_ol_flags((g.ol_flags() & !TX_TUNNEL_VXLAN) | TX_TUNNEL_GRE);
        assert_eq!(tx_plan(&g, true), Err(TxError::TunnelSeg));
    }

    #[test]
    fn tunnel_tso_with_the_outer_udp_checksum() {
        let p = pool();
        let m = tunnel_tso_mbuf(&p, true);
        let plan = tx_plan(&m, true).unwrap();
        assert_eq!(plan.hdr.gso_type, GSO_TCPV4 | GSO_UDP_TUNNEL_IPV6);
        assert_eq!(plan.hdr.flags, F_NEEDS_CSUM | F_UDP_TUNNEL_CSUM);
        assert_eq!(plan.tunnel, (54, 84));
        let d = m.data();
        let udp_len = (d.len() - 54) as u64;
        let want = fold(ones_sum(&d[22..54], false) + 17 + udp_len);
        assert_eq!(plan.outer_udp, Some((60, want)));
        let mut head = m.data()[..plan.patch_len].to_vec();
        apply_patches(&plan, &mut head);
        assert_eq!(u16::from_be_bytes([head[60], head[61]]), want);
    }

    #[test]
    fn tunnel_tso_longer_than_the_outer_ipv4_length_is_refused() {
        let p =
            Mempool::new("vnet-big", &PoolConfig { mbufs: 64, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
        let mut m = tunnel_tso_mbuf(&p, false);
        // Chain payload up to 65536 bytes of outer IPv4: the inner TCP (65466 bytes) would fit.
        while m.pkt_len() < 14 + 65536 {
            let mut s = p.alloc().unwrap();
            s.append((14 + 65536 - m.pkt_len()).min(1500)).unwrap();
            m.chain(s).unwrap();
        }
        assert_eq!(tx_plan(&m, true), Err(TxError::BadLengths));
        drop(m);
        // One byte less fits.
        let mut t = tunnel_tso_mbuf(&p, false);
        while t.pkt_len() < 14 + 65535 {
            let mut s = p.alloc().unwrap();
            s.append((14 + 65535 - t.pkt_len()).min(1500)).unwrap();
            t.chain(s).unwrap();
        }
        assert!(tx_plan(&t, true).is_ok());
    }

    /// The flags receive gives any GSO frame of IPv4 in VXLAN over IPv4, beside the L4 ones.
    const VXLAN4_RX: u64 =
        RX_L4_CKSUM_PARTIAL | TX_TUNNEL_VXLAN | TX_OUTER_IPV4 | TX_OUTER_IP_CKSUM | TX_IPV4 | TX_IP_CKSUM;

    /// The header Linux gives a TCP/IPv4 GSO frame in VXLAN over IPv4 (`vxlan4`'s layout).
    fn tunnel_hdr() -> VirtioNetHdr {
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4,
            hdr_len: 104,
            gso_size: 400,
            csum_start: 84,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn rx_tunnel_gso_maps_to_tso_inside_vxlan() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let mut f = vxlan4(1000, false);
        // Inner TCP at 84: Linux's pseudo-header sum with the TCP length (1020).
        let with_len = fold(ones_sum(&f[76..84], false) + 6 + 1020);
        f[100..102].copy_from_slice(&with_len.to_be_bytes());
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h = tunnel_hdr();
        // The short header path refuses it.
        assert_eq!(apply_rx(&h, &mut m), Err(RxError::BadGso));
        apply_rx_tunnel(&h, 34, 64, &mut m).unwrap();
        let want = VXLAN4_RX | TX_TCP_SEG | TX_TCP_CKSUM;
        assert_eq!(m.ol_flags(), want);
        assert_eq!((m.outer_l2_len(), m.outer_l3_len(), m.l2_len(), m.l3_len(), m.l4_len()), (14, 20, 30, 20, 20));
        assert_eq!(m.tso_segsz(), 400);
        let without = fold(ones_sum(&f[76..84], false) + 6);
        assert_eq!(u16::from_be_bytes([m.data()[100], m.data()[101]]), without);
        // And back: the transmit plan of the result is the header we got (less the flags the
        // receive side keeps for itself).
        let plan = tx_plan(&m, true).unwrap();
        assert_eq!((plan.hdr.gso_type, plan.hdr.csum_start, plan.hdr.gso_size), (h.gso_type, 84, 400));
        assert_eq!(plan.tunnel, (34, 64));
    }

    #[test]
    fn rx_tunnel_uso_maps_to_uso_inside_vxlan() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let mut f = vxlan4(1000, false);
        // Make the inner packet UDP: protocol 17, UDP length, Linux's partial sum with the length.
        f[64 + 9] = 17;
        let udp_len = (f.len() - 84) as u16;
        f[88..90].copy_from_slice(&udp_len.to_be_bytes());
        let with_len = fold(ones_sum(&f[76..84], false) + 17 + udp_len as u64);
        f[90..92].copy_from_slice(&with_len.to_be_bytes());
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h =
            VirtioNetHdr { gso_type: GSO_UDP_L4 | GSO_UDP_TUNNEL_IPV4, csum_offset: 6, hdr_len: 92, ..tunnel_hdr() };
        apply_rx_tunnel(&h, 34, 64, &mut m).unwrap();
        let want = VXLAN4_RX | TX_UDP_SEG | TX_UDP_CKSUM;
        assert_eq!(m.ol_flags(), want);
        assert_eq!((m.l2_len(), m.l3_len(), m.l4_len(), m.tso_segsz()), (30, 20, 8, 400));
        let without = fold(ones_sum(&f[76..84], false) + 17);
        assert_eq!(u16::from_be_bytes([m.data()[90], m.data()[91]]), without);
    }

    #[test]
    fn rx_tunnel_gso_with_bad_offsets_is_refused() {
        let p = pool();
        let f = vxlan4(1000, false);
        let h = tunnel_hdr();
        for (th, nh, cs, gso) in [
            (20, 64, 84, h.gso_type),                       // outer UDP inside the IPv4 header
            (34, 40, 84, h.gso_type),                       // no room for UDP + tunnel + Ethernet
            (34, 64, 70, h.gso_type),                       // inner TCP inside the inner IPv4 header
            (34, 64, 84, GSO_TCPV4 | GSO_UDP_TUNNEL_IPV6),  // the frame's outer header is IPv4
            (34, 64, 84, GSO_UDP_L4 | GSO_UDP_TUNNEL_IPV4), // USO with TCP's csum_offset
            (34, 64, 84, GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6),
            (34, 64, 2000, h.gso_type), // past the frame
        ] {
            let mut m = p.alloc().unwrap();
            m.append(f.len()).unwrap().copy_from_slice(&f);
            let h = VirtioNetHdr { gso_type: gso, csum_start: cs as u16, ..h };
            assert!(apply_rx_tunnel(&h, th, nh, &mut m).is_err(), "{th} {nh} {cs} {gso:#x}");
            assert_eq!(m.ol_flags(), 0);
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        m.append(60).unwrap().copy_from_slice(&tcp4(6));
        m.set_ol_flags(TX_IPV4 | TX_TCP_CKSUM);
        assert_eq!(tx_plan(&m, false), Err(TxError::BadLengths));
        m.set_l2_len(14);
        m.set_l3_len(20);
        assert!(tx_plan(&m, false).is_ok());
        m.set_ol_flags(TX_IPV4 | TX_TCP_SEG);
        m.set_l4_len(20);
        assert_eq!(tx_plan(&m, false), Err(TxError::NoSegSize));
        m.set_tso_segsz(100);
        m.set_ol_flags(TX_IPV4 | TX_TCP_SEG | TX_TUNNEL_VXLAN);
        assert_eq!(tx_plan(&m, false), Err(TxError::TunnelSeg));
        m.set_l3_len(2000);
        m.set_ol_flags(TX_IPV4 | TX_UDP_CKSUM);
        assert_eq!(tx_plan(&m, false), Err(TxError::BadLengths));
    }

    #[test]
    fn rx_gso_maps_to_tso_and_removes_the_length() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let mut f = tcp4(1000);
        let with_len = fold(ones_sum(&f[26..34], false) + 6 + 1020);
        f[50..52].copy_from_slice(&with_len.to_be_bytes());
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 500,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        apply_rx(&h, &mut m).unwrap();
        assert_eq!(m.ol_flags(), RX_L4_CKSUM_PARTIAL | TX_IPV4 | TX_TCP_CKSUM | TX_TCP_SEG | TX_IP_CKSUM);
        assert_eq!((m.l2_len(), m.l3_len(), m.l4_len(), m.tso_segsz()), (14, 20, 20, 500));
        let without = fold(ones_sum(&f[26..34], false) + 6);
        assert_eq!(u16::from_be_bytes([m.data()[50], m.data()[51]]), without);
        // Out of range checksum positions are refused.
        let bad = VirtioNetHdr { flags: F_NEEDS_CSUM, csum_start: 1060, csum_offset: 16, ..Default::default() };
        assert_eq!(apply_rx(&bad, &mut m), Err(RxError::BadCsum));
        let ufo =
            VirtioNetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_UDP, gso_size: 100, csum_start: 34, csum_offset: 6, ..h };
        assert_eq!(apply_rx(&ufo, &mut m), Err(RxError::BadGso));
    }
}
