//! `lso[,mss=N][,mtu=N]`: large send offload in software (TSO and USO, plain or tunnelled).
//!
//! - Without options it serves exactly the packets whose mbuf asks for segmentation
//!   (`TX_TCP_SEG` / `TX_UDP_SEG` with `tso_segsz`, DPDK's model; a vhost-user guest's or a TAP
//!   device's `gso_size` arrives that way), whatever the output port could do.
//! - `mss=N` (64..=65535): also every TCP packet with more than N bytes of payload is cut to N
//!   (a packet that asks for a smaller `tso_segsz` gets that).
//! - `mtu=N` (128..=65535): also every packet whose L3 size (outermost IP header and all that
//!   follows) exceeds N: TCP is cut so that each segment fits N; a UDP datagram asking for USO is
//!   cut likewise; anything else that exceeds N cannot be cut (no IP fragmentation here) and is
//!   dropped as `not-segmentable`.
//!
//! The cutting, the checksums and the handling of chains are the segmentation engine's
//! ([`crate::stages::segment`]); drop reasons and counters are listed there.

use fastpath_pmd::{Error, PortInfo, Spec};

use crate::stages::segment::{Mode, SegmentStage};

/// The accepted form.
pub const FORM: &str = "lso[,mss=N][,mtu=N]";

/// An LSO stage cutting to `mss` / `mtu` (see the module doc), sending to `ports`.
pub fn lso(mss: Option<u16>, mtu: Option<u16>, ports: &[PortInfo]) -> SegmentStage {
    SegmentStage::new("lso", Mode::Lso { mss, mtu }, ports)
}

/// Builds the stage from its spec.
pub fn from_spec(s: &mut Spec, ports: &[PortInfo]) -> Result<SegmentStage, Error> {
    let mss = s.take_num("mss", 64u16, u16::MAX)?;
    let mtu = s.take_num("mtu", 128u16, u16::MAX)?;
    s.finish(false)?;
    Ok(lso(mss, mtu, ports))
}
