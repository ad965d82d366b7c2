//! The stages.

pub mod basic;
pub mod checksum;
pub mod gro;
pub mod lso;
pub mod ptype;
pub mod segment;
pub mod tunnel;
pub mod txoffload;
