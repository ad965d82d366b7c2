//! The TCP state machine of a tracked connection: a pure function from (state, direction,
//! segment) to the next state, or `None` for a segment that does not fit the connection
//! (counted invalid, dropped, the state unchanged). Modelled on the states of Linux
//! nf_conntrack (`SYN_SENT2` is its simultaneous-open state), written from the RFC 793 diagram.
//!
//! Sequence sanity: the tracker remembers, per direction, the highest `seq + len` sent and the
//! largest scaled window advertised. A SYN-ACK must acknowledge the SYN; a RST is accepted only
//! when its sequence number is within the receiver's window of what the sender sent last
//! (otherwise it is invalid and the connection is untouched: a blind RST does not kill it).

use crate::conntrack::flow::{tcp_flags, Flow};

/// A TCP connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// The original direction sent a SYN.
    SynSent = 1,
    /// Both sides sent a SYN without an ACK (simultaneous open).
    SynSent2 = 2,
    /// The reply direction answered SYN-ACK.
    SynRecv = 3,
    /// The handshake completed.
    Established = 4,
    /// One side sent a FIN.
    FinWait = 5,
    /// The FIN was acknowledged; the other side may still send.
    CloseWait = 6,
    /// Both sides sent a FIN; the last ACK is awaited.
    LastAck = 7,
    /// Closed in order; kept a while to absorb late segments.
    TimeWait = 8,
    /// Reset.
    Close = 9,
}

impl TcpState {
    /// From its code (1..=9).
    pub fn from_code(c: u8) -> Option<TcpState> {
        use TcpState::*;
        [SynSent, SynSent2, SynRecv, Established, FinWait, CloseWait, LastAck, TimeWait, Close]
            .get(c.checked_sub(1)? as usize)
            .copied()
    }

    /// The name as in `conntrack -L`.
    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            SynSent => "SYN_SENT",
            SynSent2 => "SYN_SENT2",
            SynRecv => "SYN_RECV",
            Established => "ESTABLISHED",
            FinWait => "FIN_WAIT",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
        }
    }
}

/// Per direction (0 original, 1 reply): what the tracker remembers of the sequence space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seq {
    /// Highest `seq + len` sent.
    pub end: [u32; 2],
    /// Largest window advertised (scaled).
    pub win: [u32; 2],
    /// Window scale each side announced in its SYN.
    pub wscale: [u8; 2],
    /// Which direction sent the first FIN (0 none, 1 original, 2 reply).
    pub fin: u8,
}

/// `a` is after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Seq {
    /// The sequence space after the first SYN of the original direction.
    pub fn open(f: &Flow) -> Seq {
        let mut s = Seq::default();
        s.sent(0, f);
        s
    }

    fn sent(&mut self, d: usize, f: &Flow) {
        let end = f.seq.wrapping_add(f.seg_len);
        if self.end[d] == 0 || after(end, self.end[d]) || f.flags & tcp_flags::SYN != 0 {
            self.end[d] = end;
        }
        if f.flags & tcp_flags::SYN != 0 {
            self.wscale[d] = f.wscale;
        }
        // The window of a SYN is never scaled (RFC 7323).
        let shift = if f.flags & tcp_flags::SYN != 0 { 0 } else { self.wscale[d] };
        self.win[d] = self.win[d].max((f.win as u32) << shift).max(1);
    }

    /// A RST from direction `d` is within the receiver's window of what `d` sent last.
    fn rst_in_window(&self, d: usize, f: &Flow) -> bool {
        let w = self.win[1 - d].max(1) as i64;
        let off = f.seq.wrapping_sub(self.end[d]) as i32 as i64;
        // A RST answering a segment may carry seq 0 with ACK (RFC 793 reset generation):
        // then its ACK must acknowledge what the other side sent.
        let acks = f.flags & tcp_flags::ACK != 0 && f.ack == self.end[1 - d];
        (-w..=w).contains(&off) || (f.seq == 0 && acks)
    }
}

/// The state after segment `f` from direction `d` (0 original, 1 reply) in state `s`, updating
/// `q`; `None`: invalid (`q` is left as it was).
pub fn next(s: TcpState, d: usize, f: &Flow, q: &mut Seq) -> Option<TcpState> {
    use TcpState::*;
    let fl = f.flags;
    let (syn, ack, fin, rst) =
        (fl & tcp_flags::SYN != 0, fl & tcp_flags::ACK != 0, fl & tcp_flags::FIN != 0, fl & tcp_flags::RST != 0);
    if rst {
        return if syn { None } else { q.rst_in_window(d, f).then_some(Close) };
    }
    if syn && fin {
        return None;
    }
    let mut n = *q;
    let next = match (s, d, syn, ack) {
        // A retransmitted SYN.
        (SynSent, 0, true, false) => Some(SynSent),
        // The SYN-ACK must acknowledge the SYN.
        (SynSent | SynSent2, 1, true, true) if f.ack == q.end[0] => Some(SynRecv),
        // Simultaneous open: the other side's own SYN.
        (SynSent | SynSent2, 1, true, false) => Some(SynSent2),
        (SynSent2, 0, true, true) if f.ack == q.end[1] => Some(SynRecv),
        (SynSent2, 0, true, false) => Some(SynSent2),
        // Retransmitted SYN-ACK or SYN while the handshake completes.
        (SynRecv, _, true, _) => Some(SynRecv),
        (SynRecv, _, false, true) if !fin => Some(Established),
        (SynRecv | Established, _, false, _) if fin => {
            n.fin = d as u8 + 1;
            Some(FinWait)
        }
        (Established, _, false, _) => Some(Established),
        // The closer's own segments, or the other side's ACK of the FIN.
        (FinWait, _, false, _) if fin && n.fin != d as u8 + 1 => Some(LastAck),
        (FinWait, _, false, true) if n.fin != d as u8 + 1 => Some(CloseWait),
        (FinWait, _, false, _) => Some(FinWait),
        (CloseWait, _, false, _) if fin && n.fin != d as u8 + 1 => Some(LastAck),
        (CloseWait, _, false, _) => Some(CloseWait),
        (LastAck, _, false, true) if !fin => Some(TimeWait),
        (LastAck, _, false, _) => Some(LastAck),
        (TimeWait | Close, _, false, _) => Some(s),
        // A new SYN in the original direction reopens a closed connection.
        (TimeWait | Close, 0, true, false) => {
            n = Seq::default();
            Some(SynSent)
        }
        _ => None,
    }?;
    n.sent(d, f);
    *q = n;
    Some(next)
}
