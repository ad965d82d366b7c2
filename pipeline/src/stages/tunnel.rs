//! VXLAN (RFC 7348), GENEVE (RFC 8926) and NVGRE (RFC 7637) encapsulation and decapsulation.
//!
//! # Encap
//!
//! `vxlan-encap,vni=N,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,port=4789][,ttl=N][,df=on][,udp-csum=on]`,
//! `geneve-encap,...` (the same keys, `port=6081`, plus `option=CLASS:TYPE:HEX`, repeatable) and
//! `nvgre-encap,...` (no `port` nor `udp-csum`: GRE has no UDP; `vni` is the VSID).
//!
//! The outer headers (Ethernet, IPv4 or IPv6 by the family of `local` / `remote`, UDP, tunnel
//! header) are built once, when the stage is made, into a template. Per packet the stage writes
//! the template into the headroom ([`Mbuf::prepend`], no copy of the frame) and patches only what
//! changes: the lengths, the IPv4 identification and header checksum (from the template's
//! precomputed sum: an RFC 1624-style update of two words), the UDP source port (and the IPv6
//! flow label, the NVGRE FlowID) from a hash of the inner flow, and the UDP checksum when one is
//! wanted. The hash covers the inner 5-tuple (addresses, protocol, TCP/UDP ports; addresses and
//! protocol for fragments and other protocols) or, for non-IP frames, the MAC addresses and
//! EtherType; the source port is `49152 + hash % 16384` (RFC 7348 section 5), so a flow always
//! gets the same port. For IPv4 the hash is `fold(mum(A ^ K1, P ^ K2))`: `A` holds the source
//! address as a little-endian `u32` and the destination's two halves as big-endian `u16`s
//! (bits 32..48 and 48..64), `P` the two ports as a little-endian `u32` and the protocol in bits
//! 32..40, `mum` the 128-bit product's halves xored, `fold` the result's halves xored
//! (`pipeline/tests/tunnels.rs` checks the stage against a separate transcription of this).
//!
//! The outer IPv4 header checksum is always right. The outer UDP checksum is 0 over IPv4 unless
//! `udp-csum=on`, and always computed over IPv6 — except when the inner packet still asks for
//! checksum or segmentation work (`TX_IP_CKSUM`, `TX_TCP_CKSUM`, `TX_UDP_CKSUM`, `TX_TCP_SEG`,
//! `TX_UDP_SEG`): its bytes will change, so the outer UDP checksum is left to whoever does that
//! work (the `checksum,mode=offload` or LSO stage, or the port) with `TX_OUTER_UDP_CKSUM`, and the
//! field holds 0. With segmentation asked, `TX_OUTER_IP_CKSUM` is set too (over IPv4), because
//! every segment needs its own outer IPv4 checksum.
//!
//! Metadata after encap (DPDK's conventions, which the LSO and checksum stages rely on):
//!
//! | field | value |
//! | --- | --- |
//! | `ol_flags` | the inner request flags kept, plus `TX_TUNNEL_VXLAN` / `TX_TUNNEL_GENEVE` / `TX_TUNNEL_GRE`, `TX_OUTER_IPV4` or `TX_OUTER_IPV6`, and `TX_OUTER_IP_CKSUM` / `TX_OUTER_UDP_CKSUM` only as said above |
//! | `outer_l2_len` | 14 (outer Ethernet, no tag) |
//! | `outer_l3_len` | 20 (IPv4) or 40 (IPv6) |
//! | `l2_len` | outer UDP (8, none for NVGRE) + tunnel header (VXLAN 8, GENEVE 8 + options, NVGRE 8) + inner Ethernet with its tags |
//! | `l3_len`, `l4_len` | the inner IP header with options / extension headers, the inner TCP header with options or 8 for UDP (0 when absent) |
//! | `packet_type` | `L2_ETHER`, `L3_IPV4`/`L3_IPV6`, `L4_UDP` (not for NVGRE), the tunnel nibble, and the inner L2/L3/L4 nibbles |
//!
//! Drops (counted per reason): `no-headroom` (the outer headers do not fit in front of the
//! frame), `shared-buffer` (a clone's buffer cannot be written), `too-big` (the outer packet
//! would exceed 65535 bytes of IP).
//!
//! # Decap
//!
//! `vxlan-decap[,vni=N][,port=4789]`, `geneve-decap[,vni=N][,port=6081][,option=CLASS:TYPE]...`
//! (the options this endpoint knows: a critical option not listed drops the packet, RFC 8926
//! section 3.5), `nvgre-decap[,vni=N]`. The outer Ethernet may carry up to two VLAN tags, the
//! outer IP header IPv4 with options or IPv6 with extension headers. Every length is checked
//! against the next and against the packet; Ethernet padding behind the outer IP packet is
//! trimmed; a non-zero outer UDP checksum is verified over every segment (a zero one is accepted
//! over IPv6 too, as RFC 6935 allows for tunnels and as OVS does). The outer headers are then
//! stripped ([`Mbuf::adj`]): the inner frame comes out byte for byte, its packet type and lengths
//! parsed afresh, and the tunnel flags cleared.
//!
//! Drop reasons: `not-this-tunnel` (not IP, not UDP to the port / not NVGRE), `wrong-vni`,
//! `truncated` (a header runs past the data, or the inner frame is shorter than Ethernet),
//! `bad-length` (lengths that disagree), `bad-outer-checksum` (IPv4 header or UDP), `bad-flags`
//! (VXLAN without the I flag; NVGRE with C or S set, which RFC 7637 says MUST be zero),
//! `reserved-bits` (GRE bits 1, 4 or 5, which RFC 2784 says to discard on), `bad-version`
//! (GENEVE or GRE version not 0), `unknown-critical-option`, `control-packet` (GENEVE O bit:
//! RFC 8926 says not to forward it), `not-ethernet` (GENEVE protocol other than 0x6558),
//! `outer-fragment` (no reassembly here). A clone (shared buffer) is decapsulated like any
//! packet: stripping moves the mbuf's own window and writes nothing into the buffer.
//!
//! Both directions are one pass over the batch ([`filter`]); nothing allocates and nothing is
//! called through a `dyn` per packet: the tunnel kind and IP version are const generics.
//!
//! # Building blocks
//!
//! The stages are thin wrappers; the switch ([`crate::switch`]) uses the same pieces:
//! [`EncapTemplate`] (the outer headers of one kind and family; `encap` in place, `encap_onto`
//! a read-only clone behind a head mbuf; with `PATCH`, the destination MAC, address and VNI of
//! each packet come from an [`OuterDest`] instead of the template), and on the way in
//! [`outer_ip`] (the outer headers checked, addresses readable with [`OuterIp::addrs`]),
//! [`DecapCore::tunnel`] (the tunnel header checked: inner offset and VNI) and [`strip`];
//! [`DecapCore::decap`] does all three and returns [`Decapsulated`] {VNI, outer source, outer
//! destination}. Drop codes are [`ENCAP_REASONS`] and [`DECAP_REASONS`].

use std::net::IpAddr;
use std::sync::Arc;

use fastpath_mempool::offload::{self, ptype};
use fastpath_mempool::{Batch, Mbuf, HEADROOM};
use fastpath_pmd::{Ctx, Error, Spec};

