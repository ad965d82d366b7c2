//! cargo-fuzz target: see `fuzz/checks/ipv6_ext.rs` for what it checks.
#![no_main]

#[path = "../checks/ipv6_ext.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
