//! The switch data path, driven like an lcore drives it (Batch + Ctx, process then resume):
//! learning, aging (a manual clock), moves, both limits, flooding to every local port and every
//! remote VTEP with split horizon, static entries, tenant isolation, VLAN access ports and the
//! VXLAN <-> VLAN gateway, the VTEP's ARP / ND and the resolution of remote VTEPs, the uplink's
//! drops, the MTU drop, clones, the packet trace. Every test ends with the pool full again (the
//! kit checks).

mod switchkit;

use fastpath_mempool::offload;
use fastpath_pipeline::switch::{FdbConfig, PortConfig, StaticMac, StaticNeighbour, SwitchConfig};
use switchkit::*;

/// FDB settings for tests: a table small enough to be aged in one poll.
fn fdb() -> FdbConfig {
    FdbConfig { capacity: 4096, ..Default::default() }
}

fn lan(n: u16) -> SwitchConfig {
    SwitchConfig {
        bridges: vec![bridge("lan")],
        ports: (0..n).map(|i| access(i, &format!("vm{i}"), "lan", None)).collect(),
        fdb: fdb(),
        ..Default::default()
    }
}

/// Uplink 0, vm1 and vm2 in VNI 100 flooding to REMOTE1 and REMOTE2, both resolved.
fn overlay() -> SwitchConfig {
    SwitchConfig {
        bridges: vec![vxlan_bridge("t100", 100, &[REMOTE1, REMOTE2])],
        ports: vec![uplink(0), access(1, "vm1", "t100", None), access(2, "vm2", "t100", None)],
        neighbours: vec![
            StaticNeighbour { addr: ip(REMOTE1), mac: ROUTER_MAC },
            StaticNeighbour { addr: ip(REMOTE2), mac: ROUTER_MAC },
        ],
        fdb: fdb(),
        ..Default::default()
    }
}

#[test]
fn learns_then_forwards_known_unicast() {
    let mut k = Kit::new(&lan(3));
    let out = k.send1(0, frame(mac(2), mac(1), 20));
    assert_eq!(ports(&out), vec![1, 2], "unknown unicast floods to the other ports");
    k.poll();
    let e = k.control.lookup("lan", None, mac(1)).expect("learned");
    assert_eq!(e.port.as_deref(), Some("vm0"));
    let out = k.send1(1, frame(mac(1), mac(2), 20));
    assert_eq!(ports(&out), vec![0], "known unicast goes to its port only");
    assert_eq!(out[0].bytes, frame(mac(1), mac(2), 20), "untouched");
    k.poll();
    let out = k.send1(0, frame(mac(2), mac(1), 20));
    assert_eq!(ports(&out), vec![1]);
    let s = k.control.stats();
    assert_eq!((s.bridges[0].learned, s.bridges[0].fdb_size, s.bridges[0].flooded), (2, 2, 1));
    assert_eq!(s.ports[0].macs, 1);
    // Back to where it came from: dropped.
    let out = k.send1(0, frame(mac(1), mac(3), 20));
    assert!(out.is_empty());
    assert_eq!(k.drops("same-port"), 1);
}

#[test]
fn ages_out_unless_seen() {
    let mut k = Kit::new(&lan(2));
    k.send1(0, frame(mac(9), mac(1), 20));
    k.send1(1, frame(mac(9), mac(2), 20));
    k.poll();
    assert_eq!(k.control.stats().bridges[0].fdb_size, 2);
    k.advance(200);
    k.send1(0, frame(mac(9), mac(1), 20)); // refreshes mac 1 only
    k.poll();
    k.advance(150);
    k.poll();
    assert!(k.control.lookup("lan", None, mac(1)).is_some(), "seen 150 s ago");
    assert!(k.control.lookup("lan", None, mac(2)).is_none(), "seen 350 s ago");
    k.advance(200);
    k.poll();
    let s = k.control.stats();
    assert_eq!((s.bridges[0].aged, s.bridges[0].fdb_size, s.ports[0].macs), (2, 0, 0));
    assert!(k.stat("switch-learn", "refreshed") >= 1);
}

#[test]
fn moves_are_counted() {
    let mut k = Kit::new(&lan(3));
    k.send1(0, frame(mac(9), mac(1), 20));
    k.poll();
    k.send1(2, frame(mac(9), mac(1), 20));
    k.poll();
    assert_eq!(k.control.lookup("lan", None, mac(1)).unwrap().port.as_deref(), Some("vm2"));
    let s = k.control.stats();
    assert_eq!((s.bridges[0].moved, s.bridges[0].learned, s.ports[0].macs, s.ports[2].macs), (1, 1, 0, 1));
    let out = k.send1(1, frame(mac(1), mac(5), 20));
    assert_eq!(ports(&out), vec![2]);
}

#[test]
fn bridge_and_port_limits_refuse_and_count() {
    let mut cfg = lan(3);
    cfg.fdb.bridge_limit = 3;
    cfg.fdb.port_limit = 2;
    let mut k = Kit::new(&cfg);
    let frames: Vec<Vec<u8>> = (1..=5).map(|i| frame(mac(100), mac(i), 20)).collect();
    k.send(0, &frames);
    k.poll();
    let s = k.control.stats();
    assert_eq!((s.ports[0].macs, s.ports[0].refused), (2, 3), "port limit 2");
    k.send(1, &[frame(mac(100), mac(20), 20), frame(mac(100), mac(21), 20)]);
    k.poll();
    let s = k.control.stats();
    assert_eq!(s.bridges[0].fdb_size, 3, "bridge limit 3");
    assert_eq!(s.bridges[0].refused, 4);
    // Refused MACs are still switched (flooded), just not learned.
    let out = k.send1(2, frame(mac(21), mac(30), 20));
    assert_eq!(ports(&out), vec![0, 1]);
}

