//! Operating a running `fastpath vswitch` through its control socket (`fastpath ctl`) and its
//! Prometheus endpoint, on pcap ports (no root): the show commands return what is configured
//! and what was learned; fdb add / del / flush change the table; malformed, unknown and
//! oversized requests get a clear error and the switch keeps answering; a second switch on the
//! same socket is refused while a stale socket file is taken over; the metrics page parses with
//! a real Prometheus parser (python3-prometheus-client).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A MAC learned from the frames vm1 receives.
const SRC: &str = "02:00:00:00:00:01";
/// Frames in vm1's input.
const FRAMES: u64 = 3;

/// A folder of the test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("fp-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch folder");
        Dir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a pcap file of `n` broadcast frames from [`SRC`].
fn write_input(path: &Path, n: u64) {
    let mut f = Vec::new();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    frame.resize(60, 0);
    for i in 0..n as u32 {
        for v in [i, 0, 60, 60] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f).expect("write pcap");
}

/// The config: bridge br0 of vm1 (pcap input) and vm2 (pcap output).
fn config(d: &Dir) -> PathBuf {
    write_input(&d.path("in.pcap"), FRAMES);
    let text = format!(
        "[vswitch]\nidle = \"adaptive\"\nmbufs = 4096\n\n[[bridge]]\nname = \"br0\"\n\n\
         [[port]]\nname = \"vm1\"\nspec = \"pcap:rx={0}/in.pcap,tx={0}/out1.pcap\"\nbridge = \"br0\"\n\n\
         [[port]]\nname = \"vm2\"\nspec = \"pcap:tx={0}/out2.pcap\"\nbridge = \"br0\"\n",
        d.0.display()
    );
    let p = d.path("vswitch.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// `fastpath vswitch` until dropped (SIGINT, then reaped).
struct Switch(Option<Child>, PathBuf);

impl Switch {
    /// Starts the switch on CPU 1 with its control socket at `ctl` and `more` arguments;
    /// returns once the socket answers.
    fn start(d: &Dir, ctl: &Path, more: &[&str]) -> Switch {
        Switch::start_with(d, &config(d), ctl, more)
    }

    /// [`Switch::start`] with the config at `cfg`.
    fn start_with(d: &Dir, cfg: &Path, ctl: &Path, more: &[&str]) -> Switch {
        let cores: &[&str] = if more.contains(&"--cores") { &[] } else { &["--cores", "1"] };
        let c = Command::new(env!("CARGO_BIN_EXE_fastpath"))
            .args(["vswitch", "--duration", "120", "--config"])
            .arg(cfg)
            .args(cores)
            .arg("--ctl")
            .arg(ctl)
            .args(more)
            .stdout(std::fs::File::create(d.path("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(d.path("stderr")).expect("stderr"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start fastpath vswitch");
        let mut s = Switch(Some(c), d.path("stderr"));
        let t0 = Instant::now();
        while UnixStream::connect(ctl).is_err() {
            if let Some(Ok(Some(st))) = s.0.as_mut().map(|c| c.try_wait()) {
                panic!("the switch ended at start ({st}):\n{}", s.stderr());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no control socket:\n{}", s.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    /// SIGINT; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("running");
        let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        c.wait().expect("reap the switch")
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `fastpath ctl --socket CTL ARGS...`.
fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastpath")).arg("ctl").arg("--socket").arg(sock).args(args).output().expect("ctl")
}

/// `fastpath ctl --json ...`: the result, failing the test on an error.
fn ctl_json(sock: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = ctl(sock, &a);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "ctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: not JSON ({e}): {out}"))
}

/// One raw exchange on a new connection: `line` sent as is, the response line parsed.
fn raw(sock: &Path, line: &[u8]) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line).expect("send");
    let mut r = String::new();
    BufReader::new(&s).read_line(&mut r).expect("a response line");
    serde_json::from_str(&r).unwrap_or_else(|e| panic!("response not JSON ({e}): {r}"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array().expect("a list").iter().map(|x| x[key].as_str().unwrap_or("?").to_string()).collect()
}

#[test]
fn vswitch_ctl_shows_the_switch_and_changes_its_fdb() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("show");
    let sock = d.path("run/vswitch.ctl");
    let mut sw = Switch::start(&d, &sock, &[]);
    let mode = std::fs::metadata(&sock).expect("the socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is the owner's only");

    let ports = ctl_json(&sock, &["show", "ports"]);
    assert_eq!(names(&ports, "name"), ["vm1", "vm2"]);
    assert_eq!(ports[0]["bridge"], "br0");
    assert_eq!(ports[1]["driver"], "pcap");
    let bridges = ctl_json(&sock, &["show", "bridges"]);
    assert_eq!(names(&bridges, "name"), ["br0"]);
    assert_eq!(bridges[0]["ports"], json!(["vm1", "vm2"]));
    let lcores = ctl_json(&sock, &["show", "lcores"]);
    assert_eq!(lcores[0]["cpu"], 1);
    let rxqs = ctl_json(&sock, &["show", "rxqs"]);
    assert_eq!(names(&rxqs, "port"), ["vm1", "vm2"]);
    let cfg = ctl_json(&sock, &["show", "config"]);
    assert!(cfg["text"].as_str().unwrap().contains("name = \"br0\""), "{cfg}");

    // vm1's frames are flooded to vm2 and their source learned on vm1.
    wait_for("the learned MAC", || {
        ctl_json(&sock, &["show", "fdb"]).as_array().unwrap().iter().any(|e| e["mac"] == SRC && e["port"] == "vm1")
    });
    wait_for("the frames on vm2", || ctl_json(&sock, &["show", "ports"])[1]["tx_packets"] == FRAMES);
    let stats = ctl_json(&sock, &["stats"]);
    assert_eq!(stats["ports"][0]["rx_packets"], FRAMES, "{stats}");
    assert_eq!(stats["bridges"][0]["flooded"], FRAMES, "{stats}");
    assert_eq!(stats["bridges"][0]["learned"], 1, "{stats}");
    assert_eq!(stats["fdb"]["entries"], 1, "{stats}");

    // A static entry, shown, then deleted; the learned one flushed.
    let e = ctl_json(&sock, &["fdb", "add", "br0", "02:00:00:00:00:07", "port=vm2"]);
    assert_eq!((e["port"].as_str(), e["type"].as_str()), (Some("vm2"), Some("static")), "{e}");
    let fdb = ctl_json(&sock, &["show", "fdb", "br0"]);
    assert_eq!(names(&fdb, "mac"), [SRC, "02:00:00:00:00:07"], "{fdb}");
    assert_eq!(names(&fdb, "type"), ["learned", "static"], "{fdb}");
    assert_eq!(ctl_json(&sock, &["fdb", "del", "br0", "02:00:00:00:00:07"])["deleted"], "02:00:00:00:00:07");
    assert_eq!(ctl_json(&sock, &["fdb", "flush"])["flushed"], 1);
    assert_eq!(ctl_json(&sock, &["show", "fdb"]), json!([]));
    assert_eq!(ctl_json(&sock, &["show", "bridges"])[0]["fdb_size"], 0);

    // Errors name the problem; the client exits 1 and says it.
    for (args, want) in [
        (&["fdb", "add", "br0", "02:00:00:00:00:08", "port=nope"][..], "there is no port 'nope'"),
        (&["fdb", "add", "br9", "02:00:00:00:00:08", "port=vm1"][..], "there is no bridge 'br9'"),
        (&["fdb", "add", "br0", "01:00:00:00:00:08", "port=vm1"][..], "needs a unicast MAC"),
        (&["fdb", "del", "br0", "02:00:00:00:00:08"][..], "has no entry for 02:00:00:00:00:08"),
        (&["show", "fdb", "br9"][..], "there is no bridge 'br9'"),
        (&["show", "everything"][..], "show what?"),
        (&["reboot"][..], "unknown command 'reboot'"),
    ] {
        let o = ctl(&sock, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?} must say '{want}': {err}");
    }

    // Tables for people: a header, then a row per port.
    let o = ctl(&sock, &["show", "ports"]);
    let t = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("id  name") && lines[0].contains("rx_packets"), "{t}");
    assert!(lines[1].contains("vm1") && lines[2].contains("vm2") && lines.len() == 3, "{t}");

    // stats --watch prints each port's rates, again and again.
    let mut w = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .arg("ctl")
        .arg("--socket")
        .arg(&sock)
        .args(["stats", "--watch", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctl stats --watch");
    let mut out = BufReader::new(w.stdout.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let mut l = String::new();
        assert!(out.read_line(&mut l).expect("watch output") > 0, "watch ended: {seen:?}");
        seen.push(l);
    }
    let _ = w.kill();
    let _ = w.wait();
    assert!(seen[0].contains("rx_pps") && seen[0].contains("tx_bps"), "{seen:?}");
    assert_eq!(seen.iter().filter(|l| l.contains("rx_pps")).count(), 2, "two rounds: {seen:?}");

    // Hostile or broken clients: each gets an error, the switch goes on.
    let r = raw(&sock, b"show ports\n");
    assert_eq!((r["v"].as_u64(), r["ok"].as_bool()), (Some(1), Some(false)), "{r}");
    assert!(r["error"].as_str().unwrap().contains("not a JSON object"), "{r}");
    let r = raw(&sock, b"{\"v\":7,\"cmd\":\"show\",\"args\":[\"ports\"]}\n");
    assert!(r["error"].as_str().unwrap().contains("protocol version 7 is not served"), "{r}");
    let r = raw(&sock, b"{\"v\":1,\"cmd\":\"frobnicate\"}\n");
    assert!(r["error"].as_str().unwrap().contains("unknown command 'frobnicate'"), "{r}");
    let r = raw(&sock, &vec![b'x'; 100 * 1024]);
    assert!(r["error"].as_str().unwrap().contains("longer than"), "{r}");
    // A client that connects and says nothing holds no one up.
    let _idle = UnixStream::connect(&sock).expect("connect");
    let r = raw(&sock, b"{\"v\":1,\"cmd\":\"show\",\"args\":[\"ports\"]}\n");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(names(&r["result"], "name"), ["vm1", "vm2"]);

    // A second switch on the same socket is refused, and the first goes on.
    let d2 = Dir::new("second");
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--cores", "0", "--duration", "5", "--config"])
        .arg(config(&d2))
        .arg("--ctl")
        .arg(&sock)
        .output()
        .expect("second switch");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another fastpath vswitch is listening on this control socket"), "{err}");
    assert_eq!(ctl_json(&sock, &["show", "bridges"])[0]["name"], "br0");

    let st = sw.stop();
    assert!(st.success(), "{st}: {}", sw.stderr());
    assert!(!sock.exists(), "the socket goes with the switch");
}

#[test]
fn vswitch_ctl_takes_over_a_stale_socket_file() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("stale");
    let sock = d.path("vswitch.ctl");
    // A socket file nobody listens on, as a killed switch leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    assert!(sock.exists());
    let mut sw = Switch::start(&d, &sock, &[]);
    assert_eq!(names(&ctl_json(&sock, &["show", "ports"]), "name"), ["vm1", "vm2"]);
    assert!(sw.stop().success(), "{}", sw.stderr());
    // Not a socket: refused, left alone.
    std::fs::write(&sock, "data").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--cores", "1", "--duration", "1", "--config"])
        .arg(config(&d))
        .arg("--ctl")
        .arg(&sock)
        .output()
        .expect("switch");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the path exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "data");
}

/// GET `path` from `addr`: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).expect("read the response");
    let (head, body) = r.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The samples of a metrics page as Python's prometheus_client parses them:
/// `[[name, {labels}, value], ...]`.
fn parse_with_prometheus_client(python: &str, page: &str) -> Vec<(String, Value, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([s.name, s.labels, s.value, f.type])\n\
        print(json.dumps(out))\n";
    let mut c = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "prometheus_client refused the page: {}\n{page}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("parser output");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap().to_string(), s[1].clone(), s[2].as_f64().unwrap()))
        .collect()
}

#[test]
fn vswitch_metrics_parse_with_a_prometheus_parser() {
    let test = "vswitch_metrics_parse_with_a_prometheus_parser";
    // Debian's python3 is /usr/bin/python3; PATH may hold another.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success()));
    let Some(python) = python else {
        let why = format!("{test}: needs python3 with prometheus_client (apt install python3-prometheus-client)");
        assert!(!fastpath_pmd::testutil::in_ci(), "{why}; CI is set, so this is a failure, not a skip");
        eprintln!("SKIPPED {why}");
        return;
    };
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("metrics");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let sock = d.path("ctl");
    let mut sw = Switch::start(&d, &sock, &["--metrics", &addr]);
    wait_for("the frames on vm2", || ctl_json(&sock, &["show", "ports"])[1]["tx_packets"] == FRAMES);

    let (status, page) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let samples = parse_with_prometheus_client(python, &page);
    let get = |name: &str, labels: Value| {
        samples.iter().find(|s| s.0 == name && s.1 == labels).map(|s| s.2).unwrap_or_else(|| {
            panic!("no sample {name}{labels} in:\n{page}");
        })
    };
    assert_eq!(get("fastpath_port_rx_packets_total", json!({"port": "vm1"})), FRAMES as f64);
    assert_eq!(get("fastpath_port_tx_packets_total", json!({"port": "vm2"})), FRAMES as f64);
    assert_eq!(get("fastpath_port_rx_bytes_total", json!({"port": "vm1"})), (FRAMES * 60) as f64);
    assert_eq!(get("fastpath_bridge_flooded_total", json!({"bridge": "br0"})), FRAMES as f64);
    assert_eq!(get("fastpath_bridge_learned_total", json!({"bridge": "br0"})), 1.0);
    assert_eq!(get("fastpath_bridge_fdb_entries", json!({"bridge": "br0"})), 1.0);
    assert_eq!(get("fastpath_lcore_rx_packets_total", json!({"lcore": "0", "cpu": "1"})), FRAMES as f64);
    assert_eq!(get("fastpath_rxq_packets_total", json!({"port": "vm1", "queue": "0", "lcore": "0"})), FRAMES as f64);
    assert_eq!(get("fastpath_stage_packets_total", json!({"stage": "switch-ingress"})), FRAMES as f64);
    assert_eq!(get("fastpath_mempool_mbufs", json!({"pool": "vswitch"})), 4096.0);
    assert!(get("fastpath_lcore_idle_polls_total", json!({"lcore": "0", "cpu": "1"})) > 0.0);

    let (status, body) = http_get(&addr, "/");
    assert!(status.contains("404"), "{status} {body}");
    let (status, _) = http_get(&addr, "/metrics/x");
    assert!(status.contains("404"), "{status}");
    // A request that never ends is cut off; the page is still served.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(&vec![b'a'; 16 * 1024]).unwrap();
    let (status, _) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(sw.stop().success(), "{}", sw.stderr());
}

#[test]
fn vswitch_under_systemd_prefixes_its_stderr_lines_with_syslog_priorities() {
    let d = Dir::new("journal");
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["--log", "info", "vswitch", "--cores", "1", "--duration", "0.3", "--config"])
        .arg(config(&d))
        .arg("--ctl")
        .arg(d.path("ctl"))
        .env("JOURNAL_STREAM", "8:1234")
        .output()
        .expect("run fastpath");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("<6>") && l.contains("control socket")), "{err}");
    assert!(err.lines().all(|l| l.starts_with('<')), "no timestamps, a priority on every line:\n{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--config", "/nonexistent/vs.toml"])
        .env("JOURNAL_STREAM", "8:1234")
        .output()
        .expect("run fastpath");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().count() > 3 && err.lines().all(|l| l.starts_with("<3>")), "every line an error:\n{err}");
    // Not under systemd: no prefixes.
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--config", "/nonexistent/vs.toml"])
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run fastpath");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("fastpath: error: ") && !err.contains("<3>"), "{err}");
}

