//! SVG charts (plotters): the `tune` sweep, throughput and p99 against pool size.

use std::path::Path;

use plotters::prelude::*;

use crate::tune::Point;
use crate::CliResult;

/// Two panels side by side: calls/s and p99 µs against pool size, one line per
/// in-flight setting.
pub fn tune_svg(path: &Path, points: &[Point]) -> CliResult<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let max_pool = points.iter().map(|p| p.pool).max().unwrap_or(1) as u32;
    let mut in_flights: Vec<usize> = points.iter().map(|p| p.in_flight).collect();
    in_flights.sort_unstable();
    in_flights.dedup();
    let top_calls = points.iter().map(|p| p.calls_per_sec).fold(1.0, f64::max) * 1.1;
    let top_p99 = points.iter().map(|p| p.p99 as f64).fold(1.0, f64::max) * 1.1;
    panel(
        &left,
        "throughput (calls/s)",
        max_pool,
        top_calls,
        points,
        &in_flights,
        |p| p.calls_per_sec,
    )?;
    panel(
        &right,
        "p99 latency (µs)",
        max_pool,
        top_p99,
        points,
        &in_flights,
        |p| p.p99 as f64,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    max_pool: u32,
    top: f64,
    points: &[Point],
    in_flights: &[usize],
    value: impl Fn(&Point) -> f64,
) -> CliResult<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(1u32..max_pool.max(2), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("pool size (connections per core)")
        .draw()?;
    for (i, &in_flight) in in_flights.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = points
            .iter()
            .filter(|p| p.in_flight == in_flight)
            .map(|p| (p.pool as u32, value(p)));
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))?
            .label(format!("{in_flight} in flight"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
