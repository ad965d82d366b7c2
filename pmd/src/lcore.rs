//! The lcore runtime: busy-polling threads pinned to cores.
//!
//! Each lcore owns its tasks (rx queue -> processor), its processors (one per task, or one
//! shared by every task of the lcore: the vswitch's "one pipeline per lcore") and one transmit
//! queue per port it sends to. Its loop:
//!
//! ```text
//! while running:
//!   for task in tasks:
//!     n = task.rx.rx_burst(ctx, batch, burst)          // up to `burst` mbufs
//!     every mbuf's out_port = task.default_out          // stages may change it
//!     processors[task.processor].process(batch, ctx)    // the pipeline
//!     output.transmit(batch)                            // into per-port buffers (see below)
//!     while processors[task.processor].resume(..):      // more output held (segmentation, flooding)
//!       output.transmit(batch)
//!   output.flush()                                      // every port with buffered packets
//!   count the poll as busy (n > 0) or idle, with its TSC cycles
//! ```
//!
//! Output batching (OVS's): a processed batch whose packets all go to one port whose buffer is
//! empty is sent at once; otherwise each packet is appended to its port's buffer in one pass,
//! a buffer that reaches the burst size is sent, and whatever is buffered is sent at the end of
//! the loop iteration. So packets from many rx queues to one port leave in full bursts, one
//! guest notification or kick per loop, and grouping costs one pass over the packets whatever
//! the number of ports. Unsent packets are freed and counted as the queue's and the lcore's drops.
//!
//! Nothing here locks or allocates after start-up. Counters are per lcore ([`LcoreStats`]) and
//! read by anyone. [`IdleMode::Adaptive`] backs off (pause, yield, then short sleeps) when every
//! queue stays empty; the default is pure busy polling.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use fastpath_mempool::ring::spsc;
use fastpath_mempool::{Batch, DEFAULT_BURST, MAX_BURST};

use crate::ctx::Ctx;
use crate::port::{RxQueue, TxQueue};
use crate::stats::Counter;
use crate::time::rdtsc;
use crate::Error;

/// What runs on each burst between receive and transmit: the pipeline, or anything else.
pub trait Processor: Send {
    /// Processes a whole batch. Mbufs left in it go to their `out_port`; dropped ones must have
    /// been removed (and freed through `ctx`).
    fn process(&mut self, batch: &mut Batch, ctx: &mut Ctx);

    /// For processors that make more packets than they were given (segmentation): fills the
    /// empty `batch` with the next packets still held from the last [`Processor::process`] and
    /// returns true, or returns false when nothing is held. The runtime transmits after
    /// `process` and after every `resume` that returned true, until it returns false, so a
    /// held packet never waits for the next receive and nothing is allocated for the extra
    /// output. Each call that returns true must give up at least one held packet (sent or
    /// dropped).
    fn resume(&mut self, _batch: &mut Batch, _ctx: &mut Ctx) -> bool {
        false
    }

