//! The performance targets (P1–P5), read at run time from a text file
//! (`benches/targets.txt` in the source tree) by the `peers` bench and by
//! `ringrpc bench --compare floor`, so the bounds live in one place and are
//! not compiled into any binary.
//!
//! The format: `#` starts a comment; every other non-blank line is one target,
//! whitespace-separated:
//!
//! ```text
//! ID  CELL      METRIC   SUBJECT                  OP  BOUND  [NOTE...]
//! P2  128x64    calls/s  ringrpc/raw-pipelined    >=  0.90
//! P4  128x64    server-cpu-us  ringrpc            <=  0.40
//! ```
//!
//! - `CELL`: `IN_FLIGHTxPAYLOAD` (calls in flight, payload bytes), or `-`;
//! - `METRIC`: see [`Metric`];
//! - `SUBJECT`: `PEER/BASE` for a ratio (the peer's metric over the base's,
//!   measured in the same run) or `PEER` for the metric itself; peers are the
//!   names the `peers` bench prints (`ringrpc`, `ringrpc-nodigest`,
//!   `raw-blocking`, `raw-pipelined`, `raw-crc`, `tarpc`, `tonic`);
//! - `OP`: `<=` or `>=`; `BOUND`: a number; `NOTE`: the rest of the line.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable naming the targets file ([`default_path`]).
pub const ENV: &str = "RINGRPC_TARGETS";

/// What a target measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `p50`: median latency.
    P50,
    /// `p99`: 99th percentile latency.
    P99,
    /// `calls/s`: successful calls per second.
    CallsPerSec,
    /// `server-cpu-us`: server thread CPU µs per call.
    ServerCpuUs,
    /// `client-cpu-us`: client thread CPU µs per call.
    ClientCpuUs,
    /// `allocs/call`: heap allocations per call in steady state (measured by
    /// `tests/alloc_per_call.rs`, not by the bench tools).
    AllocsPerCall,
}

impl Metric {
    /// The metric's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::CallsPerSec => "calls/s",
            Metric::ServerCpuUs => "server-cpu-us",
            Metric::ClientCpuUs => "client-cpu-us",
            Metric::AllocsPerCall => "allocs/call",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Metric::P50,
            Metric::P99,
            Metric::CallsPerSec,
            Metric::ServerCpuUs,
            Metric::ClientCpuUs,
            Metric::AllocsPerCall,
        ]
        .into_iter()
        .find(|m| m.name() == text)
    }
}

/// A cell of the benchmark matrix: calls in flight × payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cell {
    /// Calls kept in flight (closed loop).
    pub in_flight: usize,
    /// Payload bytes per request.
    pub payload: usize,
}

impl Cell {
    /// The payload size: `4 KiB` (whole KiB from 1 KiB up), else `64 B`.
    pub fn size(&self) -> String {
        let p = self.payload;
        if p >= 1024 && p % 1024 == 0 {
            format!("{} KiB", p / 1024)
        } else {
            format!("{p} B")
        }
    }
}

impl fmt::Display for Cell {
    /// `128 x 4 KiB`, `1 x 64 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} x {}", self.in_flight, self.size())
    }
}

/// Whether a value must stay at most or at least the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<=`.
    AtMost,
    /// `>=`.
    AtLeast,
}

/// One line of the targets file.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `P1` .. `P5` (several lines may share an id).
    pub id: String,
    /// The cell it is measured in (`None`: `-`, no particular cell).
    pub cell: Option<Cell>,
    /// What is measured.
    pub metric: Metric,
    /// The peer measured.
    pub peer: String,
    /// For a ratio, the peer it is divided by.
    pub base: Option<String>,
    /// The direction of the bound.
    pub op: Op,
    /// The bound.
    pub bound: f64,
    /// Free text (empty if none).
    pub note: String,
}

impl Target {
    /// Whether `value` meets the bound (NaN never does; bounds are inclusive).
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            Op::AtMost => value <= self.bound,
            Op::AtLeast => value >= self.bound,
        }
    }

    /// `(target <= 1.05: met)` for `value`.
    pub fn verdict(&self, value: f64) -> String {
        let verdict = if self.holds(value) { "met" } else { "missed" };
        format!("(target {} {:.2}: {verdict})", self.op_str(), self.bound)
    }

    fn op_str(&self) -> &'static str {
        match self.op {
            Op::AtMost => "<=",
            Op::AtLeast => ">=",
        }
    }

    /// What the line measures, e.g. `P2 128 x 64 B  calls/s ringrpc / raw-pipelined`.
    pub fn label(&self) -> String {
        let cell = self.cell.map_or_else(String::new, |c| c.to_string());
        let subject = match &self.base {
            Some(base) => format!("{} / {base}", self.peer),
            None => self.peer.clone(),
        };
        format!("{:<3} {cell:<12} {} {subject}", self.id, self.metric.name())
    }

    /// The peers whose measurements the target needs (the peer, then the base).
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.peer.as_str()).chain(self.base.as_deref())
    }
}

/// Parses the text of a targets file.
pub fn parse(text: &str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let target = parse_line(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?;
        targets.push(target);
    }
    Ok(targets)
}