use crate::checksum::{self, Sum};
use crate::parse;
use crate::stage::{filter, Stage, StageCounters};
use crate::wire::{
    ethertype, geneve, get_u16, gre, ip_proto, EthernetAddress, EthernetPacket, EthernetRepr, GeneveOptionRepr,
    GenevePacket, GeneveRepr, GrePacket, GreRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
    VxlanPacket, VxlanRepr,
};

/// Tunnel kind: VXLAN.
pub const VXLAN: u8 = 0;
/// Tunnel kind: GENEVE.
pub const GENEVE: u8 = 1;
/// Tunnel kind: NVGRE.
pub const NVGRE: u8 = 2;

/// Largest outer header stack (it must fit in the default headroom).
pub const MAX_OUTER_LEN: usize = HEADROOM as usize;

/// The encap spec forms.
pub const ENCAP_FORMS: [&str; 3] = [
    "vxlan-encap,vni=N,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,port=4789][,ttl=N][,df=on][,udp-csum=on]",
    "geneve-encap,vni=N,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,port=6081][,ttl=N][,df=on][,udp-csum=on][,option=CLASS:TYPE:HEX]...",
    "nvgre-encap,vni=VSID,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,ttl=N][,df=on]",
];
/// The decap spec forms.
pub const DECAP_FORMS: [&str; 3] = [
    "vxlan-decap[,vni=N][,port=4789]",
    "geneve-decap[,vni=N][,port=6081][,option=CLASS:TYPE]...",
    "nvgre-decap[,vni=VSID]",
];

/// Settings of an encap stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapConfig {
    /// [`VXLAN`], [`GENEVE`] or [`NVGRE`].
    pub kind: u8,
    /// VNI (VSID for NVGRE), 24 bits.
    pub vni: u32,
    /// Outer source address.
    pub local: IpAddr,
    /// Outer destination address (same family).
    pub remote: IpAddr,
    /// Outer source MAC.
    pub src_mac: EthernetAddress,
    /// Outer destination MAC (the next hop).
    pub dst_mac: EthernetAddress,
    /// UDP destination port (VXLAN, GENEVE).
    pub port: u16,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Set Don't Fragment (IPv4).
    pub df: bool,
    /// Compute the outer UDP checksum over IPv4 (always done over IPv6).
    pub udp_csum: bool,
    /// GENEVE options.
    pub options: Vec<GeneveOptionRepr>,
}

/// A locally administered unicast MAC derived from an address (the default outer MACs).
fn derived_mac(a: &IpAddr) -> EthernetAddress {
    let o = match a {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(v) => {
            let o = v.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    EthernetAddress([0x02, 0x00, o[0], o[1], o[2], o[3]])
}

fn parse_u32_any(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `CLASS:TYPE` (decap) or `CLASS:TYPE:HEX` (encap).
fn parse_option(s: &str, with_data: bool) -> Result<GeneveOptionRepr, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let want = if with_data { 3 } else { 2 };
    if parts.len() != want {
        return Err(if with_data {
            "give CLASS:TYPE:HEX, e.g. 0x0102:0x80:deadbeef (data in 4-byte words)".into()
        } else {
            "give CLASS:TYPE, e.g. 0x0102:0x80".into()
        });
    }
    let class = parse_u32_any(parts[0]).filter(|c| *c <= 0xffff).ok_or("CLASS is a number 0..=0xffff")? as u16;
    let type_ = parse_u32_any(parts[1]).filter(|c| *c <= 0xff).ok_or("TYPE is a number 0..=0xff")? as u8;
    let mut data = Vec::new();
    if with_data {
        let h = parts[2].strip_prefix("0x").unwrap_or(parts[2]);
        if !h.len().is_multiple_of(8) || h.len() / 2 > geneve::MAX_OPTION_DATA {
            return Err(format!("HEX must be whole 4-byte words, at most {} bytes", geneve::MAX_OPTION_DATA));
        }
        for i in (0..h.len()).step_by(2) {
            data.push(u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| format!("'{h}' is not hexadecimal"))?);
        }
    }
    Ok(GeneveOptionRepr { class, type_, data })
}

impl EncapConfig {
    /// Reads the settings from an encap spec (the name tells the kind).
    pub fn from_spec(kind: u8, s: &mut Spec) -> Result<EncapConfig, Error> {
        let ip = |v: &str| v.parse::<IpAddr>().map_err(|_| "expected an IPv4 or IPv6 address".to_string());
        let mac = |v: &str| v.parse::<EthernetAddress>();
        let vni = s.take_num("vni", 0u32, 0x00ff_ffff)?;
        let local = s.take_with("local", ip)?;
        let remote = s.take_with("remote", ip)?;
        let src_mac = s.take_with("src-mac", mac)?;
        let dst_mac = s.take_with("dst-mac", mac)?;
        let port = if kind == NVGRE { None } else { s.take_num("port", 1u16, u16::MAX)? };
        let ttl = s.take_num("ttl", 1u8, 255)?.unwrap_or(64);
        let df = s.take_bool("df")?;
        let udp_csum = if kind == NVGRE { None } else { s.take_bool("udp-csum")? };
        let mut options = Vec::new();
        if kind == GENEVE {
            for o in s.take_all("option")? {
                options.push(parse_option(&o, true).map_err(|e| s.error(&format!("option={o}: {e}"), None))?);
            }
        }
        s.finish(false)?;
        let (Some(vni), Some(local), Some(remote)) = (vni, local, remote) else {
            return Err(s.error("vni, local and remote are required", None));
        };
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(s.error(&format!("local={local} and remote={remote} are of different families"), None));
        }
        if local.is_ipv6() && df.is_some() {
            return Err(s.error("df applies to an IPv4 outer header only (IPv6 never fragments on the way)", None));
        }
        if local.is_ipv6() && udp_csum == Some(false) {
            return Err(s.error("udp-csum=off: the outer UDP checksum is always computed over IPv6", None));
        }
        if src_mac.is_some_and(|m| m.is_multicast()) {
            return Err(s.error("src-mac must be a unicast address", None));
        }
        let cfg = EncapConfig {
            kind,
            vni,
            local,
            remote,
            src_mac: src_mac.unwrap_or_else(|| derived_mac(&local)),
            dst_mac: dst_mac.unwrap_or_else(|| derived_mac(&remote)),
            port: port.unwrap_or(if kind == GENEVE { geneve::PORT } else { crate::wire::vxlan::PORT }),
            ttl,
            df: df.unwrap_or(false),
            udp_csum: udp_csum.unwrap_or(false) || local.is_ipv6(),
            options,
        };
        let opt_len: usize = cfg.options.iter().map(|o| 4 + o.data.len()).sum();
        let room = MAX_OUTER_LEN - cfg.base_len();
        if opt_len > geneve::MAX_OPTIONS_LEN.min(room) {
            return Err(s.error(
                &format!(
                    "the options take {opt_len} bytes; at most {} fit (GENEVE's 252, and the outer headers must fit the {} bytes of headroom)",
                    geneve::MAX_OPTIONS_LEN.min(room),
                    HEADROOM
                ),
                None,
            ));
        }
        Ok(cfg)
    }

    fn l3_len(&self) -> usize {
        if self.local.is_ipv6() {
            40
        } else {
            20
        }
    }

    fn base_len(&self) -> usize {
        14 + self.l3_len() + if self.kind == NVGRE { gre::NVGRE_HEADER_LEN } else { 8 + 8 }
    }

    /// Length of the tunnel header (GENEVE with its options).
    pub fn tunnel_len(&self) -> usize {
        match self.kind {
            VXLAN => 8,
            GENEVE => 8 + self.options.iter().map(|o| 4 + o.data.len()).sum::<usize>(),
            _ => gre::NVGRE_HEADER_LEN,
        }
    }

    /// Length of the outer headers the stage prepends.
    pub fn outer_len(&self) -> usize {
        14 + self.l3_len() + if self.kind == NVGRE { 0 } else { 8 } + self.tunnel_len()
    }

    /// The outer header template, with lengths, identification, checksums and source port 0.
    pub fn template(&self) -> Vec<u8> {
        let mut t = vec![0u8; self.outer_len()];
        let et = if self.local.is_ipv6() { ethertype::IPV6 } else { ethertype::IPV4 };
        EthernetRepr { src_addr: self.src_mac, dst_addr: self.dst_mac, ethertype: et }
            .emit(&mut EthernetPacket::new_unchecked(&mut t[..]));
        let proto = if self.kind == NVGRE { ip_proto::GRE } else { ip_proto::UDP };
        match (self.local, self.remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let r = Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    protocol: proto,
                    payload_len: 0,
                    ttl: self.ttl,
                    tos: 0,
                    ident: 0,
                    dont_frag: self.df,
                };
                let mut p = Ipv4Packet::new_unchecked(&mut t[14..]);
                r.emit(&mut p);
                p.set_total_len(0);
                p.set_checksum(0);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let r = Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: proto,
                    payload_len: 0,
                    hop_limit: self.ttl,
                    traffic_class: 0,
                    flow_label: 0,
                };
                r.emit(&mut Ipv6Packet::new_unchecked(&mut t[14..]));
            }
            _ => unreachable!("families are checked in from_spec"),
        }
        let l4 = 14 + self.l3_len();
        let tun = if self.kind == NVGRE {
            l4
        } else {
            UdpRepr { src_port: 0, dst_port: self.port, payload_len: 0 }
                .emit(&mut UdpPacket::new_unchecked(&mut t[l4..]));
            UdpPacket::new_unchecked(&mut t[l4..]).set_len(0);
            l4 + 8
        };
        match self.kind {
            VXLAN => VxlanRepr { vni: self.vni }.emit(&mut VxlanPacket::new_unchecked(&mut t[tun..])),
            GENEVE => GeneveRepr { vni: self.vni, protocol: ethertype::TEB, oam: false, options: self.options.clone() }
                .emit(&mut GenevePacket::new_unchecked(&mut t[tun..])),
            _ => GreRepr::nvgre(self.vni, 0).emit(&mut GrePacket::new_unchecked(&mut t[tun..])),
        }
        t
    }
}

