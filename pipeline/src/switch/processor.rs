//! The per-lcore switch: one [`SwitchProcessor`] per lcore, shared by every rx task of it. A
//! burst goes through named passes (each in its own file):
//!
//! ```text
//! ingress     segment and origin by port role; uplink: VLAN pop, decap + VTEP check, ARP / ND
//! lookup      every key of the burst hashed, both buckets prefetched
//! learn       source MACs: refresh, or an event to the control side
//! forward     destination MACs: a port, the uplink's VLAN, a VTEP, or flood
//!   (or these four in one pass, a frame that repeats the one before taking its verdict)
//! (drops and consumed packets leave the batch)
//! egress      known unicast to a VTEP encapsulated, to the uplink tagged, in place
//! gro         decapsulated TCP to ports that take TSO, merged
//! flood       copies to every other destination of the segment (backlog, resume)
//! tx-offload  checksums / segmentation that each output port cannot do itself
//! ```
//!
//! Ingress, learning and forwarding run as one pass over the burst ([`SwitchProcessor`]'s
//! `one_pass`), where a frame whose input port and first 14 bytes repeat those of the frame
//! switched before it takes that frame's verdict ([`crate::switch::memo`]): a burst of one flow
//! costs one lookup of each MAC and a compare per frame. A burst that needed many lookups (many
//! flows) sends the next burst through the separate passes, whose lookup pass hashes every key
//! in one tight loop and, over an FDB too large for the caches, prefetches their buckets before
//! the first is read; so does a traced burst (the trace notes the packets after each pass). A
//! burst of few lookups returns to the one pass.
//!
//! A packet trace ([`crate::switch::trace`]) notes the traced packets after each pass; while
//! none runs it costs one relaxed load per burst.
//!
//! Nothing here takes a lock or allocates: the FDB and the VTEP table are read lock-free, the
//! control side is told through this lcore's SPSC ring, and every buffer is inline or made when
//! the processor is built.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use fastpath_mempool::offload::ptype;
use fastpath_mempool::ring::spsc;
use fastpath_mempool::{Batch, Mbuf, Mempool};
use fastpath_pmd::{Ctx, LiveOffloads, Offloads, PortInfo, Processor};

use crate::conntrack::LastConn;
use crate::stage::Stage;
use crate::stages::gro::Gro;
use crate::stages::segment::SegmentStage;
use crate::stages::txoffload;
use crate::switch::clock::{Clock, Now};
use crate::switch::egress::Egress;
use crate::switch::event::Event;
use crate::switch::fdb::{Fdb, Hit};
use crate::switch::flood::Flooder;
use crate::switch::learn::Learner;
use crate::switch::lookup::{self, Scratch};
use crate::switch::memo::{self, Memo};
use crate::switch::secgroup::SecurityGroups;
use crate::switch::stats::{stat, LcoreCounters, SwitchStage};
use crate::switch::topology::Topology;
use crate::switch::trace::{Pass, Tracer};
use crate::switch::underlay::Underlay;
use crate::switch::vtep::{VtepAddr, Vteps};
use crate::switch::{fdb, forward, ingress, meta};

/// A burst that looked more keys up than this sends the next one through the separate passes
/// (see the module doc).
const FEW_LOOKUPS: usize = 8;

/// What every pass of one lcore reads, and the ring it writes events to.
pub struct Sw {
    /// The checked configuration.
    pub topo: Arc<Topology>,
    /// The FDB (read only here).
    pub fdb: Arc<Fdb>,
    /// Remote VTEPs.
    pub vteps: Arc<Vteps>,
    /// Security groups and their connection table.
    pub sg: Arc<SecurityGroups>,
    /// This lcore's counters.
    pub c: Arc<LcoreCounters>,
    /// Events to the control side.
    pub events: spsc::Producer<Event>,
    /// The pool head mbufs, clones and solicitations come from.
    pub pool: Mempool,
    /// The time of this burst.
    pub now: Now,
    /// The connection each direction's security-group check found last (egress, to a VM),
    /// forgotten at every burst.
    pub last_conn: [LastConn; 2],
}

impl fmt::Debug for Sw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sw").field("now", &self.now).finish_non_exhaustive()
    }
}

impl Sw {
    /// Checks packet `m` going out to access port `port` against the port's security groups
    /// (VM ingress); counts the drop against `port` in `stage` when it must not pass.
    #[inline]
    pub fn check_to_vm(&self, stage: SwitchStage, port: u16, m: &Mbuf) -> Result<(), u8> {
        if !self.sg.filters(port) {
            return Ok(());
        }
        let secs = self.now.secs as u64;
        self.sg.check(port, false, m.data(), secs, &self.last_conn[1]).inspect_err(|&r| self.c.dropped(stage, port, r))
    }

