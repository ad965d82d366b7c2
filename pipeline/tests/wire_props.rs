//! Property tests of the wire views: `Repr::emit` -> `Packet::new_checked` -> `Repr::parse`
//! gives the same `Repr` for every header, and no view or `Repr::parse` panics on any bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use fastpath_pipeline::wire::*;
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

proptest! {
    #[test]
    fn ethernet_roundtrip(src in mac(), dst in mac(), et in any::<u16>()) {
        let r = EthernetRepr { src_addr: src, dst_addr: dst, ethertype: et };
        let mut b = vec![0xa5; r.buffer_len()];
        r.emit(&mut EthernetPacket::new_unchecked(&mut b[..]));
        prop_assert_eq!(EthernetRepr::parse(&EthernetPacket::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn vlan_roundtrip(pcp in 0u8..8, dei in any::<bool>(), vid in 0u16..4096, et in any::<u16>()) {
        let r = VlanRepr { pcp, dei, vid, ethertype: et };
        let mut b = vec![0xa5; r.buffer_len()];
        r.emit(&mut VlanPacket::new_unchecked(&mut b[..]));
        prop_assert_eq!(VlanRepr::parse(&VlanPacket::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn ipv4_roundtrip(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
                      payload_len in 0usize..1500, ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(),
                      dont_frag in any::<bool>()) {
        let r = Ipv4Repr { src_addr: Ipv4Addr::from(src), dst_addr: Ipv4Addr::from(dst), protocol, payload_len, ttl,
                           tos, ident, dont_frag };
        let mut b = vec![0xa5; r.buffer_len() + payload_len];
        r.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
    }

    #[test]
    fn ipv6_roundtrip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(), payload_len in 0usize..1500,
                      hop_limit in any::<u8>(), tc in any::<u8>(), flow in 0u32..0x10_0000) {
        let r = Ipv6Repr { src_addr: Ipv6Addr::from(src), dst_addr: Ipv6Addr::from(dst), next_header: nh, payload_len,
                           hop_limit, traffic_class: tc, flow_label: flow };
        let mut b = vec![0xa5; r.buffer_len() + payload_len];
        r.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn udp_roundtrip(src_port in any::<u16>(), dst_port in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..300),
                     ph in any::<u16>()) {
        let r = UdpRepr { src_port, dst_port, payload_len: payload.len() };
        let mut b = vec![0xa5; r.buffer_len() + payload.len()];
        b[8..].copy_from_slice(&payload);
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        r.emit(&mut p);
        p.fill_checksum(ph);
        prop_assert!(p.verify_checksum(ph) && p.checksum() != 0);
        prop_assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn tcp_roundtrip(src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
                     flags in any::<u8>(), window in any::<u16>(), urgent in any::<u16>(), ph in any::<u16>()) {
        let r = TcpRepr { src_port, dst_port, seq_number: seq, ack_number: ack, flags, window, urgent };
        let mut b = vec![0xa5; r.buffer_len() + 5];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        r.emit(&mut p);
        p.fill_checksum(ph);
        prop_assert!(p.verify_checksum(ph));
        prop_assert_eq!(TcpRepr::parse(&TcpPacket::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn vxlan_roundtrip(vni in 0u32..0x0100_0000) {
        let r = VxlanRepr { vni };
        let mut b = vec![0xa5; r.buffer_len()];
        r.emit(&mut VxlanPacket::new_unchecked(&mut b[..]));
        prop_assert_eq!(VxlanRepr::parse(&VxlanPacket::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn geneve_roundtrip(vni in 0u32..0x0100_0000, protocol in any::<u16>(), oam in any::<bool>(),
                        opts in proptest::collection::vec((any::<u16>(), any::<u8>(), 0usize..8), 0..5)) {
        let options = opts.into_iter()
            .map(|(class, type_, words)| GeneveOptionRepr { class, type_, data: (0..words * 4).map(|i| i as u8).collect() })
            .collect();
        let r = GeneveRepr { vni, protocol, oam, options };
        r.check().unwrap();
        let mut b = vec![0xa5; r.buffer_len()];
        r.emit(&mut GenevePacket::new_unchecked(&mut b[..]));
        let p = GenevePacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.critical(), r.options.iter().any(|o| o.type_ & 0x80 != 0));
        prop_assert_eq!(GeneveRepr::parse(&p).unwrap(), r);
    }

    #[test]
    fn gre_roundtrip(protocol in any::<u16>(), checksum in any::<bool>(), key in any::<Option<u32>>(), seq in any::<Option<u32>>(),
                     payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let r = GreRepr { protocol, checksum, key, seq };
        let n = r.buffer_len();
        let mut b = vec![0xa5; n + payload.len()];
        b[n..].copy_from_slice(&payload);
        r.emit(&mut GrePacket::new_unchecked(&mut b[..]));
        let p = GrePacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.header_len(), n);
        prop_assert_eq!(GreRepr::parse(&p).unwrap(), r);
    }

    #[test]
    fn nvgre_roundtrip(vsid in 0u32..0x0100_0000, flow in any::<u8>()) {
        let r = GreRepr::nvgre(vsid, flow);
        let mut b = vec![0xa5; r.buffer_len()];
        r.emit(&mut GrePacket::new_unchecked(&mut b[..]));
        let p = GrePacket::new_checked(&b[..]).unwrap();
        prop_assert!(p.is_nvgre());
        prop_assert_eq!((p.vsid(), p.flow_id()), (Some(vsid), Some(flow)));
    }

    /// Views over arbitrary bytes: `new_checked` either fails or gives a view whose accessors and
    /// `Repr::parse` never panic.
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let b = &b[..];
        if let Ok(p) = EthernetPacket::new_checked(b) { let _ = (EthernetRepr::parse(&p), p.payload().len()); }
        if let Ok(p) = VlanPacket::new_checked(b) { let _ = (VlanRepr::parse(&p), p.payload().len()); }
        if let Ok(p) = Ipv4Packet::new_checked(b) {
            let _ = (Ipv4Repr::parse(&p), p.payload().len(), p.options().len(), p.verify_checksum(), p.frag_offset());
        }
        if let Ok(p) = Ipv6Packet::new_checked(b) { let _ = (Ipv6Repr::parse(&p), p.upper_layer(), p.payload().len()); }
        let _ = fastpath_pipeline::wire::ipv6::walk_ext(b, b.first().copied().unwrap_or(0));
        if let Ok(p) = UdpPacket::new_checked(b) { let _ = (UdpRepr::parse(&p), p.payload().len(), p.verify_checksum(0)); }
        if let Ok(p) = TcpPacket::new_checked(b) { let _ = (TcpRepr::parse(&p), p.payload().len(), p.options().len(), p.verify_checksum(0)); }
        if let Ok(p) = VxlanPacket::new_checked(b) { let _ = (VxlanRepr::parse(&p), p.payload().len()); }
        if let Ok(p) = GenevePacket::new_checked(b) {
            let _ = (GeneveRepr::parse(&p), p.payload().len(), p.options().count());
        }
        if let Ok(p) = GrePacket::new_checked(b) {
            let _ = (GreRepr::parse(&p), p.payload().len(), p.key(), p.seq(), p.checksum(), p.verify_checksum());
        }
        let _ = fastpath_pipeline::parse::parse(b);
    }
}
