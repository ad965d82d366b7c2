//! The packed-virtqueue data path (RING_PACKED) against a fake guest driver: traffic both ways,
//! chains, a TSO packet as one chain, mergeable and non-mergeable receive, rollback, indirect
//! tables, calls as the driver's event suppression asks, wrap counters flipping many times on a
//! ring whose size is not a power of two, the lcore hand-over with a packed base, and a hostile
//! guest (bad ids, chains longer than the ring or not available, addresses outside memory, huge
//! lengths, wrong directions, every indirect misuse). Every test ends with every mbuf back in
//! the pool.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use fastpath_mempool::{offload, Batch, PoolCache};
use fastpath_vhost_user::net::{self, NetHdr};
use fastpath_vhost_user::packed::{
    state, PackedDesc, PackedQueue, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
    VIRTQ_DESC_F_AVAIL,
};
use fastpath_vhost_user::queue::{DropReason, GuestError, QueueFeatures, VirtQueue};
use fastpath_vhost_user::ring::{Ring, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use fastpath_vhost_user::shared::{Cursor, Publisher, VringConfig};
use fastpath_vhost_user::testutil::{Buf, FakeGuest, FakePackedRing, GPA_BASE};

mod common;
use common::{eventfd, frame, pool, read_count, Rig};

const RAM: usize = 1 << 20;
const BUF: u64 = GPA_BASE + 0x10000;

fn feats(extra: u64) -> QueueFeatures {
    QueueFeatures::from_bits(net::VIRTIO_F_VERSION_1 | net::VIRTIO_F_RING_PACKED | extra)
}

fn rd(addr: u64, len: u32) -> Buf {
    Buf { addr, len, write: false }
}

fn wr(addr: u64, len: u32) -> Buf {
    Buf { addr, len, write: true }
}

type PRig = Rig<FakePackedRing>;

fn new_rig(size: u16, f: QueueFeatures) -> PRig {
    rig_at(size, f, 0, true, None)
}

fn rig_at(size: u16, f: QueueFeatures, pos: u16, wrap: bool, call: Option<i32>) -> PRig {
    let g = FakeGuest::new(RAM);
    let mut r = FakePackedRing::new(&g, GPA_BASE, size);
    r.start_at(pos, wrap);
    let q = VirtQueue::Packed(PackedQueue::new(r.packed(&g.mem), r.base(), f, call));
    Rig::of(g, r, q)
}

#[test]
fn packed_guest_tx_to_mbufs() {
    let mut rig = new_rig(8, feats(0));
    let hdr = [0u8; 12];
    for (k, id) in [5u16, 2, 7].into_iter().enumerate() {
        rig.r.tx_one(&rig.g, id, BUF + 2048 * k as u64, &hdr, &frame(60 + k, k as u8));
    }
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 3);
    for (i, m) in b.iter().enumerate() {
        assert_eq!(m.to_vec(), frame(60 + i, i as u8));
        assert_eq!((m.port(), m.queue()), (3, 1));
    }
    assert_eq!(rig.r.take_used(&rig.g), vec![(5, 0), (2, 0), (7, 0)], "one used descriptor per chain, in order");
    assert_eq!(rig.r.device_event_flags(&rig.g), RING_EVENT_FLAGS_DISABLE, "kicks suppressed while we poll");
    assert_eq!(rig.dequeue(&mut b), 0, "nothing more");
    assert_eq!(rig.q.last_avail(), state(3, true));
    rig.finish(&mut b);
}

#[test]
fn packed_guest_tx_chain_and_large_packet_becomes_a_chain() {
    let mut rig = new_rig(8, feats(0));
    let f = frame(5000, 9);
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x1000, &f[..3000]);
    rig.g.write(BUF + 0x3000, &f[3000..]);
    rig.r.post(&rig.g, 4, &[rd(BUF, 12), rd(BUF + 0x1000, 3000), rd(BUF + 0x3000, 2000)]);
    rig.r.tx_one(&rig.g, 1, BUF + 0x6000, &[0u8; 12], &frame(64, 1));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 2);
    assert_eq!(b[0].pkt_len(), 5000);
    assert!(b[0].nb_segs() >= 3, "5000 bytes need several mbufs");
    assert_eq!(b[0].to_vec(), f);
    assert_eq!(b[1].to_vec(), frame(64, 1));
    // The chain's used descriptor sits at its head and the used position skips its 3 slots.
    assert_eq!(rig.r.take_used(&rig.g), vec![(4, 0), (1, 0)]);
    assert_eq!(rig.q.last_used(), state(4, true));
    rig.finish(&mut b);
}

