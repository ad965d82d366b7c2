//! One AF_XDP socket per queue on a UMEM that is the pool's region.
//!
//! The first socket of a port registers the UMEM (`XDP_UMEM_REG`): the pool's whole region,
//! chunks of the pool's chunk size, headroom [`MBUF_HDR_SIZE`]. The kernel adds
//! `XDP_PACKET_HEADROOM` (256) to that headroom, so a received frame starts exactly at
//! `chunk + MBUF_HDR_SIZE + HEADROOM`, which is where an mbuf's data starts by default: the
//! descriptor becomes an mbuf without a copy. The other sockets share the UMEM
//! (`XDP_SHARED_UMEM`) with their own fill and completion rings, so every queue is independent.
//!
//! Every chunk handed to the kernel is recorded by the queue that handed it over ([`ChunkSet`]).
//! When a queue closes, its record moves to its socket ([`Xsk::reclaim`]); when the socket closes
//! (after the kernel let go of the UMEM for it), every recorded chunk returns to the pool.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use fastpath_mempool::{Mempool, MBUF_HDR_SIZE};

use super::ring::{ConsRing, ProdRing, XdpDesc};

/// Chunks given to the kernel by one queue: a bitmap by chunk index.
#[derive(Debug, Clone)]
pub struct ChunkSet {
    bits: Vec<u64>,
    count: usize,
}

impl ChunkSet {
    /// An empty set for a pool of `chunks` chunks.
    pub fn new(chunks: usize) -> ChunkSet {
        ChunkSet { bits: vec![0; chunks.div_ceil(64)], count: 0 }
    }

    /// Records chunk `i` (given to the kernel).
    #[inline(always)]
    pub fn insert(&mut self, i: usize) {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if let Some(x) = self.bits.get_mut(w) {
            self.count += (*x & b == 0) as usize;
            *x |= b;
        }
    }

