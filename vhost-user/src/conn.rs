//! The control thread of a port: it owns the socket (server: listens and accepts one frontend at
//! a time; client: connects, and reconnects every `reconnect` seconds when the frontend goes
//! away), feeds each message to rust-vmm's `BackendReqHandler`, and counts kicks. It is not an
//! lcore: it sleeps in `poll(2)` and never touches a queue's data path.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::device::Device;
use crate::queue::VringStats;

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

const POLL_MS: i32 = 100;

/// Runs until `stop` is set.
pub fn run(mode: Mode, dev: Arc<Mutex<Device>>, kicks: Vec<Arc<crate::shared::VringShared>>, stop: Arc<AtomicBool>) {
    let name = format!("{:?}", mode_path(&mode));
    let mut ever = false;
    // Relaxed: a request flag; nothing is published through it.
    while !stop.load(Ordering::Relaxed) {
        // Between connections too: a departed frontend's memory is unmapped as soon as the
        // lcores have let go of it (they acknowledge within MAINTAIN_EVERY polls).
        lock(&dev).reap();
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
                match UnixStream::connect(path) {
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
        serve(stream, &dev, &kicks, &stop, &name);
        let mut d = lock(&dev);
        d.reset();
        // Relaxed: status for readers.
        d.status().connected.store(false, Ordering::Relaxed);
        log::info!("vhost-user {name}: frontend disconnected; vrings stopped");
    }
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

fn poll_in(fds: &mut [libc::pollfd]) -> i32 {
    // SAFETY: fds is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) }
}

fn accept(l: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    let mut p = [libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // Relaxed: a request flag (see run).
    if poll_in(&mut p) <= 0 || stop.load(Ordering::Relaxed) {
        return None;
    }
    match l.accept() {
        Ok((s, _)) => {
            let _ = s.set_nonblocking(false);
            Some(s)
        }
        Err(e) => {
            log::warn!("vhost-user: accept failed: {e}");
            None
        }
    }
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

fn serve(
    stream: UnixStream,
    dev: &Arc<Mutex<Device>>,
    vrings: &[Arc<crate::shared::VringShared>],
    stop: &AtomicBool,
    name: &str,
) {
    let fd = stream.as_raw_fd();
    let mut h = BackendReqHandler::from_stream(stream, dev.clone());
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut which: Vec<usize> = Vec::new();
    // Relaxed: see run.
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        which.clear();
        fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        {
            let mut d = lock(dev);
            d.reap();
            for (i, k) in d.kick_fds() {
                fds.push(libc::pollfd { fd: k, events: libc::POLLIN, revents: 0 });
                which.push(i);
            }
        }
        if poll_in(&mut fds) <= 0 {
            continue;
        }
        for (p, &i) in fds[1..].iter().zip(&which) {
            if p.revents & libc::POLLIN != 0 {
                count_kicks(p.fd, &vrings[i].stats);
            }
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            continue;
        }
        match h.handle_request() {
            Ok(()) => {}
            Err(VuError::Disconnected) | Err(VuError::PartialMessage) => return,
            Err(e) if fatal(&e) => {
                log::warn!("vhost-user {name}: closing the connection: {e}");
                return;
            }
            // QEMU sends SET_VRING_ENABLE before SET_FEATURES; the crate refuses it (see
            // device.rs): expected, so not a warning.
            Err(e @ VuError::InactiveFeature(_)) => log::debug!("vhost-user {name}: request refused: {e}"),
            Err(e) => log::warn!("vhost-user {name}: request refused: {e}"),
        }
    }
}

/// Drains a kick eventfd (its 8-byte counter) into the vring's kick counter.
fn count_kicks(fd: RawFd, st: &VringStats) {
    // SAFETY: we borrow the fd for one read without taking ownership (ManuallyDrop); the device
    // keeps the File open while we hold its lock-free copy of the number for this poll round.
    let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut b = [0u8; 8];
    if f.read(&mut b).is_ok_and(|n| n == 8) {
        st.kicks.add(u64::from_ne_bytes(b));
    }
}
