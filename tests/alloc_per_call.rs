//! Heap allocations per call in steady state, on the client core and the server
//! core separately (a counting global allocator with per-thread counters).
//!
//! Prints the figures (`cargo test --test alloc_per_call -- --nocapture`) and
//! guards against regressions. Target (issue #3, P5): no allocation per call in
//! steady state on either side for a handler that does not await (the driver
//! allocates nothing per operation); what is left is this test's own caller
//! tasks and request vectors (a few per run, well under 0.01 per call).

use std::time::Duration;

use ringrpc::runtime::io;
use ringrpc::{Client, ClientBuilder, Method, Runtime, Server, ServerBuilder, SliceAsVec};

#[path = "support/thread_allocs.rs"]
mod thread_allocs;

use thread_allocs::Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Req {
    id: u64,
    payload: Vec<u8>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Resp {
    id: u64,
    sum: u64,
}

const SUM: Method<Req, Resp> = Method::new("Alloc.sum");

/// The echo response of a responder handler, borrowing the request's payload.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedReq, serialize_bounds(__S: ringrpc::BorrowSerializer))]
struct ReqRef<'a> {
    id: u64,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    payload: &'a [u8],
}

/// Echoes the request through a `Responder` (no owned response is built).
const ECHO: Method<Req, Req> = Method::new("Alloc.echo");

/// Which handler the callers call.
#[derive(Clone, Copy)]
enum Handler {
    /// `register`: returns an owned `Resp`.
    Sum,
    /// `register_responder`: replies with the request's bytes, borrowed.
    Echo,
}

fn allocs_on(rt: &Runtime) -> u64 {
    rt.block_on(0, || async { thread_allocs::allocations() })
        .expect("core")
}

/// Runs `calls` calls per caller with `callers` concurrent callers; returns
/// (client allocs per call, server allocs per call) over the measured part.
fn measure(callers: u64, calls: u64, handler: Handler) -> (f64, f64) {
    measure_with(callers, calls, handler, |s| s, |c| c)
}

