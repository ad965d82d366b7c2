//! fastpath ports and the lcore runtime.
//!
//! - [`Port`], [`RxQueue`], [`TxQueue`]: the burst interface (`rx_burst` appends `0..=max`,
//!   `tx_burst` sends from the front and leaves the unsent ones), offload capabilities
//!   ([`Offloads`]) and per-queue counters ([`QueueStats`]).
//! - Drivers: [`drivers::null`] (DPDK net_null's work), [`drivers::ring`] (in-memory),
//!   [`drivers::pcap`] (files), [`drivers::tap`] (the kernel's TAP interfaces), [`drivers::af_xdp`]
//!   (AF_XDP sockets on real interfaces, pure Rust: no libbpf).
//! - [`Ctx`]: what an lcore owns for the fast path (pool caches, scratch batch).
//! - [`lcore`]: pinned busy-poll threads, clean stop, per-lcore busy/idle counters.
//! - [`Spec`]: the text form of ports and stages, with errors that name the bad part.
//!
//! A port is opened from its spec on the control thread; its queues are taken out and polled
//! by the lcore that owns them (here by hand: [`Runtime::launch`] runs such loops on pinned
//! threads, see `docs/embedding.md`):
//!
//! ```
//! use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
//! use fastpath_pmd::{open_port, Ctx};
//!
//! let pool = Mempool::new("example", &PoolConfig { mbufs: 512, chunk_size: 2048, pages: PagePolicy::Small })?;
//! let mut port = open_port(0, "null,size=64", &pool)?.expect("a driver of this crate");
//! let (mut rx, mut tx) = (port.rx_queue(0)?, port.tx_queue(0)?);
//! let mut ctx = Ctx::new(0, &pool);
//! let mut batch = Batch::new();
//! let n = rx.rx_burst(&mut ctx, &mut batch, 32);
//! let sent = tx.tx_burst(&mut ctx, &mut batch);
//! assert_eq!((n, sent), (32, 32));
//! assert_eq!(port.stats().rx_packets, 32);
//! # drop((rx, tx, ctx, port));
//! # assert_eq!(pool.available(), pool.capacity());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod ctx;
pub mod drivers;
pub mod lcore;
pub mod port;
pub mod signal;
pub mod spec;
pub mod stats;
/// Internal: the Linux calls the kernel-facing drivers share (also used by the workspace's tests).
#[doc(hidden)]
pub mod sys;
#[cfg(feature = "test-utils")]
pub mod testutil;
pub mod time;
pub mod txshare;
/// Internal: the virtio-net header shared by the TAP and vhost-user drivers.
#[doc(hidden)]
pub mod virtio_net;

pub use ctx::Ctx;
pub use lcore::{
    Command, IdleMode, LcoreSpec, LcoreStats, Output, Passthrough, Processor, Returned, Runtime, RuntimeConfig, Task,
    TaskStats,
};
pub use port::{LiveOffloads, Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
pub use spec::Spec;
pub use stats::{Counter, PortStats, QueueStats};

use std::fmt;

use fastpath_mempool::Mempool;

/// Errors of ports and the runtime (control path only).
#[derive(Debug)]
pub enum Error {
    /// A port or stage spec is wrong.
    Spec {
        /// `port` or `stage`.
        kind: &'static str,
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        problem: String,
        /// The accepted forms.
        accepted: String,
    },
    /// A bad setting.
    Config(String),
    /// A queue cannot be taken.
    Queue(String),
    /// A core cannot be used.
    Core(String),
    /// An I/O or system call failed.
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        err: std::io::Error,
        /// What to do about it.
        fix: String,
    },
    /// Missing privileges or kernel support.
    Unsupported(String),
    /// The memory layer failed.
    Mempool(fastpath_mempool::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spec { kind, spec, problem, accepted } => {
                write!(f, "bad {kind} spec '{spec}': {problem}")?;
                if !accepted.is_empty() {
                    write!(f, "\n  accepted: {accepted}")?;
                }
                Ok(())
            }
            Error::Config(m) | Error::Queue(m) | Error::Core(m) | Error::Unsupported(m) => f.write_str(m),
            Error::Io { what, err, fix } => write!(f, "{what}: {err}: {fix}"),
            Error::Mempool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { err, .. } => Some(err),
            Error::Mempool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<fastpath_mempool::Error> for Error {
    fn from(e: fastpath_mempool::Error) -> Self {
        Error::Mempool(e)
    }
}

/// The port forms this crate opens, one per line.
pub const PORT_FORMS: &[&str] =
    &[drivers::null::FORM, drivers::ring::FORM, drivers::pcap::FORM, drivers::tap::FORM, drivers::af_xdp::FORM];

/// Opens a port of one of this crate's drivers from its spec, as port `id`.
///
/// `Ok(None)` when the driver is not one of this crate's (another crate may know it).
pub fn open_port(id: u16, spec: &str, pool: &Mempool) -> Result<Option<Box<dyn Port>>, Error> {
    let mut s = Spec::parse_port(spec)?;
    let port: Box<dyn Port> = match s.name.as_str() {
        "null" => {
            let mut s = s.accepting(drivers::null::FORM);
            let cfg = drivers::null::NullConfig::from_spec(&mut s, pool)?;
            Box::new(drivers::null::NullPort::new(id, pool, cfg))
        }
        "ring" => {
            s = s.accepting(drivers::ring::FORM);
            Box::new(drivers::ring::RingPort::from_spec(id, &mut s, pool)?)
        }
        "pcap" => {
            s = s.accepting(drivers::pcap::FORM);
            Box::new(drivers::pcap::PcapPort::from_spec(id, &mut s, pool)?)
        }
        "af_xdp" => {
            s = s.accepting(drivers::af_xdp::FORM);
            Box::new(drivers::af_xdp::AfXdpPort::from_spec(id, &mut s, pool)?)
        }
        "tap" => {
            s = s.accepting(drivers::tap::FORM);
            Box::new(drivers::tap::TapPort::from_spec(id, &mut s, pool)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(port))
}
