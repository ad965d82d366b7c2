//! GENEVE header (RFC 8926) with option TLVs, carried in UDP to port 6081.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Variable-Length Options                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! An option:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Option Class         |      Type     |R|R|R| Length  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Variable-Length Option Data                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Opt Len and an option's Length count 4-byte words. The high bit of an option's Type marks it
//! critical: a receiver that does not know a critical option MUST drop the packet. O marks a
//! control packet, whose payload a tunnel endpoint MUST NOT forward. An unknown version MUST be
//! dropped. The reserved bits are ignored on receipt.

use super::{get_u16, get_u24, set_u16, set_u24, Error, Result};

mod field {
    pub const VER_OPTLEN: usize = 0;
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: usize = 2;
    pub const VNI: usize = 4;
    pub const OPTIONS: usize = 8;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::OPTIONS;
/// The IANA UDP port.
pub const PORT: u16 = 6081;
/// Longest options field (Opt Len is 6 bits of 4-byte words).
pub const MAX_OPTIONS_LEN: usize = 63 * 4;
/// Longest data of one option (Length is 5 bits of 4-byte words).
pub const MAX_OPTION_DATA: usize = 31 * 4;
/// The critical bit of an option Type.
pub const TYPE_CRITICAL: u8 = 0x80;

const FLAG_O: u8 = 0x80;
const FLAG_C: u8 = 0x40;

/// A view of a GENEVE header, its options and the payload after them.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// One option TLV, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionView<'a> {
    /// Option class.
    pub class: u16,
    /// Type (the high bit is the critical bit).
    pub type_: u8,
    /// The option data (Length * 4 bytes).
    pub data: &'a [u8],
}

impl OptionView<'_> {
    /// True when a receiver that does not know the option must drop the packet.
    pub fn critical(&self) -> bool {
        self.type_ & TYPE_CRITICAL != 0
    }
}

/// Iterator over the options of a header; yields `Err(Truncated)` once (and stops) when an option
/// runs past the options field.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<OptionView<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < 4 {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        }
        let len = (self.rest[3] & 0x1f) as usize * 4;
        if self.rest.len() < 4 + len {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        }
        let o = OptionView { class: get_u16(self.rest, 0), type_: self.rest[2], data: &self.rest[4..4 + len] };
        self.rest = &self.rest[4 + len..];
        Some(Ok(o))
    }
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

    /// Checks that the buffer holds the fixed header and Opt Len bytes of options.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version (0).
    #[inline]
    pub fn version(&self) -> u8 {
        self.b()[field::VER_OPTLEN] >> 6
    }

    /// Length of the options in bytes.
    #[inline]
    pub fn options_len(&self) -> usize {
        (self.b()[field::VER_OPTLEN] & 0x3f) as usize * 4
    }

    /// Fixed header plus options.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// O: a control packet.
    #[inline]
    pub fn oam(&self) -> bool {
        self.b()[field::FLAGS] & FLAG_O != 0
    }

    /// C: critical options are present.
    #[inline]
    pub fn critical(&self) -> bool {
        self.b()[field::FLAGS] & FLAG_C != 0
    }

    /// Protocol type of the payload (0x6558 for Ethernet).
    #[inline]
    pub fn protocol(&self) -> u16 {
        get_u16(self.b(), field::PROTOCOL)
    }

    /// VNI.
    #[inline]
    pub fn vni(&self) -> u32 {
        get_u24(self.b(), field::VNI)
    }

    /// The options field.
    #[inline]
    pub fn options_raw(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The options, one by one.
    #[inline]
    pub fn options(&self) -> Options<'_> {
        Options { rest: self.options_raw() }
    }

    /// The payload after the options.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 0 and the options length in bytes (a multiple of 4, up to 252).
    #[inline]
    pub fn set_options_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_OPTLEN] = ((len / 4) & 0x3f) as u8;
    }

    /// Sets O and C; the reserved bits become 0.
    #[inline]
    pub fn set_flags(&mut self, oam: bool, critical: bool) {
        self.buffer.as_mut()[field::FLAGS] = if oam { FLAG_O } else { 0 } | if critical { FLAG_C } else { 0 };
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::PROTOCOL, v)
    }

    /// Sets the VNI (24 bits) and clears the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, v: u32) {
        set_u24(self.buffer.as_mut(), field::VNI, v & 0x00ff_ffff);
        self.buffer.as_mut()[7] = 0;
    }
}

