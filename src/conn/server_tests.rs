//! Deterministic tests of [`ServerCore`]: a fake clock (a base `Instant`
//! moved by hand, which also counts how often the core reads it), requests
//! built in memory and a tiny in-test router (shared with `link_tests`,
//! which joins a client core to a server core).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{CallCtx, Clock, Incoming, ServerCore, ServerCoreConfig};
use crate::message::serialize_into;
use crate::metrics::CoreMetrics;
use crate::protocol::{
    begin_frame, decode_frame, encode_frame, finish_frame, DecodeOptions, Decoded, ErrorCode,
    FrameHeader, FrameKind, ProtocolError, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use crate::runtime::buf::RecvBuf;

pub(super) const METHOD: u32 = 0x5eed;
pub(super) const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
pub(super) const SECOND: Duration = Duration::from_secs(1);

/// A hand-moved clock shared by the test and the core; counts the core's reads.
#[derive(Clone)]
pub(super) struct FakeClock {
    now: Rc<Cell<Instant>>,
    reads: Rc<Cell<usize>>,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.reads.set(self.reads.get() + 1);
        self.now.get()
    }
}

pub(super) fn config(max_in_flight: usize) -> ServerCoreConfig {
    ServerCoreConfig {
        max_frame: DEFAULT_MAX_FRAME,
        data_digest: true,
        require_data_digest: false,
        max_in_flight,
        max_pending_out: 1 << 20,
        timing: false,
    }
}

/// What the in-test router does with a request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Handle {
    /// Answers at once with the request's value + 1000.
    Echo,
    /// An "async" handler: counted in, answered later by [`Server::finish`].
    Defer,
    /// Answers like `Echo` after running this long (the clock moves).
    Slow(Duration),
}

/// A server core, its fake clock, its receive buffer and what its router did.
pub(super) struct Server {
    pub(super) core: ServerCore<FakeClock>,
    pub(super) metrics: Rc<CoreMetrics>,
    pub(super) clock: FakeClock,
    pub(super) t0: Instant,
    pub(super) rx: RecvBuf,
    /// Requests whose handler ran, in order: (call id, value).
    pub(super) ran: Vec<(u64, u64)>,
    /// Async handlers running: their context and request value.
    pub(super) deferred: Vec<(CallCtx, u64)>,
}

impl Server {
    pub(super) fn new(cfg: ServerCoreConfig) -> Self {
        let t0 = Instant::now();
        let clock = FakeClock {
            now: Rc::new(Cell::new(t0)),
            reads: Rc::default(),
        };
        let metrics = Rc::new(CoreMetrics::default());
        Self {
            core: ServerCore::new(t0, cfg, metrics.clone(), clock.clone()),
            metrics,
            clock,
            t0,
            rx: RecvBuf::new(4096),
            ran: Vec::new(),
            deferred: Vec::new(),
        }
    }

    pub(super) fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    pub(super) fn now(&self) -> Instant {
        self.clock.now.get()
    }

    pub(super) fn set_time(&self, d: Duration) {
        self.clock.now.set(self.at(d));
    }

    pub(super) fn reads(&self) -> usize {
        self.clock.reads.get()
    }

    /// Delivers `bytes` as one receive at the current time; the router
    /// handles each request as `handle` says for its value. Returns the
    /// number of complete frames.
    pub(super) fn deliver_with(
        &mut self,
        bytes: &[u8],
        handle: impl Fn(u64) -> Handle,
    ) -> Result<usize, ProtocolError> {
        self.rx.append(bytes);
        self.core.received(self.now(), bytes.len());
        let mut frames = 0;
        loop {
            match self.core.handle_next(&mut self.rx)? {
                Incoming::Request(req) => {
                    assert_eq!(req.ctx.method, METHOD);
                    let value = value_of(req.payload(&self.rx));
                    self.ran.push((req.ctx.call_id, value));
                    match handle(value) {
                        Handle::Echo => self.core.push_response(&req.ctx, &(value + 1000)),
                        Handle::Slow(d) => {
                            self.clock.now.set(self.now() + d);
                            self.core.push_response(&req.ctx, &(value + 1000));
                        }
                        Handle::Defer => {
                            if self.core.try_start_async(req.ctx.call_id) {
                                self.deferred.push((req.ctx, value));
                            }
                        }
                    }
                    self.rx.consume(req.frame_len());
                }
                Incoming::Handled(_) => {}
                Incoming::Incomplete { .. } => return Ok(frames),
            }
            frames += 1;
        }
    }

