//! The split-virtqueue data path against a fake guest: normal traffic both ways, offloads,
//! notifications, and a hostile guest (loops, bad indices and addresses, zero and huge lengths,
//! chains longer than the ring, lying avail indices, wrapping indices, memory-table changes while
//! traffic runs). Every test ends with every mbuf back in the pool.

use std::sync::Arc;

use fastpath_mempool::{offload, Batch, PoolCache};
use fastpath_vhost_user::net::{self, NetHdr};
use fastpath_vhost_user::queue::{DropReason, GuestError, QueueFeatures, SplitQueue, VirtQueue, VringStats};
use fastpath_vhost_user::ring::{
    Desc, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VRING_AVAIL_F_NO_INTERRUPT,
    VRING_USED_F_NO_NOTIFY,
};
use fastpath_vhost_user::shared::{Cursor, Publisher, VringConfig};
use fastpath_vhost_user::testutil::{FakeGuest, FakeRing, GPA_BASE};

mod common;
use common::{eventfd, frame, pool, read_count, Rig};

const RAM: usize = 1 << 20;
const BUF: u64 = GPA_BASE + 0x10000;

fn feats(extra: u64) -> QueueFeatures {
    QueueFeatures::from_bits(net::VIRTIO_F_VERSION_1 | extra)
}

type SRig = Rig<FakeRing>;

fn new_rig(size: u16, f: QueueFeatures) -> SRig {
    rig_at(size, f, 0)
}

fn rig_at(size: u16, f: QueueFeatures, start: u16) -> SRig {
    let g = FakeGuest::new(RAM);
    let mut r = FakeRing::new(&g, GPA_BASE, size);
    r.set_avail_idx(&g, start);
    r.set_used_idx(&g, start);
    let q = VirtQueue::Split(SplitQueue::new(r.split(&g.mem), start, f, None));
    Rig::of(g, r, q)
}

#[test]
fn guest_tx_to_mbufs() {
    let mut rig = new_rig(8, feats(0));
    let hdr = [0u8; 12];
    for i in 0..3u16 {
        rig.r.tx_one(&rig.g, i, BUF + 2048 * i as u64, &hdr, &frame(60 + i as usize, i as u8));
    }
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 3);
    for (i, m) in b.iter().enumerate() {
        assert_eq!(m.to_vec(), frame(60 + i, i as u8));
        assert_eq!((m.port(), m.queue()), (3, 1));
    }
    let used = rig.r.take_used(&rig.g);
    assert_eq!(used.iter().map(|u| (u.id, u.len)).collect::<Vec<_>>(), vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(rig.r.used_flags(&rig.g), VRING_USED_F_NO_NOTIFY, "kicks suppressed while we poll");
    assert_eq!(rig.dequeue(&mut b), 0, "nothing more");
    rig.finish(&mut b);
}

#[test]
fn guest_tx_multi_descriptor_and_large_packet_becomes_a_chain() {
    let mut rig = new_rig(8, feats(0));
    let f = frame(5000, 9);
    // header alone, then the frame in two buffers.
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x1000, &f[..3000]);
    rig.g.write(BUF + 0x3000, &f[3000..]);
    rig.r.set_desc(&rig.g, 5, Desc { addr: BUF, len: 12, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    rig.r.set_desc(&rig.g, 2, Desc { addr: BUF + 0x1000, len: 3000, flags: VIRTQ_DESC_F_NEXT, next: 7 });
    rig.r.set_desc(&rig.g, 7, Desc { addr: BUF + 0x3000, len: 2000, flags: 0, next: 0 });
    rig.r.push(&rig.g, 5);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    assert_eq!(b[0].pkt_len(), 5000);
    assert!(b[0].nb_segs() >= 3, "5000 bytes need several mbufs");
    assert_eq!(b[0].to_vec(), f);
    assert_eq!(rig.r.take_used(&rig.g)[0].id, 5);
    rig.finish(&mut b);
}

#[test]
fn guest_tso_packet_travels_as_one_chain_with_offload_flags() {
    let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_CSUM | net::VIRTIO_NET_F_HOST_TSO4));
    let mut f = frame(14 + 20 + 20 + 60000, 1);
    f[14] = 0x45;
    f[23] = 6;
    f[14 + 20 + 12] = 0x50;
    let h = NetHdr {
        flags: net::VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: net::VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    rig.r.tx_one(&rig.g, 0, BUF, &h.emit(), &f);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    let m = &b[0];
    assert_eq!(m.pkt_len(), f.len());
    assert!(m.ol_flags() & offload::TX_TCP_SEG != 0 && m.ol_flags() & offload::RX_L4_CKSUM_PARTIAL != 0);
    assert_eq!((m.tso_segsz(), m.l2_len(), m.l3_len(), m.l4_len()), (1448, 14, 20, 20));
    rig.finish(&mut b);
}

