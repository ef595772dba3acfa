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

mod server;

use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, ProtocolError,
    DEFAULT_MAX_FRAME, HEADER_LEN,
};
pub use server::*;

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
