//! The security groups' connection table (`fastpath_pipeline::conntrack`), per packet:
//!
//! - `conntrack/lookup_32/N`: 32 packets of tracked UDP connections (random among N, replies
//!   and originals mixed) looked up and refreshed, as the switch does for each packet of a VM
//!   port with groups; N = 1k, 100k, 1M connections in a table sized for N;
//! - `conntrack/new_32`: 32 new UDP connections checked against an allow-all rule and inserted
//!   in a table for 1M (emptied by aging, outside the measured time, when three quarters full);
//! - `conntrack/parse_and_lookup_32/100000`: the same lookups from frames (`Flow::parse` first);
//! - `conntrack/one_flow_32/find`, `/remembered`: 32 frames of one tracked UDP connection (a
//!   burst of one flow, as a VM's bulk traffic comes: the PVP benchmark's case), parsed and
//!   looked up, table and frames in cache: the tracker's own cost per packet without memory
//!   misses; `find` looks every packet up, `remembered` as the switch does (`track_with`: the
//!   first packet of the burst is looked up, the others check the slot it found);
//! - `conntrack/churn/1_lcore`, `churn/2_lcores`: new connections per second on one and two
//!   threads (pinned to CPUs 0 and 1) sharing one table that holds 500k connections: each
//!   connection is inserted, then removed by its next packet after a rule change (the generation
//!   moved, no rule allows it), so the table stays as full; wall time, 32 connections per
//!   iteration in all.
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), as in the `fdb` bench.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_pipeline::conntrack::{Conntrack, ConntrackConfig, Flow, LastConn, Timeouts, Verdict};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

fn table(capacity: usize) -> Conntrack {
    Conntrack::new(ConntrackConfig { capacity, zones: 1, zone_limit: 0, timeouts: Timeouts::default() }).unwrap()
}

/// UDP connection `i`: 10.x.y.z:port -> 192.168.0.1:53.
fn flow(i: u32) -> Flow {
    let mut src = [0u8; 16];
    src[12..].copy_from_slice(&(0x0a00_0000 | (i >> 8)).to_be_bytes());
    let mut dst = [0u8; 16];
    dst[12..].copy_from_slice(&[192, 168, 0, 1]);
    Flow { src, dst, proto: 17, sport: 1024 + (i & 0xff) as u16, dport: 53, ..Flow::default() }
}

/// The Ethernet frame of `f` (IPv4 / UDP, 8 bytes of payload).
fn frame(f: &Flow) -> Vec<u8> {
    let mut b = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    b.extend_from_slice(&[0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    b.extend_from_slice(&f.src[12..]);
    b.extend_from_slice(&f.dst[12..]);
    b.extend_from_slice(&f.sport.to_be_bytes());
    b.extend_from_slice(&f.dport.to_be_bytes());
    b.extend_from_slice(&[0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    b
}

/// A table holding `n` connections, and 65536 packets of them in a scrambled order (every
/// other one a reply).
fn filled(n: usize) -> (Conntrack, Vec<Flow>) {
    let ct = table(n);
    // A connection whose bucket is full is refused (a few per thousand when the table is full):
    // the lookups are of those in.
    let tracked: Vec<u32> =
        (0..n as u32).filter(|&i| ct.track(0, &flow(i), None, 0, 1, |_| true) == Verdict::New).collect();
    eprintln!("conntrack: {n} connections offered, {} tracked, {} refused", tracked.len(), ct.refused());
    let pkts = (0..65536u64)
        .map(|j| {
            let f = flow(tracked[(j.wrapping_mul(2_654_435_761) % tracked.len() as u64) as usize]);
            if j & 1 == 1 {
                f.reversed()
            } else {
                f
            }
        })
        .collect();
    (ct, pkts)
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(32));
    for n in SIZES {
        let (ct, pkts) = filled(n);
        g.bench_function(format!("lookup_32/{n}"), |b| {
            b.iter_custom(|iters| {
                let mut at = 0;
                let mut ok = 0u64;
                let t0 = cpu_time();
                for _ in 0..iters {
                    for f in &pkts[at..at + 32] {
                        ok += (ct.track(0, f, None, 1, 1, |_| false) == Verdict::Established) as u64;
                    }
                    at = (at + 32) % pkts.len();
                }
                let t = cpu_time() - t0;
                assert_eq!(ok, iters * 32, "every packet is of a tracked connection");
                t
            })
        });
        if n == 100_000 {
            let frames: Vec<Vec<u8>> = pkts.iter().map(frame).collect();
            g.bench_function(format!("parse_and_lookup_32/{n}"), |b| {
                b.iter_custom(|iters| {
                    let mut at = 0;
                    let mut ok = 0u64;
                    let t0 = cpu_time();
                    for _ in 0..iters {
                        for fr in &frames[at..at + 32] {
                            let Ok((f, rel)) = Flow::parse(fr) else { continue };
                            ok += (ct.track(0, &f, rel.as_ref(), 1, 1, |_| false) == Verdict::Established) as u64;
                        }
                        at = (at + 32) % frames.len();
                    }
                    let t = cpu_time() - t0;
                    assert_eq!(ok, iters * 32, "every frame is of a tracked connection");
                    t
                })
            });
        }
    }
    let (ct, pkts) = filled(1_000);
    let fr = frame(&pkts[0]);
    for remembered in [false, true] {
        let name = if remembered { "one_flow_32/remembered" } else { "one_flow_32/find" };
        let last = LastConn::default();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut ok = 0u64;
                let t0 = cpu_time();
                for _ in 0..iters {
                    last.forget();
                    for _ in 0..32 {
                        let (mut f, mut q) = (Flow::default(), Flow::default());
                        let Ok(rel) = Flow::parse_into(std::hint::black_box(&fr), &mut f, &mut q) else { continue };
                        let rel = rel.then_some(&q);
                        let v = if remembered {
                            ct.track_with(&last, 0, 0, &f, rel, 1, 1, |_| false)
                        } else {
                            ct.track(0, &f, rel, 1, 1, |_| false)
                        };
                        ok += (v == Verdict::Established) as u64;
                    }
                }
                let t = cpu_time() - t0;
                assert_eq!(ok, iters * 32, "every frame is of the tracked connection");
                t
            })
        });
    }
    g.finish();
}

