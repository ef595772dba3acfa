//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].
//!
//! Counters and gauges carry a `core` label; latency histograms are merged
//! across cores and rendered as summaries: quantiles 0.5/0.95/0.99/0.999 from
//! the timed sample (`NaN`, as Prometheus clients write it, while nothing was
//! timed), `_count` the exact number of events and `_sum` their total latency
//! estimated from the sample (`metrics::estimated_sum`), so `rate(_count)`
//! is the real event rate. The largest sample of each phase is in a separate
//! `ringrpc_phase_latency_max_seconds` gauge family (the text format allows no
//! extra series inside a summary).

use std::fmt::Write;

use super::counters::MetricInfo;
use super::{LatencyHistogram, MetricsSnapshot, Phase};

/// `ringrpc_driver{kind="io_uring"|"epoll"}`: 1 for the driver the cores run.
fn driver_gauge(out: &mut String, snapshot: &MetricsSnapshot) {
    if snapshot.cores.iter().all(|c| c.driver.is_none()) {
        return;
    }
    header(
        out,
        "ringrpc_driver",
        "gauge",
        "The I/O driver the runtime's cores run (1) and the one they do not (0).",
    );
    for kind in [crate::Driver::IoUring, crate::Driver::Epoll] {
        let on = snapshot.cores.iter().any(|c| c.driver == Some(kind));
        let _ = writeln!(
            out,
            "ringrpc_driver{{kind=\"{}\"}} {}",
            kind.name(),
            u8::from(on)
        );
    }
}

const QUANTILES: [f64; 4] = [0.5, 0.95, 0.99, 0.999];

/// Reads one per-core figure off a core's snapshot.
type CoreValue = fn(&super::CoreSnapshot) -> u64;

pub(super) fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(16 << 10);
    let cores: Vec<String> = snapshot
        .cores
        .iter()
        .enumerate()
        .map(|(i, c)| c.core.unwrap_or(i).to_string())
        .collect();
    let client: Vec<Vec<u64>> = snapshot.cores.iter().map(|c| c.client.values()).collect();
    let server: Vec<Vec<u64>> = snapshot.cores.iter().map(|c| c.server.values()).collect();
    counter_family(&mut out, super::ClientCounts::INFO, &cores, &client);
    counter_family(&mut out, super::ServerCounts::INFO, &cores, &server);
    let per_core: [(MetricInfo, CoreValue); 3] = [
        (
            MetricInfo {
                name: "ringrpc_core_stalls_total",
                kind: "counter",
                help: "Times the core's event loop did not turn within the stall threshold.",
            },
            |c| c.stalls,
        ),
        (
            MetricInfo {
                name: "ringrpc_core_recv_ring_dry_total",
                kind: "counter",
                help: "Receives that found the core's buffer ring empty (fell back to a plain receive).",
            },
            |c| c.recv_ring_dry,
        ),
        (
            MetricInfo {
                name: "ringrpc_core_recv_pool_bytes",
                kind: "gauge",
                help: "Bytes of emptied receive chunks the core keeps for reuse (at most 4 MiB).",
            },
            |c| c.recv_pool_bytes,
        ),
    ];
    for (info, value) in per_core {
        let values: Vec<Vec<u64>> = snapshot.cores.iter().map(|c| vec![value(c)]).collect();
        counter_family(&mut out, &[info], &cores, &values);
    }
    driver_gauge(&mut out, snapshot);
    pools(&mut out, snapshot, &cores);
    super::endpoints::render(&mut out, snapshot, &cores);

    let merged = snapshot.merged();
    header(
        &mut out,
        "ringrpc_phase_latency_seconds",
        "summary",
        "Call latency per phase.",
    );
    for phase in Phase::ALL {
        let labels = format!("phase=\"{}\"", phase.name());
        summary(
            &mut out,
            "ringrpc_phase_latency_seconds",
            &labels,
            merged.phase(phase),
            merged.phase_count(phase),
        );
    }
    header(
        &mut out,
        "ringrpc_phase_latency_max_seconds",
        "gauge",
        "Largest timed latency per phase (0 while nothing was timed).",
    );
    for phase in Phase::ALL {
        let h = merged.phase(phase);
        let max = if h.count() == 0 {
            0.0
        } else {
            h.max().as_secs_f64()
        };
        let _ = writeln!(
            out,
            "ringrpc_phase_latency_max_seconds{{phase=\"{}\"}} {max}",
            phase.name()
        );
    }
    header(
        &mut out,
        "ringrpc_client_method_latency_seconds",
        "summary",
        "Client end-to-end latency per method.",
    );
    for m in &merged.client_methods {
        let labels = format!("method=\"{}\"", escape(&m.name));
        summary(
            &mut out,
            "ringrpc_client_method_latency_seconds",
            &labels,
            &m.latency,
            m.count,
        );
    }
    header(
        &mut out,
        "ringrpc_server_method_latency_seconds",
        "summary",
        "Server handler time per method.",
    );
    for m in &merged.server_methods {
        let labels = format!("method=\"{}\"", escape(&m.name));
        summary(
            &mut out,
            "ringrpc_server_method_latency_seconds",
            &labels,
            &m.latency,
            m.count,
        );
    }
    header(
        &mut out,
        "ringrpc_server_method_permission_denied_total",
        "counter",
        "Calls the authorization hook refused, per method.",
    );
    for m in merged.server_methods.iter().filter(|m| m.denied > 0) {
        let labels = format!("method=\"{}\"", escape(&m.name));
        let name = "ringrpc_server_method_permission_denied_total";
        let _ = writeln!(out, "{name}{{{labels}}} {}", m.denied);
    }
    out
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter_family(out: &mut String, info: &[MetricInfo], cores: &[String], values: &[Vec<u64>]) {
    for (i, metric) in info.iter().enumerate() {
        header(out, metric.name, metric.kind, metric.help);
        for (core, vals) in cores.iter().zip(values) {
            let _ = writeln!(out, "{}{{core=\"{core}\"}} {}", metric.name, vals[i]);
        }
    }
}

