//! The rig of the vswitch tests: `fastpath vswitch` as a child process with a config of the
//! test's own and its JSON report; an underlay (a network namespace holding a Linux bridge that
//! fastpath's uplink and every kernel VTEP or VLAN host plug into); hosts behind fastpath (a
//! veth whose root-namespace end is an `af_xdp` access port); kernel VXLAN / GENEVE devices as
//! remote VTEPs; a TCP transfer that checks the byte count and a hash of the data; and a VLAN
//! host on a packet socket (these kernels have no 802.1Q: `CONFIG_VLAN_8021Q` is not set).
//! Everything goes with its guard, even when the test fails.
//!
//! VLAN tags: see [`Underlay::new`].
//!
//! Checksums: a veth with an XDP program hands AF_XDP the kernel's frames as they are, and a
//! frame the kernel left to checksum offload (CHECKSUM_PARTIAL) carries a partial checksum. A
//! wire never does, so every kernel interface that sends into fastpath has `tx` checksum
//! offload off (`ethtool -K DEV tx off`): the kernel then completes checksums as a NIC would.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{checksum, unique, veth, Link, Netns, PacketSocket, Reap};

/// Our VTEP's address on the underlay (10.63.0.0/24); kernel VTEPs take .2, .3, ...
pub const LOCAL_VTEP: &str = "10.63.0.1";

/// How long anything may take on a loaded 2-CPU machine: tests wait for counts, not for time.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `f` holds, or fails the test after `secs` naming `what`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A folder of this test's files (config, output), removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty folder.
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(unique(&format!("fpvs{tag}")));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch folder");
        Scratch(p)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `fastpath vswitch` running a config, its lcore on CPU 1, until [`Vswitch::stop`] (SIGINT).
pub struct Vswitch {
    kid: Reap,
    dir: Scratch,
}