#[test]
fn mbufs_to_guest_rx_single_and_mergeable() {
    // Without MRG_RXBUF: one chain per packet.
    let mut rig = new_rig(8, feats(0));
    rig.r.rx_one(&rig.g, 0, BUF, 2048);
    rig.r.rx_one(&rig.g, 1, BUF + 2048, 2048);
    let mut b = Batch::new();
    for i in 0..3u8 {
        let mut m = rig.pool.alloc().unwrap();
        m.append(100).unwrap().copy_from_slice(&frame(100, i));
        b.push(m).unwrap();
    }
    assert_eq!(rig.enqueue(&mut b), 2, "two buffers, two packets");
    assert_eq!(b.len(), 1, "the third waits in the batch");
    let used = rig.r.take_used(&rig.g);
    assert_eq!(used.iter().map(|u| (u.id, u.len)).collect::<Vec<_>>(), vec![(0, 112), (1, 112)]);
    assert_eq!(rig.g.read(BUF + 12, 100), frame(100, 0));
    assert_eq!(rig.g.read(BUF, 12), vec![0u8; 12]);
    rig.finish(&mut b);

    // With MRG_RXBUF: a 200-byte packet over 64-byte buffers.
    let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_MRG_RXBUF));
    for i in 0..6u16 {
        rig.r.rx_one(&rig.g, i, BUF + 64 * i as u64, 64);
    }
    let mut m = rig.pool.alloc().unwrap();
    m.append(200).unwrap().copy_from_slice(&frame(200, 5));
    let mut b = Batch::new();
    b.push(m).unwrap();
    assert_eq!(rig.enqueue(&mut b), 1);
    let used = rig.r.take_used(&rig.g);
    assert_eq!(used.iter().map(|u| u.len).collect::<Vec<_>>(), vec![64, 64, 64, 20]);
    let hdr = NetHdr::parse(rig.g.read(BUF, 12).as_slice().try_into().unwrap());
    assert_eq!(hdr.num_buffers, 4);
    let mut got = rig.g.read(BUF + 12, 52);
    got.extend(rig.g.read(BUF + 64, 148));
    assert_eq!(got, frame(200, 5));
    // Not enough buffers left for another 200 bytes (2 x 64): nothing is consumed.
    let mut m = rig.pool.alloc().unwrap();
    m.append(200).unwrap().copy_from_slice(&frame(200, 6));
    b.push(m).unwrap();
    assert_eq!(rig.enqueue(&mut b), 0);
    assert_eq!(rig.r.used_idx(&rig.g), 4);
    assert_eq!(rig.q.last_avail(), 4, "the partial packet was rolled back");
    rig.finish(&mut b);
}

#[test]
fn non_mergeable_chain_too_small_drops_the_packet_not_the_queue() {
    let mut rig = new_rig(8, feats(0));
    rig.r.rx_one(&rig.g, 0, BUF, 64);
    let mut b = Batch::new();
    let mut m = rig.pool.alloc().unwrap();
    m.append(100).unwrap().copy_from_slice(&frame(100, 0));
    b.push(m).unwrap();
    let mut m = rig.pool.alloc().unwrap();
    m.append(40).unwrap().copy_from_slice(&frame(40, 1));
    b.push(m).unwrap();
    assert_eq!(rig.enqueue(&mut b), 1, "the small one fits");
    assert_eq!(rig.drops(DropReason::BufTooSmall), 1);
    assert!(rig.q.broken().is_none());
    assert_eq!(rig.g.read(BUF + 12, 40), frame(40, 1));
    rig.finish(&mut b);
}

