//! The control thread of a port: it owns the socket (server: listens and accepts one frontend at
//! a time; client: connects, and reconnects every `reconnect` seconds when the frontend goes
//! away), feeds each message to rust-vmm's `BackendReqHandler`, and counts kicks. It is not an
//! lcore: it sleeps in `epoll_wait(2)` and never touches a queue's data path.
//!
//! **Nothing a frontend does can hold this thread** (so a stop, e.g. SIGINT, is seen within a
//! round of [`POLL_MS`]):
//! - rust-vmm's handler reads a message with blocking reads (and retries `EAGAIN` forever), so it
//!   is called only once the whole message is queued on the socket: the header is peeked
//!   (`MSG_PEEK`) for its size and `FIONREAD` must show header + payload. A message that stays
//!   incomplete for [`MSG_DEADLINE`] closes the connection (`closed_msg_timeout`); a header split
//!   from the fds sent with it is broken framing (`closed_bad_message`).
//! - Replies are written with blocking sends, so before each request the bytes still queued
//!   toward the frontend (`SIOCOUTQ`) must be under [`MAX_UNREAD`], far below the socket's send
//!   buffer: a frontend that does not read its replies is closed (`closed_replies_unread`)
//!   before a send could wait.
//! - Kick eventfds are never read: each one is watched edge-triggered and every wakeup counts
//!   one kick, so a frontend can neither make a read wait (by draining the counter first) nor
//!   put a value of its choosing into our counter; after a round with kicks the thread pauses
//!   [`KICK_PAUSE`], so a frontend writing its kick fd in a loop cannot make it spin.
//! - Client mode connects without blocking (a frontend that listens but never accepts fills its
//!   backlog: we retry later instead of waiting).
//!
//! Each round also checks what the lcores depend on: a memory table that lost memory (the SIGBUS
//! guard's mark, [`crate::sigbus`]) or a call eventfd whose `O_NONBLOCK` the frontend cleared
//! closes the connection, and the call watchdog ([`crate::call::Watchdog`]) interrupts an lcore
//! stuck in a call write.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::MAX_MSG_SIZE;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::call::Watchdog;
use crate::device::{Close, Device};
use crate::shared::VringShared;

/// How the port reaches its frontend.
#[derive(Debug, Clone)]
pub enum Mode {
    /// We listen on the path (QEMU `-chardev socket,path=...` without `server`, DPDK virtio-user).
    Server(Arc<UnixListener>),
    /// We connect to the frontend's socket, retrying every `reconnect` (never again when `None`
    /// after the first connection ends).
    Client {
        /// The frontend's socket.
        path: PathBuf,
        /// Retry interval.
        reconnect: Option<Duration>,
    },
}

/// Longest sleep of the control thread: the latency of a stop request.
pub const POLL_MS: i32 = 100;
/// How long a message may stay incomplete on the socket before the connection is closed. A
/// frontend writes each message with one `sendmsg`, so a legitimate one is complete at once.
pub const MSG_DEADLINE: Duration = Duration::from_secs(3);
/// Most reply bytes a frontend may leave unread before we stop serving it (a reply is at most
/// 12 + 4096 bytes; the socket's send buffer holds about 200 KiB).
pub const MAX_UNREAD: usize = 64 * 1024;
/// Pause after a round that counted kicks.
pub const KICK_PAUSE: Duration = Duration::from_millis(1);

/// vhost-user message header: request, flags, payload size (u32 each).
const HDR_LEN: usize = 12;
/// epoll data of the socket (kick fds carry their vring index).
const SOCKET: u64 = u64::MAX;

