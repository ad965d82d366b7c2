//! `fastpath vswitch` against Linux's own tunnel devices as the remote VTEPs (as root, in
//! namespaces of the tests' own; `vswitch_rig` draws the topology):
//!
//! - interop: a host behind fastpath (an `af_xdp` access port) and a host behind a kernel VXLAN
//!   device ping each other and move 20 MB of TCP each way in VNI 100; the bytes and a hash of
//!   them must arrive, every tunnel packet must be decapsulated (none dropped at the uplink);
//!   the same with GENEVE where the kernel has it;
//! - tenant isolation: two bridges with the same MACs and addresses in VNI 100 and VNI 200 to
//!   one kernel VTEP; captures on both sides prove that no frame of one tenant (broadcast,
//!   unknown unicast, echo traffic) reaches the other, and that each VXLAN packet carries its
//!   tenant's VNI;
//! - a TAP uplink (virtio-net header) keeps TCP segments whole through VXLAN both ways: GSO over
//!   UDP tunnels to and from the kernel's VTEP (Linux 6.17+), nothing cut in software;
//! - VLAN access ports of a VLAN-only bridge reach hosts on the uplink's VLANs 10 and 20, and a
//!   bridge with a VNI and a VLAN joins a kernel VXLAN host and a VLAN host (the gateway).
//!
//! Counts, never rates: each test waits (with a generous deadline) for a known number of
//! frames or bytes and ends with every mbuf back in the pool. fastpath's lcore is on CPU 1 and
//! idles adaptively (the kernel's side of the traffic needs a CPU too); the tests hold the
//! suite's busy-poller lock.

#[path = "../../pmd/tests/common/mod.rs"]
mod common;
mod vswitch_rig;

use common::{kernel_at_least, unique, Netns};
use vswitch_rig::*;

/// 20 MB each way, as the issue asks.
const STREAM: usize = 20 << 20;

fn interop(test: &str, kind: Kind) {
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    if !kernel_has(kind) {
        // A property of the kernel, not of the machine's setup: said, not failed.
        eprintln!("SKIPPED {test}: this kernel cannot make a {} device (not built in)", kind.name());
        return;
    }
    let und = Underlay::new();
    let vtep = und.station(Some("10.63.0.2"));
    // The kernel gives its tunnel device MTU 1450 over a 1500 underlay; so does the host.
    vtep.overlay(kind, "tun0", 100, "172.19.0.2/24", None);
    let h = Host::new(Some("172.19.0.1/24"), None, 1450);
    let mut vs = Vswitch::start(&one_bridge(kind, &und.uplink, "host", &h.spec()));
    vs.ping(&h.ns, "172.19.0.2", 5);
    vs.ping(&vtep.ns, "172.19.0.1", 5);
    tcp_transfer(&h.ns, &vtep.ns, "172.19.0.2", 5201, STREAM);
    tcp_transfer(&vtep.ns, &h.ns, "172.19.0.1", 5202, STREAM);
    let r = vs.stop();
    // Each way carried at least STREAM bytes in frames of at most 1450 bytes of IP.
    let frames = (STREAM / 1450) as u64;
    assert!(r.stage("switch-underlay", "stats/decapsulated") >= frames, "{}", r.text);
    assert!(r.stage("switch-egress", "stats/encapsulated") >= frames, "{}", r.text);
    // Every tunnel packet from the kernel VTEP was decapsulated: no drop at the uplink but
    // `not-our-vtep` (the underlay's own IP chatter, e.g. an IGMP report of a station).
    let up = r.rec("switch_port", "uplink");
    let drops = up["drops"].as_object().expect("drops");
    assert!(drops.iter().all(|(k, n)| k == "not-our-vtep" || n == 0), "uplink drops:\n{}", r.text);
    assert_eq!(r.bridge("overlay", "learned"), 2, "the host's MAC and the kernel device's:\n{}", r.text);
    assert_eq!(r.sport("host", "macs"), 1, "{}", r.text);
    let v = r.rec("vtep", "10.63.0.2");
    assert_eq!(v["mac"], fmt(mac_of(&vtep.ns, &vtep.dev)), "the VTEP's MAC, resolved by ARP:\n{}", r.text);
    r.check_pool();
}

