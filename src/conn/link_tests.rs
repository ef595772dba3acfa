//! Deterministic tests of a [`ClientCore`] and a [`ServerCore`] joined by an
//! in-memory link that carries whole frames, losing and delaying (so
//! reordering) them as each test says, on the server tests' fake clock:
//! loss and reordering under a deadline, goaway under load, drain.

use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::server_tests::{config, kinds, split, value_of, Handle, Server, METHOD, MS, SECOND};
use super::{ClientCore, ClientCoreConfig, ServerCoreConfig};
use crate::client::Counters;
use crate::protocol::{CallId, Decoded, FrameHeader, FrameKind, DEFAULT_MAX_FRAME};
use crate::runtime::buf::RecvBuf;
use crate::Error;

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
            frames.extend(split(&batch.to_stream()));
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
