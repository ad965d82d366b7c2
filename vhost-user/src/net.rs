//! virtio-net: feature bits, the per-packet header, and its mapping to and from mbuf offloads.
//!
//! ```text
//!  struct virtio_net_hdr_mrg_rxbuf (12 bytes; 10 without VERSION_1 and MRG_RXBUF)
//!  0      1         2        4         6          8           10           12
//!  +------+---------+--------+---------+----------+-----------+------------+
//!  |flags |gso_type | hdr_len| gso_size|csum_start|csum_offset|num_buffers |
//!  +------+---------+--------+---------+----------+-----------+------------+
//! ```
//!
//! Guest TX (dequeue): `NEEDS_CSUM` becomes [`RX_L4_CKSUM_PARTIAL`] plus the transmit request
//! (`TX_TCP_CKSUM` / `TX_UDP_CKSUM`) and the lengths, so that an output port or the checksum stage
//! can finish it; `DATA_VALID` becomes [`RX_L4_CKSUM_GOOD`]; a GSO type becomes `TX_TCP_SEG` /
//! `TX_UDP_SEG` with `tso_segsz = gso_size`, so a guest's 64 KiB TSO packet travels as one mbuf
//! chain and is cut only if the output port cannot take it.
//! Checksum convention (DPDK's, kept by every fastpath port): an mbuf asking for an L4 checksum
//! carries the pseudo-header sum in the checksum field, *with* the L4 length for a plain checksum
//! request and *without* it for TSO/USO. virtio (Linux) puts the length in for GSO too, so dequeue
//! subtracts it from a guest's GSO packet and enqueue adds it back for one going to the guest (as
//! DPDK's virtio PMD `virtio_tso_fix_cksum` does).
//!
//! Guest RX (enqueue): the reverse, for what the guest negotiated; a checksum request the guest
//! cannot take is completed in software here, a segmentation request it cannot take is refused
//! (the pipeline's LSO stage must run first).

use fastpath_mempool::offload::*;
use fastpath_mempool::Mbuf;

/// Device handles packets with partial checksum (guest TX `NEEDS_CSUM`).
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
/// Driver handles packets with partial checksum (guest RX `NEEDS_CSUM`).
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
/// Driver takes TSOv4.
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
/// Driver takes TSOv6.
pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
/// Device takes TSOv4.
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
/// Device takes TSOv6.
pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
/// Driver can merge receive buffers.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// Several queue pairs.
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// Indirect descriptors.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// used_event / avail_event notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// vhost-user: protocol features may be negotiated (and rings start disabled).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// virtio 1.0 (little-endian, 12-byte header).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Buffers are used in the order they were made available. Our data path consumes the avail
/// ring strictly in order and writes one used element per chain in that order, in both
/// directions, so it offers this; the driver then takes its cheaper in-order paths.
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
/// Packed virtqueues (virtio 1.1, 2.8) instead of split ones.
pub const VIRTIO_F_RING_PACKED: u64 = 1 << 34;
/// Driver takes USO over IPv4.
pub const VIRTIO_NET_F_GUEST_USO4: u64 = 1 << 54;
/// Driver takes USO over IPv6.
pub const VIRTIO_NET_F_GUEST_USO6: u64 = 1 << 55;
/// Device takes USO.
pub const VIRTIO_NET_F_HOST_USO: u64 = 1 << 56;

/// Everything this backend offers; the frontend acks a subset.
pub const OFFERED_FEATURES: u64 = VIRTIO_NET_F_CSUM
    | VIRTIO_NET_F_GUEST_CSUM
    | VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_GUEST_TSO6
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_HOST_TSO6
    | VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_NET_F_MQ
    | VIRTIO_RING_F_INDIRECT_DESC
    | VIRTIO_RING_F_EVENT_IDX
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_F_VERSION_1
    | VIRTIO_F_IN_ORDER
    | VIRTIO_F_RING_PACKED
    | VIRTIO_NET_F_GUEST_USO4
    | VIRTIO_NET_F_GUEST_USO6
    | VIRTIO_NET_F_HOST_USO;

use fastpath_pmd::virtio_net::{csum_add, csum_sub, fold, ones_sum};
pub use fastpath_pmd::virtio_net::{
    NetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};

/// Largest header.
pub const HDR_MAX: usize = fastpath_pmd::virtio_net::HDR_MRG_LEN;

