//! Security groups through the running app (as root, in namespaces of the tests' own), checked
//! in its `--json` report: a VM-side host whose group allows everything out and TCP 22 in opens
//! a TCP connection and pings to an unfiltered host and gets the replies; the other host's
//! unsolicited ping and TCP to another port are dropped and counted on the VM's port, while its
//! TCP to port 22 gets in; frames the VM sends from a spoofed source MAC, IP address or ARP
//! claim are dropped and counted by port security. Counts, never rates; every mbuf back in the
//! pool at the end.

#[path = "../../pmd/tests/common/mod.rs"]
mod common;
mod vswitch_rig;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::Netns;
use vswitch_rig::*;

/// Connects from `ns` to `addr` within `secs`; whether it succeeded.
fn connects(ns: &Netns, addr: &str, secs: u64) -> bool {
    let a: SocketAddr = addr.parse().unwrap();
    ns.enter(|| TcpStream::connect_timeout(&a, Duration::from_secs(secs)).is_ok())
}

/// Pings `to` from `ns` twice, giving up after 3 s; whether a reply came.
fn pings(ns: &Netns, to: &str) -> bool {
    try_exec(ns, &["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-w", "3", to])
}

#[test]
fn vswitch_security_groups_allow_out_and_replies_drop_unsolicited_in() {
    let test = "vswitch_security_groups_allow_out_and_replies_drop_unsolicited_in";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let vm = Host::new(Some("172.21.0.1/24"), Some(&fmt(mac(0x2101))), 1500);
    let out = Host::new(Some("172.21.0.2/24"), Some(&fmt(mac(0x2102))), 1500);
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"
conntrack_size = 4096

[[bridge]]
name = "t"

[[port]]
name = "vm"
spec = "{}"
bridge = "t"
security_groups = ["client", "ssh"]
allowed = ["{} 172.21.0.1"]

[[port]]
name = "out"
spec = "{}"
bridge = "t"

[[security_group]]
name = "client"
[[security_group.rule]]
direction = "egress"

[[security_group]]
name = "ssh"
[[security_group.rule]]
direction = "ingress"
protocol = "tcp"
port_min = 22
remote = "172.21.0.0/24"
"#,
        vm.spec(),
        fmt(mac(0x2101)),
        out.spec()
    );
    let mut sw = Vswitch::start(&cfg);
    // Out, and the replies back: ping, a TCP transfer.
    sw.ping(&vm.ns, "172.21.0.2", 3);
    tcp_transfer(&vm.ns, &out.ns, "172.21.0.2", 5001, 1 << 20);
    // In: TCP 22 is allowed; ping and TCP 23 are not (a listener is there: only the group
    // stops it).
    tcp_transfer(&out.ns, &vm.ns, "172.21.0.1", 22, 1 << 16);
    let l23 = vm.ns.enter(|| TcpListener::bind("172.21.0.1:23").expect("bind :23"));
    if pings(&out.ns, "172.21.0.1") {
        sw.fail("an unsolicited ping got through");
    }
    if connects(&out.ns, "172.21.0.1:23", 2) {
        sw.fail("an unsolicited TCP connection to port 23 got through");
    }
    drop(l23);
    // Spoofed: a source MAC not the VM's, an IP address not the VM's, an ARP reply claiming one.
    let (vmac, bcast) = (mac(0x2101), [0xff; 6]);
    let udp_from = |src: [u8; 4]| {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[172, 21, 0, 2, 0x13, 0x88, 0x13, 0x88, 0, 8, 0, 0]);
        p
    };
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&vmac);
    arp.extend_from_slice(&[172, 21, 0, 9]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[172, 21, 0, 2]);
    let spoofs = [
        frame(bcast, mac(0x2199), 0x0800, &udp_from([172, 21, 0, 1])),
        frame(mac(0x2102), vmac, 0x0800, &udp_from([172, 21, 0, 9])),
        frame(bcast, vmac, 0x0806, &arp),
    ];
    send_frames(&vm.ns, &vm.dev, &spoofs);
    std::thread::sleep(Duration::from_millis(300));
    let r = sw.stop();
    for reason in ["spoofed-mac", "spoofed-ip", "spoofed-arp"] {
        assert_eq!(r.sport("vm", &format!("drops/{reason}")), 1, "{reason}:\n{}", r.text);
    }
    let dropped = r.sport("vm", "drops/sg-no-rule");
    assert!(dropped >= 3, "the pings and the SYN (and its retries) are counted:\n{}", r.text);
    assert_eq!(r.sport("out", "drops/sg-no-rule"), 0, "the port without a group is not filtered");
    assert!(r.n("conntrack_zone", "t", "new") >= 3, "ping, TCP out, TCP 22 in:\n{}", r.text);
    let table = r.recs.iter().find(|x| x["conntrack_entries"].is_u64()).expect("the table's totals");
    assert_eq!(r.get(table, "refused"), 0, "{}", r.text);
    r.check_pool();
}