impl Vswitch {
    /// Writes `config` and starts the switch (`--cores 1 --json`, its control socket in the
    /// scratch folder); returns once it has opened
    /// its ports and placed its queues (it prints the placement just before its lcores start).
    pub fn start(config: &str) -> Vswitch {
        let dir = Scratch::new("run");
        let cfg = dir.path("vswitch.toml");
        std::fs::write(&cfg, config).expect("write config");
        let c = Command::new(env!("CARGO_BIN_EXE_fastpath"))
            .arg("vswitch")
            .arg("--config")
            .arg(&cfg)
            .args(["--cores", "1", "--json", "--duration", "300", "--ctl"])
            .arg(dir.path("ctl"))
            .stdout(std::fs::File::create(dir.path("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.path("stderr")).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start fastpath vswitch");
        let mut v = Vswitch { kid: Reap(Some(c)), dir };
        let t0 = Instant::now();
        loop {
            let err = std::fs::read_to_string(v.dir.path("stderr")).unwrap_or_default();
            if err.contains("rx queues on lcores") {
                break;
            }
            if let Some(Ok(Some(st))) = v.kid.0.as_mut().map(|c| c.try_wait()) {
                panic!("fastpath vswitch ended at start ({st}):\n{err}\nconfig:\n{config}");
            }
            assert!(t0.elapsed() < DEADLINE, "fastpath vswitch did not start:\n{err}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The lcores start right after the placement is printed.
        std::thread::sleep(Duration::from_millis(200));
        v
    }

    /// Rewrites its config file (for a reload).
    pub fn rewrite(&self, config: &str) {
        std::fs::write(self.dir.path("vswitch.toml"), config).expect("rewrite config");
    }

    /// `fastpath ctl --socket ITS_SOCKET ARGS`: whether it succeeded, and its stdout or stderr.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_fastpath"))
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.path("ctl"))
            .args(args)
            .output()
            .expect("run fastpath ctl");
        let out = if o.status.success() { o.stdout } else { o.stderr };
        (o.status.success(), String::from_utf8_lossy(&out).into_owned())
    }

    /// SIGINT, then its report (the run must end cleanly).
    pub fn stop(mut self) -> Report {
        self.finish()
    }

    /// Fails the test with `msg` and the switch's report.
    pub fn fail(&mut self, msg: &str) -> ! {
        let r = self.finish();
        panic!("{msg}\nthe switch's report:\n{}", r.text)
    }

    /// [`ping`], failing the test with the switch's report.
    pub fn ping(&mut self, ns: &Netns, to: &str, count: u32) {
        if let Err(e) = try_ping(ns, to, count) {
            self.fail(&e)
        }
    }

    fn finish(&mut self) -> Report {
        self.kid.signal(libc::SIGINT);
        let c = self.kid.0.take().expect("running");
        let st = c.wait_with_output().expect("wait").status;
        let out = std::fs::read_to_string(self.dir.path("stdout")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.path("stderr")).unwrap_or_default();
        let text = format!("{out}\nstderr:\n{err}");
        assert!(st.success(), "fastpath vswitch failed ({st}):\n{text}");
        assert!(!text.contains("panicked"), "{text}");
        let recs = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
        Report { recs, text }
    }
}

/// The `--json` report: one record per port, lcore, stage, bridge, switch port, VTEP, and the
/// pool's.
pub struct Report {
    /// The records.
    pub recs: Vec<Value>,
    /// Everything it printed, for messages.
    pub text: String,
}

impl Report {
    /// The record whose `key` is `name` (`("bridge", "tenant-a")`, `("switch_port", "vm1")`,
    /// `("stage", "switch-learn")`, `("name", "af_xdp:eth1")` for a port, `("vtep", IP)`).
    pub fn rec(&self, key: &str, name: &str) -> &Value {
        self.recs.iter().find(|r| r[key] == name).unwrap_or_else(|| panic!("no record {key} = {name}:\n{}", self.text))
    }

    /// A number in a record.
    pub fn n(&self, key: &str, name: &str, field: &str) -> u64 {
        self.get(self.rec(key, name), field)
    }

    /// A number at `field` ("a/b" walks objects) of `v`.
    pub fn get(&self, v: &Value, field: &str) -> u64 {
        let mut x = v;
        for k in field.split('/') {
            x = &x[k];
        }
        x.as_u64().unwrap_or_else(|| panic!("{field} is not a count in {v}:\n{}", self.text))
    }

    /// A bridge's counter (`learned`, `moved`, `aged`, `flooded`, `refused`, `fdb_size`).
    pub fn bridge(&self, name: &str, field: &str) -> u64 {
        self.n("bridge", name, field)
    }

    /// A switch port's counter (`macs`, `refused`, or `drops/REASON`, 0 when absent).
    pub fn sport(&self, name: &str, field: &str) -> u64 {
        let r = self.rec("switch_port", name);
        match field.strip_prefix("drops/") {
            Some(reason) => r["drops"][reason].as_u64().unwrap_or(0),
            None => self.get(r, field),
        }
    }

    /// A stage's named counter (`stats/NAME`) or drop count (`drops/REASON`).
    pub fn stage(&self, stage: &str, field: &str) -> u64 {
        self.n("stage", stage, field)
    }

    /// A port's counter, by its spec (`af_xdp:IFACE`).
    pub fn port(&self, spec: &str, field: &str) -> u64 {
        self.n("name", spec, field)
    }

    /// Every mbuf came back to the pool.
    pub fn check_pool(&self) {
        let p = self.recs.iter().find(|r| r["mempool"].is_string()).unwrap_or_else(|| panic!("{}", self.text));
        assert!(p["capacity"].as_u64().is_some_and(|c| c > 0), "{}", self.text);
        assert_eq!(p["available"], p["capacity"], "every mbuf back in the pool:\n{}", self.text);
    }
}

/// Runs a command in `ns` and says whether it succeeded (no panic).
pub fn try_exec(ns: &Netns, args: &[&str]) -> bool {
    Command::new("ip").args(["netns", "exec", &ns.name]).args(args).output().is_ok_and(|o| o.status.success())
}

/// `ping` from `ns` until `count` replies came back (or the deadline passed: a failure). The
/// first requests may be lost while fastpath resolves a VTEP's MAC.
pub fn try_ping(ns: &Netns, to: &str, count: u32) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-n", "-i", "0.2", "-W", "1"])
        .args(["-c", &count.to_string(), "-w", &DEADLINE.as_secs().to_string(), to])
        .output()
        .expect("ping");
    if out.status.success() {
        return Ok(());
    }
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(format!("ping {to} from {}: {}{}", ns.name, o.lines().last().unwrap_or_default(), e))
}

/// Turns off tx checksum offload on `dev` in `ns` (see the module doc).
pub fn full_checksums(ns: &Netns, dev: &str) {
    ns.exec(&["ethtool", "-K", dev, "tx", "off"]);
}

/// The underlay: a namespace holding bridge `br0`, in which fastpath's uplink (a veth whose
/// root-namespace end is [`Underlay::uplink`]) and every [`Station`] are plugged.
pub struct Underlay {
    /// The bridge's namespace.
    pub ns: Netns,
    /// The uplink's interface (fastpath opens `af_xdp:{uplink}`).
    pub uplink: String,
    _link: Link,
}

impl Underlay {
    /// A new underlay.
    pub fn new() -> Underlay {
        let ns = Netns::new("fpvu");
        let uplink = unique("fpvup");
        let peer = unique("fpvuq");
        let link = veth(&ns, &uplink, &peer, 1);
        // The bridge hands a VLAN frame to the uplink's veth with its tag in the packet's
        // metadata, and a veth's XDP program (so AF_XDP) sees the frame without it: the tag
        // goes back into the frame, as on a wire, when the veth does not offload it.
        ns.exec(&["ethtool", "-K", &peer, "txvlan", "off"]);
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.exec(&["ip", "link", "set", &peer, "master", "br0"]);
        ns.exec(&["ip", "link", "set", "br0", "up"]);
        Underlay { ns, uplink, _link: link }
    }

