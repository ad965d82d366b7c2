//! A fake guest for tests and benches (feature `test-utils`): memfd-backed guest memory mapped
//! through the real [`GuestMemory::map`] path (so a second table of the same memory is a real
//! SET_MEM_TABLE swap), and the driver side of a split ring ([`FakeRing`]) and of a packed ring
//! ([`FakePackedRing`]) that write descriptors the way a virtio driver does, including the broken
//! ways a hostile one does.
//!
//! Guest-physical and frontend-virtual addresses differ on purpose (as with QEMU).
//!
//! [`frontend`]: a vhost-user frontend over a real socket (rust-vmm's, plus raw hostile bytes).

pub mod frontend;

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use crate::mem::{GuestMemory, RegionDesc};
use crate::packed::{avail_used_flags, used_flags, PackedDesc, PackedRing, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use crate::ring::{
    avail_bytes, desc_bytes, Desc, RingAddrs, SplitRing, UsedElem, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
};

/// Guest-physical start of the fake guest's RAM.
pub const GPA_BASE: u64 = 0x4000_0000;
/// Where the fake frontend has the same RAM in its own address space.
pub const UVA_BASE: u64 = 0x7f12_0000_0000;

/// An anonymous memory file of `len` bytes (created with sealing allowed, no seal set: it can
/// shrink, as DPDK's `--no-huge` memory can).
pub fn memfd(name: &str, len: usize) -> File {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: a valid C string; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd that we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len as u64).expect("ftruncate memfd");
    f
}

/// A fake guest: its RAM in a memory file and a memory table over it.
#[derive(Debug)]
pub struct FakeGuest {
    /// The RAM file.
    pub file: File,
    /// Bytes of RAM.
    pub len: u64,
    /// The table the device uses now.
    pub mem: Arc<GuestMemory>,
}

impl FakeGuest {
    /// A guest with `len` bytes of RAM at [`GPA_BASE`].
    pub fn new(len: usize) -> FakeGuest {
        let file = memfd("fake-guest", len);
        let mut g = FakeGuest { file, len: len as u64, mem: Arc::new(GuestMemory::empty()) };
        g.mem = g.map_table();
        g
    }

    /// The region description a frontend would send.
    pub fn region(&self) -> RegionDesc {
        RegionDesc { gpa: GPA_BASE, size: self.len, uva: UVA_BASE, mmap_offset: 0 }
    }

    /// Maps the RAM again as a new table (what a second SET_MEM_TABLE does).
    pub fn map_table(&self) -> Arc<GuestMemory> {
        let f = self.file.try_clone().expect("dup memfd");
        Arc::new(GuestMemory::map(&[self.region()], &[f]).expect("map fake guest"))
    }

    /// The frontend-virtual address of `gpa`.
    pub fn uva(gpa: u64) -> u64 {
        gpa - GPA_BASE + UVA_BASE
    }

    /// Writes guest RAM.
    pub fn write(&self, gpa: u64, b: &[u8]) {
        assert!(self.mem.write(gpa, b), "fake guest write outside RAM");
    }

    /// Reads guest RAM.
    pub fn read(&self, gpa: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        assert!(self.mem.read(gpa, &mut v), "fake guest read outside RAM");
        v
    }
}

/// The driver side of a split ring in a [`FakeGuest`].
#[derive(Debug)]
pub struct FakeRing {
    /// Ring size.
    pub size: u16,
    /// Descriptor table GPA.
    pub desc: u64,
    /// Avail ring GPA.
    pub avail: u64,
    /// Used ring GPA.
    pub used: u64,
    /// The driver's avail index (shadow of avail.idx).
    pub avail_idx: u16,
    /// The driver's last seen used index.
    pub used_seen: u16,
}

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}

impl FakeRing {
    /// A ring of `size` whose parts start at `gpa` (desc, then avail, then used, 4 KiB aligned).
    pub fn new(g: &FakeGuest, gpa: u64, size: u16) -> FakeRing {
        let desc = gpa;
        let avail = desc + desc_bytes(size);
        let used = (avail + avail_bytes(size) + 4095) & !4095;
        let r = FakeRing { size, desc, avail, used, avail_idx: 0, used_seen: 0 };
        g.write(desc, &vec![0u8; (used + 6 + 8 * size as u64 - desc) as usize]);
        r
    }

