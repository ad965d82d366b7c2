//! Security groups through the running app (as root, in namespaces of the tests' own), checked
//! in its `--json` report: a VM-side host whose group allows everything out and TCP 22 in opens
//! a TCP connection and pings to an unfiltered host and gets the replies; the other host's
//! unsolicited ping and TCP to another port are dropped and counted on the VM's port, while its
//! TCP to port 22 gets in; frames the VM sends from a spoofed source MAC, IP address or ARP
//! claim are dropped and counted by port security. Rules changed while it runs (`fastpath ctl
//! reload`): a removed rule cuts the live connection it allowed and refuses new ones, and a
//! reload with a change that needs a restart applies nothing. Two tenants (bridges) with the same
//! addresses keep their own rules and connections (per-zone counts of `show sg`). Counts, never rates; every mbuf
//! back in the pool at the end.

#[path = "../../pmd/tests/common/mod.rs"]
mod common;
mod vswitch_rig;

use std::io::{Read, Write};
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
    let vm_keys = format!("security_groups = [\"client\", \"ssh\"]\nallowed = [\"{} 172.21.0.1\"]", fmt(mac(0x2101)));
    let groups = "\n[[security_group]]\nname = \"ssh\"\n[[security_group.rule]]\ndirection = \"ingress\"\n\
                  protocol = \"tcp\"\nport_min = 22\nremote = \"172.21.0.0/24\"\n";
    let cfg = pair_cfg(&vm, &out, &vm_keys, groups);
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

