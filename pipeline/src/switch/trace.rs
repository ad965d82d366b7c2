//! Packet trace, as VPP's `trace add`: the next N packets received on one port, each with the
//! passes it crossed, the decision taken there and the cycles it cost.
//!
//! Off, it costs one relaxed atomic load per burst (`Tracer::armed`). Armed, the lcore claims
//! packets of the traced port from a shared budget (one compare-and-swap each, so that lcores
//! together take exactly N), notes their metadata after each pass in records made when the
//! processor was built (found again by their mbuf), and hands the finished records to the
//! control side through its own SPSC ring; a full ring loses the record (counted), never the
//! packet. Nothing is allocated on the lcore.
//!
//! The cycles of a pass are those of the whole burst's pass divided by the burst's packets (a
//! packet's share, as VPP's clocks per vector). Learning and forwarding run as one pass per
//! packet, so their cycles are given once, on the forward line.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrayvec::ArrayVec;
use fastpath_mempool::batch::MAX_BURST;
use fastpath_mempool::ring::spsc;
use fastpath_mempool::Batch;
use fastpath_pmd::time::rdtsc;

use crate::switch::fdb::{self, Fdb, Place};
use crate::switch::meta;
use crate::switch::stats::{reason, REASONS};
use crate::switch::topology::Topology;
use crate::switch::vtep::Vteps;

/// Records each lcore's ring holds for the control side.
pub const RING: usize = 1024;
/// The most packets one `trace add` takes (and the control side keeps).
pub const MAX_PACKETS: u32 = 1000;

/// The passes a record notes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Port role, segment, VLAN pop, decap, ARP / ND.
    Ingress = 0,
    /// Lookup, learning and forwarding of each packet.
    Forward = 1,
    /// Encap to a VTEP or tag for the uplink.
    Egress = 2,
    /// Replication.
    Flood = 3,
    /// The offloads the output port cannot do.
    TxOffload = 4,
}

const PASSES: usize = 5;

/// What a packet's metadata said after one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    /// The packet reached this pass.
    pub reached: bool,
    /// Its disposition ([`meta`]) after the pass.
    pub disposition: u8,
    /// Its destination id or drop reason.
    pub dest: u16,
    /// Its output port.
    pub out_port: u16,
    /// Its segment.
    pub segment: u16,
    /// Its share of the pass's cycles.
    pub cycles: u32,
}

/// One traced packet, as the lcore noted it.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The trace it belongs to (records of an earlier one may still come after a new one).
    pub trace: u16,
    /// The lcore (processor index) that handled it.
    pub lcore: u16,
    /// Its input port.
    pub port: u16,
    /// Its length as received.
    pub len: u32,
    /// Its first 14 bytes as received (MACs and EtherType).
    pub head: [u8; 14],
    /// Packets in its burst.
    pub burst: u16,
    /// Its source MAC's entry in the FDB before learning.
    pub src: Option<Place>,
    /// Its destination MAC's entry (None: a miss, or not unicast).
    pub dst: Option<Place>,
    /// Its destination MAC is unicast.
    pub unicast: bool,
    /// By [`Pass`].
    pub marks: [Mark; PASSES],
    mbuf: usize,
    done: bool,
}

/// The trace's switch, shared by the control side and the lcores: the trace's number in the top
/// 16 bits, the port in the next 16, the packets still to take in the low half (0: off).
#[derive(Debug, Default)]
pub struct Arm(AtomicU64);

impl Arm {
    /// Packets still to take.
    pub fn left(&self) -> u32 {
        self.0.load(Ordering::Relaxed) as u32
    }

    /// Takes the next `n` packets of `port` (0: stops) as trace number `trace`.
    pub fn set(&self, trace: u16, port: u16, n: u32) {
        self.0.store((trace as u64) << 48 | (port as u64) << 32 | n as u64, Ordering::Relaxed);
    }

