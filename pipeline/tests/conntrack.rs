//! The connection tracker against scripted packet sequences: the TCP handshake, simultaneous
//! open, retransmitted SYN, RST in and out of window, FIN both ways, timeouts with an injected
//! clock (seconds passed in), UDP and ICMP pseudo-connections, related ICMP errors, rule-set
//! generations, limits; frames parsed from bytes (fragments refused); and a property test that
//! arbitrary packets never panic the tracker and never push it past its limits.

use fastpath_pipeline::conntrack::flow::tcp_flags::{ACK, FIN, RST, SYN};
use fastpath_pipeline::conntrack::{Conntrack, ConntrackConfig, Flow, FlowError, TcpState, Timeouts, Verdict};
use proptest::prelude::*;

const A: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1];
const B: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2];

fn table(capacity: usize, zone_limit: usize) -> Conntrack {
    Conntrack::new(ConntrackConfig { capacity, zones: 4, zone_limit, timeouts: Timeouts::default() }).unwrap()
}

/// A TCP segment from A:1000 to B:22 (`back`: from B:22 to A:1000).
fn seg(back: bool, flags: u8, seq: u32, ack: u32, len: u32) -> Flow {
    let syn_fin = (flags & SYN != 0) as u32 + (flags & FIN != 0) as u32;
    let f = Flow {
        src: A,
        dst: B,
        proto: 6,
        sport: 1000,
        dport: 22,
        flags,
        seq,
        ack,
        win: 65535,
        seg_len: len + syn_fin,
        ..Default::default()
    };
    if back {
        f.reversed()
    } else {
        f
    }
}

/// A scripted conversation: tracks each packet at time `now`, all allowed.
struct Script {
    ct: Conntrack,
    now: u64,
}

impl Script {
    fn new() -> Script {
        Script { ct: table(1024, 0), now: 1000 }
    }

    fn go(&mut self, f: Flow) -> Verdict {
        self.ct.track(0, &f, None, self.now, 1, |_| true)
    }

    fn state(&self) -> Option<TcpState> {
        self.ct.tcp_state(0, &seg(false, 0, 0, 0, 0))
    }

    /// SYN, SYN-ACK, ACK: client ISN 100, server ISN 5000.
    fn handshake(&mut self) {
        assert_eq!(self.go(seg(false, SYN, 100, 0, 0)), Verdict::New);
        assert_eq!(self.state(), Some(TcpState::SynSent));
        assert_eq!(self.go(seg(true, SYN | ACK, 5000, 101, 0)), Verdict::Established);
        assert_eq!(self.state(), Some(TcpState::SynRecv));
        assert_eq!(self.go(seg(false, ACK, 101, 5001, 0)), Verdict::Established);
        assert_eq!(self.state(), Some(TcpState::Established));
    }
}

#[test]
fn three_way_handshake_and_data_both_ways() {
    let mut s = Script::new();
    s.handshake();
    assert_eq!(s.go(seg(false, ACK, 101, 5001, 500)), Verdict::Established);
    assert_eq!(s.go(seg(true, ACK, 5001, 601, 1400)), Verdict::Established);
    assert_eq!(s.ct.len(), 1);
    assert_eq!(s.ct.zone_len(0), 1);
    assert_eq!(s.ct.zone_new(0), 1);
}

#[test]
fn only_a_syn_starts_a_connection() {
    let mut s = Script::new();
    for flags in [ACK, SYN | ACK, FIN | ACK, RST, 0] {
        assert_eq!(s.go(seg(false, flags, 1, 1, 0)), Verdict::Invalid, "{flags:#x}");
    }
    assert_eq!(s.go(seg(false, SYN | FIN, 1, 0, 0)), Verdict::Invalid);
    assert!(s.ct.is_empty());
}

