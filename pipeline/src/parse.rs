//! The packet-type parser: like DPDK's `rte_net_get_ptype`, it walks the headers of a frame
//! (Ethernet, up to two VLAN tags, IPv4 with options or IPv6 with extension headers, TCP / UDP,
//! and into VXLAN, GENEVE and GRE / NVGRE tunnels) and reports the packet type
//! ([`fastpath_mempool::offload::ptype`]) and the length of each header.
//!
//! It looks at headers only: lengths are checked against the bytes given (the first segment of a
//! chain holds every header), payload lengths are not (a chain may hold the rest). It stops at
//! the first header it cannot read; the packet type then names the layers it did read. It never
//! panics and never allocates.
//!
//! [`Parsed::apply`] writes the result into an mbuf with DPDK's conventions: for a tunnel,
//! `outer_l2_len` / `outer_l3_len` describe the outer Ethernet and IP headers, `l2_len` is outer
//! UDP + tunnel header + inner Ethernet, and `l3_len` / `l4_len` describe the inner packet.

use fastpath_mempool::offload::ptype;
use fastpath_mempool::Mbuf;

use crate::wire::{ethertype, geneve, get_u16, ip_proto, ipv6, vxlan};

/// UDP ports that mark a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelPorts {
    /// VXLAN (4789).
    pub vxlan: u16,
    /// GENEVE (6081).
    pub geneve: u16,
}

impl Default for TunnelPorts {
    fn default() -> Self {
        TunnelPorts { vxlan: vxlan::PORT, geneve: geneve::PORT }
    }
}

/// Header lengths found by the parser (DPDK's `rte_net_hdr_lens`). Zero for a layer not found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HdrLens {
    /// (Outer) L2: Ethernet and VLAN tags.
    pub l2_len: u16,
    /// (Outer) L3: IP header with options / extension headers.
    pub l3_len: u16,
    /// (Outer) L4: TCP header with options, or UDP (the tunnel's UDP for VXLAN / GENEVE).
    pub l4_len: u16,
    /// The tunnel header (VXLAN 8, GENEVE 8 + options, GRE 4..=16).
    pub tunnel_len: u16,
    /// Inner L2.
    pub inner_l2_len: u16,
    /// Inner L3.
    pub inner_l3_len: u16,
    /// Inner L4.
    pub inner_l4_len: u16,
}

/// What the parser found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Packet type (one nibble per layer).
    pub ptype: u32,
    /// Header lengths.
    pub lens: HdrLens,
}

impl Parsed {
    /// True when a tunnel was found.
    pub fn is_tunnel(&self) -> bool {
        self.ptype & ptype::TUNNEL_MASK != 0
    }

    /// Offset of the (outer) L3 header.
    pub fn l3_offset(&self) -> usize {
        self.lens.l2_len as usize
    }

    /// Offset of the (outer) L4 header.
    pub fn l4_offset(&self) -> usize {
        (self.lens.l2_len + self.lens.l3_len) as usize
    }

    /// Offset of the inner frame (after the tunnel header).
    pub fn inner_offset(&self) -> usize {
        self.l4_offset() + (self.lens.l4_len + self.lens.tunnel_len) as usize
    }

    /// Writes packet type and lengths into `m` (DPDK's tunnel conventions, see the module doc).
    /// Lengths too large for their mbuf field are cut to 0 there (they cannot describe a real
    /// header anyway).
    pub fn apply(&self, m: &mut Mbuf) {
        let l = &self.lens;
        m.set_packet_type(self.ptype);
        if self.is_tunnel() {
            m.set_outer_l2_len(u8::try_from(l.l2_len).unwrap_or(0));
            m.set_outer_l3_len(u8::try_from(l.l3_len).unwrap_or(0));
            m.set_l2_len(u8::try_from(l.l4_len + l.tunnel_len + l.inner_l2_len).unwrap_or(0));
            m.set_l3_len(l.inner_l3_len);
            m.set_l4_len(u8::try_from(l.inner_l4_len).unwrap_or(0));
        } else {
            m.set_outer_l2_len(0);
            m.set_outer_l3_len(0);
            m.set_l2_len(u8::try_from(l.l2_len).unwrap_or(0));
            m.set_l3_len(l.l3_len);
            m.set_l4_len(u8::try_from(l.l4_len).unwrap_or(0));
        }
    }
}

/// L2 result: EtherType after the tags, header length, ptype nibble.
#[inline]
pub(crate) fn l2(d: &[u8]) -> Option<(u16, usize, u32)> {
    if d.len() < 14 {
        return None;
    }
    let mut et = get_u16(d, 12);
    let mut off = 14;
    let mut tags = 0u32;
    while (et == ethertype::VLAN || et == ethertype::QINQ) && tags < 2 {
        if d.len() < off + 4 {
            return None;
        }
        et = get_u16(d, off + 2);
        off += 4;
        tags += 1;
    }
    let t = match tags {
        0 => ptype::L2_ETHER,
        1 => ptype::L2_ETHER_VLAN,
        _ => ptype::L2_ETHER_QINQ,
    };
    Some((et, off, t))
}