#[test]
fn static_entries_stay_and_win() {
    let mut cfg = lan(3);
    cfg.static_macs.push(StaticMac {
        bridge: "lan".into(),
        vlan: None,
        mac: mac(7),
        port: Some("vm2".into()),
        vtep: None,
    });
    let mut k = Kit::new(&cfg);
    k.send1(0, frame(mac(9), mac(7), 20)); // mac 7 seen at vm0: not moved
    k.poll();
    assert_eq!(k.control.lookup("lan", None, mac(7)).unwrap().port.as_deref(), Some("vm2"));
    assert_eq!(k.stat("switch-learn", "static-kept"), 1);
    k.advance(10_000);
    k.poll();
    let out = k.send1(1, frame(mac(7), mac(8), 20));
    assert_eq!(ports(&out), vec![2], "never aged");
    assert!(k.control.lookup("lan", None, mac(7)).unwrap().is_static);
}

#[test]
fn bad_sources_and_tags_on_access_ports_drop() {
    let mut k = Kit::new(&lan(2));
    let mut bad = frame(mac(2), mac(1), 20);
    bad[6] |= 1;
    assert!(k.send1(0, bad).is_empty());
    assert!(k.send1(0, frame(mac(2), [0; 6], 20)).is_empty());
    assert!(k.send1(0, tagged(&frame(mac(2), mac(1), 20), 5)).is_empty());
    assert!(k.send1(0, vec![0u8; 10]).is_empty());
    assert_eq!(k.drops("bad-src-mac"), 2);
    assert_eq!(k.drops("tagged-on-access"), 1);
    assert_eq!(k.drops("runt"), 1);
    let s = k.control.stats();
    assert_eq!(s.ports[0].drops.iter().map(|d| d.1).sum::<u64>(), 4);
}

#[test]
fn floods_to_every_port_and_vtep_with_clones() {
    let mut k = Kit::new(&overlay());
    let f = frame([0xff; 6], mac(1), 100);
    let out = k.send1(1, f.clone());
    assert_eq!(ports(&out), vec![0, 0, 2], "two VTEPs on the uplink and vm2");
    assert_eq!(to(&out, 2)[0].bytes, f);
    let mut remotes = Vec::new();
    for o in to(&out, 0) {
        assert_eq!(o.segs, 2, "a head with the outer headers, the clone behind it");
        assert_eq!(&o.bytes[50..], &f[..]);
        assert_eq!(&o.bytes[..6], &ROUTER_MAC);
        remotes.push(o.bytes[30..34].to_vec());
        assert_eq!(&o.bytes[46..49], &[0, 0, 100], "VNI 100");
    }
    remotes.sort();
    assert_eq!(remotes, vec![vec![10, 50, 0, 2], vec![10, 50, 0, 3]]);
    assert_eq!(k.stat("switch-flood", "copies"), 3);
    // From a tunnel: local ports only (split horizon).
    let inner = frame([0xff; 6], mac(50), 30);
    let out = k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &inner));
    assert_eq!(ports(&out), vec![1, 2]);
    assert!(out.iter().all(|o| o.bytes == inner));
}

#[test]
fn encap_matches_the_encap_stage() {
    let mut k = Kit::new(&overlay());
    let inner = frame([0xff; 6], mac(50), 64);
    k.send1(0, encapsulated("vxlan", 100, REMOTE2, LOCAL, &inner));
    k.poll();
    let e = k.control.lookup("t100", None, mac(50)).expect("a remote MAC is learned");
    assert_eq!(e.vtep, Some(ip(REMOTE2)));
    let f = frame(mac(50), mac(1), 64);
    let out = k.send1(1, f.clone());
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(out[0].bytes, reference_encap(100, LOCAL, REMOTE2, ROUTER_MAC, &f));
    assert_ne!(out[0].ol_flags & offload::TX_TUNNEL_VXLAN, 0);
}

#[test]
fn remote_learning_adds_vteps_and_splits_horizon() {
    let mut k = Kit::new(&overlay());
    let inner = frame(mac(1), mac(60), 30);
    let out = k.send1(0, encapsulated("vxlan", 100, "10.50.0.9", LOCAL, &inner));
    assert_eq!(ports(&out), vec![1, 2], "unknown: flooded to local ports");
    k.poll();
    let s = k.control.stats();
    let v = s.vteps.iter().find(|v| v.addr == ip("10.50.0.9")).expect("learned VTEP");
    assert!(v.learned);
    assert_eq!(v.state, "incomplete");
    // A unicast to it waits for its neighbour: dropped, and an ARP request goes out.
    let out = k.send1(1, frame(mac(60), mac(1), 30));
    assert_eq!(ports(&out), vec![0]);
    let req = &out[0].bytes;
    assert_eq!((&req[..6], &req[12..14]), (&[0xff; 6][..], &[8, 6][..]));
    assert_eq!(&req[38..42], &[10, 50, 0, 9], "who has 10.50.0.9");
    assert_eq!(&req[28..32], &[10, 50, 0, 1], "tell our VTEP");
    assert_eq!(k.drops("neighbour-unresolved"), 1);
    // Rate-limited: no second request in the same 100 ms.
    let out = k.send1(1, frame(mac(60), mac(1), 30));
    assert!(out.is_empty());
    // The reply resolves it.
    let reply = arp(UPLINK_MAC, 2, mac(99), "10.50.0.9", UPLINK_MAC, LOCAL);
    assert!(k.send1(0, reply).is_empty(), "consumed");
    k.poll();
    let out = k.send1(1, frame(mac(60), mac(1), 30));
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(&out[0].bytes[..6], &mac(99));
    assert_eq!(&out[0].bytes[30..34], &[10, 50, 0, 9]);
    // From a tunnel to a tunnel: never.
    let to_remote = frame(mac(60), mac(61), 30);
    assert!(k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &to_remote)).is_empty());
    assert_eq!(k.drops("split-horizon"), 1);
}