    /// Sends an event to the control side; false when the ring is full (the event is lost).
    #[inline]
    pub fn send(&mut self, e: Event) -> bool {
        self.events.enqueue(e).is_ok()
    }
}

/// One lcore's switch (see the module doc). Build them with [`crate::switch::build`]; each must
/// be driven by one thread at a time.
pub struct SwitchProcessor {
    sw: Sw,
    clock: Clock,
    under: Underlay,
    scratch: Box<Scratch>,
    learner: Learner,
    egress: Egress,
    flood: Flooder,
    gro: Gro,
    gro_batch: Batch,
    txoff: SegmentStage,
    tracer: Tracer,
    /// The last burst needed many lookups: this one takes the separate passes.
    spread: bool,
    /// The one pass may be taken ([`SwitchProcessor::set_one_pass`]).
    one_pass: bool,
}

impl fmt::Debug for SwitchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwitchProcessor").field("flood", &self.flood).finish_non_exhaustive()
    }
}

impl SwitchProcessor {
    /// A processor over the shared tables, sending events to `events`; returns it with its
    /// counters.
    pub(crate) fn new(
        shared: (&Arc<Topology>, &Arc<Fdb>, &Arc<Vteps>, &Arc<SecurityGroups>),
        events: spsc::Producer<Event>,
        tracer: Tracer,
        pool: &Mempool,
        (clock, slots): (Clock, usize),
    ) -> (SwitchProcessor, Arc<LcoreCounters>) {
        let (topo, fdb, vteps, sg) = shared;
        let ports: Vec<PortInfo> = topo.ports.iter().map(|p| p.info.clone()).collect();
        let gro = Gro::new(u16::MAX as usize);
        let mut txoff = txoffload::tx_offload(&ports);
        txoff.reserve_ports(slots);
        let mut c = LcoreCounters::new(slots.max(ports.len()), topo.segments.len() + slots);
        c.extra = vec![gro.counters().clone(), txoff.counters().clone()];
        let c = Arc::new(c);
        let sw = Sw {
            topo: topo.clone(),
            fdb: fdb.clone(),
            vteps: vteps.clone(),
            sg: sg.clone(),
            c: c.clone(),
            events,
            pool: pool.clone(),
            now: Now::default(),
            last_conn: Default::default(),
        };
        let p = SwitchProcessor {
            under: Underlay::new(topo),
            egress: Egress::new(topo),
            sw,
            clock,
            scratch: Box::default(),
            learner: Learner::default(),
            flood: Flooder::default(),
            gro,
            gro_batch: Batch::new(),
            txoff,
            tracer,
            spread: false,
            one_pass: true,
        };
        (p, c)
    }

    /// Lets bursts take the one pass (the default, see the module doc) or not: off, every
    /// burst takes the separate passes. The verdicts are the same either way; this is for
    /// tests that check so, and for measuring what the one pass saves.
    pub fn set_one_pass(&mut self, on: bool) {
        self.one_pass = on;
    }

    /// Ingress, learning and forwarding in one pass, a frame that repeats the frame before
    /// taking its verdict ([`memo`]); returns what the batch holds and how many keys it looked
    /// up.
    #[inline]
    fn one_pass(&mut self, batch: &mut Batch) -> (Holds, usize) {
        let sw = &mut self.sw;
        sw.c.packets(SwitchStage::Ingress, batch.len() as u64);
        let (mut h, mut memo) = (Holds::default(), Memo::default());
        let (mut access, mut learn, mut repeats, mut lookups) = (0u64, 0u64, 0u64, 0usize);
        let mut counts = [0u64; 4];
        // The last key looked up and what was found, for each side (as in `switch`).
        let (mut src, mut dst) = ((0u64, None), (0u64, None));
        for (i, m) in batch.iter_mut().enumerate() {
            let head = memo::head(m);
            if memo.apply(m, head) {
                // Its action is in `h` already, from the frame it repeats.
                repeats += 1;
                continue;
            }
            let outer = &mut self.scratch.outer[i];
            match ingress::one(sw, &self.under, m, outer) {
                Ok(true) => {
                    learn += 1;
                    let from_access = meta::origin(m) == meta::FROM_ACCESS;
                    access += from_access as u64;
                    let (dk, sk) = fdb::frame_keys(m.segment(), m.data());
                    if sk != src.0 {
                        src = (sk, sw.fdb.lookup(sk));
                        lookups += 1;
                    }
                    let dk = if fdb::is_group(dk) { 0 } else { dk };
                    let find_dst = |sw: &Sw| {
                        if dk != dst.0 {
                            dst = (dk, sw.fdb.lookup(dk));
                            lookups += 1;
                        }
                        dst.1
                    };
                    let settled = learn_forward(&mut self.learner, sw, m, src, (dk, find_dst), outer, &mut counts);
                    if let (true, true, Some(head)) = (settled, from_access, head) {
                        if sw.topo.ports.get(m.port() as usize).is_some_and(|p| p.guard.is_none())
                            && !sw.sg.filters(m.port())
                        {
                            memo.remember(m, head);
                        }
                    }
                }
                Ok(false) => {}
                Err((stage, r)) => {
                    sw.c.dropped(stage, m.port(), r);
                    meta::set_drop(m, r);
                }
            }
            h.add(m);
        }
        counts[stat::KNOWN as usize] += repeats;
        sw.c.stat(SwitchStage::Ingress, stat::ACCESS, access + repeats);
        count_switched(&sw.c, learn + repeats, &counts);
        (h, lookups)
    }

