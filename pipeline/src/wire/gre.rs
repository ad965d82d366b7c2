//! GRE header (RFC 2784 with the key and sequence number of RFC 2890), and NVGRE (RFC 7637).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C|R|K|S|s|Recur|  Reserved0  | Ver |         Protocol Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! NVGRE: C = 0, S = 0, K = 1, Protocol Type 0x6558, and the key is
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Virtual Subnet ID (VSID)        |    FlowID     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! RFC 2784 section 2.5.1: a receiver MUST discard a packet with any of bits 1-5 set unless it
//! implements RFC 1701; RFC 2890 defines bits 2 (K) and 3 (S), so bits 1 (R), 4 (s) and 5 (the
//! first Recur bit) remain: [`Packet::reserved_ok`]. Ver MUST be 0. Bits 6-12 are ignored.

use super::{get_u16, get_u32, set_u16, set_u32, Error, Result};
use crate::checksum;

mod field {
    pub const FLAGS: usize = 0;
    pub const PROTOCOL: usize = 2;
    pub const OPTIONAL: usize = 4;
}

/// Length of the fixed header (without optional fields).
pub const HEADER_LEN: usize = field::OPTIONAL;
/// Length of an NVGRE header (fixed part and key).
pub const NVGRE_HEADER_LEN: usize = 8;

const C: u16 = 0x8000;
const R: u16 = 0x4000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;
const STRICT: u16 = 0x0800;
const RECUR_HIGH: u16 = 0x0400;
const VERSION: u16 = 0x0007;

/// A view of a GRE header and its payload.
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

    /// Checks that the buffer holds the header with the optional fields its flags announce.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS)
    }

    /// C: a checksum is present.
    #[inline]
    pub fn checksum_present(&self) -> bool {
        self.flags() & C != 0
    }

    /// K: a key is present.
    #[inline]
    pub fn key_present(&self) -> bool {
        self.flags() & K != 0
    }

    /// S: a sequence number is present.
    #[inline]
    pub fn seq_present(&self) -> bool {
        self.flags() & S != 0
    }

    /// False when a bit RFC 2784 says to discard on is set (R, s, the high Recur bit).
    #[inline]
    pub fn reserved_ok(&self) -> bool {
        self.flags() & (R | STRICT | RECUR_HIGH) == 0
    }

    /// Version (0 for GRE).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION) as u8
    }

    /// Protocol type of the payload.
    #[inline]
    pub fn protocol(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header length with the optional fields.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + 4 * (self.checksum_present() as usize + self.key_present() as usize + self.seq_present() as usize)
    }

    /// The checksum, when present.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        self.checksum_present().then(|| get_u16(self.buffer.as_ref(), field::OPTIONAL))
    }

    /// The key, when present.
    #[inline]
    pub fn key(&self) -> Option<u32> {
        let at = field::OPTIONAL + 4 * self.checksum_present() as usize;
        self.key_present().then(|| get_u32(self.buffer.as_ref(), at))
    }

    /// The sequence number, when present.
    #[inline]
    pub fn seq(&self) -> Option<u32> {
        let at = field::OPTIONAL + 4 * (self.checksum_present() as usize + self.key_present() as usize);
        self.seq_present().then(|| get_u32(self.buffer.as_ref(), at))
    }

    /// NVGRE: the Virtual Subnet ID (the key's high 24 bits).
    #[inline]
    pub fn vsid(&self) -> Option<u32> {
        self.key().map(|k| k >> 8)
    }

    /// NVGRE: the FlowID (the key's low 8 bits).
    #[inline]
    pub fn flow_id(&self) -> Option<u8> {
        self.key().map(|k| k as u8)
    }

    /// True for an NVGRE header (RFC 7637): K set, C and S clear, version 0, Ethernet payload.
    #[inline]
    pub fn is_nvgre(&self) -> bool {
        self.flags() & (C | K | S | VERSION) == K && self.protocol() == super::ethertype::TEB
    }

    /// The payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum (if present) is right over header and payload.
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flag bits C, K, S (others 0) and version 0.
    #[inline]
    pub fn set_flags(&mut self, checksum: bool, key: bool, seq: bool) {
        let v = if checksum { C } else { 0 } | if key { K } else { 0 } | if seq { S } else { 0 };
        set_u16(self.buffer.as_mut(), field::FLAGS, v)
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::PROTOCOL, v)
    }

    /// Sets the key (K must be set).
    #[inline]
    pub fn set_key(&mut self, v: u32) {
        let at = field::OPTIONAL + 4 * self.checksum_present() as usize;
        set_u32(self.buffer.as_mut(), at, v)
    }

    /// Sets the sequence number (S must be set).
    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        let at = field::OPTIONAL + 4 * (self.checksum_present() as usize + self.key_present() as usize);
        set_u32(self.buffer.as_mut(), at, v)
    }

    /// Computes the checksum over the whole buffer (C must be set); Reserved1 becomes 0.
    pub fn fill_checksum(&mut self) {
        set_u32(self.buffer.as_mut(), field::OPTIONAL, 0);
        let c = checksum::checksum(self.buffer.as_ref());
        set_u16(self.buffer.as_mut(), field::OPTIONAL, c);
    }
}

