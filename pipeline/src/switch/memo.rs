//! The verdict of the frame before, for the frames of a burst that repeat it (the one pass of
//! [`crate::switch::processor`]). A burst is mostly one flow, or a few: a VM's queue, a
//! testpmd stream, a TCP connection's segments. For a frame from an access port without port
//! security or security groups, every decision of ingress, learning and forwarding follows
//! from its input port and its first 14 bytes (destination, source, ethertype) and from the
//! tables, which a burst reads as one snapshot anyway (the lookups of a burst are already
//! shared by equal keys). So a frame whose port and first 14 bytes are those of the frame just
//! switched gets that frame's segment, action and destination without being looked at again:
//! a one-entry exact-match cache, as OVS's EMC caches a whole flow's actions, kept for one
//! burst only (a change of the FDB, the topology or the second of the clock takes effect at the
//! next burst, as it does for the burst's shared lookups).
//!
//! A verdict is remembered only where redoing the work would change nothing: the source was
//! known at its place (learning had nothing to send; its last-seen time is already this
//! second's) and the frame goes to one place (a port, the uplink, a VTEP). Floods, drops and
//! everything from the uplink are switched frame by frame.

use fastpath_mempool::{Mbuf, PORT_NONE};

use crate::switch::meta;

/// The first 14 bytes of a frame, as two overlapping words (0..8 and 6..14); `None` for a
/// frame shorter than that.
#[inline(always)]
pub fn head(m: &Mbuf) -> Option<[u64; 2]> {
    let d = m.data();
    let w = |at: usize| d.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
    Some([w(0)?, w(6)?])
}

/// The last frame's verdict (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Memo {
    port: u16,
    head: [u64; 2],
    segment: u16,
    disposition: u8,
    to: u16,
}

impl Default for Memo {
    fn default() -> Self {
        Memo { port: PORT_NONE, head: [0; 2], segment: 0, disposition: 0, to: 0 }
    }
}

impl Memo {
    /// Remembers what was decided for `m` (head `head`): call only when the module doc's
    /// conditions hold. An action other than to a port, the uplink or a VTEP leaves the memo
    /// as it was (still true: nothing a frame does changes another's verdict within a burst).
    #[inline(always)]
    pub fn remember(&mut self, m: &Mbuf, head: [u64; 2]) {
        let to = match meta::action(m) {
            meta::FORWARD => m.out_port(),
            meta::TO_VTEP => m.dest(),
            meta::TO_UPLINK => 0,
            _ => return,
        };
        *self = Memo { port: m.port(), head, segment: m.segment(), disposition: m.disposition(), to };
    }

    /// Gives `m` the remembered verdict when its port and head are the remembered ones; true
    /// when it did.
    #[inline(always)]
    pub fn apply(&self, m: &mut Mbuf, head: Option<[u64; 2]>) -> bool {
        if m.port() != self.port || head != Some(self.head) {
            return false;
        }
        m.set_segment(self.segment);
        m.set_disposition(self.disposition);
        match self.disposition & meta::ACTION {
            meta::FORWARD => m.set_out_port(self.to),
            meta::TO_VTEP => m.set_dest(self.to),
            _ => {}
        }
        true
    }
}
