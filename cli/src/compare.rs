//! `ringrpc bench --compare metrics`: what leaving metrics on costs;
//! `--compare cluster`: what a cluster client (balancing, ejection, retry and
//! hedging bookkeeping) costs over a plain client, with one endpoint.
//!
//! For each `--in-flight` value, runs the same row `--rounds` times with
//! metrics on and `--rounds` times with metrics off (the switch is applied to
//! both the client and the embedded server), alternating on/off and off/on
//! between rounds so slow drift in the machine hits both settings alike, and
//! every run on fresh runtimes. Prints every run, then the medians and the
//! on/off throughput ratio.

use crate::bench::{self, BenchArgs, CpuPlan};
use crate::report::{self, thousands, Row};
use crate::CliResult;

/// Results of the runs of one setting.
#[derive(Debug, Default)]
struct Runs {
    calls_per_sec: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Client CPU µs per call (NaN where it could not be measured).
    client_cpu: Vec<f64>,
}

impl Runs {
    fn push(&mut self, row: &Row) {
        self.calls_per_sec.push(row.calls_per_sec);
        self.p50.push(row.p50 as f64);
        self.p99.push(row.p99 as f64);
        self.client_cpu.push(row.cpu.client_us.unwrap_or(f64::NAN));
    }
}

/// Runs the on/off comparison, appending every run's row to `rows`;
/// `Ok(false)` when any call failed.
pub fn metrics(args: &BenchArgs, cpus: &CpuPlan, rows: &mut Vec<Row>) -> CliResult<bool> {
    let cluster = args.uses_cluster();
    alternate(
        args,
        rows,
        ["metrics on", "metrics off"],
        |in_flight, on| bench::run_row_with(args, cpus, in_flight, on, cluster),
    )
}

/// Runs a cluster of one against a plain client, appending every run's row to
/// `rows`; `Ok(false)` when any call failed.
pub fn cluster(args: &BenchArgs, cpus: &CpuPlan, rows: &mut Vec<Row>) -> CliResult<bool> {
    let metrics = args.metrics.is_on();
    alternate(
        args,
        rows,
        ["cluster of 1", "plain client"],
        |in_flight, cluster| bench::run_row_with(args, cpus, in_flight, metrics, cluster),
    )
}

/// For each `--in-flight` value, `--rounds` runs of each setting (`true`:
/// `labels[0]`, `false`: `labels[1]`), alternating the order, then the medians.
fn alternate(
    args: &BenchArgs,
    rows: &mut Vec<Row>,
    labels: [&'static str; 2],
    run: impl Fn(usize, bool) -> CliResult<bench::Measured>,
) -> CliResult<bool> {
    let mut healthy = true;
    for in_flight in args.in_flights() {
        println!();
        println!(
            "{} vs {} at {in_flight} in flight: {} runs each, alternating, fresh runtimes per run",
            labels[0], labels[1], args.rounds
        );
        report::header();
        let (mut on, mut off) = (Runs::default(), Runs::default());
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for setting in order {
                let mut measured = run(in_flight, setting)?;
                measured.row.label = labels[usize::from(!setting)];
                report::row(&measured.row);
                healthy &= measured.row.errors == 0;
                if setting {
                    on.push(&measured.row);
                } else {
                    off.push(&measured.row);
                }
                rows.push(measured.row);
            }
        }
        summary(in_flight, labels, &on, &off);
    }
    Ok(healthy)
}

/// Prints medians (with the spread) and the on/off ratio.
fn summary(in_flight: usize, labels: [&str; 2], on: &Runs, off: &Runs) {
    let (t_on, t_off) = (median(&on.calls_per_sec), median(&off.calls_per_sec));
    let ratio = if t_off > 0.0 { t_on / t_off } else { f64::NAN };
    println!(
        "  at {in_flight} in flight, median of {} runs each:",
        on.calls_per_sec.len()
    );
    let [a, b] = labels;
    println!("    on = {a}, off = {b}");
    println!(
        "    calls/s  on {:>12} [{} .. {}]   off {:>12} [{} .. {}]",
        thousands(t_on),
        thousands(min(&on.calls_per_sec)),
        thousands(max(&on.calls_per_sec)),
        thousands(t_off),
        thousands(min(&off.calls_per_sec)),
        thousands(max(&off.calls_per_sec)),
    );
    println!(
        "    p50 µs   on {:>12}   off {:>12}",
        median(&on.p50),
        median(&off.p50)
    );
    println!(
        "    p99 µs   on {:>12}   off {:>12}",
        median(&on.p99),
        median(&off.p99)
    );
    println!(
        "    throughput on/off = {ratio:.4} ({:+.2}% with {a})",
        (ratio - 1.0) * 100.0
    );
    // Each round's two runs are adjacent in time: their ratio cancels the
    // machine's slow drift, which the medians above do not.
    let paired = paired_ratios(&on.calls_per_sec, &off.calls_per_sec);
    println!(
        "    paired throughput on/off (median of {} rounds) = {:.4} ({:+.2}% with {a}) [{:.4} .. {:.4}]",
        paired.len(),
        median(&paired),
        (median(&paired) - 1.0) * 100.0,
        min(&paired),
        max(&paired),
    );
    // Time the host took from the client (steal, other tenants) slows it
    // but is not its CPU time: per call, this is the steadier measure of
    // what the setting costs a client that is CPU-bound.
    let cpu = paired_ratios(&on.client_cpu, &off.client_cpu);
    let cpu: Vec<f64> = cpu.into_iter().filter(|r| r.is_finite()).collect();
    if !cpu.is_empty() {
        println!(
            "    client CPU µs/call on {:.3} off {:.3}; paired on/off (median of {} rounds) = {:.4} ({:+.2}% with {a})",
            median(&on.client_cpu),
            median(&off.client_cpu),
            cpu.len(),
            median(&cpu),
            (median(&cpu) - 1.0) * 100.0,
        );
    }
}

/// Round by round, `on[i] / off[i]` (rounds where `off` measured nothing are skipped).
fn paired_ratios(on: &[f64], off: &[f64]) -> Vec<f64> {
    on.iter()
        .zip(off)
        .filter(|(_, &b)| b > 0.0)
        .map(|(a, b)| a / b)
        .collect()
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::{median, paired_ratios};

    #[test]
    fn paired_ratios_are_taken_round_by_round() {
        assert_eq!(
            paired_ratios(&[2.0, 3.0, 1.0], &[1.0, 0.0, 4.0]),
            [2.0, 0.25]
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
