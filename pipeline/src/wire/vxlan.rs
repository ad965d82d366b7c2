//! VXLAN header (RFC 7348), carried in UDP to port 4789.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! RFC 7348 section 5: the I flag MUST be 1 for a valid VNI; the reserved bits MUST be zero on
//! transmission and are ignored on receipt (so a receiver drops only a header without I).

use super::{get_u24, set_u24, Error, Result};

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: usize = 4;
}

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// The IANA UDP port.
pub const PORT: u16 = 4789;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A view of a VXLAN header and the inner frame after it.
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

    /// Fails with [`Error::Truncated`] when the buffer is shorter than the header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The I flag (the VNI is valid).
    #[inline]
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// VNI.
    #[inline]
    pub fn vni(&self) -> u32 {
        get_u24(self.buffer.as_ref(), field::VNI)
    }

    /// The inner frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte and clears the reserved bytes around it.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[..4].copy_from_slice(&[v, 0, 0, 0]);
    }

    /// Sets the VNI (24 bits) and clears the last reserved byte.
    #[inline]
    pub fn set_vni(&mut self, v: u32) {
        set_u24(self.buffer.as_mut(), field::VNI, v & MAX_VNI);
        self.buffer.as_mut()[7] = 0;
    }
}

/// A VXLAN header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// VNI (24 bits).
    pub vni: u32,
}

impl Repr {
    /// Reads a checked header; Malformed without the I flag.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if !p.vni_valid() {
            return Err(Error::Malformed);
        }
        Ok(Repr { vni: p.vni() })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: I set, reserved bits zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_flags(FLAG_I);
        p.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VNI 123, I flag set (as tshark shows "VXLAN Network Identifier (VNI): 123").
    static HDR: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 0x7b, 0];

    #[test]
    fn golden_parse_and_emit() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert!(p.vni_valid());
        assert_eq!(p.vni(), 123);
        let r = Repr::parse(&p).unwrap();
        let mut buf = [0xa5u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HDR);
        let mut no_i = HDR;
        no_i[0] = 0;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&no_i[..])).unwrap_err(), Error::Malformed);
        // Reserved bits are ignored on receipt.
        let mut rsvd = HDR;
        rsvd[0] = 0x88;
        rsvd[7] = 0xff;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&rsvd[..])).unwrap(), Repr { vni: 123 });
        assert_eq!(Packet::new_checked(&HDR[..7]).unwrap_err(), Error::Truncated);
    }
}
