//! Hedged requests (Dean & Barroso, "The Tail at Scale"; brpc's backup
//! requests): when a call of an idempotent method has not answered after the
//! method's observed latency quantile (default p95), a second copy goes to
//! another endpoint; the first reply wins and the other attempt is dropped,
//! which sends its server a cancel frame (a late reply is dropped by the
//! call table's generation check).
//!
//! The delay comes from a per-method [`Quantiles`] tracker: a log-scale
//! histogram (4 buckets per octave, ~19% resolution, 1 µs to ~16 s) of recent
//! latencies, halved whenever it holds [`DECAY_AT`] samples so it follows
//! changes, with the quantile recomputed every [`REFRESH`] samples. No hedge
//! is sent before a method has [`MIN_SAMPLES`] samples.
//! Invariant: hedges are bounded by the hedging budget (`budget.rs`).

use std::time::Duration;

use super::budget::Budget;
use crate::Error;

/// Settings of hedging (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedging {
    /// Latency quantile of the method after which a hedge is sent (default 0.95).
    pub quantile: f64,
    /// Shortest hedge delay, whatever the quantile (default 100 µs).
    pub min_delay: Duration,
    /// Budget of hedges (default 5% of calls, no floor).
    pub budget: Budget,
}

impl Default for Hedging {
    fn default() -> Self {
        Self {
            quantile: 0.95,
            min_delay: Duration::from_micros(100),
            budget: Budget::new(0.05, 0.0),
        }
    }
}

impl Hedging {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(Error::Config(format!(
                "hedging: quantile must be in (0, 1), got {}",
                self.quantile
            )));
        }
        self.budget.validate("hedging budget")
    }
}

/// Samples a method needs before it is hedged.
pub(crate) const MIN_SAMPLES: u32 = 50;
/// The histogram is halved when it holds this many samples.
const DECAY_AT: u32 = 4096;
/// The quantile is recomputed every this many samples.
const REFRESH: u32 = 32;
/// Buckets per octave.
const PER_OCTAVE: f64 = 4.0;
const BUCKETS: usize = 96;

/// Recent latencies of one method and its cached hedge delay.
pub(crate) struct Quantiles {
    pub method: u32,
    counts: [u32; BUCKETS],
    total: u32,
    since_refresh: u32,
    delay: Option<Duration>,
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * PER_OCTAVE) as usize + 1).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn upper_of(i: usize) -> Duration {
    Duration::from_secs_f64((i as f64 / PER_OCTAVE).exp2() * 1e-6)
}

impl Quantiles {
    pub fn new(method: u32) -> Self {
        Self {
            method,
            counts: [0; BUCKETS],
            total: 0,
            since_refresh: 0,
            delay: None,
        }
    }

    /// Records a latency; refreshes the delay every [`REFRESH`] samples.
    pub fn record(&mut self, d: Duration, quantile: f64) {
        self.counts[bucket_of(d)] += 1;
        self.total += 1;
        if self.total >= DECAY_AT {
            self.total = 0;
            for c in &mut self.counts {
                *c /= 2;
                self.total += *c;
            }
        }
        self.since_refresh += 1;
        if self.since_refresh >= REFRESH {
            self.since_refresh = 0;
            self.delay = self.quantile(quantile);
        }
    }

    /// The latency below which `q` of the recorded calls finished (the
    /// upper bound of its bucket), if there are enough samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total < MIN_SAMPLES {
            return None;
        }
        let rank = (q * f64::from(self.total)).ceil() as u32;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank.max(1) {
                return Some(upper_of(i));
            }
        }
        Some(upper_of(BUCKETS - 1))
    }

    /// The current hedge delay, if the method has enough samples.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantile_follows_the_samples_within_a_bucket() {
        let mut q = Quantiles::new(1);
        for i in 0..1000u64 {
            // 97% at ~100 µs, 3% at 5 ms.
            let d = if i % 33 == 0 { 5000 } else { 100 };
            q.record(Duration::from_micros(d), 0.95);
        }
        let p95 = q.delay().expect("enough samples");
        assert!(
            p95 >= Duration::from_micros(100) && p95 < Duration::from_micros(125),
            "{p95:?}"
        );
        let p99 = q.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(5) && p99 < Duration::from_micros(6000));
    }

    #[test]
    fn no_delay_before_enough_samples_and_old_samples_fade() {
        let mut q = Quantiles::new(1);
        for _ in 0..(MIN_SAMPLES - 1) {
            q.record(Duration::from_micros(50), 0.95);
        }
        assert_eq!(q.quantile(0.95), None);
        for _ in 0..(4 * DECAY_AT) {
            q.record(Duration::from_millis(2), 0.95);
        }
        let p50 = q.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(2), "{p50:?}");
        assert!(Hedging::default().validate().is_ok());
        let bad = Hedging {
            quantile: 1.0,
            ..Hedging::default()
        };
        assert!(bad.validate().is_err());
    }
}
