//! `fastpath l2fwd` over AF_XDP as a user runs it (as root): forwarding between two veth pairs
//! with traffic from the kernel side, and what is left on the interface after a clean exit, a
//! SIGKILL, and a SIGKILL of a netlink-attached program (cleaned up by `replace=on`).

#[path = "../../pmd/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fastpath_pmd::testutil::require;

fn fastpath() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fastpath"))
}

fn xdp_on(ifname: &str) -> bool {
    run(&["ip", "link", "show", "dev", ifname]).contains("xdp")
}

fn wait_for(what: &str, secs: u64, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(args: &[&str]) -> Reap {
    Reap(Some(fastpath().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()))
}

#[test]
fn l2fwd_between_two_af_xdp_ports_delivers_every_frame() {
    if !require("l2fwd_between_two_af_xdp_ports_delivers_every_frame", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let ns = Netns::new("fpcl");
    let (a0, a1, b0, b1) = (unique("fpla"), unique("fpla"), unique("fplb"), unique("fplb"));
    let _la = veth(&ns, &a0, &a1, 1);
    let _lb = veth(&ns, &b0, &b1, 1);
    let mut p = start(&[
        "l2fwd",
        "--port",
        &format!("af_xdp:{a0}"),
        "--port",
        &format!("af_xdp:{b0}"),
        "--cores",
        "1",
        "--duration",
        "30",
        "--json",
    ]);
    wait_for("both XDP programs", 5, || xdp_on(&a0) && xdp_on(&b0));
    let b1_mac =
        fastpath_pmd::sys::parse_mac(ns.exec(&["cat", &format!("/sys/class/net/{b1}/address")]).trim()).unwrap();
    let (tx, rx) = ns.enter(|| (PacketSocket::open(&a1), PacketSocket::open(&b1)));
    let n = 10_000u32;
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut seen = BTreeSet::new();
            rx.recv_until(Duration::from_secs(10), |f| {
                if f.len() >= 50 && f[12..14] == [8, 0] && &f[42..46] == b"FPCL" {
                    seen.insert(u32::from_be_bytes(f[46..50].try_into().unwrap()));
                }
                seen.len() >= n as usize
            });
            seen
        });
        for q in 0..n {
            let mut pl = [0u8; 22];
            pl[..4].copy_from_slice(b"FPCL");
            pl[4..8].copy_from_slice(&q.to_be_bytes());
            tx.send(&udp4_frame(b1_mac, [2, 0, 0, 0, 0, 0xa1], [10, 98, 0, 1], [10, 98, 0, 2], 1000, 9, &pl));
            if q % 64 == 63 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        h.join().unwrap()
    });
    assert_eq!(seen.len(), n as usize, "every frame a1 -> (l2fwd) -> b1");
    p.signal(libc::SIGINT);
    let out = p.wait();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}{}", String::from_utf8_lossy(&out.stderr));
    let ports: Vec<serde_json::Value> = s
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["port"].is_u64())
        .collect();
    assert_eq!(ports.len(), 2, "{s}");
    assert!(ports[0]["rx_packets"].as_u64().unwrap() >= n as u64);
    assert!(ports[1]["tx_packets"].as_u64().unwrap() >= n as u64);
    assert_eq!(ports[0]["xstats"]["rx_ring_full"], 0);
    let pool =
        s.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|j| j["mempool"].is_string());
    let pool = pool.expect("mempool line");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf came back");
    assert!(!xdp_on(&a0) && !xdp_on(&b0), "programs removed after a clean exit");
}

#[test]
fn no_xdp_program_left_after_clean_exit_or_sigkill() {
    if !require("no_xdp_program_left_after_clean_exit_or_sigkill", true, &["ip"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let ns = Netns::new("fpck");
    let (a0, a1) = (unique("fpka"), unique("fpka"));
    let _la = veth(&ns, &a0, &a1, 1);
    let spec = format!("af_xdp:{a0},ring-size=512");
    let args = ["l2fwd", "--port", spec.as_str(), "--cores", "1", "--mbufs", "4096", "--idle", "adaptive"];

    // Clean exit (SIGINT).
    let mut p = start(&args);
    wait_for("the XDP program", 5, || xdp_on(&a0));
    p.signal(libc::SIGINT);
    let out = p.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!xdp_on(&a0), "program left after a clean exit");

    // SIGKILL: the bpf link dies with the process.
    let mut p = start(&args);
    wait_for("the XDP program", 5, || xdp_on(&a0));
    p.signal(libc::SIGKILL);
    let _ = p.wait();
    wait_for("the program to go after SIGKILL", 3, || !xdp_on(&a0));

    // A netlink-attached program (the fallback) cannot survive-proof itself: it stays after
    // SIGKILL; the next run refuses the interface, and replace=on takes it over and cleans up.
    let nl = format!("{spec},attach=netlink");
    let mut p = start(&["l2fwd", "--port", &nl, "--cores", "1", "--mbufs", "4096", "--idle", "adaptive"]);
    wait_for("the XDP program", 5, || xdp_on(&a0));
    p.signal(libc::SIGKILL);
    let _ = p.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(xdp_on(&a0), "a netlink-attached program outlives SIGKILL (why links are the default)");
    let out = fastpath().args(["l2fwd", "--port", &spec, "--duration", "0.3", "--mbufs", "4096"]).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("already has an XDP program") && e.contains("replace=on"), "{e}");
    let out = fastpath()
        .args(["l2fwd", "--port", &format!("{spec},replace=on"), "--duration", "0.3", "--mbufs", "4096"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!xdp_on(&a0), "replace=on took the old program over and removed its own on exit");
}
