//! The metrics block printed under each `ringrpc bench` row: per-phase latency
//! (p50/p99) read from the client and embedded server runtimes with
//! `Runtime::metrics()`, the pool hit rate per endpoint, and core stalls.
//!
//! Each row runs on fresh runtimes, so these figures cover that row only
//! (warmup included); the row's own p50/p99 columns cover only the measured
//! window. Client phases come from the client runtime, server phases from the
//! server runtime; with `--connect` the server's are in its `--metrics` scrape.

use ringrpc::metrics::{CoreSnapshot, LatencyHistogram};
use ringrpc::{MetricsSnapshot, Phase};

use crate::report::thousands;

/// Prints the per-phase breakdown, pool hit rate and stalls of one row.
pub fn print(client: &MetricsSnapshot, server: Option<&MetricsSnapshot>) {
    let client_all = client.merged();
    let server_all = server.map(MetricsSnapshot::merged);
    let timed = Phase::ALL.iter().any(|&p| {
        client_all.phase(p).count() > 0
            || server_all.as_ref().is_some_and(|s| s.phase(p).count() > 0)
    });
    if timed {
        println!(
            "    {:<24} {:>10} {:>10} {:>12}",
            "phase (row + warmup)", "p50 µs", "p99 µs", "samples"
        );
        for phase in Phase::ALL {
            let is_server = phase.name().starts_with("server");
            let source = if is_server {
                server_all.as_ref()
            } else {
                Some(&client_all)
            };
            match source.map(|s| s.phase(phase)) {
                Some(h) if h.count() > 0 => println!(
                    "    {:<24} {:>10} {:>10} {:>12}",
                    phase.name(),
                    micros(h, 0.50),
                    micros(h, 0.99),
                    thousands(h.count() as f64)
                ),
                Some(_) => println!("    {:<24} {:>10} {:>10} {:>12}", phase.name(), "-", "-", 0),
                None => println!(
                    "    {:<24} {:>10}",
                    phase.name(),
                    "n/a (remote server: see its --metrics)"
                ),
            }
        }
    } else {
        println!("    phases: none recorded (metrics off; counters only)");
    }
    pools(&client_all);
    stalls(client, server);
}

/// A quantile in microseconds with one decimal.
fn micros(h: &LatencyHistogram, q: f64) -> String {
    format!("{:.1}", h.quantile(q).as_nanos() as f64 / 1e3)
}

/// One line per endpoint: hits, misses and hit rate, summed over client cores.
fn pools(client: &CoreSnapshot) {
    if client.pools.is_empty() {
        println!("    pool: no calls");
    }
    for p in &client.pools {
        println!(
            "    pool {}: hit rate {:.2}% (hits {}, misses {})",
            p.endpoint,
            p.hit_rate() * 100.0,
            thousands(p.hits as f64),
            thousands(p.misses as f64)
        );
    }
}

/// Stalls per runtime (only printed when there were any).
fn stalls(client: &MetricsSnapshot, server: Option<&MetricsSnapshot>) {
    let count = |m: &MetricsSnapshot| m.cores.iter().map(|c| c.stalls).sum::<u64>();
    let (c, s) = (count(client), server.map_or(0, count));
    if c + s > 0 {
        println!("    stalls (core loop blocked > threshold): client {c}, server {s}");
    }
}
