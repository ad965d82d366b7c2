//! `fastpath vswitch`: the virtual switch of a compute host. This module only reads the config,
//! opens the ports, wires the switch (`fastpath_pipeline::switch`) onto lcores and reports; the
//! packet logic is the library's ([docs/vswitch.md](../../../docs/vswitch.md)).

pub mod capture;
pub mod commands;
pub mod config;
pub mod ctl;
pub mod live;
pub mod metrics;
pub mod rebalance;
pub mod reload;

use std::path::Path;
use std::time::Duration;

use fastpath_mempool::{Mempool, PagePolicy, PoolConfig, PORT_NONE};
use fastpath_pipeline::switch as sw;
use fastpath_pmd::{IdleMode, LcoreSpec, Port, Runtime, RuntimeConfig};
use serde_json::{json, Value};

use crate::cli::VswitchArgs;
use crate::{ports, run, AppError};
use config::{Config, Idle, Role, Tunnel};

/// Runs the switch until SIGINT/SIGTERM or `--duration`.
pub fn run(a: &VswitchArgs) -> Result<(), AppError> {
    if let Some(d) = a.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(AppError::Usage(format!("--duration {d}: give a positive number of seconds")));
        }
    }
    if !(a.stats >= 0.0 && a.stats.is_finite()) {
        return Err(AppError::Usage(format!("--stats {}: give 0 or a positive number of seconds", a.stats)));
    }
    let mut cfg = Config::load(&a.config).map_err(|e| AppError::Usage(e.to_string()))?;
    let g = &cfg.vswitch;
    // Before any port opens: a second switch on the same control socket stops here.
    let mut server = match a.ctl.as_deref() {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(ctl::CtlServer::bind(p).map_err(|e| e.error)?),
        // The default path is root's: another user runs without a socket (and is told).
        None => match ctl::CtlServer::bind(Path::new(ctl::DEFAULT_PATH)) {
            Ok(s) => Some(s),
            Err(e) if e.denied => {
                log::warn!("{}: running without a control socket (give --ctl PATH to have one)", e.error);
                None
            }
            Err(e) => return Err(e.error),
        },
    };
    if server.is_some() {
        let p = a.ctl.as_deref().unwrap_or(Path::new(ctl::DEFAULT_PATH));
        log::info!("control socket: {} (fastpath ctl --socket {0} help)", p.display());
    }
    let mut metrics = a.metrics.as_deref().map(metrics::MetricsServer::bind).transpose()?;
    let cpus = run::cpus(&a.cores.clone().or_else(|| g.cores.clone()))?;
    let pool = Mempool::new("vswitch", &PoolConfig { mbufs: g.mbufs, chunk_size: 2048, pages: PagePolicy::Auto })
        .map_err(|e| AppError::Usage(format!("{}: [vswitch] mbufs = {}: {e}", a.config.display(), g.mbufs)))?;
    let mut ports: Vec<Box<dyn Port>> = Vec::with_capacity(cfg.port.len());
    for (i, p) in cfg.port.iter().enumerate() {
        let name = p.name.get_ref();
        let opened = ports::open(i as u16, &p.spec, &pool).map_err(|e| {
            let at = cfg.source.at(p.name.span().start);
            // A spec that does not parse is a config error (exit 2); one that parses but cannot
            // be opened here (a missing interface, a socket in use) is a failure (exit 1).
            match e {
                fastpath_pmd::Error::Spec { .. } => AppError::Usage(format!("{at}: [[port]] '{name}': {e}")),
                _ => AppError::Failed(format!("{at}: [[port]] '{name}' cannot be opened: {e}")),
            }
        })?;
        ports.push(opened);
    }
    let scfg = switch_config(&cfg, &ports);
    let mut bridge_cfgs = scfg.bridges.clone();
    let (mut ctl, processors) =
        sw::build(&scfg, &pool, cpus.len()).map_err(|e| AppError::Usage(format!("{}: {e}", a.config.display())))?;

    // One switch processor per lcore; every rx queue of every port placed round-robin; every
    // lcore may send to every port (queues shared where a port has fewer than the lcores).
    let placement = run::place_rx(&ports, cpus.len());
    // Room for the ports plugged live: transmit slots and tasks made now, not on an lcore.
    let slots = g.max_ports.max(ports.len());
    let mut lcores: Vec<LcoreSpec> = Vec::with_capacity(cpus.len());
    let mut rxqs = Vec::new();
    let mut captures = capture::Captures::default();
    let mut rebalancer = rebalance::Rebalancer::default();
    for (li, ((&c, p), placed)) in cpus.iter().zip(processors).zip(&placement).enumerate() {
        let mut l = LcoreSpec::new(Some(c));
        let pi = l.add_processor(Box::new(p));
        for &(port, q) in placed {
            let rx = captures.wrap_rx(ports[port as usize].rx_queue(q)?);
            rxqs.push((li, l.add_task(rx, pi, PORT_NONE)));
        }
        lcores.push(l);
    }
    let shared = run::give_every_lcore_every_port(&mut ports, &mut lcores)?;
    for l in &mut lcores {
        if l.tx.len() < slots {
            l.tx.resize_with(slots, || None);
        }
        l.tasks.reserve(slots);
        for (p, slot) in l.tx.iter_mut().enumerate() {
            if let Some(q) = slot.take() {
                *slot = Some(captures.wrap_tx(p as u16, q));
            }
        }
    }
    let mut head = String::from("rx queues on lcores (pmd-rxq-show):\n");
    head += &run::describe_placement(&ports, &cpus, &placement);
    for (p, &s) in ports.iter().zip(&shared) {
        if s > 0 {
            head += &format!("port {} ({}): {s} tx queue(s) shared between lcores\n", p.info().id, p.info().name);
        }
    }
    if a.json {
        eprint!("{head}");
    } else {
        print!("{head}");
    }
    let idle = match g.idle {
        Idle::Busy => IdleMode::Busy,
        Idle::Adaptive => IdleMode::Adaptive { max_sleep_us: g.idle_max_sleep_us },
    };
    fastpath_pmd::signal::install();
    fastpath_pmd::signal::install_reload();
    let rt = Runtime::launch(lcores, RuntimeConfig { burst: g.burst, idle })?;
    // The control thread (this one) keeps off the busy lcores' CPUs when others are left, as
    // DPDK's main lcore does: opening a port live (an AF_XDP UMEM registration is tens of
    // milliseconds of kernel work) then never preempts an lcore.
    if matches!(idle, IdleMode::Busy) {
        let spare: Vec<usize> =
            fastpath_pmd::lcore::available_cores().into_iter().filter(|c| !cpus.contains(c)).collect();
        if !spare.is_empty() {
            match fastpath_pmd::sys::set_affinity(&spare) {
                Ok(()) => log::info!("control thread on CPUs {spare:?} (the lcores' are {cpus:?})"),
                Err(e) => log::warn!("cannot keep the control thread off the lcores' CPUs: {e}"),
            }
        }
    }
    let auto_every = (g.rebalance_interval > 0).then(|| Duration::from_secs(g.rebalance_interval));
    let mut last_auto = std::time::Instant::now();
    let mut plugged: Vec<Option<live::Plugged>> = cfg.port.iter().map(|p| Some(live::Plugged::of(p))).collect();
    // Per-port rates (--stats) are printed here, not by the control loop: the port list changes.
    let mut generation = 0u64;
    let mut rates = (generation, std::time::Instant::now(), Vec::new());
    // A pcap port at the end of its file does not stop a switch: only a signal or --duration.
    let (reason, seconds) = run::control_loop(
        &rt,
        &[],
        a.duration,
        0.0,
        || false,
        || {
            ctl.poll();
            captures.poll();
            if a.stats > 0.0 && (rates.0 != generation || rates.1.elapsed().as_secs_f64() >= a.stats) {
                let now = (std::time::Instant::now(), ports.iter().map(|p| p.stats()).collect::<Vec<_>>());
                // A first snapshot, or one taken before the port list changed, only starts over.
                if rates.0 == generation && rates.2.len() == now.1.len() {
                    let shown: Vec<usize> = (0..ports.len()).filter(|&i| !live::vacant(ports[i].as_ref())).collect();
                    let pick = |v: &[fastpath_pmd::PortStats]| shown.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
                    run::print_rates_of(
                        &shown.iter().map(|&i| ports[i].info().clone()).collect::<Vec<_>>(),
                        &(rates.1, pick(&rates.2)),
                        &(now.0, pick(&now.1)),
                    );
                }
                rates = (generation, now.0, now.1);
            }
            if auto_every.is_some_and(|d| last_auto.elapsed() >= d) {
                last_auto = std::time::Instant::now();
                let names = commands::names(&plugged);
                let name = |id: u16| names.get(id as usize).cloned().unwrap_or_else(|| id.to_string());
                match rebalancer.auto(&rt, &mut rxqs, name) {
                    Ok(Some(r)) => log::info!("rx queues rebalanced (rebalance_interval): {r}"),
                    Ok(None) => {}
                    Err(e) => log::error!("automatic rxq rebalance: {e}"),
                }
            }
            let reload = fastpath_pmd::signal::reload_requested();
            if !reload && server.is_none() && metrics.is_none() {
                return;
            }
            let mut live = commands::Live {
                cfg: &mut cfg,
                ports: &mut ports,
                plugged: &mut plugged,
                bridge_cfgs: &mut bridge_cfgs,
                generation: &mut generation,
                rt: &rt,
                cpus: &cpus,
                rxqs: &mut rxqs,
                pool: &pool,
                ctl: &mut ctl,
                captures: &mut captures,
                rebalancer: &mut rebalancer,
            };
            if reload {
                match reload::reload(&mut live) {
                    Ok(r) => log::info!("SIGHUP: reloaded {}: {r}", live.cfg.source.path.display()),
                    Err(e) => log::error!("SIGHUP: {e}"),
                }
            }
            if let Some(s) = server.as_mut() {
                s.poll(|r| live.handle(r));
            }
            if let Some(m) = metrics.as_mut() {
                m.poll(|| metrics::render(&live));
            }
        },
    );
    drop(server);
    let lcore_stats: Vec<_> = rt.stats().iter().map(|s| run::LcoreSnapshot::of(s)).collect();
    rt.join()?;
    // What the lcores handed over last (learns, neighbour replies) is applied before reporting.
    std::thread::sleep(Duration::from_millis(1));
    ctl.poll();
    let stats = ctl.stats();
    ports.retain(|p| !live::vacant(p.as_ref()));
    let mut report = run::Report::gather(&ports, &lcore_stats, stats.stages.clone());
    report.extra = records(&stats);
    report.stopped_by = reason;
    report.seconds = seconds;
    drop(ports);
    drop(ctl);
    report.print(&pool, a.json);
    Ok(())
}

