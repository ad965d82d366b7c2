//! `null`: DPDK `net_null`'s work and nothing more. Receive takes a burst from the pool and sets
//! a frame length (64 bytes by default) without touching the data; transmit frees the burst.
//! The yardstick for framework overhead.

use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool};

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
}

impl Default for NullConfig {
    fn default() -> Self {
        NullConfig { size: 64, queues: 1, no_rx: false, frame: None }
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
            frame: None,
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
                offloads: Offloads::NONE,
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
    stats: Arc<QueueStats>,
}

impl RxQueue for NullRx {
    #[inline]
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        if self.no_rx {
            return 0;
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