/// Runs until `stop` is set.
pub fn run(mode: Mode, dev: Arc<Mutex<Device>>, vrings: Vec<Arc<VringShared>>, stop: Arc<AtomicBool>) {
    let name = format!("{:?}", mode_path(&mode));
    if let Mode::Server(l) = &mode {
        // accept() never waits: a connection that vanished between poll and accept is skipped.
        let _ = l.set_nonblocking(true);
    }
    let mut wd = Watchdog::default();
    let mut ever = false;
    // Relaxed: a request flag; nothing is published through it.
    while !stop.load(Ordering::Relaxed) {
        // Between connections too: a departed frontend's memory is unmapped as soon as the
        // lcores have let go of it (they acknowledge within MAINTAIN_EVERY polls), and an lcore
        // stuck in a call write of a closed connection is interrupted.
        lock(&dev).reap();
        if wd.check(vrings.iter().map(|v| &v.stats.call_watch)) {
            interrupt_stuck(&mut wd, &dev, &vrings);
        }
        let stream = match &mode {
            Mode::Server(l) => match accept(l, &stop) {
                Some(s) => s,
                None => continue,
            },
            Mode::Client { path, reconnect } => {
                if ever && reconnect.is_none() {
                    sleep_unless(&stop, Duration::from_millis(POLL_MS as u64));
                    continue;
                }
                match connect(path) {
                    Ok(s) => s,
                    Err(e) => {
                        log::debug!("vhost-user {}: connect failed: {e}", path.display());
                        sleep_unless(&stop, reconnect.unwrap_or(Duration::from_secs(1)));
                        continue;
                    }
                }
            }
        };
        ever = true;
        {
            let d = lock(&dev);
            // Relaxed: status for readers.
            d.status().connected.store(true, Ordering::Relaxed);
            d.status().connections.fetch_add(1, Ordering::Relaxed);
        }
        log::info!("vhost-user {name}: frontend connected");
        let end = serve(stream, &dev, &vrings, &stop, &mut wd);
        let mut d = lock(&dev);
        d.reset();
        // Relaxed: status for readers.
        d.status().connected.store(false, Ordering::Relaxed);
        match end {
            End::Stop => log::info!("vhost-user {name}: stopping; vrings stopped"),
            End::Left => log::info!("vhost-user {name}: frontend disconnected; vrings stopped"),
            End::Closed(why, msg) => {
                d.status().count_close(why);
                log::warn!("vhost-user {name}: closed the connection: {msg}; vrings stopped");
            }
        }
        drop(d);
        // The vrings have no call fd any more (reset): an lcore the watchdog saw stuck in a
        // call write is interrupted now and finds the new configuration at its next burst.
        interrupt_stuck(&mut wd, &dev, &vrings);
    }
}

/// Why [`serve`] returned.
enum End {
    /// The port is stopping.
    Stop,
    /// The frontend closed the connection.
    Left,
    /// We closed it: why, and the message to log.
    Closed(Close, String),
}

fn mode_path(m: &Mode) -> PathBuf {
    match m {
        Mode::Server(l) => l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)).unwrap_or_default(),
        Mode::Client { path, .. } => path.clone(),
    }
}

fn lock(dev: &Mutex<Device>) -> std::sync::MutexGuard<'_, Device> {
    dev.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let t0 = Instant::now();
    // Relaxed: see run.
    while t0.elapsed() < d && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// Interrupts the lcores the call watchdog found stuck in a call write (see [`crate::call`]);
/// call it once their vrings have no call fd any more.
fn interrupt_stuck(wd: &mut Watchdog, dev: &Mutex<Device>, vrings: &[Arc<VringShared>]) {
    let watches: Vec<_> = vrings.iter().map(|v| &v.stats.call_watch).collect();
    for i in wd.interrupt_pending(&watches) {
        log::error!("{}: the lcore was stuck in a write to the guest's call eventfd: interrupted it", vrings[i].name);
        // Relaxed: a statistic.
        lock(dev).status().calls_interrupted.fetch_add(1, Ordering::Relaxed);
    }
}

fn accept(l: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    let mut p = [libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: p is a valid array of one pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, POLL_MS) };
    // Relaxed: a request flag (see run).
    if n <= 0 || stop.load(Ordering::Relaxed) {
        return None;
    }
    match l.accept() {
        Ok((s, _)) => {
            let _ = s.set_nonblocking(false);
            Some(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => {
            log::warn!("vhost-user: accept failed: {e}");
            None
        }
    }
}

/// Connects to the unix socket `path` without waiting: a listener whose backlog is full answers
/// `EAGAIN` (retried at the next attempt) instead of holding this thread.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    // SAFETY: socket has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that we own from here on (closed on every error path).
    let s = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is valid (family set below, path NUL-terminated).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_bytes();
    if p.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path too long"));
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(p) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + p.len() + 1;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len as libc::socklen_t) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

