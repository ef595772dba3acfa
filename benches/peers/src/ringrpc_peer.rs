//! ringrpc: server runtime pinned to the server CPU, client runtime pinned to
//! the client CPU, one connection (`pool_size(1)`), `in_flight` caller tasks on
//! the client core, each looping call → check → record. `ringrpc` runs the
//! default driver (io_uring where the kernel allows it), `ringrpc-epoll` the
//! same workload with both runtimes on the epoll driver.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc::runtime::io;
use ringrpc::{Client, Driver, Server};
use ringrpc_workload::echo;
use ringrpc_workload::pair::Pair;

use crate::measure::{run_callers, Recorder, Spec, Tally, Window};

/// Runs the workload against a ringrpc server (data digests on, the default).
pub fn run(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_with(spec, window, true)
}

/// [`run`] with the client and the server on the epoll driver.
pub fn run_epoll(spec: &Spec, window: Window) -> Result<Tally, String> {
    let setup = setup_on(Driver::Epoll, spec, true)?;
    if setup.client_rt.driver().kind != Driver::Epoll {
        setup.stop();
        return Err("ringrpc-epoll: the runtime did not start on epoll".into());
    }
    call_and_stop(setup, spec, window, true)
}

/// Runs the workload's client against `setup`'s server, then stops both.
fn call_and_stop(setup: Pair, spec: &Spec, window: Window, digest: bool) -> Result<Tally, String> {
    let (addr, spec) = (setup.addr(), *spec);
    let tally = setup
        .client_rt
        .block_on(0, move || client(addr, spec, window, digest))
        .map_err(|e| e.to_string());
    setup.stop();
    tally?
}

/// Runs the workload with the payload CRC32 (data digest) off on both sides,
/// as on a trusted link; the header digest stays.
pub fn run_no_digest(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_with(spec, window, false)
}

/// [`run_no_digest`] with plain receives into each connection's own buffer
/// instead of the core's provided-buffer ring (`recv_buffers(None)`).
pub fn run_no_digest_plain_recv(spec: &Spec, window: Window) -> Result<Tally, String> {
    let server = echo::register(Server::builder().insecure_plaintext().data_digest(false))
        .map_err(|e| e.to_string())?;
    let setup = Pair::start_with(
        Driver::Auto,
        Some(None),
        spec.server_cpu,
        spec.client_cpu,
        "peers-rr",
        server,
    )
    .map_err(|e| e.to_string())?;
    call_and_stop(setup, spec, window, false)
}

fn run_with(spec: &Spec, window: Window, digest: bool) -> Result<Tally, String> {
    serve_and(spec, digest, move |addr, spec| {
        client(addr, spec, window, digest)
    })
}

/// [`run`] with each caller's payload in a `Blob` (`echo::EchoBlob`): the
/// request's bytes sent by reference instead of copied into the send buffer.
pub fn run_blob(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_blob_with(spec, window, true)
}

/// [`run_blob`] with the data digest off on both sides ([`run_no_digest`]).
pub fn run_blob_no_digest(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_blob_with(spec, window, false)
}

fn run_blob_with(spec: &Spec, window: Window, digest: bool) -> Result<Tally, String> {
    serve_and(spec, digest, move |addr, spec| async move {
        let client = connected(addr, &spec, digest).await?;
        let total = run_callers(spec.in_flight, "ringrpc", |rec, first_id| {
            let client = client.clone();
            io::spawn(async move {
                let record = |started, outcome| match outcome {
                    Ok(()) => rec.ok(&window, started),
                    Err(e) => rec.error(|| e),
                };
                echo::call_loop_blob(&client, first_id, spec.payload, window.end, record).await;
            })
        })
        .await;
        client.close();
        Ok(total)
    })
}