/// [`measure`] with the server and client builders adjusted (TLS).
fn measure_with(
    callers: u64,
    calls: u64,
    handler: Handler,
    server: impl FnOnce(ServerBuilder) -> ServerBuilder,
    client: impl Fn(ClientBuilder) -> ClientBuilder + Clone + Send + 'static,
) -> (f64, f64) {
    let server_rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .name("alloc-srv")
        .build()
        .expect("rt");
    let server = Server::builder()
        .insecure_plaintext()
        .register(SUM, |r: &ArchivedReq| -> Result<Resp, String> {
            let sum = r.payload.iter().map(|b| u64::from(*b)).sum();
            Ok(Resp {
                id: r.id.to_native(),
                sum,
            })
        })
        .and_then(|b| {
            b.register_responder(ECHO, |r: &ArchivedReq, reply| {
                let echo = ReqRef {
                    id: r.id.to_native(),
                    payload: r.payload.as_slice(),
                };
                Ok::<_, String>(reply.send(&echo))
            })
        })
        .map(server)
        .expect("register")
        .serve(&server_rt, "127.0.0.1:0".parse().expect("addr"))
        .expect("serve");
    let addr = server.local_addr();
    let client_rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .name("alloc-cli")
        .build()
        .expect("rt");
    let run = move |calls: u64| {
        let client = client.clone();
        async move {
            thread_local! { static CLIENT: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) }; }
            let client = CLIENT.with(|c| {
                c.borrow_mut()
                    .get_or_insert_with(|| {
                        client(Client::builder().insecure_plaintext().max_in_flight(4096))
                            .connect(addr)
                            .expect("connect on a ringrpc core")
                    })
                    .clone()
            });
            assert!(client.wait_connected(Duration::from_secs(2)).await);
            let tasks: Vec<_> = (0..callers)
                .map(|i| {
                    let client = client.clone();
                    io::spawn(async move {
                        let req = Req {
                            id: i,
                            payload: vec![1; 48],
                        };
                        for _ in 0..calls {
                            match handler {
                                Handler::Sum => {
                                    let r = client.call(&SUM, &req).await.expect("call");
                                    assert_eq!((r.id.to_native(), r.sum.to_native()), (i, 48));
                                }
                                Handler::Echo => {
                                    let r = client.call(&ECHO, &req).await.expect("call");
                                    assert_eq!((r.id.to_native(), r.payload.len()), (i, 48));
                                }
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("caller");
            }
        }
    };
    let warm = run.clone();
    client_rt
        .block_on(0, move || warm(calls / 4))
        .expect("warm-up");
    let (c0, s0) = (allocs_on(&client_rt), allocs_on(&server_rt));
    client_rt
        .block_on(0, move || run(calls))
        .expect("measured run");
    let (c1, s1) = (allocs_on(&client_rt), allocs_on(&server_rt));
    let total = (callers * calls) as f64;
    server.shutdown(Duration::from_millis(100));
    ((c1 - c0) as f64 / total, (s1 - s0) as f64 / total)
}

#[test]
fn allocations_per_call_in_steady_state() {
    let (c1, s1) = measure(1, 4000, Handler::Sum);
    let (c128, s128) = measure(128, 200, Handler::Sum);
    let (ce, se) = measure(128, 200, Handler::Echo);
    let driver = Runtime::builder()
        .cores(1)
        .pin(false)
        .build()
        .expect("rt")
        .driver()
        .kind;
    println!("allocations per call ({driver}): 1 in flight: client {c1:.3}, server {s1:.3}; 128 in flight: client {c128:.3}, server {s128:.3}; responder echo at 128: client {ce:.3}, server {se:.3}");
    // Steady state allocates nothing per call; the bounds leave room for the
    // test's own spawned callers and request vectors (128 of each per run at
    // 128 in flight = 0.01 per call) and the odd heartbeat or buffer growth.
    assert!(c1 <= 0.02 && s1 <= 0.02, "1 in flight: {c1} / {s1}");
    assert!(
        c128 <= 0.03 && s128 <= 0.03,
        "128 in flight: {c128} / {s128}"
    );
    assert!(ce <= 0.03 && se <= 0.03, "responder echo: {ce} / {se}");
}

/// The same with TLS 1.3 on (mutual TLS, certificates made now): what sealing
/// and opening records costs in allocations per call.
///
/// rustls runs the handshake; after it ringrpc's own record layer seals
/// each send batch into the connection's reused output buffer and opens
/// records through a reused scratch buffer (src/conn/tls_record.rs), so TLS
/// allocates nothing per call either: the bounds are the plaintext ones.
/// (rustls's own record layer allocates one buffer per record sealed and one
/// per record opened: 2 per call per side at one call in flight.)
#[cfg(feature = "tls")]
#[test]
fn allocations_per_call_in_steady_state_with_tls() {
    #[path = "tls_support/mod.rs"]
    mod tls_support;
    let pki = tls_support::Pki::new();
    let tls = |callers, calls, handler| {
        let server_cfg = pki.server_config();
        let client_cfg = pki.client_config(Some(&pki.client));
        measure_with(
            callers,
            calls,
            handler,
            move |s| s.tls(server_cfg),
            move |c| c.tls(client_cfg.clone(), "localhost").expect("name"),
        )
    };
    let (c1, s1) = tls(1, 4000, Handler::Sum);
    let (c128, s128) = tls(128, 200, Handler::Sum);
    println!("allocations per call with TLS: 1 in flight: client {c1:.3}, server {s1:.3}; 128 in flight: client {c128:.3}, server {s128:.3}");
    assert!(c1 <= 0.02 && s1 <= 0.02, "1 in flight: {c1} / {s1}");
    assert!(
        c128 <= 0.03 && s128 <= 0.03,
        "128 in flight: {c128} / {s128}"
    );
}