    /// A namespace on the underlay: its interface `dev` in the bridge, with address `ip`/24 if
    /// given (a kernel VTEP), checksums complete.
    pub fn station(&self, ip: Option<&str>) -> Station {
        let ns = Netns::new("fpvs");
        let (a, dev) = (unique("fpvb"), unique("fpvd"));
        self.ns.exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &dev, "netns", &ns.name]);
        self.ns.exec(&["ip", "link", "set", &a, "master", "br0"]);
        self.ns.exec(&["ip", "link", "set", &a, "up"]);
        full_checksums(&ns, &dev);
        if let Some(ip) = ip {
            ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &dev]);
        }
        ns.exec(&["ip", "link", "set", &dev, "up"]);
        Station { ns, dev, ip: ip.map(str::to_string) }
    }
}

/// The config of one overlay bridge (VNI 100 of `kind` to the kernel VTEP 10.63.0.2) between
/// the uplink and one access port `name` (`spec`).
pub fn one_bridge(kind: Kind, uplink: &str, name: &str, spec: &str) -> String {
    format!(
        r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "overlay"
vni = 100
tunnel = "{}"
local = "{LOCAL_VTEP}"
remotes = ["10.63.0.2"]

[[port]]
name = "uplink"
spec = "af_xdp:{uplink}"
role = "uplink"

[[port]]
name = "{name}"
spec = "{spec}"
bridge = "overlay"
"#,
        kind.name()
    )
}

/// A tunnel kind as `ip link` and the vswitch config name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// VXLAN, UDP 4789.
    Vxlan,
    /// GENEVE, UDP 6081.
    Geneve,
}

impl Kind {
    /// The config's `tunnel = ...`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vxlan => "vxlan",
            Kind::Geneve => "geneve",
        }
    }
}

/// True when this kernel can make a `kind` device (these machines' kernels have no GENEVE).
pub fn kernel_has(kind: Kind) -> bool {
    let ns = Netns::new("fpvk");
    try_exec(&ns, &["ip", "link", "add", "t0", "type", kind.name(), "id", "1", "remote", "192.0.2.1"])
}

/// A namespace on the underlay (a kernel VTEP or a VLAN host).
pub struct Station {
    /// Its namespace.
    pub ns: Netns,
    /// Its underlay interface.
    pub dev: String,
    /// Its underlay address.
    pub ip: Option<String>,
}

