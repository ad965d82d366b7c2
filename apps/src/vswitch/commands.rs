//! What the control socket's commands do on a running switch: each reads the ports, lcores and
//! the switch's control side (the one writer of the FDB) from the control thread, so none of
//! them touches an lcore. The reference is in docs/operations.md.

use std::net::IpAddr;
use std::sync::Arc;

use fastpath_mempool::Mempool;
use fastpath_pipeline::switch::{Direction, FdbTarget, SwitchControl};
use fastpath_pmd::sys::{fmt_mac, parse_mac};
use fastpath_pmd::{Port, Runtime, TaskStats};
use serde_json::{json, Value};

use super::capture::Captures;
use super::config::Config;
use super::ctl::Request;
use super::live::Plugged;
use super::rebalance::Rebalancer;

/// The commands, for `help` and for the error on an unknown one.
pub const COMMANDS: &str = "show ports|bridges|fdb [BRIDGE]|lcores|rxqs|neighbours|captures|config|security-groups (sg), stats, \
     fdb add BRIDGE MAC port=NAME|vtep=IP [vlan=N], fdb del BRIDGE MAC [vlan=N], fdb flush [BRIDGE], capture PORT rx|tx|both FILE [count=N], capture stop PORT, \
     show captures, trace add PORT N, trace show, trace clear, rxq rebalance, reload, \
     port add NAME SPEC [bridge=NAME] [vlan=N] [mac=MAC], port del NAME, \
     bridge add NAME [vni=N] [tunnel=vxlan|geneve|nvgre] [local=IP] [remotes=IP,...] [vlan=N] [udp_port=N], \
     bridge del NAME, remote add|del BRIDGE IP, help";

/// A running switch as the commands see it.
pub struct Live<'a> {
    /// The config it was started with.
    pub cfg: &'a mut Config,
    /// Its ports, by id (a port taken out leaves a [`super::live::Vacant`] slot).
    pub ports: &'a mut Vec<Box<dyn Port>>,
    /// What each port id is (none: vacant).
    pub plugged: &'a mut Vec<Option<Plugged>>,
    /// The bridges as configured or added live.
    pub bridge_cfgs: &'a mut Vec<fastpath_pipeline::switch::BridgeConfig>,
    /// Counts the changes of the port list (rates printed by `--stats` start again).
    pub generation: &'a mut u64,
    /// Its lcores.
    pub rt: &'a Runtime,
    /// The CPU of each lcore.
    pub cpus: &'a [usize],
    /// Per rx queue: its counters (port, queue, packets, cycles) and its lcore.
    pub rxqs: &'a mut Vec<(usize, Arc<TaskStats>)>,
    /// Its pool.
    pub pool: &'a Mempool,
    /// The control side of the switch.
    pub ctl: &'a mut SwitchControl,
    /// The taps of its queues and the captures running.
    pub captures: &'a mut Captures,
    /// What `rxq rebalance` weighed last.
    pub rebalancer: &'a mut Rebalancer,
}

