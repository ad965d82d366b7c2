//! cargo-fuzz target: see `fuzz/checks/wire_views.rs` for what it checks.
#![no_main]

#[path = "../checks/wire_views.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|b: &[u8]| check::run(b));
