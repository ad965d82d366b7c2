//! The `gro` stage: what merges (in-order segments of a flow, IPv4 and IPv6, VLAN, padding,
//! chains) and every rule that flushes instead (order, flags, options, IP fields and IDs,
//! checksums, sizes, other packets of the flow), plus the property that `lso` then `gro` gives
//! back the original packet. Every test ends with the pool full again.

mod lsokit;

use fastpath_mempool::offload::*;
use fastpath_mempool::{Batch, Mbuf, Mempool};
use fastpath_pipeline::{make_stage, BuildEnv, Pipeline, Stage};
use fastpath_pmd::{Ctx, Offloads};
use lsokit::*;
use proptest::prelude::*;

const MSS: usize = 1000;

/// Segments `n` of a flow: `n` packets of MSS bytes, seq and id following on.
fn flow(n: usize, base: &Pkt) -> Vec<Pkt> {
    (0..n)
        .map(|i| Pkt {
            seq: base.seq.wrapping_add((i * MSS) as u32),
            id: base.id.wrapping_add(i as u16),
            payload: bytes(i as u32 + base.sport as u32, MSS),
            ..base.clone()
        })
        .collect()
}

fn mbuf(pool: &Mempool, f: &[u8]) -> Mbuf {
    chain_of(pool, f, None)
}

/// Runs gro over the packets; returns the output frames and mbufs.
fn gro(pool: &Mempool, ctx: &mut Ctx, spec: &str, pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Mbuf>, Box<dyn Stage>) {
    let mut s = make_stage(spec, &BuildEnv { pool: pool.clone(), ports: vec![] }).unwrap();
    let mut b = Batch::new();
    for f in pkts {
        b.push(mbuf(pool, f)).unwrap();
    }
    s.process(&mut b, ctx);
    let ms: Vec<Mbuf> = b.drain_all().collect();
    (ms.iter().map(Mbuf::to_vec).collect(), ms, s)
}

fn stat(s: &dyn Stage, name: &str) -> u64 {
    s.counters().stats().iter().find(|(n, _)| *n == name).unwrap().1
}

/// The packet a merge of `pkts` (in order) must give: the first one's headers with the total
/// length, the last's PSH/FIN, and the TCP checksum field holding the pseudo-header sum.
fn merged(pkts: &[Pkt]) -> Vec<u8> {
    let mut p = pkts[0].clone();
    p.payload = pkts.iter().flat_map(|q| q.payload.clone()).collect();
    p.flags |= pkts.last().unwrap().flags & (PSH | FIN);
    let mut f = p.build();
    let (l3, l4) = (p.l3(), p.l4());
    let ph = ref_sum(&[&pseudo_bytes(&f, l3, 6, 0)]);
    f[l4 + 16..l4 + 18].copy_from_slice(&ph.to_be_bytes());
    f
}

/// Asserts `got == want` without printing kilobytes: lengths, and the first differing byte.
#[track_caller]
fn same(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    let lens = |v: &[Vec<u8>]| v.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lens(got), lens(want), "{what}: packet lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if let Some(at) = g.iter().zip(w).position(|(a, b)| a != b) {
            panic!("{what}: packet {i} differs at byte {at}: {:#04x} != {:#04x}", g[at], w[at]);
        }
    }
}

fn build(pkts: &[Pkt]) -> Vec<Vec<u8>> {
    pkts.iter().map(Pkt::build).collect()
}

