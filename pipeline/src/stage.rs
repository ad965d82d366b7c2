//! The `Stage` trait and per-reason drop counters.

use std::fmt;
use std::sync::Arc;

use fastpath_mempool::{Batch, Mbuf};
use fastpath_pmd::{Counter, Ctx};

/// A pipeline stage: takes the whole batch. Each mbuf that stays in the batch goes on to the
/// next stage and finally to its `out_port`; a dropped mbuf is moved to `ctx.drops`, counted
/// under a reason, and freed (use [`filter`]). Stages never panic on packet contents and never
/// allocate on the fast path.
pub trait Stage: Send {
    /// The stage's name (as in its spec).
    fn name(&self) -> &'static str;

    /// Processes a batch.
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx);

    /// For stages that make more packets than they take (segmentation): a stage whose output
    /// does not fit the batch keeps the rest, in order, and hands it out here, into the empty
    /// `batch`, as many as fit; it returns false when it holds nothing. [`crate::Pipeline`]
    /// runs the later stages over what it gives, and the runtime transmits it (see
    /// [`fastpath_pmd::Processor::resume`]). A call that returns true gives up at least one
    /// held packet.
    fn resume(&mut self, _batch: &mut Batch, _ctx: &mut Ctx) -> bool {
        false
    }

    /// The stage's counters (shared so that other threads can read them).
    fn counters(&self) -> &Arc<StageCounters>;
}

/// Counters of one stage instance: packets seen, drops per reason, and the stage's own named
/// counters (segments made, bytes copied, ...).
pub struct StageCounters {
    /// Stage name.
    pub stage: &'static str,
    /// Packets that entered the stage.
    pub packets: Counter,
    reasons: &'static [&'static str],
    drops: Box<[Counter]>,
    names: &'static [&'static str],
    values: Box<[Counter]>,
}

impl fmt::Debug for StageCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StageCounters");
        d.field("stage", &self.stage).field("packets", &self.packets.get());
        for (r, c) in self.reasons.iter().zip(self.drops.iter()) {
            d.field(r, &c.get());
        }
        for (r, c) in self.names.iter().zip(self.values.iter()) {
            d.field(r, &c.get());
        }
        d.finish()
    }
}

impl StageCounters {
    /// Counters for `stage` with the given drop reasons (indexes are the reason codes).
    pub fn new(stage: &'static str, reasons: &'static [&'static str]) -> Arc<StageCounters> {
        Self::with_stats(stage, reasons, &[])
    }

    /// Counters for `stage` with drop reasons and named counters of its own (indexes are the
    /// codes passed to [`StageCounters::stat`]).
    pub fn with_stats(
        stage: &'static str,
        reasons: &'static [&'static str],
        names: &'static [&'static str],
    ) -> Arc<StageCounters> {
        Arc::new(StageCounters {
            stage,
            packets: Counter::new(),
            reasons,
            drops: reasons.iter().map(|_| Counter::new()).collect(),
            names,
            values: names.iter().map(|_| Counter::new()).collect(),
        })
    }

    /// Adds `n` to the named counter `i`.
    #[inline(always)]
    pub fn stat(&self, i: u8, n: u64) {
        if let Some(c) = self.values.get(i as usize) {
            c.add(n);
        }
    }

    /// The named counters, by name.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        self.names.iter().copied().zip(self.values.iter().map(Counter::get)).collect()
    }

    /// Counts `n` drops for reason `r`.
    #[inline(always)]
    pub fn dropped(&self, r: u8, n: u64) {
        if let Some(c) = self.drops.get(r as usize) {
            c.add(n);
        }
    }

    /// Drops for each reason, by name.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        self.reasons.iter().copied().zip(self.drops.iter().map(Counter::get)).collect()
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

/// Keeps the mbufs for which `f` returns `Ok(())`; the others are dropped (freed through `ctx`)
/// and counted under the returned reason code. Order is kept.
#[inline]
pub fn filter(
    batch: &mut Batch,
    ctx: &mut Ctx,
    counters: &StageCounters,
    mut f: impl FnMut(&mut Mbuf) -> Result<(), u8>,
) {
    counters.packets.add(batch.len() as u64);
    batch.partition_into(&mut ctx.drops, |m| match f(m) {
        Ok(()) => true,
        Err(r) => {
            counters.dropped(r, 1);
            false
        }
    });
    ctx.free_drops();
}
