//! TAP port against the real kernel: the kernel pings an address behind the port (ARP and ICMP
//! answered through it), and with `vnet-hdr=on` checksum and TSO/USO offloads go through the
//! kernel's forwarding path (which segments and checksums in software for a plain tap) and come
//! back from the kernel as partial-checksum and GSO frames. Needs root; CI runs it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fastpath_mempool::offload::*;
use fastpath_mempool::{Batch, Mbuf, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::tap::{TapConfig, TapPort};
use fastpath_pmd::testutil::require;
use fastpath_pmd::{Ctx, Port, RxQueue};

fn pool(name: &str) -> Mempool {
    Mempool::new(name, &PoolConfig { mbufs: 2048, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];

/// Turns an ARP request or ICMP echo request for `ip` into its reply, in place.
fn answer(m: &mut Mbuf, ip: [u8; 4]) -> bool {
    let d = m.data_mut();
    if d.len() >= 42 && d[12..14] == [0x08, 0x06] && d[20..22] == [0, 1] && d[38..42] == ip {
        let (sha, spa): ([u8; 6], [u8; 4]) = (d[22..28].try_into().unwrap(), d[28..32].try_into().unwrap());
        d[0..6].copy_from_slice(&sha);
        d[6..12].copy_from_slice(&OUR_MAC);
        d[21] = 2;
        d[22..28].copy_from_slice(&OUR_MAC);
        d[28..32].copy_from_slice(&ip);
        d[32..38].copy_from_slice(&sha);
        d[38..42].copy_from_slice(&spa);
        return true;
    }
    if d.len() >= 42 && d[12..14] == [0x08, 0x00] && d[23] == 1 && d[30..34] == ip && d[34] == 8 {
        let ihl = (d[14] & 0xf) as usize * 4;
        let tot = u16::from_be_bytes([d[16], d[17]]) as usize;
        let src: [u8; 6] = d[6..12].try_into().unwrap();
        d[0..6].copy_from_slice(&src);
        d[6..12].copy_from_slice(&OUR_MAC);
        let sip: [u8; 4] = d[26..30].try_into().unwrap();
        d[26..30].copy_from_slice(&ip);
        d[30..34].copy_from_slice(&sip);
        d[22] = 64;
        d[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&d[14..14 + ihl], 0);
        d[24..26].copy_from_slice(&c.to_be_bytes());
        let icmp = &mut d[14 + ihl..14 + tot];
        icmp[0] = 0;
        icmp[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        return true;
    }
    false
}

#[test]
fn tap_answers_the_kernels_ping() {
    if !require("tap_answers_the_kernels_ping", true, &["ip", "ping"]) {
        return;
    }
    let pool = pool("tap-ping");
    let ns = Netns::new("fptp");
    let name = unique("fptp");
    let mut port = TapPort::open(0, &TapConfig { name: name.clone(), vnet_hdr: false, queues: 1 }, &pool).unwrap();
    assert_eq!(port.info().driver, "tap");
    run(&["ip", "link", "set", &name, "netns", &ns.name]);
    ns.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", &name]);
    ns.exec(&["ip", "link", "set", &name, "up"]);

    let (mut rx, mut tx) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let p2 = pool.clone();
    let responder = std::thread::spawn(move || {
        let mut ctx = Ctx::new(0, &p2);
        let (mut b, mut out) = (Batch::new(), Batch::new());
        let mut answered = 0u64;
        // Relaxed: a stop request carrying no data.
        while !st.load(Ordering::Relaxed) {
            if rx.rx_burst(&mut ctx, &mut b, 32) == 0 {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            for mut m in b.drain_all() {
                if answer(&mut m, [10, 77, 0, 2]) {
                    answered += 1;
                    let _ = out.push(m);
                } else {
                    ctx.free(m);
                }
            }
            tx.tx_burst(&mut ctx, &mut out);
            ctx.free_batch(&mut out);
        }
        answered
    });
    let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"]);
    stop.store(true, Ordering::Relaxed);
    let answered = responder.join().unwrap();
    assert!(out.contains("3 received"), "{out}");
    // At least one ARP reply and the three echo replies.
    assert!(answered >= 4, "answered {answered}");
    let s = port.stats();
    assert!(s.rx_packets >= 4 && s.tx_packets >= 4, "{s:?}");
    drop(port);
    assert_eq!(pool.available(), pool.capacity());
}

/// An mbuf (chained when needed) holding `bytes`.
fn mbuf_of(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut head: Option<Mbuf> = None;
    for chunk in bytes.chunks(pool.data_room()) {
        let mut m = pool.alloc().unwrap();
        m.append(chunk.len()).unwrap().copy_from_slice(chunk);
        match head.as_mut() {
            None => head = Some(m),
            Some(h) => h.chain(m).unwrap(),
        }
    }
    head.unwrap()
}

fn fold(s: u32) -> u16 {
    !checksum(&[], s)
}

const A_IP: [u8; 4] = [10, 78, 1, 2];
const B_IP: [u8; 4] = [10, 78, 2, 2];

fn tcp_tso_frame(dst_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&OUR_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&7u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&A_IP);
    f[30..34].copy_from_slice(&B_IP);
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5000u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x18;
    f[48..50].copy_from_slice(&512u16.to_be_bytes());
    // Pseudo-header sum without the length (the TSO convention).
    f[50..52].copy_from_slice(&fold(pseudo4(A_IP, B_IP, 6, 0)).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Polls `rx` until `want` frames matching `keep` arrived (or 3 s passed).
/// A received frame: bytes, ol_flags, l2, l3, l4 lengths, tso_segsz, segments.
type Got = (Vec<u8>, u64, u16, u16, u8, u16, u16);

fn collect(rx: &mut dyn RxQueue, ctx: &mut Ctx, want: usize, keep: impl Fn(&Mbuf) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    let mut b = Batch::new();
    let end = Instant::now() + Duration::from_secs(3);
    while got.len() < want && Instant::now() < end {
        if rx.rx_burst(ctx, &mut b, 32) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for m in b.drain_all() {
            if keep(&m) {
                got.push((
                    m.to_vec(),
                    m.ol_flags(),
                    m.l2_len() as u16,
                    m.l3_len(),
                    m.l4_len(),
                    m.tso_segsz(),
                    m.nb_segs() as u16,
                ));
            }
            ctx.free(m);
        }
    }
    got
}

#[test]
fn tap_vnet_hdr_offloads_through_the_kernel() {
    if !require("tap_vnet_hdr_offloads_through_the_kernel", true, &["ip", "sysctl"]) {
        return;
    }
    let pool = pool("tap-vnet");
    let ns = Netns::new("fptv");
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
    let (na, nb) = (unique("fpva"), unique("fpvb"));
    let mut a = TapPort::open(0, &TapConfig { name: na.clone(), vnet_hdr: true, queues: 1 }, &pool).unwrap();
    let mut b = TapPort::open(1, &TapConfig { name: nb.clone(), vnet_hdr: false, queues: 1 }, &pool).unwrap();
    use fastpath_pmd::Offloads as O;
    let ao = a.info().offloads;
    eprintln!("tap {na} offloads: {ao:?}");
    assert!(ao.contains(O::TX_TCP_TSO | O::TX_UDP_CKSUM | O::TX_IPV4_CKSUM | O::TX_MULTI_SEGS), "{ao:?}");
    let a_mac = a.info().mac.unwrap();
    for (n, addr) in [(&na, "10.78.1.1/24"), (&nb, "10.78.2.1/24")] {
        run(&["ip", "link", "set", n, "netns", &ns.name]);
        ns.exec(&["ip", "addr", "add", addr, "dev", n]);
        ns.exec(&["ip", "link", "set", n, "up"]);
    }
    ns.exec(&["ip", "neigh", "replace", "10.78.2.2", "lladdr", "02:00:00:00:78:b2", "dev", &nb, "nud", "permanent"]);
    ns.exec(&["ip", "neigh", "replace", "10.78.1.2", "lladdr", "02:00:00:00:77:02", "dev", &na, "nud", "permanent"]);

    let mut ctx = Ctx::new(0, &pool);
    let (mut arx, mut atx, mut brx) = (a.rx_queue(0).unwrap(), a.tx_queue(0).unwrap(), b.rx_queue(0).unwrap());

    // --- transmit offloads: A (vnet) -> kernel forwarding -> B (plain, software GSO + checksum)
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = Batch::new();
    let mut m = mbuf_of(&pool, &tcp_tso_frame(a_mac, &payload));
    assert!(m.nb_segs() >= 2);
    m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(20);
    m.set_tso_segsz(1000);
    out.push(m).unwrap();

    let upay = &payload[..2500];
    let mut uf = udp4_frame(a_mac, OUR_MAC, A_IP, B_IP, 4001, 5001, upay);
    uf[24..26].copy_from_slice(&[0, 0]);
    uf[40..42].copy_from_slice(&fold(pseudo4(A_IP, B_IP, 17, 0)).to_be_bytes());
    let mut m = mbuf_of(&pool, &uf);
    m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_UDP_SEG);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(8);
    m.set_tso_segsz(1000);
    let uso = ao.contains(O::TX_UDP_TSO);
    if uso {
        out.push(m).unwrap();
    } else {
        drop(m);
    }

    let mut cf = udp4_frame(a_mac, OUR_MAC, A_IP, B_IP, 4002, 5002, &payload[..200]);
    cf[40..42].copy_from_slice(&fold(pseudo4(A_IP, B_IP, 17, 208)).to_be_bytes());
    let mut m = mbuf_of(&pool, &cf);
    m.set_ol_flags(TX_IPV4 | TX_UDP_CKSUM);
    m.set_l2_len(14);
    m.set_l3_len(20);
    out.push(m).unwrap();
    let n = out.len();
    assert_eq!(atx.tx_burst(&mut ctx, &mut out), n);

    let want = 3 + if uso { 3 } else { 0 } + 1;
    let got = collect(brx.as_mut(), &mut ctx, want, |m| {
        let d = m.data();
        d.len() > 34 && d[12..14] == [0x08, 0x00] && d[30..34] == B_IP
    });
    assert_eq!(got.len(), want, "frames forwarded to B");
    let mut tcp_seqs = Vec::new();
    let mut udp_lens = Vec::new();
    for (f, ..) in &got {
        assert!(l4_checksums_ok(f), "bad checksum in a forwarded frame: {:02x?}", &f[..54]);
        assert_eq!(f[22], 63, "forwarded TTL");
        match f[23] {
            6 => {
                let seq = u32::from_be_bytes(f[38..42].try_into().unwrap());
                let off = (seq - 1000) as usize;
                assert_eq!(&f[54..], &payload[off..off + 1000]);
                tcp_seqs.push(seq);
            }
            17 => {
                let sport = u16::from_be_bytes([f[34], f[35]]);
                udp_lens.push((sport, f.len() - 42));
            }
            p => panic!("unexpected protocol {p}"),
        }
    }
    tcp_seqs.sort();
    assert_eq!(tcp_seqs, vec![1000, 2000, 3000]);
    udp_lens.sort();
    let mut want_udp = vec![(4002, 200)];
    if uso {
        want_udp.extend([(4001, 500), (4001, 1000), (4001, 1000)]);
        want_udp.sort();
    }
    assert_eq!(udp_lens, want_udp);

    // --- receive offloads: a kernel socket sends to an address behind A: partial checksum,
    // and with UDP_SEGMENT one GSO frame.
    ns.enter(|| {
        // SAFETY: plain socket calls on a descriptor we own, with valid buffers.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(s >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_port = 7000u16.to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(A_IP);
            let sap = &sa as *const libc::sockaddr_in as *const libc::sockaddr;
            let sl = std::mem::size_of::<libc::sockaddr_in>() as u32;
            let buf = vec![0x5au8; 3000];
            assert_eq!(libc::sendto(s, buf.as_ptr().cast(), 300, 0, sap, sl), 300);
            let seg: libc::c_int = 1000;
            // UDP_SEGMENT (103): send one GSO datagram of 3000 bytes in 1000-byte segments.
            assert_eq!(libc::setsockopt(s, libc::SOL_UDP, 103, &seg as *const libc::c_int as *const _, 4), 0);
            assert_eq!(libc::sendto(s, buf.as_ptr().cast(), 3000, 0, sap, sl), 3000);
            libc::close(s);
        }
    });
    let rx_uso = a.info().offloads.contains(O::TX_UDP_TSO);
    let want = if rx_uso { 2 } else { 4 };
    let got = collect(arx.as_mut(), &mut ctx, want, |m| {
        let d = m.data();
        d.len() > 34 && d[12..14] == [0x08, 0x00] && d[30..34] == A_IP && d[23] == 17
    });
    assert_eq!(got.len(), want, "frames the kernel sent to A");
    let (f, fl, l2, l3, _, _, _) = &got[0];
    assert_eq!(f.len(), 14 + 20 + 8 + 300);
    assert_eq!(fl & (RX_L4_CKSUM_PARTIAL | TX_UDP_CKSUM | TX_IPV4), RX_L4_CKSUM_PARTIAL | TX_UDP_CKSUM | TX_IPV4);
    assert_eq!((*l2, *l3), (14, 20));
    // Completing the partial checksum gives a valid frame.
    let mut f = f.clone();
    let c = checksum(&f[34..], 0);
    f[40..42].copy_from_slice(&c.to_be_bytes());
    assert!(l4_checksums_ok(&f));
    if rx_uso {
        let (f, fl, l2, l3, l4, segsz, segs) = &got[1];
        assert_eq!(f.len(), 14 + 20 + 8 + 3000);
        assert!(*segs >= 2, "a 3 KB frame arrives as a chain");
        assert_eq!(fl & (TX_UDP_SEG | TX_IPV4), TX_UDP_SEG | TX_IPV4);
        assert_eq!((*l2, *l3, *l4, *segsz), (14, 20, 8, 1000));
        // Pseudo-header sum without the length, as for an mbuf asking for USO.
        let src: [u8; 4] = f[26..30].try_into().unwrap();
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), fold(pseudo4(src, A_IP, 17, 0)));
    }
    let xs = a.xstats();
    assert!(xs.iter().all(|(_, v)| *v == 0), "{xs:?}");
    drop((arx, atx, brx, ctx));
    drop((a, b));
    assert_eq!(pool.available(), pool.capacity());
}

const VX_OUTER_SRC: [u8; 4] = [10, 78, 11, 2];
const VX_OUTER_DST: [u8; 4] = [10, 78, 11, 1];
const VX_INNER_SRC: [u8; 4] = [10, 78, 13, 2];
const VX_INNER_DST: [u8; 4] = [10, 78, 12, 2];

/// A VXLAN frame (VNI 100, UDP 4789, zero UDP checksum) from `VX_OUTER_SRC` to `dst_mac` /
/// `VX_OUTER_DST`, around an Ethernet + IPv4 + TCP packet to `inner_mac` carrying `payload`
/// (sequence number 1000), asking for TSO: the inner TCP checksum field holds the
/// pseudo-header sum without the length, both IPv4 checksums are left to the port.
fn vxlan_tcp_tso_frame(dst_mac: [u8; 6], inner_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let inner_len = 14 + 20 + 20 + payload.len();
    let mut f = vec![0u8; 14 + 20 + 8 + 8];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&OUR_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + 8 + 8 + inner_len) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&VX_OUTER_SRC);
    f[30..34].copy_from_slice(&VX_OUTER_DST);
    f[34..36].copy_from_slice(&49_152u16.to_be_bytes());
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + 8 + inner_len) as u16).to_be_bytes());
    // VXLAN: the I flag, VNI 100.
    f[42] = 0x08;
    f[46..49].copy_from_slice(&[0, 0, 100]);
    let mut i = vec![0u8; 54];
    i[0..6].copy_from_slice(&inner_mac);
    i[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x78, 0x13]);
    i[12..14].copy_from_slice(&[0x08, 0x00]);
    i[14] = 0x45;
    i[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    i[18..20].copy_from_slice(&9u16.to_be_bytes());
    i[22] = 64;
    i[23] = 6;
    i[26..30].copy_from_slice(&VX_INNER_SRC);
    i[30..34].copy_from_slice(&VX_INNER_DST);
    i[34..36].copy_from_slice(&4100u16.to_be_bytes());
    i[36..38].copy_from_slice(&5100u16.to_be_bytes());
    i[38..42].copy_from_slice(&1000u32.to_be_bytes());
    i[42..46].copy_from_slice(&1u32.to_be_bytes());
    i[46] = 0x50;
    i[47] = 0x18;
    i[48..50].copy_from_slice(&512u16.to_be_bytes());
    i[50..52].copy_from_slice(&fold(pseudo4(VX_INNER_SRC, VX_INNER_DST, 6, 0)).to_be_bytes());
    f.extend_from_slice(&i);
    f.extend_from_slice(payload);
    f
}

