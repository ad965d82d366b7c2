//! Port security of access (VM) ports, like Neutron's `port_security_enabled` with allowed
//! address pairs: a frame from a guarded port must come from one of the port's MACs, and its
//! IPv4 / IPv6 source, the address an ARP packet claims and the target of a neighbour
//! advertisement must belong to that MAC. Router advertisements and DHCP / DHCPv6 server
//! replies are dropped unless the port is `trusted` (a router or DHCP server VM).
//!
//! Exceptions, as Neutron makes them: IPv4 source 0.0.0.0 for a DHCP client (UDP 68 -> 67), an
//! ARP probe (sender address 0.0.0.0), IPv6 source `::` (duplicate address detection, MLD) and
//! link-local sources (`fe80::/10`; Neutron allows only the EUI-64 address of the port's MAC,
//! we allow any, so that guests using stable-privacy link-local addresses work).
//!
//! A frame whose headers are cut short in the first segment is dropped for the check it could
//! not pass. IPv6 extension headers are not walked: RA / NA / DHCPv6 are recognised when ICMPv6
//! or UDP is the first next header (as the guests send them); the source address is checked for
//! every IPv6 packet. Other EtherTypes are checked by source MAC only.
//!
//! [`PortGuard::check`] reads the frame's bytes and a small table built when the switch is
//! built: no allocation, no lock. `docs/security.md` has the rules and the counters.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::switch::stats::reason;
use crate::wire::{ethertype, get_u16, ip_proto};

/// One entry of a port's `allowed` list: a MAC, with an optional IP prefix that MAC may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedAddress {
    /// The source MAC.
    pub mac: [u8; 6],
    /// An IPv4 or IPv6 prefix (address and length) the MAC may send from; none: the MAC may
    /// send from any IP address.
    pub ip: Option<(IpAddr, u8)>,
}

impl FromStr for AllowedAddress {
    type Err = String;

    /// `"MAC"` or `"MAC IP"` or `"MAC IP/PREFIX"` (a bare IP is a host: /32 or /128).
    fn from_str(s: &str) -> Result<AllowedAddress, String> {
        let mut it = s.split_whitespace();
        let form = "give \"MAC\", \"MAC IP\" or \"MAC IP/PREFIX\", e.g. \"52:54:00:00:00:01 10.0.0.5/32\"";
        let Some(m) = it.next() else {
            return Err(format!("allowed address {s:?} is empty: {form}"));
        };
        let mac = fastpath_pmd::sys::parse_mac(m).map_err(|e| format!("allowed address {s:?}: {e}: {form}"))?;
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(format!("allowed address {s:?}: {m} is not a unicast MAC: give the VM's own MAC"));
        }
        let ip = match it.next() {
            None => None,
            Some(p) => Some(parse_prefix(p).map_err(|e| format!("allowed address {s:?}: {e}: {form}"))?),
        };
        if it.next().is_some() {
            return Err(format!("allowed address {s:?} has more than a MAC and an IP prefix: {form}"));
        }
        Ok(AllowedAddress { mac, ip })
    }
}

impl fmt::Display for AllowedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.mac;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])?;
        match self.ip {
            Some((ip, len)) => write!(f, " {ip}/{len}"),
            None => Ok(()),
        }
    }
}

/// `"IP"` or `"IP/LEN"` (a bare IP is a host: /32 or /128); the problem when it is neither.
pub fn parse_prefix(p: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = match p.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (p, None),
    };
    let ip: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length {l:?} is not 0..={max}")),
        },
    };
    Ok((ip, len))
}

/// Port security of one access port (the switch config's part).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSecurity {
    /// The port's name.
    pub port: String,
    /// What it may send from (must not be empty).
    pub allowed: Vec<AllowedAddress>,
    /// It may send router advertisements and DHCP / DHCPv6 server replies.
    pub trusted: bool,
}

/// Index of a MAC in a guard's table.
type MacIx = u8;

