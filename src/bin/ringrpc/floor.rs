//! Raw-socket baselines ("floors") for `ringrpc bench --compare floor`.
//!
//! Both floors use one plain blocking `std::net::TcpStream` with `TCP_NODELAY`
//! and a minimal framing: `id: u64 LE | len: u64 LE | payload`. The server
//! echoes bytes straight back (no parsing). To pin without extra dependencies,
//! the blocking socket code runs inside a ringrpc core thread (those are
//! pinned); blocking that core is fine because nothing else runs on it.
//!
//! - `floor/blocking`: write one message, read its echo, repeat.
//! - `floor/pipelined`: one client thread keeps `window` messages outstanding:
//!   it writes `window` messages, then for each echo read writes one more,
//!   batching the writes for echoes that arrived together.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringrpc::Runtime;

use crate::cpu::{self, CpuShares, Sides};
use crate::measure::{Tally, Window};
use crate::report::{Row, Shape};
use crate::CliResult;

/// Header bytes of a floor message (id + length).
const FLOOR_HEADER: usize = 16;
/// Names of the floor runtimes (their threads are `{name}-0`).
const SIDES: Sides = Sides {
    server: "floor-server",
    client: "floor-client",
};
/// Most bytes the pipelined client writes before reading anything, so the
/// initial burst can never fill both socket buffers and deadlock.
const MAX_BURST_BYTES: usize = 1 << 20;

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

impl FloorSpec {
    fn message_len(&self) -> usize {
        FLOOR_HEADER + self.payload
    }

    /// The pipelined window actually used (capped by [`MAX_BURST_BYTES`]).
    fn effective_window(&self) -> usize {
        self.window.min(MAX_BURST_BYTES / self.message_len()).max(1)
    }
}

/// Which floor to run.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Blocking,
    Pipelined(usize),
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
    let window = spec.effective_window();
    let pipelined = run_one(&server_rt, &client_rt, *spec, Mode::Pipelined(window))?;
    let shape = |in_flight| Shape {
        in_flight,
        cores: 1,
        pool: None,
        payload: spec.payload,
    };
    Ok((
        Row::new("floor/blocking", shape(1), &blocking.0, spec.duration).with_cpu(blocking.1),
        Row::new(
            "floor/pipelined",
            shape(window),
            &pipelined.0,
            spec.duration,
        )
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
    let server = server_rt.spawn_on(0, move || async move { echo_server(&listener) })?;
    let client = client_rt.spawn_on(
        0,
        move || async move { run_client(addr, spec, window, mode) },
    )?;
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

/// Accepts one connection and echoes every byte until the peer closes.
fn echo_server(listener: &TcpListener) -> io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
    }
}

/// Connects and runs the client side of `mode`.
fn run_client(addr: SocketAddr, spec: FloorSpec, window: Window, mode: Mode) -> io::Result<Tally> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    match mode {
        Mode::Blocking => blocking_client(stream, &spec, &window),
        Mode::Pipelined(n) => pipelined_client(&stream, &spec, &window, n),
    }
}

/// Appends one framed message with `id` to `out`.
fn push_message(out: &mut Vec<u8>, id: u64, payload: usize) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload as u64).to_le_bytes());
    out.resize(out.len() + payload, 0xA5);
}

/// The id of a received message.
fn message_id(msg: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = msg.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Ping-pong: one message outstanding at a time.
fn blocking_client(mut stream: TcpStream, spec: &FloorSpec, window: &Window) -> io::Result<Tally> {
    let mut tally = Tally::new();
    let (mut out, mut back) = (Vec::new(), vec![0u8; spec.message_len()]);
    for id in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        out.clear();
        push_message(&mut out, id, spec.payload);
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        check(&mut tally, &back, id, window, started);
    }
    Ok(tally)
}

/// Counts an echo of `id` started at `started` as a success or an error.
fn check(tally: &mut Tally, msg: &[u8], id: u64, window: &Window, started: Instant) {
    match message_id(msg) {
        Some(got) if got == id => tally.ok(window, started),
        got => tally.error(|| format!("floor: echo id {got:?}, expected {id}")),
    }
}

/// One thread keeping `depth` messages outstanding; replies arrive in order.
fn pipelined_client(
    stream: &TcpStream,
    spec: &FloorSpec,
    window: &Window,
    depth: usize,
) -> io::Result<Tally> {
    let mut tally = Tally::new();
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut writer = stream;
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    let (mut out, mut back) = (Vec::new(), vec![0u8; spec.message_len()]);
    let mut next_id = 0u64;
    let mut queue = |out: &mut Vec<u8>, sent: &mut VecDeque<_>| {
        push_message(out, next_id, spec.payload);
        sent.push_back((next_id, Instant::now()));
        next_id += 1;
    };
    for _ in 0..depth {
        queue(&mut out, &mut sent);
    }
    writer.write_all(&out)?;
    out.clear();
    while let Some((id, started)) = sent.pop_front() {
        reader.read_exact(&mut back)?;
        check(&mut tally, &back, id, window, started);
        if Instant::now() < window.end {
            queue(&mut out, &mut sent);
        }
        // Flush once no further complete echo is already buffered.
        if !out.is_empty() && reader.buffer().len() < back.len() {
            writer.write_all(&out)?;
            out.clear();
        }
    }
    Ok(tally)
}
