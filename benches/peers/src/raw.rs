//! Raw-socket floors over one blocking `std::net::TcpStream` with `TCP_NODELAY`.
//!
//! Framing: `id: u64 LE | len: u64 LE | payload`; the server echoes bytes back
//! without parsing them. (The same floors as `ringrpc bench --compare floor`.)
//!
//! - `raw-blocking`: write one message, read its echo, repeat (floor for 1 in flight).
//! - `raw-pipelined`: one thread keeps `in_flight` messages outstanding, writing
//!   one more per echo read and batching the writes of echoes that arrived
//!   together (floor for many in flight).

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use crate::measure::{spawn_pinned, Spec, Tally, Window};

/// Bytes of the id + length header.
const HEADER: usize = 16;
/// Most bytes the pipelined client writes before reading anything, so the
/// initial burst can never fill both sockets' buffers and deadlock (caps the
/// window only for large payloads: 128 x 4 KiB is 526 KB).
const MAX_BURST_BYTES: usize = 1 << 20;

/// Runs the blocking ping-pong floor (ignores `spec.in_flight`: always 1).
pub fn run_blocking(spec: &Spec, window: Window) -> Result<Tally, String> {
    run(spec, window, false)
}

/// Runs the pipelined floor with `spec.in_flight` messages outstanding.
pub fn run_pipelined(spec: &Spec, window: Window) -> Result<Tally, String> {
    run(spec, window, true)
}

fn run(spec: &Spec, window: Window, pipelined: bool) -> Result<Tally, String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(s)?;
    let addr = listener.local_addr().map_err(s)?;
    let server = spawn_pinned(spec.server_cpu, "raw-srv", move || echo_server(&listener));
    let spec = *spec;
    let client = spawn_pinned(spec.client_cpu, "raw-cli", move || {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        if pipelined {
            pipelined_client(&stream, &spec, &window)
        } else {
            blocking_client(stream, &spec, &window)
        }
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

fn s(e: io::Error) -> String {
    e.to_string()
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

/// Appends one message with `id` to `out`.
fn push_message(out: &mut Vec<u8>, id: u64, payload: usize) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload as u64).to_le_bytes());
    out.resize(out.len() + payload, 0xA5);
}

fn message_id(msg: &[u8]) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&msg[..8]);
    u64::from_le_bytes(id)
}

fn blocking_client(mut stream: TcpStream, spec: &Spec, window: &Window) -> io::Result<Tally> {
    let mut tally = Tally::new();
    let (mut out, mut back) = (Vec::new(), vec![0u8; HEADER + spec.payload]);
    for id in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        out.clear();
        push_message(&mut out, id, spec.payload);
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        tally.check(window, started, message_id(&back), id);
    }
    Ok(tally)
}

fn pipelined_client(stream: &TcpStream, spec: &Spec, window: &Window) -> io::Result<Tally> {
    let depth = spec
        .in_flight
        .min(MAX_BURST_BYTES / (HEADER + spec.payload))
        .max(1);
    let mut tally = Tally::new();
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut writer = stream;
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    let (mut out, mut back) = (Vec::new(), vec![0u8; HEADER + spec.payload]);
    let mut next_id = 0u64;
    let mut queue = |out: &mut Vec<u8>, sent: &mut VecDeque<_>| {
        push_message(out, next_id, spec.payload);
        sent.push_back((next_id, Instant::now()));
        next_id += 1;
    };
    // The whole initial window is written before reading (see MAX_BURST_BYTES).
    for _ in 0..depth {
        queue(&mut out, &mut sent);
    }
    writer.write_all(&out)?;
    out.clear();
    while let Some((id, started)) = sent.pop_front() {
        reader.read_exact(&mut back)?;
        tally.check(window, started, message_id(&back), id);
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
