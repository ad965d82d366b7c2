//! Offload flags (`ol_flags`) and packet types (`packet_type`) carried by each mbuf.
//!
//! These follow DPDK's model: receive-side flags say what a port or a stage found (checksum good or
//! bad), transmit-side flags request work that the output port or a software stage must do before
//! the frame is on the wire, with the lengths it needs in the mbuf header (`l2_len`, `l3_len`,
//! `l4_len`, `outer_l2_len`, `outer_l3_len`, `tso_segsz`).

/// Receive: the IPv4 header checksum was verified good.
pub const RX_IP_CKSUM_GOOD: u64 = 1 << 0;
/// Receive: the IPv4 header checksum was found bad.
pub const RX_IP_CKSUM_BAD: u64 = 1 << 1;
/// Receive: the L4 checksum was verified good.
pub const RX_L4_CKSUM_GOOD: u64 = 1 << 2;
/// Receive: the L4 checksum was found bad.
pub const RX_L4_CKSUM_BAD: u64 = 1 << 3;
/// Receive: the outer L4 (tunnel UDP) checksum was verified good.
pub const RX_OUTER_L4_CKSUM_GOOD: u64 = 1 << 4;
/// Receive: the outer L4 (tunnel UDP) checksum was found bad.
pub const RX_OUTER_L4_CKSUM_BAD: u64 = 1 << 5;
/// Receive: the outer IPv4 header checksum was found bad.
pub const RX_OUTER_IP_CKSUM_BAD: u64 = 1 << 6;
/// Receive: a VLAN tag was removed into `vlan_tci`.
pub const RX_VLAN_STRIPPED: u64 = 1 << 7;
/// Receive: `rss_hash` holds a valid flow hash.
pub const RX_RSS_HASH: u64 = 1 << 8;
/// Receive: the L4 checksum is partial (virtio `NEEDS_CSUM`): the data is valid, the checksum
/// field holds the pseudo-header sum only.
pub const RX_L4_CKSUM_PARTIAL: u64 = 1 << 9;

/// Transmit: the packet is IPv4 (needed with any L3/L4 request).
pub const TX_IPV4: u64 = 1 << 40;
/// Transmit: the packet is IPv6.
pub const TX_IPV6: u64 = 1 << 41;
/// Transmit: compute the IPv4 header checksum.
pub const TX_IP_CKSUM: u64 = 1 << 42;
/// Transmit: compute the TCP checksum.
pub const TX_TCP_CKSUM: u64 = 1 << 43;
/// Transmit: compute the UDP checksum.
pub const TX_UDP_CKSUM: u64 = 1 << 44;
/// Transmit: TCP segmentation to `tso_segsz` bytes of payload (implies TCP and IP checksums).
pub const TX_TCP_SEG: u64 = 1 << 45;
/// Transmit: UDP segmentation (USO) to `tso_segsz` bytes of payload per datagram.
pub const TX_UDP_SEG: u64 = 1 << 46;
/// Transmit: the outer header is IPv4.
pub const TX_OUTER_IPV4: u64 = 1 << 47;
/// Transmit: the outer header is IPv6.
pub const TX_OUTER_IPV6: u64 = 1 << 48;
/// Transmit: compute the outer IPv4 header checksum.
pub const TX_OUTER_IP_CKSUM: u64 = 1 << 49;
/// Transmit: compute the outer UDP checksum.
pub const TX_OUTER_UDP_CKSUM: u64 = 1 << 50;
/// Transmit: the packet is VXLAN-encapsulated.
pub const TX_TUNNEL_VXLAN: u64 = 1 << 51;
/// Transmit: the packet is GENEVE-encapsulated.
pub const TX_TUNNEL_GENEVE: u64 = 1 << 52;
/// Transmit: the packet is GRE (NVGRE) encapsulated.
pub const TX_TUNNEL_GRE: u64 = 1 << 53;
/// Transmit: insert `vlan_tci` as an 802.1Q tag.
pub const TX_VLAN: u64 = 1 << 54;