#[test]
fn vswitch_the_service_example_config_is_valid() {
    // It names eth1, which this machine need not have: accepted (not exit 2), and the run stops
    // at the first port it cannot open (exit 1), or runs where eth1 exists.
    let d = Dir::new("service");
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/vswitch.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--duration", "0.3", "--config"])
        .arg(&p)
        .arg("--ctl")
        .arg(d.path("ctl"))
        .output()
        .expect("run fastpath");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() || o.status.code() == Some(1), "the example is a valid config:\n{err}");
    if !o.status.success() {
        assert!(err.contains("[[port]] 'uplink' cannot be opened"), "{err}");
    }
}

/// A config where vm1 replays 8 numbered frames (broadcast from [`SRC`], ethertype 0x88b5)
/// without end into bridge br0, whose other ports (`others`) are null ports.
fn replay_config(d: &Dir, others: &[&str]) -> PathBuf {
    let mut f = Vec::new();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0u32..8 {
        let mut fr = vec![0xff; 6];
        fr.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        fr.extend_from_slice(&i.to_be_bytes());
        fr.resize(60, 0);
        for v in [i, 0, 60, 60] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&fr);
    }
    std::fs::write(d.path("seq.pcap"), f).unwrap();
    let mut text = format!(
        "[vswitch]\nidle = \"adaptive\"\nmbufs = 4096\n\n[[bridge]]\nname = \"br0\"\n\n\
         [[port]]\nname = \"vm1\"\nspec = \"pcap:rx={}/seq.pcap,infinite_rx=on\"\nbridge = \"br0\"\n",
        d.0.display()
    );
    for o in others {
        text += &format!("\n[[port]]\nname = \"{o}\"\nspec = \"null,no-rx=on\"\nbridge = \"br0\"\n");
    }
    let cfg = d.path("replay.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Asserts that the numbered frames of `file` (from [`replay_config`]) are `want` frames, each
/// following the last.
fn assert_numbered_in_order(file: &Path, want: usize) {
    let frames = tshark_frames(file);
    assert_eq!(frames.len(), want, "{}", file.display());
    let seq: Vec<u32> = frames
        .iter()
        .map(|(len, src, ty, data)| {
            assert_eq!((*len, src.as_str(), ty.as_str()), (60, SRC, "0x88b5"), "{}", file.display());
            u32::from_str_radix(&data[..8], 16).expect("the number")
        })
        .collect();
    for w in seq.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % 8, "{} in order: {:?}...", file.display(), &seq[..seq.len().min(40)]);
    }
}

