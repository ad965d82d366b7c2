//! fastpath's vhost-user backend: a virtio-net device served to QEMU and DPDK virtio-user over a
//! unix socket, as the `vhost-user:PATH[,client][,queues=N][,reconnect=SECS]` port.
//!
//! - [`mem`]: the guest memory table (the one place that forms pointers into guest memory).
//! - [`ring`]: the split virtqueue layout and raw ring access.
//! - [`packed`]: the packed virtqueue (RING_PACKED): layout, ring access and its data path.
//! - [`queue`]: the poll-mode data path (dequeue: guest TX -> mbufs, enqueue: mbufs -> guest RX)
//!   with the hostile-guest checks, drops per reason and guest errors that stop one queue.
//! - [`net`]: virtio-net features and the header <-> mbuf offload mapping.
//! - [`shared`]: lock-free hand-over of vring configurations from the control thread to the lcore.
//! - [`device`]: the vhost-user messages (through rust-vmm's `vhost` crate) applied to our vrings.
//! - [`conn`]: the control thread (server / client mode, reconnect, message deadlines, kick
//!   counting).
//! - [`fds`]: checks of the fds a frontend hands us (eventfds only; shared-memory files only).
//! - [`call`]: calling the guest without ever blocking the lcore, and the watchdog behind it.
//! - [`sigbus`]: surviving a frontend that truncates its memory file under us.
//! - [`port`]: the [`fastpath_pmd::Port`] over all of it.
//!
//! ```
//! use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
//!
//! let pool = Mempool::new("example", &PoolConfig { mbufs: 1024, chunk_size: 2048, pages: PagePolicy::Small })?;
//! let dir = std::env::temp_dir().join(format!("fastpath-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let spec = format!("vhost-user:{}", dir.join("vm1.sock").display());
//! // We listen on the socket; a QEMU or DPDK virtio-user frontend connects when it starts.
//! let port = fastpath_vhost_user::open_port(0, &spec, &pool)?.expect("a vhost-user spec");
//! assert_eq!(port.info().driver, "vhost-user");
//! assert!(fastpath_vhost_user::open_port(1, "null", &pool)?.is_none(), "another driver's spec");
//! # drop(port);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod call;
pub mod conn;
pub mod device;
pub mod fds;
pub mod mem;
pub mod net;
pub mod packed;
pub mod port;
pub mod queue;
pub mod ring;
pub mod shared;
pub mod sigbus;
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;

pub use port::{VhostUserConfig, VhostUserPort, FORM};

use fastpath_mempool::Mempool;
use fastpath_pmd::{Error, Port, Spec};

/// Opens `spec` as port `id` when it names the `vhost-user` driver; `Ok(None)` otherwise.
pub fn open_port(id: u16, spec: &str, pool: &Mempool) -> Result<Option<Box<dyn Port>>, Error> {
    let s = Spec::parse_port(spec)?;
    if s.name != "vhost-user" {
        return Ok(None);
    }
    let mut s = s.accepting(FORM);
    Ok(Some(Box::new(VhostUserPort::from_spec(id, &mut s, pool)?)))
}