/// A GRE header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Protocol type of the payload.
    pub protocol: u16,
    /// Carry a checksum (computed over the buffer given to emit).
    pub checksum: bool,
    /// The key, if any.
    pub key: Option<u32>,
    /// The sequence number, if any.
    pub seq: Option<u32>,
}

impl Repr {
    /// An NVGRE header for `vsid` (24 bits) and `flow_id`.
    pub fn nvgre(vsid: u32, flow_id: u8) -> Repr {
        Repr {
            protocol: super::ethertype::TEB,
            checksum: false,
            key: Some(((vsid & 0x00ff_ffff) << 8) | flow_id as u32),
            seq: None,
        }
    }

    /// Reads a checked header: version 0, no bit RFC 2784 says to discard on, checksum right.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 0 || !p.reserved_ok() || !p.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Repr { protocol: p.protocol(), checksum: p.checksum_present(), key: p.key(), seq: p.seq() })
    }

    /// Bytes of header [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * (self.checksum as usize + self.key.is_some() as usize + self.seq.is_some() as usize)
    }

    /// Writes the header; with `checksum`, the buffer must hold the payload already.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_flags(self.checksum, self.key.is_some(), self.seq.is_some());
        p.set_protocol(self.protocol);
        if let Some(k) = self.key {
            p.set_key(k);
        }
        if let Some(s) = self.seq {
            p.set_seq(s);
        }
        if self.checksum {
            p.fill_checksum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NVGRE, VSID 0x00abcd, FlowID 0x42 (as in RFC 7637 figure 1).
    static NVGRE: [u8; 8] = [0x20, 0x00, 0x65, 0x58, 0x00, 0xab, 0xcd, 0x42];

    #[test]
    fn golden_nvgre() {
        let p = Packet::new_checked(&NVGRE[..]).unwrap();
        assert!(p.is_nvgre() && p.reserved_ok());
        assert_eq!((p.vsid(), p.flow_id(), p.header_len()), (Some(0xabcd), Some(0x42), 8));
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r, Repr::nvgre(0xabcd, 0x42));
        let mut buf = [0xa5u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, NVGRE);
    }

    #[test]
    fn optional_fields_and_errors() {
        let r = Repr { protocol: 0x0800, checksum: true, key: Some(7), seq: Some(9) };
        let mut buf = vec![0xa5u8; r.buffer_len() + 6];
        buf[16..].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.is_nvgre());
        assert_eq!((p.key(), p.seq(), p.header_len()), (Some(7), Some(9), 16));
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), r);
        let mut bad = buf.clone();
        bad[17] ^= 1;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&bad[..])).unwrap_err(), Error::Malformed);
        assert_eq!(Packet::new_checked(&buf[..15]).unwrap_err(), Error::Truncated);
        let mut routing = NVGRE;
        routing[0] |= 0x40;
        assert!(!Packet::new_unchecked(&routing[..]).reserved_ok());
        let mut v1 = NVGRE;
        v1[1] = 1;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&v1[..])).unwrap_err(), Error::Malformed);
    }
}
