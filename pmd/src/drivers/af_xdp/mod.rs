//! `af_xdp`: a poll-mode driver over AF_XDP sockets, in Rust over libc (no libbpf, no libxdp).
//!
//! `af_xdp:IFACE[,queues=N][,start-queue=Q][,mode=native|skb|auto][,bind=copy|zerocopy|auto]
//! [,busy-poll=on][,ring-size=N][,replace=on][,attach=link|netlink]`
//!
//! - [`bpf`]: the XSKMAP and the 6-instruction redirect program (redirect to the socket of the
//!   frame's rx queue, `XDP_PASS` when that queue has none), loaded with bpf(2) and attached with a
//!   bpf link, so that nothing is left on the interface when the process exits or is killed.
//! - [`netlink`]: which program an interface already has, and the `RTM_SETLINK` attach used only
//!   as a fallback (kernels without XDP links, or `attach=netlink`), detached when the port closes.
//! - [`xsk`]: one socket per queue; the first registers the pool's region as the UMEM, the others
//!   share it with their own fill and completion rings.
//! - [`ring`]: the fill / completion / rx / tx rings, their memory ordering documented at each
//!   access, need_wakeup honoured.
//! - [`queue`]: the zero-copy receive and transmit paths.
//!
//! `auto` modes try native then skb, zero-copy then copy, and say in one log line (info) what
//! was chosen and why. An interface that already has an XDP program is refused unless
//! `replace=on` (which detaches a netlink-attached program; one held by another process's bpf
//! link cannot be taken over). Kernel statistics (`XDP_STATISTICS`) appear in the port's xstats,
//! and the kernel's drops (`rx_dropped`, `rx_ring_full`) in its rx drops.

pub mod bpf;
pub mod netlink;
pub mod queue;
pub mod ring;
pub mod xsk;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool};

use crate::port::{Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
use crate::spec::Spec;
use crate::stats::PortStats;
use crate::sys;
use crate::Error;

use queue::{XdpQueueCounters, XskRx, XskTx};
use ring::{ConsRing, ProdRing, XdpDesc};
use xsk::{BindMode, ChunkSet, Xsk, XskError, XskParams};

/// The accepted form of an af_xdp port spec.
pub const FORM: &str = "af_xdp:IFACE[,queues=N][,start-queue=Q][,mode=native|skb|auto][,bind=copy|zerocopy|auto]\
[,busy-poll=on][,ring-size=N][,replace=on][,attach=link|netlink]";

/// Which XDP mode to attach in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver (native) mode.
    Native,
    /// Generic (skb) mode: every driver has it.
    Skb,
    /// Native, else skb.
    Auto,
}

/// How to attach the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachVia {
    /// A bpf link; netlink when the kernel has no XDP links.
    Auto,
    /// A bpf link only.
    Link,
    /// Netlink only (the program stays if the process is killed).
    Netlink,
}

/// Settings of an af_xdp port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface name.
    pub iface: String,
    /// Queues used (one socket each).
    pub queues: u16,
    /// First queue id.
    pub start_queue: u32,
    /// XDP mode.
    pub mode: XdpMode,
    /// Bind mode.
    pub bind: BindMode,
    /// Busy polling on the sockets.
    pub busy_poll: bool,
    /// Entries of each ring (power of two).
    pub ring_size: u32,
    /// Take over an interface that already has an XDP program.
    pub replace: bool,
    /// How to attach.
    pub attach: AttachVia,
}

impl AfXdpConfig {
    /// Defaults for interface `iface`: one queue from 0, auto modes, 2048-entry rings.
    pub fn new(iface: &str) -> AfXdpConfig {
        AfXdpConfig {
            iface: iface.to_string(),
            queues: 1,
            start_queue: 0,
            mode: XdpMode::Auto,
            bind: BindMode::Auto,
            busy_poll: false,
            ring_size: 2048,
            replace: false,
            attach: AttachVia::Auto,
        }
    }

