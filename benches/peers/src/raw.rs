//! The raw-socket floors (`raw-blocking`, `raw-pipelined`, `raw-crc`): the
//! `ringrpc-floor` crate's echo server and clients, which `ringrpc bench
//! --compare floor` runs too, on two pinned threads named `raw-srv` and
//! `raw-cli` (what the CPU sampler, `ringrpc_workload::cpu`, counts as server
//! and client).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use ringrpc_floor::{Mode, Record};

use crate::measure::{spawn_pinned, Spec, Tally, Window};

/// Runs the blocking ping-pong floor (ignores `spec.in_flight`: always 1).
pub fn run_blocking(spec: &Spec, window: Window) -> Result<Tally, String> {
    run(spec, window, Mode::Blocking)
}

/// Runs the pipelined floor with `spec.in_flight` messages outstanding.
pub fn run_pipelined(spec: &Spec, window: Window) -> Result<Tally, String> {
    run(spec, window, Mode::Pipelined)
}

/// Runs the pipelined floor with a CRC32 sealed and verified on every message.
pub fn run_pipelined_crc(spec: &Spec, window: Window) -> Result<Tally, String> {
    run(spec, window, Mode::PipelinedCrc)
}

impl Record for Tally {
    fn ok(&mut self, window: &Window, started: Instant) {
        Tally::ok(self, window, started);
    }

    fn error(&mut self, what: String) {
        Tally::error(self, || what);
    }
}

fn run(spec: &Spec, window: Window, mode: Mode) -> Result<Tally, String> {
    let s = |e: std::io::Error| e.to_string();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(s)?;
    let addr = listener.local_addr().map_err(s)?;
    let server = spawn_pinned(spec.server_cpu, "raw-srv", move || {
        ringrpc_floor::serve(&listener, mode)
    });
    let spec = *spec;
    let client = spawn_pinned(spec.client_cpu, "raw-cli", move || {
        let mut tally = Tally::new();
        let stream = TcpStream::connect(addr)?;
        ringrpc_floor::run_client(
            stream,
            mode,
            spec.in_flight,
            spec.payload,
            &window,
            &mut tally,
        )?;
        Ok::<_, std::io::Error>(tally)
    });
    let result = client
        .join()
        .map_err(|_| "raw client panicked".to_string())?;
    if result.is_err() {
        // Unblock the server's accept if the client never connected.
        let _ = TcpStream::connect(addr);
    }
    let tally = result.map_err(s)?;
    server
        .join()
        .map_err(|_| "raw server panicked".to_string())?
        .map_err(s)?;
    Ok(tally)
}
