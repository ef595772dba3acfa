//! `ringrpc plot --bench`: charts of a `ringrpc bench --csv` file.
//!
//! - `throughput-vs-inflight.svg`: closed-loop ringrpc calls/s (left) and
//!   p50/p99 latency (right) against calls in flight (log₂ axis), with the
//!   raw-socket floors of `--compare floor` as reference lines and points;
//! - `latency-percentiles.svg`: p50, p90, p99, p99.9 and max of every row
//!   (ringrpc at each in-flight value and rate, and the floors), log scale.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{self, categories, category_name, latency_range, tick, Area, FONT};
use crate::plot_input::{BenchRow, BENCH_PERCENTILES};
use crate::report::thousands;
use crate::CliResult;

/// Line width of data series.
const LINE: u32 = 2;
/// Colours of ringrpc rows and lines, in order.
const SERIES: [RGBColor; 6] = [
    RGBColor(230, 97, 1),
    RGBColor(178, 24, 43),
    RGBColor(118, 42, 131),
    RGBColor(33, 102, 172),
    RGBColor(1, 133, 113),
    RGBColor(140, 81, 10),
];
/// Colours of the floors (dashed), in order.
const FLOORS: [RGBColor; 2] = [RGBColor(50, 50, 50), RGBColor(150, 150, 150)];

/// Writes `throughput-vs-inflight.svg`; fails without closed-loop ringrpc rows.
pub fn throughput_vs_inflight(path: &Path, rows: &[BenchRow]) -> CliResult<()> {
    let ringrpc: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| r.mode == "closed" && r.label.starts_with("ringrpc") && r.in_flight.is_some())
        .collect();
    if ringrpc.is_empty() {
        return Err(
            "no closed-loop ringrpc rows in the bench CSV (run `ringrpc bench --in-flight ...`)"
                .into(),
        );
    }
    let floors: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| r.label.starts_with("floor"))
        .collect();
    let title = "ringrpc bench: throughput and latency vs calls in flight";
    let area = plot::canvas(path, (1100, 480), title)?;
    let (left, right) = area.split_horizontally(550);
    let x = x_range(ringrpc.iter().chain(&floors).copied());
    throughput_panel(&left, x.clone(), &ringrpc, &floors)?;
    latency_panel(&right, x, &ringrpc, &floors)?;
    area.present()?;
    Ok(())
}

/// Writes `latency-percentiles.svg`.
pub fn latency_percentiles(path: &Path, rows: &[BenchRow]) -> CliResult<()> {
    let title = "ringrpc bench: latency percentiles (µs, log scale), ringrpc vs floor";
    percentiles_chart(path, rows, title)
}

/// The cluster benchmark's rows (`scripts/cluster-bench.sh`): latency
/// percentiles of each balancer with hedging off and on.
pub fn cluster_latency(path: &Path, rows: &[BenchRow]) -> CliResult<()> {
    let title = "3 servers, one +5 ms on 5% of calls: latency percentiles (µs, log scale)";
    percentiles_chart(path, rows, title)
}

fn percentiles_chart(path: &Path, rows: &[BenchRow], title: &str) -> CliResult<()> {
    if rows.is_empty() {
        return Err("the bench CSV has no rows".into());
    }
    let area = plot::canvas(path, (900, 520), title)?;
    let names: Vec<String> = BENCH_PERCENTILES.iter().map(|s| s.to_string()).collect();
    let range = latency_range(rows.iter().flat_map(|r| r.latency));
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(categories(names.len()), range.log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len())
        .x_label_formatter(&|x| category_name(&names, *x))
        .y_label_formatter(&|y| tick(*y))
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .label_style((FONT, 14))
        .draw()?;
    let (mut floors, mut others) = (0, 0);
    for row in rows {
        let points: Vec<(f64, f64)> = row
            .latency
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        let name = row_name(row, rows);
        if is_floor(row) {
            let style = FLOORS[floors % FLOORS.len()].stroke_width(LINE);
            floors += 1;
            dashed(&mut chart, points, style, name)?;
        } else {
            let style = SERIES[others % SERIES.len()].stroke_width(LINE);
            others += 1;
            chart
                .draw_series(LineSeries::new(points, style).point_size(4))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    plot::legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    area.present()?;
    Ok(())
}

/// Whether `row` is a raw-socket floor.
fn is_floor(row: &BenchRow) -> bool {
    row.label.starts_with("floor")
}

/// Draws a dashed line through `points` with a circle at each, as one legend entry.
fn dashed<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
    name: String,
) -> CliResult<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, style)))?;
    chart
        .draw_series(DashedLineSeries::new(points, 8, 5, style))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    Ok(())
}

/// The legend name of a row: `ringrpc, 16 in flight`, `ringrpc/open, 10,000 calls/s`,
/// `floor/pipelined (1024 in flight)`; pool and payload when they vary.
fn row_name(row: &BenchRow, rows: &[BenchRow]) -> String {
    let mut name = match (row.target_rate, row.in_flight) {
        (Some(rate), _) => format!("{}, {} calls/s", row.label, thousands(rate)),
        (None, Some(n)) if is_floor(row) => format!("{} ({n} in flight)", row.label),
        (None, Some(n)) => format!("{}, {n} in flight", row.label),
        (None, None) => row.label.clone(),
    };
    if rows.iter().any(|r| !is_floor(r) && r.pool != row.pool) {
        if let Some(pool) = row.pool {
            name.push_str(&format!(", pool {pool}"));
        }
    }
    if rows.iter().any(|r| r.payload != row.payload) {
        name.push_str(&format!(", {} B", row.payload));
    }
    name
}

