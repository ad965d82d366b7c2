//! `fastpath l2fwd`: forward between paired ports (0<->1, 2<->3, ...; an odd last port, or a
//! single one, sends back out of itself), through a pipeline, on one or more lcores. The pairing
//! is DPDK l2fwd's.

use std::io::Write;
use std::time::{Duration, Instant};

use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{BuildEnv, PipelineSpec};
use fastpath_pmd::{IdleMode, LcoreSpec, Port, PortStats, Runtime, RuntimeConfig, Task};
use serde_json::json;

use crate::cli::{parse_list, L2fwdArgs};
use crate::ports;
use crate::AppError;

/// Runs l2fwd to the end.
pub fn run(a: &L2fwdArgs) -> Result<(), AppError> {
    if let Some(d) = a.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(AppError::Usage(format!("--duration {d}: give a positive number of seconds")));
        }
    }
    if !(a.stats >= 0.0 && a.stats.is_finite()) {
        return Err(AppError::Usage(format!("--stats {}: give 0 or a positive number of seconds", a.stats)));
    }
    let cpus = match &a.cores {
        Some(l) => parse_list(l).map_err(|e| AppError::Usage(format!("--cores: {e}")))?,
        None => vec![fastpath_pmd::lcore::available_cores().first().copied().unwrap_or(0)],
    };
    if cpus.is_empty() {
        return Err(AppError::Usage("--cores: the list is empty".into()));
    }
    let pool = Mempool::new("l2fwd", &PoolConfig { mbufs: a.mbufs, chunk_size: 2048, pages: PagePolicy::Auto })
        .map_err(|e| AppError::Usage(format!("--mbufs: {e}")))?;
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    for (i, spec) in a.ports.iter().enumerate() {
        ports.push(ports::open(i as u16, spec, &pool)?);
    }
    let env = BuildEnv { pool: pool.clone(), ports: ports.iter().map(|p| p.info().clone()).collect() };
    let pspec = PipelineSpec::parse(&a.stages, &env)?;

    // Tasks: every rx queue of every port, sent by default to the peer port; spread over lcores.
    let n = ports.len();
    let peer = |p: usize| if p ^ 1 < n { p ^ 1 } else { p };
    let mut lcores: Vec<LcoreSpec> = cpus.iter().map(|&c| LcoreSpec { core: Some(c), ..Default::default() }).collect();
    let mut next_txq = vec![0u16; ports.len()];
    let mut k = 0;
    let nq: Vec<u16> = ports.iter().map(|p| p.info().rx_queues).collect();
    for (p, &queues) in nq.iter().enumerate() {
        for q in 0..queues {
            let l = k % lcores.len();
            k += 1;
            let rx = ports[p].rx_queue(q)?;
            lcores[l].tasks.push(Task { rx, processor: Box::new(pspec.build(&env)?), default_out: peer(p) as u16 });
            let dst = peer(p);
            if lcores[l].tx.get(dst).is_none_or(|t| t.is_none()) {
                let txq = next_txq[dst];
                if txq >= ports[dst].info().tx_queues {
                    return Err(AppError::Usage(format!(
                        "port {dst} ({}) has {} tx queue(s) but more lcores send to it: give it queues={} or use fewer --cores",
                        ports[dst].info().name,
                        ports[dst].info().tx_queues,
                        txq + 1
                    )));
                }
                next_txq[dst] += 1;
                let q = ports[dst].tx_queue(txq)?;
                lcores[l].set_tx(dst as u16, q);
            }
        }
    }
    lcores.retain(|l| !l.tasks.is_empty());
    let idle = if a.idle == "adaptive" { IdleMode::Adaptive { max_sleep_us: 500 } } else { IdleMode::Busy };
    fastpath_pmd::signal::install();
    let rt = Runtime::launch(lcores, RuntimeConfig { burst: a.burst, idle })?;
    let start = Instant::now();
    let mut last_print = (Instant::now(), ports.iter().map(|p| p.stats()).collect::<Vec<_>>());
    let reason = loop {
        std::thread::sleep(Duration::from_millis(20));
        if fastpath_pmd::signal::stop_requested() {
            break "signal";
        }
        if a.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            break "duration";
        }
        if ports.iter().all(|p| p.rx_exhausted()) {
            break "input ended";
        }
        if rt.finished() {
            break "lcores ended";
        }
        if a.stats > 0.0 && last_print.0.elapsed().as_secs_f64() >= a.stats {
            let now = (Instant::now(), ports.iter().map(|p| p.stats()).collect::<Vec<_>>());
            print_rates(&ports, &last_print, &now);
            last_print = now;
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let lcore_stats: Vec<_> = rt.stats().to_vec();
    rt.join()?;
    let lstats: Vec<_> = lcore_stats
        .iter()
        .map(|s| {
            (
                s.core,
                s.busy_polls.get(),
                s.idle_polls.get(),
                s.utilisation(),
                s.rx_packets.get(),
                s.tx_packets.get(),
                s.tx_drops.get(),
                s.no_route.get(),
            )
        })
        .collect();
    let final_stats: Vec<PortStats> = ports.iter().map(|p| p.stats()).collect();
    let xstats: Vec<_> = ports.iter().map(|p| p.xstats()).collect();
    let infos: Vec<_> = ports.iter().map(|p| p.info().clone()).collect();
    drop(ports);
    let stages = pspec.stats().summary();
    let out = std::io::stdout();
    let mut out = out.lock();
    if a.json {
        for ((info, s), x) in infos.iter().zip(&final_stats).zip(&xstats) {
            let mut o = json!({
                "port": info.id, "driver": info.driver, "name": info.name,
                "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
                "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes,
                "drops": s.drops(), "rx_drops": s.rx_drops, "tx_drops": s.tx_drops,
                "rx_errors": s.rx_errors, "tx_errors": s.tx_errors, "seconds": elapsed,
            });
            if !x.is_empty() {
                o["xstats"] = x.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>().into();
            }
            let _ = writeln!(out, "{o}");
        }
        for (i, l) in lstats.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}",
                json!({"lcore": i, "core": l.0, "busy_polls": l.1, "idle_polls": l.2, "utilisation": l.3,
                       "rx_packets": l.4, "tx_packets": l.5, "tx_drops": l.6, "no_route": l.7})
            );
        }
        for (i, s) in stages.iter().enumerate() {
            let drops: serde_json::Map<_, _> = s.drops.iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
            let mut o = json!({"stage": s.stage, "index": i, "packets": s.packets, "drops": drops});
            if !s.stats.is_empty() {
                o["stats"] =
                    s.stats.iter().map(|(r, n)| (r.to_string(), json!(n))).collect::<serde_json::Map<_, _>>().into();
            }
            let _ = writeln!(out, "{o}");
        }
        let _ = writeln!(
            out,
            "{}",
            json!({"mempool": pool.name(), "capacity": pool.capacity(), "available": pool.available(), "stopped_by": reason})
        );
    } else {
        let _ = writeln!(out, "stopped by {reason} after {elapsed:.2} s");
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:>14} {:>14} {:>16} {:>16} {:>10}",
            "port", "driver", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "drops"
        );
        for (info, s) in infos.iter().zip(&final_stats) {
            let _ = writeln!(
                out,
                "{:<5} {:<8} {:>14} {:>14} {:>16} {:>16} {:>10}",
                info.id,
                info.driver,
                s.rx_packets,
                s.tx_packets,
                s.rx_bytes,
                s.tx_bytes,
                s.drops()
            );
        }
        for (i, l) in lstats.iter().enumerate() {
            let _ = writeln!(
                out,
                "lcore {i} (cpu {}): {} busy / {} idle polls, {:.1}% busy cycles",
                l.0.map_or("-".into(), |c| c.to_string()),
                l.1,
                l.2,
                l.3 * 100.0
            );
        }
        for s in &stages {
            let d: Vec<String> = s.drops.iter().filter(|d| d.1 > 0).map(|(r, n)| format!("{r}={n}")).collect();
            let st: Vec<String> = s.stats.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let _ = writeln!(
                out,
                "stage {}: {} packets{}{}",
                s.stage,
                s.packets,
                if st.is_empty() { String::new() } else { format!(", {}", st.join(" ")) },
                if d.is_empty() { String::new() } else { format!(", drops {}", d.join(" ")) }
            );
        }
    }
    if pool.available() != pool.capacity() {
        log::warn!("{} of {} mbufs did not come back to the pool", pool.in_use(), pool.capacity());
    }
    Ok(())
}

fn print_rates(ports: &[Box<dyn Port>], a: &(Instant, Vec<PortStats>), b: &(Instant, Vec<PortStats>)) {
    let dt = (b.0 - a.0).as_secs_f64().max(1e-9);
    for (p, (x, y)) in ports.iter().zip(a.1.iter().zip(&b.1)) {
        let rxp = (y.rx_packets - x.rx_packets) as f64 / dt / 1e6;
        let txp = (y.tx_packets - x.tx_packets) as f64 / dt / 1e6;
        let rxb = (y.rx_bytes - x.rx_bytes) as f64 * 8.0 / dt / 1e9;
        let txb = (y.tx_bytes - x.tx_bytes) as f64 * 8.0 / dt / 1e9;
        println!(
            "port {} {:<6} rx {:8.3} Mpps {:7.3} Gbps | tx {:8.3} Mpps {:7.3} Gbps | rx {} tx {} drops {}",
            p.info().id,
            p.info().driver,
            rxp,
            rxb,
            txp,
            txb,
            y.rx_packets,
            y.tx_packets,
            y.drops()
        );
    }
}