    /// Reads an `af_xdp:` spec.
    pub fn from_spec(spec: &mut Spec) -> Result<AfXdpConfig, Error> {
        let Some(iface) = spec.positional.clone() else {
            return Err(spec.error("the interface name is missing (af_xdp:IFACE)", None));
        };
        sys::check_ifname(&iface).map_err(|e| spec.error(&e, None))?;
        let mut c = AfXdpConfig::new(&iface);
        c.queues = spec.take_num("queues", 1u16, 256)?.unwrap_or(1);
        c.start_queue = spec.take_num("start-queue", 0u32, 4095)?.unwrap_or(0);
        c.mode = match spec.take_choice("mode", &["native", "skb", "auto"])? {
            Some("native") => XdpMode::Native,
            Some("skb") => XdpMode::Skb,
            _ => XdpMode::Auto,
        };
        c.bind = match spec.take_choice("bind", &["copy", "zerocopy", "auto"])? {
            Some("copy") => BindMode::Copy,
            Some("zerocopy") => BindMode::ZeroCopy,
            _ => BindMode::Auto,
        };
        c.busy_poll = spec.take_bool("busy-poll")?.unwrap_or(false);
        c.ring_size = spec.take_num("ring-size", 64u32, 16384)?.unwrap_or(2048);
        if !c.ring_size.is_power_of_two() {
            return Err(spec.error(&format!("ring-size={} is not a power of two", c.ring_size), None));
        }
        c.replace = spec.take_bool("replace")?.unwrap_or(false);
        c.attach = match spec.take_choice("attach", &["link", "netlink"])? {
            Some("link") => AttachVia::Link,
            Some("netlink") => AttachVia::Netlink,
            _ => AttachVia::Auto,
        };
        spec.finish(true)?;
        Ok(c)
    }
}

/// What every queue of a port keeps alive: the program, its map and its attachment. Dropping
/// the last reference detaches the program (closing the link, or by netlink).
#[derive(Debug)]
pub struct Shared {
    ifname: String,
    ifindex: u32,
    prog: OwnedFd,
    _map: OwnedFd,
    _link: Option<OwnedFd>,
    netlink_flags: Option<u32>,
    /// The program's id (as `ip link` shows it).
    pub prog_id: u32,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(flags) = self.netlink_flags {
            // Only if ours is still the one attached (XDP_FLAGS_REPLACE with our fd).
            if let Err(e) = netlink::set_xdp(self.ifindex, -1, flags, Some(self.prog.as_raw_fd())) {
                log::warn!("af_xdp {}: detaching the XDP program failed: {e}", self.ifname);
            }
        }
    }
}

/// A receive queue's rings and the chunks already in its fill ring, until an lcore takes it.
#[derive(Debug)]
struct RxParts {
    rx: ConsRing<XdpDesc>,
    fill: ProdRing<u64>,
    owned: ChunkSet,
}

type TxParts = (ProdRing<XdpDesc>, ConsRing<u64>);

/// An af_xdp port.
#[derive(Debug)]
pub struct AfXdpPort {
    info: PortInfo,
    cfg: AfXdpConfig,
    pool: Mempool,
    shared: Arc<Shared>,
    parts: Parts,
    counters: Vec<Arc<XdpQueueCounters>>,
    queues: QueueSet,
}

const ROOT_FIX: &str = "AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF: run as root";

/// The rx queues the interface has (`ethtool -l` shows them as channels).
fn rx_queue_count(iface: &str, ifindex: u32) -> Option<u32> {
    if let Ok(d) = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")) {
        let n = d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count();
        if n > 0 {
            return Some(n as u32);
        }
    }
    netlink::link_info(ifindex).ok().map(|i| i.num_rx_queues).filter(|&n| n > 0)
}

