//! Zero-copy header views, one protocol per file (after smoltcp's `wire`).
//!
//! Each module has a `Packet<T: AsRef<[u8]>>` view over the bytes of one header (and what follows
//! it), a `Repr` (the header's fields as plain values, for the control path and tests) and
//! `HEADER_LEN` (the fixed part). They are re-exported here with a prefix: [`VxlanPacket`],
//! [`VxlanRepr`], [`VXLAN_HEADER_LEN`].
//!
//! # Panic contract
//!
//! `Packet::new_unchecked` wraps any buffer; `Packet::new_checked` (which calls `check_len`)
//! fails with [`Error::Truncated`] or [`Error::Malformed`] instead. After `check_len()` has
//! succeeded, no accessor panics. `Repr::emit` never panics on a buffer of at least
//! `Repr::buffer_len()` bytes. The fast path uses the views; `Repr` is for the control path.
//!
//! Byte order is converted inside the accessors: every getter returns host-order values and
//! every setter takes them.

pub mod arp;
pub mod ethernet;
pub mod geneve;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use arp::{Packet as ArpPacket, Repr as ArpRepr, HEADER_LEN as ARP_HEADER_LEN};
pub use ethernet::{
    Address as EthernetAddress, Packet as EthernetPacket, Repr as EthernetRepr, HEADER_LEN as ETHERNET_HEADER_LEN,
};
pub use geneve::{
    OptionRepr as GeneveOptionRepr, Packet as GenevePacket, Repr as GeneveRepr, HEADER_LEN as GENEVE_HEADER_LEN,
};
pub use gre::{Packet as GrePacket, Repr as GreRepr, HEADER_LEN as GRE_HEADER_LEN, NVGRE_HEADER_LEN};
pub use icmp::{Packet as IcmpPacket, Repr as IcmpRepr, HEADER_LEN as ICMP_HEADER_LEN};
pub use ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr, HEADER_LEN as IPV4_HEADER_LEN};
pub use ipv6::{Packet as Ipv6Packet, Repr as Ipv6Repr, HEADER_LEN as IPV6_HEADER_LEN};
pub use tcp::{Packet as TcpPacket, Repr as TcpRepr, HEADER_LEN as TCP_HEADER_LEN};
pub use udp::{Packet as UdpPacket, Repr as UdpRepr, HEADER_LEN as UDP_HEADER_LEN};
pub use vlan::{Packet as VlanPacket, Repr as VlanRepr, HEADER_LEN as VLAN_HEADER_LEN};
pub use vxlan::{Packet as VxlanPacket, Repr as VxlanRepr, HEADER_LEN as VXLAN_HEADER_LEN};

use std::fmt;

/// EtherType values.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet Bridging: an Ethernet frame inside GRE / GENEVE.
    pub const TEB: u16 = 0x6558;
}

/// IP protocol numbers (IPv4 protocol, IPv6 next header).
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// AH.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 no next header.
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// Mobility header.
    pub const MOBILITY: u8 = 135;
    /// Host identity protocol.
    pub const HIP: u8 = 139;
    /// Shim6.
    pub const SHIM6: u8 = 140;
}

/// Why a view or a `Repr` could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    Truncated,
    /// A field holds a value the format does not allow (bad version, length below minimum...).
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated header"),
            Error::Malformed => f.write_str("malformed header"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of the wire functions.
pub type Result<T> = core::result::Result<T, Error>;

/// A byte range in a header.
pub(crate) type Field = core::ops::Range<usize>;

#[inline(always)]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn get_u24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

#[inline(always)]
pub(crate) fn set_u24(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 3].copy_from_slice(&v.to_be_bytes()[1..]);
}

#[inline(always)]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
