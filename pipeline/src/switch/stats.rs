//! The switch's counters: per lcore (stage counters, drops per input port and reason, floods
//! per segment), all single-writer, summed when read; and the [`SwitchStats`] report.

use std::net::IpAddr;
use std::sync::Arc;

use fastpath_pmd::Counter;

use crate::stage::StageCounters;
use crate::stages::tunnel::DECAP_REASONS;
use crate::StageSummary;

/// The switch's own drop reasons, after decap's.
const OWN_REASONS: [&str; 29] = [
    "runt",
    "no-segment",
    "tagged-on-access",
    "not-for-switch",
    "unknown-vlan",
    "not-our-vtep",
    "unknown-vni",
    "arp-ignored",
    "nd-ignored",
    "bad-src-mac",
    "same-port",
    "split-horizon",
    "no-destination",
    "no-mbuf",
    "neighbour-unresolved",
    "too-big-after-encap",
    "no-headroom",
    "shared-buffer",
    "too-big",
    "spoofed-mac",
    "spoofed-ip",
    "spoofed-arp",
    "spoofed-nd",
    "ra-guard",
    "dhcp-guard",
    "sg-no-rule",
    "sg-invalid",
    "sg-table-full",
    "sg-fragment",
];

const ALL_REASONS: [&str; DECAP_REASONS.len() + OWN_REASONS.len()] = {
    let mut a = [""; DECAP_REASONS.len() + OWN_REASONS.len()];
    let mut i = 0;
    while i < a.len() {
        a[i] = if i < DECAP_REASONS.len() { DECAP_REASONS[i] } else { OWN_REASONS[i - DECAP_REASONS.len()] };
        i += 1;
    }
    a
};

/// Drop reasons of every switch stage, by code: decap's ([`DECAP_REASONS`], the same codes,
/// so that decap's errors count as they are), then the switch's own.
pub const REASONS: &[&str] = &ALL_REASONS;

/// Reason codes (indexes into [`REASONS`]).
pub mod reason {
    /// Not a tunnel this VTEP terminates (decap's first reason).
    pub const NOT_THIS_TUNNEL: u8 = 0;
    /// Shorter than an Ethernet header (in the first segment).
    pub const RUNT: u8 = 12;
    /// The input port is in no bridge.
    pub const NO_SEGMENT: u8 = 13;
    /// A VLAN-tagged frame on an access port.
    pub const TAGGED_ON_ACCESS: u8 = 14;
    /// On the uplink: neither a tunnel, nor ARP / ND, nor an 802.1Q frame.
    pub const NOT_FOR_SWITCH: u8 = 15;
    /// On the uplink: a VLAN no segment is mapped to.
    pub const UNKNOWN_VLAN: u8 = 16;
    /// On the uplink: IP to an address that is not our VTEP's.
    pub const NOT_OUR_VTEP: u8 = 17;
    /// A tunnel packet whose VNI no bridge has.
    pub const UNKNOWN_VNI: u8 = 18;
    /// ARP on the uplink that is not for our VTEP (answered ones and neighbour updates are not
    /// drops), or malformed.
    pub const ARP_IGNORED: u8 = 19;
    /// ICMPv6 on the uplink that is not neighbour discovery for our VTEP, or malformed.
    pub const ND_IGNORED: u8 = 20;
    /// A multicast or zero source MAC.
    pub const BAD_SRC_MAC: u8 = 21;
    /// The destination MAC is behind the port the frame came in on.
    pub const SAME_PORT: u8 = 22;
    /// From a tunnel to another tunnel.
    pub const SPLIT_HORIZON: u8 = 23;
    /// A flood with no destination (the only port of its segment).
    pub const NO_DESTINATION: u8 = 24;
    /// The pool ran dry (a clone or a header mbuf).
    pub const NO_MBUF: u8 = 25;
    /// The remote VTEP's MAC is not known yet (a solicitation was sent).
    pub const NEIGH_UNRESOLVED: u8 = 26;
    /// After encap the frame exceeds the uplink's largest frame (and is no TSO packet).
    pub const TOO_BIG_AFTER_ENCAP: u8 = 27;
    /// The outer headers do not fit the headroom.
    pub const NO_HEADROOM: u8 = 28;
    /// A header had to be changed in a buffer shared with a clone.
    pub const SHARED_BUFFER: u8 = 29;
    /// The outer IP packet would exceed 65535 bytes.
    pub const TOO_BIG: u8 = 30;
    /// Port security: the source MAC is not one of the port's allowed MACs.
    pub const SPOOFED_MAC: u8 = 31;
    /// Port security: the IPv4 / IPv6 source is not allowed for the source MAC.
    pub const SPOOFED_IP: u8 = 32;
    /// Port security: an ARP packet claims an address (or MAC) the port does not own.
    pub const SPOOFED_ARP: u8 = 33;
    /// Port security: a neighbour advertisement for an address the port does not own.
    pub const SPOOFED_ND: u8 = 34;
    /// Port security: a router advertisement from a port that is not trusted.
    pub const RA_GUARD: u8 = 35;
    /// Port security: a DHCP / DHCPv6 server reply from a port that is not trusted.
    pub const DHCP_GUARD: u8 = 36;
    /// Security groups: no rule of the port's groups allows the new connection (or, after a
    /// rule change, the tracked one), or a non-IP frame other than ARP.
    pub const SG_NO_RULE: u8 = 37;
    /// Security groups: fits no connection (TCP not starting with a SYN and not tracked, an
    /// out-of-window RST, a reply or ICMP error about nothing tracked), or malformed.
    pub const SG_INVALID: u8 = 38;
    /// Security groups: allowed, but the connection table, the bridge's zone or the bucket is
    /// full.
    pub const SG_TABLE_FULL: u8 = 39;
    /// Security groups: a non-first IP fragment (no ports to classify it by).
    pub const SG_FRAGMENT: u8 = 40;
    /// Encap reason code `e` ([`crate::stages::tunnel::ENCAP_REASONS`]) as a switch reason.
    pub const fn of_encap(e: u8) -> u8 {
        match e {
            0 => NO_HEADROOM,
            1 => SHARED_BUFFER,
            _ => TOO_BIG,
        }
    }
}

