//! `ringrpc plot`: SVG charts from the benchmark CSVs, for docs/benchmarks.md.
//!
//! `--peers FILE` (the `peers` bench's `target/peers/peers.csv`) gives
//! `peers-throughput.svg` and `peers-latency.svg`; `--bench FILE` (written by
//! `ringrpc bench --csv`) gives `throughput-vs-inflight.svg` and
//! `latency-percentiles.svg`; `--cluster FILE` (cluster rows, see
//! `scripts/cluster-bench.sh`) gives `cluster-latency.svg`. All go to `--out DIR`. `scripts/bench-plots.sh`
//! runs both benchmarks and this command.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::{plot_bench, plot_input, plot_peers, CliResult};

/// Options of `ringrpc plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// CSV of `cargo bench -p ringrpc-peers --bench peers` (target/peers/peers.csv).
    #[arg(long, value_name = "FILE")]
    pub peers: Option<PathBuf>,
    /// CSV of `ringrpc bench --csv FILE`.
    #[arg(long, value_name = "FILE")]
    pub bench: Option<PathBuf>,
    /// CSV of cluster rows (`scripts/cluster-bench.sh`): `cluster-latency.svg`.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Directory the SVGs are written to (created if missing).
    #[arg(long, default_value = "docs/img", value_name = "DIR")]
    pub out: PathBuf,
}

/// A chart function: reads rows, writes one SVG.
type Chart<R> = fn(&Path, &[R]) -> CliResult<()>;

/// Writes the charts of every input given.
pub fn run(args: &PlotArgs) -> CliResult<bool> {
    if args.peers.is_none() && args.bench.is_none() && args.cluster.is_none() {
        return Err("nothing to plot: give --peers, --bench and/or --cluster FILE".into());
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    if let Some(path) = &args.peers {
        let rows = plot_input::peers(path)?;
        if rows.is_empty() {
            return Err(format!("{}: no rows", path.display()).into());
        }
        draw(
            &args.out,
            "peers-throughput.svg",
            plot_peers::throughput,
            &rows,
        )?;
        draw(&args.out, "peers-latency.svg", plot_peers::latency, &rows)?;
    }
    if let Some(path) = &args.bench {
        let rows = plot_input::bench(path)?;
        let charts: [(&str, Chart<_>); 2] = [
            (
                "throughput-vs-inflight.svg",
                plot_bench::throughput_vs_inflight,
            ),
            ("latency-percentiles.svg", plot_bench::latency_percentiles),
        ];
        for (name, chart) in charts {
            draw(&args.out, name, chart, &rows)?;
        }
    }
    if let Some(path) = &args.cluster {
        let rows = plot_input::bench(path)?;
        let chart: Chart<_> = plot_bench::cluster_latency;
        draw(&args.out, "cluster-latency.svg", chart, &rows)?;
    }
    Ok(true)
}

/// Draws one chart into `dir/name` and says so.
fn draw<R>(dir: &Path, name: &str, chart: Chart<R>, rows: &[R]) -> CliResult<()> {
    let path = dir.join(name);
    chart(&path, rows).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
