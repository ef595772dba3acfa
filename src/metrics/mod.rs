//! Metrics: per-core counters, gauges and latency histograms, merged only when read.
//!
//! Every core owns one `CoreMetrics` (thread-local, `Cell`/`RefCell`, no atomics);
//! clients and servers on the core keep an `Rc` to it and update it inline.
//! Reading goes through the runtime: [`Runtime::metrics`](crate::Runtime::metrics)
//! asks every core for a [`CoreSnapshot`] on its own thread and returns them in a
//! [`MetricsSnapshot`], which can be merged or rendered as Prometheus text.
//! Invariants: the hot path never allocates or synchronises for metrics; with
//! metrics disabled in a client or server config, its calls skip every clock
//! read and histogram update made only for metrics.

pub mod counters;
pub mod histogram;
mod prometheus;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use counters::{ClientCells, ServerCells};
pub use counters::{ClientCounts, ServerCounts};
pub use histogram::LatencyHistogram;

/// The phases a call's latency is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Client: `call()` until the request was written to the socket.
    ClientQueue,
    /// Client: written until the reply was received (network + server).
    ClientWire,
    /// Client: the server's handler time, as reported in the response header.
    ClientRemoteHandler,
    /// Client: reply received until the caller resumed with it.
    ClientDeliver,
    /// Client: `call()` until the caller resumed (end to end; every call, the
    /// per-method histograms merged).
    ClientTotal,
    /// Server: frame read until its handler started.
    ServerQueue,
    /// Server: handler start until it finished (every call, the per-method
    /// histograms merged).
    ServerHandler,
    /// Server: a batch's first response queued until the batch was written.
    ServerWrite,
}

impl Phase {
    /// Every phase, in display order.
    pub const ALL: [Phase; 8] = [
        Phase::ClientQueue,
        Phase::ClientWire,
        Phase::ClientRemoteHandler,
        Phase::ClientDeliver,
        Phase::ClientTotal,
        Phase::ServerQueue,
        Phase::ServerHandler,
        Phase::ServerWrite,
    ];

    /// Short name used in labels and tables.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ClientQueue => "client_queue",
            Phase::ClientWire => "client_wire",
            Phase::ClientRemoteHandler => "client_remote_handler",
            Phase::ClientDeliver => "client_deliver",
            Phase::ClientTotal => "client_total",
            Phase::ServerQueue => "server_queue",
            Phase::ServerHandler => "server_handler",
            Phase::ServerWrite => "server_write",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency histogram for one method.
#[derive(Debug, Clone)]
pub struct MethodHistogram {
    /// `"Service.method"`, or the id in hex when the name is unknown.
    pub name: String,
    /// Wire id.
    pub id: u32,
    /// Client: end-to-end latency. Server: handler time.
    pub latency: LatencyHistogram,
}

/// Pool counters for one endpoint on one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolCounts {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// Calls that found a healthy connection with a free slot at once.
    pub hits: u64,
    /// Calls that had to wait for a connection or a slot (or gave up).
    pub misses: u64,
}

impl PoolCounts {
    /// `hits / (hits + misses)`, or 1.0 with no calls.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            1.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Default)]
struct Histograms {
    phases: [LatencyHistogram; Phase::ALL.len()],
    client_methods: Vec<MethodHistogram>,
    server_methods: Vec<MethodHistogram>,
}

/// Every latency histogram records every `PHASE_SAMPLING`-th event of its kind
/// (the 1st, the `PHASE_SAMPLING + 1`-th, ...), so a histogram holding `n`
/// samples stands for about `n × PHASE_SAMPLING` events; counters and gauges
/// count every event. Client end-to-end latency per method (and the derived
/// `ClientTotal`) is sampled per successful call, server handler time per
/// method (and `ServerHandler`) per successful response.
pub const PHASE_SAMPLING: u32 = 8;

/// One core's metrics. Obtain with [`local`].
#[derive(Default)]
pub(crate) struct CoreMetrics {
    pub client: ClientCells,
    pub server: ServerCells,
    /// Events seen per phase, for sampling.
    ticks: [Cell<u32>; Phase::ALL.len()],
    hists: RefCell<Histograms>,
    pools: RefCell<Vec<PoolCounts>>,
}

thread_local! {
    static LOCAL: Rc<CoreMetrics> = Rc::new(CoreMetrics::default());
}

/// This core's metrics.
pub(crate) fn local() -> Rc<CoreMetrics> {
    LOCAL.with(Rc::clone)
}

fn method_slot(list: &mut Vec<MethodHistogram>, id: u32, name: &str) -> usize {
    match list.binary_search_by_key(&id, |m| m.id) {
        Ok(i) => i,
        Err(i) => {
            let name = if name.is_empty() {
                format!("{id:#010x}")
            } else {
                name.to_owned()
            };
            list.insert(
                i,
                MethodHistogram {
                    name,
                    id,
                    latency: LatencyHistogram::default(),
                },
            );
            i
        }
    }
}

impl CoreMetrics {
    /// Records a breakdown phase for every [`PHASE_SAMPLING`]-th event of that
    /// phase; `d` is only evaluated for recorded events.
    #[inline]
    pub fn phase(&self, phase: Phase, d: impl FnOnce() -> Duration) {
        if self.sampled(phase) {
            self.hists.borrow_mut().phases[phase.index()].record(d());
        }
    }