impl Station {
    /// A `kind` device `name` for VNI `vni` to our VTEP (no address yet, down).
    pub fn tunnel(&self, kind: Kind, name: &str, vni: u32) {
        let ip = self.ip.as_deref().expect("a VTEP has an underlay address");
        let id = vni.to_string();
        match kind {
            Kind::Vxlan => self.ns.exec(&[
                "ip", "link", "add", name, "type", "vxlan", "id", &id, "local", ip, "remote", LOCAL_VTEP, "dstport",
                "4789", "dev", &self.dev,
            ]),
            Kind::Geneve => {
                self.ns.exec(&["ip", "link", "add", name, "type", "geneve", "id", &id, "remote", LOCAL_VTEP])
            }
        };
    }

    /// [`Station::tunnel`], with the overlay address `cidr` and MAC `mac` on it, up.
    pub fn overlay(&self, kind: Kind, name: &str, vni: u32, cidr: &str, mac: Option<&str>) {
        self.tunnel(kind, name, vni);
        up(&self.ns, name, cidr, mac, None);
    }
}

/// Gives `dev` in `ns` an address, optionally a MAC and an MTU, and brings it up.
pub fn up(ns: &Netns, dev: &str, cidr: &str, mac: Option<&str>, mtu: Option<u32>) {
    if let Some(m) = mac {
        ns.exec(&["ip", "link", "set", dev, "address", m]);
    }
    if let Some(m) = mtu {
        ns.exec(&["ip", "link", "set", dev, "mtu", &m.to_string()]);
    }
    ns.exec(&["ip", "addr", "add", cidr, "dev", dev]);
    ns.exec(&["ip", "link", "set", dev, "up"]);
}

/// A host behind fastpath: a namespace whose interface `dev` is the peer of `port`, an
/// `af_xdp` access port of the switch.
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// The root-namespace end (fastpath opens `af_xdp:{port}`).
    pub port: String,
    /// Its interface in `ns`.
    pub dev: String,
    _link: Link,
}

impl Host {
    /// A host with `cidr` (if given) and `mac` (if given) on `dev`, MTU `mtu`, checksums complete.
    pub fn new(cidr: Option<&str>, mac: Option<&str>, mtu: u32) -> Host {
        let ns = Netns::new("fpvh");
        let (port, dev) = (unique("fpvp"), unique("fpvq"));
        let link = veth(&ns, &port, &dev, 1);
        full_checksums(&ns, &dev);
        match cidr {
            Some(c) => up(&ns, &dev, c, mac, Some(mtu)),
            None => {
                if let Some(m) = mac {
                    ns.exec(&["ip", "link", "set", &dev, "address", m]);
                }
                ns.exec(&["ip", "link", "set", &dev, "mtu", &mtu.to_string()]);
            }
        }
        Host { ns, port, dev, _link: link }
    }

    /// The spec of its switch port.
    pub fn spec(&self) -> String {
        format!("af_xdp:{}", self.port)
    }

    /// Its interface's MAC.
    pub fn mac(&self) -> [u8; 6] {
        mac_of(&self.ns, &self.dev)
    }
}

/// The MAC of `dev` in `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    fastpath_pmd::sys::parse_mac(ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]).trim()).unwrap()
}

