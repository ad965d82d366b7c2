//! `--metrics ADDR:PORT`: the switch's counters in the Prometheus text format (version 0.0.4)
//! at `GET /metrics`, over plain HTTP/1.x; any other path is 404, any other method 405. The
//! listener and its connections are non-blocking and polled from the control thread like the
//! control socket: a client gets a few seconds and a few kilobytes for its request.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fastpath_pipeline::switch::BridgeStats;
use fastpath_pmd::{LcoreStats, PortStats, TaskStats};

use crate::AppError;

use super::commands::Live;

/// Longest request head, bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNS: usize = 16;

struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    answered: bool,
    since: Instant,
}

/// The listening socket and its connections.
pub struct MetricsServer {
    listener: TcpListener,
    conns: Vec<Conn>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("listener", &self.listener).field("conns", &self.conns.len()).finish()
    }
}

impl MetricsServer {
    /// Listens on `addr` (`ADDR:PORT`).
    pub fn bind(addr: &str) -> Result<MetricsServer, AppError> {
        let a: SocketAddr =
            addr.parse().map_err(|e| AppError::Usage(format!("--metrics {addr}: give ADDR:PORT ({e})")))?;
        let listener = TcpListener::bind(a).map_err(|e| AppError::Failed(format!("--metrics {addr}: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| AppError::Failed(format!("--metrics {addr}: {e}")))?;
        Ok(MetricsServer { listener, conns: Vec::new() })
    }

    /// Accepts, reads request heads, answers complete ones (`render` makes the page), writes,
    /// and drops finished or timed-out connections. Never blocks.
    pub fn poll(&mut self, mut render: impl FnMut() -> String) {
        while let Ok((s, _)) = self.listener.accept() {
            if self.conns.len() < MAX_CONNS && s.set_nonblocking(true).is_ok() {
                self.conns.push(Conn {
                    stream: s,
                    head: Vec::new(),
                    out: Vec::new(),
                    answered: false,
                    since: Instant::now(),
                });
            }
        }
        for c in &mut self.conns {
            if !c.answered {
                let mut buf = [0u8; 2048];
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => {
                            c.answered = true;
                            break;
                        }
                        Ok(n) => c.head.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                    if c.head.len() > MAX_HEAD {
                        break;
                    }
                }
                if c.head.windows(4).any(|w| w == b"\r\n\r\n") || c.head.len() > MAX_HEAD {
                    c.out = answer(&c.head, &mut render);
                    c.answered = true;
                }
            }
            while !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(n) if n > 0 => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        self.conns.retain(|c| !(c.answered && c.out.is_empty()) && c.since.elapsed() < TIMEOUT);
    }
}

/// The HTTP response to a request head.
fn answer(head: &[u8], render: &mut impl FnMut() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (status, ctype, body) = match (words.next(), words.next()) {
        _ if head.len() > MAX_HEAD => ("431 Request Header Fields Too Large", "text/plain", String::new()),
        (Some("GET"), Some("/metrics")) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "only /metrics is served\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET /metrics is served\n".into()),
    };
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// A counter family: its name's middle, its help, how to read it from `T`.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: its HELP and TYPE lines, then a sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        match labels.is_empty() {
            true => writeln!(out, "{name} {v}"),
            false => writeln!(out, "{name}{{{labels}}} {v}"),
        }
        .unwrap_or(());
    }
}

