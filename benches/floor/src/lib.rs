//! The raw-socket floors ringrpc is measured against: the same echo workload
//! over one plain blocking `std::net::TcpStream` with `TCP_NODELAY`, with no
//! runtime, no serialisation and (except `PipelinedCrc`) no checks. One
//! implementation serves both harnesses, `ringrpc bench --compare floor` and
//! the `peers` bench, so their floors are the same program; each harness picks
//! the threads (and pins them) and records the latencies its own way
//! ([`Record`]).
//!
//! Framing: `id: u64 LE | len: u32 LE | crc: u32 LE | payload` ([`HEADER`]
//! bytes of header; the CRC field is zero except in [`Mode::PipelinedCrc`]).
//!
//! - [`Mode::Blocking`]: write one message, read its echo, repeat (the floor for
//!   one call in flight); the server echoes bytes back without parsing them.
//! - [`Mode::Pipelined`]: one thread keeps `in_flight` messages outstanding,
//!   writing one more per echo read and batching the writes of echoes that
//!   arrived together (the floor for many in flight); the server does not parse.
//! - [`Mode::PipelinedCrc`]: `Pipelined` where every message carries a CRC32
//!   (crc32fast) of its id, length and payload, as a ringrpc frame does: the
//!   client seals each request and verifies each echo, the server verifies each
//!   request and seals the echo it sends back. The floor for any protocol that
//!   checksums its payloads: what the checksum alone costs.
//!
//! Invariant: every echo is checked against the id the client sent in that
//! position (echoes arrive in order); a mismatch or a bad CRC is recorded as an
//! error, never as a call.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Bytes of the id + length + CRC header.
pub const HEADER: usize = 16;
/// Most bytes the pipelined client writes before reading anything, so the
/// initial burst can never fill both sockets' buffers and deadlock (caps the
/// window only for large payloads: 128 x 4 KiB is 526 KB).
pub const MAX_BURST_BYTES: usize = 1 << 20;
/// Socket read size of the servers and the pipelined client.
const READ_CHUNK: usize = 256 << 10;

/// Which floor to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One message outstanding at a time.
    Blocking,
    /// Many messages outstanding, no checks.
    Pipelined,
    /// Many messages outstanding, each sealed and verified with a CRC32 on both sides.
    PipelinedCrc,
}

/// When calls are recorded: those started in `start..end`; none start after `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First instant whose calls are recorded (after the warmup).
    pub start: Instant,
    /// No call starts at or after this instant.
    pub end: Instant,
}

impl Window {
    /// A window opening `warmup` from now and lasting `duration`.
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// Measured length.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Whether a call started at `t` is recorded.
    pub fn counts(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    /// Whether no further call should start.
    pub fn over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Where a floor client records its calls.
pub trait Record {
    /// A call started at `started` got its echo just now.
    fn ok(&mut self, window: &Window, started: Instant);
    /// A call failed (wrong echo, bad CRC).
    fn error(&mut self, what: String);
}

/// Messages the pipelined floor keeps outstanding: `in_flight`, capped by
/// [`MAX_BURST_BYTES`].
pub fn pipelined_depth(in_flight: usize, payload: usize) -> usize {
    in_flight.min(MAX_BURST_BYTES / (HEADER + payload)).max(1)
}

/// Accepts one connection and echoes until the peer closes: every byte as it
/// came for the plain modes, verified and resealed messages for
/// [`Mode::PipelinedCrc`].
pub fn serve(listener: &TcpListener, mode: Mode) -> io::Result<()> {
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    match mode {
        Mode::PipelinedCrc => checked_echo(stream),
        Mode::Blocking | Mode::Pipelined => echo(stream),
    }
}

/// Runs the client side of `mode` on `stream` until `window` ends.
pub fn run_client(
    stream: TcpStream,
    mode: Mode,
    in_flight: usize,
    payload: usize,
    window: &Window,
    rec: &mut impl Record,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    match mode {
        Mode::Blocking => blocking_client(stream, payload, window, rec),
        Mode::Pipelined | Mode::PipelinedCrc => {
            let depth = pipelined_depth(in_flight, payload);
            pipelined_client(
                &stream,
                depth,
                payload,
                mode == Mode::PipelinedCrc,
                window,
                rec,
            )
        }
    }
}

/// Reads into `buf`, retrying on interruption; 0 means the peer closed (or reset).
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
            other => return other,
        }
    }
}

