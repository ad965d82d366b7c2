//! bpf(2) without libbpf: the XSKMAP, the 6-instruction redirect program, and the XDP link.
//!
//! The program, as raw eBPF:
//!
//! ```text
//!   r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
//!   r1 = map[XSKMAP]              ; ld_imm64 with BPF_PSEUDO_MAP_FD (two slots)
//!   r3 = XDP_PASS                 ; flags: the action when the queue has no socket
//!   call bpf_redirect_map         ; redirect to the socket of this rx queue
//!   exit                          ; r0 = XDP_REDIRECT, or XDP_PASS
//! ```
//!
//! `bpf_redirect_map` takes the fallback action in the low bits of its flags (Linux 5.3+), so no
//! map lookup is needed first: frames of queues without a socket go on to the kernel stack.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` attach type (links).
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`.
pub const XDP_PASS: i32 = 2;
/// `XDP_FLAGS_SKB_MODE`.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst (low nibble) and src (high nibble)
/// registers, offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst | src << 4`.
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// The redirect program for the XSKMAP whose fd is `map_fd`.
pub fn redirect_program(map_fd: i32) -> [Insn; 6] {
    [
        // BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + offsetof(struct xdp_md, rx_queue_index))
        insn(0x61, 2, 1, 16, 0),
        // BPF_LD | BPF_DW | BPF_IMM: r1 = map (the second slot holds the upper 32 bits: 0)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = XDP_PASS
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // BPF_JMP | BPF_CALL
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT
        insn(0x95, 0, 0, 0, 0),
    ]
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first fields of `struct bpf_prog_info`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
}

/// Calls bpf(2) with `attr`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised repr(C) bpf_attr prefix of the given size; the kernel
    // zero-extends it and reads/writes only within that size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn fd_of(r: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a new descriptor that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    n[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    n
}

/// Creates an XSKMAP with `entries` slots (one per rx queue of the interface).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("fp_xsks"),
        ..Default::default()
    };
    match sys_bpf(BPF_MAP_CREATE, &mut a) {
        Ok(fd) => Ok(fd_of(fd)),
        // Kernels before 4.15 reject map names.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            a.map_name = [0; 16];
            sys_bpf(BPF_MAP_CREATE, &mut a).map(fd_of)
        }
        Err(e) => Err(e),
    }
}

/// Sets `map[key] = value` (an XSKMAP slot to a socket fd).
pub fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Loads the redirect program for `map`. On failure the error carries the verifier's log.
pub fn load_redirect_program(map: &OwnedFd) -> Result<OwnedFd, (io::Error, String)> {
    let prog = redirect_program(map.as_raw_fd());
    let license = c"GPL";
    let mut a = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16("fp_xdp_redir"),
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    if let Ok(fd) = sys_bpf(BPF_PROG_LOAD, &mut a) {
        return Ok(fd_of(fd));
    }
    // Older kernels refuse the name or the expected attach type: retry plainly, with the log.
    let mut log = vec![0u8; 64 * 1024];
    a.prog_name = [0; 16];
    a.expected_attach_type = 0;
    a.log_level = 1;
    a.log_size = log.len() as u32;
    a.log_buf = log.as_mut_ptr() as u64;
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(fd_of(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).trim().to_string()))
        }
    }
}

/// Attaches `prog` to interface `ifindex` with a bpf link (`flags`: the XDP mode). The program
/// stays attached while the returned fd (or a copy) is open, and goes when the process exits.
pub fn link_create(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a =
        LinkCreateAttr { prog_fd: prog.as_raw_fd() as u32, target_ifindex: ifindex, attach_type: BPF_XDP, flags };
    sys_bpf(BPF_LINK_CREATE, &mut a).map(fd_of)
}

/// The kernel's id of a loaded program.
pub fn prog_id(prog: &OwnedFd) -> io::Result<u32> {
    let mut info = ProgInfo::default();
    let mut a = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The program's bytes, as the kernel reads them (little-endian host).
    #[test]
    fn program_golden_bytes() {
        let p = redirect_program(7);
        // SAFETY: Insn is repr(C), 8 bytes, no padding; viewing it as bytes is sound.
        let b = unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<u8>(), 48) };
        #[rustfmt::skip]
        let want: [u8; 48] = [
            0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
            0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00,
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(b, &want);
    }

    /// bpf_attr prefixes shared with the kernel.
    #[test]
    fn attr_layouts_are_pinned() {
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(std::mem::size_of::<MapCreateAttr>(), 44);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(offset_of!(ProgInfo, id), 4);
    }
}
