//! Topology helpers for the privileged tests: network namespaces and links removed by guards
//! (even when the test fails), packet sockets, and frame builders.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A child process killed on drop (when the test failed before waiting for it).
#[derive(Debug)]
pub struct Reap(pub Option<std::process::Child>);

impl Reap {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends it a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for it and collects its output.
    pub fn wait(&mut self) -> std::process::Output {
        self.0.take().expect("already waited").wait_with_output().expect("wait")
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// True when the running kernel is at least `major.minor` (`/proc/sys/kernel/osrelease`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = rel.trim().split(|c: char| !c.is_ascii_digit()).map(|s| s.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
}

/// A name unique to this process and call: `{prefix}{pid % 10000}x{n}` (at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    // Relaxed: only uniqueness matters.
    let n = N.fetch_add(1, Ordering::Relaxed);
    let s = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(s.len() <= 15, "name {s} too long");
    s
}

/// Runs a command and panics with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failures.
pub fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name; loopback up, IPv6 off (no stray frames).
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs `f` on a thread that entered this namespace (sockets it creates stay in it).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let f0 = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: setns on a namespace file we hold; it only changes this thread's netns.
                let rc = unsafe { libc::setns(f0.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        run_quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// A link in the host namespace, deleted on drop (its veth peer goes with it).
#[derive(Debug)]
pub struct Link {
    /// Its name.
    pub name: String,
}

impl Drop for Link {
    fn drop(&mut self) {
        run_quiet(&["ip", "link", "del", &self.name]);
    }
}

/// A veth pair: `host` in this namespace, `peer` moved into `ns`, both up, IPv6 off.
/// `queues` sets numrxqueues/numtxqueues on both ends.
pub fn veth(ns: &Netns, host: &str, peer: &str, queues: u32) -> Link {
    let q = queues.to_string();
    run(&[
        "ip",
        "link",
        "add",
        host,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "netns",
        &ns.name,
    ]);
    let l = Link { name: host.to_string() };
    run_quiet(&["sysctl", "-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=1")]);
    run(&["ip", "link", "set", host, "up"]);
    ns.exec(&["ip", "link", "set", peer, "up"]);
    l
}

/// An AF_PACKET socket bound to one interface (in the namespace of the calling thread).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a raw packet socket on `ifname` receiving every protocol.
    pub fn open(ifname: &str) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket() has no memory preconditions; checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto as i32) };
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let idx = fastpath_pmd::sys::if_index(ifname).unwrap_or_else(|| panic!("no interface {ifname}"));
        // SAFETY: a zeroed sockaddr_ll is a valid value; we fill the fields bind needs.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = idx as i32;
        // SAFETY: sa is a valid sockaddr_ll for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind packet socket: {}", std::io::Error::last_os_error());
        let big: libc::c_int = 8 << 20;
        // SAFETY: setsockopt reads one int.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &big as *const libc::c_int as *const libc::c_void,
                4,
            )
        };
        PacketSocket { fd }
    }

    /// Sends one frame (retrying while the device queue is full).
    pub fn send(&self, frame: &[u8]) {
        loop {
            // SAFETY: frame is a valid buffer for the call.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n == frame.len() as isize {
                return;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN) {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            panic!("packet socket send: {e}");
        }
    }

    /// Receives frames until `until` returns true or `timeout` passes; calls `f` on each
    /// inbound frame (outgoing copies are skipped).
    pub fn recv_until(&self, timeout: Duration, mut f: impl FnMut(&[u8]) -> bool) {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as i32) };
            if r <= 0 {
                continue;
            }
            // SAFETY: a zeroed sockaddr_ll is valid; recvfrom writes at most its size.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and sa are valid for writes of the given sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut sl,
                )
            };
            if n <= 0 {
                continue;
            }
            if sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if f(&buf[..n as usize]) {
                return;
            }
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// One's-complement checksum of `b` (inverted, ready to store).
pub fn checksum(b: &[u8], init: u32) -> u16 {
    let mut s = init as u64;
    for w in b.chunks(2) {
        s += if w.len() == 2 { u16::from_be_bytes([w[0], w[1]]) as u64 } else { (w[0] as u64) << 8 };
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Pseudo-header sum (not folded, not inverted) for IPv4.
pub fn pseudo4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let w = |a: [u8; 4]| u16::from_be_bytes([a[0], a[1]]) as u32 + u16::from_be_bytes([a[2], a[3]]) as u32;
    w(src) + w(dst) + proto as u32 + len as u32
}

/// An Ethernet + IPv4 + UDP frame with `payload`, checksums filled in.
pub fn udp4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut f = vec![0u8; 14 + 20 + ulen];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + ulen) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&(ulen as u16).to_be_bytes());
    f[42..].copy_from_slice(payload);
    let c = checksum(&f[34..], pseudo4(src, dst, 17, ulen as u16));
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

/// True when the IPv4 header and the UDP/TCP checksum of an untagged IPv4 frame are valid.
pub fn l4_checksums_ok(f: &[u8]) -> bool {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return false;
    }
    let ihl = (f[14] & 0xf) as usize * 4;
    if checksum(&f[14..14 + ihl], 0) != 0 {
        return false;
    }
    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
    let l4 = &f[14 + ihl..14 + tot];
    let (src, dst) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
    checksum(l4, pseudo4(src, dst, f[23], l4.len() as u16)) == 0
}
