//! Changing the topology while the switch runs: plugging and unplugging access ports, and the
//! VTEPs a bridge floods to. Each change makes a new [`Topology`] and one [`Change`] per lcore;
//! the application hands them to the lcores' processors (the runtime's `Command::Notify`),
//! which swap them in between two bursts and give back what they replaced. Nothing on an
//! lcore waits or allocates for it: the per-port tables were sized for
//! [`crate::switch::SwitchConfig::max_ports`] ids at start.
//!
//! Plugging: [`SwitchControl::free_port_id`], open the port with that id, [`SwitchControl::plug`],
//! give each lcore its change, its transmit queue, a grace period, then the rx queues.
//! Unplugging: [`SwitchControl::unplug`], give each lcore its change and take the port's queues
//! back, a grace period, then [`SwitchControl::forget_port`] and drop the port.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

use fastpath_pmd::{Error, Offloads};

use super::SwitchControl;
use crate::switch::config::{BridgeConfig, PortConfig};
use crate::switch::fdb::Entry;
use crate::switch::processor::Change;
use crate::switch::stats::REASONS;
use crate::switch::topology::{check_remote, Topology};

/// One message per lcore, for its switch processor.
pub type Changes = Vec<Box<dyn Any + Send>>;

impl SwitchControl {
    /// Room for port ids below `slots` (what the lcores' tables were sized for).
    pub(crate) fn set_slots(&mut self, slots: usize) {
        self.slots = slots;
        // As the processors size their flood counters: a bridge added live has one segment.
        self.segment_room = self.topo.segments.len() + slots;
        self.port_macs.resize(slots.max(self.port_macs.len()), 0);
        self.port_refused.resize(slots.max(self.port_refused.len()), 0);
        self.drop_base.resize(self.port_macs.len() * REASONS.len(), 0);
    }

    /// The topology the lcores run (or are about to, after a change was made).
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The id a port plugged now gets: the lowest vacant id, else the next one. The id of a
    /// port that had security groups is not given again while the switch runs (its slot in the
    /// group table keeps its rules).
    pub fn free_port_id(&self) -> Result<u16, Error> {
        let filtered = |id: u16| self.sg.as_ref().is_some_and(|s| s.filters(id));
        let n = self.topo.ports.len();
        let id = (0..n as u16).find(|&i| self.topo.vacant(i) && !filtered(i)).unwrap_or(n as u16);
        if id as usize >= self.slots {
            return Err(Error::Config(format!(
                "every one of the {} port ids is in use (max_ports): delete a port, or raise [vswitch] max_ports \
                 and restart",
                self.slots
            )));
        }
        Ok(id)
    }

    fn changes(&self, port: Option<(u16, Offloads, Option<fastpath_pmd::LiveOffloads>)>) -> Changes {
        (0..self.lcores.len())
            .map(|_| Box::new(Change { topo: self.topo.clone(), port: port.clone(), back: None }) as _)
            .collect()
    }

    /// Plugs access port `p` (opened with id [`SwitchControl::free_port_id`]) into its bridge:
    /// returns one change per lcore. Give every lcore its change and the port's transmit queue,
    /// wait for a grace period, and only then poll its rx queues. Errors name the port and the
    /// fix; nothing is changed then.
    pub fn plug(&mut self, p: &PortConfig) -> Result<Changes, Error> {
        let id = p.port.id;
        if id as usize >= self.slots {
            return Err(Error::Config(format!("port {}: id {id} is beyond max_ports = {}", p.name, self.slots)));
        }
        let t = self.topo.with_port(p)?;
        self.topo = Arc::new(t);
        let (i, r) = (id as usize, REASONS.len());
        self.port_macs[i] = 0;
        self.port_refused[i] = 0;
        for k in i * r..(i + 1) * r {
            self.drop_base[k] = self.port_drops(k);
        }
        Ok(self.changes(Some((id, p.port.offloads, p.port.live.clone()))))
    }

    /// Takes port `name` out of its bridge: returns its id and one change per lcore. Give every
    /// lcore its change and take the port's queues back (`Command::RemovePort`), wait for a
    /// grace period, then call [`SwitchControl::forget_port`]. The uplink stays.
    pub fn unplug(&mut self, name: &str) -> Result<(u16, Changes), Error> {
        let Some(id) = self.topo.port_id(name) else {
            return Err(Error::Config(format!("there is no port {name}")));
        };
        if Some(id) == self.topo.uplink {
            return Err(Error::Config(format!("port {name} is the uplink: it stays while the switch runs")));
        }
        self.topo = Arc::new(self.topo.without_port(id));
        // Its rules stay in its slot of the group table (the id is not given again); a later
        // replacement of the groups no longer names it.
        self.sg_cfg.ports.retain(|(q, _)| *q != id);
        Ok((id, self.changes(Some((id, Offloads::NONE, None)))))
    }

    /// After a port's changes and queues are back (a grace period passed): applies what the
    /// lcores learned before, then removes every FDB entry pointing at the port, static ones
    /// too (as OVS does when a port is deleted). Returns how many.
    pub fn forget_port(&mut self, id: u16) -> usize {
        self.poll();
        let mut gone = Vec::new();
        self.fdb.scan(0, self.fdb.fdb().buckets(), |h, e: Entry| {
            if !e.place.is_remote() && e.place.id() == id {
                gone.push((h, e));
            }
        });
        for (h, e) in &gone {
            self.fdb.remove(h);
            if let Some(b) = self.bridge_of(e.key) {
                let c = &mut self.bridges[b];
                if e.place.is_static() {
                    c.statics = c.statics.saturating_sub(1);
                } else {
                    c.dynamic = c.dynamic.saturating_sub(1);
                }
            }
        }
        if let Some(n) = self.port_macs.get_mut(id as usize) {
            *n = 0;
        }
        gone.len()
    }

