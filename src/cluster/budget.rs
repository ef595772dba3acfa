//! Budgets for extra calls (retries, hedges): at most `ratio` extra calls per
//! call made over a sliding window, plus a floor of `min_per_sec` so that a
//! client making few calls can still retry (Finagle's `RetryBudget`).
//!
//! The window is a ring of [`BUCKETS`] buckets, each `window / BUCKETS` long,
//! counting calls made and extra calls spent; a bucket older than the window
//! is reset when the ring comes back to it. Invariant: over any window,
//! extra calls spent ≤ `ratio` × calls made + `min_per_sec` × window length
//! (up to one bucket of slack at the window's edge).
//! Core-local: `Cell`s, no atomics. A call costs one increment: the window
//! is moved forward by the cluster's tick ([`Tokens::advance`]) and by a
//! withdrawal, not by deposits.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::Error;

/// Buckets in the sliding window.
const BUCKETS: usize = 10;

/// Settings of a budget of extra calls (retries or hedges).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Extra calls allowed per call made (e.g. 0.1: at most 10% more calls).
    pub ratio: f64,
    /// Extra calls allowed per second whatever the traffic (the floor).
    pub min_per_sec: f64,
    /// How far back calls made and extra calls spent are counted.
    pub window: Duration,
}

impl Budget {
    /// `ratio` extra calls per call plus `min_per_sec`, over a 10 s window.
    pub fn new(ratio: f64, min_per_sec: f64) -> Self {
        Self {
            ratio,
            min_per_sec,
            window: Duration::from_secs(10),
        }
    }

    /// An empty budget: no extra call is ever allowed.
    pub fn none() -> Self {
        Self::new(0.0, 0.0)
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), Error> {
        let ok = self.ratio.is_finite()
            && self.ratio >= 0.0
            && self.min_per_sec.is_finite()
            && self.min_per_sec >= 0.0
            && self.window >= Duration::from_millis(BUCKETS as u64);
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{what}: ratio and min_per_sec must be finite and ≥ 0, window ≥ 10 ms ({self:?})"
            )))
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    calls: u32,
    spent: u32,
}

/// A budget's state on one core.
pub(crate) struct Tokens {
    cfg: Budget,
    slice: Duration,
    buckets: [Cell<Bucket>; BUCKETS],
    /// Index of the current bucket and when it ends.
    current: Cell<usize>,
    ends: Cell<Instant>,
}

impl Tokens {
    pub fn new(cfg: Budget, now: Instant) -> Self {
        let slice = cfg.window / BUCKETS as u32;
        Self {
            cfg,
            slice,
            buckets: Default::default(),
            current: Cell::new(0),
            ends: Cell::new(now + slice),
        }
    }

    /// Moves the current bucket forward to the one holding `now`, resetting
    /// the buckets it passes.
    #[inline]
    pub fn advance(&self, now: Instant) {
        if now < self.ends.get() {
            return;
        }
        let mut ends = self.ends.get();
        let mut current = self.current.get();
        for _ in 0..BUCKETS {
            current = (current + 1) % BUCKETS;
            self.buckets[current].set(Bucket::default());
            ends += self.slice;
            if now < ends {
                break;
            }
        }
        if now >= ends {
            // Idle for more than a window: every bucket is reset already.
            ends = now + self.slice;
        }
        self.current.set(current);
        self.ends.set(ends);
    }

    /// Counts a call made (it earns `ratio` extra calls), in the current
    /// bucket.
    #[inline]
    pub fn deposit(&self) {
        let cell = &self.buckets[self.current.get()];
        let mut b = cell.get();
        b.calls = b.calls.saturating_add(1);
        cell.set(b);
    }

    /// Takes one extra call at `now` if the budget allows it.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        self.advance(now);
        let (calls, spent) = self.buckets.iter().fold((0u64, 0u64), |(c, s), b| {
            let b = b.get();
            (c + u64::from(b.calls), s + u64::from(b.spent))
        });
        let allowed =
            self.cfg.ratio * calls as f64 + self.cfg.min_per_sec * self.cfg.window.as_secs_f64();
        if (spent + 1) as f64 > allowed {
            return false;
        }
        let cell = &self.buckets[self.current.get()];
        let mut b = cell.get();
        b.spent += 1;
        cell.set(b);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_calls_stay_within_ratio_plus_floor() {
        let t0 = Instant::now();
        let tokens = Tokens::new(Budget::new(0.1, 1.0), t0);
        // 10 s window: the floor alone allows 10 extra calls.
        let floor = (0..100).filter(|_| tokens.try_withdraw(t0)).count();
        assert_eq!(floor, 10);
        for _ in 0..1000 {
            tokens.deposit();
        }
        let earned = (0..1000).filter(|_| tokens.try_withdraw(t0)).count();
        assert_eq!(earned, 100, "10% of 1000 calls");
    }

    #[test]
    fn the_window_forgets_old_calls_and_spending() {
        let t0 = Instant::now();
        let tokens = Tokens::new(Budget::new(0.5, 0.0), t0);
        for _ in 0..10 {
            tokens.deposit();
        }
        assert_eq!((0..10).filter(|_| tokens.try_withdraw(t0)).count(), 5);
        // Half a window later both calls and spending still count.
        let mid = t0 + Duration::from_secs(5);
        assert!(!tokens.try_withdraw(mid));
        // A window and a bucket later, everything has been forgotten.
        let later = t0 + Duration::from_secs(11);
        assert!(!tokens.try_withdraw(later), "no calls made: nothing earned");
        tokens.advance(later);
        tokens.deposit();
        tokens.deposit();
        assert!(tokens.try_withdraw(later));
        assert!(!tokens.try_withdraw(later));
        // After a long idle period the ring restarts cleanly.
        let much_later = t0 + Duration::from_secs(3600);
        tokens.advance(much_later);
        tokens.deposit();
        tokens.deposit();
        assert!(tokens.try_withdraw(much_later));
    }

    #[test]
    fn invalid_budgets_are_refused() {
        assert!(Budget::new(-0.1, 0.0).validate("retry").is_err());
        assert!(Budget::new(f64::NAN, 0.0).validate("retry").is_err());
        assert!(Budget::new(0.1, f64::INFINITY).validate("retry").is_err());
        assert!(Budget::new(0.1, 10.0).validate("retry").is_ok());
        assert!(Budget::none().validate("hedge").is_ok());
    }
}