#[test]
fn packed_guest_tso_packet_travels_as_one_chain_with_offload_flags() {
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
    // Header and the 60 KiB frame in two descriptors.
    rig.g.write(BUF, &h.emit());
    rig.g.write(BUF + 0x100, &f);
    rig.r.post(&rig.g, 0, &[rd(BUF, 12), rd(BUF + 0x100, f.len() as u32)]);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    let m = &b[0];
    assert_eq!(m.pkt_len(), f.len());
    // The same bytes, but for the TCP checksum field (the pseudo-header sum loses the length).
    let got = m.to_vec();
    assert!(got[..50] == f[..50] && got[52..] == f[52..], "the frame arrives whole");
    assert!(m.ol_flags() & offload::TX_TCP_SEG != 0 && m.ol_flags() & offload::RX_L4_CKSUM_PARTIAL != 0);
    assert_eq!((m.tso_segsz(), m.l2_len(), m.l3_len(), m.l4_len()), (1448, 14, 20, 20));
    rig.finish(&mut b);
}

#[test]
fn packed_mbufs_to_guest_rx_single_and_mergeable_with_rollback() {
    // Without MRG_RXBUF: one chain per packet.
    let mut rig = new_rig(8, feats(0));
    rig.r.rx_one(&rig.g, 3, BUF, 2048);
    rig.r.rx_one(&rig.g, 6, BUF + 2048, 2048);
    let mut b = Batch::new();
    for i in 0..3u8 {
        rig.push_pkt(&mut b, &frame(100, i));
    }
    assert_eq!(rig.enqueue(&mut b), 2, "two buffers, two packets");
    assert_eq!(b.len(), 1, "the third waits in the batch");
    assert_eq!(rig.r.take_used(&rig.g), vec![(3, 112), (6, 112)]);
    assert_eq!(rig.g.read(BUF + 12, 100), frame(100, 0));
    assert_eq!(rig.g.read(BUF + 2048 + 12, 100), frame(100, 1));
    assert_eq!(rig.g.read(BUF, 12), vec![0u8; 12]);
    // A receive chain of two descriptors (header buffer + data buffer) takes the third.
    rig.r.post(&rig.g, 0, &[wr(BUF + 0x4000, 12), wr(BUF + 0x5000, 1000)]);
    assert_eq!(rig.enqueue(&mut b), 1);
    assert_eq!(rig.r.take_used(&rig.g), vec![(0, 112)]);
    assert_eq!(rig.g.read(BUF + 0x5000, 100), frame(100, 2));
    rig.finish(&mut b);

    // With MRG_RXBUF: a 200-byte packet over 64-byte buffers.
    let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_MRG_RXBUF));
    for i in 0..6u16 {
        rig.r.rx_one(&rig.g, i, BUF + 64 * i as u64, 64);
    }
    let mut b = Batch::new();
    rig.push_pkt(&mut b, &frame(200, 5));
    assert_eq!(rig.enqueue(&mut b), 1);
    let used = rig.r.take_used(&rig.g);
    assert_eq!(used, vec![(0, 64), (1, 64), (2, 64), (3, 20)]);
    let hdr = NetHdr::parse(rig.g.read(BUF, 12).as_slice().try_into().unwrap());
    assert_eq!(hdr.num_buffers, 4);
    let mut got = rig.g.read(BUF + 12, 52);
    got.extend(rig.g.read(BUF + 64, 148));
    assert_eq!(got, frame(200, 5));
    // Not enough buffers left for another 200 bytes (2 x 64): nothing is consumed, nothing
    // reaches the ring.
    rig.push_pkt(&mut b, &frame(200, 6));
    assert_eq!(rig.enqueue(&mut b), 0);
    assert_eq!(b.len(), 1, "the packet waits");
    assert!(rig.r.take_used(&rig.g).is_empty());
    assert_eq!(rig.q.last_avail(), state(4, true), "the partial packet was rolled back");
    // Two more buffers: now it fits, in 4 buffers again.
    for i in 6..8u16 {
        rig.r.rx_one(&rig.g, i, BUF + 64 * i as u64, 64);
    }
    assert_eq!(rig.enqueue(&mut b), 1);
    assert_eq!(rig.r.take_used(&rig.g).iter().map(|u| u.0).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    rig.finish(&mut b);
}

#[test]
fn packed_non_mergeable_chain_too_small_drops_the_packet_not_the_queue() {
    let mut rig = new_rig(8, feats(0));
    rig.r.rx_one(&rig.g, 0, BUF, 64);
    let mut b = Batch::new();
    rig.push_pkt(&mut b, &frame(100, 0));
    rig.push_pkt(&mut b, &frame(40, 1));
    assert_eq!(rig.enqueue(&mut b), 1, "the small one fits");
    assert_eq!(rig.drops(DropReason::BufTooSmall), 1);
    assert!(rig.q.broken().is_none());
    assert_eq!(rig.g.read(BUF + 12, 40), frame(40, 1));
    assert_eq!(rig.r.take_used(&rig.g), vec![(0, 52)]);
    rig.finish(&mut b);
}

