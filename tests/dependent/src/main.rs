//! ringrpc used as a dependency of an outside crate.
//!
//! Builds against `ringrpc = { path = "../.." }` (default features) from its own
//! workspace, so it sees exactly what a user's crate sees: no `[patch]` of the
//! root workspace applies here. A `#[tokio::main]` program: it starts a
//! two-core ringrpc runtime (server on core 1, client on core 0), makes typed
//! calls on the client core, checks every reply and the heap allocations per
//! call in steady state on each core; then makes the same calls from tokio
//! tasks through a `ringrpc::Handle` (client on core 0), checks every reply
//! and the allocations per call on the cores again; then through a
//! `ringrpc::Cluster` (of that one server: replies and allocations per call on
//! the client core); then shuts down with the async forms.
//!
//! With the `tls` feature it also makes a mutual-TLS call (see `tls_call.rs`).
//!
//! Allocations are counted the way `tests/alloc_per_call.rs` counts them (a
//! counting global allocator with per-thread counters, read on each core), and
//! the bounds are the ones that test asserts. Exits 1 with a message on failure.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use ringrpc::runtime::io;
use ringrpc::{Blob, Client, Cluster, Ctx, Handle, Method, Request, Runtime, Server, SliceAsVec};

#[cfg(feature = "tls")]
mod tls_call;

#[path = "../../support/thread_allocs.rs"]
mod thread_allocs;

use thread_allocs::Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The echo message: request and response of [`ECHO`].
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Echo {
    id: u64,
    payload: Vec<u8>,
}

/// The echo response as the server sends it: borrowing the request's payload,
/// archived exactly like an [`Echo`] (no owned copy, so no allocation).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEcho, serialize_bounds(__S: ringrpc::BorrowSerializer))]
struct EchoRef<'a> {
    id: u64,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    payload: &'a [u8],
}

/// The caller's twin of [`Echo`] with its payload in a [`Blob`] (the same
/// archive): on plaintext, a blob of 1 KiB or more is sent by reference.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEcho)]
struct EchoBlob {
    id: u64,
    payload: Blob,
}

/// A plain `u64` message: request and response of [`INC`].
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Count {
    n: u64,
}

/// A typed service (`#[ringrpc::service]`): its trait, method constants
/// (`greeter::HELLO`), `GreeterService` and `GreeterClient`.
#[ringrpc::service]
pub trait Greeter {
    /// Greets the caller by name, saying which core answered.
    async fn hello(&self, ctx: Ctx, req: Request<Count>) -> Result<Count, String>;
}

/// The implementation: `n` → `n * 2` plus the serving core.
struct Doubler;

impl Greeter for Doubler {
    async fn hello(&self, ctx: Ctx, req: Request<Count>) -> Result<Count, String> {
        Ok(Count {
            n: req.n.to_native() * 2 + ctx.core() as u64,
        })
    }
}

/// Echoes the request (a `register_responder` handler).
const ECHO: Method<Echo, Echo> = Method::new("Dependent.echo");
/// Returns `n + 1` (a `register` handler returning an owned response).
const INC: Method<Count, Count> = Method::new("Dependent.inc");

const CLIENT_CORE: usize = 0;
const SERVER_CORE: usize = 1;
/// Measured calls per run (split between the concurrent callers).
const CALLS: u64 = 20_000;
const PAYLOAD: usize = 48;
/// The payload of [`Kind::Blob`] calls: large enough to go by reference.
const BLOB_PAYLOAD: usize = 4096;
/// Bounds of tests/alloc_per_call.rs: 0.02 allocations per call with one call in
/// flight, 0.03 with many. Steady state allocates nothing; the slack is for the
/// callers' own tasks and request vectors (a few per run) and the odd heartbeat.
const MAX_PER_CALL_ONE: f64 = 0.02;
const MAX_PER_CALL_MANY: f64 = 0.03;
/// A call through a `Handle` allocates on its core the task that makes it and
/// the reply's owned copy (the caller's thread allocates the request buffer
/// and the oneshot): 2 per call, with the same slack.
const HANDLE_MAX_PER_CALL_CORE: f64 = 2.03;