fn parse_line(line: &str) -> Result<Target, String> {
    let mut fields = line.split_whitespace();
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("no {what}"));
    let id = next("ID")?.to_string();
    let cell = parse_cell(next("CELL")?)?;
    let metric_text = next("METRIC")?;
    let metric =
        Metric::parse(metric_text).ok_or_else(|| format!("unknown metric {metric_text}"))?;
    let subject = next("SUBJECT")?;
    let (peer, base) = match subject.split_once('/') {
        Some((peer, base)) => (peer.to_string(), Some(base.to_string())),
        None => (subject.to_string(), None),
    };
    let op = match next("OP")? {
        "<=" => Op::AtMost,
        ">=" => Op::AtLeast,
        other => return Err(format!("OP must be <= or >=, not {other}")),
    };
    let bound_text = next("BOUND")?;
    let bound: f64 = bound_text
        .parse()
        .map_err(|_| format!("BOUND {bound_text} is not a number"))?;
    let note = fields.collect::<Vec<_>>().join(" ");
    if peer.is_empty() || base.as_deref() == Some("") {
        return Err("empty peer name".into());
    }
    Ok(Target {
        id,
        cell,
        metric,
        peer,
        base,
        op,
        bound,
        note,
    })
}

/// `128x4096` → a cell; `-` → none.
fn parse_cell(text: &str) -> Result<Option<Cell>, String> {
    if text == "-" {
        return Ok(None);
    }
    let cell = text
        .split_once('x')
        .and_then(|(f, p)| Some((f.parse().ok()?, p.parse().ok()?)));
    match cell {
        Some((in_flight, payload)) if in_flight > 0 => Ok(Some(Cell { in_flight, payload })),
        _ => Err(format!(
            "CELL {text} is not IN_FLIGHTxPAYLOAD (e.g. 128x64) or -"
        )),
    }
}

/// Reads and parses the targets file at `path`.
pub fn load(path: &Path) -> Result<Vec<Target>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the targets file is unless a tool is told otherwise: `$RINGRPC_TARGETS`,
/// or `benches/targets.txt` of the source tree this crate was built from (its
/// path, not its contents, is compiled in).
pub fn default_path() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(path) => PathBuf::from(path),
        None => checked_in(),
    }
}

/// `benches/targets.txt` of the source tree (this crate is `benches/workload`).
fn checked_in() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).join("targets.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ratios_absolutes_comments_and_notes() {
        let text = "# targets\n\
                    P1  1x64   p50 ringrpc/raw-blocking <= 1.05   # latency\n\
                    \n\
                    P4  128x64 server-cpu-us ringrpc <= 0.40 server thread\n\
                    P5  -      allocs/call   ringrpc <= 0\n";
        let t = parse(text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0].cell,
            Some(Cell {
                in_flight: 1,
                payload: 64
            })
        );
        assert_eq!(
            (t[0].peer.as_str(), t[0].base.as_deref()),
            ("ringrpc", Some("raw-blocking"))
        );
        assert_eq!(
            (t[0].op, t[0].bound, t[0].note.as_str()),
            (Op::AtMost, 1.05, "")
        );
        assert_eq!(
            (t[1].metric, t[1].base.as_deref()),
            (Metric::ServerCpuUs, None)
        );
        assert_eq!(t[1].note, "server thread");
        assert_eq!((t[2].cell, t[2].metric), (None, Metric::AllocsPerCall));
        assert_eq!(
            t[0].peers().collect::<Vec<_>>(),
            ["ringrpc", "raw-blocking"]
        );
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = parse("\nP1 1x64 p42 ringrpc <= 1").unwrap_err();
        assert!(err.starts_with("line 2: unknown metric p42"), "{err}");
        assert!(parse("P1 64 p50 ringrpc <= 1").is_err());
        assert!(parse("P1 1x64 p50 ringrpc < 1").is_err());
        assert!(parse("P1 1x64 p50 ringrpc/ <= 1").is_err());
        assert!(parse("P1 1x64 p50 ringrpc <=").is_err());
    }

    #[test]
    fn bounds_are_inclusive_and_nan_never_holds() {
        let t = &parse("P1 1x64 p50 a/b <= 1.10\nP2 1x64 calls/s a/b >= 0.60").unwrap();
        assert!(t[0].holds(1.10) && !t[0].holds(1.11) && !t[0].holds(f64::NAN));
        assert!(t[1].holds(0.60) && !t[1].holds(0.59) && !t[1].holds(f64::NAN));
        assert_eq!(t[1].verdict(0.7), "(target >= 0.60: met)");
    }

    #[test]
    fn cells_print_in_bytes_or_kib() {
        assert_eq!(
            Cell {
                in_flight: 128,
                payload: 4096
            }
            .to_string(),
            "128 x 4 KiB"
        );
        assert_eq!(
            Cell {
                in_flight: 1,
                payload: 64
            }
            .to_string(),
            "1 x 64 B"
        );
    }

    #[test]
    fn the_checked_in_file_parses() {
        let targets = load(&checked_in()).unwrap();
        for id in ["P1", "P2", "P3", "P4", "P5"] {
            assert!(targets.iter().any(|t| t.id == id), "{id} missing");
        }
    }
}