/// The most MACs (distinct) and prefixes a port may have.
pub const MAX_ALLOWED: usize = 64;

/// The checked table the data path uses for one port.
#[derive(Debug, Clone)]
pub struct PortGuard {
    macs: Box<[[u8; 6]]>,
    /// Per MAC: any IP allowed (an entry without IP).
    any_ip: Box<[bool]>,
    /// (MAC index, network, mask), host byte order.
    v4: Box<[(MacIx, u32, u32)]>,
    v6: Box<[(MacIx, u128, u128)]>,
    trusted: bool,
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - len as u32).unwrap_or(0)
}

impl PortGuard {
    /// Builds the table of `s`; errors name the port and the fix.
    pub fn new(s: &PortSecurity) -> Result<PortGuard, String> {
        if s.allowed.is_empty() {
            return Err(format!(
                "port {}: allowed = [] would drop everything it sends: list its MAC (and IP addresses)",
                s.port
            ));
        }
        if s.allowed.len() > MAX_ALLOWED {
            return Err(format!("port {}: {} allowed addresses: at most {MAX_ALLOWED}", s.port, s.allowed.len()));
        }
        let mut macs: Vec<[u8; 6]> = Vec::new();
        let mut any_ip = Vec::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in &s.allowed {
            let ix = match macs.iter().position(|m| *m == a.mac) {
                Some(i) => i,
                None => {
                    macs.push(a.mac);
                    any_ip.push(false);
                    macs.len() - 1
                }
            };
            match a.ip {
                None => any_ip[ix] = true,
                Some((IpAddr::V4(ip), len)) => {
                    let m = mask4(len);
                    v4.push((ix as MacIx, u32::from(ip) & m, m));
                }
                Some((IpAddr::V6(ip), len)) => {
                    let m = mask6(len);
                    v6.push((ix as MacIx, u128::from(ip) & m, m));
                }
            }
        }
        Ok(PortGuard { macs: macs.into(), any_ip: any_ip.into(), v4: v4.into(), v6: v6.into(), trusted: s.trusted })
    }

    fn v4_ok(&self, mac: usize, ip: u32) -> bool {
        self.any_ip[mac] || self.v4.iter().any(|&(m, net, mask)| m as usize == mac && ip & mask == net)
    }

    fn v6_ok(&self, mac: usize, ip: u128) -> bool {
        // Link-local (fe80::/10) and the unspecified address are always allowed.
        ip >> 118 == 0x3fa
            || ip == 0
            || self.any_ip[mac]
            || self.v6.iter().any(|&(m, net, mask)| m as usize == mac && ip & mask == net)
    }

    /// Checks one Ethernet frame (the first segment's bytes, untagged) from the port; the drop
    /// reason ([`reason::SPOOFED_MAC`] ...) when it must not pass.
    #[inline]
    pub fn check(&self, f: &[u8]) -> Result<(), u8> {
        let Some(mac) = f.get(6..12).and_then(|s| self.macs.iter().position(|m| m[..] == *s)) else {
            return Err(reason::SPOOFED_MAC);
        };
        let et = f.get(12..14).map_or(0, |e| get_u16(e, 0));
        match et {
            ethertype::IPV4 => self.ipv4(mac, f),
            ethertype::IPV6 => self.ipv6(mac, f),
            ethertype::ARP => self.arp(mac, f),
            _ => Ok(()),
        }
    }

    fn ipv4(&self, mac: usize, f: &[u8]) -> Result<(), u8> {
        let Some(h) = f.get(14..34) else {
            return Err(reason::SPOOFED_IP);
        };
        let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let ihl = (h[0] & 0x0f) as usize * 4;
        // UDP ports of the first fragment (offset 0), when the header is there.
        let first = get_u16(h, 6) & 0x1fff == 0;
        let udp = (h[9] == ip_proto::UDP && first && ihl >= 20)
            .then(|| f.get(14 + ihl..14 + ihl + 4))
            .flatten()
            .map(|u| (get_u16(u, 0), get_u16(u, 2)));
        if src == 0 {
            // A DHCP client before it has an address.
            return if udp == Some((68, 67)) { Ok(()) } else { Err(reason::SPOOFED_IP) };
        }
        if !self.v4_ok(mac, src) {
            return Err(reason::SPOOFED_IP);
        }
        if !self.trusted && matches!(udp, Some((67, _))) {
            return Err(reason::DHCP_GUARD);
        }
        Ok(())
    }

