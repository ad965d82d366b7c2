//! Pipelines from stage specs.
//!
//! A [`PipelineSpec`] is parsed and checked once (every stage is built once, so that a bad spec
//! fails before anything starts); each lcore then builds its own [`Pipeline`] from it, because
//! stages keep per-lcore state. Counters of the instances are summed by [`PipelineStats`].

use std::fmt;
use std::sync::{Arc, Mutex};

use fastpath_mempool::{Batch, Mempool};
use fastpath_pmd::{Ctx, Error, PortInfo, Processor, Spec};

use crate::stage::{Stage, StageCounters};
use crate::stages::{basic, checksum, ptype, tunnel};

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
];

/// What stages may need to know when built.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    /// The pool mbufs come from.
    pub pool: Mempool,
    /// The ports of the application, by id.
    pub ports: Vec<PortInfo>,
}

/// Builds one stage from its spec.
pub fn make_stage(spec: &str, _env: &BuildEnv) -> Result<Box<dyn Stage>, Error> {
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

/// A checked list of stage specs.
#[derive(Debug, Clone, Default)]
pub struct PipelineSpec {
    stages: Vec<String>,
    stats: PipelineStats,
}

impl PipelineSpec {
    /// Parses and checks every stage spec (building each once).
    pub fn parse(stages: &[String], env: &BuildEnv) -> Result<PipelineSpec, Error> {
        for s in stages {
            make_stage(s, env)?;
        }
        Ok(PipelineSpec { stages: stages.to_vec(), stats: PipelineStats::new(stages.len()) })
    }

    /// The stage specs.
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
                let mut packets = 0;
                for c in inst {
                    packets += c.packets.get();
                    for (slot, (_, n)) in drops.iter_mut().zip(c.drops()) {
                        slot.1 += n;
                    }
                }
                Some(StageSummary { stage: first.stage, packets, drops })
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

    /// Runs every stage over the batch (stops early when it is empty).
    #[inline]
    pub fn run(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        for s in self.stages.iter_mut() {
            if batch.is_empty() {
                return;
            }
            s.process(batch, ctx);
        }
    }
}

impl Processor for Pipeline {
    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        self.run(batch, ctx)
    }
}