fn done(pool: &Mempool, mut ctx: Ctx, ms: Vec<Mbuf>) {
    free_all(&mut ctx, ms);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn in_order_segments_merge_v4_v6_vlan() {
    let pool = pool(2048);
    for base in [
        Pkt { opts: ts_opts(1, 2), ..Pkt::default() },
        Pkt { v6: true, opts: ts_opts(1, 2), ..Pkt::default() },
        Pkt { vlan: Some(100), ..Pkt::default() },
        Pkt { df: false, ..Pkt::default() },
    ] {
        let mut ctx = Ctx::new(0, &pool);
        let mut pk = flow(20, &base);
        pk[19].flags |= PSH;
        let (out, ms, s) = gro(&pool, &mut ctx, "gro", &build(&pk));
        same(&out, &[merged(&pk)], "merge");
        let m = &ms[0];
        let fl = m.ol_flags();
        assert_ne!(fl & TX_TCP_SEG, 0);
        assert_eq!(m.tso_segsz() as usize, MSS);
        assert_eq!(m.nb_segs(), 20, "no copy: the segments are chained");
        assert_eq!(fl & (TX_IPV4 | TX_IPV6), if base.v6 { TX_IPV6 } else { TX_IPV4 });
        assert_eq!(
            (m.l2_len() as usize, m.l3_len() as usize, m.l4_len() as usize),
            (base.l3(), base.l3_len(), base.l4_len())
        );
        assert_eq!(stat(&*s, "merged"), 19);
        assert_eq!(stat(&*s, "coalesced"), 1);
        done(&pool, ctx, ms);
    }
}

/// One rule at a time: segment 5 of 10 is changed by `change`; the merge must stop before it.
/// `starts`: segment 5 starts the next merged packet (the ones after it join it); otherwise it
/// stays alone.
fn flushes_at_5(what: &str, change: impl Fn(&mut Pkt), starts: bool) {
    let pool = pool(1024);
    let mut ctx = Ctx::new(0, &pool);
    let mut pk = flow(10, &Pkt { opts: ts_opts(7, 8), ..Pkt::default() });
    change(&mut pk[5]);
    let frames = build(&pk);
    let (out, ms, _s) = gro(&pool, &mut ctx, "gro", &frames);
    if starts {
        same(&out, &[merged(&pk[..5]), merged(&pk[5..])], what);
    } else {
        same(&out, &[merged(&pk[..5]), frames[5].clone(), merged(&pk[6..])], what);
    }
    done(&pool, ctx, ms);
}

#[test]
fn flush_rules() {
    flushes_at_5("syn", |p| p.flags |= SYN, false);
    flushes_at_5("rst", |p| p.flags |= RST, false);
    flushes_at_5("urg", |p| p.flags |= URG, false);
    flushes_at_5("ece", |p| p.flags |= ECE, false);
    flushes_at_5("ack number", |p| p.ack += 1, false);
    flushes_at_5("window", |p| p.win += 1, false);
    flushes_at_5("timestamp", |p| p.opts = ts_opts(8, 8), false);
    flushes_at_5("options length", |p| p.opts = vec![1, 1, 1, 1], false);
    flushes_at_5("ttl", |p| p.ttl = 63, false);
    flushes_at_5("tos", |p| p.tos = 4, false);
    flushes_at_5("df", |p| p.df = false, false);
    flushes_at_5("ip options", |p| p.ext = true, false);
    flushes_at_5("pure ack", |p| p.payload.clear(), false);
    // CWR may only open a packet (Linux: it flushes what is held and starts anew).
    flushes_at_5("cwr", |p| p.flags |= CWR, true);
}

#[test]
fn order_id_and_size_breaks() {
    // Out of order: 6 arrives before 5. Neither joins what comes before it.
    let pool = pool(1024);
    let mut ctx = Ctx::new(0, &pool);
    let mut pk = flow(10, &Pkt::default());
    pk.swap(5, 6);
    let frames = build(&pk);
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &frames);
    same(&out, &[merged(&pk[..5]), frames[5].clone(), frames[6].clone(), merged(&pk[7..])], "out of order");
    free_all(&mut ctx, ms);
    // An IP ID that jumps, or a segment larger than the first.
    for change in [(|p: &mut Pkt| p.id = p.id.wrapping_add(2)) as fn(&mut Pkt), |p: &mut Pkt| p.payload.push(1)] {
        let mut pk = flow(10, &Pkt::default());
        change(&mut pk[5]);
        let frames = build(&pk);
        let (out, ms, _) = gro(&pool, &mut ctx, "gro", &frames);
        same(&out[..2], &[merged(&pk[..5]), frames[5].clone()], "id jump / larger segment");
        free_all(&mut ctx, ms);
    }
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn psh_fin_and_short_segments_end_the_packet() {
    for (what, f) in [
        ("psh", (|p: &mut Pkt| p.flags |= PSH) as fn(&mut Pkt)),
        ("fin", |p: &mut Pkt| p.flags |= FIN),
        ("short", |p: &mut Pkt| p.payload.truncate(10)),
    ] {
        let pool = pool(1024);
        let mut ctx = Ctx::new(0, &pool);
        let mut pk = flow(10, &Pkt::default());
        f(&mut pk[4]);
        // The ones after it follow on in sequence.
        let shift = MSS - pk[4].payload.len();
        for p in pk[5..].iter_mut() {
            p.seq = p.seq.wrapping_sub(shift as u32);
        }
        let (out, ms, _) = gro(&pool, &mut ctx, "gro", &build(&pk));
        same(&out, &[merged(&pk[..5]), merged(&pk[5..])], what);
        done(&pool, ctx, ms);
    }
}

#[test]
fn bad_checksums_are_never_merged() {
    let pool = pool(1024);
    let mut ctx = Ctx::new(0, &pool);
    let pk = flow(10, &Pkt::default());
    let mut frames = build(&pk);
    // A payload byte of segment 3 flipped (TCP checksum now wrong), and the IPv4 checksum of 7.
    let n = frames[3].len();
    frames[3][n - 1] ^= 0x40;
    frames[7][24] ^= 0x01;
    let (out, ms, s) = gro(&pool, &mut ctx, "gro", &frames);
    same(&out, &[merged(&pk[..3]), frames[3].clone(), merged(&pk[4..7]), frames[7].clone(), merged(&pk[8..])], "merge");
    assert_eq!(stat(&*s, "bad-checksum"), 2);
    done(&pool, ctx, ms);
    // Flags from the port: BAD is never merged, GOOD is not verified again.
    let pool2 = lsokit::pool(1024);
    let mut ctx = Ctx::new(0, &pool2);
    let mut s = make_stage("gro", &BuildEnv { pool: pool2.clone(), ports: vec![] }).unwrap();
    let mut frames = build(&pk[..4]);
    let n = frames[2].len();
    frames[2][n - 1] ^= 0x40; // wrong, but the port said good
    let mut b = Batch::new();
    for (i, f) in frames.iter().enumerate() {
        let mut m = mbuf(&pool2, f);
        m.set_ol_flags(if i == 3 { RX_L4_CKSUM_BAD } else { RX_L4_CKSUM_GOOD | RX_IP_CKSUM_GOOD });
        b.push(m).unwrap();
    }
    s.process(&mut b, &mut ctx);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].nb_segs(), 3);
    assert_eq!(b[1].to_vec(), frames[3]);
    let ms: Vec<Mbuf> = b.drain_all().collect();
    done(&pool2, ctx, ms);
}

