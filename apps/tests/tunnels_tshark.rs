//! The tunnel stages checked by tools nobody here wrote.
//!
//! - scapy (Debian's python3-scapy) builds inner frames of many kinds; `fastpath l2fwd` encaps
//!   them from a pcap file into another one; tshark decodes the result with checksum validation
//!   on and must find the tunnel with the right VNI, every checksum good, nothing malformed.
//! - scapy builds VXLAN / GENEVE / NVGRE packets over IPv4 and IPv6 (its own checksums, its own
//!   header layouts); `fastpath l2fwd` decaps them and must give scapy's inner frames back
//!   byte for byte, and drop the ones for another VNI.
//!
//! Both need tshark and python3 with scapy (`bash .ci/run` installs them); they skip with the
//! reason when missing, and fail instead under CI.

#[path = "tshark/mod.rs"]
mod tshark;

use std::path::{Path, PathBuf};
use std::process::Command;

use fastpath_pmd::testutil::{in_ci, require};

/// A python3 that can import scapy (Debian's is /usr/bin/python3; PATH may hold another).
fn scapy_python() -> Option<PathBuf> {
    for p in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(p).args(["-c", "import scapy.all"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return Some(PathBuf::from(p));
        }
    }
    None
}

fn tools(test: &str) -> Option<PathBuf> {
    if !require(test, false, &["tshark", "python3"]) {
        return None;
    }
    match scapy_python() {
        Some(p) => Some(p),
        None if in_ci() => panic!("{test}: python3 cannot import scapy (apt-get install python3-scapy); CI is set"),
        None => {
            eprintln!("SKIPPED {test}: needs python3 with scapy (apt-get install python3-scapy)");
            None
        }
    }
}

/// The scapy side: inner frames, and encapsulated packets for decap.
const SCAPY: &str = r#"
import sys
from scapy.all import *
from scapy.contrib.geneve import GENEVE
out = sys.argv[1]
m1, m2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
def pl(n):
    return Raw(bytes((i * 7 + 1) & 0xff for i in range(n)))
inner = [
    Ether(src=m1, dst=m2)/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=1234, dport=5003)/pl(20),
    Ether(src=m1, dst=m2)/IP(src="10.0.0.1", dst="10.0.0.3", options=[IPOption_RR(routers=["1.2.3.4"])])/TCP(sport=5555, dport=5001, flags="PA", options=[("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")])/pl(100),
    Ether(src=m2, dst=m1)/IPv6(src="2001:db8::a", dst="2001:db8::b")/TCP(sport=40000, dport=5002)/pl(300),
    Ether(src=m1, dst=m2)/Dot1Q(vlan=100, prio=3)/IP(src="10.9.0.1", dst="10.9.0.2")/ICMP()/pl(32),
    Ether(src=m1, dst="ff:ff:ff:ff:ff:ff")/ARP(psrc="10.0.0.1", pdst="10.0.0.9"),
    Ether(src=m2, dst=m1)/IPv6(src="2001:db8::1", dst="2001:db8::2")/IPv6ExtHdrHopByHop()/UDP(sport=7, dport=9)/pl(1000),
    Ether(src=m1, dst=m2)/IP(src="10.0.0.7", dst="10.0.0.8")/UDP(sport=999, dport=9999)/pl(1400),
]
inner = [Ether(raw(p)) for p in inner]
wrpcap(out + "/inner.pcap", inner)
outer4 = lambda: Ether(src="02:aa:00:00:00:01", dst="02:bb:00:00:00:01")/IP(src="192.0.2.1", dst="192.0.2.2")
outer6 = lambda: Ether(src="02:aa:00:00:00:01", dst="02:bb:00:00:00:01")/IPv6(src="2001:db8:f::1", dst="2001:db8:f::2")
def enc(kind, outer, p, vni, zero_csum=False):
    if kind == "vxlan":
        u = UDP(sport=49999, dport=4789)
        if zero_csum:
            u.chksum = 0
        return outer()/u/VXLAN(vni=vni, flags=0x08)/p
    if kind == "geneve":
        # One non-critical option (class 0x0105, type 0x01, 4 bytes): GENEVE's own TLV layout.
        opt = b"\x01\x05\x01\x01\xde\xad\xbe\xef"
        g = GENEVE(vni=vni, proto=0x6558, optionlen=2)/Raw(opt)
        return outer()/UDP(sport=49998, dport=6081)/Raw(raw(g))/p
    return outer()/GRE(key_present=1, key=(vni << 8) | 0x2a, proto=0x6558)/p