#[test]
fn retransmitted_syn_and_syn_ack() {
    let mut s = Script::new();
    assert_eq!(s.go(seg(false, SYN, 100, 0, 0)), Verdict::New);
    assert_eq!(s.go(seg(false, SYN, 100, 0, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::SynSent));
    // A SYN-ACK that does not acknowledge the SYN is invalid and changes nothing.
    assert_eq!(s.go(seg(true, SYN | ACK, 5000, 999, 0)), Verdict::Invalid);
    assert_eq!(s.state(), Some(TcpState::SynSent));
    assert_eq!(s.go(seg(true, SYN | ACK, 5000, 101, 0)), Verdict::Established);
    assert_eq!(s.go(seg(true, SYN | ACK, 5000, 101, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::SynRecv));
    assert_eq!(s.ct.len(), 1);
}

#[test]
fn simultaneous_open() {
    let mut s = Script::new();
    assert_eq!(s.go(seg(false, SYN, 100, 0, 0)), Verdict::New);
    assert_eq!(s.go(seg(true, SYN, 5000, 0, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::SynSent2));
    assert_eq!(s.go(seg(false, SYN | ACK, 100, 5001, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::SynRecv));
    assert_eq!(s.go(seg(true, ACK, 5001, 101, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::Established));
}

#[test]
fn rst_in_window_closes_out_of_window_is_invalid() {
    let mut s = Script::new();
    s.handshake();
    // A blind RST far from the sequence space: dropped, the connection untouched.
    assert_eq!(s.go(seg(true, RST, 5001 + 10_000_000, 0, 0)), Verdict::Invalid);
    assert_eq!(s.state(), Some(TcpState::Established));
    assert_eq!(s.go(seg(false, RST, 101u32.wrapping_sub(3_000_000), 0, 0)), Verdict::Invalid);
    assert_eq!(s.state(), Some(TcpState::Established));
    // In window: closes.
    assert_eq!(s.go(seg(true, RST, 5001 + 100, 0, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::Close));
    // CLOSE times out after 10 s.
    s.now += 11;
    assert_eq!(s.ct.age(s.now, 1 << 20), 1);
    assert!(s.ct.is_empty());
}

#[test]
fn rst_answering_the_syn() {
    let mut s = Script::new();
    assert_eq!(s.go(seg(false, SYN, 100, 0, 0)), Verdict::New);
    assert_eq!(s.go(seg(true, RST | ACK, 0, 101, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::Close));
}

#[test]
fn fin_both_ways_to_time_wait_then_a_new_syn_reopens() {
    let mut s = Script::new();
    s.handshake();
    assert_eq!(s.go(seg(false, FIN | ACK, 101, 5001, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::FinWait));
    assert_eq!(s.go(seg(true, ACK, 5001, 102, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::CloseWait));
    assert_eq!(s.go(seg(true, ACK, 5001, 102, 300)), Verdict::Established);
    assert_eq!(s.go(seg(true, FIN | ACK, 5301, 102, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::LastAck));
    assert_eq!(s.go(seg(false, ACK, 102, 5302, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::TimeWait));
    // The same ports again: a new SYN reopens the connection.
    assert_eq!(s.go(seg(false, SYN, 90_000, 0, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::SynSent));
}

#[test]
fn fins_crossing() {
    let mut s = Script::new();
    s.handshake();
    assert_eq!(s.go(seg(false, FIN | ACK, 101, 5001, 0)), Verdict::Established);
    assert_eq!(s.go(seg(true, FIN | ACK, 5001, 101, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::LastAck));
    assert_eq!(s.go(seg(false, ACK, 102, 5002, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::TimeWait));
}

#[test]
fn timeouts_follow_the_state() {
    let mut s = Script::new();
    assert_eq!(s.go(seg(false, SYN, 100, 0, 0)), Verdict::New);
    s.now += 120;
    assert_eq!(s.ct.age(s.now, 1 << 20), 0, "SYN_SENT lives 120 s");
    s.now += 1;
    assert_eq!(s.ct.age(s.now, 1 << 20), 1);
    s.handshake();
    s.now += 4 * 86400;
    assert_eq!(s.ct.age(s.now, 1 << 20), 0, "ESTABLISHED lives 5 days");
    assert_eq!(s.go(seg(false, FIN | ACK, 101, 5001, 0)), Verdict::Established);
    assert_eq!(s.go(seg(true, FIN | ACK, 5001, 102, 0)), Verdict::Established);
    assert_eq!(s.go(seg(false, ACK, 102, 5002, 0)), Verdict::Established);
    assert_eq!(s.state(), Some(TcpState::TimeWait));
    s.now += 121;
    assert_eq!(s.ct.age(s.now, 1 << 20), 1, "TIME_WAIT lives 120 s");
    assert_eq!(s.ct.aged(), 2);
    // After aging, a non-SYN is invalid again.
    assert_eq!(s.go(seg(false, ACK, 102, 5002, 0)), Verdict::Invalid);
}

#[test]
fn aging_is_incremental() {
    let ct = table(4096, 0);
    for p in 0..1000u16 {
        let f = Flow { src: A, dst: B, proto: 17, sport: p, dport: 53, ..Default::default() };
        assert_eq!(ct.track(1, &f, None, 0, 1, |_| true), Verdict::New);
    }
    // One bucket per call: never more than WAYS removals at once.
    let mut removed = 0;
    let mut calls = 0;
    while removed < 1000 {
        let n = ct.age(31, 1);
        assert!(n <= fastpath_pipeline::conntrack::WAYS);
        removed += n;
        calls += 1;
        assert!(calls < 100_000);
    }
    assert!(ct.is_empty() && ct.zone_len(1) == 0);
}

#[test]
fn udp_pseudo_connection_and_its_timeouts() {
    let ct = table(64, 0);
    let out = Flow { src: A, dst: B, proto: 17, sport: 5353, dport: 53, ..Default::default() };
    assert_eq!(ct.track(0, &out.reversed(), None, 0, 1, |_| false), Verdict::Denied);
    assert_eq!(ct.track(0, &out, None, 0, 1, |_| true), Verdict::New);
    // The reply passes without the rules.
    assert_eq!(ct.track(0, &out.reversed(), None, 0, 1, |_| false), Verdict::Established);
    // Replied: 120 s, not 30.
    assert_eq!(ct.age(100, 1 << 20), 0);
    assert_eq!(ct.age(121, 1 << 20), 1);
    let once = Flow { sport: 7000, ..out };
    assert_eq!(ct.track(0, &once, None, 0, 1, |_| true), Verdict::New);
    assert_eq!(ct.age(31, 1 << 20), 1, "unreplied UDP lives 30 s");
}

#[test]
fn icmp_echo_and_related_errors() {
    let ct = table(64, 0);
    assert_eq!(echo(true, false).reversed(), echo(false, true), "the reverse of a request is a reply");
    assert_eq!(ct.track(0, &echo(false, true), None, 0, 1, |_| true), Verdict::Invalid, "a reply to nothing");
    assert_eq!(ct.track(0, &echo(true, false), None, 0, 1, |_| true), Verdict::New);
    assert_eq!(ct.track(0, &echo(false, true), None, 0, 1, |_| false), Verdict::Established);
    assert_eq!(ct.track(0, &echo(false, false), None, 0, 1, |_| false), Verdict::Invalid, "a reply the wrong way");
    // Port unreachable from B about A's UDP: related to a tracked flow, or invalid.
    let udp = Flow { src: A, dst: B, proto: 17, sport: 4000, dport: 9, ..Default::default() };
    let err = Flow { src: B, dst: A, proto: 1, icmp: (3, 3), error: true, ..Default::default() };
    assert_eq!(ct.track(0, &err, Some(&udp), 0, 1, |_| true), Verdict::Invalid);
    assert_eq!(ct.track(0, &udp, None, 0, 1, |_| true), Verdict::New);
    assert_eq!(ct.track(0, &err, Some(&udp), 0, 1, |_| false), Verdict::Related);
    // Another zone sees nothing of zone 0.
    assert_eq!(ct.track(1, &err, Some(&udp), 0, 1, |_| true), Verdict::Invalid);
    // Other ICMP (neighbour discovery, say) is up to the rules and not tracked.
    let ns = Flow { src: A, dst: B, proto: 58, icmp: (135, 0), ..Default::default() };
    assert_eq!(ct.track(0, &ns, None, 0, 1, |_| true), Verdict::Untracked);
    assert_eq!(ct.track(0, &ns, None, 0, 1, |_| false), Verdict::Denied);
}

#[test]
fn a_rule_change_cuts_connections_no_longer_allowed() {
    let ct = table(64, 0);
    let ssh = Flow { src: A, dst: B, proto: 17, sport: 1000, dport: 22, ..Default::default() };
    let dns = Flow { dport: 53, ..ssh };
    assert_eq!(ct.track(0, &ssh, None, 0, 1, |_| true), Verdict::New);
    assert_eq!(ct.track(0, &dns, None, 0, 1, |_| true), Verdict::New);
    // Generation 2 allows port 53 only; the check sees the original direction even for a
    // reply.
    let only_dns = |f: &Flow| f.dport == 53;
    assert_eq!(ct.track(0, &dns.reversed(), None, 1, 2, only_dns), Verdict::Established);
    assert_eq!(ct.track(0, &ssh.reversed(), None, 1, 2, only_dns), Verdict::Denied);
    assert_eq!(ct.len(), 1);
    // Gone: the same packet is now a new connection the other way, checked as such.
    assert_eq!(ct.track(0, &ssh.reversed(), None, 1, 2, |f| f.sport == 22), Verdict::New);
}

#[test]
fn limits_per_zone_and_in_all_refuse_and_count() {
    let ct = table(10, 4);
    let udp = |p: u16| Flow { src: A, dst: B, proto: 17, sport: p, dport: 53, ..Default::default() };
    for p in 0..4 {
        assert_eq!(ct.track(0, &udp(p), None, 0, 1, |_| true), Verdict::New);
    }
    assert_eq!(ct.track(0, &udp(99), None, 0, 1, |_| true), Verdict::Full);
    for z in 1..4 {
        for p in 0..4 {
            ct.track(z, &udp(p), None, 0, 1, |_| true);
        }
    }
    assert_eq!(ct.len(), 10);
    assert_eq!(ct.zone_len(0), 4);
    // Zone 0's fifth, zone 2's last two (the table is full), all of zone 3.
    assert_eq!(ct.refused(), 1 + 2 + 4);
    // A tracked one still passes at the limit.
    assert_eq!(ct.track(0, &udp(0).reversed(), None, 0, 1, |_| true), Verdict::Established);
}

/// Frame bytes: Ethernet + IPv4 + `l4`, protocol `proto`, fragment field `frag`.
fn ipv4_frame(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(l4);
    f
}

#[test]
fn frames_parse_and_non_first_fragments_are_refused() {
    let tcp = [0x03, 0xe8, 0, 22, 0, 0, 0, 100, 0, 0, 0, 0, 0x60, SYN, 0xff, 0xff, 0, 0, 0, 0, 3, 3, 7, 0];
    let (f, rel) = Flow::parse(&ipv4_frame(6, 0, &tcp)).unwrap();
    assert!(rel.is_none());
    assert_eq!((f.src, f.dst, f.sport, f.dport, f.seq, f.flags, f.wscale, f.seg_len), (A, B, 1000, 22, 100, SYN, 7, 1));
    // The first fragment (MF set, offset 0) is classified by its header.
    assert_eq!(Flow::parse(&ipv4_frame(6, 0x2000, &tcp)).unwrap().0.dport, 22);
    assert_eq!(Flow::parse(&ipv4_frame(6, 0x0010, &tcp)).unwrap_err(), FlowError::Fragment);
    assert_eq!(Flow::parse(&ipv4_frame(6, 0, &tcp[..10])).unwrap_err(), FlowError::Malformed);
    let mut arp = ipv4_frame(6, 0, &tcp);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(Flow::parse(&arp).unwrap_err(), FlowError::NotIp);
    // Port unreachable quoting 8 bytes of a UDP packet from 10.0.0.1:4000 to 10.0.0.2:9.
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&ipv4_frame(17, 0, &[0x0f, 0xa0, 0, 9, 0, 8, 0, 0])[14..]);
    let (e, q) = Flow::parse(&ipv4_frame(1, 0, &icmp)).unwrap();
    assert!(e.error);
    let q = q.unwrap();
    assert_eq!((q.proto, q.sport, q.dport), (17, 4000, 9));
}

#[test]
fn ipv6_fragment_headers() {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 44, 64]);
    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    // Fragment header: next UDP, offset 0, M set; then UDP 53 -> 5353.
    f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9, 0, 53, 0x14, 0xe9, 0, 8, 0, 0]);
    let (fl, _) = Flow::parse(&f).unwrap();
    assert!(fl.v6);
    assert_eq!((fl.proto, fl.sport, fl.dport), (17, 53, 5353));
    f[56] = 0x01; // offset 32 bytes
    assert_eq!(Flow::parse(&f).unwrap_err(), FlowError::Fragment);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary frames and arbitrary flows never panic the tracker, and it never holds more
    /// than its capacity or a zone more than its limit.
    #[test]
    fn arbitrary_packets_keep_the_limits(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..96), 0..16),
        flows in prop::collection::vec((0u16..3, any::<bool>(), 0u8..4, any::<u8>(), 0u16..8, 0u16..8, any::<u32>(), any::<u32>(), 0u64..400), 1..200),
    ) {
        let ct = table(32, 12);
        for b in &frames {
            let mut f = b.clone();
            if f.len() > 14 {
                let et: [u8; 2] = if f[0] & 1 == 0 { [0x08, 0x00] } else { [0x86, 0xdd] };
                f[12..14].copy_from_slice(&et);
            }
            if let Ok((fl, rel)) = Flow::parse(&f) {
                ct.track(0, &fl, rel.as_ref(), 0, 1, |_| true);
            }
        }
        for (zone, v6, p, flags, sp, dp, seq, ack, t) in flows {
            let proto = [6u8, 17, 1, 58][p as usize];
            let mut src = A;
            src[15] = (sp & 3) as u8;
            let f = Flow { v6, src, dst: B, proto, sport: sp, dport: dp, flags, seq, ack, win: 1000, seg_len: flags as u32 & 3,
                echo: proto == 1, echo_request: flags & 1 == 0, icmp: (8, 0), ..Default::default() };
            ct.track(zone, &f, None, t, (t / 100) as u32, |f| f.dport != 7);
            ct.age(t, 3);
            prop_assert!(ct.len() <= 32);
            prop_assert!((0..3).all(|z| ct.zone_len(z) <= 12));
        }
        ct.age(u64::MAX / 2, 1 << 20);
        prop_assert!(ct.is_empty());
    }
}

#[test]
fn two_threads_share_the_table() {
    use std::sync::Arc;
    let ct = Arc::new(table(8192, 0));
    let udp = |p: u16| Flow { src: A, dst: B, proto: 17, sport: p, dport: 53, ..Default::default() };
    // Both threads open the same 2000 flows (one wins each insert) and send the replies.
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let ct = ct.clone();
            std::thread::spawn(move || {
                let mut new = 0;
                for i in 0..2000u16 {
                    let p = if t == 0 { i } else { 1999 - i };
                    let v = ct.track(0, &udp(p), None, 0, 1, |_| true);
                    new += (v == Verdict::New) as usize;
                    assert_eq!(
                        ct.track(0, &udp(p).reversed(), None, 0, 1, |_| false),
                        Verdict::Established,
                        "{p} {v:?}"
                    );
                }
                new
            })
        })
        .collect();
    let new: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(new, 2000, "each flow committed once");
    assert_eq!(ct.len(), 2000);
    assert_eq!(ct.zone_new(0), 2000);
}

// The last connection remembered (`track_with`): every test below holds a `LastConn` across
// packets without forgetting it (the worst case for the memory) and expects exactly what
// `track_at` says of the same packets, often on a twin table fed the same packets.

use fastpath_pipeline::conntrack::LastConn;

/// UDP from A:`sport` to B:`dport`.
fn udp(sport: u16, dport: u16) -> Flow {
    Flow { src: A, dst: B, proto: 17, sport, dport, ..Default::default() }
}

/// [`seg`] from A:`sport` (to B:22).
fn seg_from(sport: u16, back: bool, flags: u8, seq: u32, ack: u32, len: u32) -> Flow {
    let f = Flow { sport, ..seg(false, flags, seq, ack, len) };
    if back {
        f.reversed()
    } else {
        f
    }
}

/// An ICMP echo with id 77 from A to B (`back`: from B to A), a request or a reply.
fn echo(request: bool, back: bool) -> Flow {
    let f = Flow {
        src: A,
        dst: B,
        proto: 1,
        sport: 77,
        dport: 77,
        icmp: (if request { 8 } else { 0 }, 0),
        echo: true,
        echo_request: request,
        ..Default::default()
    };
    if back {
        Flow { src: B, dst: A, ..f }
    } else {
        f
    }
}

/// Two tables fed the same packets: `with` through `track_with` (with the caller's
/// `LastConn`, or its own one, never forgotten), `at` through `track_at`. Every packet must
/// get the same verdict from both, and both must then count the same connections.
struct Twin {
    with: Conntrack,
    at: Conntrack,
    last: LastConn,
    now: u64,
    generation: u32,
}

impl Twin {
    fn new(capacity: usize) -> Twin {
        Twin { with: table(capacity, 0), at: table(capacity, 0), last: LastConn::default(), now: 1000, generation: 1 }
    }

    /// `f` in zone 0 at point 0 through the twin's own memory, rules `allow`.
    fn go(&self, f: Flow, allow: impl Fn(&Flow) -> bool + Copy) -> Verdict {
        self.go_in(&self.last, 0, 0, f, allow)
    }

    fn go_in(&self, last: &LastConn, zone: u16, point: u32, f: Flow, allow: impl Fn(&Flow) -> bool + Copy) -> Verdict {
        let v = self.with.track_with(last, zone, point, &f, None, self.now, self.generation, allow);
        let w = self.at.track_at(zone, point, &f, None, self.now, self.generation, allow);
        assert_eq!(v, w, "track_with vs track_at at {} gen {}: {f:?}", self.now, self.generation);
        self.same();
        v
    }

    /// `f` through `track_at` on both tables (the memory untouched).
    fn plain(&self, f: Flow, allow: impl Fn(&Flow) -> bool + Copy) -> Verdict {
        let v = self.with.track_at(0, 0, &f, None, self.now, self.generation, allow);
        let w = self.at.track_at(0, 0, &f, None, self.now, self.generation, allow);
        assert_eq!(v, w, "{f:?}");
        self.same();
        v
    }

    fn same(&self) {
        assert_eq!(self.with.len(), self.at.len());
        for z in 0..4 {
            assert_eq!(self.with.zone_len(z), self.at.zone_len(z));
            assert_eq!(self.with.zone_new(z), self.at.zone_new(z));
        }
        assert_eq!(self.with.refused(), self.at.refused());
    }

    fn len(&self) -> usize {
        self.with.len()
    }

    fn state(&self, f: &Flow) -> Option<TcpState> {
        let s = self.with.tcp_state(0, f);
        assert_eq!(s, self.at.tcp_state(0, f), "{f:?}");
        s
    }

    /// Ages both tables at `now`; how many each removed (the same).
    fn age(&self, now: u64) -> usize {
        let n = self.with.age(now, 1 << 20);
        assert_eq!(n, self.at.age(now, 1 << 20), "aged at {now}");
        self.same();
        n
    }
}

const ALL: fn(&Flow) -> bool = |_| true;
const NONE: fn(&Flow) -> bool = |_| false;

#[test]
fn remembered_udp_gives_the_verdicts_of_track_at_and_records_the_reply() {
    let mut t = Twin::new(64);
    let out = udp(5353, 53);
    let back = out.reversed();
    // (packet, time, rules, verdict): the first sight of each direction looks it up, the
    // next ones go through the memory.
    let steps = [
        (back, 0, NONE, Verdict::Denied),
        (out, 0, ALL, Verdict::New),
        (out, 0, NONE, Verdict::Established),
        (out, 1, NONE, Verdict::Established),
        (out, 2, NONE, Verdict::Established),
        (back, 3, NONE, Verdict::Established),
        (back, 4, NONE, Verdict::Established),
        (out, 5, NONE, Verdict::Established),
        (out, 6, NONE, Verdict::Established),
    ];
    for (i, (f, now, allow, want)) in steps.into_iter().enumerate() {
        t.now = now;
        assert_eq!(t.go(f, allow), want, "step {i}");
    }
    assert_eq!(t.len(), 1);
    assert_eq!(t.with.zone_new(0), 1);
    // Replied (120 s, not 30), and the last packet (through the memory, at 6) refreshed it:
    // still there at 126, gone at 127.
    assert_eq!(t.age(126), 0);
    assert_eq!(t.age(127), 1);
    assert!(t.with.is_empty());
}

#[test]
fn remembered_packets_refresh_the_timestamp() {
    // Unreplied UDP lives 30 s after its last packet; the last one went through the memory.
    let t = Twin::new(64);
    let out = udp(5353, 53);
    for (now, want) in [(0, Verdict::New), (20, Verdict::Established), (25, Verdict::Established)] {
        let v = t.with.track_with(&t.last, 0, 0, &out, None, now, 1, ALL);
        assert_eq!(v, want);
        assert_eq!(t.at.track_at(0, 0, &out, None, now, 1, ALL), want);
    }
    assert_eq!(t.age(55), 0);
    assert_eq!(t.age(56), 1);
    // An echo request likewise (30 s).
    for (now, want) in [(100, Verdict::New), (110, Verdict::Established), (120, Verdict::Established)] {
        let v = t.with.track_with(&t.last, 0, 0, &echo(true, false), None, now, 1, ALL);
        assert_eq!(v, want);
        assert_eq!(t.at.track_at(0, 0, &echo(true, false), None, now, 1, ALL), want);
    }
    assert_eq!(t.age(150), 0);
    assert_eq!(t.age(151), 1);
}

#[test]
fn a_remembered_echo_request_does_not_pass_a_reply_the_wrong_way() {
    // A reply from A to B has the request's words: the memory hits, the verdict must not.
    let t = Twin::new(64);
    assert_eq!(t.go(echo(true, false), ALL), Verdict::New);
    assert_eq!(t.go(echo(true, false), NONE), Verdict::Established);
    assert_eq!(t.go(echo(true, false), NONE), Verdict::Established);
    assert_eq!(t.go(echo(false, false), ALL), Verdict::Invalid, "a reply the wrong way");
    assert_eq!(t.go(echo(false, false), ALL), Verdict::Invalid, "a reply the wrong way, again");
    assert_eq!(t.go(echo(true, false), NONE), Verdict::Established);
    assert_eq!(t.go(echo(false, true), NONE), Verdict::Established);
    assert_eq!(t.go(echo(false, true), NONE), Verdict::Established);
    assert_eq!(t.go(echo(true, true), NONE), Verdict::Established);
    assert_eq!(t.len(), 1);
}

#[test]
fn the_memory_is_per_zone_and_point() {
    let t = Twin::new(64);
    let out = udp(5353, 53);
    let go = |zone, point, allow| t.go_in(&t.last, zone, point, out, allow);
    assert_eq!(go(0, 0, ALL), Verdict::New);
    assert_eq!(go(0, 0, NONE), Verdict::Established);
    assert_eq!(go(0, 0, NONE), Verdict::Established);
    // The same words at another point or in another zone are another connection.
    assert_eq!(go(0, 1, NONE), Verdict::Denied);
    assert_eq!(go(0, 1, NONE), Verdict::Denied);
    assert_eq!(go(1, 0, NONE), Verdict::Denied);
    assert_eq!(go(0, 0, NONE), Verdict::Established);
    assert_eq!(go(0, 0, NONE), Verdict::Established);
    assert_eq!(go(0, 1, ALL), Verdict::New);
    assert_eq!(go(0, 1, NONE), Verdict::Established);
    assert_eq!(go(0, 1, NONE), Verdict::Established);
    assert_eq!(go(1, 0, ALL), Verdict::New);
    assert_eq!(go(1, 0, NONE), Verdict::Established);
    assert_eq!((t.len(), t.with.zone_len(0), t.with.zone_len(1)), (3, 2, 1));
}

/// Capacity 2: one bucket (eight slots), so a connection made after one was removed takes the
/// slot it had.
#[test]
fn a_reused_slot_is_not_the_remembered_connection_after_aging() {
    let mut t = Twin::new(2);
    let (a, b) = (udp(1000, 53), udp(2000, 53));
    // Two memories of A (the second one checked through the memory).
    let (l1, l2) = (LastConn::default(), LastConn::default());
    assert_eq!(t.go_in(&l1, 0, 0, a, ALL), Verdict::New);
    for l in [&l1, &l2, &l1, &l2] {
        assert_eq!(t.go_in(l, 0, 0, a, NONE), Verdict::Established);
    }
    assert_eq!(t.age(1031), 1);
    t.now = 1031;
    // B takes A's slot: same generation, same direction (A's source is the low end for both).
    t.plain(b, ALL);
    assert_eq!(t.len(), 1);
    // A packet of B through a memory of A: B's (its reply, so B now lives 120 s).
    assert_eq!(t.go_in(&l2, 0, 0, b.reversed(), NONE), Verdict::Established);
    assert_eq!(t.go_in(&l2, 0, 0, b.reversed(), NONE), Verdict::Established);
    // A packet of A through its memory: A is gone, the rules decide.
    assert_eq!(t.go_in(&l1, 0, 0, a, NONE), Verdict::Denied);
    assert_eq!(t.len(), 1);
    assert_eq!(t.go_in(&l1, 0, 0, a, ALL), Verdict::New);
    assert_eq!(t.len(), 2);
    assert_eq!(t.age(1031 + 30), 0);
    assert_eq!(t.age(1031 + 31), 1, "A, unreplied");
    assert_eq!(t.age(1031 + 120), 0);
    assert_eq!(t.age(1031 + 121), 1, "B, replied");
}

#[test]
fn a_reused_slot_is_not_the_remembered_connection_after_a_rule_change() {
    let mut t = Twin::new(2);
    let (a, b) = (udp(1000, 53), udp(2000, 53));
    let l = LastConn::default();
    assert_eq!(t.go_in(&l, 0, 0, a, ALL), Verdict::New);
    assert_eq!(t.go_in(&l, 0, 0, a, NONE), Verdict::Established);
    assert_eq!(t.go_in(&l, 0, 0, a, NONE), Verdict::Established);
    // Generation 2 no longer allows A: removed by its reply (through another memory).
    t.generation = 2;
    assert_eq!(t.go(a.reversed(), |f| f.sport != 1000), Verdict::Denied);
    assert!(t.with.is_empty());
    // B, allowed in generation 2, takes the slot.
    assert_eq!(t.plain(b, ALL), Verdict::New);
    assert_eq!(t.go_in(&l, 0, 0, a, NONE), Verdict::Denied);
    assert_eq!(t.go_in(&l, 0, 0, a, ALL), Verdict::New);
    assert_eq!(t.len(), 2);
}

#[test]
fn a_reused_slot_is_not_the_remembered_tcp_connection() {
    let mut t = Twin::new(2);
    let a = |back, flags, seq, ack, len| seg_from(1000, back, flags, seq, ack, len);
    let b = |back, flags, seq, ack, len| seg_from(1001, back, flags, seq, ack, len);
    let l = LastConn::default();
    let go = |t: &Twin, f| t.go_in(&l, 0, 0, f, ALL);
    assert_eq!(go(&t, a(false, SYN, 100, 0, 0)), Verdict::New);
    assert_eq!(go(&t, a(true, SYN | ACK, 5000, 101, 0)), Verdict::Established);
    assert_eq!(go(&t, a(false, ACK, 101, 5001, 0)), Verdict::Established);
    assert_eq!(go(&t, a(false, ACK, 101, 5001, 100)), Verdict::Established);
    assert_eq!(go(&t, a(false, ACK, 201, 5001, 100)), Verdict::Established);
    // A reset (from elsewhere), CLOSE times out.
    assert_eq!(t.plain(a(true, RST, 5001, 0, 0), ALL), Verdict::Established);
    assert_eq!(t.state(&a(false, 0, 0, 0, 0)), Some(TcpState::Close));
    t.now += 11;
    assert_eq!(t.age(t.now), 1);
    // B opens in A's slot, up to ESTABLISHED.
    assert_eq!(t.plain(b(false, SYN, 700, 0, 0), ALL), Verdict::New);
    assert_eq!(t.plain(b(true, SYN | ACK, 9000, 701, 0), ALL), Verdict::Established);
    assert_eq!(t.plain(b(false, ACK, 701, 9001, 0), ALL), Verdict::Established);
    assert_eq!(t.state(&b(false, 0, 0, 0, 0)), Some(TcpState::Established));
    // A's data through A's memory: no connection, not a SYN.
    assert_eq!(go(&t, a(false, ACK, 301, 5001, 100)), Verdict::Invalid);
    assert_eq!(go(&t, a(false, FIN | ACK, 301, 5001, 0)), Verdict::Invalid);
    assert_eq!(t.state(&b(false, 0, 0, 0, 0)), Some(TcpState::Established), "B untouched");
    assert_eq!(t.state(&a(false, 0, 0, 0, 0)), None);
    assert_eq!(go(&t, a(false, SYN, 400, 0, 0)), Verdict::New);
    assert_eq!(t.len(), 2);
}

#[test]
fn a_slot_retaken_by_the_same_connection_the_other_way() {
    // A remembered from A's side; aged out; opened again from B's side in the same slot: A's
    // packet is now the reply, recorded as such (120 s, not 30).
    let mut t = Twin::new(2);
    let out = udp(5353, 53);
    assert_eq!(t.go(out, ALL), Verdict::New);
    assert_eq!(t.go(out, NONE), Verdict::Established);
    assert_eq!(t.go(out, NONE), Verdict::Established);
    assert_eq!(t.age(1031), 1);
    t.now = 1031;
    assert_eq!(t.plain(out.reversed(), ALL), Verdict::New);
    assert_eq!(t.go(out, NONE), Verdict::Established);
    assert_eq!(t.go(out, NONE), Verdict::Established);
    assert_eq!(t.age(1031 + 120), 0);
    assert_eq!(t.age(1031 + 121), 1);
}

#[test]
fn a_remembered_connection_is_rechecked_after_a_rule_change() {
    let mut t = Twin::new(64);
    let dns = udp(1000, 53);
    let ssh = udp(1000, 22);
    let only_dns = |f: &Flow| f.dport == 53;
    let (l_dns, l_ssh) = (LastConn::default(), LastConn::default());
    // Generation 1: DNS remembered from its original direction, SSH from its reply.
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, ALL), Verdict::New);
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Established);
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Established);
    assert_eq!(t.plain(ssh, ALL), Verdict::New);
    assert_eq!(t.go_in(&l_ssh, 0, 0, ssh.reversed(), NONE), Verdict::Established);
    assert_eq!(t.go_in(&l_ssh, 0, 0, ssh.reversed(), NONE), Verdict::Established);
    // Generation 2 allows DNS only, checked in the original direction even for a reply.
    t.generation = 2;
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, only_dns), Verdict::Established);
    // Re-checked once per generation: the rules are not asked again in generation 2.
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Established);
    assert_eq!(t.go_in(&l_ssh, 0, 0, ssh.reversed(), only_dns), Verdict::Denied);
    assert_eq!(t.len(), 1);
    // Gone: the same reply is a new connection the other way, up to the rules.
    assert_eq!(t.go_in(&l_ssh, 0, 0, ssh.reversed(), only_dns), Verdict::Denied);
    assert_eq!(t.go_in(&l_ssh, 0, 0, ssh.reversed(), |f| f.sport == 22), Verdict::New);
    assert_eq!(t.len(), 2);
    // Generation 3 allows nothing: the remembered DNS connection is cut.
    t.generation = 3;
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Denied);
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Denied);
    assert_eq!(t.len(), 1);
    // Generation 4 allows everything again: a reply to the gone connection starts one.
    t.generation = 4;
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, ALL), Verdict::New);
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Established);
    assert_eq!(t.go_in(&l_dns, 0, 0, dns, NONE), Verdict::Established);
    assert_eq!(t.len(), 2);
}

