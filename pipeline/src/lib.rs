//! fastpath's packet processing: wire formats, stages and the pipeline builder.
//!
//! A [`Stage`] takes a whole [`fastpath_mempool::Batch`]; each mbuf that stays carries its
//! output port, each dropped one is freed and counted under a reason ([`StageCounters`]). A
//! [`Pipeline`] runs stages in order and is the [`fastpath_pmd::Processor`] of an lcore task.
//! Stages are named by specs (`NAME[,key=value]...`, see [`STAGE_FORMS`]).
//!
//! - [`wire`]: zero-copy header views (Ethernet, VLAN, IPv4, IPv6, UDP, TCP, VXLAN, GENEVE, GRE).
//! - [`checksum`]: the Internet checksum, vectorised (AVX-512 / AVX2 / scalar, chosen at run time).
//! - [`parse`]: the packet-type parser that fills an mbuf's lengths and packet type.
//! - [`lpm`]: longest-prefix match for IPv4 and IPv6 routes, changed while lcores look up.
//! - [`stages`]: the stages, among them the tunnels ([`stages::tunnel`]) and the checksum stage.
#![deny(missing_docs)]

pub mod builder;
pub mod checksum;
pub mod lpm;
pub mod parse;
pub mod stage;
pub mod stages;
pub mod wire;

pub use builder::{make_stage, BuildEnv, Pipeline, PipelineSpec, PipelineStats, StageSummary, STAGE_FORMS};
pub use stage::{filter, Stage, StageCounters};
