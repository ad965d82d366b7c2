//! What an operator changes in the FDB while the switch runs (`fastpath ctl fdb add|del|flush`):
//! static entries added or replaced, entries removed, learned entries flushed. Each goes through
//! the one writer like a learn, so the lcores keep reading whole entries.

use std::net::IpAddr;

use super::SwitchControl;
use crate::switch::fdb::{self, Entry, Place};

/// Where an added static MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbTarget<'a> {
    /// Behind the port of this name (an access port of the segment, or the uplink of a
    /// segment with an uplink VLAN).
    Port(&'a str),
    /// Behind this remote VTEP (a bridge with a VNI).
    Vtep(IpAddr),
}

impl SwitchControl {
    /// The segment of `bridge` with access VLAN `vlan`, and the bridge's index.
    fn segment_of(&self, bridge: &str, vlan: Option<u16>) -> Result<(usize, u16), String> {
        let Some(b) = self.topo.bridges.iter().position(|b| b.name == bridge) else {
            return Err(format!("there is no bridge '{bridge}'"));
        };
        let seg = self.topo.bridges[b].segments.iter().find(|&&s| self.topo.segments[s as usize].access_vlan == vlan);
        match seg {
            Some(&s) => Ok((b, s)),
            None => Err(format!("bridge '{bridge}' has no segment with access vlan {vlan:?}")),
        }
    }

    fn place_in(&mut self, s: u16, to: FdbTarget<'_>) -> Result<Place, String> {
        let seg = &self.topo.segments[s as usize];
        match to {
            FdbTarget::Port(name) => {
                let Some(id) = self.topo.ports.iter().position(|p| p.name == name) else {
                    return Err(format!("there is no port '{name}'"));
                };
                let on_uplink = Some(id as u16) == self.topo.uplink && seg.uplink_tag.is_some();
                if !seg.ports.contains(&(id as u16)) && !on_uplink {
                    return Err(format!("port '{name}' is not in this segment"));
                }
                Ok(Place::port(id as u16))
            }
            FdbTarget::Vtep(v) => {
                let Some(class) = seg.vni.and(seg.class) else {
                    return Err(format!("vtep {v}: the bridge has no vni"));
                };
                let local = self.topo.classes[class as usize].local;
                if v.is_ipv4() != local.is_ipv4() || v == local {
                    return Err(format!("vtep {v}: give a remote VTEP of the family of local {local}"));
                }
                match self.add_vtep(v, false) {
                    Some(id) => Ok(Place::vtep(id)),
                    None => Err(format!("vtep {v}: no room for one more remote VTEP")),
                }
            }
        }
    }

    /// Adds a static entry for `mac` in `bridge` (segment of access VLAN `vlan`), or turns the
    /// entry there into this static one. Errors say which name or value is wrong.
    pub fn fdb_add(&mut self, bridge: &str, vlan: Option<u16>, mac: [u8; 6], to: FdbTarget<'_>) -> Result<(), String> {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err("a static entry needs a unicast MAC address".into());
        }
        let (b, s) = self.segment_of(bridge, vlan)?;
        let place = self.place_in(s, to)?.as_static();
        let key = fdb::key(s, &mac);
        match self.fdb.find(key) {
            Some((h, e)) => {
                self.fdb.set_place(&h, place, 0);
                if !e.place.is_static() {
                    self.account(e.place, false);
                    self.bridges[b].dynamic = self.bridges[b].dynamic.saturating_sub(1);
                    self.bridges[b].statics += 1;
                }
            }
            None => {
                self.fdb.insert(Entry { key, place, seen: 0 }).map_err(|_| "the FDB is full".to_string())?;
                self.bridges[b].statics += 1;
            }
        }
        Ok(())
    }

    /// Removes the entry of `mac` in `bridge` (static or learned); false when there is none.
    pub fn fdb_del(&mut self, bridge: &str, vlan: Option<u16>, mac: [u8; 6]) -> Result<bool, String> {
        let (b, s) = self.segment_of(bridge, vlan)?;
        let Some((h, e)) = self.fdb.find(fdb::key(s, &mac)) else { return Ok(false) };
        self.fdb.remove(&h);
        if e.place.is_static() {
            self.bridges[b].statics = self.bridges[b].statics.saturating_sub(1);
        } else {
            self.account(e.place, false);
            self.bridges[b].dynamic = self.bridges[b].dynamic.saturating_sub(1);
        }
        Ok(true)
    }

    /// Removes every learned entry (of `bridge`, or of every bridge); static entries stay.
    /// Returns how many went.
    pub fn fdb_flush(&mut self, bridge: Option<&str>) -> Result<usize, String> {
        let only = match bridge {
            Some(name) => match self.topo.bridges.iter().position(|b| b.name == name) {
                Some(b) => Some(b),
                None => return Err(format!("there is no bridge '{name}'")),
            },
            None => None,
        };
        let mut gone = Vec::new();
        self.fdb.scan(0, self.fdb.fdb().buckets(), |h, e| gone.push((h, e)));
        let mut n = 0;
        for (h, e) in gone {
            let Some(b) = self.bridge_of(e.key) else { continue };
            if e.place.is_static() || only.is_some_and(|o| o != b) {
                continue;
            }
            self.fdb.remove(&h);
            self.account(e.place, false);
            self.bridges[b].dynamic = self.bridges[b].dynamic.saturating_sub(1);
            n += 1;
        }
        Ok(n)
    }
}
