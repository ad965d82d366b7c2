//! `fastpath l2fwd --port vhost-user:...` against DPDK's testpmd `net_virtio_user` as the
//! frontend (and, in `vhost_user_guest.rs`, a QEMU guest): io loopback, a frontend that leaves
//! and comes back mid-traffic, client mode against a frontend that listens, two queue pairs.
//! Each waits until testpmd has had a known number of frames back through fastpath (a count
//! with a generous deadline, never a rate), and ends with every frame accounted for and every
//! mbuf back in the pool. fastpath's lcore runs on CPU 1, testpmd on CPU 0, and the tests hold
//! the suite's busy-poller lock.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FASTPATH: &str = env!("CARGO_BIN_EXE_fastpath");

fn require(test: &str) -> bool {
    fastpath_pmd::testutil::require(test, true, &["dpdk-testpmd", "stdbuf"])
}

/// A socket path unique to this test run, removed at the end (even on failure).
struct Sock(PathBuf);

impl Sock {
    fn new(name: &str) -> Sock {
        let p = std::env::temp_dir().join(format!("fp-vu-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Sock(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process killed (and reaped) when the guard goes, even on failure.
struct Kid(Option<Child>);

impl Kid {
    /// SIGINT, then everything it printed.
    fn interrupt_and_output(mut self) -> String {
        let c = self.0.take().expect("child");
        // SAFETY: kill() on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let out = c.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// fastpath l2fwd on `spec` until SIGINT, JSON report, its lcore alone on CPU 1 (testpmd has
/// CPU 0).
fn fastpath(spec: &str) -> Kid {
    fastpath_with(spec, &["--cores", "1"])
}

fn fastpath_with(spec: &str, args: &[&str]) -> Kid {
    let c = Command::new(FASTPATH)
        .args(["l2fwd", "--port", spec, "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fastpath");
    Kid(Some(c))
}

fn wait_socket(p: &str) {
    let t0 = Instant::now();
    while !std::path::Path::new(p).exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{p} did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a frontend may take to start and move its frames: long enough for a loaded
/// machine (testpmd's start alone takes 1-5 s); the tests wait for counts, not for time.
const DEADLINE: Duration = Duration::from_secs(60);

/// DPDK testpmd as the frontend (`net_virtio_user`, io forwarding with `--tx-first`: the frames
/// it sends come back through fastpath and circulate). Both of its lcores share CPU 0 (the
/// main lcore sleeps while the forwarding one polls), so that neither its start-up nor its
/// statistics compete with fastpath's lcore on CPU 1. Its statistics are read from its
/// line-buffered output: `RX-packets` per port, cumulative.
struct Testpmd {
    kid: Kid,
    log: PathBuf,
    prefix: String,
}

impl Testpmd {
    /// Starts testpmd on `sock`; `vdev_extra` is appended to its vdev (`,server=1`,
    /// `,packed_vq=1`, `,queues=2`), `args` to its application arguments.
    fn start(tag: &str, sock: &str, vdev_extra: &str, args: &[&str]) -> Testpmd {
        let prefix = format!("fpvu{tag}{}", std::process::id());
        let log = std::env::temp_dir().join(format!("{prefix}.log"));
        let c = Command::new("stdbuf")
            .args(["-oL", "dpdk-testpmd", "--lcores", "(0,1)@0", "--main-lcore", "1", "--no-huge", "-m", "1024"])
            .args(["--no-pci", "--log-level=*:error", "--file-prefix", &prefix])
            .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={sock}{vdev_extra}"))
            .args(["--", "--forward-mode=io", "--nb-cores=1", "--txd=1024", "--rxd=1024", "--tx-first"])
            .args(["--total-num-mbufs=16384", "--stats-period", "1", "--auto-start"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("testpmd log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start testpmd");
        Testpmd { kid: Kid(Some(c)), log, prefix }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The largest cumulative RX-packets it printed so far (any port).
    fn rx_so_far(&self) -> u64 {
        last_count(&self.text(), "RX-packets:")
    }

    /// Waits until testpmd has received `n` frames back (true), or the deadline passed.
    fn wait_rx(&self, n: u64) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < DEADLINE {
            if self.rx_so_far() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// SIGINT, and its final forward statistics (accumulated over ports): (rx, tx, output).
    fn stop(mut self) -> (u64, u64, String) {
        if let Some(c) = self.kid.0.take() {
            let mut c = c;
            // SAFETY: kill() on our own child's pid (stdbuf exec'd testpmd in place).
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
        let text = self.text();
        let tail = text.rsplit_once("Accumulated forward statistics").map_or(text.as_str(), |(_, t)| t);
        (last_count(tail, "RX-packets:"), last_count(tail, "TX-packets:"), text)
    }

    /// SIGKILL: gone mid-traffic, no goodbye; returns what it printed.
    fn kill(mut self) -> String {
        drop(self.kid.0.take().map(|mut c| {
            let _ = c.kill();
            c.wait()
        }));
        self.text()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        drop(self.kid.0.take().map(|mut c| {
            let _ = c.kill();
            c.wait()
        }));
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// The largest number after `key` in testpmd's output (its counters only grow); a key
/// followed by something that is not a number fails the test.
fn last_count(text: &str, key: &str) -> u64 {
    text.split(key)
        .skip(1)
        .map(|rest| {
            let w = rest.split_whitespace().next().unwrap_or_default();
            w.parse::<u64>().unwrap_or_else(|_| panic!("testpmd printed '{key} {w}': not a count"))
        })
        .max()
        .unwrap_or(0)
}

struct Report {
    port: Value,
    pool: Value,
    text: String,
}

fn report(out: String) -> Report {
    let mut port = Value::Null;
    let mut pool = Value::Null;
    for l in out.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(l) {
            if v.get("driver").is_some() && v["port"] == 0 {
                port = v;
            } else if v.get("mempool").is_some() {
                pool = v;
            }
        }
    }
    assert!(!port.is_null() && !pool.is_null(), "no JSON report from fastpath:\n{out}");
    Report { port, pool, text: out }
}

impl Report {
    fn x(&self, k: &str) -> u64 {
        self.port["xstats"][k].as_u64().unwrap_or_else(|| panic!("xstat {k} missing:\n{}", self.text))
    }
    fn n(&self, k: &str) -> u64 {
        self.port[k].as_u64().unwrap_or_else(|| panic!("{k} missing:\n{}", self.text))
    }
    fn check_clean(&self) {
        assert_eq!(self.pool["available"], self.pool["capacity"], "every mbuf back in the pool:\n{}", self.text);
        let errs: u64 = self.port["xstats"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("guest_err"))
            .map(|(_, v)| v.as_u64().unwrap_or(0))
            .sum();
        assert_eq!(errs, 0, "no guest errors:\n{}", self.text);
        assert!(!self.text.contains("panicked"), "{}", self.text);
    }
    /// io loopback sends back all it receives, except what is in hand when the frontend
    /// leaves (its rings stop): those are counted as drops.
    fn check_accounted(&self) {
        let (rx, tx, drops) = (self.n("rx_packets"), self.n("tx_packets"), self.n("tx_drops"));
        assert_eq!(tx + drops, rx, "every received packet sent or counted:\n{}", self.text);
        assert!(drops <= 1024, "only the packets in flight at the end are dropped:\n{}", self.text);
    }
}

/// Frames a testpmd must get back through fastpath before a test moves on: proof that the
/// loop runs, not a rate.
const FRAMES: u64 = 100_000;

#[test]
fn vhost_user_io_loopback_with_testpmd() {
    let _cpus = fastpath_pmd::testutil::pollers();
    if !require("vhost_user_io_loopback_with_testpmd") {
        return;
    }
    let sock = Sock::new("loop");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()));
    wait_socket(sock.path());
    let tp = Testpmd::start("loop", sock.path(), ",queues=1", &[]);
    let ok = tp.wait_rx(FRAMES);
    let (rx, tx, text) = tp.stop();
    assert!(ok && rx >= FRAMES && tx >= FRAMES, "testpmd got {FRAMES} frames back through fastpath:\n{text}");
    let r = report(fp.interrupt_and_output());
    assert!(r.n("rx_packets") >= FRAMES, "{}", r.text);
    r.check_accounted();
    assert_eq!(r.x("connections"), 1);
    assert_eq!(r.x("connected"), 0, "testpmd left before the end");
    assert_eq!(r.x("q0_rx_bytes"), 64 * r.n("rx_packets"), "64-byte frames from testpmd");
    r.check_clean();
}

#[test]
fn vhost_user_packed_ring_io_loopback_with_testpmd() {
    let _cpus = fastpath_pmd::testutil::pollers();
    if !require("vhost_user_packed_ring_io_loopback_with_testpmd") {
        return;
    }
    let sock = Sock::new("packed");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()));
    wait_socket(sock.path());
    let tp = Testpmd::start("pk", sock.path(), ",queues=1,packed_vq=1", &[]);
    let ok = tp.wait_rx(FRAMES);
    let (rx, _, text) = tp.stop();
    assert!(ok && rx >= FRAMES, "testpmd got {FRAMES} frames back through fastpath:\n{text}");
    let r = report(fp.interrupt_and_output());
    assert_eq!(r.x("ring_packed"), 1, "the frontend negotiated the packed ring:\n{}", r.text);
    assert!(r.n("rx_packets") >= FRAMES && r.n("tx_packets") >= FRAMES, "traffic both ways:\n{}", r.text);
    r.check_accounted();
    assert_eq!(r.x("q0_rx_bytes"), 64 * r.n("rx_packets"), "64-byte frames from testpmd");
    assert_eq!(r.x("q0_rx_broken") + r.x("q0_tx_broken"), 0);
    r.check_clean();
}

#[test]
fn vhost_user_frontend_reconnects_mid_traffic() {
    let _cpus = fastpath_pmd::testutil::pollers();
    if !require("vhost_user_frontend_reconnects_mid_traffic") {
        return;
    }
    let sock = Sock::new("reconn");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()));
    wait_socket(sock.path());
    // The first frontend is killed (SIGKILL) in the middle of its traffic: no GET_VRING_BASE,
    // no goodbye, its rings still full.
    let tp = Testpmd::start("kill", sock.path(), ",queues=1", &[]);
    let ok = tp.wait_rx(FRAMES);
    let text = tp.kill();
    assert!(ok, "the first frontend had traffic before it was killed:\n{text}");
    // A new one connects to the same socket: its frames circulate too.
    let tp = Testpmd::start("again", sock.path(), ",queues=1", &[]);
    let ok = tp.wait_rx(FRAMES);
    let (rx, _, text) = tp.stop();
    assert!(ok && rx >= FRAMES, "traffic resumes after the frontend came back:\n{text}");
    let r = report(fp.interrupt_and_output());
    assert_eq!(r.x("connections"), 2);
    assert_eq!(r.x("mem_tables"), 2);
    r.check_clean();
}

#[test]
fn vhost_user_client_mode_against_listening_frontend() {
    let _cpus = fastpath_pmd::testutil::pollers();
    if !require("vhost_user_client_mode_against_listening_frontend") {
        return;
    }
    let sock = Sock::new("client");
    // fastpath starts first and retries every 0.2 s until a frontend listens; that frontend
    // (testpmd, server=1) then goes away and a new one listens on the same path: fastpath
    // reconnects to it.
    let fp = fastpath(&format!("vhost-user:{},client,reconnect=0.2", sock.path()));
    for round in ["srv1", "srv2"] {
        let tp = Testpmd::start(round, sock.path(), ",queues=1,server=1", &[]);
        let ok = tp.wait_rx(FRAMES);
        let (rx, _, text) = tp.stop();
        assert!(ok && rx >= FRAMES, "{round}: traffic in client mode:\n{text}");
    }
    let r = report(fp.interrupt_and_output());
    assert_eq!(r.x("connections"), 2, "{}", r.text);
    assert!(r.n("rx_packets") >= 2 * FRAMES, "{}", r.text);
    r.check_clean();
}

#[test]
fn vhost_user_two_queue_pairs_with_testpmd() {
    let _cpus = fastpath_pmd::testutil::pollers();
    if !require("vhost_user_two_queue_pairs_with_testpmd") {
        return;
    }
    let sock = Sock::new("mq");
    // Two lcores, one per queue pair (l2fwd gives lcore i tx queue i, so that both queue pairs
    // carry traffic both ways); testpmd's one forwarding lcore polls both of its queues (io
    // forwarding, RSS off: --tx-first sends on both). Three pollers on two CPUs: fastpath's
    // lcores idle adaptively (they yield CPU 0 to testpmd whenever their queues are empty).
    let fp = fastpath_with(&format!("vhost-user:{},queues=2", sock.path()), &["--cores", "0,1", "--idle", "adaptive"]);
    wait_socket(sock.path());
    let tp = Testpmd::start("mq", sock.path(), ",queues=2", &["--rxq=2", "--txq=2"]);
    let ok = tp.wait_rx(FRAMES);
    let (_, _, text) = tp.stop();
    assert!(ok, "testpmd got {FRAMES} frames back:\n{text}");
    let r = report(fp.interrupt_and_output());
    // Both queue pairs carry traffic both ways.
    for k in ["q0_rx_packets", "q1_rx_packets", "q0_tx_packets", "q1_tx_packets"] {
        assert!(r.x(k) > 1000, "{k}: both queue pairs carry traffic:\n{}\n{text}", r.text);
    }
    r.check_accounted();
    r.check_clean();
}

#[test]
fn vhost_user_bad_specs_are_usage_errors() {
    for (spec, want) in [
        ("vhost-user", "socket path is missing"),
        ("vhost-user:/tmp/x.sock,queues=0", "queues=0 is not a number in 1..=64"),
        ("vhost-user:/tmp/x.sock,reconnect=2", "reconnect= applies to client mode only"),
        ("vhost-user:/tmp/x.sock,bogus=1", "unknown key 'bogus'"),
        ("vhost-user:/nonexistent-dir/x.sock", "binding /nonexistent-dir/x.sock"),
    ] {
        let out = Command::new(FASTPATH).args(["l2fwd", "--port", spec, "--duration", "1"]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{spec}: {err}");
        if !want.starts_with("binding") {
            assert_eq!(out.status.code(), Some(2), "{spec}: a usage error: {err}");
            assert!(err.contains("vhost-user:PATH[,client][,queues=N][,reconnect=SECS]"), "{err}");
        }
    }
}
