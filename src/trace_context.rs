//! Trace context across calls (feature `otel`): the caller's OpenTelemetry
//! context, taken from its current `tracing` span, travels as W3C
//! `traceparent` metadata, and the handler runs in an `rpc.server` span whose
//! parent is that remote context, so one trace crosses ringrpc hops as it
//! crosses tonic's. Off by default; without the feature none of this is
//! compiled. Invariant: a `traceparent` the caller set itself is kept.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::protocol::metadata::{Metadata, MetadataView};

/// The W3C header name.
const TRACEPARENT: &str = "traceparent";

/// Adds the current span's context to `md` as `traceparent`, unless there is
/// one already or the current span has no valid context.
pub(crate) fn inject(md: &mut Metadata) {
    if md.view().get(TRACEPARENT).is_some() {
        return;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let _ = md.insert(TRACEPARENT, value.as_bytes());
}

/// The span a handler runs in: `rpc.server`, continuing the caller's trace
/// if its metadata carries a valid `traceparent`.
pub(crate) fn server_span(md: MetadataView<'_>, method: &'static str) -> tracing::Span {
    let span = tracing::info_span!("rpc.server", rpc.method = method);
    if let Some(parent) = md.get(TRACEPARENT).and_then(parse) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    span
}

/// Parses `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
fn parse(value: &[u8]) -> Option<SpanContext> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_and_rejects_garbage() {
        let sc = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
        for bad in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00-xyz-00f067aa0ba902b7-01",
            b"",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
