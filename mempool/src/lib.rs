//! fastpath's memory layer: regions, pools of mbufs, per-core caches, batches and lock-free rings.
//!
//! - [`Region`]: one anonymous mapping per pool (2 MiB hugepages when the system has them, else
//!   4 KiB pages with `MADV_HUGEPAGE`), usable as an AF_XDP UMEM.
//! - [`Mempool`]: fixed power-of-two chunks (2048 or 4096 bytes) each starting with an
//!   [`MbufHeader`]; [`Mempool::available`] lets tests assert that every mbuf came back.
//! - [`Mbuf`]: the owning handle, with multi-segment chains and reference-counted clones.
//! - [`PoolCache`]: the per-core LIFO cache that the fast path allocates from and frees to.
//! - [`Batch`]: up to [`MAX_BURST`] mbufs inline.
//! - [`Ring`] (MPMC) and [`ring::spsc`] (SPSC, separate producer and consumer types).
//!
//! Unsafe code lives in `region`, `ring`, `mbuf`, `pool` and `batch`; each block says why it is
//! sound.
//!
//! ```
//! use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
//!
//! // A pool of 1024 mbufs of 2 KiB; each lcore allocates and frees through its own cache.
//! let pool = Mempool::new("example", &PoolConfig { mbufs: 1024, chunk_size: 2048, pages: PagePolicy::Small })?;
//! let mut cache = pool.cache();
//! let mut batch = Batch::new();
//! assert!(cache.alloc_bulk(&mut batch, 32));
//! for m in batch.iter_mut() {
//!     assert!(m.set_len(64));
//!     m.data_mut()[..6].copy_from_slice(&[0xff; 6]);
//! }
//! cache.free_batch(&mut batch);
//! drop(cache);
//! assert_eq!(pool.available(), pool.capacity(), "every mbuf came back");
//! # Ok::<(), fastpath_mempool::Error>(())
//! ```
#![deny(missing_docs)]

pub mod batch;
pub mod mbuf;
pub mod offload;
pub mod pool;
pub mod region;
pub mod ring;

pub use batch::{Batch, DEFAULT_BURST, MAX_BURST};
pub use mbuf::{prefetch0, Mbuf, MbufHeader, HEADROOM, MBUF_HDR_SIZE, PORT_NONE};
pub use pool::{copy_metadata, Mempool, PoolCache, PoolConfig};
pub use region::{PageKind, PagePolicy, Region, RegionSlice, Zeroable};
pub use ring::Ring;

use std::fmt;

/// Errors of the memory layer (control path only).
#[derive(Debug)]
pub enum Error {
    /// A bad setting; the message names it and the accepted values.
    Config(String),
    /// A system call failed.
    Os {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
        /// What to do about it.
        fix: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => f.write_str(m),
            Error::Os { what, err, fix } => write!(f, "{what} failed: {err}: {fix}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { err, .. } => Some(err),
            Error::Config(_) => None,
        }
    }
}
