//! `fastpath ctl capture PORT rx|tx|both FILE [count=N]`: a live pcap of a port, like
//! dpdk-pdump. Every rx and tx queue of every port is wrapped at start in a tap that costs one
//! relaxed load per burst while nobody captures. While a capture runs, the lcore copies each
//! frame of the burst (and the time) into an SPSC ring of its own; the control thread drains the
//! rings into the file. A full ring drops the copy, never the packet, and counts it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrayvec::ArrayVec;
use fastpath_mempool::ring::spsc;
use fastpath_mempool::{Batch, Mbuf};
use fastpath_pmd::{Ctx, QueueStats, RxQueue, TxQueue};
use serde_json::{json, Value};

/// Copies a tap's ring holds.
const RING: usize = 4096;
/// Bytes of a frame kept (pcap snaplen).
const SNAPLEN: usize = 65535;

/// A copied frame: (microseconds since the epoch, original length, bytes up to the snaplen).
type Copy = (u64, u32, Vec<u8>);

/// What a tap shares with the control thread.
#[derive(Debug, Default)]
struct Switch {
    /// Copy the frames of each burst. Relaxed: a burst or two more or less at the edges of a
    /// capture is fine, and the ring it fills exists from the start.
    on: AtomicBool,
    /// Copies dropped because the ring was full.
    missed: AtomicU64,
}

/// The lcore's end of one tapped queue.
struct Tap {
    switch: Arc<Switch>,
    ring: spsc::Producer<Copy>,
}

impl Tap {
    fn push(&mut self, c: Copy) {
        if self.ring.enqueue(c).is_err() {
            self.switch.missed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// A copy of `m` (all its segments, up to the snaplen) stamped `now`.
fn copy_of(m: &Mbuf, now: u64) -> Copy {
    let mut v = Vec::with_capacity(m.pkt_len().min(SNAPLEN));
    for s in m.segments() {
        let room = SNAPLEN - v.len();
        v.extend_from_slice(&s[..s.len().min(room)]);
    }
    (now, m.pkt_len() as u32, v)
}

struct TapRx {
    inner: Box<dyn RxQueue>,
    tap: Tap,
}

impl RxQueue for TapRx {
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        let before = batch.len();
        let n = self.inner.rx_burst(ctx, batch, max);
        if n > 0 && self.tap.switch.on.load(Ordering::Relaxed) {
            let now = now_us();
            for m in &batch[before..] {
                self.tap.push(copy_of(m, now));
            }
        }
        n
    }

    fn stats(&self) -> &QueueStats {
        self.inner.stats()
    }

    fn port_id(&self) -> u16 {
        self.inner.port_id()
    }

    fn queue_id(&self) -> u16 {
        self.inner.queue_id()
    }
}

struct TapTx {
    inner: Box<dyn TxQueue>,
    tap: Tap,
    /// Copies of the burst being sent, kept for the frames the queue takes.
    pending: Vec<Copy>,
}

impl TxQueue for TapTx {
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        if batch.is_empty() || !self.tap.switch.on.load(Ordering::Relaxed) {
            return self.inner.tx_burst(ctx, batch);
        }
        // Copied before sending (what the port takes is its own after), kept for what it took.
        let now = now_us();
        self.pending.extend(batch.iter().map(|m| copy_of(m, now)));
        let n = self.inner.tx_burst(ctx, batch);
        let mut copies = std::mem::take(&mut self.pending);
        for c in copies.drain(..).take(n) {
            self.tap.push(c);
        }
        copies.clear();
        self.pending = copies;
        n
    }

    fn flush(&mut self, ctx: &mut Ctx) {
        self.inner.flush(ctx);
    }

    fn stats(&self) -> &QueueStats {
        self.inner.stats()
    }

    fn dropped(&mut self, n: u64) {
        self.inner.dropped(n);
    }
}

/// The control thread's end of one tapped queue.
type Reader = (Arc<Switch>, spsc::Consumer<Copy>);

/// A direction of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Rx,
    Tx,
    Both,
}

struct Capture {
    port: u16,
    dir: Dir,
    path: PathBuf,
    file: BufWriter<File>,
    count: Option<u64>,
    written: u64,
    missed_at_start: u64,
}

/// Every tap, by port, and the captures running.
#[derive(Default)]
pub struct Captures {
    rx: Vec<Vec<Reader>>,
    tx: Vec<Vec<Reader>>,
    active: Vec<Capture>,
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captures").field("active", &self.active.len()).finish()
    }
}

fn slot(v: &mut Vec<Vec<Reader>>, port: u16) -> &mut Vec<Reader> {
    if v.len() <= port as usize {
        v.resize_with(port as usize + 1, Vec::new);
    }
    &mut v[port as usize]
}

/// The readers of `port` in direction `dir`.
fn readers<'a>(
    rx: &'a mut [Vec<Reader>],
    tx: &'a mut [Vec<Reader>],
    port: u16,
    dir: Dir,
) -> impl Iterator<Item = &'a mut Reader> {
    let rx = rx.get_mut(port as usize).filter(|_| dir != Dir::Tx);
    let tx = tx.get_mut(port as usize).filter(|_| dir != Dir::Rx);
    rx.into_iter().flatten().chain(tx.into_iter().flatten())
}

fn tap(readers: &mut Vec<Reader>) -> Tap {
    let switch = Arc::new(Switch::default());
    let (ring, r) = spsc::channel(RING);
    readers.push((switch.clone(), r));
    Tap { switch, ring }
}

impl Captures {
    /// Taps receive queue `q` (of the port it names).
    pub fn wrap_rx(&mut self, q: Box<dyn RxQueue>) -> Box<dyn RxQueue> {
        let tap = tap(slot(&mut self.rx, q.port_id()));
        Box::new(TapRx { inner: q, tap })
    }