    /// A message from the control thread ([`Command::Notify`]), taken between two passes: a
    /// processor that understands it applies it (a new configuration, a port's capabilities)
    /// and may give back what it replaced. What it returns goes back to the control thread as
    /// [`Returned::Notified`], to be dropped there (freeing has no place on an lcore). The
    /// default understands nothing and gives the message back.
    fn notify(&mut self, msg: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>> {
        Some(msg)
    }
}

/// Forwards as received (testpmd's `io` mode).
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

impl Processor for Passthrough {
    #[inline(always)]
    fn process(&mut self, _batch: &mut Batch, _ctx: &mut Ctx) {}
}

/// One rx queue, the processor that handles what it receives, and where packets go by default.
pub struct Task {
    /// The receive queue polled.
    pub rx: Box<dyn RxQueue>,
    /// Index of the processor in [`LcoreSpec::processors`].
    pub processor: usize,
    /// Port id set as every received mbuf's `out_port` before processing.
    pub default_out: u16,
    /// What this rx queue costs its lcore (for `pmd-rxq-show` and rebalancing).
    pub stats: Arc<TaskStats>,
}

impl Task {
    /// A task polling `rx` through processor `processor` (an index of its lcore's), its
    /// packets sent to `default_out` unless a stage says otherwise.
    pub fn new(rx: Box<dyn RxQueue>, processor: usize, default_out: u16) -> Task {
        let stats = Arc::new(TaskStats { port: rx.port_id(), queue: rx.queue_id(), ..Default::default() });
        Task { rx, processor, default_out, stats }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("port", &self.stats.port)
            .field("queue", &self.stats.queue)
            .field("processor", &self.processor)
            .field("default_out", &self.default_out)
            .finish_non_exhaustive()
    }
}

/// Counters of one task: the packets its rx queue gave and the TSC cycles the lcore spent on
/// them (receive, processing, transmit; the cost of empty polls before it is charged to it
/// too). OVS's per-rxq cycles: what `rxq rebalance` weighs.
#[derive(Debug, Default)]
pub struct TaskStats {
    /// The rx queue's port.
    pub port: u16,
    /// The rx queue's index.
    pub queue: u16,
    /// Packets received.
    pub packets: Counter,
    /// TSC cycles.
    pub cycles: Counter,
}

/// Everything one lcore owns.
#[derive(Default)]
pub struct LcoreSpec {
    /// CPU to pin to (none: not pinned).
    pub core: Option<usize>,
    /// Processors, referred to by index from the tasks (several tasks may share one).
    pub processors: Vec<Box<dyn Processor>>,
    /// Tasks polled round-robin.
    pub tasks: Vec<Task>,
    /// Transmit queues by port id (`None` where this lcore does not send).
    pub tx: Vec<Option<Box<dyn TxQueue>>>,
}

impl fmt::Debug for LcoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LcoreSpec")
            .field("core", &self.core)
            .field("processors", &self.processors.len())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl LcoreSpec {
    /// An lcore pinned to `core` (none: not pinned), with nothing to do yet.
    pub fn new(core: Option<usize>) -> LcoreSpec {
        LcoreSpec { core, ..Default::default() }
    }

    /// Adds a processor and returns its index (for [`LcoreSpec::add_task`]).
    pub fn add_processor(&mut self, p: Box<dyn Processor>) -> usize {
        self.processors.push(p);
        self.processors.len() - 1
    }

    /// Adds a task polling `rx` through processor `processor` (an index from
    /// [`LcoreSpec::add_processor`]), its packets sent to `default_out` unless a stage says
    /// otherwise.
    pub fn add_task(&mut self, rx: Box<dyn RxQueue>, processor: usize, default_out: u16) -> Arc<TaskStats> {
        let t = Task::new(rx, processor, default_out);
        let st = t.stats.clone();
        self.tasks.push(t);
        st
    }

    /// Adds a task with a processor of its own.
    pub fn add_task_with(
        &mut self,
        rx: Box<dyn RxQueue>,
        processor: Box<dyn Processor>,
        default_out: u16,
    ) -> Arc<TaskStats> {
        let p = self.add_processor(processor);
        self.add_task(rx, p, default_out)
    }

    /// Installs the transmit queue for port `port`.
    pub fn set_tx(&mut self, port: u16, q: Box<dyn TxQueue>) {
        let i = port as usize;
        if self.tx.len() <= i {
            self.tx.resize_with(i + 1, || None);
        }
        self.tx[i] = Some(q);
    }

    /// Checks that every task names a processor of this lcore.
    fn check(&self, idx: usize) -> Result<(), Error> {
        match self.tasks.iter().find(|t| t.processor >= self.processors.len()) {
            Some(t) => Err(Error::Config(format!(
                "lcore {idx}: a task uses processor {} but the lcore has {}: add it with add_processor",
                t.processor,
                self.processors.len()
            ))),
            None => Ok(()),
        }
    }
}

/// A change to a running lcore (the live runtime). Sent through the lcore's command ring
/// ([`Runtime::command`]) and applied between two passes of its loop, so that the lcore never
/// sees half a change and the other ports' traffic is not interrupted.
pub enum Command {
    /// Adds a processor; it gets the next index (the lcore's processor count before it).
    AddProcessor(Box<dyn Processor>),
    /// Adds a task.
    AddTask(Task),
    /// Installs the transmit queue of a port (a queue it replaces comes back).
    SetTx(u16, Box<dyn TxQueue>),
    /// Takes a port out: every task polling one of its rx queues and its transmit queue come
    /// back; packets still buffered for it are freed and counted as the lcore's `tx_drops`.
    RemovePort(u16),
    /// Takes back the task of one rx queue (port, queue), to move it to another lcore: packets
    /// wait in the queue meanwhile, nothing is lost or reordered.
    TakeTask(u16, u16),
    /// Answered with [`Returned::Synced`] once every earlier command is applied and the lcore
    /// is between two passes (a grace period: nothing of a pass that began before it is in use).
    Sync(u64),
    /// A message for the processor of this index ([`Processor::notify`]); what it gives back
    /// returns as [`Returned::Notified`].
    Notify(usize, Box<dyn Any + Send>),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddProcessor(_) => f.write_str("AddProcessor"),
            Command::AddTask(t) => write!(f, "AddTask({t:?})"),
            Command::SetTx(p, _) => write!(f, "SetTx({p})"),
            Command::RemovePort(p) => write!(f, "RemovePort({p})"),
            Command::TakeTask(p, q) => write!(f, "TakeTask({p}, {q})"),
            Command::Sync(n) => write!(f, "Sync({n})"),
            Command::Notify(p, _) => write!(f, "Notify({p})"),
        }
    }
}

