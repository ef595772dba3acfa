//! Passive outlier ejection (Envoy's outlier detection, Finagle's failure
//! accrual): an endpoint with `consecutive` failed attempts in a row, or more
//! than `failure_rate` of at least `min_calls` attempts failed within one
//! `interval`, is ejected — the balancer skips it — for a backoff period
//! that doubles each time it is ejected again soon after coming back (up to
//! `max_backoff`).
//!
//! An attempt that fails on a connection error (`ConnectionLost`, `NotSent`,
//! `Unavailable`) and leaves the endpoint's pool without a live connection
//! ejects it at once: it is down, not merely failing.
//! Active health: an endpoint whose pool cannot connect (every slot's last
//! connect attempt failed), or one of whose connections was closed because a
//! heartbeat went unanswered (a hung peer or a half-open link, where a
//! reconnect may succeed and hang again), is ejected on the cluster's next
//! tick, even if no call failed there. Coming back is gated by active health
//! too: once its period ends, an ejected endpoint is re-admitted only if its
//! pool has a live connection (the pool reconnects in the background and
//! pings idle connections, see `ClientBuilder::heartbeat_interval`);
//! otherwise the period is extended.
//! A re-admitted endpoint is on probation: its first failure ejects it again.
//! The cluster never ejects more than `max_ejected_share` of its endpoints
//! (at least one), Envoy's `max_ejection_percent`.
//! Invariant: an endpoint is ejected iff `until` is set; the cluster's count
//! of ejected endpoints changes only through [`Health::eject`] and
//! [`Health::readmit`].

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::protocol::ErrorCode;
use crate::Error;

/// Settings of outlier ejection (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ejection {
    /// Failed attempts in a row that eject an endpoint (default 5).
    pub consecutive: u32,
    /// Share of failed attempts within `interval` that ejects it (default 0.5).
    pub failure_rate: f64,
    /// Fewest attempts within `interval` before the rate counts (default 20).
    pub min_calls: u32,
    /// Length of the failure-rate window (default 1 s).
    pub interval: Duration,
    /// First ejection period (default 1 s); doubled on each quick repeat.
    pub base_backoff: Duration,
    /// Longest ejection period (default 30 s).
    pub max_backoff: Duration,
    /// Most endpoints ejected at once, as a share of all (default 0.5; at
    /// least one endpoint can always be ejected).
    pub max_ejected_share: f64,
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            consecutive: 5,
            failure_rate: 0.5,
            min_calls: 20,
            interval: Duration::from_secs(1),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_ejected_share: 0.5,
        }
    }
}

impl Ejection {
    /// Ejection turned off: endpoints are never ejected.
    pub fn off() -> Self {
        Self {
            max_ejected_share: 0.0,
            consecutive: u32::MAX,
            min_calls: u32::MAX,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let share = (0.0..=1.0).contains(&self.max_ejected_share);
        let rate = self.failure_rate > 0.0 && self.failure_rate <= 1.0;
        let times = !self.interval.is_zero() && self.base_backoff <= self.max_backoff;
        if share && rate && times && self.consecutive > 0 {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "ejection: need consecutive > 0, 0 < failure_rate ≤ 1, \
                 0 ≤ max_ejected_share ≤ 1, interval > 0, base_backoff ≤ max_backoff ({self:?})"
            )))
        }
    }

    /// How many of `n` endpoints may be ejected at once.
    pub(crate) fn max_ejected(&self, n: usize) -> usize {
        if self.max_ejected_share <= 0.0 {
            return 0;
        }
        ((n as f64 * self.max_ejected_share).floor() as usize).max(1)
    }
}

/// Whether an attempt's error counts against the endpoint: connection
/// failures, timeouts, refusals and crashes do; errors the caller caused (an
/// application error, an unknown method, an invalid request) do not.
pub(crate) fn endpoint_failure(e: &Error) -> bool {
    match e {
        Error::Remote { code, .. } => !matches!(
            code,
            ErrorCode::Application | ErrorCode::UnknownMethod | ErrorCode::InvalidRequest
        ),
        Error::Application(_) | Error::Decode(_) | Error::Config(_) => false,
        _ => true,
    }
}

/// What an attempt's outcome did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// The endpoint should be ejected (if the share allows).
    Eject,
}

/// One endpoint's failure accounting and ejection state.
pub(crate) struct Health {
    consecutive: Cell<u32>,
    window_start: Cell<Instant>,
    window_calls: Cell<u32>,
    window_failed: Cell<u32>,
    /// Ejected until then.
    until: Cell<Option<Instant>>,
    /// Ejections in a row (each one soon after the previous ended).
    repeats: Cell<u32>,
    /// When the last ejection ended (for the repeat rule).
    last_back: Cell<Option<Instant>>,
    probation: Cell<bool>,
}

impl Health {
    pub fn new(now: Instant) -> Self {
        Self {
            consecutive: Cell::new(0),
            window_start: Cell::new(now),
            window_calls: Cell::new(0),
            window_failed: Cell::new(0),
            until: Cell::new(None),
            repeats: Cell::new(0),
            last_back: Cell::new(None),
            probation: Cell::new(false),
        }
    }

    pub fn is_ejected(&self) -> bool {
        self.until.get().is_some()
    }

