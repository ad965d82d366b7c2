//! The control plane end to end, in one process: rust-vmm's vhost-user *frontend* (the same
//! crate's other half) talks to a `VhostUserPort` over its real socket, with a fake guest's memfd
//! RAM; the test plays the lcore. Covers feature and protocol negotiation, SET_MEM_TABLE with fd
//! passing, vring setup, traffic both ways, a memory-table swap through the protocol while the
//! queues run, disable / enable, GET_VRING_BASE, refused requests that leave the connection
//! usable, kick counting, and a disconnect that stops the queues. Needs no root and no peer.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::{Ctx, Port, Spec};
use fastpath_vhost_user::net;
use fastpath_vhost_user::ring::RingAddrs;
use fastpath_vhost_user::testutil::{FakeGuest, FakePackedRing, FakeRing, GPA_BASE, UVA_BASE};
use fastpath_vhost_user::VhostUserPort;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

const RAM: usize = 2 << 20;
const BUF: u64 = GPA_BASE + 0x100000;

fn frame(n: usize, tag: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..n).map(|i| (i as u8) ^ tag).collect();
    f[12] = 0x08;
    f[13] = 0;
    f
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn xstat(p: &VhostUserPort, k: &str) -> u64 {
    p.xstats().into_iter().find(|(n, _)| n == k).map(|(_, v)| v).unwrap_or_else(|| panic!("no xstat {k}"))
}

fn table(g: &FakeGuest) -> [VhostUserMemoryRegionInfo; 1] {
    [VhostUserMemoryRegionInfo {
        guest_phys_addr: GPA_BASE,
        memory_size: g.len,
        userspace_addr: UVA_BASE,
        mmap_offset: 0,
        mmap_handle: g.file.as_raw_fd(),
    }]
}

