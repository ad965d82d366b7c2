//! The vswitch data path: bridges of access ports joined across hosts by VXLAN, GENEVE or
//! NVGRE overlays and by the uplink's VLANs, with MAC learning, aging, flooding by head-end
//! replication, a VTEP that answers ARP / ND and resolves its peers, and the offload fallback
//! in front of every port. `docs/vswitch.md` is the design; each pass has its file:
//!
//! - [`config`]: what the application gives; [`topology`]: the checked, derived tables;
//! - [`fdb`]: the MAC table (lock-free readers, one writer); [`vtep`]: the remote VTEPs;
//! - [`processor`]: the per-lcore [`SwitchProcessor`] and its passes: [`ingress`],
//!   [`underlay`] (with [`arp`] and [`nd`]), [`lookup`], [`learn`], [`forward`], [`egress`]
//!   (with [`encap`] and [`vlan`]), [`flood`]; [`port_security`]: what access ports may send
//!   (checked in [`ingress`]); [`secgroup`]: stateful security groups over the
//!   [`crate::conntrack`] table (checked in [`ingress`] and where packets go out to a VM port);
//! - [`control`]: [`SwitchControl`], the one writer of the tables; [`event`]: what the lcores
//!   tell it; [`stats`]: the counters; [`trace`]: the packet trace; [`clock`]: time.
//!
//! ```no_run
//! # fn f(cfg: &fastpath_pipeline::switch::SwitchConfig, pool: &fastpath_mempool::Mempool) -> Result<(), fastpath_pmd::Error> {
//! let (mut control, processors) = fastpath_pipeline::switch::build(cfg, pool, 2)?;
//! // Give processors[i] to lcore i (every rx task of the lcore shares it), then, from the
//! // control thread, about every millisecond:
//! control.poll();
//! let stats = control.stats();
//! # Ok(()) }
//! ```

pub mod arp;
pub mod clock;
pub mod config;
pub mod control;
pub mod egress;
pub mod encap;
pub mod event;
pub mod fdb;
pub mod flood;
pub mod forward;
pub mod ingress;
pub mod learn;
pub mod lookup;
pub mod memo;
pub mod meta;
pub mod nd;
pub mod port_security;
pub mod processor;
pub mod secgroup;
pub mod stats;
pub mod topology;
pub mod trace;
pub mod underlay;
pub mod vlan;
pub mod vtep;

use std::sync::Arc;

use fastpath_mempool::ring::spsc;
use fastpath_mempool::Mempool;
use fastpath_pmd::Error;

use crate::conntrack::{Conntrack, ConntrackConfig, Timeouts};

pub use clock::{Clock, ManualClock};
pub use config::{
    BridgeConfig, ConntrackSettings, Direction, FdbConfig, PortConfig, PortGroups, PortRole, SecurityGroup, SgRule,
    StaticMac, StaticNeighbour, SwitchConfig, TunnelKind,
};
pub use control::{FdbEntry, FdbTarget, SwitchControl};
pub use port_security::{AllowedAddress, PortSecurity};
pub use processor::{Change, SwitchProcessor};
pub use stats::{BridgeStats, ConntrackStats, SwitchPortStats, SwitchStats, VtepStats, ZoneStats};

/// Checks `cfg` and builds the control side and `lcores` processors (one per lcore; every rx
/// task of an lcore shares its processor). Head mbufs, clones and solicitations come from
/// `pool`. Errors name the bridge, port or key and the fix.
pub fn build(
    cfg: &SwitchConfig,
    pool: &Mempool,
    lcores: usize,
) -> Result<(SwitchControl, Vec<SwitchProcessor>), Error> {
    build_with_clock(cfg, pool, lcores, Clock::system())
}

/// [`build`] with a given clock (tests move a [`Clock::manual`] to age entries).
pub fn build_with_clock(
    cfg: &SwitchConfig,
    pool: &Mempool,
    lcores: usize,
    clock: Clock,
) -> Result<(SwitchControl, Vec<SwitchProcessor>), Error> {
    if lcores == 0 {
        return Err(Error::Config("the switch needs at least one lcore (processor)".into()));
    }
    let topo = Arc::new(topology::Topology::new(cfg)?);
    let slots = cfg.max_ports.max(cfg.ports.len());
    if slots > fdb::MAX_ID as usize {
        return Err(Error::Config(format!("max_ports = {slots}: at most {} are supported", fdb::MAX_ID)));
    }
    let (fdb, writer) = fdb::Fdb::new(cfg.fdb.capacity)?;
    let vteps = Arc::new(vtep::Vteps::default());
    let sg_cfg = secgroup::check_config(cfg)?;
    let ct = if sg_cfg.ports.is_empty() {
        None
    } else {
        let c = &cfg.conntrack;
        let ct_cfg = ConntrackConfig {
            capacity: c.capacity,
            zones: topo.bridges.len().max(1),
            zone_limit: c.zone_limit,
            timeouts: Timeouts::default(),
        };
        Some(Arc::new(Conntrack::new(ct_cfg)?))
    };
    let zone_of = |p: u16| topo.segments.get(topo.ports[p as usize].segment as usize).map_or(0, |s| s.bridge);
    let sg = Arc::new(secgroup::SecurityGroups::new(&sg_cfg, topo.ports.len(), zone_of, ct));
    let mut rings = Vec::new();
    let mut counters = Vec::new();
    let mut procs = Vec::new();
    let mut trace = control::Traces::default();
    let mut trace_rings = Vec::new();
    for i in 0..lcores {
        let (tx, rx) = spsc::channel(event::RING_SIZE);
        let (ttx, trx) = spsc::channel(trace::RING);
        let tracer = trace::Tracer::new(trace.arm.clone(), ttx, trace.lost.clone(), i as u16);
        let (p, c) = SwitchProcessor::new((&topo, &fdb, &vteps, &sg), tx, tracer, pool, (clock.clone(), slots));
        rings.push(rx);
        trace_rings.push(trx);
        counters.push(c);
        procs.push(p);
    }
    trace.rings = trace_rings;
    let mut control = SwitchControl::new(topo, writer, vteps, (rings, trace), counters, clock, cfg.fdb);
    control.set_slots(slots);
    control.set_security_groups(sg, sg_cfg);
    if control.stats().fdb_entries < cfg.static_macs.len() as u64 {
        return Err(Error::Config(format!(
            "fdb capacity = {} cannot hold the {} static MACs: raise it",
            cfg.fdb.capacity,
            cfg.static_macs.len()
        )));
    }
    Ok((control, procs))
}
