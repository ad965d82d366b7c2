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

/// Why a frame's offload request cannot be expressed in a virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// The l2/l3/l4 lengths are missing or do not fit the packet.
    BadLengths,
    /// TSO/USO of a tunnelled packet (not offered by this port: segment in software first).
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
}

/// Builds the header (and patches) for `m` from its transmit offload flags.
pub fn tx_plan(m: &Mbuf) -> Result<TxPlan, TxError> {
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
            if tunnel {
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
        }
    }
    if p.patch_len > PATCH_MAX || p.patch_len > first {
        return Err(TxError::BadLengths);
    }
    Ok(p)
}

/// Applies a plan's patches to `head`, a copy of the first `plan.patch_len` bytes of the frame.
pub fn apply_patches(plan: &TxPlan, head: &mut [u8]) {
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
        assert_eq!(tx_plan(&m).unwrap(), TxPlan::default());
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
        let plan = tx_plan(&m).unwrap();
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

    #[test]
    fn bad_requests_are_refused() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        m.append(60).unwrap().copy_from_slice(&tcp4(6));
        m.set_ol_flags(TX_IPV4 | TX_TCP_CKSUM);
        assert_eq!(tx_plan(&m), Err(TxError::BadLengths));
        m.set_l2_len(14);
        m.set_l3_len(20);
        assert!(tx_plan(&m).is_ok());
        m.set_ol_flags(TX_IPV4 | TX_TCP_SEG);
        m.set_l4_len(20);
        assert_eq!(tx_plan(&m), Err(TxError::NoSegSize));
        m.set_tso_segsz(100);
        m.set_ol_flags(TX_IPV4 | TX_TCP_SEG | TX_TUNNEL_VXLAN);
        assert_eq!(tx_plan(&m), Err(TxError::TunnelSeg));
        m.set_l3_len(2000);
        m.set_ol_flags(TX_IPV4 | TX_UDP_CKSUM);
        assert_eq!(tx_plan(&m), Err(TxError::BadLengths));
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