/// The page: ports, lcores, rx queues, bridges, switch ports, stages, the FDB and the pool.
pub fn render(l: &Live<'_>) -> String {
    let mut o = String::new();
    let label = |name: &str| format!("port=\"{}\"", esc(name));
    let stats: Vec<_> = (l.ports.iter().zip(l.plugged.iter()))
        .filter_map(|(p, c)| Some((label(&c.as_ref()?.name), p.stats())))
        .collect();
    let per_port =
        |f: fn(&PortStats) -> u64| -> Vec<(String, u64)> { stats.iter().map(|(n, s)| (n.clone(), f(s))).collect() };
    let fams: [Family<PortStats>; 8] = [
        ("rx_packets", "Packets received.", |s| s.rx_packets),
        ("tx_packets", "Packets sent.", |s| s.tx_packets),
        ("rx_bytes", "Bytes received.", |s| s.rx_bytes),
        ("tx_bytes", "Bytes sent.", |s| s.tx_bytes),
        ("rx_dropped", "Packets dropped on receive.", |s| s.rx_drops),
        ("tx_dropped", "Packets dropped on transmit.", |s| s.tx_drops),
        ("rx_errors", "Receive errors.", |s| s.rx_errors),
        ("tx_errors", "Transmit errors.", |s| s.tx_errors),
    ];
    for (name, help, f) in fams {
        family(&mut o, &format!("fastpath_port_{name}_total"), "counter", help, &per_port(f));
    }
    let lc = l.rt.stats();
    let lcore_label =
        |i: usize| format!("lcore=\"{i}\",cpu=\"{}\"", l.cpus.get(i).map_or(String::new(), |c| c.to_string()));
    let fams: [Family<LcoreStats>; 8] = [
        ("rx_packets", "Packets the lcore received.", |s| s.rx_packets.get()),
        ("tx_packets", "Packets the lcore sent.", |s| s.tx_packets.get()),
        ("tx_dropped", "Packets a transmit queue refused.", |s| s.tx_drops.get()),
        ("no_route", "Packets for a port without a transmit queue on the lcore.", |s| s.no_route.get()),
        ("busy_polls", "Polls that received packets.", |s| s.busy_polls.get()),
        ("idle_polls", "Polls that received nothing.", |s| s.idle_polls.get()),
        ("busy_cycles", "TSC cycles spent in busy polls.", |s| s.busy_cycles.get()),
        ("idle_cycles", "TSC cycles spent in idle polls and back-off.", |s| s.idle_cycles.get()),
    ];
    for (name, help, f) in fams {
        let v: Vec<_> = lc.iter().enumerate().map(|(i, s)| (lcore_label(i), f(s))).collect();
        family(&mut o, &format!("fastpath_lcore_{name}_total"), "counter", help, &v);
    }
    let q = |t: &TaskStats, lc: usize| format!("{},queue=\"{}\",lcore=\"{lc}\"", label(&l.port_name(t.port)), t.queue);
    let v: Vec<_> = l.rxqs.iter().map(|(lc, t)| (q(t, *lc), t.packets.get())).collect();
    family(&mut o, "fastpath_rxq_packets_total", "counter", "Packets received on the rx queue.", &v);
    let v: Vec<_> = l.rxqs.iter().map(|(lc, t)| (q(t, *lc), t.cycles.get())).collect();
    family(&mut o, "fastpath_rxq_cycles_total", "counter", "TSC cycles the lcore spent on the rx queue.", &v);

    let st = l.ctl.stats();
    let br = |name: &str| format!("bridge=\"{}\"", esc(name));
    let v: Vec<_> = st.bridges.iter().map(|b| (br(&b.name), b.fdb_size)).collect();
    family(&mut o, "fastpath_bridge_fdb_entries", "gauge", "MAC entries of the bridge, static and learned.", &v);
    let fams: [Family<BridgeStats>; 5] = [
        ("learned", "MACs learned.", |b| b.learned),
        ("moved", "Learned MACs that moved to another port or VTEP.", |b| b.moved),
        ("aged", "Learned MACs aged out.", |b| b.aged),
        ("flooded", "Packets flooded.", |b| b.flooded),
        ("refused", "MACs not learned because of a limit or a full table.", |b| b.refused),
    ];
    for (name, help, f) in fams {
        let v: Vec<_> = st.bridges.iter().map(|b| (br(&b.name), f(b))).collect();
        family(&mut o, &format!("fastpath_bridge_{name}_total"), "counter", help, &v);
    }
    let mut v = Vec::new();
    for p in &st.ports {
        for (r, n) in &p.drops {
            v.push((format!("{},reason=\"{}\"", label(&p.name), esc(r)), *n));
        }
    }
    family(&mut o, "fastpath_switch_port_drops_total", "counter", "Packets of the port dropped by the switch.", &v);
    let v: Vec<_> = st.stages.iter().map(|s| (format!("stage=\"{}\"", esc(s.stage)), s.packets)).collect();
    family(&mut o, "fastpath_stage_packets_total", "counter", "Packets that entered the stage.", &v);
    let mut v = Vec::new();
    for s in &st.stages {
        for (r, n) in &s.drops {
            v.push((format!("stage=\"{}\",reason=\"{}\"", esc(s.stage), esc(r)), *n));
        }
    }
    family(&mut o, "fastpath_stage_drops_total", "counter", "Packets the stage dropped, by reason.", &v);
    family(&mut o, "fastpath_fdb_entries", "gauge", "Entries in the MAC table.", &[(String::new(), st.fdb_entries)]);
    let pool = format!("pool=\"{}\"", esc(l.pool.name()));
    family(
        &mut o,
        "fastpath_mempool_mbufs",
        "gauge",
        "Mbufs of the pool.",
        &[(pool.clone(), l.pool.capacity() as u64)],
    );
    family(
        &mut o,
        "fastpath_mempool_available_mbufs",
        "gauge",
        "Mbufs free in the pool.",
        &[(pool, l.pool.available() as u64)],
    );
    o
}