fn pools(out: &mut String, snapshot: &MetricsSnapshot, cores: &[String]) {
    header(
        out,
        "ringrpc_pool_hits_total",
        "counter",
        "Calls that found a healthy connection with a free slot at once.",
    );
    header_only_lines(out, snapshot, cores, |p| p.hits, "ringrpc_pool_hits_total");
    header(
        out,
        "ringrpc_pool_misses_total",
        "counter",
        "Calls that waited for a connection or a slot.",
    );
    header_only_lines(
        out,
        snapshot,
        cores,
        |p| p.misses,
        "ringrpc_pool_misses_total",
    );
}

fn header_only_lines(
    out: &mut String,
    snapshot: &MetricsSnapshot,
    cores: &[String],
    value: impl Fn(&super::PoolCounts) -> u64,
    name: &str,
) {
    for (core, snap) in cores.iter().zip(&snapshot.cores) {
        for p in &snap.pools {
            endpoint_line(out, name, core, p.endpoint, value(p));
        }
    }
}

/// A summary of `count` events of which `samples` holds the timed ones.
pub(super) fn summary(
    out: &mut String,
    name: &str,
    labels: &str,
    samples: &LatencyHistogram,
    count: u64,
) {
    for q in QUANTILES {
        let value = if samples.count() == 0 {
            f64::NAN
        } else {
            samples.quantile(q).as_secs_f64()
        };
        let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {value}");
    }
    let sum = super::estimated_sum(samples, count).as_secs_f64();
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample of a per-core, per-endpoint family (pool and cluster counters).
pub(super) fn endpoint_line(
    out: &mut String,
    name: &str,
    core: &str,
    endpoint: std::net::SocketAddr,
    value: u64,
) {
    let _ = writeln!(
        out,
        "{name}{{core=\"{core}\",endpoint=\"{endpoint}\"}} {value}"
    );
}
