//! A hostile vhost-user frontend against a running `fastpath l2fwd` (issue 11): one lcore serves
//! a well-behaved frontend W (port 0, forwarded through a ring loopback on port 1 and back) and
//! the hostile one H (port 2, alone: it sends back out of itself). Each attack runs, repeated,
//! while W's frames keep being delivered (a count: W must get `DURING` more frames while the
//! attack is in place); afterwards a well-behaved frontend gets service on H's port and the
//! process holds no more fds or mappings than before. At the end SIGINT stops the process with
//! every mbuf back. A second test sends SIGINT while a frontend is in the middle of each attack.
//!
//! W is a frontend in this test process (no root, no peer). With `FP_HOSTILE_TESTPMD=1` (root and
//! `dpdk-testpmd` needed) W is DPDK's testpmd `net_virtio_user` in io mode instead, on CPU 0, and
//! the test prints W's Mpps before and during each attack (printed, not asserted).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastpath_vhost_user::testutil::frontend::{message, req, TestFrontend, FLAG_VERSION};
use vmm_sys_util::eventfd::EventFd;

const FASTPATH: &str = env!("CARGO_BIN_EXE_fastpath");
/// A deadline, not a measurement.
const DEADLINE: Duration = Duration::from_secs(60);
/// Frames W must get while an attack is in place.
const DURING: u64 = 50_000;
const FULL: u64 = u64::MAX - 1;
/// With testpmd as W: the shortest window the printed Mpps is taken over.
const WINDOW: Duration = Duration::from_secs(4);

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps this test's own busy threads (frontends, attackers) on CPU 0, away from fastpath's
/// lcore on CPU 1 (when CPU 0 is ours to use).
fn on_cpu0() {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity take a valid set for
    // the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// W is testpmd (FP_HOSTILE_TESTPMD=1).
fn with_testpmd() -> bool {
    std::env::var("FP_HOSTILE_TESTPMD").is_ok_and(|v| v == "1")
}

fn sock(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("fp-vu-hostile-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// `fastpath l2fwd` with its stdout read line by line: the `--stats` totals per port and,
/// at the end, the JSON report.
struct Fastpath {
    child: Option<Child>,
    /// Latest (rx, tx) totals per port from the `--stats` lines.
    totals: Arc<Mutex<Vec<(u64, u64)>>>,
    out: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Fastpath {
    fn start(ports: &[String]) -> Fastpath {
        let mut args: Vec<String> = vec!["l2fwd".into()];
        for p in ports {
            args.extend(["--port".into(), p.clone()]);
        }
        args.extend(["--cores", "1", "--stats", "0.2", "--json"].map(String::from));
        let mut child = Command::new(FASTPATH)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fastpath");
        let totals = Arc::new(Mutex::new(vec![(0, 0); ports.len()]));
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (t, o) = (totals.clone(), out.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "port N driver rx .. Mpps .. Gbps | tx .. | rx R tx T drops D"
                if let (Some(rest), Some(tail)) = (line.strip_prefix("port "), line.rsplit('|').next()) {
                    let w: Vec<&str> = tail.split_whitespace().collect();
                    let port: usize = rest.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(usize::MAX);
                    if let (Some(rx), Some(tx)) =
                        (w.get(1).and_then(|v| v.parse().ok()), w.get(3).and_then(|v| v.parse().ok()))
                    {
                        if let Some(e) = t.lock().unwrap_or_else(|e| e.into_inner()).get_mut(port) {
                            *e = (rx, tx);
                        }
                    }
                }
                let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
                o.push_str(&line);
                o.push('\n');
            }
        });
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
                o.push_str(&line);
                o.push('\n');
            }
        });
        Fastpath { child: Some(child), totals, out, reader: Some(reader) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Frames delivered to port `p`'s peer so far (its tx total).
    fn tx(&self, p: usize) -> u64 {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())[p].1
    }

    /// What it logged so far (without the `--stats` lines).
    fn log(&self) -> String {
        let o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        o.lines().filter(|l| !l.starts_with("port ")).collect::<Vec<_>>().join("\n")
    }

    /// fds and memory mappings the process holds now.
    fn held(&self) -> (usize, usize) {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0);
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap_or_default().lines().count();
        (fds, maps)
    }

    /// SIGINT; waits for the exit (up to `limit`) and returns the time it took and the output.
    fn interrupt(&mut self, limit: Duration) -> (Duration, String) {
        let mut c = self.child.take().unwrap();
        let t0 = Instant::now();
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                let took = t0.elapsed();
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                let out = self.out.lock().unwrap().clone();
                assert!(st.success(), "fastpath exited with {st}:\n{out}");
                return (took, out);
            }
            if t0.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                panic!("fastpath did not stop within {limit:?} of SIGINT:\n{}", self.out.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Fastpath {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The JSON report: (port objects, pool object).
fn report(out: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut ports = Vec::new();
    let mut pool = serde_json::Value::Null;
    for l in out.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            if v.get("driver").is_some() {
                ports.push(v);
            } else if v.get("mempool").is_some() {
                pool = v;
            }
        }
    }
    assert!(!pool.is_null(), "no JSON report:\n{out}");
    (ports, pool)
}

