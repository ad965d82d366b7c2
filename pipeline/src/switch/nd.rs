//! IPv6 neighbour discovery (RFC 4861) as the VTEP needs it: neighbour solicitations for our
//! address are answered with an advertisement, the link-layer address of a solicitation or
//! advertisement from a remote VTEP is its MAC, and we solicit remote VTEPs.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type (135/6) |   Code (0)    |          Checksum             |
//! |R|S|O|                     Reserved                            |
//! |                   Target Address (16 bytes)                   |
//! |   Options: Type (1 source / 2 target link-layer), Length (8s) |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`parse`] checks the message (code, hop limit 255, checksum, option lengths) before
//! anything is read; it never panics.

use std::net::Ipv6Addr;

use crate::checksum::{self, Sum};
use crate::wire::{ethertype, ip_proto, EthernetAddress, EthernetPacket, EthernetRepr, Ipv6Packet, Ipv6Repr};

/// Neighbour solicitation.
pub const NS: u8 = 135;
/// Neighbour advertisement.
pub const NA: u8 = 136;
/// Length of our messages: the fixed part and one link-layer address option.
const MSG_LEN: usize = 32;
/// Length of a whole frame we build: Ethernet, IPv6, message.
pub const FRAME_LEN: usize = 14 + 40 + MSG_LEN;
/// NA flags: solicited and override.
const SOLICITED_OVERRIDE: u8 = 0x60;

/// A checked solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// [`NS`] or [`NA`].
    pub kind: u8,
    /// Target address.
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<[u8; 6]>,
}

/// Reads the NS or NA in `icmp` (the whole ICMPv6 message) sent from `src` to `dst` with hop
/// limit `hops`; `None` when it is something else or broken.
pub fn parse(icmp: &[u8], src: &[u8; 16], dst: &[u8; 16], hops: u8) -> Option<Message> {
    let kind = *icmp.first()?;
    if !(kind == NS || kind == NA) || icmp.len() < 24 || icmp[1] != 0 || hops != 255 {
        return None;
    }
    let mut s = Sum::new(checksum::pseudo_v6(src, dst, ip_proto::ICMPV6, icmp.len() as u32));
    s.add_bytes(icmp);
    if s.sum() != 0xffff {
        return None;
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&icmp[8..24]);
    let want = if kind == NS { 1 } else { 2 };
    let mut lladdr = None;
    let mut opts = &icmp[24..];
    while !opts.is_empty() {
        let len = *opts.get(1)? as usize * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == want && len >= 8 {
            lladdr = Some([opts[2], opts[3], opts[4], opts[5], opts[6], opts[7]]);
        }
        opts = &opts[len..];
    }
    Some(Message { kind, target: Ipv6Addr::from(target), lladdr })
}

/// Writes a whole frame (Ethernet, IPv6 with hop limit 255, `kind` with `target` and the
/// link-layer option `mac`) into `f` ([`FRAME_LEN`] bytes).
fn emit(f: &mut [u8], eth_dst: [u8; 6], mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, kind: u8, target: Ipv6Addr) {
    EthernetRepr { src_addr: EthernetAddress(mac), dst_addr: EthernetAddress(eth_dst), ethertype: ethertype::IPV6 }
        .emit(&mut EthernetPacket::new_unchecked(&mut f[..]));
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ip_proto::ICMPV6,
        payload_len: MSG_LEN,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut f[14..]));
    let m = &mut f[54..54 + MSG_LEN];
    m.fill(0);
    m[0] = kind;
    if kind == NA {
        m[4] = SOLICITED_OVERRIDE;
    }
    m[8..24].copy_from_slice(&target.octets());
    m[24] = if kind == NS { 1 } else { 2 };
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    let mut s = Sum::new(checksum::pseudo_v6(&src.octets(), &dst.octets(), ip_proto::ICMPV6, MSG_LEN as u32));
    s.add_bytes(m);
    m[2..4].copy_from_slice(&s.checksum().to_be_bytes());
}

/// Writes our advertisement of `ours` (at `mac`) to the soliciting host `to` (at `to_mac`) into
/// `f` ([`FRAME_LEN`] bytes).
pub fn advertise(f: &mut [u8], mac: [u8; 6], ours: Ipv6Addr, to_mac: [u8; 6], to: Ipv6Addr) {
    emit(f, to_mac, mac, ours, to, NA, ours);
}

/// Writes a solicitation for `target` from `mac` / `src` to its solicited-node multicast
/// address into `f` ([`FRAME_LEN`] bytes).
pub fn solicit(f: &mut [u8], mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) {
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | t[13] as u16, u16::from_be_bytes([t[14], t[15]]));
    let g = group.octets();
    emit(f, [0x33, 0x33, g[12], g[13], g[14], g[15]], mac, src, group, NS, target);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicit_then_advertise_round_trip() {
        let (me, them) = ("2001:db8::1".parse::<Ipv6Addr>().unwrap(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        let (my_mac, their_mac) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut f = [0xa5u8; FRAME_LEN];
        solicit(&mut f, their_mac, them, me);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst_addr(), "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap());
        let m = parse(&f[54..], &ip.src_bytes(), &ip.dst_bytes(), ip.hop_limit()).unwrap();
        assert_eq!(m, Message { kind: NS, target: me, lladdr: Some(their_mac) });
        advertise(&mut f, my_mac, me, their_mac, them);
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        let m = parse(&f[54..], &src, &dst, 255).unwrap();
        assert_eq!(m, Message { kind: NA, target: me, lladdr: Some(my_mac) });
        assert_eq!(f[54 + 4], SOLICITED_OVERRIDE);
        // Broken: hop limit, checksum, option length (with a checksum fixed for it).
        assert!(parse(&f[54..], &src, &dst, 64).is_none());
        f[60] ^= 1;
        assert!(parse(&f[54..], &src, &dst, 255).is_none());
        f[60] ^= 1;
        f[54 + 25] = 0;
        let c = checksum::update16(u16::from_be_bytes([f[56], f[57]]), 0x0201, 0x0200);
        f[56..58].copy_from_slice(&c.to_be_bytes());
        assert!(parse(&f[54..], &src, &dst, 255).is_none());
        f[54 + 25] = 1;
        let c = checksum::update16(c, 0x0200, 0x0201);
        f[56..58].copy_from_slice(&c.to_be_bytes());
        assert!(parse(&f[54..], &src, &dst, 255).is_some());
    }
}
