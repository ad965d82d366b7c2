//! A hostile frontend against a `VhostUserPort` in this process (the test thread plays the
//! lcore; no root, no peer, no busy polling). One test per class of issue 11, each of which
//! used to stall, crash or hang the process, then a suite of broken messages, memory tables,
//! vrings and fds. Every case ends with a well-behaved frontend getting service on the same
//! port and with no more fds, guest mappings or mbufs held than before.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::{Ctx, Port, RxQueue, Spec, TxQueue};
use fastpath_vhost_user::testutil::frontend::{message, req, TestFrontend, FLAG_NEED_REPLY, FLAG_VERSION};
use fastpath_vhost_user::testutil::{memfd, GPA_BASE, UVA_BASE};
use fastpath_vhost_user::VhostUserPort;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vmm_sys_util::eventfd::EventFd;

/// The cases count this process's fds and mappings: one at a time.
static ONE: Mutex<()> = Mutex::new(());

fn one() -> MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Generous: a deadline, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The port, its queues and the "lcore" state, movable to a helper thread that plays the lcore.
struct Rig {
    sock: PathBuf,
    pool: Mempool,
    port: VhostUserPort,
    rxq: Box<dyn RxQueue>,
    txq: Box<dyn TxQueue>,
    ctx: Ctx,
    b: Batch,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let _ = env_logger::builder().is_test(true).try_init();
        let sock = std::env::temp_dir().join(format!("fp-vu-h-{name}-{}.sock", std::process::id()));
        let pool = Mempool::new(name, &PoolConfig { mbufs: 1024, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
        let mut spec = Spec::parse_port(&format!("vhost-user:{}", sock.display())).unwrap();
        let mut port = VhostUserPort::from_spec(0, &mut spec, &pool).unwrap();
        let (rxq, txq) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
        let ctx = Ctx::new(0, &pool);
        Rig { sock, pool, port, rxq, txq, ctx, b: Batch::new() }
    }

    fn x(&self, k: &str) -> u64 {
        self.port.xstats().into_iter().find(|(n, _)| n == k).map(|(_, v)| v).unwrap_or_else(|| panic!("no xstat {k}"))
    }

    /// One lcore loop iteration of `l2fwd` on a single port: receive, send back out, free
    /// what the port did not take. Returns (received, sent).
    fn round(&mut self) -> (usize, usize) {
        let n = self.rxq.rx_burst(&mut self.ctx, &mut self.b, 32);
        let s = if self.b.is_empty() { 0 } else { self.txq.tx_burst(&mut self.ctx, &mut self.b) };
        self.ctx.free_batch(&mut self.b);
        self.txq.flush(&mut self.ctx);
        (n, s)
    }

    /// Plays the lcore on another thread until `done(rig)`; fails when it does not come back
    /// within the deadline (the lcore is stuck in a system call).
    fn rounds_until(self, what: &str, done: impl Fn(&Rig) -> bool + Send + Sync + 'static) -> Rig {
        let (tx, rx) = mpsc::channel();
        let done = std::sync::Arc::new(done);
        let d2 = done.clone();
        std::thread::spawn(move || {
            let done = d2;
            let mut r = self;
            let t0 = Instant::now();
            while !done(&r) && t0.elapsed() < DEADLINE {
                r.round();
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = tx.send(r);
        });
        match rx.recv_timeout(DEADLINE + Duration::from_secs(5)) {
            Ok(r) => {
                assert!(done(&r), "{what}: not reached within {DEADLINE:?}");
                r
            }
            Err(_) => panic!("{what}: the lcore did not come back: it is stuck in a system call"),
        }
    }

    fn wait_disconnected(&mut self) {
        let t0 = Instant::now();
        while self.port.connected() {
            assert!(t0.elapsed() < DEADLINE, "the port did not let the frontend go");
            self.round();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A well-behaved frontend connects, 64 frames go out of its guest and back into it through
    /// the port, it leaves.
    fn good_service(mut self) -> Rig {
        let mut fe = TestFrontend::start(&self.sock).expect("a well-behaved frontend is served");
        wait("both vrings live", || self.port.vring_live(0) && self.port.vring_live(1));
        fe.receive();
        assert_eq!(fe.send(64), 64);
        let t0 = Instant::now();
        while fe.received < 64 {
            assert!(t0.elapsed() < DEADLINE, "the good frontend got {} of 64 frames back", fe.received);
            self.round();
            fe.receive();
            fe.send(0);
        }
        assert_eq!(fe.sent, 64);
        drop(fe);
        self.wait_disconnected();
        self
    }
}

/// What this process holds: fds, guest memory mappings (memfds mapped shared), mbufs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    fds: usize,
    guest_maps: usize,
    mbufs_out: usize,
}

fn held(pool: &Mempool) -> Held {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let guest_maps = maps.lines().filter(|l| l.contains("/memfd:")).count();
    Held { fds, guest_maps, mbufs_out: pool.capacity() - pool.available() }
}

/// Waits until the rig holds no more than `before` (the port unmaps a departed frontend's
/// memory once the lcore acknowledged; the test's lcore acknowledges in its rounds).
fn check_held(r: &mut Rig, before: Held, case: &str) {
    let what = format!("{case} (before: {before:?})");
    wait_held(r, &what, |h| h.fds <= before.fds && h.guest_maps <= before.guest_maps && h.mbufs_out == 0);
}

/// Takes the test lock, opens a port that has served a good frontend once, and returns what it
/// holds then.
fn served(name: &str) -> (MutexGuard<'static, ()>, Rig, Held) {
    let one = one();
    let mut r = Rig::new(name).good_service();
    let before = baseline(&mut r);
    (one, r, before)
}

/// What the rig holds with no frontend connected, once the lcore let go of the last one's
/// memory (none of it may stay mapped).
fn baseline(r: &mut Rig) -> Held {
    wait_held(r, "baseline", |h| h.guest_maps == 0 && h.mbufs_out == 0)
}

fn wait_held(r: &mut Rig, what: &str, ok: impl Fn(&Held) -> bool) -> Held {
    let t0 = Instant::now();
    loop {
        r.round();
        let h = held(&r.pool);
        if ok(&h) {
            return h;
        }
        assert!(t0.elapsed() < DEADLINE, "{what}: holds {h:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn finish(r: Rig, before: Held, case: &str) -> Rig {
    let mut r = r.good_service();
    check_held(&mut r, before, case);
    r
}

/// A pipe whose write end is full and blocking: a write into it would sleep.
fn full_pipe() -> (File, File) {
    let mut p = [0; 2];
    // SAFETY: p has room for two fds.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }, 0);
    // SAFETY: fresh fds that we own.
    let (r, mut w) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
    while w.write(&[0u8; 4096]).is_ok() {}
    // SAFETY: F_SETFL with no flags on our own fd: blocking again.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFL, 0) };
    (r, w)
}

/// `fd` dressed as an `EventFd` for rust-vmm's frontend (which takes nothing else); the
/// returned value owns a duplicate.
fn as_eventfd(fd: RawFd) -> EventFd {
    // SAFETY: dup of an fd the caller keeps open; the EventFd owns the duplicate.
    unsafe { EventFd::from_raw_fd(libc::dup(fd)) }
}

const FULL: u64 = u64::MAX - 1;

#[test]
fn class1_full_call_eventfd_never_blocks_the_lcore() {
    let (_one, mut r, before) = served("call");

    // The frontend pre-fills the guest RX vring's call eventfd: one more would block a write.
    let mut fe = TestFrontend::start(&r.sock).unwrap();
    fe.call[0].write(FULL).unwrap();
    wait("vrings live", || r.port.vring_live(0) && r.port.vring_live(1));
    fe.receive();
    fe.send(32);
    // The guest asks for interrupts (avail.flags 0): the lcore calls after each burst.
    let tx0 = r.x("q0_tx_packets");
    r = r.rounds_until("32 frames back into the guest", move |r| r.x("q0_tx_packets") >= tx0 + 32);
    assert!(r.x("q0_tx_guest_calls_skipped") >= 1, "the full counter is counted, not waited on");
    assert_eq!(fe.receive(), 32);

    // The frontend then clears O_NONBLOCK on its copy (the flag is the shared description's):
    // the control thread sees it and closes the connection, and an lcore that raced into a
    // write anyway is interrupted by the watchdog.
    // SAFETY: F_SETFL on our own fd.
    unsafe { libc::fcntl(fe.call[0].as_raw_fd(), libc::F_SETFL, 0) };
    fe.send(32);
    fe.receive();
    r = r.rounds_until("the connection closed", |r| r.x("closed_call_fd_blocking") == 1 && !r.port.connected());
    drop(fe);
    r.wait_disconnected();
    finish(r, before, "full call eventfd");
}

#[test]
fn class1_call_fd_that_is_a_full_pipe_is_refused() {
    let (_one, mut r, before) = served("callpipe");

    let mut fe = TestFrontend::with_memory(&r.sock).unwrap();
    let (_pr, pw) = full_pipe();
    let fake = as_eventfd(pw.as_raw_fd());
    let kick0 = fe.kick[0].try_clone().unwrap();
    assert!(fe.setup_vring_with(0, &kick0, &fake).is_err(), "a pipe as call fd is refused (NACK)");
    assert_eq!(r.x("fds_refused"), 1);
    // The vring goes on without a call fd (its call was refused, the rest of the setup is
    // done again with a good kick): traffic flows and nothing blocks.
    fe.fe.set_vring_kick(0, &kick0).unwrap();
    fe.fe.set_vring_enable(0, true).unwrap();
    fe.setup_vring(1).unwrap();
    wait("vrings live", || r.port.vring_live(0) && r.port.vring_live(1));
    let (calls, tx0) = (r.x("q0_tx_guest_calls"), r.x("q0_tx_packets"));
    fe.receive();
    fe.send(32);
    r = r.rounds_until("32 frames back into the guest", move |r| r.x("q0_tx_packets") >= tx0 + 32);
    assert_eq!(r.x("q0_tx_guest_calls"), calls, "no call fd, no calls");
    drop(fe);
    drop((fake, kick0, _pr, pw));
    r.wait_disconnected();
    finish(r, before, "call fd a full pipe");
}

#[test]
fn class2_truncated_memory_file_breaks_only_that_connection() {
    let (_one, mut r, before) = served("trunc");

    let mut fe = TestFrontend::start(&r.sock).unwrap();
    wait("vrings live", || r.port.vring_live(0) && r.port.vring_live(1));
    fe.receive();
    fe.send(16);
    let tx0 = r.x("q0_tx_packets");
    r = r.rounds_until("traffic before the truncation", move |r| r.x("q0_tx_packets") >= tx0 + 16);
    // The frontend shrinks its memory file to nothing while the rings run: the lcore's next
    // access to the rings faults (SIGBUS). The process survives; that connection is closed.
    fe.guest.file.set_len(0).unwrap();
    r = r
        .rounds_until("the connection closed after the fault", |r| r.x("closed_mem_fault") == 1 && !r.port.connected());
    assert!(fastpath_vhost_user::sigbus::faults() >= 1);
    // The frontend's socket is closed by the port.
    fe.raw.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(eof(&fe.raw), "the port closed the connection");
    // Our own view of the truncated file must not be touched any more: let it go unread.
    drop(fe);
    // A truncated file is refused by the next SET_MEM_TABLE: its regions are beyond its end.
    let mut g = TestFrontend::connect(&r.sock).unwrap();
    g.negotiate().unwrap();
    g.guest.file.set_len(4096).unwrap();
    assert!(g.fe.set_mem_table(&g.table()).is_err());
    drop(g);
    r.wait_disconnected();
    finish(r, before, "truncated memory file");
}

/// Connects a raw frontend (no negotiation).
fn raw(r: &Rig) -> UnixStream {
    let s = UnixStream::connect(&r.sock).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// True when the port closed the connection: end of file, or a reset (a unix socket closed
/// with data it did not read resets its peer).
fn eof(mut s: &UnixStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn class3_stalled_messages_are_dropped_after_the_deadline() {
    let (_one, mut r, before) = served("stall");

    // A header announcing an 8-byte SET_FEATURES payload, and then nothing.
    let s = raw(&r);
    (&s).write_all(&message(req::SET_FEATURES, FLAG_VERSION, &[0u8; 8])[..12]).unwrap();
    wait("the stalled connection closed", || r.x("closed_msg_timeout") == 1);
    assert!(eof(&s), "the port closed it");
    drop(s);
    r.wait_disconnected();
    r = finish(r, before, "header without its payload");

    // Half a header.
    let s = raw(&r);
    (&s).write_all(&message(req::GET_FEATURES, FLAG_VERSION, &[])[..5]).unwrap();
    wait("the stalled connection closed", || r.x("closed_msg_timeout") == 2);
    assert!(eof(&s));
    drop(s);
    r.wait_disconnected();
    r = finish(r, before, "half a header");

    // A frontend that asks and asks and never reads the replies.
    let s = raw(&r);
    let ask = message(req::GET_FEATURES, FLAG_VERSION, &[]);
    let flood: Vec<u8> = ask.iter().copied().cycle().take(ask.len() * 20_000).collect();
    let mut w = s.try_clone().unwrap();
    // On its own thread: the write blocks whenever the port stops reading.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&flood);
    });
    wait("the connection that never reads closed", || r.x("closed_replies_unread") == 1);
    drop(s);
    writer.join().unwrap();
    r.wait_disconnected();
    finish(r, before, "replies never read");
}

#[test]
fn class3_shutdown_never_waits_for_a_frontend() {
    let _one = one();
    let r = Rig::new("shut");
    let s = raw(&r);
    (&s).write_all(&message(req::SET_MEM_TABLE, FLAG_VERSION, &[0u8; 40])[..12]).unwrap();
    wait("the connection", || r.port.connected());
    std::thread::sleep(Duration::from_millis(200));
    // Dropping the port stops its control thread; it must not wait for this frontend.
    let (tx, rx) = mpsc::channel();
    let Rig { port, rxq, txq, ctx, pool, .. } = r;
    std::thread::spawn(move || {
        drop(rxq);
        drop(txq);
        drop(ctx);
        drop(port);
        let _ = tx.send(pool);
    });
    let pool = rx.recv_timeout(Duration::from_secs(10)).expect("the port stopped without waiting for the frontend");
    assert_eq!(pool.available(), pool.capacity());
    drop(s);
}

#[test]
fn class4_kick_fds_must_be_eventfds_and_kicks_count_events() {
    let (_one, mut r, before) = served("kick");

    let mut fe = TestFrontend::with_memory(&r.sock).unwrap();
    let call1 = fe.call[1].try_clone().unwrap();
    // A regular file with bytes in it, a pipe whose writer is gone (always readable, EOF), and
    // the guest's memory file itself.
    let file = std::env::temp_dir().join(format!("fp-vu-h-kickfile-{}", std::process::id()));
    std::fs::write(&file, [0xabu8; 64]).unwrap();
    let f = File::open(&file).unwrap();
    let mut p = [0; 2];
    // SAFETY: p has room for two fds.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds that we own.
    let (pr, pw) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
    drop(pw);
    for (what, fd) in [("file", f.as_raw_fd()), ("pipe", pr.as_raw_fd()), ("memfd", fe.guest.file.as_raw_fd())] {
        let fake = as_eventfd(fd);
        assert!(fe.setup_vring_with(1, &fake, &call1).is_err(), "{what} as kick fd is refused (NACK)");
    }
    assert_eq!(r.x("fds_refused"), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.x("q0_rx_guest_kicks"), 0, "nothing counted from those");
    assert!(!r.port.vring_live(1), "a ring whose kick was refused does not start");
    let _ = std::fs::remove_file(&file);

    // A real eventfd into which the frontend writes a huge value: one kick, not 2^64 - 3.
    // (We never drain kick counters, so the frontend's own next write must still fit.)
    fe.setup_vring(1).unwrap();
    wait("vring 1 live", || r.port.vring_live(1));
    fe.kick[1].write(FULL - 1).unwrap();
    wait("the kick counted", || r.x("q0_rx_guest_kicks") >= 1);
    fe.kick[1].write(1).unwrap();
    wait("the second kick counted", || r.x("q0_rx_guest_kicks") >= 2);
    assert!(r.x("q0_rx_guest_kicks") <= 2, "events are counted, not values: {}", r.x("q0_rx_guest_kicks"));
    drop(fe);
    drop((f, pr, call1));
    r.wait_disconnected();
    finish(r, before, "kick fds");
}

/// Sends a request and reads its ack (REPLY_ACK): Some(0) accepted, Some(non-zero) refused,
/// None when the port closed the connection instead.
fn ask(fe: &TestFrontend, code: u32, payload: &[u8], fds: &[RawFd]) -> Option<u64> {
    let m = message(code, FLAG_VERSION | FLAG_NEED_REPLY, payload);
    fe.send_raw(&m, fds).ok()?;
    let mut b = [0u8; 20];
    (&fe.raw).read_exact(&mut b).ok()?;
    Some(u64::from_ne_bytes(b[12..20].try_into().unwrap()))
}

/// A SET_VRING_NUM (or _BASE) payload: vring index and value.
fn vring_state(index: u32, num: u32) -> Vec<u8> {
    [index.to_ne_bytes(), num.to_ne_bytes()].concat()
}

/// A SET_MEM_TABLE payload: num_regions, padding, then (gpa, size, uva, offset) per region.
fn mem_table(regions: &[(u64, u64, u64, u64)], num: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&num.to_ne_bytes());
    p.extend_from_slice(&0u32.to_ne_bytes());
    for &(gpa, size, uva, off) in regions {
        for v in [gpa, size, uva, off] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
    }
    p
}

#[test]
fn hostile_messages_tables_vrings_and_fds_leave_the_port_serving() {
    let (_one, mut r, before) = served("suite");
    let ram = fastpath_vhost_user::testutil::frontend::RAM as u64;

    /// What a case must lead to.
    #[derive(Debug, PartialEq)]
    enum Want {
        /// Refused with a NACK; the connection stays usable.
        Nack,
        /// Refused with a NACK (rust-vmm's message checks), after which the port may close the
        /// connection.
        Refused,
        /// The port closes the connection.
        Closed,
    }
    type Case = (&'static str, Want, Box<dyn Fn(&TestFrontend) -> Option<u64>>);
    let region = move |n: u32, size: u64| mem_table(&[(GPA_BASE, size, UVA_BASE, 0)], n);
    let cases: Vec<Case> = vec![
        (
            "garbage bytes",
            Want::Closed,
            Box::new(|fe| {
                let g: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
                fe.send_raw(&g, &[]).ok()?;
                None
            }),
        ),
        (
            "bad version",
            Want::Closed,
            Box::new(|fe| {
                fe.send_raw(&message(req::GET_FEATURES, 2 | FLAG_NEED_REPLY, &[]), &[]).ok()?;
                None
            }),
        ),
        ("unknown request", Want::Closed, Box::new(|fe| ask(fe, 9999, &[], &[]))),
        (
            "size beyond 4 KiB",
            Want::Closed,
            Box::new(|fe| {
                let mut m = message(req::SET_FEATURES, FLAG_VERSION, &[]);
                m[8..12].copy_from_slice(&0x10_0000u32.to_ne_bytes());
                fe.send_raw(&m, &[]).ok()?;
                None
            }),
        ),
        (
            "fds on a request that takes none",
            Want::Closed,
            Box::new(|fe| {
                let e = [EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
                ask(fe, req::GET_FEATURES, &[], &[e[0].as_raw_fd(), e[1].as_raw_fd(), e[2].as_raw_fd()])
            }),
        ),
        (
            "features never offered",
            Want::Nack,
            Box::new(|fe| ask(fe, req::SET_FEATURES, &(1u64 << 60).to_ne_bytes(), &[])),
        ),
        (
            "memory table of 0 regions",
            Want::Closed,
            Box::new(move |fe| ask(fe, req::SET_MEM_TABLE, &region(0, ram), &[fe.guest.file.as_raw_fd()])),
        ),
        (
            "region larger than its file",
            Want::Nack,
            Box::new(move |fe| ask(fe, req::SET_MEM_TABLE, &region(1, ram * 2), &[fe.guest.file.as_raw_fd()])),
        ),
        (
            "region of 2^64 - 4096 bytes",
            Want::Refused,
            Box::new(move |fe| ask(fe, req::SET_MEM_TABLE, &region(1, u64::MAX - 4095), &[fe.guest.file.as_raw_fd()])),
        ),
        (
            "region offset overflowing",
            Want::Refused,
            Box::new(move |fe| {
                let t = mem_table(&[(GPA_BASE, 4096, UVA_BASE, u64::MAX - 100)], 1);
                ask(fe, req::SET_MEM_TABLE, &t, &[fe.guest.file.as_raw_fd()])
            }),
        ),
        (
            "overlapping regions",
            Want::Nack,
            Box::new(move |fe| {
                let t = mem_table(&[(GPA_BASE, 8192, UVA_BASE, 0), (GPA_BASE + 4096, 4096, UVA_BASE + 0x10000, 0)], 2);
                let f = fe.guest.file.as_raw_fd();
                ask(fe, req::SET_MEM_TABLE, &t, &[f, f])
            }),
        ),
        (
            "two regions, one fd",
            Want::Refused,
            Box::new(move |fe| {
                let t = mem_table(&[(GPA_BASE, 4096, UVA_BASE, 0), (GPA_BASE + 8192, 4096, UVA_BASE + 0x10000, 0)], 2);
                ask(fe, req::SET_MEM_TABLE, &t, &[fe.guest.file.as_raw_fd()])
            }),
        ),
        (
            "a pipe as memory",
            Want::Nack,
            Box::new(move |fe| {
                let (pr, _pw) = full_pipe();
                ask(fe, req::SET_MEM_TABLE, &region(1, 4096), &[pr.as_raw_fd()])
            }),
        ),
        (
            "a file on procfs as memory",
            Want::Nack,
            Box::new(move |fe| {
                let f = File::open("/proc/self/status").unwrap();
                ask(fe, req::SET_MEM_TABLE, &region(1, 1), &[f.as_raw_fd()])
            }),
        ),
        (
            "a regular file on disk as memory",
            Want::Nack,
            Box::new(move |fe| {
                // The target directory: on disk (a tmpfs one would be shared memory, and accepted).
                let path =
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fp-vu-h-ram-{}", std::process::id()));
                let f =
                    std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
                f.set_len(1 << 20).unwrap();
                let _ = std::fs::remove_file(&path);
                ask(fe, req::SET_MEM_TABLE, &region(1, 1 << 20), &[f.as_raw_fd()])
            }),
        ),
        (
            "40 fds on one memory table",
            Want::Refused,
            Box::new(move |fe| {
                let e: Vec<EventFd> = (0..40).map(|_| EventFd::new(0).unwrap()).collect();
                let fds: Vec<RawFd> = e.iter().map(|e| e.as_raw_fd()).collect();
                ask(fe, req::SET_MEM_TABLE, &region(1, ram), &fds)
            }),
        ),
        ("ring size 0", Want::Nack, Box::new(|fe| ask(fe, req::SET_VRING_NUM, &vring_state(0, 0), &[]))),
        ("ring size 3", Want::Nack, Box::new(|fe| ask(fe, req::SET_VRING_NUM, &vring_state(0, 3), &[]))),
        ("ring size 65536", Want::Nack, Box::new(|fe| ask(fe, req::SET_VRING_NUM, &vring_state(1, 65536), &[]))),
        ("vring 200", Want::Nack, Box::new(|fe| ask(fe, req::SET_VRING_NUM, &vring_state(200, 256), &[]))),
        (
            "kick of vring 200",
            Want::Nack,
            Box::new(|fe| ask(fe, req::SET_VRING_KICK, &200u64.to_ne_bytes(), &[fe.kick[0].as_raw_fd()])),
        ),
        (
            "call as a socket",
            Want::Nack,
            Box::new(|fe| {
                let (a, _b) = UnixStream::pair().unwrap();
                ask(fe, req::SET_VRING_CALL, &0u64.to_ne_bytes(), &[a.as_raw_fd()])
            }),
        ),
        (
            "a header split from its fds",
            Want::Closed,
            Box::new(|fe| {
                let m = message(req::SET_VRING_CALL, FLAG_VERSION, &0u64.to_ne_bytes());
                fe.send_raw(&m[..5], &[fe.call[0].as_raw_fd()]).ok()?;
                fe.send_raw(&m[5..], &[]).ok()?;
                None
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, want, attack) in cases {
        let mut fe = TestFrontend::connect(&r.sock).unwrap();
        fe.negotiate().unwrap();
        let got = attack(&fe);
        fe.raw.set_read_timeout(Some(DEADLINE)).unwrap();
        // What happened: accepted, refused with the connection still usable (the backend
        // answers the next request), refused and closed, or closed without an answer.
        let seen = match got {
            Some(0) => "accepted",
            Some(_) if fe.fe.get_features().is_ok() => "nack",
            Some(_) if eof(&fe.raw) => "nack+closed",
            None if eof(&fe.raw) => "closed",
            _ => "neither answered nor closed",
        };
        let ok = match want {
            Want::Nack => seen == "nack",
            Want::Refused => seen.starts_with("nack") || seen == "closed",
            Want::Closed => seen == "closed" || seen == "nack+closed",
        };
        if !ok {
            wrong.push(format!("{what}: wanted {want:?}, saw {seen}"));
        }
        drop(fe);
        r.wait_disconnected();
        r = finish(r, before, what);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Vrings whose addresses lie outside guest memory never go live; the lcore does nothing.
    let fe = TestFrontend::with_memory(&r.sock).unwrap();
    fe.fe.set_vring_num(1, 256).unwrap();
    let outside = vhost::VringConfigData {
        queue_max_size: 256,
        queue_size: 256,
        flags: 0,
        // The table runs past the end of RAM, the used ring starts after it, the avail ring
        // wraps the address space (all suitably aligned, so only the memory check refuses them).
        desc_table_addr: UVA_BASE + ram - 16,
        used_ring_addr: UVA_BASE + ram + 0x1000,
        avail_ring_addr: u64::MAX - 0x1ff,
        log_addr: None,
    };
    fe.fe.set_vring_addr(1, &outside).unwrap();
    fe.fe.set_vring_kick(1, &fe.kick[1]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!r.port.vring_live(1));
    assert_eq!(r.round(), (0, 0));
    drop(fe);
    r.wait_disconnected();
    let mut r = finish(r, before, "vring outside memory");

    // Memory tables in a loop while the lcore (this test) does not poll: replaced tables stay
    // mapped until it lets go, so after a few the port refuses more instead of piling them up.
    let mut fe = TestFrontend::connect(&r.sock).unwrap();
    fe.negotiate().unwrap();
    let nacks = (0..10).filter(|_| fe.send_mem_table().is_err()).count();
    assert!(nacks >= 10 - fastpath_vhost_user::device::MAX_LIVE_TABLES, "{nacks} of 10 refused");
    assert!(fe.fe.get_features().is_ok(), "the connection stays usable");
    drop(fe);
    r.wait_disconnected();
    let r = finish(r, before, "memory tables in a loop");
    // The memfd helper is used so that the test binary links it (and checks it compiles).
    drop(memfd("unused", 4096));
    drop(r);
}
