//! Known unicast that changes on the way out, in place: encapsulation to a remote VTEP (its
//! neighbour resolved, the result within the uplink's largest frame unless it is a TSO packet
//! that segmentation will cut) and the VLAN tag of the uplink. The same checks serve the
//! flood's copies, which are built onto read-only clones ([`Egress::vtep_onto`]).
//!
//! Neighbour resolution: a packet for a VTEP whose MAC is not known is dropped
//! (`neighbour-unresolved`) and this lcore sends an ARP request or neighbour solicitation
//! itself, out of the uplink, at most one per VTEP per 100 ms over all lcores; a stale entry
//! is still used, and solicited the same way.

use arrayvec::ArrayVec;
use fastpath_mempool::offload::TX_SEG_MASK;
use fastpath_mempool::{Batch, Mbuf};
use fastpath_pmd::Ctx;

use crate::stages::tunnel::{EncapTemplate, OuterDest};
use crate::switch::encap::{AnyTemplate, WithTemplate};
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};
use crate::switch::topology::Topology;
use crate::switch::underlay::Underlay;
use crate::switch::vtep::{Neigh, NeighState};
use crate::switch::{meta, vlan};

/// Solicitations one burst may ask for.
const SOLICITS: usize = 16;

/// Destinations kept built, per lcore.
const DEST_CACHE: usize = 64;

/// A destination as built for one (VTEP, segment) and one neighbour word.
#[derive(Debug, Clone, Copy, Default)]
struct Dest {
    valid: bool,
    id: u16,
    seg: u16,
    word: u64,
    class: u8,
    hdr_len: u16,
    stale: bool,
    dest: OuterDest,
}

impl Dest {
    /// The largest packet that still fits the uplink after this destination's headers.
    #[inline(always)]
    fn max_inner(&self, sw: &Sw) -> usize {
        sw.topo.uplink_max_frame.saturating_sub(self.hdr_len as usize)
    }
}

/// One lcore's encap state.
#[derive(Debug)]
pub struct Egress {
    templates: Box<[AnyTemplate]>,
    ident: u16,
    solicit: ArrayVec<u16, SOLICITS>,
    cache: Box<[Dest; DEST_CACHE]>,
}

impl Egress {
    /// The egress of `topo`.
    pub fn new(topo: &Topology) -> Egress {
        Egress {
            templates: AnyTemplate::all(topo),
            ident: 0,
            solicit: ArrayVec::new(),
            cache: Box::new([Dest::default(); DEST_CACHE]),
        }
    }

    /// Encapsulates or tags, in place, every packet of `batch` that needs it; failures are
    /// marked dropped (counted). Returns how many were dropped.
    ///
    /// Consecutive packets to one VTEP in one segment (a burst of one flow, or of one tenant's
    /// traffic to one host) are encapsulated as a run: the destination is checked and the
    /// template chosen once for the run (`Egress::vtep_run`), not per packet.
    #[inline]
    pub fn run(&mut self, sw: &Sw, batch: &mut Batch) -> usize {
        let mut dropped = 0;
        let n = batch.len();
        let mut i = 0;
        while i < n {
            let m = &mut batch[i];
            if meta::action(m) == meta::TO_VTEP {
                let (id, seg) = (m.dest(), m.segment());
                let same = |m: &Mbuf| meta::action(m) == meta::TO_VTEP && m.dest() == id && m.segment() == seg;
                let end = batch[i + 1..].iter().position(|m| !same(m)).map_or(n, |k| i + 1 + k);
                dropped += self.vtep_run(sw, &mut batch[i..end], id, seg);
                i = end;
                continue;
            }
            if let Err(r) = self.one(sw, m) {
                sw.c.dropped(SwitchStage::Egress, m.port(), r);
                meta::set_drop(m, r);
                dropped += 1;
            }
            i += 1;
        }
        dropped
    }

    /// Encapsulates in place `ms`, packets all to VTEP `id` in segment `seg`; failures are
    /// marked dropped (counted). Returns how many were dropped. The same checks and headers as
    /// [`Egress::one`] packet by packet, with the destination looked up once.
    #[inline]
    fn vtep_run(&mut self, sw: &Sw, ms: &mut [Mbuf], id: u16, seg: u16) -> usize {
        let dropped = match self.dest(sw, id, seg) {
            Ok(i) => {
                let c = &self.cache[i];
                let run = Run {
                    sw,
                    ms: &mut *ms,
                    ident: &mut self.ident,
                    dest: &c.dest,
                    max_inner: c.max_inner(sw),
                    uplink: sw.topo.uplink.unwrap_or(0),
                };
                self.templates[c.class as usize].with(run)
            }
            Err(r) => {
                for m in ms.iter_mut() {
                    sw.c.dropped(SwitchStage::Egress, m.port(), r);
                    meta::set_drop(m, r);
                }
                ms.len()
            }
        };
        sw.c.stat(SwitchStage::Egress, stat::ENCAPSULATED, (ms.len() - dropped) as u64);
        dropped
    }

