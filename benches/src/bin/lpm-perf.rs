//! `lpm-perf`: fastpath's LPM measured the way DPDK's `lpm_perf_autotest` and
//! `lpm6_perf_autotest` measure `rte_lpm` / `rte_lpm6`, printing the same lines, so that
//! `scripts/bench-lpm.sh` can put the two side by side.
//!
//! IPv4: routes spread per prefix length like DPDK's generated table (its distribution, given
//! with `--distribution` as printed by dpdk-test, or the built-in copy of it), scaled to
//! `--routes`; prefixes spaced evenly from a random start over the 7/8 of the address space
//! DPDK uses (not 224.0.0.0/3), so 12.5 % of random addresses miss, as there. Lookups: 1024
//! iterations of 4096 random addresses, one at a time and in bulks of 32, TSC cycles per lookup.
//!
//! IPv6: `--routes` routes with DPDK's lpm6 distribution (random prefixes), 100000 random
//! addresses (DPDK's short routes cover the whole space, so all match), looked up 1024 times,
//! one at a time and in bulks of 32, one read-side section per 32. `--inside` puts each address
//! under a random route instead (walks as deep as the routes: one load per byte past /16).
//!
//! `--dump-routes FILE` writes the IPv4 routes (`a.b.c.d/len` lines) for `scripts/lpm-peer.c`,
//! which measures DPDK's `rte_lpm` over the same table at sizes dpdk-test cannot make.
//!
//! `cargo run --release -p fastpath-benches --bin lpm-perf -- [--family 4|6] [--routes N]
//! [--distribution "DEPTH:COUNT,..."] [--max-groups N] [--iterations N] [--seed N]
//! [--dump-routes FILE] [--inside]`

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use fastpath_pipeline::lpm::{Lpm4, Lpm6, LpmConfig, MISS};
use fastpath_pmd::time::{rdtsc, tsc_hz};

/// Routes per prefix length (index = length) of DPDK 22.11's generated IPv4 table
/// (`lpm_perf_autotest` prints it): 1076806 routes.
const DPDK_V4: [(u8, u32); 30] = [
    (3, 1),
    (5, 3),
    (6, 2),
    (7, 4),
    (8, 201),
    (9, 37),
    (10, 55),
    (11, 97),
    (12, 381),
    (13, 775),
    (14, 2104),
    (15, 3712),
    (16, 69319),
    (17, 12983),
    (18, 23667),
    (19, 69068),
    (20, 62354),
    (21, 48531),
    (22, 72355),
    (23, 85427),
    (24, 583900),
    (25, 2654),
    (26, 5650),
    (27, 6467),
    (28, 7127),
    (29, 12936),
    (30, 5999),
    (31, 13),
    (32, 984),
    (0, 0),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Args {
    family: u8,
    routes: Option<u64>,
    distribution: Vec<(u8, u64)>,
    max_groups: u32,
    iterations: usize,
    seed: u64,
    dump: Option<String>,
    inside: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        family: 4,
        routes: None,
        distribution: Vec::new(),
        max_groups: 0,
        iterations: 1024,
        seed: 0,
        dump: None,
        inside: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--family" => a.family = v()?.parse().map_err(|_| "--family: 4 or 6")?,
            "--routes" => a.routes = Some(v()?.parse().map_err(|_| "--routes: a number")?),
            "--distribution" => {
                for item in v()?.split(',').filter(|s| !s.is_empty()) {
                    let (d, n) = item.split_once(':').ok_or("--distribution: DEPTH:COUNT,...")?;
                    let d = d.parse().map_err(|_| "--distribution: bad depth")?;
                    let n = n.parse().map_err(|_| "--distribution: bad count")?;
                    a.distribution.push((d, n));
                }
            }
            "--max-groups" => a.max_groups = v()?.parse().map_err(|_| "--max-groups: a number")?,
            "--iterations" => a.iterations = v()?.parse().map_err(|_| "--iterations: a number")?,
            "--seed" => a.seed = v()?.parse().map_err(|_| "--seed: a number")?,
            "--dump-routes" => a.dump = Some(v()?),
            "--inside" => a.inside = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.family != 4 && a.family != 6 {
        return Err("--family: 4 or 6".into());
    }
    Ok(a)
}

/// The distribution scaled to `n` routes (largest remainders), or as given.
fn scaled(dist: &[(u8, u64)], n: Option<u64>) -> Vec<(u8, u64)> {
    let total: u64 = dist.iter().map(|d| d.1).sum();
    let Some(n) = n else { return dist.to_vec() };
    if total == 0 {
        return Vec::new();
    }
    let mut v: Vec<(u8, u64, u64)> = dist.iter().map(|&(d, c)| (d, c * n / total, (c * n) % total)).collect();
    let mut left = n - v.iter().map(|x| x.1).sum::<u64>();
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(v[i].2));
    for i in order {
        if left == 0 {
            break;
        }
        v[i].1 += 1;
        left -= 1;
    }
    v.into_iter().map(|(d, c, _)| (d, c)).collect()
}

