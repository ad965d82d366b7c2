//! The lcore runtime over in-memory ports: forwarding, chaining lcores, stop, counters, and that
//! every mbuf comes back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::drivers::ring::RingPort;
use fastpath_pmd::{Ctx, IdleMode, LcoreSpec, Passthrough, Port, Processor, Runtime, RuntimeConfig};

fn pool(n: u32) -> Mempool {
    Mempool::new("rt", &PoolConfig { mbufs: n, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

fn wait_for(mut f: impl FnMut() -> bool, secs: f64) -> bool {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

#[test]
fn null_io_forwards_and_returns_every_mbuf() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(4096);
    let mut a = NullPort::new(0, &p, NullConfig::default());
    let mut b = NullPort::new(1, &p, NullConfig::default());
    let mut l = LcoreSpec::default();
    l.add_task_with(a.rx_queue(0).unwrap(), Box::new(Passthrough), 1);
    l.add_task_with(b.rx_queue(0).unwrap(), Box::new(Passthrough), 0);
    l.set_tx(0, a.tx_queue(0).unwrap());
    l.set_tx(1, b.tx_queue(0).unwrap());
    let rt = Runtime::launch(vec![l], RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| rt.stats()[0].tx_packets.get() > 100_000, 10.0));
    let st = rt.stats()[0].clone();
    rt.join().unwrap();
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.rx_packets, sb.tx_packets, "everything a received went out of b");
    assert_eq!(sb.rx_packets, sa.tx_packets);
    assert_eq!(sa.rx_bytes, sa.rx_packets * 64);
    assert_eq!(st.tx_packets.get(), sa.tx_packets + sb.tx_packets);
    assert!(st.busy_polls.get() > 0);
    drop((a, b));
    assert_eq!(p.available(), p.capacity());
}

/// Stamps a sequence number into each frame so the far end can check order and completeness.
struct Stamp(u64);
impl Processor for Stamp {
    fn process(&mut self, batch: &mut Batch, _ctx: &mut Ctx) {
        for m in batch.iter_mut() {
            m.data_mut()[..8].copy_from_slice(&self.0.to_le_bytes());
            self.0 += 1;
        }
    }
}

/// Checks that sequence numbers only grow (drops at the ring are allowed and counted).
struct Check {
    last: Option<u64>,
    seen: Arc<AtomicU64>,
}
impl Processor for Check {
    fn process(&mut self, batch: &mut Batch, _ctx: &mut Ctx) {
        for m in batch.iter() {
            let v = u64::from_le_bytes(m.data()[..8].try_into().unwrap());
            if let Some(l) = self.last {
                assert!(v > l, "sequence went backwards between lcores: {v} after {l}");
            }
            self.last = Some(v);
        }
        self.seen.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

#[test]
fn two_lcores_chained_by_a_ring_keep_order() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let cpus = fastpath_pmd::lcore::available_cores();
    let p = pool(8192);
    // lcore 0: null rx -> stamp -> ring port 1; lcore 1: ring port 2 rx -> check -> null sink.
    let mut src = NullPort::new(0, &p, NullConfig::default());
    let (mut r1, mut r2) = RingPort::pair(1, 2, 512);
    let mut sink = NullPort::new(3, &p, NullConfig { no_rx: true, ..Default::default() });
    let seen = Arc::new(AtomicU64::new(0));
    let mut l0 = LcoreSpec { core: cpus.first().copied(), ..Default::default() };
    l0.add_task_with(src.rx_queue(0).unwrap(), Box::new(Stamp(0)), 1);
    l0.set_tx(1, r1.tx_queue(0).unwrap());
    let mut l1 = LcoreSpec { core: cpus.last().copied(), ..Default::default() };
    l1.add_task_with(r2.rx_queue(0).unwrap(), Box::new(Check { last: None, seen: seen.clone() }), 3);
    l1.set_tx(3, sink.tx_queue(0).unwrap());
    let rt = Runtime::launch(vec![l0, l1], RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| seen.load(Ordering::Relaxed) > 200_000, 20.0));
    rt.join().unwrap();
    // Packets the ring did not take were dropped at the ring's tx queue: counted, not lost.
    let (s_src, s_r1, s_r2, s_sink) = (src.stats(), r1.stats(), r2.stats(), sink.stats());
    assert_eq!(s_src.rx_packets, s_r1.tx_packets + s_r1.tx_drops);
    assert_eq!(s_r2.rx_packets, s_sink.tx_packets);
    assert_eq!(s_sink.tx_packets, seen.load(Ordering::Relaxed));
    drop((src, r1, r2, sink));
    assert_eq!(p.available(), p.capacity(), "mbufs left in the ring went back when it was dropped");
}

#[test]
fn unrouted_packets_are_freed_and_counted() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(1024);
    let mut a = NullPort::new(0, &p, NullConfig::default());
    let mut l = LcoreSpec::default();
    // default_out 5 has no tx queue on this lcore.
    l.add_task_with(a.rx_queue(0).unwrap(), Box::new(Passthrough), 5);
    let rt = Runtime::launch(vec![l], RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| rt.stats()[0].no_route.get() > 1000, 10.0));
    let st = rt.stats()[0].clone();
    rt.join().unwrap();
    assert_eq!(st.no_route.get(), a.stats().rx_packets);
    drop(a);
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn adaptive_idle_lcore_counts_idle_polls_and_stops_promptly() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(256);
    let mut a = NullPort::new(0, &p, NullConfig { no_rx: true, ..Default::default() });
    let mut l = LcoreSpec::default();
    l.add_task_with(a.rx_queue(0).unwrap(), Box::new(Passthrough), 0);
    l.set_tx(0, a.tx_queue(0).unwrap());
    let cfg = RuntimeConfig { idle: IdleMode::Adaptive { max_sleep_us: 200 }, ..Default::default() };
    let rt = Runtime::launch(vec![l], cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let st = rt.stats()[0].clone();
    let t = Instant::now();
    rt.join().unwrap();
    // Not a timing check: a stop request must end a lcore that is sleeping in its back-off
    // (max 200 us a sleep); only a hang would take this long.
    assert!(t.elapsed() < Duration::from_secs(30), "stop ends a backing-off lcore");
    assert!(st.idle_polls.get() > 0);
    assert_eq!(st.busy_polls.get(), 0);
    assert_eq!(st.utilisation(), 0.0);
}