#[test]
fn tcp_through_the_memory_runs_the_state_machine() {
    use TcpState::*;
    let mut t = Twin::new(64);
    let s = |back, flags, seq, ack, len| seg(back, flags, seq, ack, len);
    let est = Verdict::Established;
    // (segment, verdict, state after): one memory for both directions, never forgotten.
    let script = [
        (s(false, SYN, 100, 0, 0), Verdict::New, SynSent),
        (s(false, SYN, 100, 0, 0), est, SynSent),
        (s(true, SYN | ACK, 5000, 101, 0), est, SynRecv),
        (s(true, SYN | ACK, 5000, 101, 0), est, SynRecv),
        (s(false, ACK, 101, 5001, 0), est, Established),
        (s(false, ACK, 101, 5001, 500), est, Established),
        (s(false, ACK, 601, 5001, 500), est, Established),
        (s(true, ACK, 5001, 1101, 1400), est, Established),
        (s(true, RST, 5001 + 10_000_000, 0, 0), Verdict::Invalid, Established),
        (s(true, SYN, 5001, 0, 0), Verdict::Invalid, Established),
        (s(true, ACK, 6401, 1101, 0), est, Established),
        (s(false, FIN | ACK, 1101, 6401, 0), est, FinWait),
        (s(false, FIN | ACK, 1101, 6401, 0), est, FinWait),
        (s(true, ACK, 6401, 1102, 0), est, CloseWait),
        (s(true, FIN | ACK, 6401, 1102, 0), est, LastAck),
        (s(false, ACK, 1102, 6402, 0), est, TimeWait),
        (s(false, SYN, 90_000, 0, 0), est, SynSent),
        (s(false, SYN | FIN, 90_000, 0, 0), Verdict::Invalid, SynSent),
        (s(true, SYN | ACK, 7000, 90_001, 0), est, SynRecv),
        (s(false, ACK, 90_001, 7001, 0), est, Established),
        (s(false, RST, 90_101, 0, 0), est, Close),
        (s(false, ACK, 90_001, 7001, 0), est, Close),
    ];
    for (i, (f, verdict, state)) in script.into_iter().enumerate() {
        t.now += 1;
        assert_eq!(t.go(f, ALL), verdict, "step {i}");
        assert_eq!(t.state(&f), Some(state), "step {i}");
    }
    t.now += 11;
    assert_eq!(t.age(t.now), 1);
    // The memory points at a free slot now.
    assert_eq!(t.go(s(false, ACK, 90_001, 7001, 0), ALL), Verdict::Invalid);
    assert_eq!(t.go(s(false, ACK, 90_001, 7001, 0), ALL), Verdict::Invalid);
    // SYN_SENT lives 120 s after its last packet, the last one through the memory.
    let start = t.now;
    assert_eq!(t.go(s(false, SYN, 100, 0, 0), ALL), Verdict::New);
    t.now = start + 100;
    assert_eq!(t.go(s(false, SYN, 100, 0, 0), ALL), est);
    t.now = start + 200;
    assert_eq!(t.go(s(false, SYN, 100, 0, 0), ALL), est);
    assert_eq!(t.age(start + 320), 0);
    assert_eq!(t.age(start + 321), 1);
}

