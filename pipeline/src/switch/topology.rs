//! The checked configuration: segments, port roles, the uplink's VLAN and VNI maps, tunnel
//! classes and the VTEPs known at start. Built once by [`Topology::new`], immutable after,
//! shared by every lcore and the control side.

use std::collections::HashMap;
use std::net::IpAddr;

use fastpath_pmd::{Error, PortInfo};

use crate::switch::config::{BridgeConfig, PortConfig, PortRole, StaticMac, SwitchConfig, TunnelKind};
use crate::switch::fdb::{self, Place, MAX_ID};
use crate::switch::port_security::PortGuard;
use crate::switch::vtep::MAX_VTEPS;

/// No segment (a port in no bridge).
pub const NO_SEGMENT: u16 = u16::MAX;
/// Most destinations a flood may have (local ports, the uplink and remote VTEPs).
pub const MAX_FLOOD: usize = 1024;
/// Longest FDB aging accepted, in seconds.
const MAX_AGING_SECS: u64 = 1_000_000;

/// One L2 domain: a bridge, or (bridge, access VLAN) in a VLAN-only bridge.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its bridge.
    pub bridge: u16,
    /// The access VLAN of its ports (VLAN-only bridges).
    pub access_vlan: Option<u16>,
    /// The 802.1Q tag it is carried with on the uplink.
    pub uplink_tag: Option<u16>,
    /// The VNI it is carried in to remote VTEPs.
    pub vni: Option<u32>,
    /// The tunnel class of its VNI (an index into [`Topology::classes`]).
    pub class: Option<u8>,
    /// Its access ports.
    pub ports: Vec<u16>,
    /// The VTEPs floods are replicated to (ids in the VTEP table).
    pub remotes: Vec<u16>,
}

/// Tunnels sharing one outer header template: kind, UDP port and our address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    /// Tunnel kind.
    pub kind: TunnelKind,
    /// UDP destination port (0 for NVGRE).
    pub port: u16,
    /// Our VTEP address.
    pub local: IpAddr,
}

/// A port as the data path sees it.
#[derive(Debug, Clone)]
pub struct PortTopo {
    /// Name.
    pub name: String,
    /// The port.
    pub info: PortInfo,
    /// Role.
    pub role: PortRole,
    /// The segment of an access port ([`NO_SEGMENT`] for none).
    pub segment: u16,
    /// Its port security (none: not checked).
    pub guard: Option<Box<PortGuard>>,
}

/// A bridge as the data path sees it.
#[derive(Debug, Clone)]
pub struct BridgeTopo {
    /// Name.
    pub name: String,
    /// Its segments.
    pub segments: Vec<u16>,
}

/// A bridge's overlay: VNI, tunnel class, flood VTEPs.
type Overlay = (Option<u32>, Option<u8>, Vec<u16>);

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Ports by id.
    pub ports: Vec<PortTopo>,
    /// Bridges.
    pub bridges: Vec<BridgeTopo>,
    /// Segments.
    pub segments: Vec<Segment>,
    /// The uplink's id.
    pub uplink: Option<u16>,
    /// The uplink's MAC (our VTEP MAC).
    pub uplink_mac: [u8; 6],
    /// The largest frame the uplink sends.
    pub uplink_max_frame: usize,
    /// Segment by uplink VLAN tag ([`NO_SEGMENT`] where none).
    pub tag_segment: Box<[u16]>,
    /// Segment by (tunnel kind << 24 | VNI), sorted.
    pub vni_segment: Vec<(u32, u16)>,
    /// Tunnel classes.
    pub classes: Vec<Class>,
    /// Our VTEP addresses.
    pub locals: Vec<IpAddr>,
    /// VTEPs known at start (id = index).
    pub vteps: Vec<IpAddr>,
    /// Static FDB entries (key, place).
    pub statics: Vec<(u64, Place)>,
    /// Permanent neighbours (VTEP id, MAC).
    pub neighbours: Vec<(u16, [u8; 6])>,
}