    /// Encapsulates or tags `m` in place when its action says so.
    #[inline(always)]
    pub fn one(&mut self, sw: &Sw, m: &mut Mbuf) -> Result<(), u8> {
        match meta::action(m) {
            meta::TO_VTEP => self.vtep(sw, m),
            meta::TO_UPLINK => uplink(sw, m),
            _ => Ok(()),
        }
    }

    /// Asks for a solicitation of VTEP `id` (sent by [`Egress::solicit`]).
    pub fn want_solicit(&mut self, id: u16) {
        if !self.solicit.contains(&id) {
            let _ = self.solicit.try_push(id);
        }
    }

    /// The cache slot of the outer destination for VTEP `id` in segment `seg`, and of the
    /// template. A small cache keeps what was built for recent destinations; it is used while
    /// the VTEP's neighbour word is the same.
    #[inline]
    fn dest(&mut self, sw: &Sw, id: u16, seg: u16) -> Result<usize, u8> {
        let word = sw.vteps.neigh_word(id);
        let i = (id as usize ^ (seg as usize) << 4) % DEST_CACHE;
        let c = &self.cache[i];
        if !(c.word == word && c.id == id && c.seg == seg && c.valid) {
            self.fill(sw, i, id, seg, word)?;
        }
        if self.cache[i].stale {
            self.want_solicit(id);
        }
        Ok(i)
    }

    /// Builds the destination of VTEP `id` in segment `seg` whose neighbour word is `word`
    /// into cache slot `i`.
    #[inline(never)]
    fn fill(&mut self, sw: &Sw, i: usize, id: u16, seg: u16, word: u64) -> Result<(), u8> {
        let s = sw.topo.segments.get(seg as usize).ok_or(reason::NO_SEGMENT)?;
        let class = s.class.ok_or(reason::NO_SEGMENT)? as usize;
        let n = Neigh::of(word);
        if n.state == NeighState::Incomplete {
            self.want_solicit(id);
            return Err(reason::NEIGH_UNRESOLVED);
        }
        let Some(addr) = sw.vteps.addr(id) else { return Err(reason::NEIGH_UNRESOLVED) };
        let mut dst_ip = [0u8; 16];
        match addr {
            std::net::IpAddr::V4(a) => dst_ip[..4].copy_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => dst_ip.copy_from_slice(&a.octets()),
        }
        let dest = OuterDest { dst_mac: n.mac, dst_ip, dst_sum: sw.vteps.addr_sum(id), vni: s.vni.unwrap_or(0) };
        let d = Dest {
            valid: true,
            id,
            seg,
            word,
            class: class as u8,
            hdr_len: self.templates[class].hdr_len() as u16,
            stale: n.state == NeighState::Stale,
            dest,
        };
        self.cache[i] = d;
        Ok(())
    }

    /// The IPv4 identification of the next outer header (from 0, as the encap stages).
    fn next_ident(&mut self) -> u16 {
        let i = self.ident;
        self.ident = i.wrapping_add(1);
        i
    }

    /// Encapsulates `m` in place to the VTEP in its `dest`.
    #[inline]
    fn vtep(&mut self, sw: &Sw, m: &mut Mbuf) -> Result<(), u8> {
        let i = self.dest(sw, m.dest(), m.segment())?;
        let c = &self.cache[i];
        let t = &self.templates[c.class as usize];
        to_vtep(m, &mut self.ident, c.max_inner(sw), sw.topo.uplink.unwrap_or(0), |m, ident| {
            t.encap(m, ident, &c.dest)
        })?;
        sw.c.stat(SwitchStage::Egress, stat::ENCAPSULATED, 1);
        Ok(())
    }

    /// Encapsulates the read-only `inner` (of segment `seg`) to VTEP `id` behind `head`.
    pub fn vtep_onto(&mut self, sw: &Sw, head: &mut Mbuf, inner: Mbuf, id: u16) -> Result<(), (u8, Mbuf)> {
        let i = match self.dest(sw, id, inner.segment()) {
            Ok(i) => i,
            Err(r) => return Err((r, inner)),
        };
        if let Err(r) = fits(&inner, self.cache[i].max_inner(sw)) {
            return Err((r, inner));
        }
        let ident = self.next_ident();
        let c = &self.cache[i];
        let t = &self.templates[c.class as usize];
        t.encap_onto(head, inner, ident, &c.dest).map_err(|(e, i)| (reason::of_encap(e), i))?;
        head.set_out_port(sw.topo.uplink.unwrap_or(0));
        meta::set_action(head, meta::FORWARD);
        sw.c.stat(SwitchStage::Egress, stat::ENCAPSULATED, 1);
        Ok(())
    }

