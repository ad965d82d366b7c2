//! The core-scaling harness behind `fastpath bench`, and the criterion benches (in `benches/`).
//!
//! For each core count k, k lcores run side by side, each pinned to its own CPU and each
//! forwarding between its own two null ports in both directions (testpmd's io topology over
//! `net_null`): nothing is shared between lcores, not even the pool. The rate is the sum of
//! packets accepted by the transmit queues, sampled every `sample` interval after a warm-up;
//! the figure reported is the median sample. Efficiency is `mpps(k) / (k * mpps(1))`.
//!
//! ```
//! let names: Vec<&str> = fastpath_benches::pipelines().iter().map(|p| p.name).collect();
//! assert!(names.contains(&"io") && names.contains(&"router"));
//! ```
#![deny(missing_docs)]

pub mod switch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{BuildEnv, Pipeline, PipelineSpec, Stage, StageCounters};
use fastpath_pmd::drivers::null::{NullConfig, NullPort};
use fastpath_pmd::{Error, LcoreSpec, Offloads, Port, PortInfo, Processor, Runtime, RuntimeConfig};
use serde::Serialize;

mod router_bench;

/// Builds the stages of one pipeline instance in code (for stages that no spec names, such as
/// an application's own): called once per lcore task with that lcore's pool and ports.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct StageBuilder(pub Arc<dyn Fn(&BuildEnv) -> Result<Vec<Box<dyn Stage>>, Error> + Send + Sync>);

impl std::fmt::Debug for StageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageBuilder")
    }
}

/// A named benchmark pipeline: the stages and the frames the null ports produce.
#[derive(Debug, Clone)]
pub struct BenchPipeline {
    /// Name used by `--pipeline`.
    pub name: &'static str,
    /// One line of description.
    pub about: &'static str,
    /// Stage specs, in order.
    pub stages: Vec<String>,
    /// A frame copied into every received mbuf; `None`: 64-byte frames, data untouched.
    pub frame: Option<Arc<[u8]>>,
    /// Report `gbps` and `cycles_per_byte` over the frame bytes processed.
    pub byte_metrics: bool,
    /// Frames received in turn, one per mbuf, cycling (overrides `frame`): the positions of a
    /// flow for GRO, or a 64 KiB frame that arrives as a chain for LSO (see
    /// [`NullConfig::frames`]).
    pub frames: Option<Arc<[Arc<[u8]>]>>,
    /// Offloads the null ports claim (e.g. TSO, so that GRO's output is not cut again).
    pub offloads: Offloads,
    /// Payload bytes per received packet: report `gbps` of payload, `cycles_per_byte` of
    /// payload and `rx_mpps` from the packets received (for pipelines whose output count
    /// differs from their input count).
    pub payload_per_rx: Option<usize>,
    /// Only port 0 receives; port 1 is a sink (for one-way pipelines: access -> uplink).
    pub one_way: bool,
    /// Builds the processors in code instead of from `stages` (the switch).
    pub processors: Option<BuildProcessors>,
    /// Stages built in code instead of `stages` (the router VNF's).
    pub build: Option<StageBuilder>,
}

/// Builds one lcore's processors for its two null ports (given by their descriptions): one
/// per receiving port, in port order.
pub type BuildProcessors = fn(&Mempool, &[PortInfo]) -> Result<BuiltProcessors, Error>;

/// What [`BuildProcessors`] makes.
pub struct BuiltProcessors {
    /// One per receiving port, in port order.
    pub processors: Vec<Box<dyn Processor>>,
    /// Drops counted by the processors so far (it keeps whatever they need alive).
    pub drops: Box<dyn Fn() -> u64 + Send>,
}

impl std::fmt::Debug for BuiltProcessors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltProcessors").field("processors", &self.processors.len()).finish()
    }
}

impl Default for BenchPipeline {
    fn default() -> Self {
        BenchPipeline {
            name: "",
            about: "",
            stages: Vec::new(),
            frame: None,
            byte_metrics: false,
            frames: None,
            offloads: Offloads::NONE,
            payload_per_rx: None,
            one_way: false,
            processors: None,
            build: None,
        }
    }
}

