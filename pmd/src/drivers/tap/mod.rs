//! `tap`: a TAP interface over `/dev/net/tun`, the exception path to the kernel stack.
//!
//! `tap:NAME` creates the interface NAME (or attaches to an existing persistent one) with
//! `IFF_TAP | IFF_NO_PI` and brings it up: what fastpath transmits, the kernel receives on NAME,
//! and what the kernel sends out of NAME, fastpath receives. The interface lives as long as the
//! port (unless it was created persistent beforehand, e.g. with `ip tuntap add`).
//!
//! - `queues=N` opens N queues with `IFF_MULTI_QUEUE` (the kernel spreads its flows over them).
//! - `vnet-hdr=on` adds `IFF_VNET_HDR`: each frame carries a virtio-net header that maps to and
//!   from the mbuf's checksum and TSO/USO flags ([`vnet`]). The port then offers TX_IPV4_CKSUM,
//!   TX_TCP/UDP_CKSUM, TX_TCP_TSO and (when the kernel has USO) TX_UDP_TSO, and asks the kernel
//!   (`TUNSETOFFLOAD`) for partially checksummed and GSO frames up to 64 KiB on receive, which
//!   arrive as mbuf chains carrying the matching TX flags, so that forwarding them to a port with
//!   the offload costs nothing and to one without it inserts the software stage. Where the
//!   kernel has GSO over UDP tunnels (Linux 6.17+) the header is the 24-byte tunnel form and the
//!   port also offers TX_VXLAN_TNL_TSO and TX_GENEVE_TNL_TSO: an encapsulated 64 KiB TCP packet
//!   goes to the kernel whole, which segments it only if it must (a VTEP on this host decaps
//!   it as one packet); on receive such frames arrive whole too, as TSO requests inside the
//!   tunnel (`apply_rx_tunnel`), which decap turns into the inner TSO packet.
//!
//! One `read`/`readv` or `writev` per frame: that is what a TAP device offers (DPDK's net_tap
//! works the same way). Receive reads straight into mbufs (the virtio header lands in the
//! headroom), with spare mbufs kept ready for the segments of a large frame. Transmit sends the
//! mbuf's segments with `writev`, never copying the payload.

pub mod vnet;

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use arrayvec::ArrayVec;
use fastpath_mempool::{Batch, Mbuf, Mempool};

use crate::ctx::Ctx;
use crate::port::{Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
use crate::spec::Spec;
use crate::stats::{Counter, PortStats, QueueStats};
use crate::sys::{self, IfReq};
use crate::Error;

use vnet::{VirtioNetHdr, HDR_LEN, PATCH_MAX, TNL_HDR_LEN};

/// `TUN_F_UDP_TUNNEL_GSO` (Linux 6.17+): GSO over UDP tunnels, with the longer header.
const TUN_F_UDP_TUNNEL_GSO: libc::c_uint = 0x80;
/// `TUN_F_UDP_TUNNEL_GSO_CSUM`: the same with the outer UDP checksum.
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_uint = 0x100;

/// The accepted form of a tap port spec.
pub const FORM: &str = "tap:NAME[,vnet-hdr=on][,queues=N]";

/// Largest frame received without GSO (jumbo MTU 9216 plus Ethernet and two VLAN tags).
const MAX_PLAIN_FRAME: usize = 9216 + 22;
/// Largest GSO frame the kernel hands over.
const MAX_GSO_FRAME: usize = 65535 + 22;
/// Segments `writev` takes per frame (header, patched head, rest of the first segment, others).
const MAX_TX_SEGS: usize = 64;
const MAX_IOV: usize = MAX_TX_SEGS + 3;

/// Settings of a tap port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name.
    pub name: String,
    /// Exchange virtio-net headers (checksum and segmentation offloads).
    pub vnet_hdr: bool,
    /// Queue pairs (`IFF_MULTI_QUEUE` when more than one).
    pub queues: u16,
}

