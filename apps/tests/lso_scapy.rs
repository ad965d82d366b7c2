//! `fastpath l2fwd --stage lso,...` checked by tools nobody here wrote.
//!
//! scapy (Debian's python3-scapy) builds large TCP packets — IPv4 and IPv6 (one with a
//! hop-by-hop header), TCP options (MSS, window scale, SACK-permitted, timestamps), PSH, FIN,
//! CWR and ECE, a VLAN tag, sequence numbers about to wrap, up to 65535 bytes of IP — plus small
//! packets, UDP and ARP that must pass untouched. They go through `fastpath l2fwd` from one pcap
//! file to another (64 KiB frames travel as mbuf chains both ways), plainly with
//! `--stage lso,mss=1448` and behind a tunnel with `--stage vxlan-encap,... --stage lso,mss=1400`
//! (and GENEVE over IPv6, NVGRE). scapy then checks every segment on its own terms (lengths,
//! sequence numbers, flags, IPv4 IDs, checksums recomputed by scapy, outer headers, the outer UDP
//! source port) and that the payload reassembles exactly; tshark, with checksum validation on,
//! must find no bad checksum, nothing malformed and no expert error.
//!
//! Needs tshark and python3 with scapy (`bash .ci/run` installs them): skips with the reason
//! when missing, fails instead under CI.

#[path = "tshark/mod.rs"]
mod tshark;

use std::path::{Path, PathBuf};
use std::process::Command;

use fastpath_pmd::testutil::{in_ci, require};

/// The scapy side. `gen DIR` writes DIR/big.pcap (plain) and DIR/inner.pcap (for tunnels);
/// `check IN OUT MSS TUNNEL` checks OUT against IN and prints
/// `OK <segments> <packets passed untouched> <payload bytes segmented>`.
const SCAPY: &str = r#"
import sys
from scapy.all import *
from scapy.contrib.geneve import GENEVE

def pl(n, seed):
    return bytes(((i * 131 + seed * 7919) >> 3) & 0xff for i in range(n))

M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
OPTS = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (123456, 654321))]

def gen(d):
    big = [
        Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", id=1000, flags="DF", ttl=61)
            /TCP(sport=40000, dport=5201, seq=4294900000, ack=12345, flags="PA", window=502, options=OPTS)
            /Raw(pl(65535 - 20 - 40, 1)),
        Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", id=65530, tos=0x10)
            /TCP(sport=40001, dport=5201, seq=7, ack=99, flags="FPA", options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
            /Raw(pl(30000, 2)),
        Ether(src=M1, dst=M2)/IP(src="10.0.0.3", dst="10.0.0.4", id=5, flags="DF")
            /TCP(sport=40002, dport=5201, seq=100, ack=1, flags="CEA", options=OPTS)
            /Raw(pl(20000, 3)),
        Ether(src=M2, dst=M1)/IPv6(src="2001:db8::a", dst="2001:db8::b", fl=0x12345, tc=0x28, hlim=33)
            /TCP(sport=443, dport=50000, seq=1, ack=2, flags="PA", options=OPTS)
            /Raw(pl(64000, 4)),
        Ether(src=M2, dst=M1)/IPv6(src="2001:db8::a", dst="2001:db8::b")/IPv6ExtHdrHopByHop()
            /TCP(sport=443, dport=50001, seq=3000000000, flags="FA")
            /Raw(pl(10000, 5)),
        Ether(src=M1, dst=M2)/Dot1Q(vlan=100, prio=5)/IP(src="10.9.0.1", dst="10.9.0.2", id=77)
            /TCP(sport=1, dport=2, seq=5, flags="A")
            /Raw(pl(9000, 6)),
        Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2")/TCP(sport=40000, dport=5201, flags="A")/Raw(pl(500, 7)),
        Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=9, dport=9)/Raw(pl(3000, 8)),
        Ether(src=M1, dst="ff:ff:ff:ff:ff:ff")/ARP(psrc="10.0.0.1", pdst="10.0.0.9"),
    ]
    wrpcap(d + "/big.pcap", [Ether(raw(p)) for p in big])
    inner = [big[1], big[2], big[4], big[5], big[6], big[8],
        Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", id=1, flags="DF")
            /TCP(sport=40000, dport=5201, seq=4294967000, flags="PA", options=OPTS)/Raw(pl(60000, 9)),
        Ether(src=M2, dst=M1)/IPv6(src="2001:db8::a", dst="2001:db8::b")
            /TCP(sport=443, dport=50000, flags="PA", options=OPTS)/Raw(pl(50000, 10)),
    ]
    wrpcap(d + "/inner.pcap", [Ether(raw(p)) for p in inner])

def csum_ok(pkt, layer):
    """The checksum of `layer` in `pkt` equals scapy's own computation."""
    got = pkt[layer].chksum
    x = pkt.copy()
    del x[layer].chksum
    return Ether(raw(x))[layer].chksum == got

def l3(p):
    return p[IP] if IP in p else p[IPv6]

