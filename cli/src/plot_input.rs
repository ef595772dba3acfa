//! The CSV files `ringrpc plot` reads: the `peers` bench's
//! `target/peers/peers.csv` and `ringrpc bench --csv`. Columns are found by
//! name from the header line, so extra or reordered columns are fine; a
//! missing column or a malformed cell is a typed [`InputError`].

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why an input CSV could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file has no header line.
    #[error("{path}: empty file (no header line)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A column the chart needs is not in the header.
    #[error("{path}: no column `{column}` in the header")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: &'static str,
    },
    /// A line has a different number of cells than the header.
    #[error("{path} line {line}: {found} cells, the header has {expected}")]
    Width {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Cells on the line.
        found: usize,
        /// Cells in the header.
        expected: usize,
    },
    /// A cell does not parse as the column's type.
    #[error("{path} line {line}: `{column}` = {value:?} is not a valid number")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column's name.
        column: &'static str,
        /// The cell's text.
        value: String,
    },
    /// A required cell is empty.
    #[error("{path} line {line}: `{column}` is empty")]
    EmptyValue {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column's name.
        column: &'static str,
    },
}

/// A parsed CSV file: the header and the data lines.
#[derive(Debug)]
struct Table {
    path: PathBuf,
    header: Vec<String>,
    /// (1-based line number, cells).
    lines: Vec<(usize, Vec<String>)>,
}

/// One data line of a [`Table`], for typed access by column name.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    table: &'a Table,
    number: usize,
    cells: &'a [String],
}

impl Table {
    fn read(path: &Path) -> Result<Self, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, InputError> {
        let mut numbered = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = numbered.next().ok_or_else(|| InputError::Empty {
            path: path.to_path_buf(),
        })?;
        let header = split(first);
        let mut lines = Vec::new();
        for (i, text) in numbered {
            let cells = split(text);
            if cells.len() != header.len() {
                return Err(InputError::Width {
                    path: path.to_path_buf(),
                    line: i + 1,
                    found: cells.len(),
                    expected: header.len(),
                });
            }
            lines.push((i + 1, cells));
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            lines,
        })
    }

    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines.iter().map(move |(number, cells)| Line {
            table: self,
            number: *number,
            cells,
        })
    }

    /// Checks that every column in `names` is present.
    fn require(&self, names: &[&'static str]) -> Result<(), InputError> {
        match names.iter().find(|n| !self.header.iter().any(|h| h == *n)) {
            Some(column) => Err(InputError::MissingColumn {
                path: self.path.clone(),
                column,
            }),
            None => Ok(()),
        }
    }
}

impl Line<'_> {
    /// The cell of `column` (checked present by [`Table::require`]; empty otherwise).
    fn text(&self, column: &'static str) -> &str {
        self.table
            .header
            .iter()
            .position(|h| h == column)
            .and_then(|i| self.cells.get(i))
            .map_or("", String::as_str)
    }

    /// The cell of `column` parsed as `T`; `None` when empty.
    fn opt<T: FromStr>(&self, column: &'static str) -> Result<Option<T>, InputError> {
        let text = self.text(column).trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| InputError::BadValue {
            path: self.table.path.clone(),
            line: self.number,
            column,
            value: text.to_string(),
        })
    }

    /// The cell of `column` parsed as `T`; an error when empty.
    fn req<T: FromStr>(&self, column: &'static str) -> Result<T, InputError> {
        self.opt(column)?.ok_or_else(|| InputError::EmptyValue {
            path: self.table.path.clone(),
            line: self.number,
            column,
        })
    }
}

/// Splits one CSV line into cells (double-quoted cells may hold commas and `""`).
fn split(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let (mut quoted, mut chars) = (false, line.chars().peekable());
    while let Some(c) = chars.next() {
        let cell = cells.last_mut().expect("cells starts non-empty");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cell.push(c),
        }
    }
    cells
}

/// One reported result of `cargo bench -p ringrpc-peers --bench peers` (a peer in a cell).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    /// Calls in flight of the cell.
    pub in_flight: usize,
    /// Payload bytes of the cell.
    pub payload: usize,
    /// `raw-blocking`, `raw-pipelined`, `raw-crc`, `ringrpc`, `tarpc`, `tonic`.
    pub peer: String,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Median latency, µs.
    pub p50: f64,
    /// 99th percentile latency, µs.
    pub p99: f64,
    /// 99.9th percentile latency, µs.
    pub p999: f64,
}

/// Reads `peers.csv`.
pub fn peers(path: &Path) -> Result<Vec<PeerRow>, InputError> {
    let table = Table::read(path)?;
    table.require(&[
        "in_flight",
        "payload",
        "peer",
        "calls_per_s",
        "p50_us",
        "p99_us",
        "p999_us",
    ])?;
    table
        .lines()
        .map(|l| {
            Ok(PeerRow {
                in_flight: l.req("in_flight")?,
                payload: l.req("payload")?,
                peer: l.text("peer").to_string(),
                calls_per_s: l.req("calls_per_s")?,
                p50: l.req("p50_us")?,
                p99: l.req("p99_us")?,
                p999: l.req("p999_us")?,
            })
        })
        .collect()
}

/// One row of `ringrpc bench --csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// `closed` or `open`.
    pub mode: String,
    /// `ringrpc`, `ringrpc/open`, `floor/blocking`, `floor/pipelined`, ...
    pub label: String,
    /// Calls in flight (closed loop).
    pub in_flight: Option<usize>,
    /// Connections per client core (`None` for floors).
    pub pool: Option<usize>,
    /// Payload bytes.
    pub payload: usize,
    /// Target calls/s (open loop).
    pub target_rate: Option<f64>,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Latency percentiles p50, p90, p99, p99.9 and the max, µs.
    pub latency: [f64; 5],
}

/// Names of [`BenchRow::latency`]'s entries.
pub const BENCH_PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// Reads the CSV of `ringrpc bench --csv`.
pub fn bench(path: &Path) -> Result<Vec<BenchRow>, InputError> {
    let table = Table::read(path)?;
    let latency = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"];
    table.require(&[
        "mode",
        "label",
        "in_flight",
        "pool",
        "payload",
        "target_rate",
        "calls_per_s",
    ])?;
    table.require(&latency)?;
    table
        .lines()
        .map(|l| {
            let mut values = [0.0; 5];
            for (v, column) in values.iter_mut().zip(latency) {
                *v = l.req(column)?;
            }
            Ok(BenchRow {
                mode: l.text("mode").to_string(),
                label: l.text("label").to_string(),
                in_flight: l.opt("in_flight")?,
                pool: l.opt("pool")?,
                payload: l.req("payload")?,
                target_rate: l.opt("target_rate")?,
                calls_per_s: l.req("calls_per_s")?,
                latency: values,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes_and_empty_cells() {
        assert_eq!(split("a,,\"b,\"\"c\"\"\",d"), ["a", "", "b,\"c\"", "d"]);
    }

    #[test]
    fn typed_errors_name_the_line_and_column() {
        let path = Path::new("x.csv");
        let table = Table::parse(path, "a,b\n1,oops\n").unwrap();
        let line = table.lines().next().unwrap();
        assert_eq!(line.req::<u32>("a").unwrap(), 1);
        let err = line.req::<f64>("b").unwrap_err().to_string();
        assert_eq!(err, "x.csv line 2: `b` = \"oops\" is not a valid number");
        assert!(matches!(
            table.require(&["c"]),
            Err(InputError::MissingColumn { column: "c", .. })
        ));
        assert!(matches!(
            Table::parse(path, "a,b\n1\n"),
            Err(InputError::Width { line: 2, .. })
        ));
    }
}
