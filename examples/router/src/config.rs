//! The configuration file (TOML):
//!
//! ```toml
//! icmp_rate = 1000                   # ICMP errors per second and lcore (optional)
//!
//! [[port]]
//! name = "a"
//! spec = "af_xdp:r0"                 # any port SPEC of the fastpath command
//! addresses = ["10.60.1.1/24", "fd00:60:1::1/64"]   # the router's own, IPv4 and IPv6
//! mac = "02:00:00:00:00:01"          # optional: the port's own MAC when it has none
//!
//! [[route]]
//! prefix = "10.70.0.0/16"
//! via = "10.60.1.2"                  # on a connected subnet (connected routes are implicit)
//!
//! [[neighbour]]                      # optional static ARP / ND entries
//! ip = "10.60.1.2"
//! mac = "02:00:00:00:00:02"
//! ```
//!
//! A bad file is refused with its name, the key and the accepted form.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use fastpath_pipeline::wire::EthernetAddress;
use serde::Deserialize;

/// An address with its prefix length: `10.60.1.1/24`, `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Cidr {
    /// The address with the bits past the prefix cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.len)).into()),
        }
    }

    /// True when `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = Cidr { addr: ip, len: self.len };
        self.addr.is_ipv4() == ip.is_ipv4() && other.network() == self.network()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - len as u32).unwrap_or(0)
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Its name (for messages).
    pub name: String,
    /// Its port SPEC.
    pub spec: String,
    /// The router's addresses on it.
    pub addresses: Vec<Cidr>,
    /// Its MAC, when given.
    pub mac: Option<EthernetAddress>,
}

/// A route through a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix (host bits clear).
    pub prefix: Cidr,
    /// The next hop.
    pub via: IpAddr,
    /// The port whose subnet holds `via`.
    pub port: usize,
}

/// A static neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: EthernetAddress,
    /// The port whose subnet holds it.
    pub port: usize,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The ports, in order (port ids).
    pub ports: Vec<PortConfig>,
    /// Routes through neighbours.
    pub routes: Vec<Route>,
    /// Static neighbours.
    pub neighbours: Vec<Neighbour>,
    /// ICMP errors per second and lcore.
    pub icmp_rate: u32,
}

