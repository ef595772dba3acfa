//! `ringrpc plot --peers`: charts of the `peers` bench (`peers.csv`), one
//! panel per cell (calls in flight × payload), peers in a fixed order: the
//! raw-socket floor of the cell, the floor with a CRC per message, ringrpc,
//! tarpc, tonic.
//!
//! - `peers-throughput.svg`: calls/s per peer (bars, linear scale per panel);
//! - `peers-latency.svg`: p50, p99 and p99.9 per peer (bars, log scale).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::plot::{
    self, categories, category_name, latency_range, peer_color, si, tick, Area, FONT,
};
use crate::plot_input::PeerRow;
use crate::CliResult;

/// The order peers appear in within a panel.
const ORDER: [&str; 6] = [
    "raw-blocking",
    "raw-pipelined",
    "raw-crc",
    "ringrpc",
    "tarpc",
    "tonic",
];
/// Width of one panel, pixels.
const PANEL_WIDTH: u32 = 400;
/// Colours of p50, p99 and p99.9 (light to dark blue).
const PERCENTILE_COLORS: [RGBColor; 3] = [
    RGBColor(158, 202, 225),
    RGBColor(66, 146, 198),
    RGBColor(8, 69, 148),
];

/// A cell of the matrix: (calls in flight, payload bytes).
type Cell = (usize, usize);

/// Writes `peers-throughput.svg`.
pub fn throughput(path: &Path, rows: &[PeerRow]) -> CliResult<()> {
    let cells = cells(rows);
    let width = PANEL_WIDTH * cells.len() as u32;
    let title = "peers: throughput per cell (calls/s, higher is better)";
    let area = plot::canvas(path, (width.max(600), 460), title)?;
    for (panel, &cell) in area.split_evenly((1, cells.len())).iter().zip(&cells) {
        throughput_panel(panel, cell, &peers_of(rows, cell))?;
    }
    area.present()?;
    Ok(())
}

/// Writes `peers-latency.svg`.
pub fn latency(path: &Path, rows: &[PeerRow]) -> CliResult<()> {
    let cells = cells(rows);
    let width = PANEL_WIDTH * cells.len() as u32;
    let title = "peers: latency per cell (µs, log scale, lower is better)";
    let area = plot::canvas(path, (width.max(600), 460), title)?;
    let panels = area.split_evenly((1, cells.len()));
    for (i, (panel, &cell)) in panels.iter().zip(&cells).enumerate() {
        latency_panel(panel, cell, &peers_of(rows, cell), i == 0)?;
    }
    area.present()?;
    Ok(())
}

/// The cells of `rows`, in order of first appearance.
fn cells(rows: &[PeerRow]) -> Vec<Cell> {
    let mut cells: Vec<Cell> = Vec::new();
    for r in rows {
        if !cells.contains(&(r.in_flight, r.payload)) {
            cells.push((r.in_flight, r.payload));
        }
    }
    cells
}

/// The rows of `cell`, in [`ORDER`] (unknown peers last).
fn peers_of(rows: &[PeerRow], cell: Cell) -> Vec<&PeerRow> {
    let mut peers: Vec<&PeerRow> = rows
        .iter()
        .filter(|r| (r.in_flight, r.payload) == cell)
        .collect();
    peers.sort_by_key(|r| {
        ORDER
            .iter()
            .position(|p| *p == r.peer)
            .unwrap_or(ORDER.len())
    });
    peers
}

/// `128 in flight × 4 KiB`.
pub fn cell_name((in_flight, payload): Cell) -> String {
    let size = if payload >= 1024 && payload % 1024 == 0 {
        format!("{} KiB", payload / 1024)
    } else {
        format!("{payload} B")
    };
    format!("{in_flight} in flight × {size}")
}

/// The name shown for a peer: the floors as the CLI labels them.
fn display_name(peer: &str) -> String {
    match peer {
        "raw-blocking" => "floor/blocking".to_string(),
        "raw-pipelined" => "floor/pipelined".to_string(),
        "raw-crc" => "floor+crc".to_string(),
        other => other.to_string(),
    }
}

/// One cell: a bar per peer with its calls/s on top.
fn throughput_panel(area: &Area<'_>, cell: Cell, peers: &[&PeerRow]) -> CliResult<()> {
    let names: Vec<String> = peers.iter().map(|p| display_name(&p.peer)).collect();
    let top = peers.iter().map(|p| p.calls_per_s).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(cell_name(cell), (FONT, 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(58)
        .build_cartesian_2d(categories(peers.len()), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(peers.len())
        .x_label_formatter(&|x| category_name(&names, *x))
        .y_label_formatter(&|y| tick(*y))
        .y_desc("calls/s")
        .label_style((FONT, 13))
        .draw()?;
    chart.draw_series(peers.iter().enumerate().map(|(i, p)| {
        let x = i as f64;
        Rectangle::new(
            [(x - 0.35, 0.0), (x + 0.35, p.calls_per_s)],
            peer_color(&p.peer).filled(),
        )
    }))?;
    let label = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| Text::new(si(p.calls_per_s), (i as f64, p.calls_per_s), label.clone())),
    )?;
    Ok(())
}

/// One cell: p50, p99 and p99.9 bars per peer on a log scale.
fn latency_panel(area: &Area<'_>, cell: Cell, peers: &[&PeerRow], key: bool) -> CliResult<()> {
    let names: Vec<String> = peers.iter().map(|p| display_name(&p.peer)).collect();
    let values = |p: &PeerRow| [p.p50, p.p99, p.p999];
    let range = latency_range(peers.iter().flat_map(|p| values(p)));
    let floor = range.start;
    let mut chart = ChartBuilder::on(area)
        .caption(cell_name(cell), (FONT, 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(58)
        .build_cartesian_2d(categories(peers.len()), range.log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(peers.len())
        .x_label_formatter(&|x| category_name(&names, *x))
        .y_label_formatter(&|y| tick(*y))
        .y_desc("latency (µs)")
        .label_style((FONT, 13))
        .draw()?;
    for (j, name) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let color = PERCENTILE_COLORS[j];
        let offset = (j as f64 - 1.0) * 0.26;
        let bars = peers.iter().enumerate().map(|(i, p)| {
            let x = i as f64 + offset;
            Rectangle::new(
                [(x - 0.12, floor), (x + 0.12, values(p)[j])],
                color.filled(),
            )
        });
        let series = chart.draw_series(bars)?;
        if key {
            series.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
    }
    if key {
        plot::legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(in_flight: usize, peer: &str) -> PeerRow {
        PeerRow {
            in_flight,
            payload: 64,
            peer: peer.to_string(),
            calls_per_s: 1.0,
            p50: 1.0,
            p99: 2.0,
            p999: 3.0,
        }
    }

    #[test]
    fn peers_are_grouped_by_cell_in_a_fixed_order() {
        let rows = [
            row(1, "tonic"),
            row(1, "raw-blocking"),
            row(128, "ringrpc"),
            row(1, "ringrpc"),
        ];
        assert_eq!(cells(&rows), [(1, 64), (128, 64)]);
        let order: Vec<&str> = peers_of(&rows, (1, 64))
            .iter()
            .map(|r| r.peer.as_str())
            .collect();
        assert_eq!(order, ["raw-blocking", "ringrpc", "tonic"]);
        assert_eq!(cell_name((128, 4096)), "128 in flight × 4 KiB");
    }
}
