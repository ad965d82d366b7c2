//! `tx-offload`: the software fallback for transmit offloads, which the pipeline builder
//! appends by itself (see [`crate::builder`]).
//!
//! After the pipeline an mbuf may still ask for work on its way out: checksums (`TX_IP_CKSUM`,
//! `TX_TCP_CKSUM`, `TX_UDP_CKSUM`, `TX_OUTER_IP_CKSUM`, `TX_OUTER_UDP_CKSUM`) and segmentation
//! (`TX_TCP_SEG`, `TX_UDP_SEG`, plain or in a tunnel). Requests come from receive ports (a
//! vhost-user guest's or a TAP device's GSO packets), from the `gro` stage, from encap stages
//! (outer checksums of a packet whose inner bytes will still change) and from `lso` (checksums
//! left to a port that can do them). This stage looks each request up in the capability table
//! of the packet's `out_port` ([`fastpath_pmd::PortInfo::offloads`]): what the port does itself
//! is left to it; the rest is done here, segmentation by the engine of `lso`
//! ([`crate::stages::segment`]) with the packet's `tso_segsz`, checksums in place (on a private
//! copy when the buffer is shared with a clone). A packet without requests costs one test of its
//! `ol_flags`.

use fastpath_pmd::{Error, PortInfo, Spec};

use crate::stages::segment::{Mode, SegmentStage};

/// The accepted form.
pub const FORM: &str = "tx-offload";

/// The fallback stage for packets going to `ports`.
pub fn tx_offload(ports: &[PortInfo]) -> SegmentStage {
    SegmentStage::new("tx-offload", Mode::TxOffload, ports)
}

/// Builds the stage from its spec (it has no options).
pub fn from_spec(s: &mut Spec, ports: &[PortInfo]) -> Result<SegmentStage, Error> {
    s.finish(false)?;
    Ok(tx_offload(ports))
}