/// A configuration that cannot be used: the file, the key, what is wrong, what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The key (`route[2].via`), or the line for syntax errors.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// The accepted form.
    pub accepted: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.problem)?;
        if !self.accepted.is_empty() {
            write!(f, "\n  accepted: {}", self.accepted)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    icmp_rate: Option<u32>,
    #[serde(default)]
    port: Vec<RawPort>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    neighbour: Vec<RawNeighbour>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    spec: String,
    #[serde(default)]
    addresses: Vec<String>,
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    via: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbour {
    ip: String,
    mac: String,
}

const CIDR_FORM: &str = "an address and prefix length, like \"10.60.1.1/24\" or \"fd00:60:1::1/64\"";
const FILE_FORM: &str = "[[port]] name, spec, addresses, mac; [[route]] prefix, via; [[neighbour]] ip, mac; icmp_rate";

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read it: {e}"),
            accepted: String::new(),
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and checks the text of file `file`.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let err = |key: String, problem: String, accepted: &str| ConfigError {
            file: file.to_string(),
            key,
            problem,
            accepted: accepted.to_string(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].lines().count().max(1));
            err(format!("line {line}"), e.message().to_string(), FILE_FORM)
        })?;
        if raw.port.is_empty() {
            return Err(err("port".into(), "no [[port]] is given".into(), FILE_FORM));
        }
        let mut ports: Vec<PortConfig> = Vec::new();
        for (i, p) in raw.port.iter().enumerate() {
            if p.name.is_empty() || ports.iter().any(|q| q.name == p.name) {
                let what =
                    if p.name.is_empty() { "is empty".to_string() } else { format!("'{}' is used twice", p.name) };
                return Err(err(format!("port[{i}].name"), what, "a name of its own"));
            }
            let mut addresses = Vec::new();
            for (j, a) in p.addresses.iter().enumerate() {
                let c = parse_cidr(a).map_err(|e| err(format!("port[{i}].addresses[{j}]"), e, CIDR_FORM))?;
                addresses.push(c);
            }
            let mac = match &p.mac {
                Some(m) => Some(m.parse::<EthernetAddress>().map_err(|e| {
                    err(format!("port[{i}].mac"), e, "a unicast MAC address like \"02:00:00:00:00:01\"")
                })?),
                None => None,
            };
            ports.push(PortConfig { name: p.name.clone(), spec: p.spec.clone(), addresses, mac });
        }
        let subnets = || {
            ports
                .iter()
                .flat_map(|p| {
                    p.addresses.iter().map(move |a| format!("{} {}", p.name, Cidr { addr: a.network(), len: a.len }))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let on_link = |ip: IpAddr| ports.iter().position(|p| p.addresses.iter().any(|a| a.contains(ip)));
        let ours = |ip: IpAddr| ports.iter().any(|p| p.addresses.iter().any(|a| a.addr == ip));
        let mut routes: Vec<Route> = Vec::new();
        for (i, r) in raw.route.iter().enumerate() {
            let prefix = parse_cidr(&r.prefix).map_err(|e| err(format!("route[{i}].prefix"), e, CIDR_FORM))?;
            if prefix.network() != prefix.addr {
                return Err(err(
                    format!("route[{i}].prefix"),
                    format!("{prefix} has bits set past the prefix length"),
                    &format!("the network address: \"{}/{}\"", prefix.network(), prefix.len),
                ));
            }
            if routes.iter().any(|q| q.prefix == prefix) {
                return Err(err(
                    format!("route[{i}].prefix"),
                    format!("{prefix} is routed twice"),
                    "one route per prefix",
                ));
            }
            let via: IpAddr = r.via.parse().map_err(|_| {
                err(
                    format!("route[{i}].via"),
                    format!("'{}' is not an IP address", r.via),
                    "an address like \"10.60.1.2\"",
                )
            })?;
            if via.is_ipv4() != prefix.addr.is_ipv4() {
                return Err(err(
                    format!("route[{i}].via"),
                    format!("{via} and {prefix} are of different families"),
                    "a next hop of the prefix's family",
                ));
            }
            let Some(port) = on_link(via).filter(|_| !ours(via)) else {
                return Err(err(
                    format!("route[{i}].via"),
                    format!("{via} is not a neighbour on a connected subnet"),
                    &format!("an address (not the router's own) inside one of: {}", subnets()),
                ));
            };
            routes.push(Route { prefix, via, port });
        }
        let mut neighbours = Vec::new();
        for (i, n) in raw.neighbour.iter().enumerate() {
            let ip: IpAddr = n.ip.parse().map_err(|_| {
                err(
                    format!("neighbour[{i}].ip"),
                    format!("'{}' is not an IP address", n.ip),
                    "an address like \"10.60.1.2\"",
                )
            })?;
            let Some(port) = on_link(ip) else {
                return Err(err(
                    format!("neighbour[{i}].ip"),
                    format!("{ip} is not on a connected subnet"),
                    &format!("an address inside one of: {}", subnets()),
                ));
            };
            let mac = n
                .mac
                .parse::<EthernetAddress>()
                .map_err(|e| err(format!("neighbour[{i}].mac"), e, "a MAC address like \"02:00:00:00:00:02\""))?;
            neighbours.push(Neighbour { ip, mac, port });
        }
        let icmp_rate = raw.icmp_rate.unwrap_or(1000);
        Ok(Config { ports, routes, neighbours, icmp_rate })
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let bad = || format!("'{s}' is not an address with a prefix length");
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("'{s}': /{len} is longer than the address (/{max} at most)"));
    }
    Ok(Cidr { addr, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
icmp_rate = 50
[[port]]
name = "a"
spec = "null"
addresses = ["10.60.1.1/24", "fd00:60:1::1/64"]
mac = "02:00:00:00:00:01"
[[port]]
name = "b"
spec = "null"
addresses = ["10.60.2.1/24"]
[[route]]
prefix = "10.70.0.0/16"
via = "10.60.2.2"
[[route]]
prefix = "::/0"
via = "fd00:60:1::2"
[[neighbour]]
ip = "10.60.2.2"
mac = "02:00:00:00:00:22"
"#;

    #[test]
    fn a_good_file() {
        let c = Config::parse("r.toml", GOOD).unwrap();
        assert_eq!(c.icmp_rate, 50);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].addresses[1].to_string(), "fd00:60:1::1/64");
        assert_eq!(c.routes[0].port, 1);
        assert_eq!(c.routes[1].port, 0);
        assert_eq!(c.neighbours[0].port, 1);
        assert_eq!(c.ports[1].mac, None);
    }

    fn bad(text: &str) -> String {
        Config::parse("r.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_key_and_the_form() {
        let e = bad(&GOOD.replace("\"10.60.1.1/24\"", "\"10.60.1.1\""));
        assert!(e.starts_with("r.toml: port[0].addresses[0]: '10.60.1.1' is not"), "{e}");
        assert!(e.contains("accepted: an address and prefix length"), "{e}");
        let e = bad(&GOOD.replace("via = \"10.60.2.2\"", "via = \"10.61.2.2\""));
        assert!(e.contains("route[0].via: 10.61.2.2 is not a neighbour on a connected subnet"), "{e}");
        assert!(e.contains("a 10.60.1.0/24, a fd00:60:1::/64, b 10.60.2.0/24"), "{e}");
        let e = bad(&GOOD.replace("10.70.0.0/16", "10.70.0.1/16"));
        assert!(e.contains("route[0].prefix") && e.contains("\"10.70.0.0/16\""), "{e}");
        let e = bad(&GOOD.replace("addresses = [\"10.60.2.1/24\"]", "adresses = [\"10.60.2.1/24\"]"));
        assert!(e.starts_with("r.toml: line ") && e.contains("unknown field `adresses`"), "{e}");
        let e = bad(&GOOD.replace("via = \"fd00:60:1::2\"", "via = \"10.60.1.2\""));
        assert!(e.contains("different families"), "{e}");
        let e = bad(&GOOD.replace("via = \"10.60.2.2\"", "via = \"10.60.2.1\""));
        assert!(e.contains("not a neighbour"), "{e}");
        let e = bad("icmp_rate = 5\n");
        assert!(e.contains("no [[port]]"), "{e}");
        let e = bad(&GOOD.replace("name = \"b\"", "name = \"a\""));
        assert!(e.contains("port[1].name: 'a' is used twice"), "{e}");
        let e = bad(&GOOD.replace("/64\"]", "/129\"]"));
        assert!(e.contains("/129 is longer"), "{e}");
        let e = bad(&GOOD.replace("mac = \"02:00:00:00:00:22\"", "mac = \"zz\""));
        assert!(e.contains("neighbour[0].mac"), "{e}");
    }
}
