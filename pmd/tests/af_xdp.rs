//! AF_XDP against the real kernel, on veth pairs in network namespaces that each test builds and
//! removes (guards, even on failure). Traffic comes from the kernel side of the veths (packet
//! sockets in the namespace) and is counted there. Needs root; CI runs it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::af_xdp::{bpf, netlink, AfXdpConfig, AfXdpPort, AttachVia, XdpMode};
use fastpath_pmd::testutil::require;
use fastpath_pmd::{Ctx, IdleMode, LcoreSpec, Passthrough, Port, Runtime, RuntimeConfig};

fn new_pool(name: &str, mbufs: u32) -> Mempool {
    Mempool::new(name, &PoolConfig { mbufs, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

const MAGIC: &[u8; 4] = b"FPXT";

/// A test frame: UDP from `sport`, payload MAGIC + sequence number.
fn frame(dst: [u8; 6], sport: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.saturating_sub(42).max(8)];
    p[..4].copy_from_slice(MAGIC);
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    udp4_frame(dst, [2, 0, 0, 0, 0, 0xaa], [10, 99, 0, 1], [10, 99, 0, 2], sport, 9, &p)
}

fn seq_of(f: &[u8]) -> Option<u32> {
    (f.len() >= 50 && f[12..14] == [8, 0] && &f[42..46] == MAGIC)
        .then(|| u32::from_be_bytes(f[46..50].try_into().unwrap()))
}

fn mac_in(ns: &Netns, ifname: &str) -> [u8; 6] {
    fastpath_pmd::sys::parse_mac(ns.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]).trim()).unwrap()
}

fn has_xdp(ifname: &str) -> bool {
    run(&["ip", "link", "show", "dev", ifname]).contains("xdp")
}

/// Forwards port 0 <-> port 1, queue q of both on lcore q, pinned to CPU q + 1 (mod the CPUs:
/// 1, then 0), idling adaptively: the kernel side of the test (sender, veth, receiver) shares
/// these CPUs, and an lcore with nothing to do gives its CPU to it.
fn forward(ports: &mut [Box<dyn Port>], queues: u16) -> Runtime {
    let cpus = fastpath_pmd::lcore::available_cores();
    let mut lcores = Vec::new();
    for q in 0..queues {
        let core = cpus.get((q as usize + 1) % cpus.len()).copied();
        let mut l = LcoreSpec { core, ..Default::default() };
        for p in 0..2u16 {
            let rx = ports[p as usize].rx_queue(q).unwrap();
            l.add_task_with(rx, Box::new(Passthrough), 1 - p);
            let tx = ports[p as usize].tx_queue(q).unwrap();
            l.set_tx(p, tx);
        }
        lcores.push(l);
    }
    Runtime::launch(lcores, RuntimeConfig { burst: 32, idle: IdleMode::Adaptive { max_sleep_us: 100 } }).unwrap()
}

/// Sends `seqs` from `from` (in `ns`) and collects what arrives on `to`; returns the sequence
/// numbers seen (duplicates counted separately).
fn send_and_count(
    ns: &Netns,
    from: &str,
    to: &str,
    dst: [u8; 6],
    seqs: std::ops::Range<u32>,
    flows: u16,
) -> (BTreeSet<u32>, usize) {
    let want = seqs.len();
    let (tx, rx) = ns.enter(|| (PacketSocket::open(from), PacketSocket::open(to)));
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut seen = BTreeSet::new();
            let mut dups = 0;
            rx.recv_until(Duration::from_secs(10), |f| {
                if let Some(q) = seq_of(f) {
                    if !seen.insert(q) {
                        dups += 1;
                    }
                }
                seen.len() >= want
            });
            (seen, dups)
        });
        for (i, q) in seqs.enumerate() {
            tx.send(&frame(dst, 1000 + (q % flows as u32) as u16, q, 64));
            // Paced: the kernel side runs on the cores the lcores poll on.
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        h.join().unwrap()
    });
    seen
}

