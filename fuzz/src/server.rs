//! The server property: [`FuzzServer::check_connection`] writes arbitrary
//! bytes or a script of valid, invalid and corrupted frames to a live server
//! connection and checks what the server does with them (see the crate docs).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringrpc::protocol::header::seal_header;
use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};
use ringrpc::{Method, Request, Runtime, Server, ServerBuilder, ServerHandle, ServerStats};

use super::{kind_from, Input};

/// A small message echoed by the server.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: u64,
    pub text: String,
}

/// One order line.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub tags: Vec<String>,
}

/// A typed request the validating handler checks field by field.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: u64,
    pub customer: String,
    pub items: Vec<Item>,
    pub note: Option<String>,
    pub priority: i8,
}

/// The validating handler's answer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub id: u64,
    pub lines: u32,
    pub total_qty: u64,
}

pub const ECHO: Method<Msg, Msg> = Method::new("Fuzz.echo");
pub const VALIDATE: Method<Order, Verdict> = Method::new("Fuzz.validate");
pub const ECHO_ASYNC: Method<Msg, Msg> = Method::new("Fuzz.echo_async");

/// The fuzz server's frame limit (small, so the fuzzer reaches it easily).
pub const SERVER_MAX_FRAME: usize = 1 << 20;
/// The fuzz server's receive chunk (the minimum, so chunk switching and
/// compaction happen with small inputs).
pub const SERVER_RECV_CHUNK: usize = 4096;
/// How long a hostile connection may take, end to end, before it counts as hung.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);

fn echo(req: &ArchivedMsg) -> Result<Msg, String> {
    Ok(Msg {
        id: req.id.to_native(),
        text: req.text.as_str().to_owned(),
    })
}

fn validate(order: &ArchivedOrder) -> Result<Verdict, String> {
    if order.customer.is_empty() {
        return Err("empty customer".into());
    }
    if order.items.is_empty() || order.items.len() > 100 {
        return Err(format!("{} lines", order.items.len()));
    }
    if !(-5..=5).contains(&order.priority) {
        return Err(format!("priority {}", order.priority));
    }
    let mut total_qty = 0u64;
    for item in order.items.iter() {
        let qty = item.qty.to_native();
        if qty == 0 || item.sku.is_empty() || item.sku.len() > 64 {
            return Err(format!("bad line {:?} x{qty}", item.sku.as_str()));
        }
        if item.tags.iter().any(|t| !t.is_ascii()) {
            return Err("non-ASCII tag".into());
        }
        total_qty += u64::from(qty);
    }
    if let Some(note) = order.note.as_ref() {
        if note.len() > 256 {
            return Err("note too long".into());
        }
    }
    Ok(Verdict {
        id: order.id.to_native(),
        lines: order.items.len() as u32,
        total_qty,
    })
}

/// The fuzz server's handlers and limits.
pub fn server_builder() -> ServerBuilder {
    Server::builder()
        .insecure_plaintext()
        .register(ECHO, echo)
        .expect("register echo")
        .register(VALIDATE, validate)
        .expect("register validate")
        .register_async(ECHO_ASYNC, |req: Request<Msg>| async move {
            if req.text.starts_with("sleep") {
                ringrpc::runtime::io::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, String>(Msg {
                id: req.id.to_native(),
                text: req.text.as_str().to_owned(),
            })
        })
        .expect("register echo_async")
        .max_frame(SERVER_MAX_FRAME)
        .recv_chunk(SERVER_RECV_CHUNK)
}

/// What the server could have decoded from what a hostile connection sent.
#[derive(Default)]
struct Sent {
    /// call id → the requests carrying it: (method, payload).
    requests: HashMap<u64, Vec<(u32, Vec<u8>)>>,
    /// ping id → count.
    pings: HashMap<u64, usize>,
}

impl Sent {
    /// Decodes `stream` exactly as the server does, stopping where it would close.
    fn from_stream(stream: &[u8]) -> Self {
        let mut sent = Self::default();
        let mut pos = 0;
        let opts = DecodeOptions::new(SERVER_MAX_FRAME);
        while let Ok(Decoded::Frame(h)) = decode_frame(&stream[pos..], opts) {
            let payload = &stream[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
            match h.kind {
                FrameKind::Request => sent
                    .requests
                    .entry(h.call_id)
                    .or_default()
                    .push((h.method, payload.to_vec())),
                FrameKind::Ping => *sent.pings.entry(h.call_id).or_default() += 1,
                // A cancel may stop an async handler: at most fewer replies.
                FrameKind::Pong | FrameKind::GoAway | FrameKind::Cancel => {}
                // A client may not send these: the server closes here.
                FrameKind::Response | FrameKind::Error => break,
            }
            pos += h.frame_len();
        }
        sent
    }
}

/// Decodes an rkyv archive from unaligned bytes.
fn archived_msg(bytes: &[u8]) -> Option<Msg> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Msg, rkyv::rancor::Error>(&aligned).ok()
}

fn archived_verdict(bytes: &[u8]) -> Option<Verdict> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Verdict, rkyv::rancor::Error>(&aligned).ok()
}