/// The log₂(in-flight) range covering `rows`, padded half a step each side.
fn x_range<'a>(rows: impl Iterator<Item = &'a BenchRow>) -> std::ops::Range<f64> {
    let logs: Vec<f64> = rows.filter_map(|r| r.in_flight).map(log2).collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo > hi {
        return -0.5..0.5;
    }
    (lo - 0.5)..(hi + 0.5)
}

fn log2(n: usize) -> f64 {
    (n.max(1) as f64).log2()
}

/// In-flight label at `x = log₂(n)`: `n` at whole numbers, else empty.
fn in_flight_label(x: f64) -> String {
    if (x - x.round()).abs() > 0.01 || x < -0.01 {
        return String::new();
    }
    format!("{}", 2f64.powi(x.round() as i32))
}

/// Whole numbers in `x` (the number of in-flight labels to ask for).
fn label_count(x: &std::ops::Range<f64>) -> usize {
    (x.end.floor() - x.start.ceil()).max(0.0) as usize + 1
}

/// Groups of ringrpc rows that form one line (same label, pool and payload).
fn lines<'a>(ringrpc: &[&'a BenchRow]) -> Vec<Vec<&'a BenchRow>> {
    let mut lines: Vec<Vec<&BenchRow>> = Vec::new();
    for &row in ringrpc {
        let key = |r: &BenchRow| (r.label.clone(), r.pool, r.payload);
        match lines.iter_mut().find(|l| key(l[0]) == key(row)) {
            Some(line) => line.push(row),
            None => lines.push(vec![row]),
        }
    }
    for line in &mut lines {
        line.sort_by_key(|r| r.in_flight);
    }
    lines
}

/// The name of a ringrpc line: `ringrpc (pool 1, 64 B)`.
fn line_name(row: &BenchRow) -> String {
    let pool = row.pool.map_or_else(String::new, |p| format!("pool {p}, "));
    format!("{} ({pool}{} B)", row.label, row.payload)
}

/// Left panel: calls/s against in-flight; floors as dashed reference lines.
fn throughput_panel(
    area: &Area<'_>,
    x: std::ops::Range<f64>,
    ringrpc: &[&BenchRow],
    floors: &[&BenchRow],
) -> CliResult<()> {
    let all = ringrpc.iter().chain(floors);
    let top = all.map(|r| r.calls_per_s).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput (higher is better)", (FONT, 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(label_count(&x))
        .x_label_formatter(&|v| in_flight_label(*v))
        .y_label_formatter(&|y| tick(*y))
        .x_desc("calls in flight per client core")
        .y_desc("calls/s")
        .label_style((FONT, 13))
        .draw()?;
    for (i, line) in lines(ringrpc).iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        let points = line
            .iter()
            .map(|r| (log2(r.in_flight.unwrap_or(1)), r.calls_per_s));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(LINE)).point_size(4))?
            .label(line_name(line[0]))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(LINE))
            });
    }
    for (i, floor) in floors.iter().enumerate() {
        let style = FLOORS[i % FLOORS.len()].stroke_width(LINE);
        let level = [(x.start, floor.calls_per_s), (x.end, floor.calls_per_s)];
        let name = format!(
            "{} ({} in flight)",
            floor.label,
            floor.in_flight.unwrap_or(1)
        );
        chart
            .draw_series(DashedLineSeries::new(level, 8, 5, style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        let at = (log2(floor.in_flight.unwrap_or(1)), floor.calls_per_s);
        chart.draw_series(std::iter::once(Cross::new(at, 6, style)))?;
    }
    plot::legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// Right panel: p50 and p99 against in-flight (log scale); floors as points.
fn latency_panel(
    area: &Area<'_>,
    x: std::ops::Range<f64>,
    ringrpc: &[&BenchRow],
    floors: &[&BenchRow],
) -> CliResult<()> {
    // latency[0] is p50, latency[2] p99.
    let values = ringrpc
        .iter()
        .chain(floors)
        .flat_map(|r| [r.latency[0], r.latency[2]]);
    let mut chart = ChartBuilder::on(area)
        .caption("latency (lower is better)", (FONT, 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), latency_range(values).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(label_count(&x))
        .x_label_formatter(&|v| in_flight_label(*v))
        .y_label_formatter(&|y| tick(*y))
        .x_desc("calls in flight per client core")
        .y_desc("latency (µs)")
        .label_style((FONT, 13))
        .draw()?;
    for (i, line) in lines(ringrpc).iter().enumerate() {
        for (idx, name, width) in [(0, "p50", 1), (2, "p99", LINE + 1)] {
            let style = SERIES[i % SERIES.len()].stroke_width(width);
            let points = line
                .iter()
                .map(|r| (log2(r.in_flight.unwrap_or(1)), r.latency[idx]));
            chart
                .draw_series(LineSeries::new(points, style).point_size(3))?
                .label(format!("{} {name}", line_name(line[0])))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    for (i, floor) in floors.iter().enumerate() {
        let color = FLOORS[i % FLOORS.len()];
        let x = log2(floor.in_flight.unwrap_or(1));
        let (p50, p99) = ((x, floor.latency[0]), (x, floor.latency[2]));
        chart
            .draw_series([Circle::new(p50, 5, color.stroke_width(2))])?
            .label(format!("{} p50", floor.label))
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.stroke_width(2)));
        chart
            .draw_series([TriangleMarker::new(p99, 6, color.filled())])?
            .label(format!("{} p99", floor.label))
            .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled()));
    }
    plot::legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_axis_labels_powers_of_two() {
        assert_eq!(in_flight_label(log2(128)), "128");
        assert_eq!(in_flight_label(0.0), "1");
        assert_eq!(in_flight_label(3.5), "");
        assert_eq!(label_count(&(-0.5..10.5)), 11);
    }
}
