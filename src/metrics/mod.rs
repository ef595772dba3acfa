//! Metrics: per-core counters, gauges and latency histograms, merged only when read.
//!
//! Every core owns one `CoreMetrics` (thread-local, `Cell`/`RefCell`, no atomics);
//! clients and servers on the core keep an `Rc` to it and update it inline.
//! Reading goes through the runtime: [`Runtime::metrics`](crate::Runtime::metrics)
//! asks every core for a [`CoreSnapshot`] on its own thread and returns them in a
//! [`MetricsSnapshot`], which can be merged or rendered as Prometheus text
//! (served over HTTP by `metrics::http::Endpoint` with the `metrics-http`
//! feature).
//! Every event is counted exactly; about one in [`PHASE_SAMPLING`] is timed
//! (see there for which), and a summary's `_sum` is estimated from the timed
//! ones ([`estimated_sum`]).
//! Invariants: the hot path never allocates (past a method's first call on a
//! core) or synchronises for metrics; with metrics disabled in a client or
//! server config, its calls skip every clock read and histogram update made
//! only for metrics (and the per-method counts).

pub mod counters;
mod endpoints;
pub mod histogram;
#[cfg(feature = "metrics-http")]
pub mod http;
mod prometheus;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use counters::{inc, ClientCells, ServerCells};
pub use counters::{ClientCounts, ServerCounts};
pub(crate) use endpoints::EndpointCells;
pub use endpoints::EndpointCounts;
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

    /// Whether the phase's histogram is the per-method histograms merged.
    fn per_method(self) -> bool {
        matches!(self, Phase::ClientTotal | Phase::ServerHandler)
    }
}

/// Latency of one method: every call counted, a sample of them timed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MethodHistogram {
    /// `"Service.method"`, or the id in hex when the name is unknown.
    pub name: String,
    /// Wire id.
    pub id: u32,
    /// Every call of the method, timed or not (client: calls that returned a
    /// reply; server: successful responses). Exact: this is the summary's
    /// `_count` in Prometheus.
    pub count: u64,
    /// Client: end-to-end latency. Server: handler time. A sample of the
    /// `count` calls (about one in [`PHASE_SAMPLING`]); quantiles come from it.
    pub latency: LatencyHistogram,
    /// Server: calls of the method the authorization hook refused
    /// (`PermissionDenied`; not in `count`). Client: 0.
    pub denied: u64,
}

impl MethodHistogram {
    /// The total latency of all `count` calls, estimated from the sample (see
    /// [`estimated_sum`]).
    pub fn sum(&self) -> Duration {
        estimated_sum(&self.latency, self.count)
    }
}

