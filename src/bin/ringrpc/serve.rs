//! `ringrpc serve`: serves `Bench.echo` for `ringrpc bench --connect` runs in
//! another process or on another machine.
//!
//! There is no signal handling (that would need a new dependency): the server
//! runs until killed, or for `--duration` seconds followed by a graceful
//! shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ringrpc::Runtime;

use crate::echo;
use crate::measure::{parse_positive, parse_secs};
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
}

/// Runs the server until killed (or for `--duration`).
pub fn run(args: &ServeArgs) -> CliResult<()> {
    let mut builder = Runtime::builder().name("serve");
    if let Some(cpus) = &args.cpus {
        builder = builder.cpus(cpus.iter().copied());
    } else if let Some(n) = args.cores {
        builder = builder.cores(n);
    }
    let runtime = builder.build()?;
    let handle = echo::server()?.serve(&runtime, args.listen)?;
    println!(
        "ringrpc serve: Bench.echo on {} ({} cores)",
        handle.local_addr(),
        runtime.cores()
    );
    let Some(duration) = args.duration else {
        loop {
            std::thread::park();
        }
    };
    std::thread::sleep(duration);
    let stats = handle.stats();
    handle.shutdown(DRAIN);
    runtime.shutdown();
    println!(
        "ringrpc serve: stopped; {} connections accepted, {} protocol errors",
        stats.accepted, stats.protocol_errors
    );
    Ok(())
}
