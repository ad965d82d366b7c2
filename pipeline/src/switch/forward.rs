//! Forwarding: the destination MAC of each frame, looked up in its segment. Known unicast goes
//! to its place: a local port, the uplink with the segment's tag, or a remote VTEP (encap, in
//! [`crate::switch::egress`]); unknown unicast, broadcast and multicast are flooded
//! ([`crate::switch::flood`]). A frame is never sent back where it came from (`same-port`), and
//! never from one tunnel into another (`split-horizon`).

use fastpath_mempool::Mbuf;

use crate::switch::fdb::Hit;
use crate::switch::meta;
use crate::switch::processor::Sw;
use crate::switch::stats::{reason, stat, SwitchStage};

/// Decides where `m` goes (its destination found as `hit`; `unicast`: it has a unicast
/// destination); returns the forward stage's counter to bump (known, unknown, broadcast,
/// multicast).
#[inline(always)]
pub fn one(sw: &Sw, m: &mut Mbuf, unicast: bool, hit: Option<Hit>) -> u8 {
    let Some(h) = hit else {
        meta::set_action(m, meta::FLOOD);
        return match &m.data()[..6] {
            _ if unicast => stat::UNKNOWN,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] => stat::BROADCAST,
            _ => stat::MULTICAST,
        };
    };
    let (p, origin) = (h.place, meta::origin(m));
    let verdict = if p.is_remote() {
        if origin == meta::FROM_TUNNEL {
            Err(reason::SPLIT_HORIZON)
        } else {
            m.set_dest(p.id());
            Ok(meta::TO_VTEP)
        }
    } else if Some(p.id()) == sw.topo.uplink {
        if origin == meta::FROM_VLAN {
            Err(reason::SAME_PORT)
        } else {
            Ok(meta::TO_UPLINK)
        }
    } else if origin == meta::FROM_ACCESS && p.id() == m.port() {
        Err(reason::SAME_PORT)
    } else {
        m.set_out_port(p.id());
        Ok(meta::FORWARD)
    };
    match verdict {
        Ok(a) => meta::set_action(m, a),
        Err(r) => {
            sw.c.dropped(SwitchStage::Forward, m.port(), r);
            meta::set_drop(m, r);
        }
    }
    stat::KNOWN
}
