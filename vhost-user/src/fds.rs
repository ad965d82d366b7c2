//! File descriptors a frontend hands us, checked before anything uses them.
//!
//! A frontend is hostile: the fd it calls a kick or call eventfd may be a pipe, a regular file,
//! a socket or its memory file, and the file it calls guest memory may live on a filesystem
//! whose page faults wait for another process (FUSE) or a server (NFS). Each check here runs on
//! the control thread when the fd arrives, and refuses what the data path could block on:
//!
//! - [`check_eventfd`]: kick and call fds must be eventfds (the `/proc/self/fd` link names an
//!   anonymous `[eventfd]` inode). Anything else is refused at SET_VRING_KICK / SET_VRING_CALL.
//! - [`set_nonblocking`]: the call eventfd is switched to `O_NONBLOCK`, so that the lcore's write
//!   fails with `EAGAIN` instead of sleeping when the counter is full. The flag belongs to the
//!   open file description the frontend shares, so the control thread checks it again
//!   ([`is_nonblocking`]) and [`crate::call`] covers a frontend that clears it.
//! - [`check_memory_file`]: a memory region's file must be shared memory (tmpfs, which memfds
//!   are, hugetlbfs or ramfs), whose page faults never wait on anything outside the kernel.
//!   Whether it is sealed against shrinking is reported ([`MemoryFile::sealed`]); one that is
//!   not can still be truncated under us, which [`crate::sigbus`] survives.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

/// What the `/proc/self/fd` link of `fd` says it is (`anon_inode:[eventfd]`, `pipe:[1234]`,
/// `/memfd:guest (deleted)`, `socket:[99]`, a path), or why it could not be read.
pub fn describe(fd: RawFd) -> String {
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => format!("fd {fd} (unreadable link: {e})"),
    }
}

/// `Ok` when `f` is an eventfd; otherwise a message naming what it is instead.
///
/// The `/proc/self/fd` link is the one test that tells an eventfd from the other anonymous
/// inodes (timerfd, signalfd, epoll). Without `/proc` we fall back to `fstat`: an anonymous
/// inode has no file type bits, and none of them can make a read or a write block forever
/// (the others refuse 8-byte writes), while pipes, sockets, FIFOs and files are refused.
pub fn check_eventfd(f: &File) -> Result<(), String> {
    let fd = f.as_raw_fd();
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) if p.as_os_str() == "anon_inode:[eventfd]" => Ok(()),
        Ok(p) => Err(format!("{} is not an eventfd", p.to_string_lossy())),
        Err(_) => {
            // SAFETY: an all-zero `stat` is a valid out-parameter; fstat only writes it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fd is open (borrowed from `f`) and st is a valid out-parameter.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return Err(format!("fstat failed: {}", std::io::Error::last_os_error()));
            }
            if st.st_mode & libc::S_IFMT == 0 {
                Ok(())
            } else {
                Err(format!("file type {:#o} is not an eventfd", st.st_mode & libc::S_IFMT))
            }
        }
    }
}

fn status_flags(fd: RawFd) -> std::io::Result<libc::c_int> {
    // SAFETY: F_GETFL reads the status flags of an fd the caller keeps open; no memory is
    // passed.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

/// Sets `O_NONBLOCK` on `f`'s open file description (which the frontend shares).
pub fn set_nonblocking(f: &File) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    let fl = status_flags(fd)?;
    // SAFETY: F_SETFL on an fd we keep open, with the flags just read plus O_NONBLOCK.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True while `O_NONBLOCK` is set on `fd` (false also when the flags cannot be read).
pub fn is_nonblocking(fd: RawFd) -> bool {
    status_flags(fd).is_ok_and(|fl| fl & libc::O_NONBLOCK != 0)
}

/// What [`check_memory_file`] found out about a memory region's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFile {
    /// `statfs` filesystem magic.
    pub fs: i64,
    /// Sealed against shrinking (`F_SEAL_SHRINK`, as QEMU's memfd backend does by default):
    /// nobody can truncate it under us.
    pub sealed: bool,
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// `Ok` when `f` is shared memory a guest's RAM may live in (tmpfs, which includes memfds,
/// hugetlbfs or ramfs); otherwise a message naming the filesystem and the fix.
pub fn check_memory_file(f: &File) -> Result<MemoryFile, String> {
    let fd = f.as_raw_fd();
    // SAFETY: an all-zero `statfs` is a valid out-parameter.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (borrowed from `f`) and sfs is a valid out-parameter.
    if unsafe { libc::fstatfs(fd, &mut sfs) } != 0 {
        return Err(format!("{}: fstatfs failed: {}", describe(fd), std::io::Error::last_os_error()));
    }
    let fs = sfs.f_type as i64;
    if ![TMPFS_MAGIC, HUGETLBFS_MAGIC, RAMFS_MAGIC].contains(&fs) {
        return Err(format!(
            "{} is on a filesystem of type {fs:#x}, not shared memory: a page fault there can wait on \
             another process or a server and stall the lcore; give the guest a memfd, /dev/shm or \
             hugetlbfs memory backend",
            describe(fd)
        ));
    }
    // SAFETY: F_GET_SEALS takes no argument; a file that is not a memfd answers EINVAL.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    Ok(MemoryFile { fs, sealed: seals >= 0 && seals & libc::F_SEAL_SHRINK != 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn eventfd() -> File {
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd we own.
        unsafe { File::from_raw_fd(fd) }
    }

    fn pipe() -> (File, File) {
        let mut p = [0; 2];
        // SAFETY: p has room for two fds.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds we own.
        unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) }
    }

    #[test]
    fn only_eventfds_pass() {
        assert_eq!(check_eventfd(&eventfd()), Ok(()));
        let (r, w) = pipe();
        assert!(check_eventfd(&r).unwrap_err().contains("pipe:["), "names what it is");
        assert!(check_eventfd(&w).is_err());
        let m = crate::testutil::memfd("not-an-eventfd", 4096);
        assert!(check_eventfd(&m).unwrap_err().contains("memfd:not-an-eventfd"));
        assert!(check_eventfd(&File::open("/proc/self/status").unwrap()).is_err(), "a regular file");
    }

    #[test]
    fn nonblocking_is_set_and_seen() {
        let e = eventfd();
        assert!(!is_nonblocking(e.as_raw_fd()));
        set_nonblocking(&e).unwrap();
        assert!(is_nonblocking(e.as_raw_fd()));
        // The flag is the open file description's: a duplicate (the frontend's copy) sees it.
        let dup = e.try_clone().unwrap();
        assert!(is_nonblocking(dup.as_raw_fd()));
    }

    #[test]
    fn memory_files_must_be_shared_memory() {
        let m = crate::testutil::memfd("ram", 4096);
        let info = check_memory_file(&m).unwrap();
        assert_eq!((info.fs, info.sealed), (TMPFS_MAGIC, false), "a memfd without seals");
        // SAFETY: F_ADD_SEALS with a seal mask; the testutil memfd allows sealing.
        assert_eq!(unsafe { libc::fcntl(m.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) }, 0);
        assert!(check_memory_file(&m).unwrap().sealed);
        let e = check_memory_file(&File::open("/proc/self/status").unwrap()).unwrap_err();
        assert!(e.contains("not shared memory") && e.contains("memfd"), "{e}");
    }
}