#[test]
fn packed_indirect_descriptors_both_ways() {
    let f = feats(net::VIRTIO_RING_F_INDIRECT_DESC);
    let mut rig = new_rig(8, f);
    let table = BUF + 0x8000;
    let fr = frame(300, 3);
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x100, &fr);
    rig.r.post_indirect(&rig.g, 2, table, &[rd(BUF, 12), rd(BUF + 0x100, 300)]);
    rig.r.tx_one(&rig.g, 5, BUF + 0x2000, &[0u8; 12], &frame(64, 4));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 2);
    assert_eq!(b[0].to_vec(), fr);
    assert_eq!(b[1].to_vec(), frame(64, 4));
    // The indirect chain takes one slot of the ring.
    assert_eq!(rig.r.take_used(&rig.g), vec![(2, 0), (5, 0)]);
    assert_eq!(rig.q.last_avail(), state(2, true));
    rig.finish(&mut b);

    // Guest RX through a table of two writable buffers.
    let mut rig = new_rig(8, f);
    rig.r.post_indirect(&rig.g, 1, table, &[wr(BUF, 12), wr(BUF + 0x1000, 1500)]);
    let mut b = Batch::new();
    rig.push_pkt(&mut b, &frame(500, 8));
    assert_eq!(rig.enqueue(&mut b), 1);
    assert_eq!(rig.r.take_used(&rig.g), vec![(1, 512)]);
    assert_eq!(rig.g.read(BUF + 0x1000, 500), frame(500, 8));
    rig.finish(&mut b);
}

#[test]
fn packed_in_order_guest_tx_is_returned_in_one_used_descriptor_when_idle_or_half_a_ring() {
    // IN_ORDER: guest TX chains are held back and returned as one used descriptor carrying the
    // last buffer's id: when a poll finds nothing new, or once half a ring is held. Guest RX
    // keeps one used descriptor per chain (the driver needs each length).
    let efd = eventfd();
    let mut rig = rig_at(8, feats(net::VIRTIO_F_IN_ORDER), 0, true, Some(efd.as_raw_fd()));
    rig.r.tx_one(&rig.g, 3, BUF, &[0u8; 12], &frame(64, 0));
    rig.g.write(BUF + 0x1000, &[0u8; 12]);
    rig.g.write(BUF + 0x1100, &frame(64, 1));
    rig.r.post(&rig.g, 1, &[rd(BUF + 0x1000, 12), rd(BUF + 0x1100, 64)]);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 2);
    assert_eq!(rig.r.used_written(&rig.g, 3), 0, "3 descriptors held (less than half the ring)");
    assert_eq!(read_count(&efd), 0, "no call before anything is returned");
    assert_eq!(rig.dequeue(&mut b), 0);
    assert_eq!(rig.r.used_written(&rig.g, 3), 1, "an idle poll returns them: one used descriptor");
    assert_eq!(read_count(&efd), 1);
    assert_eq!(rig.r.take_used(&rig.g), vec![(3, 0), (1, 0)]);
    assert_eq!(rig.q.last_used(), state(3, true));
    // Half a ring (4 descriptors) in one burst: returned at once. Around the ring many times.
    for round in 0..10u16 {
        for i in 0..4u16 {
            rig.r.tx_one(&rig.g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, round as u8));
        }
        assert_eq!(rig.dequeue(&mut b), 4);
        assert_eq!(rig.r.used_written(&rig.g, 4), 1, "round {round}");
        assert_eq!(rig.r.take_used(&rig.g).len(), 4);
        rig.cache.free_batch(&mut b);
    }
    assert_eq!(read_count(&efd), 10, "one call per write-back (the eventfd sums them)");
    assert_eq!(rig.st.calls.get(), 11);
    assert_eq!(rig.q.last_avail(), rig.r.base());
    assert_eq!(rig.q.last_used(), rig.r.base());
    rig.finish(&mut b);

    // A chain that breaks the queue: what was held before it is returned at once.
    let mut rig = new_rig(8, feats(net::VIRTIO_F_IN_ORDER));
    rig.r.tx_one(&rig.g, 2, BUF, &[0u8; 12], &frame(64, 0));
    rig.r.tx_one(&rig.g, 9, BUF + 0x1000, &[0u8; 12], &frame(64, 1));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    assert_eq!(rig.q.broken(), Some(GuestError::DescIndex));
    assert_eq!(rig.r.take_used(&rig.g), vec![(2, 0)]);
    rig.finish(&mut b);

    let mut rig = new_rig(8, feats(net::VIRTIO_F_IN_ORDER));
    rig.r.rx_one(&rig.g, 0, BUF, 2048);
    rig.r.rx_one(&rig.g, 1, BUF + 2048, 2048);
    let mut b = Batch::new();
    rig.push_pkt(&mut b, &frame(100, 0));
    rig.push_pkt(&mut b, &frame(60, 1));
    assert_eq!(rig.enqueue(&mut b), 2);
    assert_eq!(rig.r.used_written(&rig.g, 2), 2, "receive keeps a used descriptor (and length) per chain");
    assert_eq!(rig.r.take_used(&rig.g), vec![(0, 112), (1, 72)]);
    rig.finish(&mut b);
}

