//! Flooding: unknown unicast, broadcast and multicast go to every destination of the segment
//! but the one they came from: its other access ports, the uplink with the segment's tag (when
//! it has one and the frame did not come from that VLAN), and by head-end replication every
//! remote VTEP in the bridge's `remotes` (split horizon: not when the frame came out of a
//! tunnel). VTEPs learned from traffic get unicast only.
//!
//! Copies are shallow clones ([`fastpath_mempool::PoolCache::clone_n`]: one reference-count add
//! for all of them); the last destination gets the original. Destinations go in the order VTEPs,
//! uplink, access ports, so the original ends at an access port when there is one. A clone is
//! read-only, so a copy that needs new headers (a tunnel's, or a VLAN tag) gets a small direct
//! head mbuf holding them, with the clone chained behind it. A flood with a single destination
//! is plain unicast (in place).
//!
//! A burst of floods may make more packets than a batch holds: from the first flooded packet
//! on, the burst waits in an inline backlog and the batch is refilled in order; what does not
//! fit is handed out through [`crate::switch::SwitchProcessor`]'s `resume` (as the `lso` stage
//! does). Nothing is allocated on the heap.

use arrayvec::ArrayVec;
use fastpath_mempool::{Batch, Mbuf};
use fastpath_pmd::Ctx;

use crate::switch::egress::{self, Egress};
use crate::switch::meta;
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};
use crate::switch::topology::{Segment, MAX_FLOOD};
use crate::switch::underlay::Underlay;
use crate::switch::vtep::NeighState;

/// One destination of a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Vtep(u16),
    Uplink(u16),
    Port(u16),
}

/// One lcore's flooding state.
#[derive(Debug, Default)]
pub struct Flooder {
    /// Input held, the next one last.
    backlog: Batch,
    /// The packet being replicated.
    active: Option<Mbuf>,
    dests: Box<ArrayVec<Dest, MAX_FLOOD>>,
    next: usize,
    /// Clones made ahead for the active packet.
    clones: Batch,
}

impl Flooder {
    /// True while packets are held.
    pub fn holds(&self) -> bool {
        self.active.is_some() || !self.backlog.is_empty()
    }

    /// Floods the flooded packets of `batch`: from the first one on, the batch is taken and
    /// refilled in order (the rest through [`Flooder::fill`] later).
    #[inline]
    pub fn process(&mut self, sw: &Sw, eg: &mut Egress, under: &Underlay, batch: &mut Batch, ctx: &mut Ctx) {
        let Some(first) = batch.iter().position(|m| meta::action(m) == meta::FLOOD) else { return };
        while batch.len() > first {
            let Some(m) = batch.pop() else { break };
            if let Err(m) = self.backlog.push(m) {
                // Only when the caller did not drain the last burst (see `resume`).
                sw.c.dropped(SwitchStage::Flood, m.port(), reason::NO_MBUF);
                ctx.free(m);
            }
        }
        self.fill(sw, eg, under, batch, ctx);
    }

    /// Refills `batch` with held output, in order, as far as it has room.
    pub fn fill(&mut self, sw: &Sw, eg: &mut Egress, under: &Underlay, batch: &mut Batch, ctx: &mut Ctx) {
        while self.emit(sw, eg, batch, ctx) && batch.remaining_capacity() > 0 {
            let Some(m) = self.backlog.pop() else { break };
            if meta::action(&m) == meta::FLOOD {
                self.start(sw, eg, m, batch, ctx);
            } else {
                // Room was checked above.
                let _ = batch.push(m);
            }
        }
        eg.solicit(sw, under, batch, ctx);
    }

    /// Lists the destinations of `m` and starts replicating it (or sends it as unicast).
    fn start(&mut self, sw: &Sw, eg: &mut Egress, mut m: Mbuf, batch: &mut Batch, ctx: &mut Ctx) {
        let Some(seg) = sw.topo.segments.get(m.segment() as usize) else {
            return self.lose(sw, m, reason::NO_SEGMENT, ctx);
        };
        self.list(sw, eg, seg, &m);
        let k = self.dests.len();
        sw.c.stat(SwitchStage::Flood, stat::FLOODED, 1);
        sw.c.stat(SwitchStage::Flood, stat::COPIES, k as u64);
        if let Some(c) = sw.c.flooded.get(m.segment() as usize) {
            c.inc();
        }
        match self.dests.first() {
            None => self.lose(sw, m, reason::NO_DESTINATION, ctx),
            Some(&d) if k == 1 => {
                match d {
                    Dest::Port(p) => {
                        if let Err(r) = sw.check_to_vm(SwitchStage::Flood, p, &m) {
                            meta::set_drop(&mut m, r);
                            return ctx.free(m);
                        }
                        m.set_out_port(p);
                        meta::set_action(&mut m, meta::FORWARD);
                    }
                    Dest::Uplink(_) => meta::set_action(&mut m, meta::TO_UPLINK),
                    Dest::Vtep(id) => {
                        m.set_dest(id);
                        meta::set_action(&mut m, meta::TO_VTEP);
                    }
                }
                match eg.one(sw, &mut m) {
                    // Room: `fill` only starts a flood when the batch has some.
                    Ok(()) => drop(batch.push(m)),
                    Err(r) => self.lose(sw, m, r, ctx),
                }
            }
            Some(_) => self.active = Some(m),
        }
    }