#[test]
fn answers_arp_and_nd_for_the_vtep() {
    let mut cfg = overlay();
    cfg.bridges.push(vxlan_bridge("t6", 600, &[]));
    cfg.bridges[1].local = Some(ip("2001:db8::1"));
    let mut k = Kit::new(&cfg);
    let req = arp([0xff; 6], 1, mac(77), "10.50.0.7", [0; 6], LOCAL);
    let out = k.send1(0, req);
    assert_eq!(ports(&out), vec![0]);
    let r = &out[0].bytes;
    assert_eq!(&r[..6], &mac(77));
    assert_eq!(&r[6..12], &UPLINK_MAC);
    assert_eq!(&r[20..22], &[0, 2], "a reply");
    assert_eq!(&r[22..28], &UPLINK_MAC);
    assert_eq!(&r[28..32], &[10, 50, 0, 1]);
    assert_eq!(&r[32..38], &mac(77));
    // Not ours: dropped.
    assert!(k.send1(0, arp([0xff; 6], 1, mac(77), "10.50.0.7", [0; 6], "10.50.0.8")).is_empty());
    assert_eq!(k.drops("arp-ignored"), 1);
    // IPv6: a solicitation for our address, built by a peer.
    let mut ns = vec![0u8; fastpath_pipeline::switch::nd::FRAME_LEN];
    let peer: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    fastpath_pipeline::switch::nd::solicit(&mut ns, mac(78), peer, "2001:db8::1".parse().unwrap());
    let out = k.send1(0, ns);
    assert_eq!(ports(&out), vec![0]);
    let na = &out[0].bytes;
    assert_eq!(&na[..6], &mac(78));
    assert_eq!(na[54], 136, "an advertisement");
    assert_eq!(&na[62..78], &"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    assert_eq!(&na[80..86], &UPLINK_MAC);
    assert_eq!(k.stat("switch-underlay", "arp-answered"), 1);
    assert_eq!(k.stat("switch-underlay", "nd-answered"), 1);
}

#[test]
fn resolves_ipv6_vteps_by_nd() {
    let r6 = "2001:db8::2";
    let mut b = vxlan_bridge("t6", 600, &[r6]);
    b.local = Some(ip("2001:db8::1"));
    let cfg = SwitchConfig {
        bridges: vec![b],
        ports: vec![uplink(0), access(1, "vm1", "t6", None), access(2, "vm2", "t6", None)],
        ..Default::default()
    };
    let mut k = Kit::new(&cfg);
    // A broadcast: vm2 gets it, the VTEP is unresolved: a solicitation goes out instead.
    let out = k.send1(1, frame([0xff; 6], mac(1), 30));
    assert_eq!(ports(&out), vec![0, 2]);
    let ns = &to(&out, 0)[0].bytes;
    assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
    assert_eq!(ns[54], 135);
    // The peer advertises itself.
    let mut na = vec![0u8; fastpath_pipeline::switch::nd::FRAME_LEN];
    fastpath_pipeline::switch::nd::advertise(
        &mut na,
        mac(88),
        r6.parse().unwrap(),
        UPLINK_MAC,
        "2001:db8::1".parse().unwrap(),
    );
    assert!(k.send1(0, na).is_empty());
    k.poll();
    let out = k.send1(1, frame([0xff; 6], mac(1), 30));
    assert_eq!(ports(&out), vec![0, 2]);
    let o = to(&out, 0)[0];
    assert_eq!(&o.bytes[..6], &mac(88));
    assert_eq!(&o.bytes[12..14], &[0x86, 0xdd]);
    assert_eq!(o.bytes.len(), 70 + 72);
}

#[test]
fn uplink_drops_what_is_not_for_us() {
    let mut k = Kit::new(&overlay());
    let inner = frame(mac(1), mac(60), 30);
    assert!(k.send1(0, encapsulated("vxlan", 100, REMOTE1, "10.50.0.99", &inner)).is_empty());
    assert!(k.send1(0, encapsulated("vxlan", 200, REMOTE1, LOCAL, &inner)).is_empty());
    assert!(k.send1(0, encapsulated("geneve", 100, REMOTE1, LOCAL, &inner)).is_empty());
    assert!(k.send1(0, frame(mac(1), mac(60), 30)).is_empty(), "plain IP to someone else");
    let mut other = frame(mac(1), mac(60), 30);
    other[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert!(k.send1(0, other).is_empty());
    assert!(k.send1(0, tagged(&inner, 42)).is_empty());
    assert_eq!(k.drops("not-our-vtep"), 2);
    assert_eq!(k.drops("unknown-vni"), 1);
    assert_eq!(k.drops("not-this-tunnel"), 1);
    assert_eq!(k.drops("not-for-switch"), 1);
    assert_eq!(k.drops("unknown-vlan"), 1);
    let up = &k.control.stats().ports[0];
    assert_eq!(up.drops.iter().map(|d| d.1).sum::<u64>(), 6);
}

#[test]
fn drops_what_no_longer_fits_after_encap() {
    let mut k = Kit::new(&overlay());
    // 1464 + 50 = 1514 fits; 1465 + 50 does not.
    let out = k.send1(1, frame([0xff; 6], mac(1), 1464 - 42));
    assert_eq!(ports(&out), vec![0, 0, 2]);
    let out = k.send1(1, frame([0xff; 6], mac(1), 1465 - 42));
    assert_eq!(ports(&out), vec![2]);
    assert_eq!(k.drops("too-big-after-encap"), 2);
    // A TSO packet is cut after encap: it passes.
    let mut m = k.mbuf(1, &frame([0xff; 6], mac(1), 1465 - 42));
    m.set_ol_flags(offload::TX_UDP_SEG | offload::TX_IPV4);
    m.set_tso_segsz(1000);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(8);
    let out = k.run(0, vec![m]);
    assert!(to(&out, 0).len() >= 2, "{:?}", ports(&out));
}

#[test]
fn tenants_never_meet() {
    let cfg = SwitchConfig {
        bridges: vec![vxlan_bridge("a", 100, &[REMOTE1]), vxlan_bridge("b", 200, &[REMOTE1])],
        ports: vec![
            uplink(0),
            access(1, "a1", "a", None),
            access(2, "a2", "a", None),
            access(3, "b1", "b", None),
            access(4, "b2", "b", None),
        ],
        neighbours: vec![StaticNeighbour { addr: ip(REMOTE1), mac: ROUTER_MAC }],
        ..Default::default()
    };
    let mut k = Kit::new(&cfg);
    // The same MACs and addresses in both tenants.
    for (from, to_p) in [(1u16, 2u16), (3, 4)] {
        let out = k.send1(from, frame([0xff; 6], mac(1), 20));
        assert_eq!(ports(&out), vec![0, to_p], "a flood stays in its tenant");
    }
    k.poll();
    for (vni, mine) in [(100, vec![1u16, 2]), (200, vec![3, 4])] {
        let inner = frame(mac(1), mac(2), 20);
        let out = k.send1(0, encapsulated("vxlan", vni, REMOTE1, LOCAL, &inner));
        assert_eq!(ports(&out), vec![mine[0]], "VNI {vni} reaches its own mac 1 only");
        let out = k.send1(0, encapsulated("vxlan", vni, REMOTE1, LOCAL, &frame([0xff; 6], mac(3), 20)));
        assert_eq!(ports(&out), mine);
    }
    k.poll();
    let out = k.send1(2, frame(mac(2), mac(1), 20));
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(&out[0].bytes[46..49], &[0, 0, 100]);
    let out = k.send1(4, frame(mac(2), mac(1), 20));
    assert_eq!(&out[0].bytes[46..49], &[0, 0, 200]);
}

#[test]
fn vlan_access_ports_and_the_trunk() {
    let cfg = SwitchConfig {
        bridges: vec![bridge("v")],
        ports: vec![
            uplink(0),
            access(1, "a10", "v", Some(10)),
            access(2, "b10", "v", Some(10)),
            access(3, "c20", "v", Some(20)),
        ],
        ..Default::default()
    };
    let mut k = Kit::new(&cfg);
    let f = frame([0xff; 6], mac(1), 20);
    let out = k.send1(1, f.clone());
    assert_eq!(ports(&out), vec![0, 2], "VLAN 10 only");
    assert_eq!(to(&out, 0)[0].bytes, tagged(&f, 10));
    assert_eq!(to(&out, 0)[0].segs, 2, "tag pushed onto a clone");
    let g = frame(mac(1), mac(5), 20);
    let out = k.send1(0, tagged(&g, 20));
    assert_eq!(ports(&out), vec![3], "tag 20: the VLAN 20 port, untagged (mac 1 is VLAN 10's)");
    assert_eq!(out[0].bytes, g);
    k.poll();
    let out = k.send1(0, tagged(&frame(mac(1), mac(5), 20), 10));
    assert_eq!(ports(&out), vec![1]);
    k.poll();
    let out = k.send1(1, frame(mac(5), mac(1), 20));
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(out[0].bytes, tagged(&frame(mac(5), mac(1), 20), 10), "tagged in place");
    assert_eq!(out[0].segs, 1);
}

#[test]
fn vxlan_vlan_gateway() {
    let mut b = vxlan_bridge("gw", 100, &[REMOTE1]);
    b.vlan = Some(30);
    let cfg = SwitchConfig {
        bridges: vec![b],
        ports: vec![uplink(0), access(1, "vm1", "gw", None)],
        neighbours: vec![StaticNeighbour { addr: ip(REMOTE1), mac: ROUTER_MAC }],
        ..Default::default()
    };
    let mut k = Kit::new(&cfg);
    // VLAN side floods to the VM and to the VTEP.
    let f = frame([0xff; 6], mac(30), 20);
    let out = k.send1(0, tagged(&f, 30));
    assert_eq!(ports(&out), vec![0, 1]);
    assert_eq!(&to(&out, 0)[0].bytes[50..], &f[..], "to the VTEP");
    // Tunnel side floods to the VM and to the VLAN.
    let g = frame([0xff; 6], mac(40), 20);
    let out = k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &g));
    assert_eq!(ports(&out), vec![0, 1]);
    assert_eq!(to(&out, 0)[0].bytes, tagged(&g, 30), "to VLAN 30");
    k.poll();
    // Known both ways: VLAN -> VTEP and VTEP -> VLAN.
    let out = k.send1(0, tagged(&frame(mac(40), mac(30), 20), 30));
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(&out[0].bytes[30..34], &[10, 50, 0, 2]);
    let out = k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &frame(mac(30), mac(40), 20)));
    assert_eq!(out[0].bytes, tagged(&frame(mac(30), mac(40), 20), 30));
}

