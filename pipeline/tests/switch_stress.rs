//! The switch under stress: two lcores learning into one control side at once while it fills
//! the table (cuckoo moves) — no entry lost, torn or missed by a reader; arbitrary frames on
//! every port never panic and the pool comes back full; offloads end to end (a TSO chain stays
//! one chain and is cut only by the port that needs it, decapsulated TCP is merged for a port
//! that takes TSO).

mod switchkit;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_mempool::{offload, Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::switch::{
    build_with_clock, Clock, FdbConfig, PortRole, StaticMac, StaticNeighbour, SwitchConfig, SwitchProcessor,
};
use fastpath_pmd::{Ctx, Offloads, Processor};
use proptest::prelude::*;
use switchkit::*;

fn wide_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x06, 0x10, b[0], b[1], b[2], b[3]]
}

/// Sends bursts from MACs `range` (cycling) at `port` to the static MACs until `done`; returns
/// how many frames were not forwarded to the static MACs' port (2) alone.
fn learner(
    mut p: SwitchProcessor,
    pool: Mempool,
    port: u16,
    range: std::ops::Range<u32>,
    done: Arc<AtomicBool>,
) -> u64 {
    let mut ctx = Ctx::new(port as usize, &pool);
    let mut b = Batch::new();
    let mut misrouted = 0;
    let mut i = range.start;
    // Relaxed: a stop request.
    while !done.load(Ordering::Relaxed) {
        for _ in 0..32 {
            let mut m = ctx.cache(&pool).alloc().expect("an mbuf");
            let f = frame(wide_mac(1_000_000 + i % 64), wide_mac(i), 20);
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(&f);
            m.set_port(port);
            b.push(m).unwrap();
            i = if i + 1 == range.end { range.start } else { i + 1 };
        }
        p.process(&mut b, &mut ctx);
        misrouted += b.iter().filter(|m| m.out_port() != 2).count() as u64 + 32 - b.len() as u64;
        ctx.free_batch(&mut b);
        while p.resume(&mut b, &mut ctx) {
            misrouted += b.len() as u64;
            ctx.free_batch(&mut b);
        }
    }
    drop(p);
    misrouted
}

