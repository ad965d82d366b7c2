//! `fastpath pktgen` as a user runs it: over an in-memory loopback (no privileges), and over
//! AF_XDP through a device under test (`fastpath l2fwd` with macswap on the other end of a veth
//! pair; as root).

#[path = "../../pmd/tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fastpath_pmd::testutil::require;

fn fastpath() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "failed: {s}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(s.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn check_latency(j: &serde_json::Value) {
    let l = &j["latency_ns"];
    let (p50, p99, p999, max) = (
        l["p50"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["p99.9"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max, "{l}");
    assert_eq!(l["count"], j["rx_matched"]);
}

#[test]
fn pktgen_loopback_reports_no_loss_and_latency() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let out = fastpath()
        .args(["pktgen", "--port", "ring:pgl", "--duration", "1", "--rate", "200k", "--flows", "4", "--json"])
        .output()
        .unwrap();
    let j = json_of(&out);
    let sent = j["tx_packets"].as_u64().unwrap();
    // Counts, not rates (the pacer's arithmetic is unit-tested on a synthetic clock): frames
    // went out, and every one came back in order.
    assert!(sent > 0, "{j}");
    assert_eq!(j["loss"], 0);
    assert_eq!(j["rx_matched"].as_u64(), Some(sent));
    assert_eq!(j["out_of_order"], 0);
    assert_eq!(j["mempool"]["available"], j["mempool"]["capacity"]);
    check_latency(&j);

    let out =
        fastpath().args(["pktgen", "--port", "ring:pgm", "--duration", "0.5", "--size", "1000"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("1000-byte UDP frames") && s.contains("loss 0 (0.0000%)") && s.contains("p99.9"), "{s}");
}

#[test]
fn pktgen_bad_arguments_exit_2_and_say_why() {
    for (args, want) in [
        (&["--rate", "fast"][..], "--rate fast: give max or frames per second"),
        (&["--size", "20"][..], "--size 20: use 60..="),
        (&["--flows", "0"][..], "--flows 0: use 1..=64511"),
        (&["--dst-mac", "zz"][..], "is not a MAC address"),
        (&["--src-ip", "1.2.3"][..], "not an IPv4 address"),
        (&["--cores", "0,1"][..], "has 1 tx queue(s) but 2 cores"),
    ] {
        let out = fastpath().args(["pktgen", "--port", "ring:pgx", "--duration", "1"]).args(args).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let out = fastpath().args(["pktgen", "--port", "nosuch:x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown driver 'nosuch'"));
}

#[test]
fn pktgen_over_af_xdp_through_a_device_under_test() {
    if !require("pktgen_over_af_xdp_through_a_device_under_test", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let (g0, d0) = (unique("fpg"), unique("fpd"));
    // One veth pair: pktgen on g0, the DUT (l2fwd, macswap, back out of the same port) on d0.
    run(&["ip", "link", "add", &g0, "type", "veth", "peer", "name", &d0]);
    let _lg = Link { name: g0.clone() };
    for i in [&g0, &d0] {
        run_quiet(&["sysctl", "-qw", &format!("net.ipv6.conf.{i}.disable_ipv6=1")]);
        run(&["ip", "link", "set", i, "up"]);
    }
    let dut = fastpath()
        .args(["l2fwd", "--port", &format!("af_xdp:{d0},ring-size=1024"), "--stage", "macswap", "--cores", "1"])
        .args(["--mbufs", "4096", "--idle", "adaptive", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dut = Reap(Some(dut));
    let end = Instant::now() + Duration::from_secs(30);
    while !run(&["ip", "link", "show", "dev", &d0]).contains("xdp") {
        assert!(Instant::now() < end, "the DUT did not attach");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = fastpath()
        .args(["pktgen", "--port", &format!("af_xdp:{g0},ring-size=1024"), "--cores", "0", "--rate", "20k"])
        .args(["--duration", "2", "--flows", "8", "--json", "--mbufs", "8192", "--drain-ms", "500"])
        .output()
        .unwrap();
    let j = json_of(&out);
    dut.signal(libc::SIGINT);
    let d = dut.wait();
    let dtext = String::from_utf8_lossy(&d.stdout).into_owned() + &String::from_utf8_lossy(&d.stderr);
    let dport: serde_json::Value = dtext
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["port"] == 0)
        .unwrap_or_else(|| panic!("no report from the DUT:\n{dtext}"));
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    let sent = n(&j, "tx_packets");
    let matched = n(&j, "rx_matched");
    assert!(matched > 0, "frames came back through the DUT: {j}");
    assert_eq!(n(&j, "loss"), sent - matched);
    // Every frame is accounted for, whatever the load: it came back, or a queue on the way
    // dropped it and counted it (the DUT's receive ring or fill ring, its transmit, pktgen's
    // own receive ring). A loss nobody counted fails here.
    let counted = n(&dport, "rx_drops") + n(&dport, "tx_drops") + n(&j["xstats"], "rx_dropped");
    assert_eq!(sent, matched + counted, "sent = came back + counted drops:\npktgen {j}\nDUT {dport}");
    assert_eq!(n(&dport, "rx_packets"), n(&dport, "tx_packets") + n(&dport, "tx_drops"), "DUT: {dport}");
    check_latency(&j);
    assert_eq!(j["mempool"]["available"], j["mempool"]["capacity"]);
    let dpool = dtext
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["mempool"].is_string())
        .expect("DUT pool line");
    assert_eq!(dpool["available"], dpool["capacity"], "every DUT mbuf came back");
}
