//! The stages.

pub mod basic;
