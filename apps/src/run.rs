//! What the apps share: the CPU list, placing rx queues on lcores (and printing the placement
//! like OVS's `pmd-rxq-show`), handing every lcore the tx queues it needs, the control loop that
//! waits for a stop while printing rates, and the end-of-run report (table or JSON lines).

use std::io::Write;
use std::time::{Duration, Instant};

use fastpath_mempool::Mempool;
use fastpath_pipeline::StageSummary;
use fastpath_pmd::{LcoreSpec, LcoreStats, Port, PortInfo, PortStats, Runtime};
use serde_json::{json, Value};

use crate::cli::parse_list;
use crate::AppError;

/// The CPUs of `--cores`, or the first CPU this process may use.
pub fn cpus(cores: &Option<String>) -> Result<Vec<usize>, AppError> {
    let v = match cores {
        Some(l) => parse_list(l).map_err(|e| AppError::Usage(format!("--cores: {e}")))?,
        None => vec![fastpath_pmd::lcore::available_cores().first().copied().unwrap_or(0)],
    };
    if v.is_empty() {
        return Err(AppError::Usage("--cores: the list is empty".into()));
    }
    Ok(v)
}

/// Every rx queue of every port, in port then queue order, dealt round-robin over `lcores`
/// (OVS's `pmd-rxq-assign=roundrobin`): `placement[l]` lists lcore l's (port, queue).
pub fn place_rx(ports: &[Box<dyn Port>], lcores: usize) -> Vec<Vec<(u16, u16)>> {
    let n = lcores.max(1);
    let mut v = vec![Vec::new(); n];
    let mut k = 0;
    for p in ports {
        for q in 0..p.info().rx_queues {
            v[k % n].push((p.info().id, q));
            k += 1;
        }
    }
    v
}

/// The placement as `pmd-rxq-show` prints it: one line per lcore.
pub fn describe_placement(ports: &[Box<dyn Port>], cpus: &[usize], placement: &[Vec<(u16, u16)>]) -> String {
    let mut s = String::new();
    for (l, rxqs) in placement.iter().enumerate() {
        let list: Vec<String> = rxqs
            .iter()
            .map(|&(p, q)| format!("{} q{q}", ports.get(p as usize).map_or("?".into(), |x| port_label(x.info()))))
            .collect();
        s += &format!(
            "lcore {l} (cpu {}): {}\n",
            cpus.get(l).map_or("-".into(), |c| c.to_string()),
            if list.is_empty() { "(no rx queue)".into() } else { list.join(", ") }
        );
    }
    s
}

fn port_label(i: &PortInfo) -> String {
    format!("port {} ({})", i.id, i.name)
}

/// Gives every lcore a transmit queue of every port: lcore l gets queue l where the port has a
/// queue per lcore; where it has fewer, the lcores that map to one queue (l mod queues) share it
/// behind its lock (`fastpath_pmd::txshare`). Returns, per port, how many of its queues are shared.
pub fn give_every_lcore_every_port(
    ports: &mut [Box<dyn Port>],
    lcores: &mut [LcoreSpec],
) -> Result<Vec<u16>, AppError> {
    let n = lcores.len();
    let mut shared = Vec::with_capacity(ports.len());
    for p in ports.iter_mut() {
        let id = p.info().id;
        let (handles, s) = tx_handles(p.as_mut(), n)?;
        shared.push(s);
        for (l, h) in handles.into_iter().enumerate() {
            lcores[l].set_tx(id, h);
        }
    }
    Ok(shared)
}

/// The transmit queue of port `p` for each of `lcores` lcores (lcore l: queue l mod queues,
/// shared behind its lock where several lcores map to it), and how many queues are shared.
pub fn tx_handles(p: &mut dyn Port, lcores: usize) -> Result<(Vec<Box<dyn fastpath_pmd::TxQueue>>, u16), AppError> {
    let n = lcores.max(1);
    let used = (p.info().tx_queues.max(1) as usize).min(n);
    let mut handles: Vec<Vec<Box<dyn fastpath_pmd::TxQueue>>> = Vec::with_capacity(used);
    for q in 0..used {
        let users = (0..n).filter(|l| l % used == q).count();
        handles.push(fastpath_pmd::txshare::share(p.tx_queue(q as u16)?, users));
    }
    let shared = handles.iter().filter(|h| h.len() > 1).count() as u16;
    // The handles of one queue are alike: any one per lcore.
    let out = (0..n).map(|l| handles[l % used].pop().expect("one handle per lcore that uses this queue")).collect();
    Ok((out, shared))
}

