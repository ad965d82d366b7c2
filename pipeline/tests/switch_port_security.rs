//! Port security through the whole switch: frames built byte by byte go in on guarded and
//! unguarded access ports; what passes comes out, what is spoofed is dropped and counted per
//! port and reason. Every test ends with the pool full again (the kit checks).

mod switchkit;

use std::net::{Ipv4Addr, Ipv6Addr};

use fastpath_pipeline::switch::{build, PortSecurity, SwitchConfig};
use proptest::prelude::*;
use switchkit::*;

const BCAST: [u8; 6] = [0xff; 6];

/// vm0 unguarded; vm1 owns mac(1) with 192.168.0.1 and 2001:db8::1; vm2 (trusted) owns mac(2)
/// with any address.
fn cfg() -> SwitchConfig {
    SwitchConfig {
        bridges: vec![bridge("lan")],
        ports: (0..3).map(|i| access(i, &format!("vm{i}"), "lan", None)).collect(),
        port_security: vec![
            PortSecurity {
                port: "vm1".into(),
                allowed: vec![
                    "52:54:00:00:00:01 192.168.0.1".parse().unwrap(),
                    "52:54:00:00:00:01 2001:db8::1/128".parse().unwrap(),
                ],
                trusted: false,
            },
            PortSecurity { port: "vm2".into(), allowed: vec!["52:54:00:00:00:02".parse().unwrap()], trusted: true },
        ],
        ..Default::default()
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], et: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&et.to_be_bytes());
    f
}