const _: () = assert!(DECAP_REASONS.len() == reason::RUNT as usize);
const _: () = assert!(REASONS.len() == reason::SG_FRAGMENT as usize + 1);

/// The switch's stages, in the order a packet meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchStage {
    /// Port role, segment, VLAN pop (`switch/ingress.rs`).
    Ingress = 0,
    /// Decap, VTEP check, ARP / ND (`switch/underlay.rs`).
    Underlay = 1,
    /// Source MACs (`switch/learn.rs`).
    Learn = 2,
    /// Destination MACs (`switch/forward.rs`).
    Forward = 3,
    /// Replication (`switch/flood.rs`).
    Flood = 4,
    /// Encap, VLAN push, solicitations (`switch/egress.rs`).
    Egress = 5,
}

/// Stage names, by [`SwitchStage`].
pub const STAGE_NAMES: [&str; 6] =
    ["switch-ingress", "switch-underlay", "switch-learn", "switch-forward", "switch-flood", "switch-egress"];

/// Named counters of each stage, by [`SwitchStage`].
pub const STAGE_STATS: [&[&str]; 6] = [
    &["access", "uplink-vlan"],
    &["decapsulated", "arp-answered", "nd-answered", "neighbour-updates"],
    &["refreshed", "learn-events", "learn-lost", "static-kept"],
    &["known", "unknown", "broadcast", "multicast"],
    &["flooded", "copies"],
    &["encapsulated", "vlan-pushed", "solicitations"],
];

/// Named counter codes, per stage.
pub mod stat {
    /// Ingress: frames from access ports.
    pub const ACCESS: u8 = 0;
    /// Ingress: frames from the uplink's VLANs.
    pub const UPLINK_VLAN: u8 = 1;
    /// Underlay: tunnel packets decapsulated.
    pub const DECAPSULATED: u8 = 0;
    /// Underlay: ARP requests for our VTEP answered.
    pub const ARP_ANSWERED: u8 = 1;
    /// Underlay: neighbour solicitations for our VTEP answered.
    pub const ND_ANSWERED: u8 = 2;
    /// Underlay: neighbour updates sent to the control side.
    pub const NEIGH_UPDATES: u8 = 3;
    /// Learn: last-seen times refreshed.
    pub const REFRESHED: u8 = 0;
    /// Learn: learn / move events sent.
    pub const LEARN_EVENTS: u8 = 1;
    /// Learn: events lost to a full ring.
    pub const LEARN_LOST: u8 = 2;
    /// Learn: a static MAC seen elsewhere (not moved).
    pub const STATIC_KEPT: u8 = 3;
    /// Forward: known unicast.
    pub const KNOWN: u8 = 0;
    /// Forward: unknown unicast (flooded).
    pub const UNKNOWN: u8 = 1;
    /// Forward: broadcast.
    pub const BROADCAST: u8 = 2;
    /// Forward: multicast.
    pub const MULTICAST: u8 = 3;
    /// Flood: packets flooded.
    pub const FLOODED: u8 = 0;
    /// Flood: copies sent.
    pub const COPIES: u8 = 1;
    /// Egress: packets encapsulated.
    pub const ENCAPSULATED: u8 = 0;
    /// Egress: VLAN tags pushed.
    pub const VLAN_PUSHED: u8 = 1;
    /// Egress: ARP requests / neighbour solicitations sent.
    pub const SOLICITATIONS: u8 = 2;
}

/// One lcore's counters (its processor writes them; anyone reads).
#[derive(Debug)]
pub struct LcoreCounters {
    /// By [`SwitchStage`].
    pub stages: [Arc<StageCounters>; 6],
    /// Drops by input port and reason: `[port * REASONS.len() + reason]`.
    pub port_drops: Box<[Counter]>,
    /// Packets flooded, by segment.
    pub flooded: Box<[Counter]>,
    /// The `gro` and `tx-offload` stages' counters.
    pub extra: Vec<Arc<StageCounters>>,
}