/// Opens a socket, retrying for up to a second while the queue is busy: the kernel releases a
/// closed socket's hold on its queue in deferred work, so a port reopened right after another
/// (or after the previous process exited) can find it still taken for a few milliseconds.
fn open_retrying(pool: &Mempool, p: &XskParams, shared: Option<i32>) -> Result<(Xsk, xsk::Rings), XskError> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match xsk::open(pool, p, shared) {
            Err(e)
                if e.step == "bind" && e.err.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < end =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn xsk_error(cfg: &AfXdpConfig, e: XskError) -> Error {
    let iface = &cfg.iface;
    let code = e.err.raw_os_error();
    let fix = match (e.step, code) {
        (_, Some(libc::EPERM) | Some(libc::EACCES)) => ROOT_FIX.to_string(),
        ("socket(AF_XDP)", Some(libc::EAFNOSUPPORT)) => {
            "AF_XDP is missing from this kernel: it needs CONFIG_XDP_SOCKETS=y (Linux 5.4 or later)".into()
        }
        ("bind", Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT)) if cfg.bind == BindMode::ZeroCopy => format!(
            "zero-copy is not supported by the driver of {iface} (veth and most virtual interfaces only copy): \
             use bind=copy or bind=auto"
        ),
        ("bind", Some(libc::EBUSY)) => format!(
            "a queue of {iface} is already used by another AF_XDP socket (another process?): stop it or use other \
             queues (start-queue=)"
        ),
        ("bind", Some(libc::EINVAL)) => format!(
            "the kernel refused the queue or the mode on {iface}: check the queue range (ethtool -l {iface}) and \
             bind="
        ),
        (_, Some(libc::ENOMEM) | Some(libc::ENOBUFS)) => {
            "the kernel could not pin the UMEM: raise the locked-memory limit (ulimit -l) or lower --mbufs".into()
        }
        _ => format!("AF_XDP setup on {iface} failed"),
    };
    Error::Io { what: format!("af_xdp {iface}: {}", e.step), err: e.err, fix }
}

fn bpf_error(iface: &str, what: &str, e: io::Error, detail: &str) -> Error {
    let fix = if sys::is_perm(&e) {
        ROOT_FIX.to_string()
    } else if detail.is_empty() {
        format!("loading XDP for {iface} failed")
    } else {
        format!("the kernel said: {detail}")
    };
    Error::Io { what: format!("af_xdp {iface}: {what}"), err: e, fix }
}

impl AfXdpPort {
    /// Opens `af_xdp:IFACE[,...]`.
    pub fn from_spec(id: u16, spec: &mut Spec, pool: &Mempool) -> Result<AfXdpPort, Error> {
        let cfg = AfXdpConfig::from_spec(spec)?;
        AfXdpPort::open(id, &cfg, pool)
    }

