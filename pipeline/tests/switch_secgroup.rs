//! Security groups through the whole switch: frames built byte by byte go in on access ports
//! with and without groups; what a rule allows passes, replies to it pass back without a rule,
//! unsolicited traffic is dropped and counted per port and reason, and a removed rule cuts the
//! connections it allowed. Every test ends with the pool full again (the kit checks).

mod switchkit;

use std::net::Ipv4Addr;

use fastpath_pipeline::switch::{
    ConntrackSettings, Direction, PortGroups, SecurityGroup, SgRule, StaticMac, SwitchConfig,
};
use fastpath_pipeline::wire::ip_proto;
use switchkit::*;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

fn ip4(i: u8) -> String {
    format!("10.0.0.{i}")
}

/// Ethernet + IPv4 from VM `s` to VM `d` (MAC mac(i), address 10.0.0.i) carrying `l4`.
fn ipv4(s: u8, d: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_to(mac(d), s, d, proto, l4)
}

fn ipv4_to(dst_mac: [u8; 6], s: u8, d: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&mac(s));
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip_header(s, d, proto, l4.len()));
    f.extend_from_slice(l4);
    f
}

fn ip_header(s: u8, d: u8, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&ip4(s).parse::<Ipv4Addr>().unwrap().octets());
    h.extend_from_slice(&ip4(d).parse::<Ipv4Addr>().unwrap().octets());
    h
}

fn tcp(s: u8, d: u8, (sport, dport): (u16, u16), seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend(std::iter::repeat_n(0x61, payload));
    ipv4(s, d, ip_proto::TCP, &t)
}

fn udp_l4(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    u
}

fn udp(s: u8, d: u8, sport: u16, dport: u16) -> Vec<u8> {
    ipv4(s, d, ip_proto::UDP, &udp_l4(sport, dport))
}

fn icmp(s: u8, d: u8, ty: u8, id: u16) -> Vec<u8> {
    let mut i = vec![ty, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1]);
    ipv4(s, d, ip_proto::ICMP, &i)
}

