//! The first pass: each frame's segment and origin by the role of its input port. An access
//! port puts untagged frames in its segment (a tagged one is dropped) after its port security
//! ([`crate::switch::port_security`]) passed them; the uplink's frames are
//! classified by [`crate::switch::underlay`] (VLAN, tunnel, or its own ARP / ND). Then an access
//! port's security groups check what the VM sends ([`crate::switch::secgroup`]).

use fastpath_mempool::{Batch, Mbuf};

use crate::switch::config::PortRole;
use crate::switch::meta;
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};
use crate::switch::topology::NO_SEGMENT;
use crate::switch::underlay::{Underlay, Uplink};
use crate::switch::vtep::VtepAddr;
use crate::wire::{ethertype, get_u16};

/// What the pass found, to skip later passes that have nothing to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Packets to learn and look up.
    pub learn: usize,
    /// Packets dropped or consumed (to take out of the batch).
    pub out: usize,
    /// Of `learn`: from access ports.
    access: u64,
}

/// Classifies every packet of `batch`; `outer[i]` gets the outer source of a decapsulated one.
#[inline]
pub fn run(sw: &mut Sw, under: &Underlay, batch: &mut Batch, outer: &mut [VtepAddr]) -> Tally {
    sw.c.packets(SwitchStage::Ingress, batch.len() as u64);
    let mut t = Tally::default();
    for (i, m) in batch.iter_mut().enumerate() {
        match one(sw, under, m, &mut outer[i]) {
            Ok(true) => {
                t.learn += 1;
                t.access += (meta::origin(m) == meta::FROM_ACCESS) as u64;
            }
            Ok(false) => {
                if meta::action(m) != meta::DONE {
                    t.out += 1;
                }
            }
            Err((stage, r)) => {
                sw.c.dropped(stage, m.port(), r);
                meta::set_drop(m, r);
                t.out += 1;
            }
        }
    }
    sw.c.stat(SwitchStage::Ingress, stat::ACCESS, t.access);
    t
}

/// One packet: `Ok(true)` to learn and look up, `Ok(false)` when the uplink took it (answered
/// or consumed), or the stage and reason to drop it for.
#[inline(always)]
pub(crate) fn one(
    sw: &mut Sw,
    under: &Underlay,
    m: &mut Mbuf,
    outer: &mut VtepAddr,
) -> Result<bool, (SwitchStage, u8)> {
    let Some(pt) = sw.topo.ports.get(m.port() as usize) else {
        return Err((SwitchStage::Ingress, reason::NO_SEGMENT));
    };
    if m.data_len() < 14 {
        return Err((SwitchStage::Ingress, reason::RUNT));
    }
    if pt.role == PortRole::Access {
        let et = get_u16(m.data(), 12);
        if et == ethertype::VLAN || et == ethertype::QINQ {
            return Err((SwitchStage::Ingress, reason::TAGGED_ON_ACCESS));
        }
        if pt.segment == NO_SEGMENT {
            return Err((SwitchStage::Ingress, reason::NO_SEGMENT));
        }
        if let Some(g) = &pt.guard {
            g.check(m.data()).map_err(|r| (SwitchStage::Ingress, r))?;
        }
        if sw.sg.filters(m.port()) {
            sw.sg
                .check(m.port(), true, m.data(), sw.now.secs as u64, &sw.last_conn[0])
                .map_err(|r| (SwitchStage::Ingress, r))?;
        }
        m.set_segment(pt.segment);
        m.set_disposition(meta::LEARN | meta::FROM_ACCESS);
        return Ok(true);
    }
    sw.c.packets(SwitchStage::Underlay, 1);
    match under.classify(sw, m, outer).map_err(|r| (SwitchStage::Underlay, r))? {
        Uplink::Vlan(seg) => {
            m.set_segment(seg);
            m.set_disposition(meta::LEARN | meta::FROM_VLAN);
            sw.c.stat(SwitchStage::Ingress, stat::UPLINK_VLAN, 1);
            Ok(true)
        }
        Uplink::Tunnel(seg) => {
            m.set_segment(seg);
            m.set_disposition(meta::LEARN | meta::FROM_TUNNEL);
            Ok(true)
        }
        Uplink::Answered => {
            m.set_out_port(m.port());
            m.set_disposition(meta::DONE);
            Ok(false)
        }
        Uplink::Consumed => {
            m.set_disposition(meta::CONSUMED);
            Ok(false)
        }
    }
}