fn inserts(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(32));
    const CAP: usize = 1 << 20;
    let ct = table(CAP);
    let mut next = 0u32;
    g.bench_function("new_32", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let (mut new, mut full) = (0u64, 0u64);
            for _ in 0..iters {
                if ct.len() + 32 > CAP * 3 / 4 {
                    // Untimed: empty the table (everything idle since time 0 is expired at 1e9).
                    ct.age(1_000_000_000, usize::MAX);
                }
                let t0 = cpu_time();
                for _ in 0..32 {
                    match ct.track(0, &flow(next), None, 0, 1, |_| true) {
                        Verdict::New => new += 1,
                        Verdict::Full => full += 1,
                        v => panic!("a new connection, not {v:?}"),
                    }
                    next = next.wrapping_add(1);
                }
                total += cpu_time() - t0;
            }
            assert_eq!(new + full, iters * 32, "every connection is new (or its bucket full)");
            total
        })
    });
    g.finish();
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads
    // it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `n` connections opened and cut by thread `t` (of its own flows), at generations 2k / 2k+1.
fn churn_one(ct: &Conntrack, t: u32, n: u64) {
    for i in 0..n {
        let f = flow(0x8000_0000 | t << 28 | (i as u32 & 0x0fff_ffff));
        let g = 2 * (i as u32) + 2;
        let v = ct.track(0, &f, None, 0, g, |_| true);
        assert!(matches!(v, Verdict::New | Verdict::Full), "{v:?}");
        ct.track(0, &f, None, 0, g + 1, |_| false);
    }
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(32));
    let (ct, _) = filled(500_000);
    let ct = std::sync::Arc::new(ct);
    for threads in [1u32, 2] {
        let name = if threads == 1 { "churn/1_lcore" } else { "churn/2_lcores" };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per = iters * 32 / threads as u64;
                let go = std::sync::Arc::new(std::sync::Barrier::new(threads as usize + 1));
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (ct, go) = (ct.clone(), go.clone());
                        std::thread::spawn(move || {
                            pin(t as usize);
                            go.wait();
                            churn_one(&ct, t, per);
                        })
                    })
                    .collect();
                go.wait();
                let t0 = std::time::Instant::now();
                hs.into_iter().for_each(|h| h.join().unwrap());
                t0.elapsed()
            })
        });
    }
    assert!(ct.len() <= 500_000 + 2, "every churned connection was removed: {}", ct.len());
    g.finish();
}

criterion_group!(benches, lookups, inserts, churn);
criterion_main!(benches);
