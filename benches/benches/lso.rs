//! LSO, GRO and the tx-offload fallback, each timed on its own (thread CPU time,
//! `CLOCK_THREAD_CPUTIME_ID`, so that a shared machine measures what the code costs):
//!
//! - `lso/64k-*`: one 64 KiB TCP/IPv4 packet (a chain, as the pcap port or a vhost-user guest
//!   gives it) cut to MSS 1448 with software checksums: `copy` for a port that needs one frame
//!   per segment, `chain` for one that takes chains (payload attached, not copied), `vxlan-*`
//!   behind a VXLAN encap stage (inner and outer headers, outer UDP checksum). The input is
//!   written just before (warm in cache, as after a vhost-user dequeue); the output is freed
//!   inside the timed part, as a transmit would. Throughput: payload bytes.
//! - `gro/32x1448`: a burst of 32 in-order segments of a flow merged into one TSO packet, the
//!   TCP checksums verified in software. Throughput: payload bytes.
//! - `tx-offload/32-plain`: the fallback stage over 32 packets that ask for nothing: its cost
//!   when there is nothing to do.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_benches::{gro_flow, tcp4_frame, LSO_PAYLOAD};
use fastpath_mempool::{Batch, Mbuf, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{make_stage, BuildEnv, Pipeline};
use fastpath_pmd::{Ctx, Offloads, PortInfo};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn port(offloads: Offloads) -> PortInfo {
    PortInfo {
        id: 0,
        driver: "bench",
        name: "bench".into(),
        rx_queues: 1,
        tx_queues: 1,
        offloads,
        live: None,
        max_frame: 262_144,
        mac: None,
    }
}

fn pipeline(pool: &Mempool, caps: Offloads, specs: &[&str]) -> Pipeline {
    let env = BuildEnv { pool: pool.clone(), ports: vec![port(caps)] };
    Pipeline::new(specs.iter().map(|s| make_stage(s, &env).unwrap()).collect())
}

/// `f` in a chain of full mbufs from the lcore's cache, every byte written.
fn chain(ctx: &mut Ctx, pool: &Mempool, f: &[u8]) -> Mbuf {
    let cache = ctx.cache(pool);
    let mut segs: Vec<Mbuf> = Vec::new();
    let mut rest = f;
    while !rest.is_empty() {
        let mut m = cache.alloc().expect("an mbuf");
        let n = rest.len().min(m.tailroom());
        m.append(n).unwrap().copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        segs.push(m);
    }
    let mut tail = segs.pop().unwrap();
    while let Some(mut m) = segs.pop() {
        m.chain(tail).unwrap();
        tail = m;
    }
    tail.set_out_port(0);
    tail
}

/// Runs `p` over `input` to the end, freeing the output as a transmit would.
fn run(p: &mut Pipeline, ctx: &mut Ctx, b: &mut Batch, input: Vec<Mbuf>) -> usize {
    for m in input {
        b.push(m).unwrap();
    }
    p.run(b, ctx);
    let mut n = b.len();
    ctx.free_batch(b);
    while p.resume(b, ctx) {
        n += b.len();
        ctx.free_batch(b);
    }
    n
}

fn lso(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let frame = tcp4_frame(LSO_PAYLOAD, 1, 1, false);
    let vxlan = "vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2,udp-csum=on";
    let mut g = c.benchmark_group("lso");
    g.throughput(Throughput::Bytes(LSO_PAYLOAD as u64));
    let cases: &[(&str, Offloads, &[&str])] = &[
        ("64k-copy", Offloads::NONE, &["lso,mss=1448"]),
        ("64k-chain", Offloads::TX_MULTI_SEGS, &["lso,mss=1448"]),
        ("64k-vxlan-copy", Offloads::NONE, &[vxlan, "lso,mss=1398"]),
        ("64k-vxlan-chain", Offloads::TX_MULTI_SEGS, &[vxlan, "lso,mss=1398"]),
    ];
    // The VXLAN frame must leave room for the outer headers within 65535 bytes of IP.
    let inner = tcp4_frame(LSO_PAYLOAD - 50, 1, 1, false);
    for &(name, caps, specs) in cases {
        let mut p = pipeline(&pool, caps, specs);
        let mut ctx = Ctx::new(0, &pool);
        let mut b = Batch::new();
        let f = if specs.len() > 1 { &inner } else { &frame };
        g.bench_function(name, |bn| {
            bn.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let m = chain(&mut ctx, &pool, f);
                    let t0 = cpu_time();
                    std::hint::black_box(run(&mut p, &mut ctx, &mut b, vec![m]));
                    t += cpu_time() - t0;
                }
                t
            })
        });
    }
    // A burst of 32 such packets, as the lcore hands them over: 2 MiB of input, more than a
    // core's L2 holds.
    g.throughput(Throughput::Bytes(32 * LSO_PAYLOAD as u64));
    for (name, caps) in [("64k-copy-burst32", Offloads::NONE), ("64k-chain-burst32", Offloads::TX_MULTI_SEGS)] {
        let mut p = pipeline(&pool, caps, &["lso,mss=1448"]);
        let mut ctx = Ctx::new(0, &pool);
        let mut b = Batch::new();
        g.bench_function(name, |bn| {
            bn.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let input: Vec<Mbuf> = (0..32).map(|_| chain(&mut ctx, &pool, &frame)).collect();
                    let t0 = cpu_time();
                    std::hint::black_box(run(&mut p, &mut ctx, &mut b, input));
                    t += cpu_time() - t0;
                }
                t
            })
        });
    }
    g.finish();
    assert_eq!(pool.available(), pool.capacity());
}

fn gro(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let flow = gro_flow(32);
    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Bytes(32 * 1448));
    let tso = Offloads::TX_MULTI_SEGS | Offloads::TX_TCP_TSO | Offloads::TX_TCP_CKSUM | Offloads::TX_IPV4_CKSUM;
    let mut p = pipeline(&pool, tso, &["gro"]);
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();
    g.bench_function("32x1448", |bn| {
        bn.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let input: Vec<Mbuf> = flow.iter().map(|f| chain(&mut ctx, &pool, f)).collect();
                let t0 = cpu_time();
                std::hint::black_box(run(&mut p, &mut ctx, &mut b, input));
                t += cpu_time() - t0;
            }
            t
        })
    });
    g.finish();
    // The fallback with nothing to do: 32 plain frames.
    let mut g = c.benchmark_group("tx-offload");
    g.throughput(Throughput::Elements(32));
    let mut p = pipeline(&pool, Offloads::NONE, &["tx-offload"]);
    let small = tcp4_frame(18, 1, 1, false);
    for _ in 0..32 {
        b.push(chain(&mut ctx, &pool, &small)).unwrap();
    }
    g.bench_function("32-plain", |bn| bn.iter(|| p.run(std::hint::black_box(&mut b), &mut ctx)));
    g.finish();
    ctx.free_batch(&mut b);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}

criterion_group!(benches, lso, gro);
criterion_main!(benches);