thread_local! {
    /// The client core's client, kept across `block_on` runs (warm-up, measured run).
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

fn fail(msg: &str) -> ! {
    eprintln!("ringrpc-dependent: FAIL: {msg}");
    std::process::exit(1)
}

/// Which method the callers call.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Echo,
    Inc,
    /// [`ECHO`] with the request's payload in a [`Blob`] ([`EchoBlob`]).
    Blob,
}

/// Allocations made so far on `core`'s thread.
fn allocs_on(rt: &Runtime, core: usize) -> u64 {
    rt.block_on(core, || async { thread_allocs::allocations() })
        .unwrap_or_else(|e| fail(&format!("reading core {core}'s counter: {e}")))
}

/// Runs on the client core: `callers` concurrent callers make `calls` calls each
/// and check every reply. Returns the number of correct replies.
async fn run(addr: SocketAddr, kind: Kind, callers: u64, calls: u64) -> Result<u64, String> {
    let client = CLIENT.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| {
                Client::builder()
                    .insecure_plaintext()
                    .max_in_flight(4096)
                    .connect(addr)
                    .expect("connect on a ringrpc core")
            })
            .clone()
    });
    if !client.wait_connected(Duration::from_secs(5)).await {
        return Err(format!("no connection to {addr} within 5 s"));
    }
    let done = Rc::new(Cell::new(0u64));
    let error: Rc<RefCell<Option<String>>> = Rc::default();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let (client, done, error) = (client.clone(), done.clone(), error.clone());
            io::spawn(async move {
                let req = Echo {
                    id: i,
                    payload: (0..PAYLOAD).map(|k| (i as usize + k) as u8).collect(),
                };
                // Only the Blob callers need the 4 KiB (an empty `Vec` allocates nothing).
                let blob_len = if matches!(kind, Kind::Blob) {
                    BLOB_PAYLOAD
                } else {
                    0
                };
                let blob = EchoBlob {
                    id: i,
                    payload: Blob::from(
                        (0..blob_len)
                            .map(|k| (i as usize ^ k) as u8)
                            .collect::<Vec<u8>>(),
                    ),
                };
                for call in 0..calls {
                    let outcome = match kind {
                        Kind::Blob => match client.call_borrowed(&ECHO, &blob).await {
                            Ok(r)
                                if r.id.to_native() == i
                                    && r.payload.as_slice() == &blob.payload[..] =>
                            {
                                Ok(())
                            }
                            Ok(_) => Err(format!("caller {i}: wrong echo of a blob")),
                            Err(e) => Err(format!("caller {i}: blob call failed: {e}")),
                        },
                        Kind::Echo => match client.call(&ECHO, &req).await {
                            Ok(r)
                                if r.id.to_native() == i
                                    && r.payload.as_slice() == req.payload.as_slice() =>
                            {
                                Ok(())
                            }
                            Ok(r) => Err(format!(
                                "caller {i}: wrong echo (id {}, {} bytes)",
                                r.id.to_native(),
                                r.payload.len()
                            )),
                            Err(e) => Err(format!("caller {i}: echo call failed: {e}")),
                        },
                        Kind::Inc => {
                            let n = (i << 32) + call;
                            match client.call(&INC, &Count { n }).await {
                                Ok(r) if r.n.to_native() == n + 1 => Ok(()),
                                Ok(r) => Err(format!(
                                    "caller {i}: inc({n}) returned {}",
                                    r.n.to_native()
                                )),
                                Err(e) => Err(format!("caller {i}: inc call failed: {e}")),
                            }
                        }
                    };
                    match outcome {
                        Ok(()) => done.set(done.get() + 1),
                        Err(e) => {
                            error.borrow_mut().get_or_insert(e);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        // Whatever the task handle yields (a panicked caller shows as a short count).
        let _ = task.await;
    }
    if let Some(e) = error.borrow_mut().take() {
        return Err(e);
    }
    Ok(done.get())
}

/// Warms up, then measures `CALLS` calls with `callers` in flight; returns
/// (measured calls, client allocations per call, server allocations per call).
fn measure(rt: &Runtime, addr: SocketAddr, kind: Kind, callers: u64) -> (u64, f64, f64) {
    let per_caller = CALLS.div_ceil(callers);
    let total = per_caller * callers;
    let go = |calls: u64, what: &str| {
        let got = rt
            .block_on(CLIENT_CORE, move || run(addr, kind, callers, calls))
            .unwrap_or_else(|e| fail(&format!("{kind:?} x{callers} {what}: core: {e}")))
            .unwrap_or_else(|e| fail(&format!("{kind:?} x{callers} {what}: {e}")));
        if got != calls * callers {
            fail(&format!(
                "{kind:?} x{callers} {what}: {got} correct replies, expected {}",
                calls * callers
            ));
        }
    };
    go((per_caller / 4).max(1), "warm-up");
    let (c0, s0) = (allocs_on(rt, CLIENT_CORE), allocs_on(rt, SERVER_CORE));
    go(per_caller, "measured run");
    let (c1, s1) = (allocs_on(rt, CLIENT_CORE), allocs_on(rt, SERVER_CORE));
    (
        total,
        (c1 - c0) as f64 / total as f64,
        (s1 - s0) as f64 / total as f64,
    )
}

thread_local! {
    /// The client core's cluster, kept across `block_on` runs.
    static CLUSTER: RefCell<Option<Cluster>> = const { RefCell::new(None) };
}

/// Runs on the client core: 64 callers make `calls` `INC` calls each through a
/// cluster of `addr`; returns the number of correct replies.
async fn run_cluster(addr: SocketAddr, calls: u64) -> Result<u64, String> {
    let cluster = match CLUSTER.with(|c| c.borrow().clone()) {
        Some(c) => c,
        None => {
            let c = Cluster::builder()
                .insecure_plaintext()
                .client(Client::builder().insecure_plaintext().max_in_flight(4096))
                .idempotent(&INC)
                .connect_static(&[addr])
                .map_err(|e| e.to_string())?;
            CLUSTER.with(|slot| *slot.borrow_mut() = Some(c.clone()));
            c
        }
    };
    if !cluster.wait_connected(1, Duration::from_secs(5)).await {
        return Err(format!("cluster: no connection to {addr} within 5 s"));
    }
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let cluster = cluster.clone();
            io::spawn(async move {
                let mut ok = 0;
                for call in 0..calls {
                    let n = (i << 32) + call;
                    match cluster.call(&INC, &Count { n }).await {
                        Ok(r) if r.n.to_native() == n + 1 => ok += 1,
                        _ => return ok,
                    }
                }
                ok
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap_or(0);
    }
    Ok(done)
}

/// Warms up, then measures `CALLS` cluster calls with 64 in flight; returns
/// (measured calls, client-core allocations per call).
fn measure_cluster(rt: &Runtime, addr: SocketAddr) -> (u64, f64) {
    let per_caller = CALLS.div_ceil(64);
    let go = |calls: u64| {
        let got = rt
            .block_on(CLIENT_CORE, move || run_cluster(addr, calls))
            .unwrap_or_else(|e| fail(&format!("cluster: core: {e}")))
            .unwrap_or_else(|e| fail(&format!("cluster: {e}")));
        if got != calls * 64 {
            fail(&format!("cluster: {got} correct replies of {}", calls * 64));
        }
    };
    go(per_caller / 4);
    let c0 = allocs_on(rt, CLIENT_CORE);
    go(per_caller);
    let c1 = allocs_on(rt, CLIENT_CORE);
    let total = per_caller * 64;
    (total, (c1 - c0) as f64 / total as f64)
}

/// Runs on a tokio worker: `callers` tasks make `calls` calls each through
/// `handle` and check every reply. Returns the number of correct replies.
async fn run_handle(handle: &Handle, kind: Kind, callers: u64, calls: u64) -> Result<u64, String> {
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let req = Echo {
                    id: i,
                    payload: (0..PAYLOAD).map(|k| (i as usize + k) as u8).collect(),
                };
                for call in 0..calls {
                    match kind {
                        Kind::Blob => return Err("blobs are not sent through a Handle".into()),
                        Kind::Echo => match handle.call(&ECHO, &req).await {
                            Ok(r)
                                if r.id.to_native() == i
                                    && r.payload.as_slice() == req.payload.as_slice() => {}
                            Ok(r) => return Err(format!("handle caller {i}: wrong echo {r:?}")),
                            Err(e) => return Err(format!("handle caller {i}: echo failed: {e}")),
                        },
                        Kind::Inc => {
                            let n = (i << 32) + call;
                            match handle.call(&INC, &Count { n }).await {
                                Ok(r) if r.n.to_native() == n + 1 => {}
                                Ok(r) => {
                                    return Err(format!(
                                        "handle caller {i}: inc({n}) returned {}",
                                        r.n.to_native()
                                    ))
                                }
                                Err(e) => {
                                    return Err(format!("handle caller {i}: inc failed: {e}"))
                                }
                            }
                        }
                    }
                }
                Ok(calls)
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task
            .await
            .map_err(|e| format!("handle caller panicked: {e}"))??;
    }
    Ok(done)
}

/// Like [`measure`], through `handle` from tokio tasks.
async fn measure_handle(
    rt: &Runtime,
    handle: &Handle,
    kind: Kind,
    callers: u64,
) -> Result<(u64, f64, f64), String> {
    let per_caller = CALLS.div_ceil(callers);
    let total = per_caller * callers;
    let warm = run_handle(handle, kind, callers, (per_caller / 4).max(1)).await?;
    if warm != (per_caller / 4).max(1) * callers {
        return Err(format!("{kind:?} x{callers} warm-up: {warm} replies"));
    }
    let (c0, s0) = (allocs_on(rt, CLIENT_CORE), allocs_on(rt, SERVER_CORE));
    let done = run_handle(handle, kind, callers, per_caller).await?;
    let (c1, s1) = (allocs_on(rt, CLIENT_CORE), allocs_on(rt, SERVER_CORE));
    if done != total {
        return Err(format!(
            "{kind:?} x{callers}: {done} replies, expected {total}"
        ));
    }
    Ok((
        total,
        (c1 - c0) as f64 / total as f64,
        (s1 - s0) as f64 / total as f64,
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runtime = Runtime::builder()
        .cores(2)
        .pin(false)
        .name("dependent")
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let server = Server::builder()
        .insecure_plaintext()
        .register_responder(ECHO, |r: &ArchivedEcho, reply| {
            let echo = EchoRef {
                id: r.id.to_native(),
                payload: r.payload.as_slice(),
            };
            Ok::<_, String>(reply.send(&echo))
        })
        .and_then(|b| {
            b.register(INC, |r: &ArchivedCount| -> Result<Count, String> {
                Ok(Count {
                    n: r.n.to_native() + 1,
                })
            })
        })
        .and_then(|b| b.add_service(GreeterService::new(Doubler)))
        .unwrap_or_else(|e| fail(&format!("register: {e}")))
        .serve_on(
            &runtime,
            &[SERVER_CORE],
            "127.0.0.1:0".parse().expect("addr"),
        )
        .unwrap_or_else(|e| fail(&format!("serve: {e}")));
    let addr = server.local_addr();
    println!(
        "ringrpc-dependent: server on {addr} (core {SERVER_CORE}), client on core {CLIENT_CORE}"
    );

    // The typed service, through the generated client on the client core.
    let typed = runtime
        .block_on(CLIENT_CORE, move || async move {
            let client = Client::builder()
                .insecure_plaintext()
                .connect(addr)
                .map_err(|e| e.to_string())?;
            let greeter = GreeterClient::new(client);
            let reply = greeter
                .hello(&Count { n: 20 })
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u64, String>(reply.n.to_native())
        })
        .unwrap_or_else(|e| fail(&format!("client core: {e}")))
        .unwrap_or_else(|e| fail(&format!("typed call: {e}")));
    if typed != 40 + SERVER_CORE as u64 {
        fail(&format!("typed service answered {typed}"));
    }
    println!("ringrpc-dependent: #[ringrpc::service] client -> server: ok");

    // On the client core (blocking this thread, tokio's main thread, while
    // the core works; tokio's workers are idle meanwhile).
    println!(
        "ringrpc-dependent: driver {} (asked: {})",
        runtime.driver().kind,
        runtime.driver().requested
    );
    let mut failed = Vec::new();
    for (kind, callers, bound) in [
        (Kind::Echo, 1, MAX_PER_CALL_ONE),
        (Kind::Echo, 64, MAX_PER_CALL_MANY),
        (Kind::Inc, 1, MAX_PER_CALL_ONE),
        (Kind::Inc, 64, MAX_PER_CALL_MANY),
        (Kind::Blob, 64, MAX_PER_CALL_MANY),
    ] {
        let (calls, client, server) = measure(&runtime, addr, kind, callers);
        let ok = client <= bound && server <= bound;
        println!(
            "ringrpc-dependent: {kind:?}, {callers} in flight, {calls} calls: allocations per call: client {client:.4}, server {server:.4} (bound {bound}) {}",
            if ok { "ok" } else { "TOO MANY" }
        );
        if !ok {
            failed.push(format!(
                "{kind:?} x{callers}: client {client}, server {server} > {bound}"
            ));
        }
    }

    // From tokio tasks through a Handle (its client on the client core).
    let handle = Client::builder()
        .insecure_plaintext()
        .max_in_flight(4096)
        .connect_handle_on(&runtime, &[CLIENT_CORE], addr)
        .unwrap_or_else(|e| fail(&format!("handle: {e}")));
    // The typed service's method constant works through the Handle too, from
    // a tokio task.
    let h = handle.clone();
    let typed = tokio::spawn(async move { h.call(&greeter::HELLO, &Count { n: 1 }).await })
        .await
        .unwrap_or_else(|e| fail(&format!("tokio task: {e}")))
        .unwrap_or_else(|e| fail(&format!("typed call through the Handle: {e}")));
    if typed.n.to_native() != 2 + SERVER_CORE as u64 {
        fail("typed call through the Handle: wrong answer");
    }
    println!("ringrpc-dependent: greeter::HELLO through a Handle from tokio: ok");
    for (kind, callers) in [(Kind::Echo, 1), (Kind::Echo, 64), (Kind::Inc, 64)] {
        let (calls, client, server) = measure_handle(&runtime, &handle, kind, callers)
            .await
            .unwrap_or_else(|e| fail(&format!("through the handle: {e}")));
        let ok = client <= HANDLE_MAX_PER_CALL_CORE && server <= MAX_PER_CALL_MANY;
        println!(
            "ringrpc-dependent: Handle from tokio, {kind:?}, {callers} in flight, {calls} calls: allocations per call on the cores: client core {client:.4} (bound {HANDLE_MAX_PER_CALL_CORE}), server {server:.4} (bound {MAX_PER_CALL_MANY}) {}",
            if ok { "ok" } else { "TOO MANY" }
        );
        if !ok {
            failed.push(format!(
                "Handle {kind:?} x{callers}: client core {client} > {HANDLE_MAX_PER_CALL_CORE} or server {server} > {MAX_PER_CALL_MANY}"
            ));
        }
    }
    drop(handle);

    // Through a cluster (of the one server) on the client core.
    let (calls, client) = measure_cluster(&runtime, addr);
    let ok = client <= MAX_PER_CALL_MANY;
    println!(
        "ringrpc-dependent: Cluster, Inc, 64 in flight, {calls} calls: allocations per call on the client core {client:.4} (bound {MAX_PER_CALL_MANY}) {}",
        if ok { "ok" } else { "TOO MANY" }
    );
    if !ok {
        failed.push(format!("Cluster: client {client} > {MAX_PER_CALL_MANY}"));
    }

    #[cfg(feature = "tls")]
    {
        tls_call::check(&runtime).unwrap_or_else(|e| fail(&e));
        println!("ringrpc-dependent: mutual TLS call, SPIFFE ID in Ctx, PermissionDenied: ok");
    }

    // Clean shutdown: the client (on its core), the server (drains), the
    // runtime; the last two without blocking tokio.
    runtime
        .spawn_on(CLIENT_CORE, || async {
            if let Some(client) = CLIENT.with(|c| c.borrow_mut().take()) {
                client.close();
            }
            if let Some(cluster) = CLUSTER.with(|c| c.borrow_mut().take()) {
                cluster.close();
            }
        })
        .unwrap_or_else(|e| fail(&format!("closing the client: {e}")))
        .await
        .unwrap_or_else(|e| fail(&format!("closing the client: {e}")));
    server.shutdown_async(Duration::from_secs(1)).await;
    runtime.shutdown_async().await;

    if !failed.is_empty() {
        fail(&format!(
            "allocations per call in steady state: {}",
            failed.join("; ")
        ));
    }
    println!("ringrpc-dependent: ok");
}
