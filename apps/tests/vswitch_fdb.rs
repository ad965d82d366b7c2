//! The vswitch's MAC table through the running app (as root, in namespaces of the tests' own),
//! checked in its `--json` report: learning (local and behind remote VTEPs), flooding to every
//! remote VTEP and every other local port, static entries from `[[fdb]]` (to a port and to a
//! VTEP; never moved by a frame from elsewhere), a MAC move, the per-port and per-bridge limits
//! under a MAC flood from a packet socket (each refusal counted where it belongs), and aging.
//!
//! The frames come from packet sockets in the hosts' namespaces, paced so that every one
//! arrives; each capture must get every frame meant for it and none meant elsewhere. Counts,
//! never rates; every mbuf back in the pool at the end.

#[path = "../../pmd/tests/common/mod.rs"]
mod common;
mod vswitch_rig;

use std::time::Duration;

use vswitch_rig::*;

/// Lets the control side apply what the lcore handed it (it polls every millisecond).
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn vswitch_fdb_learns_floods_keeps_static_entries_moves_and_limits() {
    let test = "vswitch_fdb_learns_floods_keeps_static_entries_moves_and_limits";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let und = Underlay::new();
    let (r2, r3) = (mac(0x0202), mac(0x0303));
    let v2 = und.station(Some("10.63.0.2"));
    v2.overlay(Kind::Vxlan, "vx100", 100, "172.19.0.2/24", Some(&fmt(r2)));
    let v3 = und.station(Some("10.63.0.3"));
    v3.overlay(Kind::Vxlan, "vx100", 100, "172.19.0.3/24", Some(&fmt(r3)));
    let (m1, m2) = (mac(0x0101), mac(0x0102));
    let h1 = Host::new(Some("172.19.0.1/24"), Some(&fmt(m1)), 1450);
    let h2 = Host::new(None, Some(&fmt(m2)), 1450);
    h2.ns.exec(&["ip", "link", "set", &h2.dev, "up"]);
    let (s1, s2) = (mac(0x5501), mac(0x5502));
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"
fdb_size = 1024
mac_limit_bridge = 60
mac_limit_port = 40

[[bridge]]
name = "t"
vni = 100
local = "{LOCAL_VTEP}"
remotes = ["10.63.0.2", "10.63.0.3"]

[[port]]
name = "uplink"
spec = "af_xdp:{}"
role = "uplink"

[[port]]
name = "h1"
spec = "{}"
bridge = "t"

[[port]]
name = "h2"
spec = "{}"
bridge = "t"

[[fdb]]
bridge = "t"
mac = "{}"
port = "h2"

[[fdb]]
bridge = "t"
mac = "{}"
vtep = "10.63.0.3"
"#,
        und.uplink,
        h1.spec(),
        h2.spec(),
        fmt(s1),
        fmt(s2)
    );
    let mut vs = Vswitch::start(&cfg);
    let (c2, c3, ch2) =
        (Capture::start(&v2.ns, "vx100"), Capture::start(&v3.ns, "vx100"), Capture::start(&h2.ns, &h2.dev));
    let caps = [(&c2, "VTEP 10.63.0.2"), (&c3, "VTEP 10.63.0.3"), (&ch2, "h2")];
    // Learning: h1's MAC on its port; each kernel host's MAC behind its VTEP (both VTEPs'
    // MACs resolved on the way).
    vs.ping(&h1.ns, "172.19.0.2", 3);
    vs.ping(&h1.ns, "172.19.0.3", 3);
    let n = 100u32;
    let bcast = [0xff; 6];
    let burst = |dst: [u8; 6], src: [u8; 6], tag: &[u8; 8]| -> Vec<Vec<u8>> {
        (0..n).map(|i| marker(dst, src, tag, i)).collect()
    };
    // Flooding: a broadcast reaches both remote VTEPs (head-end replication) and h2.
    send_frames(&h1.ns, &h1.dev, &burst(bcast, m1, b"FLOOD---"));
    // A frame from h1 with a MAC that is static on h2: the entry is kept (not moved).
    send_frames(&h1.ns, &h1.dev, &(0..5).map(|i| marker(bcast, s1, b"SPOOF---", i)).collect::<Vec<_>>());
    settle();
    // Static entries: to s1 only h2, to s2 only VTEP .3.
    send_frames(&h1.ns, &h1.dev, &burst(s1, m1, b"STATIC-P"));
    send_frames(&h1.ns, &h1.dev, &burst(s2, m1, b"STATIC-V"));
    // A move: MAC 02:00:00:00:77:01 seen on h1, then on h2; frames to it then go to h2 only.
    let moving = mac(0x7701);
    send_frames(&h1.ns, &h1.dev, &(0..3).map(|i| marker(bcast, moving, b"MOVE-H1-", i)).collect::<Vec<_>>());
    settle();
    send_frames(&h2.ns, &h2.dev, &(0..3).map(|i| marker(bcast, moving, b"MOVE-H2-", i)).collect::<Vec<_>>());
    settle();
    send_frames(&h1.ns, &h1.dev, &burst(moving, m1, b"TO-MOVED"));
    let want: [(&[u8; 8], [bool; 3]); 4] = [
        (b"FLOOD---", [true, true, true]),
        (b"STATIC-P", [false, false, true]),
        (b"STATIC-V", [false, true, false]),
        (b"TO-MOVED", [false, false, true]),
    ];
    for (tag, to) in want {
        for ((cap, who), yes) in caps.iter().zip(to) {
            if yes && !cap.wait(|f| markers(f, tag).len() == n as usize) {
                let k = markers(&cap.frames(), tag).len();
                vs.fail(&format!("{who} got {k} of the {n} {:?} frames", String::from_utf8_lossy(tag)));
            }
        }
    }
    // MAC floods from packet sockets: 100 new source MACs on h2 (port limit 40: h2 has the
    // moved MAC, so 39 more are learned and 61 refused, on the port and the bridge), then 100
    // on h1 (the bridge is then at 43 of its 60: 17 learned, 83 refused by the bridge).
    let flood = |base: u16, tag| -> Vec<Vec<u8>> {
        (0..n).map(|i| marker(mac(0x0bad), mac(base + i as u16), tag, i)).collect()
    };
    send_frames(&h2.ns, &h2.dev, &flood(0x1000, b"LIMIT-P-"));
    settle();
    send_frames(&h1.ns, &h1.dev, &flood(0x2000, b"LIMIT-B-"));
    settle();
    let r = vs.stop();
    for (tag, to) in want {
        for ((cap, who), yes) in caps.iter().zip(to) {
            if !yes {
                let k = markers(&cap.frames(), tag).len();
                assert_eq!(k, 0, "{who} got {:?} frames meant elsewhere:\n{}", String::from_utf8_lossy(tag), r.text);
            }
        }
    }
    let b = |f| r.bridge("t", f);
    assert_eq!(r.stage("switch-learn", "stats/learn-lost"), 0, "{}", r.text);
    assert_eq!(r.stage("switch-learn", "stats/static-kept"), 5, "the static MAC was not moved:\n{}", r.text);
    // h1, the two kernel hosts, the moving MAC (on h1 first), 39 on h2, 17 on h1.
    assert_eq!(b("learned"), 3 + 1 + 39 + 17, "{}", r.text);
    assert_eq!(b("moved"), 1, "{}", r.text);
    assert_eq!(b("refused"), 61 + 83, "{}", r.text);
    assert_eq!(b("fdb_size"), 60 + 2, "the bridge at its limit, and the two static entries:\n{}", r.text);
    assert_eq!(b("aged"), 0, "{}", r.text);
    assert!(b("flooded") >= 3 * n as u64, "{}", r.text);
    assert_eq!(r.sport("h2", "macs"), 40, "h2 at its limit:\n{}", r.text);
    assert_eq!(r.sport("h2", "refused"), 61, "{}", r.text);
    assert_eq!(r.sport("h1", "macs"), 1 + 17, "{}", r.text);
    assert_eq!(r.sport("h1", "refused"), 0, "the bridge refused those, not the port:\n{}", r.text);
    for ip in ["10.63.0.2", "10.63.0.3"] {
        assert_eq!(r.rec("vtep", ip)["state"], "reachable", "{}", r.text);
    }
    r.check_pool();
}