/// The total of `count` events' latencies estimated from a sample of them:
/// the samples' sum × `count` / samples (zero without samples). Unbiased
/// because which events are timed does not depend on their latency; what
/// Prometheus exports as a summary's `_sum`.
pub fn estimated_sum(samples: &LatencyHistogram, count: u64) -> Duration {
    let n = samples.count();
    if n == 0 || count == 0 {
        return Duration::ZERO;
    }
    samples.sum().mul_f64(count as f64 / n as f64)
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

/// One method's histogram and its sampling countdown.
struct MethodCells {
    hist: MethodHistogram,
    /// Client side: calls of this method to skip before the next timed one
    /// (unused on the server side, which decides before it knows the method).
    skip: u32,
}

#[derive(Default)]
struct Histograms {
    phases: [LatencyHistogram; Phase::ALL.len()],
    client_methods: Vec<MethodCells>,
    server_methods: Vec<MethodCells>,
}

/// About one event in `PHASE_SAMPLING` is timed (its clock read and its
/// latency recorded in a histogram); every event is counted.
///
/// Which ones: each sampling countdown skips a pseudo-random number of events
/// between two timed ones, uniform in `0 ..= 2 × (PHASE_SAMPLING − 1)` (so
/// `PHASE_SAMPLING` events per timed one on average), and times the first
/// event it sees. The gaps are irregular so that no periodic pattern of calls
/// (a client alternating `put` and `get`) can line up with them and leave a
/// method untimed. Countdowns: one per phase per core; the client's
/// end-to-end latency has one per method (so every method's first call is
/// timed); the server's handler time one per core, since the server decides
/// whether to time a handler before it runs.
///
/// Counts are exact: a summary's `_count` is every event (every successful
/// call of the method, every request for `server_queue`, ...), and its `_sum`
/// is estimated from the samples ([`estimated_sum`]).
pub const PHASE_SAMPLING: u32 = 8;

/// The sampling generator's first state (xorshift32: any nonzero value).
const SAMPLING_SEED: u32 = 0x9e37_79b9;

/// One core's metrics. Obtain with [`local`].
pub(crate) struct CoreMetrics {
    pub client: ClientCells,
    pub server: ServerCells,
    /// Per phase: events to skip before the next timed one.
    skip: [Cell<u32>; Phase::ALL.len()],
    /// Per phase: events counted (the per-method phases and `ClientDeliver`
    /// are counted per method instead).
    events: [Cell<u64>; Phase::ALL.len()],
    /// xorshift32 state for the sampling gaps.
    rng: Cell<u32>,
    hists: RefCell<Histograms>,
    pools: RefCell<Vec<PoolCounts>>,
    endpoints: RefCell<Vec<Rc<EndpointCells>>>,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self {
            client: ClientCells::default(),
            server: ServerCells::default(),
            skip: Default::default(),
            events: Default::default(),
            rng: Cell::new(SAMPLING_SEED),
            hists: RefCell::default(),
            pools: RefCell::default(),
            endpoints: RefCell::default(),
        }
    }
}

thread_local! {
    static LOCAL: Rc<CoreMetrics> = Rc::new(CoreMetrics::default());
}

/// This core's metrics.
pub(crate) fn local() -> Rc<CoreMetrics> {
    LOCAL.with(Rc::clone)
}

fn method_slot(list: &mut Vec<MethodCells>, id: u32, name: &str) -> usize {
    match list.binary_search_by_key(&id, |m| m.hist.id) {
        Ok(i) => i,
        Err(i) => {
            let name = if name.is_empty() {
                format!("{id:#010x}")
            } else {
                name.to_owned()
            };
            let hist = MethodHistogram {
                name,
                id,
                count: 0,
                latency: LatencyHistogram::default(),
                denied: 0,
            };
            list.insert(i, MethodCells { hist, skip: 0 });
            i
        }
    }
}

impl CoreMetrics {
    /// The number of events to skip before the next timed one (see
    /// [`PHASE_SAMPLING`]).
    fn next_skip(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x % (2 * PHASE_SAMPLING - 1)
    }

    /// Advances a countdown by one event: true if this event is timed.
    #[inline]
    fn take(&self, skip: u32) -> (bool, u32) {
        match skip {
            0 => (true, self.next_skip()),
            n => (false, n - 1),
        }
    }

    #[inline]
    fn take_phase(&self, phase: Phase) -> bool {
        let cell = &self.skip[phase.index()];
        let (timed, next) = self.take(cell.get());
        cell.set(next);
        timed
    }

    /// Counts an event of `phase` and records `d()` if the event is timed;
    /// `d` is only evaluated for timed events. Not for the per-method phases.
    #[inline]
    pub fn phase(&self, phase: Phase, d: impl FnOnce() -> Duration) {
        debug_assert!(!phase.per_method());
        if self.sampled(phase) {
            self.hists.borrow_mut().phases[phase.index()].record(d());
        }
    }

    /// Records `d` in `phase`'s sample without counting an event (the caller
    /// counted it and sampled already).
    pub fn record(&self, phase: Phase, d: Duration) {
        self.hists.borrow_mut().phases[phase.index()].record(d);
    }