/// All tunnel-type transmit flags.
pub const TX_TUNNEL_MASK: u64 = TX_TUNNEL_VXLAN | TX_TUNNEL_GENEVE | TX_TUNNEL_GRE;
/// All transmit flags that ask for checksum work.
pub const TX_CKSUM_MASK: u64 = TX_IP_CKSUM | TX_TCP_CKSUM | TX_UDP_CKSUM | TX_OUTER_IP_CKSUM | TX_OUTER_UDP_CKSUM;
/// All transmit flags that ask for segmentation.
pub const TX_SEG_MASK: u64 = TX_TCP_SEG | TX_UDP_SEG;

/// Packet types, laid out like DPDK's `RTE_PTYPE_*`: one nibble per layer.
pub mod ptype {
    /// Unknown / not parsed.
    pub const UNKNOWN: u32 = 0;
    /// Mask of the L2 nibble.
    pub const L2_MASK: u32 = 0x0000_000f;
    /// Ethernet.
    pub const L2_ETHER: u32 = 0x0000_0001;
    /// Ethernet with one 802.1Q tag.
    pub const L2_ETHER_VLAN: u32 = 0x0000_0006;
    /// Ethernet with two tags (QinQ).
    pub const L2_ETHER_QINQ: u32 = 0x0000_0007;
    /// Mask of the L3 nibble.
    pub const L3_MASK: u32 = 0x0000_00f0;
    /// IPv4 without options.
    pub const L3_IPV4: u32 = 0x0000_0010;
    /// IPv4 with options.
    pub const L3_IPV4_EXT: u32 = 0x0000_0030;
    /// IPv6 without extension headers.
    pub const L3_IPV6: u32 = 0x0000_0040;
    /// IPv6 with extension headers.
    pub const L3_IPV6_EXT: u32 = 0x0000_00c0;
    /// Mask of the L4 nibble.
    pub const L4_MASK: u32 = 0x0000_0f00;
    /// TCP.
    pub const L4_TCP: u32 = 0x0000_0100;
    /// UDP.
    pub const L4_UDP: u32 = 0x0000_0200;
    /// A fragment.
    pub const L4_FRAG: u32 = 0x0000_0300;
    /// ICMP / ICMPv6.
    pub const L4_ICMP: u32 = 0x0000_0500;
    /// Other L4.
    pub const L4_NONFRAG: u32 = 0x0000_0600;
    /// Mask of the tunnel nibble.
    pub const TUNNEL_MASK: u32 = 0x0000_f000;
    /// GRE (NVGRE when the key bit is set and the protocol is 0x6558).
    pub const TUNNEL_GRE: u32 = 0x0000_2000;
    /// VXLAN.
    pub const TUNNEL_VXLAN: u32 = 0x0000_3000;
    /// NVGRE.
    pub const TUNNEL_NVGRE: u32 = 0x0000_4000;
    /// GENEVE.
    pub const TUNNEL_GENEVE: u32 = 0x0000_5000;
    /// Mask of the inner L2 nibble.
    pub const INNER_L2_MASK: u32 = 0x000f_0000;
    /// Inner Ethernet.
    pub const INNER_L2_ETHER: u32 = 0x0001_0000;
    /// Inner Ethernet with a VLAN tag.
    pub const INNER_L2_ETHER_VLAN: u32 = 0x0002_0000;
    /// Mask of the inner L3 nibble.
    pub const INNER_L3_MASK: u32 = 0x00f0_0000;
    /// Inner IPv4.
    pub const INNER_L3_IPV4: u32 = 0x0010_0000;
    /// Inner IPv4 with options.
    pub const INNER_L3_IPV4_EXT: u32 = 0x0020_0000;
    /// Inner IPv6.
    pub const INNER_L3_IPV6: u32 = 0x0030_0000;
    /// Inner IPv6 with extension headers.
    pub const INNER_L3_IPV6_EXT: u32 = 0x0040_0000;
    /// Mask of the inner L4 nibble.
    pub const INNER_L4_MASK: u32 = 0x0f00_0000;
    /// Inner TCP.
    pub const INNER_L4_TCP: u32 = 0x0100_0000;
    /// Inner UDP.
    pub const INNER_L4_UDP: u32 = 0x0200_0000;
    /// Inner fragment.
    pub const INNER_L4_FRAG: u32 = 0x0300_0000;
    /// Inner ICMP.
    pub const INNER_L4_ICMP: u32 = 0x0500_0000;
    /// Inner other L4.
    pub const INNER_L4_NONFRAG: u32 = 0x0600_0000;
}