/// What encap learns about the inner frame (and decap about the frame it delivers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InnerInfo {
    /// Ethernet with tags.
    pub l2_len: u16,
    /// IP header (0 when not IP).
    pub l3_len: u16,
    /// TCP / UDP header (0 when neither).
    pub l4_len: u16,
    /// The packet type of the frame on its own (L2/L3/L4 nibbles).
    pub ptype: u32,
    /// The same layers as the inner nibbles of a tunnel packet type.
    pub inner_ptype: u32,
    /// The flow hash.
    pub hash: u32,
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;
const K3: u64 = 0x94d0_49bb_1331_11eb;

/// Multiply-fold: the 128-bit product of two words, its halves xored (one `mul`).
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    r as u64 ^ (r >> 64) as u64
}

/// The flow hash of an address word and a protocol/ports word.
#[inline(always)]
fn flow_hash(addrs: u64, l4: u64) -> u32 {
    let h = mum(addrs ^ K1, l4 ^ K2);
    (h ^ (h >> 32)) as u32
}

#[inline(always)]
fn le64(d: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline(always)]
fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// IPv4 source and destination at `at`, as one word: a 32-bit and two 16-bit loads, so that no
/// load straddles a 32-byte boundary of the frame (where the copy into the mbuf may have split
/// its stores, which would stall store-to-load forwarding).
#[inline(always)]
fn v4_addrs(d: &[u8], at: usize) -> u64 {
    le32(d, at) as u64 | (get_u16(d, at + 4) as u64) << 32 | (get_u16(d, at + 6) as u64) << 48
}

/// The inner nibbles for a frame's own L2/L3/L4 nibbles.
#[inline(always)]
fn to_inner(t: u32) -> u32 {
    let l2 = match t & ptype::L2_MASK {
        0 => 0,
        ptype::L2_ETHER => ptype::INNER_L2_ETHER,
        _ => ptype::INNER_L2_ETHER_VLAN,
    };
    let l3 = match t & ptype::L3_MASK {
        ptype::L3_IPV4 => ptype::INNER_L3_IPV4,
        ptype::L3_IPV4_EXT => ptype::INNER_L3_IPV4_EXT,
        ptype::L3_IPV6 => ptype::INNER_L3_IPV6,
        ptype::L3_IPV6_EXT => ptype::INNER_L3_IPV6_EXT,
        _ => 0,
    };
    l2 | l3 | ((t & ptype::L4_MASK) << 16)
}

/// Parses a frame's headers and hashes its flow (see the module doc). Never panics. The common
/// case (untagged Ethernet, IPv4 without options, TCP or UDP) takes a straight path.
#[inline(always)]
pub fn inner_info(d: &[u8]) -> InnerInfo {
    frame_info::<true>(d)
}

/// [`inner_info`], with the hash only when `HASH`.
#[inline(always)]
fn frame_info<const HASH: bool>(d: &[u8]) -> InnerInfo {
    if d.len() >= 42 && get_u16(d, 12) == ethertype::IPV4 && d[14] == 0x45 && get_u16(d, 20) & 0x3fff == 0 {
        let proto = d[23];
        let l4 = match proto {
            ip_proto::UDP => Some((ptype::L4_UDP, 8u16)),
            ip_proto::TCP if d.len() >= 54 && d[46] >> 4 >= 5 && d.len() >= 34 + (d[46] >> 4) as usize * 4 => {
                Some((ptype::L4_TCP, (d[46] >> 4) as u16 * 4))
            }
            _ => None,
        };
        if let Some((t, l4_len)) = l4 {
            let hash = if HASH { flow_hash(v4_addrs(d, 26), le32(d, 34) as u64 | (proto as u64) << 32) } else { 0 };
            let pt = ptype::L2_ETHER | ptype::L3_IPV4 | t;
            return InnerInfo { l2_len: 14, l3_len: 20, l4_len, ptype: pt, inner_ptype: to_inner(pt), hash };
        }
    }
    inner_info_slow(d)
}