    /// Adds (`add`) or removes VTEP `addr` from the flood list of bridge `bridge` (head-end
    /// replication): returns one change per lcore. Entries learned behind a removed VTEP stay
    /// until they age or move, as Linux's VXLAN device keeps its FDB entries.
    pub fn set_remote(&mut self, bridge: &str, addr: IpAddr, add: bool) -> Result<Changes, Error> {
        let e = |m: String| Err(Error::Config(m));
        let Some(b) = self.topo.bridges.iter().position(|x| x.name == bridge) else {
            return e(format!("there is no bridge {bridge}"));
        };
        let Some(&s0) = self.topo.bridges[b].segments.first() else {
            return e(format!("bridge {bridge} has no segment"));
        };
        let seg = &self.topo.segments[s0 as usize];
        let Some(class) = seg.class.map(|c| self.topo.classes[c as usize]) else {
            return e(format!("bridge {bridge} has no vni: it has no remote VTEPs"));
        };
        let local = class.local;
        check_remote(&format!("bridge {bridge}"), addr, local)?;
        let mut remotes = seg.remotes.clone();
        let known = self.vtep_ids.get(&addr).copied();
        if add {
            if known.is_some_and(|id| remotes.contains(&id)) {
                return e(format!("bridge {bridge} floods to {addr} already"));
            }
            let Some(id) = self.add_vtep(addr, false) else {
                return e(format!("remote {addr}: the VTEP table is full ({} VTEPs)", crate::switch::vtep::MAX_VTEPS));
            };
            remotes.push(id);
        } else {
            match known.and_then(|id| remotes.iter().position(|&r| r == id)) {
                Some(k) => {
                    remotes.remove(k);
                }
                None => return e(format!("bridge {bridge} does not flood to {addr}")),
            }
        }
        self.topo = Arc::new(self.topo.with_remotes(b as u16, &remotes)?);
        Ok(self.changes(None))
    }

    /// Adds bridge `bc` (no ports yet: plug them with [`SwitchControl::plug`]): returns one
    /// change per lcore. Its tunnel must be one the switch has (kind, UDP port and local
    /// address of some bridge at start); errors name the key and the fix.
    pub fn add_bridge(&mut self, bc: &BridgeConfig) -> Result<Changes, Error> {
        if self.topo.segments.len() >= self.segment_room {
            return Err(Error::Config(format!(
                "bridge {}: the switch has no room for more bridges until it restarts ({} segments)",
                bc.name, self.segment_room
            )));
        }
        let mut t = self.topo.with_bridge(bc)?;
        let b = t.bridges.len() - 1;
        let mut ids = Vec::new();
        if let Some(local) = bc.local.filter(|_| bc.vni.is_some()) {
            for &r in &bc.remotes {
                check_remote(&format!("bridge {}", bc.name), r, local)?;
            }
            for &r in &bc.remotes {
                let Some(id) = self.add_vtep(r, false) else {
                    return Err(Error::Config(format!("bridge {}: remote {r}: the VTEP table is full", bc.name)));
                };
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            t = t.with_remotes(b as u16, &ids)?;
        } else if !bc.remotes.is_empty() {
            return Err(Error::Config(format!("bridge {}: remotes need vni = N and local = IP", bc.name)));
        }
        self.topo = Arc::new(t);
        self.bridges.resize(self.topo.bridges.len(), Default::default());
        self.bridges[b] = Default::default();
        Ok(self.changes(None))
    }

    /// Deletes bridge `name`, which must have no port left: returns how many FDB entries went
    /// with it and one change per lcore. Its VNI and uplink VLAN are free again at once.
    pub fn del_bridge(&mut self, name: &str) -> Result<(usize, Changes), Error> {
        let Some(b) = self.topo.bridge_id(name) else {
            return Err(Error::Config(format!("there is no bridge {name}")));
        };
        let segs = &self.topo.bridges[b as usize].segments;
        let left: Vec<&str> = (segs.iter())
            .flat_map(|&s| self.topo.segments[s as usize].ports.iter())
            .map(|&p| self.topo.ports[p as usize].name.as_str())
            .collect();
        if !left.is_empty() {
            return Err(Error::Config(format!(
                "bridge {name} still has ports {}: unplug them first (port del)",
                left.join(", ")
            )));
        }
        let mut gone = Vec::new();
        self.fdb.scan(0, self.fdb.fdb().buckets(), |h, e: Entry| {
            if segs.contains(&crate::switch::fdb::key_segment(e.key)) {
                gone.push((h, e));
            }
        });
        for (h, e) in &gone {
            self.fdb.remove(h);
            self.account(e.place, false);
        }
        self.topo = Arc::new(self.topo.without_bridge(b));
        self.bridges[b as usize] = Default::default();
        Ok((gone.len(), self.changes(None)))
    }

    /// The remote VTEPs each bridge floods to, by bridge name.
    pub fn remotes(&self) -> Vec<(String, Vec<IpAddr>)> {
        (self.topo.bridges.iter())
            .filter(|b| !b.name.is_empty())
            .map(|b| {
                let r = b.segments.first().map(|&s| self.topo.segments[s as usize].remotes.clone()).unwrap_or_default();
                (b.name.clone(), r.iter().filter_map(|&id| self.vteps.addr(id)).collect())
            })
            .collect()
    }
}
