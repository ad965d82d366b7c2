//! The vswitch's configuration file (TOML), read strictly: an unknown key, a wrong type or value,
//! a name used twice or a reference to nothing is an error that names the file, the line, the
//! key and the accepted forms. Nothing starts until the whole file is right.
//!
//! ```toml
//! [vswitch]                  # optional; every key has a default
//! cores = "0,1"              # CPUs of the lcores (--cores overrides)
//! idle = "busy"              # busy | adaptive
//! idle_max_sleep_us = 500    # adaptive: the longest sleep of an idle lcore
//! rebalance_interval = 0     # seconds between automatic rx queue rebalances (0: off)
//! max_ports = 64             # ports that may exist at once, counting those plugged live
//! mbufs = 32768
//! burst = 32
//! fdb_size = 65536           # MAC entries in all (the table's capacity)
//! fdb_aging = 300            # seconds
//! mac_limit_bridge = 16384   # learned MACs per bridge (and VLAN); more are refused, counted
//! mac_limit_port = 4096      # learned MACs per port
//! conntrack_size = 65536     # connections tracked for security groups, in all bridges
//! conntrack_zone_limit = 0   # connections per bridge (0: only conntrack_size)
//!
//! [[bridge]]                 # one L2 domain (a tenant network)
//! name = "tenant-a"
//! vni = 100                  # overlay id (optional: a bridge may be host-local)
//! tunnel = "vxlan"           # vxlan | geneve | nvgre
//! local = "10.50.0.1"        # our VTEP address (IPv4 or IPv6), owned on the uplink
//! remotes = ["10.50.0.2"]    # VTEPs for flooding (head-end replication)
//! vlan = 30                  # optional: the same segment as VLAN 30 on the uplink
//! udp_port = 4789            # optional: the tunnel's UDP port (4789 VXLAN, 6081 GENEVE)
//!
//! [[port]]
//! name = "uplink"
//! spec = "af_xdp:eth1"       # any port SPEC that l2fwd takes
//! role = "uplink"            # uplink | access (default)
//! mac = "02:00:0a:32:00:01"  # optional: the port's MAC for the switch (needed by an uplink
//!                            # whose port has none: null, pcap, ring)
//!
//! [[port]]
//! name = "vm1"
//! spec = "vhost-user:/run/fastpath/vm1.sock,client"
//! bridge = "tenant-a"
//! vlan = 10                  # optional: an access port in VLAN 10 of a VLAN-only bridge
//! allowed = ["52:54:00:00:00:01 10.0.0.5", "52:54:00:00:00:01 2001:db8::5/128"]
//!                            # optional: port security (docs/security.md): the MACs and IP
//!                            # prefixes it may send from; spoofed frames are dropped, counted
//! trusted = false            # optional, with allowed: may send RAs and DHCP server replies
//! security_groups = ["web"]  # optional: stateful filtering, default deny (docs/security.md)
//!
//! [[security_group]]
//! name = "web"
//! [[security_group.rule]]
//! direction = "ingress"      # ingress (to the VM) | egress (from the VM)
//! ethertype = "IPv4"         # IPv4 (default) | IPv6
//! protocol = "tcp"           # tcp | udp | icmp | icmpv6 | any (default) | a number 0..=255
//! port_min = 80              # tcp / udp / sctp destination ports (port_max defaults to port_min)
//! port_max = 443
//! remote = "0.0.0.0/0"       # the remote end's prefix (default: any)
//! [[security_group.rule]]
//! direction = "egress"       # everything out (replies to it come back)
//! [[security_group.rule]]
//! direction = "ingress"
//! protocol = "icmp"
//! icmp_type = 8              # icmp / icmpv6 type, and icmp_code (optional)
//!
//! [[fdb]]                    # optional static MAC entries (never aged, never moved)
//! bridge = "tenant-a"
//! mac = "02:00:00:00:00:01"
//! port = "vm1"               # or: vtep = "10.50.0.2"
//!
//! [[neighbour]]              # optional: a remote VTEP's MAC, so that no ARP / ND is needed
//! ip = "10.50.0.2"
//! mac = "02:00:0a:32:00:02"
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fastpath_pipeline::switch::port_security::parse_prefix;
use fastpath_pipeline::switch::{AllowedAddress, Direction, PortGroups, PortSecurity, SecurityGroup, SgRule};
use serde::Deserialize;
use toml::Spanned;

