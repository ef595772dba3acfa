//! The properties the fuzz targets check, shared with `tests/fuzz_props.rs`.
//!
//! The fuzz targets (`fuzz_targets/*.rs`) are one-line wrappers around
//! [`check_decoder`] and [`FuzzServer::check_connection`]; the integration test
//! includes this file with `#[path]` and runs the same checks under proptest.
//!
//! - [`check_decoder`]: the frame decoder, driven the way a connection reader
//!   drives it, on arbitrary bytes (raw mode) or on a stream of well-formed frames
//!   with one optional flipped byte or truncation (structured mode). The same
//!   stream delivered in arbitrary pieces must yield the same frames and the same
//!   final state; frames that were encoded must come back exactly; damage to a
//!   header (length field included) must be detected from the header alone,
//!   damage to a payload whenever its frame carries a data digest; a frame
//!   without a data digest is refused, from its header, when one is required.
//! - [`FuzzServer::check_connection`]: arbitrary bytes (raw mode) or a script of
//!   valid, invalid and corrupted frames (structured mode) written to a live
//!   server connection, then a half-close. The server must close the connection,
//!   send only well-formed frames, reply only to requests it could have decoded
//!   (never more replies than requests per call id, echo replies carry their own
//!   request's content), keep serving a bystander connection while the hostile
//!   one is open, accept and serve a fresh connection afterwards, and release
//!   the hostile connection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringrpc::protocol::header::seal_header;
use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, ProtocolError,
    DEFAULT_MAX_FRAME, HEADER_LEN,
};
use ringrpc::{Method, Request, Runtime, Server, ServerBuilder, ServerHandle, ServerStats};

// ---------------------------------------------------------------------------
// Input cursor

/// Reads fuzz input front to back; reads past the end yield zeros / empty slices.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A short string made from the input (lossy UTF-8).
    pub fn text(&mut self, max: usize) -> String {
        let n = usize::from(self.u8()) % (max + 1);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A tiny deterministic PRNG (xorshift32) for split points.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

// ---------------------------------------------------------------------------
// Decoder property

/// How decoding a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte belonged to a complete frame.
    Clean,
    /// `buffered` bytes of a frame that needs `total` bytes are waiting.
    Partial { buffered: usize, total: usize },
    /// The decoder reported a (connection-fatal) protocol error.
    Error(ProtocolError),
}

/// Frames decoded from a stream, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decodedstream {
    pub frames: Vec<(FrameHeader, Vec<u8>)>,
    pub end: End,
}

/// What stopped one pass of the reader loop.
enum Stop {
    Incomplete(usize),
    Error(ProtocolError),
}

/// One reader pass over `buf` (the unconsumed bytes after a read): decodes
/// frames until the decoder wants more bytes or fails, checking every answer.
/// Returns the bytes consumed and why it stopped.
fn reader_pass(
    buf: &[u8],
    opts: DecodeOptions,
    frames: &mut Vec<(FrameHeader, Vec<u8>)>,
) -> (usize, Stop) {
    let max_frame = opts.max_frame;
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        match decode_frame(rest, opts) {
            Ok(Decoded::Frame(h)) => {
                let total = h.frame_len();
                assert!(
                    total <= rest.len(),
                    "frame of {total} from {} bytes",
                    rest.len()
                );
                assert!(total <= max_frame, "frame of {total} over max {max_frame}");
                assert_eq!(total % 16, 0, "frames are 16-byte multiples");
                assert!(HEADER_LEN + h.len as usize <= total);
                assert!(h.has_data_digest() || !opts.require_data_digest);
                let payload = &rest[HEADER_LEN..HEADER_LEN + h.len as usize];
                // Re-encoding the decoded frame gives a frame that decodes the same
                // and has the same header, digests included (only the padding is
                // neither covered nor interpreted).
                let mut again = Vec::new();
                encode_frame(&mut again, h, payload, max_frame).expect("re-encode a decoded frame");
                assert_eq!(again.len(), total);
                assert_eq!(decode_frame(&again, opts), Ok(Decoded::Frame(h)));
                assert_eq!(again[..HEADER_LEN], rest[..HEADER_LEN]);
                frames.push((h, payload.to_vec()));
                pos += total;
            }
            Ok(Decoded::Incomplete { total }) => {
                assert!(
                    total > rest.len(),
                    "incomplete needs {total}, has {}",
                    rest.len()
                );
                assert!(total >= HEADER_LEN);
                assert_eq!(total % 16, 0);
                if rest.len() >= HEADER_LEN {
                    assert!(
                        total <= max_frame,
                        "incomplete {total} over max {max_frame}"
                    );
                }
                return (pos, Stop::Incomplete(total));
            }
            Err(e) => {
                if rest.len() < HEADER_LEN && ringrpc::protocol::check_prefix(rest).is_ok() {
                    panic!("error {e:?} before a whole header ({} bytes)", rest.len());
                }
                return (pos, Stop::Error(e));
            }
        }
    }
}

