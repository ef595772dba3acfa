//! Latency histograms: HDR histograms in nanoseconds, 2 significant digits.
//!
//! Recording is a few arithmetic operations and one increment, with no
//! allocation; histograms are only merged (and allocated) when read.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest value tracked: 60 s in ns (larger values are clamped).
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram (ns resolution, ~1% precision, 1 ns ..= 60 s).
#[derive(Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            // Bounds are constants and valid (low 1, high > 2 * low, 2 sigfigs).
            inner: Histogram::new_with_bounds(1, MAX_NS, 2)
                .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!())),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LatencyHistogram(n={}, p50={:?})",
            self.count(),
            self.quantile(0.5)
        )
    }
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Records one duration given in microseconds.
    pub fn record_us(&mut self, us: u32) {
        self.record(Duration::from_micros(u64::from(us)));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.inner.add(&other.inner);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The value at quantile `q` (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.inner.value_at_quantile(q))
    }

    /// The largest sample.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.inner.max())
    }

    /// Sum of all samples (from bucket midpoints; within the histogram's precision).
    pub fn sum(&self) -> Duration {
        let mean = self.inner.mean();
        Duration::from_secs_f64(mean * self.inner.len() as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = LatencyHistogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.02, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.02, "p99 {p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn merge_adds_counts_and_extremes_clamp() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(Duration::ZERO);
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!(a.max() <= Duration::from_secs(61));
    }
}