/// The frames of a pcap file as tshark reads them: (length, source MAC, ethertype, payload hex).
fn tshark_frames(file: &Path) -> Vec<(u32, String, String, String)> {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.len",
            "-e",
            "eth.src",
            "-e",
            "eth.type",
            "-e",
            "data",
        ])
        .output()
        .expect("tshark");
    assert!(o.status.success(), "tshark cannot read {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), f[1].into(), f[2].into(), f.get(3).copied().unwrap_or("").into())
        })
        .collect()
}

#[test]
fn vswitch_ctl_capture_is_read_back_by_tshark() {
    let test = "vswitch_ctl_capture_is_read_back_by_tshark";
    if !fastpath_pmd::testutil::require(test, false, &["tshark"]) {
        return;
    }
    // vm1 replays 8 numbered frames (broadcast, ethertype 0x88b5) without end; they flood to vm2,
    // a null port. Both directions are captured while traffic runs.
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("capture");
    let cfg = replay_config(&d, &["vm2"]);
    let sock = d.path("ctl");
    let mut sw = Switch::start_with(&d, &cfg, &sock, &[]);
    let (rx, tx) = (d.path("rx.pcap"), d.path("tx.pcap"));
    let r = ctl_json(&sock, &["capture", "vm1", "rx", rx.to_str().unwrap(), "count=20"]);
    assert_eq!((r["port"].as_str(), r["direction"].as_str()), (Some("vm1"), Some("rx")), "{r}");
    ctl_json(&sock, &["capture", "vm2", "tx", tx.to_str().unwrap(), "count=100"]);
    // Each ends by itself at its count.
    wait_for("the captures to end", || ctl_json(&sock, &["show", "captures"]) == json!([]));
    // One without a count runs until stopped; a full ring skips copies (counted), never packets.
    let all = d.path("all.pcap");
    ctl_json(&sock, &["capture", "vm2", "both", all.to_str().unwrap()]);
    let o = ctl(&sock, &["capture", "vm2", "rx", d.path("x.pcap").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("being captured already"), "{o:?}");
    wait_for("frames", || ctl_json(&sock, &["show", "captures"])[0]["written"].as_u64().unwrap_or(0) >= 10);
    let stopped = ctl_json(&sock, &["capture", "stop", "vm2"]);
    let written = stopped["written"].as_u64().unwrap();
    assert!(written >= 10 && stopped["missed"].is_u64(), "{stopped}");
    assert_eq!(tshark_frames(&all).len() as u64, written);
    let o = ctl(&sock, &["capture", "stop", "vm2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("port 'vm2' is not being captured"), "{o:?}");
    assert!(sw.stop().success(), "{}", sw.stderr());

    // What tshark reads is what was sent, in order: numbered frames, each following the last.
    assert_numbered_in_order(&rx, 20);
    assert_numbered_in_order(&tx, 100);
}

#[test]
fn vswitch_ctl_rxq_rebalance_gives_the_busy_queue_an_lcore_of_its_own() {
    let test = "vswitch_ctl_rxq_rebalance_gives_the_busy_queue_an_lcore_of_its_own";
    if !fastpath_pmd::testutil::require(test, false, &["tshark"]) {
        return;
    }
    // Round-robin over two lcores puts vm1 (replaying without end) with vm3 on lcore 0, and
    // vm2, vm4 (null ports, nothing to receive) on lcore 1.
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("rebalance");
    let cfg = replay_config(&d, &["vm2", "vm3", "vm4"]);
    let sock = d.path("ctl");
    let mut sw = Switch::start_with(&d, &cfg, &sock, &["--cores", "0,1"]);
    let lcore_of = |port: &str| {
        let q = ctl_json(&sock, &["show", "rxqs"]);
        q.as_array().unwrap().iter().find(|r| r["port"] == port).map(|r| r["lcore"].as_u64().unwrap()).unwrap()
    };
    assert_eq!([lcore_of("vm1"), lcore_of("vm3"), lcore_of("vm2"), lcore_of("vm4")], [0, 0, 1, 1]);
    wait_for("traffic", || ctl_json(&sock, &["show", "rxqs"])[0]["cycles"].as_u64().unwrap_or(0) > 1_000_000);

    let r = ctl_json(&sock, &["rxq", "rebalance"]);
    assert_eq!(r["moved"], json!([{"port": "vm3", "queue": 0, "from": 0, "to": 1}]), "{r}");
    assert_eq!([lcore_of("vm1"), lcore_of("vm3"), lcore_of("vm2"), lcore_of("vm4")], [0, 1, 1, 1]);
    // Balanced now: a second rebalance moves nothing.
    wait_for("more traffic", || ctl_json(&sock, &["show", "rxqs"])[0]["packets"].as_u64().unwrap_or(0) > 1000);
    assert_eq!(ctl_json(&sock, &["rxq", "rebalance"])["moved"], json!([]));
    // Traffic goes on, in order, after the move.
    let before = ctl_json(&sock, &["show", "ports"])[0]["rx_packets"].as_u64().unwrap();
    let tx = d.path("tx.pcap");
    ctl_json(&sock, &["capture", "vm3", "tx", tx.to_str().unwrap(), "count=100"]);
    wait_for("the capture to end", || ctl_json(&sock, &["show", "captures"]) == json!([]));
    assert!(ctl_json(&sock, &["show", "ports"])[0]["rx_packets"].as_u64().unwrap() > before);
    assert!(sw.stop().success(), "{}", sw.stderr());
    assert!(!sw.stderr().contains("did not come back to the pool"), "every mbuf back: {}", sw.stderr());
    assert_numbered_in_order(&tx, 100);
}

/// The MACs of `show fdb` with their type and port: `["02:..:0a static vm2", ...]`.
fn fdb_lines(sock: &Path) -> Vec<String> {
    let v = ctl_json(sock, &["show", "fdb"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["mac"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["port"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn vswitch_reload_applies_static_macs_and_refuses_what_needs_a_restart() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("reload");
    let cfg = config(&d);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let fdb = |mac: &str, port: &str| format!("\n[[fdb]]\nbridge = \"br0\"\nmac = \"{mac}\"\nport = \"{port}\"\n");
    std::fs::write(&cfg, base.clone() + &fdb("02:00:00:00:00:0a", "vm2")).unwrap();
    let sock = d.path("ctl");
    let mut sw = Switch::start_with(&d, &cfg, &sock, &[]);
    wait_for("the learned MAC", || fdb_lines(&sock).len() == 2);
    assert_eq!(fdb_lines(&sock), [format!("{SRC} learned vm1"), "02:00:00:00:00:0a static vm2".into()]);

    // One static entry gone, one new, one moved to another port.
    let text = base.clone() + &fdb("02:00:00:00:00:0b", "vm1") + &fdb("02:00:00:00:00:0c", "vm2");
    std::fs::write(&cfg, &text).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["added"].as_array().unwrap().len(), 2, "{r}");
    let want =
        [format!("{SRC} learned vm1"), "02:00:00:00:00:0b static vm1".into(), "02:00:00:00:00:0c static vm2".into()];
    assert_eq!(fdb_lines(&sock), want);
    assert!(ctl_json(&sock, &["show", "config"])["text"].as_str().unwrap().contains("00:0c"));

    // A port added, with a static MAC on it: plugged live, the entry added after it.
    let port3 = "\n[[port]]\nname = \"vm3\"\nspec = \"null,no-rx=on\"\nbridge = \"br0\"\n";
    let with3 = text.clone() + &fdb("02:00:00:00:00:0d", "vm3") + port3;
    std::fs::write(&cfg, &with3).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(r["plugged"], serde_json::json!(["vm3"]), "{r}");
    assert_eq!(r["added"].as_array().unwrap().len(), 1, "{r}");
    assert!(names(&ctl_json(&sock, &["show", "ports"]), "name").contains(&"vm3".to_string()));
    let mut want3 = want.to_vec();
    want3.push("02:00:00:00:00:0d static vm3".into());
    assert_eq!(fdb_lines(&sock), want3);
    // Its spec changed: unplugged and plugged again, its static entry back with it.
    std::fs::write(&cfg, with3.replace("null,no-rx=on", "null,no-rx=on,queues=2")).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(
        (r["unplugged"].clone(), r["plugged"].clone()),
        (serde_json::json!(["vm3"]), serde_json::json!(["vm3"])),
        "{r}"
    );
    assert_eq!(fdb_lines(&sock), want3);
    // Gone from the file: unplugged, its entry with it.
    std::fs::write(&cfg, &text).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(r["unplugged"], serde_json::json!(["vm3"]), "{r}");
    assert_eq!(fdb_lines(&sock), want);
    assert!(!names(&ctl_json(&sock, &["show", "ports"]), "name").contains(&"vm3".to_string()));
    // A bridge added: refused as a whole, nothing applied (not the port, not the entry).
    let more = text.clone() + &fdb("02:00:00:00:00:0e", "vm1") + "\n[[bridge]]\nname = \"br9\"\n" + port3;
    std::fs::write(&cfg, more).unwrap();
    let o = ctl(&sock, &["reload"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("reload refused, nothing applied: [bridge] changed, which needs a restart"), "{err}");
    assert_eq!(fdb_lines(&sock), want);
    assert!(!names(&ctl_json(&sock, &["show", "ports"]), "name").contains(&"vm3".to_string()));
    // A broken file: the error names the line; the switch goes on as it was.
    std::fs::write(&cfg, text.replace("mac = \"02:00:00:00:00:0c\"", "mac = \"02:00\"")).unwrap();
    let o = ctl(&sock, &["reload"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reload refused") && err.contains("'02:00' is not a MAC address") && err.contains("line"),
        "{err}"
    );
    assert_eq!(fdb_lines(&sock), want);

    // SIGHUP does the same.
    std::fs::write(&cfg, base + &fdb("02:00:00:00:00:0e", "vm2")).unwrap();
    let pid = sw.0.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for("the SIGHUP reload", || fdb_lines(&sock).len() == 2);
    assert_eq!(fdb_lines(&sock), [format!("{SRC} learned vm1"), "02:00:00:00:00:0e static vm2".into()]);
    assert!(sw.stop().success(), "{}", sw.stderr());
}

#[test]
fn vswitch_as_a_user_who_may_not_create_the_default_socket_runs_without_one() {
    let test = "vswitch_as_a_user_who_may_not_create_the_default_socket_runs_without_one";
    // Root to become nobody; setpriv to do it.
    if !fastpath_pmd::testutil::require(test, true, &["setpriv"]) {
        return;
    }
    let d = Dir::new("nobody");
    let cfg = config(&d);
    let mut perm = std::fs::metadata(&d.0).unwrap().permissions();
    perm.set_mode(0o777);
    std::fs::set_permissions(&d.0, perm).unwrap();
    for f in ["in.pcap", "vswitch.toml"] {
        std::fs::set_permissions(d.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = |args: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_fastpath")])
            .args(["vswitch", "--cores", "1", "--duration", "0.3", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .expect("setpriv");
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // The default path: a warning, and the switch runs.
    let (code, err) = run(&[]);
    if !err.contains("Permission denied") {
        // A /run/fastpath nobody may write: nothing to check here.
        assert_eq!(code, Some(0), "{err}");
        return;
    }
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("running without a control socket (give --ctl PATH to have one)"), "{err}");
    // A path given on purpose that cannot be made is an error.
    let (code, err) = run(&["--ctl", "/run/fastpath-nobody-test/ctl"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--ctl /run/fastpath-nobody-test/ctl: cannot create"), "{err}");
}

/// A config of bridge br0 (VXLAN VNI 100 to 10.0.0.2, whose MAC is configured) where vm1 replays
/// without end six numbered frames from [`SRC`] (but the fifth): a broadcast, one to a static MAC
/// on vm2, one to a static MAC behind the VTEP, one to an unknown MAC, one from a multicast
/// source, one to [`SRC`] itself (learned on vm1). vm2 and the uplink are null ports.
fn trace_config(d: &Dir) -> PathBuf {
    let mut f = Vec::new();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let src = [2, 0, 0, 0, 0, 1];
    let frames: [([u8; 6], [u8; 6]); 6] = [
        ([0xff; 6], src),
        ([2, 0, 0, 0, 0, 0x0e], src),
        ([2, 0, 0, 0, 0, 0x0f], src),
        ([2, 0, 0, 0, 0, 0x99], src),
        ([2, 0, 0, 0, 0, 0x0e], [1, 0, 0x5e, 0, 0, 1]),
        (src, src),
    ];
    for (i, (dst, src)) in frames.iter().enumerate() {
        let mut fr = dst.to_vec();
        fr.extend_from_slice(src);
        fr.extend_from_slice(&[0x88, 0xb5]);
        fr.extend_from_slice(&(i as u32).to_be_bytes());
        fr.resize(60, 0);
        for v in [i as u32, 0, 60, 60] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&fr);
    }
    std::fs::write(d.path("trace.pcap"), f).unwrap();
    let text = format!(
        "[vswitch]\nidle = \"adaptive\"\nmbufs = 4096\n\n\
         [[bridge]]\nname = \"br0\"\nvni = 100\nlocal = \"10.0.0.1\"\nremotes = [\"10.0.0.2\"]\n\n\
         [[port]]\nname = \"uplink\"\nspec = \"null,no-rx=on\"\nrole = \"uplink\"\nmac = \"02:00:0a:00:00:01\"\n\n\
         [[port]]\nname = \"vm1\"\nspec = \"pcap:rx={}/trace.pcap,infinite_rx=on\"\nbridge = \"br0\"\n\n\
         [[port]]\nname = \"vm2\"\nspec = \"null,no-rx=on\"\nbridge = \"br0\"\n\n\
         [[fdb]]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:0e\"\nport = \"vm2\"\n\n\
         [[fdb]]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:0f\"\nvtep = \"10.0.0.2\"\n\n\
         [[neighbour]]\nip = \"10.0.0.2\"\nmac = \"02:00:0a:00:00:02\"\n",
        d.0.display()
    );
    let cfg = d.path("trace.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn vswitch_ctl_trace_names_the_passes_and_decisions_of_each_packet() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("trace");
    let cfg = trace_config(&d);
    let sock = d.path("ctl");
    let mut sw = Switch::start_with(&d, &cfg, &sock, &[]);
    // Once SRC is learned (the same-port drop needs it), the next 12 packets: each frame twice.
    wait_for("SRC learned", || fdb_lines(&sock).iter().any(|l| l.starts_with(SRC)));
    let r = ctl_json(&sock, &["trace", "add", "vm1", "12"]);
    assert_eq!(r, json!({"port": "vm1", "packets": 12}));
    wait_for("12 traced packets", || ctl_json(&sock, &["trace", "show"])["left"] == json!(0));
    let t = ctl_json(&sock, &["trace", "show"]);
    let packets = t["packets"].as_array().expect("packets");
    assert_eq!(packets.len(), 12, "{t}");
    let want: [(&str, &[(&str, &str)]); 6] = [
        (
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff",
            &[
                ("ingress", "bridge br0 from an access port"),
                ("learn", "source known on vm1"),
                ("forward", "broadcast: flood"),
                ("flood", "copies to vtep 10.0.0.2, vm2"),
            ],
        ),
        (
            "02:00:00:00:00:01 > 02:00:00:00:00:0e",
            &[
                ("ingress", "bridge br0 from an access port"),
                ("learn", "source known on vm1"),
                ("forward", "fdb hit: to vm2"),
                ("tx-offload", "out on vm2"),
            ],
        ),
        (
            "02:00:00:00:00:01 > 02:00:00:00:00:0f",
            &[
                ("ingress", "bridge br0 from an access port"),
                ("learn", "source known on vm1"),
                ("forward", "fdb hit: to vtep 10.0.0.2"),
                ("egress", "encap vxlan vni 100 to vtep 10.0.0.2"),
                ("tx-offload", "out on uplink"),
            ],
        ),
        (
            "02:00:00:00:00:01 > 02:00:00:00:00:99",
            &[
                ("ingress", "bridge br0 from an access port"),
                ("learn", "source known on vm1"),
                ("forward", "fdb miss: flood"),
                ("flood", "copies to vtep 10.0.0.2, vm2"),
            ],
        ),
        (
            "01:00:5e:00:00:01 > 02:00:00:00:00:0e",
            &[("ingress", "bridge br0 from an access port"), ("learn", "drop: bad-src-mac")],
        ),
        (
            "02:00:00:00:00:01 > 02:00:00:00:00:01",
            &[
                ("ingress", "bridge br0 from an access port"),
                ("learn", "source known on vm1"),
                ("forward", "fdb hit on vm1: drop: same-port"),
            ],
        ),
    ];
    let mut seen = [0; 6];
    for p in packets {
        assert_eq!((p["port"].as_str(), p["len"].as_u64()), (Some("vm1"), Some(60)), "{p}");
        let summary = p["summary"].as_str().unwrap();
        let i = want.iter().position(|(s, _)| summary.starts_with(s)).unwrap_or_else(|| panic!("{p}"));
        seen[i] += 1;
        let passes: Vec<(&str, &str)> = p["passes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["pass"].as_str().unwrap(), x["decision"].as_str().unwrap()))
            .collect();
        assert_eq!(passes, want[i].1, "{p}");
        // Every pass but learn (counted with forward) has its cycles.
        for x in p["passes"].as_array().unwrap() {
            assert_eq!(x["cycles"].is_u64(), x["pass"] != "learn", "{p}");
        }
    }
    // The replay is in order: 12 packets in a row are each frame twice.
    assert_eq!(seen, [2; 6], "{t}");
    // For people: a header line per packet and a line per pass.
    let o = ctl(&sock, &["trace", "show"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("packet ")).count(), 12, "{text}");
    assert!(text.contains("  egress      encap vxlan vni 100 to vtep 10.0.0.2"), "{text}");
    // Errors name what is wrong; clear forgets.
    for (args, err) in [
        (&["trace", "add", "vm9", "1"][..], "vm9"),
        (&["trace", "add", "vm1", "5000"], "give at most 1000"),
        (&["trace", "add", "vm1", "x"], "give a number of packets"),
    ] {
        let o = ctl(&sock, args);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(err), "{args:?}: {o:?}");
    }
    ctl_json(&sock, &["trace", "clear"]);
    assert_eq!(ctl_json(&sock, &["trace", "show"]), json!({"packets": [], "left": 0, "lost": 0}));
    assert!(sw.stop().success(), "{}", sw.stderr());
}

/// A pcap of 8 frames from `src` to `dst` (ethertype 0x88b5).
fn write_unicast(path: &Path, dst: [u8; 6], src: [u8; 6]) {
    let mut f = Vec::new();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0u32..8 {
        let mut fr = dst.to_vec();
        fr.extend_from_slice(&src);
        fr.extend_from_slice(&[0x88, 0xb5]);
        fr.extend_from_slice(&i.to_be_bytes());
        fr.resize(60, 0);
        for v in [i, 0, 60, 60] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&fr);
    }
    std::fs::write(path, f).unwrap();
}

#[test]
fn vswitch_rebalance_interval_moves_a_busy_queue_off_a_shared_lcore_by_itself() {
    // Round-robin over two lcores puts vm1 and vm3, both replaying without end (to static MACs on
    // the null ports vm2 and vm4), on lcore 0; vm2 and vm4, with nothing to receive, on lcore 1.
    let _cpus = fastpath_pmd::testutil::pollers();
    let d = Dir::new("autolb");
    write_unicast(&d.path("a.pcap"), [2, 0, 0, 0, 0, 0x0a], [2, 0, 0, 0, 0, 1]);
    write_unicast(&d.path("b.pcap"), [2, 0, 0, 0, 0, 0x0b], [2, 0, 0, 0, 0, 3]);
    let mut text = String::from(
        "[vswitch]\nidle = \"adaptive\"\nmbufs = 4096\nrebalance_interval = 1\n\n[[bridge]]\nname = \"br0\"\n",
    );
    for (name, spec) in [
        ("vm1", format!("pcap:rx={}/a.pcap,infinite_rx=on", d.0.display())),
        ("vm2", "null,no-rx=on".into()),
        ("vm3", format!("pcap:rx={}/b.pcap,infinite_rx=on", d.0.display())),
        ("vm4", "null,no-rx=on".into()),
    ] {
        text += &format!("\n[[port]]\nname = \"{name}\"\nspec = \"{spec}\"\nbridge = \"br0\"\n");
    }
    for (mac, port) in [("02:00:00:00:00:0a", "vm2"), ("02:00:00:00:00:0b", "vm4")] {
        text += &format!("\n[[fdb]]\nbridge = \"br0\"\nmac = \"{mac}\"\nport = \"{port}\"\n");
    }
    let cfg = d.path("autolb.toml");
    std::fs::write(&cfg, text).unwrap();
    let sock = d.path("ctl");
    let mut sw = Switch::start_with(&d, &cfg, &sock, &["--cores", "0,1"]);
    let lcores = || {
        let q = ctl_json(&sock, &["show", "rxqs"]);
        let of = |port: &str| {
            q.as_array().unwrap().iter().find(|r| r["port"] == port).map(|r| r["lcore"].as_u64().unwrap()).unwrap()
        };
        [of("vm1"), of("vm2"), of("vm3"), of("vm4")]
    };
    // By itself, within a few intervals: one of the busy queues goes to lcore 1.
    wait_for("an automatic rebalance", || {
        let l = lcores();
        l[0] != l[2]
    });
    // Balanced now: the next intervals move nothing.
    let placed = lcores();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lcores(), placed);
    // Both streams keep going.
    let rx = |i: usize| ctl_json(&sock, &["show", "ports"])[i]["rx_packets"].as_u64().unwrap();
    let before = (rx(0), rx(2));
    wait_for("more traffic on both", || rx(0) > before.0 && rx(2) > before.1);
    assert!(sw.stop().success(), "{}", sw.stderr());
    assert!(!sw.stderr().contains("did not come back to the pool"), "every mbuf back: {}", sw.stderr());
}
