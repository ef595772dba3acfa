//! `ringrpc bench --compare floor`: the performance targets (P1–P5), read at
//! run time from the targets file (`benches/targets.txt`, or `--targets FILE`;
//! format in `ringrpc_workload::targets`), measured after the requested rows
//! and floors.
//!
//! For each cell a target names, this runs the raw-socket floors the targets
//! of that cell need (`raw-blocking`, `raw-pipelined`, `raw-crc`), then
//! ringrpc (`ringrpc`, and `ringrpc-nodigest` with the data digest off on
//! both sides), each just after its floors on the same CPUs, and prints every
//! target's value against its bound. Targets on peers this tool does not run
//! (tarpc, tonic: the `peers` bench) or on allocations (`tests/alloc_per_call.rs`)
//! are listed as measured elsewhere.
//!
//! These rows are printed only (not added to `--csv`/`--json`, whose rows
//! follow `--in-flight` and `--payload`).

use std::collections::HashMap;

use ringrpc_floor::Mode;
use ringrpc_workload::targets::{self, Cell, Metric, Target};

use crate::bench::{run_row, BenchArgs, CpuPlan};
use crate::floor::{self, FloorSpec};
use crate::measure::Switch;
use crate::report::Row;
use crate::CliResult;

/// A peer of the targets file that this tool can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A raw-socket floor.
    Floor(Mode),
    /// ringrpc over the echo workload, with or without the data digest.
    Ringrpc {
        /// Data digest on in client and server.
        digest: bool,
        /// Forced onto the epoll driver (`ringrpc-epoll`); otherwise `--driver`.
        epoll: bool,
    },
}

/// The peer called `name` in the targets file, if this tool runs it.
fn peer(name: &str) -> Option<Peer> {
    Some(match name {
        "raw-blocking" => Peer::Floor(Mode::Blocking),
        "raw-pipelined" => Peer::Floor(Mode::Pipelined),
        "raw-crc" => Peer::Floor(Mode::PipelinedCrc),
        "ringrpc" => Peer::Ringrpc {
            digest: true,
            epoll: false,
        },
        "ringrpc-nodigest" => Peer::Ringrpc {
            digest: false,
            epoll: false,
        },
        "ringrpc-epoll" => Peer::Ringrpc {
            digest: true,
            epoll: true,
        },
        _ => return None,
    })
}

/// `metric` of a measured row (`None`: not in the row).
fn value(row: &Row, metric: Metric) -> Option<f64> {
    match metric {
        Metric::P50 => Some(row.p50 as f64),
        Metric::P99 => Some(row.p99 as f64),
        Metric::CallsPerSec => Some(row.calls_per_sec),
        Metric::ServerCpuUs => row.cpu.server_us,
        Metric::ClientCpuUs => row.cpu.client_us,
        Metric::AllocsPerCall => None,
    }
}

/// Why this tool does not measure `target`, or `None` if it does.
fn not_measured(target: &Target) -> Option<&'static str> {
    if target.metric == Metric::AllocsPerCall {
        Some("cargo test --test alloc_per_call")
    } else if target.cell.is_none() || target.peers().any(|p| peer(p).is_none()) {
        Some("cargo bench -p ringrpc-peers --bench peers")
    } else {
        None
    }
}

/// Measured rows by cell and peer name.
type Measured = HashMap<(Cell, String), Row>;