/// Header length for the negotiated features: 12 with VERSION_1 or MRG_RXBUF, else 10.
pub fn hdr_len(features: u64) -> usize {
    if features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

/// Offload capabilities of the port for what the guest negotiated (transmit side = guest RX).
pub fn port_offloads(features: u64) -> fastpath_pmd::Offloads {
    use fastpath_pmd::Offloads as O;
    let mut o = O::TX_MULTI_SEGS;
    if features & VIRTIO_NET_F_GUEST_CSUM != 0 {
        o |= O::TX_TCP_CKSUM | O::TX_UDP_CKSUM;
        if features & (VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6) != 0 {
            o |= O::TX_TCP_TSO;
        }
        if features & (VIRTIO_NET_F_GUEST_USO4 | VIRTIO_NET_F_GUEST_USO6) != 0 {
            o |= O::TX_UDP_TSO;
        }
    }
    o
}

/// Why a guest packet's header is refused (a drop, not a guest error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// `csum_start` / `csum_offset` / the frame do not hold together.
    BadCsum,
    /// GSO type unknown, not negotiated, or `gso_size` is 0.
    BadGso,
}

/// The L2 header length of a frame (14, 18 with one VLAN tag, 22 with two); `None` if shorter.
#[inline]
fn l2_len(m: &Mbuf) -> Option<(usize, u16)> {
    // Ethernet with two tags and the ethertype behind them: 22 bytes, read across segments.
    let mut b = [0u8; 22];
    let n = m.pkt_len().min(b.len());
    if !m.read_at(0, &mut b[..n]) {
        return None;
    }
    fastpath_pmd::virtio_net::l2_and_ethertype(&b[..n])
}

/// Applies a guest TX header to a dequeued packet (`features`: what was negotiated).
#[inline]
pub fn hdr_to_mbuf(h: &NetHdr, m: &mut Mbuf, features: u64) -> Result<(), HdrError> {
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 && h.gso_type == VIRTIO_NET_HDR_GSO_NONE {
        if h.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0 {
            m.add_ol_flags(RX_L4_CKSUM_GOOD);
        }
        return Ok(());
    }
    let (l2, et) = l2_len(m).ok_or(HdrError::BadCsum)?;
    let v4 = match et {
        0x0800 => true,
        0x86dd => false,
        _ => return Err(HdrError::BadCsum),
    };
    let start = h.csum_start as usize;
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        // The checksum field must lie inside the frame, after the L2 header.
        if start < l2 + 20 || start + h.csum_offset as usize + 2 > m.pkt_len() {
            return Err(HdrError::BadCsum);
        }
    }
    let l3 = start.saturating_sub(l2);
    m.set_l2_len(l2 as u8);
    m.set_l3_len(l3 as u16);
    let ip = if v4 { TX_IPV4 } else { TX_IPV6 };
    let mut fl = ip;
    let gso = h.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    match gso {
        VIRTIO_NET_HDR_GSO_NONE => {}
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
            let allowed = if gso == VIRTIO_NET_HDR_GSO_TCPV4 { VIRTIO_NET_F_HOST_TSO4 } else { VIRTIO_NET_F_HOST_TSO6 };
            if features & allowed == 0 || h.gso_size == 0 || (gso == VIRTIO_NET_HDR_GSO_TCPV4) != v4 {
                return Err(HdrError::BadGso);
            }
            let mut doff = [0u8; 1];
            if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 || !m.read_at(start + 12, &mut doff) {
                return Err(HdrError::BadGso);
            }
            let l4 = ((doff[0] >> 4) as usize) * 4;
            if l4 < 20 {
                return Err(HdrError::BadGso);
            }
            m.set_l4_len(l4 as u8);
            m.set_tso_segsz(h.gso_size);
            fl |= TX_TCP_SEG | TX_TCP_CKSUM | if v4 { TX_IP_CKSUM } else { 0 };
        }
        VIRTIO_NET_HDR_GSO_UDP_L4 => {
            if features & VIRTIO_NET_F_HOST_USO == 0 || h.gso_size == 0 || h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
                return Err(HdrError::BadGso);
            }
            m.set_l4_len(8);
            m.set_tso_segsz(h.gso_size);
            fl |= TX_UDP_SEG | TX_UDP_CKSUM | if v4 { TX_IP_CKSUM } else { 0 };
        }
        _ => return Err(HdrError::BadGso),
    }
    if gso != VIRTIO_NET_HDR_GSO_NONE {
        // virtio's GSO pseudo-header sum includes the L4 length; ours does not (module doc).
        let l4 = (m.pkt_len() - start) as u16;
        if !adjust_sum(m, start + h.csum_offset as usize, l4, true) {
            return Err(HdrError::BadGso);
        }
    }
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        match h.csum_offset {
            16 => {
                fl |= TX_TCP_CKSUM;
                if gso == VIRTIO_NET_HDR_GSO_NONE {
                    let mut doff = [0u8; 1];
                    if m.read_at(start + 12, &mut doff) {
                        m.set_l4_len((((doff[0] >> 4) as usize) * 4) as u8);
                    }
                }
            }
            6 => {
                fl |= TX_UDP_CKSUM;
                m.set_l4_len(8);
            }
            _ => return Err(HdrError::BadCsum),
        }
        fl |= RX_L4_CKSUM_PARTIAL;
    }
    m.add_ol_flags(fl);
    Ok(())
}