/// Port unreachable from `s` to `d` quoting UDP `d:sport -> s:dport`.
fn port_unreachable(s: u8, d: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut i = vec![3, 3, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(&ip_header(d, s, ip_proto::UDP, 16));
    i.extend_from_slice(&udp_l4(sport, dport)[..8]);
    ipv4(s, d, ip_proto::ICMP, &i)
}

fn rule(direction: Direction, protocol: Option<u8>, ports: Option<(u16, u16)>, remote: Option<&str>) -> SgRule {
    SgRule {
        direction,
        protocol,
        ports,
        remote: remote.map(|r| {
            let (a, l) = r.split_once('/').unwrap();
            (a.parse().unwrap(), l.parse().unwrap())
        }),
        ..Default::default()
    }
}

/// "server": SSH from 10.0.0.0/24 and ping in; nothing out.
fn server_rules() -> Vec<SgRule> {
    vec![
        rule(Direction::Ingress, Some(ip_proto::TCP), Some((22, 22)), Some("10.0.0.0/24")),
        SgRule { protocol: Some(ip_proto::ICMP), icmp_type: Some(8), ..Default::default() },
    ]
}

/// vm0: no group (the "outside"); vm1 in "client" (everything out, nothing in); vm2 in
/// "server"; vm3 in "client" too. Static MACs, so that unicast is known at once.
fn cfg(capacity: usize) -> SwitchConfig {
    SwitchConfig {
        bridges: vec![bridge("lan")],
        ports: (0..4).map(|i| access(i, &format!("vm{i}"), "lan", None)).collect(),
        static_macs: (0..4)
            .map(|i| StaticMac {
                bridge: "lan".into(),
                vlan: None,
                mac: mac(i),
                port: Some(format!("vm{i}")),
                vtep: None,
            })
            .collect(),
        security_groups: vec![
            SecurityGroup { name: "client".into(), rules: vec![rule(Direction::Egress, None, None, None)] },
            SecurityGroup { name: "server".into(), rules: server_rules() },
        ],
        port_groups: vec![
            PortGroups { port: "vm1".into(), groups: vec!["client".into()] },
            PortGroups { port: "vm2".into(), groups: vec!["server".into()] },
            PortGroups { port: "vm3".into(), groups: vec!["client".into()] },
        ],
        conntrack: ConntrackSettings { capacity, zone_limit: 0 },
        ..Default::default()
    }
}

/// Sends `f` in on `port`; the ports it came out on.
fn through(k: &mut Kit, port: u16, f: Vec<u8>) -> Vec<u16> {
    ports(&k.send1(port, f))
}

fn port_drops(k: &Kit, port: usize, reason: &str) -> u64 {
    k.control.stats().ports[port].drops.iter().find(|d| d.0 == reason).map_or(0, |d| d.1)
}

#[test]
fn allowed_traffic_passes_and_replies_come_back_without_a_rule() {
    let mut k = Kit::new(&cfg(1024));
    // TCP: handshake, data both ways.
    assert_eq!(through(&mut k, 1, tcp(1, 0, (40000, 80), 100, 0, SYN, 0)), [0]);
    assert_eq!(through(&mut k, 0, tcp(0, 1, (80, 40000), 500, 101, SYN | ACK, 0)), [1]);
    assert_eq!(through(&mut k, 1, tcp(1, 0, (40000, 80), 101, 501, ACK, 0)), [0]);
    assert_eq!(through(&mut k, 1, tcp(1, 0, (40000, 80), 101, 501, PSH_ACK, 10)), [0]);
    assert_eq!(through(&mut k, 0, tcp(0, 1, (80, 40000), 501, 111, PSH_ACK, 100)), [1]);
    // UDP and its reply; a ping and its reply; an ICMP error about the UDP flow.
    assert_eq!(through(&mut k, 1, udp(1, 0, 5353, 53)), [0]);
    assert_eq!(through(&mut k, 0, udp(0, 1, 53, 5353)), [1]);
    assert_eq!(through(&mut k, 1, icmp(1, 0, 8, 7)), [0]);
    assert_eq!(through(&mut k, 0, icmp(0, 1, 0, 7)), [1]);
    assert_eq!(through(&mut k, 0, port_unreachable(0, 1, 5353, 53)), [1]);
    // ARP always passes.
    assert_eq!(through(&mut k, 0, arp(mac(1), 1, mac(0), &ip4(0), [0; 6], &ip4(1))), [1]);
    assert!(k.control.stats().ports.iter().all(|p| p.drops.is_empty()), "{:?}", k.control.stats().ports);
    let ct = k.control.stats().conntrack.unwrap();
    assert_eq!(ct.entries, 3, "{ct:?}");
    assert_eq!((ct.zones[0].bridge.as_str(), ct.zones[0].entries, ct.zones[0].new), ("lan", 3, 3));
}

#[test]
fn unsolicited_ingress_is_dropped_and_counted() {
    let mut k = Kit::new(&cfg(1024));
    assert!(through(&mut k, 0, tcp(0, 1, (40000, 80), 100, 0, SYN, 0)).is_empty());
    assert!(through(&mut k, 0, udp(0, 1, 5353, 53)).is_empty());
    assert!(through(&mut k, 0, icmp(0, 1, 8, 7)).is_empty());
    assert_eq!(port_drops(&k, 1, "sg-no-rule"), 3);
    // Not a new connection and not tracked; a reply or an error about nothing tracked.
    assert!(through(&mut k, 0, tcp(0, 1, (80, 40000), 500, 101, ACK, 0)).is_empty());
    assert!(through(&mut k, 0, icmp(0, 1, 0, 9)).is_empty());
    assert!(through(&mut k, 0, port_unreachable(0, 1, 5353, 53)).is_empty());
    assert_eq!(port_drops(&k, 1, "sg-invalid"), 3);
    // Flooded (unknown destination MAC) copies are checked as well: vm1 and vm3 drop them,
    // vm2 lets the ping in.
    let out = through(&mut k, 0, ipv4_to([0x52, 0x54, 0, 0, 0, 0x99], 0, 2, ip_proto::ICMP, &[8, 0, 0, 0, 0, 5, 0, 1]));
    assert_eq!(out, [2]);
    assert_eq!(port_drops(&k, 1, "sg-no-rule") + port_drops(&k, 3, "sg-no-rule"), 5);
    // A non-first fragment.
    let mut frag = udp(0, 1, 53, 5353);
    frag[20] = 0x00;
    frag[21] = 0x10;
    assert!(through(&mut k, 0, frag).is_empty());
    assert_eq!(port_drops(&k, 1, "sg-fragment"), 1);
    // The port without a group is never filtered; nothing was tracked.
    assert_eq!(port_drops(&k, 0, "sg-no-rule"), 0);
    assert_eq!(k.control.stats().conntrack.unwrap().zones[0].entries, 1, "the ping to vm2");
}

#[test]
fn ingress_rules_let_exactly_that_in_and_egress_is_denied_by_default() {
    let mut k = Kit::new(&cfg(1024));
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40000, 22), 100, 0, SYN, 0)), [2]);
    assert_eq!(through(&mut k, 2, tcp(2, 0, (22, 40000), 500, 101, SYN | ACK, 0)), [0], "the reply needs no rule");
    assert!(through(&mut k, 0, tcp(0, 2, (40001, 23), 100, 0, SYN, 0)).is_empty());
    assert!(through(&mut k, 2, udp(2, 0, 5353, 53)).is_empty(), "egress: default deny");
    assert_eq!(port_drops(&k, 2, "sg-no-rule"), 2);
    // VM to VM: vm1's egress rule and vm2's ingress rule both decide.
    assert_eq!(through(&mut k, 1, tcp(1, 2, (40000, 22), 100, 0, SYN, 0)), [2]);
    assert!(through(&mut k, 1, tcp(1, 2, (40000, 80), 100, 0, SYN, 0)).is_empty());
    assert_eq!(port_drops(&k, 2, "sg-no-rule"), 3);
    assert_eq!(through(&mut k, 2, tcp(2, 1, (22, 40000), 500, 101, SYN | ACK, 0)), [1]);
    // Two VMs in "client" may open connections to each other's... nothing: ingress is denied.
    assert!(through(&mut k, 1, udp(1, 3, 1000, 2000)).is_empty());
    assert_eq!(port_drops(&k, 3, "sg-no-rule"), 1);
}

