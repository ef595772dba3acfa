//! Raw-socket floors over one blocking `std::net::TcpStream` with `TCP_NODELAY`.
//!
//! Framing: `id: u64 LE | len: u32 LE | crc: u32 LE | payload`. The two plain
//! floors are those of `ringrpc bench --compare floor` (which frames with a
//! 64-bit length and no CRC field: the same 16 header bytes).
//!
//! - `raw-blocking`: write one message, read its echo, repeat (floor for 1 in
//!   flight); the server echoes bytes back without parsing them.
//! - `raw-pipelined`: one thread keeps `in_flight` messages outstanding, writing
//!   one more per echo read and batching the writes of echoes that arrived
//!   together (floor for many in flight); the server does not parse either.
//! - `raw-crc`: `raw-pipelined` where every message carries a CRC32 (crc32fast)
//!   of its id, length and payload, as a ringrpc frame does: the client seals
//!   each request and verifies each echo, the server verifies each request and
//!   seals the echo it sends back. It is the floor for any protocol that
//!   checksums its payloads: what the checksum alone costs, without framing,
//!   serialisation or a runtime.

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Blocking,
    Pipelined,
    PipelinedCrc,
}

fn run(spec: &Spec, window: Window, mode: Mode) -> Result<Tally, String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(s)?;
    let addr = listener.local_addr().map_err(s)?;
    let checked = mode == Mode::PipelinedCrc;
    let server = spawn_pinned(spec.server_cpu, "raw-srv", move || {
        if checked {
            checked_echo_server(&listener)
        } else {
            echo_server(&listener)
        }
    });
    let spec = *spec;
    let client = spawn_pinned(spec.client_cpu, "raw-cli", move || {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        match mode {
            Mode::Blocking => blocking_client(stream, &spec, &window),
            _ => pipelined_client(&stream, &spec, &window, checked),
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

/// Verifies the CRC of every complete message it receives, seals each echo
/// with a freshly computed CRC, and sends the complete messages back.
fn checked_echo_server(listener: &TcpListener) -> io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        };
        filled += n;
        let mut done = 0;
        while let Some(len) = message_len(&buf[done..filled]) {
            let msg = &mut buf[done..done + len];
            if !crc_ok(msg) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad CRC"));
            }
            seal(msg);
            done += len;
        }
        stream.write_all(&buf[..done])?;
        buf.copy_within(done..filled, 0);
        filled -= done;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// The length of the complete message at the front of `bytes`, if there is one.
fn message_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    (bytes.len() >= HEADER + len).then_some(HEADER + len)
}

/// The CRC32 of a message's id, length and payload.
fn crc_of(msg: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&msg[..12]);
    h.update(&msg[HEADER..]);
    h.finalize()
}

/// Writes the message's CRC into its header.
fn seal(msg: &mut [u8]) {
    let crc = crc_of(msg);
    msg[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Whether the CRC in the message's header matches its contents.
fn crc_ok(msg: &[u8]) -> bool {
    msg[12..16] == crc_of(msg).to_le_bytes()
}

/// Appends one message with `id` to `out`, sealed with its CRC if `checked`.
fn push_message(out: &mut Vec<u8>, id: u64, payload: usize, checked: bool) {
    let start = out.len();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.resize(out.len() + payload, 0xA5);
    if checked {
        seal(&mut out[start..]);
    }
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
        push_message(&mut out, id, spec.payload, false);
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        tally.check(window, started, message_id(&back), id);
    }
    Ok(tally)
}

fn pipelined_client(
    stream: &TcpStream,
    spec: &Spec,
    window: &Window,
    checked: bool,
) -> io::Result<Tally> {
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
        push_message(out, next_id, spec.payload, checked);
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
        if checked && !crc_ok(&back) {
            tally.error(|| format!("echo {id:#x} failed its CRC check"));
        } else {
            tally.check(window, started, message_id(&back), id);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_verify_and_any_flipped_bit_is_caught() {
        let mut out = Vec::new();
        push_message(&mut out, 7, 40, true);
        assert!(crc_ok(&out));
        for byte in [0, 8, HEADER, out.len() - 1] {
            let mut bad = out.clone();
            bad[byte] ^= 1;
            assert!(!crc_ok(&bad), "flip in byte {byte} not caught");
        }
    }

    #[test]
    fn message_len_waits_for_whole_messages() {
        let mut out = Vec::new();
        push_message(&mut out, 1, 100, false);
        push_message(&mut out, 2, 3, false);
        assert_eq!(message_len(&out), Some(HEADER + 100));
        assert_eq!(message_len(&out[..HEADER + 99]), None);
        assert_eq!(message_len(&out[..11]), None);
        assert_eq!(message_len(&out[HEADER + 100..]), Some(HEADER + 3));
    }
}