#[test]
fn gso_to_a_guest_without_tso_is_dropped_and_counted() {
    let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_GUEST_CSUM));
    rig.r.rx_one(&rig.g, 0, BUF, 2048);
    let mut m = rig.pool.alloc().unwrap();
    m.append(100).unwrap().copy_from_slice(&frame(100, 0));
    m.set_ol_flags(offload::TX_TCP_SEG | offload::TX_IPV4);
    m.set_tso_segsz(1000);
    let mut b = Batch::new();
    b.push(m).unwrap();
    assert_eq!(rig.enqueue(&mut b), 0);
    assert!(b.is_empty());
    assert_eq!(rig.drops(DropReason::GsoNotNegotiated), 1);
    rig.finish(&mut b);
}

#[test]
fn indirect_descriptors() {
    let mut rig = new_rig(8, feats(net::VIRTIO_RING_F_INDIRECT_DESC));
    let table = BUF + 0x8000;
    let f = frame(300, 3);
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x100, &f);
    let d0 = Desc { addr: BUF, len: 12, flags: VIRTQ_DESC_F_NEXT, next: 1 };
    let d1 = Desc { addr: BUF + 0x100, len: 300, flags: 0, next: 0 };
    write_table(&rig.g, table, &[d0, d1]);
    rig.r.set_desc(&rig.g, 0, Desc { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    rig.r.push(&rig.g, 0);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    assert_eq!(b[0].to_vec(), f);
    rig.finish(&mut b);
}

fn write_table(g: &FakeGuest, at: u64, ds: &[Desc]) {
    for (i, d) in ds.iter().enumerate() {
        let mut x = [0u8; 16];
        x[0..8].copy_from_slice(&d.addr.to_le_bytes());
        x[8..12].copy_from_slice(&d.len.to_le_bytes());
        x[12..14].copy_from_slice(&d.flags.to_le_bytes());
        x[14..16].copy_from_slice(&d.next.to_le_bytes());
        g.write(at + 16 * i as u64, &x);
    }
}

/// Sets up a chain the test's way, runs a dequeue, and checks that the queue broke with `want`
/// (after finishing the good packet queued before it), that later bursts do nothing, and that no
/// mbuf is lost.
fn expect_broken(f: QueueFeatures, want: GuestError, setup: impl FnOnce(&FakeGuest, &mut FakeRing)) {
    let mut rig = new_rig(8, f);
    rig.r.tx_one(&rig.g, 6, BUF + 0x4000, &[0u8; 12], &frame(64, 1));
    setup(&rig.g, &mut rig.r);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1, "the good packet before the bad chain is delivered");
    assert_eq!(rig.q.broken(), Some(want));
    assert_eq!(rig.err(want), 1);
    assert_eq!(rig.r.used_idx(&rig.g), 1, "only the good chain is returned");
    rig.r.tx_one(&rig.g, 3, BUF + 0x6000, &[0u8; 12], &frame(64, 2));
    assert_eq!(rig.dequeue(&mut b), 0, "a broken queue does nothing more");
    assert_eq!(rig.err(want), 1, "counted once");
    rig.finish(&mut b);
}

#[test]
fn descriptor_loop_breaks_the_queue() {
    expect_broken(feats(0), GuestError::ChainTooLong, |g, r| {
        r.set_desc(g, 0, Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 1 });
        r.set_desc(g, 1, Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 });
        r.push(g, 0);
    });
    // A descriptor pointing at itself.
    expect_broken(feats(0), GuestError::ChainTooLong, |g, r| {
        r.set_desc(g, 2, Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 2 });
        r.push(g, 2);
    });
}