/// A frontend that keeps traffic going through its port (send and receive) until stopped.
fn pump(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        on_cpu0();
        let mut fe = TestFrontend::start(&path).expect("the well-behaved frontend is served");
        // Relaxed: a request flag.
        while !stop.load(Ordering::Relaxed) {
            fe.receive();
            fe.send(256);
            std::thread::sleep(Duration::from_micros(50));
        }
        fe.receive();
        fe.received
    })
}

/// The well-behaved frontend W: a test frontend, or testpmd.
enum Good {
    Pump(Arc<AtomicBool>, Option<std::thread::JoinHandle<u64>>),
    Testpmd(Child, String),
}

impl Good {
    fn start(path: &Path) -> Good {
        if with_testpmd() {
            assert!(
                fastpath_pmd::testutil::require("FP_HOSTILE_TESTPMD", true, &["dpdk-testpmd"]),
                "FP_HOSTILE_TESTPMD=1 needs root and dpdk-testpmd"
            );
            let prefix = format!("fphostile{}", std::process::id());
            // All of testpmd on CPU 0 (its main lcore too), beside nothing of ours.
            let c = Command::new("dpdk-testpmd")
                .args(["--lcores", "(0,1)@0", "--main-lcore", "1", "--no-huge", "-m", "1024", "--no-pci"])
                .args(["--log-level=*:error", "--file-prefix", &prefix])
                .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={},queues=1", path.display()))
                .args(["--", "--forward-mode=io", "--nb-cores=1", "--txd=1024", "--rxd=1024", "--tx-first"])
                .args(["--total-num-mbufs=16384", "--stats-period", "1", "--auto-start"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start testpmd");
            return Good::Testpmd(c, prefix);
        }
        let stop = Arc::new(AtomicBool::new(false));
        Good::Pump(stop.clone(), Some(pump(path.to_path_buf(), stop)))
    }
}

impl Drop for Good {
    fn drop(&mut self) {
        match self {
            Good::Pump(stop, t) => {
                // Relaxed: a request flag.
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
            }
            Good::Testpmd(c, prefix) => {
                // SAFETY: kill with the pid of our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
                let _ = c.wait();
                let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
            }
        }
    }
}

/// True once the port closed `s` (end of file or reset), false after `limit`.
fn closed_within(s: &UnixStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 4096];
    while t0.elapsed() < limit {
        match (&*s).read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

/// True once the port closed `s`, false after `limit`, without reading a byte of it (a frontend
/// that reads, even slowly, is not one that leaves its replies unread).
fn hung_up_within(s: &UnixStream, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let mut p = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, 100) };
        if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
    }
    false
}