#[inline(never)]
fn inner_info_slow(d: &[u8]) -> InnerInfo {
    let mut out = InnerInfo::default();
    let Some((et, l2, l2t)) = parse::l2(d) else {
        // Shorter than Ethernet: hash what there is.
        let mut x = 0u64;
        for (i, &b) in d.iter().take(8).enumerate() {
            x |= (b as u64) << (8 * i);
        }
        let mut y = d.len() as u64;
        for (i, &b) in d.iter().skip(8).take(6).enumerate() {
            y |= (b as u64) << (8 * i + 8);
        }
        out.hash = flow_hash(x, y);
        return out;
    };
    out.l2_len = l2 as u16;
    out.ptype = l2t;
    let h = match parse::l3(&d[l2..], et) {
        Some(l3) => {
            out.l3_len = l3.len as u16;
            out.ptype |= parse::l3_nibble(&l3);
            let (t, l4) = parse::l4(&d[l2 + l3.len..], &l3);
            out.l4_len = l4 as u16;
            out.ptype |= t;
            let addrs = if l3.v6 {
                let a = l2 + 8;
                mum(le64(d, a) ^ K1, le64(d, a + 8) ^ K2) ^ mum(le64(d, a + 16) ^ K3, le64(d, a + 24) ^ K1)
            } else {
                v4_addrs(d, l2 + 12)
            };
            let ports = if t == ptype::L4_TCP || t == ptype::L4_UDP { le32(d, l2 + l3.len) as u64 } else { 0 };
            flow_hash(addrs, ports | (l3.proto as u64) << 32)
        }
        None => flow_hash(le64(d, 0), le32(d, 8) as u64 | (et as u64) << 32),
    };
    out.inner_ptype = to_inner(out.ptype);
    out.hash = h;
    out
}

/// The outer UDP source port for a flow hash: 49152..=65535.
#[inline(always)]
pub fn source_port(hash: u32) -> u16 {
    0xc000 | (hash as u16 & 0x3fff)
}

/// Encap drop reason: the outer headers do not fit in front of the frame.
pub const E_NO_HEADROOM: u8 = 0;
/// Encap drop reason: the frame's buffer is shared with a clone and cannot be written.
pub const E_SHARED: u8 = 1;
/// Encap drop reason: the outer IP packet would exceed 65535 bytes.
pub const E_TOO_BIG: u8 = 2;
/// Encap drop reasons, by code.
pub const ENCAP_REASONS: &[&str] = &["no-headroom", "shared-buffer", "too-big"];

/// Inner requests whose work changes the inner bytes after encap.
const INNER_PENDING: u64 =
    offload::TX_IP_CKSUM | offload::TX_TCP_CKSUM | offload::TX_UDP_CKSUM | offload::TX_TCP_SEG | offload::TX_UDP_SEG;

/// What one packet's outer headers may take from its destination instead of the template: the
/// next hop's MAC, the remote address and the VNI (a switch encapsulates to many remote VTEPs
/// with one template per tunnel kind and family). The encap stage, with one remote, patches
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OuterDest {
    /// Outer destination MAC (the remote's, or its next hop's).
    pub dst_mac: [u8; 6],
    /// Outer destination address: IPv4 in the first 4 bytes, or IPv6.
    pub dst_ip: [u8; 16],
    /// One's-complement sum of the address's 16-bit words (see [`OuterDest::new`]).
    pub dst_sum: u32,
    /// VNI (VSID for NVGRE).
    pub vni: u32,
}

impl OuterDest {
    /// The destination `addr` behind `mac`, in `vni`.
    pub fn new(addr: IpAddr, mac: [u8; 6], vni: u32) -> OuterDest {
        let mut dst_ip = [0u8; 16];
        let n = match addr {
            IpAddr::V4(a) => {
                dst_ip[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                dst_ip.copy_from_slice(&a.octets());
                16
            }
        };
        OuterDest { dst_mac: mac, dst_ip, dst_sum: checksum::sum(&dst_ip[..n]) as u32, vni }
    }
}

/// The immutable part of an encapsulation (one tunnel kind and outer family): the outer header
/// template, its precomputed sums, and the metadata every packet gets. The encap stages use
/// one with their whole configuration in it; the switch uses one per tunnel class, patching
/// each packet's destination ([`OuterDest`]) in with `PATCH`. Shared by the two, so that both
/// write the same headers the same way.
#[derive(Debug)]
pub struct EncapTemplate<const KIND: u8, const V6: bool> {
    tmpl: [u8; MAX_OUTER_LEN],
    len: usize,
    /// One's-complement sum of the template's IPv4 header (lengths, id and checksum 0).
    ip_sum: u32,
    /// Pseudo-header sum without the length (addresses and protocol).
    pseudo: u32,
    udp_csum: bool,
    /// The output port computes the outer UDP checksum: request it instead of computing it.
    udp_offload: bool,
    l2_base: u16,
    flags: u64,
    ptype: u32,
}

impl<const KIND: u8, const V6: bool> EncapTemplate<KIND, V6> {
    const L3: usize = if V6 { 40 } else { 20 };
    const L4: usize = 14 + Self::L3;

    /// A template for `cfg` (its kind and family must match `KIND` and `V6`). With
    /// `udp_offload`, a wanted outer UDP checksum is left to the output port
    /// (`TX_OUTER_UDP_CKSUM`, field 0).
    pub fn new(cfg: &EncapConfig, udp_offload: bool) -> Self {
        debug_assert!(cfg.kind == KIND && cfg.local.is_ipv6() == V6);
        let t = cfg.template();
        let mut tmpl = [0u8; MAX_OUTER_LEN];
        tmpl[..t.len()].copy_from_slice(&t);
        let ip_sum = if V6 { 0 } else { checksum::sum(&t[14..34]) as u32 };
        let proto = if KIND == NVGRE { ip_proto::GRE } else { ip_proto::UDP };
        let pseudo = match (cfg.local, cfg.remote) {
            (IpAddr::V4(a), IpAddr::V4(b)) => checksum::pseudo_v4(a.octets(), b.octets(), proto, 0),
            (IpAddr::V6(a), IpAddr::V6(b)) => checksum::pseudo_v6(&a.octets(), &b.octets(), proto, 0),
            _ => 0,
        } as u32;
        let (tun_flag, tun_ptype) = match KIND {
            VXLAN => (offload::TX_TUNNEL_VXLAN, ptype::TUNNEL_VXLAN | ptype::L4_UDP),
            GENEVE => (offload::TX_TUNNEL_GENEVE, ptype::TUNNEL_GENEVE | ptype::L4_UDP),
            _ => (offload::TX_TUNNEL_GRE, ptype::TUNNEL_NVGRE),
        };
        let (ip_flag, ip_ptype) =
            if V6 { (offload::TX_OUTER_IPV6, ptype::L3_IPV6) } else { (offload::TX_OUTER_IPV4, ptype::L3_IPV4) };
        EncapTemplate {
            tmpl,
            len: t.len(),
            ip_sum,
            pseudo,
            udp_csum: cfg.udp_csum,
            udp_offload,
            l2_base: (t.len() - Self::L4) as u16,
            flags: tun_flag | ip_flag,
            ptype: ptype::L2_ETHER | ip_ptype | tun_ptype,
        }
    }

    /// The outer header length: a constant for VXLAN and NVGRE, so that the copy is inlined.
    #[inline(always)]
    pub fn hdr_len(&self) -> usize {
        match KIND {
            VXLAN => Self::L4 + 16,
            NVGRE => Self::L4 + gre::NVGRE_HEADER_LEN,
            _ => self.len,
        }
    }

