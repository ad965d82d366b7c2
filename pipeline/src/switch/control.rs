//! The control side: the one writer of the FDB and of the neighbour entries. [`SwitchControl::poll`]
//! (every millisecond or so, from the application's control thread) applies the lcores' events
//! (learns, moves, neighbour updates) under the limits, ages a slice of the FDB, and moves
//! neighbours through their states; [`SwitchControl::stats`] sums every counter.
//!
//! Because every write goes through this one thread, two lcores that learn the same MAC at once
//! send two events that are applied one after the other (the second finds the entry and only
//! refreshes or moves it): no entry is lost or written twice, and readers see each entry whole
//! (see [`crate::switch::fdb`]).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrayvec::ArrayVec;
use fastpath_mempool::ring::spsc;

use crate::switch::clock::{Clock, Now};
use crate::switch::config::FdbConfig;
use crate::switch::event::Event;
use crate::switch::fdb::{self, Entry, FdbWriter, Hit, Place};
use crate::switch::secgroup::{PortGroups, SecurityGroup, SecurityGroups, SgConfig, SgRule, MAX_PORT_RULES};
use crate::switch::stats::{self, BridgeStats, LcoreCounters, SwitchPortStats, SwitchStats, VtepStats, REASONS};
use crate::switch::stats::{ConntrackStats, ZoneStats};
use crate::switch::topology::{Topology, NO_SEGMENT};
use crate::switch::trace::{self, Arm, Record, TracedPacket};
use crate::switch::vtep::{Neigh, NeighState, Vteps, MAX_VTEPS};
use fastpath_pmd::Error;

mod admin;
mod live;
pub use admin::FdbTarget;
pub use live::Changes;

/// A confirmed neighbour becomes stale after this long (lcores then solicit it again).
pub const NEIGH_REACHABLE_NS: u64 = 300_000_000_000;
/// A stale neighbour not confirmed for this long more is forgotten (packets then wait for it).
pub const NEIGH_STALE_NS: u64 = 5_000_000_000;
/// Events taken from each lcore's ring per poll at most.
const EVENTS_PER_POLL: usize = 4096;
/// FDB buckets aged per poll at most.
const SCAN_PER_POLL: usize = 4096;
/// Connection-table buckets aged per poll (a pass over a million-connection table, 262144
/// buckets, takes about a second at one poll a millisecond).
const CT_AGE_PER_POLL: usize = 256;

#[derive(Debug, Clone, Default)]
struct BridgeCounts {
    dynamic: u64,
    statics: u64,
    learned: u64,
    moved: u64,
    aged: u64,
    refused: u64,
}

/// The control side's end of the packet trace ([`crate::switch::trace`]).
#[derive(Debug, Default)]
pub(crate) struct Traces {
    /// What the lcores read to know whether and which port to trace.
    pub(crate) arm: Arc<Arm>,
    /// Records lost to a full ring.
    pub(crate) lost: Arc<AtomicU64>,
    /// One per lcore.
    pub(crate) rings: Vec<spsc::Consumer<Record>>,
    /// The records of the current trace, in the order they came.
    taken: Vec<Record>,
    /// The current trace's number.
    number: u16,
}

/// A packet trace's state, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStatus {
    /// The packets traced so far, in the order the control side got them.
    pub packets: Vec<TracedPacket>,
    /// Packets still to take.
    pub left: u32,
    /// Records lost to a full ring since the switch started.
    pub lost: u64,
}

/// An FDB entry, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// Bridge.
    pub bridge: String,
    /// Access VLAN of the segment (VLAN-only bridges).
    pub vlan: Option<u16>,
    /// MAC.
    pub mac: [u8; 6],
    /// The port it is behind (the uplink for a MAC behind its VLAN).
    pub port: Option<String>,
    /// The remote VTEP it is behind.
    pub vtep: Option<IpAddr>,
    /// From the config.
    pub is_static: bool,
    /// Seconds since it was last seen.
    pub age: u32,
}

