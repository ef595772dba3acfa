//! `ringrpc bench --csv FILE` and `--json FILE`: every row of the table, with
//! the columns the table leaves out (p90, drops, service time and send lag of
//! open-loop rows, CPU per call).
//!
//! Columns, in order ([`COLUMNS`]): `mode` (`closed`/`open`), `label`,
//! `in_flight` (empty for open-loop rows), `pool` (empty for floors),
//! `payload`, `target_rate` (empty for closed-loop rows), `calls_per_s`,
//! `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`, `errors`, `dropped`,
//! `cores`, then for open-loop rows `service_p50_us` .. `service_max_us`
//! (from the actual send) and `send_lag_p50_us`, `send_lag_p99_us` (how late
//! the generator sent), then
//! `server_cpu_us_per_call`, `client_cpu_us_per_call` (empty when not
//! measured, e.g. the server's with `--connect`). The JSON file holds the same
//! fields per row (`null` for empty) and the run's settings.

use std::fmt::Write as _;
use std::path::Path;

use crate::bench::{BenchArgs, CpuPlan};
use crate::report::{OpenStats, Row};
use crate::CliResult;

/// Column names of the CSV, and keys of each JSON row, in order.
pub const COLUMNS: [&str; 24] = [
    "mode",
    "label",
    "in_flight",
    "pool",
    "payload",
    "target_rate",
    "calls_per_s",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "errors",
    "dropped",
    "cores",
    "service_p50_us",
    "service_p90_us",
    "service_p99_us",
    "service_p999_us",
    "service_max_us",
    "send_lag_p50_us",
    "send_lag_p99_us",
    "server_cpu_us_per_call",
    "client_cpu_us_per_call",
];

/// One cell of an exported row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Text(&'static str),
    Int(u64),
    /// A number printed with this many decimals.
    Num(f64, usize),
    Empty,
}

/// Writes the `--csv` and `--json` files that `args` ask for (creating parent
/// directories), and says so.
pub fn write(args: &BenchArgs, cpus: &CpuPlan, rows: &[Row]) -> CliResult<()> {
    if let Some(path) = &args.csv {
        save(path, &csv(rows))?;
        println!("wrote {} ({} rows)", path.display(), rows.len());
    }
    if let Some(path) = &args.json {
        save(path, &json(args, cpus, rows))?;
        println!("wrote {} ({} rows)", path.display(), rows.len());
    }
    Ok(())
}

fn save(path: &Path, text: &str) -> CliResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The cells of `row`, in [`COLUMNS`] order.
fn values(row: &Row) -> [Value; 24] {
    use Value::{Empty, Int, Num, Text};
    let count = |n: usize| Int(n as u64);
    let open = |pick: fn(&OpenStats) -> u64| row.open.as_ref().map_or(Empty, |o| Int(pick(o)));
    let cpu = |v: Option<f64>| v.map_or(Empty, |v| Num(v, 3));
    [
        Text(row.mode()),
        Text(row.label),
        if row.open.is_some() {
            Empty
        } else {
            count(row.in_flight)
        },
        row.pool.map_or(Empty, count),
        count(row.payload),
        row.open.map_or(Empty, |o| Num(o.target_rate, 1)),
        Num(row.calls_per_sec, 1),
        Int(row.p50),
        Int(row.p90),
        Int(row.p99),
        Int(row.p999),
        Int(row.max),
        Int(row.errors),
        Int(row.open.map_or(0, |o| o.dropped)),
        count(row.cores),
        open(|o| o.service.p50),
        open(|o| o.service.p90),
        open(|o| o.service.p99),
        open(|o| o.service.p999),
        open(|o| o.service.max),
        open(|o| o.send_lag.p50),
        open(|o| o.send_lag.p99),
        cpu(row.cpu.server_us),
        cpu(row.cpu.client_us),
    ]
}

/// The CSV text: a header line, then one line per row.
fn csv(rows: &[Row]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = values(row).iter().map(csv_cell).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn csv_cell(value: &Value) -> String {
    match *value {
        Value::Text(t) if t.contains([',', '"', '\n']) => format!("\"{}\"", t.replace('"', "\"\"")),
        Value::Text(t) => t.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Num(x, _) if !x.is_finite() => String::new(),
        Value::Num(x, decimals) => format!("{x:.decimals$}"),
        Value::Empty => String::new(),
    }
}

/// The JSON text: `{"settings": {...}, "rows": [{...}, ...]}`.
fn json(args: &BenchArgs, cpus: &CpuPlan, rows: &[Row]) -> String {
    let mut out = String::from("{\n  \"settings\": ");
    out.push_str(&settings(args, cpus));
    out.push_str(",\n  \"rows\": [");
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        let fields: Vec<String> = COLUMNS
            .iter()
            .zip(values(row))
            .map(|(key, value)| format!("{}: {}", json_string(key), json_value(&value)))
            .collect();
        let _ = write!(out, "{{{}}}", fields.join(", "));
    }
    out.push_str("\n  ]\n}\n");
    out
}

/// The run's settings as a JSON object.
fn settings(args: &BenchArgs, cpus: &CpuPlan) -> String {
    let server = match args.connect.as_slice() {
        [] => json_string("embedded"),
        addrs => {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            json_string(&list.join(","))
        }
    };
    let client_cpus: Vec<String> = cpus.client.iter().map(usize::to_string).collect();
    format!(
        "{{\"server\": {server}, \"server_cpu\": {}, \"client_cpus\": [{}], \"duration_s\": {}, \
         \"warmup_s\": {}, \"metrics\": {}, \"busy_poll_us\": {}, \"max_outstanding\": {}, \"send_spin_us\": {}}}",
        if !args.connect.is_empty() {
            "null".to_string()
        } else {
            cpus.server.to_string()
        },
        client_cpus.join(", "),
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.metrics.is_on(),
        args.busy_poll,
        args.max_outstanding,
        args.send_spin,
    )
}

fn json_value(value: &Value) -> String {
    match *value {
        Value::Text(t) => json_string(t),
        Value::Int(n) => n.to_string(),
        Value::Num(x, decimals) if x.is_finite() => format!("{x:.decimals$}"),
        Value::Num(..) | Value::Empty => "null".to_string(),
    }
}

/// `text` as a JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Tally;
    use crate::report::{Percentiles, Shape};
    use std::time::Duration;

    fn row(open: bool) -> Row {
        let mut tally = Tally::new();
        for us in [10, 20, 30] {
            let _ = tally.hist.record(us);
        }
        let shape = Shape {
            in_flight: 16,
            cores: 1,
            pool: Some(1),
            payload: 64,
        };
        let mut row = Row::new("ringrpc", shape, &tally, Duration::from_secs(1));
        if open {
            row.label = "ringrpc/open";
            row.open = Some(OpenStats {
                target_rate: 1000.0,
                dropped: 2,
                peak_outstanding: 3,
                max_outstanding: 10,
                service: Percentiles::of(&tally.hist),
                send_lag: Percentiles::of(&tally.hist),
            });
        }
        row
    }

    #[test]
    fn csv_rows_have_one_cell_per_column() {
        let text = csv(&[row(false), row(true)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.split(',').count() == COLUMNS.len()));
        assert!(lines[1].starts_with("closed,ringrpc,16,1,64,,3.0,20,30,30,30,30,0,0,1,,,,,,,,,"));
        assert!(lines[2].starts_with("open,ringrpc/open,,1,64,1000.0,3.0,"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_value(&Value::Num(f64::NAN, 1)), "null");
        assert_eq!(csv_cell(&Value::Text("a,\"b\"")), r#""a,""b""""#);
    }
}