/// Runs the workload over TLS 1.3 (server authentication; data digests on,
/// as in [`run`]): the cost of TLS is this against [`run`].
pub fn run_tls(spec: &Spec, window: Window) -> Result<Tally, String> {
    let certs = crate::tls_certs::certs();
    let server_tls = ringrpc::tls::server_config(certs.cert.as_bytes(), certs.key.as_bytes(), None)
        .map_err(|e| e.to_string())?;
    let client_tls =
        ringrpc::tls::client_config(certs.ca.as_bytes(), None).map_err(|e| e.to_string())?;
    let server = echo::register(Server::builder().tls(server_tls)).map_err(|e| e.to_string())?;
    let setup = Pair::start(spec.server_cpu, spec.client_cpu, "peers-rrt", server)
        .map_err(|e| e.to_string())?;
    let (addr, spec) = (setup.addr(), *spec);
    let tally = setup
        .client_rt
        .block_on(0, move || async move {
            let client = client_builder(&spec)
                .tls(client_tls, "localhost")
                .map_err(|e| e.to_string())?
                .connect(addr)
                .map_err(|e| e.to_string())?;
            if !client.wait_connected(Duration::from_secs(5)).await {
                return Err(format!("ringrpc-tls: no connection to {addr}"));
            }
            let total = run_callers(spec.in_flight, "ringrpc-tls", |rec, first_id| {
                io::spawn(caller(rec, client.clone(), window, first_id, spec.payload))
            })
            .await;
            client.close();
            Ok(total)
        })
        .map_err(|e| e.to_string());
    setup.stop();
    tally?
}

async fn client(
    addr: SocketAddr,
    spec: Spec,
    window: Window,
    digest: bool,
) -> Result<Tally, String> {
    let client = connected(addr, &spec, digest).await?;
    let total = run_callers(spec.in_flight, "ringrpc", |rec, first_id| {
        io::spawn(caller(rec, client.clone(), window, first_id, spec.payload))
    })
    .await;
    client.close();
    Ok(total)
}

async fn caller(rec: Recorder, client: Client, window: Window, first_id: u64, payload: usize) {
    let record = |started, outcome| match outcome {
        Ok(()) => rec.ok(&window, started),
        Err(e) => rec.error(|| e),
    };
    echo::call_loop(&client, first_id, payload, window.end, record).await;
}

/// The echo service as a `#[ringrpc::service]` trait: named `Bench` so its
/// method is `Bench.echo`, the workload's [`echo::ECHO`]; only the generated
/// client (`BenchClient`) is used here, against the same server.
#[ringrpc::service]
pub trait Bench {
    /// Echoes the request.
    async fn echo(
        &self,
        ctx: ringrpc::Ctx,
        req: ringrpc::Request<echo::Echo>,
    ) -> Result<echo::Echo, String>;
}

/// Runs the workload through the client `#[ringrpc::service]` generates
/// (same server, same connection settings as [`run`]): what the typed layer
/// costs over the closure API.
pub fn run_typed(spec: &Spec, window: Window) -> Result<Tally, String> {
    serve_and(spec, true, move |addr, spec| {
        typed_client(addr, spec, window)
    })
}

/// Starts the echo server on the server CPU, runs `client` on a client core
/// pinned to the client CPU, and shuts both down.
fn serve_and<F, Fut>(spec: &Spec, digest: bool, client: F) -> Result<Tally, String>
where
    F: FnOnce(SocketAddr, Spec) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Tally, String>> + 'static,
{
    let setup = setup(spec, digest)?;
    let (addr, spec) = (setup.addr(), *spec);
    let tally = setup
        .client_rt
        .block_on(0, move || client(addr, spec))
        .map_err(|e| e.to_string());
    setup.stop();
    tally?
}

/// The echo server (data digest as asked) and the client runtime.
fn setup(spec: &Spec, digest: bool) -> Result<Pair, String> {
    setup_on(Driver::Auto, spec, digest)
}

/// [`setup`] on `driver`.
fn setup_on(driver: Driver, spec: &Spec, digest: bool) -> Result<Pair, String> {
    let server = echo::register(Server::builder().insecure_plaintext().data_digest(digest))
        .map_err(|e| e.to_string())?;
    Pair::start_on(driver, spec.server_cpu, spec.client_cpu, "peers-rr", server)
        .map_err(|e| e.to_string())
}