#[test]
fn big_floods_resume_and_return_every_mbuf() {
    let mut k = Kit::new(&lan(12));
    let frames: Vec<Vec<u8>> = (0..64).map(|i| frame([0xff; 6], mac(i as u8 + 1), 20)).collect();
    let out = k.send(0, &frames);
    assert_eq!(out.len(), 64 * 11, "every copy, over several batches");
    for p in 1..12 {
        let mine: Vec<&Out> = to(&out, p);
        assert_eq!(mine.len(), 64);
        for (o, f) in mine.iter().zip(&frames) {
            assert_eq!(&o.bytes, f, "in order");
        }
    }
}

#[test]
fn a_small_pool_loses_copies_not_mbufs() {
    let mut k = Kit::with_pool(&overlay(), 64);
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame([0xff; 6], mac(i as u8 + 1), 20)).collect();
    let out = k.send(1, &frames);
    assert!(out.len() < 40 * 3);
    assert!(k.drops("no-mbuf") > 0);
}

#[test]
fn bad_configs_name_the_problem() {
    use fastpath_pipeline::switch::build;
    let pool = fastpath_mempool::Mempool::new(
        "cfg",
        &fastpath_mempool::PoolConfig { mbufs: 64, chunk_size: 2048, pages: fastpath_mempool::PagePolicy::Small },
    )
    .unwrap();
    let err = |cfg: &SwitchConfig| build(cfg, &pool, 1).err().map(|e| e.to_string()).unwrap_or_default();
    let mut c = overlay();
    c.ports[1].bridge = Some("nope".into());
    assert!(err(&c).contains("bridge = \"nope\" names no bridge"), "{}", err(&c));
    let mut c = overlay();
    c.ports[1].vlan = Some(5);
    assert!(err(&c).contains("which has vni = 100"), "{}", err(&c));
    let mut c = overlay();
    c.ports.remove(0);
    for (i, p) in c.ports.iter_mut().enumerate() {
        p.port.id = i as u16;
    }
    assert!(err(&c).contains("no port has role = uplink"), "{}", err(&c));
    let mut c = overlay();
    c.bridges[0].local = None;
    assert!(err(&c).contains("needs local"), "{}", err(&c));
    let mut c = overlay();
    c.bridges.push(vxlan_bridge("dup", 100, &[]));
    assert!(err(&c).contains("already bridge t100's"), "{}", err(&c));
    let mut c = overlay();
    c.ports[2].port.id = 7;
    assert!(err(&c).contains("open it with id 2"), "{}", err(&c));
    let mut c = overlay();
    c.ports[0].port.mac = None;
    assert!(err(&c).contains("no unicast MAC"), "{}", err(&c));
    let mut c = overlay();
    c.static_macs.push(StaticMac { bridge: "t100".into(), vlan: None, mac: mac(1), port: None, vtep: None });
    assert!(err(&c).contains("exactly one of port"), "{}", err(&c));
    let mut c = lan(2);
    c.ports.push(uplink(2));
    c.bridges[0].vlan = Some(5000);
    assert!(err(&c).contains("vlan = 5000 is out of range"), "{}", err(&c));
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn geneve_and_nvgre_bridges_encap_and_decap_like_their_stages() {
    for (kind, tunnel) in [
        ("geneve", fastpath_pipeline::switch::TunnelKind::Geneve),
        ("nvgre", fastpath_pipeline::switch::TunnelKind::Nvgre),
    ] {
        let mut cfg = overlay();
        cfg.bridges[0].tunnel = tunnel;
        cfg.bridges[0].remotes = vec![ip(REMOTE1)];
        cfg.neighbours.truncate(1);
        let mut k = Kit::new(&cfg);
        let inner = frame(mac(1), mac(50), 40);
        let out = k.send1(0, encapsulated(kind, 100, REMOTE1, LOCAL, &inner));
        assert_eq!(ports(&out), vec![1, 2], "{kind}: decapsulated and flooded");
        assert!(out.iter().all(|o| o.bytes == inner));
        k.poll();
        let f = frame(mac(50), mac(1), 40);
        let out = k.send1(1, f.clone());
        assert_eq!(ports(&out), vec![0]);
        let reference = {
            let stage = format!(
                "{kind}-encap,vni=100,local={LOCAL},remote={REMOTE1},src-mac=02:aa:00:00:00:01,dst-mac=02:bb:00:00:00:02"
            );
            stage_output(&stage, &f)
        };
        assert_eq!(out[0].bytes, reference, "{kind}: the same bytes as the {kind}-encap stage");
        // Another kind on the same VNI is not ours.
        assert!(k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &inner)).is_empty());
    }
}