#[test]
fn packed_in_order_held_descriptors_are_returned_before_a_stop() {
    // The lcore holds 3 guest TX descriptors; the control thread stops the ring (GET_VRING_BASE):
    // the lcore returns them before it lets the queue go, so the state it reports has nothing in
    // flight.
    let g = FakeGuest::new(RAM);
    let mut r = FakePackedRing::new(&g, GPA_BASE, 16);
    let addrs = r.addrs();
    let f = feats(net::VIRTIO_F_IN_ORDER);
    let (pool, mut b) = (pool(), Batch::new());
    let mut cache = pool.cache();
    let mut publisher = Publisher::new("test:q1".into());
    let cfg = |mem: &Arc<fastpath_vhost_user::mem::GuestMemory>, live: bool| VringConfig {
        mem: mem.clone(),
        ring: live.then(|| Ring::Packed(fastpath_vhost_user::packed::PackedRing::new(mem, addrs, 16).unwrap())),
        base: 0x8000,
        start_gen: 1,
        feat: f,
        call: None,
    };
    let mem = g.map_table();
    publisher.publish(cfg(&mem, true));
    let mut cursor = Cursor::new(publisher.shared().clone());
    for i in 0..3u16 {
        r.tx_one(&g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, i as u8));
    }
    {
        let (q, m, st) = cursor.live().expect("live");
        assert_eq!(q.dequeue_burst(m, &mut cache, &mut b, 32, (0, 0), st).0, 3);
        cursor.progress();
    }
    cache.free_batch(&mut b);
    assert!(r.take_used(&g).is_empty(), "held");
    publisher.publish(cfg(&mem, false));
    assert!(cursor.live().is_none());
    assert!(publisher.wait_ack(std::time::Duration::from_secs(1)));
    assert_eq!(r.take_used(&g), vec![(0, 0), (1, 0), (2, 0)], "returned before the stop");
    assert_eq!(publisher.last_avail(), state(3, true));
    // And when the lcore goes away holding some.
    publisher.publish(cfg(&mem, true));
    r.tx_one(&g, 5, BUF, &[0u8; 12], &frame(64, 9));
    {
        let (q, m, st) = cursor.live().expect("live");
        assert_eq!(q.dequeue_burst(m, &mut cache, &mut b, 32, (0, 0), st).0, 1);
    }
    cache.free_batch(&mut b);
    drop(cursor);
    assert_eq!(r.take_used(&g), vec![(5, 0)], "returned when the lcore lets go");
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn packed_calls_are_at_most_one_per_burst_and_follow_event_suppression() {
    let efd = eventfd();
    let burst = |rig: &mut PRig, n: u16| {
        let mut b = Batch::new();
        for _ in 0..n {
            let (pos, _) = rig.r.avail;
            rig.r.tx_one(&rig.g, pos, BUF + 0x1000 * pos as u64, &[0u8; 12], &frame(64, 0));
        }
        assert_eq!(rig.dequeue(&mut b), n as usize);
        rig.r.take_used(&rig.g);
        rig.cache.free_batch(&mut b);
    };
    // Without EVENT_IDX: ENABLE calls once per burst, DISABLE never, DESC counts as ENABLE.
    let mut rig = rig_at(16, feats(0), 0, true, Some(efd.as_raw_fd()));
    rig.r.set_driver_event(&rig.g, 0, RING_EVENT_FLAGS_ENABLE);
    burst(&mut rig, 4);
    assert_eq!(read_count(&efd), 1, "one call for a burst of 4");
    rig.r.set_driver_event(&rig.g, 0, RING_EVENT_FLAGS_DISABLE);
    burst(&mut rig, 4);
    assert_eq!(read_count(&efd), 0, "no call when disabled");
    rig.r.set_driver_event(&rig.g, 0, RING_EVENT_FLAGS_DESC);
    burst(&mut rig, 4);
    assert_eq!(read_count(&efd), 1, "DESC without EVENT_IDX is ENABLE");
    assert_eq!(rig.st.calls.get(), 2);
    rig.finish(&mut Batch::new());

    // With EVENT_IDX: DESC calls only when the burst passes off_wrap.
    let mut rig = rig_at(16, feats(net::VIRTIO_RING_F_EVENT_IDX), 0, true, Some(efd.as_raw_fd()));
    rig.r.set_driver_event(&rig.g, 10 | 0x8000, RING_EVENT_FLAGS_DESC);
    burst(&mut rig, 4); // positions 0..4
    assert_eq!(read_count(&efd), 0, "event at 10 not reached");
    burst(&mut rig, 4); // 4..8
    assert_eq!(read_count(&efd), 0);
    burst(&mut rig, 4); // 8..12: passes 10
    assert_eq!(read_count(&efd), 1, "event at 10 passed");
    // Across the wrap: 12..16 then 0..4 of wrap 0; an event at 1 of wrap 0.
    rig.r.set_driver_event(&rig.g, 1, RING_EVENT_FLAGS_DESC);
    burst(&mut rig, 4);
    assert_eq!(read_count(&efd), 0);
    burst(&mut rig, 4);
    assert_eq!(read_count(&efd), 1, "event at 1 (wrap 0) passed");
    // ENABLE with EVENT_IDX: every burst.
    rig.r.set_driver_event(&rig.g, 0, RING_EVENT_FLAGS_ENABLE);
    burst(&mut rig, 2);
    assert_eq!(read_count(&efd), 1);
    assert_eq!(rig.st.calls.get(), 3);
    rig.finish(&mut Batch::new());
}

