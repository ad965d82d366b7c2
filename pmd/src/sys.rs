//! Thin wrappers over the Linux calls the kernel-facing drivers (`tap`, `af_xdp`) share:
//! interface names and indexes, `ifreq` ioctls (flags, MAC address), and errno helpers.
//!
//! Control path only. Every unsafe block is a single libc call on memory we own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `IFNAMSIZ`: interface names are at most 15 bytes plus the NUL.
pub const IFNAMSIZ: usize = 16;

/// `struct ifreq` (40 bytes on 64-bit Linux): a name and a 24-byte union.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IfReq {
    /// NUL-terminated interface name.
    pub name: [u8; IFNAMSIZ],
    /// The union (`ifr_flags`, `ifr_hwaddr`, `ifr_ifindex`, `ifr_data`, ...).
    pub data: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

impl std::fmt::Debug for IfReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        f.debug_struct("IfReq").field("name", &String::from_utf8_lossy(&self.name[..end])).finish_non_exhaustive()
    }
}

impl IfReq {
    /// An `ifreq` for interface `name` (checked with [`check_ifname`]).
    pub fn new(name: &str) -> Result<IfReq, String> {
        check_ifname(name)?;
        let mut r = IfReq { name: [0; IFNAMSIZ], data: [0; 24] };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }

    /// `ifr_flags` (a C short).
    pub fn flags(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    /// Sets `ifr_flags`.
    pub fn set_flags(&mut self, f: i16) {
        self.data[..2].copy_from_slice(&f.to_ne_bytes());
    }

    /// `ifr_hwaddr.sa_data[0..6]`.
    pub fn hwaddr(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.data[2..8]);
        m
    }
}

/// Checks that `name` can be a Linux interface name: 1..=15 bytes, no `/`, `:`, whitespace or
/// NUL, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(format!("interface name '{name}' must have 1 to {} characters", IFNAMSIZ - 1));
    }
    if name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(format!("'{name}' is not a valid interface name (no '/', ':' or spaces)"));
    }
    Ok(())
}

/// The index of interface `name`, or `None` when there is no such interface.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// A datagram socket for interface ioctls.
pub fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs an `ifreq` ioctl on `fd`.
pub fn ifreq_ioctl(fd: &impl AsRawFd, req: libc::c_ulong, r: &mut IfReq) -> io::Result<()> {
    // SAFETY: r is a valid, writable 40-byte ifreq for the duration of the call; the requests
    // used here read and write only within it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MAC address of interface `name`.
pub fn mac_of(name: &str) -> io::Result<[u8; 6]> {
    let s = ioctl_socket()?;
    let mut r = IfReq::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    ifreq_ioctl(&s, libc::SIOCGIFHWADDR, &mut r)?;
    Ok(r.hwaddr())
}

/// Sets interface `name` administratively up (`ip link set NAME up`).
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ioctl_socket()?;
    let mut r = IfReq::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    ifreq_ioctl(&s, libc::SIOCGIFFLAGS, &mut r)?;
    if r.flags() & libc::IFF_UP as i16 != 0 {
        return Ok(());
    }
    r.set_flags(r.flags() | libc::IFF_UP as i16);
    ifreq_ioctl(&s, libc::SIOCSIFFLAGS, &mut r)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; no memory is passed.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `flock(2)` an exclusive lock on `f`: waits for it when `wait`, else returns
/// `Ok(false)` when another open file description holds it. The lock goes with the last
/// descriptor of this open file (and with the process).
pub fn flock_exclusive(f: &impl AsRawFd, wait: bool) -> io::Result<bool> {
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    loop {
        // SAFETY: flock on a descriptor we hold; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Sets the calling thread's timer slack (how late the kernel may end its sleeps, to batch
/// wake-ups; 50 us by default) to `ns` nanoseconds.
pub fn set_timer_slack(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes a value, no memory.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the calling thread run on the CPUs `cpus` only.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set (a plain bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("CPU {c} is beyond CPU_SETSIZE")));
        }
        // SAFETY: `c` is below CPU_SETSIZE, the set's size in bits.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when the error is `EPERM` or `EACCES` (missing privileges).
pub fn is_perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("'{s}' is not a MAC address like 02:00:00:00:00:01"));
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("'{s}' is not a MAC address like 02:00:00:00:00:01"))?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        assert!(check_ifname("veth0").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert_eq!(parse_mac("02:00:0a:ff:00:01").unwrap(), [2, 0, 10, 255, 0, 1]);
        assert!(parse_mac("02:00:0a:ff:00").is_err());
        assert!(parse_mac("02:00:0a:ff:00:zz").is_err());
        assert_eq!(fmt_mac(&[2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
        assert_eq!(if_index("lo"), Some(1));
        assert_eq!(if_index("no-such-if0"), None);
    }
}