/// TAP A (virtio-net header) and B (plain), named from the prefixes; None (said) when the kernel
/// has no GSO over UDP tunnels on a tap (before 6.17): from 6.17 on, A must offer it.
fn tunnel_taps(test: &str, pool: &Mempool, pa: &str, pb: &str) -> Option<(TapPort, TapPort, String, String)> {
    let (na, nb) = (unique(pa), unique(pb));
    let a = TapPort::open(0, &TapConfig { name: na.clone(), vnet_hdr: true, queues: 1 }, pool).unwrap();
    let b = TapPort::open(1, &TapConfig { name: nb.clone(), vnet_hdr: false, queues: 1 }, pool).unwrap();
    let ao = a.info().offloads;
    if !ao.contains(fastpath_pmd::Offloads::TX_VXLAN_TNL_TSO) {
        // TUN_F_UDP_TUNNEL_GSO came with Linux 6.17: before it, a property of the kernel (said,
        // not failed); from it on, the port failed to use it.
        let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        assert!(
            !kernel_at_least(6, 17),
            "Linux {} has GSO over UDP tunnels, the tap port does not offer it: {ao:?}",
            rel.trim()
        );
        eprintln!("SKIPPED {test}: Linux {} has no GSO over UDP tunnels on a tap (6.17+)", rel.trim());
        return None;
    }
    Some((a, b, na, nb))
}