/// UDP/IPv4 from `src` (MAC, IP, port) to `dport`, broadcast.
fn udp4(src: [u8; 6], ip: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(BCAST, src, 0x0800);
    let s: Ipv4Addr = ip.parse().unwrap();
    f.extend_from_slice(&[0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&[255, 255, 255, 255]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    f
}

/// IPv6 from `src` (MAC, IP) with next header `nh` and `payload`, to all nodes.
fn ip6(src: [u8; 6], ip: &str, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth([0x33, 0x33, 0, 0, 0, 1], src, 0x86dd);
    let s: Ipv6Addr = ip.parse().unwrap();
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[nh, 255]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(payload);
    f
}

/// An ICMPv6 neighbour advertisement for `target`.
fn na(src: [u8; 6], ip: &str, target: &str) -> Vec<u8> {
    let mut p = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    p.extend_from_slice(&target.parse::<Ipv6Addr>().unwrap().octets());
    ip6(src, ip, 58, &p)
}

/// A router advertisement.
fn ra(src: [u8; 6]) -> Vec<u8> {
    ip6(src, "fe80::1", 58, &[134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
}

/// Sends one frame on `port`; true when it came out anywhere.
fn passes(k: &mut Kit, port: u16, f: Vec<u8>) -> bool {
    !k.send1(port, f).is_empty()
}

/// The drops of `port` by reason, from the switch report.
fn port_drops(k: &Kit, port: usize) -> Vec<(&'static str, u64)> {
    k.control.stats().ports[port].drops.clone()
}

#[test]
fn allowed_sources_pass() {
    let mut k = Kit::new(&cfg());
    assert!(passes(&mut k, 1, udp4(mac(1), "192.168.0.1", 1000, 2000)));
    assert!(passes(&mut k, 1, ip6(mac(1), "2001:db8::1", 17, &[0, 1, 0, 2, 0, 8, 0, 0])));
    assert!(passes(&mut k, 1, ip6(mac(1), "fe80::5054:ff:fe00:1", 17, &[0, 1, 0, 2, 0, 8, 0, 0])));
    assert!(passes(&mut k, 1, na(mac(1), "2001:db8::1", "2001:db8::1")));
    assert!(passes(&mut k, 1, arp(BCAST, 1, mac(1), "192.168.0.1", [0; 6], "192.168.0.2")));
    assert!(passes(&mut k, 1, arp(BCAST, 2, mac(1), "192.168.0.1", mac(0), "192.168.0.2")));
    // A MAC-only entry allows any address; vm0 has no port security at all.
    assert!(passes(&mut k, 2, udp4(mac(2), "10.9.9.9", 1000, 2000)));
    assert!(passes(&mut k, 0, udp4(mac(7), "10.9.9.9", 1000, 2000)));
    assert!(k.control.stats().ports.iter().all(|p| p.drops.is_empty()));
}

#[test]
fn neutron_exceptions_pass() {
    let mut k = Kit::new(&cfg());
    // DHCP discover before the VM has an address; DAD from ::; an ARP probe.
    assert!(passes(&mut k, 1, udp4(mac(1), "0.0.0.0", 68, 67)));
    assert!(passes(&mut k, 1, ip6(mac(1), "::", 58, &[135, 0, 0, 0, 0, 0, 0, 0])));
    assert!(passes(&mut k, 1, arp(BCAST, 1, mac(1), "0.0.0.0", [0; 6], "192.168.0.1")));
    assert!(port_drops(&k, 1).is_empty());
}

#[test]
fn spoofed_frames_are_dropped_and_counted_per_port_and_reason() {
    let mut k = Kit::new(&cfg());
    let spoofs = [
        (udp4(mac(9), "192.168.0.1", 1000, 2000), "spoofed-mac"),
        (arp(BCAST, 1, mac(9), "192.168.0.1", [0; 6], "192.168.0.2"), "spoofed-mac"),
        (udp4(mac(1), "192.168.0.7", 1000, 2000), "spoofed-ip"),
        (udp4(mac(1), "0.0.0.0", 1000, 2000), "spoofed-ip"),
        (ip6(mac(1), "2001:db8::2", 17, &[0, 1, 0, 2, 0, 8, 0, 0]), "spoofed-ip"),
        (udp4(mac(1), "192.168.0.1", 1000, 2000)[..30].to_vec(), "spoofed-ip"),
        (arp(BCAST, 1, mac(1), "192.168.0.9", [0; 6], "192.168.0.2"), "spoofed-arp"),
        (arp(BCAST, 2, mac(1), "192.168.0.254", mac(0), "192.168.0.2"), "spoofed-arp"),
        // The ARP sender MAC is another host's (the Ethernet source is ours).
        (
            {
                let mut f = arp(BCAST, 2, mac(5), "192.168.0.1", mac(0), "192.168.0.2");
                f[6..12].copy_from_slice(&mac(1));
                f
            },
            "spoofed-arp",
        ),
        (na(mac(1), "2001:db8::1", "2001:db8::99"), "spoofed-nd"),
        (na(mac(1), "fe80::1", "2001:db8::2"), "spoofed-nd"),
        (ra(mac(1)), "ra-guard"),
        (udp4(mac(1), "192.168.0.1", 67, 68), "dhcp-guard"),
        (ip6(mac(1), "fe80::1", 17, &[0x02, 0x23, 0x02, 0x22, 0, 8, 0, 0]), "dhcp-guard"),
    ];
    let mut want: Vec<(&str, u64)> = Vec::new();
    for (f, reason) in spoofs {
        assert!(!passes(&mut k, 1, f), "{reason}");
        match want.iter_mut().find(|w| w.0 == reason) {
            Some(w) => w.1 += 1,
            None => want.push((reason, 1)),
        }
    }
    let mut got = port_drops(&k, 1);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for (reason, n) in want {
        assert_eq!(k.drops(reason), n, "{reason} in the stage counters");
    }
    assert!(port_drops(&k, 0).is_empty() && port_drops(&k, 2).is_empty());
}

#[test]
fn a_trusted_port_may_serve_dhcp_and_send_router_advertisements() {
    let mut k = Kit::new(&cfg());
    assert!(passes(&mut k, 2, udp4(mac(2), "192.168.0.2", 67, 68)));
    assert!(passes(&mut k, 2, ra(mac(2))));
    assert!(passes(&mut k, 2, ip6(mac(2), "fe80::2", 17, &[0x02, 0x23, 0x02, 0x22, 0, 8, 0, 0])));
    // ... but still only from its own MAC.
    assert!(!passes(&mut k, 2, ra(mac(1))));
    assert_eq!(port_drops(&k, 2), vec![("spoofed-mac", 1)]);
}

#[test]
fn bad_port_security_config_is_refused_with_the_fix() {
    let pool = fastpath_mempool::Mempool::new(
        "ps-cfg",
        &fastpath_mempool::PoolConfig { mbufs: 64, chunk_size: 2048, pages: fastpath_mempool::PagePolicy::Small },
    )
    .unwrap();
    let mut c = cfg();
    c.port_security[1].port = "nope".into();
    let e = build(&c, &pool, 1).unwrap_err().to_string();
    assert!(e.contains("\"nope\": there is no such port"), "{e}");
    let mut c = cfg();
    c.port_security[1].port = "vm1".into();
    let e = build(&c, &pool, 1).unwrap_err().to_string();
    assert!(e.contains("vm1: port security given twice"), "{e}");
    let mut c = cfg();
    c.port_security[0].allowed.clear();
    let e = build(&c, &pool, 1).unwrap_err().to_string();
    assert!(e.contains("allowed = [] would drop everything"), "{e}");
    let mut c = cfg();
    c.ports.push(uplink(3));
    c.port_security[0].port = "uplink".into();
    let e = build(&c, &pool, 1).unwrap_err().to_string();
    assert!(e.contains("remove it from the uplink"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes behind our MAC with any EtherType never panic the check, and every mbuf comes
    /// back (the kit checks the pool when it goes).
    #[test]
    fn arbitrary_frames_never_panic(et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x88cc]),
                                    body in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut k = Kit::new(&cfg());
        let mut f = eth(BCAST, mac(1), et);
        f.extend_from_slice(&body);
        let out = k.send1(1, f);
        let drops: u64 = port_drops(&k, 1).iter().map(|d| d.1).sum();
        prop_assert_eq!(out.is_empty(), drops == 1);
    }
}
