//! One endpoint of a cluster on one core: its [`Client`] (the per-core pool
//! of persistent connections, unchanged), the calls the cluster has in flight
//! there, a peak-EWMA latency estimate, and its outlier-ejection state.
//!
//! Peak EWMA (Finagle, linkerd, tower): a latency above the estimate replaces
//! it at once (the peak), one below is blended in with weight
//! `1 − e^(−Δt/τ)`; between samples the estimate decays towards zero with the
//! same factor, so an endpoint that stopped getting calls is tried again.
//! The balancer's load is `estimate × (in_flight + 1)`.
//! Invariants: `in_flight` counts attempts started and not yet finished or
//! dropped (a guard decrements it); everything is core-local.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::eject::Health;
use crate::metrics::EndpointCells;
use crate::Client;

/// Peak-EWMA latency estimate.
pub(crate) struct PeakEwma {
    /// τ, in seconds (`as_secs_f64` needs no 128-bit arithmetic).
    tau: f64,
    /// The estimate, in seconds.
    cost: Cell<f64>,
    stamp: Cell<Instant>,
}

impl PeakEwma {
    pub fn new(tau: Duration, initial: Duration, now: Instant) -> Self {
        Self {
            tau: tau.as_secs_f64().max(1e-9),
            cost: Cell::new(initial.as_secs_f64()),
            stamp: Cell::new(now),
        }
    }

    fn decay(&self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.stamp.get())
            .as_secs_f64();
        let x = elapsed / self.tau;
        if x < 1e-3 {
            // Samples microseconds apart (τ is seconds): the series to x²
            // is exact to 2e-10, and spares the call path an `exp`.
            1.0 - x + 0.5 * x * x
        } else {
            (-x).exp()
        }
    }

    /// The estimate at `now` (decayed since the last sample), in seconds.
    pub fn cost(&self, now: Instant) -> f64 {
        self.cost.get() * self.decay(now)
    }

    /// Starts over from `cost` at `now` (a re-admitted endpoint).
    pub fn reset(&self, cost: Duration, now: Instant) {
        self.cost.set(cost.as_secs_f64());
        self.stamp.set(now);
    }

    /// Blends in a latency observed at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let cost = self.cost.get();
        let next = if rtt > cost {
            rtt
        } else {
            let w = self.decay(now);
            cost * w + rtt * (1.0 - w)
        };
        self.cost.set(next);
        self.stamp.set(now.max(self.stamp.get()));
    }
}

/// An endpoint of one cluster on one core.
pub(crate) struct Endpoint {
    /// Unique within the cluster (never reused, unlike indices).
    pub id: u64,
    pub client: Client,
    pub in_flight: Cell<u32>,
    pub ewma: PeakEwma,
    pub health: Health,
    pub cells: Rc<EndpointCells>,
    /// The pool's count of connections closed for an unanswered heartbeat,
    /// as of the cluster's last tick (a rise means the endpoint went silent).
    pub silent: Cell<u64>,
}

impl Endpoint {
    pub fn addr(&self) -> SocketAddr {
        self.client.endpoint()
    }

    /// True if a connection of its pool closed for an unanswered heartbeat
    /// since the last time this was asked.
    pub fn went_silent(&self) -> bool {
        let now = self.client.heartbeat_timeouts();
        now != self.silent.replace(now)
    }

    /// The balancer's load at `now`: latency estimate × (calls in flight + 1).
    #[inline]
    pub fn load(&self, now: Instant) -> f64 {
        self.ewma.cost(now) * f64::from(self.in_flight.get() + 1)
    }

    /// Marks an attempt started; the guard marks it finished when dropped.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        let c = &self.cells.in_flight;
        c.set(c.get() + 1);
        InFlight(self)
    }
}

/// An attempt in flight at an endpoint (decrements its count when dropped).
pub(crate) struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let e = self.0;
        e.in_flight.set(e.in_flight.get().saturating_sub(1));
        let c = &e.cells.in_flight;
        c.set(c.get().saturating_sub(1));
    }
}