#[test]
fn vswitch_vxlan_interop_with_linux_vxlan_ping_and_20mb_tcp_both_ways() {
    interop("vswitch_vxlan_interop_with_linux_vxlan_ping_and_20mb_tcp_both_ways", Kind::Vxlan);
}

#[test]
fn vswitch_geneve_interop_with_linux_geneve_ping_and_20mb_tcp_both_ways() {
    interop("vswitch_geneve_interop_with_linux_geneve_ping_and_20mb_tcp_both_ways", Kind::Geneve);
}

/// The VNI of a VXLAN packet (untagged IPv4 underlay frame) and its inner frame.
fn vxlan(f: &[u8]) -> Option<(u32, &[u8])> {
    if f.len() < 14 + 20 + 8 + 8 + 14 || f[12..14] != [8, 0] || f[23] != 17 {
        return None;
    }
    let l4 = 14 + (f[14] & 0xf) as usize * 4;
    let udp = f.get(l4..l4 + 16)?;
    if udp[2..4] != 4789u16.to_be_bytes() {
        return None;
    }
    let vni = u32::from_be_bytes([0, udp[12], udp[13], udp[14]]);
    Some((vni, &f[l4 + 16..]))
}

#[test]
fn vswitch_tenants_with_the_same_macs_and_addresses_stay_apart() {
    let test = "vswitch_tenants_with_the_same_macs_and_addresses_stay_apart";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let und = Underlay::new();
    // One kernel VTEP for both tenants: only the VNI tells them apart. Its two VXLAN devices
    // move to a namespace each (they keep their underlay socket), where they hold the same
    // address and MAC.
    let vtep = und.station(Some("10.63.0.2"));
    let (ra, rb) = (Netns::new("fpvra"), Netns::new("fpvrb"));
    let (local, remote) = (mac(0x0a01), mac(0x0a02));
    for (ns, dev, vni) in [(&ra, "vx100", 100), (&rb, "vx200", 200)] {
        vtep.tunnel(Kind::Vxlan, dev, vni);
        vtep.ns.exec(&["ip", "link", "set", dev, "netns", &ns.name]);
        up(ns, dev, "172.19.0.2/24", Some(&fmt(remote)), None);
    }
    let ha = Host::new(Some("172.19.0.1/24"), Some(&fmt(local)), 1450);
    let hb = Host::new(Some("172.19.0.1/24"), Some(&fmt(local)), 1450);
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "tenant-a"
vni = 100
local = "{LOCAL_VTEP}"
remotes = ["10.63.0.2"]

[[bridge]]
name = "tenant-b"
vni = 200
local = "{LOCAL_VTEP}"
remotes = ["10.63.0.2"]

[[port]]
name = "uplink"
spec = "af_xdp:{}"
role = "uplink"

[[port]]
name = "a"
spec = "{}"
bridge = "tenant-a"

[[port]]
name = "b"
spec = "{}"
bridge = "tenant-b"
"#,
        und.uplink,
        ha.spec(),
        hb.spec()
    );
    let mut vs = Vswitch::start(&cfg);
    let caps = [
        Capture::start(&ra, "vx100"),
        Capture::start(&rb, "vx200"),
        Capture::start(&ha.ns, &ha.dev),
        Capture::start(&hb.ns, &hb.dev),
    ];
    let wire = Capture::start(&vtep.ns, &vtep.dev);
    let tags: [&[u8; 8]; 4] = [b"LOCAL--A", b"REMOTE-A", b"LOCAL--B", b"REMOTE-B"];
    // Each tenant pings first: the VTEP's MAC is resolved (frames to a VTEP not resolved yet
    // are dropped, counted as `neighbour-unresolved`), and each tenant's MACs are learned.
    vs.ping(&ha.ns, "172.19.0.2", 3);
    vs.ping(&hb.ns, "172.19.0.2", 3);
    let n = 200u32;
    let bcast = [0xff; 6];
    // From each local host: broadcasts and unknown unicast (both flooded); from each remote
    // host: broadcasts. Then each tenant pings its own 172.19.0.2.
    let local_frames = |tag| -> Vec<Vec<u8>> {
        (0..n).map(|i| marker(if i % 2 == 0 { bcast } else { mac(0x0bad) }, local, tag, i)).collect()
    };
    send_frames(&ha.ns, &ha.dev, &local_frames(tags[0]));
    send_frames(&hb.ns, &hb.dev, &local_frames(tags[2]));
    let remote_frames = |tag| -> Vec<Vec<u8>> { (0..n).map(|i| marker(bcast, remote, tag, i)).collect() };
    send_frames(&ra, "vx100", &remote_frames(tags[1]));
    send_frames(&rb, "vx200", &remote_frames(tags[3]));
    vs.ping(&ha.ns, "172.19.0.2", 5);
    vs.ping(&hb.ns, "172.19.0.2", 5);
    vs.ping(&ra, "172.19.0.1", 5);
    vs.ping(&rb, "172.19.0.1", 5);
    // Each capture gets all of its own tenant's markers...
    let own = [(0, tags[0], "remote A"), (1, tags[2], "remote B"), (2, tags[1], "host A"), (3, tags[3], "host B")];
    let got: Vec<bool> = own.iter().map(|&(c, tag, _)| caps[c].wait(|f| markers(f, tag).len() == n as usize)).collect();
    // ... and, with time for strays to arrive, none of the other's.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = vs.stop();
    for (&(c, tag, who), ok) in own.iter().zip(got) {
        let k = markers(&caps[c].frames(), tag).len();
        assert!(ok, "{who} got {k} of the {n} frames of its tenant:\n{}", r.text);
    }
    for (cap, foreign, who) in [
        (&caps[0], [tags[2], tags[3]], "remote A"),
        (&caps[1], [tags[0], tags[1]], "remote B"),
        (&caps[2], [tags[2], tags[3]], "host A"),
        (&caps[3], [tags[0], tags[1]], "host B"),
    ] {
        let f = cap.frames();
        for t in foreign {
            assert!(
                markers(&f, t).is_empty(),
                "{who} got frames of the other tenant ({:?})",
                String::from_utf8_lossy(t)
            );
        }
    }
    // On the wire: each tenant's markers only in its own VNI, all of them.
    let mut seen = [std::collections::BTreeSet::new(), std::collections::BTreeSet::new()];
    for f in wire.frames() {
        let Some((vni, inner)) = vxlan(&f) else { continue };
        let Some((tag, seq)) = read_marker(inner) else { continue };
        let tenant = if &tag == tags[0] || &tag == tags[1] { 0 } else { 1 };
        assert_eq!(vni, [100, 200][tenant], "marker {:?} {seq} in VNI {vni}", String::from_utf8_lossy(&tag));
        if &tag == tags[0] || &tag == tags[2] {
            seen[tenant].insert(seq);
        }
    }
    assert_eq!(seen[0].len(), n as usize, "every flooded frame of tenant A went out in VNI 100");
    assert_eq!(seen[1].len(), n as usize, "every flooded frame of tenant B went out in VNI 200");
    for b in ["tenant-a", "tenant-b"] {
        assert_eq!(r.bridge(b, "learned"), 2, "{b}: the same two MACs, learned apart:\n{}", r.text);
        assert!(r.bridge(b, "flooded") >= n as u64, "{}", r.text);
    }
    r.check_pool();
}

