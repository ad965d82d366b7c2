//! `null`: DPDK `net_null`'s work and nothing more. Receive takes a burst from the pool and sets
//! a frame length (64 bytes by default) without touching the data; transmit frees the burst.
//! The yardstick for framework overhead.

use std::sync::Arc;

use fastpath_mempool::{Batch, Mbuf, Mempool, PoolCache};

use crate::ctx::Ctx;
use crate::port::{Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
use crate::spec::Spec;
use crate::stats::{PortStats, QueueStats};
use crate::Error;

/// The accepted form of a null port spec.
pub const FORM: &str = "null[,size=BYTES][,queues=N][,no-rx=on]";

/// Settings of a null port.
#[derive(Debug, Clone)]
pub struct NullConfig {
    /// Frame length of received mbufs.
    pub size: u16,
    /// Queue pairs.
    pub queues: u16,
    /// Receive nothing (a pure sink).
    pub no_rx: bool,
    /// A frame copied into every received mbuf (its length overrides `size`). Without one the
    /// data is left as it is, like DPDK's net_null without `copy`.
    pub frame: Option<Arc<[u8]>>,
    /// Frames received in turn, one per mbuf, cycling (overrides `frame`): the positions of a
    /// flow, for stages that look at sequences (GRO). A frame longer than one mbuf arrives as
    /// a chain: its first mbuf gets the frame's first bytes (every header), the others only
    /// their lengths, their data left as it is (like net_null: for stages that cut by
    /// headers, such as LSO).
    pub frames: Option<Arc<[Arc<[u8]>]>>,
    /// Offloads the port claims on transmit (it frees everything anyway): a stand-in for a
    /// port that takes, say, TSO packets (a vhost-user guest with GUEST_TSO4).
    pub offloads: Offloads,
}

impl Default for NullConfig {
    fn default() -> Self {
        NullConfig { size: 64, queues: 1, no_rx: false, frame: None, frames: None, offloads: Offloads::NONE }
    }
}

impl NullConfig {
    /// Reads the settings from a `null` spec.
    pub fn from_spec(spec: &mut Spec, pool: &Mempool) -> Result<NullConfig, Error> {
        let max = pool.data_room().min(u16::MAX as usize) as u16;
        let cfg = NullConfig {
            size: spec.take_num("size", 14u16, max)?.unwrap_or(64),
            queues: spec.take_num("queues", 1u16, 64)?.unwrap_or(1),
            no_rx: spec.take_bool("no-rx")?.unwrap_or(false),
            ..NullConfig::default()
        };
        spec.finish(false)?;
        Ok(cfg)
    }
}

/// A null port.
#[derive(Debug)]
pub struct NullPort {
    info: PortInfo,
    pool: Mempool,
    cfg: NullConfig,
    queues: QueueSet,
}

impl NullPort {
    /// A null port with id `id` allocating from `pool`.
    pub fn new(id: u16, pool: &Mempool, mut cfg: NullConfig) -> NullPort {
        if let Some(f) = &cfg.frame {
            let room = pool.data_room().min(u16::MAX as usize);
            if f.len() > room {
                log::warn!("null{id}: template frame of {} bytes cut to the data room {room}", f.len());
                cfg.frame = Some(f[..room].into());
            }
            cfg.size = cfg.frame.as_ref().map_or(0, |f| f.len() as u16);
        }
        let name = format!("null{id}");
        NullPort {
            queues: QueueSet::new(&name, cfg.queues, cfg.queues),
            info: PortInfo {
                id,
                driver: "null",
                name,
                rx_queues: cfg.queues,
                tx_queues: cfg.queues,
                offloads: cfg.offloads,
                live: None,
                max_frame: pool.data_room() as u32,
                mac: None,
            },
            pool: pool.clone(),
            cfg,
        }
    }
}

impl Port for NullPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        Ok(Box::new(NullRx {
            pool: self.pool.clone(),
            port: self.info.id,
            queue: q,
            size: self.cfg.size,
            no_rx: self.cfg.no_rx,
            frame: self.cfg.frame.clone(),
            frames: self.cfg.frames.clone(),
            next: 0,
            stats,
        }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        Ok(Box::new(NullTx { stats: self.queues.take_tx(q)? }))
    }

    fn stats(&self) -> PortStats {
        self.queues.stats()
    }
}

/// Receive side of a null port.
#[derive(Debug)]
pub struct NullRx {
    pool: Mempool,
    port: u16,
    queue: u16,
    size: u16,
    no_rx: bool,
    frame: Option<Arc<[u8]>>,
    frames: Option<Arc<[Arc<[u8]>]>>,
    /// Next position in `frames`.
    next: usize,
    stats: Arc<QueueStats>,
}

impl NullRx {
    /// Receives `n` packets from the cycle of `frames` (see [`NullConfig::frames`]).
    #[inline(never)]
    fn rx_frames(&mut self, ctx: &mut Ctx, batch: &mut Batch, n: usize) -> usize {
        let Some(frames) = self.frames.as_ref() else { return 0 };
        let cache = ctx.cache(&self.pool);
        let (mut got, mut bytes) = (0, 0);
        while got < n {
            let f = &frames[self.next % frames.len()];
            let Some(m) = chain_for(cache, f) else { break };
            self.next = (self.next + 1) % frames.len();
            bytes += m.pkt_len();
            let mut m = m;
            m.set_port(self.port);
            m.set_queue(self.queue);
            // n is bounded by the batch's room.
            let _ = batch.push(m);
            got += 1;
        }
        self.stats.drops.add((n - got) as u64);
        self.stats.packets.add(got as u64);
        self.stats.bytes.add(bytes as u64);
        got
    }
}

/// An mbuf (a chain when it does not fit one) of `f.len()` bytes whose first mbuf holds the
/// first bytes of `f`; `None` (nothing kept) when the pool runs dry.
#[inline]
fn chain_for(cache: &mut PoolCache, f: &[u8]) -> Option<Mbuf> {
    let mut head = cache.alloc()?;
    let room = head.tailroom();
    let first = f.len().min(room);
    head.append(first)?.copy_from_slice(&f[..first]);
    if f.len() == first {
        return Some(head);
    }
    // The rest, built from the back so that every link is made in constant time.
    let mut tail: Option<Mbuf> = None;
    let rest = f.len() - first;
    let segs = rest.div_ceil(room);
    for j in (0..segs).rev() {
        let Some(mut m) = cache.alloc() else {
            cache.free(head);
            if let Some(t) = tail {
                cache.free(t);
            }
            return None;
        };
        let len = if j + 1 == segs { rest - j * room } else { room };
        m.set_len(len);
        if let Some(t) = tail.take() {
            if let Err(t) = m.chain(t) {
                cache.free(t);
            }
        }
        tail = Some(m);
    }
    if let Some(t) = tail {
        if let Err(t) = head.chain(t) {
            cache.free(t);
        }
    }
    Some(head)
}

impl RxQueue for NullRx {
    #[inline]
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        if self.no_rx {
            return 0;
        }
        if self.frames.is_some() {
            let n = max.min(batch.remaining_capacity());
            return self.rx_frames(ctx, batch, n);
        }
        let n = max.min(batch.remaining_capacity());
        let start = batch.len();
        if n == 0 || !ctx.cache(&self.pool).alloc_bulk(batch, n) {
            self.stats.drops.add(n as u64);
            return 0;
        }
        for m in &mut batch[start..] {
            // SAFETY: size was bounded by the pool's data room at configuration and a fresh mbuf
            // is a single segment at the default headroom.
            unsafe { m.set_len_unchecked(self.size) };
            m.set_port(self.port);
            m.set_queue(self.queue);
        }
        if let Some(f) = &self.frame {
            for m in &mut batch[start..] {
                m.data_mut().copy_from_slice(f);
            }
        }
        self.stats.packets.add(n as u64);
        self.stats.bytes.add(n as u64 * self.size as u64);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }

    fn port_id(&self) -> u16 {
        self.port
    }

    fn queue_id(&self) -> u16 {
        self.queue
    }
}