#[test]
fn a_removed_rule_cuts_the_connections_it_allowed() {
    let mut k = Kit::new(&cfg(1024));
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40000, 22), 100, 0, SYN, 0)), [2]);
    assert_eq!(through(&mut k, 2, tcp(2, 0, (22, 40000), 500, 101, SYN | ACK, 0)), [0]);
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40000, 22), 101, 501, ACK, 0)), [2]);
    assert_eq!(through(&mut k, 0, icmp(0, 2, 8, 3)), [2]);
    // Remove the SSH rule, keep the ping rule.
    let keep = server_rules()[1..].to_vec();
    k.control.set_security_group("server", keep.clone()).unwrap();
    assert_eq!(k.control.security_group("server"), Some(&keep[..]));
    assert!(through(&mut k, 2, tcp(2, 0, (22, 40000), 501, 101, PSH_ACK, 10)).is_empty(), "the reply side too");
    assert!(through(&mut k, 0, tcp(0, 2, (40000, 22), 101, 511, PSH_ACK, 10)).is_empty());
    assert!(through(&mut k, 0, tcp(0, 2, (40002, 22), 100, 0, SYN, 0)).is_empty());
    assert_eq!(port_drops(&k, 2, "sg-no-rule"), 2);
    assert_eq!(port_drops(&k, 2, "sg-invalid"), 1, "the cut connection is gone: its next packet fits none");
    // The connection the remaining rule allows lives on.
    assert_eq!(through(&mut k, 2, icmp(2, 0, 0, 3)), [0]);
    // Put it back: new connections pass again.
    k.control.set_security_group("server", server_rules()).unwrap();
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40003, 22), 100, 0, SYN, 0)), [2]);
    // Bad rules are refused, the group unchanged.
    let bad = vec![rule(Direction::Ingress, Some(ip_proto::TCP), Some((30, 20)), None)];
    let e = k.control.set_security_group("server", bad).unwrap_err().to_string();
    assert!(e.contains("server") && e.contains("port_min"), "{e}");
    assert!(k.control.set_security_group("nope", vec![]).is_err());
}

