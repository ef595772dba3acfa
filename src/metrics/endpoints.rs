//! Per-endpoint metrics of cluster clients ([`crate::cluster`]): in-flight
//! calls, calls and failures, ejections, retries and hedges sent and won,
//! budget refusals, and a sampled latency histogram.
//!
//! Every cluster on a core that calls one endpoint shares that endpoint's
//! [`EndpointCells`] (one `Rc`, registered in the core's metrics on first
//! use), so a snapshot has one [`EndpointCounts`] per endpoint per core.
//! Updates are `Cell` increments on the calling core; about one call in
//! [`PHASE_SAMPLING`](super::PHASE_SAMPLING) is timed into the histogram.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::Duration;

use super::counters::inc;
use super::{LatencyHistogram, MetricsSnapshot, PHASE_SAMPLING};

/// One endpoint's live cells on one core.
pub(crate) struct EndpointCells {
    pub endpoint: SocketAddr,
    pub in_flight: Cell<u64>,
    pub calls: Cell<u64>,
    pub failures: Cell<u64>,
    pub ejections: Cell<u64>,
    pub ejected: Cell<u64>,
    pub retries: Cell<u64>,
    pub hedges: Cell<u64>,
    pub hedges_won: Cell<u64>,
    pub retry_budget_exhausted: Cell<u64>,
    pub hedge_budget_exhausted: Cell<u64>,
    skip: Cell<u32>,
    latency: RefCell<LatencyHistogram>,
}

impl EndpointCells {
    pub fn new(endpoint: SocketAddr) -> Self {
        Self {
            endpoint,
            in_flight: Cell::new(0),
            calls: Cell::new(0),
            failures: Cell::new(0),
            ejections: Cell::new(0),
            ejected: Cell::new(0),
            retries: Cell::new(0),
            hedges: Cell::new(0),
            hedges_won: Cell::new(0),
            retry_budget_exhausted: Cell::new(0),
            hedge_budget_exhausted: Cell::new(0),
            skip: Cell::new(0),
            latency: RefCell::new(LatencyHistogram::default()),
        }
    }

    /// Counts a finished call; records its latency (`latency()`, only
    /// evaluated then) when it is the sampled one.
    #[inline]
    pub fn finished_with(&self, ok: bool, latency: impl FnOnce() -> Duration) {
        inc(&self.calls);
        if !ok {
            inc(&self.failures);
        }
        match self.skip.get() {
            0 => {
                // Every PHASE_SAMPLING-th call; calls are not periodic in latency.
                self.skip.set(PHASE_SAMPLING - 1);
                self.latency.borrow_mut().record(latency());
            }
            n => self.skip.set(n - 1),
        }
    }

    pub fn snapshot(&self) -> EndpointCounts {
        EndpointCounts {
            endpoint: self.endpoint,
            in_flight: self.in_flight.get(),
            calls: self.calls.get(),
            failures: self.failures.get(),
            ejections: self.ejections.get(),
            ejected: self.ejected.get(),
            retries: self.retries.get(),
            hedges: self.hedges.get(),
            hedges_won: self.hedges_won.get(),
            retry_budget_exhausted: self.retry_budget_exhausted.get(),
            hedge_budget_exhausted: self.hedge_budget_exhausted.get(),
            latency: self.latency.borrow().clone(),
        }
    }
}

/// A cluster's view of one endpoint on one core (or merged across cores).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointCounts {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// Cluster calls (attempts, hedges included) in flight to it now.
    pub in_flight: u64,
    /// Attempts that finished (hedges and retries included; cancelled hedge
    /// losers are not counted).
    pub calls: u64,
    /// Attempts that failed for a reason the endpoint answers for (not an
    /// application error or a bad request).
    pub failures: u64,
    /// Times it was ejected by outlier detection.
    pub ejections: u64,
    /// 1 while it is ejected (summed when merged: cores ejecting it).
    pub ejected: u64,
    /// Retries sent to it.
    pub retries: u64,
    /// Hedged copies sent to it.
    pub hedges: u64,
    /// Hedged copies sent to it that answered first.
    pub hedges_won: u64,
    /// Retries refused by the retry budget after an attempt here failed.
    pub retry_budget_exhausted: u64,
    /// Hedges refused by the hedging budget while a call here was slow.
    pub hedge_budget_exhausted: u64,
    /// Latency of about one attempt in [`PHASE_SAMPLING`].
    pub latency: LatencyHistogram,
}

