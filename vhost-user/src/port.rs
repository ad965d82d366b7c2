//! The `vhost-user` port: `vhost-user:PATH[,client][,queues=N][,reconnect=SECS]`.
//!
//! Receive queue q polls the guest's TX vring of pair q (vring 2q + 1), transmit queue q fills
//! the guest's RX vring (vring 2q). One lcore per queue, as everywhere. Before a frontend is
//! connected (and after it left) receive returns nothing and transmit takes nothing (the runtime
//! frees and counts those as drops, like a NIC with its link down).

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use fastpath_mempool::{Batch, Mempool};
use fastpath_pmd::{Ctx, Error, Offloads, Port, PortInfo, PortStats, QueueSet, QueueStats, RxQueue, Spec, TxQueue};

use crate::conn::{self, Mode};
use crate::device::{Close, Device, DeviceStatus};
use crate::net;
use crate::queue::{DropReason, GuestError};
use crate::shared::{Cursor, VringShared};

/// The accepted form of a vhost-user port spec.
pub const FORM: &str = "vhost-user:PATH[,client][,queues=N][,reconnect=SECS]";

/// Settings of a vhost-user port.
#[derive(Debug, Clone, PartialEq)]
pub struct VhostUserConfig {
    /// The unix socket path.
    pub path: PathBuf,
    /// Connect to the frontend's socket instead of listening.
    pub client: bool,
    /// Queue pairs offered (MQ).
    pub queues: u16,
    /// Client mode: seconds between connection attempts (0: do not reconnect once connected).
    pub reconnect: f64,
}

impl VhostUserConfig {
    /// Reads the settings from a `vhost-user` spec.
    pub fn from_spec(spec: &mut Spec) -> Result<VhostUserConfig, Error> {
        let Some(path) = spec.positional.clone() else {
            return Err(spec.error("the socket path is missing", None));
        };
        let client = spec.take_bool("client")?.unwrap_or(false);
        let queues = spec.take_num("queues", 1u16, 64)?.unwrap_or(1);
        let reconnect = spec.take_num("reconnect", 0.0f64, 3600.0)?;
        spec.finish(true)?;
        if reconnect.is_some() && !client {
            return Err(spec.error("reconnect= applies to client mode only (add ',client')", None));
        }
        Ok(VhostUserConfig { path: PathBuf::from(path), client, queues, reconnect: reconnect.unwrap_or(1.0) })
    }
}

/// A vhost-user port.
pub struct VhostUserPort {
    info: PortInfo,
    pool: Mempool,
    queues: QueueSet,
    vrings: Vec<Arc<VringShared>>,
    dev: Arc<Mutex<Device>>,
    status: Arc<DeviceStatus>,
    stop: Arc<AtomicBool>,
    ctl: Option<JoinHandle<()>>,
    unlink: Option<PathBuf>,
}

impl std::fmt::Debug for VhostUserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserPort").field("info", &self.info).finish_non_exhaustive()
    }
}

impl VhostUserPort {
    /// Opens `vhost-user:...` as port `id`.
    pub fn from_spec(id: u16, spec: &mut Spec, pool: &Mempool) -> Result<VhostUserPort, Error> {
        let cfg = VhostUserConfig::from_spec(spec)?;
        VhostUserPort::open(id, &spec.raw, cfg, pool)
    }

    /// Opens a port: binds the socket (server) and starts the control thread.
    pub fn open(id: u16, name: &str, cfg: VhostUserConfig, pool: &Mempool) -> Result<VhostUserPort, Error> {
        let (mode, unlink) = if cfg.client {
            let reconnect = (cfg.reconnect > 0.0).then(|| Duration::from_secs_f64(cfg.reconnect));
            (Mode::Client { path: cfg.path.clone(), reconnect }, None)
        } else {
            (Mode::Server(Arc::new(listen(&cfg.path)?)), Some(cfg.path.clone()))
        };
        let dev = Device::new(&format!("vhost-user{id}"), cfg.queues);
        let vrings: Vec<Arc<VringShared>> = (0..dev.vrings()).map(|i| dev.publisher(i).shared().clone()).collect();
        let status = dev.status().clone();
        let dev = Arc::new(Mutex::new(dev));
        let stop = Arc::new(AtomicBool::new(false));
        let ctl = {
            let (dev, stop, kicks) = (dev.clone(), stop.clone(), vrings.clone());
            std::thread::Builder::new()
                .name(format!("vhost-ctl{id}"))
                .spawn(move || conn::run(mode, dev, kicks, stop))
                .map_err(|e| Error::Io {
                    what: "starting the vhost-user control thread".into(),
                    err: e,
                    fix: "check the process's thread limit".into(),
                })?
        };
        Ok(VhostUserPort {
            info: PortInfo {
                id,
                driver: "vhost-user",
                name: name.to_string(),
                rx_queues: cfg.queues,
                tx_queues: cfg.queues,
                offloads: net::port_offloads(net::OFFERED_FEATURES),
                live: Some(status.offloads.clone()),
                max_frame: crate::queue::MAX_PKT_LEN as u32,
                mac: None,
            },
            pool: pool.clone(),
            queues: QueueSet::new(name, cfg.queues, cfg.queues),
            vrings,
            dev,
            status,
            stop,
            ctl: Some(ctl),
            unlink,
        })
    }

