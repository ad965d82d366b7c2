//! The security groups' connection table (`fastpath_pipeline::conntrack`), per packet:
//!
//! - `conntrack/lookup_32/N`: 32 packets of tracked UDP connections (random among N, replies
//!   and originals mixed) looked up and refreshed, as the switch does for each packet of a VM
//!   port with groups; N = 1k, 100k, 1M connections in a table sized for N;
//! - `conntrack/new_32`: 32 new UDP connections checked against an allow-all rule and inserted
//!   in a table for 1M (emptied by aging, outside the measured time, when three quarters full);
//! - `conntrack/parse_and_lookup_32/100000`: the same lookups from frames (`Flow::parse` first).
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), as in the `fdb` bench.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_pipeline::conntrack::{Conntrack, ConntrackConfig, Flow, Timeouts, Verdict};

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

criterion_group!(benches, lookups, inserts);
criterion_main!(benches);
