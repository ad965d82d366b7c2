//! The `lso` stage and the `tx-offload` fallback: TCP over IPv4 and IPv6 with options, USO,
//! tunnels (after an encap stage, and arriving encapsulated), zero-copy chains and contiguous
//! copies, checksums left to a capable port, bounded output batches, pool exhaustion, malformed
//! input, the MTU mode, and the builder's automatic fallback. Every segment is checked field by
//! field against the original (see `lsokit`), and every test ends with the pool full again.

mod lsokit;

use fastpath_mempool::offload::*;
use fastpath_mempool::{Batch, Mbuf, MAX_BURST};
use fastpath_pipeline::{make_stage, BuildEnv, Pipeline, PipelineSpec, Stage};
use fastpath_pmd::{Ctx, Offloads};
use lsokit::*;

const MULTI: Offloads = Offloads::TX_MULTI_SEGS;

fn env(pool: &fastpath_mempool::Mempool, offloads: Offloads) -> BuildEnv {
    BuildEnv { pool: pool.clone(), ports: vec![port(0, offloads)] }
}

fn pipeline(envr: &BuildEnv, specs: &[&str]) -> Pipeline {
    Pipeline::new(specs.iter().map(|s| make_stage(s, envr).unwrap_or_else(|e| panic!("{s}: {e}"))).collect())
}

fn stat(p: &Pipeline, i: usize, name: &str) -> u64 {
    let c = p.stages()[i].counters();
    c.stats().iter().chain(c.drops().iter()).find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}")).1
}

fn out_port0(mut m: Mbuf) -> Mbuf {
    m.set_out_port(0);
    m
}

fn frames(v: &[Mbuf]) -> Vec<Vec<u8>> {
    v.iter().map(Mbuf::to_vec).collect()
}

fn big_tcp(v6: bool, ext: bool, len: usize, flags: u8) -> Pkt {
    Pkt {
        v6,
        ext,
        opts: ts_opts(0x0102_0304, 0x0a0b_0c0d),
        flags,
        payload: bytes(len as u32 ^ flags as u32, len),
        ..Pkt::default()
    }
}