/// `n` bytes of a pseudo-random stream (xorshift64 from `seed`).
fn stream(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// FNV-1a over `b`, continuing from `h` (start with 0xcbf29ce484222325).
fn fnv(mut h: u64, b: &[u8]) -> u64 {
    for &x in b {
        h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Moves `bytes` over one TCP connection from `from` to `to_ip`:`port` (a listener in `to`)
/// and checks that exactly those bytes arrived: the count and a hash of the data. Every step
/// has a deadline, so a stalled stream fails the test instead of hanging it.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, port: u16, bytes: usize) {
    let addr: SocketAddr = format!("{to_ip}:{port}").parse().expect("address");
    let listener = to.enter(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
    listener.set_nonblocking(true).expect("nonblocking listener");
    let data = stream(port as u64 * 0x9e37_79b9_7f4a_7c15, bytes);
    let want = fnv(0xcbf2_9ce4_8422_2325, &data);
    let (got, hash) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let t0 = Instant::now();
            let mut c = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && t0.elapsed() < DEADLINE => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept on {addr}: {e}"),
                }
            };
            c.set_nonblocking(false).expect("blocking stream");
            c.set_read_timeout(Some(DEADLINE)).expect("read timeout");
            let (mut n, mut h, mut buf) = (0usize, 0xcbf2_9ce4_8422_2325u64, vec![0u8; 1 << 16]);
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        h = fnv(h, &buf[..k]);
                        n += k;
                    }
                    Err(e) => panic!("receiving on {addr} after {n} bytes: {e}"),
                }
            }
            (n, h)
        });
        let mut c = from
            .enter(|| TcpStream::connect_timeout(&addr, DEADLINE).unwrap_or_else(|e| panic!("connect {addr}: {e}")));
        c.set_write_timeout(Some(DEADLINE)).expect("write timeout");
        c.write_all(&data).unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let r = rx.join().expect("receiver");
        drop(c);
        r
    });
    assert_eq!(got, bytes, "bytes that arrived at {addr}");
    assert_eq!(hash, want, "the data that arrived at {addr} is the data sent");
}

/// An Ethernet frame: `dst`, `src`, `ethertype`, then `payload`, padded to 60 bytes.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60.max(14 + payload.len()));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// The local experimental ethertype our marker frames use.
pub const MARK_TYPE: u16 = 0x88b5;

/// A marker frame: ethertype [`MARK_TYPE`], `tag` (8 bytes) and a sequence number.
pub fn marker(dst: [u8; 6], src: [u8; 6], tag: &[u8; 8], seq: u32) -> Vec<u8> {
    let mut p = tag.to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    frame(dst, src, MARK_TYPE, &p)
}

/// The tag and sequence number of a marker frame (untagged), if `f` is one.
pub fn read_marker(f: &[u8]) -> Option<([u8; 8], u32)> {
    if f.len() < 26 || f[12..14] != MARK_TYPE.to_be_bytes() {
        return None;
    }
    Some((f[14..22].try_into().ok()?, u32::from_be_bytes(f[22..26].try_into().ok()?)))
}