#[test]
fn tap_tunnel_tso_reaches_the_kernel_whole() {
    let test = "tap_tunnel_tso_reaches_the_kernel_whole";
    if !require(test, true, &["ip", "sysctl"]) {
        return;
    }
    let pool = pool("tap-tnl");
    let ns = Netns::new("fptt");
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
    let Some((mut a, mut b, na, nb)) = tunnel_taps(test, &pool, "fpta", "fptb") else { return };
    use fastpath_pmd::Offloads as O;
    let ao = a.info().offloads;
    assert!(ao.contains(O::TX_GENEVE_TNL_TSO | O::TX_TCP_TSO), "{ao:?}");
    let a_mac = a.info().mac.unwrap();
    for (n, addr) in [(&na, "10.78.11.1/24"), (&nb, "10.78.12.1/24")] {
        run(&["ip", "link", "set", n, "netns", &ns.name]);
        ns.exec(&["ip", "addr", "add", addr, "dev", n]);
        ns.exec(&["ip", "link", "set", n, "up"]);
    }
    // The kernel's VTEP on A: it decapsulates the GSO packet as one and routes the inner one.
    let vx = format!("ip link add vx0 type vxlan id 100 local 10.78.11.1 dstport 4789 dev {na}");
    ns.exec(&vx.split(' ').collect::<Vec<_>>());
    ns.exec(&["ip", "addr", "add", "10.78.13.1/24", "dev", "vx0"]);
    ns.exec(&["ip", "link", "set", "vx0", "up"]);
    ns.exec(&["ip", "neigh", "replace", "10.78.12.2", "lladdr", "02:00:00:00:78:b2", "dev", &nb, "nud", "permanent"]);
    let vx_mac = fastpath_pmd::sys::parse_mac(ns.exec(&["cat", "/sys/class/net/vx0/address"]).trim()).unwrap();

    // What the kernel counts as received on A (one GSO packet counts once).
    let a_rx = || -> (u64, u64) {
        let n = |f: &str| ns.exec(&["cat", &format!("/sys/class/net/{na}/statistics/{f}")]).trim().parse().unwrap();
        (n("rx_packets"), n("rx_bytes"))
    };
    let before = a_rx();

    let mut ctx = Ctx::new(0, &pool);
    let (mut atx, mut brx) = (a.tx_queue(0).unwrap(), b.rx_queue(0).unwrap());
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut m = mbuf_of(&pool, &vxlan_tcp_tso_frame(a_mac, vx_mac, &payload));
    assert!(m.nb_segs() >= 2);
    m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG | TX_TUNNEL_VXLAN | TX_OUTER_IPV4 | TX_OUTER_IP_CKSUM);
    m.set_outer_l2_len(14);
    m.set_outer_l3_len(20);
    m.set_l2_len(30);
    m.set_l3_len(20);
    m.set_l4_len(20);
    m.set_tso_segsz(1000);
    let mut out = Batch::new();
    out.push(m).unwrap();
    assert_eq!(atx.tx_burst(&mut ctx, &mut out), 1);
    let s = a.stats();
    assert_eq!((s.tx_packets, s.tx_drops, s.tx_errors), (1, 0, 0), "one whole packet written to A: {s:?}");

    // The kernel took it as one tunnel GSO packet, decapsulated it, routed the inner TCP packet
    // to B and cut it there (B has no virtio-net header): three segments of 1000 bytes.
    let got = collect(brx.as_mut(), &mut ctx, 4, |m| {
        let d = m.data();
        d.len() > 34 && d[12..14] == [0x08, 0x00] && d[30..34] == VX_INNER_DST
    });
    let mut seqs = Vec::new();
    for (f, ..) in &got {
        assert_eq!(f[23], 6, "a TCP segment: {:02x?}", &f[..34]);
        assert!(l4_checksums_ok(f), "bad checksum in a forwarded segment: {:02x?}", &f[..54]);
        assert_eq!(f[22], 63, "forwarded TTL");
        assert_eq!(f[26..30], VX_INNER_SRC);
        assert_eq!(f.len(), 54 + 1000, "segment size");
        let seq = u32::from_be_bytes(f[38..42].try_into().unwrap());
        let off = (seq - 1000) as usize;
        assert_eq!(&f[54..], &payload[off..off + 1000], "payload at sequence number {seq}");
        seqs.push(seq);
    }
    seqs.sort();
    assert_eq!(seqs, vec![1000, 2000, 3000], "the segments B received");
    let (pkts, bytes) = a_rx();
    let whole = (50 + 54 + payload.len()) as u64;
    assert_eq!((pkts - before.0, bytes - before.1), (1, whole), "received by the kernel on A: one packet");
    let xs = a.xstats();
    assert!(xs.iter().all(|(_, v)| *v == 0), "{xs:?}");
    drop((atx, brx, ctx));
    drop((a, b));
    assert_eq!(pool.available(), pool.capacity());
}