#[test]
fn packed_wrap_counters_flip_many_times_on_a_ring_of_any_size() {
    // Size 7 (not a power of two), chains of 1 and 2 descriptors so that chains straddle the
    // ring's end, both directions, 60 rounds: the wrap counters flip dozens of times.
    let size = 7;
    let mut tx = new_rig(size, feats(0));
    let mut rx = new_rig(size, feats(net::VIRTIO_NET_F_MRG_RXBUF));
    let mut b = Batch::new();
    let (mut sent, mut flips) = (0usize, 0);
    let mut last_wrap = true;
    for round in 0..60usize {
        let two = round % 3 == 0;
        let n = if two { 2 } else { 3 };
        for i in 0..n {
            let tag = (sent + i) as u8;
            let at = BUF + 0x1000 * i as u64;
            let id = (round * 3 + i) as u16 % size;
            if two {
                tx.g.write(at, &[0u8; 12]);
                tx.g.write(at + 0x100, &frame(64, tag));
                tx.r.post(&tx.g, id, &[rd(at, 12), rd(at + 0x100, 64)]);
            } else {
                tx.r.tx_one(&tx.g, id, at, &[0u8; 12], &frame(64, tag));
            }
            rx.r.rx_one(&rx.g, id, at, 2048);
        }
        assert_eq!(tx.dequeue(&mut b), n, "round {round}");
        assert_eq!(tx.r.take_used(&tx.g).len(), n);
        for (k, m) in b.iter().enumerate() {
            assert_eq!(m.to_vec(), frame(64, (sent + k) as u8), "round {round}");
        }
        assert_eq!(rx.enqueue(&mut b), n, "round {round}");
        assert!(b.is_empty());
        let used = rx.r.take_used(&rx.g);
        assert_eq!(used.len(), n);
        for (k, u) in used.iter().enumerate() {
            assert_eq!(u.1, 76);
            assert_eq!(rx.g.read(BUF + 0x1000 * k as u64 + 12, 64), frame(64, (sent + k) as u8));
        }
        sent += n;
        assert_eq!(tx.q.last_avail(), state(tx.r.avail.0, tx.r.avail.1));
        assert_eq!(tx.q.last_used(), state(tx.r.used.0, tx.r.used.1));
        assert_eq!(rx.q.last_avail(), state(rx.r.avail.0, rx.r.avail.1));
        if tx.r.avail.1 != last_wrap {
            flips += 1;
            last_wrap = tx.r.avail.1;
        }
    }
    assert!(flips >= 20, "the wrap counter flipped {flips} times");
    assert!(tx.q.broken().is_none() && rx.q.broken().is_none());
    tx.finish(&mut b);
    rx.finish(&mut Batch::new());
}

#[test]
fn packed_queue_resumes_from_a_base_with_wrap_counter_clear() {
    // SET_VRING_BASE 5 | 0 << 15: position 5, wrap counter 0 (a ring that already wrapped once).
    let mut rig = rig_at(8, feats(0), 5, false, None);
    assert_eq!(rig.q.last_avail(), 5);
    let mut b = Batch::new();
    for i in 0..6u16 {
        rig.r.tx_one(&rig.g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, i as u8));
    }
    assert_eq!(rig.dequeue(&mut b), 6);
    assert_eq!(rig.r.take_used(&rig.g).len(), 6);
    assert_eq!(rig.q.last_avail(), state(3, true), "wrapped back to counter 1");
    // A base beyond the ring breaks the queue before it touches anything.
    let bad = rig_at(8, feats(0), 0, true, None);
    let q = PackedQueue::new(bad.r.packed(&bad.g.mem), 9 | 0x8000, feats(0), None);
    assert_eq!(q.broken(), Some(GuestError::AvailIdx));
    bad.finish(&mut Batch::new());
    rig.finish(&mut b);
}