/// The control side of a switch (see the module doc).
pub struct SwitchControl {
    topo: Arc<Topology>,
    fdb: FdbWriter,
    vteps: Arc<Vteps>,
    vtep_ids: HashMap<IpAddr, u16>,
    /// By VTEP id: learned from traffic (not configured).
    vtep_learned: Vec<bool>,
    /// By VTEP id: when its neighbour was last confirmed.
    confirmed: Vec<u64>,
    rings: Vec<spsc::Consumer<Event>>,
    trace: Traces,
    lcores: Vec<Arc<LcoreCounters>>,
    clock: Clock,
    cfg: FdbConfig,
    bridges: Vec<BridgeCounts>,
    port_macs: Vec<u64>,
    port_refused: Vec<u64>,
    /// Port ids the lcores' tables have room for.
    slots: usize,
    /// Segments the lcores' flood counters have room for.
    segment_room: usize,
    /// Per port and drop reason: the count when the port was plugged (a reused id starts at 0).
    drop_base: Vec<u64>,
    scan_next: usize,
    scan_credit: u128,
    last_poll_ns: u64,
    last_neigh_secs: u32,
    events: u64,
    expired: Vec<(Hit, Entry)>,
    sg: Option<Arc<SecurityGroups>>,
    sg_cfg: SgConfig,
}

impl fmt::Debug for SwitchControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwitchControl").field("fdb", &self.fdb).field("lcores", &self.lcores.len()).finish()
    }
}

impl SwitchControl {
    /// The control side of the tables, reading the lcores' rings and counters.
    pub(crate) fn new(
        topo: Arc<Topology>,
        fdb: FdbWriter,
        vteps: Arc<Vteps>,
        (rings, trace): (Vec<spsc::Consumer<Event>>, Traces),
        lcores: Vec<Arc<LcoreCounters>>,
        clock: Clock,
        cfg: FdbConfig,
    ) -> SwitchControl {
        let now = clock.now_ns();
        let mut c = SwitchControl {
            bridges: vec![BridgeCounts::default(); topo.bridges.len()],
            port_macs: vec![0; topo.ports.len()],
            port_refused: vec![0; topo.ports.len()],
            slots: topo.ports.len(),
            segment_room: topo.segments.len(),
            drop_base: Vec::new(),
            vtep_ids: HashMap::new(),
            vtep_learned: Vec::new(),
            confirmed: Vec::new(),
            topo,
            fdb,
            vteps,
            rings,
            trace,
            lcores,
            clock,
            cfg,
            scan_next: 0,
            scan_credit: 0,
            last_poll_ns: now,
            last_neigh_secs: Now::at(now).secs,
            events: 0,
            expired: Vec::new(),
            sg: None,
            sg_cfg: SgConfig::default(),
        };
        c.install();
        c
    }

    /// The security groups the lcores check, and their configuration.
    pub(crate) fn set_security_groups(&mut self, sg: Arc<SecurityGroups>, cfg: SgConfig) {
        self.sg = Some(sg);
        self.sg_cfg = cfg;
    }

    /// Replaces the rules of security group `name` (as Neutron's rule create / delete): new
    /// connections are checked against them at once, and each tracked connection of a port
    /// with the group at its next packet (removed, and the packet dropped as `sg-no-rule`,
    /// when no rule allows it any more). Errors name the group or rule and the fix.
    pub fn set_security_group(&mut self, name: &str, rules: Vec<SgRule>) -> Result<(), Error> {
        self.sg_cfg.set_group(name, rules)?;
        if let Some(sg) = &self.sg {
            sg.set(&self.sg_cfg);
        }
        Ok(())
    }

    /// The rules of security group `name`.
    pub fn security_group(&self, name: &str) -> Option<&[SgRule]> {
        self.sg_cfg.groups.iter().find(|g| g.name == name).map(|g| g.rules.as_slice())
    }

    /// The groups and each filtered port's list of them (port ids are the config's order).
    pub fn security_groups(&self) -> &SgConfig {
        &self.sg_cfg
    }