/// One option as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionRepr {
    /// Option class.
    pub class: u16,
    /// Type (high bit: critical).
    pub type_: u8,
    /// Data: a multiple of 4 bytes, at most [`MAX_OPTION_DATA`].
    pub data: Vec<u8>,
}

/// A GENEVE header as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// VNI (24 bits).
    pub vni: u32,
    /// Protocol type of the payload.
    pub protocol: u16,
    /// Control packet.
    pub oam: bool,
    /// Options, in order.
    pub options: Vec<OptionRepr>,
}

impl Repr {
    /// Reads a checked header: version 0, options well formed (C is recomputed from them).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 0 {
            return Err(Error::Malformed);
        }
        let mut options = Vec::new();
        for o in p.options() {
            let o = o?;
            options.push(OptionRepr { class: o.class, type_: o.type_, data: o.data.to_vec() });
        }
        Ok(Repr { vni: p.vni(), protocol: p.protocol(), oam: p.oam(), options })
    }

    /// Bytes of options.
    pub fn options_len(&self) -> usize {
        self.options.iter().map(|o| 4 + o.data.len()).sum()
    }

    /// Bytes [`Repr::emit`] writes (fixed header and options).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// Checks what emit needs: option data in 4-byte words, at most 124 bytes each, 252 in all.
    pub fn check(&self) -> Result<()> {
        if self.options.iter().any(|o| o.data.len() % 4 != 0 || o.data.len() > MAX_OPTION_DATA)
            || self.options_len() > MAX_OPTIONS_LEN
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Writes the header and options; C is set when any option is critical. The Repr must pass
    /// [`Repr::check`] (otherwise lengths are cut to their fields).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let critical = self.options.iter().any(|o| o.type_ & TYPE_CRITICAL != 0);
        p.set_options_len(self.options_len());
        p.set_flags(self.oam, critical);
        p.set_protocol(self.protocol);
        p.set_vni(self.vni);
        let b = p.buffer.as_mut();
        let mut at = HEADER_LEN;
        for o in &self.options {
            set_u16(b, at, o.class);
            b[at + 2] = o.type_;
            b[at + 3] = ((o.data.len() / 4) & 0x1f) as u8;
            b[at + 4..at + 4 + o.data.len()].copy_from_slice(&o.data);
            at += 4 + o.data.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VNI 0x123456, Ethernet payload, one critical option class 0x0102 type 0x80 with 4 bytes.
    static HDR: [u8; 16] =
        [0x02, 0x40, 0x65, 0x58, 0x12, 0x34, 0x56, 0x00, 0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn golden_parse_and_emit() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!((p.version(), p.options_len(), p.oam(), p.critical()), (0, 8, false, true));
        assert_eq!((p.protocol(), p.vni()), (0x6558, 0x123456));
        let opts: Vec<_> = p.options().collect::<Result<_>>().unwrap();
        assert_eq!(opts.len(), 1);
        assert!(opts[0].critical());
        assert_eq!(opts[0].data, &[0xde, 0xad, 0xbe, 0xef]);
        let r = Repr::parse(&p).unwrap();
        r.check().unwrap();
        assert_eq!(r.buffer_len(), 16);
        let mut buf = [0xa5u8; 16];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HDR);
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Packet::new_checked(&HDR[..15]).unwrap_err(), Error::Truncated);
        let mut v1 = HDR;
        v1[0] |= 0x40;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&v1[..])).unwrap_err(), Error::Malformed);
        // An option whose length runs past Opt Len.
        let mut long = HDR;
        long[11] = 2;
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.options().last().unwrap().unwrap_err(), Error::Truncated);
        let r = Repr {
            vni: 1,
            protocol: 0x6558,
            oam: false,
            options: vec![OptionRepr { class: 1, type_: 1, data: vec![1] }],
        };
        assert_eq!(r.check().unwrap_err(), Error::Malformed);
    }
}
