//! The one's-complement sum: TSC cycles per byte measured the way DPDK's
//! `cksum_perf_autotest` does it (10 random blocks used in turn, 1 000 000 calls of a
//! non-inlined function, the TSC read around the loop, "unaligned" = one byte past a 64-byte
//! boundary), for every kernel this CPU has; then criterion benches of the dispatched [`sum`] at
//! 20, 64, 100, 1500 and 9000 bytes, aligned and unaligned.
//!
//! `CKSUM_ITERATIONS` changes the number of calls of the TSC table (default 1 000 000, as DPDK).
//! Compare with `../shared/peers/dpdk.sh cksum` run right before or after.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_pipeline::checksum::{sum, Kernel};
use fastpath_pmd::time::rdtsc;

const NUM_BLOCKS: usize = 10;
const TSC_SIZES: &[usize] = &[20, 21, 100, 101, 1500, 1501];

/// Blocks of `len` random bytes, each starting `offset` bytes past a 64-byte boundary (the
/// buffer and where the block starts in it).
fn blocks(len: usize, offset: usize) -> Vec<(Vec<u8>, usize)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..NUM_BLOCKS)
        .map(|_| {
            let mut b = vec![0u8; len + 128];
            for c in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *c = x as u8;
            }
            let s = (64 - (b.as_ptr() as usize % 64)) % 64 + offset;
            (b, s)
        })
        .collect()
}

#[inline(never)]
fn do_sum(k: Kernel, d: &[u8]) -> u16 {
    k.sum(d)
}

#[inline(never)]
fn do_dispatched(d: &[u8]) -> u16 {
    sum(d)
}

fn tsc_table() {
    let iterations: usize = std::env::var("CKSUM_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!(
        "TSC cycles of the one's-complement sum ({iterations} calls per line, like dpdk-test cksum_perf_autotest)"
    );
    println!(
        "{:<8} {:<10} {:>10} {:>17} {:>16}",
        "kernel", "alignment", "block size", "TSC cycles/block", "TSC cycles/byte"
    );
    let mut kernels: Vec<Option<Kernel>> = Kernel::supported().into_iter().map(Some).collect();
    kernels.push(None);
    for k in kernels {
        for &len in TSC_SIZES {
            for (name, off) in [("Aligned", 0), ("Unaligned", 1)] {
                let v = blocks(len, off);
                let t0 = rdtsc();
                let mut acc = 0u16;
                for i in 0..iterations {
                    let (b, s) = &v[i % NUM_BLOCKS];
                    let d = &b[*s..*s + len];
                    acc ^= match k {
                        Some(k) => do_sum(k, black_box(d)),
                        None => do_dispatched(black_box(d)),
                    };
                }
                let cycles = rdtsc() - t0;
                black_box(acc);
                let per_block = cycles as f64 / iterations as f64;
                let kname = k.map_or("sum".to_string(), |k| format!("{k:?}").to_lowercase());
                println!("{kname:<8} {name:<10} {len:>10} {per_block:>17.1} {:>16.3}", per_block / len as f64);
            }
        }
    }
}

fn checksum(c: &mut Criterion) {
    tsc_table();
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 64, 100, 1500, 9000] {
        g.throughput(Throughput::Bytes(len as u64));
        for (name, off) in [("aligned", 0), ("unaligned", 1)] {
            let v = blocks(len, off);
            let mut i = 0;
            g.bench_function(format!("sum/{len}/{name}"), |b| {
                b.iter(|| {
                    i = (i + 1) % NUM_BLOCKS;
                    let (b, s) = &v[i];
                    sum(black_box(&b[*s..*s + len]))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