#[test]
fn tcp_v4_and_v6_with_options_chain_and_copy() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    for caps in [MULTI, Offloads::NONE] {
        for (v6, ext) in [(false, false), (false, true), (true, false), (true, true)] {
            for flags in [ACK, ACK | PSH, ACK | PSH | FIN | CWR, ACK | ECE | CWR | FIN] {
                let p = big_tcp(v6, ext, 65535 - 40 - 32 - if ext { 8 } else { 0 }, flags);
                let f = p.build();
                let envr = env(&pool, caps);
                let mut pipe = pipeline(&envr, &["lso,mss=1448"]);
                let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, None))]);
                let segs = frames(&out);
                check_tcp_segments(&f, &segs, p.l3(), p.l4(), 1448, None);
                for m in &out {
                    assert_eq!(m.ol_flags() & (TX_SEG_MASK | TX_CKSUM_MASK), 0, "everything done in software");
                    assert_eq!(m.out_port(), 0);
                    assert_eq!((m.l2_len() as usize, m.l3_len() as usize), (p.l3(), p.l3_len()));
                    if caps == Offloads::NONE {
                        assert_eq!(m.nb_segs(), 1, "a contiguous frame for a port without chains");
                    }
                }
                let (made, out_bytes, copied) =
                    (stat(&pipe, 0, "segments"), stat(&pipe, 0, "out-bytes"), stat(&pipe, 0, "copied-bytes"));
                assert_eq!(made as usize, segs.len());
                assert_eq!(out_bytes as usize, segs.iter().map(Vec::len).sum::<usize>());
                if caps == MULTI {
                    assert_eq!(copied as usize, segs.len() * p.hdr_len(), "only headers are copied");
                } else {
                    assert_eq!(copied, out_bytes, "everything is copied");
                }
                free_all(&mut ctx, out);
            }
        }
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn odd_chains_and_vlan() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let envr = env(&pool, MULTI);
    for cut in [61, 100, 333, 1000, 1447, 1449] {
        let p = Pkt { vlan: Some(7), ..big_tcp(false, false, 20_000 + cut, ACK | PSH) };
        let f = p.build();
        let mut pipe = pipeline(&envr, &["lso,mss=1000"]);
        let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, Some(cut)))]);
        check_tcp_segments(&f, &frames(&out), p.l3(), p.l4(), 1000, None);
        free_all(&mut ctx, out);
        assert_eq!(pool.available(), pool.capacity(), "cached mbufs count as available");
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn requests_are_served_and_checksums_left_to_a_capable_port() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let caps = MULTI | Offloads::TX_IPV4_CKSUM | Offloads::TX_TCP_CKSUM | Offloads::TX_UDP_CKSUM;
    let envr = env(&pool, caps);
    // A guest's TSO packet: lengths in the metadata, pseudo-header sum in the checksum field.
    let p = big_tcp(false, false, 30_000, ACK | PSH);
    let f = p.build();
    let mut m = out_port0(chain_of(&pool, &f, None));
    m.set_ol_flags(TX_TCP_SEG | TX_TCP_CKSUM | TX_IP_CKSUM | TX_IPV4 | RX_L4_CKSUM_PARTIAL);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(p.l4_len() as u8);
    m.set_tso_segsz(1200);
    let mut pipe = pipeline(&envr, &["lso"]);
    let out = run_all(&mut pipe, &mut ctx, vec![m]);
    assert_eq!(out.len(), 30_000usize.div_ceil(1200));
    for (i, m) in out.iter().enumerate() {
        let s = m.to_vec();
        let fl = m.ol_flags();
        assert_eq!(fl & TX_SEG_MASK, 0);
        assert_eq!(fl & (TX_IP_CKSUM | TX_TCP_CKSUM | TX_IPV4), TX_IP_CKSUM | TX_TCP_CKSUM | TX_IPV4, "{fl:#x}");
        assert_eq!(fl & RX_L4_CKSUM_PARTIAL, 0);
        assert_eq!(be16(&s, 24), 0, "ipv4 checksum left to the port");
        // The TCP field holds the pseudo-header sum with the length.
        let l4_len = s.len() - 34;
        let ph = ref_sum(&[&pseudo_bytes(&s, 14, 6, l4_len)]);
        assert_eq!(be16(&s, 50), ph, "pseudo-header in segment {i}");
        assert_eq!((m.l2_len(), m.l3_len(), m.l4_len()), (14, 20, p.l4_len() as u8));
    }
    free_all(&mut ctx, out);
    // Without the request and without mss, lso leaves a big packet alone.
    let mut pipe = pipeline(&envr, &["lso"]);
    let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, None))]);
    assert_eq!(frames(&out), vec![f.clone()]);
    free_all(&mut ctx, out);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn uso_v4_and_v6() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    for caps in [MULTI, Offloads::NONE] {
        for v6 in [false, true] {
            let p = Pkt { v6, udp: true, payload: bytes(9, 10_000), ..Pkt::default() };
            let f = p.build();
            let envr = env(&pool, caps);
            let mut m = out_port0(chain_of(&pool, &f, None));
            m.set_ol_flags(TX_UDP_SEG | if v6 { TX_IPV6 } else { TX_IPV4 });
            m.set_l2_len(14);
            m.set_l3_len(p.l3_len() as u16);
            m.set_l4_len(8);
            m.set_tso_segsz(1400);
            let mut pipe = pipeline(&envr, &["lso"]);
            let out = run_all(&mut pipe, &mut ctx, vec![m]);
            assert_eq!(out.len(), 10_000usize.div_ceil(1400));
            let mut payload = Vec::new();
            for (i, m) in out.iter().enumerate() {
                let s = m.to_vec();
                let (l3, l4) = (14, 14 + p.l3_len());
                assert_eq!(be16(&s, l4 + 4) as usize, s.len() - l4, "udp length of {i}");
                assert!(l4_ok(&s, l3, l4, s.len(), 17), "udp checksum of {i}");
                if v6 {
                    assert_eq!(be16(&s, l3 + 4) as usize, s.len() - l3 - 40);
                } else {
                    assert_eq!(be16(&s, l3 + 2) as usize, s.len() - l3);
                    assert_eq!(be16(&s, l3 + 4), 0x4242 + i as u16);
                    assert_eq!(ref_sum(&[&s[l3..l4]]), 0xffff);
                }
                assert_eq!(s[..l3], f[..l3]);
                assert_eq!(s[l4..l4 + 4], f[l4..l4 + 4], "ports");
                payload.extend_from_slice(&s[l4 + 8..]);
            }
            assert_eq!(payload, p.payload);
            free_all(&mut ctx, out);
        }
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

/// A VXLAN / GENEVE / NVGRE frame around `inner`, built by the encap stage itself.
fn encapsulate(pool: &fastpath_mempool::Mempool, ctx: &mut Ctx, spec: &str, inner: &[u8]) -> Vec<u8> {
    let mut s = make_stage(spec, &BuildEnv { pool: pool.clone(), ports: vec![] }).unwrap();
    let mut b = Batch::new();
    b.push(chain_of(pool, inner, None)).unwrap();
    s.process(&mut b, ctx);
    let m = b.pop().expect("encapsulated");
    let v = m.to_vec();
    ctx.free(m);
    v
}

const ENCAPS: &[(&str, usize)] = &[
    ("vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2", 14 + 20 + 16),
    ("vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2,udp-csum=on", 14 + 20 + 16),
    ("vxlan-encap,vni=42,local=2001:db8::1,remote=2001:db8::2", 14 + 40 + 16),
    ("geneve-encap,vni=42,local=192.0.2.1,remote=192.0.2.2,udp-csum=on,option=0x0102:0x80:deadbeef", 14 + 20 + 24),
    ("nvgre-encap,vni=42,local=192.0.2.1,remote=192.0.2.2", 14 + 20 + 8),
    ("nvgre-encap,vni=42,local=2001:db8::1,remote=2001:db8::2", 14 + 40 + 8),
];

#[test]
fn tunnels_after_encap_and_already_encapsulated() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    for caps in [MULTI, Offloads::NONE] {
        for &(spec, outer) in ENCAPS {
            for v6 in [false, true] {
                let p = big_tcp(v6, false, 40_000, ACK | PSH | CWR);
                let inner = p.build();
                let envr = env(&pool, caps);
                // In the same pipeline: from the metadata the encap stage sets.
                let mut pipe = pipeline(&envr, &[spec, "lso,mss=1400"]);
                let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &inner, None))]);
                let want = encapsulate(&pool, &mut ctx, spec, &inner);
                // The encap stage's IPv4 identification advanced once per packet: compare with
                // a frame made by a fresh stage, as the first packet of each.
                check_tcp_segments(&want, &frames(&out), outer + p.l3(), outer + p.l4(), 1400, Some(14));
                free_all(&mut ctx, out);
                // Arriving encapsulated: from the packet-type parser.
                let mut pipe = pipeline(&envr, &["lso,mss=1400"]);
                let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &want, None))]);
                check_tcp_segments(&want, &frames(&out), outer + p.l3(), outer + p.l4(), 1400, Some(14));
                for m in &out {
                    assert_ne!(m.ol_flags() & TX_TUNNEL_MASK, 0, "the tunnel is described");
                    assert_eq!(m.outer_l2_len(), 14);
                }
                free_all(&mut ctx, out);
            }
        }
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn tso_request_through_encap_with_deferred_outer_checksums() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let envr = env(&pool, MULTI);
    let spec = "vxlan-encap,vni=7,local=192.0.2.1,remote=192.0.2.2,udp-csum=on";
    let p = big_tcp(false, false, 50_000, ACK);
    let inner = p.build();
    let mut m = out_port0(chain_of(&pool, &inner, None));
    m.set_ol_flags(TX_TCP_SEG | TX_TCP_CKSUM | TX_IP_CKSUM | TX_IPV4);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(p.l4_len() as u8);
    m.set_tso_segsz(1448);
    // The builder appends tx-offload: the port cannot do tunnel TSO, so it is done in software.
    let ps = PipelineSpec::parse(&[spec.to_string()], &envr).unwrap();
    assert_eq!(ps.stages().last().map(String::as_str), Some("tx-offload"));
    let mut pipe = ps.build(&envr).unwrap();
    let out = run_all(&mut pipe, &mut ctx, vec![m]);
    // The same frame encapsulated without the request: the encap stage fills its UDP checksum.
    let want = encapsulate(&pool, &mut ctx, spec, &inner);
    assert_ne!(be16(&want, 40), 0);
    check_tcp_segments(&want, &frames(&out), 50 + 14, 50 + 34, 1448, Some(14));
    for m in &out {
        assert_eq!(m.ol_flags() & (TX_SEG_MASK | TX_CKSUM_MASK), 0);
    }
    free_all(&mut ctx, out);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn output_comes_in_bounded_batches_in_order() {
    let pool = pool(16384);
    let mut ctx = Ctx::new(0, &pool);
    let envr = env(&pool, MULTI);
    let mut pipe = pipeline(&envr, &["lso,mss=1448"]);
    // 40 packets: big ones and small ones of the same flow, interleaved.
    let mut input = Vec::new();
    let mut want_count = 0;
    let mut seqs = Vec::new();
    for i in 0..40u32 {
        let len = if i % 3 == 0 { 100 } else { 60_000 };
        let p = Pkt { seq: i * 100_000, payload: bytes(i, len), ..Pkt::default() };
        want_count += len.div_ceil(1448);
        for k in 0..len.div_ceil(1448) {
            seqs.push(i * 100_000 + (k * 1448) as u32);
        }
        input.push(out_port0(chain_of(&pool, &p.build(), None)));
    }
    let mut b = Batch::new();
    for m in input {
        b.push(m).unwrap();
    }
    pipe.run(&mut b, &mut ctx);
    let mut got = Vec::new();
    let mut batches = 1;
    loop {
        assert!(b.len() <= MAX_BURST);
        for m in b.drain_all() {
            got.push(be32(m.data(), 38));
            ctx.free(m);
        }
        if !pipe.resume(&mut b, &mut ctx) {
            break;
        }
        batches += 1;
    }
    assert_eq!(got.len(), want_count);
    assert_eq!(got, seqs, "input order, segment order");
    assert!(batches >= want_count / MAX_BURST);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn pool_exhaustion_drops_the_rest_and_frees_everything() {
    for caps in [MULTI, Offloads::NONE] {
        let pool = pool(120);
        let mut ctx = Ctx::new(0, &pool);
        let envr = env(&pool, caps);
        let mut pipe = pipeline(&envr, &["lso,mss=300"]);
        let p = big_tcp(false, false, 60_000, ACK);
        let m = out_port0(chain_of(&pool, &p.build(), None));
        let out = run_all(&mut pipe, &mut ctx, vec![m]);
        assert!(out.len() < 120, "the pool cannot hold 200 segments");
        assert_eq!(stat(&pipe, 0, "no-mbuf"), 1);
        free_all(&mut ctx, out);
        drop(ctx);
        drop(pipe);
        assert_eq!(pool.available(), pool.capacity());
    }
}

#[test]
fn malformed_and_unsegmentable_input() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let envr = env(&pool, MULTI);
    let p = big_tcp(false, false, 5000, ACK);
    let good = p.build();
    // IPv4 total length larger than the frame.
    let mut long = good.clone();
    long[16..18].copy_from_slice(&6000u16.to_be_bytes());
    // Truncated TCP header.
    let short = good[..40].to_vec();
    // A fragment.
    let mut frag = good.clone();
    frag[20] = 0x20;
    // TX_TCP_SEG on a UDP packet.
    let udp = Pkt { udp: true, payload: bytes(1, 3000), ..Pkt::default() }.build();
    // A big ICMP-ish packet (protocol 1) over the MTU.
    let mut other = good.clone();
    other[23] = 1;
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("lso", long.clone(), TX_TCP_SEG, "malformed"),
        ("lso", short.clone(), TX_TCP_SEG, "malformed"),
        ("lso", frag.clone(), TX_TCP_SEG, "fragment"),
        ("lso", udp.clone(), TX_TCP_SEG, "malformed"),
        ("lso,mtu=1500", udp.clone(), 0, "not-segmentable"),
        ("lso,mtu=1500", other.clone(), 0, "not-segmentable"),
        ("lso,mtu=1500", frag.clone(), 0, "fragment"),
    ];
    for (spec, f, flags, reason) in cases {
        let mut pipe = pipeline(&envr, &[spec]);
        let mut m = out_port0(chain_of(&pool, &f, None));
        m.set_ol_flags(flags);
        m.set_tso_segsz(1000);
        let out = run_all(&mut pipe, &mut ctx, vec![m]);
        assert!(out.is_empty(), "{spec} {reason}: dropped");
        assert_eq!(stat(&pipe, 0, reason), 1, "{spec}: {reason}");
    }
    // What lso,mss does not understand passes untouched.
    for f in [long, short, frag, udp, other] {
        let mut pipe = pipeline(&envr, &["lso,mss=1000"]);
        let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, None))]);
        assert_eq!(frames(&out), vec![f]);
        free_all(&mut ctx, out);
    }
    // A request with a tiny segment size.
    let mut pipe = pipeline(&envr, &["lso"]);
    let mut m = out_port0(chain_of(&pool, &good, None));
    m.set_ol_flags(TX_TCP_SEG);
    m.set_tso_segsz(10);
    assert!(run_all(&mut pipe, &mut ctx, vec![m]).is_empty());
    assert_eq!(stat(&pipe, 0, "bad-segment-size"), 1);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn mtu_mode_fits_every_segment() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    for &(spec, outer) in &[("", 0usize), (ENCAPS[0].0, ENCAPS[0].1), (ENCAPS[2].0, ENCAPS[2].1)] {
        let envr = env(&pool, MULTI);
        let p = big_tcp(false, false, 20_000, ACK | FIN);
        let f = p.build();
        let stages: Vec<&str> = if spec.is_empty() { vec!["lso,mtu=1500"] } else { vec![spec, "lso,mtu=1500"] };
        let mut pipe = pipeline(&envr, &stages);
        let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, None))]);
        let mss = 1500 - (outer + p.hdr_len() - 14);
        let want = if spec.is_empty() { f.clone() } else { encapsulate(&pool, &mut ctx, spec, &f) };
        let segs = frames(&out);
        check_tcp_segments(&want, &segs, outer + 14, outer + 34, mss, if spec.is_empty() { None } else { Some(14) });
        assert!(segs.iter().all(|s| s.len() - 14 <= 1500));
        assert!(segs.iter().any(|s| s.len() - 14 == 1500));
        free_all(&mut ctx, out);
    }
    // Small packets are not touched.
    let envr = env(&pool, MULTI);
    let mut pipe = pipeline(&envr, &["lso,mtu=1500"]);
    let f = big_tcp(false, false, 1000, ACK).build();
    let out = run_all(&mut pipe, &mut ctx, vec![out_port0(chain_of(&pool, &f, None))]);
    assert_eq!(frames(&out), vec![f]);
    free_all(&mut ctx, out);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn tx_offload_leaves_what_the_port_can_do_and_does_the_rest() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let tso = MULTI | Offloads::TX_IPV4_CKSUM | Offloads::TX_TCP_CKSUM | Offloads::TX_TCP_TSO;
    let envr = BuildEnv { pool: pool.clone(), ports: vec![port(0, Offloads::NONE), port(1, tso)] };
    let ps = PipelineSpec::parse(&[], &envr).unwrap();
    assert_eq!(ps.stages(), ["tx-offload"]);
    let mut pipe = ps.build(&envr).unwrap();
    let p = big_tcp(false, false, 20_000, ACK);
    let f = p.build();
    let mk = |port: u16| {
        let mut m = chain_of(&pool, &f, None);
        m.set_out_port(port);
        m.set_ol_flags(TX_TCP_SEG | TX_TCP_CKSUM | TX_IP_CKSUM | TX_IPV4);
        m.set_l2_len(14);
        m.set_l3_len(20);
        m.set_l4_len(p.l4_len() as u8);
        m.set_tso_segsz(1448);
        m
    };
    let out = run_all(&mut pipe, &mut ctx, vec![mk(1), mk(0)]);
    // Port 1 takes the TSO packet as it is; port 0 gets segments.
    assert_eq!(out[0].out_port(), 1);
    assert_eq!(out[0].to_vec(), f);
    assert_ne!(out[0].ol_flags() & TX_TCP_SEG, 0);
    let segs: Vec<Vec<u8>> = out[1..].iter().map(Mbuf::to_vec).collect();
    check_tcp_segments(&f, &segs, 14, 34, 1448, None);
    assert!(out[1..].iter().all(|m| m.nb_segs() == 1 && m.ol_flags() & (TX_SEG_MASK | TX_CKSUM_MASK) == 0));
    free_all(&mut ctx, out);
    // Checksum requests: done for port 0, left for port 1; a shared buffer gets a private copy.
    let small = Pkt { payload: bytes(3, 300), ..Pkt::default() }.build();
    let mut broken = small.clone();
    broken[24] ^= 0x55;
    broken[50] ^= 0x55;
    let mk = |port: u16| {
        let mut m = chain_of(&pool, &broken, None);
        m.set_out_port(port);
        m.set_ol_flags(TX_TCP_CKSUM | TX_IP_CKSUM | TX_IPV4);
        m.set_l2_len(14);
        m.set_l3_len(20);
        m
    };
    let orig = mk(0);
    let clone = ctx.cache(&pool).clone_shallow(&orig).unwrap();
    let out = run_all(&mut pipe, &mut ctx, vec![mk(0), mk(1), clone]);
    assert_eq!(out[0].to_vec(), small, "port 0: computed");
    assert_eq!(out[0].ol_flags() & TX_CKSUM_MASK, 0);
    assert_eq!(out[1].to_vec(), broken, "port 1: left to the port");
    assert_eq!(out[1].ol_flags() & TX_CKSUM_MASK, TX_TCP_CKSUM | TX_IP_CKSUM);
    assert_eq!(out[2].to_vec(), small, "the clone: a fixed private copy");
    assert_eq!(orig.to_vec(), broken, "the original is untouched");
    ctx.free(orig);
    free_all(&mut ctx, out);
    // Every port can do everything: nothing is appended.
    let all = Offloads(u32::MAX);
    let envr = BuildEnv { pool: pool.clone(), ports: vec![port(0, all)] };
    assert!(PipelineSpec::parse(&["io".to_string()], &envr).unwrap().stages() == ["io"]);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

