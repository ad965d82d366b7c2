//! `fastpath bench`: pipelines over null ports on 1..N cores.

use std::io::{IsTerminal, Write};

use fastpath_benches::{pipelines, run, svg_plot, BenchConfig, ScalingPoint};

use crate::cli::{parse_list, BenchArgs};
use crate::AppError;

/// Runs the benchmark and prints the table (or JSON lines).
pub fn run_bench(a: &BenchArgs) -> Result<(), AppError> {
    let all = pipelines();
    if a.list {
        for p in &all {
            println!("{:<18} {}", p.name, p.about);
        }
        return Ok(());
    }
    let chosen: Vec<_> = if a.pipelines.is_empty() {
        all.clone()
    } else {
        let mut v = Vec::new();
        for n in &a.pipelines {
            match all.iter().find(|p| p.name == n) {
                Some(p) => v.push(p.clone()),
                None => {
                    return Err(AppError::Usage(format!(
                        "--pipeline {n}: unknown pipeline; known: {}",
                        all.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        }
        v
    };
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(AppError::Usage(format!("--seconds {}: give a positive number", a.seconds)));
    }
    if a.burst == 0 || a.burst > fastpath_mempool::MAX_BURST {
        return Err(AppError::Usage(format!("--burst {}: use 1..={}", a.burst, fastpath_mempool::MAX_BURST)));
    }
    let mut cfg = BenchConfig { seconds: a.seconds, burst: a.burst, ..BenchConfig::default() };
    if let Some(l) = &a.cores {
        cfg.core_counts = parse_list(l).map_err(|e| AppError::Usage(format!("--cores: {e}")))?;
        if let Some(&bad) = cfg.core_counts.iter().find(|&&k| k == 0 || k > cfg.cpus.len()) {
            return Err(AppError::Usage(format!(
                "--cores: {bad} cores asked, but this process may use {} CPUs ({}); --cores lists core counts, e.g. 1,2",
                cfg.cpus.len(),
                cfg.cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
            )));
        }
    }
    let tty = std::io::stderr().is_terminal();
    let mut progress = |s: &str| {
        let mut e = std::io::stderr().lock();
        if tty {
            let _ = write!(e, "\r\x1b[2K{s}");
        } else {
            let _ = writeln!(e, "{s}");
        }
    };
    let mut points: Vec<ScalingPoint> = Vec::new();
    if !a.json {
        println!(
            "{:<18} {:>5} {:>9} {:>13} {:>10} {:>6}",
            "pipeline", "cores", "Mpps", "Mpps/core", "efficiency", "busy"
        );
    }
    for p in &chosen {
        let pts = run(p, &cfg, &mut progress)?;
        if tty {
            eprint!("\r\x1b[2K");
        }
        for pt in &pts {
            if a.json {
                println!("{}", serde_json::to_string(pt).unwrap_or_default());
            } else {
                let mut extra = String::new();
                if let (Some(g), Some(c)) = (pt.gbps, pt.cycles_per_byte) {
                    extra = match pt.rx_mpps {
                        Some(r) => format!("  {g:.1} Gbps of payload, {c:.3} cycles/payload byte, {r:.3} Mpps in"),
                        None => format!("  {g:.1} Gbps, {c:.3} cycles/byte"),
                    };
                }
                let eff = pt.efficiency.map_or_else(|| "-".to_string(), |e| format!("{e:.3}"));
                println!(
                    "{:<18} {:>5} {:>9.2} {:>13.2} {:>10} {:>5.0}%{extra}",
                    pt.pipeline,
                    pt.cores,
                    pt.mpps,
                    pt.mpps_per_core,
                    eff,
                    pt.utilisation * 100.0
                );
            }
        }
        points.extend(pts);
    }
    if let Some(path) = &a.plot {
        let title = format!("fastpath bench: Mpps by cores (burst {})", a.burst);
        std::fs::write(path, svg_plot(&points, &title))
            .map_err(|e| AppError::Failed(format!("cannot write {}: {e}", path.display())))?;
        if !a.json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}