    /// Replaces every group and every port's list of groups at once (a Neutron agent's
    /// resync): each port's rules are rewritten in one step (an lcore checks a packet against
    /// the old rules or the new, never a mix), then one new generation makes every tracked
    /// connection be re-checked at its next packet (removed, the packet dropped as
    /// `sg-no-rule`, when no rule allows it any more). Groups may be added, changed or
    /// removed, and a port may change its list. Everything is checked first and nothing is
    /// changed on an error, which names the group, rule or port and the fix. Two changes are
    /// refused because the lcores' tables are sized at start: a port that had no group at start
    /// cannot get one (its packets are not checked at all), and a port that had some cannot
    /// lose them all (it would stay filtered with no rule, dropping everything); both need a
    /// restart.
    pub fn replace_security_groups(&mut self, groups: Vec<SecurityGroup>, ports: &[PortGroups]) -> Result<(), Error> {
        let err = |m: String| Err(Error::Config(m));
        let mut new = SgConfig { groups: Vec::with_capacity(groups.len()), ports: Vec::new() };
        for (i, g) in groups.into_iter().enumerate() {
            if g.name.is_empty() || new.groups.iter().any(|o| o.name == g.name) {
                return err(format!("security group {i} ({:?}): empty or used twice: give each its own name", g.name));
            }
            for (j, r) in g.rules.iter().enumerate() {
                r.check().map_err(|e| Error::Config(format!("security group {} rule {}: {e}", g.name, j + 1)))?;
            }
            new.groups.push(g);
        }
        let filtered = |id: usize| self.sg.as_ref().is_some_and(|s| s.filters(id as u16));
        for pg in ports {
            let Some(id) = self.topo.ports.iter().position(|p| p.name == pg.port) else {
                return err(format!("security groups for {:?}: there is no such port", pg.port));
            };
            if !filtered(id) {
                return err(format!(
                    "port {}: had no security group when the switch started, so its packets are not checked and it cannot get groups while it runs: restart the switch to give it some",
                    pg.port
                ));
            }
            if new.ports.iter().any(|(q, _)| *q as usize == id) {
                return err(format!("port {}: security groups given twice: give them once", pg.port));
            }
            for n in &pg.groups {
                if !new.groups.iter().any(|g| g.name == *n) {
                    return err(format!("port {}: security group {n:?} is not defined", pg.port));
                }
            }
            let n = new.rules_of(&pg.groups).len();
            if n > MAX_PORT_RULES {
                return err(format!("port {}: its groups have {n} rules: at most {MAX_PORT_RULES}", pg.port));
            }
            new.ports.push((id as u16, pg.groups.clone()));
        }
        for (id, _) in &self.sg_cfg.ports {
            let kept = new.ports.iter().find(|(q, _)| q == id).is_some_and(|(_, g)| !g.is_empty());
            if !kept {
                return err(format!(
                    "port {}: cannot lose all its security groups while the switch runs (it would stay filtered \
                     with no rule, dropping everything): keep one (a group that allows everything lets all \
                     through) or restart the switch",
                    self.topo.ports[*id as usize].name
                ));
            }
        }
        self.sg_cfg = new;
        if let Some(sg) = &self.sg {
            sg.set(&self.sg_cfg);
        }
        Ok(())
    }

    /// Publishes the configured VTEPs, permanent neighbours and static entries.
    fn install(&mut self) {
        let topo = self.topo.clone();
        for a in &topo.vteps {
            self.add_vtep(*a, false);
        }
        for (id, mac) in &topo.neighbours {
            self.vteps.set_neigh(*id, Neigh { mac: *mac, state: NeighState::Permanent });
        }
        for (key, place) in &topo.statics {
            // Checked by the topology: distinct keys, within capacity or refused here.
            if self.fdb.insert(Entry { key: *key, place: *place, seen: 0 }).is_ok() {
                if let Some(b) = self.bridge_of(*key) {
                    self.bridges[b].statics += 1;
                }
            }
        }
    }

    fn bridge_of(&self, key: u64) -> Option<usize> {
        let s = fdb::key_segment(key);
        (s != NO_SEGMENT).then(|| self.topo.segments.get(s as usize).map(|s| s.bridge as usize)).flatten()
    }

    fn add_vtep(&mut self, addr: IpAddr, learned: bool) -> Option<u16> {
        if let Some(id) = self.vtep_ids.get(&addr) {
            return Some(*id);
        }
        let id = self.vtep_learned.len();
        if id >= MAX_VTEPS {
            return None;
        }
        self.vteps.publish(id as u16, addr);
        self.vtep_ids.insert(addr, id as u16);
        self.vtep_learned.push(learned);
        self.confirmed.push(0);
        Some(id as u16)
    }

