//! GENEVE headers and their option TLVs: the options iterator stays inside the header, and a
//! parsed `Repr` emits the same bytes back (but the reserved bits and C, which emit derives).
#![no_main]

use fastpath_pipeline::wire::{GenevePacket, GeneveRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
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
});