/// Echoes every byte straight back.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_some(&mut stream, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Verifies the CRC of every complete message it receives, seals each echo
/// with a freshly computed CRC, and sends the complete messages back.
fn checked_echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    loop {
        let n = read_some(&mut stream, &mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
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

/// Records the echo `msg` of the call `id` started at `started`.
fn check(rec: &mut impl Record, window: &Window, msg: &[u8], id: u64, started: Instant) {
    let mut got = [0u8; 8];
    got.copy_from_slice(&msg[..8]);
    let got = u64::from_le_bytes(got);
    if got == id {
        rec.ok(window, started);
    } else {
        rec.error(format!("raw floor: echo id {got:#x}, expected {id:#x}"));
    }
}

/// Ping-pong: one message outstanding at a time.
fn blocking_client(
    mut stream: TcpStream,
    payload: usize,
    window: &Window,
    rec: &mut impl Record,
) -> io::Result<()> {
    let (mut out, mut back) = (Vec::new(), vec![0u8; HEADER + payload]);
    for id in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        out.clear();
        push_message(&mut out, id, payload, false);
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        check(rec, window, &back, id, started);
    }
    Ok(())
}

/// One thread keeping `depth` messages outstanding; echoes arrive in order.
fn pipelined_client(
    stream: &TcpStream,
    depth: usize,
    payload: usize,
    checked: bool,
    window: &Window,
    rec: &mut impl Record,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(READ_CHUNK, stream);
    let mut writer = stream;
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    let (mut out, mut back) = (Vec::new(), vec![0u8; HEADER + payload]);
    let mut next_id = 0u64;
    let mut queue = |out: &mut Vec<u8>, sent: &mut VecDeque<_>| {
        push_message(out, next_id, payload, checked);
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
            rec.error(format!("raw floor: echo {id:#x} failed its CRC check"));
        } else {
            check(rec, window, &back, id, started);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

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

    #[test]
    fn the_pipelined_window_is_capped_by_the_burst_limit() {
        assert_eq!(pipelined_depth(128, 64), 128);
        assert_eq!(
            pipelined_depth(1024, 64 << 10),
            MAX_BURST_BYTES / (HEADER + (64 << 10))
        );
        assert_eq!(pipelined_depth(4, 4 << 20), 1);
    }

    #[derive(Default)]
    struct Count {
        ok: u64,
        errors: Vec<String>,
    }

    impl Record for Count {
        fn ok(&mut self, _: &Window, _: Instant) {
            self.ok += 1;
        }
        fn error(&mut self, what: String) {
            self.errors.push(what);
        }
    }

    /// Every mode completes calls over loopback and records no error.
    #[test]
    fn every_mode_echoes_over_loopback() {
        for mode in [Mode::Blocking, Mode::Pipelined, Mode::PipelinedCrc] {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || serve(&listener, mode));
            let window = Window::after(Duration::ZERO, Duration::from_millis(50));
            let mut count = Count::default();
            let stream = TcpStream::connect(addr).unwrap();
            run_client(stream, mode, 16, 100, &window, &mut count).unwrap();
            server.join().unwrap().unwrap();
            assert!(count.ok > 0, "{mode:?}: no calls");
            assert!(count.errors.is_empty(), "{mode:?}: {:?}", count.errors);
        }
    }

    /// An echo server that answers with other ids is caught, not counted.
    #[test]
    fn a_wrong_echo_is_an_error() {
        let mut count = Count::default();
        let window = Window::after(Duration::ZERO, Duration::from_secs(1));
        let mut msg = Vec::new();
        push_message(&mut msg, 5, 8, false);
        check(&mut count, &window, &msg, 6, Instant::now());
        check(&mut count, &window, &msg, 5, Instant::now());
        assert_eq!((count.ok, count.errors.len()), (1, 1));
    }
}
