//! Pipelines from stage specs.
//!
//! A [`PipelineSpec`] is parsed and checked once (every stage is built once, so that a bad spec
//! fails before anything starts); each lcore then builds its own [`Pipeline`] from it, because
//! stages keep per-lcore state. Counters of the instances are summed by [`PipelineStats`].
//!
//! Software offload is the fallback, never a surprise: when some port of the application lacks
//! a transmit offload that a packet may ask for (checksums, TSO/USO, outer checksums, tunnel
//! TSO), [`PipelineSpec::parse`] appends the `tx-offload` stage ([`txoffload`]) after the
//! stages given, unless the last one already is `tx-offload`. It does, for each packet, only
//! what the packet's output port cannot do itself, and costs one flag test for a packet that
//! asks for nothing. When every port can do everything (or no port is known) nothing is added.
//!
//! A stage may make more packets than it is given (`lso`, `tx-offload`): it hands the surplus
//! out through [`Stage::resume`]; [`Pipeline::resume`] runs the later stages over it, and the
//! runtime transmits each such batch (see [`fastpath_pmd::Processor::resume`]).

use std::fmt;
use std::sync::{Arc, Mutex};

use fastpath_mempool::{Batch, Mempool};
use fastpath_pmd::{Ctx, Error, Offloads, PortInfo, Processor, Spec};

use crate::stage::{Stage, StageCounters};
use crate::stages::{basic, checksum, gro, lso, ptype, tunnel, txoffload};

/// The stage forms, one per line (shown in errors and `--help`).
pub const STAGE_FORMS: &[&str] = &[
    "io",
    "macswap",
    "drop",
    tunnel::ENCAP_FORMS[0],
    tunnel::ENCAP_FORMS[1],
    tunnel::ENCAP_FORMS[2],
    tunnel::DECAP_FORMS[0],
    tunnel::DECAP_FORMS[1],
    tunnel::DECAP_FORMS[2],
    checksum::FORM,
    ptype::FORM,
    lso::FORM,
    gro::FORM,
    txoffload::FORM,
];

/// The transmit offloads a packet may ask of a port; a port lacking any of them gets the
/// `tx-offload` fallback.
pub const TX_OFFLOADS: Offloads = Offloads(
    Offloads::TX_IPV4_CKSUM.0
        | Offloads::TX_TCP_CKSUM.0
        | Offloads::TX_UDP_CKSUM.0
        | Offloads::TX_TCP_TSO.0
        | Offloads::TX_UDP_TSO.0
        | Offloads::TX_OUTER_IPV4_CKSUM.0
        | Offloads::TX_OUTER_UDP_CKSUM.0
        | Offloads::TX_VXLAN_TNL_TSO.0
        | Offloads::TX_GENEVE_TNL_TSO.0
        | Offloads::TX_GRE_TNL_TSO.0,
);

/// What stages may need to know when built.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    /// The pool mbufs come from.
    pub pool: Mempool,
    /// The ports of the application, by id.
    pub ports: Vec<PortInfo>,
}

/// Builds one stage from its spec.
pub fn make_stage(spec: &str, env: &BuildEnv) -> Result<Box<dyn Stage>, Error> {
    let mut s = Spec::parse_stage(spec)?.accepting(&STAGE_FORMS.join(" | "));
    let stage: Box<dyn Stage> = match s.name.as_str() {
        "io" => {
            s.finish(false)?;
            Box::new(basic::Io::new())
        }
        "macswap" => {
            s.finish(false)?;
            Box::new(basic::MacSwap::new())
        }
        "drop" => {
            s.finish(false)?;
            Box::new(basic::DropAll::new())
        }
        "vxlan-encap" | "geneve-encap" | "nvgre-encap" => {
            let kind = tunnel_kind(&s.name);
            s = s.accepting(tunnel::ENCAP_FORMS[kind as usize]);
            tunnel::encap_from_spec(kind, &mut s)?
        }
        "vxlan-decap" | "geneve-decap" | "nvgre-decap" => {
            let kind = tunnel_kind(&s.name);
            s = s.accepting(tunnel::DECAP_FORMS[kind as usize]);
            tunnel::decap_from_spec(kind, &mut s)?
        }
        "checksum" => {
            s = s.accepting(checksum::FORM);
            Box::new(checksum::ChecksumStage::from_spec(&mut s)?)
        }
        "ptype" => {
            s = s.accepting(ptype::FORM);
            Box::new(ptype::Ptype::from_spec(&mut s)?)
        }
        "lso" => {
            s = s.accepting(lso::FORM);
            Box::new(lso::from_spec(&mut s, &env.ports)?)
        }
        "gro" => {
            s = s.accepting(gro::FORM);
            Box::new(gro::Gro::from_spec(&mut s)?)
        }
        "tx-offload" => {
            s = s.accepting(txoffload::FORM);
            Box::new(txoffload::from_spec(&mut s, &env.ports)?)
        }
        other => return Err(s.error(&format!("unknown stage '{other}'"), None)),
    };
    Ok(stage)
}

fn tunnel_kind(name: &str) -> u8 {
    match name.split('-').next() {
        Some("vxlan") => tunnel::VXLAN,
        Some("geneve") => tunnel::GENEVE,
        _ => tunnel::NVGRE,
    }
}