    pub(super) fn deliver(&mut self, bytes: &[u8]) -> Result<usize, ProtocolError> {
        self.deliver_with(bytes, |_| Handle::Echo)
    }

    /// The async handler of `call_id` ends now: it answers, or, past its
    /// deadline, is cut off with `DeadlineExceeded` (as the driver's
    /// `io::until` does).
    pub(super) fn finish(&mut self, call_id: u64) {
        let i = self
            .deferred
            .iter()
            .position(|(ctx, _)| ctx.call_id == call_id)
            .expect("a running handler");
        let (ctx, value) = self.deferred.remove(i);
        if ctx.deadline.is_some_and(|d| self.now() >= d) {
            self.core
                .push_error(call_id, ErrorCode::DeadlineExceeded, &"deadline exceeded");
        } else {
            self.core.push_response(&ctx, &(value + 1000));
        }
        self.core.finish_async();
    }

    /// Every frame the core transmits, decoded; each send completes at once.
    pub(super) fn sent(&mut self) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(batch) = self.core.poll_transmit() {
            frames.extend(split(&batch.bytes));
            self.core.transmit_done(batch);
        }
        frames
    }
}

/// The frames of a transmitted batch: (header, whole frame bytes).
pub(super) fn split(batch: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < batch.len() {
        let Ok(Decoded::Frame(h)) = decode_frame(&batch[pos..], DecodeOptions::default()) else {
            panic!("a core sent a broken frame");
        };
        frames.push((h, batch[pos..pos + h.frame_len()].to_vec()));
        pos += h.frame_len();
    }
    frames
}

fn payload(frame: &[u8]) -> &[u8] {
    let h = match decode_frame(frame, DecodeOptions::default()) {
        Ok(Decoded::Frame(h)) => h,
        other => panic!("{other:?}"),
    };
    &frame[HEADER_LEN..HEADER_LEN + h.len as usize]
}

/// The `u64` archived in `payload`, read through a 16-byte aligned copy (the
/// bytes may sit anywhere in a test's `Vec<u8>`, which only aligns to 1).
pub(super) fn value_of(payload: &[u8]) -> u64 {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(payload);
    rkyv::access::<rkyv::Archived<u64>, rkyv::rancor::Error>(&aligned)
        .unwrap()
        .to_native()
}

/// A request frame as a client would send it.
pub(super) fn request(call_id: u64, value: u64, budget: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin_frame(&mut out);
    serialize_into(&value, &mut out).unwrap();
    let mut header = FrameHeader::new(FrameKind::Request);
    header.call_id = call_id;
    header.method = METHOD;
    header.budget_us = u32::try_from(budget.as_micros()).unwrap();
    finish_frame(&mut out, start, header, DEFAULT_MAX_FRAME).unwrap();
    out
}

/// A payload-less frame of `kind`.
fn control(kind: FrameKind, call_id: u64) -> Vec<u8> {
    let mut header = FrameHeader::new(kind);
    header.call_id = call_id;
    let mut out = Vec::new();
    encode_frame(&mut out, header, &[], DEFAULT_MAX_FRAME).unwrap();
    out
}

pub(super) fn kinds(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<FrameKind> {
    frames.iter().map(|(h, _)| h.kind).collect()
}

/// (call id, error code) of every error frame.
fn errors(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(u64, ErrorCode)> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == FrameKind::Error)
        .map(|(h, _)| (h.call_id, ErrorCode::from_u32(h.method)))
        .collect()
}

