//! IPv6 header (RFC 8200) and the walk over extension headers to the upper layer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Source Address (128 bits)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              Destination Address (128 bits)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Extension headers ([`Packet::upper_layer`]): hop-by-hop, routing, destination options,
//! mobility, HIP and Shim6 have a length byte in 8-octet units; AH in 4-octet units; the fragment
//! header is 8 bytes. ESP and "no next header" end the walk (what follows is opaque).

use std::net::Ipv6Addr;

use super::{get_u16, get_u32, ip_proto, set_u16, set_u32, Error, Result};

mod field {
    pub const VER_TC_FL: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Most extension headers walked before giving up (a chain longer than this is malformed).
pub const MAX_EXT_HEADERS: usize = 8;

/// Where the upper layer starts, found by walking extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Protocol of the upper layer (or ESP / NONE / the protocol after a fragment header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header (the L3 length).
    pub offset: usize,
    /// At least one extension header was present.
    pub has_ext: bool,
    /// The packet is a fragment (not an atomic one): `Some(fragment offset in bytes)`. The walk
    /// stops behind the fragment header then.
    pub fragment: Option<u16>,
}

/// A view of an IPv6 header and its payload.
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

    /// Checks that the buffer holds the header and Payload Length bytes after it (more is
    /// allowed: Ethernet padding). A jumbogram (Payload Length 0) is not supported: Truncated.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + self.payload_len() as usize {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version (6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.b()[field::VER_TC_FL] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u32(self.b(), field::VER_TC_FL) >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.b(), field::VER_TC_FL) & 0x000f_ffff
    }

    /// Payload length (everything after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.b(), field::LENGTH)
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.b()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    /// Source address as bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[field::SRC..field::SRC + 16]);
        a
    }

    /// Destination address as bytes.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[field::DST..field::DST + 16]);
        a
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// The payload (after the fixed header), up to Payload Length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }

    /// Walks the extension headers (at most [`MAX_EXT_HEADERS`]) inside Payload Length.
    /// Fails with Truncated when one runs past the payload, Malformed when there are too many.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk_ext(self.payload(), self.next_header()).map(|mut u| {
            u.offset += HEADER_LEN;
            u
        })
    }
}

/// Walks extension headers in `d` (the bytes after the fixed header) starting with next header
/// `nh`; the returned offset is relative to `d`.
pub fn walk_ext(d: &[u8], mut nh: u8) -> Result<UpperLayer> {
    let mut off = 0usize;
    let mut has_ext = false;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match nh {
            ip_proto::HOPOPTS
            | ip_proto::ROUTING
            | ip_proto::DSTOPTS
            | ip_proto::MOBILITY
            | ip_proto::HIP
            | ip_proto::SHIM6 => {
                let l = *d.get(off + 1).ok_or(Error::Truncated)?;
                (l as usize + 1) * 8
            }
            ip_proto::AH => {
                let l = *d.get(off + 1).ok_or(Error::Truncated)?;
                (l as usize + 2) * 4
            }
            ip_proto::FRAGMENT => {
                if d.len() < off + 8 {
                    return Err(Error::Truncated);
                }
                let f = get_u16(d, off + 2) & 0xfff8;
                let more = d[off + 3] & 1 != 0;
                if f != 0 || more {
                    // A fragment (the first one included): what follows is not a whole L4.
                    return Ok(UpperLayer { protocol: d[off], offset: off + 8, has_ext: true, fragment: Some(f) });
                }
                // An atomic fragment (offset 0, M clear, RFC 6946): carry on.
                8
            }
            _ => return Ok(UpperLayer { protocol: nh, offset: off, has_ext, fragment: None }),
        };
        if d.len() < off + len {
            return Err(Error::Truncated);
        }
        nh = d[off];
        off += len;
        has_ext = true;
    }
    Err(Error::Malformed)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 6, the traffic class and the flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        set_u32(self.bm(), field::VER_TC_FL, (6 << 28) | ((tc as u32) << 20) | (flow & 0x000f_ffff))
    }

    /// Sets Payload Length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.bm(), field::LENGTH, v)
    }

    /// Sets Next Header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.bm()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.bm()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.bm()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.bm()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }
}

/// A fixed IPv6 header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Reads a checked packet of version 6.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len() as usize,
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (Payload Length saturates at 65535).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len.min(u16::MAX as usize) as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fe80::1 -> ff02::1, UDP, 8 bytes of payload, hop limit 255, TC 0, flow 0x12345.
    static HEADER: [u8; 40] = [
        0x60, 0x01, 0x23, 0x45, 0x00, 0x08, 0x11, 0xff, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff,
        0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];

    #[test]
    fn golden_parse_and_emit() {
        let mut b = HEADER.to_vec();
        b.extend_from_slice(&[0; 8]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.payload_len(), p.next_header(), p.hop_limit()), (6, 8, 17, 255));
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.upper_layer().unwrap(), UpperLayer { protocol: 17, offset: 40, has_ext: false, fragment: None });
        let r = Repr::parse(&p).unwrap();
        let mut out = [0xa5u8; 48];
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[..40], &HEADER[..]);
        assert_eq!(Packet::new_checked(&b[..47]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn extension_headers() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
        let mut d = vec![ip_proto::DSTOPTS, 0, 1, 4, 0, 0, 0, 0];
        d.extend_from_slice(&[ip_proto::TCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0; 20]);
        let u = walk_ext(&d, ip_proto::HOPOPTS).unwrap();
        assert_eq!(u, UpperLayer { protocol: ip_proto::TCP, offset: 24, has_ext: true, fragment: None });
        // A second fragment: offset 1480, stops there.
        let f = [ip_proto::UDP, 0, 0x05, 0xc8, 0, 0, 0, 1];
        let u = walk_ext(&f, ip_proto::FRAGMENT).unwrap();
        assert_eq!(u.fragment, Some(1480));
        // An atomic fragment goes on to UDP.
        let f = [ip_proto::UDP, 0, 0, 0, 0, 0, 0, 1];
        let u = walk_ext(&f, ip_proto::FRAGMENT).unwrap();
        assert_eq!((u.protocol, u.offset, u.fragment), (ip_proto::UDP, 8, None));
        // Truncated and endless chains.
        assert_eq!(walk_ext(&d[..20], ip_proto::HOPOPTS).unwrap_err(), Error::Truncated);
        let endless: Vec<u8> = [ip_proto::DSTOPTS, 0, 0, 0, 0, 0, 0, 0].repeat(12);
        assert_eq!(walk_ext(&endless, ip_proto::DSTOPTS).unwrap_err(), Error::Malformed);
    }
}