for kind, vni in (("vxlan", 100), ("geneve", 200), ("nvgre", 300)):
    for fam, outer in (("4", outer4), ("6", outer6)):
        pkts = [enc(kind, outer, p, vni, zero_csum=(i % 2 == 1 and fam == "4")) for i, p in enumerate(inner)]
        # Two for another VNI: they must be dropped (wrong-vni).
        pkts += [enc(kind, outer, inner[0], vni + 1), enc(kind, outer, inner[2], vni + 1)]
        wrpcap(out + "/dec_" + kind + fam + ".pcap", [Ether(raw(p)) for p in pkts])
"#;

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(b.len() >= 24, "{}: not a pcap file", path.display());
    let le = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("{}: bad pcap magic {m:x?}", path.display()),
    };
    let u32at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut off = 24;
    let mut v = Vec::new();
    while off + 16 <= b.len() {
        let n = u32at(off + 8) as usize;
        v.push(b[off + 16..off + 16 + n].to_vec());
        off += 16 + n;
    }
    v
}

/// Runs `fastpath l2fwd` from pcap `input` to pcap `output` through `stages`; returns the JSON
/// lines of its final report.
fn l2fwd(input: &Path, output: &Path, stages: &[&str]) -> Vec<serde_json::Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fastpath"));
    c.arg("l2fwd").arg("--port").arg(format!("pcap:rx={},tx={}", input.display(), output.display()));
    for s in stages {
        c.arg("--stage").arg(s);
    }
    c.args(["--json", "--duration", "30"]);
    let o = c.output().expect("run fastpath");
    assert!(o.status.success(), "fastpath l2fwd {stages:?}: {}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pool = lines.iter().find(|l| l.get("mempool").is_some()).expect("a mempool line");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf back in the pool");
    assert_eq!(pool["stopped_by"], "input ended");
    lines
}

fn stage_drops(lines: &[serde_json::Value], index: usize) -> serde_json::Map<String, serde_json::Value> {
    let s = lines.iter().find(|l| l.get("stage").is_some() && l["index"] == index).expect("a stage line");
    s["drops"].as_object().cloned().unwrap_or_default()
}

