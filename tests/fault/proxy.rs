//! A fault-injecting TCP proxy for tests.
//!
//! [`Proxy::start`] listens on 127.0.0.1 (port 0) and forwards every accepted
//! connection to the upstream address with two plain threads per connection
//! (blocking sockets with short timeouts, so they notice control changes within
//! ~10 ms). From the test thread it can, at any time:
//!
//! - add a one-way delay to every byte ([`Proxy::set_delay`]);
//! - cut every open connection with an RST ([`Proxy::reset_all`]) or a FIN
//!   ([`Proxy::close_all`]);
//! - blackhole traffic: bytes (and FINs) vanish silently in both directions while
//!   both sockets stay open, a half-open link ([`Proxy::set_blackhole`]);
//! - stall forwarding and later resume it, nothing lost ([`Proxy::set_stall`]);
//! - split every write into 1-byte TCP segments ([`Proxy::set_split`]);
//! - corrupt one byte of the next ringrpc frame passing in a direction
//!   ([`Proxy::corrupt_next`]), or inject raw bytes at the next frame boundary
//!   ([`Proxy::inject`]). The proxy follows the frame boundaries of the stream
//!   (32-byte header with the payload length at bytes 24..28, payload padded to
//!   16), so a corruption lands exactly where the test asks.
//!
//! Resets are mirrored: a peer's RST is passed on as an RST to the other side.
//! Dropping the [`Proxy`] closes every connection and joins every thread.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frame header length of the ringrpc wire format.
const HEADER_LEN: usize = 32;
/// How long a blocked socket call waits before re-checking the controls.
const POLL: Duration = Duration::from_millis(10);

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Requests, pings: client → server.
    ClientToServer,
    /// Responses, pongs, goaway: server → client.
    ServerToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ClientToServer => 0,
            Dir::ServerToClient => 1,
        }
    }
}

/// Where [`Proxy::corrupt_next`] flips bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The first payload byte of the next frame that has a payload (`^ 0xff`).
    Payload,
    /// Header byte `offset` (0..32) of the next frame, XORed with `xor`.
    Header { offset: usize, xor: u8 },
}

/// How a connection is being cut.
const CUT_NONE: u8 = 0;
const CUT_FIN: u8 = 1;
const CUT_RST: u8 = 2;

/// Per-direction one-shot requests.
#[derive(Default)]
struct DirControl {
    corrupt: Mutex<Option<Target>>,
    inject: Mutex<Vec<u8>>,
}

/// State shared by the handle, the acceptor and the pump threads.
struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    delay_us: AtomicU64,
    blackhole: AtomicBool,
    stall: AtomicBool,
    split: AtomicBool,
    dirs: [DirControl; 2],
    conns: Mutex<Vec<Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicU64,
    corrupted: AtomicU64,
    injected: AtomicU64,
    blackholed_bytes: AtomicU64,
    split_writes: AtomicU64,
    last_accept: Mutex<Option<Instant>>,
}

/// Locks `m`, ignoring poisoning (a failed test thread must not wedge the proxy).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One proxied connection: the client-side and server-side sockets.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    cut: AtomicU8,
    /// Set when one side failed (reset): the other pump stops too.
    failed: AtomicBool,
    /// Pumps still running (the last one unregisters the connection).
    pumps: AtomicU8,
}

impl Conn {
    fn set_rst(&self) {
        for s in [&self.client, &self.server] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

/// The proxy handle. Dropping it stops the proxy and joins its threads.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (port 0) forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("proxy nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            blackhole: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            split: AtomicBool::new(false),
            dirs: Default::default(),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            blackholed_bytes: AtomicU64::new(0),
            split_writes: AtomicU64::new(0),
            last_accept: Mutex::new(None),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fproxy-accept".into())
                .spawn(move || accept_loop(&shared, &listener))
                .expect("spawn proxy acceptor")
        };
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One-way delay added to every byte from now on (both directions).
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// Blackholes every connection (present and future): bytes and FINs vanish,
    /// sockets stay open. Turning it off forwards new bytes again (a pending FIN
    /// is then passed on).
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Stops forwarding (bytes are kept) until called again with `false`.
    pub fn set_stall(&self, on: bool) {
        self.shared.stall.store(on, Ordering::SeqCst);
    }

    /// Forwards every byte as its own write (its own TCP segment: the proxy's
    /// sockets have `TCP_NODELAY`).
    pub fn set_split(&self, on: bool) {
        self.shared.split.store(on, Ordering::SeqCst);
    }

