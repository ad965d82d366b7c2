//! The IPv6 extension-header walk: never panics, and what it returns lies inside the input.
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/ipv6_ext.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use fastpath_pipeline::wire::ipv6::walk_ext;

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    let Some((&nh, rest)) = b.split_first() else { return };
    if let Ok(u) = walk_ext(rest, nh) {
        assert!(u.offset <= rest.len());
    }
}
