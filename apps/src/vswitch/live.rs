//! Ports plugged and unplugged while the switch runs (`fastpath ctl port add|del`), bridges
//! added and deleted (`bridge add|del`) and the remote VTEPs of a bridge (`remote add|del`).
//! The switch's side is [`fastpath_pipeline::switch::SwitchControl::plug`] and its kin; this
//! module opens and closes the port and moves its
//! queues onto and off the lcores through the runtime's command rings, in the order that keeps
//! every other port's traffic untouched:
//!
//! - plug: open the port with a vacant id; every lcore takes its transmit queue
//!   (`Command::SetTx`), then its processor the new topology (`Command::Notify`); a grace
//!   period; only then
//!   are its rx queues given to the lcores with the fewest (`Command::AddTask`);
//! - unplug: every processor takes the topology without it (floods stop going to it) and every
//!   lcore hands its queues back (`Command::RemovePort`; what was still buffered for it is freed
//!   and counted as the lcore's `tx_drops`); a grace period; the FDB entries pointing at it go;
//!   the port is closed on this thread, which returns every mbuf it held to the pool.
//!
//! Nothing else waits: the other ports' queues stay where they are, their packets are neither
//! dropped nor reordered (the test `apps/tests/vswitch_live.rs` counts it with pktgen).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fastpath_mempool::PORT_NONE;
use fastpath_pipeline::switch as sw;
use fastpath_pmd::lcore::{Command, Returned, Task};
use fastpath_pmd::sys::{fmt_mac, parse_mac};
use fastpath_pmd::{Error, Port, PortInfo, PortStats, RxQueue, TxQueue};
use serde_json::{json, Value};

use super::commands::Live;
use super::config::Role;
use crate::ports;

/// How long the lcores have to take a change.
const HANDOVER: Duration = Duration::from_secs(2);

/// A port as the switch knows it (what its `[[port]]` said, or its `port add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    /// Name.
    pub name: String,
    /// The spec it was opened from.
    pub spec: String,
    /// Role.
    pub role: Role,
    /// Bridge of an access port.
    pub bridge: Option<String>,
    /// Access VLAN.
    pub vlan: Option<u16>,
    /// The MAC the switch uses for it, when given.
    pub mac: Option<[u8; 6]>,
}

impl Plugged {
    /// What a `[[port]]` of the config says.
    pub fn of(p: &super::config::Port) -> Plugged {
        Plugged {
            name: p.name.get_ref().clone(),
            spec: p.spec.clone(),
            role: p.role,
            bridge: p.bridge.as_ref().map(|b| b.get_ref().clone()),
            vlan: p.vlan,
            mac: p.mac,
        }
    }
}

/// The driver name of a vacant slot.
pub const VACANT: &str = "vacant";

/// What stands in the port list where a port was taken out (its id may be given again).
#[derive(Debug)]
pub struct Vacant(PortInfo);

impl Vacant {
    /// The slot of port id `id`.
    pub fn new(id: u16) -> Vacant {
        Vacant(PortInfo {
            id,
            driver: VACANT,
            name: String::new(),
            rx_queues: 0,
            tx_queues: 0,
            offloads: fastpath_pmd::Offloads::NONE,
            live: None,
            max_frame: 0,
            mac: None,
        })
    }
}

impl Port for Vacant {
    fn info(&self) -> &PortInfo {
        &self.0
    }

    fn rx_queue(&mut self, _q: u16) -> Result<Box<dyn RxQueue>, Error> {
        Err(Error::Config(format!("port {} was taken out", self.0.id)))
    }

