//! Security groups of access (VM) ports, like Neutron's: stateful rules, default deny both ways
//! once a port has a group. Directions are the VM's: *egress* is what the VM sends into the
//! switch (checked in [`crate::switch::ingress`]), *ingress* what the switch sends out to the VM
//! (checked where a packet is given to a VM port: known unicast after forwarding, each copy of
//! a flood). A rule allows *new* connections; packets of a tracked connection (and ICMP errors
//! about it) pass back without one, through the shared [`Conntrack`] table: one zone per
//! bridge, the checking port as the entry's point, so that each VM port's rules decide its
//! own side of a VM-to-VM connection.
//!
//! Always allowed, as Neutron's base rules: ARP, IPv6 neighbour discovery and MLD (ICMPv6
//! 130..=136 and 143), DHCP / DHCPv6 client requests out and server replies in. Other
//! non-IP frames are dropped (`sg-no-rule`); non-first fragments are dropped (`sg-fragment`).
//!
//! Rules live in atomics, per port, under a sequence count the control side (the one writer)
//! makes odd while it rewrites them ([`SecurityGroups::set`]); lcores read without a lock and
//! retry when the count moved. Each rewrite bumps a generation: a tracked connection stamped
//! with an older one is re-checked against the port's rules at its next packet and removed when
//! they no longer allow it. `docs/security.md` has the semantics.

use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use fastpath_pmd::Error;

use crate::conntrack::{Conntrack, Flow, FlowError, LastConn, Verdict};
use crate::switch::config::{PortRole, SwitchConfig};
use crate::switch::stats::reason;
use crate::wire::{ethertype, get_u16, ip_proto};

/// Rules per port at most (the union of its groups' rules).
pub const MAX_PORT_RULES: usize = 256;

/// A rule's direction, the VM's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// To the VM.
    #[default]
    Ingress,
    /// From the VM.
    Egress,
}

/// One rule of a security group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SgRule {
    /// Ingress or egress.
    pub direction: Direction,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// IP protocol; none: any.
    pub protocol: Option<u8>,
    /// TCP / UDP / SCTP destination ports (inclusive); none: all.
    pub ports: Option<(u16, u16)>,
    /// ICMP / ICMPv6 type; none: all.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code (with a type); none: all.
    pub icmp_code: Option<u8>,
    /// The remote end's prefix (the source of ingress, the destination of egress); none: any.
    pub remote: Option<(IpAddr, u8)>,
}

/// A named security group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityGroup {
    /// Unique name.
    pub name: String,
    /// Its rules.
    pub rules: Vec<SgRule>,
}

/// The groups of one access port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortGroups {
    /// The port's name.
    pub port: String,
    /// Names of its groups (at least one: a port without groups is not filtered).
    pub groups: Vec<String>,
}

/// Connection table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Connections in all bridges at most.
    pub capacity: usize,
    /// Connections per bridge at most (0: only `capacity`).
    pub zone_limit: usize,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings { capacity: 65536, zone_limit: 0 }
    }
}

fn port_proto(p: u8) -> bool {
    matches!(p, ip_proto::TCP | ip_proto::UDP | 132)
}

impl SgRule {
    /// Checks the rule; the problem and its fix.
    pub fn check(&self) -> Result<(), String> {
        let p = self.protocol;
        if let Some((a, b)) = self.ports {
            if !p.is_some_and(port_proto) {
                return Err("port_min / port_max need protocol = tcp, udp or 132 (sctp)".into());
            }
            if a > b {
                return Err(format!("port_min = {a} is above port_max = {b}: give port_min <= port_max"));
            }
        }
        let icmp = matches!(p, Some(ip_proto::ICMP | ip_proto::ICMPV6));
        if (self.icmp_type.is_some() || self.icmp_code.is_some()) && !icmp {
            return Err("icmp_type / icmp_code need protocol = icmp or icmpv6".into());
        }
        if self.icmp_code.is_some() && self.icmp_type.is_none() {
            return Err("icmp_code needs icmp_type".into());
        }
        if p == Some(ip_proto::ICMPV6) && !self.v6 {
            return Err("protocol = icmpv6 needs ethertype = IPv6".into());
        }
        if let Some((a, len)) = self.remote {
            if a.is_ipv6() != self.v6 {
                return Err(format!(
                    "remote {a}/{len} is not of the rule's ethertype (IPv{})",
                    if self.v6 { 6 } else { 4 }
                ));
            }
            if len > if self.v6 { 128 } else { 32 } {
                return Err(format!("remote prefix length {len} is too long"));
            }
        }
        Ok(())
    }

