//! The results table: one [`Row`] per measurement, printed as it completes,
//! then the ringrpc-to-floor ratios. Rows are also what `--csv` and `--json`
//! export (see `export.rs`), including the fields the table leaves out (p90,
//! CPU per call, the open-loop service time).

use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use ringrpc_workload::cpu::CpuShares;

use crate::measure::Tally;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran: `ringrpc`, `ringrpc/open`, `floor/blocking`, `floor/pipelined`.
    pub label: &'static str,
    /// Concurrent calls (per client core for ringrpc; the window for floors);
    /// not meaningful for open-loop rows (see [`Row::open`]).
    pub in_flight: usize,
    /// Client cores (1 for the floors).
    pub cores: usize,
    /// Connections per client core (`None` for the single-socket floors).
    pub pool: Option<usize>,
    /// Payload bytes per message.
    pub payload: usize,
    /// Successful calls per second over the measurement window.
    pub calls_per_sec: f64,
    /// Median latency, µs.
    pub p50: u64,
    /// 90th percentile latency, µs.
    pub p90: u64,
    /// 99th percentile latency, µs.
    pub p99: u64,
    /// 99.9th percentile latency, µs.
    pub p999: u64,
    /// Largest latency, µs.
    pub max: u64,
    /// Failed calls.
    pub errors: u64,
    /// Server and client CPU time per call, when it could be measured.
    pub cpu: CpuPerCall,
    /// Open-loop details; `None` for closed-loop rows.
    pub open: Option<OpenStats>,
}

impl Row {
    /// Builds a closed-loop row from a merged tally measured over `duration`.
    pub fn new(label: &'static str, shape: Shape, tally: &Tally, duration: Duration) -> Self {
        let h = &tally.hist;
        let q = Percentiles::of(h);
        Self {
            label,
            in_flight: shape.in_flight,
            cores: shape.cores,
            pool: shape.pool,
            payload: shape.payload,
            calls_per_sec: h.len() as f64 / duration.as_secs_f64(),
            p50: q.p50,
            p90: q.p90,
            p99: q.p99,
            p999: q.p999,
            max: q.max,
            errors: tally.errors,
            cpu: CpuPerCall::default(),
            open: None,
        }
    }

    /// `closed` or `open`.
    pub fn mode(&self) -> &'static str {
        if self.open.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// Sets the CPU per call from the CPU shares measured over the window.
    pub fn with_cpu(mut self, shares: CpuShares) -> Self {
        let calls = self.calls_per_sec;
        let per_call = |share: Option<f64>| share.filter(|_| calls > 0.0).map(|s| s * 1e6 / calls);
        self.cpu = CpuPerCall {
            server_us: per_call(shares.server),
            client_us: per_call(shares.client),
        };
        self
    }
}

/// Latency percentiles of one histogram, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// CPU time per successful call in the window, µs (`None`: not measured).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuPerCall {
    /// Embedded server threads (`None` with `--connect`).
    pub server_us: Option<f64>,
    /// Client core threads.
    pub client_us: Option<f64>,
}

/// What an open-loop row adds to the table row, whose latencies are measured
/// from each call's intended send time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenStats {
    /// Target calls per second over all client cores.
    pub target_rate: f64,
    /// Calls not issued because `max_outstanding` calls were already outstanding.
    pub dropped: u64,
    /// Most calls outstanding at once on one core.
    pub peak_outstanding: usize,
    /// The cap on outstanding calls per core.
    pub max_outstanding: usize,
    /// Service time (from the actual send to the reply), µs.
    pub service: Percentiles,
    /// Send lag (from the intended to the actual send), µs: the generator's own lateness.
    pub send_lag: Percentiles,
}

/// The configuration columns of a row.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// See [`Row::in_flight`].
    pub in_flight: usize,
    /// See [`Row::cores`].
    pub cores: usize,
    /// See [`Row::pool`].
    pub pool: Option<usize>,
    /// See [`Row::payload`].
    pub payload: usize,
}

/// Prints the column headings.
pub fn header() {
    println!(
        "{:<19} {:>9} {:>5} {:>8} {:>12} {:>8} {:>8} {:>9} {:>8} {:>7}",
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

/// Prints one row (and flushes, so rows appear as they finish); an open-loop
/// row shows `-` for in-flight and its target, drops and service time below.
pub fn row(r: &Row) {
    let pool = r.pool.map_or_else(|| "-".to_string(), |p| p.to_string());
    let in_flight = match r.open {
        Some(_) => "-".to_string(),
        None => r.in_flight.to_string(),
    };
    println!(
        "{:<19} {:>9} {:>5} {:>8} {:>12} {:>8} {:>8} {:>9} {:>8} {:>7}",
        r.label,
        in_flight,
        pool,
        r.payload,
        thousands(r.calls_per_sec),
        r.p50,
        r.p99,
        r.p999,
        r.max,
        r.errors
    );
    if let Some(open) = &r.open {
        open_details(r, open);
    }
    let _ = std::io::stdout().flush();
}

/// The lines under an open-loop row.
fn open_details(r: &Row, open: &OpenStats) {
    let s = &open.service;
    println!(
        "    open loop: target {} calls/s ({} per core), latency from the intended send time \
         (coordinated-omission corrected); dropped {} (cap {} outstanding per core, peak {})",
        thousands(open.target_rate),
        thousands(open.target_rate / r.cores.max(1) as f64),
        thousands(open.dropped as f64),
        open.max_outstanding,
        open.peak_outstanding,
    );
    println!(
        "    service time (from the actual send): p50 {} µs, p90 {}, p99 {}, p99.9 {}, max {}; \
         send lag p50 {} µs, p99 {}",
        s.p50, s.p90, s.p99, s.p999, s.max, open.send_lag.p50, open.send_lag.p99
    );
}

/// Prints ringrpc/floor ratios: latency at 1 in flight against the blocking
/// floor, throughput at the deepest in-flight against the pipelined floor.
pub fn ratios(ringrpc: &[Row], blocking: &Row, pipelined: &Row) {
    println!();
    println!("ringrpc / floor:");
    let closed: Vec<&Row> = ringrpc.iter().filter(|r| r.open.is_none()).collect();
    match closed.iter().find(|r| r.in_flight == 1) {
        Some(one) => println!(
            "  latency    p50 {:.2}x, p99 {:.2}x   (ringrpc at 1 in flight vs floor/blocking)",
            ratio(one.p50 as f64, blocking.p50 as f64),
            ratio(one.p99 as f64, blocking.p99 as f64),
        ),
        None => println!("  latency    n/a (add 1 to --in-flight to compare)"),
    }
    if let Some(deep) = closed.iter().max_by_key(|r| r.in_flight) {
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