    /// Claims one packet of `port`: the number of the trace it belongs to.
    fn claim(&self, port: u16) -> Option<u16> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v as u32 != 0 && (v >> 32) as u16 == port).then(|| v - 1)
            })
            .ok()
            .map(|v| (v >> 48) as u16)
    }
}

/// One lcore's tracer.
pub(crate) struct Tracer {
    arm: Arc<Arm>,
    ring: spsc::Producer<Record>,
    lost: Arc<AtomicU64>,
    lcore: u16,
    open: Box<ArrayVec<Record, MAX_BURST>>,
    t: u64,
    burst: u64,
}

impl Tracer {
    pub(crate) fn new(arm: Arc<Arm>, ring: spsc::Producer<Record>, lost: Arc<AtomicU64>, lcore: u16) -> Tracer {
        Tracer { arm, ring, lost, lcore, open: Box::default(), t: 0, burst: 1 }
    }

    /// Whether a trace runs: one relaxed load.
    #[inline(always)]
    pub(crate) fn armed(&self) -> bool {
        self.arm.left() != 0
    }

    /// Claims the packets of `batch` to trace; true when there is any.
    #[cold]
    pub(crate) fn begin(&mut self, batch: &Batch) -> bool {
        self.open.clear();
        for m in batch.iter() {
            let Some(trace) = self.arm.claim(m.port()) else {
                continue;
            };
            let d = m.data();
            let mut head = [0u8; 14];
            let n = d.len().min(14);
            head[..n].copy_from_slice(&d[..n]);
            let _ = self.open.try_push(Record {
                trace,
                lcore: self.lcore,
                port: m.port(),
                len: m.pkt_len() as u32,
                head,
                burst: batch.len() as u16,
                src: None,
                dst: None,
                unicast: head[0] & 1 == 0,
                marks: [Mark::default(); PASSES],
                mbuf: m.as_ptr() as usize,
                done: false,
            });
        }
        self.t = rdtsc();
        self.burst = batch.len().max(1) as u64;
        !self.open.is_empty()
    }

    /// Notes the packets of `batch` after `pass` (`fdb`: look the MACs up, after ingress).
    #[cold]
    pub(crate) fn mark(&mut self, pass: Pass, batch: &Batch, fdb: Option<&Fdb>) {
        let now = rdtsc();
        let cycles = (now.wrapping_sub(self.t) / self.burst).min(u32::MAX as u64) as u32;
        self.t = now;
        for m in batch.iter() {
            let Some(r) = self.open.iter_mut().find(|r| !r.done && r.mbuf == m.as_ptr() as usize) else {
                continue;
            };
            let disposition = m.disposition();
            r.marks[pass as usize] = Mark {
                reached: true,
                disposition,
                dest: m.dest(),
                out_port: m.out_port(),
                segment: m.segment(),
                cycles,
            };
            if let Some(fdb) = fdb.filter(|_| disposition & meta::ACTION == meta::LEARN) {
                let (dst, src) = fdb::frame_keys(m.segment(), m.data());
                r.src = fdb.lookup(src).map(|h| h.place);
                r.unicast = dst & 0x0100_0000_0000 == 0;
                r.dst = if r.unicast { fdb.lookup(dst).map(|h| h.place) } else { None };
            }
            r.done = matches!(disposition & meta::ACTION, meta::DROP | meta::CONSUMED);
        }
    }

    /// After the flood pass: its cycles go to the flooded packets, which end there (their
    /// copies are not followed).
    #[cold]
    pub(crate) fn flooded(&mut self) {
        let now = rdtsc();
        let cycles = (now.wrapping_sub(self.t) / self.burst).min(u32::MAX as u64) as u32;
        self.t = now;
        for r in self.open.iter_mut().filter(|r| !r.done) {
            let f = r.marks[Pass::Forward as usize];
            if f.reached && f.disposition & meta::ACTION == meta::FLOOD {
                r.marks[Pass::Flood as usize] = Mark { reached: true, cycles, ..f };
                r.done = true;
            }
        }
    }