#[test]
fn a_full_table_refuses_new_connections_counted() {
    let mut k = Kit::new(&cfg(2));
    assert_eq!(through(&mut k, 1, udp(1, 0, 1000, 53)), [0]);
    assert_eq!(through(&mut k, 1, udp(1, 0, 1001, 53)), [0]);
    assert!(through(&mut k, 1, udp(1, 0, 1002, 53)).is_empty());
    assert_eq!(port_drops(&k, 1, "sg-table-full"), 1);
    let ct = k.control.stats().conntrack.unwrap();
    assert_eq!((ct.entries, ct.refused, ct.capacity), (2, 1, 2));
    // Aging frees them (UDP seen one way: 30 s), a little per poll.
    k.advance(31);
    for _ in 0..64 {
        k.poll();
    }
    let ct = k.control.stats().conntrack.unwrap();
    assert_eq!((ct.entries, ct.aged), (0, 2), "{ct:?}");
    assert_eq!(through(&mut k, 1, udp(1, 0, 1002, 53)), [0]);
}

#[test]
fn config_errors_name_the_group_and_the_port() {
    let build = |c: &SwitchConfig| {
        let pool = fastpath_mempool::Mempool::new(
            "sg-cfg",
            &fastpath_mempool::PoolConfig { mbufs: 256, chunk_size: 2048, pages: fastpath_mempool::PagePolicy::Small },
        )
        .unwrap();
        fastpath_pipeline::switch::build(c, &pool, 1).map(|_| ()).unwrap_err().to_string()
    };
    let mut c = cfg(16);
    c.port_groups[0].groups = vec!["nope".into()];
    let e = build(&c);
    assert!(e.contains("vm1") && e.contains("\"nope\"") && e.contains("client, server"), "{e}");
    let mut c = cfg(16);
    c.security_groups[1].rules.push(SgRule { protocol: Some(ip_proto::UDP), icmp_type: Some(3), ..Default::default() });
    let e = build(&c);
    assert!(e.contains("security group server rule 3") && e.contains("icmp_type"), "{e}");
    let mut c = cfg(16);
    c.security_groups.push(SecurityGroup { name: "client".into(), rules: vec![] });
    assert!(build(&c).contains("client is defined twice"));
}

#[test]
fn two_tenants_with_the_same_addresses_keep_separate_connections() {
    // Bridges a and b, each with an unfiltered port (MAC 0, 10.0.0.0) and a "client" port
    // (MAC 1, 10.0.0.1): the same addresses in both.
    let mut c = cfg(1024);
    c.bridges = vec![bridge("a"), bridge("b")];
    c.ports = ["a", "b"]
        .iter()
        .enumerate()
        .flat_map(|(t, b)| (0..2).map(move |i| access(2 * t as u16 + i, &format!("{b}{i}"), b, None)))
        .collect();
    c.static_macs = (0..4)
        .map(|p| StaticMac {
            bridge: if p < 2 { "a" } else { "b" }.into(),
            vlan: None,
            mac: mac(p as u8 % 2),
            port: Some(c.ports[p].name.clone()),
            vtep: None,
        })
        .collect();
    c.port_groups = ["a1", "b1"].map(|p| PortGroups { port: p.into(), groups: vec!["client".into()] }).to_vec();
    let mut k = Kit::new(&c);
    assert_eq!(through(&mut k, 1, udp(1, 0, 5353, 53)), [0]);
    // The same reply in tenant b is unsolicited there; in tenant a it is a reply.
    assert!(through(&mut k, 2, udp(0, 1, 53, 5353)).is_empty());
    assert_eq!(port_drops(&k, 3, "sg-no-rule"), 1);
    assert_eq!(through(&mut k, 0, udp(0, 1, 53, 5353)), [1]);
    let zones = k.control.stats().conntrack.unwrap().zones;
    let z: Vec<(&str, u64)> = zones.iter().map(|z| (z.bridge.as_str(), z.entries)).collect();
    assert_eq!(z, [("a", 1), ("b", 0)]);
}