    /// Taps transmit queue `q` of port `port`.
    pub fn wrap_tx(&mut self, port: u16, q: Box<dyn TxQueue>) -> Box<dyn TxQueue> {
        let tap = tap(slot(&mut self.tx, port));
        Box::new(TapTx { inner: q, tap, pending: Vec::new() })
    }

    /// Forgets port `port` (taken out of the switch): ends its capture, if one runs, and drops
    /// the taps of its queues, so that a port plugged later with its id starts afresh.
    pub fn forget(&mut self, port: u16) -> Option<Value> {
        let done = self.active.iter().position(|c| c.port == port).map(|i| {
            self.drain(i);
            self.finish(i)
        });
        for v in [&mut self.rx, &mut self.tx] {
            if let Some(r) = v.get_mut(port as usize) {
                r.clear();
            }
        }
        done
    }

    /// Starts capturing `dir` (`rx`, `tx` or `both`) of port `port` (named `name`) into `file`
    /// (an absolute path), `count` frames at most.
    pub fn start(&mut self, port: u16, name: &str, dir: &str, file: &str, count: Option<u64>) -> Result<Value, String> {
        let dir = match dir {
            "rx" => Dir::Rx,
            "tx" => Dir::Tx,
            "both" => Dir::Both,
            _ => return Err(format!("capture direction '{dir}': give rx, tx or both")),
        };
        if self.active.iter().any(|c| c.port == port) {
            return Err(format!("port '{name}' is being captured already: capture stop {name} first"));
        }
        let path = PathBuf::from(file);
        if !path.is_absolute() {
            return Err(format!("{file}: give an absolute path (the switch writes it)"));
        }
        let mut f = BufWriter::new(File::create(&path).map_err(|e| format!("{file}: {e}"))?);
        pcap_header(&mut f).map_err(|e| format!("{file}: {e}"))?;
        let mut missed = 0;
        let mut buf: ArrayVec<Copy, 64> = ArrayVec::new();
        for (sw, r) in readers(&mut self.rx, &mut self.tx, port, dir) {
            // What a previous capture left in the ring is not this capture's.
            while r.dequeue_burst(&mut buf, 64) > 0 {
                buf.clear();
            }
            missed += sw.missed.load(Ordering::Relaxed);
            sw.on.store(true, Ordering::Relaxed);
        }
        self.active.push(Capture { port, dir, path, file: f, count, written: 0, missed_at_start: missed });
        Ok(json!({"port": name, "file": file, "direction": format!("{dir:?}").to_lowercase(), "count": count}))
    }

    /// Writes what the taps copied; ends the captures that have their count.
    pub fn poll(&mut self) {
        for i in (0..self.active.len()).rev() {
            if self.drain(i) {
                self.finish(i);
            }
        }
    }

    /// Moves the copies of capture `i` into its file; true when it has its count.
    fn drain(&mut self, i: usize) -> bool {
        let c = &mut self.active[i];
        let mut buf: ArrayVec<Copy, 64> = ArrayVec::new();
        let mut wrote = false;
        for (_, r) in readers(&mut self.rx, &mut self.tx, c.port, c.dir) {
            while c.count.is_none_or(|n| c.written < n) && r.dequeue_burst(&mut buf, 64) > 0 {
                for (t, len, bytes) in buf.drain(..) {
                    if c.count.is_none_or(|n| c.written < n) && pcap_record(&mut c.file, t, len, &bytes).is_ok() {
                        c.written += 1;
                        wrote = true;
                    }
                }
            }
        }
        if wrote {
            let _ = c.file.flush();
        }
        c.count.is_some_and(|n| c.written >= n)
    }

    fn finish(&mut self, i: usize) -> Value {
        let mut c = self.active.remove(i);
        let mut missed = 0;
        for (sw, _) in readers(&mut self.rx, &mut self.tx, c.port, c.dir) {
            sw.on.store(false, Ordering::Relaxed);
            missed += sw.missed.load(Ordering::Relaxed);
        }
        let _ = c.file.flush();
        log::info!("capture of port {} into {} ended: {} frames", c.port, c.path.display(), c.written);
        json!({"file": c.path.display().to_string(), "written": c.written, "missed": missed - c.missed_at_start})
    }

    /// Stops the capture of port `port` (named `name`), writing what was copied first.
    pub fn stop(&mut self, port: u16, name: &str) -> Result<Value, String> {
        let Some(i) = self.active.iter().position(|c| c.port == port) else {
            return Err(format!("port '{name}' is not being captured"));
        };
        self.drain(i);
        Ok(self.finish(i))
    }

    /// The captures running.
    pub fn list(&self, name: impl Fn(u16) -> String) -> Value {
        let v: Vec<Value> = self
            .active
            .iter()
            .map(|c| {
                json!({"port": name(c.port), "direction": format!("{:?}", c.dir).to_lowercase(),
                    "file": c.path.display().to_string(), "written": c.written, "count": c.count})
            })
            .collect();
        Value::Array(v)
    }
}

/// The pcap global header: microsecond timestamps, snaplen [`SNAPLEN`], Ethernet.
fn pcap_header(w: &mut impl Write) -> std::io::Result<()> {
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, SNAPLEN as u32, 1] {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

fn pcap_record(w: &mut impl Write, t_us: u64, len: u32, bytes: &[u8]) -> std::io::Result<()> {
    let secs = (t_us / 1_000_000) as u32;
    let us = (t_us % 1_000_000) as u32;
    for v in [secs, us, bytes.len() as u32, len] {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(bytes)
}
