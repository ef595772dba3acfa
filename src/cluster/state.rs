//! A cluster's per-core state: its endpoints, the balancer, the budgets and
//! counters, and the maintenance run on every tick (apply discovery changes,
//! end ejections whose period is over).
//!
//! Invariants: `ejected` equals the number of current endpoints whose health
//! says ejected; an endpoint removed by discovery leaves `endpoints` at once
//! (no new call picks it) and lives on only in the attempts still using it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use super::balancer::Balancer;
use super::budget::Tokens;
use super::builder::ClusterConfig;
use super::discover::EndpointSource;
use super::eject::Health;
use super::endpoint::{Endpoint, PeakEwma};
use super::hedge::Quantiles;
use super::{ClusterStats, EndpointStats};
use crate::metrics::counters::inc;
use crate::Error;

/// Cluster-wide counters (per core).
#[derive(Default)]
pub(crate) struct Counts {
    pub calls: Cell<u64>,
    pub retries: Cell<u64>,
    pub hedges: Cell<u64>,
    pub hedges_won: Cell<u64>,
    pub retry_budget_exhausted: Cell<u64>,
    pub hedge_budget_exhausted: Cell<u64>,
    pub ejections: Cell<u64>,
}

pub(crate) struct Inner {
    pub cfg: ClusterConfig,
    source: EndpointSource,
    /// The source generation applied last.
    seen: Cell<u64>,
    pub endpoints: RefCell<Vec<Rc<Endpoint>>>,
    /// `endpoints` holds more than one (kept by `reconcile`).
    several: Cell<bool>,
    next_id: Cell<u64>,
    pub balancer: Balancer,
    pub retry: Tokens,
    pub hedge: Option<Tokens>,
    pub quantiles: RefCell<Vec<Quantiles>>,
    ejected: Cell<usize>,
    /// Calls waiting for the first endpoints.
    waiters: RefCell<Vec<Waker>>,
    pub counts: Counts,
    closed: Cell<bool>,
}

