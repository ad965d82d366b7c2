//! The generator and the analyzer of `fastpath pktgen`: frame template, TSC pacer, the generator
//! receive queue, the returning-frame analyzer and its latency histogram. No dependency on the
//! command line, so that benches can build it too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fastpath_mempool::{Batch, Mempool};
use fastpath_pmd::time::{rdtsc, tsc_hz};
use fastpath_pmd::{Counter, Ctx, Processor, QueueStats, RxQueue};

/// Bytes of headers in front of the payload.
const HDRS: usize = 14 + 20 + 8;
/// Offset of the signature in the frame.
const SIG_AT: usize = HDRS;
/// The signature's first two bytes.
const SIG: [u8; 2] = *b"FP";
/// Smallest frame: headers and the 16-byte payload stamp, padded to Ethernet's minimum.
pub const MIN_SIZE: usize = 60;

/// The frame template and what varies per frame.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// Frame length without FCS.
    pub size: usize,
    /// Flows (source ports 1024..1024+flows).
    pub flows: u32,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source IPv4.
    pub src_ip: [u8; 4],
    /// Destination IPv4.
    pub dst_ip: [u8; 4],
    /// Destination UDP port.
    pub dst_port: u16,
}

impl Default for FrameSpec {
    /// The command's defaults: 64-byte frames, one flow, 02:00:00:00:00:01 -> 02:00:00:00:00:02,
    /// 198.18.0.1 -> 198.18.0.2 (the benchmarking range), UDP port 9.
    fn default() -> FrameSpec {
        FrameSpec {
            size: 64,
            flows: 1,
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: [198, 18, 0, 1],
            dst_ip: [198, 18, 0, 2],
            dst_port: 9,
        }
    }
}

impl FrameSpec {
    /// The template: every byte of the frame but the flow, sequence and timestamp.
    pub fn template(&self) -> Vec<u8> {
        let mut f = vec![0u8; self.size];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip_len = (self.size - 14) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.src_ip);
        ip[16..20].copy_from_slice(&self.dst_ip);
        let mut s: u32 = 0;
        for w in ip.chunks(2) {
            s += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
        f[34..36].copy_from_slice(&1024u16.to_be_bytes());
        f[36..38].copy_from_slice(&self.dst_port.to_be_bytes());
        f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        f[SIG_AT..SIG_AT + 2].copy_from_slice(&SIG);
        f
    }
}

/// A token-bucket pacer on the TSC: how many frames are due now.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Frames per second (0: as fast as possible).
    rate: u64,
    hz: u64,
    t0: u64,
    sent: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second (0: unlimited) on a `hz` clock.
    pub fn new(rate: u64, hz: u64) -> Pacer {
        Pacer { rate, hz: hz.max(1), t0: 0, sent: 0 }
    }

    /// Frames that may go now (at most `burst`), counted as sent.
    #[inline]
    pub fn take(&mut self, now: u64, burst: usize) -> usize {
        if self.rate == 0 {
            return burst;
        }
        if self.t0 == 0 {
            self.t0 = now;
        }
        let due = (now.wrapping_sub(self.t0) as u128 * self.rate as u128 / self.hz as u128) as u64;
        let mut owed = due.saturating_sub(self.sent);
        // Behind (the core was taken away): catch up, a burst per call, so that the average rate
        // holds; but forget debt older than 100 ms rather than flood after a long stall.
        let cap = (self.rate / 10).max(4 * burst as u64);
        if owed > cap {
            self.sent = due - cap;
            owed = cap;
        }
        let n = owed.min(burst as u64) as usize;
        self.sent += n as u64;
        n
    }
}

/// The generator, seen by the runtime as a receive queue.
pub struct GenQueue {
    pool: Mempool,
    template: Vec<u8>,
    flows: u32,
    flow: u32,
    id: u16,
    seq: u32,
    pacer: Pacer,
    deadline: u64,
    stop: Arc<AtomicBool>,
    stats: Arc<QueueStats>,
}

impl std::fmt::Debug for GenQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenQueue").field("id", &self.id).field("seq", &self.seq).finish()
    }
}

impl GenQueue {
    /// Generator `id` making `spec` frames at `rate` pps (0: max) until `deadline` (TSC, 0:
    /// none) or `stop`.
    pub fn new(id: u16, pool: &Mempool, spec: &FrameSpec, rate: u64, deadline: u64, stop: Arc<AtomicBool>) -> GenQueue {
        GenQueue {
            pool: pool.clone(),
            template: spec.template(),
            flows: spec.flows.max(1),
            flow: 0,
            id,
            seq: 0,
            pacer: Pacer::new(rate, tsc_hz()),
            deadline,
            stop,
            stats: Arc::default(),
        }
    }

    /// Counters of generated frames.
    pub fn counters(&self) -> Arc<QueueStats> {
        self.stats.clone()
    }
}