    /// Forgets chunk `i` (the kernel gave it back); false when it was not recorded.
    #[inline(always)]
    pub fn remove(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        match self.bits.get_mut(w) {
            Some(x) if *x & b != 0 => {
                *x &= !b;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    /// Chunks recorded.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Moves every recorded index into `out` and empties the set.
    pub fn drain_into(&mut self, out: &mut Vec<u32>) {
        for (w, x) in self.bits.iter_mut().enumerate() {
            let mut v = *x;
            while v != 0 {
                let b = v.trailing_zeros();
                out.push((w * 64) as u32 + b);
                v &= v - 1;
            }
            *x = 0;
        }
        self.count = 0;
    }
}

/// A bound AF_XDP socket. Closing it (the last `Arc`) returns every chunk its queues left with
/// the kernel to the pool.
#[derive(Debug)]
pub struct Xsk {
    fd: Option<OwnedFd>,
    /// Queue id on the interface.
    pub queue: u32,
    /// True when bound in zero-copy mode.
    pub zerocopy: bool,
    pool: Mempool,
    /// Chunk indexes held by the kernel when the queues closed.
    pub reclaim: Mutex<Vec<u32>>,
}

impl Xsk {
    /// The socket fd.
    pub fn fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// The kernel's `XDP_STATISTICS` for this socket.
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: xdp_statistics is plain integers; zero is a valid value.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: s is valid for writes of `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                &mut s as *mut libc::xdp_statistics as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    /// Asks the kernel to process the tx ring (`sendto` with no data).
    #[inline]
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length send with null buffers is the documented AF_XDP wakeup.
        let r = unsafe { libc::sendto(self.fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // Busy, full or retried later: not errors for a poll-mode driver.
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(()),
                _ => Err(e),
            };
        }
        Ok(())
    }

    /// Asks the kernel to process the fill ring / drive rx (`recvfrom` with no data).
    #[inline]
    pub fn kick_rx(&self) {
        // SAFETY: a zero-length non-blocking receive with null buffers is the documented wakeup.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // Close first: once the socket is released the kernel no longer touches the chunks.
        drop(self.fd.take());
        let v = std::mem::take(self.reclaim.get_mut().unwrap_or_else(|e| e.into_inner()));
        let cs = self.pool.chunk_size();
        for i in v {
            // Soundness: each index was recorded when its chunk (taken from this pool) was handed to the kernel
            // and removed when it came back; the socket is closed, so these chunks are ours again. Dropping the handle
            // returns the chunk to the pool.
            // SAFETY: each recorded chunk is this pool's and, the socket closed, ours again.
            drop(unsafe { self.pool.mbuf_at(i as usize * cs) });
        }
    }
}

/// The rings of one socket, before they are split between its rx and tx queues.
#[derive(Debug)]
pub struct Rings {
    /// Receive descriptors (kernel -> us).
    pub rx: ConsRing<XdpDesc>,
    /// Fill ring (us -> kernel: chunks to receive into).
    pub fill: ProdRing<u64>,
    /// Transmit descriptors (us -> kernel).
    pub tx: ProdRing<XdpDesc>,
    /// Completion ring (kernel -> us: transmitted chunks).
    pub comp: ConsRing<u64>,
}

/// How to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`.
    Copy,
    /// `XDP_ZEROCOPY`.
    ZeroCopy,
    /// No flag: the kernel takes zero-copy when the driver has it, else copy.
    Auto,
}

/// Why opening a socket failed: the step and the OS error.
#[derive(Debug)]
pub struct XskError {
    /// The step (`socket(AF_XDP)`, `bind`, ...).
    pub step: &'static str,
    /// The OS error.
    pub err: io::Error,
}

fn step<T>(step: &'static str, r: io::Result<T>) -> Result<T, XskError> {
    r.map_err(|err| XskError { step, err })
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: v is a valid T for the call; the kernel reads size_of::<T>() bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates an AF_XDP socket (no rings yet).
pub fn socket() -> Result<OwnedFd, XskError> {
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(XskError { step: "socket(AF_XDP)", err: io::Error::last_os_error() });
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Settings of one socket.
#[derive(Debug, Clone, Copy)]
pub struct XskParams {
    /// Interface index.
    pub ifindex: u32,
    /// Queue id.
    pub queue: u32,
    /// Entries of each ring.
    pub ring_size: u32,
    /// Bind flags wanted.
    pub bind: BindMode,
    /// Busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`).
    pub busy_poll: Option<u32>,
}

/// Opens, configures and binds a socket on `p.queue`. `shared`: the fd of the port's first
/// socket, whose UMEM this one shares; `None` registers the pool's region as a new UMEM.
pub fn open(pool: &Mempool, p: &XskParams, shared: Option<i32>) -> Result<(Xsk, Rings), XskError> {
    let fd = socket()?;
    if shared.is_none() {
        let reg = libc::xdp_umem_reg {
            addr: pool.region().base() as u64,
            len: pool.region().len() as u64,
            chunk_size: pool.chunk_size() as u32,
            headroom: MBUF_HDR_SIZE as u32,
            flags: 0,
            tx_metadata_len: 0,
        };
        step("setsockopt(XDP_UMEM_REG)", setsockopt(&fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg))?;
    }
    let size = p.ring_size as libc::c_int;
    for (opt, what) in [
        (libc::XDP_UMEM_FILL_RING, "setsockopt(XDP_UMEM_FILL_RING)"),
        (libc::XDP_UMEM_COMPLETION_RING, "setsockopt(XDP_UMEM_COMPLETION_RING)"),
        (libc::XDP_RX_RING, "setsockopt(XDP_RX_RING)"),
        (libc::XDP_TX_RING, "setsockopt(XDP_TX_RING)"),
    ] {
        step(what, setsockopt(&fd, libc::SOL_XDP, opt, &size))?;
    }
    if let Some(budget) = p.busy_poll {
        let one: libc::c_int = 1;
        let usecs: libc::c_int = 20;
        let budget = budget as libc::c_int;
        step("setsockopt(SO_PREFER_BUSY_POLL)", setsockopt(&fd, libc::SOL_SOCKET, 69, &one))?;
        step("setsockopt(SO_BUSY_POLL)", setsockopt(&fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, &usecs))?;
        step("setsockopt(SO_BUSY_POLL_BUDGET)", setsockopt(&fd, libc::SOL_SOCKET, 70, &budget))?;
    }
    // SAFETY: xdp_mmap_offsets is plain integers; zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: off is valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            &mut off as *mut libc::xdp_mmap_offsets as *mut libc::c_void,
            &mut len,
        )
    };
    step("getsockopt(XDP_MMAP_OFFSETS)", if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) })?;
    if (len as usize) < std::mem::size_of::<libc::xdp_mmap_offsets>() {
        return Err(XskError {
            step: "getsockopt(XDP_MMAP_OFFSETS)",
            err: io::Error::new(io::ErrorKind::Unsupported, "kernel without need_wakeup (Linux 5.4+ needed)"),
        });
    }
    let b = fd.as_fd();
    let rings = Rings {
        rx: step("mmap(rx ring)", ConsRing::new(b, libc::XDP_PGOFF_RX_RING as u64, &off.rx, p.ring_size))?,
        fill: step("mmap(fill ring)", ProdRing::new(b, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, p.ring_size))?,
        tx: step("mmap(tx ring)", ProdRing::new(b, libc::XDP_PGOFF_TX_RING as u64, &off.tx, p.ring_size))?,
        comp: step(
            "mmap(completion ring)",
            ConsRing::new(b, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, p.ring_size),
        )?,
    };
    // SAFETY: a zeroed sockaddr_xdp is valid; the fields bind needs are set below.
    let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
    sa.sxdp_family = libc::AF_XDP as u16;
    sa.sxdp_ifindex = p.ifindex;
    sa.sxdp_queue_id = p.queue;
    match shared {
        // Shared sockets inherit copy/zero-copy and need_wakeup from the first one.
        Some(first) => {
            sa.sxdp_flags = libc::XDP_SHARED_UMEM;
            sa.sxdp_shared_umem_fd = first as u32;
        }
        None => {
            sa.sxdp_flags = libc::XDP_USE_NEED_WAKEUP
                | match p.bind {
                    BindMode::Copy => libc::XDP_COPY,
                    BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                    BindMode::Auto => 0,
                };
        }
    }
    // SAFETY: sa is a valid sockaddr_xdp for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_xdp as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    step("bind", if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) })?;
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: opts is valid for writes of `len` bytes. A kernel without XDP_OPTIONS (before
    // 5.3) leaves it 0: copy mode, which is all such kernels do on most drivers.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            &mut opts as *mut libc::xdp_options as *mut libc::c_void,
            &mut len,
        )
    };
    let xsk = Xsk {
        fd: Some(fd),
        queue: p.queue,
        zerocopy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
        pool: pool.clone(),
        reclaim: Mutex::new(Vec::new()),
    };
    Ok((xsk, rings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_set_records_and_drains() {
        let mut s = ChunkSet::new(130);
        s.insert(0);
        s.insert(64);
        s.insert(129);
        s.insert(64);
        assert_eq!(s.len(), 3);
        assert!(s.remove(64));
        assert!(!s.remove(64));
        assert!(!s.remove(1000));
        let mut v = Vec::new();
        s.drain_into(&mut v);
        assert_eq!(v, vec![0, 129]);
        assert!(s.is_empty());
    }
}