/// Passes packets on and records the lcore thread's timer slack.
struct Slack(Arc<AtomicU64>);

impl Processor for Slack {
    fn process(&mut self, _batch: &mut Batch, _ctx: &mut Ctx) {
        // SAFETY: PR_GET_TIMERSLACK takes no memory and returns the value.
        let ns = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        // Relaxed: read after the join.
        self.0.store(ns as u64, Ordering::Relaxed);
    }
}

#[test]
fn adaptive_lcores_lower_their_timer_slack_busy_ones_keep_it() {
    let _cpus = fastpath_pmd::testutil::pollers();
    // SAFETY: as above, on the test's thread: the default the lcores inherit.
    let default = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) } as u64;
    for (idle, want) in [
        (IdleMode::Adaptive { max_sleep_us: 200 }, fastpath_pmd::lcore::ADAPTIVE_TIMER_SLACK_NS),
        (IdleMode::Busy, default),
    ] {
        let p = pool(256);
        let mut a = NullPort::new(0, &p, NullConfig::default());
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let mut l = LcoreSpec::default();
        l.add_task_with(a.rx_queue(0).unwrap(), Box::new(Slack(seen.clone())), 0);
        l.set_tx(0, a.tx_queue(0).unwrap());
        let rt = Runtime::launch(vec![l], RuntimeConfig { idle, ..Default::default() }).unwrap();
        // Relaxed: a value polled until the lcore has stored it.
        assert!(wait_for(|| seen.load(Ordering::Relaxed) != u64::MAX, 10.0), "{idle:?}: no packet processed");
        rt.join().unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), want, "{idle:?}: the lcore's timer slack");
        drop(a);
        assert_eq!(p.available(), p.capacity());
    }
}

