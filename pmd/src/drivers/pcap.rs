//! `pcap`: receive frames from a pcap file and transmit frames to one.
//!
//! Classic libpcap format (microsecond or nanosecond magic, either byte order) with Ethernet
//! link type. Frames up to 262144 bytes (the snaplen written) are read into mbuf chains when
//! they exceed one mbuf. Receive ends when the file ends ([`Port::rx_exhausted`]); a truncated
//! or malformed record ends it too and is counted as an rx error. With `infinite_rx=on` (DPDK
//! net_pcap's option of that name) the file's frames are read into memory at open and received
//! over and over, each copied into a fresh mbuf: a traffic source for benchmarks.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fastpath_mempool::{Batch, Mbuf, Mempool};

use crate::ctx::Ctx;
use crate::port::{Offloads, Port, PortInfo, QueueSet, RxQueue, TxQueue};
use crate::spec::Spec;
use crate::stats::{PortStats, QueueStats};
use crate::Error;

/// The accepted form of a pcap port spec.
pub const FORM: &str = "pcap:rx=FILE[,tx=FILE][,infinite_rx=on] | pcap:tx=FILE";

/// Largest frame read or written.
pub const SNAPLEN: u32 = 262_144;
const LINKTYPE_ETHERNET: u32 = 1;

/// A pcap port.
#[derive(Debug)]
pub struct PcapPort {
    info: PortInfo,
    pool: Mempool,
    reader: Option<PcapReader<BufReader<File>>>,
    replay: Option<Arc<[Vec<u8>]>>,
    writer: Arc<Mutex<Option<PcapWriter<BufWriter<File>>>>>,
    exhausted: Arc<AtomicBool>,
    queues: QueueSet,
}

impl PcapPort {
    /// Opens `pcap:rx=FILE,tx=FILE`.
    pub fn from_spec(id: u16, spec: &mut Spec, pool: &Mempool) -> Result<PcapPort, Error> {
        let rx = spec.take_str("rx")?.map(PathBuf::from);
        let tx = spec.take_str("tx")?.map(PathBuf::from);
        let infinite = spec.take_bool("infinite_rx")?.unwrap_or(false);
        spec.finish(false)?;
        if rx.is_none() && tx.is_none() {
            return Err(spec.error("give rx=FILE, tx=FILE or both", None));
        }
        if infinite && rx.is_none() {
            return Err(spec.error("infinite_rx=on needs rx=FILE", None));
        }
        let mut port = PcapPort::open(id, &spec.raw, rx.as_deref(), tx.as_deref(), pool)?;
        if infinite {
            port.load_replay()?;
        }
        Ok(port)
    }

    /// Reads every frame of the rx file into memory, to be received over and over.
    fn load_replay(&mut self) -> Result<(), Error> {
        let Some(mut r) = self.reader.take() else { return Ok(()) };
        let bad = |what: String| Error::Config(format!("{}: infinite_rx=on: {what}", self.info.name));
        let mut frames = Vec::new();
        loop {
            match r.read_into(&mut || self.pool.alloc()) {
                Ok(Some(m)) if m.is_contiguous() => frames.push(m.data().to_vec()),
                Ok(Some(m)) => return Err(bad(format!("a frame of {} bytes does not fit one mbuf", m.pkt_len()))),
                Ok(None) => break,
                Err(RecordError::NoMbuf) => return Err(bad("the pool is empty".into())),
                Err(RecordError::Bad(e)) => return Err(bad(e)),
            }
        }
        if frames.is_empty() {
            return Err(bad("the file has no frame".into()));
        }
        self.replay = Some(frames.into());
        Ok(())
    }

    /// Opens a pcap port reading `rx` and writing `tx` (either may be absent).
    pub fn open(id: u16, name: &str, rx: Option<&Path>, tx: Option<&Path>, pool: &Mempool) -> Result<PcapPort, Error> {
        let reader = match rx {
            Some(p) => {
                let f = File::open(p).map_err(|e| Error::Io {
                    what: format!("open pcap file {}", p.display()),
                    err: e,
                    fix: "check the rx= path".into(),
                })?;
                Some(PcapReader::new(BufReader::with_capacity(1 << 20, f)).map_err(|e| {
                    Error::Io {
                        what: format!("read pcap file {}", p.display()),
                        err: e,
                        fix: "give a classic pcap file with Ethernet frames (not pcapng: convert with editcap -F pcap)"
                            .into(),
                    }
                })?)
            }
            None => None,
        };
        let writer = match tx {
            Some(p) => {
                let f = File::create(p).map_err(|e| Error::Io {
                    what: format!("create pcap file {}", p.display()),
                    err: e,
                    fix: "check that the tx= directory exists and is writable".into(),
                })?;
                Some(PcapWriter::new(BufWriter::with_capacity(1 << 20, f)).map_err(|e| Error::Io {
                    what: format!("write pcap file {}", p.display()),
                    err: e,
                    fix: "check free disk space".into(),
                })?)
            }
            None => None,
        };
        let exhausted = Arc::new(AtomicBool::new(reader.is_none()));
        Ok(PcapPort {
            info: PortInfo {
                id,
                driver: "pcap",
                name: name.to_string(),
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::TX_MULTI_SEGS,
                live: None,
                max_frame: SNAPLEN,
                mac: None,
            },
            pool: pool.clone(),
            reader,
            replay: None,
            writer: Arc::new(Mutex::new(writer)),
            exhausted,
            queues: QueueSet::new(name, 1, 1),
        })
    }
}

