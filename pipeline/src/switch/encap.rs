//! Encapsulation to remote VTEPs with the tunnel stages' own code
//! ([`crate::stages::tunnel::EncapTemplate`]): one outer header template per tunnel class
//! (kind, UDP port, our address), built from the uplink's MAC and our address; per packet the
//! remote's MAC (its neighbour word), address and the segment's VNI are patched in
//! ([`OuterDest`]), and the outer checksums are done as the uplink can offload them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fastpath_mempool::Mbuf;
use fastpath_pmd::Offloads;

use crate::stages::tunnel::{EncapConfig, EncapTemplate, OuterDest, GENEVE, NVGRE, VXLAN};
use crate::switch::topology::{Class, Topology};
use crate::wire::EthernetAddress;

/// An encap template of any kind and family (the kind and family are const generics of the
/// tunnel code; the switch picks one per segment at run time).
#[derive(Debug)]
pub enum AnyTemplate {
    /// VXLAN over IPv4.
    Vxlan4(Box<EncapTemplate<VXLAN, false>>),
    /// VXLAN over IPv6.
    Vxlan6(Box<EncapTemplate<VXLAN, true>>),
    /// GENEVE over IPv4.
    Geneve4(Box<EncapTemplate<GENEVE, false>>),
    /// GENEVE over IPv6.
    Geneve6(Box<EncapTemplate<GENEVE, true>>),
    /// NVGRE over IPv4.
    Nvgre4(Box<EncapTemplate<NVGRE, false>>),
    /// NVGRE over IPv6.
    Nvgre6(Box<EncapTemplate<NVGRE, true>>),
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            AnyTemplate::Vxlan4($t) => $e,
            AnyTemplate::Vxlan6($t) => $e,
            AnyTemplate::Geneve4($t) => $e,
            AnyTemplate::Geneve6($t) => $e,
            AnyTemplate::Nvgre4($t) => $e,
            AnyTemplate::Nvgre6($t) => $e,
        }
    };
}

/// Work over a template of any kind and family, monomorphised for the one it gets
/// ([`AnyTemplate::with`]): a loop over many packets inside `call` pays the run-time choice of
/// kind once, not per packet.
pub trait WithTemplate {
    /// What the work returns.
    type Out;
    /// Does the work with `t`.
    fn call<const KIND: u8, const V6: bool>(self, t: &EncapTemplate<KIND, V6>) -> Self::Out;
}

impl AnyTemplate {
    /// Runs `f` with the template itself.
    #[inline]
    pub fn with<F: WithTemplate>(&self, f: F) -> F::Out {
        each!(self, t => f.call(t))
    }

    /// The template of `class`, sent from `mac` on a port that offloads `caps`.
    pub fn new(class: &Class, mac: [u8; 6], caps: Offloads) -> AnyTemplate {
        let v6 = class.local.is_ipv6();
        let remote = if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let cfg = EncapConfig {
            kind: class.kind.code(),
            vni: 0,
            local: class.local,
            remote,
            src_mac: EthernetAddress(mac),
            dst_mac: EthernetAddress([0; 6]),
            port: class.port,
            ttl: 64,
            df: false,
            udp_csum: v6,
            options: Vec::new(),
        };
        let off = caps.contains(Offloads::TX_OUTER_UDP_CKSUM);
        match (cfg.kind, v6) {
            (VXLAN, false) => AnyTemplate::Vxlan4(Box::new(EncapTemplate::new(&cfg, off))),
            (VXLAN, true) => AnyTemplate::Vxlan6(Box::new(EncapTemplate::new(&cfg, off))),
            (GENEVE, false) => AnyTemplate::Geneve4(Box::new(EncapTemplate::new(&cfg, off))),
            (GENEVE, true) => AnyTemplate::Geneve6(Box::new(EncapTemplate::new(&cfg, off))),
            (_, false) => AnyTemplate::Nvgre4(Box::new(EncapTemplate::new(&cfg, off))),
            (_, true) => AnyTemplate::Nvgre6(Box::new(EncapTemplate::new(&cfg, off))),
        }
    }

    /// One template per class of `topo`.
    pub fn all(topo: &Topology) -> Box<[AnyTemplate]> {
        let caps = topo.uplink.map_or(Offloads::NONE, |u| topo.ports[u as usize].info.offloads);
        topo.classes.iter().map(|c| AnyTemplate::new(c, topo.uplink_mac, caps)).collect()
    }

    /// Bytes of outer headers.
    #[inline]
    pub fn hdr_len(&self) -> usize {
        each!(self, t => t.hdr_len())
    }

    /// Encapsulates `m` in place for `dest`.
    #[inline]
    pub fn encap(&self, m: &mut Mbuf, ident: u16, dest: &OuterDest) -> Result<(), u8> {
        each!(self, t => t.encap::<true>(m, ident, dest))
    }

    /// Encapsulates the read-only `inner` behind `head` for `dest`.
    #[inline]
    pub fn encap_onto(&self, head: &mut Mbuf, inner: Mbuf, ident: u16, dest: &OuterDest) -> Result<(), (u8, Mbuf)> {
        each!(self, t => t.encap_onto::<true>(head, inner, ident, dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::config::TunnelKind;

    #[test]
    fn header_lengths() {
        let c = |kind, local: &str| Class { kind, port: kind.default_port(), local: local.parse().unwrap() };
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(AnyTemplate::new(&c(TunnelKind::Vxlan, "10.0.0.1"), mac, Offloads::NONE).hdr_len(), 50);
        assert_eq!(AnyTemplate::new(&c(TunnelKind::Vxlan, "2001:db8::1"), mac, Offloads::NONE).hdr_len(), 70);
        assert_eq!(AnyTemplate::new(&c(TunnelKind::Geneve, "10.0.0.1"), mac, Offloads::NONE).hdr_len(), 50);
        assert_eq!(AnyTemplate::new(&c(TunnelKind::Nvgre, "10.0.0.1"), mac, Offloads::NONE).hdr_len(), 42);
    }
}
