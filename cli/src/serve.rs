//! `ringrpc serve`: serves `Bench.echo` for `ringrpc bench --connect` runs in
//! another process or on another machine.
//!
//! There is no signal handling (that would need a new dependency): the server
//! runs until killed, or for `--duration` seconds followed by a graceful
//! shutdown. With `--metrics ADDR` a std thread serves the runtime's metrics
//! in Prometheus text format at `http://ADDR/metrics` (the library's
//! `ringrpc::metrics::http`, feature `metrics-http`); `--histograms off`
//! turns the server's per-phase timing off (counters are always kept).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ringrpc::metrics::http::Endpoint;
use ringrpc::{Driver, Runtime, ServerHandle};
use ringrpc_workload::echo;

use crate::driver::{describe, parse_driver};
use crate::measure::{parse_positive, parse_secs, Switch};
use crate::CliResult;

/// Drain time for the graceful shutdown after `--duration`.
const DRAIN: Duration = Duration::from_secs(1);

/// Options of `ringrpc serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Serve on CPUs 0..N [default: every available CPU].
    #[arg(long, conflicts_with = "cpus", value_parser = parse_positive)]
    cores: Option<usize>,
    /// Serve on exactly these CPUs, one core each (e.g. `0,2`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    cpus: Option<Vec<usize>>,
    /// Stop gracefully after this many seconds [default: run until killed].
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    duration: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Per-phase and per-method latency histograms (counters are always kept).
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    histograms: Switch,
    /// The I/O driver: `auto` (io_uring, or epoll where it is refused),
    /// `io_uring` or `epoll` (`RINGRPC_DRIVER`, when set, overrides it).
    #[arg(long, default_value = "auto", value_parser = parse_driver, value_name = "auto|io_uring|epoll")]
    driver: Driver,
    /// Be a slow server: every N-th `Bench.echo` call waits --slow-ms (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    slow_every: u64,
    /// The delay of the slow calls, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    slow_ms: u64,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
}

/// Runs the server until killed (or for `--duration`).
pub fn run(args: &ServeArgs) -> CliResult<()> {
    let mut builder = Runtime::builder().name("serve").driver(args.driver);
    if let Some(cpus) = &args.cpus {
        builder = builder.cpus(cpus.iter().copied());
    } else if let Some(n) = args.cores {
        builder = builder.cores(n);
    }
    let runtime = builder.build()?;
    let builder = if args.slow_every > 0 {
        echo::slow_server(args.slow_every, Duration::from_millis(args.slow_ms))?
    } else {
        echo::server()?
    };
    let builder = args.tls.apply_server(builder)?;
    let handle = builder
        .metrics(args.histograms.is_on())
        .serve(&runtime, args.listen)?;
    println!(
        "ringrpc serve: Bench.echo on {} ({} cores, {}, {})",
        handle.local_addr(),
        runtime.cores(),
        describe(runtime.driver()),
        args.tls.describe()
    );
    let endpoint = args.metrics.map(Endpoint::bind).transpose()?;
    std::thread::scope(|scope| {
        if let Some(endpoint) = &endpoint {
            println!(
                "ringrpc serve: metrics at http://{}/metrics",
                endpoint.local_addr()
            );
            let runtime = &runtime;
            // Runtime::metrics() blocks while every core copies its metrics, so
            // it runs here, on a plain thread, never on a core.
            scope.spawn(move || endpoint.serve_runtime(runtime));
        }
        wait(args.duration);
        if let Some(endpoint) = &endpoint {
            endpoint.stop();
        }
    });
    stop(handle, runtime);
    Ok(())
}

/// Sleeps for `duration`, or forever.
fn wait(duration: Option<Duration>) {
    match duration {
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::park();
        },
    }
}

/// Graceful shutdown after `--duration`, with a one-line summary.
fn stop(handle: ServerHandle, runtime: Runtime) {
    let stats = handle.stats();
    handle.shutdown(DRAIN);
    runtime.shutdown();
    println!(
        "ringrpc serve: stopped; {} connections accepted, {} protocol errors",
        stats.accepted, stats.protocol_errors
    );
}