impl Port for PcapPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_queue(&mut self, q: u16) -> Result<Box<dyn RxQueue>, Error> {
        let stats = self.queues.take_rx(q)?;
        Ok(Box::new(PcapRx {
            reader: self.reader.take(),
            replay: self.replay.take().map(|f| (f, 0)),
            pool: self.pool.clone(),
            port: self.info.id,
            exhausted: self.exhausted.clone(),
            stats,
        }))
    }

    fn tx_queue(&mut self, q: u16) -> Result<Box<dyn TxQueue>, Error> {
        let stats = self.queues.take_tx(q)?;
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(Box::new(PcapTx { writer, stats }))
    }

    fn stats(&self) -> PortStats {
        self.queues.stats()
    }

    fn rx_exhausted(&self) -> bool {
        // Acquire: pairs with the rx queue's Release store; everything it received before is
        // counted.
        self.exhausted.load(Ordering::Acquire)
    }
}

/// Receive side of a pcap port.
#[derive(Debug)]
pub struct PcapRx {
    reader: Option<PcapReader<BufReader<File>>>,
    /// infinite_rx: the frames and the next one.
    replay: Option<(Arc<[Vec<u8>]>, usize)>,
    pool: Mempool,
    port: u16,
    exhausted: Arc<AtomicBool>,
    stats: Arc<QueueStats>,
}

impl PcapRx {
    fn end(&mut self) {
        self.reader = None;
        // Release: the counters updated before are visible to whoever sees the flag.
        self.exhausted.store(true, Ordering::Release);
    }
}

impl RxQueue for PcapRx {
    fn rx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch, max: usize) -> usize {
        if let Some((frames, next)) = self.replay.as_mut() {
            let cache = ctx.cache(&self.pool);
            let (mut n, mut bytes) = (0, 0);
            while n < max && batch.remaining_capacity() > 0 {
                let Some(mut m) = cache.alloc() else {
                    self.stats.drops.inc();
                    break;
                };
                let f = &frames[*next];
                *next = if *next + 1 == frames.len() { 0 } else { *next + 1 };
                // Every frame fit one mbuf when it was loaded.
                if let Some(d) = m.append(f.len()) {
                    d.copy_from_slice(f);
                }
                m.set_port(self.port);
                bytes += f.len() as u64;
                // Room was checked in the loop condition.
                let _ = batch.push(m);
                n += 1;
            }
            self.stats.packets.add(n as u64);
            self.stats.bytes.add(bytes);
            return n;
        }
        let Some(reader) = self.reader.as_mut() else { return 0 };
        let cache = ctx.cache(&self.pool);
        let mut n = 0;
        let mut bytes = 0;
        while n < max && batch.remaining_capacity() > 0 {
            match reader.read_into(&mut || cache.alloc()) {
                Ok(Some(mut m)) => {
                    m.set_port(self.port);
                    bytes += m.pkt_len() as u64;
                    // Room was checked in the loop condition.
                    let _ = batch.push(m);
                    n += 1;
                }
                Ok(None) => {
                    self.stats.packets.add(n as u64);
                    self.stats.bytes.add(bytes);
                    self.end();
                    return n;
                }
                Err(RecordError::NoMbuf) => {
                    self.stats.drops.inc();
                    break;
                }
                Err(RecordError::Bad(e)) => {
                    log::warn!("pcap rx: {e}; stopping at this record");
                    self.stats.errors.inc();
                    self.stats.packets.add(n as u64);
                    self.stats.bytes.add(bytes);
                    self.end();
                    return n;
                }
            }
        }
        self.stats.packets.add(n as u64);
        self.stats.bytes.add(bytes);
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }

    fn port_id(&self) -> u16 {
        self.port
    }
}

/// Transmit side of a pcap port (frees and counts as drops when no file was given).
#[derive(Debug)]
pub struct PcapTx {
    writer: Option<PcapWriter<BufWriter<File>>>,
    stats: Arc<QueueStats>,
}

