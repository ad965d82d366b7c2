//! 802.1Q tags on the uplink: popped on the way in (the frame enters the tag's segment),
//! pushed on the way out (in place, or onto a read-only clone behind a small head mbuf).

use fastpath_mempool::offload::ptype;
use fastpath_mempool::Mbuf;

use crate::wire::ethertype;

/// Bytes of a tag.
pub const TAG_LEN: usize = 4;

/// Describes a tag more (or less) in front of the L3 header in the metadata.
fn relabel(m: &mut Mbuf, pushed: bool) {
    let l2 = m.l2_len();
    if l2 != 0 && m.outer_l2_len() == 0 {
        m.set_l2_len(if pushed { l2.saturating_add(TAG_LEN as u8) } else { l2.saturating_sub(TAG_LEN as u8) });
    }
    let t = m.packet_type();
    if t & ptype::L2_MASK != 0 && t & ptype::TUNNEL_MASK == 0 {
        let l2t = match (t & ptype::L2_MASK, pushed) {
            (ptype::L2_ETHER, true) => ptype::L2_ETHER_VLAN,
            (_, true) => ptype::L2_ETHER_QINQ,
            (ptype::L2_ETHER_QINQ, false) => ptype::L2_ETHER_VLAN,
            (_, false) => ptype::L2_ETHER,
        };
        m.set_packet_type((t & !ptype::L2_MASK) | l2t);
    }
}

/// Removes the 802.1Q tag after the MAC addresses of `m` (checked: the frame has one, in its
/// first segment). False when the buffer is shared.
pub fn pop(m: &mut Mbuf) -> bool {
    if !m.is_writable() || m.data_len() < 12 + TAG_LEN {
        return false;
    }
    m.data_mut().copy_within(0..12, TAG_LEN);
    m.adj(TAG_LEN);
    relabel(m, false);
    true
}

/// Tag `vid` (TPID 0x8100, priority 0) as it goes on the wire.
fn tag(vid: u16) -> [u8; TAG_LEN] {
    let [t0, t1] = ethertype::VLAN.to_be_bytes();
    let [v0, v1] = (vid & 0x0fff).to_be_bytes();
    [t0, t1, v0, v1]
}

/// Pushes tag `vid` after the MAC addresses of `m`, in place. False when the buffer is shared
/// or there is no headroom.
pub fn push(m: &mut Mbuf, vid: u16) -> bool {
    if m.data_len() < 12 {
        return false;
    }
    if m.prepend(TAG_LEN).is_none() {
        return false;
    }
    let d = m.data_mut();
    d.copy_within(TAG_LEN..TAG_LEN + 12, 0);
    d[12..16].copy_from_slice(&tag(vid));
    relabel(m, true);
    true
}

/// Pushes tag `vid` onto `inner` (read-only: a clone) with `head`, a fresh empty mbuf that gets
/// the MAC addresses and the tag, `inner`'s metadata, and `inner` from its EtherType on as its
/// tail. On error `inner` comes back.
pub fn push_onto(head: &mut Mbuf, mut inner: Mbuf, vid: u16) -> Result<(), Mbuf> {
    if inner.data_len() < 12 {
        return Err(inner);
    }
    let Some(h) = head.append(12 + TAG_LEN) else { return Err(inner) };
    h[..12].copy_from_slice(&inner.data()[..12]);
    h[12..].copy_from_slice(&tag(vid));
    fastpath_mempool::copy_metadata(&inner, head);
    let (off, len) = (inner.data_off(), inner.data_len());
    inner.set_window(off + 12, len - 12);
    head.chain(inner)?;
    relabel(head, true);
    Ok(())
}