/// A vhost-user port on a socket of this test's own, with its pool.
fn open(name: &str) -> (std::path::PathBuf, Mempool, VhostUserPort) {
    let sock = std::env::temp_dir().join(format!("fp-vu-{name}-{}.sock", std::process::id()));
    let pool = Mempool::new(name, &PoolConfig { mbufs: 1024, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let mut spec = Spec::parse_port(&format!("vhost-user:{}", sock.display())).unwrap();
    let port = VhostUserPort::from_spec(0, &mut spec, &pool).unwrap();
    (sock, pool, port)
}

/// SET_VRING_NUM, _ADDR, _BASE, _CALL, _KICK for vring `i`.
fn setup_vring(fe: &Frontend, i: usize, size: u16, a: RingAddrs, base: u16, kick: &EventFd, call: &EventFd) {
    fe.set_vring_num(i, size).unwrap();
    fe.set_vring_addr(
        i,
        &VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: a.desc,
            used_ring_addr: a.used,
            avail_ring_addr: a.avail,
            log_addr: None,
        },
    )
    .unwrap();
    fe.set_vring_base(i, base).unwrap();
    fe.set_vring_call(i, call).unwrap();
    fe.set_vring_kick(i, kick).unwrap();
}

fn vring(fe: &Frontend, i: usize, r: &FakeRing, kick: &EventFd, call: &EventFd) {
    setup_vring(fe, i, r.size, r.addrs(), 0, kick, call);
}

#[test]
fn frontend_drives_the_port_over_the_socket() {
    let (sock, pool, mut port) = open("ctl");
    let (mut rxq, mut txq) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();

    let g = FakeGuest::new(RAM);
    let mut guest_rx = FakeRing::new(&g, GPA_BASE, 64); // vring 0
    let mut guest_tx = FakeRing::new(&g, GPA_BASE + 0x8000, 64); // vring 1
    let (kick0, kick1, call0, call1) =
        (EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), EventFd::new(0).unwrap());

    let mut fe = Frontend::connect(&sock, 8).unwrap();
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    assert_eq!(offered, net::OFFERED_FEATURES);
    let feats = net::VIRTIO_F_VERSION_1
        | net::VIRTIO_NET_F_MRG_RXBUF
        | net::VHOST_USER_F_PROTOCOL_FEATURES
        | net::VIRTIO_NET_F_GUEST_CSUM
        | net::VIRTIO_NET_F_GUEST_TSO4;
    fe.set_features(feats).unwrap();
    let proto = fe.get_protocol_features().unwrap();
    assert!(proto.contains(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK));
    fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).unwrap();
    // From here on every request waits for the backend's ack (REPLY_ACK).
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe.set_mem_table(&table(&g)).unwrap();
    vring(&fe, 0, &guest_rx, &kick0, &call0);
    vring(&fe, 1, &guest_tx, &kick1, &call1);
    fe.set_vring_enable(0, true).unwrap();
    fe.set_vring_enable(1, true).unwrap();
    wait("both vrings live", || port.vring_live(0) && port.vring_live(1));
    assert!(port.connected());
    assert_eq!(port.negotiated_features(), feats);
    assert!(port.negotiated_offloads().contains(fastpath_pmd::Offloads::TX_TCP_TSO), "GUEST_TSO4 -> TX_TCP_TSO");
    let live = port.info().live.clone().expect("a vhost-user port's offloads follow its guest");
    assert_eq!(live.get(), port.negotiated_offloads(), "what the pipeline's tx-offload stage reads");

    // Refused requests get a NACK and leave the connection usable.
    assert!(fe.set_vring_num(0, 3).is_err(), "size not a power of two");
    assert!(fe.set_vring_num(7, 64).is_err(), "no such vring");
    let mut bad = table(&g);
    bad[0].memory_size = g.len * 2;
    assert!(fe.set_mem_table(&bad).is_err(), "a region larger than its file");
    assert!(port.vring_live(1), "the queues survived the refused requests");

    // Guest TX -> our rx queue.
    let hdr = [0u8; 12];
    for i in 0..5u16 {
        guest_tx.tx_one(&g, i, BUF + 0x1000 * i as u64, &hdr, &frame(80, i as u8));
    }
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 5);
    for (i, m) in b.iter().enumerate() {
        assert_eq!(m.to_vec(), frame(80, i as u8));
    }
    assert_eq!(guest_tx.take_used(&g).len(), 5);
    // ... and back into the guest's RX ring.
    for i in 0..5u16 {
        guest_rx.rx_one(&g, i, BUF + 0x80000 + 0x1000 * i as u64, 2048);
    }
    assert_eq!(txq.tx_burst(&mut ctx, &mut b), 5);
    let used = guest_rx.take_used(&g);
    assert_eq!(used.iter().map(|u| u.len).collect::<Vec<_>>(), vec![92; 5]);
    assert_eq!(g.read(BUF + 0x80000 + 12, 80), frame(80, 0));

    // A new memory table (the same RAM mapped again) while packets wait in the ring.
    for i in 5..8u16 {
        guest_tx.tx_one(&g, i, BUF + 0x1000 * i as u64, &hdr, &frame(80, i as u8));
    }
    fe.set_mem_table(&table(&g)).unwrap();
    assert_eq!(xstat(&port, "mem_tables"), 2);
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 3, "the queue goes on through the new table");
    assert_eq!(b[0].to_vec(), frame(80, 5));
    ctx.free_batch(&mut b);

    // Disabled: packets wait; enabled again: they come.
    fe.set_vring_enable(1, false).unwrap();
    guest_tx.tx_one(&g, 8, BUF + 0x8000, &hdr, &frame(80, 8));
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 0);
    fe.set_vring_enable(1, true).unwrap();
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 1);
    ctx.free_batch(&mut b);

    // Kicks are counted by the control thread.
    kick1.write(1).unwrap();
    wait("the kick to be counted", || xstat(&port, "q0_rx_guest_kicks") >= 1);

    // GET_VRING_BASE stops the ring and reports where we are.
    assert_eq!(fe.get_vring_base(1).unwrap(), 9);
    guest_tx.tx_one(&g, 9, BUF + 0x9000, &hdr, &frame(80, 9));
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 0, "a stopped ring is not polled");

    // Queue *pairs*, as QEMU and DPDK read it (this frontend then limits itself to that many
    // vrings, so it comes last).
    assert_eq!(fe.get_queue_num().unwrap(), 1);

    // The frontend goes away: the port forgets it.
    drop(fe);
    wait("the disconnect", || !port.connected());
    assert!(!port.vring_live(0) && !port.vring_live(1));
    assert_eq!(live.get(), fastpath_pmd::Offloads::NONE, "no guest, no offloads");
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 0);
    assert_eq!(xstat(&port, "connections"), 1);
    assert_eq!(port.stats().rx_packets, 9);
    assert_eq!(port.stats().tx_packets, 5);

    drop(rxq);
    drop(txq);
    drop(ctx);
    drop(port);
    assert!(!sock.exists(), "the socket is removed with the port");
    assert_eq!(pool.available(), pool.capacity());
}