    /// Encapsulates `m` in place: the outer headers go into its headroom (see the module doc).
    /// With `PATCH`, `dest` replaces the template's destination MAC, address and VNI.
    #[inline(always)]
    pub fn encap<const PATCH: bool>(&self, m: &mut Mbuf, ident: u16, dest: &OuterDest) -> Result<(), u8> {
        let n = self.hdr_len();
        let ip_total = m.pkt_len() + n - 14;
        if ip_total > u16::MAX as usize {
            return Err(E_TOO_BIG);
        }
        let info = inner_info(m.data());
        let pending = m.ol_flags() & INNER_PENDING;
        let Some(h) = m.prepend(n) else { return Err(if m.is_writable() { E_NO_HEADROOM } else { E_SHARED }) };
        let flags = self.write::<PATCH>(h, ip_total, ident, info.hash, pending, dest);
        self.finish(m, flags, pending, &info, if PATCH { dest.dst_sum } else { 0 });
        Ok(())
    }

    /// Encapsulates `inner` (whose buffer may be shared: a clone) behind `head`, a fresh empty
    /// mbuf that gets the outer headers, `inner`'s metadata and `inner` as its tail. On error
    /// `inner` comes back.
    #[inline]
    pub fn encap_onto<const PATCH: bool>(
        &self,
        head: &mut Mbuf,
        inner: Mbuf,
        ident: u16,
        dest: &OuterDest,
    ) -> Result<(), (u8, Mbuf)> {
        let n = self.hdr_len();
        let ip_total = inner.pkt_len() + n - 14;
        if ip_total > u16::MAX as usize {
            return Err((E_TOO_BIG, inner));
        }
        let info = inner_info(inner.data());
        let pending = inner.ol_flags() & INNER_PENDING;
        let Some(h) = head.append(n) else { return Err((E_NO_HEADROOM, inner)) };
        let flags = self.write::<PATCH>(h, ip_total, ident, info.hash, pending, dest);
        fastpath_mempool::copy_metadata(&inner, head);
        head.chain(inner).map_err(|i| (E_TOO_BIG, i))?;
        self.finish(head, flags, pending, &info, if PATCH { dest.dst_sum } else { 0 });
        Ok(())
    }

    /// Writes the outer headers into `h` (`hdr_len()` bytes) for an IP packet of `ip_total`
    /// bytes; returns the `ol_flags` the packet gets.
    #[inline(always)]
    fn write<const PATCH: bool>(
        &self,
        h: &mut [u8],
        ip_total: usize,
        ident: u16,
        hash: u32,
        pending: u64,
        dest: &OuterDest,
    ) -> u64 {
        let n = h.len();
        copy_header(h, &self.tmpl[..n]);
        let mut flags = self.flags;
        let mut dst_sum = 0;
        if PATCH {
            h[..6].copy_from_slice(&dest.dst_mac);
            let (at, len) = if V6 { (14 + 24, 16) } else { (14 + 16, 4) };
            h[at..at + len].copy_from_slice(&dest.dst_ip[..len]);
            let (vni_at, vni) = if KIND == NVGRE { (Self::L4 + 4, dest.vni) } else { (Self::L4 + 12, dest.vni) };
            h[vni_at..vni_at + 3].copy_from_slice(&vni.to_be_bytes()[1..]);
            dst_sum = dest.dst_sum;
        }
        let l4_len = (ip_total - Self::L3) as u16;
        if V6 {
            h[18..20].copy_from_slice(&l4_len.to_be_bytes());
            // Flow label from the inner flow (RFC 6438), version and class from the template.
            let fl = hash & 0x000f_ffff;
            h[15] = (h[15] & 0xf0) | (fl >> 16) as u8;
            h[16] = (fl >> 8) as u8;
            h[17] = fl as u8;
        } else {
            h[16..18].copy_from_slice(&(ip_total as u16).to_be_bytes());
            h[18..20].copy_from_slice(&ident.to_be_bytes());
            // Template sum + a few words: under 2^19, so two folds suffice.
            let mut c = self.ip_sum + dst_sum + ip_total as u32 + ident as u32;
            c = (c & 0xffff) + (c >> 16);
            c = (c & 0xffff) + (c >> 16);
            let c = !(c as u16);
            h[24..26].copy_from_slice(&c.to_be_bytes());
            if pending & offload::TX_SEG_MASK != 0 {
                flags |= offload::TX_OUTER_IP_CKSUM;
            }
        }
        let l4 = Self::L4;
        if KIND == NVGRE {
            // The FlowID: the low byte of the key.
            h[l4 + 7] = (hash >> 16) as u8;
        } else {
            h[l4..l4 + 2].copy_from_slice(&source_port(hash).to_be_bytes());
            h[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
            if self.udp_csum && (pending != 0 || self.udp_offload) {
                flags |= offload::TX_OUTER_UDP_CKSUM;
            }
        }
        flags
    }

    /// Completes an encapsulated packet: the outer UDP checksum when it is computed here, and
    /// the metadata of the module doc. `dst_sum`: the patched destination address's sum.
    #[inline(always)]
    fn finish(&self, m: &mut Mbuf, flags: u64, pending: u64, info: &InnerInfo, dst_sum: u32) {
        if KIND != NVGRE && self.udp_csum && pending == 0 && !self.udp_offload {
            let l4 = Self::L4;
            let l4_len = m.pkt_len() - l4;
            // Pseudo-header (with the length) + UDP header + payload, over every segment.
            let mut s = Sum::new(checksum::fold(self.pseudo as u64 + dst_sum as u64 + l4_len as u64));
            let _ = checksum::add_chain(&mut s, m, l4, l4_len);
            let c = checksum::udp_wire(s.checksum());
            if let Some(d) = m.data_mut().get_mut(l4 + 6..l4 + 8) {
                d.copy_from_slice(&c.to_be_bytes());
            }
        }
        m.set_ol_flags(
            (m.ol_flags() & !(offload::TX_TUNNEL_MASK | offload::TX_OUTER_IPV4 | offload::TX_OUTER_IPV6)) | flags,
        );
        m.set_outer_l2_len(14);
        m.set_outer_l3_len(Self::L3 as u8);
        m.set_l2_len(u8::try_from(self.l2_base + info.l2_len).unwrap_or(0));
        m.set_l3_len(info.l3_len);
        m.set_l4_len(info.l4_len as u8);
        m.set_packet_type(self.ptype | info.inner_ptype);
    }
}

/// The per-packet state of an encap stage: its template and the IPv4 identification.
#[derive(Debug)]
struct EncapCore<const KIND: u8, const V6: bool> {
    t: EncapTemplate<KIND, V6>,
    ident: u16,
}

impl<const KIND: u8, const V6: bool> EncapCore<KIND, V6> {
    fn new(cfg: &EncapConfig) -> Self {
        EncapCore { t: EncapTemplate::new(cfg, false), ident: 0 }
    }