/// True when some port lacks a transmit offload a packet may ask for.
pub fn needs_fallback(ports: &[PortInfo]) -> bool {
    ports.iter().any(|p| !p.offloads.contains(TX_OFFLOADS))
}

/// A checked list of stage specs.
#[derive(Debug, Clone, Default)]
pub struct PipelineSpec {
    stages: Vec<String>,
    stats: PipelineStats,
}

impl PipelineSpec {
    /// Parses and checks every stage spec (building each once), and appends `tx-offload` when
    /// some port lacks a transmit offload (see the module doc).
    pub fn parse(stages: &[String], env: &BuildEnv) -> Result<PipelineSpec, Error> {
        for s in stages {
            make_stage(s, env)?;
        }
        let mut stages = stages.to_vec();
        let last_is_fallback = stages.last().is_some_and(|s| s.trim() == txoffload::FORM);
        if needs_fallback(&env.ports) && !last_is_fallback {
            stages.push(txoffload::FORM.to_string());
        }
        let n = stages.len();
        Ok(PipelineSpec { stages, stats: PipelineStats::new(n) })
    }

    /// The stage specs, with the `tx-offload` fallback when it was appended.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Builds a pipeline instance (one per lcore task); its counters join [`PipelineSpec::stats`].
    pub fn build(&self, env: &BuildEnv) -> Result<Pipeline, Error> {
        let stages = self.stages.iter().map(|s| make_stage(s, env)).collect::<Result<Vec<_>, _>>()?;
        self.stats.register(&stages);
        Ok(Pipeline { stages })
    }

    /// Counters of every instance built so far, summed per stage position.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }
}

/// The counters of all instances of a pipeline spec.
#[derive(Clone, Default)]
pub struct PipelineStats {
    per_stage: Arc<Mutex<Vec<Vec<Arc<StageCounters>>>>>,
}

impl fmt::Debug for PipelineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.summary()).finish()
    }
}

/// Summed counters of one stage position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSummary {
    /// Stage name.
    pub stage: &'static str,
    /// Packets in.
    pub packets: u64,
    /// Drops by reason.
    pub drops: Vec<(&'static str, u64)>,
    /// The stage's own named counters (segments made, bytes copied, packets merged, ...).
    pub stats: Vec<(&'static str, u64)>,
}

impl PipelineStats {
    fn new(n: usize) -> PipelineStats {
        PipelineStats { per_stage: Arc::new(Mutex::new(vec![Vec::new(); n])) }
    }

    fn register(&self, stages: &[Box<dyn Stage>]) {
        let mut v = self.per_stage.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < stages.len() {
            v.resize(stages.len(), Vec::new());
        }
        for (i, s) in stages.iter().enumerate() {
            v[i].push(s.counters().clone());
        }
    }

    /// Per stage position: packets and drops by reason, summed over instances.
    pub fn summary(&self) -> Vec<StageSummary> {
        let v = self.per_stage.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .filter_map(|inst| {
                let first = inst.first()?;
                let mut drops: Vec<(&'static str, u64)> = first.drops().iter().map(|(r, _)| (*r, 0)).collect();
                let mut stats: Vec<(&'static str, u64)> = first.stats().iter().map(|(r, _)| (*r, 0)).collect();
                let mut packets = 0;
                for c in inst {
                    packets += c.packets.get();
                    for (slot, (_, n)) in drops.iter_mut().zip(c.drops()) {
                        slot.1 += n;
                    }
                    for (slot, (_, n)) in stats.iter_mut().zip(c.stats()) {
                        slot.1 += n;
                    }
                }
                Some(StageSummary { stage: first.stage, packets, drops, stats })
            })
            .collect()
    }

    /// All drops of all stages.
    pub fn total_drops(&self) -> u64 {
        self.summary().iter().flat_map(|s| s.drops.iter().map(|d| d.1)).sum()
    }
}

/// A built pipeline: stages run in order over each batch.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.stages.iter().map(|s| s.name())).finish()
    }
}

impl Pipeline {
    /// A pipeline of the given stages.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Pipeline {
        Pipeline { stages }
    }

    /// The stages.
    pub fn stages(&self) -> &[Box<dyn Stage>] {
        &self.stages
    }

    /// Runs every stage over the batch (stops early when it is empty). A stage that made more
    /// packets than fit holds the rest: call [`Pipeline::resume`] until it returns false.
    #[inline]
    pub fn run(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        Self::run_stages(&mut self.stages, batch, ctx);
    }

    #[inline]
    fn run_stages(stages: &mut [Box<dyn Stage>], batch: &mut Batch, ctx: &mut Ctx) {
        for s in stages.iter_mut() {
            if batch.is_empty() {
                return;
            }
            s.process(batch, ctx);
        }
    }

    /// Fills the empty `batch` with the next packets a stage holds, run through the stages after
    /// it; false when no stage holds anything. The last stage that holds something goes first,
    /// so that a stage never gets new input while it still holds output.
    #[inline]
    pub fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        for i in (0..self.stages.len()).rev() {
            if self.stages[i].resume(batch, ctx) {
                Self::run_stages(&mut self.stages[i + 1..], batch, ctx);
                return true;
            }
        }
        false
    }
}

impl Processor for Pipeline {
    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        self.run(batch, ctx)
    }

    #[inline]
    fn resume(&mut self, batch: &mut Batch, ctx: &mut Ctx) -> bool {
        Pipeline::resume(self, batch, ctx)
    }
}