fn run_scapy(py: &Path, dir: &Path) {
    let o = Command::new(py).arg("-c").arg(SCAPY).arg(dir).output().expect("run python3");
    assert!(o.status.success(), "scapy: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn encap_output_passes_tshark_with_checksum_validation() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let Some(py) = tools("encap_output_passes_tshark_with_checksum_validation") else { return };
    let dir = tempfile::tempdir().unwrap();
    run_scapy(&py, dir.path());
    let input = dir.path().join("inner.pcap");
    let inner = read_pcap(&input);
    assert_eq!(inner.len(), 7);
    let cases: &[(&str, &str, u32, bool)] = &[
        ("vxlan", "vxlan-encap,vni=4242,local=192.0.2.1,remote=192.0.2.2", 4242, false),
        ("vxlan", "vxlan-encap,vni=4243,local=192.0.2.1,remote=192.0.2.2,udp-csum=on,df=on", 4243, true),
        ("vxlan", "vxlan-encap,vni=16777215,local=2001:db8::1,remote=2001:db8::2", 16_777_215, true),
        ("geneve", "geneve-encap,vni=77,local=192.0.2.1,remote=192.0.2.2,option=0x0102:0x80:00000001", 77, false),
        (
            "geneve",
            "geneve-encap,vni=78,local=2001:db8::1,remote=2001:db8::2,option=0x0105:0x01:0102030405060708",
            78,
            true,
        ),
        ("nvgre", "nvgre-encap,vni=555,local=192.0.2.1,remote=192.0.2.2", 555, false),
        ("nvgre", "nvgre-encap,vni=556,local=2001:db8::1,remote=2001:db8::2", 556, false),
    ];
    for (i, &(kind, spec, vni, outer_csum)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("enc{i}.pcap"));
        let lines = l2fwd(&input, &out, &[spec]);
        assert!(stage_drops(&lines, 0).values().all(|v| v == 0), "{spec}: drops");
        let frames = read_pcap(&out);
        assert_eq!(frames.len(), inner.len(), "{spec}");
        let vni_field = match kind {
            "vxlan" => "vxlan.vni",
            "geneve" => "geneve.vni",
            _ => "gre.key",
        };
        let mut fields = tshark::CLEAN.to_vec();
        fields.push(vni_field);
        let rows = tshark::fields(&out, &fields);
        assert_eq!(rows.len(), inner.len(), "{spec}");
        for (n, r) in rows.iter().enumerate() {
            let ctx = format!("{spec}: frame {}: {r:?}", n + 1);
            tshark::check_clean(r, &ctx);
            let protos = r[0].join(",");
            let want = match kind {
                "vxlan" => ":udp:vxlan:eth:",
                "geneve" => ":udp:geneve:eth:",
                _ => ":gre:eth:",
            };
            assert!(protos.contains(want), "{ctx}");
            let v = r[6].first().unwrap_or_else(|| panic!("{ctx}: no VNI"));
            let hex = |v: &str| {
                u32::from_str_radix(v.strip_prefix("0x").unwrap_or_else(|| panic!("{ctx}: '{v}' is not hex")), 16)
                    .unwrap_or_else(|_| panic!("{ctx}: '{v}' is not hex"))
            };
            let got = match kind {
                "vxlan" => v.parse::<u32>().unwrap_or_else(|_| panic!("{ctx}: VNI '{v}' is not a number")),
                "geneve" => hex(v),
                _ => hex(v) >> 8,
            };
            assert_eq!(got, vni, "{ctx}");
            if kind != "nvgre" {
                let outer = r[3].first().unwrap_or_else(|| panic!("{ctx}: no outer UDP"));
                assert_eq!(tshark::status(outer, &ctx), if outer_csum { 1 } else { 3 }, "{ctx}: outer UDP checksum");
            }
        }
    }
}

#[test]
fn decap_gives_scapy_inner_frames_back_byte_exact() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let Some(py) = tools("decap_gives_scapy_inner_frames_back_byte_exact") else { return };
    let dir = tempfile::tempdir().unwrap();
    run_scapy(&py, dir.path());
    let inner = read_pcap(&dir.path().join("inner.pcap"));
    for (kind, vni) in [("vxlan", 100), ("geneve", 200), ("nvgre", 300)] {
        for fam in ["4", "6"] {
            let input = dir.path().join(format!("dec_{kind}{fam}.pcap"));
            let out = dir.path().join(format!("out_{kind}{fam}.pcap"));
            let lines = l2fwd(&input, &out, &[&format!("{kind}-decap,vni={vni}")]);
            let frames = read_pcap(&out);
            assert_eq!(frames.len(), inner.len(), "{kind}/IPv{fam}");
            for (n, (got, want)) in frames.iter().zip(&inner).enumerate() {
                assert_eq!(got, want, "{kind}/IPv{fam}: frame {n} differs from scapy's inner frame");
            }
            let drops = stage_drops(&lines, 0);
            assert_eq!(drops["wrong-vni"], 2, "{kind}/IPv{fam}: {drops:?}");
            assert_eq!(drops.values().filter_map(|v| v.as_u64()).sum::<u64>(), 2, "{kind}/IPv{fam}: {drops:?}");
        }
    }
    // Encap then decap in one pipeline gives scapy's frames back too.
    let input = dir.path().join("inner.pcap");
    let out = dir.path().join("rt.pcap");
    l2fwd(
        &input,
        &out,
        &[
            "geneve-encap,vni=9,local=2001:db8::1,remote=2001:db8::2,option=0x0102:0x80:00000001",
            "geneve-decap,vni=9,option=0x0102:0x80",
        ],
    );
    assert_eq!(read_pcap(&out), inner);
}
