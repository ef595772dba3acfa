//! Deterministic tests of [`ClientCore`]: a fake clock (a base `Instant`
//! advanced by hand) and an in-memory fake server that decodes what the core
//! transmits and answers with frames it builds itself, in whatever order,
//! with whatever loss and duplication a test wants.

use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::server_tests::value_of;
#[cfg(feature = "tls")]
use super::tls::TlsSlot;
use super::{ClientCore, ClientCoreConfig, Finished};
use crate::client::Counters;
use crate::protocol::{
    decode_frame, encode_frame, CallId, DecodeOptions, Decoded, ErrorCode, FrameHeader, FrameKind,
    ProtocolError, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use crate::runtime::buf::RecvBuf;
use crate::test_waker::WakeCount;
use crate::Error;

pub(super) const METHOD: u32 = 0x5eed;
const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(2);

/// A client core, its fake clock, its receive buffer and its waker.
pub(super) struct Harness {
    pub(super) core: ClientCore,
    pub(super) counters: Rc<Counters>,
    t0: Instant,
    pub(super) now: Instant,
    rx: RecvBuf,
    wakes: Arc<WakeCount>,
    waker: Waker,
}

fn config(max_in_flight: usize) -> ClientCoreConfig {
    ClientCoreConfig {
        max_in_flight,
        max_frame: DEFAULT_MAX_FRAME,
        data_digest: true,
        heartbeat_interval: INTERVAL,
        heartbeat_timeout: TIMEOUT,
    }
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with(config(1024))
    }

    fn with(cfg: ClientCoreConfig) -> Self {
        let counters = Rc::new(Counters::new("127.0.0.1:9".parse().unwrap(), true));
        let t0 = Instant::now();
        let (wakes, waker) = WakeCount::new();
        Self {
            core: ClientCore::new(t0, cfg, counters.clone()),
            counters,
            t0,
            now: t0,
            rx: RecvBuf::new(4096),
            waker,
            wakes,
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Moves the clock to `t0 + d` and runs what is due.
    fn advance_to(&mut self, d: Duration) {
        self.now = self.at(d);
        self.core.handle_timeout(self.now);
    }

    /// Starts a call with request `req` due `deadline` from now.
    pub(super) fn call(&mut self, req: u64, deadline: Duration) -> CallId {
        self.core
            .start_call(self.now, METHOD, self.now + deadline, &req, None)
            .expect("call starts")
    }

    /// Every frame the core transmits, decoded; each send completes at once.
    pub(super) fn sent(&mut self) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(sent) = self.core.poll_transmit() {
            let batch = sent.to_stream();
            let mut pos = 0;
            while pos < batch.len() {
                let Ok(Decoded::Frame(h)) = decode_frame(&batch[pos..], DecodeOptions::default())
                else {
                    panic!("the core sent a broken frame");
                };
                let payload = &batch[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
                frames.push((h, payload.to_vec()));
                pos += h.frame_len();
            }
            self.core.transmit_done(self.now, sent);
        }
        frames
    }

    /// Feeds `bytes` to the core, handling every complete frame.
    pub(super) fn deliver(&mut self, bytes: &[u8]) -> Result<usize, ProtocolError> {
        self.rx.append(bytes);
        let mut frames = 0;
        while let Decoded::Frame(_) = self.core.handle_next(self.now, &mut self.rx)? {
            frames += 1;
        }
        Ok(frames)
    }

    fn poll(&mut self, id: CallId) -> Poll<Finished> {
        self.core
            .poll_reply(id, &mut Context::from_waker(&self.waker))
    }

    /// The finished call `id` (taken): its result as payload bytes, and when it ended.
    pub(super) fn try_finished(&mut self, id: CallId) -> Option<(Result<Vec<u8>, Error>, Instant)> {
        match self.poll(id) {
            Poll::Ready(f) => Some((f.result.map(|bytes| bytes.to_vec()), f.received)),
            Poll::Pending => None,
        }
    }

    fn finished(&mut self, id: CallId) -> (Result<Vec<u8>, Error>, Instant) {
        self.try_finished(id).expect("the call has finished")
    }

    fn pending(&mut self, id: CallId) -> bool {
        self.poll(id).is_pending()
    }

    fn wakes(&self) -> usize {
        self.wakes.count()
    }
}

/// A frame of `kind` for `call_id` as the server would send it.
pub(super) fn frame(kind: FrameKind, call_id: u64, method: u32, payload: &[u8]) -> Vec<u8> {
    let mut header = FrameHeader::new(kind);
    header.call_id = call_id;
    header.method = method;
    let mut out = Vec::new();
    encode_frame(&mut out, header, payload, DEFAULT_MAX_FRAME).unwrap();
    out
}

/// The server's reply to `request`: the request's call id, payload `reply`.
fn response(call_id: u64, reply: &[u8]) -> Vec<u8> {
    frame(FrameKind::Response, call_id, 0, reply)
}

/// The requests the core sent (ignoring control frames), as (call id, request value).
pub(super) fn requests(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == FrameKind::Request)
        .map(|(h, p)| {
            assert_eq!(h.method, METHOD);
            (h.call_id, value_of(p))
        })
        .collect()
}

fn kinds(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<FrameKind> {
    frames.iter().map(|(h, _)| h.kind).collect()
}

#[test]
fn replies_complete_their_own_calls_in_any_order_and_any_split() {
    let mut h = Harness::new();
    let ids: Vec<CallId> = (0..6).map(|i| h.call(100 + i, 5 * MS * 1000)).collect();
    let sent = h.sent();
    let reqs = requests(&sent);
    assert_eq!(reqs.len(), 6, "one send carries every request");
    assert!(sent.iter().all(|(hd, _)| hd.budget_us == 5_000_000));
    // Answer in reverse order, the whole stream cut into 7-byte pieces.
    let mut stream = Vec::new();
    for (call_id, value) in reqs.iter().rev() {
        stream.extend(response(*call_id, &(value * 2).to_le_bytes()));
    }
    h.now = h.at(3 * MS);
    let mut frames = 0;
    for piece in stream.chunks(7) {
        frames += h.deliver(piece).unwrap();
    }
    assert_eq!(frames, 6);
    for (i, id) in ids.into_iter().enumerate() {
        let (result, received) = h.finished(id);
        assert_eq!(result.unwrap(), (2 * (100 + i as u64)).to_le_bytes());
        assert_eq!(received, h.at(3 * MS));
    }
    assert_eq!(h.core.in_flight(), 0);
    assert_eq!(h.counters.stale.get(), 0);
}

#[test]
fn reply_to_a_timed_out_call_is_stale_and_never_reaches_the_reused_slot() {
    let mut h = Harness::new();
    let old = h.call(1, 10 * MS);
    let (old_wire, _) = requests(&h.sent())[0];
    h.advance_to(10 * MS);
    assert!(matches!(h.finished(old).0, Err(Error::Timeout)));
    let new = h.call(2, 10 * MS);
    assert_eq!(new.index, old.index, "the slot is reused");
    assert_ne!(new.generation, old.generation);
    let (new_wire, _) = requests(&h.sent())[0];
    h.deliver(&response(old_wire, b"late")).unwrap();
    assert_eq!(h.counters.stale.get(), 1, "the late reply is counted");
    assert!(h.pending(new), "and does not complete the new call");
    h.deliver(&response(new_wire, b"mine")).unwrap();
    assert_eq!(h.finished(new).0.unwrap(), b"mine");
    assert_eq!(h.counters.stale.get(), 1);
}

#[test]
fn duplicate_replies_are_stale_and_the_first_one_wins() {
    let mut h = Harness::new();
    let id = h.call(1, 10 * MS);
    let (wire, _) = requests(&h.sent())[0];
    h.deliver(&response(wire, b"first")).unwrap();
    h.deliver(&response(wire, b"again")).unwrap();
    assert_eq!(h.counters.stale.get(), 1, "a duplicate of a held reply");
    assert_eq!(h.finished(id).0.unwrap(), b"first");
    h.deliver(&response(wire, b"third")).unwrap();
    assert_eq!(
        h.counters.stale.get(),
        2,
        "a duplicate after the call ended"
    );
    assert_eq!(h.core.in_flight(), 0);
}

#[test]
fn a_lost_reply_times_out_exactly_at_the_deadline() {
    let mut h = Harness::new();
    let id = h.call(1, 50 * MS);
    assert_eq!(requests(&h.sent()).len(), 1, "the server never answers");
    assert!(
        h.core.timeout_moved_earlier(),
        "the driver's sleep must move"
    );
    assert_eq!(h.core.poll_timeout(), Some(h.at(50 * MS)));
    assert!(!h.core.timeout_moved_earlier());
    assert!(h.pending(id));
    h.advance_to(50 * MS - US);
    assert!(h.pending(id), "not a microsecond early");
    assert_eq!(h.wakes(), 0);
    h.advance_to(50 * MS);
    assert_eq!(h.wakes(), 1, "the caller is woken");
    let (result, at) = h.finished(id);
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert_eq!(at, h.at(50 * MS));
    assert_eq!(h.core.in_flight(), 0);
    assert!(h.core.is_live(), "a timeout leaves the connection up");
}

#[test]
fn a_quiet_connection_gives_back_what_a_burst_grew_when_it_pings() {
    let mut h = Harness::new();
    let ids: Vec<CallId> = (0..300).map(|i| h.call(i, 5 * INTERVAL)).collect();
    let sent = h.sent();
    let grown = h.core.room();
    assert!(grown.0 >= 300 && grown.2 > 4096, "{grown:?}");
    let replies: Vec<u8> = requests(&sent)
        .iter()
        .flat_map(|(call_id, _)| response(*call_id, b"ok"))
        .collect();
    h.now = h.at(MS);
    h.deliver(&replies).unwrap();
    ids.into_iter()
        .for_each(|id| assert!(h.finished(id).0.is_ok()));
    h.advance_to(INTERVAL);
    assert_eq!(h.core.room(), grown, "not yet: a moment of quiet");
    h.advance_to(INTERVAL + MS);
    assert_eq!(kinds(&h.sent()), [FrameKind::Ping]);
    let (slots, out, spare) = h.core.room();
    assert!(slots <= super::client::INITIAL_CALL_SLOTS, "{slots} slots");
    assert!(out < 4096 && spare < 4096, "{out} / {spare} bytes");
    let id = h.call(7, INTERVAL);
    assert_eq!(requests(&h.sent()).len(), 1, "calls go on as before");
    assert!(h.pending(id));
}

#[test]
fn only_an_earlier_deadline_moves_the_timeout() {
    let mut h = Harness::new();
    assert_eq!(h.core.poll_timeout(), Some(h.at(INTERVAL)), "the heartbeat");
    h.call(1, 5 * INTERVAL);
    assert!(!h.core.timeout_moved_earlier(), "later than the heartbeat");
    h.call(2, 100 * MS);
    assert!(h.core.timeout_moved_earlier());
    assert_eq!(h.core.poll_timeout(), Some(h.at(100 * MS)));
    h.call(3, 200 * MS);
    assert!(!h.core.timeout_moved_earlier(), "later than the earliest");
    h.advance_to(100 * MS);
    assert_eq!(h.core.poll_timeout(), Some(h.at(200 * MS)), "rescanned");
}

#[test]
fn an_idle_connection_pings_and_dies_when_nothing_answers() {
    let mut h = Harness::new();
    let id = h.call(1, 10 * INTERVAL);
    let (wire, _) = requests(&h.sent())[0];
    // A reply at 300 ms counts as life: the ping is due 1 s after it.
    let other = h.call(2, 10 * INTERVAL);
    let (other_wire, _) = requests(&h.sent())[0];
    h.now = h.at(300 * MS);
    h.deliver(&response(other_wire, b"ok")).unwrap();
    assert!(h.finished(other).0.is_ok());
    h.advance_to(INTERVAL);
    assert!(h.sent().is_empty(), "not idle for long enough yet");
    h.advance_to(INTERVAL + 300 * MS - US);
    assert!(h.sent().is_empty());
    h.advance_to(INTERVAL + 300 * MS);
    assert_eq!(kinds(&h.sent()), [FrameKind::Ping]);
    assert_eq!(h.counters.pings.get(), 1);
    let ping_at = INTERVAL + 300 * MS;
    assert_eq!(h.core.poll_timeout(), Some(h.at(ping_at + TIMEOUT)));
    h.advance_to(ping_at + TIMEOUT - US);
    assert!(h.core.is_live() && h.pending(id));
    h.advance_to(ping_at + TIMEOUT);
    assert!(h.core.is_closed());
    let (result, at) = h.finished(id);
    assert!(matches!(result, Err(Error::ConnectionLost)), "{result:?}");
    assert_eq!(at, h.at(ping_at + TIMEOUT));
    assert_eq!(h.counters.lost.get(), 1);
    assert_eq!(h.core.poll_timeout(), None);
    assert!(h.sent().is_empty(), "nothing leaves a closed connection");
    // The late reply finds nothing.
    h.deliver(&response(wire, b"late")).unwrap();
    assert_eq!(h.counters.stale.get(), 1);
}

#[test]
fn an_answered_ping_keeps_the_connection_up() {
    let mut h = Harness::new();
    h.advance_to(INTERVAL);
    let sent = h.sent();
    assert_eq!(kinds(&sent), [FrameKind::Ping]);
    h.now = h.at(INTERVAL + 500 * MS);
    h.deliver(&frame(FrameKind::Pong, sent[0].0.call_id, 0, &[]))
        .unwrap();
    h.advance_to(INTERVAL + TIMEOUT);
    assert!(h.core.is_live(), "the pong counted");
    // The next ping was due 1 s after the pong, already past: sent at once.
    assert_eq!(kinds(&h.sent()), [FrameKind::Ping]);
    assert_eq!(h.counters.pings.get(), 2);
    assert_eq!(h.counters.lost.get(), 0);
}

#[test]
fn a_server_ping_is_answered_with_a_pong() {
    let mut h = Harness::new();
    h.deliver(&frame(FrameKind::Ping, 77, 0, &[])).unwrap();
    let sent = h.sent();
    assert_eq!(kinds(&sent), [FrameKind::Pong]);
    assert_eq!(sent[0].0.call_id, 77);
}

#[test]
fn goaway_under_load_drains_then_closes() {
    let mut h = Harness::new();
    let ids: Vec<CallId> = (0..4).map(|i| h.call(i, 10 * INTERVAL)).collect();
    let wires = requests(&h.sent());
    h.deliver(&frame(FrameKind::GoAway, 0, 0, &[])).unwrap();
    assert!(!h.core.is_live() && !h.core.has_room(), "no new calls");
    assert!(!h.core.is_closed(), "the calls in flight go on");
    for (id, (wire, _)) in ids.iter().zip(&wires).take(3) {
        h.deliver(&response(*wire, b"done")).unwrap();
        assert_eq!(h.finished(*id).0.unwrap(), b"done");
        assert!(!h.core.is_closed());
    }
    h.deliver(&response(wires[3].0, b"last")).unwrap();
    assert!(
        !h.core.is_closed(),
        "closes when the caller takes the reply"
    );
    assert_eq!(h.finished(ids[3]).0.unwrap(), b"last");
    assert!(h.core.is_closed());
    assert_eq!(h.counters.lost.get(), 1);
    assert!(matches!(
        h.core.start_call(h.now, METHOD, h.now + MS, &1u64, None),
        Err(Error::NotSent)
    ));
}

#[test]
fn a_dropped_last_call_closes_a_draining_connection() {
    let mut h = Harness::new();
    let id = h.call(1, INTERVAL);
    h.core.retire();
    assert!(!h.core.is_closed());
    h.core.forget(id);
    assert!(h.core.is_closed());
    let mut idle = Harness::new();
    idle.core.retire();
    assert!(idle.core.is_closed(), "nothing in flight: closes at once");
}

#[test]
fn a_request_from_the_server_is_a_protocol_error() {
    let mut h = Harness::new();
    let id = h.call(1, INTERVAL);
    let err = h.deliver(&frame(FrameKind::Request, 1, METHOD, b"x"));
    assert_eq!(err, Err(ProtocolError::Unexpected(FrameKind::Request)));
    assert!(h.core.is_closed());
    // Its request was never handed to the driver: it provably did not run.
    assert!(matches!(h.finished(id).0, Err(Error::NotSent)));
}

/// A request handed to the driver may have run: `ConnectionLost`; one still
/// in the batch being filled never left: `NotSent` (safe to retry anywhere).
#[test]
fn close_tells_sent_requests_from_unsent_ones() {
    let mut h = Harness::new();
    let sent = h.call(1, INTERVAL);
    let batch = h.core.poll_transmit().expect("the first request");
    let in_writer = h.call(2, INTERVAL);
    h.core.transmit_done(h.now, batch);
    let queued_after = h.call(3, INTERVAL);
    let batch = h.core.poll_transmit().expect("the second batch");
    let unsent = h.call(4, INTERVAL);
    h.core.close(h.now);
    drop(batch);
    assert!(matches!(h.finished(sent).0, Err(Error::ConnectionLost)));
    assert!(matches!(
        h.finished(in_writer).0,
        Err(Error::ConnectionLost)
    ));
    assert!(matches!(
        h.finished(queued_after).0,
        Err(Error::ConnectionLost)
    ));
    assert!(matches!(h.finished(unsent).0, Err(Error::NotSent)));
}

#[test]
fn a_corrupted_frame_closes_the_connection() {
    let mut h = Harness::new();
    let id = h.call(1, INTERVAL);
    let (wire, _) = requests(&h.sent())[0];
    let mut bad = response(wire, b"payload");
    bad[HEADER_LEN + 1] ^= 0x40;
    assert_eq!(h.deliver(&bad), Err(ProtocolError::BadDataDigest));
    assert!(h.core.is_closed());
    assert!(matches!(h.finished(id).0, Err(Error::ConnectionLost)));
}

#[test]
fn error_frames_fail_their_call_with_the_matching_error() {
    let mut h = Harness::new();
    let ids: Vec<CallId> = (0..3).map(|i| h.call(i, INTERVAL)).collect();
    let wires = requests(&h.sent());
    let codes = [
        ErrorCode::DeadlineExceeded,
        ErrorCode::Overloaded,
        ErrorCode::Application,
    ];
    for ((wire, _), code) in wires.iter().zip(codes) {
        h.deliver(&frame(FrameKind::Error, *wire, code.to_u32(), b"nope"))
            .unwrap();
    }
    assert!(matches!(h.finished(ids[0]).0, Err(Error::Timeout)));
    assert!(matches!(h.finished(ids[1]).0, Err(Error::Overloaded)));
    match h.finished(ids[2]).0 {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode::Application);
            assert_eq!(message, "nope");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_in_flight_limit_is_backpressure() {
    let mut h = Harness::with(config(2));
    let a = h.call(1, INTERVAL);
    assert!(h.core.has_room());
    h.call(2, INTERVAL);
    assert!(!h.core.has_room(), "at max_in_flight");
    assert!(h.core.is_live(), "full, not dead");
    let (wire, _) = requests(&h.sent())[0];
    h.deliver(&response(wire, b"ok")).unwrap();
    assert!(!h.core.has_room(), "a held reply still holds its slot");
    h.finished(a).0.unwrap();
    assert!(h.core.has_room());
    assert_eq!(h.core.calls_started(), 2);
}

#[test]
fn one_send_at_a_time_from_two_reused_buffers() {
    let mut h = Harness::new();
    let mut seen = Vec::new();
    for round in 0..4 {
        h.call(round, INTERVAL);
        assert!(h.core.wants_write());
        let batch = h.core.poll_transmit().expect("a batch");
        h.call(round + 100, INTERVAL);
        assert!(!h.core.wants_write(), "the writer is busy");
        assert!(h.core.poll_transmit().is_none());
        seen.push(batch.bytes.as_ptr());
        h.core.transmit_done(h.now, batch);
        assert!(h.core.wants_write(), "the second call is still queued");
        let next = h.core.poll_transmit().expect("the rest");
        h.core.transmit_done(h.now, next);
    }
    assert_eq!(seen[0], seen[1], "the buffer comes back");
    assert_eq!(seen[1], seen[3]);
}

#[test]
fn close_fails_every_waiting_call_but_keeps_finished_replies() {
    let mut h = Harness::new();
    let done = h.call(1, INTERVAL);
    let waiting = h.call(2, INTERVAL);
    let (wire, _) = requests(&h.sent())[0];
    h.deliver(&response(wire, b"ok")).unwrap();
    h.now = h.at(7 * MS);
    h.core.close(h.now);
    h.core.close(h.now);
    assert_eq!(h.counters.lost.get(), 1, "closed once");
    assert_eq!(h.finished(done).0.unwrap(), b"ok");
    let (result, at) = h.finished(waiting);
    assert!(matches!(result, Err(Error::ConnectionLost)));
    assert_eq!(at, h.at(7 * MS));
}

/// A microsecond before `deadline` every call without an outcome is still pending.
fn no_call_ends_early(
    h: &mut Harness,
    ids: &[CallId],
    outcome: &[Option<Result<Vec<u8>, Error>>],
    deadline: Duration,
) -> Result<(), TestCaseError> {
    h.advance_to(deadline - US);
    for (i, id) in ids.iter().enumerate() {
        if outcome[i].is_none() {
            prop_assert!(h.pending(*id), "call {} ended early", i);
        }
    }
    Ok(())
}

/// What the fake server does with one request in a chaotic run.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Answer,
    Lose,
    Duplicate,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Answer),
        2 => Just(Fate::Lose),
        2 => Just(Fate::Duplicate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Loss, duplication and reordering at the frame level, replies early and
    /// late: every call ends with its own reply or a timeout at exactly its
    /// deadline, and every reply that finds no waiting call is counted stale.
    #[test]
    fn chaos_at_the_frame_level(
        fates in prop::collection::vec(fate(), 1..40),
        delays in prop::collection::vec(0u32..40, 40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 80),
    ) {
        let mut h = Harness::new();
        let deadline = 20 * MS;
        let ids: Vec<CallId> = (0..fates.len() as u64).map(|i| h.call(i, deadline)).collect();
        let reqs = requests(&h.sent());
        // The server's frames, each with the millisecond it arrives at.
        let mut replies: Vec<(u32, u64, Vec<u8>)> = Vec::new();
        for (i, ((wire, value), fate)) in reqs.iter().zip(&fates).enumerate() {
            let copies = match fate { Fate::Answer => 1, Fate::Lose => 0, Fate::Duplicate => 2 };
            for c in 0..copies {
                replies.push((delays[(i + c) % delays.len()], *wire, value.to_le_bytes().to_vec()));
            }
        }
        // Reorder within each arrival time too.
        for (i, pick) in order.iter().enumerate().take(replies.len()) {
            let j = pick.index(replies.len());
            replies.swap(i, j);
        }
        replies.sort_by_key(|r| r.0);
        let mut outcome: Vec<Option<Result<Vec<u8>, Error>>> = ids.iter().map(|_| None).collect();
        let mut expected_stale = 0;
        let mut checked = false;
        for (at, wire, payload) in &replies {
            if *at * MS >= deadline && !std::mem::replace(&mut checked, true) {
                no_call_ends_early(&mut h, &ids, &outcome, deadline)?;
            }
            h.advance_to(*at * MS);
            let index = CallId::from_u64(*wire).index as usize;
            let index = ids.iter().position(|id| id.index as usize == index).unwrap();
            if outcome[index].is_none() {
                // Timed out before this reply came?
                outcome[index] = h.try_finished(ids[index]).map(|(result, _)| result);
            }
            let waiting = outcome[index].is_none();
            h.deliver(&response(*wire, payload)).unwrap();
            if waiting {
                let (result, received) = h.finished(ids[index]);
                prop_assert_eq!(received, h.at(*at * MS));
                outcome[index] = Some(result);
            } else {
                expected_stale += 1;
            }
        }
        if !checked {
            no_call_ends_early(&mut h, &ids, &outcome, deadline)?;
        }
        if h.now < h.at(deadline) {
            h.advance_to(deadline);
        }
        for (i, id) in ids.iter().enumerate() {
            let result = match outcome[i].take() {
                Some(result) => result,
                None => h.finished(*id).0,
            };
            match (&fates[i], result) {
                (_, Ok(bytes)) => prop_assert_eq!(bytes, (i as u64).to_le_bytes().to_vec()),
                (Fate::Lose, Err(Error::Timeout)) => {}
                (_, Err(Error::Timeout)) => {
                    prop_assert!(delays[i % delays.len()] >= 20, "answered in time yet timed out");
                }
                (_, Err(e)) => prop_assert!(false, "call {} failed with {:?}", i, e),
            }
        }
        prop_assert_eq!(h.counters.stale.get(), expected_stale);
        prop_assert_eq!(h.core.in_flight(), 0);
        prop_assert!(h.core.is_live());
    }
}

/// Under TLS the client retires a connection whose keys have sealed half the
/// records their cipher allows: no new calls, the ones in flight are
/// answered, then it closes (the pool opens a fresh one).
#[cfg(feature = "tls")]
#[test]
fn a_tls_connection_is_retired_at_half_its_record_limit() {
    use super::tls::{take_batch, RECORD_LIMIT};
    RECORD_LIMIT.with(|l| l.set(Some(8)));
    let (server, client) = super::tls::tests::pair();
    let mut h = Harness::new();
    h.core = ClientCore::new(h.now, config(1024), h.counters.clone()).with_tls(client);
    let mut server = Some(Box::new(server));
    let (mut s_cipher, mut s_plain) = (RecvBuf::new(64 << 10), RecvBuf::new(64 << 10));
    let mut c_cipher = RecvBuf::new(64 << 10);
    // Client → server: what the core transmits, opened by the server session.
    let mut to_server = |h: &mut Harness, server: &mut TlsSlot| {
        while let Some(batch) = h.core.poll_transmit() {
            s_cipher.append(&batch.bytes);
            h.core.transmit_done(h.now, batch);
            server
                .as_mut()
                .unwrap()
                .open(&mut s_cipher, &mut s_plain)
                .unwrap();
        }
    };
    // Server → client: `frames` sealed by the server session, opened by the core.
    let mut to_client = |h: &mut Harness, server: &mut TlsSlot, frames: &mut Vec<u8>| {
        let sealed = take_batch(server, frames, Vec::new());
        c_cipher.append(&sealed);
        let now = h.now;
        h.core.open(now, &mut c_cipher, &mut h.rx).unwrap();
        while let Decoded::Frame(_) = h.core.handle_next(now, &mut h.rx).unwrap() {}
    };
    to_server(&mut h, &mut server);
    to_client(&mut h, &mut server, &mut Vec::new());
    to_server(&mut h, &mut server);
    to_client(&mut h, &mut server, &mut Vec::new());
    // One record per call: the fourth seals record 4 of 8, and retires.
    let mut ids = Vec::new();
    for i in 0..4 {
        assert!(h.core.is_live(), "call {i}: still live");
        ids.push(h.call(i, INTERVAL));
        to_server(&mut h, &mut server);
    }
    assert!(
        !h.core.is_live() && !h.core.has_room(),
        "retired: no new calls"
    );
    assert!(!h.core.is_closed(), "the calls in flight go on");
    let mut wire = Vec::new();
    let mut frames = Vec::new();
    while let Decoded::Frame(hd) =
        decode_frame(s_plain.unconsumed(), DecodeOptions::default()).unwrap()
    {
        wire.push(hd.call_id);
        s_plain.consume(hd.frame_len());
    }
    assert_eq!(wire.len(), 4, "every request arrived");
    for call_id in &wire {
        frames.extend(response(*call_id, b"ok"));
    }
    to_client(&mut h, &mut server, &mut frames);
    for id in ids {
        assert_eq!(h.finished(id).0.unwrap(), b"ok");
    }
    assert!(
        h.core.is_closed(),
        "closed once the calls in flight were answered"
    );
    RECORD_LIMIT.with(|l| l.set(None));
}