/// (call id, value) of every response frame.
fn responses(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == FrameKind::Response)
        .map(|(h, f)| (h.call_id, value_of(payload(f))))
        .collect()
}

#[test]
fn an_idle_connection_gives_back_its_send_buffers_but_a_busy_one_keeps_them() {
    let mut s = Server::new(config(512));
    let burst: Vec<u8> = (0..300)
        .flat_map(|i| request(i + 1, i, Duration::ZERO))
        .collect();
    s.deliver_with(
        &burst,
        |v| if v == 0 { Handle::Defer } else { Handle::Echo },
    )
    .unwrap();
    assert_eq!(s.sent().len(), 299);
    let grown = s.core.send_room();
    assert!(grown.0 > 4096 || grown.1 > 4096, "{grown:?}");
    s.core.release_idle_buffers();
    assert_eq!(s.core.send_room(), grown, "a handler still runs");
    s.finish(1);
    assert_eq!(s.sent().len(), 1);
    s.core.release_idle_buffers();
    assert_eq!(s.core.send_room(), (0, 0), "idle: both given back");
    s.deliver(&request(9, 9, Duration::ZERO)).unwrap();
    assert_eq!(responses(&s.sent()), [(9, 1009)], "and replies go on");
}

#[test]
fn a_ping_is_answered_with_a_pong_of_the_same_id() {
    let mut s = Server::new(config(16));
    assert_eq!(s.deliver(&control(FrameKind::Ping, 77)), Ok(1));
    let sent = s.sent();
    assert_eq!(kinds(&sent), [FrameKind::Pong]);
    assert_eq!(sent[0].0.call_id, 77);
    assert!(s.ran.is_empty());
    // Pongs and goaways from the client are taken in silence.
    s.deliver(&[control(FrameKind::Pong, 1), control(FrameKind::GoAway, 0)].concat())
        .unwrap();
    assert!(s.sent().is_empty());
}

#[test]
fn requests_are_answered_in_one_batch() {
    let mut s = Server::new(config(16));
    let stream: Vec<u8> = (0..5).flat_map(|i| request(i, i * 10, SECOND)).collect();
    // Cut into 7-byte receives: the same requests, answered once each.
    for piece in stream.chunks(7) {
        s.deliver(piece).unwrap();
    }
    let ran: Vec<u64> = s.ran.iter().map(|(_, v)| *v).collect();
    assert_eq!(ran, [0, 10, 20, 30, 40]);
    let batch = s.core.poll_transmit().expect("one batch");
    assert!(s.core.poll_transmit().is_none(), "one send at a time");
    let sent = split(&batch.bytes);
    s.core.transmit_done(batch);
    let expected: Vec<(u64, u64)> = (0..5).map(|i| (i, i * 10 + 1000)).collect();
    assert_eq!(responses(&sent), expected);
    assert_eq!(s.metrics.server.requests.get(), 5);
    assert_eq!(s.metrics.server.ok.get(), 5);
}

