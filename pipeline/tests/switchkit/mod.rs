//! Shared by the switch tests: a switch with a manual clock driven like an lcore would drive it
//! (process, then resume until it holds nothing), frames built with the wire `Repr`s, and the
//! pool checked full again when the kit goes.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fastpath_mempool::{Batch, Mbuf, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::switch::{
    build_with_clock, BridgeConfig, Clock, ManualClock, PortConfig, PortRole, SwitchConfig, SwitchControl,
    SwitchProcessor, TunnelKind,
};
use fastpath_pipeline::wire::*;
use fastpath_pipeline::{make_stage, BuildEnv};
use fastpath_pmd::{Ctx, Offloads, PortInfo, Processor};

pub const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
pub const LOCAL: &str = "10.50.0.1";
pub const REMOTE1: &str = "10.50.0.2";
pub const REMOTE2: &str = "10.50.0.3";

pub fn mac(i: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, i]
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A port description: id, name, offloads, largest frame, MAC.
pub fn info(id: u16, offloads: Offloads, max_frame: u32, mac: Option<[u8; 6]>) -> PortInfo {
    PortInfo {
        id,
        driver: "test",
        name: format!("p{id}"),
        rx_queues: 1,
        tx_queues: 1,
        offloads,
        live: None,
        max_frame,
        mac,
    }
}

/// An access port `name` (id = its index) in `bridge`.
pub fn access(id: u16, name: &str, bridge: &str, vlan: Option<u16>) -> PortConfig {
    PortConfig {
        name: name.into(),
        port: info(id, Offloads::TX_MULTI_SEGS, 9000, None),
        role: PortRole::Access,
        bridge: Some(bridge.into()),
        vlan,
    }
}

/// The uplink (id = its index), largest frame 1514.
pub fn uplink(id: u16) -> PortConfig {
    PortConfig {
        name: "uplink".into(),
        port: info(id, Offloads::NONE, 1514, Some(UPLINK_MAC)),
        role: PortRole::Uplink,
        bridge: None,
        vlan: None,
    }
}

/// A VXLAN bridge with VNI `vni`, our VTEP `LOCAL`, flooding to `remotes`.
pub fn vxlan_bridge(name: &str, vni: u32, remotes: &[&str]) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        vni: Some(vni),
        tunnel: TunnelKind::Vxlan,
        local: Some(ip(LOCAL)),
        remotes: remotes.iter().map(|r| ip(r)).collect(),
        vlan: None,
        udp_port: None,
    }
}

/// A local bridge.
pub fn bridge(name: &str) -> BridgeConfig {
    BridgeConfig { name: name.into(), ..Default::default() }
}

/// What came out.
#[derive(Debug, Clone)]
pub struct Out {
    pub port: u16,
    pub bytes: Vec<u8>,
    pub ol_flags: u64,
    pub segs: usize,
    pub l2_len: u8,
    pub tso_segsz: u16,
}

pub struct Kit {
    pub pool: Mempool,
    pub ctx: Ctx,
    pub control: SwitchControl,
    pub procs: Vec<SwitchProcessor>,
    pub clock: ManualClock,
}

impl Kit {
    pub fn new(cfg: &SwitchConfig) -> Kit {
        Self::with_pool(cfg, 2048)
    }