#[test]
fn af_xdp_l2fwd_between_two_ports_delivers_every_frame() {
    if !require("af_xdp_l2fwd_between_two_ports_delivers_every_frame", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let ns = Netns::new("fpxl");
    let (a0, a1, b0, b1) = (unique("fpa"), unique("fpa"), unique("fpb"), unique("fpb"));
    let _la = veth(&ns, &a0, &a1, 1);
    let _lb = veth(&ns, &b0, &b1, 1);
    let pool = new_pool("xdp-l2fwd", 16384);
    let mut ports: Vec<Box<dyn Port>> = vec![
        Box::new(AfXdpPort::open(0, &AfXdpConfig::new(&a0), &pool).unwrap()),
        Box::new(AfXdpPort::open(1, &AfXdpConfig::new(&b0), &pool).unwrap()),
    ];
    assert!(has_xdp(&a0) && has_xdp(&b0), "XDP programs attached");
    let rt = forward(&mut ports, 1);
    let (b1_mac, a1_mac) = (mac_in(&ns, &b1), mac_in(&ns, &a1));

    let n = 20_000u32;
    let (seen, dups) = send_and_count(&ns, &a1, &b1, b1_mac, 0..n, 16);
    assert_eq!(dups, 0, "duplicated frames");
    assert_eq!(
        seen.len(),
        n as usize,
        "a1 -> b1: missing {:?}...",
        (0..n).filter(|q| !seen.contains(q)).take(10).collect::<Vec<_>>()
    );
    let (seen, _) = send_and_count(&ns, &b1, &a1, a1_mac, n..n + 5000, 16);
    assert_eq!(seen.len(), 5000, "b1 -> a1");

    rt.join().unwrap();
    let (sa, sb) = (ports[0].stats(), ports[1].stats());
    assert!(sa.rx_packets >= n as u64 && sb.tx_packets >= n as u64, "{sa:?} {sb:?}");
    assert_eq!(sa.rx_drops + sb.rx_drops, 0, "{sa:?} {sb:?}");
    let xs = ports[0].xstats();
    let get = |k: &str| xs.iter().find(|(n, _)| n == k).map(|x| x.1).unwrap();
    assert_eq!(get("tx_copies"), 0, "frames of the UMEM pool are posted by address");
    assert_eq!(get("rx_ring_full") + get("rx_dropped"), 0);
    drop(ports);
    assert!(!has_xdp(&a0) && !has_xdp(&b0), "XDP programs removed on close");
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn af_xdp_two_queues_on_two_lcores() {
    if !require("af_xdp_two_queues_on_two_lcores", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let ns = Netns::new("fpxq");
    let (a0, a1, b0, b1) = (unique("fpqa"), unique("fpqa"), unique("fpqb"), unique("fpqb"));
    let _la = veth(&ns, &a0, &a1, 2);
    let _lb = veth(&ns, &b0, &b1, 2);
    let pool = new_pool("xdp-2q", 16384);
    let mut cfg = AfXdpConfig::new(&a0);
    cfg.queues = 2;
    // Deep rings: the lcores share the two CPUs with the kernel-side sender and receiver, so an
    // lcore can be off its CPU for milliseconds while frames keep arriving.
    cfg.ring_size = 4096;
    let mut cfg_b = cfg.clone();
    cfg_b.iface = b0.clone();
    let mut ports: Vec<Box<dyn Port>> =
        vec![Box::new(AfXdpPort::open(0, &cfg, &pool).unwrap()), Box::new(AfXdpPort::open(1, &cfg_b, &pool).unwrap())];
    assert_eq!(ports[0].info().rx_queues, 2);
    let rt = forward(&mut ports, 2);
    let b1_mac = mac_in(&ns, &b1);
    let n = 20_000u32;
    let (seen, dups) = send_and_count(&ns, &a1, &b1, b1_mac, 0..n, 64);
    let per_lcore: Vec<u64> = rt.stats().iter().map(|s| s.rx_packets.get()).collect();
    rt.join().unwrap();
    assert_eq!(dups, 0);
    assert_eq!(
        seen.len(),
        n as usize,
        "every frame delivered over two queues; port stats {:?} {:?}, xstats {:?}",
        ports[0].stats(),
        ports[1].stats(),
        ports[0].xstats()
    );
    assert!(per_lcore.iter().all(|&p| p > n as u64 / 10), "both queues (lcores) carried traffic: {per_lcore:?}");
    drop(ports);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn af_xdp_copies_foreign_and_chained_mbufs_and_skb_mode_works() {
    if !require("af_xdp_copies_foreign_and_chained_mbufs_and_skb_mode_works", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let ns = Netns::new("fpxc");
    let (a0, a1) = (unique("fpca"), unique("fpca"));
    let _la = veth(&ns, &a0, &a1, 1);
    let pool = new_pool("xdp-umem", 4096);
    let other = new_pool("xdp-other", 64);
    let mut cfg = AfXdpConfig::new(&a0);
    cfg.mode = XdpMode::Skb;
    cfg.ring_size = 256;
    let mut port = AfXdpPort::open(0, &cfg, &pool).unwrap();
    assert!(run(&["ip", "link", "show", "dev", &a0]).contains("xdpgeneric"), "skb mode");
    let a1_mac = mac_in(&ns, &a1);
    let mut tx = port.tx_queue(0).unwrap();
    let mut rxq = port.rx_queue(0).unwrap();
    let mut ctx = Ctx::new(0, &pool);
    let sock = ns.enter(|| PacketSocket::open(&a1));

    let mut b = Batch::new();
    // From the UMEM pool: posted by address.
    let f0 = frame(a1_mac, 1, 0, 100);
    let mut m = pool.alloc().unwrap();
    m.append(f0.len()).unwrap().copy_from_slice(&f0);
    b.push(m).unwrap();
    // From another pool: copied.
    let f1 = frame(a1_mac, 1, 1, 300);
    let mut m = other.alloc().unwrap();
    m.append(f1.len()).unwrap().copy_from_slice(&f1);
    b.push(m).unwrap();
    // A chain of two segments: copied.
    let f2 = frame(a1_mac, 1, 2, 1200);
    let mut m = pool.alloc().unwrap();
    m.append(700).unwrap().copy_from_slice(&f2[..700]);
    let mut s2 = pool.alloc().unwrap();
    s2.append(f2.len() - 700).unwrap().copy_from_slice(&f2[700..]);
    m.chain(s2).unwrap();
    b.push(m).unwrap();
    assert_eq!(tx.tx_burst(&mut ctx, &mut b), 3);

    let mut got = Vec::new();
    sock.recv_until(Duration::from_secs(3), |f| {
        if seq_of(f).is_some() {
            got.push(f.to_vec());
        }
        got.len() == 3
    });
    got.sort_by_key(|f| seq_of(f));
    assert_eq!(got, vec![f0, f1, f2]);
    let xs = port.xstats();
    assert!(xs.contains(&("tx_copies".to_string(), 2)), "{xs:?}");

    // And receive in skb mode.
    sock.send(&frame([2, 0, 0, 0, 0, 1], 7, 42, 64));
    let mut rb = Batch::new();
    let end = Instant::now() + Duration::from_secs(3);
    let mut seen = None;
    while seen.is_none() && Instant::now() < end {
        rxq.rx_burst(&mut ctx, &mut rb, 32);
        for m in rb.drain_all() {
            if seq_of(m.data()) == Some(42) {
                // The frame sits at the mbuf's default data offset, in place.
                seen = Some((m.data_off(), m.port()));
            }
            ctx.free(m);
        }
        tx.flush(&mut ctx);
    }
    assert_eq!(seen, Some((fastpath_mempool::HEADROOM as usize, 0)));
    drop((tx, rxq, ctx));
    drop(port);
    assert!(!has_xdp(&a0));
    assert_eq!(pool.available(), pool.capacity());
    assert_eq!(other.available(), other.capacity());
}

#[test]
fn af_xdp_netlink_attach_is_detached_on_close() {
    if !require("af_xdp_netlink_attach_is_detached_on_close", true, &["ip"]) {
        return;
    }
    let ns = Netns::new("fpxn");
    let (a0, a1) = (unique("fpna"), unique("fpna"));
    let _la = veth(&ns, &a0, &a1, 1);
    let pool = new_pool("xdp-nl", 1024);
    let mut cfg = AfXdpConfig::new(&a0);
    cfg.attach = AttachVia::Netlink;
    cfg.ring_size = 128;
    let port = AfXdpPort::open(0, &cfg, &pool).unwrap();
    assert!(has_xdp(&a0));
    drop(port);
    assert!(!has_xdp(&a0), "netlink-attached program detached on close");
    assert_eq!(pool.available(), pool.capacity());
}

fn open_err(spec: &str, pool: &Mempool) -> String {
    match fastpath_pmd::open_port(0, spec, pool) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{spec} was accepted"),
    }
}

#[test]
fn af_xdp_errors_name_the_cause_and_the_fix() {
    if !require("af_xdp_errors_name_the_cause_and_the_fix", true, &["ip"]) {
        return;
    }
    let ns = Netns::new("fpxe");
    let (a0, a1) = (unique("fpea"), unique("fpea"));
    let _la = veth(&ns, &a0, &a1, 1);
    let pool = new_pool("xdp-err", 2048);

    let e = open_err("af_xdp:fpnosuch0", &pool);
    assert!(e.contains("no interface named 'fpnosuch0'") && e.contains("ip link show"), "{e}");

    let e = open_err(&format!("af_xdp:{a0},queues=2,ring-size=256"), &pool);
    assert!(e.contains("has 1 rx queue(s)") && e.contains(&format!("ethtool -l {a0}")), "{e}");

    let e = open_err(&format!("af_xdp:{a0},bind=zerocopy,ring-size=256"), &pool);
    assert!(e.contains("zero-copy is not supported by the driver") && e.contains("bind=copy"), "{e}");
    assert!(!has_xdp(&a0), "nothing left behind by a failed open");

    let e = open_err(&format!("af_xdp:{a0},ring-size=1000"), &pool);
    assert!(e.contains("not a power of two"), "{e}");
    let e = open_err(&format!("af_xdp:{a0},mode=fast"), &pool);
    assert!(e.contains("expected one of native, skb, auto"), "{e}");
    let e = open_err(&format!("af_xdp:{a0}"), &pool);
    assert!(e.contains("raise --mbufs or lower ring-size="), "{e}");

    // Another program on the interface: refused, and taken over with replace=on.
    let first = AfXdpPort::open(
        0,
        &{
            let mut c = AfXdpConfig::new(&a0);
            c.ring_size = 256;
            c
        },
        &pool,
    )
    .unwrap();
    let e = open_err(&format!("af_xdp:{a0},ring-size=256"), &pool);
    assert!(e.contains("already has an XDP program") && e.contains("replace=on"), "{e}");
    let e = open_err(&format!("af_xdp:{a0},ring-size=256,replace=on"), &pool);
    assert!(e.contains("held by a bpf link of another process") && e.contains("stop that"), "{e}");
    drop(first);
    // A program attached the old way (netlink) and left behind, as after a crash.
    let map = bpf::create_xskmap(1).unwrap();
    let prog = bpf::load_redirect_program(&map).unwrap();
    let idx = fastpath_pmd::sys::if_index(&a0).unwrap();
    // The kernel tears the dropped bpf link down asynchronously: retry while it still holds the
    // interface.
    let mut tries = 0;
    while let Err(e) = netlink::set_xdp(idx, std::os::fd::AsRawFd::as_raw_fd(&prog), bpf::XDP_FLAGS_SKB_MODE, None) {
        tries += 1;
        assert!(tries < 100, "netlink attach still refused after 1 s: {e}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop((prog, map));
    assert!(has_xdp(&a0));
    let e = open_err(&format!("af_xdp:{a0},ring-size=256"), &pool);
    assert!(e.contains("already has an XDP program") && e.contains("skb"), "{e}");
    let p = fastpath_pmd::open_port(0, &format!("af_xdp:{a0},ring-size=256,replace=on"), &pool).unwrap().unwrap();
    assert_eq!(p.info().driver, "af_xdp");
    drop(p);
    assert!(!has_xdp(&a0), "the replaced program is gone too");

    // Without privileges (this thread only drops to uid 65534: capabilities go with it).
    let spec = format!("af_xdp:{a0},ring-size=256");
    let pool2 = pool.clone();
    let e = std::thread::spawn(move || {
        // SAFETY: the raw syscall changes the ids of this thread only (glibc's wrapper would
        // change every thread's).
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0);
        match fastpath_pmd::open_port(0, &spec, &pool2) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened without privileges"),
        }
    })
    .join()
    .unwrap();
    assert!(e.contains("needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF: run as root"), "{e}");
    assert_eq!(pool.available(), pool.capacity());
    let _ = Arc::new(());
}