#[test]
fn out_of_range_indices_break_the_queue() {
    expect_broken(feats(0), GuestError::DescIndex, |g, r| r.push(g, 8));
    expect_broken(feats(0), GuestError::DescIndex, |g, r| r.push(g, u16::MAX));
    expect_broken(feats(0), GuestError::DescIndex, |g, r| {
        r.set_desc(g, 0, Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 9 });
        r.push(g, 0);
    });
}

#[test]
fn out_of_range_addresses_and_huge_lengths_break_the_queue() {
    let end = GPA_BASE + RAM as u64;
    for (addr, len) in [(0u64, 64u32), (end, 64), (end - 32, 64), (u64::MAX - 8, 64), (BUF, u32::MAX)] {
        expect_broken(feats(0), GuestError::DescAddr, |g, r| {
            r.set_desc(g, 0, Desc { addr, len, flags: 0, next: 0 });
            r.push(g, 0);
        });
    }
}

#[test]
fn wrong_direction_breaks_the_queue() {
    expect_broken(feats(0), GuestError::Direction, |g, r| {
        r.set_desc(g, 0, Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_WRITE, next: 0 });
        r.push(g, 0);
    });
}

#[test]
fn indirect_misuse_breaks_the_queue() {
    let table = BUF + 0x8000;
    // Not negotiated.
    expect_broken(feats(0), GuestError::Indirect, |g, r| {
        r.set_desc(g, 0, Desc { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        r.push(g, 0);
    });
    let ind = feats(net::VIRTIO_RING_F_INDIRECT_DESC);
    // Length not a multiple of 16, zero, with NEXT, outside memory.
    for (len, flags, addr) in [
        (20u32, VIRTQ_DESC_F_INDIRECT, table),
        (0, VIRTQ_DESC_F_INDIRECT, table),
        (32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, table),
        (32, VIRTQ_DESC_F_INDIRECT, GPA_BASE + RAM as u64 - 16),
    ] {
        expect_broken(ind, GuestError::Indirect, |g, r| {
            r.set_desc(g, 0, Desc { addr, len, flags, next: 1 });
            r.push(g, 0);
        });
    }
    // Nested table.
    expect_broken(ind, GuestError::Indirect, |g, r| {
        write_table(g, table, &[Desc { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]);
        r.set_desc(g, 0, Desc { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        r.push(g, 0);
    });
    // A loop inside the table, and a next index past its end.
    expect_broken(ind, GuestError::ChainTooLong, |g, r| {
        let d = Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 };
        write_table(g, table, &[d, Desc { next: 0, ..d }]);
        r.set_desc(g, 0, Desc { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        r.push(g, 0);
    });
    expect_broken(ind, GuestError::DescIndex, |g, r| {
        write_table(g, table, &[Desc { addr: BUF, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 5 }]);
        r.set_desc(g, 0, Desc { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        r.push(g, 0);
    });
    // An indirect descriptor in the middle of a chain.
    expect_broken(ind, GuestError::Indirect, |g, r| {
        r.set_desc(g, 0, Desc { addr: BUF, len: 12, flags: VIRTQ_DESC_F_NEXT, next: 1 });
        r.set_desc(g, 1, Desc { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        r.push(g, 0);
    });
}

#[test]
fn chain_as_long_as_the_ring_is_fine_longer_is_not() {
    // 8 descriptors in a ring of 8: legal.
    let mut rig = new_rig(8, feats(0));
    let f = frame(8 * 100 - 12, 4);
    let mut all = vec![0u8; 12];
    all.extend_from_slice(&f);
    rig.g.write(BUF, &all);
    for i in 0..8u16 {
        let flags = if i < 7 { VIRTQ_DESC_F_NEXT } else { 0 };
        rig.r.set_desc(&rig.g, i, Desc { addr: BUF + 100 * i as u64, len: 100, flags, next: i + 1 });
    }
    rig.r.push(&rig.g, 0);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    assert_eq!(b[0].to_vec(), f);
    rig.finish(&mut b);
    // The same chain closed into a ring: longer than the ring.
    let mut rig = new_rig(8, feats(0));
    for i in 0..8u16 {
        rig.r.set_desc(&rig.g, i, Desc { addr: BUF, len: 8, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % 8 });
    }
    rig.r.push(&rig.g, 0);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 0);
    assert_eq!(rig.q.broken(), Some(GuestError::ChainTooLong));
    rig.finish(&mut b);
}

#[test]
fn lying_avail_index_breaks_the_queue() {
    let mut rig = new_rig(8, feats(0));
    rig.r.set_avail_idx(&rig.g, 9);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 0);
    assert_eq!(rig.q.broken(), Some(GuestError::AvailIdx));
    rig.finish(&mut b);
}

#[test]
fn zero_and_oversize_lengths_drop_the_packet_only() {
    let mut rig = new_rig(8, feats(0));
    // A zero-length buffer in the middle of a chain is fine.
    let f = frame(64, 8);
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x100, &f);
    rig.r.set_desc(&rig.g, 0, Desc { addr: BUF, len: 12, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    rig.r.set_desc(&rig.g, 1, Desc { addr: BUF + 0x80, len: 0, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    rig.r.set_desc(&rig.g, 2, Desc { addr: BUF + 0x100, len: 64, flags: 0, next: 0 });
    rig.r.push(&rig.g, 0);
    // A packet of zero bytes.
    rig.r.set_desc(&rig.g, 3, Desc { addr: BUF, len: 0, flags: 0, next: 0 });
    rig.r.push(&rig.g, 3);
    // A packet larger than 64 KiB (but inside guest memory).
    rig.r.set_desc(&rig.g, 4, Desc { addr: BUF, len: 70_000, flags: 0, next: 0 });
    rig.r.push(&rig.g, 4);
    // And a good one after them.
    rig.r.tx_one(&rig.g, 5, BUF + 0x4000, &[0u8; 12], &frame(70, 2));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 2);
    assert_eq!(b[0].to_vec(), f);
    assert_eq!(b[1].to_vec(), frame(70, 2));
    assert_eq!(rig.drops(DropReason::Runt), 1);
    assert_eq!(rig.drops(DropReason::Oversize), 1);
    assert!(rig.q.broken().is_none());
    assert_eq!(rig.r.take_used(&rig.g).len(), 4, "dropped chains go back to the guest too");
    rig.finish(&mut b);
}

#[test]
fn bad_virtio_header_drops_the_packet_only() {
    let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_CSUM));
    let h = NetHdr { gso_type: 77, ..Default::default() };
    rig.r.tx_one(&rig.g, 0, BUF, &h.emit(), &frame(64, 0));
    let h =
        NetHdr { flags: net::VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: 60000, csum_offset: 16, ..Default::default() };
    rig.r.tx_one(&rig.g, 1, BUF + 0x1000, &h.emit(), &frame(64, 0));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 0);
    assert_eq!(rig.drops(DropReason::BadHeader), 2);
    assert!(rig.q.broken().is_none());
    rig.finish(&mut b);
}

#[test]
fn indices_wrap_around_u16_max() {
    let start = u16::MAX - 5;
    let mut rig = rig_at(8, feats(0), start);
    let mut rx = rig_at(8, feats(net::VIRTIO_NET_F_MRG_RXBUF), start);
    let mut b = Batch::new();
    let mut seen = 0usize;
    for round in 0..6u16 {
        for i in 0..5u16 {
            let d = (round * 5 + i) % 8;
            rig.r.tx_one(&rig.g, d, BUF + 0x1000 * d as u64, &[0u8; 12], &frame(64, (round * 5 + i) as u8));
            rx.r.rx_one(&rx.g, d, BUF + 0x1000 * d as u64, 2048);
        }
        assert_eq!(rig.dequeue(&mut b), 5);
        assert_eq!(rig.r.take_used(&rig.g).len(), 5);
        for (k, m) in b.iter().enumerate() {
            assert_eq!(m.to_vec(), frame(64, (seen + k) as u8));
        }
        seen += 5;
        // Through a guest RX ring wrapping the same way.
        let before = rx.r.used_seen;
        assert_eq!(rx.enqueue(&mut b), 5);
        assert!(b.is_empty());
        let used = rx.r.take_used(&rx.g);
        assert_eq!(used.len(), 5);
        assert_eq!(rx.r.used_seen, before.wrapping_add(5));
    }
    assert_eq!(rig.q.last_avail(), start.wrapping_add(30));
    assert!(rig.q.broken().is_none() && rx.q.broken().is_none());
    rig.finish(&mut b);
    rx.finish(&mut Batch::new());
}

#[test]
fn calls_are_at_most_one_per_burst_and_only_when_asked() {
    let efd = eventfd();
    use std::os::fd::AsRawFd;
    for event_idx in [false, true] {
        let extra = if event_idx { net::VIRTIO_RING_F_EVENT_IDX } else { 0 };
        let g = FakeGuest::new(RAM);
        let mut r = FakeRing::new(&g, GPA_BASE, 16);
        let mut q = SplitQueue::new(r.split(&g.mem), 0, feats(extra), Some(efd.as_raw_fd()));
        let (pool, st) = (pool(), VringStats::default());
        let mut cache = pool.cache();
        let mut b = Batch::new();
        for i in 0..4u16 {
            r.tx_one(&g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, 0));
        }
        if event_idx {
            r.set_used_event(&g, 1); // wants a call once used passes 1
        }
        assert_eq!(q.dequeue_burst(&g.mem, &mut cache, &mut b, 32, (0, 0), &st).0, 4);
        assert_eq!(read_count(&efd), 1, "one call for a burst of 4");
        assert_eq!(st.calls.get(), 1);
        // The guest does not want calls now.
        if event_idx {
            r.set_used_event(&g, 100);
        } else {
            r.set_avail_flags(&g, VRING_AVAIL_F_NO_INTERRUPT);
        }
        for i in 4..8u16 {
            r.tx_one(&g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, 0));
        }
        assert_eq!(q.dequeue_burst(&g.mem, &mut cache, &mut b, 32, (0, 0), &st).0, 4);
        assert_eq!(read_count(&efd), 0, "no call when suppressed");
        cache.free_batch(&mut b);
        drop(cache);
        assert_eq!(pool.available(), pool.capacity());
    }
}

#[test]
fn a_broken_queue_does_not_stop_the_others() {
    let g = FakeGuest::new(RAM);
    let mut bad = FakeRing::new(&g, GPA_BASE, 8);
    let mut good = FakeRing::new(&g, GPA_BASE + 0x8000, 8);
    let (pool, st_bad, st_good) = (pool(), VringStats::default(), VringStats::default());
    let mut cache = pool.cache();
    let mut qb = SplitQueue::new(bad.split(&g.mem), 0, feats(0), None);
    let mut qg = SplitQueue::new(good.split(&g.mem), 0, feats(0), None);
    bad.push(&g, 42);
    let mut b = Batch::new();
    for round in 0..3u16 {
        good.tx_one(&g, round, BUF + 0x1000 * round as u64, &[0u8; 12], &frame(64, 0));
        assert_eq!(qb.dequeue_burst(&g.mem, &mut cache, &mut b, 32, (0, 0), &st_bad).0, 0);
        assert_eq!(qg.dequeue_burst(&g.mem, &mut cache, &mut b, 32, (0, 1), &st_good).0, 1);
    }
    assert_eq!(qb.broken(), Some(GuestError::DescIndex));
    assert!(qg.broken().is_none());
    cache.free_batch(&mut b);
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
}

fn push_tx(g: &FakeGuest, r: &mut FakeRing, sent: &mut u8, n: u8) {
    for _ in 0..n {
        let d = (*sent % 16) as u16;
        r.tx_one(g, d, BUF + 0x1000 * d as u64, &[0u8; 12], &frame(64, *sent));
        *sent = sent.wrapping_add(1);
    }
}

fn poll_cursor(cursor: &mut Cursor, b: &mut Batch, cache: &mut PoolCache, got: &mut Vec<Vec<u8>>) -> usize {
    let (q, mem, st) = cursor.live().expect("live");
    let k = q.dequeue_burst(mem, cache, b, 32, (0, 0), st).0;
    cursor.progress();
    got.extend(b.iter().map(|m| m.to_vec()));
    cache.free_batch(b);
    k
}

#[test]
fn memory_table_change_during_traffic() {
    let g = FakeGuest::new(RAM);
    let mut r = FakeRing::new(&g, GPA_BASE, 16);
    let addrs = r.addrs();
    let (pool, mut b) = (pool(), Batch::new());
    let mut cache = pool.cache();
    let mut publisher = Publisher::new("test:q0".into());
    let cfg = |mem: &Arc<fastpath_vhost_user::mem::GuestMemory>, live: bool| VringConfig {
        mem: mem.clone(),
        ring: live.then(|| {
            fastpath_vhost_user::ring::Ring::Split(fastpath_vhost_user::ring::SplitRing::new(mem, addrs, 16).unwrap())
        }),
        base: 0,
        start_gen: 1,
        feat: feats(0),
        call: None,
    };
    let mem1 = g.map_table();
    publisher.publish(cfg(&mem1, true));
    let mut cursor = Cursor::new(publisher.shared().clone());
    let (mut sent, mut got) = (0u8, Vec::new());
    push_tx(&g, &mut r, &mut sent, 5);
    assert_eq!(poll_cursor(&mut cursor, &mut b, &mut cache, &mut got), 5);
    // New table (a new mapping of the same RAM) while packets are waiting in the ring.
    push_tx(&g, &mut r, &mut sent, 3);
    let mem2 = g.map_table();
    publisher.publish(cfg(&mem2, true));
    assert_eq!(publisher.retired(), 1, "the old snapshot waits for the lcore");
    assert!(Arc::strong_count(&mem1) > 1, "the old table is still mapped");
    push_tx(&g, &mut r, &mut sent, 4);
    assert_eq!(poll_cursor(&mut cursor, &mut b, &mut cache, &mut got), 7, "goes on where it was, via the new table");
    assert!(publisher.wait_ack(std::time::Duration::from_secs(1)));
    assert_eq!(publisher.retired(), 0);
    assert_eq!(Arc::strong_count(&mem1), 1, "the old table is released once acknowledged");
    assert_eq!(got.len(), 12);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(*p, frame(64, i as u8), "nothing lost or repeated across the swap");
    }
    // Stop (GET_VRING_BASE): the lcore reports where it stopped.
    publisher.publish(cfg(&mem2, false));
    assert!(cursor.live().is_none());
    assert!(publisher.wait_ack(std::time::Duration::from_secs(1)));
    assert_eq!(publisher.last_avail(), 12);
    drop(cursor);
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn a_full_call_eventfd_is_counted_and_skipped_not_waited_on() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    // The frontend filled its (non-blocking) call eventfd: the burst still completes, and the
    // call that does not fit is counted as skipped.
    let efd = eventfd();
    (&efd).write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
    let g = FakeGuest::new(RAM);
    let mut r = FakeRing::new(&g, GPA_BASE, 16);
    let mut q = SplitQueue::new(r.split(&g.mem), 0, feats(0), Some(efd.as_raw_fd()));
    let (pool, st) = (pool(), VringStats::default());
    let mut cache = pool.cache();
    let mut b = Batch::new();
    for round in 0..3u16 {
        for i in 0..4u16 {
            let d = 4 * round + i;
            r.tx_one(&g, d, BUF + 0x1000 * d as u64, &[0u8; 12], &frame(64, 0));
        }
        assert_eq!(q.dequeue_burst(&g.mem, &mut cache, &mut b, 32, (0, 0), &st).0, 4);
    }
    assert_eq!((st.calls.get(), st.calls_skipped.get()), (0, 3), "one skipped call per burst");
    assert_eq!(r.take_used(&g).len(), 12, "every packet taken");
    cache.free_batch(&mut b);
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
}