/// One step of [`remembered_and_looked_up_agree`].
#[derive(Debug, Clone)]
enum Op {
    /// A packet (see `Pkt::flow`).
    Packet(Pkt),
    /// Forget one memory.
    Forget(usize),
    /// A new rule generation.
    Rules,
    /// Time passes (`STEPS`).
    Time(usize),
    /// Age both tables.
    Age,
}

#[derive(Debug, Clone, Copy)]
struct Pkt {
    /// 0, 1: UDP; 2, 3: TCP; 4: ICMP echo; 5: an ICMP error about 0 or 2; 6: neighbour solicitation.
    flow: usize,
    back: bool,
    zone: u16,
    point: u32,
    /// Through memory 0 or 1 of the first table; 2: `track_at` there too (no memory).
    last: usize,
    /// 0: as above; 1: the flow, direction, zone, point and memory of the packet before (a
    /// burst); 2: those of the burst before that one (A, B, A).
    again: u8,
    flags: usize,
    seq: usize,
    ack: usize,
    len: u32,
    /// Echo: a request; error: about flow 0 (else 2).
    req: bool,
    /// The rules allow everything (else as the generation says).
    open: bool,
}

const FLAG_SET: [u8; 10] = [SYN, SYN | ACK, ACK, ACK, FIN | ACK, RST, RST | ACK, FIN, 0, SYN | FIN];
const SEQ_SET: [u32; 10] = [0, 100, 101, 102, 601, 5000, 5001, 5002, 90_000, 90_001];
const STEPS: [u64; 7] = [0, 1, 9, 29, 31, 61, 121];

