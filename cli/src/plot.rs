//! SVG charts (plotters): the `tune` sweep (throughput and p99 against pool
//! size), and the helpers the `ringrpc plot` charts share (`plot_peers.rs`,
//! `plot_bench.rs`): canvas, categorical x axes, number formats and colours.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
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

/// A region of an SVG chart.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Font family of every chart.
pub const FONT: &str = "sans-serif";

/// A white SVG canvas of `size` pixels at `path` with `title` on top; returns
/// the area under the title (call `present()` on it when done).
pub fn canvas<'a>(path: &'a Path, size: (u32, u32), title: &str) -> CliResult<Area<'a>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root.titled(title, (FONT, 22))?)
}

/// The x range that puts category `i` of `n` at `x = i`.
pub fn categories(n: usize) -> Range<f64> {
    -0.5..(n.max(1) as f64 - 0.5)
}

/// The name of the category at `x` (empty between categories).
pub fn category_name(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 0.01 || i < 0.0 {
        return String::new();
    }
    names.get(i as usize).cloned().unwrap_or_default()
}

/// A count with an SI suffix and about three significant digits: `950`,
/// `13.5k`, `628k`, `1.50M`.
pub fn si(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let decimals = match scaled.abs() {
        v if v >= 100.0 || suffix.is_empty() && v >= 10.0 => 0,
        v if v >= 10.0 => 1,
        _ if suffix.is_empty() && scaled.fract() == 0.0 => 0,
        _ => 2,
    };
    format!("{scaled:.decimals$}{suffix}")
}

/// An axis tick label: [`si`] without trailing zeros (`8k`, `1.5M`, `100`).
pub fn tick(value: f64) -> String {
    let text = si(value);
    let digits_end = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    if !number.contains('.') {
        return text;
    }
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number}{suffix}")
}

/// A log-scale latency range (µs) covering `values`, from the decade at or
/// below the smallest to the decade above twice the largest (headroom for
/// the legend), so that ticks fall on 10, 100, 1k, ...
pub fn latency_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi == 0.0 {
        return 1.0..10.0;
    }
    let decade = |v: f64, round: fn(f64) -> f64| 10f64.powf(round(v.log10()));
    decade(lo.max(1.0), f64::floor)..decade(hi * 2.0, f64::ceil)
}

/// The colour of a peer or bench label: floors grey, ringrpc orange, tarpc
/// blue, tonic green.
pub fn peer_color(peer: &str) -> RGBColor {
    match peer {
        p if p.starts_with("raw-") || p.starts_with("floor") => RGBColor(120, 120, 120),
        p if p.starts_with("ringrpc") => RGBColor(230, 97, 1),
        "tarpc" => RGBColor(49, 130, 189),
        "tonic" => RGBColor(49, 163, 84),
        _ => RGBColor(117, 107, 177),
    }
}

/// Draws the legend of `chart` in a white box at `position`.
pub fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> CliResult<()> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK.mix(0.4))
        .background_style(WHITE.mix(0.9))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_keeps_about_three_digits() {
        let got: Vec<String> = [0.0, 7.0, 950.0, 13_450.7, 628_093.0, 1_502_250.7]
            .into_iter()
            .map(si)
            .collect();
        assert_eq!(got, ["0", "7", "950", "13.5k", "628k", "1.50M"]);
        let ticks: Vec<String> = [8000.0, 1.5e6, 100.0, 10_000.0]
            .into_iter()
            .map(tick)
            .collect();
        assert_eq!(ticks, ["8k", "1.5M", "100", "10k"]);
    }

    #[test]
    fn latency_ranges_span_whole_decades() {
        assert_eq!(latency_range([58.0, 300.0].into_iter()), 10.0..1000.0);
        assert_eq!(latency_range([120.0, 4000.0].into_iter()), 100.0..10_000.0);
        assert_eq!(latency_range(std::iter::empty()), 1.0..10.0);
    }

    #[test]
    fn categories_are_named_at_whole_numbers_only() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(category_name(&names, 1.0), "b");
        assert_eq!(category_name(&names, 0.5), "");
        assert_eq!(category_name(&names, 2.0), "");
    }
}
