//! `ring`: ports over in-memory MPMC rings, for chaining lcores, embedding and tests.
//!
//! `ring:NAME` receives from the ring called NAME and transmits to the ring called `peer`
//! (NAME itself by default, a loopback). Rings live in a process-wide registry while a port
//! uses them, so `ring:a,peer=b` and `ring:b,peer=a` are two ends of a link. [`RingPort::pair`]
//! makes such a link directly. `fill=N` preloads N frames of `size` bytes (an in-memory traffic
//! source: they circulate for as long as the pipeline forwards them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use fastpath_mempool::{Batch, Mbuf, Mempool, Ring};

use crate::ctx::Ctx;
use crate::port::{Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
use crate::spec::Spec;
use crate::stats::{PortStats, QueueStats};
use crate::Error;

/// The accepted form of a ring port spec.
pub const FORM: &str = "ring:NAME[,peer=NAME][,size=SLOTS][,fill=N][,frame=BYTES]";

type MbufRing = Ring<Mbuf>;

fn registry() -> &'static Mutex<HashMap<String, Weak<MbufRing>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<MbufRing>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The ring called `name`, created with `slots` slots if nobody holds it.
pub fn named_ring(name: &str, slots: usize) -> Arc<MbufRing> {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ring) = r.get(name).and_then(Weak::upgrade) {
        return ring;
    }
    let ring = Arc::new(Ring::new(slots));
    r.insert(name.to_string(), Arc::downgrade(&ring));
    ring
}

/// A port over two rings (receive from one, transmit to the other).
#[derive(Debug)]
pub struct RingPort {
    info: PortInfo,
    rx: Arc<MbufRing>,
    tx: Arc<MbufRing>,
    queues: QueueSet,
}

impl RingPort {
    /// A port receiving from `rx` and transmitting to `tx`.
    pub fn new(id: u16, name: &str, rx: Arc<MbufRing>, tx: Arc<MbufRing>) -> RingPort {
        RingPort {
            info: PortInfo {
                id,
                driver: "ring",
                name: name.to_string(),
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::TX_MULTI_SEGS,
                live: None,
                max_frame: u32::MAX,
                mac: None,
            },
            rx,
            tx,
            queues: QueueSet::new(name, 1, 1),
        }
    }

    /// Two ports linked back to back: what one sends, the other receives.
    pub fn pair(id_a: u16, id_b: u16, slots: usize) -> (RingPort, RingPort) {
        let ab = Arc::new(Ring::new(slots));
        let ba = Arc::new(Ring::new(slots));
        (
            RingPort::new(id_a, &format!("ring{id_a}"), ba.clone(), ab.clone()),
            RingPort::new(id_b, &format!("ring{id_b}"), ab, ba),
        )
    }

    /// Opens `ring:NAME[,...]`.
    pub fn from_spec(id: u16, spec: &mut Spec, pool: &Mempool) -> Result<RingPort, Error> {
        let Some(name) = spec.positional.clone() else {
            return Err(spec.error("the ring name is missing", None));
        };
        let peer = spec.take_str("peer")?.unwrap_or_else(|| name.clone());
        let slots = spec.take_num("size", 2usize, 1 << 20)?.unwrap_or(1024);
        let fill = spec.take_num("fill", 0usize, 1 << 20)?.unwrap_or(0);
        let frame = spec.take_num("frame", 14usize, pool.data_room())?.unwrap_or(64);
        spec.finish(true)?;
        let rx = named_ring(&name, slots);
        let tx = named_ring(&peer, slots);
        for _ in 0..fill {
            let Some(mut m) = pool.alloc() else {
                return Err(spec.error(&format!("fill={fill} needs more mbufs than the pool has free"), None));
            };
            m.set_len(frame);
            if let Err(m) = rx.enqueue(m) {
                drop(m);
                return Err(spec.error(&format!("fill={fill} exceeds the ring size {}", rx.capacity()), None));
            }
        }
        Ok(RingPort::new(id, &spec.raw, rx, tx))
    }
}

impl Port for RingPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        Ok(Box::new(RingRx { ring: self.rx.clone(), port: self.info.id, stats }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        let stats = self.queues.take_tx(q)?;
        Ok(Box::new(RingTx { ring: self.tx.clone(), stats }))
    }

    fn stats(&self) -> PortStats {
        self.queues.stats()
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        vec![("rx_ring_len".into(), self.rx.len() as u64), ("tx_ring_len".into(), self.tx.len() as u64)]
    }
}

/// Receive side of a ring port.
#[derive(Debug)]
pub struct RingRx {
    ring: Arc<MbufRing>,
    port: u16,
    stats: Arc<QueueStats>,
}

impl RxQueue for RingRx {
    #[inline]
    fn rx_burst(&mut self, _ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let start = batch.len();
        let n = self.ring.dequeue_burst(batch.as_vec_mut(), max);
        let mut bytes = 0;
        for m in &mut batch[start..] {
            m.set_port(self.port);
            m.set_queue(0);
            bytes += m.pkt_len() as u64;
        }
        self.stats.packets.add(n as u64);
        self.stats.bytes.add(bytes);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }

    fn port_id(&self) -> u16 {
        self.port
    }
}

/// Transmit side of a ring port.
#[derive(Debug)]
pub struct RingTx {
    ring: Arc<MbufRing>,
    stats: Arc<QueueStats>,
}

impl TxQueue for RingTx {
    #[inline]
    fn tx_burst(&mut self, _ctx: &mut Ctx, batch: &mut Batch) -> usize {
        let bytes_before: u64 = batch.iter().map(|m| m.pkt_len() as u64).sum();
        let n = self.ring.enqueue_burst(batch.as_vec_mut());
        let bytes_after: u64 = batch.iter().map(|m| m.pkt_len() as u64).sum();
        self.stats.packets.add(n as u64);
        self.stats.bytes.add(bytes_before - bytes_after);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}
