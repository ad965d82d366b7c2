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
//! - [`switch`]: the vswitch data path (FDB, learning, flooding, VTEP) as a per-lcore processor.
//!
//! A stage of one's own next to the library's, run as a pipeline over a burst:
//!
//! ```
//! use std::sync::Arc;
//! use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
//! use fastpath_pipeline::{filter, make_stage, BuildEnv, Pipeline, Stage, StageCounters};
//! use fastpath_pmd::Ctx;
//!
//! /// Drops frames shorter than 60 bytes, counted under "runt"; sends the rest to port 1.
//! struct MinLength(Arc<StageCounters>);
//!
//! impl Stage for MinLength {
//!     fn name(&self) -> &'static str { "min-length" }
//!     fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
//!         filter(batch, ctx, &self.0, |m| {
//!             if m.pkt_len() < 60 { return Err(0) }
//!             m.set_out_port(1);
//!             Ok(())
//!         });
//!     }
//!     fn counters(&self) -> &Arc<StageCounters> { &self.0 }
//! }
//!
//! let pool = Mempool::new("example", &PoolConfig { mbufs: 256, chunk_size: 2048, pages: PagePolicy::Small })?;
//! let env = BuildEnv { pool: pool.clone(), ports: vec![] };
//! let mine = Box::new(MinLength(StageCounters::new("min-length", &["runt"])));
//! let mut pipeline = Pipeline::new(vec![mine, make_stage("macswap", &env)?]);
//! let mut ctx = Ctx::new(0, &pool);
//! let mut batch = Batch::new();
//! for len in [42, 64, 128] {
//!     let mut m = pool.alloc().unwrap();
//!     assert!(m.set_len(len));
//!     batch.push(m).unwrap();
//! }
//! pipeline.run(&mut batch, &mut ctx);
//! assert_eq!(batch.len(), 2);
//! assert_eq!(pipeline.stages()[0].counters().drops(), vec![("runt", 1)]);
//! ctx.free_batch(&mut batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod builder;
pub mod checksum;
pub mod conntrack;
pub mod lpm;
pub mod parse;
pub mod stage;
pub mod stages;
pub mod switch;
pub mod wire;

pub use builder::{make_stage, BuildEnv, Pipeline, PipelineSpec, PipelineStats, StageSummary, STAGE_FORMS};
pub use stage::{filter, Stage, StageCounters};