/// The switch's own report lines: one per bridge, per switch port, per remote VTEP, the FDB's
/// totals, and with security groups one per conntrack zone (bridge) and the table's totals.
fn records(s: &sw::SwitchStats) -> Vec<Value> {
    let mut v = Vec::new();
    for b in &s.bridges {
        v.push(json!({"bridge": b.name, "fdb_size": b.fdb_size, "learned": b.learned, "moved": b.moved,
            "aged": b.aged, "flooded": b.flooded, "refused": b.refused}));
    }
    for p in &s.ports {
        let drops: serde_json::Map<_, _> = p.drops.iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
        v.push(json!({"switch_port": p.name, "macs": p.macs, "refused": p.refused, "drops": drops}));
    }
    for t in &s.vteps {
        v.push(json!({"vtep": t.addr.to_string(), "mac": t.mac.map(|m| fastpath_pmd::sys::fmt_mac(&m)),
            "state": t.state, "learned": t.learned}));
    }
    v.push(json!({"fdb_entries": s.fdb_entries, "events": s.events}));
    if let Some(ct) = &s.conntrack {
        for z in &ct.zones {
            v.push(json!({"conntrack_zone": z.bridge, "entries": z.entries, "new": z.new}));
        }
        v.push(json!({"conntrack_entries": ct.entries, "capacity": ct.capacity, "refused": ct.refused,
            "aged": ct.aged}));
    }
    v
}