/// What a running lcore hands back to the control thread (to be dropped there: closing a queue
/// may take system calls that have no place on an lcore).
pub enum Returned {
    /// A task taken out.
    Task(Task),
    /// A transmit queue taken out or replaced, with its port.
    Tx(u16, Box<dyn TxQueue>),
    /// The answer to [`Command::Sync`].
    Synced(u64),
    /// What a processor gave back from [`Command::Notify`], with its index.
    Notified(usize, Box<dyn Any + Send>),
}

impl fmt::Debug for Returned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Returned::Task(t) => write!(f, "Task({t:?})"),
            Returned::Tx(p, _) => write!(f, "Tx({p})"),
            Returned::Synced(n) => write!(f, "Synced({n})"),
            Returned::Notified(p, _) => write!(f, "Notified({p})"),
        }
    }
}

/// Commands an lcore's ring holds; a full ring is an error for the sender, never a wait.
const COMMANDS: usize = 256;
/// Returned objects an lcore's return ring holds (the control thread drains it).
const RETURNS: usize = 4096;

/// The control thread's ends of one lcore's rings.
#[derive(Debug)]
struct LcoreLink {
    commands: spsc::Producer<Command>,
    returns: spsc::Consumer<Returned>,
}

/// What an lcore does when all its queues are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// Poll again at once (lowest latency, one core at 100%).
    #[default]
    Busy,
    /// After a run of empty polls, pause, then yield, then sleep up to `max_sleep_us`.
    Adaptive {
        /// Longest sleep between polls, in microseconds.
        max_sleep_us: u32,
    },
}

/// Settings shared by every lcore.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// Packets asked of each rx queue per poll (1..=256).
    pub burst: usize,
    /// Behaviour when idle.
    pub idle: IdleMode,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { burst: DEFAULT_BURST, idle: IdleMode::Busy }
    }
}

/// Per-lcore counters (like OVS `pmd-perf-show`).
#[derive(Debug, Default)]
pub struct LcoreStats {
    /// The CPU the lcore is pinned to.
    pub core: Option<usize>,
    /// Polls that received at least one packet.
    pub busy_polls: Counter,
    /// Polls that received nothing.
    pub idle_polls: Counter,
    /// TSC cycles spent in busy polls.
    pub busy_cycles: Counter,
    /// TSC cycles spent in idle polls (including back-off).
    pub idle_cycles: Counter,
    /// Packets received.
    pub rx_packets: Counter,
    /// Packets handed to a transmit queue and accepted.
    pub tx_packets: Counter,
    /// Packets a transmit queue did not accept (freed).
    pub tx_drops: Counter,
    /// Packets whose `out_port` has no transmit queue on this lcore (freed).
    pub no_route: Counter,
}

