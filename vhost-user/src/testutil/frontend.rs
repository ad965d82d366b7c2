//! A vhost-user frontend for tests (feature `test-utils`): rust-vmm's `Frontend` drives the
//! well-behaved parts over a real socket, a clone of the same socket sends the hostile ones
//! (any bytes, any fds: [`TestFrontend::send_raw`], [`message`]), and a [`FakeGuest`] with two
//! split rings plays the guest ([`TestFrontend::send`], [`TestFrontend::receive`]).
//!
//! Used by this crate's tests, where the test thread plays the lcore, and by the apps' hostile
//! suite against a running `fastpath` process.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::{FakeGuest, FakeRing, GPA_BASE, UVA_BASE};
use crate::net;

/// vhost-user request codes used by hostile tests (the protocol's numbering).
pub mod req {
    /// GET_FEATURES.
    pub const GET_FEATURES: u32 = 1;
    /// SET_FEATURES.
    pub const SET_FEATURES: u32 = 2;
    /// SET_OWNER.
    pub const SET_OWNER: u32 = 3;
    /// SET_MEM_TABLE.
    pub const SET_MEM_TABLE: u32 = 5;
    /// SET_VRING_NUM.
    pub const SET_VRING_NUM: u32 = 8;
    /// SET_VRING_ADDR.
    pub const SET_VRING_ADDR: u32 = 9;
    /// SET_VRING_KICK.
    pub const SET_VRING_KICK: u32 = 12;
    /// SET_VRING_CALL.
    pub const SET_VRING_CALL: u32 = 13;
}

/// Header flags: protocol version 1.
pub const FLAG_VERSION: u32 = 1;
/// Header flags: the sender wants a reply (REPLY_ACK).
pub const FLAG_NEED_REPLY: u32 = 8;