/// A client of `addr` with the peers' settings (one connection), connected.
async fn connected(addr: SocketAddr, spec: &Spec, digest: bool) -> Result<Client, String> {
    let client = client_builder(spec)
        .data_digest(digest)
        .connect(addr)
        .expect("connect on a ringrpc core");
    if !client.wait_connected(Duration::from_secs(5)).await {
        return Err(format!("ringrpc: no connection to {addr}"));
    }
    Ok(client)
}

/// One connection, room for every caller.
fn client_builder(spec: &Spec) -> ringrpc::ClientBuilder {
    Client::builder()
        .insecure_plaintext()
        .pool_size(1)
        .max_in_flight(spec.in_flight.max(1024))
}

async fn typed_client(addr: SocketAddr, spec: Spec, window: Window) -> Result<Tally, String> {
    let client = connected(addr, &spec, true).await?;
    let typed = BenchClient::new(client.clone());
    let total = run_callers(spec.in_flight, "ringrpc-typed", |rec, first_id| {
        io::spawn(typed_caller(
            rec,
            typed.clone(),
            window,
            first_id,
            spec.payload,
        ))
    })
    .await;
    client.close();
    Ok(total)
}

async fn typed_caller(
    rec: Recorder,
    client: BenchClient,
    window: Window,
    first_id: u64,
    payload: usize,
) {
    let mut req = echo::Echo {
        id: first_id,
        payload: vec![0xA5; payload],
    };
    loop {
        let started = std::time::Instant::now();
        if started >= window.end {
            return;
        }
        match client.echo(&req).await {
            Ok(reply) => match echo::matches(&reply, &req) {
                Ok(()) => rec.ok(&window, started),
                Err(e) => rec.error(|| e),
            },
            Err(e) => rec.error(|| e.to_string()),
        }
        req.id = req.id.wrapping_add(1);
    }
}

/// Runs the workload from tokio: `in_flight` tasks on a current-thread tokio
/// runtime call through a [`ringrpc::Handle`] whose client core runs on the
/// same (client) CPU, the way a tokio service would use ringrpc.
pub fn run_handle(spec: &Spec, window: Window) -> Result<Tally, String> {
    let setup = setup(spec, true)?;
    let handle = client_builder(spec)
        .connect_handle(&setup.client_rt, setup.addr())
        .map_err(|e| e.to_string())?;
    let spec = *spec;
    let tokio_side = crate::measure::spawn_pinned(spec.client_cpu, "peers-rrh-cli", move || {
        crate::measure::tokio_runtime()
            .map_err(|e| e.to_string())?
            .block_on(handle_callers(handle, spec, window))
    });
    let tally = tokio_side.join().map_err(|_| "handle client panicked");
    setup.stop();
    tally?
}

async fn handle_callers(
    handle: ringrpc::Handle,
    spec: Spec,
    window: Window,
) -> Result<Tally, String> {
    // Let the handle's connection come up: one call answered, not a fixed
    // sleep (which could outlast a short window on a loaded machine).
    let probe = echo::Echo {
        id: 0,
        payload: Vec::new(),
    };
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    while let Err(e) = handle.call(&echo::ECHO, &probe).await {
        if std::time::Instant::now() >= give_up {
            return Err(format!("ringrpc-handle: no connection: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(
        run_callers(spec.in_flight, "ringrpc-handle", |rec, first_id| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut req = echo::Echo {
                    id: first_id,
                    payload: vec![0xA5; spec.payload],
                };
                loop {
                    let started = std::time::Instant::now();
                    if started >= window.end {
                        return;
                    }
                    match handle.call(&echo::ECHO, &req).await {
                        Ok(reply) => match echo::matches(&reply, &req) {
                            Ok(()) => rec.ok(&window, started),
                            Err(e) => rec.error(|| e),
                        },
                        Err(e) => rec.error(|| e.to_string()),
                    }
                    req.id = req.id.wrapping_add(1);
                }
            })
        })
        .await,
    )
}