/// Transmit side of a null port: frees everything.
#[derive(Debug)]
pub struct NullTx {
    stats: Arc<QueueStats>,
}

impl TxQueue for NullTx {
    #[inline]
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        let n = batch.len();
        let bytes: usize = batch.iter().map(|m| m.pkt_len()).sum();
        ctx.free_batch(batch);
        self.stats.packets.add(n as u64);
        self.stats.bytes.add(bytes as u64);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_mempool::{PagePolicy, PoolConfig};

    #[test]
    fn frames_cycle_and_big_ones_arrive_as_chains() {
        let pool = Mempool::new("null-frames", &PoolConfig { mbufs: 256, chunk_size: 2048, pages: PagePolicy::Small })
            .unwrap();
        let small: Arc<[u8]> = (0..100u8).collect::<Vec<_>>().into();
        let big: Arc<[u8]> = (0..10_000u32).map(|i| i as u8).collect::<Vec<_>>().into();
        let cfg = NullConfig { frames: Some(Arc::from([small.clone(), big.clone()])), ..NullConfig::default() };
        let mut port = NullPort::new(0, &pool, cfg);
        let mut rx = port.rx_queue(0).unwrap();
        let mut ctx = Ctx::new(0, &pool);
        let mut b = Batch::new();
        assert_eq!(rx.rx_burst(&mut ctx, &mut b, 5), 5);
        let room = pool.data_room();
        for (i, m) in b.iter().enumerate() {
            let f = if i % 2 == 0 { &small } else { &big };
            assert_eq!(m.pkt_len(), f.len());
            assert_eq!(m.nb_segs(), f.len().div_ceil(room));
            // The first mbuf holds the frame's first bytes.
            assert_eq!(m.data(), &f[..f.len().min(room)]);
        }
        ctx.free_batch(&mut b);
        // A pool too small for a chain: nothing half-built is kept.
        let cfg = NullConfig { frames: Some(Arc::from([big.clone()])), ..NullConfig::default() };
        let mut port = NullPort::new(1, &pool, cfg);
        let mut rx = port.rx_queue(0).unwrap();
        let n = rx.rx_burst(&mut ctx, &mut b, 100);
        assert_eq!(n, b.len());
        assert!(n < 100 && rx.stats().drops.get() == (100 - n) as u64);
        ctx.free_batch(&mut b);
        drop(ctx);
        assert_eq!(pool.available(), pool.capacity());
    }
}
