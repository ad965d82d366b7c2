//! Ports and their queues: the burst interface every driver implements.
//!
//! A port is opened on the control thread, then its queues are taken out ([`Port::rx_queue`],
//! [`Port::tx_queue`]) and moved to the lcore that owns them: one queue, one lcore. Queue calls
//! are bursts (style rule 7): `rx_burst` appends `0..=max` mbufs, `tx_burst` sends `0..=len` from
//! the front of the batch and leaves the unsent ones there, in order, for the caller to retry or
//! free. The port keeps handles to the queues' counters so that stats can be read at any time.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use fastpath_mempool::Batch;

use crate::ctx::Ctx;
use crate::stats::{PortStats, QueueStats};
use crate::Error;

/// Offload capabilities of a port (what it does itself, so the pipeline need not).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Offloads(pub u32);

impl Offloads {
    /// None.
    pub const NONE: Offloads = Offloads(0);
    /// Computes the IPv4 header checksum on transmit.
    pub const TX_IPV4_CKSUM: Offloads = Offloads(1 << 0);
    /// Computes the TCP checksum on transmit.
    pub const TX_TCP_CKSUM: Offloads = Offloads(1 << 1);
    /// Computes the UDP checksum on transmit.
    pub const TX_UDP_CKSUM: Offloads = Offloads(1 << 2);
    /// Segments TCP (TSO) on transmit.
    pub const TX_TCP_TSO: Offloads = Offloads(1 << 3);
    /// Segments UDP (USO) on transmit.
    pub const TX_UDP_TSO: Offloads = Offloads(1 << 4);
    /// Computes the outer IPv4 checksum of tunnels.
    pub const TX_OUTER_IPV4_CKSUM: Offloads = Offloads(1 << 5);
    /// Computes the outer UDP checksum of tunnels.
    pub const TX_OUTER_UDP_CKSUM: Offloads = Offloads(1 << 6);
    /// Segments TCP inside VXLAN.
    pub const TX_VXLAN_TNL_TSO: Offloads = Offloads(1 << 7);
    /// Segments TCP inside GENEVE.
    pub const TX_GENEVE_TNL_TSO: Offloads = Offloads(1 << 8);
    /// Segments TCP inside GRE.
    pub const TX_GRE_TNL_TSO: Offloads = Offloads(1 << 9);
    /// Accepts multi-segment mbufs on transmit.
    pub const TX_MULTI_SEGS: Offloads = Offloads(1 << 10);
    /// Inserts VLAN tags on transmit.
    pub const TX_VLAN_INSERT: Offloads = Offloads(1 << 11);
    /// Verifies checksums on receive.
    pub const RX_CKSUM: Offloads = Offloads(1 << 16);
    /// Delivers large coalesced packets on receive (LRO).
    pub const RX_LRO: Offloads = Offloads(1 << 17);
    /// Strips VLAN tags on receive.
    pub const RX_VLAN_STRIP: Offloads = Offloads(1 << 18);

    /// True when every bit of `o` is set.
    pub const fn contains(self, o: Offloads) -> bool {
        self.0 & o.0 == o.0
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Offloads;
    fn bitor(self, o: Offloads) -> Offloads {
        Offloads(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Offloads {
    fn bitor_assign(&mut self, o: Offloads) {
        self.0 |= o.0
    }
}

impl fmt::Debug for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: &[(Offloads, &str)] = &[
            (Offloads::TX_IPV4_CKSUM, "tx-ipv4-cksum"),
            (Offloads::TX_TCP_CKSUM, "tx-tcp-cksum"),
            (Offloads::TX_UDP_CKSUM, "tx-udp-cksum"),
            (Offloads::TX_TCP_TSO, "tx-tcp-tso"),
            (Offloads::TX_UDP_TSO, "tx-udp-tso"),
            (Offloads::TX_OUTER_IPV4_CKSUM, "tx-outer-ipv4-cksum"),
            (Offloads::TX_OUTER_UDP_CKSUM, "tx-outer-udp-cksum"),
            (Offloads::TX_VXLAN_TNL_TSO, "tx-vxlan-tnl-tso"),
            (Offloads::TX_GENEVE_TNL_TSO, "tx-geneve-tnl-tso"),
            (Offloads::TX_GRE_TNL_TSO, "tx-gre-tnl-tso"),
            (Offloads::TX_MULTI_SEGS, "tx-multi-segs"),
            (Offloads::TX_VLAN_INSERT, "tx-vlan-insert"),
            (Offloads::RX_CKSUM, "rx-cksum"),
            (Offloads::RX_LRO, "rx-lro"),
            (Offloads::RX_VLAN_STRIP, "rx-vlan-strip"),
        ];
        let mut l = f.debug_set();
        for (o, n) in NAMES {
            if self.contains(*o) {
                l.entry(&format_args!("{n}"));
            }
        }
        l.finish()
    }
}

/// Offloads that change while a port runs: a vhost-user guest negotiates what it takes (GUEST_CSUM,
/// GUEST_TSO4, ...) long after the port opened and the pipeline was built. The port writes when
/// its peer changes; the stages that leave work to a port (`lso`, `tx-offload`) read it once per
/// burst that needs it. Always a subset of [`PortInfo::offloads`].
#[derive(Debug, Clone, Default)]
pub struct LiveOffloads(Arc<AtomicU32>);

impl LiveOffloads {
    /// A handle starting at `o`.
    pub fn new(o: Offloads) -> LiveOffloads {
        LiveOffloads(Arc::new(AtomicU32::new(o.0)))
    }

    /// What the port does now.
    #[inline]
    pub fn get(&self) -> Offloads {
        // Relaxed: a capability snapshot; a packet that races a change is still handled, because
        // a port that lost a capability drops (and counts) a request it cannot serve, as it would
        // without this handle.
        Offloads(self.0.load(Ordering::Relaxed))
    }

    /// Sets what the port does now.
    pub fn set(&self, o: Offloads) {
        // Relaxed: see get().
        self.0.store(o.0, Ordering::Relaxed)
    }
}

/// What a port is and can do.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Port id (its index in the application's port list).
    pub id: u16,
    /// Driver name (`null`, `ring`, `pcap`, ...).
    pub driver: &'static str,
    /// The spec it was opened from, or a descriptive name.
    pub name: String,
    /// Receive queues.
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Offloads the port performs itself (at best: see `live`).
    pub offloads: Offloads,
    /// For a port whose offloads depend on its peer (vhost-user): what it does now.
    pub live: Option<LiveOffloads>,
    /// Largest frame (L2, without FCS) the port takes or gives, in bytes.
    pub max_frame: u32,
    /// MAC address, if it has one.
    pub mac: Option<[u8; 6]>,
}

/// A receive queue, owned by one lcore.
pub trait RxQueue: Send {
    /// Appends up to `max` received mbufs to `batch` (bounded by its spare room); returns how
    /// many. Each carries the port and queue it came from.
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize;