impl RxQueue for GenQueue {
    #[inline]
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let now = rdtsc();
        // Relaxed: a stop request carrying no data.
        if (self.deadline != 0 && now >= self.deadline) || self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        let n = self.pacer.take(now, max.min(batch.remaining_capacity()));
        if n == 0 {
            return 0;
        }
        let start = batch.len();
        if !ctx.cache(&self.pool).alloc_bulk(batch, n) {
            self.stats.drops.add(n as u64);
            return 0;
        }
        let size = self.template.len();
        for m in &mut batch[start..] {
            let Some(d) = m.append(size) else { continue };
            d.copy_from_slice(&self.template);
            d[34..36].copy_from_slice(&(1024 + self.flow as u16).to_be_bytes());
            d[SIG_AT + 2..SIG_AT + 4].copy_from_slice(&self.id.to_be_bytes());
            d[SIG_AT + 4..SIG_AT + 8].copy_from_slice(&self.seq.to_be_bytes());
            self.seq = self.seq.wrapping_add(1);
            self.flow += 1;
            if self.flow == self.flows {
                self.flow = 0;
            }
        }
        // One stamp per burst, taken when the frames are ready to go.
        let ts = rdtsc().to_be_bytes();
        for m in &mut batch[start..] {
            m.data_mut()[SIG_AT + 8..SIG_AT + 16].copy_from_slice(&ts);
        }
        self.stats.packets.add(n as u64);
        self.stats.bytes.add((n * size) as u64);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

/// Latency buckets: exact below 64 ns, then 32 per power of two (about 3% wide).
/// Buckets of the histogram.
pub const BUCKETS: usize = (64 - 4) * 32;

/// The bucket of `v`.
#[inline(always)]
pub fn bucket(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    let mant = (v >> (e - 5)) as usize;
    (e - 4) * 32 + (mant - 32)
}

/// The smallest value in bucket `i`.
pub fn bucket_low(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let e = i / 32 + 4;
    let mant = (i % 32 + 32) as u64;
    mant << (e - 5)
}

/// What the analyzers count (one writer each; read after the run).
#[derive(Debug)]
pub struct AnalyzerStats {
    /// Frames carrying our signature.
    pub matched: Counter,
    /// Other frames.
    pub foreign: Counter,
    /// Frames whose sequence number was below one already seen from the same generator.
    pub out_of_order: Counter,
    /// Latency histogram (ns).
    pub hist: Box<[Counter]>,
    /// Sum of latencies (ns).
    pub sum_ns: Counter,
    /// Largest latency (ns).
    pub max_ns: Counter,
}

impl Default for AnalyzerStats {
    fn default() -> Self {
        AnalyzerStats {
            matched: Counter::new(),
            foreign: Counter::new(),
            out_of_order: Counter::new(),
            hist: (0..BUCKETS).map(|_| Counter::new()).collect(),
            sum_ns: Counter::new(),
            max_ns: Counter::new(),
        }
    }
}

/// Recognises returning frames, records their latency, frees everything.
pub struct Analyzer {
    stats: Arc<AnalyzerStats>,
    dst_port: u16,
    last_seq: [Option<u32>; 256],
    ns_mult: u64,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("dst_port", &self.dst_port).finish()
    }
}

impl Analyzer {
    /// An analyzer for frames sent to UDP port `dst_port`.
    pub fn new(dst_port: u16, stats: Arc<AnalyzerStats>) -> Analyzer {
        // ns = ticks * ns_mult >> 32
        let ns_mult = ((1_000_000_000u128 << 32) / tsc_hz().max(1) as u128) as u64;
        Analyzer { stats, dst_port, last_seq: [None; 256], ns_mult }
    }
}

impl Processor for Analyzer {
    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let now = rdtsc();
        let mut matched = 0;
        for m in batch.iter() {
            let d = m.data();
            if d.len() < SIG_AT + 16
                || d[12..14] != [0x08, 0x00]
                || d[23] != 17
                || u16::from_be_bytes([d[36], d[37]]) != self.dst_port
                || d[SIG_AT..SIG_AT + 2] != SIG
            {
                self.stats.foreign.inc();
                continue;
            }
            matched += 1;
            let g = u16::from_be_bytes([d[SIG_AT + 2], d[SIG_AT + 3]]) as usize & 0xff;
            let seq = u32::from_be_bytes([d[SIG_AT + 4], d[SIG_AT + 5], d[SIG_AT + 6], d[SIG_AT + 7]]);
            let mut t = [0u8; 8];
            t.copy_from_slice(&d[SIG_AT + 8..SIG_AT + 16]);
            let ts = u64::from_be_bytes(t);
            match self.last_seq[g] {
                Some(l) if (seq.wrapping_sub(l) as i32) < 0 => self.stats.out_of_order.inc(),
                _ => self.last_seq[g] = Some(seq),
            }
            let ns = ((now.saturating_sub(ts) as u128 * self.ns_mult as u128) >> 32) as u64;
            self.stats.hist[bucket(ns)].inc();
            self.stats.sum_ns.add(ns);
            if ns > self.stats.max_ns.get() {
                self.stats.max_ns.set(ns);
            }
        }
        self.stats.matched.add(matched);
        ctx.free_batch(batch);
    }
}

/// Latency percentiles from summed histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest (bucket low edge), ns.
    pub min: u64,
    /// Mean, ns.
    pub mean: f64,
    /// Median, ns.
    pub p50: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// 99.9th percentile, ns.
    pub p999: u64,
    /// Largest, ns.
    pub max: u64,
}

/// Summarises analyzer histograms.
pub fn latency(all: &[Arc<AnalyzerStats>]) -> Latency {
    let mut h = vec![0u64; BUCKETS];
    let (mut sum, mut max) = (0u64, 0u64);
    for a in all {
        for (x, c) in h.iter_mut().zip(a.hist.iter()) {
            *x += c.get();
        }
        sum += a.sum_ns.get();
        max = max.max(a.max_ns.get());
    }
    let count: u64 = h.iter().sum();
    if count == 0 {
        return Latency::default();
    }
    let pct = |p: f64| {
        let rank = ((p * count as f64).ceil() as u64).clamp(1, count);
        let mut acc = 0;
        for (i, &c) in h.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return bucket_low(i);
            }
        }
        max
    };
    let min = h.iter().position(|&c| c > 0).map_or(0, bucket_low);
    Latency { count, min, mean: sum as f64 / count as f64, p50: pct(0.5), p99: pct(0.99), p999: pct(0.999), max }
}