fn archived_order(bytes: &[u8]) -> Option<Order> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Order, rkyv::rancor::Error>(&aligned).ok()
}

/// Checks the server's replies on a hostile connection against what it was sent.
fn check_replies(sent: &Sent, replies: &[u8]) {
    let mut answered: HashMap<u64, usize> = HashMap::new();
    let mut pongs: HashMap<u64, usize> = HashMap::new();
    let mut pos = 0;
    loop {
        // The server sends the data digest by default: require it.
        let opts = DecodeOptions {
            require_data_digest: true,
            ..DecodeOptions::default()
        };
        let h = match decode_frame(&replies[pos..], opts) {
            Ok(Decoded::Frame(h)) => h,
            // A close may cut the last write short; anything else is a bug.
            Ok(Decoded::Incomplete { .. }) => return,
            Err(e) => panic!("server sent a malformed frame at byte {pos}: {e:?}"),
        };
        let payload = &replies[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
        match h.kind {
            FrameKind::Response | FrameKind::Error => {
                let requests = sent.requests.get(&h.call_id).unwrap_or_else(|| {
                    panic!("{:?} for call {:#x} that was never sent", h.kind, h.call_id)
                });
                let n = answered.entry(h.call_id).or_default();
                *n += 1;
                assert!(
                    *n <= requests.len(),
                    "call {:#x}: {n} replies to {} requests",
                    h.call_id,
                    requests.len()
                );
                if h.kind == FrameKind::Response && requests.len() == 1 {
                    check_response(h.call_id, &requests[0], payload);
                }
                if h.kind == FrameKind::Error {
                    assert!(payload.len() <= 4096, "error text over 4 KiB");
                }
            }
            FrameKind::Pong => {
                let n = pongs.entry(h.call_id).or_default();
                *n += 1;
                assert!(
                    *n <= sent.pings.get(&h.call_id).copied().unwrap_or(0),
                    "pong {:#x} without a ping",
                    h.call_id
                );
            }
            FrameKind::GoAway => {}
            kind @ (FrameKind::Request | FrameKind::Ping | FrameKind::Cancel) => {
                panic!("server sent a {kind:?} frame")
            }
        }
        pos += h.frame_len();
    }
}

/// A response to a unique call id must answer that very request.
fn check_response(call_id: u64, request: &(u32, Vec<u8>), payload: &[u8]) {
    let (method, body) = request;
    if *method == ECHO.id() || *method == ECHO_ASYNC.id() {
        let req = archived_msg(body).expect("a request the server answered is a valid Msg");
        let resp = archived_msg(payload).expect("echo response is a valid Msg");
        assert_eq!(resp, req, "call {call_id:#x}: echo of another request");
    } else if *method == VALIDATE.id() {
        let req = archived_order(body).expect("a request the server answered is a valid Order");
        let resp = archived_verdict(payload).expect("validate response is a valid Verdict");
        assert_eq!(
            resp.id, req.id,
            "call {call_id:#x}: verdict for another order"
        );
        assert_eq!(resp.lines as usize, req.items.len());
    } else {
        panic!("call {call_id:#x}: response to unknown method {method:#x}");
    }
}

/// The bytes a hostile connection sends, as separate writes.
pub struct Script {
    pub writes: Vec<Vec<u8>>,
}

impl Script {
    /// Layout: `mode: u8 | rest`. Even `mode`: the rest is written as is, in
    /// one or two writes. Odd `mode`: the rest is a list of ops, each appending
    /// a frame (valid request, request with arbitrary payload, control frame,
    /// forbidden frame) or raw bytes, or damaging what came before, and each
    /// optionally ending the current write.
    pub fn from_input(data: &[u8]) -> Self {
        let mut input = Input::new(data);
        let mode = input.u8();
        if mode & 1 == 0 {
            let rest = input.rest();
            let cut = if mode & 2 == 0 || rest.is_empty() {
                rest.len()
            } else {
                usize::from(mode >> 2) * rest.len() / 64
            };
            let writes = [&rest[..cut], &rest[cut..]]
                .into_iter()
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            return Self { writes };
        }

        let (mut writes, mut current) = (Vec::new(), Vec::<u8>::new());
        let mut ops = 0;
        while !input.is_empty() && ops < 200 {
            ops += 1;
            let op = input.u8();
            match op % 8 {
                0 => {
                    let n = usize::from(input.u8());
                    current.extend_from_slice(input.bytes(n));
                }
                1 | 2 => {
                    let method = if op % 8 == 1 {
                        ECHO.id()
                    } else {
                        ECHO_ASYNC.id()
                    };
                    let msg = Msg {
                        id: input.u64(),
                        text: input.text(255),
                    };
                    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&msg).expect("serialise");
                    push_request(&mut current, &mut input, method, &payload);
                }
                3 => {
                    let order = order_from(&mut input);
                    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&order).expect("serialise");
                    push_request(&mut current, &mut input, VALIDATE.id(), &payload);
                }
                4 => {
                    // A registered (or any) method with an arbitrary payload: rkyv
                    // validation must reject it cleanly.
                    let method = match input.u8() % 4 {
                        0 => ECHO.id(),
                        1 => ECHO_ASYNC.id(),
                        2 => VALIDATE.id(),
                        _ => input.u32(),
                    };
                    let n = usize::from(input.u16() % 1024);
                    let payload = input.bytes(n).to_vec();
                    push_request(&mut current, &mut input, method, &payload);
                }
                5 => {
                    let kind = input.u8();
                    let mut header =
                        FrameHeader::new(kind_from(kind)).with_data_digest(kind < 0x80);
                    header.call_id = input.u64();
                    header.method = input.u32();
                    let n = usize::from(input.u8());
                    let payload = input.bytes(n).to_vec();
                    append_frame(&mut current, header, &payload);
                }
                6 => {
                    // Damage: flip a byte, or drop the tail of the current write.
                    if !current.is_empty() {
                        let at = usize::from(input.u16()) % current.len();
                        match input.u8() {
                            0 => current.truncate(at),
                            mask => current[at] ^= mask,
                        }
                    }
                }
                _ => {
                    // A header claiming a large payload, then only part of it.
                    let mut header = FrameHeader::new(FrameKind::Request);
                    header.call_id = input.u64();
                    header.method = ECHO.id();
                    let claimed = input.u32() as usize % (SERVER_MAX_FRAME * 2);
                    let mut frame = Vec::new();
                    let payload = vec![0u8; claimed.min(64 << 10)];
                    let limit = SERVER_MAX_FRAME * 4;
                    if encode_frame(&mut frame, header, &payload, limit).is_ok() {
                        frame[24..28].copy_from_slice(&(claimed as u32).to_le_bytes());
                        let head: &mut [u8; HEADER_LEN] =
                            (&mut frame[..HEADER_LEN]).try_into().expect("header");
                        seal_header(head);
                        let keep = usize::from(input.u16()) % frame.len();
                        current.extend_from_slice(&frame[..keep]);
                    }
                }
            }
            if input.u8() & 1 == 1 && !current.is_empty() {
                writes.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            writes.push(current);
        }
        Self { writes }
    }

    /// All bytes, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

fn order_from(input: &mut Input<'_>) -> Order {
    let lines = usize::from(input.u8() % 5);
    Order {
        id: input.u64(),
        customer: input.text(16),
        items: (0..lines)
            .map(|_| Item {
                sku: input.text(8),
                qty: u32::from(input.u8()),
                tags: (0..input.u8() % 3).map(|_| input.text(4)).collect(),
            })
            .collect(),
        note: (input.u8() & 1 == 1).then(|| input.text(32)),
        priority: input.u8() as i8,
    }
}

/// Appends a request frame with a call id and budget taken from `input`.
fn push_request(out: &mut Vec<u8>, input: &mut Input<'_>, method: u32, payload: &[u8]) {
    let mut header = FrameHeader::new(FrameKind::Request);
    header.call_id = u64::from(input.u8() % 16);
    header.method = method;
    header.budget_us = match input.u8() % 4 {
        0 => 0,
        1 => 1,
        2 => 1_000_000,
        _ => input.u32(),
    };
    append_frame(out, header, payload);
}

/// Appends an encoded frame to a write that may hold raw bytes (`encode_frame`
/// wants a 16-byte aligned buffer length, so encode separately).
fn append_frame(out: &mut Vec<u8>, header: FrameHeader, payload: &[u8]) {
    let mut frame = Vec::new();
    if encode_frame(&mut frame, header, payload, DEFAULT_MAX_FRAME).is_ok() {
        out.extend_from_slice(&frame);
    }
}

/// A valid echo request frame.
pub fn echo_frame(call_id: u64, msg: &Msg) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(msg).expect("serialise");
    let mut header = FrameHeader::new(FrameKind::Request);
    header.call_id = call_id;
    header.method = ECHO.id();
    let mut frame = Vec::new();
    encode_frame(&mut frame, header, &payload, DEFAULT_MAX_FRAME).expect("encode");
    frame
}

