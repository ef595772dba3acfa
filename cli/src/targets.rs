//! The performance targets of issue #3 (P1–P3), measured by `--compare floor`.
//!
//! After the requested rows and floors, `ringrpc bench --compare floor` measures
//! the three target cells once more with fixed shapes, each right after its own
//! raw-socket floor on the same CPUs, and prints the ratios with their bounds:
//!
//! - P1: 1 call in flight, 64 B: p50 ≤ 1.10× and p99 ≤ 1.25× the blocking floor;
//! - P2: 128 in flight, 64 B, one connection: calls/s ≥ 0.60× the pipelined floor;
//! - P3: 128 in flight, 4 KiB: calls/s ≥ 0.85× the pipelined floor. For
//!   context it also runs that floor with a CRC32 per message sealed and checked
//!   on both sides (what ringrpc's wire requires of every frame) and prints
//!   ringrpc against both.
//!
//! These rows are printed only (not added to `--csv`/`--json`, whose rows follow
//! `--in-flight` and `--payload`).

use ringrpc_floor::Mode;

use crate::bench::{run_row, BenchArgs, CpuPlan};
use crate::floor::{self, FloorSpec};
use crate::report::Row;
use crate::CliResult;

/// Calls in flight of P2 and P3.
const DEEP: usize = 128;
/// Payload of P1 and P2.
const SMALL: usize = 64;
/// Payload of P3.
const LARGE: usize = 4096;

/// One ratio against its bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// ringrpc / floor.
    pub ratio: f64,
    /// The bound the ratio must meet.
    pub bound: f64,
    /// `true`: the ratio must be at most `bound`; `false`: at least.
    pub at_most: bool,
}

impl Check {
    /// Whether the ratio meets its bound.
    pub fn holds(&self) -> bool {
        if self.at_most {
            self.ratio <= self.bound
        } else {
            self.ratio >= self.bound
        }
    }

    fn show(&self) -> String {
        let (op, verdict) = match (self.at_most, self.holds()) {
            (true, ok) => ("<=", ok),
            (false, ok) => (">=", ok),
        };
        format!(
            "{:.2}x ({op} {:.2}: {})",
            self.ratio,
            self.bound,
            if verdict { "met" } else { "missed" }
        )
    }
}

/// `a / b`, NaN when `b` is zero (a NaN ratio never meets a bound).
fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// P1 from ringrpc's and the blocking floor's 1-in-flight rows: (p50, p99).
pub fn p1(ringrpc: &Row, blocking: &Row) -> (Check, Check) {
    let check = |a: u64, b: u64, bound| Check {
        ratio: ratio(a as f64, b as f64),
        bound,
        at_most: true,
    };
    (
        check(ringrpc.p50, blocking.p50, 1.10),
        check(ringrpc.p99, blocking.p99, 1.25),
    )
}

/// A throughput target (P2, P3) from ringrpc's and the pipelined floor's rows.
pub fn throughput(ringrpc: &Row, pipelined: &Row, bound: f64) -> Check {
    Check {
        ratio: ratio(ringrpc.calls_per_sec, pipelined.calls_per_sec),
        bound,
        at_most: false,
    }
}

/// Measures and prints P1–P3; `Ok(false)` when a call failed.
pub fn run(args: &BenchArgs, cpus: &CpuPlan) -> CliResult<bool> {
    println!();
    println!("targets (ringrpc vs the raw-socket floor, each measured just after its floor):");
    let small = measure(args, cpus, SMALL, true)?;
    let large = measure(args, cpus, LARGE, false)?;
    let one = small.one.as_ref().ok_or("P1 row missing")?;
    let (p50, p99) = p1(one, &small.blocking);
    println!(
        "  P1  1 in flight x 64 B      p50 {}  p99 {}",
        p50.show(),
        p99.show()
    );
    let p2 = throughput(&small.deep, &small.pipelined, 0.60);
    println!("  P2  128 in flight x 64 B    calls/s {}", p2.show());
    let p3 = throughput(&large.deep, &large.pipelined, 0.85);
    println!("  P3  128 in flight x 4 KiB   calls/s {}", p3.show());
    if let Some(crc) = &large.checked {
        let share = |a: &Row, b: &Row| ratio(a.calls_per_sec, b.calls_per_sec);
        println!(
            "      floor+CRC32 vs floor {:.2}x; ringrpc vs floor+CRC32 {:.2}x",
            share(crc, &large.pipelined),
            share(&large.deep, crc)
        );
    }
    let rows = [
        one,
        &small.deep,
        &large.deep,
        &small.blocking,
        &small.pipelined,
        &large.pipelined,
    ];
    let healthy = rows
        .into_iter()
        .chain(&large.checked)
        .all(|r| r.errors == 0);
    Ok(healthy)
}

/// The rows of one payload: ringrpc at 1 (if asked) and at [`DEEP`] in flight,
/// both floors, and (for the large payload) the CRC-checked pipelined floor.
struct Cells {
    one: Option<Row>,
    deep: Row,
    blocking: Row,
    pipelined: Row,
    checked: Option<Row>,
}

fn measure(args: &BenchArgs, cpus: &CpuPlan, payload: usize, with_one: bool) -> CliResult<Cells> {
    let mut args = args.clone();
    args.payload = payload;
    let spec = FloorSpec {
        server_cpu: cpus.server,
        client_cpu: cpus.client.first().copied().unwrap_or(cpus.server),
        payload,
        window: DEEP,
        warmup: args.warmup,
        duration: args.duration,
    };
    // The CRC-checked floor is P3's context, so it runs with the large payload only.
    let (blocking, pipelined, checked) = if payload == LARGE {
        let modes = [Mode::Blocking, Mode::Pipelined, Mode::PipelinedCrc];
        let [blocking, pipelined, checked] = floor::run(&spec, modes)?;
        (blocking, pipelined, Some(checked))
    } else {
        let [blocking, pipelined] = floor::run(&spec, [Mode::Blocking, Mode::Pipelined])?;
        (blocking, pipelined, None)
    };
    let metrics = args.metrics.is_on();
    let one = match with_one {
        true => Some(run_row(&args, cpus, 1, metrics)?.row),
        false => None,
    };
    let deep = run_row(&args, cpus, DEEP, metrics)?.row;
    for row in one
        .iter()
        .chain([&deep, &blocking, &pipelined])
        .chain(&checked)
    {
        crate::report::row(row);
    }
    Ok(Cells {
        one,
        deep,
        blocking,
        pipelined,
        checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_nan_never_holds() {
        let at_most = |ratio| Check {
            ratio,
            bound: 1.10,
            at_most: true,
        };
        assert!(at_most(1.10).holds());
        assert!(!at_most(1.11).holds());
        let at_least = |ratio| Check {
            ratio,
            bound: 0.60,
            at_most: false,
        };
        assert!(at_least(0.60).holds());
        assert!(!at_least(0.59).holds());
        assert!(!at_least(ratio(1.0, 0.0)).holds());
        assert!(!at_most(ratio(1.0, 0.0)).holds());
    }
}