    /// Binds the sockets, loads and attaches the program.
    pub fn open(id: u16, cfg: &AfXdpConfig, pool: &Mempool) -> Result<AfXdpPort, Error> {
        let iface = cfg.iface.as_str();
        let Some(ifindex) = sys::if_index(iface) else {
            return Err(Error::Config(format!(
                "af_xdp: there is no interface named '{iface}' in this network namespace (ip link show lists them)"
            )));
        };
        let nq = rx_queue_count(iface, ifindex);
        let last = cfg.start_queue + cfg.queues as u32;
        if let Some(n) = nq {
            if last > n {
                return Err(Error::Config(format!(
                    "af_xdp {iface}: queues {}..={} asked, but the interface has {n} rx queue(s) (ethtool -l {iface}): \
                     lower queues=/start-queue=, or raise its channels (ethtool -L {iface} combined N)",
                    cfg.start_queue,
                    last - 1
                )));
            }
        }
        let held = cfg.queues as usize * 2 * cfg.ring_size as usize;
        if held > pool.capacity() {
            return Err(Error::Config(format!(
                "af_xdp {iface}: {} queue(s) x 2 rings x ring-size {} = {held} mbufs may sit in the kernel, but the pool has \
                 {}: raise --mbufs or lower ring-size=",
                cfg.queues,
                cfg.ring_size,
                pool.capacity()
            )));
        }
        // An interface that already runs an XDP program is not taken over silently.
        let existing = netlink::link_info(ifindex).map_err(|e| Error::Io {
            what: format!("af_xdp {iface}: reading its XDP state (RTM_GETLINK)"),
            fix: format!("check the interface name {}", e.ext),
            err: e.err,
        })?;
        if existing.prog_id != 0 {
            if !cfg.replace {
                return Err(Error::Unsupported(format!(
                    "af_xdp {iface}: the interface already has an XDP program (id {}, {} mode): detach it \
                     (ip link set dev {iface} xdp off) or give replace=on",
                    existing.prog_id,
                    existing.attached.name()
                )));
            }
            let flags = match existing.attached {
                netlink::Attached::Skb => bpf::XDP_FLAGS_SKB_MODE,
                netlink::Attached::Native => bpf::XDP_FLAGS_DRV_MODE,
                _ => 0,
            };
            netlink::set_xdp(ifindex, -1, flags, None).map_err(|e| {
                let fix = if e.errno() == Some(libc::EBUSY) {
                    format!(
                        "the program is held by a bpf link of another process, which cannot be taken over: stop that \
                         process (ip link show {iface} shows the program id)"
                    )
                } else if sys::is_perm(&e.err) {
                    ROOT_FIX.to_string()
                } else {
                    format!("detach it by hand (ip link set dev {iface} xdp off) [{}]", e.ext)
                };
                Error::Io {
                    what: format!("af_xdp {iface}: replacing XDP program {}", existing.prog_id),
                    err: e.err,
                    fix,
                }
            })?;
            log::info!("af_xdp {iface}: detached XDP program {} (replace=on)", existing.prog_id);
        }

        // Sockets: the first registers the UMEM. bind=auto binds without a mode flag: the kernel
        // takes zero-copy when the driver has it and falls back to copy itself (retrying the bind
        // with XDP_COPY after a refused XDP_ZEROCOPY can find the queue still busy).
        let mut notes: Vec<String> = Vec::new();
        let params = XskParams {
            ifindex,
            queue: cfg.start_queue,
            ring_size: cfg.ring_size,
            bind: cfg.bind,
            busy_poll: cfg.busy_poll.then_some(64),
        };
        let first = open_retrying(pool, &params, None).map_err(|e| xsk_error(cfg, e))?;
        if cfg.bind == BindMode::Auto && !first.0.zerocopy {
            notes.push(format!("zero-copy unavailable on {iface}'s driver"));
        }
        let first_fd = first.0.fd();
        let mut opened = vec![first];
        for q in 1..cfg.queues as u32 {
            let p = XskParams { queue: cfg.start_queue + q, ..params };
            opened.push(open_retrying(pool, &p, Some(first_fd)).map_err(|e| xsk_error(cfg, e))?);
        }
        let zerocopy = opened[0].0.zerocopy;
        // Fill rings are full before the program redirects anything to the sockets. From here
        // on `parts` returns those chunks to the pool if anything fails.
        let mut parts = Parts { xsks: Vec::new(), rx: Vec::new(), tx: Vec::new() };
        for (x, r) in opened {
            let mut owned = ChunkSet::new(pool.capacity());
            let mut fill = r.fill;
            queue::prefill(&mut fill, pool, &mut owned, cfg.ring_size as usize);
            parts.xsks.push(Arc::new(x));
            parts.rx.push(Some(RxParts { rx: r.rx, fill, owned }));
            parts.tx.push(Some((r.tx, r.comp)));
        }

        // The map (a slot per rx queue of the interface) and the program.
        let slots = nq.unwrap_or(last).max(last);
        let map = bpf::create_xskmap(slots).map_err(|e| bpf_error(iface, "bpf(BPF_MAP_CREATE, XSKMAP)", e, ""))?;
        for x in &parts.xsks {
            bpf::map_update(&map, x.queue, x.fd() as u32)
                .map_err(|e| bpf_error(iface, "bpf(BPF_MAP_UPDATE_ELEM)", e, ""))?;
        }
        let prog = bpf::load_redirect_program(&map)
            .map_err(|(e, log)| bpf_error(iface, "bpf(BPF_PROG_LOAD, XDP)", e, &log))?;
        let prog_id = bpf::prog_id(&prog).unwrap_or(0);

        // Attach: native then skb for auto; a bpf link, netlink as the fallback.
        let modes: &[(u32, &str)] = match cfg.mode {
            XdpMode::Native => &[(bpf::XDP_FLAGS_DRV_MODE, "native")],
            XdpMode::Skb => &[(bpf::XDP_FLAGS_SKB_MODE, "skb")],
            XdpMode::Auto => &[(bpf::XDP_FLAGS_DRV_MODE, "native"), (bpf::XDP_FLAGS_SKB_MODE, "skb")],
        };
        let mut link = None;
        let mut netlink_flags = None;
        let mut chosen = "";
        let mut last_err: Option<io::Error> = None;
        let mut use_netlink = cfg.attach == AttachVia::Netlink;
        if !use_netlink {
            for &(flags, name) in modes {
                match bpf::link_create(&prog, ifindex, flags) {
                    Ok(l) => {
                        link = Some(l);
                        chosen = name;
                        break;
                    }
                    Err(e) => {
                        if modes.len() > 1 && name == "native" {
                            notes.push(format!("native XDP refused ({e})"));
                        }
                        last_err = Some(e);
                    }
                }
            }
            // Kernels before 5.9 have no XDP links (EINVAL): fall back to netlink.
            if link.is_none()
                && cfg.attach == AttachVia::Auto
                && last_err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL)
            {
                notes.push("no XDP bpf links in this kernel: netlink attach".into());
                use_netlink = true;
                last_err = None;
            }
        }
        if use_netlink {
            for &(flags, name) in modes {
                match netlink::set_xdp(ifindex, prog.as_raw_fd(), flags | netlink::XDP_FLAGS_UPDATE_IF_NOEXIST, None) {
                    Ok(()) => {
                        netlink_flags = Some(flags);
                        chosen = name;
                        break;
                    }
                    Err(e) => {
                        if modes.len() > 1 && name == "native" {
                            notes.push(format!("native XDP refused ({e})"));
                        }
                        last_err = Some(e.err);
                    }
                }
            }
        }
        if chosen.is_empty() {
            let e = last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => ROOT_FIX.to_string(),
                Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
                    "{iface} already has an XDP program (attached meanwhile?): detach it (ip link set dev {iface} xdp off) \
                     or give replace=on"
                ),
                Some(libc::EOPNOTSUPP) if cfg.mode == XdpMode::Native => {
                    format!("the driver of {iface} has no native XDP: use mode=skb or mode=auto")
                }
                _ => format!("attaching XDP to {iface} failed"),
            };
            return Err(Error::Io { what: format!("af_xdp {iface}: attach the XDP program"), err: e, fix });
        }
        let shared = Arc::new(Shared {
            ifname: iface.to_string(),
            ifindex,
            prog,
            _map: map,
            _link: link,
            netlink_flags,
            prog_id,
        });
        log::info!(
            "af_xdp {iface}: queues {}..={}, XDP {chosen} mode via {} (prog id {prog_id}), {} bind, need_wakeup{}{}",
            cfg.start_queue,
            last - 1,
            if netlink_flags.is_some() { "netlink" } else { "bpf link" },
            if zerocopy { "zero-copy" } else { "copy" },
            if cfg.busy_poll { ", busy-poll" } else { "" },
            if notes.is_empty() { String::new() } else { format!(" [{}]", notes.join("; ")) }
        );

        let n = cfg.queues;
        let name = format!("af_xdp:{iface}");
        Ok(AfXdpPort {
            info: PortInfo {
                id,
                driver: "af_xdp",
                name: name.clone(),
                rx_queues: n,
                tx_queues: n,
                offloads: Offloads::NONE,
                live: None,
                max_frame: pool.data_room() as u32,
                mac: sys::mac_of(iface).ok(),
            },
            cfg: cfg.clone(),
            pool: pool.clone(),
            shared,
            parts,
            counters: (0..n).map(|_| Arc::default()).collect(),
            queues: QueueSet::new(&name, n, n),
        })
    }

    /// The attached program's id.
    pub fn prog_id(&self) -> u32 {
        self.shared.prog_id
    }

    /// True when the sockets are bound in zero-copy mode.
    pub fn zerocopy(&self) -> bool {
        self.parts.xsks.first().is_some_and(|x| x.zerocopy)
    }

    fn kernel_stats(&self) -> Vec<libc::xdp_statistics> {
        self.parts
            .xsks
            .iter()
            .map(|x| {
                x.statistics().unwrap_or_else(|_| {
                    // SAFETY: plain integers; zero is valid.
                    unsafe { std::mem::zeroed() }
                })
            })
            .collect()
    }
}

