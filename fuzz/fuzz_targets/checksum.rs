//! cargo-fuzz target: see `fuzz/checks/checksum.rs` for what it checks.
#![no_main]

#[path = "../checks/checksum.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
