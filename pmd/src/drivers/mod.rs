//! Port drivers.

pub mod af_xdp;
pub mod null;
pub mod pcap;
pub mod ring;
pub mod tap;