/// The sockets and the rings no lcore has taken yet.
#[derive(Debug)]
struct Parts {
    xsks: Vec<Arc<Xsk>>,
    rx: Vec<Option<RxParts>>,
    tx: Vec<Option<TxParts>>,
}

impl Drop for Parts {
    fn drop(&mut self) {
        // Chunks in the fill rings of queues no lcore took go back when their socket closes.
        for (p, x) in self.rx.iter_mut().zip(&self.xsks) {
            if let Some(p) = p.as_mut() {
                let mut v = Vec::new();
                p.owned.drain_into(&mut v);
                x.reclaim.lock().unwrap_or_else(|e| e.into_inner()).extend(v);
            }
        }
    }
}

/// An xstats name and how to read it from the kernel's statistics.
type KernelField = (&'static str, fn(&libc::xdp_statistics) -> u64);
/// An xstats name and how to read it from our counters.
type OurField = (&'static str, fn(&XdpQueueCounters) -> u64);

impl Port for AfXdpPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        let p = self.parts.rx[q as usize].take().ok_or_else(|| Error::Queue(format!("rx queue {q} taken")))?;
        Ok(Box::new(XskRx {
            xsk: self.parts.xsks[q as usize].clone(),
            _shared: self.shared.clone(),
            rx: p.rx,
            fill: p.fill,
            pool: self.pool.clone(),
            owned: p.owned,
            target: self.cfg.ring_size as usize,
            scratch: Batch::new(),
            port: self.info.id,
            queue: q,
            busy_poll: self.cfg.busy_poll,
            stats,
            counters: self.counters[q as usize].clone(),
        }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        let stats = self.queues.take_tx(q)?;
        let (tx, comp) = self.parts.tx[q as usize].take().ok_or_else(|| Error::Queue(format!("tx queue {q} taken")))?;
        Ok(Box::new(XskTx {
            xsk: self.parts.xsks[q as usize].clone(),
            _shared: self.shared.clone(),
            tx,
            comp,
            pool: self.pool.clone(),
            owned: ChunkSet::new(self.pool.capacity()),
            done: Batch::new(),
            busy_poll: self.cfg.busy_poll,
            stats,
            counters: self.counters[q as usize].clone(),
        }))
    }

    fn stats(&self) -> PortStats {
        let mut s = self.queues.stats();
        for k in self.kernel_stats() {
            s.rx_drops += k.rx_dropped + k.rx_ring_full;
            s.rx_errors += k.rx_invalid_descs;
            s.tx_errors += k.tx_invalid_descs;
        }
        for c in &self.counters {
            s.rx_errors += c.rx_bad_desc.get();
        }
        s
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let ks = self.kernel_stats();
        let mut v = Vec::new();
        let fields: [KernelField; 6] = [
            ("rx_dropped", |k| k.rx_dropped),
            ("rx_invalid_descs", |k| k.rx_invalid_descs),
            ("tx_invalid_descs", |k| k.tx_invalid_descs),
            ("rx_ring_full", |k| k.rx_ring_full),
            ("rx_fill_ring_empty_descs", |k| k.rx_fill_ring_empty_descs),
            ("tx_ring_empty_descs", |k| k.tx_ring_empty_descs),
        ];
        for (name, f) in fields {
            v.push((name.to_string(), ks.iter().map(f).sum()));
        }
        let ours: [OurField; 5] = [
            ("tx_copies", |c| c.tx_copies.get()),
            ("tx_oversize", |c| c.tx_oversize.get()),
            ("wakeups", |c| c.wakeups.get()),
            ("rx_bad_desc", |c| c.rx_bad_desc.get()),
            ("rx_no_mbuf", |c| c.rx_no_mbuf.get()),
        ];
        for (name, f) in ours {
            v.push((name.to_string(), self.counters.iter().map(|c| f(c)).sum()));
        }
        if ks.len() > 1 {
            for (i, k) in ks.iter().enumerate() {
                let q = self.cfg.start_queue as usize + i;
                for (name, f) in fields {
                    v.push((format!("q{q}_{name}"), f(k)));
                }
            }
        }
        v.push(("zerocopy".into(), self.zerocopy() as u64));
        v.push(("xdp_prog_id".into(), self.shared.prog_id as u64));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(step: &'static str, errno: i32, bind: BindMode) -> String {
        let mut cfg = AfXdpConfig::new("eth9");
        cfg.bind = bind;
        xsk_error(&cfg, XskError { step, err: io::Error::from_raw_os_error(errno) }).to_string()
    }

    /// The messages of failures a test machine cannot produce for real (AF_XDP compiled out).
    #[test]
    fn socket_errors_name_the_cause_and_the_fix() {
        let e = err("socket(AF_XDP)", libc::EAFNOSUPPORT, BindMode::Auto);
        assert!(e.contains("AF_XDP is missing from this kernel") && e.contains("CONFIG_XDP_SOCKETS=y"), "{e}");
        let e = err("socket(AF_XDP)", libc::EPERM, BindMode::Auto);
        assert!(e.contains("run as root"), "{e}");
        let e = err("bind", libc::EOPNOTSUPP, BindMode::ZeroCopy);
        assert!(e.contains("zero-copy is not supported by the driver of eth9"), "{e}");
        let e = err("bind", libc::EBUSY, BindMode::Copy);
        assert!(e.contains("already used by another AF_XDP socket"), "{e}");
    }

    #[test]
    fn spec_forms() {
        let mut s = Spec::parse_port("af_xdp:eth0").unwrap();
        assert_eq!(AfXdpConfig::from_spec(&mut s).unwrap(), AfXdpConfig::new("eth0"));
        let mut s = Spec::parse_port(
            "af_xdp:eth0,queues=4,start-queue=2,mode=native,bind=zerocopy,busy-poll=on,ring-size=4096,replace=on,attach=netlink",
        )
        .unwrap();
        let c = AfXdpConfig::from_spec(&mut s).unwrap();
        assert_eq!((c.queues, c.start_queue, c.ring_size), (4, 2, 4096));
        assert_eq!((c.mode, c.bind, c.attach), (XdpMode::Native, BindMode::ZeroCopy, AttachVia::Netlink));
        assert!(c.busy_poll && c.replace);
        let mut s = Spec::parse_port("af_xdp:eth0,bind=fast").unwrap().accepting(FORM);
        let e = AfXdpConfig::from_spec(&mut s).unwrap_err().to_string();
        assert!(e.contains("bind=fast: expected one of copy, zerocopy, auto") && e.contains("af_xdp:IFACE"), "{e}");
        let mut s = Spec::parse_port("af_xdp").unwrap();
        assert!(AfXdpConfig::from_spec(&mut s).unwrap_err().to_string().contains("interface name is missing"));
    }
}