    /// The frontend-virtual ring addresses (what SET_VRING_ADDR carries).
    pub fn addrs(&self) -> RingAddrs {
        RingAddrs {
            desc: FakeGuest::uva(self.desc),
            avail: FakeGuest::uva(self.avail),
            used: FakeGuest::uva(self.used),
        }
    }

    /// The device's view through `mem`.
    pub fn split(&self, mem: &GuestMemory) -> SplitRing {
        SplitRing::new(mem, self.addrs(), self.size as u32).expect("fake ring translates")
    }

    /// Writes descriptor `i` (no bounds check: hostile tests write what they like in the table).
    pub fn set_desc(&self, g: &FakeGuest, i: u16, d: Desc) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        g.write(self.desc + 16 * (i % self.size) as u64, &b);
    }

    /// Puts `head` in the next avail slot and publishes avail.idx.
    pub fn push(&mut self, g: &FakeGuest, head: u16) {
        let slot = (self.avail_idx % self.size) as u64;
        g.write(self.avail + 4 + 2 * slot, &le16(head));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        g.write(self.avail + 2, &le16(self.avail_idx));
    }

    /// Sets avail.idx (and the shadow) directly, e.g. to start near `u16::MAX` or to lie.
    pub fn set_avail_idx(&mut self, g: &FakeGuest, v: u16) {
        self.avail_idx = v;
        g.write(self.avail + 2, &le16(v));
    }

    /// Sets used.idx as a fresh device would find it.
    pub fn set_used_idx(&mut self, g: &FakeGuest, v: u16) {
        self.used_seen = v;
        g.write(self.used + 2, &le16(v));
    }

    /// Sets avail.flags (e.g. `VRING_AVAIL_F_NO_INTERRUPT`).
    pub fn set_avail_flags(&self, g: &FakeGuest, f: u16) {
        g.write(self.avail, &le16(f));
    }

    /// Sets used_event (EVENT_IDX).
    pub fn set_used_event(&self, g: &FakeGuest, v: u16) {
        g.write(self.avail + 4 + 2 * self.size as u64, &le16(v));
    }

    /// used.flags.
    pub fn used_flags(&self, g: &FakeGuest) -> u16 {
        let b = g.read(self.used, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// used.idx as the device published it.
    pub fn used_idx(&self, g: &FakeGuest) -> u16 {
        let b = g.read(self.used + 2, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// Used element at ring position `i`.
    pub fn used_elem(&self, g: &FakeGuest, i: u16) -> UsedElem {
        let b = g.read(self.used + 4 + 8 * (i % self.size) as u64, 8);
        UsedElem { id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]), len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]) }
    }

    /// Elements the device returned since the last call, in order.
    pub fn take_used(&mut self, g: &FakeGuest) -> Vec<UsedElem> {
        let now = self.used_idx(g);
        let mut v = Vec::new();
        while self.used_seen != now {
            v.push(self.used_elem(g, self.used_seen));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        v
    }

    /// Guest TX: writes `hdr` + `frame` at `buf` as descriptor `i` (one buffer) and makes it
    /// available.
    pub fn tx_one(&mut self, g: &FakeGuest, i: u16, buf: u64, hdr: &[u8], frame: &[u8]) {
        g.write(buf, hdr);
        g.write(buf + hdr.len() as u64, frame);
        self.set_desc(g, i, Desc { addr: buf, len: (hdr.len() + frame.len()) as u32, flags: 0, next: 0 });
        self.push(g, i);
    }

    /// Guest RX: posts descriptor `i` as a writable buffer of `len` bytes at `buf`.
    pub fn rx_one(&mut self, g: &FakeGuest, i: u16, buf: u64, len: u32) {
        self.set_desc(g, i, Desc { addr: buf, len, flags: VIRTQ_DESC_F_WRITE, next: 0 });
        self.push(g, i);
    }
}

/// One buffer of a chain the fake driver posts on a packed ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable (guest RX).
    pub write: bool,
}