    /// Learns and looks up the classified packets; returns what the batch holds now and how
    /// many keys it hashed.
    #[inline]
    fn switch(&mut self, batch: &mut Batch, learn: usize) -> (Holds, usize) {
        let s = &mut self.scratch;
        let hashed = lookup::prepare(&self.sw.fdb, batch, s);
        let mut counts = [0u64; 4];
        let mut h = Holds::default();
        // The last key looked up and what was found, for each side (a burst is often one
        // flow: VPP's l2fib cached key).
        let (mut src, mut dst) = ((0u64, None), (0u64, None));
        for (i, m) in batch.iter_mut().enumerate() {
            if meta::action(m) == meta::LEARN {
                if s.src[i] != src.0 {
                    src = (s.src[i], self.sw.fdb.lookup_at(s.src[i], s.src_b[i]));
                }
                let (dk, db) = (s.dst[i], s.dst_b[i]);
                let find_dst = |sw: &Sw| {
                    if dk != dst.0 {
                        dst = (dk, sw.fdb.lookup_at(dk, db));
                    }
                    dst.1
                };
                learn_forward(&mut self.learner, &mut self.sw, m, src, (dk, find_dst), &s.outer[i], &mut counts);
            }
            h.add(m);
        }
        count_switched(&self.sw.c, learn as u64, &counts);
        (h, hashed)
    }