#[test]
fn packed_zero_and_oversize_lengths_and_bad_headers_drop_the_packet_only() {
    let mut rig = new_rig(16, feats(net::VIRTIO_NET_F_CSUM));
    let f = frame(64, 8);
    rig.g.write(BUF, &[0u8; 12]);
    rig.g.write(BUF + 0x100, &f);
    // A zero-length buffer in the middle of a chain is fine.
    rig.r.post(&rig.g, 0, &[rd(BUF, 12), rd(BUF + 0x80, 0), rd(BUF + 0x100, 64)]);
    // A packet of zero bytes, one above 64 KiB, one with a bad header.
    rig.r.post(&rig.g, 1, &[rd(BUF, 0)]);
    rig.r.post(&rig.g, 2, &[rd(BUF, 70_000)]);
    let h = NetHdr { gso_type: 77, ..Default::default() };
    rig.r.tx_one(&rig.g, 3, BUF + 0x8000, &h.emit(), &frame(64, 0));
    rig.r.tx_one(&rig.g, 4, BUF + 0x4000, &[0u8; 12], &frame(70, 2));
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 2);
    assert_eq!(b[0].to_vec(), f);
    assert_eq!(b[1].to_vec(), frame(70, 2));
    assert_eq!(rig.drops(DropReason::Runt), 1);
    assert_eq!(rig.drops(DropReason::Oversize), 1);
    assert_eq!(rig.drops(DropReason::BadHeader), 1);
    assert!(rig.q.broken().is_none());
    assert_eq!(rig.r.take_used(&rig.g).len(), 5, "dropped chains go back to the guest too");
    rig.finish(&mut b);
}

/// Posts a good packet, then the test's bad chain, runs a dequeue, and checks that the queue
/// broke with `want` after finishing the good packet, that later bursts do nothing, and that no
/// mbuf is lost.
fn expect_broken(f: QueueFeatures, want: GuestError, setup: impl FnOnce(&FakeGuest, &mut FakePackedRing)) {
    let mut rig = new_rig(8, f);
    rig.r.tx_one(&rig.g, 6, BUF + 0x4000, &[0u8; 12], &frame(64, 1));
    setup(&rig.g, &mut rig.r);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1, "the good packet before the bad chain is delivered");
    assert_eq!(rig.q.broken(), Some(want));
    assert_eq!(rig.err(want), 1);
    assert_eq!(rig.r.take_used(&rig.g), vec![(6, 0)], "only the good chain is returned");
    assert_eq!(rig.dequeue(&mut b), 0, "a broken queue does nothing more");
    assert_eq!(rig.err(want), 1, "counted once");
    rig.finish(&mut b);
}

#[test]
fn packed_bad_buffer_ids_break_the_queue() {
    expect_broken(feats(0), GuestError::DescIndex, |g, r| r.tx_one(g, 8, BUF, &[0u8; 12], &frame(64, 0)));
    expect_broken(feats(0), GuestError::DescIndex, |g, r| r.tx_one(g, u16::MAX, BUF, &[0u8; 12], &frame(64, 0)));
    // In a chain the id of the last descriptor counts.
    expect_broken(feats(0), GuestError::DescIndex, |g, r| {
        r.post(g, 9, &[rd(BUF, 12), rd(BUF + 0x100, 64)]);
    });
}

#[test]
fn packed_chain_not_available_in_the_current_wrap_breaks_the_queue() {
    expect_broken(feats(0), GuestError::Wrap, |g, r| {
        let head = r.post(g, 1, &[rd(BUF, 12), rd(BUF + 0x100, 64)]);
        // The second descriptor carries the other wrap's AVAIL bit.
        let mut d = r.get_desc(g, head + 1);
        d.flags ^= VIRTQ_DESC_F_AVAIL | fastpath_vhost_user::packed::VIRTQ_DESC_F_USED;
        r.set_desc(g, head + 1, d);
    });
    // NEXT on the last descriptor the driver made available: the chain runs into nothing.
    expect_broken(feats(0), GuestError::Wrap, |g, r| {
        let head = r.post(g, 1, &[rd(BUF, 76)]);
        let mut d = r.get_desc(g, head);
        d.flags |= VIRTQ_DESC_F_NEXT;
        r.set_desc(g, head, d);
    });
}