#[test]
fn fixed_ids_only_with_df_and_max_bounds_the_size() {
    let pool = pool(1024);
    let mut ctx = Ctx::new(0, &pool);
    // DF set and the same ID in every segment: merges (RFC 6864).
    let mut pk = flow(6, &Pkt::default());
    for p in pk.iter_mut() {
        p.id = 9;
    }
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &build(&pk));
    same(&out, &[merged(&pk)], "merge");
    free_all(&mut ctx, ms);
    // Without DF it does not.
    for p in pk.iter_mut() {
        p.df = false;
    }
    let frames = build(&pk);
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &frames);
    same(&out, &frames, "fixed ids without DF");
    free_all(&mut ctx, ms);
    // Mixed: incrementing then fixed breaks.
    let mut pk = flow(6, &Pkt::default());
    pk[3].id = pk[2].id;
    pk[4].id = pk[3].id + 1;
    pk[5].id = pk[4].id + 1;
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &build(&pk));
    same(&out, &[merged(&pk[..3]), merged(&pk[3..])], "merge");
    free_all(&mut ctx, ms);
    // max: 5000 bytes of IP packet hold 4 segments of 1000 behind 40 bytes of headers.
    let pk = flow(10, &Pkt::default());
    let (out, ms, _) = gro(&pool, &mut ctx, "gro,max=5000", &build(&pk));
    same(&out, &[merged(&pk[..4]), merged(&pk[4..8]), merged(&pk[8..])], "merge");
    done(&pool, ctx, ms);
}