/// True for errors after which the connection cannot go on.
fn fatal(e: &VuError) -> bool {
    !matches!(
        e,
        VuError::InvalidParam
            | VuError::InvalidOperation(_)
            | VuError::InactiveFeature(_)
            | VuError::InactiveOperation(_)
            | VuError::FeatureMismatch
            | VuError::ReqHandlerError(_)
            | VuError::BackendInternalError
    )
}

/// An epoll instance: the socket and the kick eventfds, all edge-triggered.
struct Epoll(OwnedFd);

impl Epoll {
    fn new(sock: RawFd, kicks: &[(usize, RawFd)]) -> std::io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that we own.
        let ep = Epoll(unsafe { OwnedFd::from_raw_fd(fd) });
        ep.add(sock, libc::EPOLLIN | libc::EPOLLRDHUP, SOCKET)?;
        for &(i, k) in kicks {
            ep.add(k, libc::EPOLLIN, i as u64)?;
        }
        Ok(ep)
    }

    fn add(&self, fd: RawFd, events: libc::c_int, data: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events: (events | libc::EPOLLET) as u32, u64: data };
        // SAFETY: ev is a valid epoll_event; both fds are open.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, evs: &mut [libc::epoll_event], timeout: Duration) -> usize {
        let ms = timeout.as_millis().clamp(1, POLL_MS as u128) as i32;
        // SAFETY: evs is valid for evs.len() entries.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, ms) };
        n.max(0) as usize
    }
}

/// What is queued on the socket.
#[derive(Debug, PartialEq, Eq)]
enum Queued {
    /// A whole message: the handler can read it without waiting.
    Message,
    /// Nothing.
    Empty,
    /// Part of a message: `have` of `need` bytes.
    Partial { have: usize, need: usize },
    /// A header shorter than 12 bytes carried fds and the rest came apart from them.
    Split,
    /// The frontend closed the connection.
    Closed,
}

fn queued(fd: RawFd) -> Queued {
    let mut hdr = [0u8; HDR_LEN];
    // SAFETY: hdr is valid for HDR_LEN bytes; MSG_PEEK leaves the data (and any fds: we pass
    // no control buffer, so the kernel installs none) in the socket.
    let n = unsafe { libc::recv(fd, hdr.as_mut_ptr().cast(), HDR_LEN, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n == 0 {
        return Queued::Closed;
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Queued::Empty,
            _ => Queued::Closed,
        };
    }
    let mut avail: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int: the bytes queued on a unix stream socket.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) } != 0 {
        return Queued::Closed;
    }
    let have = avail.max(0) as usize;
    if (n as usize) < HDR_LEN {
        // A peek stops after a segment that carries fds: a header split there.
        return if have >= HDR_LEN { Queued::Split } else { Queued::Partial { have, need: HDR_LEN } };
    }
    let size = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    // An oversized header is refused by the handler after reading the header alone.
    let need = HDR_LEN + if size <= MAX_MSG_SIZE { size } else { 0 };
    if have >= need {
        Queued::Message
    } else {
        Queued::Partial { have, need }
    }
}

