//! `fastpath l2fwd --port vhost-user:...` against DPDK's testpmd `net_virtio_user` as the
//! frontend (and, in `vhost_user_guest.rs`, a QEMU guest): io loopback with traffic for several
//! seconds, a frontend that leaves and comes back mid-traffic, client mode against a frontend
//! that listens, two queue pairs. Each run ends with every mbuf back in the pool.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FASTPATH: &str = env!("CARGO_BIN_EXE_fastpath");

fn dpdk_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/dpdk.sh")
}

/// The tests share the machine's two cores with testpmd: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn require(test: &str) -> bool {
    if !fastpath_pmd::testutil::require(test, true, &["dpdk-testpmd"]) {
        return false;
    }
    if !dpdk_sh().is_file() {
        assert!(!fastpath_pmd::testutil::in_ci(), "{test}: {} is missing", dpdk_sh().display());
        eprintln!("SKIPPED {test}: {} is missing", dpdk_sh().display());
        return false;
    }
    true
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

/// The runtime folder a testpmd with `--file-prefix` leaves behind, removed at the end.
struct DpdkPrefix(String);

impl Drop for DpdkPrefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

/// A child process killed (and reaped) when the guard goes, even on failure.
struct Kid(Option<Child>);

impl Kid {
    fn output(mut self) -> String {
        let c = self.0.take().expect("child");
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

/// fastpath l2fwd on one vhost-user port for `secs` seconds, JSON output, lcore on CPU 1 (the
/// frontend's forwarding lcore is CPU 0).
fn fastpath(spec: &str, secs: f64, extra: &[&str]) -> Kid {
    let d = secs.to_string();
    let mut args = vec!["l2fwd", "--port", spec, "--duration", &d, "--json"];
    if !extra.contains(&"--cores") {
        args.extend(["--cores", "1"]);
    }
    args.extend(extra);
    let c = Command::new(FASTPATH)
        .args(&args)
        .env("RUST_LOG", "info")
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

/// Runs `dpdk.sh virtio-user SOCK SECS [MODE] [server]` and returns its (rx, tx) Mpps line.
fn virtio_user(sock: &str, secs: u32, server: bool) -> (f64, f64, String) {
    let mut c = Command::new("bash");
    c.arg(dpdk_sh()).args(["virtio-user", sock, &secs.to_string(), "io"]);
    if server {
        c.arg("server");
    }
    let out = c.output().expect("run dpdk.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.starts_with("dpdk virtio-user:")).unwrap_or_default().to_string();
    let num = |k: &str| -> f64 {
        let w: Vec<&str> = line.split_whitespace().collect();
        w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    (num("rx"), num("tx"), text)
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
}

#[test]
fn vhost_user_io_loopback_with_testpmd() {
    let _serial = serial();
    if !require("vhost_user_io_loopback_with_testpmd") {
        return;
    }
    let sock = Sock::new("loop");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()), 9.0, &[]);
    wait_socket(sock.path());
    let (rx, tx, text) = virtio_user(sock.path(), 6, false);
    let r = report(fp.output());
    assert!(rx >= 0.01 && tx >= 0.01, "testpmd received and sent through fastpath: {text}");
    let p = r.port["rx_packets"].as_u64().unwrap();
    assert!(p > 20_000, "fastpath forwarded {p} packets:\n{}", r.text);
    // io loopback sends back all it receives, except what is in hand when the frontend leaves
    // (its rings stop): those are counted as drops.
    let (tx, drops) = (r.port["tx_packets"].as_u64().unwrap(), r.port["tx_drops"].as_u64().unwrap());
    assert_eq!(tx + drops, p, "every received packet sent or counted:\n{}", r.text);
    assert!(drops <= 1024, "only the packets in flight at the end are dropped:\n{}", r.text);
    assert_eq!(r.x("connections"), 1);
    assert_eq!(r.x("connected"), 0, "testpmd left before the end");
    assert_eq!(r.x("q0_rx_bytes"), 64 * p, "64-byte frames from testpmd");
    r.check_clean();
}

/// Runs testpmd `net_virtio_user` with `vdev_extra` added to its vdev (e.g. `,packed_vq=1`) in
/// io loopback for `secs` seconds against `sock`, the way `dpdk.sh virtio-user` does; returns the
/// largest RX-packets total it printed and its output.
fn virtio_user_with(sock: &str, secs: u32, vdev_extra: &str, prefix: &str) -> (u64, String) {
    let log = std::env::temp_dir().join(format!("fp-vu-{prefix}-{}.log", std::process::id()));
    let pfx = format!("{prefix}{}", std::process::id());
    let _prefix = DpdkPrefix(pfx.clone());
    let st = Command::new("timeout")
        .args(["-s", "INT", &secs.to_string(), "dpdk-testpmd", "-l", "0-1", "--main-lcore", "1", "--no-huge"])
        .args(["-m", "1024", "--no-pci", "--log-level=*:error", "--file-prefix", &pfx])
        .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={sock},queues=1{vdev_extra}"))
        .args(["--", "--forward-mode=io", "--nb-cores=1", "--txd=1024", "--rxd=1024", "--tx-first"])
        .args(["--total-num-mbufs=16384", "--stats-period", "1", "--auto-start"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("testpmd log"))
        .stderr(Stdio::null())
        .status()
        .expect("run testpmd");
    let _ = st;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let best = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RX-packets:"))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (best, text)
}

#[test]
fn vhost_user_packed_ring_io_loopback_with_testpmd() {
    let _serial = serial();
    if !require("vhost_user_packed_ring_io_loopback_with_testpmd") {
        return;
    }
    let sock = Sock::new("packed");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()), 9.0, &[]);
    wait_socket(sock.path());
    let (got, text) = virtio_user_with(sock.path(), 6, ",packed_vq=1", "fpvupk");
    let r = report(fp.output());
    assert!(got > 20_000, "testpmd received {got} packets back through fastpath:\n{text}");
    assert_eq!(r.x("ring_packed"), 1, "the frontend negotiated the packed ring:\n{}", r.text);
    let p = r.port["rx_packets"].as_u64().unwrap();
    assert!(p > 20_000, "fastpath forwarded {p} packets:\n{}", r.text);
    let (tx, drops) = (r.port["tx_packets"].as_u64().unwrap(), r.port["tx_drops"].as_u64().unwrap());
    assert!(tx > 20_000, "traffic both ways:\n{}", r.text);
    assert_eq!(tx + drops, p, "every received packet sent or counted:\n{}", r.text);
    assert!(drops <= 1024, "only the packets in flight at the end are dropped:\n{}", r.text);
    assert_eq!(r.x("q0_rx_bytes"), 64 * p, "64-byte frames from testpmd");
    assert_eq!(r.x("q0_rx_broken") + r.x("q0_tx_broken"), 0);
    r.check_clean();
}

#[test]
fn vhost_user_frontend_reconnects_mid_traffic() {
    let _serial = serial();
    if !require("vhost_user_frontend_reconnects_mid_traffic") {
        return;
    }
    let sock = Sock::new("reconn");
    let fp = fastpath(&format!("vhost-user:{}", sock.path()), 16.0, &[]);
    wait_socket(sock.path());
    // The first frontend is killed (SIGKILL) in the middle of its traffic: no GET_VRING_BASE,
    // no goodbye, its rings still full.
    let log = std::env::temp_dir().join(format!("fp-vu-kill-{}.log", std::process::id()));
    let _prefix = DpdkPrefix(format!("fpvukill{}", std::process::id()));
    // stdbuf: line-buffered statistics, so that they are in the file before the kill.
    let mut tp = Command::new("stdbuf")
        .args(["-oL", "dpdk-testpmd", "-l", "0-1", "--main-lcore", "1", "--no-huge", "-m", "1024"])
        .args(["--no-pci", "--log-level=*:error", "--file-prefix"])
        .arg(format!("fpvukill{}", std::process::id()))
        .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={},queues=1", sock.path()))
        .args(["--", "--forward-mode=io", "--nb-cores=1", "--txd=1024", "--rxd=1024", "--tx-first"])
        .args(["--total-num-mbufs=16384", "--stats-period", "1", "--auto-start"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("testpmd log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start testpmd");
    std::thread::sleep(Duration::from_secs(5));
    // Its per-second statistics show the traffic it had before it is killed.
    let stats = std::fs::read_to_string(&log).unwrap_or_default();
    tp.kill().expect("SIGKILL testpmd");
    let _ = tp.wait();
    let _ = std::fs::remove_file(&log);
    let best = stats
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RX-packets:"))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(best > 10_000, "the first frontend had traffic before it was killed:\n{stats}");
    // testpmd is gone (its rings mid-traffic); a new one connects to the same socket.
    // dpdk.sh reports medians over the stats periods after the first two: >= 5 s per run.
    let (rx2, tx2, t2) = virtio_user(sock.path(), 6, false);
    assert!(rx2 >= 0.01 && tx2 >= 0.01, "traffic resumes after the frontend came back: {t2}");
    let r = report(fp.output());
    assert_eq!(r.x("connections"), 2);
    assert_eq!(r.x("mem_tables"), 2);
    r.check_clean();
}

#[test]
fn vhost_user_client_mode_against_listening_frontend() {
    let _serial = serial();
    if !require("vhost_user_client_mode_against_listening_frontend") {
        return;
    }
    let sock = Sock::new("client");
    // fastpath starts first and retries every 0.2 s until a frontend listens; that frontend
    // (testpmd, server=1) then goes away and a new one listens on the same path: fastpath
    // reconnects to it.
    let fp = fastpath(&format!("vhost-user:{},client,reconnect=0.2", sock.path()), 16.0, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let (rx, tx, text) = virtio_user(sock.path(), 6, true);
    assert!(rx >= 0.01 && tx >= 0.01, "traffic in client mode: {text}");
    let (rx2, tx2, text2) = virtio_user(sock.path(), 6, true);
    assert!(rx2 >= 0.01 && tx2 >= 0.01, "traffic after reconnecting to a new frontend: {text2}");
    let r = report(fp.output());
    assert_eq!(r.x("connections"), 2, "{}", r.text);
    assert!(r.port["rx_packets"].as_u64().unwrap() > 20_000, "{}", r.text);
    r.check_clean();
}

#[test]
fn vhost_user_two_queue_pairs_with_testpmd() {
    let _serial = serial();
    if !require("vhost_user_two_queue_pairs_with_testpmd") {
        return;
    }
    let sock = Sock::new("mq");
    // Two lcores: one per queue pair (rx q -> tx q on the same lcore).
    let fp = fastpath(&format!("vhost-user:{},queues=2", sock.path()), 9.0, &["--cores", "0,1"]);
    wait_socket(sock.path());
    let log = std::env::temp_dir().join(format!("fp-vu-mq-{}.log", std::process::id()));
    let _prefix = DpdkPrefix(format!("fpvumq{}", std::process::id()));
    // testpmd with two queue pairs, io forwarding, RSS off: --tx-first sends on both queues.
    let tp = Command::new("timeout")
        .args(["-s", "INT", "6", "dpdk-testpmd", "-l", "0-1", "--main-lcore", "1", "--no-huge", "-m", "1024"])
        .args(["--no-pci", "--log-level=*:error", "--file-prefix"])
        .arg(format!("fpvumq{}", std::process::id()))
        .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={},queues=2", sock.path()))
        .args(["--", "--forward-mode=io", "--nb-cores=1", "--rxq=2", "--txq=2", "--txd=1024", "--rxd=1024"])
        .args(["--tx-first", "--total-num-mbufs=16384", "--stats-period", "1", "--auto-start"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .status()
        .expect("run testpmd");
    let _ = tp;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let r = report(fp.output());
    // Both queue pairs carry traffic both ways.
    for k in ["q0_rx_packets", "q1_rx_packets", "q0_tx_packets", "q1_tx_packets"] {
        assert!(r.x(k) > 1000, "{k}: both queue pairs carry traffic:\n{}\n{text}", r.text);
    }
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