/// The driver side of a packed ring in a [`FakeGuest`]: posts chains the way a virtio driver
/// does (descriptors at consecutive positions, the head's flags written last, wrap counters
/// flipping at the ring's end) and reads used descriptors back in order.
#[derive(Debug)]
pub struct FakePackedRing {
    /// Ring size (any value in 1..=32768).
    pub size: u16,
    /// Descriptor ring GPA.
    pub desc: u64,
    /// Driver event suppression GPA.
    pub driver_event: u64,
    /// Device event suppression GPA.
    pub device_event: u64,
    /// The driver's next avail position and wrap counter.
    pub avail: (u16, bool),
    /// The driver's next used position and wrap counter.
    pub used: (u16, bool),
    /// Buffers posted and not yet used, in order: (id, descriptors).
    pub posted: std::collections::VecDeque<(u16, u16)>,
}

impl FakePackedRing {
    /// A ring of `size` at `gpa` (descriptors, then the two event areas), zeroed.
    pub fn new(g: &FakeGuest, gpa: u64, size: u16) -> FakePackedRing {
        let driver_event = gpa + 16 * size as u64;
        let device_event = driver_event + 4;
        g.write(gpa, &vec![0u8; 16 * size as usize + 8]);
        FakePackedRing {
            size,
            desc: gpa,
            driver_event,
            device_event,
            avail: (0, true),
            used: (0, true),
            posted: std::collections::VecDeque::new(),
        }
    }

    /// The frontend-virtual ring addresses (SET_VRING_ADDR: desc, "avail" = driver event area,
    /// "used" = device event area).
    pub fn addrs(&self) -> RingAddrs {
        RingAddrs {
            desc: FakeGuest::uva(self.desc),
            avail: FakeGuest::uva(self.driver_event),
            used: FakeGuest::uva(self.device_event),
        }
    }

    /// The device's view through `mem`.
    pub fn packed(&self, mem: &GuestMemory) -> PackedRing {
        PackedRing::new(mem, self.addrs(), self.size as u32).expect("fake packed ring translates")
    }

    /// The SET_VRING_BASE value of the driver's current avail state.
    pub fn base(&self) -> u16 {
        crate::packed::state(self.avail.0, self.avail.1)
    }

    /// Starts both sides at position `pos` with wrap counter `wrap` (as after a migration).
    pub fn start_at(&mut self, pos: u16, wrap: bool) {
        self.avail = (pos, wrap);
        self.used = (pos, wrap);
    }