/// A capture on a packet socket in `ns` on `dev`, on its own thread until it is dropped: every
/// inbound frame, kept.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    h: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing.
    pub fn start(ns: &Netns, dev: &str) -> Capture {
        let sock = ns.enter(|| PacketSocket::open(dev));
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (s2, f2) = (stop.clone(), frames.clone());
        let h = std::thread::spawn(move || {
            // Relaxed: a flag; the frames are behind the mutex.
            while !s2.load(Ordering::Relaxed) {
                sock.recv_until(Duration::from_millis(100), |f| {
                    f2.lock().unwrap().push(f.to_vec());
                    false
                });
            }
        });
        Capture { stop, frames, h: Some(h) }
    }

    /// The frames so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits until `f` holds for the frames so far: false after [`DEADLINE`] (the test then
    /// fails with the switch's report).
    pub fn wait(&self, mut f: impl FnMut(&[Vec<u8>]) -> bool) -> bool {
        let t0 = Instant::now();
        while !f(&self.frames.lock().unwrap()) {
            if t0.elapsed() > DEADLINE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Relaxed: see start.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

/// The sequence numbers of the marker frames with `tag` among `frames`.
pub fn markers(frames: &[Vec<u8>], tag: &[u8; 8]) -> std::collections::BTreeSet<u32> {
    frames.iter().filter_map(|f| read_marker(f)).filter(|(t, _)| t == tag).map(|(_, s)| s).collect()
}

/// A host on an 802.1Q VLAN of the underlay, played by the test on a packet socket (these
/// kernels cannot tag): it answers ARP requests and ICMP echo requests for `ip` that arrive
/// tagged `vid`, tagged `vid`, and counts them; frames with another tag are counted apart.
pub struct VlanHost {
    stop: Arc<AtomicBool>,
    /// ARP requests answered.
    pub arps: Arc<AtomicU64>,
    /// Echo requests answered.
    pub echoes: Arc<AtomicU64>,
    /// Frames in another VLAN or untagged (the trunk carries others; a test may require none
    /// of some kind).
    pub foreign: Arc<AtomicU64>,
    h: Option<std::thread::JoinHandle<()>>,
}

impl VlanHost {
    /// Starts answering on `dev` of `st` as `ip` with MAC `mac` in VLAN `vid`.
    pub fn start(st: &Station, vid: u16, ip: [u8; 4], mac: [u8; 6]) -> VlanHost {
        let sock = st.ns.enter(|| PacketSocket::open(&st.dev));
        let stop = Arc::new(AtomicBool::new(false));
        let (arps, echoes, foreign) = Default::default();
        let mut v = VlanHost { stop: stop.clone(), arps, echoes, foreign, h: None };
        let (a, e, o) = (v.arps.clone(), v.echoes.clone(), v.foreign.clone());
        v.h = Some(std::thread::spawn(move || {
            // Relaxed throughout: counters and a flag, read after the join or for messages.
            while !stop.load(Ordering::Relaxed) {
                recv_tagged(&sock, Duration::from_millis(100), |f| {
                    if f.len() < 18 || f[12..14] != [0x81, 0x00] || u16::from_be_bytes([f[14], f[15]]) & 0xfff != vid {
                        o.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if let Some(r) = answer(f, ip, mac) {
                        let c = if r[16..18] == [0x08, 0x06] { &a } else { &e };
                        c.fetch_add(1, Ordering::Relaxed);
                        sock.send(&r);
                    }
                });
            }
        }));
        v
    }

    /// Stops it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.h.take() {
            h.join().expect("vlan host");
        }
    }
}

impl Drop for VlanHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

/// Receives the inbound frames on `sock` for `timeout`, calling `f` on each with its 802.1Q tag
/// in place: the kernel takes the tag off into the packet's metadata on receive, and gives it
/// back in `PACKET_AUXDATA` (as tcpdump shows it).
fn recv_tagged(sock: &PacketSocket, timeout: Duration, mut f: impl FnMut(&[u8])) {
    const SOL_PACKET: libc::c_int = 263;
    const PACKET_AUXDATA: libc::c_int = 8;
    const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
    const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one int.
    unsafe { libc::setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, (&one as *const libc::c_int).cast(), 4) };
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    let mut ctl = [0u64; 16];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as i32) } <= 0 {
            continue;
        }
        // SAFETY: zeroed sockaddr_ll and msghdr are valid values; recvmsg writes within the
        // buffers they point to, of the sizes given.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: as above.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(&ctl);
        // SAFETY: m points to live buffers (see above).
        let n = unsafe { libc::recvmsg(fd, &mut m, libc::MSG_DONTWAIT) };
        if n <= 0 || sa.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let mut tag = None;
        // SAFETY: the CMSG_* walk stays within msg_control / msg_controllen as recvmsg set them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let d = std::slice::from_raw_parts(libc::CMSG_DATA(c), 20);
                    let status = u32::from_ne_bytes(d[0..4].try_into().unwrap());
                    let tci = u16::from_ne_bytes(d[16..18].try_into().unwrap());
                    let tpid = u16::from_ne_bytes(d[18..20].try_into().unwrap());
                    if status & TP_STATUS_VLAN_VALID != 0 {
                        tag = Some((if status & TP_STATUS_VLAN_TPID_VALID != 0 { tpid } else { 0x8100 }, tci));
                    }
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        let fr = &buf[..n as usize];
        match tag {
            Some((tpid, tci)) if fr.len() >= 12 => {
                let mut t = fr[..12].to_vec();
                t.extend_from_slice(&tpid.to_be_bytes());
                t.extend_from_slice(&tci.to_be_bytes());
                t.extend_from_slice(&fr[12..]);
                f(&t)
            }
            _ => f(fr),
        }
    }
}