    #[inline(always)]
    fn encap(&mut self, m: &mut Mbuf) -> Result<(), u8> {
        let ident = self.ident;
        self.ident = self.ident.wrapping_add(1);
        self.t.encap::<false>(m, ident, &OuterDest::default())
    }
}

/// Copies an outer header stack of 32 bytes or more (always: Ethernet + IPv4 + GRE is 42) as
/// 32-byte moves, the last one overlapping, so that a length known only at run time (GENEVE
/// with options) still takes a few inlined moves instead of a call to `memcpy`.
#[inline(always)]
fn copy_header(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    if n < 32 {
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let mut at = 0;
    while at + 32 < n {
        dst[at..at + 32].copy_from_slice(&src[at..at + 32]);
        at += 32;
    }
    dst[n - 32..n].copy_from_slice(&src[n - 32..n]);
}

/// An encap stage for one tunnel kind and outer IP version.
#[derive(Debug)]
pub struct Encap<const KIND: u8, const V6: bool> {
    name: &'static str,
    counters: Arc<StageCounters>,
    core: EncapCore<KIND, V6>,
}

impl<const KIND: u8, const V6: bool> Encap<KIND, V6> {
    /// A stage for `cfg` (its kind and family must match `KIND` and `V6`).
    pub fn new(name: &'static str, cfg: &EncapConfig) -> Self {
        debug_assert!(cfg.kind == KIND && cfg.local.is_ipv6() == V6);
        Encap { name, counters: StageCounters::new(name, ENCAP_REASONS), core: EncapCore::new(cfg) }
    }
}

impl<const KIND: u8, const V6: bool> Stage for Encap<KIND, V6> {
    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        filter(batch, ctx, &self.counters, |m| self.core.encap(m));
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

/// Builds an encap stage from its spec (`NAME` tells the kind).
pub fn encap_from_spec(kind: u8, s: &mut Spec) -> Result<Box<dyn Stage>, Error> {
    let cfg = EncapConfig::from_spec(kind, s)?;
    Ok(encap_stage(&cfg))
}

/// Builds an encap stage for `cfg`.
pub fn encap_stage(cfg: &EncapConfig) -> Box<dyn Stage> {
    let v6 = cfg.local.is_ipv6();
    match (cfg.kind, v6) {
        (VXLAN, false) => Box::new(Encap::<VXLAN, false>::new("vxlan-encap", cfg)),
        (VXLAN, true) => Box::new(Encap::<VXLAN, true>::new("vxlan-encap", cfg)),
        (GENEVE, false) => Box::new(Encap::<GENEVE, false>::new("geneve-encap", cfg)),
        (GENEVE, true) => Box::new(Encap::<GENEVE, true>::new("geneve-encap", cfg)),
        (_, false) => Box::new(Encap::<NVGRE, false>::new("nvgre-encap", cfg)),
        (_, true) => Box::new(Encap::<NVGRE, true>::new("nvgre-encap", cfg)),
    }
}

// ---------------------------------------------------------------- decap

/// Decap drop reasons, by code.
pub const DECAP_REASONS: &[&str] = &[
    "not-this-tunnel",
    "wrong-vni",
    "truncated",
    "bad-length",
    "bad-outer-checksum",
    "bad-flags",
    "reserved-bits",
    "bad-version",
    "unknown-critical-option",
    "control-packet",
    "not-ethernet",
    "outer-fragment",
];
const D_NOT_TUNNEL: u8 = 0;
const D_WRONG_VNI: u8 = 1;
const D_TRUNCATED: u8 = 2;
const D_BAD_LENGTH: u8 = 3;
const D_BAD_CSUM: u8 = 4;
const D_BAD_FLAGS: u8 = 5;
const D_RESERVED: u8 = 6;
const D_BAD_VERSION: u8 = 7;
const D_UNKNOWN_CRIT: u8 = 8;
const D_CONTROL: u8 = 9;
const D_NOT_ETHERNET: u8 = 10;
const D_FRAGMENT: u8 = 11;

/// Settings of a decap stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapConfig {
    /// [`VXLAN`], [`GENEVE`] or [`NVGRE`].
    pub kind: u8,
    /// Accept only this VNI (VSID).
    pub vni: Option<u32>,
    /// UDP port (VXLAN, GENEVE).
    pub port: u16,
    /// GENEVE options this endpoint knows (class, type), critical or not.
    pub known_options: Vec<(u16, u8)>,
}

impl DecapConfig {
    /// Reads the settings from a decap spec.
    pub fn from_spec(kind: u8, s: &mut Spec) -> Result<DecapConfig, Error> {
        let vni = s.take_num("vni", 0u32, 0x00ff_ffff)?;
        let port = if kind == NVGRE { None } else { s.take_num("port", 1u16, u16::MAX)? };
        let mut known_options = Vec::new();
        if kind == GENEVE {
            for o in s.take_all("option")? {
                let r = parse_option(&o, false).map_err(|e| s.error(&format!("option={o}: {e}"), None))?;
                known_options.push((r.class, r.type_));
            }
        }
        s.finish(false)?;
        Ok(DecapConfig {
            kind,
            vni,
            port: port.unwrap_or(if kind == GENEVE { geneve::PORT } else { crate::wire::vxlan::PORT }),
            known_options,
        })
    }
}

/// The decapsulation of one tunnel kind: the checks and the stripping, used by the decap
/// stages and by the switch (which reads the outer addresses in between, see [`outer_ip`]).
#[derive(Debug, Clone)]
pub struct DecapCore<const KIND: u8> {
    vni: Option<u32>,
    port: u16,
    known: Vec<(u16, u8)>,
}

/// The outer IP header as decap sees it (checked by [`outer_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct OuterIp {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 (tunnel) header.
    pub l4: usize,
    /// L4 protocol.
    pub proto: u8,
    /// L4 length by the IP header.
    pub l4_len: usize,
}

/// What decapsulation found in the outer headers it removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated {
    /// The VNI (VSID for NVGRE).
    pub vni: u32,
    /// Outer source address: the remote VTEP.
    pub src: IpAddr,
    /// Outer destination address: it should be ours.
    pub dst: IpAddr,
}

impl OuterIp {
    /// True for an IPv6 outer header (in the frame `d` it was read from).
    #[inline(always)]
    pub fn is_v6(&self, d: &[u8]) -> bool {
        d[self.l3] >> 4 == 6
    }

    /// The outer source and destination addresses, read from the frame `d`.
    #[inline(always)]
    pub fn addrs(&self, d: &[u8]) -> (IpAddr, IpAddr) {
        let h = &d[self.l3..];
        if self.is_v6(d) {
            let p = Ipv6Packet::new_unchecked(h);
            (IpAddr::from(p.src_bytes()), IpAddr::from(p.dst_bytes()))
        } else {
            (IpAddr::from([h[12], h[13], h[14], h[15]]), IpAddr::from([h[16], h[17], h[18], h[19]]))
        }
    }