#[test]
fn a_request_whose_budget_is_spent_is_refused_without_running() {
    let mut s = Server::new(config(16));
    // One receive: a handler that runs 5 ms, then requests with 2 ms and 9 ms
    // of budget and one with none. The first check reads nothing (the receive
    // instant is fresh); the one after the slow handler reads the clock again.
    let stream = [
        request(1, 1, SECOND),
        request(2, 2, 2 * MS),
        request(3, 3, 9 * MS),
        request(4, 4, Duration::ZERO),
    ]
    .concat();
    s.set_time(10 * MS);
    s.deliver_with(&stream, |v| match v {
        1 => Handle::Slow(5 * MS),
        _ => Handle::Echo,
    })
    .unwrap();
    assert_eq!(
        s.ran.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 3, 4]
    );
    let sent = s.sent();
    assert_eq!(errors(&sent), [(2, ErrorCode::DeadlineExceeded)]);
    assert_eq!(
        responses(&sent),
        [(1, 1001), (3, 1003), (4, 1004)],
        "the others run"
    );
    assert_eq!(s.metrics.server.deadline_exceeded.get(), 1);
    // Request 2: one read (a handler ran since the receive); the error frame
    // reads once more, which makes request 3's check fresh; request 3's
    // handler ran before request 4, but 4 has no deadline: no read.
    assert_eq!(s.reads(), 2);
    // Exactly at the deadline is too late; a microsecond before is not.
    let mut s = Server::new(config(16));
    let stream = [
        request(1, 1, SECOND),
        request(2, 2, 3 * MS),
        request(3, 3, SECOND),
        request(4, 4, 6 * MS + US),
    ]
    .concat();
    s.deliver_with(&stream, |v| match v {
        1 | 3 => Handle::Slow(3 * MS),
        _ => Handle::Echo,
    })
    .unwrap();
    assert_eq!(errors(&s.sent()), [(2, ErrorCode::DeadlineExceeded)]);
    assert_eq!(
        s.ran.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 3, 4]
    );
}

#[test]
fn async_handlers_over_the_limit_are_overloaded() {
    let mut s = Server::new(config(2));
    let stream: Vec<u8> = (1..=3).flat_map(|i| request(i, i, SECOND)).collect();
    s.deliver_with(&stream, |_| Handle::Defer).unwrap();
    assert_eq!(s.deferred.len(), 2, "two run");
    assert_eq!(errors(&s.sent()), [(3, ErrorCode::Overloaded)]);
    assert_eq!(s.metrics.server.overloaded.get(), 1);
    assert_eq!(s.metrics.server.tasks.get(), 2);
    // One ends: the next one runs.
    s.finish(1);
    s.deliver_with(&request(4, 4, SECOND), |_| Handle::Defer)
        .unwrap();
    assert_eq!(s.deferred.len(), 2);
    s.deliver_with(&request(5, 5, SECOND), |_| Handle::Defer)
        .unwrap();
    let sent = s.sent();
    assert_eq!(responses(&sent), [(1, 1001)]);
    assert_eq!(errors(&sent), [(5, ErrorCode::Overloaded)]);
    assert_eq!(s.metrics.server.overloaded.get(), 2);
    // Sync handlers are not limited.
    let stream: Vec<u8> = (6..=9).flat_map(|i| request(i, i, SECOND)).collect();
    s.deliver(&stream).unwrap();
    assert_eq!(responses(&s.sent()).len(), 4);
}

#[test]
fn goaway_is_queued_once_and_idle_waits_for_handlers_and_sends() {
    let mut s = Server::new(config(16));
    assert!(s.core.is_idle());
    s.deliver_with(&request(1, 1, SECOND), |_| Handle::Defer)
        .unwrap();
    s.core.go_away();
    s.core.go_away();
    let sent = s.sent();
    assert_eq!(kinds(&sent), [FrameKind::GoAway], "once");
    assert!(!s.core.is_idle(), "a handler runs");
    // Requests already on the wire are still served.
    s.deliver(&request(2, 2, SECOND)).unwrap();
    assert!(!s.core.is_idle());
    s.finish(1);
    assert!(!s.core.is_idle(), "responses are queued");
    let batch = s.core.poll_transmit().unwrap();
    assert!(!s.core.is_idle(), "and being written");
    assert_eq!(responses(&split(&batch.bytes)), [(2, 1002), (1, 1001)]);
    s.core.transmit_done(batch);
    assert!(s.core.is_idle());
    // A goaway after close queues nothing.
    let mut closed = Server::new(config(16));
    closed.core.close();
    closed.core.go_away();
    assert!(closed.sent().is_empty());
}

