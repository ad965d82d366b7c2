//! The control plane: the vhost-user messages of one connection, applied to our vrings.
//!
//! Message framing, header validation before dispatch, fd passing (SCM_RIGHTS), REPLY_ACK and
//! the protocol-feature checks are rust-vmm's `vhost` crate (`BackendReqHandler`, pinned in the
//! workspace); this module is the device behind it ([`Device`] implements its
//! `VhostUserBackendReqHandlerMut`). Every message that changes a vring ends in
//! [`Device::republish`], which hands a fresh snapshot to the lcore (see [`crate::shared`]).
//!
//! A vring is *live* when it has a size, addresses that translate through the current memory
//! table, a kick fd (it was started), was not stopped by GET_VRING_BASE, and is not disabled.
//!
//! Enabling: the specification says that with PROTOCOL_FEATURES a ring starts disabled until
//! SET_VRING_ENABLE(1). QEMU 7.2 sends its SET_VRING_ENABLE messages *before* SET_FEATURES, and
//! the `vhost` crate refuses those (it checks the acked features) without passing them on, so a
//! strict backend would never see the ring enabled. We therefore treat a started ring as enabled
//! until the frontend explicitly disables it with a SET_VRING_ENABLE(0) that reaches us (DPDK's
//! vhost library accepts the early messages and ends in the same state). Every SET_VRING_ENABLE
//! that reaches us is obeyed.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight, VhostUserLog,
    VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut};
use vhost::VhostUserMemoryRegionBase;

use crate::mem::{GuestMemory, RegionDesc};
use crate::net::{OFFERED_FEATURES, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED};
use crate::packed::PackedRing;
use crate::queue::QueueFeatures;
use crate::ring::{Ring, RingAddrs, SplitRing};
use crate::shared::{Publisher, VringConfig};

/// How long a stop (GET_VRING_BASE) waits for the lcore to acknowledge. An lcore that polls
/// acknowledges within a burst; one that gets no traffic does not touch the ring anyway, and its
/// published avail index is then exact.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(100);

/// Memory tables of one connection that may be mapped at once (the current one and replaced
/// ones the lcores have not let go of yet).
pub const MAX_LIVE_TABLES: usize = 4;

/// Status of the device readable from any thread (port info, xstats).
#[derive(Debug, Default)]
pub struct DeviceStatus {
    /// A frontend is connected.
    pub connected: AtomicBool,
    /// Feature bits the frontend acked (0 when none is connected).
    pub features: AtomicU64,
    /// Feature bits the last frontend acked (kept after it left).
    pub last_features: AtomicU64,
    /// Connections accepted or made so far.
    pub connections: AtomicU64,
    /// Memory tables mapped so far.
    pub mem_tables: AtomicU64,
    /// Kick and call fds refused because they were not eventfds (or could not be made
    /// non-blocking).
    pub fds_refused: AtomicU64,
    /// Connections the control thread closed, by [`Close`] reason.
    pub closed: [AtomicU64; Close::ALL.len()],
    /// Lcores the call watchdog interrupted inside a stuck call write (see [`crate::call`]).
    pub calls_interrupted: AtomicU64,
    /// What the port does for the connected guest (nothing when none is): the pipeline's
    /// `lso` / `tx-offload` stages read it so that they cut and checksum for a guest that did not
    /// negotiate GUEST_TSO / GUEST_CSUM.
    pub offloads: fastpath_pmd::LiveOffloads,
}

/// Why the control thread closed a connection itself (a frontend that leaves is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A message stayed incomplete past [`crate::conn::MSG_DEADLINE`].
    MsgTimeout,
    /// Broken framing or a request rust-vmm's handler cannot go on after (bad header, size,
    /// fds, a message split around its fds).
    BadMessage,
    /// The frontend does not read our replies (its socket's queue toward it keeps growing).
    RepliesUnread,
    /// The frontend truncated a memory file under us (see [`crate::sigbus`]).
    MemFault,
    /// The frontend cleared `O_NONBLOCK` on a call eventfd, or an lcore got stuck writing one.
    CallFdBlocking,
}

impl Close {
    /// Every reason, in counter order.
    pub const ALL: [Close; 5] =
        [Close::MsgTimeout, Close::BadMessage, Close::RepliesUnread, Close::MemFault, Close::CallFdBlocking];

    /// Name used in xstats (`closed_` + this).
    pub fn name(self) -> &'static str {
        match self {
            Close::MsgTimeout => "msg_timeout",
            Close::BadMessage => "bad_message",
            Close::RepliesUnread => "replies_unread",
            Close::MemFault => "mem_fault",
            Close::CallFdBlocking => "call_fd_blocking",
        }
    }
}

