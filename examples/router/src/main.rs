//! `router --config router.toml`: the router VNF. See the crate doc (`lib.rs`) for the tour.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{Pipeline, StageCounters};
use fastpath_pmd::{signal, Error, IdleMode, LcoreSpec, Port, PortInfo, PortStats, Runtime, RuntimeConfig, Spec};
use router::{Config, Router};
use serde_json::json;

/// An IPv4/IPv6 router on fastpath: routes from a TOML file (re-read on SIGHUP), ARP and
/// neighbour discovery, ICMP errors, pings to its own addresses.
#[derive(Parser, Debug)]
#[command(name = "router", version)]
struct Args {
    /// The configuration file (see examples/router/README.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// CPUs for the lcores, e.g. 0 or 0,1 or 0-1 (default: the first CPU this process may use).
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// When queues are empty: busy (poll again at once) or adaptive (back off to short sleeps).
    #[arg(long, default_value = "busy", value_parser = ["busy", "adaptive"])]
    idle: String,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 16384)]
    mbufs: u32,
    /// At the end, print JSON lines (each port, the router stage, the tables, the pool).
    #[arg(long)]
    json: bool,
    /// Log level (error, warn, info, debug); RUST_LOG overrides it.
    #[arg(long, default_value = "warn")]
    log: String,
}

/// How the router failed: bad usage or configuration exits with 2, anything else with 1.
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Spec { .. } | Error::Config(_) | Error::Queue(_) | Error::Core(_) => Failure::Usage(e.to_string()),
            _ => Failure::Failed(e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new().parse_filters(&args.log).parse_env("RUST_LOG").format_timestamp_millis().init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("router: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("router: {m}");
            ExitCode::from(1)
        }
    }
}

/// Opens a port of any driver this program links: fastpath-pmd's, then vhost-user.
fn open(id: u16, spec: &str, pool: &Mempool) -> Result<Box<dyn Port>, Error> {
    if let Some(p) = fastpath_pmd::open_port(id, spec, pool)? {
        return Ok(p);
    }
    if let Some(p) = fastpath_vhost_user::open_port(id, spec, pool)? {
        return Ok(p);
    }
    let s = Spec::parse_port(spec)?;
    let mut forms = fastpath_pmd::PORT_FORMS.to_vec();
    forms.push(fastpath_vhost_user::FORM);
    Err(s.error(&format!("unknown driver '{}'", s.name), Some(&forms.join(" | "))))
}

fn run(a: &Args) -> Result<(), Failure> {
    // 1. Configuration, pool, ports.
    let config = Config::load(&a.config).map_err(|e| Failure::Usage(e.to_string()))?;
    let cpus = match &a.cores {
        Some(l) => fastpath_pmd::spec::parse_list(l).map_err(|e| Failure::Usage(format!("--cores: {e}")))?,
        None => vec![fastpath_pmd::lcore::available_cores().first().copied().unwrap_or(0)],
    };
    let pool = Mempool::new("router", &PoolConfig { mbufs: a.mbufs, chunk_size: 2048, pages: PagePolicy::Auto })
        .map_err(|e| Failure::Usage(format!("--mbufs: {e}")))?;
    let mut ports = Vec::new();
    for (i, p) in config.ports.iter().enumerate() {
        let port = open(i as u16, &p.spec, &pool)
            .map_err(|e| Failure::from(e).prefix(&format!("{}: port '{}'", a.config.display(), p.name)))?;
        ports.push(port);
    }
    let infos: Vec<_> = ports.iter().map(|p| p.info().clone()).collect();
    let mut router = Router::new(config.clone(), &infos, &pool).map_err(|e| Failure::Usage(e.to_string()))?;

    // 2. Lcores: one router stage per lcore, shared by its tasks; every rx queue of every port
    //    is a task, dealt round-robin; each lcore sends to every port, so it owns a tx queue of each.
    let mut lcores: Vec<LcoreSpec> = Vec::new();
    let mut counters: Vec<Arc<StageCounters>> = Vec::new();
    for &c in &cpus {
        let stage = router.stage();
        counters.push(fastpath_pipeline::Stage::counters(&stage).clone());
        let mut l = LcoreSpec::new(Some(c));
        l.add_processor(Box::new(Pipeline::new(vec![Box::new(stage)])));
        lcores.push(l);
    }
    let mut k = 0;
    for p in 0..ports.len() {
        for q in 0..infos[p].rx_queues {
            let rx = ports[p].rx_queue(q)?;
            lcores[k % cpus.len()].add_task(rx, 0, p as u16);
            k += 1;
        }
    }
    lcores.retain(|l| !l.tasks.is_empty());
    for (i, l) in lcores.iter_mut().enumerate() {
        for (p, port) in ports.iter_mut().enumerate() {
            let q = port.tx_queue(i as u16).map_err(|e| {
                Failure::Usage(format!(
                    "{e}: each lcore sends to every port; give port '{}' queues={} or use fewer --cores",
                    config.ports[p].name,
                    i + 1
                ))
            })?;
            l.set_tx(p as u16, q);
        }
    }
    for (p, v) in config.ports.iter().zip(router.ports()) {
        let addrs: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
        eprintln!("router: port {} ({}) {} {}", p.name, p.spec, v.mac, addrs.join(" "));
    }
    let (r4, r6) = router.routes();
    eprintln!("router: {r4} IPv4 and {r6} IPv6 routes; SIGHUP re-reads the routes of {}", a.config.display());

    // 3. Run: the control loop learns neighbours, reloads routes on SIGHUP, and stops.
    let idle = if a.idle == "adaptive" { IdleMode::Adaptive { max_sleep_us: 500 } } else { IdleMode::Busy };
    signal::install();
    signal::install_reload();
    let rt = Runtime::launch(lcores, RuntimeConfig { idle, ..Default::default() })?;
    let start = Instant::now();
    let reason = loop {
        std::thread::sleep(Duration::from_millis(5));
        router.poll();
        if signal::reload_requested() {
            reload(&mut router, a);
        }
        if signal::stop_requested() {
            break "signal";
        }
        if a.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            break "duration";
        }
        if rt.finished() {
            break "lcores ended";
        }
    };
    rt.join()?;

    // 4. Where every packet went. The ports go first: they hold mbufs posted for receive.
    let port_stats: Vec<_> = ports.iter().map(|p| (p.info().clone(), p.stats())).collect();
    drop(ports);
    report(a, &port_stats, &counters, &router, &pool, reason);
    Ok(())
}

