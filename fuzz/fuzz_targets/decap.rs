//! cargo-fuzz target: see `fuzz/checks/decap.rs` for what it checks.
#![no_main]

#[path = "../checks/decap.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