impl DeviceStatus {
    /// Counts a connection closed for `why`.
    pub fn count_close(&self, why: Close) {
        // Relaxed: a statistic.
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Vring {
    size: u32,
    addrs: Option<RingAddrs>,
    /// SET_VRING_BASE's value, `None` before one came (then split rings start at 0 and packed
    /// ones at position 0 with wrap counter 1, as a fresh ring does).
    base: Option<u32>,
    start_gen: u64,
    kick: Option<File>,
    call: Option<Arc<File>>,
    err: Option<File>,
    started: bool,
    /// What the last SET_VRING_ENABLE that reached us said (`None`: none did).
    enabled: Option<bool>,
    publisher: Publisher,
}

/// One vhost-user virtio-net device: `2 * queues` vrings (RX of pair q = 2q, TX = 2q + 1).
#[derive(Debug)]
pub struct Device {
    name: String,
    queues: u16,
    vrings: Vec<Vring>,
    features: u64,
    protocol: u64,
    mem: Arc<GuestMemory>,
    /// Every memory table of the current connection that may still be mapped (the lcores may
    /// use a replaced one until they acknowledge), for the SIGBUS guard's marks.
    tables: Vec<Weak<GuestMemory>>,
    status: Arc<DeviceStatus>,
}

fn bad(what: &'static str) -> VuError {
    VuError::InvalidOperation(what)
}

impl Device {
    /// A device named `name` (for logs) with `queues` queue pairs.
    pub fn new(name: &str, queues: u16) -> Device {
        let vrings = (0..2 * queues as usize)
            .map(|i| Vring {
                size: 0,
                addrs: None,
                base: None,
                start_gen: 0,
                kick: None,
                call: None,
                err: None,
                started: false,
                enabled: None,
                publisher: Publisher::new(format!(
                    "{name}:q{}:{}",
                    i / 2,
                    if i % 2 == 0 { "guest-rx" } else { "guest-tx" }
                )),
            })
            .collect();
        Device {
            name: name.to_string(),
            queues,
            vrings,
            features: 0,
            protocol: 0,
            mem: Arc::new(GuestMemory::empty()),
            tables: Vec::new(),
            status: Arc::default(),
        }
    }

    /// The status block.
    pub fn status(&self) -> &Arc<DeviceStatus> {
        &self.status
    }

    /// The publisher of vring `i`.
    pub fn publisher(&self, i: usize) -> &Publisher {
        &self.vrings[i].publisher
    }

    /// Number of vrings.
    pub fn vrings(&self) -> usize {
        self.vrings.len()
    }

    /// Kick fds by vring, for the control thread to count kicks.
    pub fn kick_fds(&self) -> Vec<(usize, RawFd)> {
        self.vrings.iter().enumerate().filter_map(|(i, v)| v.kick.as_ref().map(|f| (i, f.as_raw_fd()))).collect()
    }

    /// Call fds by vring, for the control thread to check that they stay non-blocking.
    pub fn call_fds(&self) -> Vec<(usize, RawFd)> {
        self.vrings.iter().enumerate().filter_map(|(i, v)| v.call.as_ref().map(|f| (i, f.as_raw_fd()))).collect()
    }

    /// True when a memory table of this connection lost memory under us (the frontend
    /// truncated its file): the connection must be dropped.
    pub fn mem_faulted(&mut self) -> bool {
        self.tables.retain(|t| t.strong_count() > 0);
        self.tables.iter().any(|t| t.upgrade().is_some_and(|m| m.faulted()))
    }

    /// Refuses an fd handed to vring `index` that is not an eventfd (logged and counted);
    /// `call` fds are also made non-blocking.
    fn check_event_fd(&self, what: &str, index: u32, f: &File, call: bool) -> VuResult<()> {
        let r = crate::fds::check_eventfd(f).and_then(|()| {
            if call {
                crate::fds::set_nonblocking(f).map_err(|e| format!("cannot make it non-blocking: {e}"))
            } else {
                Ok(())
            }
        });
        r.map_err(|e| {
            log::warn!(
                "{}: vring {index}: {what} refused: {e}; fastpath takes eventfds only (a pipe or file could \
                 block or spin the data path): fix the frontend",
                self.name
            );
            // Relaxed: a statistic.
            self.status.fds_refused.fetch_add(1, Ordering::Relaxed);
            VuError::InvalidParam
        })
    }

    /// Memory regions mapped now.
    pub fn mem_regions(&self) -> usize {
        self.mem.regions()
    }

    fn vring(&mut self, index: u32) -> VuResult<&mut Vring> {
        self.vrings.get_mut(index as usize).ok_or(VuError::InvalidParam)
    }

    /// Builds and publishes vring `i`'s snapshot from the current state.
    pub fn republish(&mut self, i: usize) {
        let proto = self.features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        let (mem, feat) = (self.mem.clone(), QueueFeatures::from_bits(self.features));
        let v = &mut self.vrings[i];
        // See the module doc: without PROTOCOL_FEATURES a started ring is enabled; with it, it
        // is enabled unless a SET_VRING_ENABLE(0) reached us.
        let enabled = if proto { v.enabled.unwrap_or(true) } else { true };
        let ring = match v.addrs {
            Some(a) if v.started && enabled && v.size > 0 => match if feat.packed {
                PackedRing::new(&mem, a, v.size).map(Ring::Packed)
            } else {
                SplitRing::new(&mem, a, v.size).map(Ring::Split)
            } {
                Ok(r) => Some(r),
                Err(e) => {
                    log::warn!("{}: vring {i} cannot start: {e}", self.name);
                    None
                }
            },
            _ => None,
        };
        log::debug!(
            "{}: vring {i}: size {} started {} enabled {} addrs {} -> {}",
            self.name,
            v.size,
            v.started,
            enabled,
            v.addrs.is_some(),
            if ring.is_some() { "live" } else { "idle" }
        );
        // Packed: the low 16 bits carry the avail position and wrap counter (the high ones the
        // used state, which equals it whenever we are stopped: we return every chain we take
        // within its burst).
        let base = v.base.map_or(if feat.packed { 0x8000 } else { 0 }, |b| b as u16);
        let cfg = VringConfig { mem, ring, base, start_gen: v.start_gen, feat, call: v.call.clone() };
        v.publisher.publish(cfg);
    }

    fn republish_all(&mut self) {
        for i in 0..self.vrings.len() {
            self.republish(i);
        }
    }

    /// Forgets the frontend: every vring idle, the memory table unmapped once no lcore uses it.
    pub fn reset(&mut self) {
        self.features = 0;
        self.protocol = 0;
        self.mem = Arc::new(GuestMemory::empty());
        // A fault in the departed frontend's memory is not the next one's.
        self.tables.clear();
        for v in self.vrings.iter_mut() {
            v.size = 0;
            v.addrs = None;
            v.kick = None;
            v.call = None;
            v.err = None;
            v.started = false;
            v.enabled = None;
            v.start_gen += 1;
            v.base = None;
        }
        // Old snapshots (and the memory table) are freed by `reap` as the lcores acknowledge.
        self.republish_all();
        // Relaxed: status for readers; nothing is published through it.
        self.status.features.store(0, Ordering::Relaxed);
        self.status.offloads.set(fastpath_pmd::Offloads::NONE);
    }

    /// Frees retired snapshots whose acknowledgement arrived (called by the control loop).
    pub fn reap(&mut self) {
        for v in self.vrings.iter_mut() {
            v.publisher.reap();
        }
    }
}

impl VhostUserBackendReqHandlerMut for Device {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(OFFERED_FEATURES)
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !OFFERED_FEATURES != 0 {
            log::warn!(
                "{}: frontend acked features {:#x} that were not offered",
                self.name,
                features & !OFFERED_FEATURES
            );
            return Err(VuError::FeatureMismatch);
        }
        self.features = features;
        // Relaxed: status for readers.
        self.status.features.store(features, Ordering::Relaxed);
        self.status.last_features.store(features, Ordering::Relaxed);
        self.status.offloads.set(crate::net::port_offloads(features));
        log::info!("{}: features {features:#x}", self.name);
        self.republish_all();
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        // Tables replaced while an lcore still uses them stay mapped until it lets go; a
        // frontend sending tables in a loop must not pile up mappings (nor fill the SIGBUS
        // guard's table that every port shares).
        self.reap();
        self.tables.retain(|t| t.strong_count() > 0);
        if self.tables.len() >= MAX_LIVE_TABLES {
            log::warn!(
                "{}: SET_MEM_TABLE refused: {} earlier tables are still mapped (the lcores have not let go of \
                 them yet); send memory tables less often",
                self.name,
                self.tables.len()
            );
            return Err(VuError::InvalidParam);
        }
        let descs: Vec<RegionDesc> = ctx
            .iter()
            .map(|r| RegionDesc {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                uva: r.user_addr,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        let mem = GuestMemory::map(&descs, &files).map_err(|e| {
            log::error!("{}: SET_MEM_TABLE refused: {e}", self.name);
            VuError::InvalidParam
        })?;
        log::info!(
            "{}: memory table of {} regions mapped ({} sealed against shrinking; the others are covered by \
             the SIGBUS guard)",
            self.name,
            mem.regions(),
            mem.sealed_regions()
        );
        self.mem = Arc::new(mem);
        self.tables.push(Arc::downgrade(&self.mem));
        // Relaxed: a statistic.
        self.status.mem_tables.fetch_add(1, Ordering::Relaxed);
        self.republish_all();
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        // Packed rings may have any size up to 32768; split ones a power of two.
        let packed = self.features & VIRTIO_F_RING_PACKED != 0;
        if num == 0 || num > crate::ring::MAX_QUEUE_SIZE as u32 || (!packed && !num.is_power_of_two()) {
            return Err(VuError::InvalidParam);
        }
        self.vring(index)?.size = num;
        self.republish(index as usize);
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        self.vring(index)?.addrs = Some(RingAddrs { desc: descriptor, avail: available, used });
        self.republish(index as usize);
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let packed = self.features & VIRTIO_F_RING_PACKED != 0;
        let v = self.vring(index)?;
        if packed {
            // Bits 0-14: avail position, 15: avail wrap counter, 16-31: the used state (DPDK and
            // older QEMUs send 0 there; with nothing in flight it equals the avail state).
            let pos = base & 0x7fff;
            if v.size > 0 && pos >= v.size {
                return Err(VuError::InvalidParam);
            }
        } else if base > u16::MAX as u32 {
            return Err(VuError::InvalidParam);
        }
        v.base = Some(base);
        v.start_gen += 1;
        self.republish(index as usize);
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let name = self.name.clone();
        let v = self.vring(index)?;
        v.started = false;
        v.kick = None;
        self.republish(index as usize);
        let v = self.vring(index)?;
        if !v.publisher.wait_ack(ACK_TIMEOUT) {
            log::debug!("{name}: vring {index}: stopped while its lcore is idle; using its last published index");
        }
        let last = v.publisher.last_avail() as u32;
        // Packed: avail state in bits 0-15, used state in 16-31 (the same once stopped).
        let num = if self.features & VIRTIO_F_RING_PACKED != 0 { last | last << 16 } else { last };
        Ok(VhostUserVringState::new(index, num))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(index as u32)?;
        // We never read a kick fd: the control thread counts its wakeups (edge-triggered), so
        // only its type matters, not its flags.
        let ok = fd.as_ref().map_or(Ok(()), |f| self.check_event_fd("SET_VRING_KICK", index as u32, f, false));
        let v = self.vring(index as u32)?;
        v.started = ok.is_ok();
        v.kick = if ok.is_ok() { fd } else { None };
        self.republish(index as usize);
        ok
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(index as u32)?;
        let ok = fd.as_ref().map_or(Ok(()), |f| self.check_event_fd("SET_VRING_CALL", index as u32, f, true));
        if ok.is_ok() && fd.is_some() {
            crate::call::install_interrupt();
        }
        // A refused fd leaves the vring without one: we never call through something else.
        self.vring(index as u32)?.call = if ok.is_ok() { fd.map(Arc::new) } else { None };
        self.republish(index as usize);
        ok
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(index as u32)?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(self.queues as u64)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.vring(index)?.enabled = Some(enable);
        self.republish(index as usize);
        Ok(())
    }

    fn get_config(&mut self, _offset: u32, _size: u32, _flags: VhostUserConfigFlags) -> VuResult<Vec<u8>> {
        Err(bad("GET_CONFIG: the frontend owns virtio-net's config space"))
    }

    fn set_config(&mut self, _offset: u32, _buf: &[u8], _flags: VhostUserConfigFlags) -> VuResult<()> {
        Err(bad("SET_CONFIG is not supported"))
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(bad("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(bad("shared objects are not supported"))
    }

    fn get_inflight_fd(&mut self, _inflight: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        Err(bad("INFLIGHT_SHMFD is not offered"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(bad("INFLIGHT_SHMFD is not offered"))
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Err(bad("CONFIGURE_MEM_SLOTS is not offered"))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(bad("CONFIGURE_MEM_SLOTS is not offered"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(bad("CONFIGURE_MEM_SLOTS is not offered"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(bad("DEVICE_STATE is not offered"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(bad("DEVICE_STATE is not offered"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(bad("SHMEM is not offered"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(bad("LOG_SHMFD (live migration) is not offered"))
    }
}
