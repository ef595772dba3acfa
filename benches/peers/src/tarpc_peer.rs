//! tarpc 0.38 with its bincode serde transport (length-delimited frames over
//! one TCP connection, `TCP_NODELAY`), each side on a current-thread tokio
//! runtime on a pinned thread. The server spawns a task per request (tarpc's
//! documented pattern); the client runs `in_flight` caller tasks sharing one
//! client (one connection, multiplexed).

use std::net::SocketAddr;
use std::time::Instant;

use futures::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

use crate::measure::{run_callers, spawn_pinned, tokio_runtime, Recorder, Spec, Tally, Window};

/// The echo service: returns its arguments.
#[tarpc::service]
pub trait EchoService {
    /// Echoes `id` and `payload`.
    async fn echo(id: u64, payload: ByteBuf) -> (u64, ByteBuf);
}

#[derive(Clone)]
struct EchoServer;

impl EchoService for EchoServer {
    async fn echo(self, _: context::Context, id: u64, payload: ByteBuf) -> (u64, ByteBuf) {
        (id, payload)
    }
}

/// Runs the workload against a tarpc server.
pub fn run(spec: &Spec, window: Window) -> Result<Tally, String> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = spawn_pinned(spec.server_cpu, "tarpc-srv", move || {
        tokio_runtime()?.block_on(serve(listener))
    });
    let spec = *spec;
    let client = spawn_pinned(spec.client_cpu, "tarpc-cli", move || {
        tokio_runtime()
            .map_err(|e| e.to_string())?
            .block_on(run_client(addr, spec, window))
    });
    let tally = client.join().map_err(|_| "tarpc client panicked")??;
    server
        .join()
        .map_err(|_| "tarpc server panicked")?
        .map_err(|e| e.to_string())?;
    Ok(tally)
}

/// Serves one connection until the client closes it.
async fn serve(listener: std::net::TcpListener) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
    BaseChannel::with_defaults(transport)
        .execute(EchoServer.serve())
        .for_each(|response| async {
            tokio::spawn(response);
        })
        .await;
    Ok(())
}

async fn run_client(addr: SocketAddr, spec: Spec, window: Window) -> Result<Tally, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
    let mut config = client::Config::default();
    // Room for every caller, so the defaults (1000 / 100) never throttle the loop.
    config.max_in_flight_requests = spec.in_flight.max(1000);
    config.pending_request_buffer = spec.in_flight.max(100);
    let client = EchoServiceClient::new(config, transport).spawn();
    let total = run_callers(spec.in_flight, "tarpc", |rec, first_id| {
        tokio::spawn(caller(rec, client.clone(), window, first_id, spec.payload))
    })
    .await;
    drop(client);
    Ok(total)
}

async fn caller(
    rec: Recorder,
    client: EchoServiceClient,
    window: Window,
    first_id: u64,
    payload: usize,
) {
    let mut id = first_id;
    let payload = ByteBuf::from(vec![0xA5; payload]);
    loop {
        let started = Instant::now();
        if started >= window.end {
            return;
        }
        // The request owns its arguments, so each call clones the payload
        // (as any tarpc caller that keeps its data has to).
        match client.echo(context::current(), id, payload.clone()).await {
            Ok((got, _)) => rec.check(&window, started, got, id),
            Err(e) => rec.error(|| e.to_string()),
        }
        id = id.wrapping_add(1);
    }
}