#[test]
fn neighbours_go_stale_then_expire() {
    let mut cfg = overlay();
    cfg.neighbours.clear();
    let mut k = Kit::new(&cfg);
    let reply = arp(UPLINK_MAC, 2, mac(99), REMOTE1, UPLINK_MAC, LOCAL);
    assert!(k.send1(0, reply).is_empty());
    k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &frame(mac(1), mac(50), 20)));
    k.poll();
    let vtep = |k: &Kit| k.control.stats().vteps.into_iter().find(|v| v.addr == ip(REMOTE1)).unwrap();
    assert_eq!((vtep(&k).state, vtep(&k).mac), ("reachable", Some(mac(99))));
    k.advance(301);
    // Both MACs seen again: they stay; the neighbour is not confirmed.
    k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &frame(mac(1), mac(50), 20)));
    k.poll();
    assert_eq!(vtep(&k).state, "stale");
    // Stale: still used, and solicited again (rate-limited to one per 100 ms).
    let out = k.send1(1, frame(mac(50), mac(1), 20));
    assert_eq!(ports(&out), vec![0, 0]);
    assert!(out.iter().any(|o| o.bytes[12..14] == [8, 6]), "an ARP request");
    assert!(out.iter().any(|o| o.bytes[..6] == mac(99)), "the packet, to the stale MAC");
    // No answer for long enough: forgotten, packets wait.
    k.advance(6);
    k.poll();
    assert_eq!(vtep(&k).state, "incomplete");
    let out = k.send1(1, frame(mac(50), mac(1), 20));
    assert!(out.iter().all(|o| o.bytes[12..14] == [8, 6]));
    assert_eq!(k.drops("neighbour-unresolved"), 1);
}

