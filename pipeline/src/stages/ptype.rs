//! `ptype[,vxlan-port=4789][,geneve-port=6081]`: fills each mbuf's packet type and header
//! lengths with the parser ([`crate::parse`]), as a NIC with packet-type recognition would
//! (DPDK's `rte_net_get_ptype`). Drops nothing: a frame it cannot read gets the layers it read.

use std::sync::Arc;

use fastpath_mempool::Batch;
use fastpath_pmd::{Ctx, Error, Spec};

use crate::parse::{classify, TunnelPorts};
use crate::stage::{Stage, StageCounters};

/// The accepted form.
pub const FORM: &str = "ptype[,vxlan-port=4789][,geneve-port=6081]";

/// The packet-type stage.
#[derive(Debug)]
pub struct Ptype {
    ports: TunnelPorts,
    counters: Arc<StageCounters>,
}

impl Ptype {
    /// A stage recognising tunnels on `ports`.
    pub fn new(ports: TunnelPorts) -> Ptype {
        Ptype { ports, counters: StageCounters::new("ptype", &[]) }
    }

    /// Builds the stage from its spec.
    pub fn from_spec(s: &mut Spec) -> Result<Ptype, Error> {
        let d = TunnelPorts::default();
        let vxlan = s.take_num("vxlan-port", 1u16, u16::MAX)?.unwrap_or(d.vxlan);
        let geneve = s.take_num("geneve-port", 1u16, u16::MAX)?.unwrap_or(d.geneve);
        s.finish(false)?;
        Ok(Ptype::new(TunnelPorts { vxlan, geneve }))
    }
}

impl Stage for Ptype {
    fn name(&self) -> &'static str {
        "ptype"
    }

    #[inline]
    fn process(&mut self, batch: &mut Batch, _ctx: &mut Ctx) {
        self.counters.packets.add(batch.len() as u64);
        for m in batch.iter_mut() {
            classify(m, &self.ports);
        }
    }

    fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }
}
