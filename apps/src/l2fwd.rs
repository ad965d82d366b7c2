//! `fastpath l2fwd`: forward between paired ports (0<->1, 2<->3, ...; an odd last port, or a
//! single one, sends back out of itself), through a pipeline, on one or more lcores. The pairing
//! is DPDK l2fwd's.

use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{BuildEnv, PipelineSpec};
use fastpath_pmd::{IdleMode, LcoreSpec, Port, Runtime, RuntimeConfig};

use crate::cli::L2fwdArgs;
use crate::{ports, run, AppError};

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
    let cpus = run::cpus(&a.cores)?;
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
    // One pipeline per lcore, shared by its tasks (stages keep per-lcore state).
    let mut lcores: Vec<LcoreSpec> = Vec::new();
    for &c in &cpus {
        let mut l = LcoreSpec::new(Some(c));
        l.add_processor(Box::new(pspec.build(&env)?));
        lcores.push(l);
    }
    let placement = run::place_rx(&ports, lcores.len());
    log::info!("rx queues on lcores:\n{}", run::describe_placement(&ports, &cpus, &placement));
    let mut next_txq = vec![0u16; ports.len()];
    for (l, rxqs) in placement.iter().enumerate() {
        for &(p, q) in rxqs {
            let (p, dst) = (p as usize, peer(p as usize));
            let rx = ports[p].rx_queue(q)?;
            lcores[l].add_task(rx, 0, dst as u16);
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
    let (reason, seconds) =
        run::control_loop(&rt, &ports, a.duration, a.stats, || ports.iter().all(|p| p.rx_exhausted()), || {});
    let lcore_stats: Vec<_> = rt.stats().iter().map(|s| run::LcoreSnapshot::of(s)).collect();
    rt.join()?;
    let mut report = run::Report::gather(&ports, &lcore_stats, pspec.stats().summary());
    report.stopped_by = reason;
    report.seconds = seconds;
    drop(ports);
    report.print(&pool, a.json);
    Ok(())
}
