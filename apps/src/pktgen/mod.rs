//! `fastpath pktgen`: a UDP traffic generator with loss and latency measurement, on the lcore
//! runtime.
//!
//! Design: the generator is an *rx queue* ([`GenQueue`]) of an lcore task whose output is the
//! port under test, so generated frames take exactly the path forwarded frames take (the
//! runtime's transmit, per-lcore caches, tx counters; frames the port does not accept are freed
//! and counted as tx drops, as DPDK's txonly mode does). The port's own rx queues are tasks whose
//! processor ([`Analyzer`]) recognises returning frames by a signature in the payload, records
//! latency from the TSC stamp in them, and frees everything. One core runs both; with `--cores
//! 0,1` each lcore has a generator (its own tx queue, with the rate split) and some rx queues.
//!
//! Each frame: Ethernet / IPv4 / UDP (checksum 0, allowed for IPv4), source port
//! `1024 + flow`, payload `"FP" | generator id u16 | sequence u32 | TSC u64` then zeros. The
//! IPv4 header is the same for every frame, so its checksum is computed once. Rate limiting
//! compares the TSC with the frames due so far (no sleeping, no per-packet timer); when behind it
//! catches up a burst per call (the average rate holds when the core is shared), forgetting debt
//! older than 100 ms. Nothing is allocated while sending: mbufs come from the lcore's cache and
//! the template is copied in.

pub mod gen;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::time::{rdtsc, tsc_hz};
use fastpath_pmd::{IdleMode, LcoreSpec, Runtime, RuntimeConfig};
use serde_json::json;

use gen::{latency, Analyzer, AnalyzerStats, FrameSpec, GenQueue, MIN_SIZE};

use crate::cli::{parse_list, PktgenArgs};
use crate::ports;
use crate::AppError;

fn parse_ip(s: &str, what: &str) -> Result<[u8; 4], AppError> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .map_err(|_| AppError::Usage(format!("{what} {s}: not an IPv4 address like 198.18.0.1")))
}

fn parse_mac(s: &str, what: &str) -> Result<[u8; 6], AppError> {
    fastpath_pmd::sys::parse_mac(s).map_err(|e| AppError::Usage(format!("{what}: {e}")))
}

/// Parses `--rate`: `max`, or frames per second with an optional k/m suffix.
pub fn parse_rate(s: &str) -> Result<u64, AppError> {
    if s == "max" {
        return Ok(0);
    }
    match fastpath_pmd::spec::parse_num::<u64>(s) {
        Some(r) if r > 0 => Ok(r),
        _ => Err(AppError::Usage(format!("--rate {s}: give max or frames per second (e.g. 100000, 250k, 1m)"))),
    }
}

/// Median of the per-second samples, skipping the first two when there are more than four
/// (as dpdk.sh does with testpmd's periods).
fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = if v.len() > 4 { v[2..].to_vec() } else { v.to_vec() };
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    s[(s.len() - 1) / 2]
}

