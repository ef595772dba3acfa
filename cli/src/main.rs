//! `ringrpc`: benchmark and serve the ringrpc echo workload.
//!
//! - `ringrpc [bench] [OPTIONS]` (the default): closed-loop (`--in-flight`)
//!   or open-loop (`--rate`) load generator against an embedded loopback
//!   server or `--connect ADDR` (several, `a,b,c`, or `--servers N`, go
//!   through a cluster client: `--balance`, `--hedge`), optionally compared with raw-socket floors
//!   (`--compare floor`, which also measures and prints the P1–P3 targets);
//!   `--csv`/`--json` export the rows.
//!   Under each row: per-phase latency, pool hit rate and stalls read from the
//!   runtimes' metrics; `--metrics on|off` switches them, `--compare metrics`
//!   measures what they cost.
//! - `ringrpc serve --listen ADDR [--metrics ADDR]`: serves the benchmark's
//!   `Bench.echo` method, and Prometheus metrics at `http://ADDR/metrics`.
//! - `bench` and `serve` take `--driver auto|io_uring|epoll` (default `auto`:
//!   io_uring, or epoll where the kernel refuses it) and say once which
//!   driver ran; `RINGRPC_DRIVER` overrides `--driver`.
//! - `ringrpc tune`: sweeps pool size × in-flight calls, recommends a pool size
//!   and writes CSV and an SVG plot.
//! - `ringrpc plot`: SVG charts from the `peers` bench CSV and `bench --csv`.

mod bench;
mod cluster_bench;
mod cluster_turns;
mod compare;
mod driver;
mod export;
mod floor;
mod measure;
mod open;
mod phases;
mod plot;
mod plot_bench;
mod plot_cmd;
mod plot_input;
mod plot_peers;
mod report;
mod serve;
mod targets;
mod tls;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Result type of the CLI's top-level operations.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// io_uring thread-per-core RPC: benchmark and echo server.
#[derive(Debug, Parser)]
#[command(
    name = "ringrpc",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options for the default `bench` command.
    #[command(flatten)]
    bench: bench::BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure calls/s and latency of the echo method (the default).
    Bench(bench::BenchArgs),
    /// Serve the echo method for `bench --connect`.
    Serve(serve::ServeArgs),
    /// Sweep pool size × in-flight calls and recommend a pool size.
    Tune(tune::TuneArgs),
    /// Draw SVG charts from the peers bench CSV and `bench --csv` output.
    Plot(plot_cmd::PlotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => bench::run(&cli.bench),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Serve(args)) => serve::run(args).map(|()| true),
        Some(Command::Tune(args)) => tune::run(args),
        Some(Command::Plot(args)) => plot_cmd::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ringrpc: some calls failed (see the errors column)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ringrpc: {e}");
            ExitCode::from(2)
        }
    }
}