/// Why a run ended.
pub type StopReason = &'static str;

/// Waits for a stop (SIGINT/SIGTERM, `duration`, every lcore gone, or `ended()`), calling `tick`
/// about every millisecond and printing per-port rates every `stats` seconds (0: never).
pub fn control_loop(
    rt: &Runtime,
    ports: &[Box<dyn Port>],
    duration: Option<f64>,
    stats: f64,
    mut ended: impl FnMut() -> bool,
    mut tick: impl FnMut(),
) -> (StopReason, f64) {
    let start = Instant::now();
    let mut last_print = (Instant::now(), ports.iter().map(|p| p.stats()).collect::<Vec<_>>());
    let mut last_check = Instant::now();
    let reason = loop {
        tick();
        std::thread::sleep(Duration::from_millis(1));
        if last_check.elapsed() < Duration::from_millis(20) {
            continue;
        }
        last_check = Instant::now();
        if fastpath_pmd::signal::stop_requested() {
            break "signal";
        }
        if duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            break "duration";
        }
        if ended() {
            break "input ended";
        }
        if rt.finished() {
            break "lcores ended";
        }
        if stats > 0.0 && last_print.0.elapsed().as_secs_f64() >= stats {
            let now = (Instant::now(), ports.iter().map(|p| p.stats()).collect::<Vec<_>>());
            print_rates(ports, &last_print, &now);
            last_print = now;
        }
    };
    (reason, start.elapsed().as_secs_f64())
}

/// One line per port with the rates since the last print, like testpmd's periodic stats.
pub fn print_rates(ports: &[Box<dyn Port>], a: &(Instant, Vec<PortStats>), b: &(Instant, Vec<PortStats>)) {
    let infos: Vec<PortInfo> = ports.iter().map(|p| p.info().clone()).collect();
    print_rates_of(&infos, a, b);
}