    /// Sends the solicitations asked for since the last call, as far as `out` has room.
    #[inline]
    pub fn solicit(&mut self, sw: &Sw, under: &Underlay, out: &mut Batch, ctx: &mut Ctx) {
        for id in self.solicit.drain(..) {
            if out.remaining_capacity() == 0 {
                break;
            }
            if let Some(m) = under.solicit(sw, id, ctx) {
                let _ = out.push(m);
            }
        }
    }

    /// True when solicitations wait.
    pub fn wants_solicit(&self) -> bool {
        !self.solicit.is_empty()
    }
}

/// A run of packets to one destination, encapsulated with the template of its class
/// ([`Egress::vtep_run`]); returns how many were dropped.
struct Run<'a> {
    sw: &'a Sw,
    ms: &'a mut [Mbuf],
    ident: &'a mut u16,
    dest: &'a OuterDest,
    /// The largest frame that still fits the uplink after encap (TSO packets excepted).
    max_inner: usize,
    uplink: u16,
}

impl WithTemplate for Run<'_> {
    type Out = usize;

    #[inline(always)]
    fn call<const KIND: u8, const V6: bool>(self, t: &EncapTemplate<KIND, V6>) -> usize {
        let mut dropped = 0;
        for m in self.ms.iter_mut() {
            let r =
                to_vtep(m, self.ident, self.max_inner, self.uplink, |m, ident| t.encap::<true>(m, ident, self.dest));
            if let Err(r) = r {
                self.sw.c.dropped(SwitchStage::Egress, m.port(), r);
                meta::set_drop(m, r);
                dropped += 1;
            }
        }
        dropped
    }
}

/// Whether `m` still fits the uplink after encap: `max_inner` bytes at most, unless it is a TSO
/// packet that segmentation will cut.
#[inline(always)]
fn fits(m: &Mbuf, max_inner: usize) -> Result<(), u8> {
    if m.ol_flags() & TX_SEG_MASK == 0 && m.pkt_len() > max_inner {
        return Err(reason::TOO_BIG_AFTER_ENCAP);
    }
    Ok(())
}

/// Sends `m` in place to a VTEP out of port `uplink`: checks that it [`fits`], takes the next
/// identification from `ident` and encapsulates it with `encap` (the template's, for the
/// VTEP's destination). The per-packet step of both [`Egress::one`] and a run.
#[inline(always)]
fn to_vtep(
    m: &mut Mbuf,
    ident: &mut u16,
    max_inner: usize,
    uplink: u16,
    encap: impl FnOnce(&mut Mbuf, u16) -> Result<(), u8>,
) -> Result<(), u8> {
    fits(m, max_inner)?;
    let id = *ident;
    *ident = id.wrapping_add(1);
    encap(m, id).map_err(reason::of_encap)?;
    m.set_out_port(uplink);
    meta::set_action(m, meta::FORWARD);
    Ok(())
}

/// The segment's uplink tag for `m`, or the reason it has none.
#[inline]
pub fn uplink_tag(sw: &Sw, m: &Mbuf) -> Result<u16, u8> {
    sw.topo.segments.get(m.segment() as usize).and_then(|s| s.uplink_tag).ok_or(reason::NO_DESTINATION)
}

/// Tags `m` in place with its segment's uplink VLAN.
#[inline]
fn uplink(sw: &Sw, m: &mut Mbuf) -> Result<(), u8> {
    let tag = uplink_tag(sw, m)?;
    if !vlan::push(m, tag) {
        return Err(if m.is_writable() { reason::NO_HEADROOM } else { reason::SHARED_BUFFER });
    }
    m.set_out_port(sw.topo.uplink.unwrap_or(0));
    meta::set_action(m, meta::FORWARD);
    sw.c.stat(SwitchStage::Egress, stat::VLAN_PUSHED, 1);
    Ok(())
}

/// Tags the read-only `inner` with `tag` behind `head`.
pub fn uplink_onto(sw: &Sw, head: &mut Mbuf, inner: Mbuf, tag: u16) -> Result<(), (u8, Mbuf)> {
    vlan::push_onto(head, inner, tag).map_err(|i| (reason::RUNT, i))?;
    head.set_out_port(sw.topo.uplink.unwrap_or(0));
    meta::set_action(head, meta::FORWARD);
    sw.c.stat(SwitchStage::Egress, stat::VLAN_PUSHED, 1);
    Ok(())
}