#[test]
fn a_partial_frame_is_timed_from_its_first_bytes() {
    let mut s = Server::new(config(16));
    let first = request(1, 1, SECOND);
    let second = request(2, 2, SECOND);
    assert_eq!(s.core.partial_since(), None);
    // A whole frame and 10 bytes of the next at 1 ms.
    s.set_time(MS);
    s.deliver(&[&first[..], &second[..10]].concat()).unwrap();
    assert_eq!(s.core.partial_since(), Some(s.at(MS)));
    // More of it at 2 ms: still timed from 1 ms.
    s.set_time(2 * MS);
    s.deliver(&second[10..40]).unwrap();
    assert_eq!(s.core.partial_since(), Some(s.at(MS)));
    // The rest at 3 ms: at a boundary again.
    s.set_time(3 * MS);
    s.deliver(&second[40..]).unwrap();
    assert_eq!(s.core.partial_since(), None);
    assert_eq!(s.ran.len(), 2);
    // A receive that completes one frame and starts another restarts the clock.
    s.set_time(4 * MS);
    s.deliver(&first[..5]).unwrap();
    assert_eq!(s.core.partial_since(), Some(s.at(4 * MS)));
    s.set_time(5 * MS);
    s.deliver(&[&first[5..], &second[..HEADER_LEN]].concat())
        .unwrap();
    assert_eq!(s.core.partial_since(), Some(s.at(5 * MS)));
}

#[test]
fn a_response_from_a_client_is_a_protocol_error() {
    for kind in [FrameKind::Response, FrameKind::Error] {
        let mut s = Server::new(config(16));
        s.deliver_with(&request(1, 1, SECOND), |_| Handle::Defer)
            .unwrap();
        let err = s.deliver(&control(kind, 1));
        assert_eq!(err, Err(ProtocolError::Unexpected(kind)));
        assert!(s.core.is_closed());
        assert_eq!(s.metrics.server.protocol_errors.get(), 1);
        // The running handler's late response is dropped.
        s.finish(1);
        assert!(s.core.is_idle(), "not even queued");
        assert!(s.sent().is_empty(), "nothing leaves a closed connection");
    }
}