    /// The queue's counters.
    fn stats(&self) -> &QueueStats;

    /// The id of the port the queue belongs to (what it stamps on its mbufs), so that a running
    /// lcore can hand back a removed port's queues; `PORT_NONE` when it has none.
    fn port_id(&self) -> u16 {
        fastpath_mempool::PORT_NONE
    }

    /// The queue's index in its port (what it stamps on its mbufs).
    fn queue_id(&self) -> u16 {
        0
    }
}

/// A transmit queue, owned by one lcore.
pub trait TxQueue: Send {
    /// Sends mbufs from the front of `batch`; sent ones are removed (the port owns them now),
    /// unsent ones stay in order. Returns how many were sent.
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize;

    /// Pushes out anything buffered and catches up with control-plane changes. The runtime calls
    /// it at the first empty poll of an idle streak, every [`crate::lcore::MAINTAIN_EVERY`] polls
    /// (busy or idle), and before the lcore stops, so a queue nobody sends to still answers its
    /// port's control thread within that many polls.
    fn flush(&mut self, _ctx: &mut Ctx) {}

    /// The queue's counters.
    fn stats(&self) -> &QueueStats;

    /// Counts `n` packets the port did not take (the caller frees them). A queue shared by
    /// several lcores counts under its lock ([`crate::txshare`]).
    fn dropped(&mut self, n: u64) {
        self.stats().drops.add(n);
    }
}

/// A port: opened on the control path, its queues then handed to lcores.
pub trait Port: Send {
    /// What the port is.
    fn info(&self) -> &PortInfo;

    /// Takes receive queue `q` out of the port (once).
    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error>;

    /// Takes transmit queue `q` out of the port (once).
    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error>;

    /// Counters summed over the queues (and the driver's own).
    fn stats(&self) -> PortStats;

    /// Driver-specific counters by name (kernel statistics, guest errors, ...).
    fn xstats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// True when the port will never receive again (a pcap file that ended).
    fn rx_exhausted(&self) -> bool {
        false
    }
}

/// Hands out a port's queues once each and keeps their counters for [`Port::stats`].
#[derive(Debug)]
pub struct QueueSet {
    /// Receive queue counters, by queue.
    pub rx: Vec<Arc<QueueStats>>,
    /// Transmit queue counters, by queue.
    pub tx: Vec<Arc<QueueStats>>,
    rx_taken: Vec<bool>,
    tx_taken: Vec<bool>,
    port: String,
}

impl QueueSet {
    /// Counters for `rx` receive and `tx` transmit queues of port `port`.
    pub fn new(port: &str, rx: u16, tx: u16) -> QueueSet {
        QueueSet {
            rx: (0..rx).map(|_| Arc::default()).collect(),
            tx: (0..tx).map(|_| Arc::default()).collect(),
            rx_taken: vec![false; rx as usize],
            tx_taken: vec![false; tx as usize],
            port: port.to_string(),
        }
    }

    /// Marks receive queue `q` taken and returns its counters.
    pub fn take_rx(&mut self, q: u16) -> Result<Arc<QueueStats>, Error> {
        Self::take(&self.port, "rx", &mut self.rx_taken, &self.rx, q)
    }

    /// Marks transmit queue `q` taken and returns its counters.
    pub fn take_tx(&mut self, q: u16) -> Result<Arc<QueueStats>, Error> {
        Self::take(&self.port, "tx", &mut self.tx_taken, &self.tx, q)
    }

    fn take(
        port: &str,
        dir: &str,
        taken: &mut [bool],
        stats: &[Arc<QueueStats>],
        q: u16,
    ) -> Result<Arc<QueueStats>, Error> {
        let Some(t) = taken.get_mut(q as usize) else {
            return Err(Error::Queue(format!(
                "port {port}: {dir} queue {q} does not exist (the port has {} {dir} queues)",
                taken.len()
            )));
        };
        if *t {
            return Err(Error::Queue(format!("port {port}: {dir} queue {q} is already owned by an lcore")));
        }
        *t = true;
        Ok(stats[q as usize].clone())
    }

    /// Sum of all queue counters.
    pub fn stats(&self) -> PortStats {
        let mut s = PortStats::default();
        self.rx.iter().for_each(|q| s.add_rx(q));
        self.tx.iter().for_each(|q| s.add_tx(q));
        s
    }
}