/// The answer to a tagged ARP request or ICMP echo request for `ip`, tagged the same.
fn answer(f: &[u8], ip: [u8; 4], mac: [u8; 6]) -> Option<Vec<u8>> {
    let src: [u8; 6] = f[6..12].try_into().ok()?;
    let p = &f[18..];
    let mut r = f.to_vec();
    r[0..6].copy_from_slice(&src);
    r[6..12].copy_from_slice(&mac);
    match u16::from_be_bytes([f[16], f[17]]) {
        0x0806 if p.len() >= 28 && p[6..8] == [0, 1] && p[24..28] == ip => {
            let q = &mut r[18..];
            q[7] = 2;
            q[18..24].copy_from_slice(&p[8..14]);
            q[24..28].copy_from_slice(&p[14..18]);
            q[8..14].copy_from_slice(&mac);
            q[14..18].copy_from_slice(&ip);
            Some(r)
        }
        0x0800 if p.len() >= 28 && p[9] == 1 && p[16..20] == ip => {
            let ihl = (p[0] & 0xf) as usize * 4;
            let tot = u16::from_be_bytes([p[2], p[3]]) as usize;
            if p.len() < tot || tot < ihl + 8 || p[ihl] != 8 {
                return None;
            }
            let q = &mut r[18..18 + tot];
            q[12..16].copy_from_slice(&p[16..20]);
            q[16..20].copy_from_slice(&p[12..16]);
            q[ihl] = 0;
            q[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
            let c = checksum(&q[ihl..], 0);
            q[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
            r.truncate(18 + tot);
            Some(r)
        }
        _ => None,
    }
}

/// A counter's value.
pub fn counted(v: &Arc<AtomicU64>) -> u64 {
    // Relaxed: a statistic.
    v.load(Ordering::Relaxed)
}

/// The command for tests that need none beyond `ip`, `ethtool` and `ping`.
pub const TOOLS: [&str; 3] = ["ip", "ethtool", "ping"];

/// Says the test's requirements are met (else it skips, or fails under CI).
pub fn require(test: &str, more: &[&str]) -> bool {
    let mut v: Vec<&str> = TOOLS.to_vec();
    v.extend_from_slice(more);
    fastpath_pmd::testutil::require(test, true, &v)
}

/// Sends `frames` from a packet socket on `dev` in `ns`, paced (a pause every 16 frames) so
/// that no receive ring on the way overflows: the tests count every frame.
pub fn send_frames(ns: &Netns, dev: &str, frames: &[Vec<u8>]) {
    let sock = ns.enter(|| PacketSocket::open(dev));
    for (i, f) in frames.iter().enumerate() {
        sock.send(f);
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A locally administered MAC `02:00:00:00:hi:lo` from a number.
pub fn mac(n: u16) -> [u8; 6] {
    let b = n.to_be_bytes();
    [2, 0, 0, 0, b[0], b[1]]
}

/// `mac` as text.
pub fn fmt(m: [u8; 6]) -> String {
    fastpath_pmd::sys::fmt_mac(&m)
}

/// DPDK testpmd as the virtio-user frontend of the vhost-user sockets `vdevs` (each
/// `mac=...,path=...,queues=N`) in `--forward-mode=mac` with `args` after `--`, both its lcores
/// on CPU 0 (`(0,1)@0`: the main one sleeps while the forwarding one polls), its stdout in
/// `log`, 1 s stats. The caller reaps it.
#[allow(dead_code)]
pub fn testpmd_virtio_user(prefix: &str, vdevs: &[String], args: &[String], log: &Path) -> std::process::Child {
    let mut c = std::process::Command::new("stdbuf");
    c.args(["-oL", "dpdk-testpmd", "--lcores", "(0,1)@0", "--main-lcore", "1", "--no-huge", "-m", "1024"]).args([
        "--no-pci",
        "--log-level=*:error",
        "--file-prefix",
        prefix,
    ]);
    for (i, v) in vdevs.iter().enumerate() {
        c.arg(format!("--vdev=net_virtio_user{i},{v}"));
    }
    c.args(["--", "--forward-mode=mac"])
        .args(args)
        .args(["--nb-cores=1", "--txd=1024", "--rxd=1024", "--total-num-mbufs=16384"])
        .args(["--stats-period", "1", "--auto-start"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(log).expect("testpmd log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start testpmd")
}