#[test]
fn control_and_processors_move_between_threads() {
    fn send<T: Send>() {}
    send::<fastpath_pipeline::switch::SwitchControl>();
    send::<fastpath_pipeline::switch::SwitchProcessor>();
}

#[test]
fn a_trace_takes_exactly_n_packets_of_its_port_over_all_lcores() {
    let mut k = Kit::new(&lan(3));
    assert!(k.control.trace_add(7, 1).unwrap_err().contains("no port 7"));
    assert!(k.control.trace_add(0, 1001).unwrap_err().contains("at most 1000"));
    k.control.trace_add(0, 5).unwrap();
    // vm1's packets are not vm0's; then 4 of vm0 on lcore 0 and 4 on lcore 1: 5 taken in all.
    let from = |k: &mut Kit, port: u16, n: u8| (0..n).map(|i| k.mbuf(port, &frame(mac(9), mac(1 + i), 20))).collect();
    let ms = from(&mut k, 1, 4);
    k.run(0, ms);
    let ms = from(&mut k, 0, 4);
    k.run(0, ms);
    let ms = from(&mut k, 0, 4);
    k.run(1, ms);
    let t = k.control.trace_show();
    assert_eq!((t.packets.len(), t.left, t.lost), (5, 0, 0));
    assert!(t.packets.iter().all(|p| p.port == "vm0" && p.len == 62), "{t:?}");
    assert_eq!(t.packets.iter().map(|p| p.lcore).collect::<Vec<_>>(), [0, 0, 0, 0, 1]);
    let passes: Vec<_> = t.packets[0].passes.iter().map(|p| (p.pass, p.decision.as_str())).collect();
    assert_eq!(
        passes,
        [
            ("ingress", "bridge lan from an access port"),
            ("learn", "source unknown: learned (event to the control side)"),
            ("forward", "fdb miss: flood"),
            ("flood", "copies to vm1, vm2"),
        ]
    );
    // A new trace forgets the last one; clear stops it.
    k.control.trace_add(0, 2).unwrap();
    assert_eq!(k.control.trace_show().packets.len(), 0);
    k.control.trace_clear();
    let ms = from(&mut k, 0, 2);
    k.run(0, ms);
    assert_eq!(k.control.trace_show().packets.len(), 0);
}

/// What a trace costs the lcore (no assertion: run it by hand, `cargo test --release -p
/// fastpath-pipeline --test switch -- --ignored --nocapture trace_cost`): bursts of 32 known
/// unicast frames from vm0 to vm1, untraced, then each burst traced whole (`trace add` before
/// it, the records taken after, as the control thread does); thread CPU time per packet.
#[test]
#[ignore]
fn trace_cost() {
    let mut k = Kit::new(&lan(2));
    k.send1(1, frame(mac(1), mac(2), 20));
    k.poll();
    let burst = |k: &mut Kit| -> Vec<_> { (0..32).map(|_| k.mbuf(0, &frame(mac(2), mac(1), 20))).collect() };
    let cpu = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
    };
    for round in 0..3 {
        for traced in [false, true] {
            let (mut ns, n) = (0.0, 20_000);
            for _ in 0..n {
                let ms = burst(&mut k);
                if traced {
                    k.control.trace_add(0, 32).unwrap();
                }
                let mut b = fastpath_mempool::Batch::new();
                ms.into_iter().for_each(|m| b.push(m).unwrap());
                let t0 = cpu();
                fastpath_pmd::Processor::process(&mut k.procs[0], &mut b, &mut k.ctx);
                ns += cpu() - t0;
                k.ctx.free_batch(&mut b);
                if traced {
                    assert_eq!(k.control.trace_show().left, 0);
                }
            }
            eprintln!("round {round}, traced {traced}: {:.1} ns per packet", ns / (n as f64 * 32.0));
        }
    }
}