/// The library's view of the config, with each port's info as opened.
fn switch_config(c: &Config, ports: &[Box<dyn Port>]) -> sw::SwitchConfig {
    let g = &c.vswitch;
    sw::SwitchConfig {
        bridges: c
            .bridge
            .iter()
            .map(|b| sw::BridgeConfig {
                name: b.name.get_ref().clone(),
                vni: b.vni,
                tunnel: match b.tunnel {
                    Tunnel::Vxlan => sw::TunnelKind::Vxlan,
                    Tunnel::Geneve => sw::TunnelKind::Geneve,
                    Tunnel::Nvgre => sw::TunnelKind::Nvgre,
                },
                local: b.local,
                remotes: b.remotes.clone(),
                vlan: b.vlan,
                udp_port: b.udp_port,
            })
            .collect(),
        ports: c
            .port
            .iter()
            .zip(ports)
            .map(|(p, o)| sw::PortConfig {
                name: p.name.get_ref().clone(),
                port: fastpath_pmd::PortInfo { mac: p.mac.or(o.info().mac), ..o.info().clone() },
                role: match p.role {
                    Role::Access => sw::PortRole::Access,
                    Role::Uplink => sw::PortRole::Uplink,
                },
                bridge: p.bridge.as_ref().map(|b| b.get_ref().clone()),
                vlan: p.vlan,
            })
            .collect(),
        static_macs: c
            .fdb
            .iter()
            .map(|f| sw::StaticMac {
                bridge: f.bridge.get_ref().clone(),
                vlan: f.vlan,
                mac: f.mac,
                port: f.port.as_ref().map(|p| p.get_ref().clone()),
                vtep: f.vtep,
            })
            .collect(),
        fdb: sw::FdbConfig {
            capacity: g.fdb_size,
            aging: Duration::from_secs(g.fdb_aging),
            bridge_limit: g.mac_limit_bridge,
            port_limit: g.mac_limit_port,
        },
        neighbours: c.neighbour.iter().map(|n| sw::StaticNeighbour { addr: *n.ip.get_ref(), mac: n.mac }).collect(),
        port_security: c.port_security(),
        security_groups: c.security_groups(),
        port_groups: c.port_groups(),
        conntrack: sw::ConntrackSettings { capacity: g.conntrack_size, zone_limit: g.conntrack_zone_limit },
        max_ports: g.max_ports,
    }
}
