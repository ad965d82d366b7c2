//! The router between two network namespaces over AF_XDP, as a VNF runs (root): hosts in
//! different subnets ping each other (IPv4 and IPv6) and move a TCP stream through it; TTL 1
//! gets ICMP time exceeded and an unknown destination ICMP unreachable (checked with scapy);
//! routes change on SIGHUP while traffic flows. Every test ends by checking that the router
//! accounted for every packet and that every mbuf came back.
//!
//! ```text
//!  ns h1: p0 10.60.1.2/24 fd00:60:1::2/64 -- veth -- r0 [router port a 10.60.1.1 fd00:60:1::1]
//!  ns h2: p1 10.60.2.2/24 fd00:60:2::2/64 -- veth -- r1 [router port b 10.60.2.1 fd00:60:2::1]
//!         lo 10.70.0.1 (behind the route 10.70.0.0/16 via 10.60.2.2)
//! ```

#[path = "../../../pmd/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fastpath_pmd::testutil::{in_ci, pollers, require};
use serde_json::Value;

fn wait_for(what: &str, secs: u64, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A python3 that can import scapy (Debian's is /usr/bin/python3; PATH may hold another).
fn scapy_python(test: &str) -> Option<PathBuf> {
    for p in ["/usr/bin/python3", "python3"] {
        if Command::new(p).args(["-c", "import scapy.all"]).output().is_ok_and(|o| o.status.success()) {
            return Some(PathBuf::from(p));
        }
    }
    if in_ci() {
        panic!("{test}: python3 cannot import scapy (apt-get install python3-scapy); CI is set");
    }
    eprintln!("SKIPPED {test}: needs python3 with scapy (apt-get install python3-scapy)");
    None
}

/// Two hosts, each in its own namespace behind one router port, and the router's config.
struct Net {
    h1: Netns,
    h2: Netns,
    r0: String,
    r1: String,
    _links: [Link; 2],
    dir: tempfile::TempDir,
}

const BASE: &str = r#"
icmp_rate = 1000
[[port]]
name = "a"
spec = "af_xdp:R0"
addresses = ["10.60.1.1/24", "fd00:60:1::1/64"]
[[port]]
name = "b"
spec = "af_xdp:R1"
addresses = ["10.60.2.1/24", "fd00:60:2::1/64"]
"#;

impl Net {
    fn new() -> Net {
        let (h1, h2) = (Netns::new("fprh"), Netns::new("fprh"));
        let (r0, r1) = (unique("fpr"), unique("fpr"));
        let l0 = veth(&h1, &r0, "p0", 1);
        let l1 = veth(&h2, &r1, "p1", 1);
        for (ns, dev, v4, v6, gw4, gw6) in [
            (&h1, "p0", "10.60.1.2/24", "fd00:60:1::2/64", "10.60.1.1", "fd00:60:1::1"),
            (&h2, "p1", "10.60.2.2/24", "fd00:60:2::2/64", "10.60.2.1", "fd00:60:2::1"),
        ] {
            // IPv6 on (the helper turns it off). Checksums in software: over AF_XDP a frame leaves the
            // kernel as bytes, without the "checksum to be filled in" mark of a veth offload.
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"]);
            ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=0")]);
            ns.exec(&["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
            ns.exec(&["ip", "addr", "add", v4, "dev", dev]);
            ns.exec(&["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            ns.exec(&["ip", "route", "add", "default", "via", gw4]);
            ns.exec(&["ip", "-6", "route", "add", "default", "via", gw6]);
        }
        h2.exec(&["ip", "addr", "add", "10.70.0.1/32", "dev", "lo"]);
        h2.exec(&["ip", "addr", "add", "10.80.0.1/32", "dev", "lo"]);
        h2.exec(&["ip", "addr", "add", "10.60.2.3/24", "dev", "p1"]);
        Net { h1, h2, r0, r1, _links: [l0, l1], dir: tempfile::tempdir().unwrap() }
    }

    /// Writes the config: the two ports and `routes` (TOML `[[route]]` tables).
    fn write_config(&self, routes: &str) -> PathBuf {
        let p = self.dir.path().join("router.toml");
        let text = BASE.replace("R0", &self.r0).replace("R1", &self.r1) + routes;
        let tmp = self.dir.path().join("router.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    fn start(&self, config: &Path) -> Reap {
        // The last CPU this process may use (CPU 1 on the 2-CPU machines, away from the kernel's
        // own work for the pings on CPU 0).
        let cpu = fastpath_pmd::lcore::available_cores().last().copied().unwrap_or(0).to_string();
        let p = Command::new(env!("CARGO_BIN_EXE_router"))
            .args(["--config", config.to_str().unwrap(), "--cores", &cpu, "--idle", "adaptive", "--json"])
            .args(["--log", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = Reap(Some(p));
        let xdp = |i: &str| run(&["ip", "link", "show", "dev", i]).contains("xdp");
        wait_for("the router's XDP programs", 10, || xdp(&self.r0) && xdp(&self.r1));
        r
    }
}

/// `ping -c N` from `ns`; the number of replies.
fn ping(ns: &Netns, dst: &str, n: u32) -> u32 {
    let six = if dst.contains(':') { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", six, "-n", "-q", "-c", &n.to_string(), "-i", "0.05", "-W", "2", dst])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split(',').find_map(|p| p.trim().strip_suffix(" received").and_then(|x| x.trim().parse().ok())).unwrap_or(0)
}

/// Stops the router and reads its JSON report; checks that every packet the stage took is
/// accounted for (forwarded, answered, or dropped under a reason) and every mbuf came back.
fn stop(mut p: Reap) -> (Value, String) {
    p.signal(libc::SIGINT);
    let out = p.wait();
    let (so, se) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "router failed:\n{so}\n{se}");
    let lines: Vec<Value> = so.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let stage = lines.iter().find(|j| j["stage"] == "router").expect("stage line").clone();
    let pool = lines.iter().find(|j| j["mempool"].is_string()).expect("mempool line");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf came back:\n{so}");
    let sum = |o: &Value| o.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    let st = &stage["stats"];
    let answered = ["forwarded", "arp-replies", "nd-adverts", "echo-replies"].iter().map(|k| st[k].as_u64().unwrap());
    assert_eq!(
        stage["packets"].as_u64().unwrap(),
        answered.sum::<u64>() + sum(&stage["drops"]),
        "every packet forwarded, answered or dropped with a reason: {stage}"
    );
    (stage, se)
}

const TCP_SINK: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5201)); s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(30); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"#;

const TCP_SOURCE: &str = r#"
import socket, sys
n = int(sys.argv[1]); c = socket.create_connection((sys.argv[2], 5201), timeout=30)
chunk = bytes(range(256)) * 256; left = n
while left > 0:
    k = min(left, len(chunk)); c.sendall(chunk[:k]); left -= k
c.shutdown(socket.SHUT_WR); print(c.recv(64).decode(), flush=True)
"#;

/// Sends what the router must answer with ICMP errors; prints one JSON line per probe.
const PROBES: &str = r#"
import json
from scapy.all import IP, IPerror, IPv6, ICMP, UDP, Raw, sr1, conf
conf.verb = 0
out = {}
r = sr1(IP(dst="10.60.2.2", ttl=1)/UDP(sport=4000, dport=33434)/Raw(b"x"*100), timeout=3, iface="p0")
out["ttl"] = None if r is None else {"src": r[IP].src, "type": r[ICMP].type, "code": r[ICMP].code,
    "quoted_dst": r[IPerror].dst if r.haslayer(IPerror) else None,
    "ip_ok": IP(bytes(r[IP])).chksum == r[IP].chksum}
r = sr1(IP(dst="10.99.0.1")/UDP(sport=4001, dport=9)/Raw(b"y"*10), timeout=3, iface="p0")
out["unreach"] = None if r is None else {"src": r[IP].src, "type": r[ICMP].type, "code": r[ICMP].code}
r = sr1(IPv6(dst="fd00:60:2::2", hlim=1)/UDP(sport=4002, dport=33434), timeout=3, iface="p0")
out["ttl6"] = None if r is None else {"src": r[IPv6].src, "type": int(r[IPv6].payload.type)}
r = sr1(IPv6(dst="fd00:99::1")/UDP(sport=4003, dport=9), timeout=3, iface="p0")
out["unreach6"] = None if r is None else {"src": r[IPv6].src, "type": int(r[IPv6].payload.type)}
print(json.dumps(out))
"#;

#[test]
fn router_forwards_pings_and_tcp_and_answers_with_icmp_errors() {
    let name = "router_forwards_pings_and_tcp_and_answers_with_icmp_errors";
    if !require(name, true, &["ip", "ping", "ethtool"]) {
        return;
    }
    let Some(py) = scapy_python(name) else { return };
    let _cpus = pollers();
    let net = Net::new();
    let cfg = net.write_config("[[route]]\nprefix = \"10.70.0.0/16\"\nvia = \"10.60.2.2\"\n");
    let r = net.start(&cfg);

    // Neighbours get learned on the first pings (a packet to an unknown neighbour is dropped
    // while the router asks); after that, every echo comes back.
    for dst in ["10.60.2.2", "fd00:60:2::2", "10.70.0.1"] {
        ping(&net.h1, dst, 3);
    }
    assert_eq!(ping(&net.h1, "10.60.1.1", 10), 10, "the router answers pings to its own addresses");
    assert_eq!(ping(&net.h1, "fd00:60:1::1", 10), 10, "and over IPv6");
    assert_eq!(ping(&net.h1, "10.60.2.2", 20), 20, "h1 -> h2 through the router");
    assert_eq!(ping(&net.h2, "10.60.1.2", 20), 20, "h2 -> h1");
    assert_eq!(ping(&net.h1, "fd00:60:2::2", 20), 20, "h1 -> h2 over IPv6");
    assert_eq!(ping(&net.h1, "10.70.0.1", 20), 20, "through the configured route");

    // A TCP stream h1 -> h2: every byte arrives.
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &net.h2.name, "python3", "-c", TCP_SINK])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let bytes = 8u64 << 20;
    let src = Command::new("ip")
        .args(["netns", "exec", &net.h1.name, "python3", "-c", TCP_SOURCE, &bytes.to_string(), "10.60.2.2"])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&src.stdout).trim().to_string();
    let _ = sink.wait();
    assert_eq!(got, bytes.to_string(), "TCP stream through the router: {}", String::from_utf8_lossy(&src.stderr));

    // ICMP errors, checked with scapy from h1.
    let out = Command::new("ip").args(["netns", "exec", &net.h1.name]).arg(&py).args(["-c", PROBES]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let j: Value =
        serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(j["ttl"]["src"], "10.60.1.1", "{j}");
    assert_eq!((j["ttl"]["type"].as_u64(), j["ttl"]["code"].as_u64()), (Some(11), Some(0)), "time exceeded: {j}");
    assert_eq!(j["ttl"]["quoted_dst"], "10.60.2.2", "the error quotes the packet: {j}");
    assert_eq!(j["ttl"]["ip_ok"], true, "{j}");
    assert_eq!(j["unreach"]["src"], "10.60.1.1", "{j}");
    assert_eq!(
        (j["unreach"]["type"].as_u64(), j["unreach"]["code"].as_u64()),
        (Some(3), Some(0)),
        "net unreachable: {j}"
    );
    assert_eq!(j["ttl6"]["type"], 3, "ICMPv6 time exceeded: {j}");
    assert_eq!(j["ttl6"]["src"], "fd00:60:1::1", "{j}");
    assert_eq!(j["unreach6"]["type"], 1, "ICMPv6 destination unreachable: {j}");

    let (stage, log) = stop(r);
    let st = &stage["stats"];
    assert!(st["forwarded"].as_u64().unwrap() >= 2 * (20 + 20 + 20 + 20), "{stage}");
    assert!(st["echo-replies"].as_u64().unwrap() >= 20, "{stage}");
    assert!(st["arp-replies"].as_u64().unwrap() >= 2 && st["nd-adverts"].as_u64().unwrap() >= 1, "{stage}");
    assert!(st["icmp-errors"].as_u64().unwrap() >= 4, "{stage}");
    assert_eq!(stage["drops"]["ttl-exceeded"].as_u64(), Some(2), "{stage}");
    assert!(stage["drops"]["no-route"].as_u64().unwrap() >= 2, "{stage}");
    assert_eq!(stage["drops"]["bad-checksum"].as_u64(), Some(0), "{stage}");
    assert!(log.contains("neighbour 10.60.2.2 is at"), "{log}");
}

/// Many routes, replaced on SIGHUP while h1 pings through the router: no crash, no mbuf lost,
/// and each reload's routes are the ones used (a new prefix becomes reachable, a deleted one
/// unreachable, a changed next hop is resolved and used).
#[test]
fn routes_change_on_sighup_while_traffic_flows() {
    let name = "routes_change_on_sighup_while_traffic_flows";
    if !require(name, true, &["ip", "ping", "ethtool"]) {
        return;
    }
    let _cpus = pollers();
    let net = Net::new();
    // 2000 extra /24 routes that come and go, so the LPM changes a lot under the lookups.
    let many = |on: bool, via: &str| -> String {
        let mut s = String::new();
        for i in 0..2000u32 {
            if on || i % 2 == 0 {
                s += &format!("[[route]]\nprefix = \"172.{}.{}.0/24\"\nvia = \"{via}\"\n", 16 + i / 256, i % 256);
            }
        }
        s
    };
    let route = |p: &str, via: &str| format!("[[route]]\nprefix = \"{p}\"\nvia = \"{via}\"\n");
    let cfg = net.write_config(&(route("10.70.0.0/16", "10.60.2.2") + &many(true, "10.60.2.2")));
    let r = net.start(&cfg);
    ping(&net.h1, "10.70.0.1", 3);
    assert_eq!(ping(&net.h1, "10.70.0.1", 10), 10);
    assert_eq!(ping(&net.h1, "10.80.0.1", 3), 0, "no route to 10.80.0.0/16 yet");

    // Traffic flows while the routes change, 6 reloads in a row.
    let flood = Command::new("ip")
        .args(["netns", "exec", &net.h1.name, "ping", "-4", "-n", "-q", "-c", "2000", "-i", "0.002", "10.70.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for k in 0..6 {
        let via = if k % 2 == 0 { "10.60.2.3" } else { "10.60.2.2" };
        net.write_config(&(route("10.70.0.0/16", via) + &route("10.80.0.0/16", "10.60.2.2") + &many(k % 2 == 1, via)));
        r.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success() || out.status.code() == Some(1), "ping ran");
    // The last config routes 10.70.0.0/16 via 10.60.2.2 again and adds 10.80.0.0/16.
    assert_eq!(ping(&net.h1, "10.80.0.1", 10), 10, "the new route is used");
    net.write_config(&route("10.80.0.0/16", "10.60.2.3"));
    r.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    ping(&net.h1, "10.80.0.1", 2);
    assert_eq!(ping(&net.h1, "10.80.0.1", 10), 10, "through the new next hop");
    assert_eq!(ping(&net.h1, "10.70.0.1", 3), 0, "the deleted route is gone");
    // A bad file is refused and the routes stay.
    let p = net.dir.path().join("router.toml");
    std::fs::write(&p, BASE.replace("R0", &net.r0).replace("R1", &net.r1) + "[[route]]\nprefix = \"10.90.0.0/16\"\n")
        .unwrap();
    r.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping(&net.h1, "10.80.0.1", 5), 5, "the routes stay after a refused reload");

    let (stage, log) = stop(r);
    assert_eq!(log.matches("router: reloaded").count(), 7, "{log}");
    assert!(log.contains("reload refused") && log.contains("missing field `via`"), "{log}");
    assert!(log.contains("neighbour 10.60.2.3 is at"), "the changed next hop was resolved: {log}");
    assert!(stage["drops"]["no-route"].as_u64().unwrap() >= 3, "{stage}");
}
