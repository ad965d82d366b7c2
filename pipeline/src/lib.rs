//! fastpath's packet processing: wire formats, stages and the pipeline builder.
//!
//! A [`Stage`] takes a whole [`fastpath_mempool::Batch`]; each mbuf that stays carries its
//! output port, each dropped one is freed and counted under a reason ([`StageCounters`]). A
//! [`Pipeline`] runs stages in order and is the [`fastpath_pmd::Processor`] of an lcore task.
//! Stages are named by specs (`NAME[,key=value]...`, see [`STAGE_FORMS`]).
#![deny(missing_docs)]

pub mod builder;
pub mod stage;
pub mod stages;

pub use builder::{make_stage, BuildEnv, Pipeline, PipelineSpec, PipelineStats, StageSummary, STAGE_FORMS};
pub use stage::{filter, Stage, StageCounters};