/// Keeps a started frontend's traffic going for `d` (or until the port closes it).
fn traffic(fe: &mut TestFrontend, d: Duration, stop: &AtomicBool) {
    let t0 = Instant::now();
    // Relaxed: a request flag.
    while t0.elapsed() < d && !stop.load(Ordering::Relaxed) {
        fe.receive();
        fe.send(64);
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One round of an attack against the port at `path`; `armed` is set while it is in effect.
type Attack = fn(&Path, &AtomicBool, &AtomicBool);

fn call_eventfd_full(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::start(path) else { return };
    fe.call[0].write(FULL).unwrap();
    // Relaxed: a status flag for the test.
    armed.store(true, Ordering::Relaxed);
    traffic(&mut fe, Duration::from_secs(2), stop);
}

fn call_eventfd_made_blocking(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::start(path) else { return };
    fe.call[0].write(FULL).unwrap();
    // SAFETY: F_SETFL on our own fd (its description is shared with fastpath's copy).
    unsafe { libc::fcntl(fe.call[0].as_raw_fd(), libc::F_SETFL, 0) };
    armed.store(true, Ordering::Relaxed);
    traffic(&mut fe, Duration::from_millis(300), stop);
    closed_within(&fe.raw, Duration::from_secs(5));
}

fn call_fd_full_pipe(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::with_memory(path) else { return };
    let mut p = [0; 2];
    // SAFETY: p has room for two fds.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }, 0);
    // SAFETY: fresh fds that we own.
    let (r, mut w) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
    while w.write(&[0u8; 4096]).is_ok() {}
    // SAFETY: dup of our own fd, owned by the EventFd (which rust-vmm's frontend insists on).
    let fake = unsafe { EventFd::from_raw_fd(libc::dup(w.as_raw_fd())) };
    let kick = fe.kick[0].try_clone().unwrap();
    let _ = fe.setup_vring_with(0, &kick, &fake);
    let _ = fe.setup_vring(1);
    armed.store(true, Ordering::Relaxed);
    traffic(&mut fe, Duration::from_secs(1), stop);
    drop((r, w, fake));
}

fn memory_truncated(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::start(path) else { return };
    traffic(&mut fe, Duration::from_millis(100), stop);
    fe.guest.file.set_len(0).unwrap();
    armed.store(true, Ordering::Relaxed);
    // Our own view of the file is gone too: no more traffic from here.
    closed_within(&fe.raw, Duration::from_secs(5));
}

fn header_without_payload(path: &Path, armed: &AtomicBool, _: &AtomicBool) {
    let Ok(s) = UnixStream::connect(path) else { return };
    let _ = (&s).write_all(&message(req::SET_FEATURES, FLAG_VERSION, &[0u8; 8])[..12]);
    armed.store(true, Ordering::Relaxed);
    closed_within(&s, Duration::from_secs(10));
}

fn half_a_header(path: &Path, armed: &AtomicBool, _: &AtomicBool) {
    let Ok(s) = UnixStream::connect(path) else { return };
    let _ = (&s).write_all(&message(req::GET_FEATURES, FLAG_VERSION, &[])[..5]);
    armed.store(true, Ordering::Relaxed);
    closed_within(&s, Duration::from_secs(10));
}

fn replies_never_read(path: &Path, armed: &AtomicBool, _: &AtomicBool) {
    let Ok(s) = UnixStream::connect(path) else { return };
    let ask = message(req::GET_FEATURES, FLAG_VERSION, &[]);
    let flood: Vec<u8> = ask.iter().copied().cycle().take(ask.len() * 20_000).collect();
    let mut w = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&flood);
    });
    armed.store(true, Ordering::Relaxed);
    hung_up_within(&s, Duration::from_secs(10));
    drop(s);
    let _ = t.join();
}