/// Adds every route, printing what DPDK's tests print about it.
fn install<P: Copy>(routes: &[(P, u8)], mut add: impl FnMut(P, u8) -> bool) {
    println!("No. routes = {}", routes.len());
    let t0 = rdtsc();
    let added = routes.iter().filter(|&&(p, d)| add(p, d)).count();
    let cycles = rdtsc() - t0;
    println!("Unique added entries = {added}");
    println!("Average LPM Add: {:.0} cycles", cycles_per(cycles, routes.len().max(1)));
}

fn print_table(st: &fastpath_pipeline::lpm::LpmStats) {
    println!("Routes in the table = {} (groups {} of {})", st.routes, st.groups_used, st.groups_max);
    println!("Table memory = {} bytes (writer bookkeeping {} bytes)", st.table_bytes, st.writer_bytes);
}

fn cycles_per(total: u64, n: usize) -> f64 {
    total as f64 / n as f64
}

fn report(what: &str, cycles: f64, fails: u64, n: usize) {
    println!("{what}: {cycles:.1} cycles (fails = {:.1}%)", fails as f64 * 100.0 / n as f64);
    println!("{what} rate: {:.1} M lookups/s", tsc_hz() as f64 / cycles / 1e6);
}

fn v4(a: &Args) -> Result<(), String> {
    let dist: Vec<(u8, u64)> = if a.distribution.is_empty() {
        DPDK_V4.iter().filter(|d| d.1 > 0).map(|&(d, c)| (d, c as u64)).collect()
    } else {
        a.distribution.clone()
    };
    let dist = scaled(&dist, a.routes);
    let mut rng = Rng(a.seed.max(1) ^ rdtsc());
    // Prefixes of each length spaced evenly over 0.0.0.0/1, 128.0.0.0/2 and 192.0.0.0/3 in
    // proportion to their size, from a random start (DPDK's classes A, B and C).
    let mut routes: Vec<(u32, u8)> = Vec::new();
    for &(depth, count) in &dist {
        if depth == 0 || count == 0 {
            continue;
        }
        for (head, bits, share) in [(0u32, 1u32, 4u64), (0x8000_0000, 2, 2), (0xc000_0000, 3, 1)] {
            let n = count * share / 7 + u64::from(share == 4) * (count - count * 4 / 7 - count * 2 / 7 - count / 7);
            if n == 0 || (depth as u32) < bits {
                continue;
            }
            let range = 1u64 << (depth as u32 - bits);
            let step = if range <= n { 1 } else { ((range as f64) / n as f64).round() as u64 };
            let mut at = rng.next() % range;
            for _ in 0..n {
                let p = head | ((at << (32 - depth as u32)) as u32);
                routes.push((p, depth));
                at = (at + step) % range;
            }
        }
    }
    if let Some(path) = &a.dump {
        let text: String = routes.iter().map(|&(p, d)| format!("{}/{d}\n", Ipv4Addr::from(p))).collect();
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    let groups = if a.max_groups > 0 { a.max_groups } else { 2048 };
    let mut lpm = Lpm4::new(&LpmConfig { max_groups: groups }).map_err(|e| e.to_string())?;
    install(&routes, |p, d| lpm.add(Ipv4Addr::from(p), d, 0xaa).is_ok());
    print_table(&lpm.stats());

    const BATCH: usize = 4096;
    const BULK: usize = 32;
    let mut r = lpm.reader();
    let mut ips = vec![0u32; BATCH];
    let mut hops = vec![0u16; BATCH];
    let (mut total, mut fails) = (0u64, 0u64);
    for _ in 0..a.iterations {
        ips.iter_mut().for_each(|x| *x = rng.next() as u32);
        let t = rdtsc();
        for c in ips.chunks(BULK) {
            let s = r.read();
            for &x in c {
                if s.lookup(x) == MISS {
                    fails += 1;
                }
            }
        }
        total += rdtsc() - t;
    }
    let n = a.iterations * BATCH;
    report("Average LPM Lookup", cycles_per(total, n), fails, n);
    let (mut total, mut fails) = (0u64, 0u64);
    for _ in 0..a.iterations {
        ips.iter_mut().for_each(|x| *x = rng.next() as u32);
        let t = rdtsc();
        for (c, h) in ips.chunks(BULK).zip(hops.chunks_mut(BULK)) {
            r.lookup_bulk(c, h);
            fails += h.iter().filter(|&&x| x == MISS).count() as u64;
        }
        total += rdtsc() - t;
    }
    report("BULK LPM Lookup", cycles_per(total, n), fails, n);
    Ok(())
}

/// DPDK 22.11's lpm6 test table: 1000 routes, lengths 1..=128 (as printed by dpdk-test).
fn v6_default_distribution() -> Vec<(u8, u64)> {
    // Near-uniform over 1..=128 with a few more short ones, as in DPDK's table.
    (1..=128u8).map(|d| (d, if d <= 104 { 8 } else { 7 })).collect::<Vec<_>>()
}

fn v6(a: &Args) -> Result<(), String> {
    let dist = if a.distribution.is_empty() { v6_default_distribution() } else { a.distribution.clone() };
    let dist = scaled(&dist, a.routes);
    let mut rng = Rng(a.seed.max(1) ^ rdtsc());
    let mut routes: Vec<(u128, u8)> = Vec::new();
    for &(depth, count) in &dist {
        for _ in 0..count {
            let p = ((rng.next() as u128) << 64 | rng.next() as u128)
                & (!0u128).checked_shl(128 - depth as u32).unwrap_or(0);
            routes.push((p, depth));
        }
    }
    let groups = if a.max_groups > 0 { a.max_groups } else { 65536 };
    let mut lpm = Lpm6::new(&LpmConfig { max_groups: groups }).map_err(|e| e.to_string())?;
    install(&routes, |p, d| lpm.add(Ipv6Addr::from(p), d, 0xaa).is_ok());
    print_table(&lpm.stats());
    // Random addresses, as DPDK's table of 100000: its short routes (/1, /2, ...) cover the
    // whole space, so every lookup matches something, mostly a short prefix.
    const IPS: usize = 100_000;
    let mut ips: Vec<u128> = (0..IPS).map(|_| (rng.next() as u128) << 64 | rng.next() as u128).collect();
    if a.inside {
        // --inside: each address under a random route instead, so walks go as deep as routes.
        for x in ips.iter_mut() {
            let (p, d) = routes[(rng.next() % routes.len() as u64) as usize];
            *x = p | (*x & (!0u128).checked_shr(d as u32).unwrap_or(0));
        }
    }
    let mut r = lpm.reader();
    let mut hops = vec![0u16; IPS];
    let (mut total, mut fails) = (0u64, 0u64);
    for _ in 0..a.iterations {
        let t = rdtsc();
        for (c, h) in ips.chunks(32).zip(hops.chunks_mut(32)) {
            let s = r.read();
            for (&x, h) in c.iter().zip(h.iter_mut()) {
                *h = s.lookup(x);
            }
        }
        total += rdtsc() - t;
        fails += hops.iter().filter(|&&x| x == MISS).count() as u64;
    }
    let n = a.iterations * IPS;
    report("Average LPM Lookup", cycles_per(total, n), fails, n);
    let (mut total, mut fails) = (0u64, 0u64);
    for _ in 0..a.iterations {
        let t = rdtsc();
        for (c, h) in ips.chunks(32).zip(hops.chunks_mut(32)) {
            r.lookup_bulk(c, h);
        }
        total += rdtsc() - t;
        fails += hops.iter().filter(|&&x| x == MISS).count() as u64;
    }
    report("BULK LPM Lookup", cycles_per(total, n), fails, n);
    Ok(())
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("lpm-perf: {e}");
            }
            eprintln!(
                "usage: lpm-perf [--family 4|6] [--routes N] [--distribution DEPTH:COUNT,...] [--max-groups N] \
                 [--iterations N] [--seed N] [--dump-routes FILE] [--inside]"
            );
            return ExitCode::from(2);
        }
    };
    println!("TSC = {:.1} MHz", tsc_hz() as f64 / 1e6);
    let r = if a.family == 4 { v4(&a) } else { v6(&a) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lpm-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