    /// Corrupts `target` in the next frame passing in `dir` (on any connection).
    pub fn corrupt_next(&self, dir: Dir, target: Target) {
        if let Target::Header { offset, .. } = target {
            assert!(offset < HEADER_LEN, "header offset {offset}");
        }
        *lock(&self.shared.dirs[dir.index()].corrupt) = Some(target);
    }

    /// Inserts `bytes` into the stream in `dir` at the next frame boundary.
    pub fn inject(&self, dir: Dir, bytes: &[u8]) {
        lock(&self.shared.dirs[dir.index()].inject).extend_from_slice(bytes);
    }

    /// Corruptions applied so far.
    pub fn corrupted(&self) -> u64 {
        self.shared.corrupted.load(Ordering::SeqCst)
    }

    /// Injections applied so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Bytes swallowed by the blackhole so far.
    pub fn blackholed_bytes(&self) -> u64 {
        self.shared.blackholed_bytes.load(Ordering::SeqCst)
    }

    /// 1-byte writes made in split mode so far.
    pub fn split_writes(&self) -> u64 {
        self.shared.split_writes.load(Ordering::SeqCst)
    }

    /// Cuts every open connection with an RST to both peers.
    pub fn reset_all(&self) {
        for conn in lock(&self.shared.conns).iter() {
            conn.set_rst();
            conn.cut.store(CUT_RST, Ordering::SeqCst);
        }
    }

    /// Cuts every open connection with a FIN to both peers.
    pub fn close_all(&self) {
        for conn in lock(&self.shared.conns).iter() {
            conn.cut.store(CUT_FIN, Ordering::SeqCst);
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.server.shutdown(Shutdown::Both);
        }
    }

    /// Connections currently proxied.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// When the latest connection was accepted.
    pub fn last_accept(&self) -> Option<Instant> {
        *lock(&self.shared.last_accept)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        loop {
            let threads = std::mem::take(&mut *lock(&self.shared.threads));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
        lock(&self.shared.conns).clear();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut next_id = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        *lock(&shared.last_accept) = Some(Instant::now());
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let server = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(_) => {
                // Upstream down: refuse the client with an RST, like the server would.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                continue;
            }
        };
        next_id += 1;
        let ready = client.set_nonblocking(false).and_then(|()| {
            for s in [&client, &server] {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(POLL))?;
            }
            Ok(())
        });
        if ready.is_err() {
            continue;
        }
        let conn = Arc::new(Conn {
            id: next_id,
            client,
            server,
            cut: AtomicU8::new(CUT_NONE),
            failed: AtomicBool::new(false),
            pumps: AtomicU8::new(2),
        });
        lock(&shared.conns).push(conn.clone());
        for dir in [Dir::ClientToServer, Dir::ServerToClient] {
            let (shared2, conn2) = (shared.clone(), conn.clone());
            let name = match dir {
                Dir::ClientToServer => "fproxy-c2s",
                Dir::ServerToClient => "fproxy-s2c",
            };
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    pump(&shared2, &conn2, dir);
                    if conn2.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
                        lock(&shared2.conns).retain(|c| c.id != conn2.id);
                    }
                })
                .expect("spawn proxy pump");
            lock(&shared.threads).push(spawned);
        }
    }
}

/// Follows frame boundaries of one direction and applies corruptions/injections.
#[derive(Default)]
struct FrameCursor {
    /// Offset inside the current frame.
    pos: usize,
    head: [u8; HEADER_LEN],
    /// Length of the current frame once its header is known.
    frame_len: usize,
    payload_len: usize,
}