    /// Applies the lcores' events, ages a slice of the FDB and updates neighbour states. Call
    /// it about every millisecond.
    pub fn poll(&mut self) {
        let now = Now::at(self.clock.now_ns());
        let mut buf: ArrayVec<Event, 256> = ArrayVec::new();
        for r in 0..self.rings.len() {
            let mut taken = 0;
            while taken < EVENTS_PER_POLL && self.rings[r].dequeue_burst(&mut buf, 256) > 0 {
                taken += buf.len();
                for e in buf.drain(..) {
                    self.apply(e, now);
                }
            }
        }
        self.take_traces();
        self.age(now);
        if let Some(ct) = self.sg.as_ref().and_then(|s| s.conntrack()) {
            ct.age(now.secs as u64, CT_AGE_PER_POLL);
        }
        if now.secs != self.last_neigh_secs {
            self.last_neigh_secs = now.secs;
            self.neighbours(now);
        }
    }

    fn apply(&mut self, e: Event, now: Now) {
        self.events += 1;
        match e {
            Event::Learn { key, place } => self.learn(key, place, now),
            Event::LearnRemote { key, vtep } => match self.add_vtep(vtep, true) {
                Some(id) => self.learn(key, Place::vtep(id), now),
                None => self.refuse(key, None),
            },
            Event::Neighbour { addr, mac } => {
                let Some(&id) = self.vtep_ids.get(&addr) else { return };
                if self.vteps.neigh(id).state != NeighState::Permanent {
                    self.vteps.set_neigh(id, Neigh { mac, state: NeighState::Reachable });
                    self.confirmed[id as usize] = now.ns;
                }
            }
        }
    }

    /// True when `place` may take one more learned MAC.
    fn port_has_room(&self, place: Place) -> bool {
        place.is_remote()
            || self.cfg.port_limit == 0
            || self.port_macs[place.id() as usize] < self.cfg.port_limit as u64
    }

    fn refuse(&mut self, key: u64, port: Option<Place>) {
        if let Some(b) = self.bridge_of(key) {
            self.bridges[b].refused += 1;
        }
        if let Some(p) = port.filter(|p| !p.is_remote()) {
            self.port_refused[p.id() as usize] += 1;
        }
    }

