//! The benches' setup: an echo server on a runtime pinned to one CPU and a
//! client runtime pinned to another ([`Pair`]), used by the `calls`, `handle`
//! and `peers` benches.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc::{Driver, Runtime, ServerBuilder, ServerHandle};

/// An echo server on its pinned runtime, and a client runtime on the client CPU.
#[derive(Debug)]
pub struct Pair {
    /// The server's runtime (one core, on the server CPU).
    pub server_rt: Runtime,
    /// The client's runtime (one core, on the client CPU).
    pub client_rt: Runtime,
    /// The server, on 127.0.0.1 with a free port.
    pub server: ServerHandle,
}

impl Pair {
    /// Starts `server` (its methods registered) on `server_cpu` and a client
    /// runtime on `client_cpu`; threads are named `{name}-srv` / `{name}-cli`.
    /// Both run the default driver ([`Driver::Auto`]).
    pub fn start(
        server_cpu: usize,
        client_cpu: usize,
        name: &str,
        server: ServerBuilder,
    ) -> Result<Self, ringrpc::Error> {
        Self::start_on(Driver::Auto, server_cpu, client_cpu, name, server)
    }

    /// [`start`](Self::start) with both runtimes on `driver`
    /// (`RINGRPC_DRIVER`, when set, overrides it).
    pub fn start_on(
        driver: Driver,
        server_cpu: usize,
        client_cpu: usize,
        name: &str,
        server: ServerBuilder,
    ) -> Result<Self, ringrpc::Error> {
        let buffers = recv_buffers_from_env();
        Self::start_with(driver, buffers, server_cpu, client_cpu, name, server)
    }

    /// [`start_on`](Self::start_on) with both runtimes' receive buffers set
    /// as [`RuntimeBuilder::recv_buffers`](ringrpc::RuntimeBuilder::recv_buffers)
    /// takes them (`None` here keeps the runtime's default).
    pub fn start_with(
        driver: Driver,
        buffers: Option<Option<(u16, usize)>>,
        server_cpu: usize,
        client_cpu: usize,
        name: &str,
        server: ServerBuilder,
    ) -> Result<Self, ringrpc::Error> {
        let runtime = |cpu, side| {
            let mut builder = Runtime::builder()
                .cpus([cpu])
                .name(format!("{name}-{side}"))
                .driver(driver);
            if let Some(buffers) = buffers {
                builder = builder.recv_buffers(buffers);
            }
            builder.build()
        };
        let server_rt = runtime(server_cpu, "srv")?;
        let client_rt = runtime(client_cpu, "cli")?;
        let server = server.serve(&server_rt, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        Ok(Self {
            server_rt,
            client_rt,
            server,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the client runtime (dropping the clients it holds), then the
    /// server (200 ms drain) and its runtime.
    pub fn stop(self) {
        self.client_rt.shutdown();
        self.server.shutdown(Duration::from_millis(200));
        self.server_rt.shutdown();
    }
}

/// `RINGRPC_BENCH_RECV_BUFFERS`: `none` (plain receives) or `COUNTxSIZE`
/// (the buffer ring's shape); unset keeps the runtime's default.
fn recv_buffers_from_env() -> Option<Option<(u16, usize)>> {
    let value = std::env::var("RINGRPC_BENCH_RECV_BUFFERS").ok()?;
    if value == "none" {
        return Some(None);
    }
    let (count, size) = value.split_once('x')?;
    Some(Some((count.parse().ok()?, size.parse().ok()?)))
}