    /// When the ejection period ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.until.get()
    }

    /// Starts a new failure-rate window if the current one is over at `now`
    /// (the cluster's tick calls it, so recording needs no clock).
    pub fn roll(&self, cfg: &Ejection, now: Instant) {
        if now.saturating_duration_since(self.window_start.get()) >= cfg.interval {
            self.window_start.set(now);
            self.window_calls.set(0);
            self.window_failed.set(0);
        }
    }

    /// Counts an attempt's outcome.
    #[inline]
    pub fn record(&self, cfg: &Ejection, failed: bool) -> Verdict {
        let calls = self.window_calls.get().saturating_add(1);
        self.window_calls.set(calls);
        if !failed {
            self.consecutive.set(0);
            self.probation.set(false);
            return Verdict::Fine;
        }
        let failed = self.window_failed.get().saturating_add(1);
        self.window_failed.set(failed);
        let run = self.consecutive.get().saturating_add(1);
        self.consecutive.set(run);
        let rate =
            calls >= cfg.min_calls && f64::from(failed) > cfg.failure_rate * f64::from(calls);
        if self.is_ejected() {
            Verdict::Fine
        } else if run >= cfg.consecutive || rate || self.probation.get() {
            Verdict::Eject
        } else {
            Verdict::Fine
        }
    }

    /// Ejects the endpoint at `now`; returns the period.
    pub fn eject(&self, cfg: &Ejection, now: Instant) -> Duration {
        let soon = self
            .last_back
            .get()
            .is_some_and(|back| now.saturating_duration_since(back) < cfg.max_backoff);
        let repeats = if soon { self.repeats.get() + 1 } else { 0 };
        self.repeats.set(repeats);
        let period = cfg
            .base_backoff
            .saturating_mul(1u32 << repeats.min(20))
            .min(cfg.max_backoff);
        self.until.set(Some(now + period));
        self.consecutive.set(0);
        period
    }

    /// Extends an ejection whose period ended while the endpoint was down.
    pub fn extend(&self, cfg: &Ejection, now: Instant) {
        self.until.set(Some(now + cfg.base_backoff));
    }

    /// Ends the ejection at `now`: the endpoint takes calls again, on probation.
    pub fn readmit(&self, now: Instant) {
        self.until.set(None);
        self.last_back.set(Some(now));
        self.probation.set(true);
        self.consecutive.set(0);
        self.window_start.set(now);
        self.window_calls.set(0);
        self.window_failed.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> Ejection {
        Ejection {
            consecutive: 3,
            min_calls: 10,
            failure_rate: 0.5,
            base_backoff: 100 * MS,
            max_backoff: 350 * MS,
            ..Ejection::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let (cfg, t) = (cfg(), Instant::now());
        let h = Health::new(t);
        assert_eq!(h.record(&cfg, true), Verdict::Fine);
        assert_eq!(h.record(&cfg, true), Verdict::Fine);
        assert_eq!(h.record(&cfg, false), Verdict::Fine);
        assert_eq!(h.record(&cfg, true), Verdict::Fine);
        assert_eq!(h.record(&cfg, true), Verdict::Fine);
        assert_eq!(h.record(&cfg, true), Verdict::Eject);
    }

    #[test]
    fn a_failure_rate_over_the_threshold_ejects() {
        let cfg = Ejection {
            consecutive: 100,
            ..cfg()
        };
        let t = Instant::now();
        let h = Health::new(t);
        let mut verdicts = Vec::new();
        for i in 0..12 {
            verdicts.push(h.record(&cfg, i % 3 != 0));
        }
        // The 10th call succeeds; the 11th fails: 7 of 11 (> 50% of ≥ 10).
        let first = verdicts.iter().position(|v| *v == Verdict::Eject);
        assert_eq!(first, Some(10), "{verdicts:?}");
        // A new window forgets the old failures.
        let h = Health::new(t);
        for i in 0..9 {
            h.record(&cfg, i % 3 != 0);
        }
        h.roll(&cfg, t + cfg.interval);
        assert_eq!(h.record(&cfg, true), Verdict::Fine);
    }

    #[test]
    fn repeated_ejections_back_off_and_probation_re_ejects_at_once() {
        let (cfg, t) = (cfg(), Instant::now());
        let h = Health::new(t);
        assert_eq!(h.eject(&cfg, t), 100 * MS);
        assert!(h.is_ejected());
        h.readmit(t + 100 * MS);
        assert!(!h.is_ejected());
        assert_eq!(h.record(&cfg, true), Verdict::Eject, "probation");
        assert_eq!(h.eject(&cfg, t + 101 * MS), 200 * MS);
        h.readmit(t + 301 * MS);
        assert_eq!(h.eject(&cfg, t + 302 * MS), 350 * MS, "capped");
        // Long healthy after coming back: the period starts over.
        h.readmit(t + 700 * MS);
        assert_eq!(h.record(&cfg, false), Verdict::Fine);
        assert_eq!(h.eject(&cfg, t + 2000 * MS), 100 * MS);
    }

    #[test]
    fn the_share_rule_always_allows_one() {
        let cfg = Ejection::default();
        assert_eq!(cfg.max_ejected(1), 1);
        assert_eq!(cfg.max_ejected(3), 1);
        assert_eq!(cfg.max_ejected(10), 5);
        assert_eq!(Ejection::off().max_ejected(10), 0);
        assert!(Ejection::off().validate().is_ok());
        let bad = Ejection {
            max_ejected_share: 1.5,
            ..cfg
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn caller_errors_do_not_count_against_the_endpoint() {
        let remote = |code| Error::Remote {
            code,
            message: String::new(),
        };
        assert!(endpoint_failure(&Error::ConnectionLost));
        assert!(endpoint_failure(&Error::Timeout));
        assert!(endpoint_failure(&remote(ErrorCode::Panicked)));
        assert!(!endpoint_failure(&remote(ErrorCode::Application)));
        assert!(!endpoint_failure(&remote(ErrorCode::UnknownMethod)));
    }
}
