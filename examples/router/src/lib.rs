//! An IPv4/IPv6 router VNF on fastpath, the example a VNF author reads first.
//!
//! It shows the life of an embedded fastpath application (see `docs/embedding.md`):
//!
//! 1. `main.rs` makes a [`fastpath_mempool::Mempool`], opens the ports of the configuration
//!    (any port SPEC), builds one [`RouterStage`] per lcore task with [`Router::stage`], and
//!    launches the lcores with [`fastpath_pmd::Runtime`];
//! 2. the lcores run [`RouterStage`], a [`fastpath_pipeline::Stage`]: ARP and neighbour
//!    discovery, pings to the router's own addresses, and forwarding (LPM lookup of the whole
//!    burst, TTL / hop limit, next hop's MAC), with ICMP errors (time exceeded, unreachable);
//! 3. the control thread ([`Router::poll`]) learns the neighbours the lcores report, and
//!    [`Router::apply`] swaps the routes in while the lcores look up (on SIGHUP in `main.rs`);
//! 4. at the end, the stage counters and port statistics tell where every packet went.
//!
//! Shared state, and how each lcore sees it without locks:
//!
//! | what | written by | read by lcores through |
//! | --- | --- | --- |
//! | routes: prefix -> next-hop id | control, [`Router::apply`] | [`fastpath_pipeline::lpm`] readers |
//! | next hops: id -> (port, gateway) | control, before a route uses the id | [`NextHops`] (atomics, append-only) |
//! | neighbours: (port, IP) -> MAC | control, from lcores' [`Event`]s | [`Neighbours`] (atomics, insert-only) |
//! | ports: MACs and addresses | nobody after start | [`PortView`] (immutable) |
//!
//! ```
//! use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
//! use router::{Config, Router};
//!
//! let config = Config::parse("router.toml", r#"
//!     [[port]]
//!     name = "a"
//!     spec = "null"
//!     addresses = ["10.60.1.1/24"]
//!     [[port]]
//!     name = "b"
//!     spec = "null"
//!     addresses = ["10.60.2.1/24", "fd00:60:2::1/64"]
//!     [[route]]
//!     prefix = "10.70.0.0/16"
//!     via = "10.60.2.2"
//! "#)?;
//! let pool = Mempool::new("router", &PoolConfig { mbufs: 256, chunk_size: 2048, pages: PagePolicy::Small })?;
//! let ports: Vec<_> = config.ports.iter().enumerate()
//!     .map(|(i, p)| fastpath_pmd::open_port(i as u16, &p.spec, &pool).map(|p| p.unwrap().info().clone()))
//!     .collect::<Result<_, _>>()?;
//! let mut router = Router::new(config, &ports, &pool)?;
//! assert_eq!(router.routes(), (3, 1), "two connected IPv4 subnets and a route; one IPv6 subnet");
//! let _stage = router.stage(); // a fastpath_pipeline::Stage for one lcore task
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod neighbour;
pub mod stage;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use fastpath_mempool::ring::spsc;
use fastpath_mempool::Mempool;
use fastpath_pipeline::lpm::{self, Lpm4, Lpm6, LpmConfig};
use fastpath_pipeline::wire::EthernetAddress;
use fastpath_pmd::PortInfo;

pub use config::{Cidr, Config, ConfigError};
pub use neighbour::{Event, NeighbourWriter, Neighbours};
pub use stage::RouterStage;

/// A port as the stage sees it.
#[derive(Debug, Clone)]
pub struct PortView {
    /// Its MAC (from the configuration, the port, or made up: `02:00:00:00:00:<id+1>`).
    pub mac: EthernetAddress,
    /// The router's IPv4 addresses on it.
    pub v4: Vec<(Ipv4Addr, u8)>,
    /// The router's IPv6 addresses on it.
    pub v6: Vec<(Ipv6Addr, u8)>,
}

/// Next-hop ids the tables hold at most.
pub const MAX_HOPS: usize = 4096;

/// Next hops by id: a port and a gateway, or a port alone (a connected subnet: the destination
/// itself is the neighbour). Ids are handed out once and never change meaning, so an lcore
/// that read an id from the LPM finds its entry complete: the entry is written before the route
/// that uses it is published (Release in the LPM, Acquire in its readers).
#[derive(Debug)]
pub struct NextHops {
    /// Port + 1 (0: unused) and a flag: bit 31 set for a gateway.
    port: Box<[AtomicU32]>,
    gw_hi: Box<[AtomicU64]>,
    gw_lo: Box<[AtomicU64]>,
}

/// Where a next hop sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The output port.
    pub port: u16,
    /// The neighbour to send to (see [`neighbour::key`]), or `None`: the destination itself.
    pub gateway: Option<u128>,
}

const VIA: u32 = 1 << 31;