/// Reads one whole frame from `stream` (blocking, with the stream's timeouts).
fn read_frame(stream: &mut TcpStream) -> std::io::Result<(FrameHeader, Vec<u8>)> {
    let mut frame = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut frame)?;
    let head: &[u8; HEADER_LEN] = frame[..].try_into().expect("header size");
    let header = FrameHeader::decode(head).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    frame.resize(header.frame_len(), 0);
    stream.read_exact(&mut frame[HEADER_LEN..])?;
    match decode_frame(&frame, DecodeOptions::default()) {
        Ok(Decoded::Frame(h)) => Ok((h, frame[HEADER_LEN..HEADER_LEN + h.len as usize].to_vec())),
        other => Err(std::io::Error::other(format!("bad reply frame: {other:?}"))),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the fuzz server");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(CONN_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(CONN_TIMEOUT))
        .expect("timeout");
    stream
}

/// One echo call on `stream`; panics unless the exact echo comes back.
fn echo_call(stream: &mut TcpStream, id: u64, who: &str) {
    let msg = Msg {
        id,
        text: format!("{who}-{id}"),
    };
    stream
        .write_all(&echo_frame(id, &msg))
        .unwrap_or_else(|e| panic!("{who}: cannot send a call: {e}"));
    let (h, payload) = read_frame(stream).unwrap_or_else(|e| panic!("{who}: no reply: {e}"));
    assert_eq!(h.kind, FrameKind::Response, "{who}: {h:?}");
    assert_eq!(h.call_id, id, "{who}: reply for another call");
    assert_eq!(archived_msg(&payload), Some(msg), "{who}: wrong echo");
}

