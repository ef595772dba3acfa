//! `ringrpc tune`: sweeps pool size × in-flight calls, recommends a pool size,
//! re-measures the recommendation against the sweep's best point, and writes the
//! results as CSV and an SVG plot.
//!
//! Recommendation rule: among the points whose p99 meets `--p99-target` (all
//! points without a target), take the smallest pool size that has a point within
//! `--tolerance` (5 %) of the best throughput of the sweep; at that pool size,
//! the point with the highest throughput.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::bench::{run_row, BenchArgs, CpuPlan};
use crate::measure::{parse_positive, parse_secs, Switch};
use crate::report::thousands;
use crate::{plot, CliResult};

/// Options of `ringrpc tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Tune against running `ringrpc serve`s at ADDR instead of an embedded
    /// server; several (`a,b,c`) are called through a cluster client (the
    /// pool size is then per endpoint).
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub connect: Vec<SocketAddr>,
    /// Largest pool size to try (1..=N connections per client core).
    #[arg(long, default_value = "4", value_parser = parse_positive)]
    pub max_pool: usize,
    /// In-flight calls per client core to try at each pool size.
    #[arg(long, value_delimiter = ',', default_value = "16,128,512", value_parser = parse_positive)]
    pub in_flight: Vec<usize>,
    /// Client cores.
    #[arg(long, default_value = "1", value_parser = parse_positive)]
    pub cores: usize,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,
    /// Measured seconds per point.
    #[arg(long, default_value = "1", value_parser = parse_secs, value_name = "SECS")]
    pub duration: Duration,
    /// Unrecorded seconds before each point.
    #[arg(long, default_value = "0.3", value_parser = parse_secs, value_name = "SECS")]
    pub warmup: Duration,
    /// Only recommend points whose p99 is at most this many microseconds.
    #[arg(long, value_name = "MICROS")]
    pub p99_target: Option<u64>,
    /// Throughput tolerance for the recommendation (fraction of the best).
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// Rounds of the final best-vs-recommended check (medians are compared).
    #[arg(long, default_value = "3", value_parser = parse_positive)]
    pub check_rounds: usize,
    /// CPU of the embedded server.
    #[arg(long, default_value_t = 0, value_name = "CPU")]
    pub server_cpu: usize,
    /// First client CPU [default: 1, or 0 on a one-CPU machine].
    #[arg(long, value_name = "CPU")]
    pub client_cpu: Option<usize>,
    /// Where to write the sweep as CSV.
    #[arg(long, default_value = "tune.csv")]
    pub csv: PathBuf,
    /// Where to write the plot (SVG).
    #[arg(long, default_value = "tune.svg")]
    pub plot: PathBuf,
}

/// One measured point of the sweep.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Connections per client core.
    pub pool: usize,
    /// Concurrent callers per client core.
    pub in_flight: usize,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// 99th percentile latency, µs.
    pub p99: u64,
    /// Failed calls.
    pub errors: u64,
}

impl TuneArgs {
    fn bench_args(&self, pool: usize, duration: Duration) -> BenchArgs {
        BenchArgs {
            connect: self.connect.clone(),
            servers: 1,
            cluster: false,
            balance: crate::bench::BalanceArg::P2c,
            hedge: Switch::On,
            slow_every: 0,
            slow_ms: 5,
            cores: self.cores,
            pool_size: pool,
            in_flight: self.in_flight.clone(),
            rate: Vec::new(),
            max_outstanding: 10_000,
            send_spin: 0,
            csv: None,
            json: None,
            payload: self.payload,
            duration,
            warmup: self.warmup,
            server_cpu: self.server_cpu,
            client_cpu: self.client_cpu,
            metrics: Switch::On,
            data_digest: Switch::On,
            compare: None,
            targets: None,
            rounds: 1,
            busy_poll: 0,
            send_zc: None,
            driver: ringrpc::Driver::Auto,
            tls: Default::default(),
        }
    }

    fn measure(&self, cpus: &CpuPlan, pool: usize, in_flight: usize) -> CliResult<Point> {
        let row = run_row(&self.bench_args(pool, self.duration), cpus, in_flight, true)?.row;
        Ok(Point {
            pool,
            in_flight,
            calls_per_sec: row.calls_per_sec,
            p99: row.p99,
            errors: row.errors,
        })
    }
}