    /// Records `d` in `phase` unconditionally (the caller sampled already).
    pub fn record(&self, phase: Phase, d: Duration) {
        self.hists.borrow_mut().phases[phase.index()].record(d);
    }

    /// Whether the next event of `phase` will be sampled (does not advance the tick).
    #[inline]
    pub fn due(&self, phase: Phase) -> bool {
        self.ticks[phase.index()].get() == 0
    }

    /// Advances `phase`'s sampling tick; true for every [`PHASE_SAMPLING`]-th event.
    #[inline]
    pub fn sampled(&self, phase: Phase) -> bool {
        let tick = &self.ticks[phase.index()];
        let n = tick.get();
        tick.set(if n + 1 == PHASE_SAMPLING { 0 } else { n + 1 });
        n == 0
    }

    /// Records a client call's end-to-end latency under its method.
    pub fn client_method(&self, id: u32, name: &'static str, d: Duration) {
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.client_methods, id, name);
        h.client_methods[i].latency.record(d);
    }

    /// Records a server handler's time under its method.
    pub fn server_method(&self, id: u32, name: &'static str, d: Duration) {
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.server_methods, id, name);
        h.server_methods[i].latency.record(d);
    }

    /// The index of `endpoint`'s pool counters (created on first use).
    pub fn pool_index(&self, endpoint: SocketAddr) -> usize {
        let mut pools = self.pools.borrow_mut();
        match pools.iter().position(|p| p.endpoint == endpoint) {
            Some(i) => i,
            None => {
                pools.push(PoolCounts {
                    endpoint,
                    hits: 0,
                    misses: 0,
                });
                pools.len() - 1
            }
        }
    }

    /// Counts a pool hit (`true`) or miss for the pool at `index`.
    pub fn pool_access(&self, index: usize, hit: bool) {
        if let Some(p) = self.pools.borrow_mut().get_mut(index) {
            if hit {
                p.hits += 1;
            } else {
                p.misses += 1;
            }
        }
    }

    /// Copies everything (allocates; for readers only).
    pub fn snapshot(&self, core: Option<usize>) -> CoreSnapshot {
        let h = self.hists.borrow();
        let mut phases = h.phases.clone();
        for (phase, methods) in [
            (Phase::ClientTotal, &h.client_methods),
            (Phase::ServerHandler, &h.server_methods),
        ] {
            for m in methods {
                phases[phase.index()].merge(&m.latency);
            }
        }
        CoreSnapshot {
            core,
            client: self.client.snapshot(),
            server: self.server.snapshot(),
            pools: self.pools.borrow().clone(),
            phases,
            client_methods: h.client_methods.clone(),
            server_methods: h.server_methods.clone(),
            stalls: 0,
            recv_ring_dry: 0,
        }
    }
}

/// Everything one core recorded.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CoreSnapshot {
    /// The core index (`None` for a merged view or a thread outside a runtime).
    pub core: Option<usize>,
    /// Client counters and gauges.
    pub client: ClientCounts,
    /// Server counters and gauges.
    pub server: ServerCounts,
    /// Pool hit/miss counters per endpoint.
    pub pools: Vec<PoolCounts>,
    /// Per-phase latency histograms, indexed like [`Phase::ALL`].
    pub phases: [LatencyHistogram; Phase::ALL.len()],
    /// Client end-to-end latency per method.
    pub client_methods: Vec<MethodHistogram>,
    /// Server handler time per method.
    pub server_methods: Vec<MethodHistogram>,
    /// Times the core's loop stalled past the threshold.
    pub stalls: u64,
    /// Receives that found the core's provided-buffer ring empty and fell
    /// back to a plain receive into the connection's own buffer.
    pub recv_ring_dry: u64,
}

impl CoreSnapshot {
    /// The histogram of one phase.
    pub fn phase(&self, phase: Phase) -> &LatencyHistogram {
        &self.phases[phase.index()]
    }

    /// Adds `other` into `self` (core becomes `None`).
    pub fn merge(&mut self, other: &CoreSnapshot) {
        self.core = None;
        self.client.merge(&other.client);
        self.server.merge(&other.server);
        self.stalls += other.stalls;
        self.recv_ring_dry += other.recv_ring_dry;
        for p in &other.pools {
            match self.pools.iter_mut().find(|q| q.endpoint == p.endpoint) {
                Some(q) => {
                    q.hits += p.hits;
                    q.misses += p.misses;
                }
                None => self.pools.push(*p),
            }
        }
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            mine.merge(theirs);
        }
        merge_methods(&mut self.client_methods, &other.client_methods);
        merge_methods(&mut self.server_methods, &other.server_methods);
    }
}

fn merge_methods(into: &mut Vec<MethodHistogram>, from: &[MethodHistogram]) {
    for m in from {
        let i = method_slot(into, m.id, &m.name);
        into[i].latency.merge(&m.latency);
    }
}

/// Metrics of every core of a runtime at one moment.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// One entry per core, in core order.
    pub cores: Vec<CoreSnapshot>,
}

impl MetricsSnapshot {
    /// All cores added together.
    pub fn merged(&self) -> CoreSnapshot {
        let mut total = CoreSnapshot::default();
        for core in &self.cores {
            total.merge(core);
        }
        total
    }

    /// Prometheus text exposition (format 0.0.4): counters and gauges per core,
    /// latency summaries (p50/p95/p99/p99.9) per phase and method merged across
    /// cores, and the largest sample per phase.
    pub fn to_prometheus(&self) -> String {
        prometheus::render(self)
    }
}
