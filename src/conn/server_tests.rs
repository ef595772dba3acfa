//! Deterministic tests of [`ServerCore`]: a fake clock (a base `Instant`
//! moved by hand, which also counts how often the core reads it), requests
//! built in memory, a tiny in-test router, and a [`ClientCore`] talking to a
//! `ServerCore` through an in-memory link that loses and reorders frames.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{CallCtx, ClientCore, ClientCoreConfig, Clock, Incoming, ServerCore, ServerCoreConfig};
use crate::client::Counters;
use crate::message::serialize_into;
use crate::metrics::CoreMetrics;
use crate::protocol::{
    begin_frame, decode_frame, encode_frame, finish_frame, CallId, DecodeOptions, Decoded,
    ErrorCode, FrameHeader, FrameKind, ProtocolError, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use crate::runtime::buf::RecvBuf;
use crate::Error;

const METHOD: u32 = 0x5eed;
const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
const SECOND: Duration = Duration::from_secs(1);

/// A hand-moved clock shared by the test and the core; counts the core's reads.
#[derive(Clone)]
struct FakeClock {
    now: Rc<Cell<Instant>>,
    reads: Rc<Cell<usize>>,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.reads.set(self.reads.get() + 1);
        self.now.get()
    }
}

fn config(max_in_flight: usize) -> ServerCoreConfig {
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
enum Handle {
    /// Answers at once with the request's value + 1000.
    Echo,
    /// An "async" handler: counted in, answered later by [`Server::finish`].
    Defer,
    /// Answers like `Echo` after running this long (the clock moves).
    Slow(Duration),
}

/// A server core, its fake clock, its receive buffer and what its router did.
struct Server {
    core: ServerCore<FakeClock>,
    metrics: Rc<CoreMetrics>,
    clock: FakeClock,
    t0: Instant,
    rx: RecvBuf,
    /// Requests whose handler ran, in order: (call id, value).
    ran: Vec<(u64, u64)>,
    /// Async handlers running: their context and request value.
    deferred: Vec<(CallCtx, u64)>,
}

impl Server {
    fn new(cfg: ServerCoreConfig) -> Self {
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

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn now(&self) -> Instant {
        self.clock.now.get()
    }

    fn set_time(&self, d: Duration) {
        self.clock.now.set(self.at(d));
    }

    fn reads(&self) -> usize {
        self.clock.reads.get()
    }

    /// Delivers `bytes` as one receive at the current time; the router
    /// handles each request as `handle` says for its value. Returns the
    /// number of complete frames.
    fn deliver_with(
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
                                let ctx = CallCtx {
                                    deferred: true,
                                    ..req.ctx
                                };
                                self.deferred.push((ctx, value));
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

    fn deliver(&mut self, bytes: &[u8]) -> Result<usize, ProtocolError> {
        self.deliver_with(bytes, |_| Handle::Echo)
    }

    /// The async handler of `call_id` ends now: it answers, or, past its
    /// deadline, is cut off with `DeadlineExceeded` (as the driver's
    /// `io::until` does).
    fn finish(&mut self, call_id: u64) {
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
    fn sent(&mut self) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(batch) = self.core.poll_transmit() {
            frames.extend(split(&batch));
            self.core.transmit_done(batch);
        }
        frames
    }
}

/// The frames of a transmitted batch: (header, whole frame bytes).
fn split(batch: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
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

fn value_of(payload: &[u8]) -> u64 {
    rkyv::access::<rkyv::Archived<u64>, rkyv::rancor::Error>(payload)
        .unwrap()
        .to_native()
}

/// A request frame as a client would send it.
fn request(call_id: u64, value: u64, budget: Duration) -> Vec<u8> {
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

fn kinds(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<FrameKind> {
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
    let sent = split(&batch);
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
    assert_eq!(responses(&split(&batch)), [(2, 1002), (1, 1001)]);
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
    let ptr = batch.as_ptr();
    s.core.transmit_done(batch);
    s.deliver(&request(6, 6, SECOND)).unwrap();
    s.deliver(&request(7, 7, SECOND)).unwrap();
    let batch = s.core.poll_transmit().unwrap();
    s.core.transmit_done(batch);
    s.deliver(&request(8, 8, SECOND)).unwrap();
    let batch = s.core.poll_transmit().unwrap();
    assert_eq!(batch.as_ptr(), ptr, "two buffers, reused");
    s.core.transmit_done(batch);
}

/// A client core and a server core joined by an in-memory link that carries
/// whole frames; the test says when each one arrives, or that it never does.
struct Link {
    client: ClientCore,
    counters: Rc<Counters>,
    crx: RecvBuf,
    server: Server,
}

impl Link {
    fn new(server: ServerCoreConfig) -> Self {
        let server = Server::new(server);
        let counters = Rc::new(Counters::new("127.0.0.1:9".parse().unwrap(), false));
        let cfg = ClientCoreConfig {
            max_in_flight: 1024,
            max_frame: DEFAULT_MAX_FRAME,
            data_digest: true,
            heartbeat_interval: 10 * SECOND,
            heartbeat_timeout: 10 * SECOND,
        };
        Self {
            client: ClientCore::new(server.now(), cfg, counters.clone()),
            counters,
            crx: RecvBuf::new(4096),
            server,
        }
    }

    fn call(&mut self, value: u64, deadline: Duration) -> CallId {
        let now = self.server.now();
        self.client
            .start_call(now, METHOD, now + deadline, &value, None)
            .expect("call starts")
    }

    /// The frames the client transmits.
    fn client_sent(&mut self) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(batch) = self.client.poll_transmit() {
            frames.extend(split(&batch));
            self.client.transmit_done(self.server.now(), batch);
        }
        frames
    }

    /// Feeds `frames` to the client as one receive.
    fn deliver_to_client(&mut self, frames: &[Vec<u8>]) {
        self.crx.append(&frames.concat());
        let now = self.server.now();
        while let Decoded::Frame(_) = self.client.handle_next(now, &mut self.crx).unwrap() {}
    }

    /// The finished call `id`, if it has finished: its value and when it ended.
    fn finished(&mut self, id: CallId) -> Option<(Result<u64, Error>, Instant)> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.client.poll_reply(id, &mut cx) {
            Poll::Ready(f) => Some((f.result.map(|b| value_of(&b)), f.received)),
            Poll::Pending => None,
        }
    }
}

/// A frame's trip: arrives after this many ms, or is lost.
fn trip() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![1 => Just(None), 4 => (0u32..30).prop_map(Some)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A client core against a server core, the link between them losing and
    /// delaying (so reordering) every frame on its own, some handlers async
    /// and slow: every call ends with its own answer if request and response
    /// both arrived before its deadline, else with a timeout at exactly its
    /// deadline; every answer that came too late is counted stale; each
    /// request that arrived ran once; both ends finish idle.
    #[test]
    fn a_client_core_and_a_server_core_over_a_lossy_reordering_link(
        calls in prop::collection::vec((trip(), trip(), prop::option::of(0u32..12)), 1..30),
    ) {
        let deadline = 20 * MS;
        let mut link = Link::new(config(1024));
        let ids: Vec<CallId> = (0..calls.len() as u64).map(|i| link.call(i, deadline)).collect();
        let index = |call_id: u64| ids.iter().position(|id| id.to_u64() == call_id).unwrap();
        // (arrival ms, to the server?, frame)
        let mut wire: Vec<(u32, bool, Vec<u8>)> = Vec::new();
        for (h, frame) in link.client_sent() {
            prop_assert_eq!(h.kind, FrameKind::Request);
            prop_assert_eq!(h.budget_us, 20_000);
            if let Some(at) = calls[index(h.call_id)].0 {
                wire.push((at, true, frame));
            }
        }
        // (ms it ends at, call id) of async handlers.
        let mut running: Vec<(u32, u64)> = Vec::new();
        let mut outcome: Vec<Option<(Result<u64, Error>, Instant)>> = ids.iter().map(|_| None).collect();
        for t in 0..80u32 {
            link.server.set_time(t * MS);
            link.client.handle_timeout(link.server.now());
            let (now_in, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|(at, to_server, _)| *at == t && *to_server);
            wire = rest;
            if !now_in.is_empty() {
                let bytes: Vec<u8> = now_in.into_iter().flat_map(|(_, _, f)| f).collect();
                let before = link.server.ran.len();
                link.server.deliver_with(&bytes, |v| match calls[v as usize].2 {
                    Some(_) => Handle::Defer,
                    None => Handle::Echo,
                }).unwrap();
                for &(call_id, value) in &link.server.ran[before..] {
                    prop_assert_eq!(index(call_id) as u64, value, "its own request");
                    if let Some(ms) = calls[value as usize].2 {
                        running.push((t + ms, call_id));
                    }
                }
            }
            for (_, call_id) in running.iter().filter(|(end, _)| *end == t) {
                link.server.finish(*call_id);
            }
            running.retain(|(end, _)| *end != t);
            for (h, frame) in link.server.sent() {
                prop_assert_eq!(h.kind, FrameKind::Response);
                if let Some(delay) = calls[index(h.call_id)].1 {
                    wire.push((t + delay, false, frame));
                }
            }
            let (now_in, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|(at, to_server, _)| *at == t && !*to_server);
            wire = rest;
            let frames: Vec<Vec<u8>> = now_in.into_iter().map(|(_, _, f)| f).collect();
            link.deliver_to_client(&frames);
            for (i, id) in ids.iter().enumerate() {
                if outcome[i].is_none() {
                    outcome[i] = link.finished(*id);
                }
            }
            prop_assert!(link.client_sent().is_empty(), "nothing else from the client");
        }
        prop_assert!(wire.is_empty());
        let mut stale = 0;
        for (i, (req, resp, handler)) in calls.iter().enumerate() {
            let (result, at) = outcome[i].take().expect("every call ended");
            let trip = match (req, resp) {
                (Some(req), Some(resp)) => Some(req + handler.unwrap_or(0) + resp),
                _ => None,
            };
            match trip {
                Some(ms) if ms < 20 => {
                    prop_assert_eq!(result.unwrap(), i as u64 + 1000);
                    prop_assert_eq!(at, link.server.at(ms * MS));
                }
                _ => {
                    prop_assert!(matches!(result, Err(Error::Timeout)), "call {}: {:?}", i, result);
                    prop_assert_eq!(at, link.server.at(deadline), "exactly at the deadline");
                    stale += usize::from(trip.is_some());
                }
            }
        }
        prop_assert_eq!(link.counters.stale.get() as usize, stale);
        let arrived = calls.iter().filter(|c| c.0.is_some()).count();
        prop_assert_eq!(link.server.ran.len(), arrived, "each arrived request ran once");
        prop_assert_eq!(link.server.metrics.server.requests.get() as usize, arrived);
        prop_assert!(link.server.core.is_idle());
        prop_assert_eq!(link.client.in_flight(), 0);
        prop_assert!(link.client.is_live());
    }
}

#[test]
fn goaway_under_load_finishes_the_calls_in_flight_and_refuses_new_ones() {
    let mut link = Link::new(config(16));
    // Calls 0 and 1 are answered at once, 2 and 3 by handlers still running
    // when the server starts draining.
    let ids: Vec<CallId> = (0..4).map(|i| link.call(i, SECOND)).collect();
    let requests: Vec<Vec<u8>> = link.client_sent().into_iter().map(|(_, f)| f).collect();
    let defer_big = |v: u64| if v >= 2 { Handle::Defer } else { Handle::Echo };
    link.server
        .deliver_with(&requests.concat(), defer_big)
        .unwrap();
    link.server.core.go_away();
    // A fifth call leaves the client before the goaway reaches it.
    let late = link.call(4, SECOND);
    let late_request = link.client_sent();
    let sent = link.server.sent();
    assert_eq!(
        kinds(&sent),
        [FrameKind::Response, FrameKind::Response, FrameKind::GoAway]
    );
    link.deliver_to_client(&sent.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
    assert!(
        !link.client.is_live() && !link.client.has_room(),
        "no new calls"
    );
    assert!(!link.client.is_closed(), "the calls in flight go on");
    assert_eq!(link.finished(ids[0]).unwrap().0.unwrap(), 1000);
    assert_eq!(link.finished(ids[1]).unwrap().0.unwrap(), 1001);
    // The request already on the wire is still served; no second goaway.
    link.server.deliver(&late_request[0].1).unwrap();
    link.server.core.go_away();
    assert!(!link.server.core.is_idle(), "two handlers run");
    link.server.finish(ids[3].to_u64());
    link.server.finish(ids[2].to_u64());
    let sent = link.server.sent();
    assert_eq!(kinds(&sent), [FrameKind::Response; 3]);
    assert!(link.server.core.is_idle());
    link.deliver_to_client(&sent.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
    assert_eq!(link.finished(late).unwrap().0.unwrap(), 1004);
    assert_eq!(link.finished(ids[3]).unwrap().0.unwrap(), 1003);
    assert!(!link.client.is_closed());
    assert_eq!(link.finished(ids[2]).unwrap().0.unwrap(), 1002);
    assert!(
        link.client.is_closed(),
        "the client closes after its last call"
    );
    assert_eq!(link.counters.stale.get(), 0);
}

/// Drains a server with one call answered at once and one whose handler
/// ends at `handler_ends` (or never), millisecond by millisecond, until the
/// client closes (then the server, seeing it, closes too) or the drain
/// deadline at 5 ms passes (then the server closes the connection, as
/// `ServerHandle::shutdown` does). Returns the slow call's outcome and when
/// the connection went down.
fn drain(handler_ends: Option<Duration>) -> (Result<u64, Error>, Duration, Duration) {
    let drain_deadline = 5 * MS;
    let mut link = Link::new(config(16));
    let quick = link.call(0, SECOND);
    let slow = link.call(1, SECOND);
    let requests: Vec<Vec<u8>> = link.client_sent().into_iter().map(|(_, f)| f).collect();
    let defer_one = |v: u64| if v == 1 { Handle::Defer } else { Handle::Echo };
    link.server
        .deliver_with(&requests.concat(), defer_one)
        .unwrap();
    link.server.core.go_away();
    let mut quick_done = false;
    let mut t = Duration::ZERO;
    loop {
        link.server.set_time(t);
        if handler_ends == Some(t) {
            link.server.finish(slow.to_u64());
        }
        let frames: Vec<Vec<u8>> = link.server.sent().into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            link.server.core.is_idle(),
            link.server.deferred.is_empty(),
            "idle exactly when no handler runs (everything is sent)"
        );
        link.deliver_to_client(&frames);
        assert!(!link.client.is_live(), "the goaway arrived");
        if !quick_done {
            let (result, _) = link.finished(quick).expect("answered at once");
            assert_eq!(result.unwrap(), 1000);
            quick_done = true;
        }
        if let Some((result, at)) = link.finished(slow) {
            assert!(
                link.client.is_closed(),
                "its last call done, the client closes"
            );
            assert!(link.server.core.is_idle(), "the server closes on seeing it");
            link.server.core.close();
            return (result, at - link.server.t0, t);
        }
        if t >= drain_deadline {
            // The drain deadline: the server closes; the client sees the socket close.
            link.server.core.close();
            link.client.close(link.server.now());
            let (result, at) = link.finished(slow).expect("failed by the close");
            if !link.server.deferred.is_empty() {
                link.server.finish(slow.to_u64());
                assert!(link.server.sent().is_empty(), "a late response is dropped");
            }
            return (result, at - link.server.t0, t);
        }
        t += MS;
    }
}

#[test]
fn a_drain_ends_when_the_last_call_does_or_at_the_drain_deadline() {
    let (result, ended, down) = drain(Some(2 * MS));
    assert_eq!(result.unwrap(), 1001, "in-flight calls complete");
    assert_eq!(
        (ended, down),
        (2 * MS, 2 * MS),
        "no waiting for the deadline"
    );
    for ends in [None, Some(7 * MS)] {
        let (result, ended, down) = drain(ends);
        assert!(matches!(result, Err(Error::ConnectionLost)), "{result:?}");
        assert_eq!(
            (ended, down),
            (5 * MS, 5 * MS),
            "cut off at the drain deadline"
        );
    }
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