impl TapConfig {
    /// Reads `tap:NAME[,vnet-hdr=on][,queues=N]`.
    pub fn from_spec(spec: &mut Spec) -> Result<TapConfig, Error> {
        let Some(name) = spec.positional.clone() else {
            return Err(spec.error("the interface name is missing (tap:NAME)", None));
        };
        sys::check_ifname(&name).map_err(|e| spec.error(&e, None))?;
        let vnet_hdr = spec.take_bool("vnet-hdr")?.unwrap_or(false);
        let queues = spec.take_num("queues", 1u16, 256)?.unwrap_or(1);
        spec.finish(true)?;
        Ok(TapConfig { name, vnet_hdr, queues })
    }
}

/// Counters of what the tap port dropped, by reason (shared with its queues).
#[derive(Debug, Default)]
struct TapCounters {
    rx_oversize: Counter,
    rx_bad_vnet_hdr: Counter,
    tx_bad_offload: Counter,
    tx_too_many_segs: Counter,
}

/// A tap port.
#[derive(Debug)]
pub struct TapPort {
    info: PortInfo,
    pool: Mempool,
    fds: Vec<Option<Arc<OwnedFd>>>,
    /// Bytes of virtio-net header in front of each frame: 0, `HDR_LEN` or `TNL_HDR_LEN`.
    hdr_len: usize,
    rx_max: usize,
    queues: QueueSet,
    counters: Vec<Arc<TapCounters>>,
}

fn tun_err(name: &str, what: &str, e: io::Error) -> Error {
    let fix = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => "creating a TAP interface needs CAP_NET_ADMIN: run as root".into(),
        Some(libc::ENOENT) | Some(libc::ENODEV) => "/dev/net/tun is missing: load the tun module (modprobe tun)".into(),
        Some(libc::EBUSY) => format!("{name} is in use by another process (or queue), or is not a TAP interface"),
        Some(libc::EINVAL) => {
            format!("{name} exists but is not a TAP interface with these flags (single/multi-queue, vnet-hdr)")
        }
        _ => "check the interface name".into(),
    };
    Error::Io { what: format!("tap {name}: {what}"), err: e, fix }
}