fn tcp_flow(sport: u16, dport: u16) -> Flow {
    Flow { src: A, dst: B, proto: 6, sport, dport, win: 65535, ..Default::default() }
}

impl Pkt {
    /// This packet after bursts `prev` and `earlier` (see `again`).
    fn after(self, prev: Option<Pkt>, earlier: Option<Pkt>) -> Pkt {
        match [None, prev, earlier][self.again as usize] {
            Some(q) => Pkt { flow: q.flow, back: q.back, zone: q.zone, point: q.point, last: q.last, ..self },
            None => self,
        }
    }

    fn same_burst(&self, q: &Pkt) -> bool {
        (self.flow, self.back, self.zone, self.point, self.last) == (q.flow, q.back, q.zone, q.point, q.last)
    }

    /// The packet and, for an error, the packet it quotes.
    fn flow(&self) -> (Flow, Option<Flow>) {
        let turn = |f: Flow| if self.back { f.reversed() } else { f };
        match self.flow {
            0 => (turn(udp(5353, 53)), None),
            1 => (turn(udp(5354, 53)), None),
            2 | 3 => {
                let (sport, dport) = if self.flow == 2 { (1000, 22) } else { (1001, 80) };
                let flags = FLAG_SET[self.flags];
                let syn_fin = (flags & SYN != 0) as u32 + (flags & FIN != 0) as u32;
                let f = Flow {
                    flags,
                    seq: SEQ_SET[self.seq],
                    ack: SEQ_SET[self.ack],
                    seg_len: self.len + syn_fin,
                    ..tcp_flow(sport, dport)
                };
                (turn(f), None)
            }
            4 => (echo(self.req, self.back), None),
            5 => {
                let quoted = if self.req { udp(5353, 53) } else { tcp_flow(1000, 22) };
                let err = Flow { src: B, dst: A, proto: 1, icmp: (3, 3), error: true, ..Default::default() };
                (err, Some(turn(quoted)))
            }
            _ => (turn(Flow { src: A, dst: B, proto: 58, icmp: (135, 0), ..Default::default() }), None),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let flow = prop::sample::select(vec![0usize, 0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6]);
    let rare = || prop::bool::weighted(0.2);
    let pkt = (
        (flow, any::<bool>(), rare(), rare(), 0usize..3, prop::sample::select(vec![0u8, 0, 1, 1, 2])),
        (0..FLAG_SET.len(), 0..SEQ_SET.len(), 0..SEQ_SET.len(), 0u32..3),
        (any::<bool>(), prop::bool::weighted(0.3)),
    )
        .prop_map(|((flow, back, zone, point, last, again), (flags, seq, ack, len), (req, open))| Pkt {
            flow,
            back,
            zone: zone as u16,
            point: point as u32,
            last,
            again,
            flags,
            seq,
            ack,
            len,
            req,
            open,
        });
    prop_oneof![
        16 => pkt.prop_map(Op::Packet),
        1 => (0usize..2).prop_map(Op::Forget),
        1 => Just(Op::Rules),
        3 => (0..STEPS.len()).prop_map(Op::Time),
        2 => Just(Op::Age),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Differential: arbitrary packets of a few flows (both directions, two zones, two points,
    /// arbitrary TCP flags and numbers around a handshake's; often in bursts of one flow and
    /// direction), time passing, aging, rule changes and occasional forgetting, through
    /// `track_with` (two memories, as the switch has, and some packets without) on one table
    /// and `track_at` on another: the same verdict at every step, the same counts and TCP
    /// states. Tables of at most 4 connections have one bucket, so that connections keep
    /// taking the slots of removed ones (and both tables place them alike).
    #[test]
    fn remembered_and_looked_up_agree(
        capacity in prop::sample::select(vec![1usize, 2, 3, 4, 1024]),
        zone_limit in 0usize..3,
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let (t1, t2) = (table(capacity, zone_limit), table(capacity, zone_limit));
        let last = [LastConn::default(), LastConn::default()];
        let (mut now, mut generation) = (0u64, 1u32);
        let (mut prev, mut earlier) = (None, None);
        let tcp = [tcp_flow(1000, 22), tcp_flow(1001, 80)];
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Packet(p) => {
                    let p = p.after(prev, earlier);
                    if prev.is_some_and(|q| !p.same_burst(&q)) {
                        earlier = prev;
                    }
                    prev = Some(p);
                    let (f, rel) = p.flow();
                    let (open, g) = (p.open, generation);
                    let allow = move |f: &Flow| {
                        open || !(f.sport as u32 * 7 + f.dport as u32 * 13 + f.proto as u32 + g * 5).is_multiple_of(4)
                    };
                    let v = match last.get(p.last) {
                        Some(l) => t1.track_with(l, p.zone, p.point, &f, rel.as_ref(), now, generation, allow),
                        None => t1.track_at(p.zone, p.point, &f, rel.as_ref(), now, generation, allow),
                    };
                    let w = t2.track_at(p.zone, p.point, &f, rel.as_ref(), now, generation, allow);
                    prop_assert_eq!(v, w, "step {}: {:?} at {} gen {}", i, p, now, generation);
                }
                Op::Forget(l) => last[*l].forget(),
                Op::Rules => generation += 1,
                Op::Time(s) => now += STEPS[*s],
                Op::Age => prop_assert_eq!(t1.age(now, 1 << 20), t2.age(now, 1 << 20), "step {}", i),
            }
            prop_assert_eq!(t1.len(), t2.len(), "step {}", i);
            prop_assert!(t1.len() <= capacity);
            prop_assert_eq!(t1.refused(), t2.refused());
            for z in 0..2u16 {
                prop_assert_eq!(t1.zone_len(z), t2.zone_len(z));
                prop_assert_eq!(t1.zone_new(z), t2.zone_new(z));
                for point in 0..2 {
                    for f in &tcp {
                        prop_assert_eq!(t1.tcp_state_at(z, point, f), t2.tcp_state_at(z, point, f), "step {}", i);
                    }
                }
            }
        }
        prop_assert_eq!(t1.age(u64::MAX / 2, 1 << 20), t2.age(u64::MAX / 2, 1 << 20));
        prop_assert!(t1.is_empty() && t2.is_empty());
    }
}
