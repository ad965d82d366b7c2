//! `fastpath ctl rxq rebalance`: places the rx queues on the lcores again from the cycles each
//! queue cost its lcore since the last placement (OVS's `pmd-rxq-rebalance` with
//! `pmd-rxq-assign=cycles`): the costliest queue first, each to the lcore with the least load so
//! far (its own on a tie, so that nothing moves without a reason). A queue that moves is taken
//! from its lcore between two passes and given to the other one (`Command::TakeTask`, then
//! `Command::AddTask`): its packets wait in the queue meanwhile, none is lost or reordered, and
//! the other queues are not touched.
//!
//! Automatic (`[vswitch] rebalance_interval = SECS`, off by default, like OVS's `pmd-auto-lb`):
//! every SECS seconds the same placement is weighed from the cycles of that interval, and made
//! only when it lowers the busiest lcore's cycles by at least [`AUTO_IMPROVEMENT`] percent.

use std::sync::Arc;
use std::time::Duration;

use fastpath_pmd::lcore::{Command, Returned};
use fastpath_pmd::{Runtime, TaskStats};
use serde_json::{json, Value};

/// The least improvement (percent of the busiest lcore's cycles) an automatic rebalance makes.
pub const AUTO_IMPROVEMENT: u64 = 25;

/// How long the lcores have to hand a queue over.
const HANDOVER: Duration = Duration::from_secs(2);

/// For each queue (its current lcore and its cost), the lcore it goes to.
pub fn plan(queues: &[(usize, u64)], lcores: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..queues.len()).collect();
    // Costliest first; equal costs in queue order, so that a plan is repeatable.
    order.sort_by_key(|&i| (std::cmp::Reverse(queues[i].1), i));
    let mut load = vec![0u64; lcores.max(1)];
    let mut to = vec![0; queues.len()];
    for i in order {
        let (own, cost) = queues[i];
        let least = *load.iter().min().unwrap_or(&0);
        let l = if own < load.len() && load[own] == least {
            own
        } else {
            load.iter().position(|&x| x == least).unwrap_or(0)
        };
        load[l] += cost;
        to[i] = l;
    }
    to
}

/// The cycles of each queue at the last placement, to weigh what came since.
#[derive(Debug, Default)]
pub struct Rebalancer {
    since: Vec<u64>,
}

impl Rebalancer {
    /// Places the queues of `rxqs` (lcore, counters) again and moves those whose lcore changes;
    /// `name` names a port. Answers the moves and each lcore's share of the cycles weighed.
    pub fn run(
        &mut self,
        rt: &Runtime,
        rxqs: &mut [(usize, Arc<TaskStats>)],
        name: impl Fn(u16) -> String,
    ) -> Result<Value, String> {
        let (queues, now) = self.weigh(rxqs);
        let to = plan(&queues, rt.lcores());
        self.apply(rt, rxqs, name, (&queues, now), &to)
    }

    /// The automatic rebalance: [`Rebalancer::run`] when its placement lowers the busiest
    /// lcore's cycles by [`AUTO_IMPROVEMENT`] percent or more; None (and nothing moved, the
    /// interval forgotten) otherwise.
    pub fn auto(
        &mut self,
        rt: &Runtime,
        rxqs: &mut [(usize, Arc<TaskStats>)],
        name: impl Fn(u16) -> String,
    ) -> Result<Option<Value>, String> {
        let (queues, now) = self.weigh(rxqs);
        let to = plan(&queues, rt.lcores());
        let busiest = |at: &dyn Fn(usize) -> usize| {
            let n = rt.lcores().max(1);
            let mut load = vec![0u64; n];
            for (i, q) in queues.iter().enumerate() {
                load[at(i).min(n - 1)] += q.1;
            }
            load.into_iter().max().unwrap_or(0)
        };
        let (before, after) = (busiest(&|i| queues[i].0), busiest(&|i| to[i]));
        if before == 0 || (before - after.min(before)) * 100 < before * AUTO_IMPROVEMENT {
            self.since = now;
            return Ok(None);
        }
        self.apply(rt, rxqs, name, (&queues, now), &to).map(Some)
    }

