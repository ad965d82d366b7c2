//! The `switch*` bench pipelines: the vswitch data path ([`fastpath_pipeline::switch`]) between
//! the two null ports of each lcore (each lcore its own switch, nothing shared).
//!
//! - `switch`, `switch-1k`, `switch-100k`, `switch-1m`: two access ports of one bridge forward
//!   known unicast both ways. The FDB holds 2, 1000, 100 000 or 1 000 000 MACs (half behind each
//!   port, static so that nothing ages during a run), and the frames' MAC addresses walk over
//!   all of them: before the switch, each frame's source and destination MAC are set from a
//!   counter (two 6-byte stores per frame, counted in the figures), so every frame costs two
//!   lookups (learning its source, forwarding to its destination) at a different place of the
//!   table.
//! - `switch-vxlan-encap`: port 0 is a VM in VNI 42, port 1 the uplink (a sink); 64-byte frames
//!   to a MAC behind a remote VTEP are encapsulated (VXLAN over IPv4).
//! - `switch-vxlan-decap`: port 0 is the uplink receiving VXLAN packets for our VTEP (114 bytes),
//!   port 1 the VM (a sink).

use std::net::IpAddr;
use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool};
use fastpath_pipeline::switch::{
    build, BridgeConfig, FdbConfig, PortConfig, PortRole, StaticMac, StaticNeighbour, SwitchConfig, SwitchControl,
    SwitchProcessor, TunnelKind,
};
use fastpath_pmd::{Ctx, Error, PortInfo, Processor};

use crate::{encapsulated_frame, example_frame, BenchPipeline, BuiltProcessors, VXLAN_ENCAP};

/// The switch pipelines.
pub fn pipelines() -> Vec<BenchPipeline> {
    let frame = Some(Arc::from(&example_frame(64)[..]));
    let unicast = |name, about, build| BenchPipeline {
        name,
        about,
        frame: frame.clone(),
        processors: Some(build),
        ..BenchPipeline::default()
    };
    vec![
        unicast("switch", "vswitch: known unicast between two access ports, 1 MAC each", unicast_2),
        unicast("switch-1k", "vswitch: known unicast, 1000 MACs in the FDB, frames over all", unicast_1k),
        unicast("switch-100k", "vswitch: known unicast, 100k MACs in the FDB, frames over all", unicast_100k),
        unicast("switch-1m", "vswitch: known unicast, 1M MACs in the FDB, frames over all", unicast_1m),
        BenchPipeline {
            name: "switch-vxlan-encap",
            about: "vswitch: VM -> uplink through VNI 42, VXLAN/IPv4 encap of 64-byte frames",
            frame: frame.clone(),
            one_way: true,
            processors: Some(encap),
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "switch-vxlan-decap",
            about: "vswitch: uplink -> VM through VNI 42, VXLAN/IPv4 decap of 114-byte frames",
            frame: Some(Arc::from(&encapsulated_frame(VXLAN_ENCAP, 64)[..])),
            one_way: true,
            processors: Some(decap),
            ..BenchPipeline::default()
        },
    ]
}

/// The MAC of entry `i` behind port `side`.
fn mac(side: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, side, b[0], b[1], b[2], b[3]]
}

/// Sets each frame's MACs (from this port's side to the other) from a counter over `n` MACs a
/// side, then switches.
struct Spread {
    inner: SwitchProcessor,
    side: u8,
    n: u32,
    next: u32,
}

impl Processor for Spread {
    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        for m in batch.iter_mut() {
            if m.is_writable() && m.data_len() >= 12 {
                let d = m.data_mut();
                d[..6].copy_from_slice(&mac(1 - self.side, self.next));
                d[6..12].copy_from_slice(&mac(self.side, self.next));
                self.next = if self.next + 1 >= self.n { 0 } else { self.next + 1 };
            }
        }
        self.inner.process(batch, ctx)
    }

    fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        self.inner.resume(batch, ctx)
    }
}

fn port(name: &str, info: &PortInfo, role: PortRole, bridge: Option<&str>) -> PortConfig {
    PortConfig { name: name.into(), port: info.clone(), role, bridge: bridge.map(Into::into), vlan: None }
}

