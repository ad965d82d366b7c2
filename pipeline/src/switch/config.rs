//! The switch's configuration: bridges, ports, static MACs and neighbours, FDB settings. The
//! application fills these from its config file; [`crate::switch::build`] checks them and says
//! what is wrong and how to fix it.

use std::net::IpAddr;
use std::time::Duration;

use fastpath_pmd::PortInfo;

use crate::stages::tunnel;
pub use crate::switch::port_security::{AllowedAddress, PortSecurity};
pub use crate::switch::secgroup::{ConntrackSettings, Direction, PortGroups, SecurityGroup, SgRule};

/// The overlay a bridge's VNI is carried in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunnelKind {
    /// VXLAN (RFC 7348), UDP 4789 by default.
    #[default]
    Vxlan,
    /// GENEVE (RFC 8926), UDP 6081 by default.
    Geneve,
    /// NVGRE (RFC 7637): GRE, no UDP port.
    Nvgre,
}

impl TunnelKind {
    /// The tunnel code of the tunnel stages ([`tunnel::VXLAN`], ...).
    pub fn code(self) -> u8 {
        match self {
            TunnelKind::Vxlan => tunnel::VXLAN,
            TunnelKind::Geneve => tunnel::GENEVE,
            TunnelKind::Nvgre => tunnel::NVGRE,
        }
    }

    /// The IANA UDP port (0 for NVGRE).
    pub fn default_port(self) -> u16 {
        match self {
            TunnelKind::Vxlan => crate::wire::vxlan::PORT,
            TunnelKind::Geneve => crate::wire::geneve::PORT,
            TunnelKind::Nvgre => 0,
        }
    }

    /// The name as in the config (`vxlan`, `geneve`, `nvgre`).
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Nvgre => "nvgre",
        }
    }
}

/// What a port is to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortRole {
    /// A VM, container or host port in one bridge (one segment): untagged frames.
    #[default]
    Access,
    /// The physical uplink: carries the underlay (tunnels to remote VTEPs, ARP / ND for our
    /// VTEP address) and the VLAN trunk of the bridges that map a VLAN. At most one.
    Uplink,
}

/// One bridge: an L2 domain (a tenant network).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeConfig {
    /// Unique name.
    pub name: String,
    /// Overlay id (24 bits): the bridge is carried to `remotes` in this VNI.
    pub vni: Option<u32>,
    /// The overlay kind (with `vni`).
    pub tunnel: TunnelKind,
    /// Our VTEP address (with `vni`), owned by the uplink: we answer ARP / ND for it.
    pub local: Option<IpAddr>,
    /// Remote VTEPs that floods are replicated to (head-end replication); unicast to VTEPs
    /// learned from traffic works as well.
    pub remotes: Vec<IpAddr>,
    /// The bridge's (untagged) segment is also 802.1Q VLAN `vlan` on the uplink: with `vni`, a
    /// VXLAN <-> VLAN gateway.
    pub vlan: Option<u16>,
    /// UDP port of the tunnel (default: the kind's IANA port; not for NVGRE).
    pub udp_port: Option<u16>,
}

/// One port of the switch.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// The port as opened: its `id` must be its index in [`SwitchConfig::ports`] (it is the
    /// mbufs' `out_port`); its offloads, `live` offloads, largest frame and MAC are used.
    pub port: PortInfo,
    /// Access port or uplink.
    pub role: PortRole,
    /// The bridge of an access port (none: the port is in no bridge yet, and its frames are
    /// dropped, counted as `no-segment`).
    pub bridge: Option<String>,
    /// An access port in VLAN `vlan` of a VLAN-only bridge: the segment (bridge, `vlan`),
    /// carried on the uplink with tag `vlan`.
    pub vlan: Option<u16>,
}

/// A static FDB entry: never aged, never moved by learning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMac {
    /// The bridge.
    pub bridge: String,
    /// The access VLAN of the segment, in a VLAN-only bridge.
    pub vlan: Option<u16>,
    /// The (unicast) MAC address.
    pub mac: [u8; 6],
    /// Where it is: a port of the bridge (the uplink for a MAC behind its VLAN) ...
    pub port: Option<String>,
    /// ... or a remote VTEP (bridges with a VNI).
    pub vtep: Option<IpAddr>,
}

/// A permanent neighbour entry for a remote VTEP (like `ip neigh add ... permanent`): no ARP /
/// ND is needed for it and it never expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNeighbour {
    /// The VTEP address (one of some bridge's `remotes`).
    pub addr: IpAddr,
    /// Its MAC address (or its next hop's).
    pub mac: [u8; 6],
}

/// FDB settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Entries in total (all bridges, static and learned); the table is sized for them.
    pub capacity: usize,
    /// A learned entry not seen for this long is removed (default 300 s).
    pub aging: Duration,
    /// Learned MACs per bridge at most (0: no limit); more are refused, counted.
    pub bridge_limit: usize,
    /// Learned MACs per port at most (0: no limit); more are refused, counted.
    pub port_limit: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig { capacity: 65536, aging: Duration::from_secs(300), bridge_limit: 0, port_limit: 0 }
    }
}

/// The whole switch.
#[derive(Debug, Clone, Default)]
pub struct SwitchConfig {
    /// Bridges.
    pub bridges: Vec<BridgeConfig>,
    /// Ports, by id.
    pub ports: Vec<PortConfig>,
    /// Static FDB entries.
    pub static_macs: Vec<StaticMac>,
    /// FDB settings.
    pub fdb: FdbConfig,
    /// Permanent neighbours of remote VTEPs (optional: ARP / ND resolve the others).
    pub neighbours: Vec<StaticNeighbour>,
    /// Port security of access ports, by port name (ports not listed are not checked).
    pub port_security: Vec<PortSecurity>,
    /// Security groups.
    pub security_groups: Vec<SecurityGroup>,
    /// The groups of access ports, by port name (ports not listed are not filtered).
    pub port_groups: Vec<PortGroups>,
    /// The connection table (made only when some port has a group).
    pub conntrack: ConntrackSettings,
    /// Ports that may exist at once, counting those plugged while the switch runs (the
    /// lcores' per-port tables are sized for them at start); 0 or fewer than `ports`: room
    /// for `ports` only (a live port then takes the id of one taken out).
    pub max_ports: usize,
}