/// Adds (`sub == false`) or subtracts `v` to / from the 16-bit one's complement sum stored
/// big-endian at packet offset `at` (first segment only). `false` when it is not there or the
/// buffer is shared.
pub fn adjust_sum(m: &mut Mbuf, at: usize, v: u16, sub: bool) -> bool {
    if at + 2 > m.data_len() || !m.is_writable() {
        return false;
    }
    let d = m.data_mut();
    let old = u16::from_be_bytes([d[at], d[at + 1]]);
    let s = if sub { csum_sub(old, v) } else { csum_add(old, v) };
    d[at..at + 2].copy_from_slice(&s.to_be_bytes());
    true
}

/// Computes the IPv4 header checksum an mbuf asks for (`TX_IP_CKSUM`): the virtio-net header
/// cannot ask the guest for it, and the guest's stack checks it. The header is at `l2_len`, of
/// `l3_len` bytes, in the first segment. `false` when it is not there or the buffer is shared.
pub fn fill_ip_csum(m: &mut Mbuf) -> bool {
    let (l2, l3) = (m.l2_len() as usize, m.l3_len() as usize);
    if l3 < 20 || l2 + l3 > m.data_len() || !m.is_writable() {
        return false;
    }
    let d = m.data_mut();
    d[l2 + 10] = 0;
    d[l2 + 11] = 0;
    let c = csum(ones_sum(&d[l2..l2 + l3], false));
    d[l2 + 10..l2 + 12].copy_from_slice(&c.to_be_bytes());
    true
}

/// What to do with an mbuf going to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPrep {
    /// Send with this header.
    Send(NetHdr),
    /// Send with this GSO header after adding the L4 length to the pseudo-header sum at the
    /// packet offset given (virtio's convention, see the module doc).
    SendGso(NetHdr, usize),
    /// Finish the L4 checksum in software first (at `csum_start`, field at `+ csum_offset`),
    /// then send with a plain header.
    SoftCsum {
        /// Start of the L4 header.
        start: usize,
        /// Offset of the checksum field from `start`.
        offset: usize,
    },
    /// The guest cannot take this segmentation request: drop.
    NoGso,
}

/// Builds the header for an mbuf going to the guest (guest RX), for the negotiated `features`.
#[inline(always)]
pub fn mbuf_to_hdr(m: &Mbuf, features: u64) -> TxPrep {
    let fl = m.ol_flags();
    if fl & (TX_SEG_MASK | TX_TCP_CKSUM | TX_UDP_CKSUM | RX_L4_CKSUM_PARTIAL) == 0 {
        let mut h = NetHdr::default();
        if fl & RX_L4_CKSUM_GOOD != 0 && features & VIRTIO_NET_F_GUEST_CSUM != 0 {
            h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
        }
        return TxPrep::Send(h);
    }
    mbuf_to_hdr_offload(m, fl, features)
}