    /// True while a frontend is connected.
    pub fn connected(&self) -> bool {
        // Relaxed: a status snapshot.
        self.status.connected.load(Ordering::Relaxed)
    }

    /// The virtio feature bits the frontend acked (0 when none is connected).
    pub fn negotiated_features(&self) -> u64 {
        // Relaxed: a status snapshot.
        self.status.features.load(Ordering::Relaxed)
    }

    /// What the port does for the guest now: [`PortInfo::offloads`] is what it can do at best
    /// (fixed when the port opens, before any guest), this is what the connected guest
    /// negotiated (GUEST_TSO4 -> TX_TCP_TSO and so on).
    pub fn negotiated_offloads(&self) -> Offloads {
        self.status.offloads.get()
    }

    /// True when vring `i` is live (set up, started, enabled) (for tests and tools that wait).
    pub fn vring_live(&self, i: usize) -> bool {
        let d = self.dev.lock().unwrap_or_else(PoisonError::into_inner);
        i < d.vrings() && d.publisher(i).current().ring.is_some()
    }
}

fn listen(path: &PathBuf) -> Result<UnixListener, Error> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(Error::Config(format!(
                "vhost-user: {} exists and is not a socket: remove it or choose another path",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Error::Config(format!(
                "vhost-user: {} is in use by another backend: stop it or choose another path",
                path.display()
            )));
        }
        // A stale socket left by a process that ended.
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| Error::Io {
        what: format!("vhost-user: binding {}", path.display()),
        err: e,
        fix: "check that the directory exists and is writable".into(),
    })
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        // Relaxed: a request flag.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ctl.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.unlink {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Port for VhostUserPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        let cursor = Cursor::new(self.vrings[2 * q as usize + 1].clone());
        Ok(Box::new(VhostRx { cursor, pool: self.pool.clone(), port: self.info.id, queue: q, stats }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        let stats = self.queues.take_tx(q)?;
        let cursor = Cursor::new(self.vrings[2 * q as usize].clone());
        Ok(Box::new(VhostTx { cursor, pool: self.pool.clone(), stats }))
    }

    fn stats(&self) -> PortStats {
        let mut s = self.queues.stats();
        for (i, v) in self.vrings.iter().enumerate() {
            let errs: u64 = v.stats.guest_errors.iter().map(|c| c.get()).sum();
            let drops: u64 = v.stats.drops.iter().map(|c| c.get()).sum();
            if i % 2 == 1 {
                s.rx_errors += errs;
                s.rx_drops += drops;
            } else {
                s.tx_errors += errs;
                s.tx_drops += drops;
            }
        }
        s
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let mut x = vec![
            ("connected".to_string(), self.connected() as u64),
            // Relaxed: statistics.
            ("connections".to_string(), self.status.connections.load(Ordering::Relaxed)),
            ("mem_tables".to_string(), self.status.mem_tables.load(Ordering::Relaxed)),
            // What a hostile frontend tried (Relaxed: statistics): fds refused at
            // SET_VRING_KICK / _CALL, connections we closed by reason, lcores interrupted in a
            // stuck call write.
            ("fds_refused".to_string(), self.status.fds_refused.load(Ordering::Relaxed)),
            ("calls_interrupted".to_string(), self.status.calls_interrupted.load(Ordering::Relaxed)),
            ("features".to_string(), self.negotiated_features()),
            // The ring layout the last frontend chose (kept after it left). Relaxed: a statistic.
            ("ring_packed".to_string(), {
                let f = self.status.last_features.load(Ordering::Relaxed);
                (f & net::VIRTIO_F_RING_PACKED != 0) as u64
            }),
        ];
        for c in Close::ALL {
            // Relaxed: a statistic.
            x.push((format!("closed_{}", c.name()), self.status.closed[c as usize].load(Ordering::Relaxed)));
        }
        for (i, v) in self.vrings.iter().enumerate() {
            let q = i / 2;
            // Guest TX feeds our rx queue, guest RX our tx queue.
            let (dir, qs) = if i % 2 == 1 { ("rx", &self.queues.rx[q]) } else { ("tx", &self.queues.tx[q]) };
            let p = format!("q{q}_{dir}_");
            x.push((format!("{p}packets"), qs.packets.get()));
            x.push((format!("{p}bytes"), qs.bytes.get()));
            x.push((format!("{p}drops"), qs.drops.get()));
            for d in DropReason::ALL {
                x.push((format!("{p}{}", d.name()), v.stats.drops[d as usize].get()));
            }
            for e in GuestError::ALL {
                x.push((format!("{p}{}", e.name()), v.stats.guest_errors[e as usize].get()));
            }
            x.push((format!("{p}guest_kicks"), v.stats.kicks.get()));
            x.push((format!("{p}guest_calls"), v.stats.calls.get()));
            x.push((format!("{p}guest_calls_skipped"), v.stats.calls_skipped.get()));
            x.push((format!("{p}alloc_failed"), v.stats.alloc_failed.get()));
            // Relaxed: a status flag.
            x.push((format!("{p}broken"), v.broken.load(Ordering::Relaxed) as u64));
        }
        x
    }
}