fn kick_fds_not_eventfds(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::with_memory(path) else { return };
    let file = std::env::temp_dir().join(format!("fp-vu-hostile-kick-{}", std::process::id()));
    std::fs::write(&file, [0xabu8; 64]).unwrap();
    let f = File::open(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let mut p = [0; 2];
    // SAFETY: p has room for two fds.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds that we own.
    let (r, w) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
    drop(w);
    let call = fe.call[1].try_clone().unwrap();
    for fd in [f.as_raw_fd(), r.as_raw_fd(), fe.guest.file.as_raw_fd()] {
        // SAFETY: dup of an fd we keep open, owned by the EventFd.
        let fake = unsafe { EventFd::from_raw_fd(libc::dup(fd)) };
        let _ = fe.setup_vring_with(1, &fake, &call);
    }
    armed.store(true, Ordering::Relaxed);
    traffic(&mut fe, Duration::from_millis(500), stop);
}

fn kick_flood(path: &Path, armed: &AtomicBool, stop: &AtomicBool) {
    let Ok(mut fe) = TestFrontend::start(path) else { return };
    armed.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    // Relaxed: a request flag.
    while t0.elapsed() < Duration::from_secs(2) && !stop.load(Ordering::Relaxed) {
        for _ in 0..1000 {
            // A huge value each time, until the counter is full (then the writes fail).
            let _ = fe.kick[1].write(1 << 40);
        }
        fe.receive();
        fe.send(64);
    }
}

fn garbage(path: &Path, armed: &AtomicBool, _: &AtomicBool) {
    let Ok(s) = UnixStream::connect(path) else { return };
    let g: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = (&s).write_all(&g);
    armed.store(true, Ordering::Relaxed);
    closed_within(&s, Duration::from_secs(10));
}

const ATTACKS: [(&str, Attack); 10] = [
    ("call eventfd pre-filled", call_eventfd_full),
    ("call eventfd made blocking again and full", call_eventfd_made_blocking),
    ("call fd a full pipe", call_fd_full_pipe),
    ("memory file truncated", memory_truncated),
    ("header announcing a payload, then nothing", header_without_payload),
    ("half a header", half_a_header),
    ("replies never read", replies_never_read),
    ("kick fds that are not eventfds", kick_fds_not_eventfds),
    ("kick flood with huge values", kick_flood),
    ("garbage bytes", garbage),
];

/// A well-behaved frontend on H's port sends 256 frames and gets them all back.
fn good_service(path: &Path, fp: &Fastpath) {
    let mut fe = TestFrontend::start(path).expect("a well-behaved frontend is served after the attack");
    let t0 = Instant::now();
    let mut sent = 0;
    while fe.received < 256 {
        assert!(
            t0.elapsed() < DEADLINE,
            "the good frontend got {} of 256 frames back; fastpath so far:\n{}",
            fe.received,
            fp.log()
        );
        fe.receive();
        if sent < 256 {
            sent += fe.send(256 - sent);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn mpps(frames: u64, d: Duration) -> f64 {
    frames as f64 / d.as_secs_f64() / 1e6
}

#[test]
fn a_hostile_frontend_never_stops_service_for_a_good_one_on_the_same_lcore() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let (w, h) = (sock("w"), sock("h"));
    let ring = format!("ring:fp-hostile-{}", std::process::id());
    let mut fp = Fastpath::start(&[format!("vhost-user:{}", w.display()), ring, format!("vhost-user:{}", h.display())]);
    wait("the sockets", || w.exists() && h.exists());
    let good = Good::start(&w);
    // Before: W's frames come back (port 0's transmit total is what W received).
    wait("W's traffic", || fp.tx(0) >= DURING);
    let (t0, d0) = (Instant::now(), fp.tx(0));
    wait("W's traffic", || fp.tx(0) >= d0 + DURING && (!with_testpmd() || t0.elapsed() >= WINDOW));
    println!("W before any attack: {:.3} Mpps", mpps(fp.tx(0) - d0, t0.elapsed()));
    good_service(&h, &fp);
    // What the process holds once H's first frontend is gone and its memory unmapped.
    std::thread::sleep(Duration::from_millis(500));
    let base = fp.held();

    for (name, attack) in ATTACKS {
        // With testpmd: W's rate over a window with no attack, right before this one (a pair
        // taken in the same conditions of a shared machine). Printed, not asserted.
        let before = with_testpmd().then(|| {
            let (t0, d0) = (Instant::now(), fp.tx(0));
            std::thread::sleep(WINDOW);
            mpps(fp.tx(0) - d0, t0.elapsed())
        });
        let (armed, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let rounds = Arc::new(AtomicU64::new(0));
        let t = {
            let (p, a, s, n) = (h.clone(), armed.clone(), stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                on_cpu0();
                // Relaxed: request and status flags for the test.
                while !s.load(Ordering::Relaxed) {
                    attack(&p, &a, &s);
                    n.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Relaxed: a status flag.
        wait(name, || armed.load(Ordering::Relaxed));
        let (t0, d0) = (Instant::now(), fp.tx(0));
        let t1 = Instant::now();
        // With testpmd the printed Mpps is taken over at least WINDOW (the count is the test).
        while fp.tx(0) < d0 + DURING || (with_testpmd() && t0.elapsed() < WINDOW) {
            assert!(
                t1.elapsed() < DEADLINE,
                "{name}: W got {} frames in {DEADLINE:?} while the attack ran",
                fp.tx(0) - d0
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (got, took) = (fp.tx(0) - d0, t0.elapsed());
        // Relaxed: a request flag.
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        println!(
            "{name}: W got {got} frames while it ran ({:.3} Mpps{}, {} attack rounds)",
            mpps(got, took),
            before.map_or(String::new(), |b| format!("; {b:.3} Mpps in the {WINDOW:?} before it")),
            rounds.load(Ordering::Relaxed)
        );
        good_service(&h, &fp);
        let t1 = Instant::now();
        loop {
            let now = fp.held();
            if now.0 <= base.0 && now.1 <= base.1 {
                break;
            }
            assert!(t1.elapsed() < DEADLINE, "{name}: fastpath holds {now:?} (fds, maps), before {base:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    drop(good);
    let (took, out) = fp.interrupt(DEADLINE);
    println!("SIGINT to exit: {took:?}");
    let (ports, pool) = report(&out);
    assert_eq!(pool["available"], pool["capacity"], "every mbuf back:\n{out}");
    let x = &ports[2]["xstats"];
    for k in [
        "closed_msg_timeout",
        "closed_bad_message",
        "closed_replies_unread",
        "closed_mem_fault",
        "closed_call_fd_blocking",
    ] {
        assert!(x[k].as_u64().unwrap_or(0) >= 1, "{k} counted:\n{out}");
    }
    assert!(x["fds_refused"].as_u64().unwrap_or(0) >= 4, "{out}");
    assert!(x["q0_tx_guest_calls_skipped"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn sigint_stops_fastpath_whatever_a_frontend_is_doing() {
    let _cpus = fastpath_pmd::testutil::pollers();
    // States a frontend can leave a connection in when the stop comes.
    let states: [(&str, Attack); 6] = [
        ("a header announcing a payload, then nothing", header_without_payload),
        ("half a header", half_a_header),
        ("replies never read", replies_never_read),
        ("call eventfd pre-filled, traffic running", call_eventfd_full),
        ("call eventfd made blocking and full", call_eventfd_made_blocking),
        ("memory file truncated", memory_truncated),
    ];
    for (name, attack) in states {
        let h = sock("sigint");
        let mut fp = Fastpath::start(&[format!("vhost-user:{}", h.display())]);
        wait("the socket", || h.exists());
        let (armed, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let t = {
            let (p, a, s) = (h.clone(), armed.clone(), stop.clone());
            std::thread::spawn(move || {
                on_cpu0();
                attack(&p, &a, &s)
            })
        };
        // Relaxed: a status flag.
        wait(name, || armed.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50));
        // Generous for a shared machine; the time is printed (the aim is well under a second).
        let (took, out) = fp.interrupt(Duration::from_secs(3));
        println!("{name}: SIGINT to exit {took:?}");
        // Relaxed: a request flag.
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
        let (_, pool) = report(&out);
        assert_eq!(pool["available"], pool["capacity"], "{name}: every mbuf back:\n{out}");
        let _ = std::fs::remove_file(&h);
    }
}