#[test]
fn vswitch_vlan_access_ports_and_the_vxlan_vlan_gateway() {
    let test = "vswitch_vlan_access_ports_and_the_vxlan_vlan_gateway";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let und = Underlay::new();
    // Hosts on the uplink's VLANs 10, 20 and 30 (played on packet sockets: no 802.1Q in these
    // kernels), and a kernel VTEP with a VXLAN host in VNI 100.
    let (s10, s20, s30) = (und.station(None), und.station(None), und.station(None));
    let v10 = VlanHost::start(&s10, 10, [172, 20, 10, 2], mac(0x1002));
    let v20 = VlanHost::start(&s20, 20, [172, 20, 20, 2], mac(0x2002));
    let v30 = VlanHost::start(&s30, 30, [172, 21, 0, 3], mac(0x3003));
    let vtep = und.station(Some("10.63.0.2"));
    vtep.overlay(Kind::Vxlan, "vx100", 100, "172.21.0.2/24", None);
    let h10 = Host::new(Some("172.20.10.1/24"), None, 1500);
    let h20 = Host::new(Some("172.20.20.1/24"), None, 1500);
    let hg = Host::new(Some("172.21.0.1/24"), None, 1450);
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "vlans"

[[bridge]]
name = "gateway"
vni = 100
local = "{LOCAL_VTEP}"
remotes = ["10.63.0.2"]
vlan = 30

[[port]]
name = "uplink"
spec = "af_xdp:{}"
role = "uplink"

[[port]]
name = "h10"
spec = "{}"
bridge = "vlans"
vlan = 10

[[port]]
name = "h20"
spec = "{}"
bridge = "vlans"
vlan = 20

[[port]]
name = "hg"
spec = "{}"
bridge = "gateway"
"#,
        und.uplink,
        h10.spec(),
        h20.spec(),
        hg.spec()
    );
    let mut vs = Vswitch::start(&cfg);
    // Access ports in VLANs 10 and 20 reach the hosts on those VLANs (each answers only
    // requests tagged with its own VLAN).
    vs.ping(&h10.ns, "172.20.10.2", 5);
    vs.ping(&h20.ns, "172.20.20.2", 5);
    // The gateway: the kernel's VXLAN host reaches the VLAN 30 host and back, and the local
    // host reaches both.
    vs.ping(&vtep.ns, "172.21.0.3", 5);
    vs.ping(&hg.ns, "172.21.0.3", 5);
    vs.ping(&hg.ns, "172.21.0.2", 5);
    // The VLAN 10 host is not reachable from VLAN 20, even by an address in its subnet: its
    // ARP requests carry tag 20, which the VLAN 10 host does not answer.
    h20.ns.exec(&["ip", "addr", "add", "172.20.10.9/24", "dev", &h20.dev]);
    assert!(!try_exec(&h20.ns, &["ping", "-n", "-c", "2", "-w", "3", "172.20.10.2"]), "VLAN 20 reached VLAN 10");
    let r = vs.stop();
    for (h, name) in [(&v10, "VLAN 10"), (&v20, "VLAN 20"), (&v30, "VLAN 30")] {
        assert!(counted(&h.arps) >= 1 && counted(&h.echoes) >= 5, "{name} host answered ARP and echoes:\n{}", r.text);
    }
    assert!(counted(&v30.echoes) >= 10, "the VXLAN host and the local host both reached VLAN 30");
    v10.stop();
    v20.stop();
    v30.stop();
    assert!(r.stage("switch-ingress", "stats/uplink-vlan") >= 20, "{}", r.text);
    assert!(r.stage("switch-egress", "stats/vlan-pushed") >= 20, "{}", r.text);
    assert!(r.stage("switch-underlay", "stats/decapsulated") >= 10, "{}", r.text);
    assert!(r.stage("switch-egress", "stats/encapsulated") >= 10, "{}", r.text);
    // The gateway's bridge learned the VXLAN host (behind the VTEP), the VLAN 30 host (behind
    // the uplink) and the local host.
    assert_eq!(r.bridge("gateway", "learned"), 3, "{}", r.text);
    r.check_pool();
}

