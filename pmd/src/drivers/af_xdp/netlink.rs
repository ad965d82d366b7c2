//! rtnetlink, just enough for XDP: which program an interface has (`RTM_GETLINK`, `IFLA_XDP`),
//! and attaching or detaching one the old way (`RTM_SETLINK` with `IFLA_XDP_FD`), the fallback
//! for kernels without XDP bpf links (before 5.9) and for `replace=on`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const IFLA_XDP: u16 = 43;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const NETLINK_EXT_ACK: i32 = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `XDP_FLAGS_UPDATE_IF_NOEXIST`.
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
/// `XDP_FLAGS_REPLACE`: replace only the program given as `IFLA_XDP_EXPECTED_FD`.
pub const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// How an XDP program is attached (`IFLA_XDP_ATTACHED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// No program.
    None,
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode.
    Skb,
    /// Offloaded to the NIC.
    Hw,
    /// Several modes at once.
    Multi,
}

impl Attached {
    /// The name `ip link` uses.
    pub fn name(self) -> &'static str {
        match self {
            Attached::None => "none",
            Attached::Native => "native (xdpdrv)",
            Attached::Skb => "skb (xdpgeneric)",
            Attached::Hw => "offloaded (xdpoffload)",
            Attached::Multi => "several modes",
        }
    }
}

/// What `RTM_GETLINK` says about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// The XDP program's mode.
    pub attached: Attached,
    /// Its id (0 when none).
    pub prog_id: u32,
    /// `IFLA_NUM_RX_QUEUES` (allocated rx queues).
    pub num_rx_queues: u32,
}

/// A failed netlink request: the OS error and the kernel's extended-ack text, if any.
#[derive(Debug)]
pub struct NlError {
    /// The error (a raw OS error when the kernel answered with one).
    pub err: io::Error,
    /// The kernel's explanation (`NLMSGERR_ATTR_MSG`), or empty.
    pub ext: String,
}

impl NlError {
    /// The errno, when there is one.
    pub fn errno(&self) -> Option<i32> {
        self.err.raw_os_error()
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ext.is_empty() {
            write!(f, "{}", self.err)
        } else {
            write!(f, "{} ({})", self.err, self.ext)
        }
    }
}

impl From<io::Error> for NlError {
    fn from(err: io::Error) -> NlError {
        NlError { err, ext: String::new() }
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one int; failure only loses the extended error text.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            NETLINK_EXT_ACK,
            &one as *const libc::c_int as *const libc::c_void,
            4,
        )
    };
    Ok(fd)
}

/// A message being built: nlmsghdr + ifinfomsg + attributes.
struct Msg {
    b: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16, ifindex: u32) -> Msg {
        let mut b = vec![0u8; 16 + 16];
        b[4..6].copy_from_slice(&ty.to_ne_bytes());
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // ifinfomsg: family AF_UNSPEC, type 0, index, flags 0, change 0
        b[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        Msg { b }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.b.extend_from_slice(&(len as u16).to_ne_bytes());
        self.b.extend_from_slice(&ty.to_ne_bytes());
        self.b.extend_from_slice(data);
        self.b.resize(self.b.len().next_multiple_of(4), 0);
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.b.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.b.len() - at) as u16;
        self.b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.b.len() as u32;
        self.b[0..4].copy_from_slice(&len.to_ne_bytes());
        self.b
    }
}

/// Iterates over netlink attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload))
    })
}

