//! The uplink's own traffic: tunnels to our VTEP are checked and decapsulated (with the decap
//! stages' code, [`crate::stages::tunnel::DecapCore`]: the outer destination must be our
//! address, the VNI one of a bridge's); ARP requests and neighbour solicitations for our
//! address are answered in place (VPP style: on the lcore, no exception path); ARP replies and
//! advertisements to us become neighbour updates for the control side; 802.1Q frames enter the
//! segment of their tag. Remote VTEPs are solicited from here too, by the lcore that needs one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fastpath_mempool::{Mbuf, PoolCache};
use fastpath_pmd::Ctx;

use crate::stages::tunnel::{self, DecapCore, OuterIp, GENEVE, NVGRE, VXLAN};
use crate::switch::config::TunnelKind;
use crate::switch::event::Event;
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};
use crate::switch::topology::{Topology, NO_SEGMENT};
use crate::switch::vtep::VtepAddr;
use crate::switch::{arp, meta, nd, vlan};
use crate::wire::{ethertype, get_u16, ip_proto, Ipv6Packet};

/// A decap core of any kind.
#[derive(Debug, Clone)]
enum AnyDecap {
    Vxlan(DecapCore<VXLAN>),
    Geneve(DecapCore<GENEVE>),
    Nvgre(DecapCore<NVGRE>),
}

/// One tunnel class as decap sees it.
#[derive(Debug, Clone)]
struct Terminator {
    kind: u8,
    /// UDP port (0 for NVGRE).
    port: u16,
    local: VtepAddr,
    core: AnyDecap,
}

/// What a frame from the uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uplink {
    /// An 802.1Q frame, popped, in this segment.
    Vlan(u16),
    /// A tunnel packet, decapsulated, in this segment (its outer source written where asked).
    Tunnel(u16),
    /// Answered in place: send it back out of the uplink.
    Answered,
    /// Taken in (a neighbour update): free it, it is no drop.
    Consumed,
}

/// The uplink's side of one lcore.
#[derive(Debug)]
pub struct Underlay {
    terms: Box<[Terminator]>,
    locals4: Vec<Ipv4Addr>,
    locals6: Vec<Ipv6Addr>,
}

impl Underlay {
    /// The underlay of `topo`.
    pub fn new(topo: &Topology) -> Underlay {
        let terms = topo
            .classes
            .iter()
            .map(|c| {
                let core = match c.kind {
                    TunnelKind::Vxlan => AnyDecap::Vxlan(DecapCore::new(c.port, None, Vec::new())),
                    TunnelKind::Geneve => AnyDecap::Geneve(DecapCore::new(c.port, None, Vec::new())),
                    TunnelKind::Nvgre => AnyDecap::Nvgre(DecapCore::new(0, None, Vec::new())),
                };
                Terminator { kind: c.kind.code(), port: c.port, local: c.local.into(), core }
            })
            .collect();
        let mut u = Underlay { terms, locals4: Vec::new(), locals6: Vec::new() };
        for l in &topo.locals {
            match l {
                IpAddr::V4(a) => u.locals4.push(*a),
                IpAddr::V6(a) => u.locals6.push(*a),
            }
        }
        u
    }

    /// Classifies a frame from the uplink (at least an Ethernet header in its first segment);
    /// errors are reason codes. A tunnel packet's outer source goes to `outer`.
    #[inline]
    pub fn classify(&self, sw: &mut Sw, m: &mut Mbuf, outer: &mut VtepAddr) -> Result<Uplink, u8> {
        let et = get_u16(m.data(), 12);
        match et {
            ethertype::VLAN => {
                let d = m.data();
                if d.len() < 18 {
                    return Err(reason::RUNT);
                }
                let seg = sw.topo.tag_segment(get_u16(d, 14) & 0x0fff);
                if seg == NO_SEGMENT {
                    return Err(reason::UNKNOWN_VLAN);
                }
                if !vlan::pop(m) {
                    return Err(reason::SHARED_BUFFER);
                }
                Ok(Uplink::Vlan(seg))
            }
            ethertype::IPV4 | ethertype::IPV6 => self.ip(sw, m, outer),
            ethertype::ARP => self.arp(sw, m),
            _ => Err(reason::NOT_FOR_SWITCH),
        }
    }

    /// An IP packet: ND, or a tunnel to us.
    #[inline]
    fn ip(&self, sw: &mut Sw, m: &mut Mbuf, outer: &mut VtepAddr) -> Result<Uplink, u8> {
        let d = m.data();
        let ip = tunnel::outer_ip(d, m.pkt_len())?;
        let v6 = ip.is_v6(d);
        if ip.proto == ip_proto::ICMPV6 && v6 {
            return self.nd(sw, m, &ip);
        }
        let h = &d[ip.l3..];
        let (src, dst) = if v6 {
            (VtepAddr::v6(&h[8..24]), VtepAddr::v6(&h[24..40]))
        } else {
            (VtepAddr::v4(&h[12..16]), VtepAddr::v4(&h[16..20]))
        };
        if !self.terms.iter().any(|t| t.local == dst) {
            return Err(reason::NOT_OUR_VTEP);
        }
        let dport = match d.get(ip.l4 + 2..ip.l4 + 4) {
            Some(p) if ip.proto == ip_proto::UDP => u16::from_be_bytes([p[0], p[1]]),
            _ => 0,
        };
        let gre = ip.proto == ip_proto::GRE;
        let Some(t) =
            self.terms.iter().find(|t| t.local == dst && (t.kind == NVGRE) == gre && (gre || t.port == dport))
        else {
            return Err(reason::NOT_THIS_TUNNEL);
        };
        let (inner, vni) = match &t.core {
            AnyDecap::Vxlan(c) => c.tunnel(m, d, &ip)?,
            AnyDecap::Geneve(c) => c.tunnel(m, d, &ip)?,
            AnyDecap::Nvgre(c) => c.tunnel(m, d, &ip)?,
        };
        let seg = sw.topo.vni_segment(t.kind, vni);
        if seg == NO_SEGMENT {
            return Err(reason::UNKNOWN_VNI);
        }
        tunnel::strip(m, &ip, inner)?;
        sw.c.stat(SwitchStage::Underlay, stat::DECAPSULATED, 1);
        *outer = src;
        Ok(Uplink::Tunnel(seg))
    }