/// A TAP uplink with the virtio-net header hands the kernel's VTEP each encapsulated TCP
/// packet whole (GSO over UDP tunnels, Linux 6.17+): the host's 64 KiB TSO packets are
/// encapsulated and written as they are, never cut in software, and the kernel decapsulates
/// them as one; the other way, the kernel's VXLAN packets (partial inner checksums) are
/// decapsulated. Both TAP devices are made by the switch, then moved into the namespaces.
#[test]
fn vswitch_tap_uplink_keeps_tcp_segments_whole_through_vxlan() {
    let test = "vswitch_tap_uplink_keeps_tcp_segments_whole_through_vxlan";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    if !kernel_at_least(6, 17) {
        // A property of the kernel (a tap takes GSO over UDP tunnels from 6.17 on): said, not failed.
        let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        eprintln!("SKIPPED {test}: Linux {} has no GSO over UDP tunnels on a tap (6.17+)", rel.trim());
        return;
    }
    // Declared before the switch: on a failure the switch (and its TAP devices) goes first.
    let (station, host) = (Netns::new("fpvgs"), Netns::new("fpvgh"));
    let (up_tap, host_tap) = (unique("fpvgu"), unique("fpvgt"));
    let up_spec = format!("tap:{up_tap},vnet-hdr=on");
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "overlay"
vni = 100
local = "10.64.0.1"
remotes = ["10.64.0.2"]

[[port]]
name = "uplink"
spec = "{up_spec}"
role = "uplink"

[[port]]
name = "host"
spec = "tap:{host_tap},vnet-hdr=on"
bridge = "overlay"
"#
    );
    let mut vs = Vswitch::start(&cfg);
    // The kernel's VTEP on the uplink's TAP (a MAC of its own: the switch took the device's as
    // its VTEP's), MTU 1500 there and 1450 on its VXLAN device; the host on the other TAP.
    for (ns, dev) in [(&station, &up_tap), (&host, &host_tap)] {
        common::run(&["ip", "link", "set", dev, "netns", &ns.name]);
    }
    up(&station, &up_tap, "10.64.0.2/24", Some(&fmt(mac(0x6402))), None);
    let vx = format!("ip link add vx100 type vxlan id 100 local 10.64.0.2 remote 10.64.0.1 dstport 4789 dev {up_tap}");
    station.exec(&vx.split(' ').collect::<Vec<_>>());
    up(&station, "vx100", "172.24.0.2/24", None, None);
    up(&host, &host_tap, "172.24.0.1/24", None, Some(1450));
    vs.ping(&host, "172.24.0.2", 5);
    vs.ping(&station, "172.24.0.1", 5);
    tcp_transfer(&host, &station, "172.24.0.2", 5203, STREAM);
    tcp_transfer(&station, &host, "172.24.0.1", 5204, STREAM);
    let r = vs.stop();
    // Host -> kernel: the stream left the uplink in far fewer packets than frames of 1450 bytes
    // would take (the host's TSO packets, encapsulated whole), and nothing was cut in software.
    let up_tx = r.port(&up_tap, "tx_packets");
    assert!(up_tx < (STREAM / 1450 / 4) as u64, "{up_tx} packets on the uplink for {STREAM} bytes:\n{}", r.text);
    // Kernel -> host: its VXLAN GSO packets reach the uplink whole too (tunnel GSO on receive).
    let up_rx = r.port(&up_tap, "rx_packets");
    assert!(up_rx < (STREAM / 1450 / 4) as u64, "{up_rx} packets from the uplink for {STREAM} bytes:\n{}", r.text);
    assert_eq!(r.stage("tx-offload", "stats/segmented"), 0, "packets segmented in software:\n{}", r.text);
    assert!(r.stage("switch-egress", "stats/encapsulated") > 0, "{}", r.text);
    assert!(r.stage("switch-underlay", "stats/decapsulated") > 0, "{}", r.text);
    // Every tunnel packet from the kernel VTEP was decapsulated, partial checksums and all: no
    // drop at the uplink but `not-our-vtep` and `nd-ignored` (the IPv6 neighbour discovery the
    // TAP device sent while it sat in the root namespace, before the move).
    let ups = r.rec("switch_port", "uplink");
    let drops = ups["drops"].as_object().expect("drops");
    let noise = |k: &str| k == "not-our-vtep" || k == "nd-ignored";
    assert!(drops.iter().all(|(k, n)| noise(k) || n == 0), "uplink drops:\n{}", r.text);
    r.check_pool();
}