    /// Forgets queue `i` of the list (its port was taken out).
    pub fn forget(&mut self, i: usize) {
        if i < self.since.len() {
            self.since.remove(i);
        }
    }

    /// Each queue's (lcore, cycles since the last placement), and the cycles now.
    fn weigh(&mut self, rxqs: &[(usize, Arc<TaskStats>)]) -> (Vec<(usize, u64)>, Vec<u64>) {
        self.since.resize(rxqs.len(), 0);
        let now: Vec<u64> = rxqs.iter().map(|(_, t)| t.cycles.get()).collect();
        let queues: Vec<(usize, u64)> =
            rxqs.iter().zip(now.iter().zip(&self.since)).map(|((l, _), (n, s))| (*l, n.saturating_sub(*s))).collect();
        (queues, now)
    }

    /// Moves the queues whose lcore in `to` is another; `weighed`: the queues' (lcore, cycles)
    /// and the cycles now.
    fn apply(
        &mut self,
        rt: &Runtime,
        rxqs: &mut [(usize, Arc<TaskStats>)],
        name: impl Fn(u16) -> String,
        weighed: (&[(usize, u64)], Vec<u64>),
        to: &[usize],
    ) -> Result<Value, String> {
        let (queues, now) = weighed;
        let moves: Vec<usize> = (0..rxqs.len()).filter(|&i| to[i] != rxqs[i].0).collect();
        for &i in &moves {
            let (l, t) = &rxqs[i];
            rt.command(*l, Command::TakeTask(t.port, t.queue)).map_err(|e| e.to_string())?;
        }
        let mut back =
            if moves.is_empty() { Vec::new() } else { rt.synchronize(HANDOVER).map_err(|e| e.to_string())? };
        let mut report = Vec::new();
        for &i in &moves {
            let (port, queue) = (rxqs[i].1.port, rxqs[i].1.queue);
            let found = back
                .iter()
                .position(|(_, r)| matches!(r, Returned::Task(t) if t.stats.port == port && t.stats.queue == queue));
            let Some(k) = found else {
                return Err(format!("port {} queue {queue}: its lcore did not hand it over", name(port)));
            };
            let Returned::Task(task) = back.swap_remove(k).1 else { unreachable!("matched a task above") };
            // Every vswitch lcore has one processor, index 0: the task keeps it.
            rt.command(to[i], Command::AddTask(task)).map_err(|e| e.to_string())?;
            report.push(json!({"port": name(port), "queue": queue, "from": rxqs[i].0, "to": to[i]}));
            rxqs[i].0 = to[i];
        }
        self.since = now;
        let total: u64 = queues.iter().map(|q| q.1).sum::<u64>().max(1);
        let mut share = vec![0u64; rt.lcores()];
        for (i, q) in queues.iter().enumerate() {
            share[to[i]] += q.1;
        }
        let shares: Vec<f64> = share.iter().map(|&s| (s as f64 / total as f64 * 1000.0).round() / 1000.0).collect();
        Ok(json!({"moved": report, "lcore_shares": shares}))
    }
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn the_costliest_queue_gets_an_lcore_of_its_own_and_ties_stay_put() {
        // Round-robin put the heavy queue 0 with queue 2 on lcore 0.
        assert_eq!(plan(&[(0, 1000), (1, 10), (0, 10), (1, 10)], 2), [0, 1, 1, 1]);
        // Balanced already: nothing moves.
        assert_eq!(plan(&[(0, 50), (1, 50), (0, 50), (1, 50)], 2), [0, 1, 0, 1]);
        // Two heavy on one lcore: one moves; the light ones go where the load is least
        // (100 | 90 + 10 + 5).
        assert_eq!(plan(&[(0, 100), (0, 90), (1, 10), (1, 5)], 2), [0, 1, 1, 1]);
        assert_eq!(plan(&[(0, 7)], 1), [0]);
        assert_eq!(plan(&[], 2), Vec::<usize>::new());
    }
}