/// A TUN ioctl that reads one int through a pointer (TUNSETVNETHDRSZ).
fn ioctl_int(fd: &OwnedFd, req: libc::Ioctl, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the ioctl reads one int through the pointer, which is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, &v as *const libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TUN ioctl that takes its argument by value (TUNSETOFFLOAD).
fn ioctl_val(fd: &OwnedFd, req: libc::Ioctl, v: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the argument is a plain value; no memory is passed.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TapPort {
    /// Opens `tap:NAME[,...]`.
    pub fn from_spec(id: u16, spec: &mut Spec, pool: &Mempool) -> Result<TapPort, Error> {
        let cfg = TapConfig::from_spec(spec)?;
        TapPort::open(id, &cfg, pool)
    }

    /// Creates (or attaches to) the interface and opens its queues.
    pub fn open(id: u16, cfg: &TapConfig, pool: &Mempool) -> Result<TapPort, Error> {
        let name = cfg.name.as_str();
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let mut fds = Vec::new();
        let mut offloads = Offloads::TX_MULTI_SEGS;
        let mut rx_max = MAX_PLAIN_FRAME;
        let mut hdr_len = 0;
        for q in 0..cfg.queues {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open("/dev/net/tun")
                .map_err(|e| tun_err(name, "open /dev/net/tun", e))?;
            let fd = OwnedFd::from(f);
            let mut r = IfReq::new(name).map_err(Error::Config)?;
            r.set_flags(flags as i16);
            sys::ifreq_ioctl(&fd, libc::TUNSETIFF as libc::c_ulong, &mut r)
                .map_err(|e| tun_err(name, &format!("TUNSETIFF (queue {q})"), e))?;
            if cfg.vnet_hdr {
                // Ask for partial checksums and GSO frames; USO and GSO over UDP tunnels (Linux
                // 6.17+, with the longer header) where the kernel has them.
                let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
                let uso = libc::TUN_F_USO4 | libc::TUN_F_USO6;
                let tnl = TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;
                let mut with_uso = false;
                let mut tunnel = false;
                for (u, t) in [(true, true), (false, true), (true, false), (false, false)] {
                    let want = base | if u { uso } else { 0 } | if t { tnl } else { 0 };
                    let r = ioctl_val(&fd, libc::TUNSETOFFLOAD, want as libc::c_ulong);
                    if r.is_ok() {
                        (with_uso, tunnel) = (u, t);
                        break;
                    }
                    if !u && !t {
                        r.map_err(|e| tun_err(name, "TUNSETOFFLOAD", e))?;
                    }
                }
                // The kernel reads and writes the tunnel fields when the header is long enough.
                hdr_len = if tunnel { TNL_HDR_LEN } else { HDR_LEN };
                ioctl_int(&fd, libc::TUNSETVNETHDRSZ, hdr_len as libc::c_int)
                    .map_err(|e| tun_err(name, "TUNSETVNETHDRSZ", e))?;
                offloads = Offloads::TX_MULTI_SEGS
                    | Offloads::TX_IPV4_CKSUM
                    | Offloads::TX_TCP_CKSUM
                    | Offloads::TX_UDP_CKSUM
                    | Offloads::TX_TCP_TSO
                    | Offloads::TX_OUTER_IPV4_CKSUM
                    | Offloads::RX_LRO;
                if with_uso {
                    offloads |= Offloads::TX_UDP_TSO;
                }
                if tunnel {
                    offloads |= Offloads::TX_VXLAN_TNL_TSO | Offloads::TX_GENEVE_TNL_TSO;
                }
                rx_max = MAX_GSO_FRAME;
            }
            fds.push(Some(Arc::new(fd)));
        }
        if let Err(e) = sys::set_up(name) {
            return Err(tun_err(name, "set the interface up", e));
        }
        let mac = sys::mac_of(name).ok();
        log::info!(
            "tap {name}: {} queue(s){}, offloads {offloads:?}",
            cfg.queues,
            match hdr_len {
                0 => "",
                TNL_HDR_LEN => ", virtio-net header with the UDP tunnel fields",
                _ => ", virtio-net header",
            }
        );
        Ok(TapPort {
            info: PortInfo {
                id,
                driver: "tap",
                name: name.to_string(),
                rx_queues: cfg.queues,
                tx_queues: cfg.queues,
                offloads,
                live: None,
                max_frame: rx_max as u32,
                mac,
            },
            pool: pool.clone(),
            fds,
            hdr_len,
            rx_max,
            queues: QueueSet::new(name, cfg.queues, cfg.queues),
            counters: (0..cfg.queues).map(|_| Arc::default()).collect(),
        })
    }

    fn fd(&self, q: u16) -> Result<Arc<OwnedFd>, Error> {
        self.fds
            .get(q as usize)
            .and_then(|f| f.clone())
            .ok_or_else(|| Error::Queue(format!("tap {}: queue {q} does not exist", self.info.name)))
    }
}

impl Port for TapPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        let seg_room = self.pool.data_room();
        let hdr = self.hdr_len;
        let segs = (self.rx_max + hdr).div_ceil(seg_room).clamp(1, MAX_TX_SEGS);
        Ok(Box::new(TapRx {
            fd: self.fd(q)?,
            pool: self.pool.clone(),
            port: self.info.id,
            queue: q,
            hdr_len: self.hdr_len,
            spare: ArrayVec::new(),
            segs,
            counters: self.counters[q as usize].clone(),
            stats,
        }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        let stats = self.queues.take_tx(q)?;
        Ok(Box::new(TapTx {
            fd: self.fd(q)?,
            hdr_len: self.hdr_len,
            sent: Batch::new(),
            counters: self.counters[q as usize].clone(),
            stats,
        }))
    }

    fn stats(&self) -> PortStats {
        let mut s = self.queues.stats();
        for c in &self.counters {
            s.rx_errors += c.rx_oversize.get() + c.rx_bad_vnet_hdr.get();
            s.tx_errors += c.tx_bad_offload.get() + c.tx_too_many_segs.get();
        }
        s
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let sum = |f: fn(&TapCounters) -> &Counter| self.counters.iter().map(|c| f(c).get()).sum::<u64>();
        vec![
            ("rx_oversize".into(), sum(|c| &c.rx_oversize)),
            ("rx_bad_vnet_hdr".into(), sum(|c| &c.rx_bad_vnet_hdr)),
            ("tx_bad_offload".into(), sum(|c| &c.tx_bad_offload)),
            ("tx_too_many_segs".into(), sum(|c| &c.tx_too_many_segs)),
        ]
    }
}

/// Receive side of a tap queue.
#[derive(Debug)]
pub struct TapRx {
    fd: Arc<OwnedFd>,
    pool: Mempool,
    port: u16,
    queue: u16,
    hdr_len: usize,
    /// Mbufs ready to read into: the last one is the head of the next frame, the others its
    /// further segments (taken from the end).
    spare: ArrayVec<Mbuf, MAX_TX_SEGS>,
    segs: usize,
    counters: Arc<TapCounters>,
    stats: Arc<QueueStats>,
}

impl TapRx {
    /// Reads one frame. `Ok(None)`: nothing waiting (or no mbufs); `Err`: a frame was read and
    /// dropped (counted).
    fn read_one(&mut self, ctx: &mut Ctx) -> Result<Option<Mbuf>, ()> {
        if self.spare.len() < self.segs {
            let cache = ctx.cache(&self.pool);
            while self.spare.len() < self.segs {
                match cache.alloc() {
                    Some(m) => self.spare.push(m),
                    // The pool is empty: leave the frames in the kernel's queue for now.
                    None => return Ok(None),
                }
            }
        }
        let hdr = self.hdr_len;
        let mut iov: ArrayVec<libc::iovec, MAX_TX_SEGS> = ArrayVec::new();
        let mut cap = 0usize;
        // The head (the last spare) gets the header in its headroom, the frame at data_off.
        for (i, m) in self.spare.iter_mut().rev().enumerate() {
            let room = m.room_mut();
            let (base, len) = if i == 0 {
                // SAFETY: data_off >= HEADROOM (256) > hdr in a fresh mbuf, so the header bytes
                // lie in this chunk's own headroom.
                (unsafe { room.as_mut_ptr().sub(hdr) }, room.len() + hdr)
            } else {
                (room.as_mut_ptr(), room.len())
            };
            iov.push(libc::iovec { iov_base: base.cast(), iov_len: len });
            cap += len;
        }
        // SAFETY: every iovec points into the room of an mbuf we own (and its headroom), valid
        // and unaliased for the call.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::EINTR) {
                self.stats.errors.inc();
            }
            return Ok(None);
        }
        let n = n as usize;
        if n < hdr || n > cap {
            // Shorter than the header, or truncated (the kernel reports the full length).
            self.counters.rx_oversize.inc();
            return Err(());
        }
        let total = n - hdr;
        let Some(mut head) = self.spare.pop() else { return Ok(None) };
        let head_room = head.tailroom();
        head.set_len(total.min(head_room));
        let mut left = total.saturating_sub(head_room);
        while left > 0 {
            let Some(mut s) = self.spare.pop() else { break };
            let take = left.min(s.tailroom());
            s.set_len(take);
            left -= take;
            if let Err(s) = head.chain(s) {
                drop(s);
                break;
            }
        }
        if hdr > 0 {
            let mut hb = [0u8; TNL_HDR_LEN];
            if let Some(front) = head.prepend(hdr) {
                hb[..hdr].copy_from_slice(front);
            }
            head.adj(hdr);
            let h = VirtioNetHdr::parse_short(hb[..HDR_LEN].try_into().unwrap_or(&[0; HDR_LEN]));
            let r = if h.gso_type & (vnet::GSO_UDP_TUNNEL_IPV4 | vnet::GSO_UDP_TUNNEL_IPV6) != 0 {
                // GSO over a UDP tunnel: the offsets are in the long header's last four bytes
                // (zero with the short header, which the mapping refuses).
                let th = u16::from_le_bytes([hb[20], hb[21]]) as usize;
                let nh = u16::from_le_bytes([hb[22], hb[23]]) as usize;
                vnet::apply_rx_tunnel(&h, th, nh, &mut head)
            } else {
                vnet::apply_rx(&h, &mut head)
            };
            if r.is_err() {
                self.counters.rx_bad_vnet_hdr.inc();
                ctx.free(head);
                return Err(());
            }
        }
        head.set_port(self.port);
        head.set_queue(self.queue);
        Ok(Some(head))
    }
}

