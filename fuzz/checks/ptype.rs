//! The packet-type parser (and the encap flow parser) on arbitrary frames: never panics, and
//! the lengths it reports lie inside the frame.
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/ptype.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use fastpath_pipeline::parse::parse;
use fastpath_pipeline::stages::tunnel::inner_info;

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    let p = parse(b);
    let l = p.lens;
    let used = [l.l2_len, l.l3_len, l.l4_len, l.tunnel_len, l.inner_l2_len, l.inner_l3_len, l.inner_l4_len]
        .iter()
        .map(|&x| x as usize)
        .sum::<usize>();
    assert!(used <= b.len(), "{p:?} over {} bytes", b.len());
    let i = inner_info(b);
    assert!((i.l2_len + i.l3_len + i.l4_len) as usize <= b.len());
}