#[test]
fn interleaved_flows_and_other_packets() {
    let pool = pool(2048);
    let mut ctx = Ctx::new(0, &pool);
    let a = flow(8, &Pkt { sport: 1, ..Pkt::default() });
    let b = flow(8, &Pkt { sport: 2, v6: true, ..Pkt::default() });
    let udp = Pkt { udp: true, payload: bytes(5, 200), ..Pkt::default() }.build();
    let arp = {
        let mut f = vec![0xffu8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    let mut frames = Vec::new();
    for i in 0..8 {
        frames.push(a[i].build());
        frames.push(b[i].build());
        if i == 3 {
            frames.push(udp.clone());
            frames.push(arp.clone());
        }
    }
    // A pure ACK of flow a after everything: not merged, after a's packet.
    let ack = Pkt { sport: 1, seq: a[7].seq.wrapping_add(MSS as u32), ..Pkt::default() }.build();
    frames.push(ack.clone());
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &frames);
    same(&out, &[merged(&a), merged(&b), udp, arp, ack], "merge");
    done(&pool, ctx, ms);
}

#[test]
fn padded_and_chained_segments() {
    let pool = pool(2048);
    let mut ctx = Ctx::new(0, &pool);
    // Tiny segments padded to 60 bytes by Ethernet.
    let base = Pkt::default();
    let pk: Vec<Pkt> = (0..5)
        .map(|i| Pkt { seq: base.seq + i * 2, id: base.id + i as u16, payload: vec![i as u8; 2], ..base.clone() })
        .collect();
    let frames: Vec<Vec<u8>> = pk
        .iter()
        .map(|p| {
            let mut f = p.build();
            f.resize(60, 0);
            f
        })
        .collect();
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &frames);
    same(&out, &[merged(&pk)], "merge");
    free_all(&mut ctx, ms);
    // Jumbo segments arriving as chains (headers in the first mbuf).
    let pk: Vec<Pkt> = (0..4)
        .map(|i| Pkt { seq: base.seq + i * 8000, id: base.id + i as u16, payload: bytes(i, 8000), ..base.clone() })
        .collect();
    let (out, ms, _) = gro(&pool, &mut ctx, "gro", &build(&pk));
    same(&out, &[merged(&pk)], "merge");
    done(&pool, ctx, ms);
}

/// The pipeline `lso,mss=MSS` then `gro`, for a port that takes chains or not.
fn lso_gro(pool: &Mempool, caps: Offloads, mss: usize) -> Pipeline {
    let env = BuildEnv { pool: pool.clone(), ports: vec![port(0, caps)] };
    Pipeline::new(vec![make_stage(&format!("lso,mss={mss}"), &env).unwrap(), make_stage("gro", &env).unwrap()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// LSO then GRO gives back the original packet: the same bytes, except the TCP checksum
    /// field, which holds the pseudo-header sum of a TSO request, with `tso_segsz` = the MSS.
    #[test]
    fn lso_then_gro_gives_back_the_original(
        v6 in any::<bool>(), vlan in any::<bool>(), chain_out in any::<bool>(),
        nopts in 0usize..4, flag_bits in 0u8..16, len in 1usize..30_000, mss in 64usize..3000,
        seq in any::<u32>(), id in any::<u16>(), cut in 60usize..2000,
    ) {
        let flags = ACK
            | if flag_bits & 1 != 0 { PSH } else { 0 }
            | if flag_bits & 2 != 0 { FIN } else { 0 }
            | if flag_bits & 4 != 0 { CWR } else { 0 }
            | if flag_bits & 8 != 0 { ECE } else { 0 };
        let mut opts = ts_opts(seq ^ 0x55, 7);
        opts.truncate(nopts * 4);
        let p = Pkt {
            v6, vlan: vlan.then_some(3), opts, flags, seq, id,
            payload: bytes(len as u32, len), ..Pkt::default()
        };
        let f = p.build();
        let mss = mss.min(1600 - p.hdr_len());
        let segs = len.div_ceil(mss);
        // GRO stays within 65535 bytes and one burst.
        prop_assume!(segs <= 256);
        let pool = pool(4096);
        let mut ctx = Ctx::new(0, &pool);
        let caps = if chain_out { Offloads::TX_MULTI_SEGS } else { Offloads::NONE };
        let mut pipe = lso_gro(&pool, caps, mss);
        let mut m = chain_of(&pool, &f, Some(cut));
        m.set_out_port(0);
        let out = run_all(&mut pipe, &mut ctx, vec![m]);
        prop_assert_eq!(out.len(), 1);
        let got = out[0].to_vec();
        let l4 = p.l4();
        let mut want = f.clone();
        if segs > 1 {
            let ph = ref_sum(&[&pseudo_bytes(&f, p.l3(), 6, 0)]);
            want[l4 + 16..l4 + 18].copy_from_slice(&ph.to_be_bytes());
            prop_assert_ne!(out[0].ol_flags() & TX_TCP_SEG, 0);
            prop_assert_eq!(out[0].tso_segsz() as usize, mss);
        }
        prop_assert_eq!(got, want);
        free_all(&mut ctx, out);
        drop(ctx);
        drop(pipe);
        prop_assert_eq!(pool.available(), pool.capacity());
    }
}