/// Runs pktgen to the end.
pub fn run(a: &PktgenArgs) -> Result<(), AppError> {
    let rate = parse_rate(&a.rate)?;
    if let Some(d) = a.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(AppError::Usage(format!("--duration {d}: give a positive number of seconds")));
        }
    }
    if a.flows == 0 || a.flows > 64511 {
        return Err(AppError::Usage(format!("--flows {}: use 1..=64511 (one UDP source port each)", a.flows)));
    }
    if a.burst == 0 || a.burst > fastpath_mempool::MAX_BURST {
        return Err(AppError::Usage(format!("--burst {}: use 1..={}", a.burst, fastpath_mempool::MAX_BURST)));
    }
    let cpus = match &a.cores {
        Some(l) => parse_list(l).map_err(|e| AppError::Usage(format!("--cores: {e}")))?,
        None => vec![fastpath_pmd::lcore::available_cores().first().copied().unwrap_or(0)],
    };
    if cpus.is_empty() || cpus.len() > 255 {
        return Err(AppError::Usage("--cores: give 1 to 255 CPUs".into()));
    }
    let pool = Mempool::new("pktgen", &PoolConfig { mbufs: a.mbufs, chunk_size: 2048, pages: PagePolicy::Auto })
        .map_err(|e| AppError::Usage(format!("--mbufs: {e}")))?;
    if a.size < MIN_SIZE || a.size > pool.data_room() {
        return Err(AppError::Usage(format!(
            "--size {}: use {MIN_SIZE}..={} (frame bytes without FCS)",
            a.size,
            pool.data_room()
        )));
    }
    let mut port = ports::open(0, &a.port, &pool)?;
    let info = port.info().clone();
    let spec = FrameSpec {
        size: a.size,
        flows: a.flows,
        dst_mac: parse_mac(&a.dst_mac, "--dst-mac")?,
        src_mac: match &a.src_mac {
            Some(m) => parse_mac(m, "--src-mac")?,
            None => info.mac.unwrap_or([0x02, 0, 0, 0, 0, 0x01]),
        },
        src_ip: parse_ip(&a.src_ip, "--src-ip")?,
        dst_ip: parse_ip(&a.dst_ip, "--dst-ip")?,
        dst_port: a.dst_port,
    };
    if cpus.len() > info.tx_queues as usize {
        return Err(AppError::Usage(format!(
            "{} has {} tx queue(s) but {} cores were given: one generator per core needs one tx queue each \
             (give the port queues=N or fewer --cores)",
            info.name,
            info.tx_queues,
            cpus.len()
        )));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let hz = tsc_hz();
    let deadline = a.duration.map_or(0, |d| rdtsc() + (d * hz as f64) as u64 + hz / 20);
    let mut lcores: Vec<LcoreSpec> = cpus.iter().map(|&c| LcoreSpec::new(Some(c))).collect();
    let per_gen = if rate == 0 { 0 } else { (rate / cpus.len() as u64).max(1) };
    let mut gens = Vec::new();
    for (i, l) in lcores.iter_mut().enumerate() {
        let g = GenQueue::new(i as u16, &pool, &spec, per_gen, deadline, stop.clone());
        gens.push(g.counters());
        l.add_task_with(Box::new(g), Box::new(fastpath_pmd::Passthrough), 0);
        l.set_tx(0, port.tx_queue(i as u16)?);
    }
    let mut analyzers = Vec::new();
    for q in 0..info.rx_queues {
        let st = Arc::new(AnalyzerStats::default());
        analyzers.push(st.clone());
        let rx = port.rx_queue(q)?;
        let l = q as usize % lcores.len();
        lcores[l].add_task_with(rx, Box::new(Analyzer::new(a.dst_port, st)), 0);
    }
    fastpath_pmd::signal::install();
    let rt = Runtime::launch(lcores, RuntimeConfig { burst: a.burst, idle: IdleMode::Busy })?;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last = (Instant::now(), port.stats().tx_packets);
    let reason = loop {
        std::thread::sleep(Duration::from_millis(10));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let now = (Instant::now(), port.stats().tx_packets);
            let mpps = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64() / 1e6;
            samples.push(mpps);
            if a.stats {
                eprintln!("pktgen: tx {mpps:.3} Mpps");
            }
            last = now;
        }
        if fastpath_pmd::signal::stop_requested() {
            break "signal";
        }
        if a.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            break "duration";
        }
        if rt.finished() {
            break "lcores ended";
        }
    };
    // Stop generating, then keep receiving for the drain time: frames in flight come back.
    stop.store(true, Ordering::Relaxed);
    let gen_end = Instant::now();
    let elapsed = (gen_end - start).as_secs_f64();
    std::thread::sleep(Duration::from_millis(a.drain_ms));
    let lstats: Vec<_> = rt.stats().to_vec();
    rt.join()?;
    let ps = port.stats();
    let xstats = port.xstats();
    drop(port);

    let generated: u64 = gens.iter().map(|g| g.packets.get()).sum();
    let no_mbuf: u64 = gens.iter().map(|g| g.drops.get()).sum();
    let sent = ps.tx_packets;
    let matched: u64 = analyzers.iter().map(|x| x.matched.get()).sum();
    let foreign: u64 = analyzers.iter().map(|x| x.foreign.get()).sum();
    let ooo: u64 = analyzers.iter().map(|x| x.out_of_order.get()).sum();
    let lat = latency(&analyzers);
    let loss = sent.saturating_sub(matched);
    let loss_ratio = if sent > 0 { loss as f64 / sent as f64 } else { 0.0 };
    let tx_mpps = sent as f64 / elapsed / 1e6;
    let tx_gbps = ps.tx_bytes as f64 * 8.0 / elapsed / 1e9;
    let util: Vec<f64> = lstats.iter().map(|s| s.utilisation()).collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    if a.json {
        let mut o = json!({
            "pktgen": info.name, "driver": info.driver, "size": a.size, "flows": a.flows,
            "rate_pps": if rate == 0 { json!("max") } else { json!(rate) },
            "seconds": elapsed, "stopped_by": reason,
            "generated": generated, "no_mbuf": no_mbuf,
            "tx_packets": sent, "tx_bytes": ps.tx_bytes, "tx_drops": ps.tx_drops,
            "tx_mpps": tx_mpps, "tx_mpps_median": median(&samples), "tx_mpps_per_sec": samples,
            "tx_gbps": tx_gbps,
            "rx_packets": ps.rx_packets, "rx_matched": matched, "rx_foreign": foreign, "rx_drops": ps.rx_drops,
            "out_of_order": ooo, "loss": loss, "loss_ratio": loss_ratio,
            "latency_ns": {"count": lat.count, "min": lat.min, "mean": lat.mean, "p50": lat.p50,
                           "p99": lat.p99, "p99.9": lat.p999, "max": lat.max},
            "lcore_busy": util,
            "mempool": {"capacity": pool.capacity(), "available": pool.available()},
        });
        if !xstats.is_empty() {
            o["xstats"] = xstats.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>().into();
        }
        let _ = writeln!(out, "{o}");
    } else {
        let _ = writeln!(
            out,
            "pktgen on {}: {}-byte UDP frames, {} flow(s), rate {}, {elapsed:.2} s (stopped by {reason})",
            info.name,
            a.size,
            a.flows,
            if rate == 0 { "max".to_string() } else { format!("{rate} pps") }
        );
        let _ = writeln!(
            out,
            "sent     {sent} frames: {tx_mpps:.3} Mpps (median per second {:.3}), {tx_gbps:.3} Gbps; not accepted by the port {}",
            median(&samples),
            ps.tx_drops
        );
        if matched > 0 {
            let _ = writeln!(
                out,
                "returned {matched} frames: loss {loss} ({:.4}%), out of order {ooo}, other frames {foreign}",
                loss_ratio * 100.0
            );
            let _ = writeln!(
                out,
                "latency  min {} ns, mean {:.0} ns, p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
                lat.min, lat.mean, lat.p50, lat.p99, lat.p999, lat.max
            );
        } else {
            let _ =
                writeln!(out, "returned none of them (other frames received: {foreign}): no loss or latency figures");
        }
    }
    if pool.available() != pool.capacity() {
        log::warn!("{} of {} mbufs did not come back to the pool", pool.in_use(), pool.capacity());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[100.0, 100.0, 1.0, 2.0, 3.0]), 2.0);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max").unwrap(), 0);
        assert_eq!(parse_rate("250k").unwrap(), 250_000);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    // The generator's own tests live here, so that the benches that build gen.rs alone do not
    // run them (the zero-allocation test counts every allocation of its binary).
    use gen::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 12345, 1 << 20, 1 << 40, u64::MAX / 2] {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let lo = bucket_low(b);
            assert!(lo <= v && v - lo <= v / 32 + 1, "{v}: bucket {b} low {lo}");
        }
        for i in 0..BUCKETS {
            assert_eq!(bucket(bucket_low(i)), i);
        }
    }

    #[test]
    fn pacer_holds_the_rate() {
        let hz = 1_000_000_000;
        let mut p = Pacer::new(1_000_000, hz); // 1 Mpps: one per 1000 ticks
        let mut sent = 0;
        let mut t = 1;
        while t < hz / 10 {
            sent += p.take(t, 32);
            t += 7_000;
        }
        assert!((99_000..=100_100).contains(&sent), "{sent}");
        // After a stall it catches up at most 100 ms worth (100000 frames), a burst at a time.
        let mut caught = 0;
        loop {
            let n = p.take(t + hz, 32);
            assert!(n <= 32);
            if n == 0 {
                break;
            }
            caught += n;
        }
        assert_eq!(caught, 100_000);
        assert_eq!(Pacer::new(0, hz).take(5, 32), 32);
    }

    #[test]
    fn template_is_a_valid_udp_frame() {
        let s = FrameSpec { flows: 4, ..FrameSpec::default() };
        let f = s.template();
        assert_eq!(f.len(), 64);
        let mut sum = 0u32;
        for w in f[14..34].chunks(2) {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        assert_eq!(&f[42..44], b"FP");
    }

    #[test]
    fn percentiles() {
        let a = Arc::new(AnalyzerStats::default());
        for v in 1..=1000u64 {
            a.hist[bucket(v * 10)].inc();
            a.sum_ns.add(v * 10);
        }
        a.max_ns.set(10_000);
        let l = latency(&[a]);
        assert_eq!(l.count, 1000);
        assert!((4800..=5000).contains(&l.p50), "{l:?}");
        assert!((9600..=9900).contains(&l.p99), "{l:?}");
        assert!((9700..=9990).contains(&l.p999), "{l:?}");
        assert_eq!(l.max, 10_000);
        assert!((l.mean - 5005.0).abs() < 1.0);
    }
}