impl LcoreStats {
    /// Share of cycles spent in busy polls, 0..=1.
    pub fn utilisation(&self) -> f64 {
        let b = self.busy_cycles.get() as f64;
        let t = b + self.idle_cycles.get() as f64;
        if t == 0.0 {
            0.0
        } else {
            b / t
        }
    }
}

/// Running lcores.
#[derive(Debug)]
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Vec<Arc<CachePadded<LcoreStats>>>,
    /// One per lcore; the locks are the control side's (commands come from any control thread),
    /// never taken by an lcore.
    links: Vec<Mutex<LcoreLink>>,
    sync_seq: AtomicU64,
    _claims: Vec<CpuClaim>,
}

/// A busy-polling lcore's claim on its CPU, held while the runtime lives: an `flock` on
/// `/dev/shm/fastpath-cpu<N>.lock` (the temp dir when `/dev/shm` is not writable) holding the
/// owner's pid. Two busy pollers on one CPU get one scheduler tick each in turn (a few thousand
/// bursts per second instead of millions), so a second fastpath that finds the claim taken
/// says so at start; it still runs (the user may mean it), and adaptive lcores, which give the
/// CPU away when idle, neither claim nor warn.
#[derive(Debug)]
struct CpuClaim {
    _file: std::fs::File,
}

impl CpuClaim {
    /// Claims `cpu`; `Err` holds the warning to print when another process holds it.
    fn take(cpu: usize) -> Result<Option<CpuClaim>, String> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let name = format!("fastpath-cpu{cpu}.lock");
        let dirs = [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()];
        let Some(mut f) = dirs.iter().find_map(|d| {
            let p = d.join(&name);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(&p)
                .or_else(|_| std::fs::File::open(&p))
                .ok()
        }) else {
            return Ok(None);
        };
        match crate::sys::flock_exclusive(&f, false) {
            Ok(true) => {
                // Best effort: a file another user created may be read-only for us.
                if f.set_len(0).is_ok() {
                    let _ = write!(f, "{}", std::process::id());
                }
                Ok(Some(CpuClaim { _file: f }))
            }
            Ok(false) => {
                let mut pid = String::new();
                let _ = f.rewind().and_then(|_| f.read_to_string(&mut pid));
                let who = match pid.trim() {
                    "" => "another fastpath process".to_string(),
                    p => format!("another fastpath process (pid {p})"),
                };
                Err(format!(
                    "CPU {cpu} is already busy-polled by {who}: two busy pollers on one CPU get one \
                     scheduler tick each in turn (thousands of bursts per second instead of millions); \
                     give each its own CPU with --cores, or run one with --idle adaptive"
                ))
            }
            Err(_) => Ok(None),
        }
    }
}

/// The CPUs this process may run on.
pub fn available_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    v.sort_unstable();
    v
}