#[inline(never)]
fn mbuf_to_hdr_offload(m: &Mbuf, fl: u64, features: u64) -> TxPrep {
    let start = m.l2_len() as usize + m.l3_len() as usize;
    let tcp = fl & (TX_TCP_CKSUM | TX_TCP_SEG) != 0;
    let offset = if tcp { 16 } else { 6 };
    let v6 = fl & TX_IPV6 != 0;
    if fl & TX_SEG_MASK != 0 {
        let (want, gso) = if fl & TX_TCP_SEG != 0 {
            if v6 {
                (VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_HDR_GSO_TCPV6)
            } else {
                (VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_HDR_GSO_TCPV4)
            }
        } else if v6 {
            (VIRTIO_NET_F_GUEST_USO6, VIRTIO_NET_HDR_GSO_UDP_L4)
        } else {
            (VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_HDR_GSO_UDP_L4)
        };
        if features & want == 0 || features & VIRTIO_NET_F_GUEST_CSUM == 0 || m.tso_segsz() == 0 {
            return TxPrep::NoGso;
        }
        return TxPrep::SendGso(
            NetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: gso,
                hdr_len: (start + m.l4_len() as usize) as u16,
                gso_size: m.tso_segsz(),
                csum_start: start as u16,
                csum_offset: offset,
                num_buffers: 0,
            },
            start + offset as usize,
        );
    }
    if features & VIRTIO_NET_F_GUEST_CSUM != 0 {
        return TxPrep::Send(NetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: start as u16,
            csum_offset: offset,
            ..NetHdr::default()
        });
    }
    TxPrep::SoftCsum { start, offset: offset as usize }
}