/// Receive queue: the guest's TX vring.
#[derive(Debug)]
pub struct VhostRx {
    cursor: Cursor,
    pool: Mempool,
    port: u16,
    queue: u16,
    stats: Arc<QueueStats>,
}

impl RxQueue for VhostRx {
    #[inline]
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let Some((q, mem, vs)) = self.cursor.live() else { return 0 };
        let (n, bytes) = q.dequeue_burst(mem, ctx.cache(&self.pool), batch, max, (self.port, self.queue), vs);
        if n > 0 {
            self.stats.packets.add(n as u64);
            self.stats.bytes.add(bytes);
        }
        self.cursor.progress();
        if self.cursor.needs_report() {
            self.cursor.report_broken();
        }
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

/// Transmit queue: the guest's RX vring.
#[derive(Debug)]
pub struct VhostTx {
    cursor: Cursor,
    pool: Mempool,
    stats: Arc<QueueStats>,
}

impl TxQueue for VhostTx {
    #[inline]
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        let Some((q, mem, vs)) = self.cursor.live() else { return 0 };
        let (n, bytes) = q.enqueue_burst(mem, ctx.cache(&self.pool), batch, vs);
        if n > 0 {
            self.stats.packets.add(n as u64);
            self.stats.bytes.add(bytes);
        }
        self.cursor.progress();
        if self.cursor.needs_report() {
            self.cursor.report_broken();
        }
        n
    }

    /// Takes any new configuration even when nothing is sent, so that a frontend's departure
    /// releases its memory (the control thread unmaps it once we acknowledge) without waiting
    /// for traffic toward this queue.
    fn flush(&mut self, _ctx: &mut Ctx) {
        let _ = self.cursor.live();
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> Result<VhostUserConfig, Error> {
        let mut spec = Spec::parse_port(s)?.accepting(FORM);
        VhostUserConfig::from_spec(&mut spec)
    }

    #[test]
    fn spec_forms() {
        let c = cfg("vhost-user:/tmp/a.sock").unwrap();
        assert_eq!((c.path.to_str(), c.client, c.queues, c.reconnect), (Some("/tmp/a.sock"), false, 1, 1.0));
        let c = cfg("vhost-user:/tmp/a.sock,client,queues=4,reconnect=0.5").unwrap();
        assert_eq!((c.client, c.queues, c.reconnect), (true, 4, 0.5));
        let c = cfg("vhost-user:/tmp/a.sock,client=on,reconnect=0").unwrap();
        assert_eq!((c.client, c.reconnect), (true, 0.0));
        for (bad, why) in [
            ("vhost-user", "socket path is missing"),
            ("vhost-user:/x,queues=65", "queues=65"),
            ("vhost-user:/x,reconnect=1", "client mode only"),
            ("vhost-user:/x,client,reconnect=-1", "reconnect=-1"),
            ("vhost-user:/x,nope", "unknown item 'nope'"),
        ] {
            let e = cfg(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(FORM), "{bad}: {e}");
        }
    }
}