/// The pipelines `fastpath bench` knows.
pub fn pipelines() -> Vec<BenchPipeline> {
    vec![
        BenchPipeline {
            name: "io",
            about: "forward as received (testpmd io): framework overhead",
            stages: vec![],
            frame: None,
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "macswap",
            about: "swap MAC addresses of 64-byte frames (testpmd macswap)",
            stages: vec!["macswap".into()],
            frame: Some(Arc::from(&example_frame(64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "vxlan-encap",
            about: "VXLAN/IPv4 encap of 64-byte frames",
            stages: vec![VXLAN_ENCAP.into()],
            frame: Some(Arc::from(&example_frame(64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "vxlan-decap",
            about: "VXLAN/IPv4 decap of 114-byte frames (64-byte inner frames)",
            stages: vec![VXLAN_DECAP.into()],
            frame: Some(Arc::from(&encapsulated_frame(VXLAN_ENCAP, 64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "vxlan-roundtrip",
            about: "VXLAN/IPv4 encap then decap of 64-byte frames",
            stages: vec![VXLAN_ENCAP.into(), VXLAN_DECAP.into()],
            frame: Some(Arc::from(&example_frame(64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "geneve-roundtrip",
            about: "GENEVE/IPv4 encap then decap of 64-byte frames",
            stages: vec![GENEVE_ENCAP.into(), GENEVE_DECAP.into()],
            frame: Some(Arc::from(&example_frame(64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "nvgre-roundtrip",
            about: "NVGRE/IPv4 encap then decap of 64-byte frames",
            stages: vec![NVGRE_ENCAP.into(), NVGRE_DECAP.into()],
            frame: Some(Arc::from(&example_frame(64)[..])),
            byte_metrics: false,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "checksum",
            about: "IPv4 header + UDP checksum of 1500-byte frames (checksum,mode=fill)",
            stages: vec!["checksum,mode=fill".into()],
            frame: Some(Arc::from(&example_frame(1500)[..])),
            byte_metrics: true,
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "lso",
            about:
                "64 KiB TCP/IPv4 (a chain) cut to MSS 1448, checksums in software, copied into one frame per segment",
            stages: vec!["lso,mss=1448".into()],
            frames: Some(Arc::from([Arc::from(&tcp4_frame(LSO_PAYLOAD, 1, 1, false)[..])])),
            payload_per_rx: Some(LSO_PAYLOAD),
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "lso-chain",
            about: "as lso, to a port that takes chains: the payload is attached, not copied",
            stages: vec!["lso,mss=1448".into()],
            frames: Some(Arc::from([Arc::from(&tcp4_frame(LSO_PAYLOAD, 1, 1, false)[..])])),
            offloads: Offloads::TX_MULTI_SEGS,
            payload_per_rx: Some(LSO_PAYLOAD),
            ..BenchPipeline::default()
        },
        BenchPipeline {
            name: "gro",
            about: "in-order 1448-byte TCP/IPv4 segments of a flow merged (checksums verified) for a TSO port",
            stages: vec!["gro".into()],
            frames: Some(gro_flow(GRO_FLOW_LEN)),
            offloads: Offloads::TX_MULTI_SEGS | Offloads::TX_TCP_TSO | Offloads::TX_TCP_CKSUM | Offloads::TX_IPV4_CKSUM,
            payload_per_rx: Some(1448),
            ..BenchPipeline::default()
        },
        router_bench::pipeline(),
    ]
    .into_iter()
    .chain(switch::pipelines())
    .collect()
}

/// TCP payload of the `lso` pipelines' frame: a 65535-byte IPv4 packet.
pub const LSO_PAYLOAD: usize = 65535 - 20 - 20;
/// Segments of the flow the `gro` pipeline receives, cycled.
pub const GRO_FLOW_LEN: usize = 32;

/// `n` in-order segments of one TCP/IPv4 flow, 1448 bytes of payload each, with timestamps.
pub fn gro_flow(n: usize) -> Arc<[Arc<[u8]>]> {
    (0..n).map(|i| Arc::from(&tcp4_frame(1448, 1 + (i * 1448) as u32, i as u16, true)[..])).collect()
}

/// A TCP/IPv4 Ethernet frame (ACK, DF) with `payload` bytes, sequence number `seq`, IPv4
/// identification `id`, optionally the timestamps option, and valid checksums.
pub fn tcp4_frame(payload: usize, seq: u32, id: u16, timestamps: bool) -> Vec<u8> {
    use fastpath_pipeline::checksum;
    let thl = if timestamps { 32 } else { 20 };
    let mut f = vec![0u8; 14 + 20 + thl + payload];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (20 + thl + payload) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = ((thl / 4) << 4) as u8;
    f[47] = 0x10;
    f[48..50].copy_from_slice(&512u16.to_be_bytes());
    if timestamps {
        f[54..58].copy_from_slice(&[1, 1, 8, 10]);
        f[58..62].copy_from_slice(&1000u32.to_be_bytes());
        f[62..66].copy_from_slice(&2000u32.to_be_bytes());
    }
    for (i, b) in f[34 + thl..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let tcp_len = (thl + payload) as u32;
    let mut s = checksum::Sum::new(checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp_len));
    s.add_bytes(&f[34..]);
    f[50..52].copy_from_slice(&s.checksum().to_be_bytes());
    f
}

/// The VXLAN encap stage of the bench pipelines.
pub const VXLAN_ENCAP: &str = "vxlan-encap,vni=42,local=192.0.2.1,remote=192.0.2.2";
/// The VXLAN decap stage of the bench pipelines.
pub const VXLAN_DECAP: &str = "vxlan-decap,vni=42";
/// The GENEVE encap stage of the bench pipelines.
pub const GENEVE_ENCAP: &str = "geneve-encap,vni=42,local=192.0.2.1,remote=192.0.2.2";
/// The GENEVE decap stage of the bench pipelines.
pub const GENEVE_DECAP: &str = "geneve-decap,vni=42";
/// The NVGRE encap stage of the bench pipelines.
pub const NVGRE_ENCAP: &str = "nvgre-encap,vni=42,local=192.0.2.1,remote=192.0.2.2";
/// The NVGRE decap stage of the bench pipelines.
pub const NVGRE_DECAP: &str = "nvgre-decap,vni=42";

/// `example_frame(inner_len)` run through the encap stage `encap_spec` (the input of decap
/// pipelines and benches).
pub fn encapsulated_frame(encap_spec: &str, inner_len: usize) -> Vec<u8> {
    use fastpath_mempool::Batch;
    use fastpath_pmd::Ctx;
    let pool = Mempool::new("encap-frame", &PoolConfig { mbufs: 64, chunk_size: 2048, pages: PagePolicy::Auto })
        .expect("a 64-mbuf pool");
    let env = BuildEnv { pool: pool.clone(), ports: vec![] };
    let mut stage = fastpath_pipeline::make_stage(encap_spec, &env).expect("a valid encap spec");
    let mut ctx = Ctx::new(0, &pool);
    let mut b = Batch::new();
    let mut m = pool.alloc().expect("an mbuf");
    let f = example_frame(inner_len);
    assert!(m.set_len(f.len()));
    m.data_mut().copy_from_slice(&f);
    let _ = b.push(m);
    stage.process(&mut b, &mut ctx);
    let out = b.first().map(|m| m.to_vec()).expect("encap keeps the frame");
    ctx.free_batch(&mut b);
    out
}

/// A UDP/IPv4 Ethernet frame of `len` bytes (>= 42) with valid headers and checksums.
pub fn example_frame(len: usize) -> Vec<u8> {
    let len = len.max(42);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&1024u16.to_be_bytes());
    f[36..38].copy_from_slice(&1025u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Settings of one scaling run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Core counts to measure, e.g. `[1, 2]`.
    pub core_counts: Vec<usize>,
    /// Seconds measured per core count (after the warm-up).
    pub seconds: f64,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Interval between rate samples.
    pub sample: Duration,
    /// Burst size.
    pub burst: usize,
    /// CPUs to pin to, in order: core count k uses the first k.
    pub cpus: Vec<usize>,
    /// Mbufs per lcore pool.
    pub mbufs: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        let cpus = fastpath_pmd::lcore::available_cores();
        BenchConfig {
            core_counts: (1..=cpus.len().max(1)).collect(),
            seconds: 3.0,
            warmup: Duration::from_millis(500),
            sample: Duration::from_millis(250),
            burst: 32,
            cpus,
            mbufs: 8192,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    /// Pipeline name.
    pub pipeline: String,
    /// Cores (lcores) used.
    pub cores: usize,
    /// Median forwarding rate over the samples, Mpps (all lcores).
    pub mpps: f64,
    /// `mpps / cores`.
    pub mpps_per_core: f64,
    /// `mpps / (cores * mpps at 1 core)`, only when a 1-core point was measured in the same run
    /// (`null` in JSON otherwise: an efficiency against nothing would be invented).
    pub efficiency: Option<f64>,
    /// Burst size.
    pub burst: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Every sample, Mpps.
    pub samples: Vec<f64>,
    /// Share of TSC cycles in busy polls, averaged over lcores.
    pub utilisation: f64,
    /// Frame size in bytes.
    pub frame_bytes: usize,
    /// Payload rate in Gbit/s (pipelines with byte metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// TSC cycles per frame byte, per core (pipelines with byte metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycles_per_byte: Option<f64>,
    /// Packets received per second, millions (pipelines measured by payload, whose output
    /// count differs from their input count: `mpps` counts what was transmitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_mpps: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One lcore's processors for `ports` (one per receiving port) and a reader of their drops.
fn processors(p: &BenchPipeline, pool: &Mempool, ports: &[PortInfo]) -> Result<Built, Error> {
    if let Some(build) = p.processors {
        let b = build(pool, ports)?;
        return Ok((b.processors, b.drops));
    }
    let env = BuildEnv { pool: pool.clone(), ports: ports.to_vec() };
    let n = if p.one_way { 1 } else { 2 };
    if let Some(f) = &p.build {
        let mut procs: Vec<Box<dyn Processor>> = Vec::new();
        let mut counters: Vec<Arc<StageCounters>> = Vec::new();
        for _ in 0..n {
            let stages = (f.0)(&env)?;
            counters.extend(stages.iter().map(|s| s.counters().clone()));
            procs.push(Box::new(Pipeline::new(stages)));
        }
        return Ok((procs, Box::new(move || counters.iter().map(|c| c.total_drops()).sum())));
    }
    let spec = PipelineSpec::parse(&p.stages, &env)?;
    let procs = (0..n).map(|_| Ok(Box::new(spec.build(&env)?) as Box<dyn Processor>)).collect::<Result<_, Error>>()?;
    Ok((procs, Box::new(move || spec.stats().total_drops())))
}

type Built = (Vec<Box<dyn Processor>>, Box<dyn Fn() -> u64 + Send>);

/// Runs `p` on `cores` lcores and measures it. `progress` receives a status line now and then.
pub fn run_point(
    p: &BenchPipeline,
    cores: usize,
    cfg: &BenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<ScalingPoint, Error> {
    if cores == 0 || cores > cfg.cpus.len() {
        return Err(Error::Core(format!(
            "{cores} cores asked, but this process may use {} CPUs ({:?})",
            cfg.cpus.len(),
            cfg.cpus
        )));
    }
    let mut lcores = Vec::new();
    let mut pools = Vec::new();
    let mut specs = Vec::new();
    for i in 0..cores {
        let pool = Mempool::new(
            &format!("bench{i}"),
            &PoolConfig { mbufs: cfg.mbufs, chunk_size: 2048, pages: PagePolicy::Auto },
        )?;
        let ncfg = NullConfig {
            frame: p.frame.clone(),
            frames: p.frames.clone(),
            offloads: p.offloads,
            ..NullConfig::default()
        };
        let mut a = NullPort::new(0, &pool, ncfg.clone());
        let mut b = NullPort::new(1, &pool, NullConfig { no_rx: p.one_way, ..ncfg });
        let (mut procs, drops) = processors(p, &pool, &[a.info().clone(), b.info().clone()])?;
        procs.reverse();
        let mut l = LcoreSpec::new(Some(cfg.cpus[i]));
        for (port, out) in [(&mut a, 1), (&mut b, 0)] {
            if let Some(processor) = procs.pop() {
                l.add_task_with(port.rx_queue(0)?, processor, out);
            }
        }
        l.set_tx(0, a.tx_queue(0)?);
        l.set_tx(1, b.tx_queue(0)?);
        lcores.push(l);
        pools.push(pool);
        specs.push(drops);
    }
    let rt = Runtime::launch(lcores, RuntimeConfig { burst: cfg.burst, ..Default::default() })?;
    let total = |rt: &Runtime| rt.stats().iter().map(|s| s.tx_packets.get()).sum::<u64>();
    let received = |rt: &Runtime| rt.stats().iter().map(|s| s.rx_packets.get()).sum::<u64>();
    let cycles = |rt: &Runtime| rt.stats().iter().map(|s| s.busy_cycles.get() + s.idle_cycles.get()).sum::<u64>();
    std::thread::sleep(cfg.warmup);
    let start = Instant::now();
    let (mut last_t, mut last_n) = (Instant::now(), total(&rt));
    let (first_n, first_c, first_rx) = (last_n, cycles(&rt), received(&rt));
    let mut samples = Vec::new();
    while start.elapsed().as_secs_f64() < cfg.seconds {
        std::thread::sleep(cfg.sample);
        let (t, n) = (Instant::now(), total(&rt));
        let mpps = (n - last_n) as f64 / (t - last_t).as_secs_f64() / 1e6;
        samples.push(mpps);
        progress(&format!(
            "{}: {} core{}: {:4.1}/{:.0} s  {:7.2} Mpps",
            p.name,
            cores,
            if cores == 1 { "" } else { "s" },
            start.elapsed().as_secs_f64(),
            cfg.seconds,
            mpps
        ));
        (last_t, last_n) = (t, n);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (pkts, cyc, rx) = (total(&rt) - first_n, cycles(&rt) - first_c, received(&rt) - first_rx);
    let utilisation = rt.stats().iter().map(|s| s.utilisation()).sum::<f64>() / cores as f64;
    rt.join()?;
    for (i, pool) in pools.iter().enumerate() {
        if pool.available() != pool.capacity() {
            return Err(Error::Config(format!(
                "bench lcore {i}: {} of {} mbufs did not come back to the pool",
                pool.capacity() - pool.available(),
                pool.capacity()
            )));
        }
    }
    let drops: u64 = specs.iter().map(|d| d()).sum();
    if drops > 0 {
        log::warn!("bench {}: {drops} packets dropped by stages", p.name);
    }
    let mpps = median(&mut samples.clone());
    let frame_bytes = match (&p.frames, &p.frame) {
        (Some(fs), _) => fs.first().map_or(64, |f| f.len()),
        (None, f) => f.as_ref().map_or(64, |f| f.len()),
    };
    let (gbps, cpb, rx_mpps) = if let Some(payload) = p.payload_per_rx {
        let bytes = rx as f64 * payload as f64;
        (Some(bytes * 8.0 / elapsed / 1e9), Some(cyc as f64 / bytes), Some(rx as f64 / elapsed / 1e6))
    } else if p.byte_metrics {
        let bytes = pkts as f64 * frame_bytes as f64;
        (Some(bytes * 8.0 / elapsed / 1e9), Some(cyc as f64 / bytes), None)
    } else {
        (None, None, None)
    };
    Ok(ScalingPoint {
        pipeline: p.name.to_string(),
        cores,
        mpps,
        mpps_per_core: mpps / cores as f64,
        efficiency: None,
        burst: cfg.burst,
        seconds: elapsed,
        samples,
        utilisation,
        frame_bytes,
        gbps,
        cycles_per_byte: cpb,
        rx_mpps,
    })
}

/// Runs `p` on every core count of `cfg` and fills in the efficiencies.
pub fn run(p: &BenchPipeline, cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Vec<ScalingPoint>, Error> {
    let mut pts = Vec::new();
    for &k in &cfg.core_counts {
        pts.push(run_point(p, k, cfg, progress)?);
    }
    if let Some(one) = pts.iter().find(|p| p.cores == 1).map(|p| p.mpps) {
        for pt in pts.iter_mut() {
            pt.efficiency = (one > 0.0).then(|| pt.mpps / (pt.cores as f64 * one));
        }
    }
    Ok(pts)
}

/// An SVG line chart of Mpps against cores, one line per pipeline, with ideal linear scaling
/// from the 1-core point dashed.
pub fn svg_plot(points: &[ScalingPoint], title: &str) -> String {
    let (w, h, ml, mr, mt, mb) = (720.0, 440.0, 70.0, 170.0, 40.0, 50.0);
    let max_c = points.iter().map(|p| p.cores).max().unwrap_or(1).max(1) as f64;
    let mut max_y = points.iter().map(|p| p.mpps).fold(0.0f64, f64::max);
    for p in points.iter().filter(|p| p.cores == 1) {
        max_y = max_y.max(p.mpps * max_c);
    }
    let max_y = nice_ceil(max_y.max(1.0));
    let x = |c: f64| ml + if max_c <= 1.0 { (w - ml - mr) / 2.0 } else { (c - 1.0) / (max_c - 1.0) * (w - ml - mr) };
    let y = |v: f64| h - mb - v / max_y * (h - mt - mb);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        (ml + w - mr) / 2.0,
        xml_escape(title)
    );
    for i in 0..=5 {
        let v = max_y * i as f64 / 5.0;
        s += &format!(
            "<line x1=\"{ml}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
            w - mr,
            ml - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    for c in 1..=max_c as usize {
        s += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n", x(c as f64), h - mb + 18.0);
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">cores</text>\n<text x=\"18\" y=\"{:.1}\" transform=\"rotate(-90 18 {:.1})\" text-anchor=\"middle\">Mpps</text>\n",
        (ml + w - mr) / 2.0,
        h - 12.0,
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0
    );
    let mut names: Vec<&str> = points.iter().map(|p| p.pipeline.as_str()).collect();
    names.dedup();
    for (i, name) in names.iter().enumerate() {
        let col = colors[i % colors.len()];
        let mut pts: Vec<&ScalingPoint> = points.iter().filter(|p| p.pipeline == *name).collect();
        pts.sort_by_key(|p| p.cores);
        let path: Vec<String> = pts.iter().map(|p| format!("{:.1},{:.1}", x(p.cores as f64), y(p.mpps))).collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>\n", path.join(" "));
        for p in &pts {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{col}\"/>\n",
                x(p.cores as f64),
                y(p.mpps)
            );
        }
        if let Some(one) = pts.iter().find(|p| p.cores == 1) {
            s += &format!(
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{col}\" stroke-dasharray=\"4 4\" opacity=\"0.6\"/>\n",
                x(1.0),
                y(one.mpps),
                x(max_c),
                y(one.mpps * max_c)
            );
        }
        let ly = mt + 10.0 + i as f64 * 20.0;
        s += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            w - mr + 12.0,
            w - mr + 36.0,
            w - mr + 42.0,
            ly + 4.0,
            xml_escape(name)
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" fill=\"#666\">dashed: linear scaling</text>\n</svg>\n",
        w - mr + 12.0,
        mt + 10.0 + names.len() as f64 * 20.0 + 8.0
    );
    s
}

fn nice_ceil(v: f64) -> f64 {
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_frame_has_valid_ipv4_checksum() {
        let f = example_frame(64);
        let mut sum = 0u32;
        for c in f[14..34].chunks(2) {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(f.len(), 64);
    }

    #[test]
    fn median_of_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn svg_has_a_line_per_pipeline() {
        let pt = |name: &str, c, m| ScalingPoint {
            pipeline: name.into(),
            cores: c,
            mpps: m,
            mpps_per_core: m / c as f64,
            efficiency: None,
            burst: 32,
            seconds: 1.0,
            samples: vec![m],
            utilisation: 1.0,
            frame_bytes: 64,
            gbps: None,
            cycles_per_byte: None,
            rx_mpps: None,
        };
        let svg =
            svg_plot(&[pt("io", 1, 40.0), pt("io", 2, 78.0), pt("macswap", 1, 30.0), pt("macswap", 2, 59.0)], "t");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