    /// Counts an event of `phase` whose timing the caller records, or not,
    /// with [`record`](Self::record).
    #[inline]
    pub fn count(&self, phase: Phase) {
        inc(&self.events[phase.index()]);
    }

    /// Whether the next event of `phase` will be timed (does not advance the
    /// countdown). For `ServerHandler`: whether the next successful response
    /// [`server_method`](Self::server_method) counts is timed.
    #[inline]
    pub fn due(&self, phase: Phase) -> bool {
        self.skip[phase.index()].get() == 0
    }

    /// Counts an event of `phase` and advances its countdown: true if the
    /// event is timed (then record it). For the per-method phases
    /// (`ClientTotal`, `ServerHandler`) it counts nothing, advances nothing
    /// and returns true: every such event must be handed to
    /// [`client_call`](Self::client_call) / [`server_method`](Self::server_method),
    /// which count it per method and take the timing decision.
    #[inline]
    pub fn sampled(&self, phase: Phase) -> bool {
        if phase.per_method() {
            return true;
        }
        self.count(phase);
        self.take_phase(phase)
    }

    /// Counts a client call of method `id` that returned a reply, and
    /// advances the method's own countdown: true if this call is timed (then
    /// read the clock and call [`client_method`](Self::client_method)).
    pub fn client_call(&self, id: u32, name: &'static str) -> bool {
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.client_methods, id, name);
        let m = &mut h.client_methods[i];
        m.hist.count += 1;
        let (timed, next) = self.take(m.skip);
        m.skip = next;
        timed
    }

    /// Records a timed client call's end-to-end latency under its method
    /// (counted already by [`client_call`](Self::client_call)).
    pub fn client_method(&self, id: u32, name: &'static str, d: Duration) {
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.client_methods, id, name);
        h.client_methods[i].hist.latency.record(d);
    }

    /// Counts a successful response of method `id` and, if it is the timed
    /// one (what [`due`](Self::due)`(ServerHandler)` said before the handler's
    /// time was taken), records the handler time `d`; otherwise `d` is not a
    /// measurement and is ignored.
    pub fn server_method(&self, id: u32, name: &'static str, d: Duration) {
        let timed = self.take_phase(Phase::ServerHandler);
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.server_methods, id, name);
        let m = &mut h.server_methods[i].hist;
        m.count += 1;
        if timed {
            m.latency.record(d);
        }
    }

    /// Counts a call of method `id` the authorization hook refused.
    pub fn server_denied(&self, id: u32, name: &'static str) {
        inc(&self.server.permission_denied);
        let mut h = self.hists.borrow_mut();
        let i = method_slot(&mut h.server_methods, id, name);
        h.server_methods[i].hist.denied += 1;
    }

    /// Counts a failed TLS handshake under its reason.
    pub fn tls_failure(&self, why: crate::tls::HandshakeFailure) {
        use crate::tls::HandshakeFailure as F;
        let m = &self.server;
        inc(match why {
            F::NoCertificate => &m.tls_failed_no_certificate,
            F::UnknownCa => &m.tls_failed_unknown_ca,
            F::Expired => &m.tls_failed_expired,
            F::BadSni => &m.tls_failed_bad_sni,
            F::Garbage => &m.tls_failed_garbage,
            F::Timeout => &m.tls_failed_timeout,
            _ => &m.tls_failed_other,
        });
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

    /// The cluster cells of `endpoint` on this core (created on first use,
    /// shared by every cluster calling it).
    pub fn endpoint_cells(&self, endpoint: SocketAddr) -> Rc<EndpointCells> {
        let mut list = self.endpoints.borrow_mut();
        match list.iter().find(|e| e.endpoint == endpoint) {
            Some(e) => e.clone(),
            None => {
                let cells = Rc::new(EndpointCells::new(endpoint));
                list.push(cells.clone());
                cells
            }
        }
    }

    /// Copies everything (allocates; for readers only).
    pub fn snapshot(&self, core: Option<usize>) -> CoreSnapshot {
        let h = self.hists.borrow();
        let mut phases = h.phases.clone();
        let mut phase_counts = [0u64; Phase::ALL.len()];
        for (count, events) in phase_counts.iter_mut().zip(&self.events) {
            *count = events.get();
        }
        let client_methods: Vec<MethodHistogram> =
            h.client_methods.iter().map(|m| m.hist.clone()).collect();
        let server_methods: Vec<MethodHistogram> =
            h.server_methods.iter().map(|m| m.hist.clone()).collect();
        for (phase, methods) in [
            (Phase::ClientTotal, &client_methods),
            (Phase::ServerHandler, &server_methods),
        ] {
            for m in methods {
                phases[phase.index()].merge(&m.latency);
                phase_counts[phase.index()] += m.count;
            }
        }
        // Delivery is timed for the calls whose end-to-end latency is.
        phase_counts[Phase::ClientDeliver.index()] = phase_counts[Phase::ClientTotal.index()];
        CoreSnapshot {
            core,
            client: self.client.snapshot(),
            server: self.server.snapshot(),
            pools: self.pools.borrow().clone(),
            endpoints: self
                .endpoints
                .borrow()
                .iter()
                .map(|e| e.snapshot())
                .collect(),
            phases,
            phase_counts,
            client_methods,
            server_methods,
            stalls: 0,
            recv_ring_dry: 0,
            recv_pool_bytes: 0,
            driver: None,
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
    /// Cluster counters per endpoint ([`crate::cluster`]).
    pub endpoints: Vec<EndpointCounts>,
    /// Per-phase latency samples, indexed like [`Phase::ALL`] (about one
    /// event in [`PHASE_SAMPLING`]).
    pub phases: [LatencyHistogram; Phase::ALL.len()],
    /// Per-phase event counts, indexed like [`Phase::ALL`]: every event,
    /// timed or not (exact).
    pub phase_counts: [u64; Phase::ALL.len()],
    /// Client end-to-end latency per method.
    pub client_methods: Vec<MethodHistogram>,
    /// Server handler time per method.
    pub server_methods: Vec<MethodHistogram>,
    /// Times the core's loop stalled past the threshold.
    pub stalls: u64,
    /// Receives that found the core's provided-buffer ring empty and fell
    /// back to a plain receive into the connection's own buffer.
    pub recv_ring_dry: u64,
    /// Bytes of emptied receive chunks the core keeps for its connections to
    /// reuse (a gauge; at most 4 MiB per core): memory an idle connection
    /// gave back, still held by the runtime.
    pub recv_pool_bytes: u64,
    /// The I/O driver the core runs ([`Driver::IoUring`](crate::Driver::IoUring)
    /// or [`Driver::Epoll`](crate::Driver::Epoll); `None` for a merged view
    /// of cores on different drivers, or off a runtime).
    pub driver: Option<crate::Driver>,
}

impl CoreSnapshot {
    /// The latency sample of one phase (quantiles, max; its `count()` is the
    /// number of timed events).
    pub fn phase(&self, phase: Phase) -> &LatencyHistogram {
        &self.phases[phase.index()]
    }

    /// How many events of `phase` there were, timed or not (exact).
    pub fn phase_count(&self, phase: Phase) -> u64 {
        self.phase_counts[phase.index()]
    }

    /// The total latency of every event of `phase`, estimated from its sample
    /// ([`estimated_sum`]).
    pub fn phase_sum(&self, phase: Phase) -> Duration {
        estimated_sum(self.phase(phase), self.phase_count(phase))
    }

    /// Adds `other` into `self` (core becomes `None`).
    pub fn merge(&mut self, other: &CoreSnapshot) {
        self.core = None;
        self.client.merge(&other.client);
        self.server.merge(&other.server);
        self.stalls += other.stalls;
        self.recv_ring_dry += other.recv_ring_dry;
        self.recv_pool_bytes += other.recv_pool_bytes;
        if self.driver != other.driver {
            self.driver = None;
        }
        for p in &other.pools {
            match self.pools.iter_mut().find(|q| q.endpoint == p.endpoint) {
                Some(q) => {
                    q.hits += p.hits;
                    q.misses += p.misses;
                }
                None => self.pools.push(*p),
            }
        }
        endpoints::merge_into(&mut self.endpoints, &other.endpoints);
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.phase_counts.iter_mut().zip(&other.phase_counts) {
            *mine += theirs;
        }
        merge_methods(&mut self.client_methods, &other.client_methods);
        merge_methods(&mut self.server_methods, &other.server_methods);
    }
}

fn merge_methods(into: &mut Vec<MethodHistogram>, from: &[MethodHistogram]) {
    for m in from {
        match into.binary_search_by_key(&m.id, |x| x.id) {
            Ok(i) => {
                into[i].count += m.count;
                into[i].denied += m.denied;
                into[i].latency.merge(&m.latency);
            }
            Err(i) => into.insert(i, m.clone()),
        }
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
        total.driver = self.driver();
        total
    }

    /// The driver every core runs (`None` without cores, or if they differ).
    pub fn driver(&self) -> Option<crate::Driver> {
        let first = self.cores.first()?.driver;
        self.cores
            .iter()
            .all(|c| c.driver == first)
            .then_some(first)?
    }

    /// Prometheus text exposition (format 0.0.4): counters and gauges per core,
    /// latency summaries (p50/p95/p99/p99.9) per phase and method merged across
    /// cores, and the largest sample per phase.
    pub fn to_prometheus(&self) -> String {
        prometheus::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUT: (u32, &str) = (1, "Kv.put");
    const GET: (u32, &str) = (2, "Kv.get");

    fn method<'a>(list: &'a [MethodHistogram], name: &str) -> &'a MethodHistogram {
        list.iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no method {name} in {list:?}"))
    }

    /// A client alternating two methods: both are counted exactly and both
    /// get timed (each method has its own countdown, first call timed).
    #[test]
    fn alternating_client_methods_are_each_counted_and_timed() {
        let m = CoreMetrics::default();
        let calls = 1000;
        for i in 0..calls {
            let (id, name) = if i % 2 == 0 { PUT } else { GET };
            if m.client_call(id, name) {
                m.client_method(id, name, Duration::from_micros(10 + u64::from(id)));
            }
        }
        let snap = m.snapshot(Some(0));
        for (_, name) in [PUT, GET] {
            let h = method(&snap.client_methods, name);
            assert_eq!(h.count, calls / 2, "{name}");
            let timed = h.latency.count();
            // One in PHASE_SAMPLING on average: 62.5 expected of 500.
            assert!((30..=110).contains(&timed), "{name}: {timed} timed");
        }
        assert_eq!(snap.phase_count(Phase::ClientTotal), calls);
        assert_eq!(snap.phase_count(Phase::ClientDeliver), calls);
        let sum = method(&snap.client_methods, "Kv.get").sum();
        // Every get took 12 µs: the estimate is the exact sum within the histogram's precision.
        let exact = Duration::from_micros(12 * calls / 2).as_secs_f64();
        assert!((sum.as_secs_f64() - exact).abs() / exact < 0.01, "{sum:?}");
    }

    /// The server's flow (`conn::server`): `due` decides whether the handler is
    /// timed, `sampled` then `server_method` count the response. Alternating
    /// methods are both counted exactly and both timed, and only timed
    /// handler times are recorded.
    #[test]
    fn the_server_records_exactly_the_responses_it_timed() {
        let m = CoreMetrics::default();
        let real = Duration::from_micros(5);
        let calls = 2000;
        let mut timed = 0;
        for i in 0..calls {
            let (id, name) = if i % 2 == 0 { PUT } else { GET };
            let due = m.due(Phase::ServerHandler);
            // Not timed: the connection's stale reading, a meaningless value.
            let d = if due { real } else { Duration::from_secs(3600) };
            timed += u64::from(due);
            if m.sampled(Phase::ServerHandler) {
                m.server_method(id, name, d);
            }
        }
        let snap = m.snapshot(Some(0));
        let all = snap.phase(Phase::ServerHandler);
        assert_eq!(all.count(), timed);
        assert!(all.max() < Duration::from_micros(6), "{:?}", all.max());
        assert_eq!(snap.phase_count(Phase::ServerHandler), calls);
        for (_, name) in [PUT, GET] {
            let h = method(&snap.server_methods, name);
            assert_eq!(h.count, calls / 2, "{name}");
            assert!(h.latency.count() > 40, "{name}: {:?}", h.latency);
        }
    }

    #[test]
    fn every_event_is_counted_and_about_one_in_phase_sampling_timed() {
        let m = CoreMetrics::default();
        let events = 80_000u64;
        let mut timed = 0u64;
        for i in 0..events {
            let sampled = m.sampled(Phase::ServerQueue);
            assert!(i > 0 || sampled, "the first event is timed");
            timed += u64::from(sampled);
        }
        let expect = events / u64::from(PHASE_SAMPLING);
        assert!(timed.abs_diff(expect) < expect / 20, "{timed} of {events}");
        let snap = m.snapshot(None);
        assert_eq!(snap.phase_count(Phase::ServerQueue), events);
        assert_eq!(snap.phase_count(Phase::ServerWrite), 0);
        // A period-2 pattern over the timed events: both halves are hit.
        let m = CoreMetrics::default();
        let mut by_parity = [0u32; 2];
        for i in 0..1000 {
            if m.sampled(Phase::ClientWire) {
                by_parity[i % 2] += 1;
            }
        }
        assert!(by_parity.iter().all(|&n| n > 30), "{by_parity:?}");
    }

    #[test]
    fn merged_snapshots_add_counts_and_prometheus_exports_them() {
        let cores: Vec<CoreSnapshot> = (0..2)
            .map(|core| {
                let m = CoreMetrics::default();
                for _ in 0..10 {
                    if m.client_call(PUT.0, PUT.1) {
                        m.client_method(PUT.0, PUT.1, Duration::from_millis(1));
                    }
                    // The server side never timed one of these.
                    m.skip[Phase::ServerHandler.index()].set(u32::MAX);
                    m.server_method(GET.0, GET.1, Duration::from_secs(9));
                }
                m.snapshot(Some(core))
            })
            .collect();
        let snapshot = MetricsSnapshot { cores };
        let merged = snapshot.merged();
        assert_eq!(method(&merged.client_methods, "Kv.put").count, 20);
        assert_eq!(merged.phase_count(Phase::ClientTotal), 20);
        let get = method(&merged.server_methods, "Kv.get");
        assert_eq!((get.count, get.latency.count()), (20, 0));
        let text = snapshot.to_prometheus();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        let put = "ringrpc_client_method_latency_seconds";
        assert_eq!(line(&format!("{put}_count{{method=\"Kv.put\"}}")), 20.0);
        // Every put took 1 ms: the sum is 20 ms whatever the sample size.
        let sum = line(&format!("{put}_sum{{method=\"Kv.put\"}}"));
        assert!((sum - 0.020).abs() < 0.0002, "{sum}");
        let get = "ringrpc_server_method_latency_seconds";
        assert_eq!(line(&format!("{get}_count{{method=\"Kv.get\"}}")), 20.0);
        assert_eq!(line(&format!("{get}_sum{{method=\"Kv.get\"}}")), 0.0);
        assert!(line(&format!("{get}{{method=\"Kv.get\",quantile=\"0.5\"}}")).is_nan());
        let max = line("ringrpc_phase_latency_max_seconds{phase=\"client_total\"}");
        assert!((max - 0.001).abs() < 0.00002, "{max}");
    }
}