impl NextHops {
    fn new() -> NextHops {
        NextHops {
            port: (0..MAX_HOPS).map(|_| AtomicU32::new(0)).collect(),
            gw_hi: (0..MAX_HOPS).map(|_| AtomicU64::new(0)).collect(),
            gw_lo: (0..MAX_HOPS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The next hop `id` (one the LPM returned).
    #[inline]
    pub fn get(&self, id: u16) -> Option<Hop> {
        let i = id as usize;
        // Relaxed: written before the route that returned `id` was published (see the type doc).
        let p = self.port.get(i)?.load(Ordering::Relaxed);
        if p == 0 {
            return None;
        }
        let gateway = (p & VIA != 0).then(|| {
            // Relaxed: as above.
            (self.gw_hi[i].load(Ordering::Relaxed) as u128) << 64 | self.gw_lo[i].load(Ordering::Relaxed) as u128
        });
        Some(Hop { port: ((p & !VIA) - 1) as u16, gateway })
    }

    fn set(&self, id: u16, hop: Hop) {
        let i = id as usize;
        let g = hop.gateway.unwrap_or(0);
        // Relaxed: published by the LPM's Release store of the route (see the type doc).
        self.gw_hi[i].store((g >> 64) as u64, Ordering::Relaxed);
        self.gw_lo[i].store(g as u64, Ordering::Relaxed);
        let flag = if hop.gateway.is_some() { VIA } else { 0 };
        self.port[i].store((hop.port as u32 + 1) | flag, Ordering::Relaxed);
    }
}

/// Failures building the router.
#[derive(Debug)]
pub enum RouterError {
    /// The LPM tables could not be made or filled.
    Lpm(lpm::Error),
    /// More distinct next hops than [`MAX_HOPS`].
    TooManyHops,
    /// A reload changed the ports.
    PortsChanged,
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::Lpm(e) => write!(f, "routing table: {e}"),
            RouterError::TooManyHops => write!(f, "more than {MAX_HOPS} distinct next hops"),
            RouterError::PortsChanged => {
                write!(f, "the [[port]] tables changed: ports and addresses are read at start; restart to change them")
            }
        }
    }
}

impl std::error::Error for RouterError {}

impl From<lpm::Error> for RouterError {
    fn from(e: lpm::Error) -> Self {
        RouterError::Lpm(e)
    }
}

/// What [`Router::apply`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added.
    pub added: usize,
    /// Routes whose next hop changed.
    pub changed: usize,
    /// Routes deleted.
    pub deleted: usize,
}

/// The control plane: owns the routing tables (writers), the next hops, the neighbour table
/// and the lcores' event rings.
pub struct Router {
    config: Config,
    ports: Arc<[PortView]>,
    lpm4: Lpm4,
    lpm6: Lpm6,
    hops: Arc<NextHops>,
    hop_ids: HashMap<Hop, u16>,
    neighbours: NeighbourWriter,
    events: Vec<spsc::Consumer<Event>>,
    pool: Mempool,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("lpm4", &self.lpm4).field("lpm6", &self.lpm6).finish_non_exhaustive()
    }
}

impl Router {
    /// A router for `config` over the opened ports `infos` (same order), allocating the
    /// packets it makes (replies, ICMP errors, solicitations) from `pool`.
    pub fn new(config: Config, infos: &[PortInfo], pool: &Mempool) -> Result<Router, RouterError> {
        let ports: Arc<[PortView]> = config
            .ports
            .iter()
            .zip(infos)
            .map(|(p, info)| PortView {
                mac: p.mac.or(info.mac.map(EthernetAddress)).unwrap_or(EthernetAddress([
                    2,
                    0,
                    0,
                    0,
                    0,
                    info.id as u8 + 1,
                ])),
                v4: p.addresses.iter().filter_map(|a| v4(a.addr).map(|x| (x, a.len))).collect(),
                v6: p.addresses.iter().filter_map(|a| v6(a.addr).map(|x| (x, a.len))).collect(),
            })
            .collect();
        let mut r = Router {
            config: Config { routes: Vec::new(), neighbours: Vec::new(), ..config.clone() },
            ports,
            lpm4: Lpm4::new(&LpmConfig::default())?,
            lpm6: Lpm6::new(&LpmConfig::default())?,
            hops: Arc::new(NextHops::new()),
            hop_ids: HashMap::new(),
            neighbours: NeighbourWriter::new(),
            events: Vec::new(),
            pool: pool.clone(),
        };
        r.apply(&config)?;
        Ok(r)
    }

    /// The ports as the stages see them.
    pub fn ports(&self) -> &[PortView] {
        &self.ports
    }