impl FrameCursor {
    /// Copies `input` to `out`, applying the pending corruption / injection of `ctl`.
    fn process(&mut self, input: &[u8], ctl: &DirControl, shared: &Shared, out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if self.pos == 0 {
                let mut inject = lock(&ctl.inject);
                if !inject.is_empty() {
                    out.append(&mut inject);
                    shared.injected.fetch_add(1, Ordering::SeqCst);
                }
            }
            let start = out.len();
            if self.pos < HEADER_LEN {
                let take = (HEADER_LEN - self.pos).min(input.len() - i);
                self.head[self.pos..self.pos + take].copy_from_slice(&input[i..i + take]);
                out.extend_from_slice(&input[i..i + take]);
                let mut corrupt = lock(&ctl.corrupt);
                if let Some(Target::Header { offset, xor }) = *corrupt {
                    if (self.pos..self.pos + take).contains(&offset) {
                        out[start + offset - self.pos] ^= xor;
                        *corrupt = None;
                        shared.corrupted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                self.pos += take;
                i += take;
                if self.pos == HEADER_LEN {
                    let len = u32::from_le_bytes(self.head[24..28].try_into().unwrap()) as usize;
                    self.payload_len = len;
                    self.frame_len = HEADER_LEN + len.div_ceil(16) * 16;
                }
            } else {
                let take = (self.frame_len - self.pos).min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                if self.pos == HEADER_LEN && self.payload_len > 0 {
                    let mut corrupt = lock(&ctl.corrupt);
                    if *corrupt == Some(Target::Payload) {
                        out[start] ^= 0xff;
                        *corrupt = None;
                        shared.corrupted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                self.pos += take;
                i += take;
            }
            if self.pos >= HEADER_LEN && self.pos == self.frame_len {
                self.pos = 0;
            }
        }
    }
}

/// Why a pump stopped.
enum End {
    /// Stop or cut requested, or the other pump failed.
    Stopped,
    /// This side hit an error: reset the other side.
    Failed,
    /// Clean EOF passed on as a FIN.
    Eof,
}

/// Forwards one direction of `conn` until EOF, an error, a cut or the proxy stops.
fn pump(shared: &Shared, conn: &Conn, dir: Dir) {
    let (src, dst) = match dir {
        Dir::ClientToServer => (&conn.client, &conn.server),
        Dir::ServerToClient => (&conn.server, &conn.client),
    };
    let ctl = &shared.dirs[dir.index()];
    let mut cursor = FrameCursor::default();
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut eof = false;
    let end = loop {
        if shared.stop.load(Ordering::SeqCst)
            || conn.cut.load(Ordering::SeqCst) != CUT_NONE
            || conn.failed.load(Ordering::SeqCst)
        {
            break End::Stopped;
        }
        let blackhole = shared.blackhole.load(Ordering::SeqCst);
        let stall = shared.stall.load(Ordering::SeqCst);
        // Read, waiting at most until the next queued chunk is due.
        let now = Instant::now();
        let wait = match queue.front() {
            Some((due, _)) if !stall && !blackhole => due
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), POLL),
            _ => POLL,
        };
        if eof {
            std::thread::sleep(wait);
        } else {
            let _ = src.set_read_timeout(Some(wait));
            match (&*src).read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    let delay = Duration::from_micros(shared.delay_us.load(Ordering::SeqCst));
                    queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break End::Failed,
            }
        }
        // Forward what is due.
        if shared.blackhole.load(Ordering::SeqCst) {
            let mut sink = Vec::new();
            for (_, chunk) in queue.drain(..) {
                shared
                    .blackholed_bytes
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                // Keep following frame boundaries (corruptions/injections stay pending).
                cursor.process(&chunk, &DirControl::default(), shared, &mut sink);
                sink.clear();
            }
            continue;
        }
        if shared.stall.load(Ordering::SeqCst) {
            continue;
        }
        let mut out = Vec::new();
        while queue.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            let (_, chunk) = queue.pop_front().unwrap();
            cursor.process(&chunk, ctl, shared, &mut out);
        }
        if !out.is_empty() && !write_out(shared, conn, dst, &out) {
            break End::Failed;
        }
        if eof && queue.is_empty() {
            break End::Eof;
        }
    };
    match end {
        End::Eof => {
            let _ = dst.shutdown(Shutdown::Write);
        }
        End::Failed => {
            conn.failed.store(true, Ordering::SeqCst);
            conn.set_rst();
        }
        End::Stopped => {}
    }
}

/// Writes `data` to `dst` (byte by byte when splitting); false on a socket error.
fn write_out(shared: &Shared, conn: &Conn, dst: &TcpStream, data: &[u8]) -> bool {
    let split = shared.split.load(Ordering::SeqCst);
    let mut off = 0;
    while off < data.len() {
        if shared.stop.load(Ordering::SeqCst) || conn.cut.load(Ordering::SeqCst) != CUT_NONE {
            return true;
        }
        let end = if split { off + 1 } else { data.len() };
        match (&*dst).write(&data[off..end]) {
            Ok(0) => return false,
            Ok(n) => {
                off += n;
                if split {
                    shared.split_writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}