/// [`print_rates`] for the ports `ports` describes.
pub fn print_rates_of(ports: &[PortInfo], a: &(Instant, Vec<PortStats>), b: &(Instant, Vec<PortStats>)) {
    let dt = (b.0 - a.0).as_secs_f64().max(1e-9);
    for (p, (x, y)) in ports.iter().zip(a.1.iter().zip(&b.1)) {
        let rxp = (y.rx_packets - x.rx_packets) as f64 / dt / 1e6;
        let txp = (y.tx_packets - x.tx_packets) as f64 / dt / 1e6;
        let rxb = (y.rx_bytes - x.rx_bytes) as f64 * 8.0 / dt / 1e9;
        let txb = (y.tx_bytes - x.tx_bytes) as f64 * 8.0 / dt / 1e9;
        println!(
            "port {} {:<6} rx {:8.3} Mpps {:7.3} Gbps | tx {:8.3} Mpps {:7.3} Gbps | rx {} tx {} drops {}",
            p.id,
            p.driver,
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

/// A port at the end: its info, counters and driver counters.
pub type PortRecord = (PortInfo, PortStats, Vec<(String, u64)>);

/// What a run reports at its end, gathered before the ports close.
#[derive(Debug)]
pub struct Report {
    /// Per port.
    pub ports: Vec<PortRecord>,
    /// Per lcore: a snapshot of its counters.
    pub lcores: Vec<LcoreSnapshot>,
    /// Per pipeline stage.
    pub stages: Vec<StageSummary>,
    /// Extra JSON records (the vswitch's bridges), printed after the stages.
    pub extra: Vec<Value>,
    /// Why it stopped, after how many seconds.
    pub stopped_by: StopReason,
    /// Seconds run.
    pub seconds: f64,
}

/// An lcore's counters at the end.
#[derive(Debug, Clone)]
pub struct LcoreSnapshot {
    core: Option<usize>,
    busy_polls: u64,
    idle_polls: u64,
    utilisation: f64,
    rx: u64,
    tx: u64,
    tx_drops: u64,
    no_route: u64,
    busy_cycles: u64,
}

impl LcoreSnapshot {
    /// Reads `s`.
    pub fn of(s: &LcoreStats) -> LcoreSnapshot {
        LcoreSnapshot {
            core: s.core,
            busy_polls: s.busy_polls.get(),
            idle_polls: s.idle_polls.get(),
            utilisation: s.utilisation(),
            rx: s.rx_packets.get(),
            tx: s.tx_packets.get(),
            tx_drops: s.tx_drops.get(),
            no_route: s.no_route.get(),
            busy_cycles: s.busy_cycles.get(),
        }
    }

    fn cycles_per_packet(&self) -> Option<f64> {
        (self.rx > 0).then(|| self.busy_cycles as f64 / self.rx as f64)
    }
}

impl Report {
    /// Reads the ports and lcores (call after the runtime has stopped, before the ports close).
    pub fn gather(ports: &[Box<dyn Port>], lcores: &[LcoreSnapshot], stages: Vec<StageSummary>) -> Report {
        Report {
            ports: ports.iter().map(|p| (p.info().clone(), p.stats(), p.xstats())).collect(),
            lcores: lcores.to_vec(),
            stages,
            extra: Vec::new(),
            stopped_by: "",
            seconds: 0.0,
        }
    }

    /// Prints the report: JSON lines (`json`) or a table; the pool's line last.
    pub fn print(&self, pool: &Mempool, json: bool) {
        let out = std::io::stdout();
        let mut out = out.lock();
        if json {
            for (info, s, x) in &self.ports {
                let mut o = json!({
                    "port": info.id, "driver": info.driver, "name": info.name,
                    "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
                    "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes,
                    "drops": s.drops(), "rx_drops": s.rx_drops, "tx_drops": s.tx_drops,
                    "rx_errors": s.rx_errors, "tx_errors": s.tx_errors, "seconds": self.seconds,
                });
                if !x.is_empty() {
                    o["xstats"] =
                        x.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>().into();
                }
                let _ = writeln!(out, "{o}");
            }
            for (i, l) in self.lcores.iter().enumerate() {
                let o = json!({"lcore": i, "core": l.core, "busy_polls": l.busy_polls, "idle_polls": l.idle_polls,
                    "utilisation": l.utilisation, "rx_packets": l.rx, "tx_packets": l.tx, "tx_drops": l.tx_drops,
                    "no_route": l.no_route, "busy_cycles": l.busy_cycles, "cycles_per_packet": l.cycles_per_packet()});
                let _ = writeln!(out, "{o}");
            }
            for (i, s) in self.stages.iter().enumerate() {
                let drops: serde_json::Map<_, _> = s.drops.iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
                let mut o = json!({"stage": s.stage, "index": i, "packets": s.packets, "drops": drops});
                if !s.stats.is_empty() {
                    o["stats"] = s
                        .stats
                        .iter()
                        .map(|(r, n)| (r.to_string(), json!(n)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                let _ = writeln!(out, "{o}");
            }
            for e in &self.extra {
                let _ = writeln!(out, "{e}");
            }
            let pool_line = json!({"mempool": pool.name(), "capacity": pool.capacity(),
                "available": pool.available(), "stopped_by": self.stopped_by});
            let _ = writeln!(out, "{pool_line}");
        } else {
            self.print_table(&mut out);
        }
        if pool.available() != pool.capacity() {
            log::warn!("{} of {} mbufs did not come back to the pool", pool.in_use(), pool.capacity());
        }
    }

    fn print_table(&self, out: &mut impl Write) {
        let _ = writeln!(out, "stopped by {} after {:.2} s", self.stopped_by, self.seconds);
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:>14} {:>14} {:>16} {:>16} {:>10}",
            "port", "driver", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "drops"
        );
        for (info, s, _) in &self.ports {
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
        for (i, l) in self.lcores.iter().enumerate() {
            let _ = writeln!(
                out,
                "lcore {i} (cpu {}): {} busy / {} idle polls, {:.1}% busy cycles{}",
                l.core.map_or("-".into(), |c| c.to_string()),
                l.busy_polls,
                l.idle_polls,
                l.utilisation * 100.0,
                l.cycles_per_packet().map_or(String::new(), |c| format!(", {c:.1} cycles/packet"))
            );
        }
        for s in &self.stages {
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
        for e in &self.extra {
            let _ = writeln!(out, "{e}");
        }
    }
}
