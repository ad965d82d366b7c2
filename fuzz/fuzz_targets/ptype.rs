//! cargo-fuzz target: see `fuzz/checks/ptype.rs` for what it checks.
#![no_main]

#[path = "../checks/ptype.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