impl LcoreCounters {
    /// Counters for `ports` ports and `segments` segments.
    pub fn new(ports: usize, segments: usize) -> LcoreCounters {
        LcoreCounters {
            stages: std::array::from_fn(|i| StageCounters::with_stats(STAGE_NAMES[i], REASONS, STAGE_STATS[i])),
            port_drops: (0..ports * REASONS.len()).map(|_| Counter::new()).collect(),
            flooded: (0..segments).map(|_| Counter::new()).collect(),
            extra: Vec::new(),
        }
    }

    /// Counts a drop in `stage` of a packet from `port`.
    #[inline]
    pub fn dropped(&self, stage: SwitchStage, port: u16, reason: u8) {
        self.stages[stage as usize].dropped(reason, 1);
        if let Some(c) = self.port_drops.get(port as usize * REASONS.len() + reason as usize) {
            c.inc();
        }
    }

    /// Adds to a named counter of `stage`.
    #[inline(always)]
    pub fn stat(&self, stage: SwitchStage, code: u8, n: u64) {
        self.stages[stage as usize].stat(code, n);
    }

    /// Counts packets entering `stage`.
    #[inline(always)]
    pub fn packets(&self, stage: SwitchStage, n: u64) {
        self.stages[stage as usize].packets.add(n);
    }
}

/// Per bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeStats {
    /// Name.
    pub name: String,
    /// Entries in its FDB (static and learned).
    pub fdb_size: u64,
    /// MACs learned.
    pub learned: u64,
    /// MAC moves.
    pub moved: u64,
    /// Entries aged out.
    pub aged: u64,
    /// Packets flooded.
    pub flooded: u64,
    /// Learns refused (bridge or port limit, table full, VTEP table full).
    pub refused: u64,
}

/// Per port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwitchPortStats {
    /// Name.
    pub name: String,
    /// MACs learned behind it now.
    pub macs: u64,
    /// Learns refused by its limit.
    pub refused: u64,
    /// Drops of packets that came in on it, by reason (only reasons with drops); the `sg-*`
    /// reasons count the packets its security groups dropped, either way.
    pub drops: Vec<(&'static str, u64)>,
}

/// Per bridge: its connection-tracking zone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneStats {
    /// The bridge.
    pub bridge: String,
    /// Connections tracked now.
    pub entries: u64,
    /// New connections committed so far.
    pub new: u64,
}

/// The connection table, when some port has a security group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConntrackStats {
    /// Connections tracked now (all zones).
    pub entries: u64,
    /// Its capacity.
    pub capacity: u64,
    /// New connections refused (table, zone or bucket full).
    pub refused: u64,
    /// Connections removed by aging.
    pub aged: u64,
    /// Per bridge.
    pub zones: Vec<ZoneStats>,
}

/// Per remote VTEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepStats {
    /// Address.
    pub addr: IpAddr,
    /// Its MAC, when known.
    pub mac: Option<[u8; 6]>,
    /// Neighbour state (`incomplete`, `reachable`, `stale`, `permanent`).
    pub state: &'static str,
    /// Learned from traffic (not in any bridge's `remotes`).
    pub learned: bool,
}

/// Everything the switch counts.
#[derive(Debug, Clone, Default)]
pub struct SwitchStats {
    /// Per bridge.
    pub bridges: Vec<BridgeStats>,
    /// Per port.
    pub ports: Vec<SwitchPortStats>,
    /// Per stage (summed over lcores): packets, drops by reason, named counters.
    pub stages: Vec<StageSummary>,
    /// Remote VTEPs.
    pub vteps: Vec<VtepStats>,
    /// Entries in the FDB.
    pub fdb_entries: u64,
    /// FDB entries moved between their two buckets to make room (cuckoo moves; not MAC moves).
    pub fdb_relocations: u64,
    /// Events (learn, move, neighbour) applied by the control side.
    pub events: u64,
    /// The connection table of the security groups (none when no port has one).
    pub conntrack: Option<ConntrackStats>,
}

/// Sums the counters of the same stage over lcores (`per_lcore[l][stage]`).
pub fn sum_stages(per_lcore: &[Vec<Arc<StageCounters>>]) -> Vec<StageSummary> {
    let n = per_lcore.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .filter_map(|i| {
            let all: Vec<&Arc<StageCounters>> = per_lcore.iter().filter_map(|l| l.get(i)).collect();
            let first = all.first()?;
            let mut s = StageSummary { stage: first.stage, packets: 0, drops: first.drops(), stats: first.stats() };
            s.drops.iter_mut().for_each(|d| d.1 = 0);
            s.stats.iter_mut().for_each(|d| d.1 = 0);
            for c in all {
                s.packets += c.packets.get();
                add_pairs(&mut s.drops, &c.drops());
                add_pairs(&mut s.stats, &c.stats());
            }
            Some(s)
        })
        .collect()
}

fn add_pairs(into: &mut [(&'static str, u64)], from: &[(&'static str, u64)]) {
    for (a, b) in into.iter_mut().zip(from) {
        a.1 += b.1;
    }
}
