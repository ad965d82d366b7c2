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
    let echo = |req: bool, back: bool| {
        let f = Flow {
            src: A,
            dst: B,
            proto: 1,
            sport: 77,
            dport: 77,
            icmp: (if req { 8 } else { 0 }, 0),
            echo: true,
            echo_request: req,
            ..Default::default()
        };
        if back {
            Flow { src: B, dst: A, ..f }
        } else {
            f
        }
    };
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
