//! cargo-fuzz target: see `fuzz/checks/geneve_options.rs` for what it checks.
#![no_main]

#[path = "../checks/geneve_options.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