impl TxQueue for PcapTx {
    fn tx_burst(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> usize {
        let Some(w) = self.writer.as_mut() else {
            self.stats.drops.add(batch.len() as u64);
            ctx.free_batch(batch);
            return 0;
        };
        let mut sent = 0;
        let mut bytes = 0;
        for m in batch.iter() {
            if let Err(e) = w.write(m) {
                log::error!("pcap tx: {e}");
                self.stats.errors.inc();
                break;
            }
            sent += 1;
            bytes += m.pkt_len() as u64;
        }
        // The written ones (the front) are done; unsent ones stay with the caller.
        let mut written = Batch::new();
        for m in batch.drain_front(sent) {
            let _ = written.push(m);
        }
        ctx.free_batch(&mut written);
        self.stats.packets.add(sent as u64);
        self.stats.bytes.add(bytes);
        sent
    }

    fn flush(&mut self, _ctx: &mut Ctx) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flush() {
                log::error!("pcap tx: flush failed: {e}");
            }
        }
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

impl Drop for PcapTx {
    fn drop(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flush() {
                log::error!("pcap tx: flush failed: {e}");
            }
        }
    }
}

/// Why a record could not be read.
#[derive(Debug)]
pub enum RecordError {
    /// The pool had no mbuf; the record stays unread.
    NoMbuf,
    /// The file is malformed or unreadable.
    Bad(String),
}

/// Reads pcap records into mbufs.
#[derive(Debug)]
pub struct PcapReader<R> {
    r: R,
    swapped: bool,
    nanos: bool,
    pending: Option<[u8; 16]>,
}

impl<R: Read> PcapReader<R> {
    /// Checks the global header.
    pub fn new(mut r: R) -> std::io::Result<PcapReader<R>> {
        let mut h = [0u8; 24];
        r.read_exact(&mut h)?;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swapped, nanos) = match magic {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            _ => return Err(std::io::Error::new(ErrorKind::InvalidData, format!("bad pcap magic {magic:#010x}"))),
        };
        let rd = |o: usize| {
            let v = u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            if swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        if rd(20) & 0xffff != LINKTYPE_ETHERNET {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("link type {} is not Ethernet (1)", rd(20) & 0xffff),
            ));
        }
        Ok(PcapReader { r, swapped, nanos, pending: None })
    }

    fn u32_at(&self, h: &[u8; 16], o: usize) -> u32 {
        let v = u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// Reads the next record into an mbuf (a chain when it exceeds one); `Ok(None)` at the end.
    pub fn read_into(&mut self, alloc: &mut dyn FnMut() -> Option<Mbuf>) -> Result<Option<Mbuf>, RecordError> {
        let h = match self.pending.take() {
            Some(h) => h,
            None => {
                let mut h = [0u8; 16];
                match read_full(&mut self.r, &mut h) {
                    Ok(0) => return Ok(None),
                    Ok(16) => h,
                    Ok(n) => return Err(RecordError::Bad(format!("truncated record header ({n} of 16 bytes)"))),
                    Err(e) => return Err(RecordError::Bad(e.to_string())),
                }
            }
        };
        let incl = self.u32_at(&h, 8);
        if incl > SNAPLEN {
            return Err(RecordError::Bad(format!("record of {incl} bytes exceeds the snaplen {SNAPLEN}")));
        }
        let Some(mut head) = alloc() else {
            self.pending = Some(h);
            return Err(RecordError::NoMbuf);
        };
        let (sec, frac) = (self.u32_at(&h, 0) as u64, self.u32_at(&h, 4) as u64);
        head.set_timestamp(sec * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 });
        let mut left = incl as usize;
        let mut first = true;
        while left > 0 || first {
            let mut seg = if first {
                None
            } else {
                match alloc() {
                    Some(m) => Some(m),
                    None => {
                        // The record is half read; it cannot be resumed. Count it as lost.
                        drop(head);
                        return Err(RecordError::Bad("pool exhausted inside a large record".into()));
                    }
                }
            };
            let m = seg.as_mut().unwrap_or(&mut head);
            let room = m.tailroom();
            let n = left.min(room);
            let Some(dst) = m.append(n) else {
                return Err(RecordError::Bad("mbuf without room".into()));
            };
            match read_full(&mut self.r, dst) {
                Ok(k) if k == n => {}
                Ok(k) => return Err(RecordError::Bad(format!("truncated record ({k} of {n} bytes)"))),
                Err(e) => return Err(RecordError::Bad(e.to_string())),
            }
            left -= n;
            if let Some(s) = seg {
                if head.chain(s).is_err() {
                    return Err(RecordError::Bad("record needs too many segments".into()));
                }
            }
            first = false;
        }
        Ok(Some(head))
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes mbufs as pcap records.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (microsecond timestamps, snaplen 262144, Ethernet).
    pub fn new(mut w: W) -> std::io::Result<PcapWriter<W>> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Writes one packet (all its segments), stamped with the current time.
    pub fn write(&mut self, m: &Mbuf) -> std::io::Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let len = m.pkt_len().min(SNAPLEN as usize) as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(now.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&(m.pkt_len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        let mut left = len as usize;
        for s in m.segments() {
            let n = s.len().min(left);
            self.w.write_all(&s[..n])?;
            left -= n;
        }
        Ok(())
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