fn statics(
    bridge: &str,
    entries: impl Iterator<Item = ([u8; 6], Option<&'static str>, Option<IpAddr>)>,
) -> Vec<StaticMac> {
    entries
        .map(|(mac, port, vtep)| StaticMac { bridge: bridge.into(), vlan: None, mac, port: port.map(Into::into), vtep })
        .collect()
}

fn drops_of(control: SwitchControl) -> Box<dyn Fn() -> u64 + Send> {
    Box::new(move || control.stats().stages.iter().flat_map(|s| s.drops.iter()).map(|d| d.1).sum())
}

fn unicast(pool: &Mempool, ports: &[PortInfo], total: u32) -> Result<BuiltProcessors, Error> {
    let n = (total / 2).max(1);
    let cfg = SwitchConfig {
        bridges: vec![BridgeConfig { name: "lan".into(), ..Default::default() }],
        ports: vec![
            port("a", &ports[0], PortRole::Access, Some("lan")),
            port("b", &ports[1], PortRole::Access, Some("lan")),
        ],
        static_macs: statics("lan", (0..n).flat_map(|i| [(mac(0, i), Some("a"), None), (mac(1, i), Some("b"), None)])),
        fdb: FdbConfig { capacity: 2 * n as usize + 64, ..Default::default() },
        neighbours: vec![],
        port_security: vec![],
        security_groups: vec![],
        port_groups: vec![],
        conntrack: Default::default(),
        max_ports: 0,
    };
    let (control, procs) = build(&cfg, pool, 2)?;
    let processors = procs
        .into_iter()
        .zip(0u8..)
        .map(|(inner, side)| Box::new(Spread { inner, side, n, next: 0 }) as Box<dyn Processor>)
        .collect();
    Ok(BuiltProcessors { processors, drops: drops_of(control) })
}

fn unicast_2(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    unicast(pool, ports, 2)
}

fn unicast_1k(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    unicast(pool, ports, 1000)
}

fn unicast_100k(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    unicast(pool, ports, 100_000)
}

fn unicast_1m(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    unicast(pool, ports, 1_000_000)
}

/// The MACs of [`example_frame`]: destination and source.
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// One VXLAN bridge (VNI 42) between a VM and the uplink; `local` is our VTEP, `remote` the
/// other one, behind which `remote_mac` lives (the VM's is the other MAC of the frame).
fn overlay(
    pool: &Mempool,
    ports: &[PortInfo],
    uplink: usize,
    local: &str,
    remote: &str,
    remote_mac: [u8; 6],
) -> Result<BuiltProcessors, Error> {
    let vm_mac = if remote_mac == DST { SRC } else { DST };
    let mut up = ports[uplink].clone();
    up.mac = Some([0x02, 0, 0xc0, 0, 0x02, 0xaa]);
    let mut pcs =
        vec![port("vm", &ports[1 - uplink], PortRole::Access, Some("t")), port("uplink", &up, PortRole::Uplink, None)];
    if uplink == 0 {
        pcs.reverse();
    }
    let remote: IpAddr = remote.parse().map_err(|_| Error::Config("remote".into()))?;
    let cfg = SwitchConfig {
        bridges: vec![BridgeConfig {
            name: "t".into(),
            vni: Some(42),
            tunnel: TunnelKind::Vxlan,
            local: Some(local.parse().map_err(|_| Error::Config("local".into()))?),
            remotes: vec![remote],
            vlan: None,
            udp_port: None,
        }],
        ports: pcs,
        static_macs: statics("t", [(vm_mac, Some("vm"), None), (remote_mac, None, Some(remote))].into_iter()),
        fdb: FdbConfig::default(),
        neighbours: vec![StaticNeighbour { addr: remote, mac: [0x02, 0, 0xc0, 0, 0x02, 0xbb] }],
        port_security: vec![],
        security_groups: vec![],
        port_groups: vec![],
        conntrack: Default::default(),
        max_ports: 0,
    };
    let (control, mut procs) = build(&cfg, pool, 1)?;
    let p: Box<dyn Processor> = Box::new(procs.remove(0));
    Ok(BuiltProcessors { processors: vec![p], drops: drops_of(control) })
}

fn encap(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    overlay(pool, ports, 1, "192.0.2.1", "192.0.2.2", DST)
}

fn decap(pool: &Mempool, ports: &[PortInfo]) -> Result<BuiltProcessors, Error> {
    // The frame is VXLAN_ENCAP's: from 192.0.2.1 to 192.0.2.2, inner source SRC.
    overlay(pool, ports, 0, "192.0.2.2", "192.0.2.1", SRC)
}
