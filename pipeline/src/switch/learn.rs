//! Learning on the lcores: every frame's source MAC is looked up in its segment. Known at the
//! same place: its last-seen time is refreshed (one relaxed store, only when the second
//! changed). Unknown, or known elsewhere (a move): an event goes to the control side through
//! this lcore's ring, which alone writes the FDB; a full ring loses the event (counted
//! `learn-lost`) and the next frame asks again. Static entries are never moved. A multicast or
//! all-zero source is dropped (`bad-src-mac`), as Linux's bridge does.
//!
//! A small direct-mapped filter remembers the events sent in the current second, so that a
//! burst from a new MAC costs one event, not one per frame, and a MAC flood cannot fill the ring
//! with repeats.

use fastpath_mempool::Mbuf;

use crate::switch::event::Event;
use crate::switch::fdb::{Hit, Place};
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};
use crate::switch::vtep::VtepAddr;
use crate::switch::{fdb, meta};

const FILTER: usize = 256;

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    key: u64,
    place: u32,
    secs: u32,
}

/// One lcore's learning state.
#[derive(Debug)]
pub struct Learner {
    sent: Box<[Sent; FILTER]>,
}

impl Default for Learner {
    fn default() -> Self {
        Learner { sent: Box::new([Sent::default(); FILTER]) }
    }
}

/// A tag of a place for the filter: the place itself, or a hash of a VTEP's address.
fn tag(place: Option<Place>, outer: &VtepAddr) -> u32 {
    match place {
        Some(p) => 0x8000_0000 | p.raw() as u32,
        None => {
            let [a, b] = outer.words();
            let w = a ^ b;
            (w ^ (w >> 32)) as u32 & 0x7fff_ffff
        }
    }
}

impl Learner {
    /// Learns the source of `m` (key `key`, found as `hit`; `outer`: its VTEP when it came out
    /// of a tunnel). A bad source marks it dropped. True when the source was known at this
    /// place (nothing to tell the control side, its last-seen time now this second's).
    #[inline(always)]
    pub fn one(&mut self, sw: &mut Sw, m: &mut Mbuf, key: u64, hit: Option<Hit>, outer: &VtepAddr) -> bool {
        if !fdb::is_unicast_source(key) {
            sw.c.dropped(SwitchStage::Learn, m.port(), reason::BAD_SRC_MAC);
            meta::set_drop(m, reason::BAD_SRC_MAC);
            return false;
        }
        let here = match meta::origin(m) {
            meta::FROM_TUNNEL => None,
            meta::FROM_VLAN => Some(Place::port(sw.topo.uplink.unwrap_or(0))),
            _ => Some(Place::port(m.port())),
        };
        if let Some(h) = hit {
            let same = match here {
                Some(p) => h.place.dynamic() == p,
                None => h.place.is_remote() && sw.vteps.is(h.place.id(), outer),
            };
            if same {
                if sw.fdb.seen(&h) != sw.now.secs {
                    sw.fdb.touch(&h, sw.now.secs);
                    sw.c.stat(SwitchStage::Learn, stat::REFRESHED, 1);
                }
                return true;
            }
            if h.place.is_static() {
                sw.c.stat(SwitchStage::Learn, stat::STATIC_KEPT, 1);
                return false;
            }
        }
        self.send(sw, key, here, outer);
        false
    }

    /// Sends a learn event unless the same one went out this second.
    #[inline(never)]
    fn send(&mut self, sw: &mut Sw, key: u64, here: Option<Place>, outer: &VtepAddr) {
        let place = tag(here, outer);
        let slot = &mut self.sent[(key ^ key >> 17 ^ key >> 31) as usize % FILTER];
        if slot.key == key && slot.place == place && slot.secs == sw.now.secs {
            return;
        }
        let e = match here {
            Some(place) => Event::Learn { key, place },
            None => Event::LearnRemote { key, vtep: outer.ip() },
        };
        if sw.send(e) {
            *slot = Sent { key, place, secs: sw.now.secs };
            sw.c.stat(SwitchStage::Learn, stat::LEARN_EVENTS, 1);
        } else {
            sw.c.stat(SwitchStage::Learn, stat::LEARN_LOST, 1);
        }
    }
}
