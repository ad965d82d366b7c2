//! The stages.

pub mod basic;
pub mod checksum;
pub mod ptype;
pub mod tunnel;
