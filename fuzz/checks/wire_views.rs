//! Every wire view over arbitrary bytes: `new_checked` fails or gives a view whose accessors and
//! `Repr::parse` never panic; a parsed `Repr` emits and parses back to itself.
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/wire_views.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use fastpath_pipeline::wire::*;

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    if let Ok(p) = EthernetPacket::new_checked(b) {
        let _ = (EthernetRepr::parse(&p), p.payload().len());
    }
    if let Ok(p) = VlanPacket::new_checked(b) {
        let _ = (VlanRepr::parse(&p), p.payload().len());
    }
    if let Ok(p) = Ipv4Packet::new_checked(b) {
        let _ = (p.payload().len(), p.options().len(), p.verify_checksum(), p.frag_offset());
        if let Ok(r) = Ipv4Repr::parse(&p) {
            let mut out = vec![0u8; r.buffer_len() + r.payload_len];
            r.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
            assert_eq!(Ipv4Repr::parse(&Ipv4Packet::new_checked(&out[..]).unwrap()), Ok(r));
        }
    }
    if let Ok(p) = Ipv6Packet::new_checked(b) {
        let _ = (Ipv6Repr::parse(&p), p.upper_layer(), p.payload().len());
    }
    if let Ok(p) = UdpPacket::new_checked(b) {
        let _ = (UdpRepr::parse(&p), p.payload().len(), p.verify_checksum(0));
    }
    if let Ok(p) = TcpPacket::new_checked(b) {
        let _ = (TcpRepr::parse(&p), p.payload().len(), p.options().len(), p.verify_checksum(0));
    }
    if let Ok(p) = VxlanPacket::new_checked(b) {
        let _ = (VxlanRepr::parse(&p), p.payload().len());
    }
    if let Ok(p) = GrePacket::new_checked(b) {
        let _ = (p.payload().len(), p.key(), p.seq(), p.checksum(), p.is_nvgre());
        if let Ok(r) = GreRepr::parse(&p) {
            let mut out = b.to_vec();
            r.emit(&mut GrePacket::new_unchecked(&mut out[..]));
            assert_eq!(GreRepr::parse(&GrePacket::new_checked(&out[..]).unwrap()), Ok(r));
        }
    }
}