impl Inner {
    pub fn new(cfg: ClusterConfig, source: EndpointSource) -> Self {
        let now = Instant::now();
        let seed = now.elapsed().as_nanos() as u64
            ^ (std::process::id() as u64).rotate_left(32)
            ^ (&source as *const _ as u64);
        Self {
            balancer: Balancer::new(cfg.balance, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            retry: Tokens::new(cfg.retry_budget, now),
            hedge: cfg.hedging.map(|h| Tokens::new(h.budget, now)),
            cfg,
            source,
            seen: Cell::new(0),
            endpoints: RefCell::new(Vec::new()),
            several: Cell::new(false),
            next_id: Cell::new(0),
            quantiles: RefCell::new(Vec::new()),
            ejected: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            counts: Counts::default(),
            closed: Cell::new(false),
        }
    }

    /// The maintenance step: applies a new discovery answer, ends ejections.
    pub fn sync(&self, now: Instant) {
        if self.closed.get() {
            return;
        }
        let generation = self.source.generation();
        if generation != self.seen.get() {
            self.seen.set(generation);
            self.reconcile(&self.source.endpoints(), now);
            for w in std::mem::take(&mut *self.waiters.borrow_mut()) {
                w.wake();
            }
        }
        self.retry.advance(now);
        if let Some(hedge) = &self.hedge {
            hedge.advance(now);
        }
        let endpoints = self.endpoints.borrow();
        for e in endpoints.iter() {
            e.health.roll(&self.cfg.ejection, now);
            let silent = e.went_silent();
            if e.health.is_ejected() {
                self.maybe_readmit(e, now);
            } else if e.client.is_down() || silent {
                // Active health: its pool cannot connect, or a connection
                // there stopped answering heartbeats (a half-open link or a
                // hung peer: reconnecting may succeed and hang again).
                self.eject(e, now);
            }
        }
    }

    fn maybe_readmit(&self, e: &Endpoint, now: Instant) {
        let Some(until) = e.health.ejected_until() else {
            return;
        };
        if now < until {
            return;
        }
        if e.client.is_up() {
            // Its estimate still carries the failures' penalties: start it
            // at the typical (not ejected) endpoint's, as a new one.
            e.ewma.reset(self.mean_cost(now), now);
            e.health.readmit(now);
            self.ejected.set(self.ejected.get().saturating_sub(1));
            e.cells.ejected.set(0);
            tracing::info!(endpoint = %e.addr(), "endpoint re-admitted");
        } else {
            e.health.extend(&self.cfg.ejection, now);
        }
    }

    /// Connects endpoints that appeared, drops (drains) those that left.
    fn reconcile(&self, list: &[SocketAddr], now: Instant) {
        let mut endpoints = self.endpoints.borrow_mut();
        endpoints.retain(|e| {
            let keep = list.contains(&e.addr());
            if !keep {
                tracing::info!(endpoint = %e.addr(), "endpoint removed; draining");
                if e.health.is_ejected() {
                    self.ejected.set(self.ejected.get().saturating_sub(1));
                    e.cells.ejected.set(0);
                }
            }
            keep
        });
        // A new endpoint starts at the others' mean estimate: as attractive
        // as a typical one, so it is warmed with real calls at once.
        let initial = mean_cost(&endpoints, now).unwrap_or(self.cfg.ewma_initial);
        for &addr in list {
            if endpoints.iter().any(|e| e.addr() == addr) {
                continue;
            }
            match self.cfg.client.connect(addr) {
                Ok(client) => {
                    let id = self.next_id.get();
                    self.next_id.set(id + 1);
                    endpoints.push(Rc::new(Endpoint {
                        id,
                        client,
                        in_flight: Cell::new(0),
                        ewma: PeakEwma::new(self.cfg.ewma_decay, initial, now),
                        health: Health::new(now),
                        cells: crate::metrics::local().endpoint_cells(addr),
                        silent: Cell::new(0),
                    }));
                    tracing::info!(endpoint = %addr, "endpoint added");
                }
                Err(e) => tracing::warn!(endpoint = %addr, error = %e, "cannot add endpoint"),
            }
        }
        self.several.set(endpoints.len() > 1);
    }

    /// The mean latency estimate of the endpoints that are not ejected.
    fn mean_cost(&self, now: Instant) -> Duration {
        mean_cost(&self.endpoints.borrow(), now).unwrap_or(self.cfg.ewma_initial)
    }

    /// Picks an endpoint for an attempt, waiting (until `deadline`) while the
    /// cluster has none yet.
    pub async fn pick(&self, tried: &[u64], deadline: Instant) -> Result<Rc<Endpoint>, Error> {
        loop {
            if self.closed.get() {
                return Err(Error::Shutdown);
            }
            if let Some(e) = self.pick_now(tried) {
                return Ok(e);
            }
            let wait = crate::runtime::io::until(deadline, self.changed()).await;
            if wait.is_none() {
                return Err(Error::Unavailable);
            }
        }
    }

    /// True when the cluster has more than one endpoint (to balance, weigh
    /// and hedge between); a cluster of one skips that bookkeeping.
    #[inline]
    pub fn several(&self) -> bool {
        self.several.get()
    }

    /// Picks an endpoint now, if the cluster has any.
    pub fn pick_now(&self, tried: &[u64]) -> Option<Rc<Endpoint>> {
        self.balancer.pick(&self.endpoints.borrow(), tried)
    }

    async fn changed(&self) {
        let waiters = &self.waiters;
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if std::mem::replace(&mut registered, true) {
                std::task::Poll::Ready(())
            } else {
                waiters.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Ejects `e` if the share rule allows it.
    pub fn eject(&self, e: &Endpoint, now: Instant) {
        if e.health.is_ejected() {
            return;
        }
        let n = self.endpoints.borrow().len();
        if self.ejected.get() >= self.cfg.ejection.max_ejected(n) {
            return;
        }
        let period = e.health.eject(&self.cfg.ejection, now);
        self.ejected.set(self.ejected.get() + 1);
        inc(&e.cells.ejections);
        e.cells.ejected.set(1);
        inc(&self.counts.ejections);
        tracing::warn!(endpoint = %e.addr(), ?period, "endpoint ejected");
    }

    /// Records the latency of a successful call of an idempotent method.
    pub fn record_latency(&self, method: u32, d: Duration) {
        let Some(h) = &self.cfg.hedging else { return };
        let mut qs = self.quantiles.borrow_mut();
        match qs.iter_mut().find(|q| q.method == method) {
            Some(q) => q.record(d, h.quantile),
            None => {
                let mut q = Quantiles::new(method);
                q.record(d, h.quantile);
                qs.push(q);
            }
        }
    }

    /// The hedge delay of `method`, once it has enough samples.
    pub fn hedge_delay(&self, method: u32) -> Option<Duration> {
        let h = self.cfg.hedging.as_ref()?;
        let qs = self.quantiles.borrow();
        let q = qs.iter().find(|q| q.method == method)?;
        q.delay().map(|d| d.max(h.min_delay))
    }

    /// Endpoints with a live connection.
    pub fn connected(&self) -> usize {
        self.endpoints
            .borrow()
            .iter()
            .filter(|e| e.client.is_up())
            .count()
    }

    pub fn stats(&self, now: Instant) -> ClusterStats {
        let c = &self.counts;
        ClusterStats {
            endpoints: self
                .endpoints
                .borrow()
                .iter()
                .map(|e| EndpointStats {
                    addr: e.addr(),
                    in_flight: e.in_flight.get(),
                    ejected: e.health.is_ejected(),
                    connected: e.client.is_up(),
                    latency_estimate: secs(e.ewma.cost(now)),
                })
                .collect(),
            calls: c.calls.get(),
            retries: c.retries.get(),
            hedges: c.hedges.get(),
            hedges_won: c.hedges_won.get(),
            retry_budget_exhausted: c.retry_budget_exhausted.get(),
            hedge_budget_exhausted: c.hedge_budget_exhausted.get(),
            ejections: c.ejections.get(),
        }
    }

    pub fn close(&self) {
        self.closed.set(true);
        let endpoints = std::mem::take(&mut *self.endpoints.borrow_mut());
        self.several.set(false);
        for e in endpoints {
            e.client.close();
        }
        for w in std::mem::take(&mut *self.waiters.borrow_mut()) {
            w.wake();
        }
    }
}

/// The mean latency estimate of the endpoints not ejected, if any.
fn mean_cost(endpoints: &[Rc<Endpoint>], now: Instant) -> Option<Duration> {
    let costs = endpoints
        .iter()
        .filter(|e| !e.health.is_ejected())
        .map(|e| e.ewma.cost(now));
    let (sum, n) = costs.fold((0.0, 0u32), |(s, n), c| (s + c, n + 1));
    (n > 0).then(|| secs(sum / f64::from(n)))
}

/// A duration from (finite, clamped) seconds.
pub(crate) fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.clamp(0.0, 1e9)).unwrap_or_default()
}