    fn ipv6(&self, mac: usize, f: &[u8]) -> Result<(), u8> {
        let Some(h) = f.get(14..54) else {
            return Err(reason::SPOOFED_IP);
        };
        let src = u128::from_be_bytes(h[8..24].try_into().unwrap_or([0xff; 16]));
        if !self.v6_ok(mac, src) {
            return Err(reason::SPOOFED_IP);
        }
        match h[6] {
            ip_proto::ICMPV6 => {
                let icmp = f.get(54..58).ok_or(reason::SPOOFED_ND)?;
                match icmp[0] {
                    // Router advertisement.
                    134 if !self.trusted => Err(reason::RA_GUARD),
                    // Neighbour advertisement: the target must be ours.
                    136 => {
                        let t = f.get(62..78).ok_or(reason::SPOOFED_ND)?;
                        let target = u128::from_be_bytes(t.try_into().unwrap_or([0xff; 16]));
                        if target != 0 && self.v6_ok(mac, target) {
                            Ok(())
                        } else {
                            Err(reason::SPOOFED_ND)
                        }
                    }
                    _ => Ok(()),
                }
            }
            ip_proto::UDP if !self.trusted => match f.get(54..56) {
                Some(u) if get_u16(u, 0) == 547 => Err(reason::DHCP_GUARD),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn arp(&self, mac: usize, f: &[u8]) -> Result<(), u8> {
        // Ethernet/IPv4 ARP: sender MAC at 22, sender IP at 28.
        let Some(a) = f.get(14..42) else {
            return Err(reason::SPOOFED_ARP);
        };
        if get_u16(a, 0) != 1 || get_u16(a, 2) != ethertype::IPV4 || a[4] != 6 || a[5] != 4 {
            return Err(reason::SPOOFED_ARP);
        }
        if a[8..14] != self.macs[mac] {
            return Err(reason::SPOOFED_ARP);
        }
        let spa = u32::from_be_bytes([a[14], a[15], a[16], a[17]]);
        // An ARP probe (RFC 5227) claims no address.
        if spa == 0 || self.v4_ok(mac, spa) {
            Ok(())
        } else {
            Err(reason::SPOOFED_ARP)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let a: AllowedAddress = "52:54:00:00:00:01 10.0.0.5".parse().unwrap();
        assert_eq!(a.ip, Some(("10.0.0.5".parse().unwrap(), 32)));
        let a: AllowedAddress = "52:54:00:00:00:01 2001:db8::/64".parse().unwrap();
        assert_eq!(a.ip, Some(("2001:db8::".parse().unwrap(), 64)));
        assert_eq!(a.to_string(), "52:54:00:00:00:01 2001:db8::/64");
        assert_eq!("52:54:00:00:00:01".parse::<AllowedAddress>().unwrap().ip, None);
        for bad in ["", "01:00:5e:00:00:01", "52:54:00:00:00:01 10.0.0.5/33", "52:54:00:00:00:01 x", "a b c"] {
            assert!(bad.parse::<AllowedAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask4(0), 0);
        assert_eq!(mask4(24), 0xffff_ff00);
        assert_eq!(mask4(32), u32::MAX);
        assert_eq!(mask6(0), 0);
        assert_eq!(mask6(128), u128::MAX);
    }

    #[test]
    fn empty_list_is_an_error() {
        let e = PortGuard::new(&PortSecurity { port: "vm1".into(), ..Default::default() }).unwrap_err();
        assert!(e.contains("vm1") && e.contains("allowed"), "{e}");
    }
}