/// What an L3 header says about the L4 after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct L3 {
    pub proto: u8,
    pub len: usize,
    pub v6: bool,
    pub ext: bool,
    pub fragment: bool,
}

/// Reads the IPv4 or IPv6 header at the start of `d` (EtherType `et`).
#[inline]
pub(crate) fn l3(d: &[u8], et: u16) -> Option<L3> {
    match et {
        ethertype::IPV4 => {
            if d.len() < 20 || d[0] >> 4 != 4 {
                return None;
            }
            let hl = (d[0] & 0x0f) as usize * 4;
            if hl < 20 || d.len() < hl {
                return None;
            }
            let frag = get_u16(d, 6) & 0x3fff != 0;
            Some(L3 { proto: d[9], len: hl, v6: false, ext: hl > 20, fragment: frag })
        }
        ethertype::IPV6 => {
            if d.len() < 40 || d[0] >> 4 != 6 {
                return None;
            }
            let u = ipv6::walk_ext(&d[40..], d[6]).ok()?;
            Some(L3 { proto: u.protocol, len: 40 + u.offset, v6: true, ext: u.has_ext, fragment: u.fragment.is_some() })
        }
        _ => None,
    }
}

/// The L4 nibble (outer or, shifted, inner) and header length for `proto` at the start of `d`.
#[inline]
pub(crate) fn l4(d: &[u8], l3: &L3) -> (u32, usize) {
    if l3.fragment {
        return (ptype::L4_FRAG, 0);
    }
    match l3.proto {
        ip_proto::TCP => {
            if d.len() < 20 {
                return (0, 0);
            }
            let hl = (d[12] >> 4) as usize * 4;
            if hl < 20 || d.len() < hl {
                return (0, 0);
            }
            (ptype::L4_TCP, hl)
        }
        ip_proto::UDP if d.len() >= 8 => (ptype::L4_UDP, 8),
        ip_proto::UDP => (0, 0),
        ip_proto::ICMP | ip_proto::ICMPV6 => (ptype::L4_ICMP, 0),
        _ => (ptype::L4_NONFRAG, 0),
    }
}

pub(crate) fn l3_nibble(l: &L3) -> u32 {
    match (l.v6, l.ext) {
        (false, false) => ptype::L3_IPV4,
        (false, true) => ptype::L3_IPV4_EXT,
        (true, false) => ptype::L3_IPV6,
        (true, true) => ptype::L3_IPV6_EXT,
    }
}

pub(crate) fn inner_l3_nibble(l: &L3) -> u32 {
    match (l.v6, l.ext) {
        (false, false) => ptype::INNER_L3_IPV4,
        (false, true) => ptype::INNER_L3_IPV4_EXT,
        (true, false) => ptype::INNER_L3_IPV6,
        (true, true) => ptype::INNER_L3_IPV6_EXT,
    }
}

/// Parses a frame with the default tunnel ports.
pub fn parse(d: &[u8]) -> Parsed {
    parse_with(d, &TunnelPorts::default())
}

/// Parses the first segment of `m` and writes the result into it ([`Parsed::apply`]).
pub fn classify(m: &mut Mbuf, ports: &TunnelPorts) -> Parsed {
    let p = parse_with(m.data(), ports);
    p.apply(m);
    p
}