impl Runtime {
    /// Starts one thread per lcore. Fails before starting anything when a core is not available.
    pub fn launch(lcores: Vec<LcoreSpec>, cfg: RuntimeConfig) -> Result<Runtime, Error> {
        if cfg.burst == 0 || cfg.burst > MAX_BURST {
            return Err(Error::Config(format!("burst {} is out of range: use 1..={MAX_BURST}", cfg.burst)));
        }
        for (i, l) in lcores.iter().enumerate() {
            l.check(i)?;
        }
        let avail = available_cores();
        for l in &lcores {
            if let Some(c) = l.core {
                if !avail.contains(&c) {
                    return Err(Error::Core(format!(
                        "core {c} is not available: this process may use CPUs {}",
                        fmt_list(&avail)
                    )));
                }
            }
        }
        let mut claims = Vec::new();
        if cfg.idle == IdleMode::Busy {
            for c in lcores.iter().filter_map(|l| l.core) {
                match CpuClaim::take(c) {
                    Ok(claim) => claims.extend(claim),
                    Err(warning) => log::warn!("{warning}"),
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let mut links = Vec::new();
        for (i, l) in lcores.into_iter().enumerate() {
            let st = Arc::new(CachePadded::new(LcoreStats { core: l.core, ..Default::default() }));
            stats.push(st.clone());
            let stop = stop.clone();
            let (cmd_tx, cmd_rx) = spsc::channel(COMMANDS);
            let (ret_tx, ret_rx) = spsc::channel(RETURNS);
            links.push(Mutex::new(LcoreLink { commands: cmd_tx, returns: ret_rx }));
            let t = std::thread::Builder::new()
                .name(format!("lcore{i}"))
                .spawn(move || lcore_main(i, l, cfg, &stop, &st, cmd_rx, ret_tx))
                .map_err(|e| Error::Core(format!("cannot start lcore thread: {e}")))?;
            threads.push(t);
        }
        Ok(Runtime { threads, stop, stats, links, sync_seq: AtomicU64::new(0), _claims: claims })
    }

    /// Asks every lcore to stop after its current poll.
    pub fn stop(&self) {
        // Relaxed: a request; lcores see it within a poll or two, nothing is published with it.
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The flag lcores watch; set it to stop them.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// True when every lcore thread has ended.
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Per-lcore counters.
    pub fn stats(&self) -> &[Arc<CachePadded<LcoreStats>>] {
        &self.stats
    }

    /// Lcores running.
    pub fn lcores(&self) -> usize {
        self.links.len()
    }

    /// Sends `cmd` to lcore `lcore`; it is applied between two passes of its loop. Fails when
    /// there is no such lcore or its command ring is full (it is not polling, or too many
    /// commands are in flight): nothing waits.
    pub fn command(&self, lcore: usize, cmd: Command) -> Result<(), Error> {
        let link = self.links.get(lcore).ok_or_else(|| Error::Core(format!("no lcore {lcore}")))?;
        let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
        l.commands.enqueue(cmd).map_err(|c| {
            Error::Core(format!(
                "lcore {lcore}: its command ring is full ({c:?} not sent): retry when it has caught up"
            ))
        })
    }

    /// Takes what the lcores handed back (tasks, transmit queues); sync answers are dropped.
    pub fn collect(&self) -> Vec<(usize, Returned)> {
        let mut v = Vec::new();
        for (i, link) in self.links.iter().enumerate() {
            let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(r) = l.returns.dequeue() {
                if !matches!(r, Returned::Synced(_)) {
                    v.push((i, r));
                }
            }
        }
        v
    }

    /// A grace period: returns once every lcore has applied every command sent before the call
    /// and has finished the pass of its loop that was running (so nothing it read before the
    /// call is still in use), or fails after `timeout` (an lcore that has stopped, or is stuck).
    /// What lcores hand back meanwhile is returned.
    pub fn synchronize(&self, timeout: Duration) -> Result<Vec<(usize, Returned)>, Error> {
        // Relaxed: a unique number; nothing is published through it.
        let seq = self.sync_seq.fetch_add(1, Ordering::Relaxed) + 1;
        for i in 0..self.links.len() {
            self.command(i, Command::Sync(seq))?;
        }
        let t0 = std::time::Instant::now();
        let mut pending: Vec<bool> = vec![true; self.links.len()];
        let mut got = Vec::new();
        while pending.iter().any(|&p| p) {
            for (i, link) in self.links.iter().enumerate() {
                let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(r) = l.returns.dequeue() {
                    match r {
                        Returned::Synced(n) if n == seq => pending[i] = false,
                        Returned::Synced(_) => {}
                        r => got.push((i, r)),
                    }
                }
            }
            if pending.iter().any(|&p| p) {
                if t0.elapsed() >= timeout {
                    let late: Vec<usize> = (0..pending.len()).filter(|&i| pending[i]).collect();
                    return Err(Error::Core(format!("lcores {late:?} did not answer within {timeout:?}")));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(got)
    }

    /// Stops (if not yet) and waits for every lcore; an lcore that panicked is an error.
    pub fn join(mut self) -> Result<(), Error> {
        self.stop();
        let mut err = None;
        for (i, t) in self.threads.drain(..).enumerate() {
            if t.join().is_err() {
                err = Some(Error::Core(format!("lcore {i} panicked")));
            }
        }
        err.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn fmt_list(v: &[usize]) -> String {
    v.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

fn lcore_main(
    idx: usize,
    l: LcoreSpec,
    cfg: RuntimeConfig,
    stop: &AtomicBool,
    st: &LcoreStats,
    mut commands: spsc::Consumer<Command>,
    mut returns: spsc::Producer<Returned>,
) {
    if let Some(c) = l.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            log::warn!("lcore {idx}: could not pin to core {c}; running unpinned");
        }
    }
    if let IdleMode::Adaptive { .. } = cfg.idle {
        // A back-off sleep of 1 us otherwise lasts the default slack, 50 us.
        if let Err(e) = crate::sys::set_timer_slack(ADAPTIVE_TIMER_SLACK_NS) {
            log::warn!("lcore {idx}: timer slack not lowered ({e}): its sleeps may last 50 us longer");
        }
    }
    let LcoreSpec { mut processors, mut tasks, tx, .. } = l;
    let mut ctx = Ctx::empty(idx);
    let mut out = Output::new(tx, cfg.burst);
    let mut batch = Batch::new();
    let mut idle_streak: u32 = 0;
    let mut polls: u32 = 0;
    let mut t_prev = rdtsc();
    // Relaxed: the stop request carries no data.
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0usize;
        let mut t_mark = t_prev;
        for t in tasks.iter_mut() {
            let n = t.rx.rx_burst(&mut ctx, &mut batch, cfg.burst);
            if n == 0 {
                continue;
            }
            got += n;
            let dflt = t.default_out;
            for m in batch.iter_mut() {
                m.set_out_port(dflt);
            }
            // The index was checked at launch.
            let p = &mut processors[t.processor];
            p.process(&mut batch, &mut ctx);
            out.transmit(&mut ctx, &mut batch, st);
            while p.resume(&mut batch, &mut ctx) {
                out.transmit(&mut ctx, &mut batch, st);
            }
            let now = rdtsc();
            t.stats.packets.add(n as u64);
            t.stats.cycles.add(now.wrapping_sub(t_mark));
            t_mark = now;
        }
        out.flush(&mut ctx, st);
        if let Some(c) = commands.dequeue() {
            apply(idx, c, &mut processors, &mut tasks, &mut out, &mut ctx, st, &mut returns);
        }
        polls = polls.wrapping_add(1);
        if polls % MAINTAIN_EVERY == 0 {
            // Periodic maintenance (pcap writers, vhost-user configuration pick-up) for queues
            // that get no traffic; the first idle poll below does it too.
            out.maintain(&mut ctx);
        }
        if got > 0 {
            let now = rdtsc();
            st.busy_polls.inc();
            st.busy_cycles.add(now.wrapping_sub(t_prev));
            st.rx_packets.add(got as u64);
            idle_streak = 0;
            t_prev = now;
        } else {
            idle_streak = idle_streak.saturating_add(1);
            if idle_streak == 1 {
                out.maintain(&mut ctx);
            }
            if let IdleMode::Adaptive { max_sleep_us } = cfg.idle {
                back_off(idle_streak, max_sleep_us);
            }
            let now = rdtsc();
            st.idle_polls.inc();
            st.idle_cycles.add(now.wrapping_sub(t_prev));
            t_prev = now;
        }
    }
    out.flush(&mut ctx, st);
    out.maintain(&mut ctx);
    // Queues, processors and the caches (ctx) drop here, on the lcore that owned them; the
    // caches return their mbufs to the pools.
    drop(tasks);
    drop(processors);
    drop(out);
    drop(ctx);
}

/// Applies one command between two passes of the loop (the control path of an lcore: rare, so
/// the few allocations a new task or processor needs are fine here).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn apply(
    idx: usize,
    c: Command,
    processors: &mut Vec<Box<dyn Processor>>,
    tasks: &mut Vec<Task>,
    out: &mut Output,
    ctx: &mut Ctx,
    st: &LcoreStats,
    returns: &mut spsc::Producer<Returned>,
) {
    let mut give_back = |r: Returned| {
        if let Err(r) = returns.enqueue(r) {
            log::warn!("lcore {idx}: return ring full; dropping {r:?} on the lcore");
        }
    };
    match c {
        Command::AddProcessor(p) => processors.push(p),
        Command::AddTask(t) => {
            if t.processor < processors.len() {
                tasks.push(t);
            } else {
                log::error!("lcore {idx}: task for processor {} of {}: refused", t.processor, processors.len());
                give_back(Returned::Task(t));
            }
        }
        Command::SetTx(p, q) => {
            if let Some(old) = out.set_tx(p, q, ctx, st) {
                give_back(Returned::Tx(p, old));
            }
        }
        Command::RemovePort(p) => {
            let mut i = 0;
            while i < tasks.len() {
                if tasks[i].rx.port_id() == p {
                    give_back(Returned::Task(tasks.remove(i)));
                } else {
                    i += 1;
                }
            }
            if let Some(q) = out.take_tx(p, ctx, st) {
                give_back(Returned::Tx(p, q));
            }
        }
        Command::TakeTask(p, q) => {
            if let Some(i) = tasks.iter().position(|t| t.stats.port == p && t.stats.queue == q) {
                give_back(Returned::Task(tasks.remove(i)));
            }
        }
        Command::Sync(n) => give_back(Returned::Synced(n)),
        Command::Notify(p, msg) => match processors.get_mut(p) {
            Some(proc) => {
                if let Some(back) = proc.notify(msg) {
                    give_back(Returned::Notified(p, back));
                }
            }
            None => {
                log::error!("lcore {idx}: message for processor {p} of {}: refused", processors.len());
                give_back(Returned::Notified(p, msg));
            }
        },
    }
}

/// Polls between two calls of every transmit queue's [`TxQueue::flush`] (a power of two).
pub const MAINTAIN_EVERY: u32 = 1024;

/// Timer slack of an adaptive lcore, in nanoseconds.
pub const ADAPTIVE_TIMER_SLACK_NS: u64 = 1_000;

#[inline(never)]
fn back_off(streak: u32, max_sleep_us: u32) {
    if streak < 64 {
        return;
    }
    if streak < 1024 {
        for _ in 0..16 {
            std::hint::spin_loop();
        }
        return;
    }
    if streak < 2048 {
        std::thread::yield_now();
        return;
    }
    let us = (1u64 << ((streak - 2048) / 256).min(10)).min(max_sleep_us.max(1) as u64);
    std::thread::sleep(Duration::from_micros(us));
}

/// An lcore's transmit side: one queue and one output buffer per port it sends to (see the
/// module doc). Used by the runtime; public for tests and for benchmarks of the transmit path.
pub struct Output {
    tx: Vec<Option<Box<dyn TxQueue>>>,
    bufs: Vec<Batch>,
    /// Ports whose buffer holds packets, each once (`queued[p]` says whether it is listed).
    dirty: Vec<u16>,
    queued: Vec<bool>,
    burst: usize,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output").field("ports", &self.tx.len()).field("burst", &self.burst).finish_non_exhaustive()
    }
}

impl Output {
    /// Transmit queues by port id; buffers are sent when they reach `burst` packets.
    pub fn new(tx: Vec<Option<Box<dyn TxQueue>>>, burst: usize) -> Output {
        let n = tx.len();
        Output {
            bufs: (0..n).map(|_| Batch::new()).collect(),
            dirty: Vec::with_capacity(n),
            queued: vec![false; n],
            tx,
            burst: burst.clamp(1, MAX_BURST),
        }
    }

    /// Takes a processed batch (emptying it): sent at once when it all goes to one port with
    /// nothing buffered, else buffered by `out_port`. Packets for a port without a transmit queue
    /// here are freed and counted as `no_route`.
    #[inline]
    pub fn transmit(&mut self, ctx: &mut Ctx, batch: &mut Batch, st: &LcoreStats) {
        let Some(first) = batch.first().map(|m| m.out_port()) else { return };
        let f = first as usize;
        if self.bufs.get(f).is_some_and(|b| b.is_empty()) && batch.iter().all(|m| m.out_port() == first) {
            self.send(f, ctx, batch, st);
            return;
        }
        for m in batch.drain_all() {
            let p = m.out_port() as usize;
            if self.tx.get(p).is_none_or(|t| t.is_none()) {
                st.no_route.inc();
                ctx.free(m);
                continue;
            }
            let b = &mut self.bufs[p];
            // Never full: a buffer is sent when it reaches `burst` <= its capacity.
            let _ = b.push(m);
            if !self.queued[p] {
                self.queued[p] = true;
                self.dirty.push(p as u16);
            }
            if b.len() >= self.burst {
                let mut full = std::mem::take(&mut self.bufs[p]);
                self.send(p, ctx, &mut full, st);
                self.bufs[p] = full;
            }
        }
    }

    /// Sends everything buffered.
    #[inline]
    pub fn flush(&mut self, ctx: &mut Ctx, st: &LcoreStats) {
        while let Some(p) = self.dirty.pop() {
            let p = p as usize;
            self.queued[p] = false;
            if !self.bufs[p].is_empty() {
                let mut b = std::mem::take(&mut self.bufs[p]);
                self.send(p, ctx, &mut b, st);
                self.bufs[p] = b;
            }
        }
    }

    /// Installs port `p`'s transmit queue; returns the one it replaces (after sending what was
    /// buffered for it).
    pub fn set_tx(&mut self, p: u16, q: Box<dyn TxQueue>, ctx: &mut Ctx, st: &LcoreStats) -> Option<Box<dyn TxQueue>> {
        let i = p as usize;
        if self.tx.len() <= i {
            self.tx.resize_with(i + 1, || None);
            self.bufs.resize_with(i + 1, Batch::new);
            self.queued.resize(i + 1, false);
            // The dirty list holds each port at most once: room for all, so pushing never grows it.
            self.dirty.reserve(self.tx.len().saturating_sub(self.dirty.len()));
        }
        let mut b = std::mem::take(&mut self.bufs[i]);
        self.send(i, ctx, &mut b, st);
        self.bufs[i] = b;
        self.tx[i].replace(q)
    }

    /// Takes port `p`'s transmit queue out; what was buffered for it is freed and counted as
    /// drops (its port is going away).
    pub fn take_tx(&mut self, p: u16, ctx: &mut Ctx, st: &LcoreStats) -> Option<Box<dyn TxQueue>> {
        let i = p as usize;
        let b = self.bufs.get_mut(i)?;
        st.tx_drops.add(b.len() as u64);
        ctx.free_batch(b);
        self.tx.get_mut(i).and_then(|t| t.take())
    }

    /// Calls every queue's [`TxQueue::flush`] (periodic maintenance).
    pub fn maintain(&mut self, ctx: &mut Ctx) {
        for q in self.tx.iter_mut().flatten() {
            q.flush(ctx);
        }
    }

    /// Sends `b` on port `p` (which has a queue, or the packets are counted as `no_route`).
    #[inline]
    fn send(&mut self, p: usize, ctx: &mut Ctx, b: &mut Batch, st: &LcoreStats) {
        match self.tx.get_mut(p).and_then(|t| t.as_mut()) {
            Some(q) => {
                let n = q.tx_burst(ctx, b);
                st.tx_packets.add(n as u64);
                if !b.is_empty() {
                    q.dropped(b.len() as u64);
                    st.tx_drops.add(b.len() as u64);
                    ctx.free_batch(b);
                }
            }
            None => {
                st.no_route.add(b.len() as u64);
                ctx.free_batch(b);
            }
        }
    }
}