fn err(msg: String) -> Error {
    Error::Config(msg)
}

/// A remote VTEP `r` of a bridge (`what`) whose own VTEP address is `local`: unicast, of its
/// family, not itself.
pub(crate) fn check_remote(what: &str, r: IpAddr, local: IpAddr) -> Result<(), Error> {
    if r.is_ipv4() != local.is_ipv4() || r.is_unspecified() || r.is_multicast() || r == local {
        return Err(err(format!(
            "{what}: remote {r} must be a unicast address of the same family as local = {local}, other than local"
        )));
    }
    Ok(())
}

fn check_vlan(what: &str, v: Option<u16>) -> Result<(), Error> {
    match v {
        Some(v) if !(1..=4094).contains(&v) => {
            Err(err(format!("{what}: vlan = {v} is out of range: give an 802.1Q VLAN id 1..=4094")))
        }
        _ => Ok(()),
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Topology {
    /// Checks `cfg` and derives the tables; errors name the bridge, port or key, and the fix.
    pub fn new(cfg: &SwitchConfig) -> Result<Topology, Error> {
        check_fdb(cfg)?;
        let bridge_ids = names(cfg.bridges.iter().map(|b| b.name.as_str()), "bridge")?;
        names(cfg.ports.iter().map(|p| p.name.as_str()), "port")?;
        let uplink = check_ports(cfg, &bridge_ids)?;
        let mut t = Topology {
            ports: Vec::new(),
            bridges: Vec::new(),
            segments: Vec::new(),
            uplink,
            uplink_mac: [0; 6],
            uplink_max_frame: 0,
            tag_segment: vec![NO_SEGMENT; 4096].into_boxed_slice(),
            vni_segment: Vec::new(),
            classes: Vec::new(),
            locals: Vec::new(),
            vteps: Vec::new(),
            statics: Vec::new(),
            neighbours: Vec::new(),
        };
        if let Some(u) = uplink {
            let info = &cfg.ports[u as usize].port;
            t.uplink_mac = info.mac.unwrap_or([0; 6]);
            t.uplink_max_frame = info.max_frame as usize;
        }
        for (b, _) in cfg.bridges.iter().enumerate() {
            t.add_bridge(cfg, b)?;
        }
        t.ports = cfg
            .ports
            .iter()
            .map(|p| PortTopo {
                name: p.name.clone(),
                info: p.port.clone(),
                role: p.role,
                segment: NO_SEGMENT,
                guard: None,
            })
            .collect();
        t.add_guards(cfg)?;
        for s in 0..t.segments.len() {
            for &p in &t.segments[s].ports.clone() {
                t.ports[p as usize].segment = s as u16;
            }
        }
        t.vni_segment.sort_unstable();
        t.check_flood_sizes()?;
        let mut seen = std::collections::HashSet::with_capacity(cfg.static_macs.len());
        for m in &cfg.static_macs {
            let e = t.static_entry(cfg, &bridge_ids, m)?;
            if !seen.insert(e.0) {
                return Err(err(format!(
                    "static MAC {} in bridge {} is given twice: keep one entry",
                    fmt_mac(&m.mac),
                    m.bridge
                )));
            }
            t.statics.push(e);
        }
        t.add_neighbours(cfg)?;
        Ok(t)
    }

    /// True for the slot of a port taken out while the switch runs (its id may be reused).
    pub fn vacant(&self, id: u16) -> bool {
        self.ports.get(id as usize).is_none_or(|p| p.name.is_empty())
    }

    /// The id of the port named `name` (not a vacant slot).
    pub fn port_id(&self, name: &str) -> Option<u16> {
        (!name.is_empty()).then(|| self.ports.iter().position(|p| p.name == name)).flatten().map(|i| i as u16)
    }

    /// A copy with access port `p` plugged in at id `p.port.id` (a vacant slot or the next
    /// id): it joins an existing segment of its bridge (a live port cannot open a new access
    /// VLAN, whose uplink tag and counters are laid out at start). Errors name the port and
    /// the fix.
    pub fn with_port(&self, p: &PortConfig) -> Result<Topology, Error> {
        let what = format!("port {}", p.name);
        let id = p.port.id;
        if p.name.is_empty() || p.name.contains(char::is_whitespace) {
            return Err(err(format!("{what:?}: give the port a name without spaces")));
        }
        if self.port_id(&p.name).is_some() {
            return Err(err(format!("{what}: there is a port of that name already: give another name")));
        }
        if id as usize > self.ports.len() || !self.vacant(id) || id >= MAX_ID {
            return Err(err(format!("{what}: id {id} is taken (a live port gets a vacant id)")));
        }
        if p.role != PortRole::Access {
            return Err(err(format!(
                "{what}: only access ports are plugged while the switch runs; the uplink is set at start"
            )));
        }
        check_vlan(&what, p.vlan)?;
        let Some(b) = p.bridge.as_deref() else {
            return Err(err(format!("{what}: give bridge=NAME, the bridge it joins")));
        };
        let Some(bi) = self.bridges.iter().position(|x| x.name == b) else {
            let known: Vec<&str> = self.bridges.iter().map(|x| x.name.as_str()).collect();
            return Err(err(format!("{what}: bridge {b} names no bridge; the bridges are: {}", known.join(", "))));
        };
        let Some(&seg) = self.bridges[bi].segments.iter().find(|&&s| self.segments[s as usize].access_vlan == p.vlan)
        else {
            let vlans: Vec<String> = (self.bridges[bi].segments.iter())
                .map(|&s| self.segments[s as usize].access_vlan.map_or("none".into(), |v| v.to_string()))
                .collect();
            return Err(err(format!(
                "{what}: bridge {b} has no segment with vlan {}: a live port joins one of its segments (vlan {}); \
                 a new access VLAN needs a restart",
                p.vlan.map_or("none".into(), |v| v.to_string()),
                vlans.join(", ")
            )));
        };
        let mut t = self.clone();
        let pt = PortTopo { name: p.name.clone(), info: p.port.clone(), role: p.role, segment: seg, guard: None };
        if (id as usize) < t.ports.len() {
            t.ports[id as usize] = pt;
        } else {
            t.ports.push(pt);
        }
        t.segments[seg as usize].ports.push(id);
        t.check_flood_sizes()?;
        Ok(t)
    }

    /// A copy with port `id` taken out: its slot vacant, in no segment.
    pub fn without_port(&self, id: u16) -> Topology {
        let mut t = self.clone();
        if let Some(pt) = t.ports.get_mut(id as usize) {
            if let Some(s) = t.segments.get_mut(pt.segment as usize) {
                s.ports.retain(|&q| q != id);
            }
            pt.name.clear();
            pt.segment = NO_SEGMENT;
            pt.guard = None;
        }
        t
    }

    /// A copy where every segment of bridge `bridge` floods to the VTEPs `remotes` (ids in
    /// the VTEP table).
    pub fn with_remotes(&self, bridge: u16, remotes: &[u16]) -> Result<Topology, Error> {
        let mut t = self.clone();
        for &s in &self.bridges[bridge as usize].segments {
            t.segments[s as usize].remotes = remotes.to_vec();
        }
        t.check_flood_sizes()?;
        Ok(t)
    }

    /// The id of bridge `name` (not a deleted one).
    pub fn bridge_id(&self, name: &str) -> Option<u16> {
        (!name.is_empty()).then(|| self.bridges.iter().position(|b| b.name == name)).flatten().map(|i| i as u16)
    }

    /// A copy with bridge `bc` added, without ports yet and without remotes (give them with
    /// [`Topology::with_remotes`] once the control side has their VTEP ids): its one segment,
    /// its uplink VLAN and VNI mappings, checked as at start against the other bridges.
    pub fn with_bridge(&self, bc: &BridgeConfig) -> Result<Topology, Error> {
        let what = format!("bridge {:?}", bc.name);
        if bc.name.is_empty() || bc.name.contains(char::is_whitespace) {
            return Err(err(format!("{what}: give the bridge a name without spaces")));
        }
        if self.bridge_id(&bc.name).is_some() {
            return Err(err(format!("{what}: there is a bridge of that name already: give another name")));
        }
        // The view of the switch add_bridge checks against: the bridges by id (a deleted one by
        // its empty name) and the ports (none of them in the new bridge).
        let mut bridges: Vec<BridgeConfig> =
            self.bridges.iter().map(|b| BridgeConfig { name: b.name.clone(), ..Default::default() }).collect();
        bridges.push(BridgeConfig { remotes: Vec::new(), ..bc.clone() });
        let ports = (self.ports.iter())
            .map(|p| PortConfig { name: p.name.clone(), port: p.info.clone(), role: p.role, bridge: None, vlan: None })
            .collect();
        let view = SwitchConfig { bridges, ports, ..Default::default() };
        let mut t = self.clone();
        t.add_bridge(&view, view.bridges.len() - 1)?;
        if t.classes.len() > self.classes.len() || t.locals.len() > self.locals.len() {
            // The lcores' encap templates and VTEP addresses are built at start.
            let have: Vec<String> =
                self.classes.iter().map(|c| format!("{} port {} local {}", c.kind.name(), c.port, c.local)).collect();
            return Err(err(format!(
                "{what}: its tunnel (kind, UDP port, local address) is new to the switch, which needs a restart; a \
                 bridge added live uses one the switch has: {}",
                if have.is_empty() { "none".to_string() } else { have.join("; ") }
            )));
        }
        t.vni_segment.sort_unstable();
        Ok(t)
    }

    /// A copy with bridge `b` deleted: its segments keep their ids (FDB keys hold them) but
    /// lose their uplink VLAN, VNI and remotes; its name becomes empty. The caller checks that no
    /// port is in it.
    pub fn without_bridge(&self, b: u16) -> Topology {
        let mut t = self.clone();
        for &s in &self.bridges[b as usize].segments {
            let seg = &mut t.segments[s as usize];
            if let Some(tag) = seg.uplink_tag.take() {
                t.tag_segment[tag as usize] = NO_SEGMENT;
            }
            seg.vni = None;
            seg.class = None;
            seg.remotes.clear();
            t.vni_segment.retain(|&(_, x)| x != s);
        }
        t.bridges[b as usize].name.clear();
        t
    }

    /// The segment of uplink tag `tag`.
    #[inline(always)]
    pub fn tag_segment(&self, tag: u16) -> u16 {
        self.tag_segment.get(tag as usize).copied().unwrap_or(NO_SEGMENT)
    }

    /// The segment of VNI `vni` in tunnels of `kind`.
    #[inline]
    pub fn vni_segment(&self, kind: u8, vni: u32) -> u16 {
        let k = (kind as u32) << 24 | vni;
        match self.vni_segment.binary_search_by_key(&k, |e| e.0) {
            Ok(i) => self.vni_segment[i].1,
            Err(_) => NO_SEGMENT,
        }
    }

    /// The VTEP id of `addr`, adding it to the start table.
    fn vtep(&mut self, addr: IpAddr) -> u16 {
        match self.vteps.iter().position(|v| *v == addr) {
            Some(i) => i as u16,
            None => {
                self.vteps.push(addr);
                (self.vteps.len() - 1) as u16
            }
        }
    }

    fn add_bridge(&mut self, cfg: &SwitchConfig, b: usize) -> Result<(), Error> {
        let bc = &cfg.bridges[b];
        let what = format!("bridge {}", bc.name);
        check_vlan(&what, bc.vlan)?;
        let members: Vec<(u16, Option<u16>)> = cfg
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.bridge.as_deref() == Some(bc.name.as_str()))
            .map(|(i, p)| (i as u16, p.vlan))
            .collect();
        let (vni, class, remotes) = self.bridge_overlay(cfg, b)?;
        if vni.is_some() {
            if let Some((p, v)) = members.iter().find_map(|(p, v)| v.map(|v| (p, v))) {
                return Err(err(format!(
                    "port {}: vlan = {v} in bridge {}, which has vni = {}: a bridge with a VNI is one segment; \
                     remove the port's vlan (use the bridge's vlan = N to carry it as VLAN N on the uplink too)",
                    cfg.ports[*p as usize].name,
                    bc.name,
                    vni.unwrap_or(0)
                )));
            }
        }
        let mut vlans: Vec<Option<u16>> = vec![None];
        for (_, v) in &members {
            if v.is_some() && !vlans.contains(v) {
                vlans.push(*v);
            }
        }
        let mut segs = Vec::new();
        for access_vlan in vlans {
            let s = self.segments.len() as u16;
            let uplink_tag = access_vlan.or(bc.vlan);
            if let Some(tag) = uplink_tag {
                self.map_tag(cfg, tag, s, &bc.name)?;
            }
            if let (Some(v), Some(class)) = (vni, class) {
                self.vni_segment.push(((self.classes[class as usize].kind.code() as u32) << 24 | v, s));
            }
            self.segments.push(Segment {
                bridge: b as u16,
                access_vlan,
                uplink_tag,
                vni,
                class,
                ports: members.iter().filter(|(_, v)| *v == access_vlan).map(|(p, _)| *p).collect(),
                remotes: remotes.clone(),
            });
            segs.push(s);
        }
        if self.segments.len() >= NO_SEGMENT as usize {
            return Err(err(format!("{what}: too many segments (at most {})", NO_SEGMENT - 1)));
        }
        self.bridges.push(BridgeTopo { name: bc.name.clone(), segments: segs });
        Ok(())
    }

    /// A bridge's VNI, tunnel class and flood VTEPs, checked.
    fn bridge_overlay(&mut self, cfg: &SwitchConfig, b: usize) -> Result<Overlay, Error> {
        let bc = &cfg.bridges[b];
        let what = format!("bridge {}", bc.name);
        let Some(vni) = bc.vni else {
            if !bc.remotes.is_empty() || bc.udp_port.is_some() {
                return Err(err(format!("{what}: remotes and udp_port need vni = N (the overlay id): add it")));
            }
            return Ok((None, None, Vec::new()));
        };
        if vni > 0x00ff_ffff {
            return Err(err(format!("{what}: vni = {vni} does not fit 24 bits: use 0..=16777215")));
        }
        let Some(local) = bc.local else {
            return Err(err(format!(
                "{what}: vni = {vni} needs local = our VTEP address (an IPv4 or IPv6 address of the uplink)"
            )));
        };
        if local.is_unspecified() || local.is_multicast() {
            return Err(err(format!("{what}: local = {local} must be a unicast address of the uplink")));
        }
        if bc.tunnel == TunnelKind::Nvgre && bc.udp_port.is_some() {
            return Err(err(format!("{what}: udp_port does not apply to nvgre (GRE has no UDP): remove it")));
        }
        if bc.udp_port == Some(0) {
            return Err(err(format!("{what}: udp_port = 0 is not a port: give 1..=65535")));
        }
        self.check_vtep_uplink(cfg, &what, vni)?;
        let class = Class { kind: bc.tunnel, port: bc.udp_port.unwrap_or(bc.tunnel.default_port()), local };
        let ci = match self.classes.iter().position(|c| *c == class) {
            Some(i) => i,
            None => {
                self.classes.push(class);
                self.classes.len() - 1
            }
        };
        if !self.locals.contains(&local) {
            self.locals.push(local);
        }
        let key = (bc.tunnel.code() as u32) << 24 | vni;
        if let Some((_, s)) = self.vni_segment.iter().find(|(k, _)| *k == key) {
            let other = &cfg.bridges[self.segments[*s as usize].bridge as usize].name;
            return Err(err(format!(
                "{what}: {} vni = {vni} is already bridge {other}'s: give each bridge its own VNI",
                bc.tunnel.name()
            )));
        }
        let remotes = self.remotes(&what, &bc.remotes, local)?;
        Ok((Some(vni), Some(ci as u8), remotes))
    }

    /// The uplink a bridge with a VNI needs: present, with a unicast MAC.
    fn check_vtep_uplink(&self, cfg: &SwitchConfig, what: &str, vni: u32) -> Result<(), Error> {
        let Some(up) = self.uplink.map(|u| &cfg.ports[u as usize]) else {
            return Err(err(format!(
                "{what}: vni = {vni} is carried on the uplink, but no port has role = uplink: add one"
            )));
        };
        if up.port.mac.is_none_or(|m| m[0] & 1 != 0 || m == [0; 6]) {
            return Err(err(format!(
                "port {}: the uplink has no unicast MAC address, and the VTEP needs one \
                 (the source of tunnels and of ARP / ND answers): open it with a MAC",
                up.name
            )));
        }
        Ok(())
    }

    /// The VTEP ids of a bridge's `remotes`, checked against its `local`.
    fn remotes(&mut self, what: &str, remotes: &[IpAddr], local: IpAddr) -> Result<Vec<u16>, Error> {
        let mut ids = Vec::new();
        for r in remotes {
            check_remote(what, *r, local)?;
            let id = self.vtep(*r);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if self.vteps.len() > MAX_VTEPS {
            return Err(err(format!("{what}: more than {MAX_VTEPS} remote VTEPs in all: use fewer")));
        }
        Ok(ids)
    }

    fn map_tag(&mut self, cfg: &SwitchConfig, tag: u16, s: u16, bridge: &str) -> Result<(), Error> {
        if self.uplink.is_none() {
            return Err(err(format!(
                "bridge {bridge}: VLAN {tag} is carried on the uplink, but no port has role = uplink: add one"
            )));
        }
        let prev = self.tag_segment[tag as usize];
        if prev != NO_SEGMENT {
            let other = &cfg.bridges[self.segments[prev as usize].bridge as usize].name;
            return Err(err(format!(
                "bridge {bridge}: VLAN {tag} on the uplink is already bridge {other}'s: each uplink VLAN carries one \
                 segment; change one of them"
            )));
        }
        self.tag_segment[tag as usize] = s;
        Ok(())
    }

    fn check_flood_sizes(&self) -> Result<(), Error> {
        for s in &self.segments {
            if s.ports.len() + s.remotes.len() + 1 > MAX_FLOOD {
                return Err(err(format!(
                    "bridge {}: a segment with {} ports and {} remote VTEPs floods to more than {MAX_FLOOD} \
                     destinations: split it",
                    self.bridges[s.bridge as usize].name,
                    s.ports.len(),
                    s.remotes.len()
                )));
            }
        }
        Ok(())
    }

    /// The (key, place) of a static entry, checked.
    fn static_entry(
        &mut self,
        cfg: &SwitchConfig,
        bridge_ids: &HashMap<&str, usize>,
        m: &StaticMac,
    ) -> Result<(u64, Place), Error> {
        // Made only for an error: there may be a million static MACs.
        let what = || format!("static MAC {} in bridge {}", fmt_mac(&m.mac), m.bridge);
        let Some(&b) = bridge_ids.get(m.bridge.as_str()) else {
            return Err(err(format!("{}: there is no bridge {}: name one of the bridges", what(), m.bridge)));
        };
        if m.mac[0] & 1 != 0 || m.mac == [0; 6] {
            return Err(err(format!("{}: a static entry needs a unicast MAC address", what())));
        }
        let Some(&s) = self.bridges[b].segments.iter().find(|&&s| self.segments[s as usize].access_vlan == m.vlan)
        else {
            return Err(err(format!(
                "{}: the bridge has no segment with access vlan {:?}: give the vlan of one of its ports",
                what(),
                m.vlan
            )));
        };
        let seg = &self.segments[s as usize];
        let place = match (&m.port, m.vtep) {
            (Some(p), None) => {
                let Some(id) = cfg.ports.iter().position(|c| c.name == *p) else {
                    return Err(err(format!("{}: port = {p} names no port", what())));
                };
                let on_uplink = Some(id as u16) == self.uplink && seg.uplink_tag.is_some();
                if !seg.ports.contains(&(id as u16)) && !on_uplink {
                    return Err(err(format!(
                        "{}: port {p} is not in this segment (an access port of it, or the uplink when the segment \
                         has an uplink VLAN)",
                        what()
                    )));
                }
                Place::port(id as u16)
            }
            (None, Some(v)) => {
                if seg.vni.is_none() {
                    return Err(err(format!("{}: vtep = {v} needs a bridge with vni = N", what())));
                }
                let class = self.classes[seg.class.unwrap_or(0) as usize];
                if v.is_ipv4() != class.local.is_ipv4() || v == class.local {
                    return Err(err(format!("{}: vtep = {v} must be a remote of the family of local", what())));
                }
                let id = self.vtep(v);
                if self.vteps.len() > MAX_VTEPS {
                    return Err(err(format!("{}: more than {MAX_VTEPS} remote VTEPs in all", what())));
                }
                Place::vtep(id)
            }
            _ => return Err(err(format!("{}: give exactly one of port = NAME or vtep = ADDRESS", what()))),
        };
        Ok((fdb::key(s, &m.mac), place.as_static()))
    }

    fn add_neighbours(&mut self, cfg: &SwitchConfig) -> Result<(), Error> {
        for n in &cfg.neighbours {
            let Some(id) = self.vteps.iter().position(|v| *v == n.addr) else {
                return Err(err(format!(
                    "neighbour {}: not a remote VTEP of any bridge (nor of a static MAC): add it to some bridge's remotes",
                    n.addr
                )));
            };
            if n.mac[0] & 1 != 0 || n.mac == [0; 6] {
                return Err(err(format!("neighbour {}: {} is not a unicast MAC", n.addr, fmt_mac(&n.mac))));
            }
            self.neighbours.push((id as u16, n.mac));
        }
        Ok(())
    }
}

fn check_fdb(cfg: &SwitchConfig) -> Result<(), Error> {
    let f = &cfg.fdb;
    if f.capacity == 0 || f.capacity > 1 << 28 {
        return Err(err(format!("fdb capacity = {} is out of range: give 1..={}", f.capacity, 1u32 << 28)));
    }
    let a = f.aging.as_secs();
    if a == 0 || a > MAX_AGING_SECS {
        return Err(err(format!(
            "fdb aging = {:?} is out of range: give 1..={MAX_AGING_SECS} seconds (default 300)",
            f.aging
        )));
    }
    Ok(())
}

/// Index by name; a repeated or empty name is an error.
fn names<'a>(it: impl Iterator<Item = &'a str>, what: &str) -> Result<HashMap<&'a str, usize>, Error> {
    let mut m = HashMap::new();
    for (i, n) in it.enumerate() {
        if n.is_empty() {
            return Err(err(format!("{what} {i} has no name: give each {what} a name")));
        }
        if m.insert(n, i).is_some() {
            return Err(err(format!("{what} {n} is defined twice: give each {what} its own name")));
        }
    }
    Ok(m)
}

