//! Measurement helpers shared by the ringrpc bench and the raw-socket floors:
//! the warmup/measure window, latency histograms and per-worker tallies.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Lowest recordable latency, in microseconds.
const LOWEST_US: u64 = 1;
/// Highest recordable latency, in microseconds (60 s).
const HIGHEST_US: u64 = 60_000_000;
/// Significant figures kept by the histograms.
const SIGFIGS: u8 = 3;

/// An on/off command-line switch (`--metrics on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// Whether the switch is on.
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// Parses a positive, finite number of seconds (`"2"`, `"0.5"`).
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if secs < 0.0 {
        return Err("must not be negative".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parses a rate in calls per second: a finite number above zero.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err("must be a finite number of calls per second above 0".into())
    }
}

/// Parses a count that must be at least 1.
pub fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub use ringrpc_floor::Window;

/// An empty latency histogram (1 µs ..= 60 s, 3 significant figures).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIGS)
        .expect("static histogram bounds are valid")
}

/// Records `latency` in `hist` in whole microseconds (at least 1 µs, at most 60 s).
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.max(LOWEST_US));
}

/// What one worker (caller task or floor thread) measured.
#[derive(Debug)]
pub struct Tally {
    /// Latencies of successful calls started inside the window, in µs.
    pub hist: Histogram<u64>,
    /// Failed calls (at any time, warmup included).
    pub errors: u64,
    /// The first failure's description, if any.
    pub first_error: Option<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self {
            hist: histogram(),
            errors: 0,
            first_error: None,
        }
    }

    /// Records a call started at `started` that succeeded just now.
    pub fn ok(&mut self, window: &Window, started: Instant) {
        if window.counts(started) {
            record(&mut self.hist, started.elapsed());
        }
    }

    /// Records a failed call.
    pub fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}