#[test]
fn bad_runtime_settings_are_errors() {
    let e = Runtime::launch(vec![LcoreSpec { core: Some(100_000), ..Default::default() }], RuntimeConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("core 100000 is not available"), "{e}");
    let e = Runtime::launch(vec![], RuntimeConfig { burst: 0, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("burst 0 is out of range"), "{e}");
}

#[test]
fn queues_are_taken_once_and_must_exist() {
    let p = pool(64);
    let mut a = NullPort::new(0, &p, NullConfig { queues: 2, ..Default::default() });
    assert!(a.rx_queue(0).is_ok());
    let e = a.rx_queue(0).err().unwrap().to_string();
    assert!(e.contains("already owned"), "{e}");
    let e = a.tx_queue(2).err().unwrap().to_string();
    assert!(e.contains("does not exist (the port has 2 tx queues)"), "{e}");
}

/// Sends its packets to ports `a` and `b` in turn, stamping each with a per-port sequence
/// number (so the far ends can check order), and counts them.
struct Alternate {
    a: u16,
    b: u16,
    next: [u64; 2],
    seen: Arc<AtomicU64>,
}
impl Processor for Alternate {
    fn process(&mut self, batch: &mut Batch, _ctx: &mut Ctx) {
        for (i, m) in batch.iter_mut().enumerate() {
            let k = i % 2;
            m.set_out_port(if k == 0 { self.a } else { self.b });
            m.data_mut()[..8].copy_from_slice(&self.next[k].to_le_bytes());
            self.next[k] += 1;
        }
        self.seen.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

/// Receives from a ring and checks that each stream (by the value's parity of source) grows.
struct InOrder {
    last: Option<u64>,
    got: Arc<AtomicU64>,
}
impl Processor for InOrder {
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        for m in batch.iter() {
            let v = u64::from_le_bytes(m.data()[..8].try_into().unwrap());
            if let Some(l) = self.last {
                assert!(v > l, "out of order through the output buffers: {v} after {l}");
            }
            self.last = Some(v);
        }
        self.got.fetch_add(batch.len() as u64, Ordering::Relaxed);
        ctx.free_batch(batch);
    }
}

#[test]
fn one_processor_shared_by_tasks_and_output_buffers_keep_order_per_port() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(8192);
    let cpus = fastpath_pmd::lcore::available_cores();
    let frame: Arc<[u8]> = vec![0u8; 64].into();
    let mut src1 = NullPort::new(0, &p, NullConfig { frame: Some(frame.clone()), ..Default::default() });
    let mut src2 = NullPort::new(1, &p, NullConfig { frame: Some(frame), ..Default::default() });
    let (mut a_tx, mut a_rx) = RingPort::pair(2, 3, 1024);
    let (mut b_tx, mut b_rx) = RingPort::pair(4, 5, 1024);
    let seen = Arc::new(AtomicU64::new(0));
    // lcore 0: two rx tasks, one processor: packets alternate between ports 2 and 4.
    let mut l0 = LcoreSpec::new(cpus.first().copied());
    let shared = l0.add_processor(Box::new(Alternate { a: 2, b: 4, next: [0, 0], seen: seen.clone() }));
    l0.add_task(src1.rx_queue(0).unwrap(), shared, 2);
    l0.add_task(src2.rx_queue(0).unwrap(), shared, 2);
    l0.set_tx(2, a_tx.tx_queue(0).unwrap());
    l0.set_tx(4, b_tx.tx_queue(0).unwrap());
    // lcore 1: drains both rings, checking each stream's order.
    let (ga, gb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut l1 = LcoreSpec::new(cpus.last().copied());
    l1.add_task_with(a_rx.rx_queue(0).unwrap(), Box::new(InOrder { last: None, got: ga.clone() }), 9);
    l1.add_task_with(b_rx.rx_queue(0).unwrap(), Box::new(InOrder { last: None, got: gb.clone() }), 9);
    let rt = Runtime::launch(vec![l0, l1], RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| ga.load(Ordering::Relaxed) > 100_000 && gb.load(Ordering::Relaxed) > 100_000, 60.0));
    let st = rt.stats()[0].clone();
    rt.join().unwrap();
    // Every packet the shared processor saw was sent or counted as a drop at a ring.
    let (sa, sb) = (a_tx.stats(), b_tx.stats());
    assert_eq!(seen.load(Ordering::Relaxed), sa.tx_packets + sa.tx_drops + sb.tx_packets + sb.tx_drops);
    assert_eq!(st.tx_packets.get() + st.tx_drops.get(), seen.load(Ordering::Relaxed));
    assert_eq!(st.no_route.get(), 0);
    drop((src1, src2, a_tx, a_rx, b_tx, b_rx));
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn two_lcores_share_one_tx_queue_and_count_every_packet() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(8192);
    let cpus = fastpath_pmd::lcore::available_cores();
    let mut src1 = NullPort::new(0, &p, NullConfig::default());
    let mut src2 = NullPort::new(1, &p, NullConfig::default());
    // One sink port with ONE tx queue (a ring of 512 slots that nobody reads: it fills, and the
    // rest are drops the shared queue must count without losing updates).
    let (mut sink_tx, sink_rx) = RingPort::pair(2, 3, 512);
    let handles = fastpath_pmd::txshare::share(sink_tx.tx_queue(0).unwrap(), 2);
    let mut lcores = Vec::new();
    for (i, (h, src)) in handles.into_iter().zip([&mut src1, &mut src2]).enumerate() {
        let mut l = LcoreSpec::new(cpus.get(i % cpus.len()).copied());
        l.add_task_with(src.rx_queue(0).unwrap(), Box::new(Passthrough), 2);
        l.set_tx(2, h);
        lcores.push(l);
    }
    let rt = Runtime::launch(lcores, RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| rt.stats().iter().all(|s| s.tx_drops.get() > 200_000), 60.0));
    let st: Vec<_> = rt.stats().to_vec();
    rt.join().unwrap();
    let s = sink_tx.stats();
    let lcore_tx: u64 = st.iter().map(|s| s.tx_packets.get()).sum();
    let lcore_drops: u64 = st.iter().map(|s| s.tx_drops.get()).sum();
    // Under the lock, the queue's own single-writer counters lose nothing.
    assert_eq!(s.tx_packets, lcore_tx);
    assert_eq!(s.tx_drops, lcore_drops, "drops counted through the shared queue's lock");
    assert_eq!(s.tx_packets, 512, "the ring took exactly its size");
    assert_eq!(src1.stats().rx_packets + src2.stats().rx_packets, lcore_tx + lcore_drops);
    drop((src1, src2, sink_tx, sink_rx));
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn live_commands_add_and_remove_ports_while_others_forward() {
    use fastpath_pmd::lcore::{Command, Returned};
    use fastpath_pmd::Task;
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(8192);
    let cpus = fastpath_pmd::lcore::available_cores();
    let mut a = NullPort::new(0, &p, NullConfig::default());
    let mut b = NullPort::new(1, &p, NullConfig::default());
    let mut sink = NullPort::new(2, &p, NullConfig { no_rx: true, queues: 2, ..Default::default() });
    let mut l = LcoreSpec::new(cpus.last().copied());
    let proc0 = l.add_processor(Box::new(Passthrough));
    l.add_task(a.rx_queue(0).unwrap(), proc0, 2);
    l.set_tx(2, sink.tx_queue(0).unwrap());
    let rt = Runtime::launch(vec![l], RuntimeConfig::default()).unwrap();
    assert!(wait_for(|| a.stats().rx_packets > 10_000, 30.0));
    // Plug port b live: its frames flow too, a's keep flowing.
    rt.command(0, Command::AddTask(Task::new(b.rx_queue(0).unwrap(), proc0, 2))).unwrap();
    let a0 = a.stats().rx_packets;
    assert!(wait_for(|| b.stats().rx_packets > 10_000 && a.stats().rx_packets > a0 + 10_000, 30.0));
    // Unplug port a: its task comes back; after a grace period it receives no more.
    rt.command(0, Command::RemovePort(0)).unwrap();
    let back = rt.synchronize(Duration::from_secs(30)).unwrap();
    assert!(back.iter().any(|(_, r)| matches!(r, Returned::Task(t) if t.stats.port == 0)), "{back:?}");
    let a1 = a.stats().rx_packets;
    let b1 = b.stats().rx_packets;
    assert!(wait_for(|| b.stats().rx_packets > b1 + 10_000, 30.0), "b forwards on");
    assert_eq!(a.stats().rx_packets, a1, "a is polled no more");
    // A transmit queue swapped live: the old one comes back.
    rt.command(0, Command::SetTx(2, sink.tx_queue(1).unwrap())).unwrap();
    let back = rt.synchronize(Duration::from_secs(30)).unwrap();
    assert!(back.iter().any(|(_, r)| matches!(r, Returned::Tx(2, _))), "{back:?}");
    // One rx queue taken out and put back (a rebalance): it forwards again, its counters kept.
    rt.command(0, Command::TakeTask(1, 0)).unwrap();
    let back = rt.synchronize(Duration::from_secs(30)).unwrap();
    let task = back
        .into_iter()
        .find_map(|(_, r)| if let Returned::Task(t) = r { Some(t) } else { None })
        .expect("b's task back");
    let (tp, tc) = (task.stats.packets.get(), task.stats.cycles.get());
    assert!(tp > 10_000 && tc > tp, "per-task packets {tp} and cycles {tc}");
    rt.command(0, Command::AddTask(task)).unwrap();
    let b2 = b.stats().rx_packets;
    assert!(wait_for(|| b.stats().rx_packets > b2 + 10_000, 30.0), "b forwards again");
    let st = rt.stats()[0].clone();
    rt.join().unwrap();
    let s = sink.stats();
    assert_eq!(a.stats().rx_packets + b.stats().rx_packets, s.tx_packets + st.tx_drops.get());
    assert_eq!(st.no_route.get(), 0);
    drop((a, b, sink));
    assert_eq!(p.available(), p.capacity());
}

/// Takes a `u64` message: counts it, and gives back the number it held before.
struct Tuned(Arc<AtomicU64>);

impl Processor for Tuned {
    fn process(&mut self, _batch: &mut Batch, _ctx: &mut Ctx) {}

    fn notify(&mut self, msg: Box<dyn std::any::Any + Send>) -> Option<Box<dyn std::any::Any + Send>> {
        let n = *msg.downcast::<u64>().ok()?;
        Some(Box::new(self.0.swap(n, Ordering::Relaxed)))
    }
}

#[test]
fn notify_reaches_the_processor_between_passes_and_what_it_gives_back_returns() {
    use fastpath_pmd::lcore::{Command, Returned};
    let _cpus = fastpath_pmd::testutil::pollers();
    let p = pool(4096);
    let mut a = NullPort::new(0, &p, NullConfig::default());
    let mut l = LcoreSpec::new(fastpath_pmd::lcore::available_cores().last().copied());
    let held = Arc::new(AtomicU64::new(7));
    let t = l.add_processor(Box::new(Tuned(held.clone())));
    l.add_processor(Box::new(Passthrough));
    l.add_task(a.rx_queue(0).unwrap(), t, 0);
    l.set_tx(0, a.tx_queue(0).unwrap());
    let rt = Runtime::launch(vec![l], RuntimeConfig::default()).unwrap();
    rt.command(0, Command::Notify(t, Box::new(42u64))).unwrap();
    // Not understood (the default gives it back), and a processor that does not exist.
    rt.command(0, Command::Notify(1, Box::new(5u64))).unwrap();
    rt.command(0, Command::Notify(9, Box::new(6u64))).unwrap();
    let back = rt.synchronize(Duration::from_secs(30)).unwrap();
    assert_eq!(held.load(Ordering::Relaxed), 42, "applied before the grace period ended");
    let mut got: Vec<(usize, u64)> = back
        .into_iter()
        .filter_map(|(_, r)| match r {
            Returned::Notified(i, m) => Some((i, *m.downcast::<u64>().expect("a u64"))),
            _ => None,
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [(0, 7), (1, 5), (9, 6)], "what was replaced, and the two refused, come back");
    rt.join().unwrap();
    drop(a);
    assert_eq!(p.available(), p.capacity());
}