/// The accepted forms, shown with every error.
pub const FORMS: &str =
    "  [vswitch]  cores = \"LIST\", idle = \"busy\"|\"adaptive\", idle_max_sleep_us = 1..=100000, mbufs = N,
             burst = 1..=256, fdb_size = N, fdb_aging = SECS, mac_limit_bridge = N, mac_limit_port = N,
             rebalance_interval = SECS, conntrack_size = N, conntrack_zone_limit = N, max_ports = N
  [[bridge]] name = \"NAME\", vni = 0..=16777215, tunnel = \"vxlan\"|\"geneve\"|\"nvgre\", local = \"IP\",
             remotes = [\"IP\", ...], vlan = 1..=4094, udp_port = 1..=65535
  [[port]]   name = \"NAME\", spec = \"SPEC\", role = \"access\"|\"uplink\", bridge = \"NAME\", vlan = 1..=4094,
             mac = \"aa:bb:cc:dd:ee:ff\"
             allowed = [\"MAC\", \"MAC IP\", \"MAC IP/PREFIX\", ...] (port security), trusted = true|false,
             security_groups = [\"NAME\", ...]
  [[security_group]] name = \"NAME\"
  [[security_group.rule]] direction = \"ingress\"|\"egress\", ethertype = \"IPv4\"|\"IPv6\",
             protocol = \"tcp\"|\"udp\"|\"icmp\"|\"icmpv6\"|\"any\"|0..=255, port_min = N, port_max = N,
             icmp_type = 0..=255, icmp_code = 0..=255, remote = \"IP/PREFIX\"
  [[fdb]]    bridge = \"NAME\", mac = \"aa:bb:cc:dd:ee:ff\", port = \"NAME\" | vtep = \"IP\", vlan = 1..=4094
  [[neighbour]] ip = \"IP\", mac = \"aa:bb:cc:dd:ee:ff\"";

/// The most ports a switch may have at once (the FDB's port ids are 14 bits).
pub const MAX_PORTS: usize = 4096;

/// Global settings (`[vswitch]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// CPUs of the lcores.
    pub cores: Option<String>,
    /// `busy` or `adaptive`.
    pub idle: Idle,
    /// With `adaptive`: the longest sleep of an idle lcore, microseconds.
    pub idle_max_sleep_us: u32,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// Packets per rx burst.
    pub burst: usize,
    /// Capacity of the MAC table, in entries.
    pub fdb_size: usize,
    /// Aging of learned MACs, seconds.
    pub fdb_aging: u64,
    /// Learned MACs per bridge segment.
    pub mac_limit_bridge: usize,
    /// Learned MACs per port.
    pub mac_limit_port: usize,
    /// Connections tracked for security groups, in all bridges.
    pub conntrack_size: usize,
    /// Connections per bridge (0: only `conntrack_size`).
    pub conntrack_zone_limit: usize,
    /// Seconds between automatic rx queue rebalances (0: never).
    pub rebalance_interval: u64,
    /// Ports that may exist at once, counting those plugged while the switch runs.
    pub max_ports: usize,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            cores: None,
            idle: Idle::Busy,
            idle_max_sleep_us: 500,
            mbufs: 32768,
            burst: 32,
            fdb_size: 65536,
            fdb_aging: 300,
            mac_limit_bridge: 16384,
            mac_limit_port: 4096,
            conntrack_size: 65536,
            conntrack_zone_limit: 0,
            rebalance_interval: 0,
            max_ports: 64,
        }
    }
}

/// What lcores do when idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Idle {
    /// Poll without pause.
    Busy,
    /// Back off when idle.
    Adaptive,
}

/// A tunnel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    /// RFC 7348.
    #[default]
    Vxlan,
    /// RFC 8926.
    Geneve,
    /// RFC 7637.
    Nvgre,
}

