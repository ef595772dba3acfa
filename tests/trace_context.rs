//! Trace context across a nested call (feature `otel`): the caller's trace
//! id reaches the handler of a call made by another handler.

mod common;

use std::time::Duration;

use common::{base_server, client_builder, Msg, TestClient, TestServer};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use ringrpc::{CallOptions, Client, Ctx, Method, Request};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Answers with the trace id its span belongs to.
const WHICH_TRACE: Method<Msg, Msg> = Method::new("Trace.which");
/// Calls `WHICH_TRACE` downstream and answers with its answer.
const RELAY: Method<Msg, Msg> = Method::new("Trace.relay");

fn current_trace_id() -> String {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

thread_local! {
    static DOWN: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_trace_id_survives_a_nested_call() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("ringrpc-test")));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");

    let downstream = TestServer::start(
        base_server()
            .register_async_with_ctx(WHICH_TRACE, |_ctx: Ctx, req: Request<Msg>| async move {
                Ok::<_, String>(Msg {
                    id: req.id.to_native(),
                    text: current_trace_id(),
                })
            })
            .unwrap(),
    );
    let down = downstream.addr();
    let middle = TestServer::start(
        base_server()
            .register_async_with_ctx(RELAY, move |ctx: Ctx, req: Request<Msg>| {
                let id = req.id.to_native();
                async move {
                    let client = match DOWN.with(|d| d.borrow().clone()) {
                        Some(c) => c,
                        None => {
                            let c = client_builder().connect(down).map_err(|e| e.to_string())?;
                            c.wait_connected(Duration::from_secs(2)).await;
                            DOWN.with(|d| *d.borrow_mut() = Some(c.clone()));
                            c
                        }
                    };
                    let seen_here = current_trace_id();
                    let reply = client
                        .call_with(
                            &WHICH_TRACE,
                            &Msg {
                                id,
                                text: String::new(),
                            },
                            &CallOptions::inherit(&ctx),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(Msg {
                        id,
                        text: format!("{seen_here} {}", reply.text),
                    })
                }
            })
            .unwrap(),
    );
    let client = TestClient::connect(middle.addr());
    let (root, seen) = client.run(|c| async move {
        let span = tracing::info_span!("client.root");
        async move {
            let root = current_trace_id();
            let reply = c
                .call(
                    &RELAY,
                    &Msg {
                        id: 1,
                        text: String::new(),
                    },
                )
                .await
                .expect("relay");
            (root, reply.text.to_string())
        }
        .instrument(span)
        .await
    });
    let (middle_saw, downstream_saw) = seen.split_once(' ').expect("two ids");
    assert_ne!(
        root, "00000000000000000000000000000000",
        "the client span has a trace"
    );
    assert_eq!(
        middle_saw, root,
        "the first hop continues the caller's trace"
    );
    assert_eq!(downstream_saw, root, "and so does the nested call");
    // One rpc.server span per hop, all in the caller's trace (each ends on
    // its server's core once its answer is sent).
    common::wait_until(Duration::from_secs(2), "both server spans ended", || {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("spans");
        let hops: Vec<_> = spans.iter().filter(|s| s.name == "rpc.server").collect();
        hops.len() >= 2
            && hops
                .iter()
                .all(|s| s.span_context.trace_id().to_string() == root)
    });
    common::finish(&client, &middle);
}