#[test]
fn packed_chain_as_long_as_the_ring_is_fine_longer_is_not() {
    // 8 descriptors in a ring of 8: legal.
    let mut rig = new_rig(8, feats(0));
    let f = frame(8 * 100 - 12, 4);
    let mut all = vec![0u8; 12];
    all.extend_from_slice(&f);
    rig.g.write(BUF, &all);
    let bufs: Vec<Buf> = (0..8u64).map(|i| rd(BUF + 100 * i, 100)).collect();
    rig.r.post(&rig.g, 0, &bufs);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 1);
    assert_eq!(b[0].to_vec(), f);
    assert_eq!(rig.r.take_used(&rig.g), vec![(0, 0)]);
    assert_eq!(rig.q.last_avail(), state(0, false));
    rig.finish(&mut b);
    // Every descriptor of the ring with NEXT: the chain would run around the ring.
    let mut rig = new_rig(8, feats(0));
    rig.r.post(&rig.g, 0, &bufs);
    let mut d = rig.r.get_desc(&rig.g, 7);
    d.flags |= VIRTQ_DESC_F_NEXT;
    rig.r.set_desc(&rig.g, 7, d);
    let mut b = Batch::new();
    assert_eq!(rig.dequeue(&mut b), 0);
    assert_eq!(rig.q.broken(), Some(GuestError::ChainTooLong));
    assert!(rig.r.take_used(&rig.g).is_empty());
    rig.finish(&mut b);
}

#[test]
fn packed_out_of_range_addresses_and_huge_lengths_break_the_queue() {
    let end = GPA_BASE + RAM as u64;
    expect_broken(feats(0), GuestError::DescAddr, |g, r| {
        r.post(g, 1, &[rd(end - 16, 76)]);
    });
    expect_broken(feats(0), GuestError::DescAddr, |g, r| {
        r.post(g, 1, &[rd(u64::MAX - 8, 76)]);
    });
    expect_broken(feats(0), GuestError::DescAddr, |g, r| {
        r.post(g, 1, &[rd(BUF, u32::MAX)]);
    });
    expect_broken(feats(0), GuestError::DescAddr, |g, r| {
        r.post(g, 1, &[rd(BUF, 12), rd(0, 64)]);
    });
    // Guest RX into a buffer outside memory.
    let mut rig = new_rig(8, feats(0));
    rig.r.rx_one(&rig.g, 0, end - 8, 2048);
    let mut b = Batch::new();
    rig.push_pkt(&mut b, &frame(100, 0));
    assert_eq!(rig.enqueue(&mut b), 0);
    assert_eq!(rig.q.broken(), Some(GuestError::DescAddr));
    assert_eq!(b.len(), 1, "the packet stays with us");
    rig.finish(&mut b);
}

#[test]
fn packed_wrong_direction_breaks_the_queue() {
    // A device-writable buffer in a guest TX chain.
    expect_broken(feats(0), GuestError::Direction, |g, r| {
        r.post(g, 1, &[rd(BUF, 12), wr(BUF + 0x100, 64)]);
    });
    // A read-only buffer in a guest RX chain (through the chain walk and the fast path).
    for bufs in [vec![rd(BUF, 2048)], vec![wr(BUF, 12), rd(BUF + 0x100, 2048)]] {
        let mut rig = new_rig(8, feats(net::VIRTIO_NET_F_MRG_RXBUF));
        rig.r.post(&rig.g, 0, &bufs);
        let mut b = Batch::new();
        rig.push_pkt(&mut b, &frame(100, 0));
        assert_eq!(rig.enqueue(&mut b), 0);
        assert_eq!(rig.q.broken(), Some(GuestError::Direction));
        assert!(rig.r.take_used(&rig.g).is_empty());
        rig.finish(&mut b);
    }
}

#[test]
fn packed_indirect_misuse_breaks_the_queue() {
    let table = BUF + 0x8000;
    let raw = |g: &FakeGuest, r: &mut FakePackedRing, addr: u64, len: u32, flags: u16| {
        let head = r.post(g, 1, &[rd(addr, len)]);
        let mut d = r.get_desc(g, head);
        d.flags |= flags;
        r.set_desc(g, head, d);
    };
    // Not negotiated.
    expect_broken(feats(0), GuestError::Indirect, |g, r| {
        r.post_indirect(g, 1, table, &[rd(BUF, 76)]);
    });
    let ind = feats(net::VIRTIO_RING_F_INDIRECT_DESC);
    // Length not a multiple of 16, zero, outside memory.
    for (len, addr) in [(20u32, table), (0, table), (32, GPA_BASE + RAM as u64 - 16)] {
        expect_broken(ind, GuestError::Indirect, |g, r| raw(g, r, addr, len, VIRTQ_DESC_F_INDIRECT));
    }
    // INDIRECT together with NEXT.
    expect_broken(ind, GuestError::Indirect, |g, r| {
        let head = r.post(g, 1, &[rd(table, 16), rd(BUF, 64)]);
        let mut d = r.get_desc(g, head);
        d.flags |= VIRTQ_DESC_F_INDIRECT;
        r.set_desc(g, head, d);
    });
    // A nested table.
    expect_broken(ind, GuestError::Indirect, |g, r| {
        r.post_indirect(g, 1, table, &[rd(BUF, 76)]);
        // Entry 0's flags (bytes 14..16) say INDIRECT.
        g.write(table + 14, &VIRTQ_DESC_F_INDIRECT.to_le_bytes());
    });
    // A table longer than the ring.
    expect_broken(ind, GuestError::ChainTooLong, |g, r| {
        let entries: Vec<Buf> = (0..9).map(|_| rd(BUF, 10)).collect();
        r.post_indirect(g, 1, table, &entries);
    });
    // An indirect descriptor in the middle of a chain.
    expect_broken(ind, GuestError::Indirect, |g, r| {
        let head = r.post(g, 1, &[rd(BUF, 12), rd(table, 16)]);
        let mut d = r.get_desc(g, head + 1);
        d.flags |= VIRTQ_DESC_F_INDIRECT;
        r.set_desc(g, head + 1, d);
    });
    // A bad buffer id on the indirect descriptor.
    expect_broken(ind, GuestError::DescIndex, |g, r| {
        r.post_indirect(g, 8, table, &[rd(BUF, 76)]);
    });
}