/// A port's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A VM's, container's or host's port in one bridge.
    #[default]
    Access,
    /// The physical port: the underlay (tunnels) and VLAN trunks.
    Uplink,
}

/// `[[bridge]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// Its name.
    pub name: Spanned<String>,
    /// The overlay network id.
    pub vni: Option<u32>,
    /// The tunnel protocol (with `vni`).
    #[serde(default)]
    pub tunnel: Tunnel,
    /// Our VTEP address.
    pub local: Option<IpAddr>,
    /// Remote VTEPs to flood to.
    #[serde(default)]
    pub remotes: Vec<IpAddr>,
    /// The segment's VLAN on the uplink.
    pub vlan: Option<u16>,
    /// The tunnel's UDP port.
    pub udp_port: Option<u16>,
}

/// `[[port]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Its name.
    pub name: Spanned<String>,
    /// The port spec (as `l2fwd --port` takes).
    pub spec: String,
    /// Its role.
    #[serde(default)]
    pub role: Role,
    /// The bridge of an access port.
    pub bridge: Option<Spanned<String>>,
    /// The access VLAN.
    pub vlan: Option<u16>,
    /// The port's MAC as the switch uses it (the VTEP's source MAC on an uplink), instead of
    /// the one the port has (null, pcap and ring ports have none).
    #[serde(default, deserialize_with = "opt_mac")]
    pub mac: Option<[u8; 6]>,
    /// Port security: the MACs (and IP prefixes) it may send from (none: not checked).
    #[serde(default, deserialize_with = "allowed")]
    pub allowed: Option<Spanned<Vec<AllowedAddress>>>,
    /// With `allowed`: it may send router advertisements and DHCP server replies.
    #[serde(default)]
    pub trusted: bool,
    /// Its security groups (none: not filtered).
    pub security_groups: Option<Spanned<Vec<String>>>,
}

/// `[[security_group]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Its name.
    pub name: Spanned<String>,
    /// `[[security_group.rule]]`s.
    #[serde(default)]
    pub rule: Vec<Spanned<Rule>>,
}

/// A rule's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    /// To the VM.
    Ingress,
    /// From the VM.
    Egress,
}

/// A rule's ethertype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Ethertype {
    /// IPv4.
    #[default]
    #[serde(rename = "IPv4", alias = "ipv4")]
    V4,
    /// IPv6.
    #[serde(rename = "IPv6", alias = "ipv6")]
    V6,
}

/// `[[security_group.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Ingress or egress.
    pub direction: RuleDirection,
    /// IPv4 or IPv6.
    #[serde(default)]
    pub ethertype: Ethertype,
    /// A name or a number.
    pub protocol: Option<toml::Value>,
    /// Lowest destination port.
    pub port_min: Option<u16>,
    /// Highest destination port.
    pub port_max: Option<u16>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// ICMP code.
    pub icmp_code: Option<u8>,
    /// The remote prefix.
    pub remote: Option<String>,
}

impl Rule {
    /// The switch's rule, or what is wrong.
    pub fn to_rule(&self) -> Result<SgRule, String> {
        let protocol = match &self.protocol {
            None => None,
            Some(toml::Value::Integer(n)) if (0..=255).contains(n) => Some(*n as u8),
            Some(toml::Value::String(s)) => match s.as_str() {
                "any" => None,
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" | "ipv6-icmp" => Some(58),
                n => match n.parse::<u8>() {
                    Ok(n) => Some(n),
                    Err(_) => return Err(format!("protocol = {s:?} is not tcp, udp, icmp, icmpv6, any or 0..=255")),
                },
            },
            Some(v) => return Err(format!("protocol = {v} is not tcp, udp, icmp, icmpv6, any or 0..=255")),
        };
        let ports = match (self.port_min, self.port_max) {
            (None, None) => None,
            (Some(a), b) => Some((a, b.unwrap_or(a))),
            (None, Some(_)) => return Err("port_max needs port_min".into()),
        };
        let remote = self.remote.as_deref().map(parse_prefix).transpose().map_err(|e| format!("remote: {e}"))?;
        let r = SgRule {
            direction: match self.direction {
                RuleDirection::Ingress => Direction::Ingress,
                RuleDirection::Egress => Direction::Egress,
            },
            v6: self.ethertype == Ethertype::V6,
            protocol,
            ports,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            remote,
        };
        r.check()?;
        Ok(r)
    }
}