    /// Writes descriptor `pos` raw (hostile tests write what they like).
    pub fn set_desc(&self, g: &FakeGuest, pos: u16, d: PackedDesc) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.id.to_le_bytes());
        b[14..16].copy_from_slice(&d.flags.to_le_bytes());
        g.write(self.desc + 16 * (pos % self.size) as u64, &b);
    }

    /// Descriptor `pos` as it is in memory.
    pub fn get_desc(&self, g: &FakeGuest, pos: u16) -> PackedDesc {
        let b = g.read(self.desc + 16 * (pos % self.size) as u64, 16);
        PackedDesc {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            id: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    fn step(&self, (p, w): (u16, bool)) -> (u16, bool) {
        if p + 1 == self.size {
            (0, !w)
        } else {
            (p + 1, w)
        }
    }

    /// Posts `bufs` as one chain with buffer `id` (`extra` flags OR-ed into every descriptor),
    /// the head's flags last. Returns the head position.
    pub fn post_flags(&mut self, g: &FakeGuest, id: u16, bufs: &[Buf], extra: u16) -> u16 {
        let head = self.avail;
        let mut head_desc = PackedDesc::default();
        let mut at = self.avail;
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = avail_used_flags(at.1) | extra;
            if b.write {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            if i + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let d = PackedDesc { addr: b.addr, len: b.len, id, flags };
            if i == 0 {
                head_desc = d;
                // Until the whole chain is written the head must not look available: AVAIL ==
                // USED is never available.
                self.set_desc(g, at.0, PackedDesc { flags: used_flags(!at.1), ..d });
            } else {
                self.set_desc(g, at.0, d);
            }
            at = self.step(at);
        }
        self.posted.push_back((id, bufs.len() as u16));
        self.avail = at;
        self.set_desc(g, head.0, head_desc);
        head.0
    }

    /// Posts `bufs` as one chain with buffer `id`.
    pub fn post(&mut self, g: &FakeGuest, id: u16, bufs: &[Buf]) -> u16 {
        self.post_flags(g, id, bufs, 0)
    }

    /// Posts an indirect descriptor: a table of `entries` (packed layout; only WRITE counts)
    /// written at `table`, as buffer `id`.
    pub fn post_indirect(&mut self, g: &FakeGuest, id: u16, table: u64, entries: &[Buf]) -> u16 {
        let mut raw = Vec::new();
        for b in entries {
            raw.extend_from_slice(&b.addr.to_le_bytes());
            raw.extend_from_slice(&b.len.to_le_bytes());
            raw.extend_from_slice(&0u16.to_le_bytes());
            raw.extend_from_slice(&(if b.write { VIRTQ_DESC_F_WRITE } else { 0 }).to_le_bytes());
        }
        g.write(table, &raw);
        let pos = self.post_flags(g, id, &[Buf { addr: table, len: raw.len() as u32, write: false }], 0);
        let mut d = self.get_desc(g, pos);
        d.flags |= VIRTQ_DESC_F_INDIRECT;
        self.set_desc(g, pos, d);
        if let Some(last) = self.posted.back_mut() {
            last.1 = 1;
        }
        pos
    }

    /// Guest TX: `hdr` + `frame` at `buf` as one buffer with id `id`.
    pub fn tx_one(&mut self, g: &FakeGuest, id: u16, buf: u64, hdr: &[u8], frame: &[u8]) {
        g.write(buf, hdr);
        g.write(buf + hdr.len() as u64, frame);
        self.post(g, id, &[Buf { addr: buf, len: (hdr.len() + frame.len()) as u32, write: false }]);
    }

    /// Guest RX: posts a writable buffer of `len` bytes at `buf` with id `id`.
    pub fn rx_one(&mut self, g: &FakeGuest, id: u16, buf: u64, len: u32) {
        self.post(g, id, &[Buf { addr: buf, len, write: true }]);
    }

    /// Buffers `(id, len)` the device returned since the last call, in order. The driver's
    /// in-order walk: the used descriptor at its used position names the last buffer it returns
    /// (IN_ORDER lets one used descriptor cover a batch; the others come back with length 0);
    /// the used position skips every returned buffer's descriptors.
    pub fn take_used(&mut self, g: &FakeGuest) -> Vec<(u16, u32)> {
        let mut v = Vec::new();
        loop {
            let d = self.get_desc(g, self.used.0);
            let (a, u) = (d.flags & VIRTQ_DESC_F_AVAIL != 0, d.flags & VIRTQ_DESC_F_USED != 0);
            if !(a == u && u == self.used.1) {
                return v;
            }
            while let Some((id, n)) = self.posted.pop_front() {
                v.push((id, if id == d.id { d.len } else { 0 }));
                for _ in 0..n {
                    self.used = self.step(self.used);
                }
                if id == d.id {
                    break;
                }
            }
        }
    }

    /// Used descriptors written in the ring now (positions whose flags say used in the current
    /// used wrap), counted from the driver's used position over `n` positions: how many the device
    /// wrote for a burst.
    pub fn used_written(&self, g: &FakeGuest, n: u16) -> usize {
        let mut at = self.used;
        let mut k = 0;
        for _ in 0..n {
            let d = self.get_desc(g, at.0);
            if d.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) == used_flags(at.1) {
                k += 1;
            }
            at = self.step(at);
        }
        k
    }

    /// Forgets what was posted: every buffer came back (for benches that skip the walk).
    pub fn forget_used(&mut self) {
        self.used = self.avail;
        self.posted.clear();
    }

    /// Sets the driver's event suppression.
    pub fn set_driver_event(&self, g: &FakeGuest, off_wrap: u16, flags: u16) {
        g.write(self.driver_event, &le16(off_wrap));
        g.write(self.driver_event + 2, &le16(flags));
    }

    /// The device's event suppression flags.
    pub fn device_event_flags(&self, g: &FakeGuest) -> u16 {
        let b = g.read(self.device_event + 2, 2);
        u16::from_le_bytes([b[0], b[1]])
    }
}