    /// The rule as the data path's words (see [`PortRules`]).
    fn words(&self) -> [u64; 5] {
        let mut w0 = (self.direction == Direction::Egress) as u64 | (self.v6 as u64) << 1;
        let (mut amin, mut amax, mut bmin, mut bmax) = (0u64, 0xffffu64, 0u64, 0xffu64);
        match self.protocol {
            None => w0 |= 1 << 2,
            Some(p) => {
                // Neutron takes icmp with IPv6 for ICMPv6.
                let p = if p == ip_proto::ICMP && self.v6 { ip_proto::ICMPV6 } else { p };
                w0 |= (p as u64) << 8;
            }
        }
        if let Some((a, b)) = self.ports {
            (amin, amax) = (a as u64, b as u64);
        }
        if let Some(t) = self.icmp_type {
            (amin, amax) = (t as u64, t as u64);
        }
        if let Some(c) = self.icmp_code {
            (bmin, bmax) = (c as u64, c as u64);
        }
        w0 |= amin << 16 | amax << 32 | bmin << 48 | bmax << 56;
        let (net, mask) = match self.remote {
            None => (0u128, 0u128),
            Some((IpAddr::V4(a), len)) => {
                let m = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0) as u128;
                (u32::from(a) as u128 & m, m)
            }
            Some((IpAddr::V6(a), len)) => {
                let m = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                (u128::from(a) & m, m)
            }
        };
        [w0, (net >> 64) as u64, net as u64, (mask >> 64) as u64, mask as u64]
    }
}

/// Does rule `w` allow `f` going `egress` (from the VM)?
#[inline]
fn matches(w: &[u64; 5], egress: bool, f: &Flow) -> bool {
    let w0 = w[0];
    if (w0 & 1 != 0) != egress || (w0 >> 1 & 1 != 0) != f.v6 {
        return false;
    }
    if w0 & 4 == 0 && (w0 >> 8) as u8 != f.proto {
        return false;
    }
    let (a, b) = match f.proto {
        ip_proto::TCP | ip_proto::UDP | 132 => (f.dport as u64, 0),
        ip_proto::ICMP | ip_proto::ICMPV6 => (f.icmp.0 as u64, f.icmp.1 as u64),
        _ => (0, 0),
    };
    if a < (w0 >> 16 & 0xffff) || a > (w0 >> 32 & 0xffff) || b < (w0 >> 48 & 0xff) || b > w0 >> 56 {
        return false;
    }
    let remote = u128::from_be_bytes(if egress { f.dst } else { f.src });
    let (net, mask) = ((w[1] as u128) << 64 | w[2] as u128, (w[3] as u128) << 64 | w[4] as u128);
    remote & mask == net
}

/// One port's rules: the union of its groups', in atomics under a sequence count.
#[derive(Debug)]
pub struct PortRules {
    /// The conntrack zone (the port's bridge).
    zone: u16,
    seq: AtomicU32,
    len: AtomicUsize,
    rules: Box<[[AtomicU64; 5]]>,
}

impl PortRules {
    fn new(zone: u16) -> PortRules {
        PortRules {
            zone,
            seq: AtomicU32::new(0),
            len: AtomicUsize::new(0),
            rules: (0..MAX_PORT_RULES).map(|_| Default::default()).collect(),
        }
    }

