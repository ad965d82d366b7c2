//! A fake guest for tests and benches (feature `test-utils`): memfd-backed guest memory mapped
//! through the real [`GuestMemory::map`] path (so a second table of the same memory is a real
//! SET_MEM_TABLE swap), and a driver-side split ring that writes descriptors and avail entries
//! the way a virtio driver does, including the broken ways a hostile one does.
//!
//! Guest-physical and frontend-virtual addresses differ on purpose (as with QEMU).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use crate::mem::{GuestMemory, RegionDesc};
use crate::ring::{avail_bytes, desc_bytes, Desc, RingAddrs, SplitRing, UsedElem, VIRTQ_DESC_F_WRITE};

/// Guest-physical start of the fake guest's RAM.
pub const GPA_BASE: u64 = 0x4000_0000;
/// Where the fake frontend has the same RAM in its own address space.
pub const UVA_BASE: u64 = 0x7f12_0000_0000;

/// An anonymous memory file of `len` bytes.
pub fn memfd(name: &str, len: usize) -> File {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: a valid C string; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
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