/// Gives every lcore's processor its change, as the runtime's `Command::Notify` does; checks
/// each comes back (to be dropped off the lcore).
fn notify(k: &mut Kit, changes: Vec<Box<dyn std::any::Any + Send>>) {
    use fastpath_pmd::Processor;
    assert_eq!(changes.len(), k.procs.len(), "one change per lcore");
    for (p, c) in k.procs.iter_mut().zip(changes) {
        assert!(p.notify(c).is_some(), "the processor gives back what it replaced");
    }
}

#[test]
fn ports_plugged_and_unplugged_live_join_and_leave_floods_and_the_fdb() {
    let cfg = SwitchConfig { max_ports: 4, ..lan(2) };
    let mut k = Kit::new(&cfg);
    let bcast = frame([0xff; 6], mac(1), 60);
    assert_eq!(ports(&k.send1(0, bcast.clone())), vec![1]);
    // Plug vm2 at the next id: floods reach it, it learns, unicast reaches it.
    let id = k.control.free_port_id().expect("room for two more");
    assert_eq!(id, 2);
    let changes = k.control.plug(&access(id, "vm2", "lan", None)).expect("plugs into lan");
    notify(&mut k, changes);
    assert_eq!(ports(&k.send1(0, bcast.clone())), vec![1, 2]);
    k.send1(2, frame(mac(1), mac(22), 60));
    k.poll();
    assert_eq!(k.control.lookup("lan", None, mac(22)).and_then(|e| e.port).as_deref(), Some("vm2"));
    assert_eq!(ports(&k.send1(0, frame(mac(22), mac(1), 60))), vec![2]);
    // Refused: a name in use, an unknown bridge, the uplink role, a VLAN segment lan lacks.
    for (p, want) in [
        (access(3, "vm2", "lan", None), "already"),
        (access(3, "vm3", "nope", None), "names no bridge"),
        (access(3, "vm3", "lan", Some(7)), "no segment with vlan 7"),
        (PortConfig { name: "up".into(), ..uplink(3) }, "only access ports"),
    ] {
        let e = k.control.plug(&p).expect_err("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
    // Unplug vm0: its learned MAC goes, floods skip it, its id is given again. A learn from
    // vm0 handed over before it went (mac(5), not applied yet) is not applied to its slot.
    k.send1(0, frame(mac(22), mac(5), 60));
    let (gone, changes) = k.control.unplug("vm0").expect("vm0 is there");
    assert_eq!(gone, 0);
    notify(&mut k, changes);
    assert_eq!(k.control.forget_port(gone), 1, "mac(1) was learned on vm0");
    assert!(k.control.lookup("lan", None, mac(1)).is_none());
    assert!(k.control.lookup("lan", None, mac(5)).is_none(), "a late learn is dropped");
    assert_eq!(ports(&k.send1(2, frame([0xff; 6], mac(22), 60))), vec![1]);
    assert_eq!(k.control.free_port_id().expect("vm0's id is vacant"), 0);
    assert!(k.control.unplug("vm0").is_err(), "gone already");
    let s = k.control.stats();
    assert_eq!(s.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["vm1", "vm2"]);
    let changes = k.control.plug(&access(0, "vm9", "lan", None)).expect("the vacant id again");
    notify(&mut k, changes);
    assert_eq!(ports(&k.send1(1, frame([0xff; 6], mac(11), 60))), vec![0, 2]);
    let changes = k.control.plug(&access(3, "vm3", "lan", None)).expect("the last id");
    notify(&mut k, changes);
    assert!(k.control.free_port_id().is_err(), "every one of max_ports ids in use");
}

#[test]
fn remotes_added_and_removed_live_change_head_end_replication() {
    let mut k = Kit::new(&overlay());
    let f = frame([0xff; 6], mac(1), 100);
    let vteps = |out: &[Out]| {
        let mut v: Vec<Vec<u8>> = to(out, 0).iter().map(|o| o.bytes[30..34].to_vec()).collect();
        v.sort();
        v
    };
    assert_eq!(vteps(&k.send1(1, f.clone())), vec![vec![10, 50, 0, 2], vec![10, 50, 0, 3]]);
    let changes = k.control.set_remote("t100", ip(REMOTE1), false).expect("REMOTE1 is a remote");
    notify(&mut k, changes);
    assert_eq!(vteps(&k.send1(1, f.clone())), vec![vec![10, 50, 0, 3]]);
    assert!(k.control.set_remote("t100", ip(REMOTE1), false).is_err(), "not a remote any more");
    assert!(k.control.set_remote("t100", ip(REMOTE2), true).is_err(), "a remote already");
    assert!(k.control.set_remote("t100", ip("::1"), true).is_err(), "another family");
    assert!(k.control.set_remote("nope", ip(REMOTE1), true).is_err());
    let changes = k.control.set_remote("t100", ip(REMOTE1), true).expect("back");
    notify(&mut k, changes);
    assert_eq!(vteps(&k.send1(1, f)), vec![vec![10, 50, 0, 2], vec![10, 50, 0, 3]]);
    assert_eq!(k.control.remotes(), vec![("t100".to_string(), vec![ip(REMOTE2), ip(REMOTE1)])]);
}

#[test]
fn bridges_added_and_deleted_live_carry_their_vni_and_free_it_again() {
    use fastpath_pipeline::switch::BridgeConfig;
    let mut k = Kit::new(&SwitchConfig { max_ports: 8, ..overlay() });
    // A second VXLAN bridge on the same VTEP (VNI 200), then a port in it.
    let t200 = BridgeConfig { remotes: vec![ip(REMOTE2)], ..vxlan_bridge("t200", 200, &[]) };
    let changes = k.control.add_bridge(&t200).expect("a new VNI on the switch's tunnel");
    notify(&mut k, changes);
    let id = k.control.free_port_id().unwrap();
    let changes = k.control.plug(&access(id, "vm3", "t200", None)).expect("into the new bridge");
    notify(&mut k, changes);
    // Its flood goes to its one remote in VNI 200, not to t100's ports.
    let out = k.send1(id, frame([0xff; 6], mac(3), 60));
    assert_eq!(ports(&out), vec![0]);
    assert_eq!(&out[0].bytes[30..34], &[10, 50, 0, 3]);
    assert_eq!(&out[0].bytes[46..49], &[0, 0, 200], "VNI 200");
    // Decapsulated VNI 200 reaches vm3 only.
    let inner = frame([0xff; 6], mac(60), 30);
    assert_eq!(ports(&k.send1(0, encapsulated("vxlan", 200, REMOTE2, LOCAL, &inner))), vec![id]);
    // Refused: the name again, a VNI in use, a tunnel the switch has no template for, deleting
    // a bridge with a port.
    for (b, want) in [
        (vxlan_bridge("t200", 300, &[]), "already"),
        (vxlan_bridge("t300", 100, &[]), "already bridge t100"),
        (BridgeConfig { udp_port: Some(9999), ..vxlan_bridge("t300", 300, &[]) }, "needs a restart"),
    ] {
        let e = k.control.add_bridge(&b).expect_err("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(k.control.del_bridge("t200").expect_err("vm3 is in it").to_string().contains("vm3"));
    k.poll();
    let (gone, changes) = k.control.unplug("vm3").unwrap();
    notify(&mut k, changes);
    k.control.forget_port(gone);
    k.send1(0, encapsulated("vxlan", 200, REMOTE2, LOCAL, &frame(mac(61), mac(62), 30)));
    k.poll();
    let (flushed, changes) = k.control.del_bridge("t200").expect("empty now");
    notify(&mut k, changes);
    assert_eq!(flushed, 2, "the two MACs learned behind REMOTE2 in VNI 200");
    // VNI 200 is unknown again (dropped, counted), and free for a new bridge.
    assert!(k.send1(0, encapsulated("vxlan", 200, REMOTE2, LOCAL, &inner)).is_empty());
    assert_eq!(k.drops("unknown-vni"), 1);
    assert_eq!(k.control.stats().bridges.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["t100"]);
    let changes = k.control.add_bridge(&vxlan_bridge("t200b", 200, &[])).expect("VNI 200 is free");
    notify(&mut k, changes);
}

/// The egress encapsulates a burst run by run (consecutive packets to one VTEP share one
/// destination check): runs to two VTEPs interleaved, a packet too big in the middle of a run,
/// each packet still gets its own VTEP, its own identification (in order, none for the
/// dropped one), a correct header checksum, and the rest of the reference encap's bytes.
#[test]
fn a_burst_to_several_vteps_is_encapsulated_run_by_run() {
    let mut k = Kit::new(&overlay());
    for (m, r) in [(50, REMOTE1), (51, REMOTE2)] {
        k.send1(0, encapsulated("vxlan", 100, r, LOCAL, &frame([0xff; 6], mac(m), 64)));
    }
    k.poll();
    let f = |dst: u8, payload: usize| frame(mac(dst), mac(1), payload);
    let want = [
        (50, 64, REMOTE1),
        (50, 1465 - 42, REMOTE1),
        (50, 80, REMOTE1),
        (51, 64, REMOTE2),
        (51, 70, REMOTE2),
        (50, 90, REMOTE1),
    ];
    let burst = want.iter().map(|&(d, p, _)| k.mbuf(1, &f(d, p))).collect();
    let before = k.stat("switch-egress", "encapsulated");
    let out = k.run(0, burst);
    assert_eq!(ports(&out), vec![0; 5], "all but the one too big, to the uplink");
    assert_eq!(k.drops("too-big-after-encap"), 1);
    assert_eq!(k.stat("switch-egress", "encapsulated") - before, 5);
    let sent: Vec<_> = want.iter().filter(|w| w.1 != 1465 - 42).collect();
    for (i, (o, &&(d, p, remote))) in out.iter().zip(&sent).enumerate() {
        let mut r = reference_encap(100, LOCAL, remote, ROUTER_MAC, &f(d, p));
        assert_eq!(u16::from_be_bytes([o.bytes[18], o.bytes[19]]), i as u16, "identifications in order");
        // The reference's identification is 0: take ours and its checksum, then verify that.
        r[18..20].copy_from_slice(&o.bytes[18..20]);
        r[24..26].copy_from_slice(&o.bytes[24..26]);
        assert_eq!(o.bytes, r, "packet {i}");
        let sum = o.bytes[14..34].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum::<u32>();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff, "packet {i}: IPv4 header checksum");
    }
}