    /// A stage for one lcore task: its own LPM readers and event ring.
    pub fn stage(&mut self) -> RouterStage {
        let (tx, rx) = spsc::channel(256);
        self.events.push(rx);
        RouterStage::new(stage::Shared {
            lpm4: self.lpm4.reader(),
            lpm6: self.lpm6.reader(),
            hops: self.hops.clone(),
            neighbours: self.neighbours.table(),
            ports: self.ports.clone(),
            events: tx,
            pool: self.pool.clone(),
            icmp_rate: self.config.icmp_rate,
        })
    }

    /// Takes the neighbours the lcores learned since the last call into the table; returns
    /// how many were new or changed.
    pub fn poll(&mut self) -> usize {
        let mut n = 0;
        for rx in &mut self.events {
            while let Some(Event::Learn { port, ip, mac }) = rx.dequeue() {
                // Only neighbours on one of the port's subnets (a stage checks it too).
                let ok =
                    self.config.ports.get(port as usize).is_some_and(|p| p.addresses.iter().any(|a| a.contains(ip)));
                if !ok || mac.is_multicast() {
                    continue;
                }
                match self.neighbours.learn(port, ip, mac) {
                    neighbour::Learned::New | neighbour::Learned::Changed => {
                        log::info!("neighbour {ip} is at {mac} on port {port}");
                        n += 1;
                    }
                    neighbour::Learned::Full => log::warn!("neighbour table full near {ip}: not learned"),
                    neighbour::Learned::Same => {}
                }
            }
        }
        n
    }

    /// Neighbours known.
    pub fn neighbours(&self) -> usize {
        self.neighbours.len()
    }

    /// Routes installed (IPv4, IPv6), connected subnets included.
    pub fn routes(&self) -> (usize, usize) {
        (self.lpm4.len(), self.lpm6.len())
    }

    /// The routing tables' sizes and memory.
    pub fn lpm_stats(&self) -> (lpm::LpmStats, lpm::LpmStats) {
        (self.lpm4.stats(), self.lpm6.stats())
    }

    /// Makes the routes (and static neighbours) of `config` the router's, while lcores look
    /// up: new routes are added, changed ones updated and gone ones deleted, one route at a
    /// time (each lookup sees the old or the new next hop of a prefix). Ports and addresses
    /// cannot change.
    pub fn apply(&mut self, config: &Config) -> Result<Changes, RouterError> {
        if config.ports != self.config.ports {
            return Err(RouterError::PortsChanged);
        }
        // The wanted table: connected subnets, then the routes.
        let mut want: HashMap<(IpAddr, u8), Hop> = HashMap::new();
        for (i, p) in config.ports.iter().enumerate() {
            for a in &p.addresses {
                want.insert((a.network(), a.len), Hop { port: i as u16, gateway: None });
            }
        }
        for r in &config.routes {
            want.insert(
                (r.prefix.addr, r.prefix.len),
                Hop { port: r.port as u16, gateway: Some(neighbour::key(r.via)) },
            );
        }
        let mut ch = Changes::default();
        let have: Vec<(IpAddr, u8, u16)> = self
            .lpm4
            .routes()
            .into_iter()
            .map(|(a, l, h)| (IpAddr::V4(a), l, h))
            .chain(self.lpm6.routes().into_iter().map(|(a, l, h)| (IpAddr::V6(a), l, h)))
            .collect();
        for (addr, len, _) in &have {
            if !want.contains_key(&(*addr, *len)) {
                match addr {
                    IpAddr::V4(a) => self.lpm4.delete(*a, *len),
                    IpAddr::V6(a) => self.lpm6.delete(*a, *len),
                };
                ch.deleted += 1;
            }
        }
        for ((addr, len), hop) in &want {
            let id = self.hop_id(*hop)?;
            let old = match addr {
                IpAddr::V4(a) => self.lpm4.get(*a, *len),
                IpAddr::V6(a) => self.lpm6.get(*a, *len),
            };
            if old == Some(id) {
                continue;
            }
            match addr {
                IpAddr::V4(a) => self.lpm4.add(*a, *len, id)?,
                IpAddr::V6(a) => self.lpm6.add(*a, *len, id)?,
            }
            if old.is_some() {
                ch.changed += 1;
            } else {
                ch.added += 1;
            }
        }
        for n in &config.neighbours {
            self.neighbours.learn(n.port as u16, n.ip, n.mac);
        }
        self.config = config.clone();
        Ok(ch)
    }

    fn hop_id(&mut self, hop: Hop) -> Result<u16, RouterError> {
        if let Some(&id) = self.hop_ids.get(&hop) {
            return Ok(id);
        }
        let id = self.hop_ids.len();
        if id >= MAX_HOPS {
            return Err(RouterError::TooManyHops);
        }
        self.hops.set(id as u16, hop);
        self.hop_ids.insert(hop, id as u16);
        Ok(id as u16)
    }
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(x) => Some(x),
        IpAddr::V6(_) => None,
    }
}

fn v6(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(x) => Some(x),
        IpAddr::V4(_) => None,
    }
}