/// Completes a partial L4 checksum in software: the field at `start + offset` holds the
/// pseudo-header sum (DPDK's and virtio's convention); the one's complement sum from `start` to
/// the end replaces it. `false` when the packet is shorter or not writable.
pub fn finish_csum(m: &mut Mbuf, start: usize, offset: usize) -> bool {
    let total = m.pkt_len();
    if start.checked_add(offset + 2).is_none_or(|e| e > total) {
        return false;
    }
    if !m.is_contiguous() {
        // Multi-segment packets: sum over the segments, then write through read/modify of the
        // segment that holds the field.
        let mut sum = 0u64;
        let mut pos = 0usize;
        let mut odd = false;
        for s in m.segments() {
            let a = start.saturating_sub(pos).min(s.len());
            let part = &s[a..];
            sum += ones_sum(part, odd);
            if part.len() % 2 == 1 {
                odd = !odd;
            }
            pos += s.len();
        }
        let c = csum(sum);
        return write_at(m, start + offset, &c.to_be_bytes());
    }
    if !m.is_writable() {
        return false;
    }
    let d = m.data_mut();
    let c = csum(ones_sum(&d[start..], false));
    d[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The checksum field for a one's-complement sum: its complement, with 0 sent as 0xffff (the
/// other zero: UDP reserves 0 for "no checksum", and every verifier accepts either).
fn csum(s: u64) -> u16 {
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

fn write_at(m: &mut Mbuf, off: usize, b: &[u8; 2]) -> bool {
    // Only the first segment's bytes are reachable mutably; a field in a later segment is rare
    // (headers are in the first segment) and refused.
    if off + 2 > m.data_len() || !m.is_writable() {
        return false;
    }
    m.data_mut()[off..off + 2].copy_from_slice(b);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};

    fn pool() -> Mempool {
        Mempool::new("net-test", &PoolConfig { mbufs: 64, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
    }

    /// A TCP/IPv4 frame with a correct checksum, from a capture: we check the software
    /// completion against it.
    fn tcp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + 6];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = [0x45, 0, 0, 46, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        f[14..34].copy_from_slice(&ip);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50; // data offset 5
        f[47] = 0x18;
        f[54..60].copy_from_slice(b"hello!");
        f
    }

    /// The one's-complement sum of big-endian 16-bit words, folded: a plain scalar reference
    /// written here, independent of the crate's (vectorised) helpers.
    fn plain_sum(b: &[u8], init: u32) -> u16 {
        let mut s = init as u64;
        for w in b.chunks(2) {
            s += if w.len() == 2 { u16::from_be_bytes([w[0], w[1]]) as u64 } else { (w[0] as u64) << 8 };
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn pseudo_sum(f: &[u8]) -> u16 {
        let mut s = 0u64;
        for c in f[26..34].chunks(2) {
            s += u16::from_be_bytes([c[0], c[1]]) as u64;
        }
        s += 6 + (f.len() - 34) as u64;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn header_length_follows_the_features() {
        // The layout itself is tested with the type, in fastpath_pmd::virtio_net.
        assert_eq!(hdr_len(VIRTIO_F_VERSION_1), 12);
        assert_eq!(hdr_len(VIRTIO_NET_F_MRG_RXBUF), 12);
        assert_eq!(hdr_len(0), 10);
    }

    #[test]
    fn tso_header_becomes_offload_flags_and_back() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let f = tcp_frame();
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h = NetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        assert_eq!(hdr_to_mbuf(&h, &mut m, 0), Err(HdrError::BadGso), "HOST_TSO4 not negotiated");
        hdr_to_mbuf(&h, &mut m, VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_CSUM).unwrap();
        let fl = m.ol_flags();
        assert!(fl & TX_TCP_SEG != 0 && fl & TX_IPV4 != 0 && fl & RX_L4_CKSUM_PARTIAL != 0);
        assert_eq!((m.l2_len(), m.l3_len(), m.l4_len(), m.tso_segsz()), (14, 20, 20, 1448));
        // Back to a guest that takes TSO4.
        let feats = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4;
        assert_eq!(mbuf_to_hdr(&m, feats), TxPrep::SendGso(NetHdr { num_buffers: 0, ..h }, 50));
        assert_eq!(mbuf_to_hdr(&m, VIRTIO_NET_F_GUEST_CSUM), TxPrep::NoGso);
    }

    #[test]
    fn gso_pseudo_header_length_is_taken_out_and_put_back() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let mut f = tcp_frame();
        let with_len = pseudo_sum(&f); // includes the TCP length (26)
        f[50..52].copy_from_slice(&with_len.to_be_bytes());
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h = NetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: 10,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        hdr_to_mbuf(&h, &mut m, VIRTIO_NET_F_HOST_TSO4).unwrap();
        let without = u16::from_be_bytes([m.data()[50], m.data()[51]]);
        let mut expect = with_len as u32 + (!(26u16)) as u32;
        expect = (expect & 0xffff) + (expect >> 16);
        assert_eq!(without as u32, expect, "DPDK convention: no length in a TSO pseudo sum");
        assert!(adjust_sum(&mut m, 50, 26, false));
        assert_eq!(u16::from_be_bytes([m.data()[50], m.data()[51]]), with_len, "and back for the guest");
    }

    #[test]
    fn ipv4_header_checksum_is_filled() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let f = tcp_frame();
        m.append(f.len()).unwrap().copy_from_slice(&f);
        m.set_l2_len(14);
        m.set_l3_len(20);
        assert!(fill_ip_csum(&mut m));
        // A correct header sums to 0xffff.
        assert_eq!(plain_sum(&m.data()[14..34], 0), 0xffff);
        // Golden: this header's checksum, worked out outside the crate (RFC 1071 by hand).
        assert_eq!(&m.data()[24..26], &[0x26, 0xc7]);
        m.set_l3_len(10);
        assert!(!fill_ip_csum(&mut m), "an IPv4 header is at least 20 bytes");
    }

    #[test]
    fn bad_headers_are_refused() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        let f = tcp_frame();
        m.append(f.len()).unwrap().copy_from_slice(&f);
        let h = NetHdr { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: 58, csum_offset: 16, ..Default::default() };
        assert_eq!(hdr_to_mbuf(&h, &mut m, VIRTIO_NET_F_CSUM), Err(HdrError::BadCsum), "field past the end");
        let h = NetHdr { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: 34, csum_offset: 9, ..Default::default() };
        assert_eq!(hdr_to_mbuf(&h, &mut m, VIRTIO_NET_F_CSUM), Err(HdrError::BadCsum), "odd offset");
        let h = NetHdr { gso_type: 77, ..Default::default() };
        assert!(hdr_to_mbuf(&h, &mut m, u64::MAX).is_err());
    }

    #[test]
    fn software_checksum_completion() {
        let p = pool();
        let mut f = tcp_frame();
        let ps = pseudo_sum(&f);
        // Reference: the full TCP checksum over pseudo header and segment, summed plainly here.
        let mut g = f.clone();
        g[50..52].copy_from_slice(&[0, 0]);
        let reference = !plain_sum(&g[34..], ps as u32);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        let mut m = p.alloc().unwrap();
        m.append(f.len()).unwrap().copy_from_slice(&f);
        m.set_l2_len(14);
        m.set_l3_len(20);
        m.set_ol_flags(TX_IPV4 | TX_TCP_CKSUM);
        let TxPrep::SoftCsum { start, offset } = mbuf_to_hdr(&m, 0) else { panic!("expected SoftCsum") };
        assert!(finish_csum(&mut m, start, offset));
        assert_eq!(&m.data()[50..52], &reference.to_be_bytes());
        // The result verifies: pseudo header + segment (with the checksum) sums to 0xffff.
        assert_eq!(plain_sum(&m.data()[34..], ps as u32), 0xffff);
    }
}