#[test]
fn vswitch_fdb_ages_learned_macs_but_not_one_that_is_seen() {
    let test = "vswitch_fdb_ages_learned_macs_but_not_one_that_is_seen";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let (h1, h2) = (Host::new(None, None, 1500), Host::new(None, None, 1500));
    for h in [&h1, &h2] {
        h.ns.exec(&["ip", "link", "set", &h.dev, "up"]);
    }
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"
fdb_aging = 2

[[bridge]]
name = "local"

[[port]]
name = "h1"
spec = "{}"
bridge = "local"

[[port]]
name = "h2"
spec = "{}"
bridge = "local"
"#,
        h1.spec(),
        h2.spec()
    );
    let mut vs = Vswitch::start(&cfg);
    let cap = Capture::start(&h2.ns, &h2.dev);
    let n = 10u32;
    let frames: Vec<Vec<u8>> = (0..n).map(|i| marker([0xff; 6], mac(0x3000 + i as u16), b"AGING---", i)).collect();
    send_frames(&h1.ns, &h1.dev, &frames);
    if !cap.wait(|f| markers(f, b"AGING---").len() == n as usize) {
        vs.fail("h2 did not get the frames");
    }
    // An entry goes between one and one and a half aging times (2 s) after it was last seen;
    // one MAC keeps being seen every 0.5 s meanwhile. 8 s is ample.
    let kept = mac(0x4000);
    for i in 0..16 {
        send_frames(&h1.ns, &h1.dev, &[marker([0xff; 6], kept, b"KEPT----", i)]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = vs.stop();
    assert_eq!(r.bridge("local", "learned"), n as u64 + 1, "{}", r.text);
    assert_eq!(r.bridge("local", "aged"), n as u64, "{}", r.text);
    assert_eq!(r.bridge("local", "fdb_size"), 1, "only the MAC still seen:\n{}", r.text);
    assert_eq!(r.sport("h1", "macs"), 1, "{}", r.text);
    r.check_pool();
}