#[test]
fn groups_and_ports_lists_are_replaced_at_once_or_not_at_all() {
    let mut k = Kit::new(&cfg(1024));
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40000, 22), 100, 0, SYN, 0)), [2]);
    assert_eq!(through(&mut k, 2, tcp(2, 0, (22, 40000), 500, 101, SYN | ACK, 0)), [0]);
    let before = k.control.security_groups().clone();
    let pg = |p: &str, g: &[&str]| PortGroups { port: p.into(), groups: g.iter().map(|s| s.to_string()).collect() };
    let client = SecurityGroup { name: "client".into(), rules: vec![rule(Direction::Egress, None, None, None)] };
    let web = SecurityGroup {
        name: "web".into(),
        rules: vec![rule(Direction::Ingress, Some(ip_proto::TCP), Some((80, 80)), None)],
    };
    // Refused, nothing changed: vm0 had no group at start; vm3 would lose all; an unknown group.
    let groups = vec![client.clone(), web.clone()];
    let refusals = [
        (vec![pg("vm0", &["web"]), pg("vm1", &["client"]), pg("vm2", &["web"]), pg("vm3", &["client"])], "vm0"),
        (vec![pg("vm1", &["client"]), pg("vm2", &["web"])], "vm3"),
        (vec![pg("vm1", &["client"]), pg("vm2", &["web"]), pg("vm3", &[])], "vm3"),
        (vec![pg("vm1", &["client"]), pg("vm2", &["nope"]), pg("vm3", &["client"])], "nope"),
    ];
    for (ports, named) in refusals {
        let e = k.control.replace_security_groups(groups.clone(), &ports).unwrap_err().to_string();
        assert!(e.contains(named), "{e}");
        assert_eq!(k.control.security_groups().ports, before.ports);
        assert_eq!(k.control.security_groups().groups, before.groups);
    }
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40000, 22), 101, 501, ACK, 0)), [2], "still allowed");
    // vm2 moves from "server" to "web" (and "server" goes): its SSH connection is cut, web gets in.
    let ports = [pg("vm1", &["client"]), pg("vm2", &["web"]), pg("vm3", &["client", "web"])];
    k.control.replace_security_groups(groups, &ports).unwrap();
    assert_eq!(k.control.security_group("server"), None);
    assert!(through(&mut k, 0, tcp(0, 2, (40000, 22), 101, 501, PSH_ACK, 10)).is_empty());
    assert_eq!(port_drops(&k, 2, "sg-no-rule"), 1);
    assert!(through(&mut k, 0, tcp(0, 2, (40001, 22), 100, 0, SYN, 0)).is_empty());
    assert_eq!(through(&mut k, 0, tcp(0, 2, (40002, 80), 100, 0, SYN, 0)), [2]);
    assert_eq!(through(&mut k, 0, tcp(0, 3, (40003, 80), 100, 0, SYN, 0)), [3], "vm3 took web as well");
    assert!(through(&mut k, 0, tcp(0, 1, (40004, 80), 100, 0, SYN, 0)).is_empty());
}

/// Frames of one burst with the same Ethernet header but other ports are each checked by the
/// groups of the port they come from (the switch's one pass remembers no verdict of such a
/// port), and each gets the verdict of its own rule.
#[test]
fn every_frame_of_a_burst_is_checked_on_its_own() {
    let mut c = cfg(1024);
    c.security_groups.push(SecurityGroup {
        name: "dns".into(),
        rules: vec![rule(Direction::Egress, Some(ip_proto::UDP), Some((53, 53)), None)],
    });
    c.port_groups[0].groups = vec!["dns".into()];
    let mut k = Kit::new(&c);
    let (dns, other) = (udp(1, 0, 5353, 53), udp(1, 0, 5353, 54));
    assert_eq!(dns[..14], other[..14]);
    let out = k.run_frames(&[(1, dns.clone()), (1, other.clone()), (1, dns), (1, other)]);
    assert_eq!(ports(&out), [0, 0]);
    assert_eq!(port_drops(&k, 1, "sg-no-rule"), 2);
}