/// A port whose offloads depend on its peer (vhost-user: what the guest negotiated) is asked
/// again at each burst: a TSO packet goes whole while the peer takes TSO, in segments once it
/// does not, and whole again when it does.
#[test]
fn tx_offload_follows_a_ports_live_offloads() {
    let pool = pool(4096);
    let mut ctx = Ctx::new(0, &pool);
    let tso = MULTI | Offloads::TX_TCP_CKSUM | Offloads::TX_TCP_TSO;
    let live = fastpath_pmd::LiveOffloads::new(tso);
    let mut p0 = port(0, tso);
    p0.live = Some(live.clone());
    let envr = BuildEnv { pool: pool.clone(), ports: vec![p0] };
    let ps = PipelineSpec::parse(&[], &envr).unwrap();
    assert_eq!(ps.stages(), ["tx-offload"], "the port lacks TX_IPV4_CKSUM: the fallback is there");
    let mut pipe = ps.build(&envr).unwrap();
    let p = big_tcp(true, false, 10_000, ACK | PSH);
    let f = p.build();
    let mk = || {
        let mut m = chain_of(&pool, &f, None);
        m.set_out_port(0);
        m.set_ol_flags(TX_TCP_SEG | TX_TCP_CKSUM | TX_IPV6);
        m.set_l2_len(14);
        m.set_l3_len(40);
        m.set_l4_len(p.l4_len() as u8);
        m.set_tso_segsz(1400);
        m
    };
    for (caps, whole) in [(tso, true), (Offloads::NONE, false), (MULTI, false), (tso, true)] {
        live.set(caps);
        let out = run_all(&mut pipe, &mut ctx, vec![mk()]);
        if whole {
            assert_eq!(out.len(), 1, "{caps:?}");
            assert_eq!(out[0].to_vec(), f);
            assert_ne!(out[0].ol_flags() & TX_TCP_SEG, 0);
        } else {
            let segs: Vec<Vec<u8>> = out.iter().map(Mbuf::to_vec).collect();
            check_tcp_segments(&f, &segs, 14, 54, 1400, None);
            assert!(out.iter().all(|m| m.ol_flags() & (TX_SEG_MASK | TX_CKSUM_MASK) == 0), "{caps:?}");
        }
        free_all(&mut ctx, out);
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn bad_specs_name_the_accepted_form() {
    let pool = pool(64);
    let envr = env(&pool, MULTI);
    for bad in ["lso,mss=10", "lso,mtu=100000", "lso,foo=1", "gro,max=70000", "gro,max=1", "tx-offload,x=1"] {
        let e = make_stage(bad, &envr).err().unwrap_or_else(|| panic!("{bad} accepted")).to_string();
        assert!(e.contains("accepted"), "{bad}: {e}");
    }
    for good in ["lso", "lso,mss=1448", "lso,mtu=9000,mss=8000", "gro", "gro,max=32768", "tx-offload"] {
        let s: Box<dyn Stage> = make_stage(good, &envr).unwrap();
        assert!(!s.name().is_empty());
    }
}