    /// The pseudo-header sum (only needed for a UDP checksum, so computed late).
    fn pseudo(&self, d: &[u8]) -> u16 {
        let h = &d[self.l3..];
        if h[0] >> 4 == 4 {
            checksum::pseudo_v4(
                [h[12], h[13], h[14], h[15]],
                [h[16], h[17], h[18], h[19]],
                self.proto,
                self.l4_len as u32,
            )
        } else {
            let p = Ipv6Packet::new_unchecked(h);
            checksum::pseudo_v6(&p.src_bytes(), &p.dst_bytes(), self.proto, self.l4_len as u32)
        }
    }
}

/// Reads and checks the outer Ethernet and IP headers of a frame of `pkt_len` bytes whose first
/// segment is `d`: the straight path for untagged Ethernet and IPv4 without options, the general
/// one otherwise. Errors are decap reason codes ([`DECAP_REASONS`]).
#[inline(always)]
pub fn outer_ip(d: &[u8], pkt_len: usize) -> Result<OuterIp, u8> {
    if let Some(ip) = d.get(14..34) {
        if get_u16(d, 12) == ethertype::IPV4 && ip[0] == 0x45 {
            let tl = get_u16(ip, 2) as usize;
            if tl < 20 || 14 + tl > pkt_len {
                return Err(D_BAD_LENGTH);
            }
            if checksum::sum20(ip.try_into().unwrap_or(&[0; 20])) != 0xffff {
                return Err(D_BAD_CSUM);
            }
            if get_u16(ip, 6) & 0x3fff != 0 {
                return Err(D_FRAGMENT);
            }
            return Ok(OuterIp { l3: 14, l4: 34, proto: ip[9], l4_len: tl - 20 });
        }
    }
    outer_ip_slow(d, pkt_len)
}

#[inline(never)]
fn outer_ip_slow(d: &[u8], pkt_len: usize) -> Result<OuterIp, u8> {
    let Some((et, l2, _)) = parse::l2(d) else { return Err(D_TRUNCATED) };
    match et {
        ethertype::IPV4 => {
            let ip = &d[l2..];
            if ip.len() < 20 {
                return Err(D_TRUNCATED);
            }
            let p = Ipv4Packet::new_unchecked(ip);
            let hl = p.header_len() as usize;
            if p.version() != 4 {
                return Err(D_NOT_TUNNEL);
            }
            if hl < 20 || (p.total_len() as usize) < hl {
                return Err(D_BAD_LENGTH);
            }
            if ip.len() < hl {
                return Err(D_TRUNCATED);
            }
            if l2 + p.total_len() as usize > pkt_len {
                return Err(D_BAD_LENGTH);
            }
            if checksum::sum_ipv4_header(&ip[..hl]) != 0xffff {
                return Err(D_BAD_CSUM);
            }
            if p.is_fragment() {
                return Err(D_FRAGMENT);
            }
            Ok(OuterIp { l3: l2, l4: l2 + hl, proto: p.protocol(), l4_len: p.total_len() as usize - hl })
        }
        ethertype::IPV6 => {
            let ip = &d[l2..];
            if ip.len() < 40 {
                return Err(D_TRUNCATED);
            }
            let p = Ipv6Packet::new_unchecked(ip);
            if p.version() != 6 {
                return Err(D_NOT_TUNNEL);
            }
            if l2 + 40 + p.payload_len() as usize > pkt_len {
                return Err(D_BAD_LENGTH);
            }
            let u = crate::wire::ipv6::walk_ext(&ip[40..], p.next_header()).map_err(|e| match e {
                crate::wire::Error::Truncated => D_TRUNCATED,
                crate::wire::Error::Malformed => D_BAD_LENGTH,
            })?;
            if u.fragment.is_some() {
                return Err(D_FRAGMENT);
            }
            if u.offset > p.payload_len() as usize {
                return Err(D_BAD_LENGTH);
            }
            Ok(OuterIp {
                l3: l2,
                l4: l2 + 40 + u.offset,
                proto: u.protocol,
                l4_len: p.payload_len() as usize - u.offset,
            })
        }
        _ => Err(D_NOT_TUNNEL),
    }
}

impl<const KIND: u8> DecapCore<KIND> {
    /// Decapsulation of tunnels on UDP port `port` (ignored for NVGRE), of VNI `vni` only when
    /// given, knowing the GENEVE options `known` (class, type).
    pub fn new(port: u16, vni: Option<u32>, known: Vec<(u16, u8)>) -> Self {
        DecapCore { vni, port, known }
    }

    /// Checks the tunnel header at `ip.l4` of `m` (whose first segment is `d`): returns the
    /// offset of the inner frame and the VNI. Errors are decap reason codes.
    #[inline(always)]
    pub fn tunnel(&self, m: &Mbuf, d: &[u8], ip: &OuterIp) -> Result<(usize, u32), u8> {
        let (l4_off, l4_len) = (ip.l4, ip.l4_len);
        if KIND == NVGRE {
            if ip.proto != ip_proto::GRE {
                return Err(D_NOT_TUNNEL);
            }
            let t = &d[l4_off..];
            // The common case in one test: K only, version 0, Ethernet inside (RFC 7637).
            if let (Some(h), true) = (t.get(..8), l4_len >= 8) {
                if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) == 0x2000_6558 {
                    return Ok((l4_off + 8, u32::from_be_bytes([0, h[4], h[5], h[6]])));
                }
            }
            if t.len() < 4 {
                return Err(D_TRUNCATED);
            }
            let g = GrePacket::new_unchecked(t);
            if !g.key_present() || g.protocol() != ethertype::TEB {
                return Err(D_NOT_TUNNEL);
            }
            if g.version() != 0 {
                return Err(D_BAD_VERSION);
            }
            if !g.reserved_ok() {
                return Err(D_RESERVED);
            }
            if g.checksum_present() || g.seq_present() {
                return Err(D_BAD_FLAGS);
            }
            if t.len() < 8 {
                return Err(D_TRUNCATED);
            }
            if l4_len < 8 {
                return Err(D_BAD_LENGTH);
            }
            return Ok((l4_off + 8, g.vsid().unwrap_or(0)));
        }
        if ip.proto != ip_proto::UDP {
            return Err(D_NOT_TUNNEL);
        }
        let Some(t) = d.get(l4_off..l4_off + 16) else {
            // Not even UDP and the fixed tunnel header.
            return Err(match d.get(l4_off..l4_off + 8) {
                Some(u) if get_u16(u, 2) != self.port => D_NOT_TUNNEL,
                _ => D_TRUNCATED,
            });
        };
        let u = UdpPacket::new_unchecked(t);
        if u.dst_port() != self.port {
            return Err(D_NOT_TUNNEL);
        }
        if u.len() as usize != l4_len {
            return Err(D_BAD_LENGTH);
        }
        // A frame from a local kernel or guest with a partial checksum (virtio NEEDS_CSUM) is
        // valid as it stands: its outer UDP checksum is either the partial one or computed over
        // an inner checksum still to be filled in (Linux's local checksum offload).
        if u.checksum() != 0 && m.ol_flags() & (offload::RX_L4_CKSUM_PARTIAL | offload::RX_OUTER_L4_CKSUM_GOOD) == 0 {
            let mut s = Sum::new(ip.pseudo(d));
            if checksum::add_chain(&mut s, m, l4_off, l4_len).is_none() || s.sum() != 0xffff {
                return Err(D_BAD_CSUM);
            }
        }
        if KIND == VXLAN {
            let v = VxlanPacket::new_unchecked(&t[8..]);
            if !v.vni_valid() {
                return Err(D_BAD_FLAGS);
            }
            return Ok((l4_off + 16, v.vni()));
        }
        let g = GenevePacket::new_unchecked(&d[l4_off + 8..]);
        // The common case in one test: version 0, not a control packet, no critical option,
        // Ethernet inside, and options (if any) that fit the UDP payload and the data.
        let w = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        let hl = 8 + ((w >> 24) & 0x3f) as usize * 4;
        if w & 0xc0c0_ffff == ethertype::TEB as u32 && 8 + hl <= l4_len && l4_off + 8 + hl <= d.len() {
            return Ok((l4_off + 8 + hl, g.vni()));
        }
        if g.version() != 0 {
            return Err(D_BAD_VERSION);
        }
        if 8 + g.header_len() > l4_len {
            return Err(D_BAD_LENGTH);
        }
        if g.check_len().is_err() {
            return Err(D_TRUNCATED);
        }
        if g.oam() {
            return Err(D_CONTROL);
        }
        if g.protocol() != ethertype::TEB {
            return Err(D_NOT_ETHERNET);
        }
        if g.critical() || !self.known.is_empty() {
            for o in g.options() {
                let Ok(o) = o else { return Err(D_BAD_LENGTH) };
                if o.critical() && !self.known.contains(&(o.class, o.type_)) {
                    return Err(D_UNKNOWN_CRIT);
                }
            }
        }
        Ok((l4_off + 8 + g.header_len(), g.vni()))
    }