/// `[[fdb]]`: a static MAC entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMac {
    /// The bridge.
    pub bridge: Spanned<String>,
    /// The access VLAN of a VLAN-only bridge.
    pub vlan: Option<u16>,
    /// The address.
    #[serde(deserialize_with = "mac")]
    pub mac: [u8; 6],
    /// A local port...
    pub port: Option<Spanned<String>>,
    /// ... or a remote VTEP.
    pub vtep: Option<IpAddr>,
}

/// `[[neighbour]]`: a remote VTEP's MAC address (permanent, like `ip neigh ... permanent`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    /// The VTEP's address.
    pub ip: Spanned<IpAddr>,
    /// Its MAC address.
    #[serde(deserialize_with = "mac")]
    pub mac: [u8; 6],
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[vswitch]`.
    #[serde(default)]
    pub vswitch: Global,
    /// `[[bridge]]`s.
    #[serde(default)]
    pub bridge: Vec<Bridge>,
    /// `[[port]]`s, in port-id order.
    #[serde(default)]
    pub port: Vec<Port>,
    /// `[[fdb]]`s.
    #[serde(default)]
    pub fdb: Vec<StaticMac>,
    /// `[[neighbour]]`s.
    #[serde(default)]
    pub neighbour: Vec<Neighbour>,
    /// `[[security_group]]`s.
    #[serde(default)]
    pub security_group: Vec<Group>,
    /// The file it came from and its text (for errors).
    #[serde(skip)]
    pub source: Source,
}

/// Where a config came from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Source {
    /// `FILE: line N:` for a byte offset.
    pub fn at(&self, offset: usize) -> String {
        let line = self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("{}: line {line}", self.path.display())
    }
}

fn mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
    let s = String::deserialize(d)?;
    fastpath_pmd::sys::parse_mac(&s).map_err(serde::de::Error::custom)
}

fn allowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Spanned<Vec<AllowedAddress>>>, D::Error> {
    let v = Spanned::<Vec<String>>::deserialize(d)?;
    let span = v.span();
    let list = v.into_inner().iter().map(|a| a.parse()).collect::<Result<Vec<_>, String>>();
    list.map(|l| Some(Spanned::new(span, l))).map_err(serde::de::Error::custom)
}

fn opt_mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<[u8; 6]>, D::Error> {
    mac(d).map(Some)
}

/// A config error: the message (file, line, key, problem); the accepted forms are appended when
/// shown.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n  accepted:\n{FORMS}", self.0)
    }
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read the config: {e}", path.display())))?;
        Config::parse(path, &text)
    }

    /// Parses and checks `text` (from `path`, for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| Source { path: path.into(), text: text.into() }.at(s.start));
            let msg = e.message().trim().to_string();
            ConfigError(format!("{}: {msg}", at.unwrap_or_else(|| path.display().to_string())))
        })?;
        c.source = Source { path: path.into(), text: text.into() };
        c.check()?;
        Ok(c)
    }

    fn err<T>(&self, span: std::ops::Range<usize>, what: &str) -> Result<T, ConfigError> {
        Err(ConfigError(format!("{}: {what}", self.source.at(span.start))))
    }

    /// `allowed` and `trusted` of a port.
    fn check_port_security(&self, p: &Port) -> Result<(), ConfigError> {
        let n = p.name.get_ref();
        match &p.allowed {
            None if p.trusted => {
                self.err(p.name.span(), &format!("[[port]] '{n}': trusted needs allowed = [...] (port security)"))
            }
            Some(a) if p.role == Role::Uplink => self.err(
                a.span(),
                &format!("[[port]] '{n}': allowed: port security is for access (VM) ports: remove it from the uplink"),
            ),
            Some(a) if a.get_ref().is_empty() => self.err(
                a.span(),
                &format!("[[port]] '{n}': allowed = [] would drop everything: list the VM's MAC (and IP addresses)"),
            ),
            _ => Ok(()),
        }
    }

    /// The port security of the ports that have `allowed`, for the switch.
    pub fn port_security(&self) -> Vec<PortSecurity> {
        self.port
            .iter()
            .filter_map(|p| {
                Some(PortSecurity {
                    port: p.name.get_ref().clone(),
                    allowed: p.allowed.as_ref()?.get_ref().clone(),
                    trusted: p.trusted,
                })
            })
            .collect()
    }

    /// The security groups, for the switch (checked: every rule converts).
    pub fn security_groups(&self) -> Vec<SecurityGroup> {
        self.security_group
            .iter()
            .map(|g| SecurityGroup {
                name: g.name.get_ref().clone(),
                rules: g.rule.iter().filter_map(|r| r.get_ref().to_rule().ok()).collect(),
            })
            .collect()
    }

    /// The ports' security groups, for the switch.
    pub fn port_groups(&self) -> Vec<PortGroups> {
        self.port
            .iter()
            .filter_map(|p| {
                Some(PortGroups {
                    port: p.name.get_ref().clone(),
                    groups: p.security_groups.as_ref()?.get_ref().clone(),
                })
            })
            .collect()
    }

    /// The groups, their rules and the ports' references to them.
    fn check_security_groups(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for g in &self.security_group {
            let n = g.name.get_ref();
            if n.is_empty() || !names.insert(n.as_str()) {
                return self.err(g.name.span(), &format!("[[security_group]] name = '{n}': empty or used twice"));
            }
            for r in &g.rule {
                if let Err(e) = r.get_ref().to_rule() {
                    return self.err(r.span(), &format!("[[security_group.rule]] of '{n}': {e}"));
                }
            }
        }
        for p in &self.port {
            let Some(gs) = &p.security_groups else { continue };
            let n = p.name.get_ref();
            if p.role == Role::Uplink || p.bridge.is_none() {
                return self
                    .err(gs.span(), &format!("[[port]] '{n}': security_groups are for access (VM) ports in a bridge"));
            }
            if gs.get_ref().is_empty() {
                return self
                    .err(gs.span(), &format!("[[port]] '{n}': security_groups = []: name a group or remove it"));
            }
            if let Some(x) = gs.get_ref().iter().find(|x| !names.contains(x.as_str())) {
                return self.err(gs.span(), &format!("[[port]] '{n}': security group '{x}' is not defined"));
            }
        }
        Ok(())
    }

    /// The cross-references and ranges serde cannot check.
    fn check(&self) -> Result<(), ConfigError> {
        let g = &self.vswitch;
        let file = self.source.path.display();
        if !(1..=256).contains(&g.burst) {
            return Err(ConfigError(format!("{file}: [vswitch] burst = {}: use 1..=256", g.burst)));
        }
        if !(1..=100_000).contains(&g.idle_max_sleep_us) {
            let n = g.idle_max_sleep_us;
            return Err(ConfigError(format!("{file}: [vswitch] idle_max_sleep_us = {n}: use 1..=100000")));
        }
        if g.max_ports < self.port.len() || g.max_ports > MAX_PORTS {
            return Err(ConfigError(format!(
                "{file}: [vswitch] max_ports = {}: give {}..={MAX_PORTS} (at least the {} ports configured)",
                g.max_ports,
                self.port.len().max(1),
                self.port.len()
            )));
        }
        if g.fdb_size == 0 || g.fdb_aging == 0 {
            return Err(ConfigError(format!("{file}: [vswitch] fdb_size and fdb_aging must be positive")));
        }
        let mut names = HashSet::new();
        let mut vnis = HashSet::new();
        for b in &self.bridge {
            let n = b.name.get_ref();
            if n.is_empty() || !names.insert(n.clone()) {
                return self.err(b.name.span(), &format!("[[bridge]] name = '{n}': empty or used twice"));
            }
            if let Some(v) = b.vni {
                if v > 0xff_ffff {
                    return self.err(b.name.span(), &format!("[[bridge]] '{n}': vni = {v}: use 0..=16777215"));
                }
                if !vnis.insert((b.tunnel, v, b.local)) {
                    return self.err(b.name.span(), &format!("[[bridge]] '{n}': vni {v} is another bridge's too"));
                }
                if b.local.is_none() {
                    return self.err(b.name.span(), &format!("[[bridge]] '{n}': vni needs local = \"IP\" (our VTEP)"));
                }
                if b.tunnel == Tunnel::Nvgre && b.udp_port.is_some() {
                    return self.err(b.name.span(), &format!("[[bridge]] '{n}': udp_port: NVGRE is not over UDP"));
                }
            } else if b.local.is_some() || !b.remotes.is_empty() || b.udp_port.is_some() {
                return self.err(
                    b.name.span(),
                    &format!("[[bridge]] '{n}': local, remotes and udp_port need a vni (or remove them)"),
                );
            }
            let fam = b.local.map(|l| l.is_ipv4());
            if let Some(r) = b.remotes.iter().find(|r| Some(r.is_ipv4()) != fam) {
                return self.err(b.name.span(), &format!("[[bridge]] '{n}': remote {r} is not of local's family"));
            }
            if let Some(v) = b.vlan.filter(|v| !(1..=4094).contains(v)) {
                return self.err(b.name.span(), &format!("[[bridge]] '{n}': vlan = {v}: use 1..=4094"));
            }
        }
        let mut pnames = HashSet::new();
        let mut uplinks = 0;
        for p in &self.port {
            let n = p.name.get_ref();
            if n.is_empty() || !pnames.insert(n.clone()) {
                return self.err(p.name.span(), &format!("[[port]] name = '{n}': empty or used twice"));
            }
            match p.role {
                Role::Uplink => {
                    uplinks += 1;
                    if p.bridge.is_some() || p.vlan.is_some() {
                        return self.err(
                            p.name.span(),
                            &format!("[[port]] '{n}': an uplink carries every bridge: remove bridge and vlan"),
                        );
                    }
                }
                Role::Access => {
                    if let Some(b) = &p.bridge {
                        if !names.contains(b.get_ref()) {
                            return self
                                .err(b.span(), &format!("[[port]] '{n}': bridge '{}' is not defined", b.get_ref()));
                        }
                    }
                }
            }
            if let Some(v) = p.vlan.filter(|v| !(1..=4094).contains(v)) {
                return self.err(p.name.span(), &format!("[[port]] '{n}': vlan = {v}: use 1..=4094"));
            }
            self.check_port_security(p)?;
        }
        self.check_security_groups()?;
        if g.conntrack_size == 0 {
            return Err(ConfigError(format!("{file}: [vswitch] conntrack_size must be positive")));
        }
        if uplinks > 1 {
            return Err(ConfigError(format!("{file}: more than one [[port]] with role = \"uplink\": give one")));
        }
        let needs_uplink = self.bridge.iter().any(|b| b.vni.is_some() || b.vlan.is_some())
            || self.port.iter().any(|p| p.vlan.is_some());
        if needs_uplink && uplinks == 0 {
            return Err(ConfigError(format!(
                "{file}: bridges with vni or vlan need a [[port]] with role = \"uplink\" (the underlay)"
            )));
        }
        for f in &self.fdb {
            if !names.contains(f.bridge.get_ref()) {
                return self.err(f.bridge.span(), &format!("[[fdb]] bridge '{}' is not defined", f.bridge.get_ref()));
            }
            match (&f.port, f.vtep) {
                (Some(p), None) if !pnames.contains(p.get_ref()) => {
                    return self.err(p.span(), &format!("[[fdb]] port '{}' is not defined", p.get_ref()));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => return self.err(f.bridge.span(), "[[fdb]] give exactly one of port = \"NAME\" or vtep = \"IP\""),
            }
        }
        let remotes: HashSet<IpAddr> = self.bridge.iter().flat_map(|b| b.remotes.iter().copied()).collect();
        for n in &self.neighbour {
            if !remotes.contains(n.ip.get_ref()) && !self.fdb.iter().any(|f| f.vtep == Some(*n.ip.get_ref())) {
                return self.err(
                    n.ip.span(),
                    &format!("[[neighbour]] {}: not a VTEP of any bridge (remotes or [[fdb]] vtep)", n.ip.get_ref()),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(Path::new("vs.toml"), t).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "tenant-a"
vni = 100
tunnel = "vxlan"
local = "10.50.0.1"
remotes = ["10.50.0.2"]
vlan = 30

[[bridge]]
name = "empty"

[[port]]
name = "uplink"
spec = "af_xdp:eth1"
role = "uplink"

[[port]]
name = "vm1"
spec = "vhost-user:/tmp/vm1.sock"
bridge = "tenant-a"

[[fdb]]
bridge = "tenant-a"
mac = "02:00:00:00:00:09"
port = "vm1"

[[neighbour]]
ip = "10.50.0.2"
mac = "02:00:00:00:00:0a"
"#;

    #[test]
    fn a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.bridge.len(), 2);
        assert_eq!(c.port[0].role, Role::Uplink);
        assert_eq!(c.vswitch.idle, Idle::Adaptive);
        assert_eq!(c.vswitch.fdb_aging, 300);
        assert_eq!(c.vswitch.idle_max_sleep_us, 500);
        assert_eq!(c.fdb[0].mac, [2, 0, 0, 0, 0, 9]);
        assert!(c.port_security().is_empty());
    }

    #[test]
    fn port_security_of_a_port() {
        let t = GOOD.replacen(
            "bridge = \"tenant-a\"\n\n[[fdb]]",
            "bridge = \"tenant-a\"\nallowed = [\"52:54:00:00:00:01 10.0.0.5\", \"52:54:00:00:00:01 2001:db8::/64\"]\ntrusted = true\n\n[[fdb]]",
            1,
        );
        let ps = parse(&t).unwrap().port_security();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].port, "vm1");
        assert!(ps[0].trusted);
        assert_eq!(ps[0].allowed[1].to_string(), "52:54:00:00:00:01 2001:db8::/64");
    }

    const GROUPS: &str = r#"
[[security_group]]
name = "web"
[[security_group.rule]]
direction = "ingress"
protocol = "tcp"
port_min = 80
port_max = 443
remote = "10.0.0.0/8"
[[security_group.rule]]
direction = "egress"
[[security_group.rule]]
direction = "ingress"
ethertype = "IPv6"
protocol = "icmpv6"
icmp_type = 128
[[security_group.rule]]
direction = "ingress"
protocol = 47
"#;

    fn with_groups(port_line: &str, groups: &str) -> String {
        let t = GOOD.replacen(
            "bridge = \"tenant-a\"\n\n[[fdb]]",
            &format!("bridge = \"tenant-a\"\n{port_line}\n\n[[fdb]]"),
            1,
        );
        format!("{t}{groups}")
    }

    #[test]
    fn security_groups_of_a_port() {
        let c = parse(&with_groups("security_groups = [\"web\"]", GROUPS)).unwrap();
        let g = c.security_groups();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "web");
        let r = &g[0].rules;
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].direction, r[0].protocol, r[0].ports), (Direction::Ingress, Some(6), Some((80, 443))));
        assert_eq!(r[0].remote, Some(("10.0.0.0".parse().unwrap(), 8)));
        assert_eq!((r[1].direction, r[1].protocol, r[1].remote), (Direction::Egress, None, None));
        assert_eq!((r[2].v6, r[2].protocol, r[2].icmp_type), (true, Some(58), Some(128)));
        assert_eq!(r[3].protocol, Some(47));
        let pg = c.port_groups();
        assert_eq!((pg[0].port.as_str(), pg[0].groups.clone()), ("vm1", vec!["web".to_string()]));
    }

    #[test]
    fn security_group_errors_name_the_line_and_the_key() {
        for (port_line, edit, want) in [
            ("security_groups = [\"db\"]", ("", ""), "line 25: [[port]] 'vm1': security group 'db' is not defined"),
            ("security_groups = []", ("", ""), "line 25: [[port]] 'vm1': security_groups = []"),
            (
                "",
                ("direction = \"egress\"", "direction = \"out\""),
                "unknown variant `out`, expected `ingress` or `egress`",
            ),
            (
                "",
                ("protocol = \"tcp\"", "protocol = \"tpc\""),
                "line 38: [[security_group.rule]] of 'web': protocol = \"tpc\" is not tcp",
            ),
            ("", ("port_max = 443", "port_max = 43"), "of 'web': port_min = 80 is above port_max = 43"),
            ("", ("remote = \"10.0.0.0/8\"", "remote = \"10.0.0.0/40\""), "of 'web': remote: prefix length \"40\""),
            ("", ("remote = \"10.0.0.0/8\"", "remote = \"::/0\""), "is not of the rule's ethertype"),
            ("", ("icmp_type = 128", "icmp_type = 128\nport_min = 1"), "port_min / port_max need protocol = tcp"),
            ("", ("protocol = 47", "protocol = 470"), "protocol = 470 is not"),
            ("", ("name = \"web\"", "name = \"web\"\ncolour = 1"), "unknown field `colour`"),
        ] {
            let t = with_groups(port_line, &GROUPS.replacen(edit.0, edit.1, 1));
            let e = parse(&t).unwrap_err();
            assert!(e.starts_with("vs.toml"), "{e}");
            assert!(e.contains(want), "{port_line} {edit:?}: {e}");
            assert!(e.contains("[[security_group.rule]] direction"), "the forms: {e}");
        }
    }

    #[test]
    fn errors_name_the_line_the_key_and_the_forms() {
        for (edit, want) in [
            (("vni = 100", "vni = 100\ncolour = 3"), "line 8: unknown field `colour`"),
            (("tunnel = \"vxlan\"", "tunnel = \"gre\""), "line 8: unknown variant `gre`"),
            (("local = \"10.50.0.1\"", "local = \"10.50.0\""), "line 9: invalid IP address syntax"),
            (
                ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"nope\"\n\n[[fdb]]"),
                "line 24: [[port]] 'vm1': bridge 'nope' is not defined",
            ),
            (("name = \"empty\"", "name = \"tenant-a\""), "line 14: [[bridge]] name = 'tenant-a': empty or used twice"),
            (("mac = \"02:00:00:00:00:09\"", "mac = \"02:00\""), "line 28: '02:00' is not a MAC address"),
            (("vni = 100", "vni = 16777216"), "vni = 16777216: use 0..=16777215"),
            (
                ("idle = \"adaptive\"", "idle = \"adaptive\"\nidle_max_sleep_us = 0"),
                "idle_max_sleep_us = 0: use 1..=100000",
            ),
            (("port = \"vm1\"", "port = \"vm1\"\nvtep = \"10.50.0.2\""), "give exactly one of port"),
            (("role = \"uplink\"", ""), "need a [[port]] with role = \"uplink\""),
            (("remotes = [\"10.50.0.2\"]", "remotes = [\"2001:db8::2\"]"), "is not of local's family"),
            (("ip = \"10.50.0.2\"", "ip = \"10.50.0.3\""), "line 32: [[neighbour]] 10.50.0.3: not a VTEP"),
            (
                ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"tenant-a\"\ntrusted = true\n\n[[fdb]]"),
                "trusted needs allowed",
            ),
            (
                ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"tenant-a\"\nallowed = []\n\n[[fdb]]"),
                "line 25: [[port]] 'vm1': allowed = [] would drop",
            ),
            (
                (
                    "bridge = \"tenant-a\"\n\n[[fdb]]",
                    "bridge = \"tenant-a\"\nallowed = [\"52:54:00:00:00:01 10.0.0.5/40\"]\n\n[[fdb]]",
                ),
                "line 25: allowed address \"52:54:00:00:00:01 10.0.0.5/40\": prefix length \"40\" is not 0..=32",
            ),
            (
                ("role = \"uplink\"", "role = \"uplink\"\nallowed = [\"52:54:00:00:00:01\"]"),
                "port security is for access",
            ),
        ] {
            let t = GOOD.replacen(edit.0, edit.1, 1);
            let e = parse(&t).unwrap_err();
            assert!(e.starts_with("vs.toml"), "{e}");
            assert!(e.contains(want), "{edit:?}: {e}");
            assert!(e.contains("accepted:") && e.contains("[[bridge]] name = \"NAME\""), "{e}");
        }
    }
}