    /// Whether the rules allow `f` going `egress` (from the VM); reads without a lock.
    #[inline]
    pub fn allows(&self, egress: bool, f: &Flow) -> bool {
        loop {
            // Acquire: pairs with the writer's Release when it makes the count even again.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            // Relaxed: validated by the sequence count.
            let n = self.len.load(Ordering::Relaxed).min(MAX_PORT_RULES);
            let hit = self.rules[..n].iter().any(|r| {
                let w = [0, 1, 2, 3, 4].map(|i| r[i].load(Ordering::Relaxed));
                matches(&w, egress, f)
            });
            // Acquire fence: the rule reads above happen before the re-check of the count.
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return hit;
            }
        }
    }

    /// Replaces the rules (the one writer: the control side).
    fn store(&self, rules: &[SgRule]) {
        let s = self.seq.load(Ordering::Relaxed);
        // Relaxed store, then a Release fence: the odd count is visible before any rule write.
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, r) in self.rules.iter().zip(rules) {
            for (a, v) in slot.iter().zip(r.words()) {
                a.store(v, Ordering::Relaxed);
            }
        }
        self.len.store(rules.len().min(MAX_PORT_RULES), Ordering::Relaxed);
        // Release: publishes the rules to readers that see the even count.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

/// Every port's rules and the connection table, shared by the lcores and the control side.
#[derive(Debug)]
pub struct SecurityGroups {
    /// By port id; none: the port has no group (not filtered).
    ports: Box<[Option<PortRules>]>,
    generation: AtomicU32,
    ct: Option<Arc<Conntrack>>,
}

/// The groups and the ports' group names, as the control side keeps them.
#[derive(Debug, Clone, Default)]
pub struct SgConfig {
    /// The groups.
    pub groups: Vec<SecurityGroup>,
    /// Port id and its group names.
    pub ports: Vec<(u16, Vec<String>)>,
}

impl SgConfig {
    /// The union of the rules of the groups `names`.
    pub(crate) fn rules_of(&self, names: &[String]) -> Vec<SgRule> {
        names
            .iter()
            .filter_map(|n| self.groups.iter().find(|g| g.name == *n))
            .flat_map(|g| g.rules.iter().copied())
            .collect()
    }
}

impl SecurityGroups {
    /// The rules of `cfg` for `ports` ports (`zone_of(p)`: the bridge of port `p`) over `ct`
    /// (none when no port has a group).
    pub fn new(cfg: &SgConfig, ports: usize, zone_of: impl Fn(u16) -> u16, ct: Option<Arc<Conntrack>>) -> Self {
        let mut v: Vec<Option<PortRules>> = (0..ports).map(|_| None).collect();
        for (p, names) in &cfg.ports {
            let r = PortRules::new(zone_of(*p));
            r.store(&cfg.rules_of(names));
            v[*p as usize] = Some(r);
        }
        SecurityGroups { ports: v.into(), generation: AtomicU32::new(1), ct }
    }

    /// The connection table, when some port has a group.
    pub fn conntrack(&self) -> Option<&Arc<Conntrack>> {
        self.ct.as_ref()
    }

    /// True when port `p` has a group.
    #[inline(always)]
    pub fn filters(&self, p: u16) -> bool {
        matches!(self.ports.get(p as usize), Some(Some(_)))
    }