#[test]
fn a_required_data_digest_is_enforced_before_the_payload() {
    let mut s = Server::new(ServerCoreConfig {
        require_data_digest: true,
        ..config(16)
    });
    s.deliver(&request(1, 1, SECOND)).unwrap();
    assert_eq!(s.ran.len(), 1, "a frame with the digest is fine");
    let mut bare = Vec::new();
    let header = FrameHeader::new(FrameKind::Request).with_data_digest(false);
    encode_frame(&mut bare, header, &[0; 64], DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(
        s.deliver(&bare[..HEADER_LEN]),
        Err(ProtocolError::MissingDataDigest)
    );
    assert!(s.core.is_closed());
    // Not required: the same frame is accepted.
    let mut lax = Server::new(config(16));
    assert_eq!(lax.deliver(&control(FrameKind::Ping, 1)), Ok(1));
    let mut ping = Vec::new();
    let header = FrameHeader::new(FrameKind::Ping).with_data_digest(false);
    encode_frame(&mut ping, header, &[], DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(lax.deliver(&ping), Ok(1));
}

#[test]
fn a_bad_header_digest_fails_before_the_payload_arrives() {
    let mut s = Server::new(config(16));
    let mut bad = request(1, 1, SECOND);
    bad[26] ^= 0x01; // the length field: no waiting for a bogus payload
    assert_eq!(
        s.deliver(&bad[..HEADER_LEN]),
        Err(ProtocolError::BadHeaderDigest)
    );
    assert!(s.core.is_closed());
    assert!(s.ran.is_empty());
    // A corrupted payload is caught once it is in.
    let mut s = Server::new(config(16));
    let mut bad = request(1, 1, SECOND);
    bad[HEADER_LEN] ^= 0x01;
    assert_eq!(s.deliver(&bad[..HEADER_LEN]), Ok(0));
    assert_eq!(
        s.deliver(&bad[HEADER_LEN..]),
        Err(ProtocolError::BadDataDigest)
    );
    assert!(s.ran.is_empty());
}

#[test]
fn reading_pauses_above_max_pending_out_until_the_batch_is_sent() {
    let mut s = Server::new(ServerCoreConfig {
        max_pending_out: 100,
        ..config(16)
    });
    s.deliver(&request(1, 1, SECOND)).unwrap();
    assert!(s.core.has_send_room());
    let stream: Vec<u8> = (2..6).flat_map(|i| request(i, i, SECOND)).collect();
    s.deliver(&stream).unwrap();
    assert!(!s.core.has_send_room(), "five responses are over 100 bytes");
    let batch = s.core.poll_transmit().unwrap();
    assert!(s.core.has_send_room());
    let ptr = batch.bytes.as_ptr();
    s.core.transmit_done(batch);
    s.deliver(&request(6, 6, SECOND)).unwrap();
    s.deliver(&request(7, 7, SECOND)).unwrap();
    let batch = s.core.poll_transmit().unwrap();
    s.core.transmit_done(batch);
    s.deliver(&request(8, 8, SECOND)).unwrap();
    let batch = s.core.poll_transmit().unwrap();
    assert_eq!(batch.bytes.as_ptr(), ptr, "two buffers, reused");
    s.core.transmit_done(batch);
}

#[test]
fn idle_since_counts_from_the_last_request_or_send_and_ignores_pings() {
    let mut s = Server::new(config(16));
    assert_eq!(s.core.idle_since(), Some(s.t0), "idle from the accept");
    s.set_time(5 * SECOND);
    s.deliver_with(&request(1, 1, SECOND), |_| Handle::Defer)
        .unwrap();
    assert_eq!(s.core.idle_since(), None, "a handler runs");
    s.set_time(6 * SECOND);
    s.finish(1);
    assert_eq!(s.core.idle_since(), None, "its response is queued");
    let batch = s.core.poll_transmit().unwrap();
    assert_eq!(s.core.idle_since(), None, "and being written");
    s.core.transmit_done(batch);
    assert_eq!(
        s.core.idle_since(),
        Some(s.at(6 * SECOND)),
        "idle since the send"
    );
    // A ping is answered but is not work.
    s.set_time(9 * SECOND);
    s.deliver(&control(FrameKind::Ping, 7)).unwrap();
    let pong = s.core.poll_transmit().unwrap();
    s.core.transmit_done(pong);
    assert!(s.core.idle_since().unwrap() <= s.at(9 * SECOND));
    // A partial frame is not idle either.
    let half = request(2, 2, SECOND);
    s.deliver(&half[..10]).unwrap();
    assert_eq!(s.core.idle_since(), None, "a frame is half in");
    // Once closed, never idle (it is going away anyway).
    s.core.close();
    assert_eq!(s.core.idle_since(), None);
}

#[test]
fn metadata_is_split_off_the_message_and_a_malformed_block_closes_the_connection() {
    use crate::protocol::metadata::Metadata;
    let mut md = Metadata::new();
    md.insert("tenant", b"acme").unwrap();
    let frame = |md: &Metadata, damage: Option<usize>| {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        let mut header = FrameHeader::new(FrameKind::Request);
        header.call_id = 5;
        header.method = METHOD;
        header.flags |= FrameHeader::METADATA;
        md.encode_into(&mut out);
        if let Some(at) = damage {
            out[start + HEADER_LEN + at] = 0xff;
        }
        serialize_into(&42u64, &mut out).unwrap();
        finish_frame(&mut out, start, header, DEFAULT_MAX_FRAME).unwrap();
        out
    };
    let mut s = Server::new(config(16));
    s.deliver(&frame(&md, None)).unwrap();
    assert_eq!(
        s.ran,
        [(5, 42)],
        "the message after the block is the request"
    );
    // A key length that runs past the block is refused.
    let mut bad = Server::new(config(16));
    assert_eq!(
        bad.deliver(&frame(&md, Some(4))),
        Err(ProtocolError::BadMetadata)
    );
    assert!(bad.core.is_closed());
}
