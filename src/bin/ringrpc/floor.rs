//! Raw-socket baselines ("floors") for `ringrpc bench --compare floor`: the
//! `ringrpc-floor` crate's blocking ping-pong and pipelined loop (the same
//! floors the `peers` bench runs), with this tool's CPUs, window and rows.
//!
//! To pin without extra dependencies, each side runs inside a ringrpc core
//! thread (those are pinned; their names are what [`cpu`] counts); blocking
//! that core is fine because nothing else runs on it.
//!
//! - `floor/blocking`: write one message, read its echo, repeat.
//! - `floor/pipelined`: one client thread keeps `window` messages outstanding:
//!   it writes `window` messages, then for each echo read writes one more,
//!   batching the writes for echoes that arrived together.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringrpc::Runtime;
use ringrpc_floor::{Mode, Record};

use crate::cpu::{self, CpuShares, Sides};
use crate::measure::{Tally, Window};
use crate::report::{Row, Shape};
use crate::CliResult;

/// Names of the floor runtimes (their threads are `{name}-0`).
const SIDES: Sides = Sides {
    server: "floor-server",
    client: "floor-client",
};

/// What the floors run with.
#[derive(Debug, Clone, Copy)]
pub struct FloorSpec {
    /// CPU of the echo server thread.
    pub server_cpu: usize,
    /// CPU of the client thread.
    pub client_cpu: usize,
    /// Payload bytes per message.
    pub payload: usize,
    /// Messages the pipelined floor keeps outstanding.
    pub window: usize,
    /// Unrecorded warmup.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

impl Record for Tally {
    fn ok(&mut self, window: &Window, started: Instant) {
        Tally::ok(self, window, started);
    }

    fn error(&mut self, what: String) {
        Tally::error(self, || what);
    }
}

/// Runs both floors; returns the `floor/blocking` and `floor/pipelined` rows.
pub fn run(spec: &FloorSpec) -> CliResult<(Row, Row)> {
    let server_rt = Runtime::builder()
        .cpus([spec.server_cpu])
        .name(SIDES.server)
        .build()?;
    let client_rt = Runtime::builder()
        .cpus([spec.client_cpu])
        .name(SIDES.client)
        .build()?;
    let blocking = run_one(&server_rt, &client_rt, *spec, Mode::Blocking)?;
    let pipelined = run_one(&server_rt, &client_rt, *spec, Mode::Pipelined)?;
    let shape = |in_flight| Shape {
        in_flight,
        cores: 1,
        pool: None,
        payload: spec.payload,
    };
    let depth = ringrpc_floor::pipelined_depth(spec.window, spec.payload);
    Ok((
        Row::new("floor/blocking", shape(1), &blocking.0, spec.duration).with_cpu(blocking.1),
        Row::new("floor/pipelined", shape(depth), &pipelined.0, spec.duration)
            .with_cpu(pipelined.1),
    ))
}

/// Runs one floor: an echo server on `server_rt`, the client on `client_rt`;
/// returns the client's tally and both threads' CPU shares over the window.
fn run_one(
    server_rt: &Runtime,
    client_rt: &Runtime,
    spec: FloorSpec,
    mode: Mode,
) -> CliResult<(Tally, CpuShares)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let window = Window::after(spec.warmup, spec.duration);
    let server = server_rt.spawn_on(
        0,
        move || async move { ringrpc_floor::serve(&listener, mode) },
    )?;
    let client = client_rt.spawn_on(0, move || async move {
        let mut tally = Tally::new();
        let stream = TcpStream::connect(addr)?;
        ringrpc_floor::run_client(stream, mode, spec.window, spec.payload, &window, &mut tally)?;
        Ok::<_, std::io::Error>(tally)
    })?;
    let cpu = cpu::sample_window(&window, SIDES);
    let result = client.join()?;
    if result.is_err() {
        // Unblock the server's accept if the client never connected.
        let _ = TcpStream::connect(addr);
    }
    let tally = result?;
    server.join()??;
    Ok((tally, cpu))
}