    /// Rewrites the rules of every port from `cfg` (the control side, after a group changed)
    /// and starts a new generation: tracked connections are re-checked at their next packet.
    pub fn set(&self, cfg: &SgConfig) {
        for (p, names) in &cfg.ports {
            if let Some(Some(r)) = self.ports.get(*p as usize) {
                r.store(&cfg.rules_of(names));
            }
        }
        // Release: a reader that sees the new generation sees the new rules.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Checks `frame` (untagged Ethernet, the first segment) going `egress` (from the VM) or to
    /// the VM at port `p`, at `now` seconds; the drop reason when it must not pass. `last`: the
    /// calling lcore's memory of the connection its previous check found (one per direction,
    /// forgotten at each burst; see [`Conntrack::track_with`]).
    #[inline]
    pub fn check(&self, p: u16, egress: bool, frame: &[u8], now: u64, last: &LastConn) -> Result<(), u8> {
        let (Some(Some(r)), Some(ct)) = (self.ports.get(p as usize), &self.ct) else {
            return Ok(());
        };
        let (mut f, mut quoted) = (Flow::default(), Flow::default());
        let related = match Flow::parse_into(frame, &mut f, &mut quoted) {
            Ok(q) => q.then_some(&quoted),
            Err(FlowError::NotIp) => {
                return if frame.len() >= 14 && get_u16(frame, 12) == ethertype::ARP {
                    Ok(())
                } else {
                    Err(reason::SG_NO_RULE)
                };
            }
            Err(FlowError::Fragment) => return Err(reason::SG_FRAGMENT),
            Err(FlowError::Malformed) => return Err(reason::SG_INVALID),
        };
        if base_allowed(&f, egress) {
            return Ok(());
        }
        // Acquire: pairs with `set`'s Release (the rules read after are at least this new).
        let generation = self.generation.load(Ordering::Acquire);
        let allow = |g: &Flow| {
            // `g` is this packet, or its connection's original direction (the other way).
            let same = g.src == f.src && g.sport == f.sport && g.dst == f.dst && g.dport == f.dport;
            r.allows(egress == same, g)
        };
        match ct.track_with(last, r.zone, p as u32, &f, related, now, generation, allow) {
            Verdict::New | Verdict::Untracked | Verdict::Established | Verdict::Related => Ok(()),
            Verdict::Denied => Err(reason::SG_NO_RULE),
            Verdict::Invalid => Err(reason::SG_INVALID),
            Verdict::Full => Err(reason::SG_TABLE_FULL),
        }
    }
}

/// Neutron's base rules: neighbour discovery and MLD both ways, DHCP / DHCPv6 client requests
/// out and server replies in.
#[inline]
fn base_allowed(f: &Flow, egress: bool) -> bool {
    match f.proto {
        ip_proto::ICMPV6 => matches!(f.icmp.0, 130..=136 | 143),
        ip_proto::UDP => {
            let (client, server) = if f.v6 { (546, 547) } else { (68, 67) };
            if egress {
                (f.sport, f.dport) == (client, server)
            } else {
                (f.sport, f.dport) == (server, client)
            }
        }
        _ => false,
    }
}

/// Checks the groups of `cfg` and the ports' lists of them; errors name the group, rule or
/// port and the fix.
pub fn check_config(cfg: &SwitchConfig) -> Result<SgConfig, Error> {
    let err = |m: String| Err(Error::Config(m));
    let mut out = SgConfig::default();
    for (i, g) in cfg.security_groups.iter().enumerate() {
        if g.name.is_empty() {
            return err(format!("security group {i} has no name: give each group a name"));
        }
        if cfg.security_groups[..i].iter().any(|o| o.name == g.name) {
            return err(format!("security group {} is defined twice: give each group its own name", g.name));
        }
        for (j, r) in g.rules.iter().enumerate() {
            r.check().map_err(|e| Error::Config(format!("security group {} rule {}: {e}", g.name, j + 1)))?;
        }
        out.groups.push(g.clone());
    }
    for pg in &cfg.port_groups {
        let Some(id) = cfg.ports.iter().position(|p| p.name == pg.port) else {
            return err(format!("security groups for {:?}: there is no such port: name one of the ports", pg.port));
        };
        let p = &cfg.ports[id];
        if p.role != PortRole::Access || p.bridge.is_none() {
            return err(format!(
                "port {}: security groups are for access (VM) ports in a bridge: remove them or give it a bridge",
                p.name
            ));
        }
        if pg.groups.is_empty() {
            return err(format!("port {}: security_groups = [] : name at least one group, or remove the key", p.name));
        }
        if out.ports.iter().any(|(q, _)| *q as usize == id) {
            return err(format!("port {}: security groups given twice: give them once", p.name));
        }
        for n in &pg.groups {
            if !out.groups.iter().any(|g| g.name == *n) {
                let known: Vec<&str> = out.groups.iter().map(|g| g.name.as_str()).collect();
                return err(format!(
                    "port {}: security group {n:?} is not defined; the groups are: {}",
                    p.name,
                    known.join(", ")
                ));
            }
        }
        let n = out.rules_of(&pg.groups).len();
        if n > MAX_PORT_RULES {
            return err(format!("port {}: its groups have {n} rules: at most {MAX_PORT_RULES}", p.name));
        }
        out.ports.push((id as u16, pg.groups.clone()));
    }
    Ok(out)
}

impl SgConfig {
    /// Replaces group `name`'s rules (checked); errors name the group and the fix.
    pub fn set_group(&mut self, name: &str, rules: Vec<SgRule>) -> Result<(), Error> {
        for (j, r) in rules.iter().enumerate() {
            r.check().map_err(|e| Error::Config(format!("security group {name} rule {}: {e}", j + 1)))?;
        }
        let Some(i) = self.groups.iter().position(|g| g.name == name) else {
            return Err(Error::Config(format!("security group {name:?} is not defined")));
        };
        let old = std::mem::replace(&mut self.groups[i].rules, rules);
        if let Some((_, names)) = self.ports.iter().find(|(_, n)| self.rules_of(n).len() > MAX_PORT_RULES) {
            let names = names.join(", ");
            self.groups[i].rules = old;
            return Err(Error::Config(format!("groups {names}: more than {MAX_PORT_RULES} rules for one port")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(v6: bool, proto: u8, dport: u16, src: [u8; 16], dst: [u8; 16]) -> Flow {
        Flow { v6, proto, dport, sport: 40000, src, dst, ..Flow::default() }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[12..].copy_from_slice(&a);
        x
    }

    #[test]
    fn rules_match_direction_protocol_ports_and_remote() {
        let r = SgRule {
            direction: Direction::Ingress,
            protocol: Some(ip_proto::TCP),
            ports: Some((20, 22)),
            remote: Some(("10.0.0.0".parse().unwrap(), 8)),
            ..Default::default()
        };
        r.check().unwrap();
        let w = r.words();
        let from = |a, port| flow(false, ip_proto::TCP, port, v4(a), v4([192, 168, 0, 1]));
        assert!(matches(&w, false, &from([10, 1, 2, 3], 22)));
        assert!(!matches(&w, true, &from([10, 1, 2, 3], 22)));
        assert!(!matches(&w, false, &from([11, 1, 2, 3], 22)));
        assert!(!matches(&w, false, &from([10, 1, 2, 3], 23)));
        assert!(!matches(&w, false, &flow(false, ip_proto::UDP, 22, v4([10, 0, 0, 1]), v4([1; 4]))));
        let any = SgRule { direction: Direction::Egress, v6: true, ..Default::default() }.words();
        assert!(matches(&any, true, &flow(true, ip_proto::UDP, 53, [1; 16], [2; 16])));
        assert!(!matches(&any, true, &flow(false, ip_proto::UDP, 53, [1; 16], [2; 16])));
    }

    #[test]
    fn icmp_type_and_code() {
        let r = SgRule { protocol: Some(ip_proto::ICMP), icmp_type: Some(8), ..Default::default() };
        let mut f = flow(false, ip_proto::ICMP, 0, v4([1; 4]), v4([2; 4]));
        f.icmp = (8, 0);
        assert!(matches(&r.words(), false, &f));
        f.icmp = (13, 0);
        assert!(!matches(&r.words(), false, &f));
    }

    #[test]
    fn bad_rules_say_why() {
        let bad = [
            SgRule { ports: Some((1, 2)), ..Default::default() },
            SgRule { protocol: Some(ip_proto::TCP), ports: Some((3, 2)), ..Default::default() },
            SgRule { protocol: Some(ip_proto::TCP), icmp_type: Some(3), ..Default::default() },
            SgRule { protocol: Some(ip_proto::ICMP), icmp_code: Some(3), ..Default::default() },
            SgRule { remote: Some(("::".parse().unwrap(), 0)), ..Default::default() },
            SgRule { protocol: Some(ip_proto::ICMPV6), ..Default::default() },
        ];
        for r in bad {
            assert!(r.check().is_err(), "{r:?}");
        }
    }
}