def check_tcp_seg(orig, seg, i, n, mss):
    """One segment (an Ether frame) of `orig`: returns its payload."""
    ot, st = orig[TCP], seg[TCP]
    payload = bytes(st.payload)
    assert len(payload) == (mss if i + 1 < n else len(bytes(ot.payload)) - mss * (n - 1)), ("payload length", i)
    hdr = len(raw(orig)) - len(bytes(ot.payload))
    assert len(raw(seg)) == hdr + len(payload), ("frame length", i)
    if Dot1Q in orig:
        assert seg[Dot1Q].vlan == orig[Dot1Q].vlan and seg[Dot1Q].prio == orig[Dot1Q].prio
    assert (seg.src, seg.dst) == (orig.src, orig.dst)
    if IP in orig:
        oi, si = orig[IP], seg[IP]
        for f in ("ihl", "tos", "ttl", "proto", "src", "dst", "flags", "frag"):
            assert getattr(si, f) == getattr(oi, f), (f, i)
        assert si.len == len(raw(si)), ("ip length", i)
        assert si.id == (oi.id + i) & 0xffff, ("ip id", i, si.id, oi.id)
        assert csum_ok(seg, IP), ("ip checksum", i)
    else:
        oi, si = orig[IPv6], seg[IPv6]
        for f in ("tc", "fl", "hlim", "nh", "src", "dst"):
            assert getattr(si, f) == getattr(oi, f), (f, i)
        assert si.plen == len(raw(si)) - 40, ("ipv6 payload length", i)
        if IPv6ExtHdrHopByHop in orig:
            assert raw(seg[IPv6ExtHdrHopByHop])[:8] == raw(orig[IPv6ExtHdrHopByHop])[:8]
    for f in ("sport", "dport", "ack", "dataofs", "window", "urgptr", "options"):
        assert getattr(st, f) == getattr(ot, f), (f, i)
    assert st.seq == (ot.seq + i * mss) & 0xffffffff, ("seq", i)
    want = int(ot.flags)
    if i > 0:
        want &= ~0x80
    if i + 1 < n:
        want &= ~0x09
    assert int(st.flags) == want, ("flags", i, int(st.flags), want)
    assert csum_ok(seg, TCP), ("tcp checksum", i)
    return payload

def inner_of(s):
    e = s.getlayer(Ether, 2)
    assert e is not None, "no inner Ethernet"
    return Ether(raw(e))