    /// Checks known unicast going to VM ports with security groups; returns how many it dropped.
    #[inline]
    fn check_to_vms(&mut self, batch: &mut Batch) -> usize {
        let mut dropped = 0;
        for m in batch.iter_mut() {
            if meta::action(m) == meta::FORWARD {
                if let Err(r) = self.sw.check_to_vm(SwitchStage::Forward, m.out_port(), m) {
                    meta::set_drop(m, r);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Merges decapsulated TCP going to ports that take TSO.
    #[inline]
    fn gro(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let wants = |m: &Mbuf| {
            meta::origin(m) == meta::FROM_TUNNEL
                && meta::action(m) == meta::FORWARD
                && m.packet_type() & ptype::L4_MASK == ptype::L4_TCP
        };
        if batch.iter().filter(|m| wants(m)).take(2).count() < 2 {
            return;
        }
        // The tx-offload stage's table: one per lcore, the same decision as its own.
        let caps = self.txoff.refreshed_caps();
        let takes_tso = |p: u16| caps.get(p).contains(Offloads::TX_TCP_TSO);
        batch.partition_into(&mut self.gro_batch, |m| !(wants(m) && takes_tso(m.out_port())));
        if !self.gro_batch.is_empty() {
            self.gro.process(&mut self.gro_batch, ctx);
            batch.append(&mut self.gro_batch);
        }
    }
}

/// A change of the switch's topology for one lcore's processor, made by the control side
/// ([`crate::switch::SwitchControl::plug`] and its kin) and sent with the runtime's
/// `Command::Notify`. It comes back holding what the processor replaced.
pub struct Change {
    /// The new topology (back: the old one).
    pub(crate) topo: Arc<Topology>,
    /// A port whose offloads to set: id, what it does, its live offloads (none: taken out).
    pub(crate) port: Option<(u16, Offloads, Option<LiveOffloads>)>,
    /// The live offloads replaced.
    pub(crate) back: Option<LiveOffloads>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change").field("port", &self.port.as_ref().map(|p| p.0)).finish_non_exhaustive()
    }
}

/// Learns the source of `m` (key and hit `src`) and, when that leaves it to be switched, sends
/// it towards its destination (key `dst.0`, 0 when not unicast; found by `dst.1`, asked only
/// then), counting the forward stat in `counts`. True when the source was settled (see
/// [`Learner::one`]). The per-frame step of both the one pass and the separate passes.
#[inline(always)]
fn learn_forward(
    learner: &mut Learner,
    sw: &mut Sw,
    m: &mut Mbuf,
    src: (u64, Option<Hit>),
    dst: (u64, impl FnOnce(&Sw) -> Option<Hit>),
    outer: &VtepAddr,
    counts: &mut [u64; 4],
) -> bool {
    let settled = learner.one(sw, m, src.0, src.1, outer);
    if meta::action(m) == meta::LEARN {
        let unicast = dst.0 != 0;
        let hit = if unicast { (dst.1)(sw) } else { None };
        counts[forward::one(sw, m, unicast, hit) as usize & 3] += 1;
    }
    settled
}

/// Counts `n` frames learned and forwarded, and the forward stats `counts`.
#[inline]
fn count_switched(c: &LcoreCounters, n: u64, counts: &[u64; 4]) {
    c.packets(SwitchStage::Learn, n);
    c.packets(SwitchStage::Forward, n);
    for (code, k) in counts.iter().enumerate() {
        c.stat(SwitchStage::Forward, code as u8, *k);
    }
}

/// What a batch holds, to skip the passes that have nothing to do.
#[derive(Debug, Clone, Copy, Default)]
struct Holds {
    /// A bit per action present.
    actions: u32,
    /// Packets that came out of a tunnel.
    decapsulated: usize,
}

impl Holds {
    #[inline(always)]
    fn add(&mut self, m: &Mbuf) {
        self.actions |= 1 << meta::action(m);
        self.decapsulated += (meta::origin(m) == meta::FROM_TUNNEL) as usize;
    }

    fn any(&self, actions: &[u8]) -> bool {
        actions.iter().any(|a| self.actions & (1 << a) != 0)
    }
}

/// Takes dropped and consumed packets out of the batch and frees them (drops are counted).
#[inline]
fn sweep(batch: &mut Batch, ctx: &mut Ctx) {
    batch.partition_into(&mut ctx.drops, |m| !matches!(meta::action(m), meta::DROP | meta::CONSUMED));
    ctx.free_drops();
}

impl Processor for SwitchProcessor {
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        if batch.is_empty() {
            return;
        }
        // A trace costs one relaxed load per burst while none runs; the notes after each pass
        // are taken only for a burst with traced packets.
        let traced = self.tracer.armed() && self.tracer.begin(batch);
        self.sw.now = Now::at(self.clock.now_ns());
        if self.sw.sg.conntrack().is_some() {
            self.sw.last_conn.iter().for_each(LastConn::forget);
        }
        let (h, lookups) = if traced || self.spread || !self.one_pass {
            let t = ingress::run(&mut self.sw, &self.under, batch, &mut self.scratch.outer);
            if traced {
                self.tracer.mark(Pass::Ingress, batch, Some(&self.sw.fdb));
            }
            if t.learn > 0 {
                self.switch(batch, t.learn)
            } else {
                let mut h = Holds::default();
                batch.iter().for_each(|m| h.add(m));
                (h, 0)
            }
        } else {
            self.one_pass(batch)
        };
        self.spread = lookups > FEW_LOOKUPS;
        let mut out = h.any(&[meta::DROP, meta::CONSUMED]);
        if h.any(&[meta::FORWARD]) && self.sw.sg.conntrack().is_some() {
            out |= self.check_to_vms(batch) > 0;
        }
        if traced {
            self.tracer.mark(Pass::Forward, batch, None);
        }
        if out {
            sweep(batch, ctx);
        }
        if h.any(&[meta::TO_VTEP, meta::TO_UPLINK]) {
            let dropped = self.egress.run(&self.sw, batch);
            if traced {
                self.tracer.mark(Pass::Egress, batch, None);
            }
            if dropped > 0 {
                sweep(batch, ctx);
            }
        }
        if h.decapsulated > 1 {
            self.gro(batch, ctx);
        }
        if h.any(&[meta::FLOOD]) {
            self.flood.process(&self.sw, &mut self.egress, &self.under, batch, ctx);
            if traced {
                self.tracer.flooded();
            }
        }
        if self.egress.wants_solicit() {
            self.egress.solicit(&self.sw, &self.under, batch, ctx);
        }
        self.txoff.process(batch, ctx);
        if traced {
            self.tracer.mark(Pass::TxOffload, batch, None);
            self.tracer.end();
        }
    }

    /// Takes a [`Change`] of the topology (a port plugged or unplugged, a bridge's remotes):
    /// swaps it in and gives back what it replaced, to be dropped by the control thread.
    fn notify(&mut self, msg: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>> {
        let mut c = match msg.downcast::<Change>() {
            Ok(c) => c,
            Err(other) => return Some(other),
        };
        std::mem::swap(&mut self.sw.topo, &mut c.topo);
        if let Some((id, offloads, live)) = c.port.take() {
            c.back = self.txoff.set_port(id, offloads, live);
        }
        Some(c)
    }

    fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        if self.txoff.resume(batch, ctx) {
            return true;
        }
        if !self.flood.holds() {
            return false;
        }
        self.flood.fill(&self.sw, &mut self.egress, &self.under, batch, ctx);
        self.txoff.process(batch, ctx);
        true
    }
}
