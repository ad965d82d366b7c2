//! Every checksum kernel agrees with a plain 16-bit reference on any bytes at any offset, and a
//! sum carried across a split equals the whole.
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/checksum.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use fastpath_pipeline::checksum::{add, Kernel, Sum};

fn reference(d: &[u8]) -> u16 {
    let mut acc = 0u64;
    for c in d.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    let Some((&cut, d)) = b.split_first() else { return };
    let want = reference(d);
    for k in Kernel::supported() {
        assert_eq!(k.sum(d), want, "{k:?}");
    }
    let cut = (cut as usize).min(d.len());
    let mut s = Sum::new(0);
    s.add_bytes(&d[..cut]);
    s.add_bytes(&d[cut..]);
    assert_eq!(s.sum(), add(want, 0));
}