/// Bytes we sent that the frontend has not read yet.
fn unread(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

fn serve(
    stream: UnixStream,
    dev: &Arc<Mutex<Device>>,
    vrings: &[Arc<VringShared>],
    stop: &AtomicBool,
    wd: &mut Watchdog,
) -> End {
    let fd = stream.as_raw_fd();
    let mut h = BackendReqHandler::from_stream(stream, dev.clone());
    let mut kicks: Vec<(usize, RawFd)> = Vec::new();
    let mut ep = match Epoll::new(fd, &kicks) {
        Ok(e) => e,
        Err(e) => return End::Closed(Close::BadMessage, format!("epoll: {e}")),
    };
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    let mut partial: Option<(Instant, usize, usize)> = None;
    let mut hup = false;
    // Relaxed: see run.
    while !stop.load(Ordering::Relaxed) {
        let (now_kicks, calls, faulted) = {
            let mut d = lock(dev);
            d.reap();
            let faulted = d.mem_faulted();
            (d.kick_fds(), d.call_fds(), faulted)
        };
        if faulted {
            return End::Closed(
                Close::MemFault,
                "the frontend truncated a guest memory file under us (SIGBUS survived; that memory now reads as \
                 zeros)"
                    .into(),
            );
        }
        if let Some((i, _)) = calls.iter().find(|(_, c)| !crate::fds::is_nonblocking(*c)) {
            return End::Closed(
                Close::CallFdBlocking,
                format!(
                    "vring {i}: the frontend cleared O_NONBLOCK on its call eventfd (the lcore must never wait on it)"
                ),
            );
        }
        if wd.check(vrings.iter().map(|v| &v.stats.call_watch)) {
            let watches: Vec<_> = vrings.iter().map(|v| &v.stats.call_watch).collect();
            if wd.pending_fds(&watches).iter().any(|fd| calls.iter().any(|(_, c)| c == fd)) {
                // This connection's eventfd: it goes first (run then interrupts the lcore, whose
                // next burst has no call fd).
                return End::Closed(Close::CallFdBlocking, "an lcore got stuck writing a call eventfd".into());
            }
            // An eventfd of a connection that is gone (the lcore has not let go of it yet).
            interrupt_stuck(wd, dev, vrings);
        }
        if now_kicks != kicks {
            // Registrations follow the file description, which the frontend keeps open after we
            // close our fd: a fresh instance forgets the old ones.
            kicks = now_kicks;
            ep = match Epoll::new(fd, &kicks) {
                Ok(e) => e,
                Err(e) => return End::Closed(Close::BadMessage, format!("epoll: {e}")),
            };
        }
        let timeout =
            partial.map_or(Duration::from_millis(POLL_MS as u64), |(t, _, _)| MSG_DEADLINE.saturating_sub(t.elapsed()));
        let n = ep.wait(&mut evs, timeout);
        let mut kicked = false;
        for ev in &evs[..n] {
            let (events, data) = (ev.events, ev.u64);
            if data == SOCKET {
                if events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    hup = true;
                }
            } else if let Some(v) = vrings.get(data as usize) {
                v.stats.kicks.inc();
                kicked = true;
            }
        }
        loop {
            match queued(fd) {
                Queued::Message => {
                    partial = None;
                    let u = unread(fd);
                    if u > MAX_UNREAD {
                        return End::Closed(
                            Close::RepliesUnread,
                            format!("the frontend leaves {u} bytes of our replies unread"),
                        );
                    }
                    match h.handle_request() {
                        Ok(()) => {}
                        Err(VuError::Disconnected) | Err(VuError::SocketBroken(_)) => return End::Left,
                        Err(e) if fatal(&e) => return End::Closed(Close::BadMessage, format!("{e}")),
                        // QEMU sends SET_VRING_ENABLE before SET_FEATURES; the crate refuses it
                        // (see device.rs): expected, so not a warning.
                        Err(e @ VuError::InactiveFeature(_)) => log::debug!("vhost-user: request refused: {e}"),
                        Err(e) => log::warn!("vhost-user: request refused: {e}"),
                    }
                }
                Queued::Empty if hup => return End::Left,
                Queued::Empty => {
                    partial = None;
                    break;
                }
                Queued::Partial { .. } if hup => return End::Left,
                Queued::Partial { have, need } => {
                    let since = partial.map_or_else(Instant::now, |p| p.0);
                    partial = Some((since, have, need));
                    break;
                }
                Queued::Split => {
                    return End::Closed(
                        Close::BadMessage,
                        "a message header was split from the fds sent with it".into(),
                    )
                }
                Queued::Closed => return End::Left,
            }
        }
        if let Some((t, have, need)) = partial {
            if t.elapsed() >= MSG_DEADLINE {
                return End::Closed(
                    Close::MsgTimeout,
                    format!(
                        "a message stayed incomplete for {:.1} s ({have} of {need} bytes)",
                        MSG_DEADLINE.as_secs_f64()
                    ),
                );
            }
        }
        if kicked {
            std::thread::sleep(KICK_PAUSE);
        }
    }
    End::Stop
}