    fn account(&mut self, place: Place, add: bool) {
        if !place.is_remote() {
            if let Some(n) = self.port_macs.get_mut(place.id() as usize) {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }

    fn learn(&mut self, key: u64, place: Place, now: Now) {
        let Some(b) = self.bridge_of(key) else { return };
        if !place.is_remote() && self.topo.vacant(place.id()) {
            // Handed over before its port was taken out.
            return;
        }
        if let Some((h, e)) = self.fdb.find(key) {
            if e.place.is_static() || e.place == place {
                self.fdb.fdb().touch(&h, now.secs.max(e.seen));
                return;
            }
            if !self.port_has_room(place) {
                return self.refuse(key, Some(place));
            }
            self.fdb.set_place(&h, place, now.secs);
            self.account(e.place, false);
            self.account(place, true);
            self.bridges[b].moved += 1;
            return;
        }
        let full = self.cfg.bridge_limit != 0 && self.bridges[b].dynamic >= self.cfg.bridge_limit as u64;
        if full || !self.port_has_room(place) {
            return self.refuse(key, (!full).then_some(place));
        }
        if self.fdb.insert(Entry { key, place, seen: now.secs }).is_err() {
            return self.refuse(key, None);
        }
        self.account(place, true);
        self.bridges[b].dynamic += 1;
        self.bridges[b].learned += 1;
    }

    /// Removes learned entries not seen for the aging time, a slice per poll: a full pass takes
    /// half the aging time (at most a minute), so an entry goes between 1 and 1.5 aging times
    /// after it was last seen.
    fn age(&mut self, now: Now) {
        let n = self.fdb.fdb().buckets();
        let aging = self.cfg.aging.as_secs() as u32;
        let period = (self.cfg.aging.as_nanos() / 2).clamp(1_000_000_000, 60_000_000_000);
        let elapsed = now.ns.saturating_sub(self.last_poll_ns) as u128;
        self.last_poll_ns = now.ns;
        self.scan_credit = (self.scan_credit + elapsed * n as u128 / period).min(n as u128);
        let count = (self.scan_credit as usize).min(SCAN_PER_POLL);
        if count == 0 {
            return;
        }
        self.scan_credit -= count as u128;
        let mut expired = std::mem::take(&mut self.expired);
        self.scan_next = self.fdb.scan(self.scan_next, count, |h, e| {
            if !e.place.is_static() && now.secs.saturating_sub(e.seen) > aging {
                expired.push((h, e));
            }
        });
        for (h, e) in expired.drain(..) {
            self.fdb.remove(&h);
            self.account(e.place, false);
            if let Some(b) = self.bridge_of(e.key) {
                self.bridges[b].dynamic = self.bridges[b].dynamic.saturating_sub(1);
                self.bridges[b].aged += 1;
            }
        }
        self.expired = expired;
    }

    /// Reachable -> stale after [`NEIGH_REACHABLE_NS`]; stale -> forgotten after
    /// [`NEIGH_STALE_NS`] more without an answer to the lcores' solicitations.
    fn neighbours(&mut self, now: Now) {
        for id in 0..self.vtep_learned.len() {
            let n = self.vteps.neigh(id as u16);
            let age = now.ns.saturating_sub(self.confirmed[id]);
            let next = match n.state {
                NeighState::Reachable if age > NEIGH_REACHABLE_NS => NeighState::Stale,
                NeighState::Stale if age > NEIGH_REACHABLE_NS + NEIGH_STALE_NS => NeighState::Incomplete,
                _ => continue,
            };
            self.vteps.set_neigh(id as u16, Neigh { mac: n.mac, state: next });
        }
    }

    /// Every counter, summed.
    pub fn stats(&self) -> SwitchStats {
        let mut bridges: Vec<BridgeStats> = self
            .topo
            .bridges
            .iter()
            .zip(&self.bridges)
            .map(|(t, c)| BridgeStats {
                name: t.name.clone(),
                fdb_size: c.dynamic + c.statics,
                learned: c.learned,
                moved: c.moved,
                aged: c.aged,
                flooded: 0,
                refused: c.refused,
            })
            .collect();
        for l in &self.lcores {
            for (seg, c) in self.topo.segments.iter().zip(l.flooded.iter()) {
                if let Some(b) = bridges.get_mut(seg.bridge as usize) {
                    b.flooded += c.get();
                }
            }
        }
        // A bridge deleted while the switch ran is not listed (its ids stay taken).
        bridges.retain(|b| !b.name.is_empty());
        let stages: Vec<Vec<_>> =
            self.lcores.iter().map(|l| l.stages.iter().chain(l.extra.iter()).cloned().collect()).collect();
        SwitchStats {
            bridges,
            ports: self.port_stats(),
            stages: stats::sum_stages(&stages),
            vteps: self.vtep_stats(),
            fdb_entries: self.fdb.len() as u64,
            fdb_relocations: self.fdb.fdb().relocations(),
            events: self.events,
            conntrack: self.conntrack_stats(),
        }
    }

    fn conntrack_stats(&self) -> Option<ConntrackStats> {
        let ct = self.sg.as_ref()?.conntrack()?;
        Some(ConntrackStats {
            entries: ct.len() as u64,
            capacity: ct.capacity() as u64,
            refused: ct.refused(),
            aged: ct.aged(),
            zones: (self.topo.bridges.iter().enumerate())
                .filter(|(_, b)| !b.name.is_empty())
                .map(|(z, b)| ZoneStats {
                    bridge: b.name.clone(),
                    entries: ct.zone_len(z as u16) as u64,
                    new: ct.zone_new(z as u16),
                })
                .collect(),
        })
    }

    fn port_stats(&self) -> Vec<SwitchPortStats> {
        let r = REASONS.len();
        let base = |k: usize| self.drop_base.get(k).copied().unwrap_or(0);
        (0..self.topo.ports.len())
            .filter(|&p| !self.topo.vacant(p as u16))
            .map(|p| SwitchPortStats {
                name: self.topo.ports[p].name.clone(),
                macs: self.port_macs[p],
                refused: self.port_refused[p],
                drops: (0..r)
                    .map(|i| (REASONS[i], self.port_drops(p * r + i).saturating_sub(base(p * r + i))))
                    .filter(|d| d.1 > 0)
                    .collect(),
            })
            .collect()
    }

    /// A per-port drop counter summed over the lcores.
    fn port_drops(&self, k: usize) -> u64 {
        self.lcores.iter().map(|l| l.port_drops.get(k).map_or(0, |c| c.get())).sum()
    }

    fn vtep_stats(&self) -> Vec<VtepStats> {
        (0..self.vtep_learned.len())
            .filter_map(|id| {
                let addr = self.vteps.addr(id as u16)?;
                let n = self.vteps.neigh(id as u16);
                let known = n.state != NeighState::Incomplete;
                Some(VtepStats {
                    addr,
                    mac: known.then_some(n.mac),
                    state: n.state.name(),
                    learned: self.vtep_learned[id],
                })
            })
            .collect()
    }

    fn entry(&self, e: &Entry) -> FdbEntry {
        let s = &self.topo.segments[fdb::key_segment(e.key) as usize];
        let p = e.place;
        FdbEntry {
            bridge: self.topo.bridges[s.bridge as usize].name.clone(),
            vlan: s.access_vlan,
            mac: fdb::key_mac(e.key),
            port: (!p.is_remote())
                .then(|| self.topo.ports.get(p.id() as usize).map_or(String::new(), |x| x.name.clone())),
            vtep: if p.is_remote() { self.vteps.addr(p.id()) } else { None },
            is_static: p.is_static(),
            age: Now::at(self.clock.now_ns()).secs.saturating_sub(e.seen),
        }
    }

    /// The entry of `mac` in `bridge` (segment of access VLAN `vlan` in a VLAN-only bridge).
    pub fn lookup(&self, bridge: &str, vlan: Option<u16>, mac: [u8; 6]) -> Option<FdbEntry> {
        let b = self.topo.bridges.iter().find(|b| b.name == bridge)?;
        let s = *b.segments.iter().find(|&&s| self.topo.segments[s as usize].access_vlan == vlan)?;
        self.fdb.find(fdb::key(s, &mac)).map(|(_, e)| self.entry(&e))
    }

    /// Every FDB entry (a walk over the whole table: for display, not for a fast loop).
    pub fn entries(&self) -> Vec<FdbEntry> {
        let mut v = Vec::new();
        self.fdb.scan(0, self.fdb.fdb().buckets(), |_, e| v.push(self.entry(&e)));
        v
    }
}

impl SwitchControl {
    /// Traces the next `n` packets (at most [`trace::MAX_PACKETS`]) received on port `port`,
    /// forgetting the previous trace; `n` = 0 stops tracing.
    pub fn trace_add(&mut self, port: u16, n: u32) -> Result<(), String> {
        if self.topo.vacant(port) {
            return Err(format!("no port {port}"));
        }
        if n > trace::MAX_PACKETS {
            return Err(format!("trace {n} packets: give at most {}", trace::MAX_PACKETS));
        }
        self.trace_clear();
        self.trace.number = self.trace.number.wrapping_add(1);
        self.trace.arm.set(self.trace.number, port, n);
        Ok(())
    }

    /// Stops tracing and forgets what was traced.
    pub fn trace_clear(&mut self) {
        self.trace.arm.set(self.trace.number, 0, 0);
        self.take_traces();
        self.trace.taken.clear();
    }

    /// The current trace: its packets so far, described.
    pub fn trace_show(&mut self) -> TraceStatus {
        self.take_traces();
        let names = trace::Names { topo: &self.topo, vteps: &self.vteps };
        TraceStatus {
            packets: self.trace.taken.iter().map(|r| names.describe(r)).collect(),
            left: self.trace.arm.left(),
            lost: self.trace.lost.load(Ordering::Relaxed),
        }
    }

    /// Moves the lcores' trace records here.
    fn take_traces(&mut self) {
        let mut buf: ArrayVec<Record, 64> = ArrayVec::new();
        let t = &mut self.trace;
        for r in &mut t.rings {
            while r.dequeue_burst(&mut buf, 64) > 0 {
                let room = (trace::MAX_PACKETS as usize).saturating_sub(t.taken.len());
                let number = t.number;
                t.taken.extend(buf.drain(..).filter(|r| r.trace == number).take(room));
                buf.clear();
            }
        }
    }
}