fn reload(router: &mut Router, a: &Args) {
    match Config::load(&a.config).map_err(|e| e.to_string()).and_then(|c| router.apply(&c).map_err(|e| e.to_string())) {
        Ok(ch) => {
            let (r4, r6) = router.routes();
            eprintln!(
                "router: reloaded {}: {} added, {} changed, {} deleted; {r4} IPv4 and {r6} IPv6 routes",
                a.config.display(),
                ch.added,
                ch.changed,
                ch.deleted
            );
        }
        Err(e) => eprintln!("router: reload refused, the routes stay as they were: {e}"),
    }
}

fn report(
    a: &Args,
    ports: &[(PortInfo, PortStats)],
    counters: &[Arc<StageCounters>],
    r: &Router,
    pool: &Mempool,
    why: &str,
) {
    let mut drops: Vec<(&str, u64)> = router::stage::REASONS.iter().map(|&n| (n, 0)).collect();
    let mut stats: Vec<(&str, u64)> = router::stage::STATS.iter().map(|&n| (n, 0)).collect();
    let mut packets = 0;
    for c in counters {
        packets += c.packets.get();
        drops.iter_mut().zip(c.drops()).for_each(|(d, (_, n))| d.1 += n);
        stats.iter_mut().zip(c.stats()).for_each(|(d, (_, n))| d.1 += n);
    }
    let (l4, l6) = r.lpm_stats();
    let map = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>();
    if a.json {
        for (i, s) in ports {
            println!(
                "{}",
                json!({"port": i.id, "driver": i.driver, "name": i.name, "rx_packets": s.rx_packets,
                       "tx_packets": s.tx_packets, "rx_drops": s.rx_drops, "tx_drops": s.tx_drops})
            );
        }
        println!("{}", json!({"stage": "router", "packets": packets, "drops": map(&drops), "stats": map(&stats)}));
        println!(
            "{}",
            json!({"routes4": l4.routes, "routes6": l6.routes, "neighbours": r.neighbours(),
                   "lpm_bytes": l4.table_bytes + l6.table_bytes})
        );
        println!(
            "{}",
            json!({"mempool": pool.name(), "capacity": pool.capacity(), "available": pool.available(), "stopped_by": why})
        );
    } else {
        println!("stopped by {why}");
        for (i, s) in ports {
            println!(
                "port {} {:<8} rx {:>12} tx {:>12} drops {:>8}",
                i.id,
                i.driver,
                s.rx_packets,
                s.tx_packets,
                s.drops()
            );
        }
        let nz = |v: &[(&str, u64)]| v.iter().filter(|d| d.1 > 0).map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>();
        println!("router: {packets} packets; {}; drops: {}", nz(&stats).join(" "), nz(&drops).join(" "));
        println!(
            "tables: {} IPv4 and {} IPv6 routes ({} MiB), {} neighbours",
            l4.routes,
            l6.routes,
            (l4.table_bytes + l6.table_bytes) >> 20,
            r.neighbours()
        );
    }
    if pool.available() != pool.capacity() {
        log::warn!("{} of {} mbufs did not come back to the pool", pool.in_use(), pool.capacity());
    }
}

impl Failure {
    fn prefix(self, what: &str) -> Failure {
        match self {
            Failure::Usage(m) => Failure::Usage(format!("{what}: {m}")),
            Failure::Failed(m) => Failure::Failed(format!("{what}: {m}")),
        }
    }
}
