//! GENEVE headers and their option TLVs: the options iterator stays inside the header, and a
//! parsed `Repr` emits the same bytes back (but the reserved bits and C, which emit derives).
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/geneve_options.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use fastpath_pipeline::wire::{GenevePacket, GeneveRepr};

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    let Ok(p) = GenevePacket::new_checked(b) else { return };
    let mut total = 0;
    for o in p.options() {
        match o {
            Ok(o) => total += 4 + o.data.len(),
            Err(_) => break,
        }
    }
    assert!(total <= p.options_len());
    if let Ok(r) = GeneveRepr::parse(&p) {
        assert!(r.check().is_ok());
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut GenevePacket::new_unchecked(&mut out[..]));
        assert_eq!(GeneveRepr::parse(&GenevePacket::new_checked(&out[..]).unwrap()).unwrap(), r);
    }
}