    /// Lists the destinations of `m` in segment `seg` (module doc): VTEPs (resolved ones; the
    /// others are solicited and the copy counted lost), the uplink's VLAN, access ports.
    fn list(&mut self, sw: &Sw, eg: &mut Egress, seg: &Segment, m: &Mbuf) {
        let origin = meta::origin(m);
        self.dests.clear();
        self.next = 0;
        if origin != meta::FROM_TUNNEL {
            for &id in &seg.remotes {
                if sw.vteps.neigh(id).state == NeighState::Incomplete {
                    eg.want_solicit(id);
                    sw.c.dropped(SwitchStage::Flood, m.port(), reason::NEIGH_UNRESOLVED);
                } else {
                    let _ = self.dests.try_push(Dest::Vtep(id));
                }
            }
        }
        if let Some(tag) = seg.uplink_tag.filter(|_| origin != meta::FROM_VLAN) {
            let _ = self.dests.try_push(Dest::Uplink(tag));
        }
        for &p in &seg.ports {
            if !(origin == meta::FROM_ACCESS && p == m.port()) {
                let _ = self.dests.try_push(Dest::Port(p));
            }
        }
    }

    /// Sends copies of the active packet while `batch` has room; false when it is full and
    /// the packet is not done.
    fn emit(&mut self, sw: &Sw, eg: &mut Egress, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        let k = self.dests.len();
        while self.active.is_some() {
            if batch.remaining_capacity() == 0 {
                return false;
            }
            let last = self.next + 1 == k;
            let payload = if last { self.active.take() } else { self.clone_one(sw, batch, ctx) };
            let dest = self.dests[self.next];
            self.next += 1;
            let Some(p) = payload else {
                // The pool ran dry: this copy is lost.
                let port = self.active.as_ref().map_or(0, |m| m.port());
                sw.c.dropped(SwitchStage::Flood, port, reason::NO_MBUF);
                continue;
            };
            self.send(sw, eg, dest, p, batch, ctx);
        }
        true
    }

    /// The next clone of the active packet, made in bulk for as many copies as can go now.
    fn clone_one(&mut self, sw: &Sw, batch: &Batch, ctx: &mut Ctx) -> Option<Mbuf> {
        if self.clones.is_empty() {
            let m = self.active.as_ref()?;
            let n = (self.dests.len() - self.next).saturating_sub(1).min(batch.remaining_capacity());
            ctx.cache(&sw.pool).clone_n(m, n, &mut self.clones);
        }
        self.clones.pop()
    }

    /// Sends one copy to `dest`, with a head mbuf when it needs new headers.
    fn send(&mut self, sw: &Sw, eg: &mut Egress, dest: Dest, mut p: Mbuf, batch: &mut Batch, ctx: &mut Ctx) {
        if let Dest::Port(port) = dest {
            if sw.check_to_vm(SwitchStage::Flood, port, &p).is_err() {
                return ctx.free(p);
            }
            p.set_out_port(port);
            meta::set_action(&mut p, meta::FORWARD);
            // Room: checked by emit.
            let _ = batch.push(p);
            return;
        }
        let Some(mut head) = ctx.cache(&sw.pool).alloc() else {
            return self.lose(sw, p, reason::NO_MBUF, ctx);
        };
        let r = match dest {
            Dest::Vtep(id) => eg.vtep_onto(sw, &mut head, p, id),
            Dest::Uplink(tag) => egress::uplink_onto(sw, &mut head, p, tag),
            Dest::Port(_) => Ok(()),
        };
        match r {
            Ok(()) => drop(batch.push(head)),
            Err((r, p)) => {
                ctx.free(head);
                self.lose(sw, p, r, ctx);
            }
        }
    }

    /// Drops a packet or copy, counted.
    fn lose(&self, sw: &Sw, m: Mbuf, r: u8, ctx: &mut Ctx) {
        sw.c.dropped(SwitchStage::Flood, m.port(), r);
        ctx.free(m);
    }
}