    /// Checks and strips the outer headers of `m`; returns what they said.
    #[inline(always)]
    pub fn decap(&self, m: &mut Mbuf) -> Result<Decapsulated, u8> {
        let pkt_len = m.pkt_len();
        let d = m.data();
        let ip = outer_ip(d, pkt_len)?;
        let (inner, vni) = self.tunnel(m, d, &ip)?;
        if self.vni.is_some_and(|v| v != vni) {
            return Err(D_WRONG_VNI);
        }
        let (src, dst) = ip.addrs(d);
        strip(m, &ip, inner)?;
        Ok(Decapsulated { vni, src, dst })
    }
}

/// Removes the outer headers of `m` (read by [`outer_ip`], the inner frame at `inner`), trims
/// Ethernet padding behind the outer packet and describes the inner frame in the metadata (see
/// the module doc). Errors are decap reason codes.
#[inline(always)]
pub fn strip(m: &mut Mbuf, ip: &OuterIp, inner: usize) -> Result<(), u8> {
    let pkt_len = m.pkt_len();
    let d = m.data();
    let outer_end = ip.l4 + ip.l4_len;
    if outer_end < inner + 14 || inner + 14 > d.len() {
        return Err(D_TRUNCATED);
    }
    // Stripping and trimming move this mbuf's own window and never write the buffer, so a
    // clone (shared buffer) is decapsulated like any other packet.
    // Ethernet padding behind the outer packet is not part of the inner frame.
    if pkt_len > outer_end && !m.trim(pkt_len - outer_end) {
        return Err(D_BAD_LENGTH);
    }
    let f0 = m.ol_flags();
    let mut f = f0 & !OUTER_FLAGS;
    if f0 & offload::RX_L4_CKSUM_PARTIAL != 0 {
        // From a virtio header (a local kernel's or a guest's frame): receive described the
        // partial checksum's start as l2_len + l3_len, behind the outer lengths of a tunnel
        // GSO frame.
        let outer =
            if f0 & offload::TX_TUNNEL_MASK != 0 { m.outer_l2_len() as usize + m.outer_l3_len() as usize } else { 0 };
        let start = outer + m.l2_len() as usize + m.l3_len() as usize;
        f &= !(offload::TX_IPV4 | offload::TX_IPV6 | offload::TX_IP_CKSUM);
        if start < inner {
            // It was the outer UDP checksum, now gone: the inner frame is complete.
            f &= !(offload::RX_L4_CKSUM_PARTIAL | offload::TX_TCP_CKSUM | offload::TX_UDP_CKSUM | offload::TX_SEG_MASK);
        }
    }
    m.adj(inner);
    let info = frame_info::<false>(m.data());
    if f & offload::RX_L4_CKSUM_PARTIAL != 0 {
        // An inner checksum still to fill in (or a TSO packet to cut): the inner family, for
        // whoever does it.
        f |= match info.ptype & ptype::L3_MASK {
            ptype::L3_IPV4 | ptype::L3_IPV4_EXT if f & offload::TX_SEG_MASK != 0 => {
                offload::TX_IPV4 | offload::TX_IP_CKSUM
            }
            ptype::L3_IPV4 | ptype::L3_IPV4_EXT => offload::TX_IPV4,
            ptype::L3_IPV6 | ptype::L3_IPV6_EXT => offload::TX_IPV6,
            _ => 0,
        };
    }
    m.set_ol_flags(f);
    m.set_packet_type(info.ptype);
    m.set_outer_l2_len(0);
    m.set_outer_l3_len(0);
    m.set_l2_len(info.l2_len as u8);
    m.set_l3_len(info.l3_len);
    m.set_l4_len(info.l4_len as u8);
    Ok(())
}

/// Flags that describe the outer headers, cleared by decap.
const OUTER_FLAGS: u64 = offload::TX_TUNNEL_MASK
    | offload::TX_OUTER_IPV4
    | offload::TX_OUTER_IPV6
    | offload::TX_OUTER_IP_CKSUM
    | offload::TX_OUTER_UDP_CKSUM
    | offload::RX_OUTER_IP_CKSUM_BAD
    | offload::RX_OUTER_L4_CKSUM_GOOD
    | offload::RX_OUTER_L4_CKSUM_BAD;

/// A decap stage for one tunnel kind.
#[derive(Debug)]
pub struct Decap<const KIND: u8> {
    name: &'static str,
    counters: Arc<StageCounters>,
    core: DecapCore<KIND>,
}

impl<const KIND: u8> Decap<KIND> {
    /// A stage for `cfg` (its kind must be `KIND`).
    pub fn new(name: &'static str, cfg: &DecapConfig) -> Self {
        debug_assert!(cfg.kind == KIND);
        Decap {
            name,
            counters: StageCounters::new(name, DECAP_REASONS),
            core: DecapCore::new(cfg.port, cfg.vni, cfg.known_options.clone()),
        }
    }
}

impl<const KIND: u8> Stage for Decap<KIND> {
    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        filter(batch, ctx, &self.counters, |m| self.core.decap(m).map(|_| ()));
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

/// Builds a decap stage from its spec.
pub fn decap_from_spec(kind: u8, s: &mut Spec) -> Result<Box<dyn Stage>, Error> {
    let cfg = DecapConfig::from_spec(kind, s)?;
    Ok(decap_stage(&cfg))
}

/// Builds a decap stage for `cfg`.
pub fn decap_stage(cfg: &DecapConfig) -> Box<dyn Stage> {
    match cfg.kind {
        VXLAN => Box::new(Decap::<VXLAN>::new("vxlan-decap", cfg)),
        GENEVE => Box::new(Decap::<GENEVE>::new("geneve-decap", cfg)),
        _ => Box::new(Decap::<NVGRE>::new("nvgre-decap", cfg)),
    }
}
