//! `io`, `macswap` and `drop`: the stages of testpmd's io, macswap and rxonly modes.

use std::sync::Arc;

use fastpath_mempool::Batch;
use fastpath_pmd::Ctx;

use crate::stage::{filter, Stage, StageCounters};

/// Forwards as is.
#[derive(Debug)]
pub struct Io {
    counters: Arc<StageCounters>,
}

impl Io {
    /// A new io stage.
    pub fn new() -> Io {
        Io { counters: StageCounters::new("io", &[]) }
    }
}

impl Default for Io {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for Io {
    fn name(&self) -> &'static str {
        "io"
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, _ctx: &mut Ctx) {
        self.counters.packets.add(batch.len() as u64);
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

/// Swaps the destination and source MAC addresses.
#[derive(Debug)]
pub struct MacSwap {
    counters: Arc<StageCounters>,
}

const RUNT: u8 = 0;
const SHARED: u8 = 1;

impl MacSwap {
    /// A new macswap stage.
    pub fn new() -> MacSwap {
        MacSwap { counters: StageCounters::new("macswap", &["runt", "shared-buffer"]) }
    }
}

impl Default for MacSwap {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for MacSwap {
    fn name(&self) -> &'static str {
        "macswap"
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        filter(batch, ctx, &self.counters, |m| {
            if m.data_len() < 12 {
                return Err(RUNT);
            }
            if !m.is_writable() {
                return Err(SHARED);
            }
            let d = m.data_mut();
            let (dst, rest) = d.split_at_mut(6);
            dst.swap_with_slice(&mut rest[..6]);
            Ok(())
        });
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}

/// Drops everything (counted): a sink for measuring receive rates.
#[derive(Debug)]
pub struct DropAll {
    counters: Arc<StageCounters>,
}

impl DropAll {
    /// A new drop stage.
    pub fn new() -> DropAll {
        DropAll { counters: StageCounters::new("drop", &["dropped"]) }
    }
}

impl Default for DropAll {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for DropAll {
    fn name(&self) -> &'static str {
        "drop"
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx) {
        let n = batch.len() as u64;
        self.counters.packets.add(n);
        self.counters.dropped(0, n);
        ctx.free_batch(batch);
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}
