//! Raw-socket baselines ("floors") for `ringrpc bench --compare floor`: the
//! `ringrpc-floor` crate's blocking ping-pong and pipelined loop (the same
//! floors the `peers` bench runs), with this tool's CPUs, window and rows.
//!
//! To pin without extra dependencies, each side runs inside a ringrpc core
//! thread (those are pinned; their names are what the CPU sampler counts); blocking
//! that core is fine because nothing else runs on it.
//!
//! - `floor/blocking`: write one message, read its echo, repeat.
//! - `floor/pipelined`: one client thread keeps `window` messages outstanding:
//!   it writes `window` messages, then for each echo read writes one more,
//!   batching the writes for echoes that arrived together.
//! - `floor/pipelined+crc`: the same loop with a CRC32 per message, sealed by
//!   the sender and checked by the receiver on both sides (what ringrpc's wire
//!   format requires of every frame); only for the context of P3.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringrpc::Runtime;
use ringrpc_floor::{Mode, Record};
use ringrpc_workload::cpu::{self, CpuShares, Naming};

use crate::measure::{Tally, Window};
use crate::report::{Row, Shape};
use crate::CliResult;

/// Names of the floor runtimes (their threads are `{name}-{core}`,
/// which is how the CPU sampler tells the two sides apart).
const SIDES: Naming = Naming::Cores {
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

/// Runs the floors of `modes` one after the other on one pair of pinned
/// runtimes; returns their rows in the same order.
pub fn run<const N: usize>(spec: &FloorSpec, modes: [Mode; N]) -> CliResult<[Row; N]> {
    let server_rt = Runtime::builder()
        .cpus([spec.server_cpu])
        .name(SIDES.server())
        .build()?;
    let client_rt = Runtime::builder()
        .cpus([spec.client_cpu])
        .name(SIDES.client())
        .build()?;
    let mut rows = Vec::with_capacity(N);
    for mode in modes {
        let (tally, cpu) = run_one(&server_rt, &client_rt, *spec, mode)?;
        rows.push(Row::new(name(mode), shape(spec, mode), &tally, spec.duration).with_cpu(cpu));
    }
    Ok(rows
        .try_into()
        .unwrap_or_else(|_| unreachable!("one row per mode")))
}

/// The row name of a floor.
fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::Blocking => "floor/blocking",
        Mode::Pipelined => "floor/pipelined",
        Mode::PipelinedCrc => "floor/pipelined+crc",
    }
}

/// The shape a floor runs: one message outstanding, or the pipelined depth.
fn shape(spec: &FloorSpec, mode: Mode) -> Shape {
    let in_flight = match mode {
        Mode::Blocking => 1,
        Mode::Pipelined | Mode::PipelinedCrc => {
            ringrpc_floor::pipelined_depth(spec.window, spec.payload)
        }
    };
    Shape {
        in_flight,
        cores: 1,
        pool: None,
        payload: spec.payload,
    }
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
    let cpu = cpu::sample_window(window.start, window.end, SIDES);
    let result = client.join()?;
    if result.is_err() {
        // Unblock the server's accept if the client never connected.
        let _ = TcpStream::connect(addr);
    }
    let tally = result?;
    server.join()??;
    Ok((tally, cpu))
}