def frames(path):
    """The frames of a pcap file, whole (scapy's rdpcap cuts records at 65535 bytes)."""
    import struct
    b = open(path, "rb").read()
    end = "<" if b[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    o, v = 24, []
    while o + 16 <= len(b):
        incl = struct.unpack(end + "I", b[o + 8:o + 12])[0]
        v.append(b[o + 16:o + 16 + incl])
        o += 16 + incl
    return v

def check(inp, outp, mss, tunnel):
    ins, outs = frames(inp), frames(outp)
    k = segments = passed = payload = 0
    outer_ids = []
    for p in ins:
        orig = Ether(p)
        big = TCP in orig and len(bytes(orig[TCP].payload)) > mss
        n = -(-len(bytes(orig[TCP].payload)) // mss) if big else 1
        got = [Ether(x) for x in outs[k:k + n]]
        assert len(got) == n, ("segments of packet", len(ins), k)
        k += n
        data = b""
        ids, sports = [], set()
        for i, s in enumerate(got):
            inner = s
            if tunnel:
                if IP in s:
                    o = s[IP]
                    assert o.len == len(raw(o)) and csum_ok(s, IP), ("outer ipv4", i)
                    ids.append(o.id)
                else:
                    assert s[IPv6].plen == len(raw(s[IPv6])) - 40, ("outer ipv6", i)
                if UDP in s and s[UDP].dport in (4789, 6081):
                    u = s[UDP]
                    assert u.len == len(raw(u)), ("outer udp length", i)
                    sports.add(u.sport)
                    assert u.chksum == 0 or csum_ok(s, UDP), ("outer udp checksum", i)
                    if isinstance(s.payload, IPv6):
                        assert u.chksum != 0, ("outer udp checksum over ipv6", i)
                inner = inner_of(s)
            if big:
                data += check_tcp_seg(orig, inner, i, n, mss)
            else:
                assert raw(inner) == raw(orig), "untouched"
                passed += 1
        if big:
            assert data == bytes(orig[TCP].payload), "payload reassembles"
            segments += n
            payload += len(data)
        assert len(sports) <= 1, "one outer source port per packet"
        assert all((b - a) & 0xffff == 1 for a, b in zip(ids, ids[1:])), ("outer ids", ids)
    assert k == len(outs), ("extra frames", k, len(outs))
    print("OK", segments, passed, payload)

if sys.argv[1] == "gen":
    gen(sys.argv[2])
else:
    check(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
"#;

/// A python3 that can import scapy (Debian's is /usr/bin/python3; PATH may hold another).
fn scapy_python(test: &str) -> Option<PathBuf> {
    if !require(test, false, &["tshark", "python3"]) {
        return None;
    }
    for p in ["python3", "/usr/bin/python3"] {
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

fn scapy(py: &Path, args: &[&str]) -> String {
    let o = Command::new(py).arg("-c").arg(SCAPY).args(args).output().expect("run python3");
    assert!(o.status.success(), "scapy {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `fastpath l2fwd` from pcap `input` to pcap `output` through `stages`: the JSON report.
fn l2fwd(input: &Path, output: &Path, stages: &[&str]) -> Vec<serde_json::Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fastpath"));
    c.arg("l2fwd").arg("--port").arg(format!("pcap:rx={},tx={}", input.display(), output.display()));
    for s in stages {
        c.arg("--stage").arg(s);
    }
    c.args(["--json", "--duration", "60"]);
    let o = c.output().expect("run fastpath");
    assert!(o.status.success(), "fastpath l2fwd {stages:?}: {}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pool = lines.iter().find(|l| l.get("mempool").is_some()).expect("a mempool line");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf back in the pool");
    assert_eq!(pool["stopped_by"], "input ended");
    for s in lines.iter().filter(|l| l.get("stage").is_some()) {
        let drops = s["drops"].as_object().cloned().unwrap_or_default();
        assert!(drops.values().all(|v| v == 0), "{stages:?}: drops in {s}");
    }
    lines
}

/// tshark with checksum validation on every frame (see `tshark::check_clean`).
fn tshark_clean(pcap: &Path, frames: usize) {
    let rows = tshark::fields(pcap, &tshark::CLEAN);
    assert_eq!(rows.len(), frames, "tshark sees every frame");
    let mut tcp_checked = 0;
    for (n, r) in rows.iter().enumerate() {
        tcp_checked += tshark::check_clean(r, &format!("{}: frame {}: {r:?}", pcap.display(), n + 1));
    }
    assert!(tcp_checked > 0, "tshark checked TCP checksums");
}

#[test]
fn lso_of_scapy_packets_verified_by_scapy_and_tshark() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let test = "lso_of_scapy_packets_verified_by_scapy_and_tshark";
    let Some(py) = scapy_python(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scapy(&py, &["gen", &d.display().to_string()]);
    let (input, out) = (d.join("big.pcap"), d.join("out.pcap"));
    let lines = l2fwd(&input, &out, &["lso,mss=1448"]);
    let verdict = scapy(&py, &["check", &input.display().to_string(), &out.display().to_string(), "1448", "0"]);
    let parts: Vec<&str> = verdict.split_whitespace().collect();
    assert_eq!(parts[0], "OK", "{verdict}");
    let segments: usize = parts[1].parse().unwrap();
    let passed: usize = parts[2].parse().unwrap();
    assert_eq!(passed, 3, "the small TCP packet, UDP and ARP pass untouched");
    let lso = lines.iter().find(|l| l["stage"] == "lso").expect("an lso stage line");
    assert_eq!(lso["stats"]["segments"], segments, "{lso}");
    assert_eq!(lso["stats"]["segmented"], 6);
    // pcap takes chains: only the headers were copied, not one payload byte.
    let payload: u64 = parts[3].parse().unwrap();
    let (copied, out_bytes) =
        (lso["stats"]["copied-bytes"].as_u64().unwrap(), lso["stats"]["out-bytes"].as_u64().unwrap());
    assert_eq!(copied, out_bytes - payload, "copies: headers only");
    assert!(copied * 10 < out_bytes, "copies per byte {copied}/{out_bytes}");
    tshark_clean(&out, segments + passed);
}

#[test]
fn lso_behind_tunnel_encap_verified_by_scapy_and_tshark() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let test = "lso_behind_tunnel_encap_verified_by_scapy_and_tshark";
    let Some(py) = scapy_python(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scapy(&py, &["gen", &d.display().to_string()]);
    let input = d.join("inner.pcap");
    for (i, encap) in [
        "vxlan-encap,vni=77,local=192.0.2.1,remote=192.0.2.2,udp-csum=on",
        "vxlan-encap,vni=78,local=192.0.2.1,remote=192.0.2.2",
        "geneve-encap,vni=79,local=2001:db8::1,remote=2001:db8::2,option=0x0102:0x80:00000001",
        "nvgre-encap,vni=80,local=192.0.2.1,remote=192.0.2.2",
    ]
    .iter()
    .enumerate()
    {
        let out = d.join(format!("tun{i}.pcap"));
        l2fwd(&input, &out, &[encap, "lso,mss=1400"]);
        let verdict = scapy(&py, &["check", &input.display().to_string(), &out.display().to_string(), "1400", "1"]);
        let parts: Vec<&str> = verdict.split_whitespace().collect();
        assert_eq!(parts[0], "OK", "{encap}: {verdict}");
        let (segments, passed): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        assert_eq!(passed, 2, "{encap}: the small TCP packet and ARP are only encapsulated");
        tshark_clean(&out, segments + passed);
    }
}