/// Decodes `stream` delivered in one read.
pub fn decode_whole(stream: &[u8], opts: DecodeOptions) -> Decodedstream {
    let mut frames = Vec::new();
    let (used, stop) = reader_pass(stream, opts, &mut frames);
    let end = match stop {
        Stop::Error(e) => End::Error(e),
        Stop::Incomplete(_) if used == stream.len() => End::Clean,
        Stop::Incomplete(total) => End::Partial {
            buffered: stream.len() - used,
            total,
        },
    };
    Decodedstream { frames, end }
}

/// Decodes `stream` delivered in pieces whose sizes come from `seed`, keeping the
/// unconsumed bytes between reads like a connection's receive buffer.
pub fn decode_split(stream: &[u8], opts: DecodeOptions, seed: u32) -> Decodedstream {
    const MAX_PIECE: [u32; 6] = [1, 3, 16, 33, 512, 4096];
    let mut rng = XorShift(seed | 1);
    let max_piece = MAX_PIECE[(seed >> 24) as usize % MAX_PIECE.len()];
    let (mut buffer, mut frames, mut delivered) = (Vec::new(), Vec::new(), 0);
    let mut pending_total = HEADER_LEN;
    while delivered < stream.len() {
        let piece = (1 + rng.next() % max_piece) as usize;
        let next = (delivered + piece).min(stream.len());
        buffer.extend_from_slice(&stream[delivered..next]);
        delivered = next;
        let (used, stop) = reader_pass(&buffer, opts, &mut frames);
        buffer.drain(..used);
        match stop {
            Stop::Error(e) => {
                return Decodedstream {
                    frames,
                    end: End::Error(e),
                }
            }
            Stop::Incomplete(total) => pending_total = total,
        }
    }
    let end = if buffer.is_empty() {
        End::Clean
    } else {
        End::Partial {
            buffered: buffer.len(),
            total: pending_total,
        }
    };
    Decodedstream { frames, end }
}

/// One frame of a structured decoder input.
#[derive(Debug)]
struct Planned {
    header: FrameHeader,
    payload: Vec<u8>,
    start: usize,
    end: usize,
}

/// Damage applied to a structured stream after encoding.
#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    Flip { pos: usize, mask: u8 },
    Truncate { len: usize },
}

fn kind_from(byte: u8) -> FrameKind {
    match byte % 6 {
        0 => FrameKind::Request,
        1 => FrameKind::Response,
        2 => FrameKind::Error,
        3 => FrameKind::Ping,
        4 => FrameKind::Pong,
        _ => FrameKind::GoAway,
    }
}

/// Encodes up to 64 frames described by `input`.
fn plan_frames(input: &mut Input<'_>, max_frame: usize) -> (Vec<u8>, Vec<Planned>) {
    let (mut stream, mut frames) = (Vec::new(), Vec::new());
    while !input.is_empty() && frames.len() < 64 {
        let op = input.u8();
        let mut header = FrameHeader::new(kind_from(op));
        header.call_id = input.u64();
        header.method = input.u32();
        header.budget_us = input.u32();
        // Only four flag bits go on the wire; the data digest flag is one of them.
        header.flags = input.u8() & 0x0f;
        let len = match (op >> 3) & 3 {
            0 => 0,
            1 => usize::from(input.u8()),
            2 => usize::from(input.u16()) % 2048,
            _ => usize::from(input.u16()),
        };
        let payload = input.bytes(len).to_vec();
        let start = stream.len();
        match encode_frame(&mut stream, header, &payload, max_frame) {
            Ok(()) => {
                header.len = payload.len() as u32;
                frames.push(Planned {
                    header,
                    payload,
                    start,
                    end: stream.len(),
                });
            }
            Err(e) => {
                assert!(
                    matches!(e, ProtocolError::FrameTooLarge { .. }),
                    "encode failed: {e:?}"
                );
                assert_eq!(
                    stream.len(),
                    start,
                    "a failed encode leaves the buffer as it was"
                );
            }
        }
    }
    (stream, frames)
}