impl Topology {
    /// The port security of `cfg`'s access ports.
    fn add_guards(&mut self, cfg: &SwitchConfig) -> Result<(), Error> {
        for s in &cfg.port_security {
            let Some(id) = cfg.ports.iter().position(|p| p.name == s.port) else {
                return Err(err(format!(
                    "port security for {:?}: there is no such port: name one of the ports",
                    s.port
                )));
            };
            if cfg.ports[id].role != PortRole::Access {
                return Err(err(format!(
                    "port {}: port security is for access (VM) ports: remove it from the uplink",
                    s.port
                )));
            }
            if self.ports[id].guard.is_some() {
                return Err(err(format!("port {}: port security given twice: give it once", s.port)));
            }
            self.ports[id].guard = Some(Box::new(PortGuard::new(s).map_err(err)?));
        }
        Ok(())
    }
}

/// Checks the ports; returns the uplink.
fn check_ports(cfg: &SwitchConfig, bridges: &HashMap<&str, usize>) -> Result<Option<u16>, Error> {
    if cfg.ports.len() > MAX_ID as usize {
        return Err(err(format!("{} ports: at most {MAX_ID} are supported", cfg.ports.len())));
    }
    let mut uplink = None;
    for (i, p) in cfg.ports.iter().enumerate() {
        let what = format!("port {}", p.name);
        if p.port.id as usize != i {
            return Err(err(format!(
                "{what}: its PortInfo id is {} but it is port {i} of the config: open it with id {i}",
                p.port.id
            )));
        }
        check_vlan(&what, p.vlan)?;
        match p.role {
            PortRole::Uplink => {
                if let Some(u) = uplink {
                    let other: &String = &cfg.ports[u as usize].name;
                    return Err(err(format!(
                        "{what}: role = uplink, but port {other} is the uplink already: there is at most one"
                    )));
                }
                if p.bridge.is_some() || p.vlan.is_some() {
                    return Err(err(format!(
                        "{what}: an uplink carries every bridge (tunnels and VLANs): remove its bridge and vlan"
                    )));
                }
                uplink = Some(i as u16);
            }
            PortRole::Access => match &p.bridge {
                Some(b) if !bridges.contains_key(b.as_str()) => {
                    let mut known: Vec<&str> = bridges.keys().copied().collect();
                    known.sort_unstable();
                    return Err(err(format!(
                        "{what}: bridge = \"{b}\" names no bridge; the bridges are: {}",
                        known.join(", ")
                    )));
                }
                None if p.vlan.is_some() => {
                    return Err(err(format!("{what}: vlan needs bridge = NAME (the VLAN-only bridge it is in)")));
                }
                _ => {}
            },
        }
    }
    Ok(uplink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::config::{BridgeConfig, PortConfig};
    use fastpath_pmd::Offloads;

    fn port(id: u16, name: &str, role: PortRole, bridge: Option<&str>, vlan: Option<u16>) -> PortConfig {
        PortConfig {
            name: name.into(),
            port: PortInfo {
                id,
                driver: "null",
                name: name.into(),
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::NONE,
                live: None,
                max_frame: 1514,
                mac: Some([2, 0, 0, 0, 0, id as u8 + 1]),
            },
            role,
            bridge: bridge.map(Into::into),
            vlan,
        }
    }

    #[test]
    fn segments_of_a_vlan_only_bridge() {
        let cfg = SwitchConfig {
            bridges: vec![BridgeConfig { name: "b".into(), vlan: Some(30), ..Default::default() }],
            ports: vec![
                port(0, "up", PortRole::Uplink, None, None),
                port(1, "a", PortRole::Access, Some("b"), Some(10)),
                port(2, "c", PortRole::Access, Some("b"), Some(20)),
                port(3, "d", PortRole::Access, Some("b"), None),
            ],
            ..Default::default()
        };
        let t = Topology::new(&cfg).unwrap();
        assert_eq!(t.segments.len(), 3);
        assert_eq!(t.tag_segment(10), t.ports[1].segment);
        assert_eq!(t.tag_segment(20), t.ports[2].segment);
        assert_eq!(t.tag_segment(30), t.ports[3].segment);
        assert_eq!(t.tag_segment(40), NO_SEGMENT);
    }
}
