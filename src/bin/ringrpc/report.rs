//! The results table: one [`Row`] per measurement, printed as it completes,
//! then the ringrpc-to-floor ratios.

use std::io::Write;
use std::time::Duration;

use crate::measure::Tally;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran: `ringrpc`, `floor/blocking`, `floor/pipelined`.
    pub label: &'static str,
    /// Concurrent calls (per client core for ringrpc; the window for floors).
    pub in_flight: usize,
    /// Connections per client core (`None` for the single-socket floors).
    pub pool: Option<usize>,
    /// Payload bytes per message.
    pub payload: usize,
    /// Successful calls per second over the measurement window.
    pub calls_per_sec: f64,
    /// Median latency, µs.
    pub p50: u64,
    /// 99th percentile latency, µs.
    pub p99: u64,
    /// 99.9th percentile latency, µs.
    pub p999: u64,
    /// Largest latency, µs.
    pub max: u64,
    /// Failed calls.
    pub errors: u64,
}

impl Row {
    /// Builds a row from a merged tally measured over `duration`.
    pub fn new(label: &'static str, shape: Shape, tally: &Tally, duration: Duration) -> Self {
        let h = &tally.hist;
        Self {
            label,
            in_flight: shape.in_flight,
            pool: shape.pool,
            payload: shape.payload,
            calls_per_sec: h.len() as f64 / duration.as_secs_f64(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            errors: tally.errors,
        }
    }
}

/// The configuration columns of a row.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// See [`Row::in_flight`].
    pub in_flight: usize,
    /// See [`Row::pool`].
    pub pool: Option<usize>,
    /// See [`Row::payload`].
    pub payload: usize,
}

/// Prints the column headings.
pub fn header() {
    println!(
        "{:<16} {:>9} {:>5} {:>8} {:>12} {:>8} {:>8} {:>9} {:>8} {:>7}",
        "kind",
        "in-flight",
        "pool",
        "payload",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors"
    );
}

/// Prints one row (and flushes, so rows appear as they finish).
pub fn row(r: &Row) {
    let pool = r.pool.map_or_else(|| "-".to_string(), |p| p.to_string());
    println!(
        "{:<16} {:>9} {:>5} {:>8} {:>12} {:>8} {:>8} {:>9} {:>8} {:>7}",
        r.label,
        r.in_flight,
        pool,
        r.payload,
        thousands(r.calls_per_sec),
        r.p50,
        r.p99,
        r.p999,
        r.max,
        r.errors
    );
    let _ = std::io::stdout().flush();
}

/// Prints ringrpc/floor ratios: latency at 1 in flight against the blocking
/// floor, throughput at the deepest in-flight against the pipelined floor.
pub fn ratios(ringrpc: &[Row], blocking: &Row, pipelined: &Row) {
    println!();
    println!("ringrpc / floor:");
    match ringrpc.iter().find(|r| r.in_flight == 1) {
        Some(one) => println!(
            "  latency    p50 {:.2}x, p99 {:.2}x   (ringrpc at 1 in flight vs floor/blocking)",
            ratio(one.p50 as f64, blocking.p50 as f64),
            ratio(one.p99 as f64, blocking.p99 as f64),
        ),
        None => println!("  latency    n/a (add 1 to --in-flight to compare)"),
    }
    if let Some(deep) = ringrpc.iter().max_by_key(|r| r.in_flight) {
        println!(
            "  throughput calls/s {:.2}x   (ringrpc at {} in flight vs floor/pipelined at {})",
            ratio(deep.calls_per_sec, pipelined.calls_per_sec),
            deep.in_flight,
            pipelined.in_flight,
        );
    }
}

/// `a / b`, or NaN when `b` is zero.
fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// Formats a rate as an integer with `,` thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
