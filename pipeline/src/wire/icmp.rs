//! ICMP (RFC 792) and ICMPv6 (RFC 4443): both start with type, code and checksum, then four
//! bytes whose meaning depends on the type (identifier and sequence of an echo, unused in an
//! error), then the body (echo data, or as much of the packet that caused an error as fits).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Rest of the header                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Body ...
//! ```
//!
//! The ICMP checksum covers the message; the ICMPv6 one also an IPv6 pseudo-header
//! ([`crate::checksum::pseudo_v6`]). Neighbour discovery (RFC 4861) messages are ICMPv6 types
//! 133..=137; their bodies start with a 16-byte target address ([`ND_TARGET`]), then options.

use super::{get_u16, get_u32, set_u16, set_u32, Error, Result};
use crate::checksum;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
}

/// Length of the header (type, code, checksum and the 4 bytes that follow).
pub const HEADER_LEN: usize = 8;

/// Offset of the target address in a neighbour solicitation or advertisement.
pub const ND_TARGET: usize = HEADER_LEN;
/// Offset of the first option in a neighbour solicitation or advertisement.
pub const ND_OPTIONS: usize = HEADER_LEN + 16;

/// ICMP (IPv4) types.
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 0: network, 1: host).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (code 0: TTL exceeded in transit).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;

    /// True for the error messages (never sent about another error, RFC 1812 4.3.2.7).
    pub fn is_error(t: u8) -> bool {
        matches!(t, DEST_UNREACHABLE | 4 | 5 | TIME_EXCEEDED | PARAM_PROBLEM)
    }
}

/// ICMPv6 types.
pub mod v6 {
    /// Destination unreachable (code 0: no route).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (code 0: hop limit exceeded in transit).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Option: source link-layer address.
    pub const OPT_SOURCE_LL: u8 = 1;
    /// Option: target link-layer address.
    pub const OPT_TARGET_LL: u8 = 2;
    /// Advertisement flags (the first byte after the checksum): router, solicited, override.
    pub const NA_ROUTER: u8 = 0x80;
    /// Solicited.
    pub const NA_SOLICITED: u8 = 0x40;
    /// Override.
    pub const NA_OVERRIDE: u8 = 0x20;

    /// True for the error messages (types below 128).
    pub fn is_error(t: u8) -> bool {
        t < 128
    }
}

/// A view of an ICMP or ICMPv6 message.
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

    /// Fails with [`Error::Truncated`] below the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 4 bytes after the checksum.
    #[inline]
    pub fn rest(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// The message after the header.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole buffer is right, starting from the pseudo-header
    /// sum `pseudo` (0 for ICMP over IPv4).
    pub fn verify_checksum(&self, pseudo: u16) -> bool {
        checksum::add(pseudo, checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets type and code.
    #[inline]
    pub fn set_type_code(&mut self, t: u8, code: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = t;
        b[field::CODE] = code;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v)
    }

    /// Sets the 4 bytes after the checksum.
    #[inline]
    pub fn set_rest(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::REST, v)
    }

    /// The body, writable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes the checksum over the whole buffer, from the pseudo-header sum `pseudo` (0 for
    /// ICMP over IPv4), and stores it.
    pub fn fill_checksum(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let c = !checksum::add(pseudo, checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }

    /// Changes type and code, updating the checksum incrementally (RFC 1624): an echo request
    /// turned into its reply.
    #[inline]
    pub fn retype(&mut self, t: u8, code: u8) {
        let old = u16::from_be_bytes([self.msg_type(), self.code()]);
        let c = checksum::update16(self.checksum(), old, u16::from_be_bytes([t, code]));
        self.set_type_code(t, code);
        self.set_checksum(c);
    }
}

/// An ICMP header as plain values (the body is left to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// The 4 bytes after the checksum.
    pub rest: u32,
}

impl Repr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr { msg_type: p.msg_type(), code: p.code(), rest: p.rest() })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `p` with a zero checksum: write the body, then
    /// [`Packet::fill_checksum`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_type_code(self.msg_type, self.code);
        p.set_checksum(0);
        p.set_rest(self.rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An echo request (id 0x1234, seq 1, data "abcd") as ping sends it, checksum included.
    static ECHO: [u8; 12] = [8, 0, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];

    #[test]
    fn golden_echo_and_reply() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.rest()), (v4::ECHO_REQUEST, 0, 0x1234_0001));
        assert!(p.verify_checksum(0));
        let r = Repr::parse(&p).unwrap();
        let mut buf = [0xa5u8; 12];
        buf[8..].copy_from_slice(b"abcd");
        let mut q = Packet::new_unchecked(&mut buf[..]);
        r.emit(&mut q);
        q.fill_checksum(0);
        assert_eq!(buf, ECHO);
        // The reply: only the type changes; the incremental checksum equals a full one.
        let mut reply = ECHO;
        let mut q = Packet::new_unchecked(&mut reply[..]);
        q.retype(v4::ECHO_REPLY, 0);
        let c = q.checksum();
        q.fill_checksum(0);
        assert_eq!(q.checksum(), c);
        assert!(Packet::new_unchecked(&reply[..]).verify_checksum(0));
    }

    #[test]
    fn errors_and_lengths() {
        assert_eq!(Packet::new_checked(&ECHO[..7]).unwrap_err(), Error::Truncated);
        assert!(v4::is_error(v4::TIME_EXCEEDED) && !v4::is_error(v4::ECHO_REQUEST));
        assert!(v6::is_error(v6::DEST_UNREACHABLE) && !v6::is_error(v6::NEIGHBOR_SOLICIT));
    }
}
