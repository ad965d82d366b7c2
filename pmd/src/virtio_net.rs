//! The virtio-net header, shared by the ports that speak it: the TAP port (`IFF_VNET_HDR`, the
//! 10-byte `struct virtio_net_hdr`) and the vhost-user backend (the 12-byte
//! `struct virtio_net_hdr_mrg_rxbuf` of VERSION_1 / MRG_RXBUF). Each port maps it to and from the
//! mbuf's offload flags with its own rules (what the kernel accepts, what the guest negotiated);
//! the layout, the constants, the VLAN walk and the one's-complement helpers they share live here.
//!
//! ```text
//!  0      1         2        4         6          8           10           12
//!  +------+---------+--------+---------+----------+-----------+------------+
//!  |flags |gso_type | hdr_len| gso_size|csum_start|csum_offset|num_buffers |
//!  +------+---------+--------+---------+----------+-----------+------------+
//!  little-endian; num_buffers only in the 12-byte form
//! ```

/// Bytes of `struct virtio_net_hdr`.
pub const HDR_LEN: usize = 10;
/// Bytes of `struct virtio_net_hdr_mrg_rxbuf` (VERSION_1 or MRG_RXBUF).
pub const HDR_MRG_LEN: usize = 12;

/// Header flag: the checksum is partial: sum from `csum_start` to the end, stored at
/// `csum_start + csum_offset`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Header flag: the checksum was verified.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// gso_type: none.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// gso_type: TCP over IPv4.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// gso_type: UDP fragmentation (UFO; neither port supports it).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// gso_type: TCP over IPv6.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// gso_type: UDP segmentation (USO).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// gso_type bit: ECN.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// The virtio-net header, fields in host order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with `VIRTIO_NET_HDR_GSO_ECN`.
    pub gso_type: u8,
    /// Bytes of headers (L2 to L4) of a GSO frame (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Offset of the first byte to checksum.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
    /// Buffers used for this packet (mergeable receive buffers; 12-byte form only).
    pub num_buffers: u16,
}

impl NetHdr {
    /// Decodes the 12-byte form.
    #[inline(always)]
    pub fn parse(b: &[u8; HDR_MRG_LEN]) -> NetHdr {
        let mut short = [0u8; HDR_LEN];
        short.copy_from_slice(&b[..HDR_LEN]);
        NetHdr { num_buffers: u16::from_le_bytes([b[10], b[11]]), ..Self::parse_short(&short) }
    }

    /// Decodes the 10-byte form (`num_buffers` 0).
    #[inline(always)]
    pub fn parse_short(b: &[u8; HDR_LEN]) -> NetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            num_buffers: 0,
        }
    }

    /// Encodes the 12-byte form.
    #[inline(always)]
    pub fn emit(&self) -> [u8; HDR_MRG_LEN] {
        let mut b = [0u8; HDR_MRG_LEN];
        b[..HDR_LEN].copy_from_slice(&self.emit_short());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Encodes the 10-byte form.
    #[inline(always)]
    pub fn emit_short(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// The L2 header length (Ethernet plus up to two VLAN tags, 802.1Q or 802.1ad) and the ethertype
/// behind it, from the frame's first bytes; `None` when they are too short or carry three tags.
#[inline]
pub fn l2_and_ethertype(d: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..3 {
        let t = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
        if t == 0x8100 || t == 0x88a8 {
            off += 4;
            continue;
        }
        return Some((off + 2, t));
    }
    None
}

/// One's-complement sum of the big-endian 16-bit words of `b`, not folded; `odd` when `b` starts
/// at an odd offset of the word stream (its first byte is then a low byte). An odd last byte is
/// padded with zero.
#[inline]
pub fn ones_sum(b: &[u8], odd: bool) -> u64 {
    let (mut sum, mut i) = (0u64, 0);
    if odd && !b.is_empty() {
        sum += b[0] as u64;
        i = 1;
    }
    let mut ch = b[i..].chunks_exact(2);
    for c in &mut ch {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [x] = ch.remainder() {
        sum += (*x as u64) << 8;
    }
    sum
}

/// Folds a one's-complement sum to 16 bits.
#[inline]
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// One's-complement `a + b`.
#[inline]
pub fn csum_add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// One's-complement `a - b`.
#[inline]
pub fn csum_sub(a: u16, b: u16) -> u16 {
    csum_add(a, !b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms_round_trip() {
        let h = NetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.emit();
        assert_eq!(b, [1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0, 3, 0]);
        assert_eq!(NetHdr::parse(&b), h);
        let s = h.emit_short();
        assert_eq!(s[..], b[..HDR_LEN]);
        assert_eq!(NetHdr::parse_short(&s), NetHdr { num_buffers: 0, ..h });
    }

    #[test]
    fn vlan_walk_and_sums() {
        let mut f = vec![0u8; 22];
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x88a8u16.to_be_bytes());
        f[20..22].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(l2_and_ethertype(&f), Some((22, 0x0800)));
        assert_eq!(l2_and_ethertype(&f[..21]), None);
        f[20..22].copy_from_slice(&0x8100u16.to_be_bytes());
        assert_eq!(l2_and_ethertype(&f), None, "three tags");
        assert_eq!(l2_and_ethertype(&[0; 14]), Some((14, 0)));
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_sum(&d, false)), 0xddf2);
        // The same words split at an odd offset.
        assert_eq!(fold(ones_sum(&d[..3], false) + ones_sum(&d[3..], true)), 0xddf2);
        assert_eq!(csum_sub(csum_add(0xddf2, 0x1234), 0x1234), 0xddf2);
    }
}