impl RxQueue for TapRx {
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let mut n = 0;
        let mut bytes = 0u64;
        while n < max && batch.remaining_capacity() > 0 {
            match self.read_one(ctx) {
                Ok(Some(m)) => {
                    bytes += m.pkt_len() as u64;
                    // Room was checked in the loop condition.
                    let _ = batch.push(m);
                    n += 1;
                }
                Ok(None) => break,
                Err(()) => {}
            }
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

    fn queue_id(&self) -> u16 {
        self.queue
    }
}

/// Transmit side of a tap queue.
#[derive(Debug)]
pub struct TapTx {
    fd: Arc<OwnedFd>,
    hdr_len: usize,
    sent: Batch,
    counters: Arc<TapCounters>,
    stats: Arc<QueueStats>,
}

enum TxOutcome {
    Sent,
    /// The kernel takes no more now (EAGAIN, or the interface is down): stop, keep the rest.
    Stop,
    /// This frame cannot be sent (counted); drop it and go on.
    Drop,
}

impl TapTx {
    fn write_one(&mut self, m: &Mbuf) -> TxOutcome {
        let mut hbytes = [0u8; TNL_HDR_LEN];
        let mut head = [0u8; PATCH_MAX];
        let mut iov: ArrayVec<libc::iovec, MAX_IOV> = ArrayVec::new();
        let mut skip = 0;
        if self.hdr_len > 0 {
            let plan = match vnet::tx_plan(m, self.hdr_len >= TNL_HDR_LEN) {
                Ok(p) => p,
                Err(_) => {
                    self.counters.tx_bad_offload.inc();
                    return TxOutcome::Drop;
                }
            };
            hbytes.copy_from_slice(&plan.emit(self.hdr_len));
            iov.push(libc::iovec { iov_base: hbytes.as_mut_ptr().cast(), iov_len: self.hdr_len });
            if plan.patch_len > 0 {
                let h = &mut head[..plan.patch_len];
                h.copy_from_slice(&m.data()[..plan.patch_len]);
                vnet::apply_patches(&plan, h);
                iov.push(libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: plan.patch_len });
                skip = plan.patch_len;
            }
        }
        if m.nb_segs() > MAX_TX_SEGS {
            self.counters.tx_too_many_segs.inc();
            return TxOutcome::Drop;
        }
        for (i, s) in m.segments().enumerate() {
            let s = if i == 0 { &s[skip..] } else { s };
            if !s.is_empty() {
                // writev only reads through the pointer.
                iov.push(libc::iovec { iov_base: s.as_ptr() as *mut libc::c_void, iov_len: s.len() });
            }
        }
        // SAFETY: every iovec points into memory that lives across the call (the stack copies
        // above, or the segments of `m`, which we borrow); writev only reads it.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n >= 0 {
            return TxOutcome::Sent;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOBUFS) => TxOutcome::Stop,
            Some(libc::EIO) => {
                // The interface is down: nothing goes through; the caller counts the drops.
                TxOutcome::Stop
            }
            _ => {
                self.stats.errors.inc();
                TxOutcome::Drop
            }
        }
    }
}

impl TxQueue for TapTx {
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        let mut sent = 0u64;
        let mut bytes = 0u64;
        let mut dropped = 0u64;
        let mut i = 0;
        while i < batch.len() {
            match self.write_one(&batch[i]) {
                TxOutcome::Sent => {
                    sent += 1;
                    bytes += batch[i].pkt_len() as u64;
                    i += 1;
                }
                TxOutcome::Drop => {
                    dropped += 1;
                    i += 1;
                }
                TxOutcome::Stop => break,
            }
        }
        // Written and refused frames (the front) are done; the rest stay with the caller.
        for m in batch.drain_front(i) {
            // The scratch batch has MAX_BURST room, as many as `batch` holds.
            let _ = self.sent.push(m);
        }
        ctx.free_batch(&mut self.sent);
        self.stats.packets.add(sent);
        self.stats.bytes.add(bytes);
        self.stats.drops.add(dropped);
        sent as usize
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}
