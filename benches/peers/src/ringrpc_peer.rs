//! ringrpc: server runtime pinned to the server CPU, client runtime pinned to
//! the client CPU, one connection (`pool_size(1)`), `in_flight` caller tasks on
//! the client core, each looping call → check → record.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc::runtime::io;
use ringrpc::{Client, Runtime, Server};
use ringrpc_workload::echo;

use crate::measure::{run_callers, Recorder, Spec, Tally, Window};

/// Runs the workload against a ringrpc server (data digests on, the default).
pub fn run(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_with(spec, window, true)
}

/// Runs the workload with the payload CRC32 (data digest) off on both sides,
/// as on a trusted link; the header digest stays.
pub fn run_no_digest(spec: &Spec, window: Window) -> Result<Tally, String> {
    run_with(spec, window, false)
}

fn run_with(spec: &Spec, window: Window, digest: bool) -> Result<Tally, String> {
    let server_rt = Runtime::builder()
        .cpus([spec.server_cpu])
        .name("peers-rr-srv")
        .build()
        .map_err(|e| e.to_string())?;
    let client_rt = Runtime::builder()
        .cpus([spec.client_cpu])
        .name("peers-rr-cli")
        .build()
        .map_err(|e| e.to_string())?;
    let server = echo::register(Server::builder().data_digest(digest))
        .and_then(|b| b.serve(&server_rt, SocketAddr::from(([127, 0, 0, 1], 0))))
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let spec = *spec;
    let tally = client_rt
        .block_on(0, move || client(addr, spec, window, digest))
        .map_err(|e| e.to_string())??;
    server.shutdown(Duration::from_millis(200));
    client_rt.shutdown();
    server_rt.shutdown();
    Ok(tally)
}

async fn client(
    addr: SocketAddr,
    spec: Spec,
    window: Window,
    digest: bool,
) -> Result<Tally, String> {
    let client = Client::builder()
        .data_digest(digest)
        .pool_size(1)
        .max_in_flight(spec.in_flight.max(1024))
        .connect(addr)
        .expect("connect on a ringrpc core");
    if !client.wait_connected(Duration::from_secs(5)).await {
        return Err(format!("ringrpc: no connection to {addr}"));
    }
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