const V6_OUTER_SRC: [u8; 16] = [0xfd, 0, 0, 0x78, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const V6_OUTER_DST: [u8; 16] = [0xfd, 0, 0, 0x78, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// `vxlan_tcp_tso_frame`'s packet with an IPv6 outer header from `V6_OUTER_SRC` to
/// `V6_OUTER_DST` (the UDP checksum field left zero: the port fills in what Linux wants).
fn vxlan6_tcp_tso_frame(dst_mac: [u8; 6], inner_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let v4 = vxlan_tcp_tso_frame(dst_mac, inner_mac, payload);
    let mut f = vec![0u8; 54];
    f[..12].copy_from_slice(&v4[..12]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&((v4.len() - 34) as u16).to_be_bytes());
    f[20] = 17;
    f[21] = 64;
    f[22..38].copy_from_slice(&V6_OUTER_SRC);
    f[38..54].copy_from_slice(&V6_OUTER_DST);
    f.extend_from_slice(&v4[34..]);
    f
}

/// The kernel cuts a TSO packet inside VXLAN over IPv6 that asks for the outer UDP checksum
/// (`F_UDP_TUNNEL_CSUM`) when it forwards it to a port without GSO: every segment must carry a
/// valid outer UDP checksum (computed from the pseudo-header sum the port put in the field) and
/// a valid inner TCP checksum.
#[test]
fn tap_tunnel_tso_with_the_outer_udp_checksum_is_cut_right_by_the_kernel() {
    let test = "tap_tunnel_tso_with_the_outer_udp_checksum_is_cut_right_by_the_kernel";
    if !require(test, true, &["ip", "sysctl"]) {
        return;
    }
    let pool = pool("tap-tnl6");
    let ns = Netns::new("fptu");
    for k in ["all.disable_ipv6=0", "default.disable_ipv6=0", "all.forwarding=1"] {
        ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{k}")]);
    }
    let Some((mut a, mut b, na, nb)) = tunnel_taps(test, &pool, "fpua", "fpub") else { return };
    let a_mac = a.info().mac.unwrap();
    for (n, addr) in [(&na, "fd00:78:11::1/64"), (&nb, "fd00:78:12::1/64")] {
        run(&["ip", "link", "set", n, "netns", &ns.name]);
        ns.exec(&["ip", "addr", "add", addr, "dev", n, "nodad"]);
        ns.exec(&["ip", "link", "set", n, "up"]);
    }
    ns.exec(&[
        "ip",
        "-6",
        "neigh",
        "replace",
        "fd00:78:12::2",
        "lladdr",
        "02:00:00:00:78:b2",
        "dev",
        &nb,
        "nud",
        "permanent",
    ]);

    let mut ctx = Ctx::new(0, &pool);
    let (mut atx, mut brx) = (a.tx_queue(0).unwrap(), b.rx_queue(0).unwrap());
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 17 % 251) as u8).collect();
    let inner_mac = [0x02, 0, 0, 0, 0x78, 0x14];
    let mut m = mbuf_of(&pool, &vxlan6_tcp_tso_frame(a_mac, inner_mac, &payload));
    m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG | TX_TUNNEL_VXLAN | TX_OUTER_IPV6 | TX_OUTER_UDP_CKSUM);
    m.set_outer_l2_len(14);
    m.set_outer_l3_len(40);
    m.set_l2_len(30);
    m.set_l3_len(20);
    m.set_l4_len(20);
    m.set_tso_segsz(1000);
    let mut out = Batch::new();
    out.push(m).unwrap();
    assert_eq!(atx.tx_burst(&mut ctx, &mut out), 1);

    let got = collect(brx.as_mut(), &mut ctx, 4, |m| {
        let d = m.data();
        d.len() > 54 && d[12..14] == [0x86, 0xdd] && d[38..54] == V6_OUTER_DST
    });
    let mut seqs = Vec::new();
    for (f, ..) in &got {
        assert_eq!(f.len(), 54 + 8 + 8 + 54 + 1000, "segment size");
        assert_eq!(f[21], 63, "forwarded hop limit");
        // The outer UDP checksum over the IPv6 pseudo-header, present and right.
        let udp = &f[54..];
        let ph: u32 =
            f[22..54].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum::<u32>() + udp.len() as u32 + 17;
        assert_ne!(u16::from_be_bytes([udp[6], udp[7]]), 0, "an outer UDP checksum");
        assert_eq!(checksum(udp, ph), 0, "outer UDP checksum of a segment");
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len(), "outer UDP length");
        let inner = &f[70..];
        assert!(l4_checksums_ok(inner), "bad inner checksum: {:02x?}", &inner[..54]);
        let seq = u32::from_be_bytes(inner[38..42].try_into().unwrap());
        let off = (seq - 1000) as usize;
        assert_eq!(&inner[54..], &payload[off..off + 1000], "payload at sequence number {seq}");
        seqs.push(seq);
    }
    seqs.sort();
    assert_eq!(seqs, vec![1000, 2000, 3000], "the segments B received");
    let xs = a.xstats();
    assert!(xs.iter().all(|(_, v)| *v == 0), "{xs:?}");
    drop((atx, brx, ctx));
    drop((a, b));
    assert_eq!(pool.available(), pool.capacity());
}