    /// Hands the burst's records to the control side.
    #[cold]
    pub(crate) fn end(&mut self) {
        for r in self.open.drain(..) {
            if self.ring.enqueue(r).is_err() {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One pass of a traced packet, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedPass {
    /// `ingress`, `learn`, `forward`, `egress`, `flood` or `tx-offload`.
    pub pass: &'static str,
    /// What was decided there.
    pub decision: String,
    /// The packet's share of the pass's cycles (none for `learn`: counted with `forward`).
    pub cycles: Option<u32>,
}

/// A traced packet, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedPacket {
    /// The lcore that switched it.
    pub lcore: u16,
    /// Its input port's name.
    pub port: String,
    /// Its length as received.
    pub len: u32,
    /// Its MACs and EtherType.
    pub summary: String,
    /// The passes it crossed.
    pub passes: Vec<TracedPass>,
}

fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Names for a record's ids.
pub(crate) struct Names<'a> {
    pub(crate) topo: &'a Topology,
    pub(crate) vteps: &'a Vteps,
}

impl Names<'_> {
    fn port(&self, id: u16) -> String {
        self.topo.ports.get(id as usize).map_or_else(|| format!("port {id}"), |p| p.name.clone())
    }

    fn vtep(&self, id: u16) -> String {
        self.vteps.addr(id).map_or_else(|| format!("vtep {id}"), |a: IpAddr| format!("vtep {a}"))
    }

    fn place(&self, p: Place) -> String {
        if p.is_remote() {
            self.vtep(p.id())
        } else {
            self.port(p.id())
        }
    }

    fn reason(code: u16) -> String {
        format!("drop: {}", REASONS.get(code as usize).copied().unwrap_or("?"))
    }

    fn bridge(&self, seg: u16) -> String {
        let s = self.topo.segments.get(seg as usize);
        let b = s.and_then(|s| self.topo.bridges.get(s.bridge as usize)).map_or("?", |b| b.name.as_str());
        match s.and_then(|s| s.access_vlan) {
            Some(v) => format!("bridge {b} vlan {v}"),
            None => format!("bridge {b}"),
        }
    }

    /// The record `r` in words.
    pub(crate) fn describe(&self, r: &Record) -> TracedPacket {
        let mut passes = Vec::new();
        let at = |pass, decision: String, m: &Mark| TracedPass { pass, decision, cycles: Some(m.cycles) };
        let ing = &r.marks[Pass::Ingress as usize];
        let origin = ing.disposition & meta::ORIGIN;
        let d = match ing.disposition & meta::ACTION {
            meta::DROP => Names::reason(ing.dest),
            meta::CONSUMED => "consumed: a neighbour update".into(),
            meta::DONE => format!("answered: ARP / ND reply to {}", self.port(ing.out_port)),
            _ => {
                let from = match origin {
                    meta::FROM_TUNNEL => "out of a tunnel",
                    meta::FROM_VLAN => "from the uplink's VLAN",
                    _ => "from an access port",
                };
                format!("{} {from}", self.bridge(ing.segment))
            }
        };
        passes.push(at("ingress", d, ing));
        let fwd = r.marks[Pass::Forward as usize];
        if fwd.reached && ing.disposition & meta::ACTION == meta::LEARN {
            let bad_src = fwd.disposition & meta::ACTION == meta::DROP && fwd.dest == reason::BAD_SRC_MAC as u16;
            let learn = match r.src {
                _ if bad_src => Names::reason(fwd.dest),
                Some(p) if !p.is_remote() && p.id() == r.port => format!("source known on {}", self.place(p)),
                Some(p) if origin == meta::FROM_TUNNEL => format!("source known on {}", self.place(p)),
                Some(p) => format!("source known on {}: moved here (event to the control side)", self.place(p)),
                None => "source unknown: learned (event to the control side)".into(),
            };
            passes.push(TracedPass { pass: "learn", decision: learn, cycles: None });
            if !bad_src {
                let hit =
                    |p: Option<Place>| p.map_or_else(|| "fdb hit".into(), |p| format!("fdb hit on {}", self.place(p)));
                let d = match fwd.disposition & meta::ACTION {
                    meta::FORWARD => format!("fdb hit: to {}", self.port(fwd.out_port)),
                    meta::TO_UPLINK => "fdb hit: to the uplink".into(),
                    meta::TO_VTEP => format!("fdb hit: to {}", self.vtep(fwd.dest)),
                    meta::FLOOD if r.unicast => "fdb miss: flood".into(),
                    meta::FLOOD if r.head[..6] == [0xff; 6] => "broadcast: flood".into(),
                    meta::FLOOD => "multicast: flood".into(),
                    meta::DROP => format!("{}: {}", hit(r.dst), Names::reason(fwd.dest)),
                    a => format!("action {a}"),
                };
                passes.push(at("forward", d, &fwd));
            }
        }
        let eg = &r.marks[Pass::Egress as usize];
        if eg.reached && matches!(fwd.disposition & meta::ACTION, meta::TO_VTEP | meta::TO_UPLINK) {
            let seg = self.topo.segments.get(eg.segment as usize);
            let d = match (eg.disposition & meta::ACTION, fwd.disposition & meta::ACTION) {
                (meta::DROP, _) => Names::reason(eg.dest),
                (_, meta::TO_VTEP) => {
                    let kind = seg.and_then(|s| s.class).and_then(|c| self.topo.classes.get(c as usize));
                    let vni = seg.and_then(|s| s.vni).map_or(String::new(), |v| format!(" vni {v}"));
                    format!("encap {}{vni} to {}", kind.map_or("?", |k| k.kind.name()), self.vtep(fwd.dest))
                }
                _ => match seg.and_then(|s| s.uplink_tag) {
                    Some(t) => format!("tagged vlan {t} for the uplink"),
                    None => "for the uplink".into(),
                },
            };
            passes.push(at("egress", d, eg));
        }
        let fl = &r.marks[Pass::Flood as usize];
        if fl.reached {
            passes.push(at("flood", format!("copies to {}", self.flood_list(r, fl)), fl));
        }
        let tx = &r.marks[Pass::TxOffload as usize];
        if tx.reached && !matches!(tx.disposition & meta::ACTION, meta::DROP | meta::CONSUMED) {
            let out = self.port(tx.out_port);
            passes.push(at("tx-offload", format!("out on {out}"), tx));
        }
        let ethertype = u16::from_be_bytes([r.head[12], r.head[13]]);
        TracedPacket {
            lcore: r.lcore,
            port: self.port(r.port),
            len: r.len,
            summary: format!("{} > {} type 0x{ethertype:04x}", mac(&r.head[6..12]), mac(&r.head[..6])),
            passes,
        }
    }

    /// The destinations a flood of `r` (after forward: `m`) copies to, as flood.rs picks them.
    fn flood_list(&self, r: &Record, m: &Mark) -> String {
        let Some(seg) = self.topo.segments.get(m.segment as usize) else { return "?".into() };
        let origin = m.disposition & meta::ORIGIN;
        let mut v = Vec::new();
        if origin != meta::FROM_TUNNEL {
            v.extend(seg.remotes.iter().map(|&id| self.vtep(id)));
        }
        if let Some(t) = seg.uplink_tag.filter(|_| origin != meta::FROM_VLAN) {
            v.push(format!("the uplink vlan {t}"));
        }
        v.extend(seg.ports.iter().filter(|&&p| !(origin == meta::FROM_ACCESS && p == r.port)).map(|&p| self.port(p)));
        if v.is_empty() {
            "nobody".into()
        } else {
            v.join(", ")
        }
    }
}