#[test]
fn packed_broken_queue_does_not_stop_the_others() {
    let mut bad = new_rig(8, feats(0));
    let mut good = new_rig(8, feats(0));
    bad.r.post(&bad.g, 42, &[rd(BUF, 76)]);
    let mut b = Batch::new();
    for round in 0..20u16 {
        good.r.tx_one(&good.g, round % 8, BUF + 0x1000 * (round % 8) as u64, &[0u8; 12], &frame(64, 0));
        assert_eq!(bad.dequeue(&mut b), 0);
        assert_eq!(good.dequeue(&mut b), 1);
        assert_eq!(good.r.take_used(&good.g).len(), 1);
        good.cache.free_batch(&mut b);
    }
    assert_eq!(bad.q.broken(), Some(GuestError::DescIndex));
    assert!(good.q.broken().is_none());
    bad.finish(&mut Batch::new());
    good.finish(&mut b);
}

#[test]
fn packed_ring_through_the_lcore_hand_over_reports_its_state() {
    // The control thread publishes a packed ring with a base of position 3, wrap 0; the lcore's
    // queue goes on from there, survives a memory-table change, and a stop reports the state
    // GET_VRING_BASE returns (position | wrap << 15).
    let g = FakeGuest::new(RAM);
    let mut r = FakePackedRing::new(&g, GPA_BASE, 6);
    r.start_at(3, false);
    let addrs = r.addrs();
    let (pool, mut b) = (pool(), Batch::new());
    let mut cache = pool.cache();
    let mut publisher = Publisher::new("test:q0".into());
    let base = r.base();
    let cfg = |mem: &Arc<fastpath_vhost_user::mem::GuestMemory>, live: bool| VringConfig {
        mem: mem.clone(),
        ring: live.then(|| Ring::Packed(fastpath_vhost_user::packed::PackedRing::new(mem, addrs, 6).unwrap())),
        base,
        start_gen: 1,
        feat: feats(0),
        call: None,
    };
    let mem1 = g.map_table();
    publisher.publish(cfg(&mem1, true));
    let mut cursor = Cursor::new(publisher.shared().clone());
    let mut got = Vec::new();
    let mut poll = |cursor: &mut Cursor, b: &mut Batch, cache: &mut PoolCache| {
        let (q, mem, st) = cursor.live().expect("live");
        let k = q.dequeue_burst(mem, cache, b, 32, (0, 0), st).0;
        cursor.progress();
        got.extend(b.iter().map(|m| m.to_vec()));
        cache.free_batch(b);
        k
    };
    for i in 0..4u16 {
        r.tx_one(&g, i, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, i as u8));
    }
    assert_eq!(poll(&mut cursor, &mut b, &mut cache), 4);
    assert_eq!(r.take_used(&g).len(), 4);
    for i in 4..9u16 {
        r.tx_one(&g, i % 6, BUF + 0x1000 * i as u64, &[0u8; 12], &frame(64, i as u8));
    }
    let mem2 = g.map_table();
    publisher.publish(cfg(&mem2, true));
    assert_eq!(poll(&mut cursor, &mut b, &mut cache), 5, "goes on where it was, via the new table");
    assert_eq!(r.take_used(&g).len(), 5);
    assert_eq!(got.len(), 9);
    for (i, p) in got.iter().enumerate() {
        assert!(*p == frame(64, i as u8), "packet {i}: nothing lost or repeated");
    }
    // 3 (wrap 0) + 9 in a ring of 6: position 0, wrap 0 again after two flips.
    publisher.publish(cfg(&mem2, false));
    assert!(cursor.live().is_none());
    assert!(publisher.wait_ack(std::time::Duration::from_secs(1)));
    assert_eq!(publisher.last_avail(), state(r.avail.0, r.avail.1));
    assert_eq!(publisher.last_avail(), state(0, false));
    drop(cursor);
    drop(cache);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn packed_flags_constants() {
    assert_eq!(VIRTQ_DESC_F_WRITE, 2);
    assert_eq!(std::mem::size_of::<PackedDesc>(), 16);
}