/// The other way: a kernel VXLAN device on A sends a UDP GSO datagram (a socket with
/// UDP_SEGMENT in the overlay) and A receives it whole, as USO inside VXLAN: one frame with the
/// tunnel request, the outer and inner lengths and the segment size.
#[test]
fn tap_receives_the_kernels_tunnel_gso_whole() {
    let test = "tap_receives_the_kernels_tunnel_gso_whole";
    if !require(test, true, &["ip", "sysctl"]) {
        return;
    }
    let pool = pool("tap-tnlrx");
    let ns = Netns::new("fptr");
    let Some((a, _b, na, _nb)) = tunnel_taps(test, &pool, "fpra", "fprb") else { return };
    let mut a = a;
    run(&["ip", "link", "set", &na, "netns", &ns.name]);
    ns.exec(&["ip", "addr", "add", "10.78.21.1/24", "dev", &na]);
    ns.exec(&["ip", "link", "set", &na, "up"]);
    ns.exec(&["ip", "neigh", "replace", "10.78.21.2", "lladdr", "02:00:00:00:78:21", "dev", &na, "nud", "permanent"]);
    let vx = format!("ip link add vx0 type vxlan id 100 local 10.78.21.1 remote 10.78.21.2 dstport 4789 dev {na}");
    ns.exec(&vx.split(' ').collect::<Vec<_>>());
    ns.exec(&["ip", "addr", "add", "10.78.23.1/24", "dev", "vx0"]);
    ns.exec(&["ip", "link", "set", "vx0", "up"]);
    ns.exec(&["ip", "neigh", "replace", "10.78.23.2", "lladdr", "02:00:00:00:78:23", "dev", "vx0", "nud", "permanent"]);
    let mut ctx = Ctx::new(0, &pool);
    let mut arx = a.rx_queue(0).unwrap();
    ns.enter(|| {
        // SAFETY: plain socket calls on a descriptor we own, with valid buffers.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(s >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_port = 7100u16.to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes([10, 78, 23, 2]);
            let sap = &sa as *const libc::sockaddr_in as *const libc::sockaddr;
            let sl = std::mem::size_of::<libc::sockaddr_in>() as u32;
            let seg: libc::c_int = 1000;
            // UDP_SEGMENT (103): one GSO datagram of 3000 bytes in 1000-byte segments.
            assert_eq!(libc::setsockopt(s, libc::SOL_UDP, 103, &seg as *const libc::c_int as *const _, 4), 0);
            let buf = vec![0x6bu8; 3000];
            assert_eq!(libc::sendto(s, buf.as_ptr().cast(), 3000, 0, sap, sl), 3000);
            libc::close(s);
        }
    });
    let got = collect(arx.as_mut(), &mut ctx, 1, |m| {
        let d = m.data();
        d.len() > 50 && d[12..14] == [0x08, 0x00] && d[23] == 17 && d[36..38] == 4789u16.to_be_bytes()
    });
    assert_eq!(got.len(), 1, "the VXLAN datagram the kernel sent on A");
    let (f, fl, l2, l3, l4, segsz, segs) = &got[0];
    // Outer Ethernet + IPv4 + UDP + VXLAN + inner Ethernet + IPv4 + UDP + 3000 bytes, whole.
    assert_eq!(f.len(), 14 + 20 + 8 + 8 + 14 + 20 + 8 + 3000, "one frame for the whole datagram");
    assert!(*segs >= 2, "a chain");
    let want = TX_UDP_SEG | TX_TUNNEL_VXLAN | TX_OUTER_IPV4 | TX_IPV4;
    assert_eq!(fl & want, want, "{fl:#x}");
    assert_eq!((*l2, *l3, *l4, *segsz), (30, 20, 8, 1000));
    assert_eq!(&f[92..], &[0x6b; 3000][..]);
    let xs = a.xstats();
    assert!(xs.iter().all(|(_, v)| *v == 0), "{xs:?}");
    drop((arx, ctx));
    drop(a);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn tap_spec_errors_name_the_bad_part() {
    let pool = pool("tap-spec");
    for (spec, want) in [
        ("tap", "interface name is missing"),
        ("tap:abcdefghijklmnopq", "1 to 15 characters"),
        ("tap:fpx0,vnet-hdr=maybe", "expected on or off"),
        ("tap:fpx0,bogus=1", "unknown key 'bogus'"),
        ("tap:fpx0,queues=0", "queues=0 is not a number in 1..=256"),
    ] {
        let e = match fastpath_pmd::open_port(0, spec, &pool) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{spec} was accepted"),
        };
        assert!(e.contains(want) && e.contains("tap:NAME[,vnet-hdr=on]"), "{spec}: {e}");
    }
}
