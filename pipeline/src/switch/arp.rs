//! ARP for IPv4 over Ethernet (RFC 826), as the VTEP needs it: answer requests for our address
//! in place, read the sender of requests and replies (a remote VTEP's MAC), build requests.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Hardware type (1)        |     Protocol type (0x0800)    |
//! |  HLEN (6)     |  PLEN (4)     |          Operation            |
//! |                 Sender hardware address (6) ...               |
//! |   ... Sender protocol address (4)  | Target hardware address  |
//! |   ... (6)     |          Target protocol address (4)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Accessors never panic after [`Packet::check_len`] (which `new_checked` calls).

use std::net::Ipv4Addr;

use crate::wire::{ethertype, Error, EthernetAddress, EthernetPacket, EthernetRepr, Result};

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = 28;
/// Operation: request.
pub const REQUEST: u16 = 1;
/// Operation: reply.
pub const REPLY: u16 = 2;
/// Shortest Ethernet frame (without FCS): requests are padded to it.
const MIN_FRAME: usize = 60;

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` when shorter than an Ethernet/IPv4 ARP packet, `Malformed` when it is of
    /// another hardware or protocol kind.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::HTYPE..field::HTYPE + 2] != [0, 1]
            || b[field::PTYPE..field::PTYPE + 2] != ethertype::IPV4.to_be_bytes()
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Operation.
    pub fn oper(&self) -> u16 {
        crate::wire::get_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[8], b[9], b[10], b[11], b[12], b[13]]
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes an Ethernet/IPv4 ARP packet.
    pub fn emit(&mut self, oper: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::HTYPE..field::HTYPE + 2].copy_from_slice(&[0, 1]);
        b[field::PTYPE..field::PTYPE + 2].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER..field::OPER + 2].copy_from_slice(&oper.to_be_bytes());
        b[field::SHA..field::SHA + 6].copy_from_slice(&sha);
        b[field::SPA..field::SPA + 4].copy_from_slice(&spa.octets());
        b[field::THA..field::THA + 6].copy_from_slice(&tha);
        b[field::TPA..field::TPA + 4].copy_from_slice(&tpa.octets());
    }
}

/// Turns the request in frame `f` (Ethernet + ARP, checked) into our reply in place: from
/// `mac` / `ip` to the requester.
pub fn answer(f: &mut [u8], mac: [u8; 6], ip: Ipv4Addr) {
    let (sha, spa) = {
        let p = Packet::new_unchecked(&f[14..]);
        (p.sha(), p.spa())
    };
    EthernetRepr { src_addr: EthernetAddress(mac), dst_addr: EthernetAddress(sha), ethertype: ethertype::ARP }
        .emit(&mut EthernetPacket::new_unchecked(&mut f[..]));
    Packet::new_unchecked(&mut f[14..]).emit(REPLY, mac, ip, sha, spa);
}

/// Writes a broadcast request for `target` from `mac` / `ip` into `f` (at least 60 bytes);
/// returns the frame length.
pub fn request(f: &mut [u8], mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> usize {
    f[..MIN_FRAME].fill(0);
    EthernetRepr { src_addr: EthernetAddress(mac), dst_addr: EthernetAddress::BROADCAST, ethertype: ethertype::ARP }
        .emit(&mut EthernetPacket::new_unchecked(&mut f[..]));
    Packet::new_unchecked(&mut f[14..]).emit(REQUEST, mac, ip, [0; 6], target);
    MIN_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;

    // A request captured on a LAN: who has 10.0.0.1? tell 10.0.0.2 (52:54:00:12:34:56).
    static REQ: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 0, 2, 0, 0, 0, 0, 0,
        0, 10, 0, 0, 1,
    ];

    #[test]
    fn golden_request_and_answer() {
        let p = Packet::new_checked(&REQ[..]).unwrap();
        assert_eq!(p.oper(), REQUEST);
        assert_eq!(p.sha(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!((p.spa(), p.tpa()), (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)));
        let mut buf = [0xa5u8; 28];
        Packet::new_unchecked(&mut buf[..]).emit(REQUEST, p.sha(), p.spa(), [0; 6], p.tpa());
        assert_eq!(buf, REQ);
        let mut f = [0u8; 42];
        f[12..14].copy_from_slice(&[8, 6]);
        f[14..].copy_from_slice(&REQ);
        let me = [2, 0, 0, 0, 0, 1];
        answer(&mut f, me, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&f[..6], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let r = Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((r.oper(), r.sha(), r.spa(), r.tpa()), (REPLY, me, Ipv4Addr::new(10, 0, 0, 1), p.spa()));
        assert_eq!(Packet::new_checked(&REQ[..27]).unwrap_err(), Error::Truncated);
        let mut bad = REQ;
        bad[5] = 16;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }
}