fn packed_vring(fe: &Frontend, i: usize, r: &FakePackedRing, kick: &EventFd, call: &EventFd) {
    setup_vring(fe, i, r.size, r.addrs(), r.base(), kick, call);
}

#[test]
fn frontend_drives_packed_rings_over_the_socket() {
    // RING_PACKED acked: rings of 100 (not a power of two), a base with the wrap counter clear,
    // traffic both ways, and GET_VRING_BASE reporting the packed state.
    let (sock, pool, mut port) = open("ctlp");
    let (mut rxq, mut txq) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();

    let g = FakeGuest::new(RAM);
    let mut guest_rx = FakePackedRing::new(&g, GPA_BASE, 100); // vring 0
    let mut guest_tx = FakePackedRing::new(&g, GPA_BASE + 0x8000, 100); // vring 1
    guest_tx.start_at(97, false);
    let (kick0, kick1, call0, call1) =
        (EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), EventFd::new(0).unwrap());

    let mut fe = Frontend::connect(&sock, 8).unwrap();
    fe.set_owner().unwrap();
    assert!(fe.get_features().unwrap() & net::VIRTIO_F_RING_PACKED != 0, "RING_PACKED offered");
    let feats = net::VIRTIO_F_VERSION_1 | net::VIRTIO_F_RING_PACKED | net::VHOST_USER_F_PROTOCOL_FEATURES;
    fe.set_features(feats).unwrap();
    fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe.set_mem_table(&table(&g)).unwrap();
    packed_vring(&fe, 0, &guest_rx, &kick0, &call0);
    packed_vring(&fe, 1, &guest_tx, &kick1, &call1);
    // A base whose position is not below the ring size is refused (and changes nothing).
    assert!(fe.set_vring_base(1, 100).is_err(), "position 100 in a ring of 100");
    fe.set_vring_enable(0, true).unwrap();
    fe.set_vring_enable(1, true).unwrap();
    wait("both vrings live", || port.vring_live(0) && port.vring_live(1));
    assert_eq!(xstat(&port, "ring_packed"), 1);

    // Guest TX from position 97 (wrap 0) over the ring's end.
    let hdr = [0u8; 12];
    for i in 0..5u16 {
        guest_tx.tx_one(&g, i, BUF + 0x1000 * i as u64, &hdr, &frame(80, i as u8));
    }
    assert_eq!(rxq.rx_burst(&mut ctx, &mut b, 32), 5);
    for (i, m) in b.iter().enumerate() {
        assert_eq!(m.to_vec(), frame(80, i as u8));
    }
    assert_eq!(guest_tx.take_used(&g).len(), 5);
    for i in 0..5u16 {
        guest_rx.rx_one(&g, i, BUF + 0x80000 + 0x1000 * i as u64, 2048);
    }
    assert_eq!(txq.tx_burst(&mut ctx, &mut b), 5);
    assert_eq!(guest_rx.take_used(&g), (0..5).map(|i| (i, 92)).collect::<Vec<_>>());
    assert_eq!(g.read(BUF + 0x80000 + 12, 80), frame(80, 0));

    // GET_VRING_BASE: position 2 with wrap counter 1 (97 + 5 in a ring of 100), avail state in
    // bits 0-15, the (equal) used state in bits 16-31.
    let st = 2 | 0x8000;
    assert_eq!(fe.get_vring_base(1).unwrap(), st | st << 16);
    assert_eq!(guest_tx.base(), st as u16);

    drop(fe);
    wait("the disconnect", || !port.connected());
    assert_eq!(xstat(&port, "ring_packed"), 1, "what the last frontend chose stays visible");
    drop(rxq);
    drop(txq);
    drop(ctx);
    drop(port);
    assert_eq!(pool.available(), pool.capacity());
}