/// Runs the sweep; `Ok(false)` if any call failed.
pub fn run(args: &TuneArgs) -> CliResult<bool> {
    let cpus = CpuPlan::new(&args.bench_args(1, args.duration));
    let total = args.max_pool * args.in_flight.len();
    println!(
        "ringrpc tune: pool 1..={} × in-flight {:?}, {:.1} s per point",
        args.max_pool,
        args.in_flight,
        args.duration.as_secs_f64()
    );
    let mut points = Vec::with_capacity(total);
    for pool in 1..=args.max_pool {
        for &in_flight in &args.in_flight {
            progress(points.len(), total, pool, in_flight);
            points.push(args.measure(&cpus, pool, in_flight)?);
        }
    }
    eprintln!();
    print_table(&points);
    write_csv(&args.csv, &points)?;
    plot::tune_svg(&args.plot, &points)?;
    println!("wrote {} and {}", args.csv.display(), args.plot.display());
    let Some(rec) = recommend(&points, args.p99_target, args.tolerance) else {
        println!("no point meets the p99 target; raise --p99-target or lower --in-flight");
        return Ok(points.iter().all(|p| p.errors == 0));
    };
    let best = best(&points);
    println!(
        "recommendation: pool size {} (at {} in flight: {} calls/s, p99 {} µs); sweep best: pool {} at {} in flight, {} calls/s",
        rec.pool, rec.in_flight, thousands(rec.calls_per_sec), rec.p99, best.pool, best.in_flight, thousands(best.calls_per_sec)
    );
    check(args, &cpus, rec, best)?;
    Ok(points.iter().all(|p| p.errors == 0))
}

fn progress(done: usize, total: usize, pool: usize, in_flight: usize) {
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} pool {pool} × in-flight {in_flight}   ",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

fn print_table(points: &[Point]) {
    println!(
        "{:>5} {:>9} {:>12} {:>9} {:>7}",
        "pool", "in-flight", "calls/s", "p99 µs", "errors"
    );
    for p in points {
        println!(
            "{:>5} {:>9} {:>12} {:>9} {:>7}",
            p.pool,
            p.in_flight,
            thousands(p.calls_per_sec),
            p.p99,
            p.errors
        );
    }
}

fn write_csv(path: &PathBuf, points: &[Point]) -> CliResult<()> {
    let mut out = String::from("pool,in_flight,calls_per_sec,p99_us,errors\n");
    for p in points {
        out.push_str(&format!(
            "{},{},{:.0},{},{}\n",
            p.pool, p.in_flight, p.calls_per_sec, p.p99, p.errors
        ));
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The highest-throughput point.
pub fn best(points: &[Point]) -> Point {
    let mut best = points[0];
    for p in points {
        if p.calls_per_sec > best.calls_per_sec {
            best = *p;
        }
    }
    best
}

/// Applies the recommendation rule (see the module docs).
pub fn recommend(points: &[Point], p99_target: Option<u64>, tolerance: f64) -> Option<Point> {
    let top = points.iter().map(|p| p.calls_per_sec).fold(0.0, f64::max);
    let ok = |p: &&Point| p.errors == 0 && p99_target.is_none_or(|t| p.p99 <= t);
    let pool = points
        .iter()
        .filter(ok)
        .filter(|p| p.calls_per_sec >= (1.0 - tolerance) * top)
        .map(|p| p.pool)
        .min()?;
    points
        .iter()
        .filter(ok)
        .filter(|p| p.pool == pool)
        .copied()
        .max_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec))
}

/// Re-measures the recommended and the best point, alternating, and compares medians.
fn check(args: &TuneArgs, cpus: &CpuPlan, rec: Point, best: Point) -> CliResult<()> {
    let (mut r, mut b) = (Vec::new(), Vec::new());
    for _ in 0..args.check_rounds {
        r.push(args.measure(cpus, rec.pool, rec.in_flight)?.calls_per_sec);
        b.push(args.measure(cpus, best.pool, best.in_flight)?.calls_per_sec);
    }
    let (mr, mb) = (median(&mut r), median(&mut b));
    println!(
        "check ({} rounds, medians): recommended {} calls/s vs best {} calls/s = {:.3}x ({})",
        args.check_rounds,
        thousands(mr),
        thousands(mb),
        mr / mb,
        if mr >= (1.0 - args.tolerance) * mb {
            "within tolerance"
        } else {
            "OUTSIDE tolerance"
        }
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pool: usize, in_flight: usize, calls: f64, p99: u64) -> Point {
        Point {
            pool,
            in_flight,
            calls_per_sec: calls,
            p99,
            errors: 0,
        }
    }

    #[test]
    fn recommends_the_smallest_pool_within_tolerance() {
        let points = [
            p(1, 128, 90.0, 100),
            p(2, 128, 97.0, 90),
            p(3, 128, 100.0, 80),
        ];
        let rec = recommend(&points, None, 0.05).unwrap();
        assert_eq!((rec.pool, rec.in_flight), (2, 128));
        assert_eq!(best(&points).pool, 3);
    }

    #[test]
    fn the_p99_target_filters_points() {
        let points = [p(1, 128, 100.0, 500), p(2, 128, 99.0, 50)];
        assert_eq!(recommend(&points, Some(100), 0.05).unwrap().pool, 2);
        assert!(recommend(&points, Some(10), 0.05).is_none());
    }
}
