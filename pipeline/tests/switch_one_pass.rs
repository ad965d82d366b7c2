//! The one pass (ingress, learning and forwarding in one loop, a frame that repeats the frame
//! before taking its verdict) against the separate passes: two switches built alike, one with
//! the one pass off, fed the same bursts, must give the same frames to the same ports and the
//! same counters at every step. The bursts repeat frames often (that is what the one pass
//! remembers) and mix in everything it must not remember: floods, drops (runts, tags on access
//! ports, bad sources, the same port, split horizon), port security, the uplink's tunnels and
//! VLAN, MACs that move, age and get learned between bursts.

mod switchkit;

use fastpath_pipeline::switch::{FdbConfig, PortSecurity, StaticMac, StaticNeighbour, SwitchConfig};
use proptest::prelude::*;
use switchkit::*;

/// Uplink 0 (VNI 100 to REMOTE1 / REMOTE2, and VLAN 30 on the trunk), vm1 and vm2, vm3 with
/// port security (only mac(3) from 192.168.0.3), a static mac(50) behind vm2 and mac(51)
/// behind REMOTE2.
fn config() -> SwitchConfig {
    let mut b = vxlan_bridge("t100", 100, &[REMOTE1, REMOTE2]);
    b.vlan = Some(30);
    SwitchConfig {
        bridges: vec![b],
        ports: vec![
            uplink(0),
            access(1, "vm1", "t100", None),
            access(2, "vm2", "t100", None),
            access(3, "vm3", "t100", None),
        ],
        neighbours: vec![
            StaticNeighbour { addr: ip(REMOTE1), mac: ROUTER_MAC },
            StaticNeighbour { addr: ip(REMOTE2), mac: ROUTER_MAC },
        ],
        static_macs: vec![
            StaticMac { bridge: "t100".into(), vlan: None, mac: mac(50), port: Some("vm2".into()), vtep: None },
            StaticMac { bridge: "t100".into(), vlan: None, mac: mac(51), port: None, vtep: Some(ip(REMOTE2)) },
        ],
        port_security: vec![PortSecurity {
            port: "vm3".into(),
            allowed: vec!["52:54:00:00:00:03 192.168.0.3".parse().unwrap()],
            trusted: false,
        }],
        fdb: FdbConfig { capacity: 4096, ..Default::default() },
        ..Default::default()
    }
}

/// MACs the frames use: the VMs', the statics, ones behind the tunnels or the VLAN, unknown.
const MACS: [u8; 8] = [1, 2, 3, 50, 51, 60, 61, 9];

/// A frame's code: its port, destination, source and kind (see `frame_of`).
type Code = (u8, u8, u8, u8);

/// One frame of the alphabet: where it comes in, and its bytes.
fn frame_of(code: Code) -> (u16, Vec<u8>) {
    let (port, d, s, kind) = code;
    let dst = match d {
        0..=7 => mac(MACS[d as usize]),
        8 => [0xff; 6],
        _ => [0x01, 0x00, 0x5e, 0, 0, 1],
    };
    let src = match s {
        0..=7 => mac(MACS[s as usize]),
        8 => [0; 6],
        _ => [0x01, 0, 0, 0, 0, 2],
    };
    let mut inner = frame(dst, src, 18 + (kind as usize % 3) * 7);
    if kind % 8 >= 4 {
        // Another IPv4 source behind the same first 14 bytes (port security tells them apart).
        inner[29] = 99;
        inner[24..26].fill(0);
        let sum: u32 = inner[14..34].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        inner[24..26].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    }
    if port == 0 {
        let f = match kind % 4 {
            0 => encapsulated("vxlan", 100, REMOTE1, LOCAL, &inner),
            1 => encapsulated("vxlan", 100, "10.50.0.9", LOCAL, &inner),
            2 => tagged(&inner, 30),
            _ => encapsulated("vxlan", 200, REMOTE1, LOCAL, &inner),
        };
        return (0, f);
    }
    let f = match kind % 8 {
        6 => tagged(&inner, 30),
        7 => inner[..10].to_vec(),
        _ => inner,
    };
    (port as u16, f)
}