impl EndpointCounts {
    /// Adds `other` (same endpoint) into `self`.
    pub fn merge(&mut self, other: &EndpointCounts) {
        self.in_flight += other.in_flight;
        self.calls += other.calls;
        self.failures += other.failures;
        self.ejections += other.ejections;
        self.ejected += other.ejected;
        self.retries += other.retries;
        self.hedges += other.hedges;
        self.hedges_won += other.hedges_won;
        self.retry_budget_exhausted += other.retry_budget_exhausted;
        self.hedge_budget_exhausted += other.hedge_budget_exhausted;
        self.latency.merge(&other.latency);
    }
}

/// Merges `from` into `into` by endpoint.
pub(crate) fn merge_into(into: &mut Vec<EndpointCounts>, from: &[EndpointCounts]) {
    for e in from {
        match into.iter_mut().find(|x| x.endpoint == e.endpoint) {
            Some(x) => x.merge(e),
            None => into.push(e.clone()),
        }
    }
}

type Field = fn(&EndpointCounts) -> u64;

const FAMILIES: [(&str, &str, &str, Field); 10] = [
    (
        "ringrpc_endpoint_in_flight",
        "gauge",
        "Cluster calls in flight to the endpoint.",
        |e| e.in_flight,
    ),
    (
        "ringrpc_endpoint_calls_total",
        "counter",
        "Cluster attempts to the endpoint that finished.",
        |e| e.calls,
    ),
    (
        "ringrpc_endpoint_failures_total",
        "counter",
        "Cluster attempts to the endpoint that failed.",
        |e| e.failures,
    ),
    (
        "ringrpc_endpoint_ejections_total",
        "counter",
        "Times outlier detection ejected the endpoint.",
        |e| e.ejections,
    ),
    (
        "ringrpc_endpoint_ejected",
        "gauge",
        "1 while the endpoint is ejected.",
        |e| e.ejected,
    ),
    (
        "ringrpc_endpoint_retries_total",
        "counter",
        "Retries sent to the endpoint.",
        |e| e.retries,
    ),
    (
        "ringrpc_endpoint_hedges_total",
        "counter",
        "Hedged copies sent to the endpoint.",
        |e| e.hedges,
    ),
    (
        "ringrpc_endpoint_hedges_won_total",
        "counter",
        "Hedged copies to the endpoint that answered first.",
        |e| e.hedges_won,
    ),
    (
        "ringrpc_endpoint_retry_budget_exhausted_total",
        "counter",
        "Retries refused by the retry budget after a failure at the endpoint.",
        |e| e.retry_budget_exhausted,
    ),
    (
        "ringrpc_endpoint_hedge_budget_exhausted_total",
        "counter",
        "Hedges refused by the hedging budget while a call at the endpoint was slow.",
        |e| e.hedge_budget_exhausted,
    ),
];

/// Renders the endpoint families: counters per core and endpoint, latency
/// as a summary per endpoint merged across cores.
pub(super) fn render(out: &mut String, snapshot: &MetricsSnapshot, cores: &[String]) {
    for (name, kind, help, value) in FAMILIES {
        super::prometheus::header(out, name, kind, help);
        for (core, snap) in cores.iter().zip(&snapshot.cores) {
            for e in &snap.endpoints {
                super::prometheus::endpoint_line(out, name, core, e.endpoint, value(e));
            }
        }
    }
    let name = "ringrpc_endpoint_latency_seconds";
    super::prometheus::header(
        out,
        name,
        "summary",
        "Cluster attempt latency per endpoint.",
    );
    let mut merged = Vec::new();
    for snap in &snapshot.cores {
        merge_into(&mut merged, &snap.endpoints);
    }
    for e in &merged {
        let labels = format!("endpoint=\"{}\"", e.endpoint);
        super::prometheus::summary(out, name, &labels, &e.latency, e.calls);
    }
}