    pub fn with_pool(cfg: &SwitchConfig, mbufs: u32) -> Kit {
        let pool =
            Mempool::new("switch-test", &PoolConfig { mbufs, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
        let (clock, hand) = Clock::manual();
        let (control, procs) = build_with_clock(cfg, &pool, 2, clock).unwrap_or_else(|e| panic!("{e}"));
        let ctx = Ctx::new(0, &pool);
        Kit { pool, ctx, control, procs, clock: hand }
    }

    pub fn mbuf(&mut self, port: u16, bytes: &[u8]) -> Mbuf {
        let mut m = self.ctx.cache(&self.pool).alloc().expect("an mbuf");
        assert!(m.set_len(bytes.len()), "frame of {} bytes fits", bytes.len());
        m.data_mut().copy_from_slice(bytes);
        m.set_port(port);
        m
    }

    /// Runs mbufs through processor `lcore` as the runtime would; returns what came out.
    pub fn run(&mut self, lcore: usize, ms: Vec<Mbuf>) -> Vec<Out> {
        let mut b = Batch::new();
        for m in ms {
            b.push(m).unwrap();
        }
        let mut out = Vec::new();
        let p = &mut self.procs[lcore];
        p.process(&mut b, &mut self.ctx);
        collect(&mut b, &mut out, &mut self.ctx);
        while p.resume(&mut b, &mut self.ctx) {
            collect(&mut b, &mut out, &mut self.ctx);
        }
        out
    }

    /// Sends `frames` in on `port` (processor 0).
    pub fn send(&mut self, port: u16, frames: &[Vec<u8>]) -> Vec<Out> {
        let ms = frames.iter().map(|f| self.mbuf(port, f)).collect();
        self.run(0, ms)
    }

    /// Sends frames in, each on its port, as one burst (processor 0).
    pub fn run_frames(&mut self, frames: &[(u16, Vec<u8>)]) -> Vec<Out> {
        let ms = frames.iter().map(|(p, f)| self.mbuf(*p, f)).collect();
        self.run(0, ms)
    }

    /// Sends one frame.
    pub fn send1(&mut self, port: u16, frame: Vec<u8>) -> Vec<Out> {
        self.send(port, &[frame])
    }

    pub fn poll(&mut self) {
        self.control.poll();
    }

    pub fn advance(&mut self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Drops of `reason` summed over every switch stage.
    pub fn drops(&self, reason: &str) -> u64 {
        self.control.stats().stages.iter().flat_map(|s| s.drops.iter()).filter(|d| d.0 == reason).map(|d| d.1).sum()
    }

    /// A named counter of a stage.
    pub fn stat(&self, stage: &str, name: &str) -> u64 {
        self.control
            .stats()
            .stages
            .iter()
            .filter(|s| s.stage == stage)
            .flat_map(|s| s.stats.iter())
            .filter(|d| d.0 == name)
            .map(|d| d.1)
            .sum()
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        self.procs.clear();
        let ctx = std::mem::replace(&mut self.ctx, Ctx::empty(0));
        drop(ctx);
        if !std::thread::panicking() {
            assert_eq!(self.pool.available(), self.pool.capacity(), "every mbuf came back");
        }
    }
}

fn collect(b: &mut Batch, out: &mut Vec<Out>, ctx: &mut Ctx) {
    for m in b.iter() {
        out.push(Out {
            port: m.out_port(),
            bytes: m.to_vec(),
            ol_flags: m.ol_flags(),
            segs: m.nb_segs(),
            l2_len: m.l2_len(),
            tso_segsz: m.tso_segsz(),
        });
    }
    ctx.free_batch(b);
}

/// Outputs to `port`.
pub fn to(out: &[Out], port: u16) -> Vec<&Out> {
    out.iter().filter(|o| o.port == port).collect()
}

/// The ports the outputs went to, sorted.
pub fn ports(out: &[Out]) -> Vec<u16> {
    let mut v: Vec<u16> = out.iter().map(|o| o.port).collect();
    v.sort_unstable();
    v
}

/// A UDP/IPv4 frame from `src` to `dst` with `payload` bytes.
pub fn frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    EthernetRepr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype: ethertype::IPV4 }
        .emit(&mut EthernetPacket::new_unchecked(&mut f[..]));
    Ipv4Repr {
        src_addr: Ipv4Addr::new(192, 168, 0, src[5]),
        dst_addr: Ipv4Addr::new(192, 168, 0, dst[5]),
        protocol: ip_proto::UDP,
        payload_len: 8 + payload,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[14..]));
    UdpRepr { src_port: 1000, dst_port: 2000, payload_len: payload }.emit(&mut UdpPacket::new_unchecked(&mut f[34..]));
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// `f` with an 802.1Q tag `vid` after its MAC addresses.
pub fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// `inner` run through the stage `spec` (one packet in, one out).
pub fn stage_output(spec: &str, inner: &[u8]) -> Vec<u8> {
    let pool = Mempool::new("encap", &PoolConfig { mbufs: 8, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let mut s = make_stage(spec, &BuildEnv { pool: pool.clone(), ports: vec![] }).unwrap();
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();
    let mut x = pool.alloc().unwrap();
    assert!(x.set_len(inner.len()));
    x.data_mut().copy_from_slice(inner);
    b.push(x).unwrap();
    s.process(&mut b, &mut ctx);
    let v = b[0].to_vec();
    ctx.free_batch(&mut b);
    v
}

fn mac_str(a: [u8; 6]) -> String {
    a.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `inner` encapsulated by the encap stage `kind` from VTEP `from` to `to` in `vni`, sent to
/// our uplink's MAC.
pub fn encapsulated(kind: &str, vni: u32, from: &str, to: &str, inner: &[u8]) -> Vec<u8> {
    let (src, dst) = (mac_str(ROUTER_MAC), mac_str(UPLINK_MAC));
    stage_output(&format!("{kind}-encap,vni={vni},local={from},remote={to},src-mac={src},dst-mac={dst}"), inner)
}

/// What the encap stage makes of `inner` to `remote` in `vni` (the reference for the switch's
/// encap: same headers, same identification 0).
pub fn reference_encap(vni: u32, local: &str, remote: &str, next_hop: [u8; 6], inner: &[u8]) -> Vec<u8> {
    let (src, dst) = (mac_str(UPLINK_MAC), mac_str(next_hop));
    stage_output(&format!("vxlan-encap,vni={vni},local={local},remote={remote},src-mac={src},dst-mac={dst}"), inner)
}

/// An ARP packet in a frame (`oper` 1 request, 2 reply).
pub fn arp(eth_dst: [u8; 6], oper: u16, sha: [u8; 6], spa: &str, tha: [u8; 6], tpa: &str) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    EthernetRepr { src_addr: EthernetAddress(sha), dst_addr: EthernetAddress(eth_dst), ethertype: ethertype::ARP }
        .emit(&mut EthernetPacket::new_unchecked(&mut f[..]));
    let spa: Ipv4Addr = spa.parse().unwrap();
    let tpa: Ipv4Addr = tpa.parse().unwrap();
    let a = &mut f[14..42];
    a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, oper as u8]);
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
    f
}