/// The drops of switch port `port` for `reason`, from `fastpath ctl stats`.
fn drops(sw: &Vswitch, port: &str, reason: &str) -> u64 {
    let (ok, out) = sw.ctl(&["--json", "stats"]);
    assert!(ok, "fastpath ctl stats: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
    let p = v["switch_ports"].as_array().unwrap().iter().find(|p| p["name"] == port).expect("the port");
    p["drops"][reason].as_u64().unwrap_or(0)
}

/// Two ports in bridge "t": "vm" (with `vm_keys`) and "out" (unfiltered); the group "client"
/// (everything out) and `groups`.
fn pair_cfg(vm: &Host, out: &Host, vm_keys: &str, groups: &str) -> String {
    format!(
        "[vswitch]\nidle = \"adaptive\"\nconntrack_size = 4096\n\n[[bridge]]\nname = \"t\"\n\n\
         [[port]]\nname = \"vm\"\nspec = \"{}\"\nbridge = \"t\"\n{vm_keys}\n\n\
         [[port]]\nname = \"out\"\nspec = \"{}\"\nbridge = \"t\"\n\n\
         [[security_group]]\nname = \"client\"\n[[security_group.rule]]\ndirection = \"egress\"\n{groups}",
        vm.spec(),
        out.spec()
    )
}

/// The config of [`vswitch_a_reloaded_rule_cuts_the_live_connection`]: "vm" in "client" and,
/// with `ssh`, in "ssh" (TCP 22 in); `vm_mac` is its allowed MAC.
fn live_cfg(vm: &Host, out: &Host, ssh: bool, vm_mac: &str) -> String {
    let list = if ssh { r#"["client", "ssh"]"# } else { r#"["client"]"# };
    let vm_keys = format!("security_groups = {list}\nallowed = [\"{vm_mac} 172.22.0.1\"]");
    let ssh_group = "\n[[security_group]]\nname = \"ssh\"\n[[security_group.rule]]\ndirection = \"ingress\"\n\
                     protocol = \"tcp\"\nport_min = 22\n";
    pair_cfg(vm, out, &vm_keys, if ssh { ssh_group } else { "" })
}

#[test]
fn vswitch_a_reloaded_rule_cuts_the_live_connection() {
    let test = "vswitch_a_reloaded_rule_cuts_the_live_connection";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let vm = Host::new(Some("172.22.0.1/24"), Some(&fmt(mac(0x2201))), 1500);
    let out = Host::new(Some("172.22.0.2/24"), Some(&fmt(mac(0x2202))), 1500);
    let vm_mac = fmt(mac(0x2201));
    let mut sw = Vswitch::start(&live_cfg(&vm, &out, true, &vm_mac));
    sw.ping(&vm.ns, "172.22.0.2", 3);
    // A connection to port 22 carries data.
    let l22 = vm.ns.enter(|| TcpListener::bind("172.22.0.1:22").expect("bind :22"));
    let a: SocketAddr = "172.22.0.1:22".parse().unwrap();
    let mut c = out.ns.enter(|| TcpStream::connect_timeout(&a, Duration::from_secs(5))).expect("connect to 22");
    let (mut s, _) = l22.accept().expect("accept on 22");
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    c.write_all(b"before").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("data before the reload");
    assert_eq!(&buf[..n], b"before");
    let cut_before = drops(&sw, "vm", "sg-no-rule") + drops(&sw, "vm", "sg-invalid");

    // The SSH group gone from the file and from the port: reload.
    sw.rewrite(&live_cfg(&vm, &out, false, &vm_mac));
    let (ok, said) = sw.ctl(&["reload"]);
    if !ok {
        sw.fail(&format!("reload: {said}"));
    }
    let (_, shown) = sw.ctl(&["--json", "show", "sg"]);
    c.write_all(b"after").unwrap();
    match s.read(&mut buf) {
        Ok(n) => sw.fail(&format!("{n} bytes of the cut connection arrived; show sg: {shown}")),
        Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}"),
    }
    if connects(&out.ns, "172.22.0.1:22", 2) {
        sw.fail("a new connection to 22 got through after the rule was removed");
    }
    let v: serde_json::Value = serde_json::from_str(&shown).expect("show sg JSON");
    assert_eq!(v["groups"], serde_json::json!([{"name": "client", "rules": 1, "ports": ["vm"]}]), "{v}");
    assert_eq!(
        (v["rules"][0]["group"].as_str(), v["rules"][0]["direction"].as_str()),
        (Some("client"), Some("egress"))
    );
    assert_eq!(v["zones"][0]["bridge"], "t", "{v}");
    assert!(v["zones"][0]["entries"].as_u64().unwrap() >= 1, "the ping is tracked still: {v}");
    let cut = drops(&sw, "vm", "sg-no-rule") + drops(&sw, "vm", "sg-invalid") - cut_before;
    assert!(cut >= 2, "the cut connection's data and the new SYN are counted: {cut}");

    // A reload with an unsupported change (port security) and the SSH rule back: refused, the
    // rule stays out.
    sw.rewrite(&live_cfg(&vm, &out, true, &fmt(mac(0x2299))));
    let (ok, said) = sw.ctl(&["reload"]);
    assert!(!ok && said.contains("nothing applied") && said.contains("port security"), "{said}");
    assert!(said.contains("vm"), "names the port: {said}");
    if connects(&out.ns, "172.22.0.1:22", 2) {
        sw.fail("a refused reload applied the SSH rule");
    }
    // The unfiltered port getting a group: refused, naming it (its packets are not checked).
    let text = live_cfg(&vm, &out, true, &vm_mac);
    let out_line = format!("spec = \"{}\"\nbridge = \"t\"\n", out.spec());
    assert!(text.contains(&out_line));
    sw.rewrite(&text.replace(&out_line, &format!("{out_line}security_groups = [\"client\"]\n")));
    let (ok, said) = sw.ctl(&["reload"]);
    assert!(!ok && said.contains("nothing applied") && said.contains("port out"), "{said}");
    // The same, supported: applied, 22 open again.
    sw.rewrite(&live_cfg(&vm, &out, true, &vm_mac));
    let (ok, said) = sw.ctl(&["reload"]);
    assert!(ok, "{said}");
    if !connects(&out.ns, "172.22.0.1:22", 5) {
        sw.fail("the SSH rule put back by a reload does not let a connection in");
    }
    let (ok, table) = sw.ctl(&["show", "security-groups"]);
    assert!(ok, "{table}");
    for want in ["groups:", "rules:", "zones:", "ssh", "ingress", "tcp", "22", "client"] {
        assert!(table.contains(want), "{want} in:\n{table}");
    }
    drop((c, s, l22));
    let r = sw.stop();
    r.check_pool();
}

#[test]
fn vswitch_two_tenants_with_the_same_addresses_keep_separate_connections() {
    let test = "vswitch_two_tenants_with_the_same_addresses_keep_separate_connections";
    if !require(test, &[]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    // The same addresses (and MACs) in both tenants.
    let hosts: Vec<(Host, Host)> = (0..2)
        .map(|_| {
            let vm = Host::new(Some("172.23.0.1/24"), Some(&fmt(mac(0x2301))), 1500);
            let out = Host::new(Some("172.23.0.2/24"), Some(&fmt(mac(0x2302))), 1500);
            (vm, out)
        })
        .collect();
    let mut cfg = String::from("[vswitch]\nidle = \"adaptive\"\nconntrack_size = 4096\n");
    for (t, (vm, out)) in ["a", "b"].iter().zip(&hosts) {
        // Tenant a lets pings in, tenant b does not.
        let groups = if *t == "a" { r#"["client", "ping"]"# } else { r#"["client"]"# };
        cfg += &format!(
            "\n[[bridge]]\nname = \"{t}\"\n\n[[port]]\nname = \"vm-{t}\"\nspec = \"{}\"\nbridge = \"{t}\"\n\
             security_groups = {groups}\n\n[[port]]\nname = \"out-{t}\"\nspec = \"{}\"\nbridge = \"{t}\"\n",
            vm.spec(),
            out.spec()
        );
    }
    cfg += "\n[[security_group]]\nname = \"client\"\n[[security_group.rule]]\ndirection = \"egress\"\n\
            \n[[security_group]]\nname = \"ping\"\n[[security_group.rule]]\ndirection = \"ingress\"\n\
            protocol = \"icmp\"\n";
    let mut sw = Vswitch::start(&cfg);
    for (vm, _) in &hosts {
        sw.ping(&vm.ns, "172.23.0.2", 3);
    }
    // In a, the ping in is allowed; in b, with the same addresses, it is not.
    if !pings(&hosts[0].1.ns, "172.23.0.1") {
        sw.fail("tenant a's ping in did not get through");
    }
    if pings(&hosts[1].1.ns, "172.23.0.1") {
        sw.fail("tenant b's unsolicited ping got in (tenant a's state or rules leaked)");
    }
    let (ok, shown) = sw.ctl(&["--json", "show", "sg"]);
    assert!(ok, "{shown}");
    let v: serde_json::Value = serde_json::from_str(&shown).expect("show sg JSON");
    let zone = |b: &str, k: &str| {
        let z = v["zones"].as_array().unwrap().iter().find(|z| z["bridge"] == b).expect("the zone");
        z[k].as_u64().unwrap()
    };
    assert!(zone("a", "entries") >= 2 && zone("b", "entries") >= 1, "{v}");
    assert!(zone("a", "new") >= 2 && zone("b", "new") >= 1, "{v}");
    let r = sw.stop();
    assert!(r.sport("vm-b", "drops/sg-no-rule") >= 1, "{}", r.text);
    assert_eq!(r.sport("vm-a", "drops/sg-no-rule"), 0, "{}", r.text);
    r.check_pool();
}