/// The decoder property; `data` is arbitrary fuzz input.
///
/// Layout: `mode: u8 | split seed: u32 | rest`. `mode` bit 0 picks raw (rest is
/// the stream) or structured (rest describes frames and damage); bits 1..3 pick
/// the maximum frame size; bit 3 requires the data digest.
pub fn check_decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let max_frame = [HEADER_LEN, 256, 64 << 10, DEFAULT_MAX_FRAME][usize::from((mode >> 1) & 3)];
    let opts = DecodeOptions {
        max_frame,
        require_data_digest: mode & 8 != 0,
    };
    let seed = input.u32();
    if mode & 1 == 0 {
        let stream = input.rest();
        let whole = decode_whole(stream, opts);
        let split = decode_split(stream, opts, seed);
        assert_eq!(whole, split, "split delivery changed the decoded frames");
        return;
    }

    let damage_kind = input.u8();
    let damage_at = input.u32() as usize;
    let mask = input.u8().max(1);
    let (mut stream, planned) = plan_frames(&mut input, max_frame);
    let expected: Vec<(FrameHeader, Vec<u8>)> = planned
        .iter()
        .map(|p| (p.header, p.payload.clone()))
        .collect();
    // The first frame refused for lacking a required data digest, if any; the
    // undamaged stream decodes up to it and ends there.
    let missing = planned
        .iter()
        .position(|p| opts.require_data_digest && !p.header.has_data_digest());
    let (intact, intact_end) = match missing {
        Some(m) => (m, End::Error(ProtocolError::MissingDataDigest)),
        None => (planned.len(), End::Clean),
    };
    let damage = match damage_kind % 3 {
        _ if stream.is_empty() => Damage::None,
        0 => Damage::None,
        1 => Damage::Flip {
            pos: damage_at % stream.len(),
            mask,
        },
        _ => Damage::Truncate {
            len: damage_at % (stream.len() + 1),
        },
    };
    match damage {
        Damage::None => {}
        Damage::Flip { pos, mask } => stream[pos] ^= mask,
        Damage::Truncate { len } => stream.truncate(len),
    }

    let whole = decode_whole(&stream, opts);
    let split = decode_split(&stream, opts, seed);
    assert_eq!(whole, split, "split delivery changed the decoded frames");

    match damage {
        Damage::None => {
            assert_eq!(whole.end, intact_end);
            assert_eq!(
                whole.frames,
                expected[..intact],
                "encoded frames come back exactly"
            );
        }
        Damage::Truncate { len } => {
            // A refused frame is refused as soon as its header is in.
            if let Some(m) = missing.filter(|&m| planned[m].start + HEADER_LEN <= len) {
                assert_eq!(whole.frames, expected[..m]);
                assert_eq!(whole.end, End::Error(ProtocolError::MissingDataDigest));
                return;
            }
            let complete = planned.iter().take_while(|p| p.end <= len).count();
            assert_eq!(whole.frames, expected[..complete]);
            let boundary = planned.get(complete).map_or(len, |p| p.start);
            if len == boundary {
                assert_eq!(whole.end, End::Clean);
            } else {
                assert!(matches!(whole.end, End::Partial { .. }), "{:?}", whole.end);
            }
        }
        Damage::Flip { pos, .. } => {
            let k = planned
                .iter()
                .position(|p| p.start <= pos && pos < p.end)
                .expect("flip lies in a frame");
            if missing.is_some_and(|m| m < k) {
                // The stream ends at a refused frame before the damage.
                assert_eq!(whole.frames, expected[..intact]);
                assert_eq!(whole.end, intact_end);
                return;
            }
            let hit = &planned[k];
            let offset = pos - hit.start;
            assert!(whole.frames.len() >= k, "frames before the damage decode");
            assert_eq!(whole.frames[..k], expected[..k]);
            if offset >= HEADER_LEN + hit.payload.len() {
                // Padding is neither covered by a digest nor interpreted.
                assert_eq!(whole.end, intact_end);
                assert_eq!(whole.frames, expected[..intact]);
            } else if offset < HEADER_LEN {
                // A burst of <= 8 bits anywhere in the header (the length field
                // included): the header digest (CRC-32) catches it from the
                // header alone; bytes 0..3 are reported as magic or version.
                assert_eq!(whole.frames.len(), k, "damaged header was accepted");
                if offset >= 3 {
                    assert_eq!(whole.end, End::Error(ProtocolError::BadHeaderDigest));
                } else {
                    assert!(matches!(whole.end, End::Error(_)), "{:?}", whole.end);
                }
            } else if missing == Some(k) {
                assert_eq!(whole.frames.len(), k);
                assert_eq!(whole.end, End::Error(ProtocolError::MissingDataDigest));
            } else if hit.header.has_data_digest() {
                // Payload damage under a data digest is always caught.
                assert_eq!(whole.frames.len(), k, "damaged payload was accepted");
                assert_eq!(whole.end, End::Error(ProtocolError::BadDataDigest));
            } else {
                // Without a data digest the damaged payload is delivered as is,
                // and the stream goes on undisturbed.
                assert_eq!(whole.frames.len(), intact);
                assert_eq!(whole.frames[k].0, expected[k].0);
                assert_ne!(whole.frames[k].1, expected[k].1);
                assert_eq!(whole.frames[k + 1..], expected[k + 1..intact]);
                assert_eq!(whole.end, intact_end);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Server property

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