impl Live<'_> {
    /// Runs one request.
    pub fn handle(&mut self, r: &Request) -> Result<Value, String> {
        let a: Vec<&str> = r.args.iter().map(String::as_str).collect();
        match (r.cmd.as_str(), a.as_slice()) {
            ("show", ["ports"]) => Ok(self.ports()),
            ("show", ["bridges"]) => Ok(self.bridges()),
            ("show", ["fdb"]) => Ok(self.fdb(None)),
            ("show", ["fdb", b]) => self.check_bridge(b).map(|()| self.fdb(Some(b))),
            ("show", ["lcores"]) => Ok(self.lcores()),
            ("show", ["rxqs"]) => Ok(self.rxqs()),
            ("show", ["neighbours"]) => Ok(self.neighbours()),
            ("show", ["captures"]) => Ok(self.captures.list(|id| self.port_name(id))),
            ("show", ["config"]) => Ok(json!({"path": self.cfg.source.path.display().to_string(),
                "text": self.cfg.source.text})),
            ("show", ["security-groups" | "sg"]) => Ok(self.security_groups()),
            ("show", _) => {
                Err("show what? give one of: ports, bridges, fdb [BRIDGE], lcores, rxqs, neighbours, captures, \
                 config, security-groups (sg)"
                    .into())
            }
            ("stats", []) => Ok(self.stats()),
            ("fdb", ["add", rest @ ..]) => self.fdb_add(rest),
            ("fdb", ["del", rest @ ..]) => self.fdb_del(rest),
            ("fdb", ["flush"]) => self.ctl.fdb_flush(None).map(|n| json!({"flushed": n})),
            ("fdb", ["flush", b]) => self.ctl.fdb_flush(Some(b)).map(|n| json!({"flushed": n})),
            ("capture", ["stop", p]) => self.port_id(p).and_then(|id| self.captures.stop(id, p)),
            ("capture", [p, dir, file, rest @ ..]) => {
                let id = self.port_id(p)?;
                let count = match rest {
                    [] => None,
                    [c] if c.starts_with("count=") => {
                        Some(c[6..].parse::<u64>().map_err(|_| format!("{c}: give count=N (frames)"))?)
                    }
                    _ => return Err("give: capture PORT rx|tx|both FILE [count=N]".into()),
                };
                self.captures.start(id, p, dir, file, count)
            }
            ("trace", ["add", p, n]) => {
                let id = self.port_id(p)?;
                let n = n.parse::<u32>().map_err(|_| format!("trace add {p} {n}: give a number of packets"))?;
                self.ctl.trace_add(id, n).map(|()| json!({"port": p, "packets": n}))
            }
            ("trace", ["show"]) => Ok(self.trace()),
            ("trace", ["clear"]) => {
                self.ctl.trace_clear();
                Ok(json!({"cleared": true}))
            }
            ("rxq", ["rebalance"]) => {
                let names = names(self.plugged);
                let name = |id: u16| names.get(id as usize).cloned().unwrap_or_else(|| id.to_string());
                self.rebalancer.run(self.rt, self.rxqs, name)
            }
            ("port", ["add", rest @ ..]) => self.port_add(rest),
            ("port", ["del", rest @ ..]) => self.port_del(rest),
            ("bridge", ["add", rest @ ..]) => self.bridge_add(rest),
            ("bridge", ["del", rest @ ..]) => self.bridge_del(rest),
            ("remote", ["add", rest @ ..]) => self.remote(true, rest),
            ("remote", ["del", rest @ ..]) => self.remote(false, rest),
            ("reload", []) => super::reload::reload(self),
            ("help", []) => Ok(json!(COMMANDS)),
            (
                c @ ("stats" | "fdb" | "help" | "capture" | "trace" | "rxq" | "reload" | "port" | "bridge" | "remote"),
                _,
            ) => Err(format!("{c}: wrong arguments; the commands: {COMMANDS}")),
            (c, _) => Err(format!("unknown command '{c}'; the commands: {COMMANDS}")),
        }
    }

    /// `trace show`: each packet with its passes and the cycles they cost.
    fn trace(&mut self) -> Value {
        let t = self.ctl.trace_show();
        let packets: Vec<Value> = t
            .packets
            .iter()
            .map(|p| {
                let passes: Vec<Value> = p
                    .passes
                    .iter()
                    .map(|s| json!({"pass": s.pass, "decision": s.decision, "cycles": s.cycles}))
                    .collect();
                let cycles: u64 = p.passes.iter().filter_map(|s| s.cycles).map(u64::from).sum();
                json!({"lcore": p.lcore, "port": p.port, "len": p.len, "summary": p.summary, "cycles": cycles,
                    "passes": passes})
            })
            .collect();
        json!({"packets": packets, "left": t.left, "lost": t.lost})
    }

    /// `show security-groups`: each group with the ports that use it, each rule, and each
    /// bridge's (conntrack zone's) tracked connections.
    fn security_groups(&self) -> Value {
        let sg = self.ctl.security_groups();
        let users = |g: &str| -> Vec<String> {
            sg.ports.iter().filter(|(_, n)| n.iter().any(|x| x == g)).map(|(p, _)| self.port_name(*p)).collect()
        };
        let groups: Vec<Value> = sg
            .groups
            .iter()
            .map(|g| json!({"name": g.name, "rules": g.rules.len(), "ports": users(&g.name)}))
            .collect();
        let rules: Vec<Value> = sg
            .groups
            .iter()
            .flat_map(|g| g.rules.iter().enumerate().map(move |(i, r)| (g, i, r)))
            .map(|(g, i, r)| {
                let protocol = match r.protocol {
                    None => "any".to_string(),
                    Some(6) => "tcp".into(),
                    Some(17) => "udp".into(),
                    Some(1) => "icmp".into(),
                    Some(58) => "icmpv6".into(),
                    Some(n) => n.to_string(),
                };
                json!({"group": g.name, "rule": i + 1,
                    "direction": if r.direction == Direction::Egress { "egress" } else { "ingress" },
                    "ethertype": if r.v6 { "IPv6" } else { "IPv4" }, "protocol": protocol,
                    "port_min": r.ports.map(|p| p.0), "port_max": r.ports.map(|p| p.1),
                    "icmp_type": r.icmp_type, "icmp_code": r.icmp_code,
                    "remote": r.remote.map(|(a, l)| format!("{a}/{l}"))})
            })
            .collect();
        let zones: Vec<Value> = (self.ctl.stats().conntrack.into_iter())
            .flat_map(|c| c.zones)
            .map(|z| json!({"bridge": z.bridge, "entries": z.entries, "new": z.new}))
            .collect();
        json!({"groups": groups, "rules": rules, "zones": zones})
    }

    fn check_bridge(&self, b: &str) -> Result<(), String> {
        match self.bridge_cfgs.iter().any(|x| x.name == b) {
            true => Ok(()),
            false => Err(format!("there is no bridge '{b}'")),
        }
    }

    fn ports(&self) -> Value {
        let v: Vec<Value> = self
            .ports
            .iter()
            .zip(self.plugged.iter())
            .filter_map(|(p, c)| Some((p, c.as_ref()?)))
            .map(|(p, c)| {
                let (i, s) = (p.info(), p.stats());
                json!({"id": i.id, "name": c.name, "driver": i.driver, "spec": c.spec,
                    "role": format!("{:?}", c.role).to_lowercase(),
                    "bridge": c.bridge, "vlan": c.vlan,
                    "mac": c.mac.or(i.mac).map(|m| fmt_mac(&m)), "rx_queues": i.rx_queues, "tx_queues": i.tx_queues,
                    "rx_packets": s.rx_packets, "tx_packets": s.tx_packets, "rx_bytes": s.rx_bytes,
                    "tx_bytes": s.tx_bytes, "rx_drops": s.rx_drops, "tx_drops": s.tx_drops,
                    "rx_errors": s.rx_errors, "tx_errors": s.tx_errors})
            })
            .collect();
        Value::Array(v)
    }

    fn bridges(&self) -> Value {
        let st = self.ctl.stats();
        let remotes = self.ctl.remotes();
        let v: Vec<Value> = (st.bridges.iter())
            .filter_map(|s| Some((self.bridge_cfgs.iter().find(|c| c.name == s.name)?, s)))
            .map(|(c, s)| {
                let ports: Vec<&String> = (self.plugged.iter().flatten())
                    .filter(|p| p.bridge.as_deref() == Some(c.name.as_str()))
                    .map(|p| &p.name)
                    .collect();
                let remotes = remotes.iter().find(|(b, _)| *b == c.name).map(|r| r.1.clone());
                json!({"name": s.name, "vni": c.vni, "tunnel": c.vni.map(|_| c.tunnel.name()),
                    "local": c.local, "remotes": remotes, "vlan": c.vlan, "ports": ports,
                    "fdb_size": s.fdb_size, "learned": s.learned, "moved": s.moved, "aged": s.aged,
                    "flooded": s.flooded, "refused": s.refused})
            })
            .collect();
        Value::Array(v)
    }

    fn fdb(&self, bridge: Option<&str>) -> Value {
        let mut e = self.ctl.entries();
        e.retain(|e| bridge.is_none_or(|b| e.bridge == b));
        e.sort_by(|a, b| (&a.bridge, a.vlan, a.mac).cmp(&(&b.bridge, b.vlan, b.mac)));
        let v: Vec<Value> = e
            .iter()
            .map(|e| {
                json!({"bridge": e.bridge, "vlan": e.vlan, "mac": fmt_mac(&e.mac), "port": e.port,
                    "vtep": e.vtep, "type": if e.is_static { "static" } else { "learned" },
                    "age": (!e.is_static).then_some(e.age)})
            })
            .collect();
        Value::Array(v)
    }

    fn lcores(&self) -> Value {
        let v: Vec<Value> = self
            .rt
            .stats()
            .iter()
            .enumerate()
            .map(|(l, s)| {
                let rx = s.rx_packets.get();
                let busy = s.busy_cycles.get();
                json!({"lcore": l, "cpu": self.cpus.get(l), "busy_polls": s.busy_polls.get(),
                    "idle_polls": s.idle_polls.get(), "busy_cycles": busy, "idle_cycles": s.idle_cycles.get(),
                    "utilisation": (s.utilisation() * 1000.0).round() / 1000.0, "rx_packets": rx,
                    "tx_packets": s.tx_packets.get(), "tx_drops": s.tx_drops.get(), "no_route": s.no_route.get(),
                    "cycles_per_packet": (rx > 0).then(|| busy / rx)})
            })
            .collect();
        Value::Array(v)
    }

    fn rxqs(&self) -> Value {
        let mut per_lcore = vec![0u64; self.cpus.len()];
        for (l, t) in self.rxqs.iter() {
            per_lcore[*l] += t.cycles.get();
        }
        let mut order: Vec<&(usize, Arc<TaskStats>)> = self.rxqs.iter().collect();
        order.sort_by_key(|(l, t)| (*l, t.port, t.queue));
        let v: Vec<Value> = order
            .into_iter()
            .map(|(l, t)| {
                let c = t.cycles.get();
                let share = if per_lcore[*l] == 0 { 0.0 } else { c as f64 / per_lcore[*l] as f64 };
                json!({"port": self.port_name(t.port), "queue": t.queue, "lcore": l, "cpu": self.cpus.get(*l),
                    "packets": t.packets.get(), "cycles": c, "share": (share * 1000.0).round() / 1000.0})
            })
            .collect();
        Value::Array(v)
    }

    fn port_id(&self, name: &str) -> Result<u16, String> {
        match self.plugged.iter().position(|p| p.as_ref().is_some_and(|p| p.name == name)) {
            Some(i) => Ok(i as u16),
            None => Err(format!("there is no port '{name}'")),
        }
    }

    /// The name of port `id` (its number when it has none).
    pub fn port_name(&self, id: u16) -> String {
        self.plugged.get(id as usize).and_then(|p| p.as_ref()).map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    fn neighbours(&self) -> Value {
        let v: Vec<Value> = self
            .ctl
            .stats()
            .vteps
            .iter()
            .map(|t| {
                json!({"vtep": t.addr, "mac": t.mac.map(|m| fmt_mac(&m)), "state": t.state,
                    "learned": t.learned})
            })
            .collect();
        Value::Array(v)
    }

    /// Every counter: ports, lcores, bridges, switch ports, stages, the FDB and the pool.
    pub fn stats(&self) -> Value {
        let st = self.ctl.stats();
        let sports: Vec<Value> = st
            .ports
            .iter()
            .map(|p| {
                let drops: serde_json::Map<_, _> = p.drops.iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
                json!({"name": p.name, "macs": p.macs, "refused": p.refused, "drops": drops})
            })
            .collect();
        let stages: Vec<Value> = st
            .stages
            .iter()
            .map(|s| {
                let drops: serde_json::Map<_, _> =
                    s.drops.iter().filter(|d| d.1 > 0).map(|(r, n)| (r.to_string(), json!(n))).collect();
                json!({"stage": s.stage, "packets": s.packets, "drops": drops})
            })
            .collect();
        json!({"ports": self.ports(), "lcores": self.lcores(), "bridges": self.bridges(), "switch_ports": sports,
            "stages": stages, "fdb": {"entries": st.fdb_entries, "relocations": st.fdb_relocations,
            "events": st.events}, "mempool": {"name": self.pool.name(), "capacity": self.pool.capacity(),
            "available": self.pool.available()}})
    }

    fn fdb_add(&mut self, a: &[&str]) -> Result<Value, String> {
        let usage = "fdb add BRIDGE MAC port=NAME|vtep=IP [vlan=N]";
        let [bridge, mac, opts @ ..] = a else { return Err(format!("give: {usage}")) };
        let mac = parse_mac(mac)?;
        let (mut port, mut vtep, mut vlan) = (None, None, None);
        for o in opts {
            match o.split_once('=') {
                Some(("port", p)) => port = Some(p),
                Some(("vtep", v)) => vtep = Some(v.parse::<IpAddr>().map_err(|e| format!("vtep={v}: {e}"))?),
                Some(("vlan", v)) => vlan = Some(parse_vlan(v)?),
                _ => return Err(format!("'{o}': give {usage}")),
            }
        }
        let to = match (port, vtep) {
            (Some(p), None) => FdbTarget::Port(p),
            (None, Some(v)) => FdbTarget::Vtep(v),
            _ => return Err(format!("give exactly one of port=NAME or vtep=IP: {usage}")),
        };
        self.ctl.fdb_add(bridge, vlan, mac, to)?;
        Ok(self.entry(bridge, vlan, mac))
    }

    fn fdb_del(&mut self, a: &[&str]) -> Result<Value, String> {
        let (bridge, mac, vlan) = match a {
            [b, m] => (b, m, None),
            [b, m, v] if v.starts_with("vlan=") => (b, m, Some(parse_vlan(&v[5..])?)),
            _ => return Err("give: fdb del BRIDGE MAC [vlan=N]".into()),
        };
        let mac = parse_mac(mac)?;
        match self.ctl.fdb_del(bridge, vlan, mac)? {
            true => Ok(json!({"deleted": fmt_mac(&mac)})),
            false => Err(format!("bridge '{bridge}' has no entry for {}", fmt_mac(&mac))),
        }
    }

    fn entry(&self, bridge: &str, vlan: Option<u16>, mac: [u8; 6]) -> Value {
        match self.ctl.lookup(bridge, vlan, mac) {
            Some(e) => json!({"bridge": e.bridge, "vlan": e.vlan, "mac": fmt_mac(&e.mac), "port": e.port,
                "vtep": e.vtep, "type": if e.is_static { "static" } else { "learned" }}),
            None => Value::Null,
        }
    }
}

/// The name of each port id (empty for a vacant one).
pub fn names(plugged: &[Option<Plugged>]) -> Vec<String> {
    plugged.iter().map(|p| p.as_ref().map_or(String::new(), |p| p.name.clone())).collect()
}

/// An 802.1Q VLAN id.
pub fn parse_vlan(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if (1..=4094).contains(&n) => Ok(n),
        _ => Err(format!("vlan={v}: give an 802.1Q VLAN id 1..=4094")),
    }
}