    fn tx_queue(&mut self, _q: u16) -> Result<Box<dyn TxQueue>, Error> {
        Err(Error::Config(format!("port {} was taken out", self.0.id)))
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

/// True for a slot whose port was taken out.
pub fn vacant(p: &dyn Port) -> bool {
    p.info().driver == VACANT
}

impl Live<'_> {
    /// Sends each lcore its change (processor 0: a vswitch lcore has one).
    fn notify(&self, changes: sw::control::Changes) -> Result<(), String> {
        for (l, c) in changes.into_iter().enumerate() {
            self.rt.command(l, Command::Notify(0, c)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `port add NAME SPEC [bridge=B] [vlan=N] [mac=MAC]`.
    pub fn port_add(&mut self, a: &[&str]) -> Result<Value, String> {
        let usage = "port add NAME SPEC [bridge=NAME] [vlan=N] [mac=MAC]";
        let [name, spec, opts @ ..] = a else { return Err(format!("give: {usage}")) };
        let mut p = Plugged {
            name: name.to_string(),
            spec: spec.to_string(),
            role: Role::Access,
            bridge: None,
            vlan: None,
            mac: None,
        };
        for o in opts {
            match o.split_once('=') {
                Some(("bridge", b)) => p.bridge = Some(b.to_string()),
                Some(("vlan", v)) => p.vlan = Some(super::commands::parse_vlan(v)?),
                Some(("mac", m)) => p.mac = Some(parse_mac(m)?),
                _ => return Err(format!("'{o}': give {usage}")),
            }
        }
        self.plug(p)
    }

    /// Opens port `p` and plugs it into the running switch (`port add`, and `reload` of a new
    /// `[[port]]`).
    pub fn plug(&mut self, p: Plugged) -> Result<Value, String> {
        let (name, spec) = (&p.name, &p.spec);
        if self.plugged.iter().flatten().any(|q| q.name == *name) {
            return Err(format!("there is a port '{name}' already: give another name"));
        }
        let t0 = Instant::now();
        let id = self.ctl.free_port_id().map_err(|e| e.to_string())?;
        let mut port = ports::open(id, spec, self.pool).map_err(|e| format!("port '{name}': {spec}: {e}"))?;
        let info = PortInfo { mac: p.mac.or(port.info().mac), ..port.info().clone() };
        let cfg = sw::PortConfig {
            name: p.name.clone(),
            port: info,
            role: sw::PortRole::Access,
            bridge: p.bridge.clone(),
            vlan: p.vlan,
        };
        // Everything that can fail is asked of the port before the switch changes.
        let n = self.rt.lcores();
        let (tx, shared) = crate::run::tx_handles(port.as_mut(), n).map_err(|e| format!("port '{name}': {e}"))?;
        let mut rx = Vec::new();
        for q in 0..port.info().rx_queues {
            rx.push(port.rx_queue(q).map_err(|e| format!("port '{name}': rx queue {q}: {e}"))?);
        }
        let changes = self.ctl.plug(&cfg).map_err(|e| e.to_string())?;
        // Transmit queues first: a flood that already sees the port in the topology finds one.
        for (l, q) in tx.into_iter().enumerate() {
            let q = self.captures.wrap_tx(id, q);
            self.rt.command(l, Command::SetTx(id, q)).map_err(|e| e.to_string())?;
        }
        self.notify(changes)?;
        drop(self.rt.synchronize(HANDOVER).map_err(|e| e.to_string())?);
        let mut placed = Vec::new();
        for q in rx {
            let mut count = vec![0usize; n];
            self.rxqs.iter().for_each(|(l, _)| count[*l] += 1);
            let l = (0..n).min_by_key(|&l| (count[l], l)).unwrap_or(0);
            let queue = q.queue_id();
            let task = Task::new(self.captures.wrap_rx(q), 0, PORT_NONE);
            self.rxqs.push((l, task.stats.clone()));
            self.rt.command(l, Command::AddTask(task)).map_err(|e| e.to_string())?;
            placed.push(json!({"queue": queue, "lcore": l, "cpu": self.cpus.get(l)}));
        }
        let micros = t0.elapsed().as_micros() as u64;
        let driver = port.info().driver;
        let slot = id as usize;
        if slot < self.ports.len() {
            self.ports[slot] = port;
        } else {
            self.ports.push(port);
        }
        if self.plugged.len() <= slot {
            self.plugged.resize(slot + 1, None);
        }
        *self.generation += 1;
        log::info!("port {name} ({spec}) plugged as port {id} into bridge {:?} in {micros} us", p.bridge);
        let answer = json!({"port": p.name, "id": id, "driver": driver, "bridge": p.bridge, "vlan": p.vlan,
            "mac": p.mac.map(|m| fmt_mac(&m)), "rxqs": placed, "shared_tx_queues": shared, "micros": micros});
        self.plugged[slot] = Some(p);
        Ok(answer)
    }

    /// `port del NAME`.
    pub fn port_del(&mut self, a: &[&str]) -> Result<Value, String> {
        let [name] = a else { return Err("give: port del NAME".into()) };
        let t0 = Instant::now();
        let (id, changes) = self.ctl.unplug(name).map_err(|e| e.to_string())?;
        self.notify(changes)?;
        for l in 0..self.rt.lcores() {
            self.rt.command(l, Command::RemovePort(id)).map_err(|e| e.to_string())?;
        }
        let back = self.rt.synchronize(HANDOVER).map_err(|e| e.to_string())?;
        let queues = back.iter().filter(|(_, r)| matches!(r, Returned::Task(_))).count();
        drop(back);
        let forgotten = self.ctl.forget_port(id);
        let capture = self.captures.forget(id);
        let mut i = 0;
        while i < self.rxqs.len() {
            if self.rxqs[i].1.port == id {
                self.rxqs.remove(i);
                self.rebalancer.forget(i);
            } else {
                i += 1;
            }
        }
        let slot = id as usize;
        let port = std::mem::replace(&mut self.ports[slot], Box::new(Vacant::new(id)));
        let stats = port.stats();
        drop(port);
        self.plugged[slot] = None;
        *self.generation += 1;
        let micros = t0.elapsed().as_micros() as u64;
        log::info!("port {name} (port {id}) unplugged in {micros} us: {forgotten} FDB entries removed");
        Ok(json!({"port": name, "id": id, "rx_queues": queues, "fdb_removed": forgotten, "capture": capture,
            "rx_packets": stats.rx_packets, "tx_packets": stats.tx_packets, "micros": micros}))
    }

    /// `bridge add NAME [vni=N] [tunnel=KIND] [local=IP] [remotes=IP,...] [vlan=N] [udp_port=N]`.
    pub fn bridge_add(&mut self, a: &[&str]) -> Result<Value, String> {
        let usage =
            "bridge add NAME [vni=N] [tunnel=vxlan|geneve|nvgre] [local=IP] [remotes=IP,...] [vlan=N] [udp_port=N]";
        let [name, opts @ ..] = a else { return Err(format!("give: {usage}")) };
        let mut b = sw::BridgeConfig { name: name.to_string(), ..Default::default() };
        let ip = |k: &str, v: &str| v.parse::<IpAddr>().map_err(|e| format!("{k}={v}: {e}: give an IP address"));
        for o in opts {
            match o.split_once('=') {
                Some(("vni", v)) => b.vni = Some(v.parse().map_err(|_| format!("vni={v}: give 0..=16777215"))?),
                Some(("tunnel", "vxlan")) => b.tunnel = sw::TunnelKind::Vxlan,
                Some(("tunnel", "geneve")) => b.tunnel = sw::TunnelKind::Geneve,
                Some(("tunnel", "nvgre")) => b.tunnel = sw::TunnelKind::Nvgre,
                Some(("local", v)) => b.local = Some(ip("local", v)?),
                Some(("remotes", v)) => {
                    b.remotes =
                        v.split(',').filter(|r| !r.is_empty()).map(|r| ip("remotes", r)).collect::<Result<_, _>>()?
                }
                Some(("vlan", v)) => b.vlan = Some(super::commands::parse_vlan(v)?),
                Some(("udp_port", v)) => {
                    b.udp_port = Some(v.parse().map_err(|_| format!("udp_port={v}: give 1..=65535"))?)
                }
                _ => return Err(format!("'{o}': give {usage}")),
            }
        }
        let t0 = Instant::now();
        let changes = self.ctl.add_bridge(&b).map_err(|e| e.to_string())?;
        self.notify(changes)?;
        drop(self.rt.synchronize(HANDOVER).map_err(|e| e.to_string())?);
        self.bridge_cfgs.push(b.clone());
        Ok(json!({"bridge": b.name, "vni": b.vni, "tunnel": b.vni.map(|_| b.tunnel.name()), "local": b.local,
            "remotes": b.remotes, "vlan": b.vlan, "micros": t0.elapsed().as_micros() as u64}))
    }

    /// `bridge del NAME`.
    pub fn bridge_del(&mut self, a: &[&str]) -> Result<Value, String> {
        let [name] = a else { return Err("give: bridge del NAME".into()) };
        let (flushed, changes) = self.ctl.del_bridge(name).map_err(|e| e.to_string())?;
        self.notify(changes)?;
        drop(self.rt.synchronize(HANDOVER).map_err(|e| e.to_string())?);
        self.bridge_cfgs.retain(|b| b.name != *name);
        Ok(json!({"bridge": name, "fdb_removed": flushed}))
    }

    /// `remote add|del BRIDGE IP`.
    pub fn remote(&mut self, add: bool, a: &[&str]) -> Result<Value, String> {
        let [bridge, ip] = a else { return Err("give: remote add|del BRIDGE IP".into()) };
        let ip: IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}: give an IPv4 or IPv6 address"))?;
        let changes = self.ctl.set_remote(bridge, ip, add).map_err(|e| e.to_string())?;
        self.notify(changes)?;
        drop(self.rt.synchronize(HANDOVER).map_err(|e| e.to_string())?);
        let remotes = self.ctl.remotes().into_iter().find(|(b, _)| b == bridge).map(|r| r.1).unwrap_or_default();
        Ok(json!({"bridge": bridge, "remotes": remotes}))
    }
}