/// Measures and prints the targets; `Ok(false)` when a call failed.
pub fn run(args: &BenchArgs, cpus: &CpuPlan) -> CliResult<bool> {
    let path = args.targets.clone().unwrap_or_else(targets::default_path);
    println!();
    let list = match targets::load(&path) {
        Ok(list) => list,
        Err(e) => {
            println!("targets: not checked ({e}); name the file with --targets FILE");
            return Ok(true);
        }
    };
    println!(
        "targets of {} (ringrpc vs the raw-socket floors, each measured just after its floors):",
        path.display()
    );
    let mut cells: Vec<(Cell, Vec<&str>)> = Vec::new();
    for target in list.iter().filter(|t| not_measured(t).is_none()) {
        let Some(cell) = target.cell else { continue };
        let at = match cells.iter().position(|(c, _)| *c == cell) {
            Some(i) => i,
            None => {
                cells.push((cell, Vec::new()));
                cells.len() - 1
            }
        };
        let peers = &mut cells[at].1;
        for name in target.peers() {
            if !peers.contains(&name) {
                peers.push(name);
            }
        }
    }
    let mut rows = Measured::new();
    for (cell, peers) in &cells {
        measure_cell(args, cpus, *cell, peers, &mut rows)?;
    }
    for target in &list {
        show(target, &rows);
    }
    Ok(rows.values().all(|r| r.errors == 0))
}

/// Measures `peers` in `cell`: the floors first, then ringrpc.
fn measure_cell(
    args: &BenchArgs,
    cpus: &CpuPlan,
    cell: Cell,
    peers: &[&str],
    rows: &mut Measured,
) -> CliResult<()> {
    let mut ordered: Vec<(&str, Peer)> = peers
        .iter()
        .filter_map(|name| Some((*name, peer(name)?)))
        .collect();
    ordered.sort_by_key(|(_, p)| matches!(p, Peer::Ringrpc { .. }));
    let spec = FloorSpec {
        server_cpu: cpus.server,
        client_cpu: cpus.client.first().copied().unwrap_or(cpus.server),
        payload: cell.payload,
        window: cell.in_flight,
        warmup: args.warmup,
        duration: args.duration,
    };
    for (name, peer) in ordered {
        let row = match peer {
            Peer::Floor(mode) => {
                let [row] = floor::run(&spec, [mode])?;
                row
            }
            Peer::Ringrpc { digest, epoll } => {
                let mut args = args.clone();
                args.payload = cell.payload;
                args.data_digest = if digest { Switch::On } else { Switch::Off };
                if epoll {
                    args.driver = ringrpc::Driver::Epoll;
                }
                let mut row = run_row(&args, cpus, cell.in_flight, args.metrics.is_on())?.row;
                row.label = match (digest, epoll) {
                    (_, true) => "ringrpc-epoll",
                    (true, false) => "ringrpc",
                    (false, false) => "ringrpc-nodigest",
                };
                row
            }
        };
        crate::report::row(&row);
        rows.insert((cell, name.to_string()), row);
    }
    Ok(())
}

/// Prints one target: its value against its bound, or where it is measured.
fn show(target: &Target, rows: &Measured) {
    let label = target.label();
    let note = match target.note.as_str() {
        "" => String::new(),
        note => format!("  [{note}]"),
    };
    if let Some(elsewhere) = not_measured(target) {
        println!("  {label:<58} not measured here: {elsewhere}{note}");
        return;
    }
    let of = |name: &str| {
        let cell = target.cell?;
        value(rows.get(&(cell, name.to_string()))?, target.metric)
    };
    let shown = match &target.base {
        Some(base) => {
            let ratio = match (of(&target.peer), of(base)) {
                (Some(a), Some(b)) if b != 0.0 => a / b,
                _ => f64::NAN,
            };
            format!("{ratio:.2}x {}", target.verdict(ratio))
        }
        None => {
            let v = of(&target.peer).unwrap_or(f64::NAN);
            format!("{v:.2} {}", target.verdict(v))
        }
    };
    println!("  {label:<58} {shown}{note}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checked_in_target_but_allocations_is_measured_here() {
        let path = targets::default_path();
        let list = targets::load(&path).unwrap();
        for target in &list {
            let expected = target.metric == Metric::AllocsPerCall;
            assert_eq!(not_measured(target).is_some(), expected, "{target:?}");
        }
    }

    #[test]
    fn peers_of_other_tools_are_not_run_here() {
        let list = targets::parse("P9 1x64 p50 tonic/raw-blocking <= 9").unwrap();
        assert!(not_measured(&list[0]).is_some());
        assert_eq!(peer("raw-crc"), Some(Peer::Floor(Mode::PipelinedCrc)));
    }
}