    /// ARP: requests for us are answered, replies to us update the neighbour of the sender.
    fn arp(&self, sw: &mut Sw, m: &mut Mbuf) -> Result<Uplink, u8> {
        let p = arp::Packet::new_checked(m.data().get(14..).unwrap_or(&[])).map_err(|_| reason::ARP_IGNORED)?;
        let (oper, sha, spa, tpa) = (p.oper(), p.sha(), p.spa(), p.tpa());
        if !self.locals4.contains(&tpa) {
            return Err(reason::ARP_IGNORED);
        }
        if sha[0] & 1 == 0 && !spa.is_unspecified() {
            self.neighbour(sw, IpAddr::V4(spa), sha);
        }
        match oper {
            arp::REQUEST => {
                if !m.is_writable() {
                    return Err(reason::SHARED_BUFFER);
                }
                arp::answer(m.data_mut(), sw.topo.uplink_mac, tpa);
                sw.c.stat(SwitchStage::Underlay, stat::ARP_ANSWERED, 1);
                Ok(Uplink::Answered)
            }
            arp::REPLY => Ok(Uplink::Consumed),
            _ => Err(reason::ARP_IGNORED),
        }
    }

    /// ICMPv6: solicitations for us are answered, advertisements update the neighbour.
    fn nd(&self, sw: &mut Sw, m: &mut Mbuf, ip: &OuterIp) -> Result<Uplink, u8> {
        let d = m.data();
        let h = Ipv6Packet::new_unchecked(&d[ip.l3..]);
        let (src, dst, hops) = (h.src_bytes(), h.dst_bytes(), h.hop_limit());
        let icmp = d.get(ip.l4..ip.l4 + ip.l4_len).ok_or(reason::ND_IGNORED)?;
        let msg = nd::parse(icmp, &src, &dst, hops).ok_or(reason::ND_IGNORED)?;
        if !self.locals6.contains(&msg.target) && msg.kind == nd::NS {
            return Err(reason::ND_IGNORED);
        }
        let from = Ipv6Addr::from(src);
        let peer = if msg.kind == nd::NS { from } else { msg.target };
        if let Some(mac) = msg.lladdr.filter(|m| m[0] & 1 == 0) {
            if !peer.is_unspecified() {
                self.neighbour(sw, IpAddr::V6(peer), mac);
            }
        }
        if msg.kind == nd::NA {
            return Ok(Uplink::Consumed);
        }
        // A solicitation for us. Duplicate address detection (from ::) is not answered.
        let eth_src: [u8; 6] = d[6..12].try_into().unwrap_or([0; 6]);
        if from.is_unspecified() || !m.is_writable() || !m.is_contiguous() || !m.set_len(nd::FRAME_LEN) {
            return Err(reason::ND_IGNORED);
        }
        nd::advertise(m.data_mut(), sw.topo.uplink_mac, msg.target, msg.lladdr.unwrap_or(eth_src), from);
        sw.c.stat(SwitchStage::Underlay, stat::ND_ANSWERED, 1);
        Ok(Uplink::Answered)
    }

    /// Tells the control side that `addr` is at `mac`.
    fn neighbour(&self, sw: &mut Sw, addr: IpAddr, mac: [u8; 6]) {
        if sw.send(Event::Neighbour { addr, mac }) {
            sw.c.stat(SwitchStage::Underlay, stat::NEIGH_UPDATES, 1);
        }
    }

    /// An ARP request or neighbour solicitation for VTEP `id`, when this lcore is the one to
    /// send it now (one per VTEP per 100 ms, see [`crate::switch::vtep::Vteps::claim_solicit`]).
    pub fn solicit(&self, sw: &Sw, id: u16, ctx: &mut Ctx) -> Option<Mbuf> {
        if !sw.vteps.claim_solicit(id, sw.now.ns) {
            return None;
        }
        let mut m = solicit_frame(self, sw, id, ctx.cache(&sw.pool))?;
        let up = sw.topo.uplink?;
        m.set_port(up);
        m.set_out_port(up);
        m.set_disposition(meta::DONE);
        sw.c.stat(SwitchStage::Egress, stat::SOLICITATIONS, 1);
        Some(m)
    }
}

fn solicit_frame(u: &Underlay, sw: &Sw, id: u16, cache: &mut PoolCache) -> Option<Mbuf> {
    let mac = sw.topo.uplink_mac;
    let mut m = match sw.vteps.addr(id)? {
        IpAddr::V4(t) => {
            let ours = *u.locals4.first()?;
            let mut m = cache.alloc()?;
            let n = arp::request(m.room_mut(), mac, ours, t);
            m.set_len(n);
            m
        }
        IpAddr::V6(t) => {
            let ours = *u.locals6.first()?;
            let mut m = cache.alloc()?;
            nd::solicit(m.room_mut(), mac, ours, t);
            m.set_len(nd::FRAME_LEN);
            m
        }
    };
    m.set_segment(NO_SEGMENT);
    Some(m)
}