/// A burst: a small alphabet of frames (mostly of one port, as a burst of one rx queue is;
/// sometimes of several, as a test or a pipeline may give) repeated in runs.
fn burst() -> impl Strategy<Value = (Vec<Code>, Vec<(usize, usize)>)> {
    // Frames of one port over one to three address pairs: often the same first 14 bytes with
    // another length or IPv4 source.
    let one_port =
        (0u8..4, prop::collection::vec((0u8..10, 0u8..10), 1..4), prop::collection::vec((0usize..3, 0u8..8), 1..5))
            .prop_map(|(p, pairs, a)| {
                a.into_iter()
                    .map(|(i, k)| (p, pairs[i % pairs.len()].0, pairs[i % pairs.len()].1, k))
                    .collect::<Vec<_>>()
            });
    // Frames of several ports over one to three address pairs: the same bytes from two ports.
    let mixed =
        (prop::collection::vec((0u8..10, 0u8..10), 1..4), prop::collection::vec((0u8..4, 0usize..3, 0u8..8), 1..5))
            .prop_map(|(pairs, a)| {
                a.into_iter()
                    .map(|(p, i, k)| (p, pairs[i % pairs.len()].0, pairs[i % pairs.len()].1, k))
                    .collect::<Vec<_>>()
            });
    (prop_oneof![2 => one_port, 1 => mixed], prop::collection::vec((0usize..5, 1usize..12), 1..8))
}

#[derive(Debug, Clone)]
enum Step {
    Burst(Vec<Code>, Vec<(usize, usize)>),
    Poll,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => burst().prop_map(|(a, r)| Step::Burst(a, r)),
        2 => Just(Step::Poll),
        1 => prop_oneof![Just(0u64), Just(1), Just(200), Just(301)].prop_map(Step::Advance),
    ]
}

fn outputs(out: &[Out]) -> Vec<(u16, Vec<u8>, u64, usize)> {
    out.iter().map(|o| (o.port, o.bytes.clone(), o.ol_flags, o.segs)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn one_pass_gives_the_verdicts_of_the_passes(steps in prop::collection::vec(step(), 1..40)) {
        let cfg = config();
        let (mut one, mut passes) = (Kit::new(&cfg), Kit::new(&cfg));
        passes.procs.iter_mut().for_each(|p| p.set_one_pass(false));
        // Most MACs known from the start: each VM's, one behind REMOTE1, one behind VLAN 30.
        let warm = [(1, 8, 0, 0), (2, 8, 1, 0), (3, 8, 2, 0), (0, 8, 5, 0), (0, 8, 6, 2)].map(frame_of);
        for k in [&mut one, &mut passes] {
            k.run_frames(&warm);
            k.poll();
        }
        for (n, s) in steps.iter().enumerate() {
            match s {
                Step::Burst(alphabet, runs) => {
                    let frames: Vec<(u16, Vec<u8>)> = runs
                        .iter()
                        .flat_map(|&(i, len)| std::iter::repeat_n(frame_of(alphabet[i % alphabet.len()]), len))
                        .take(64)
                        .collect();
                    let (a, b) = (one.run_frames(&frames), passes.run_frames(&frames));
                    prop_assert_eq!(outputs(&a), outputs(&b), "step {}: {:?}", n, s);
                }
                Step::Poll => {
                    one.poll();
                    passes.poll();
                }
                Step::Advance(secs) => {
                    one.advance(*secs);
                    passes.advance(*secs);
                }
            }
            prop_assert_eq!(format!("{:?}", one.control.stats()), format!("{:?}", passes.control.stats()), "step {}", n);
        }
    }
}

/// A burst of one flow between two known VMs: every frame after the first takes the first's
/// verdict, and the counters say so exactly as the passes would.
#[test]
fn a_burst_of_one_flow_forwards_and_counts_like_the_passes() {
    let cfg = config();
    let (mut one, mut passes) = (Kit::new(&cfg), Kit::new(&cfg));
    passes.procs.iter_mut().for_each(|p| p.set_one_pass(false));
    for k in [&mut one, &mut passes] {
        k.send1(1, frame(mac(2), mac(1), 20));
        k.send1(2, frame(mac(1), mac(2), 20));
        k.poll();
    }
    let burst = vec![frame(mac(2), mac(1), 20); 32];
    let (a, b) = (one.send(1, &burst), passes.send(1, &burst));
    assert_eq!(ports(&a), vec![2; 32]);
    assert_eq!(outputs(&a), outputs(&b));
    assert_eq!(one.stat("switch-forward", "known"), 32);
    assert_eq!(format!("{:?}", one.control.stats()), format!("{:?}", passes.control.stats()));
}

/// A frame that repeats the first 14 bytes of the one before but not its IPv4 source is
/// checked by port security again (the one pass remembers nothing of a port that has it).
#[test]
fn port_security_sees_every_frame() {
    let mut k = Kit::new(&config());
    let good = frame(mac(1), mac(3), 18);
    let (_, bad) = frame_of((3, 0, 2, 4));
    assert_eq!((&bad[..14], &bad[26..30]), (&good[..14], &[192, 168, 0, 99][..]));
    k.send1(1, frame(mac(3), mac(1), 18));
    k.send1(3, good.clone());
    k.poll();
    let out = k.run_frames(&[(3, good.clone()), (3, bad), (3, good)]);
    assert_eq!(ports(&out), vec![1, 1], "the frame from another IPv4 source is dropped");
}
