//! Port drivers.

pub mod null;
pub mod pcap;
pub mod ring;
pub mod tap;