fn u32_of(p: &[u8]) -> u32 {
    p.get(..4).map_or(0, |x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
}

/// Sends `msg` and reads replies until an ACK / error / DONE; calls `on_msg` on other messages.
fn transact(msg: Vec<u8>, mut on_msg: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
    let fd = socket()?;
    // SAFETY: sockaddr_nl zeroed is the kernel as destination.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and sa are valid for the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let mut b = &buf[..n as usize];
        while b.len() >= 16 {
            let len = u32_of(b) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            if len < 16 || len > b.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply").into());
            }
            let body = &b[16..len];
            match ty {
                NLMSG_ERROR => {
                    let err = u32_of(body) as i32;
                    if err == 0 {
                        return Ok(());
                    }
                    // Extended ack: the original header (and payload unless capped) follows.
                    let mut text = String::new();
                    let orig_len = if body.len() >= 20 { u32_of(&body[4..]) as usize } else { 0 };
                    let capped = u16::from_ne_bytes([b[6], b[7]]) & 0x100 != 0;
                    let skip = 4 + if capped { 16 } else { orig_len.next_multiple_of(4) };
                    if body.len() > skip {
                        for (t, p) in attrs(&body[skip..]) {
                            if t == NLMSGERR_ATTR_MSG {
                                text = String::from_utf8_lossy(p).trim_end_matches('\0').to_string();
                            }
                        }
                    }
                    return Err(NlError { err: io::Error::from_raw_os_error(-err), ext: text });
                }
                NLMSG_DONE => return Ok(()),
                _ => on_msg(ty, body),
            }
            b = &b[len.next_multiple_of(4).min(b.len())..];
        }
    }
}

/// Reads the XDP state and queue count of interface `ifindex`.
pub fn link_info(ifindex: u32) -> Result<LinkInfo, NlError> {
    let msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex).finish();
    let mut info = LinkInfo { attached: Attached::None, prog_id: 0, num_rx_queues: 0 };
    transact(msg, |_, body| {
        if body.len() < 16 {
            return;
        }
        for (t, p) in attrs(&body[16..]) {
            match t {
                IFLA_NUM_RX_QUEUES => info.num_rx_queues = u32_of(p),
                IFLA_XDP => {
                    for (t, p) in attrs(p) {
                        match t {
                            IFLA_XDP_ATTACHED => {
                                info.attached = match p.first().copied().unwrap_or(0) {
                                    0 => Attached::None,
                                    1 => Attached::Native,
                                    2 => Attached::Skb,
                                    3 => Attached::Hw,
                                    _ => Attached::Multi,
                                }
                            }
                            IFLA_XDP_PROG_ID => info.prog_id = u32_of(p),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    })?;
    Ok(info)
}

/// Attaches program `fd` (or detaches with -1) in the XDP mode given by `flags`; with
/// `expected`, only replaces that program (`XDP_FLAGS_REPLACE`).
pub fn set_xdp(ifindex: u32, fd: i32, flags: u32, expected: Option<i32>) -> Result<(), NlError> {
    let mut m = Msg::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    let at = m.nest_start(IFLA_XDP);
    m.attr(IFLA_XDP_FD, &fd.to_ne_bytes());
    let mut flags = flags;
    if let Some(e) = expected {
        flags |= XDP_FLAGS_REPLACE;
        m.attr(IFLA_XDP_EXPECTED_FD, &e.to_ne_bytes());
    }
    m.attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    m.nest_end(at);
    transact(m.finish(), |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let mut m = Msg::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 7);
        let at = m.nest_start(IFLA_XDP);
        m.attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        m.nest_end(at);
        let b = m.finish();
        assert_eq!(b.len(), 16 + 16 + 4 + 8);
        assert_eq!(u32_of(&b), 44);
        assert_eq!(&b[32..36], &[12, 0, 43, 0x80]);
        let got: Vec<_> = attrs(&b[32..]).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, IFLA_XDP);
        let inner: Vec<_> = attrs(got[0].1).collect();
        assert_eq!(inner, vec![(IFLA_XDP_FD, &[0xff, 0xff, 0xff, 0xff][..])]);
    }

    #[test]
    fn loopback_has_no_xdp_program() {
        let i = link_info(1).unwrap();
        assert_eq!(i.attached, Attached::None);
        assert_eq!(i.prog_id, 0);
        assert!(i.num_rx_queues >= 1);
    }
}