/// A message: header (request, flags, size of `payload`) and payload.
pub fn message(req: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + payload.len());
    m.extend_from_slice(&req.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// Guest RAM of a [`TestFrontend`].
pub const RAM: usize = 4 << 20;
/// Ring size of both vrings.
pub const RING: u16 = 256;
/// Bytes of each frame [`TestFrontend::send`] posts (after the 12-byte virtio-net header).
pub const FRAME: usize = 64;
const TX_RING: u64 = GPA_BASE + 0x1_0000;
const TX_BUFS: u64 = GPA_BASE + 0x10_0000;
const RX_BUFS: u64 = GPA_BASE + 0x20_0000;
const BUF: u64 = 2048;

/// The features a [`TestFrontend`] acks.
pub const FEATURES: u64 = net::VIRTIO_F_VERSION_1 | net::VHOST_USER_F_PROTOCOL_FEATURES;

/// A frontend with its guest: vring 0 is the guest's RX ring, vring 1 its TX ring (queue
/// pair 0).
pub struct TestFrontend {
    /// rust-vmm's frontend (REPLY_ACK on after [`TestFrontend::negotiate`]).
    pub fe: Frontend,
    /// The same socket, for raw bytes.
    pub raw: UnixStream,
    /// The guest's RAM (a memfd).
    pub guest: FakeGuest,
    /// Vring 0: guest RX.
    pub rx: FakeRing,
    /// Vring 1: guest TX.
    pub tx: FakeRing,
    /// Kick eventfds of vrings 0 and 1.
    pub kick: [EventFd; 2],
    /// Call eventfds of vrings 0 and 1.
    pub call: [EventFd; 2],
    /// Frames the guest sent that the device took (used elements of the TX ring).
    pub sent: u64,
    /// Frames the guest received (used elements of the RX ring).
    pub received: u64,
}

impl std::fmt::Debug for TestFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestFrontend")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl TestFrontend {
    /// Connects to the backend at `path` (reads and writes time out after 20 s, so that a
    /// backend that stops answering fails the test instead of hanging it).
    pub fn connect(path: &Path) -> std::io::Result<TestFrontend> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        let raw = s.try_clone()?;
        let guest = FakeGuest::new(RAM);
        let rx = FakeRing::new(&guest, GPA_BASE, RING);
        let tx = FakeRing::new(&guest, TX_RING, RING);
        let ev = || EventFd::new(0);
        Ok(TestFrontend {
            fe: Frontend::from_stream(s, 8),
            raw,
            guest,
            rx,
            tx,
            kick: [ev()?, ev()?],
            call: [ev()?, ev()?],
            sent: 0,
            received: 0,
        })
    }

    /// SET_OWNER, [`FEATURES`], protocol features MQ + REPLY_ACK; every later request waits for
    /// the backend's ack.
    pub fn negotiate(&mut self) -> vhost::Result<()> {
        self.fe.set_owner()?;
        self.fe.get_features()?;
        self.fe.set_features(FEATURES)?;
        self.fe.get_protocol_features()?;
        self.fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK)?;
        self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        Ok(())
    }

    /// The memory table: all RAM in one region of the memfd.
    pub fn table(&self) -> [VhostUserMemoryRegionInfo; 1] {
        [VhostUserMemoryRegionInfo {
            guest_phys_addr: GPA_BASE,
            memory_size: self.guest.len,
            userspace_addr: UVA_BASE,
            mmap_offset: 0,
            mmap_handle: self.guest.file.as_raw_fd(),
        }]
    }

    /// SET_MEM_TABLE with [`TestFrontend::table`].
    pub fn send_mem_table(&self) -> vhost::Result<()> {
        self.fe.set_mem_table(&self.table()).map(|_| ())
    }

    /// SET_VRING_NUM, _ADDR, _BASE, _CALL, _KICK and _ENABLE for vring `i` with its own
    /// eventfds.
    pub fn setup_vring(&mut self, i: usize) -> vhost::Result<()> {
        let (k, c) = (
            self.kick[i].try_clone().map_err(vhost::Error::IOError)?,
            self.call[i].try_clone().map_err(vhost::Error::IOError)?,
        );
        self.setup_vring_with(i, &k, &c)
    }

    /// As [`TestFrontend::setup_vring`] with the given kick and call fds (hostile tests wrap
    /// pipes and files in `EventFd` with `from_raw_fd`).
    pub fn setup_vring_with(&mut self, i: usize, kick: &EventFd, call: &EventFd) -> vhost::Result<()> {
        let r = if i == 0 { &self.rx } else { &self.tx };
        let a = r.addrs();
        self.fe.set_vring_num(i, r.size)?;
        self.fe.set_vring_addr(
            i,
            &VringConfigData {
                queue_max_size: r.size,
                queue_size: r.size,
                flags: 0,
                desc_table_addr: a.desc,
                used_ring_addr: a.used,
                avail_ring_addr: a.avail,
                log_addr: None,
            },
        )?;
        self.fe.set_vring_base(i, 0)?;
        self.fe.set_vring_call(i, call)?;
        self.fe.set_vring_kick(i, kick)?;
        self.fe.set_vring_enable(i, true)
    }

    /// Connects, negotiates and sends the memory table (the vrings are the caller's).
    pub fn with_memory(path: &Path) -> vhost::Result<TestFrontend> {
        let mut t = TestFrontend::connect(path).map_err(vhost::Error::IOError)?;
        t.negotiate()?;
        t.send_mem_table()?;
        Ok(t)
    }

    /// Connects and sets everything up: negotiation, memory table, both vrings.
    pub fn start(path: &Path) -> vhost::Result<TestFrontend> {
        let mut t = TestFrontend::with_memory(path)?;
        t.setup_vring(0)?;
        t.setup_vring(1)?;
        Ok(t)
    }

    /// Guest TX: takes back what the device used and posts up to `max` new 64-byte frames
    /// (as many as the ring has room for). Returns the frames posted.
    pub fn send(&mut self, max: usize) -> usize {
        self.sent += self.tx.take_used(&self.guest).len() as u64;
        let mut n = 0;
        let hdr = [0u8; 12];
        let mut frame = [0u8; FRAME];
        frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame[12] = 0x08;
        while n < max && self.tx.avail_idx.wrapping_sub(self.tx.used_seen) < self.tx.size {
            let d = self.tx.avail_idx % self.tx.size;
            self.tx.tx_one(&self.guest, d, TX_BUFS + BUF * d as u64, &hdr, &frame);
            n += 1;
        }
        n
    }

    /// Guest RX: counts the frames the device delivered since the last call (also added to
    /// [`TestFrontend::received`]) and posts buffers into every free slot.
    pub fn receive(&mut self) -> usize {
        let got = self.rx.take_used(&self.guest).len();
        self.received += got as u64;
        while self.rx.avail_idx.wrapping_sub(self.rx.used_seen) < self.rx.size {
            let d = self.rx.avail_idx % self.rx.size;
            self.rx.rx_one(&self.guest, d, RX_BUFS + BUF * d as u64, BUF as u32);
        }
        got
    }

    /// Writes `bytes` on the socket in one `sendmsg`, with `fds` attached.
    pub fn send_raw(&self, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
        if fds.is_empty() {
            return (&self.raw).write(bytes);
        }
        self.raw.send_with_fds(&[bytes], fds).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}