/// Parses a frame, recognising tunnels on `ports`.
pub fn parse_with(d: &[u8], ports: &TunnelPorts) -> Parsed {
    let mut out = Parsed::default();
    let Some((et, l2_len, l2t)) = l2(d) else { return out };
    out.ptype = l2t;
    out.lens.l2_len = l2_len as u16;
    let Some(o3) = l3(&d[l2_len..], et) else { return out };
    out.ptype |= l3_nibble(&o3);
    out.lens.l3_len = o3.len as u16;
    let l4_off = l2_len + o3.len;
    let (l4t, l4_len) = l4(&d[l4_off..], &o3);
    out.ptype |= l4t;
    out.lens.l4_len = l4_len as u16;
    // Tunnels.
    let (tunnel, tlen, inner_et) = match (l4t, o3.proto) {
        (ptype::L4_UDP, _) => {
            let dport = get_u16(d, l4_off + 2);
            let t = &d[l4_off + 8..];
            if dport == ports.vxlan && t.len() >= vxlan::HEADER_LEN {
                (ptype::TUNNEL_VXLAN, vxlan::HEADER_LEN, None)
            } else if dport == ports.geneve && t.len() >= geneve::HEADER_LEN {
                let g = geneve::Packet::new_unchecked(t);
                if g.check_len().is_err() {
                    return out;
                }
                (ptype::TUNNEL_GENEVE, g.header_len(), Some(g.protocol()))
            } else {
                return out;
            }
        }
        (ptype::L4_NONFRAG, ip_proto::GRE) => {
            let t = &d[l4_off..];
            let g = crate::wire::GrePacket::new_unchecked(t);
            if g.check_len().is_err() || g.version() != 0 {
                return out;
            }
            let tt = if g.is_nvgre() { ptype::TUNNEL_NVGRE } else { ptype::TUNNEL_GRE };
            out.ptype &= !ptype::L4_MASK;
            (tt, g.header_len(), Some(g.protocol()))
        }
        _ => return out,
    };
    out.ptype |= tunnel;
    out.lens.tunnel_len = tlen as u16;
    let inner_off = l4_off + out.lens.l4_len as usize + tlen;
    let inner = &d[inner_off..];
    // GRE and GENEVE say what they carry; VXLAN always carries Ethernet.
    let et = match inner_et {
        None | Some(ethertype::TEB) => {
            let Some((et, il2, _)) = l2(inner) else { return out };
            out.ptype |= if il2 > 14 { ptype::INNER_L2_ETHER_VLAN } else { ptype::INNER_L2_ETHER };
            out.lens.inner_l2_len = il2 as u16;
            et
        }
        Some(et) => et,
    };
    let i3_off = out.lens.inner_l2_len as usize;
    let Some(i3) = l3(&inner[i3_off..], et) else { return out };
    out.ptype |= inner_l3_nibble(&i3);
    out.lens.inner_l3_len = i3.len as u16;
    let (i4t, i4_len) = l4(&inner[i3_off + i3.len..], &i3);
    // Inner L4 nibbles are the outer ones shifted by 16 bits.
    out.ptype |= i4t << 16;
    out.lens.inner_l4_len = i4_len as u16;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(payload: usize, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 42 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        f[23] = 17;
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        f
    }

    #[test]
    fn plain_udp_and_tcp() {
        let p = parse(&udp4(10, 53));
        assert_eq!(p.ptype, ptype::L2_ETHER | ptype::L3_IPV4 | ptype::L4_UDP);
        assert_eq!((p.lens.l2_len, p.lens.l3_len, p.lens.l4_len), (14, 20, 8));
        let mut t = udp4(20, 0);
        t[23] = 6;
        t[34 + 12] = 0x60; // 24-byte TCP header
        let p = parse(&t);
        assert_eq!(p.ptype, ptype::L2_ETHER | ptype::L3_IPV4 | ptype::L4_TCP);
        assert_eq!(p.lens.l4_len, 24);
        // A fragment has no L4 header to read.
        let mut fr = udp4(10, 53);
        fr[20] = 0x20;
        assert_eq!(parse(&fr).ptype, ptype::L2_ETHER | ptype::L3_IPV4 | ptype::L4_FRAG);
    }

    #[test]
    fn vxlan_with_inner_vlan_tcp() {
        let mut inner = vec![0u8; 18 + 20 + 20];
        inner[12..14].copy_from_slice(&[0x81, 0x00]);
        inner[16..18].copy_from_slice(&[0x08, 0x00]);
        inner[18] = 0x45;
        inner[18 + 9] = 6;
        inner[38 + 12] = 0x50;
        let mut f = udp4(8 + inner.len(), 4789);
        f[42] = 0x08;
        f[50..].copy_from_slice(&inner);
        let p = parse(&f);
        assert_eq!(
            p.ptype,
            ptype::L2_ETHER
                | ptype::L3_IPV4
                | ptype::L4_UDP
                | ptype::TUNNEL_VXLAN
                | ptype::INNER_L2_ETHER_VLAN
                | ptype::INNER_L3_IPV4
                | ptype::INNER_L4_TCP
        );
        assert_eq!(p.lens.tunnel_len, 8);
        assert_eq!((p.lens.inner_l2_len, p.lens.inner_l3_len, p.lens.inner_l4_len), (18, 20, 20));
        assert_eq!(p.inner_offset(), 50);
        // Cut anywhere: never a panic, and the type only names what was read.
        for n in 0..f.len() {
            let q = parse(&f[..n]);
            assert!(q.ptype & !p.ptype == 0, "{n}");
        }
    }

    #[test]
    fn ipv6_with_extension_and_nvgre() {
        // IPv6 + hop-by-hop + GRE(NVGRE) + Ethernet + IPv4/UDP.
        let mut f = vec![0u8; 14 + 40 + 8 + 8 + 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f[20] = 0; // hop-by-hop
        f[54] = 47; // then GRE
        f[62..64].copy_from_slice(&[0x20, 0x00]);
        f[64..66].copy_from_slice(&[0x65, 0x58]);
        f[70 + 12..70 + 14].copy_from_slice(&[0x08, 0x00]);
        f[84] = 0x45;
        f[84 + 9] = 17;
        let p = parse(&f);
        assert_eq!(
            p.ptype,
            ptype::L2_ETHER
                | ptype::L3_IPV6_EXT
                | ptype::TUNNEL_NVGRE
                | ptype::INNER_L2_ETHER
                | ptype::INNER_L3_IPV4
                | ptype::INNER_L4_UDP
        );
        assert_eq!((p.lens.l3_len, p.lens.l4_len, p.lens.tunnel_len), (48, 0, 8));
        assert_eq!(p.inner_offset(), 70);
    }
}