#[test]
fn two_lcores_learn_into_one_control_without_loss() {
    const N: u32 = 3500;
    let mut cfg = SwitchConfig {
        bridges: vec![bridge("lan")],
        ports: (0..3).map(|i| access(i, &format!("vm{i}"), "lan", None)).collect(),
        // The table's slots about 80% full at the end: inserts move entries between buckets.
        fdb: FdbConfig { capacity: 11_000, ..Default::default() },
        ..Default::default()
    };
    for s in 0..64 {
        let mac = wide_mac(1_000_000 + s);
        cfg.static_macs.push(StaticMac { bridge: "lan".into(), vlan: None, mac, port: Some("vm2".into()), vtep: None });
    }
    let pool = Mempool::new("stress", &PoolConfig { mbufs: 4096, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let (clock, _hand) = Clock::manual();
    let (mut control, mut procs) = build_with_clock(&cfg, &pool, 2, clock).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (p1, p0) = (procs.pop().unwrap(), procs.pop().unwrap());
    // vm0 learns 0..2N, vm1 learns N..3N: the middle third is seen at both (moves).
    let t0 = {
        let (pool, done) = (pool.clone(), done.clone());
        std::thread::spawn(move || learner(p0, pool, 0, 0..2 * N, done))
    };
    let t1 = {
        let (pool, done) = (pool.clone(), done.clone());
        std::thread::spawn(move || learner(p1, pool, 1, N..3 * N, done))
    };
    let start = Instant::now();
    while control.stats().bridges[0].fdb_size < 3 * N as u64 + 64 {
        control.poll();
        assert!(start.elapsed() < Duration::from_secs(120), "learning stalled: {:?}", control.stats().bridges);
        std::thread::yield_now();
    }
    // Relaxed: a stop request.
    done.store(true, Ordering::Relaxed);
    let misrouted = t0.join().unwrap() + t1.join().unwrap();
    control.poll();
    assert_eq!(misrouted, 0, "a static MAC was missed or misread while the table changed");
    let s = control.stats();
    assert_eq!(s.bridges[0].fdb_size, 3 * N as u64 + 64);
    assert_eq!(s.bridges[0].learned, 3 * N as u64, "each MAC learned once");
    for i in 0..3 * N {
        let e = control.lookup("lan", None, wide_mac(i)).unwrap_or_else(|| panic!("MAC {i} lost"));
        let port = e.port.expect("a local port");
        let ok = match i {
            i if i < N => port == "vm0",
            i if i >= 2 * N => port == "vm1",
            _ => port == "vm0" || port == "vm1",
        };
        assert!(ok, "MAC {i} at {port}");
    }
    assert_eq!(s.ports[0].macs + s.ports[1].macs, 3 * N as u64);
    assert!(s.fdb_relocations > 0, "the inserts moved entries (what the readers had to survive)");
    drop(control);
    assert_eq!(pool.available(), pool.capacity());
}

/// Uplink, two VMs in a VXLAN bridge that is also VLAN 30, a VLAN-only bridge.
fn everything() -> SwitchConfig {
    let mut gw = vxlan_bridge("gw", 100, &[REMOTE1, REMOTE2]);
    gw.vlan = Some(30);
    SwitchConfig {
        bridges: vec![gw, bridge("v")],
        ports: vec![
            uplink(0),
            access(1, "vm1", "gw", None),
            access(2, "vm2", "gw", None),
            access(3, "a10", "v", Some(10)),
            access(4, "b10", "v", Some(10)),
        ],
        neighbours: vec![StaticNeighbour { addr: ip(REMOTE1), mac: ROUTER_MAC }],
        fdb: FdbConfig { capacity: 1024, ..Default::default() },
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary frames (alone, or behind a valid Ethernet / VLAN / VXLAN prefix so that the
    /// deep paths run, with random offload flags) on every port never panic, and every mbuf
    /// comes back.
    #[test]
    fn arbitrary_frames_never_panic(
        frames in proptest::collection::vec(
            (0u16..6, 0usize..5, proptest::collection::vec(any::<u8>(), 0..300), any::<u64>()), 1..40),
    ) {
        let mut k = Kit::with_pool(&everything(), 512);
        let mut ms = Vec::new();
        for (port, prefix, body, flags) in &frames {
            let mut bytes = match prefix {
                1 => frame([0xff; 6], mac(1), 0)[..14].to_vec(),
                2 => tagged(&frame([0xff; 6], mac(1), 0), 30)[..18].to_vec(),
                3 => encapsulated("vxlan", 100, REMOTE1, LOCAL, &frame(mac(2), mac(3), 0))[..50].to_vec(),
                4 => arp([0xff; 6], 1, mac(4), "10.50.0.9", [0; 6], LOCAL)[..20].to_vec(),
                _ => vec![],
            };
            bytes.extend_from_slice(body);
            bytes.truncate(1600);
            let mut m = k.mbuf(*port, &bytes);
            m.set_ol_flags(flags & !offload::TX_SEG_MASK);
            ms.push(m);
        }
        k.run(0, ms);
        k.poll();
        let _ = k.control.stats();
    }
}

#[test]
fn tso_chain_crosses_as_one_chain_and_is_cut_by_the_uplink_fallback() {
    let mut k = Kit::new(&everything());
    // A 64 KiB-ish TCP packet from vm1 asking for TSO, as a chain (as vhost-user delivers it).
    let payload = 8000usize;
    let mut m = chain(&mut k, 1, &tcp_frame(mac(200), mac(1), payload));
    m.set_ol_flags(offload::TX_TCP_SEG | offload::TX_IPV4 | offload::TX_IP_CKSUM | offload::TX_TCP_CKSUM);
    m.set_tso_segsz(1398);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(20);
    // mac 200 is behind REMOTE1 and vm2 is TSO-capable... learn it first from the tunnel.
    k.send1(0, encapsulated("vxlan", 100, REMOTE1, LOCAL, &frame(mac(1), mac(200), 20)));
    k.poll();
    let out = k.run(0, vec![m]);
    // The uplink (no offloads) gets segments of at most 1514 bytes, each a VXLAN packet.
    assert!(out.len() >= payload / 1398, "{} segments", out.len());
    for o in &out {
        assert_eq!(o.port, 0);
        assert!(o.bytes.len() <= 1514, "{}", o.bytes.len());
        assert_eq!(&o.bytes[36..38], &4789u16.to_be_bytes());
    }
    let total: usize = out.iter().map(|o| o.bytes.len() - 50 - 54).sum();
    assert_eq!(total, payload);
    // To a port that takes TSO, the chain goes as it is: one packet.
    let mut cfg = everything();
    cfg.ports[2].port.offloads =
        Offloads::TX_MULTI_SEGS | Offloads::TX_TCP_TSO | Offloads::TX_TCP_CKSUM | Offloads::TX_IPV4_CKSUM;
    let mut k2 = Kit::new(&cfg);
    k2.send1(2, frame([0xff; 6], mac(2), 20));
    k2.poll();
    let mut m = chain(&mut k2, 1, &tcp_frame(mac(2), mac(1), 3000));
    m.set_ol_flags(offload::TX_TCP_SEG | offload::TX_IPV4 | offload::TX_TCP_CKSUM);
    m.set_tso_segsz(1448);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(20);
    let out = k2.run(0, vec![m]);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].port, out[0].tso_segsz, out[0].segs), (2, 1448, 3));
}

/// `f` in an mbuf chain of 1000 bytes, then 1500-byte segments, received on `port`.
fn chain(k: &mut Kit, port: u16, f: &[u8]) -> fastpath_mempool::Mbuf {
    let mut m = k.mbuf(port, &f[..1000]);
    let mut at = 1000;
    while at < f.len() {
        let n = (f.len() - at).min(1500);
        let seg = k.mbuf(port, &f[at..at + n]);
        m.chain(seg).unwrap();
        at += n;
    }
    m
}

#[test]
fn decapsulated_tcp_is_merged_for_a_port_that_takes_tso() {
    let mut cfg = everything();
    cfg.ports[1].port.offloads =
        Offloads::TX_MULTI_SEGS | Offloads::TX_TCP_TSO | Offloads::TX_TCP_CKSUM | Offloads::TX_IPV4_CKSUM;
    assert_eq!(cfg.ports[1].role, PortRole::Access);
    let mut k = Kit::new(&cfg);
    k.send1(1, frame([0xff; 6], mac(1), 20));
    k.poll();
    let segs: Vec<Vec<u8>> = (0..8u32)
        .map(|i| encapsulated("vxlan", 100, REMOTE1, LOCAL, &tcp_segment(mac(1), mac(200), 1000, i)))
        .collect();
    let out = k.send(0, &segs);
    assert_eq!(out.len(), 1, "eight segments merged into one");
    assert_eq!(out[0].port, 1);
    assert_ne!(out[0].ol_flags & offload::TX_TCP_SEG, 0);
    assert_eq!(out[0].bytes.len(), 54 + 8000);
    assert_eq!(k.stat("gro", "merged"), 7);
}

/// The `i`th TCP/IPv4 segment of a flow (ACK, DF, IPv4 identification `i`) with `payload`
/// bytes, checksums valid.
fn tcp_segment(dst: [u8; 6], src: [u8; 6], payload: usize, i: u32) -> Vec<u8> {
    let seq = 1 + i * payload as u32;
    use fastpath_pipeline::checksum;
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&(i as u16).to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[192, 168, 0, 1]);
    f[30..34].copy_from_slice(&[192, 168, 0, 2]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&5000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    f[48..50].copy_from_slice(&1000u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 3) as u8;
    }
    let mut s = checksum::Sum::new(checksum::pseudo_v4([192, 168, 0, 1], [192, 168, 0, 2], 6, 20 + payload as u32));
    s.add_bytes(&f[34..]);
    f[50..52].copy_from_slice(&s.checksum().to_be_bytes());
    f
}

/// A TCP/IPv4 frame asking for TSO: checksums left to whoever cuts it.
fn tcp_frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    tcp_segment(dst, src, payload, 0)
}