/// A server on its own 1-core runtime plus a long-lived bystander connection.
pub struct FuzzServer {
    // Dropped before `rt`: the server is aborted while its core still runs.
    handle: ServerHandle,
    addr: SocketAddr,
    bystander: Mutex<(TcpStream, u64)>,
    rt: Runtime,
}

impl FuzzServer {
    pub fn start() -> Self {
        let rt = Runtime::builder()
            .cores(1)
            .pin(false)
            .name("fuzz-server")
            .build()
            .expect("server runtime");
        let handle = server_builder()
            .serve(&rt, "127.0.0.1:0".parse().expect("addr"))
            .expect("serve");
        let addr = handle.local_addr();
        let mut bystander = connect(addr);
        echo_call(&mut bystander, 1, "bystander");
        Self {
            handle,
            addr,
            bystander: Mutex::new((bystander, 1)),
            rt,
        }
    }

    /// This thread's instance, started on first use and never stopped (fuzz
    /// targets run every input on one thread, against one server).
    pub fn shared() -> &'static Self {
        thread_local! {
            static SERVER: &'static FuzzServer = Box::leak(Box::new(FuzzServer::start()));
        }
        SERVER.with(|s| *s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> ServerStats {
        self.handle.stats()
    }

    fn bystander_call(&self) {
        let mut guard = self.bystander.lock().unwrap_or_else(|e| e.into_inner());
        let (stream, id) = &mut *guard;
        *id += 1;
        echo_call(stream, *id, "bystander");
    }

    /// The server property for one fuzz input (see the module docs).
    pub fn check_connection(&self, data: &[u8]) {
        let baseline = self.stats().open_connections;
        let script = Script::from_input(data);
        let mut hostile = connect(self.addr);
        let reader = hostile.try_clone().expect("clone stream");
        let replies = std::thread::scope(|scope| {
            let collect = scope.spawn(move || read_to_close(reader));
            let mid = script.writes.len() / 2;
            for (i, write) in script.writes.iter().enumerate() {
                if i == mid {
                    self.bystander_call();
                }
                match hostile.write_all(write) {
                    Ok(()) => {}
                    // The server closed the connection (a protocol error): fine.
                    Err(e) if is_closed(&e) => break,
                    Err(e) => panic!("writing to the server failed: {e}"),
                }
            }
            self.bystander_call();
            let _ = hostile.shutdown(Shutdown::Write);
            collect.join().expect("reader thread")
        });
        let replies = replies.unwrap_or_else(|e| {
            panic!("server did not close a half-closed hostile connection: {e}")
        });
        check_replies(&Sent::from_stream(&script.bytes()), &replies);
        drop(hostile);

        // A fresh connection is accepted and served.
        let mut fresh = connect(self.addr);
        echo_call(&mut fresh, 7, "fresh");
        drop(fresh);

        // Both connections are released (the bystander and any other stay).
        let start = Instant::now();
        while self.stats().open_connections != baseline {
            assert!(
                start.elapsed() < CONN_TIMEOUT,
                "server holds {} connections after the hostile one closed",
                self.stats().open_connections
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Reads until the server closes the connection (EOF or reset); errors if it
/// keeps it open past [`CONN_TIMEOUT`].
fn read_to_close(mut stream: TcpStream) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + CONN_TIMEOUT;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if is_closed(&e) => return Ok(out),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Err(ErrorKind::TimedOut.into());
        }
    }
}
