//! What the switch stages tell each other through the mbuf: the segment
//! ([`fastpath_mempool::Mbuf::segment`]), a disposition (an action and the packet's origin,
//! [`fastpath_mempool::Mbuf::disposition`]) and, for some actions, a destination id or a drop
//! reason ([`fastpath_mempool::Mbuf::dest`]).

use fastpath_mempool::Mbuf;

/// Classified: learn its source, look its destination up.
pub const LEARN: u8 = 0;
/// Send to `out_port` as it is.
pub const FORWARD: u8 = 1;
/// Dropped: the reason is in `dest` (the drop is already counted).
pub const DROP: u8 = 2;
/// Made by the switch (ARP / ND answers, solicitations): send to `out_port` as it is, skipping
/// learning and lookup.
pub const DONE: u8 = 3;
/// Encapsulate to the remote VTEP in `dest`.
pub const TO_VTEP: u8 = 4;
/// Send on the uplink with the segment's tag pushed.
pub const TO_UPLINK: u8 = 5;
/// Flood in the segment.
pub const FLOOD: u8 = 6;
/// Taken in by the switch (a neighbour update): freed, not counted as a drop.
pub const CONSUMED: u8 = 7;
/// Mask of the action.
pub const ACTION: u8 = 0x0f;

/// Origin: came from an access port.
pub const FROM_ACCESS: u8 = 0x00;
/// Origin: came from one of the uplink's VLANs.
pub const FROM_VLAN: u8 = 0x10;
/// Origin: came out of a tunnel (decapsulated).
pub const FROM_TUNNEL: u8 = 0x20;
/// Mask of the origin.
pub const ORIGIN: u8 = 0x30;

/// The action of `m`.
#[inline(always)]
pub fn action(m: &Mbuf) -> u8 {
    m.disposition() & ACTION
}

/// The origin of `m`.
#[inline(always)]
pub fn origin(m: &Mbuf) -> u8 {
    m.disposition() & ORIGIN
}

/// Sets the action of `m`, keeping its origin.
#[inline(always)]
pub fn set_action(m: &mut Mbuf, a: u8) {
    let d = (m.disposition() & !ACTION) | a;
    m.set_disposition(d);
}

/// Marks `m` dropped for `reason`.
#[inline(always)]
pub fn set_drop(m: &mut Mbuf, reason: u8) {
    set_action(m, DROP);
    m.set_dest(reason as u16);
}
