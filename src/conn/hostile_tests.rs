//! A hostile or broken server against the client core: arbitrary sequences
//! of valid replies and error frames, stale and unknown call ids, control
//! frames, frames a server must never send, damaged frames and raw garbage,
//! delivered whole and in arbitrary pieces.
//!
//! What must hold whatever the server sends (the server-side counterpart is
//! the `server_conn` fuzz target):
//! - nothing panics, and the outcome of every call (and whether, and where,
//!   the connection failed) does not depend on how reads split the stream;
//! - a call ends only with its own reply or error frame, and at most once: a
//!   reply to the right slot with the wrong generation, or to an id never
//!   used, completes nothing;
//! - the first protocol error closes the connection and fails every call
//!   still waiting with `ConnectionLost`; the calls answered before it keep
//!   their replies;
//! - everything the core sends meanwhile is a well-formed frame, and every
//!   ping is answered with a pong carrying its id.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

use super::tests::{frame, requests, Harness};
use crate::protocol::{CallId, FrameHeader, FrameKind};
use crate::Error;

/// Calls in flight when the server starts talking.
const CALLS: usize = 8;

/// One thing the server sends. `usize` fields pick one of the calls.
#[derive(Debug, Clone)]
enum Piece {
    /// The call's reply.
    Reply(usize, Vec<u8>),
    /// An error frame for the call: code, the typed-error flag, message.
    Failure(usize, u32, bool, Vec<u8>),
    /// A reply to the call's slot under another generation: always stale.
    StaleReply(usize, u32, Vec<u8>),
    /// A reply to an id the client never gave out.
    Stranger(u64, Vec<u8>),
    Ping(u64),
    Pong(u64),
    GoAway,
    /// A request (or a cancel) from the server: always a protocol error.
    Forbidden(bool),
    /// A stranger's reply with one byte XORed: rejected, unless the byte lies
    /// in the padding (then it is just a stale reply).
    Damaged(u64, Vec<u8>, Index, u8),
    /// Raw bytes (no server sends them; they break the stream unless they
    /// end it as an incomplete frame).
    Garbage(Vec<u8>),
}

impl Piece {
    /// May this piece break the stream (so calls after it may end `ConnectionLost`)?
    fn may_break(&self) -> bool {
        matches!(
            self,
            Self::Forbidden(_) | Self::Damaged(..) | Self::Garbage(_)
        )
    }

    /// The call this piece decides, if it is a valid answer to one.
    fn decides(&self) -> Option<usize> {
        match self {
            Self::Reply(call, _) | Self::Failure(call, ..) => Some(*call),
            _ => None,
        }
    }

    /// The piece's bytes, with `wire[i]` the wire id of call `i`.
    fn bytes(&self, wire: &[u64]) -> Vec<u8> {
        match self {
            Self::Reply(call, payload) => frame(FrameKind::Response, wire[*call], 0, payload),
            Self::Failure(call, code, typed, message) => {
                let mut header = FrameHeader::new(FrameKind::Error);
                header.call_id = wire[*call];
                header.method = *code;
                if *typed {
                    header.flags |= FrameHeader::TYPED;
                }
                let mut out = Vec::new();
                crate::protocol::encode_frame(&mut out, header, message, 1 << 20).unwrap();
                out
            }
            Self::StaleReply(call, bump, payload) => {
                let mut id = CallId::from_u64(wire[*call]);
                id.generation = id.generation.wrapping_add(1 + bump % 1000);
                frame(FrameKind::Response, id.to_u64(), 0, payload)
            }
            Self::Stranger(id, payload) => frame(FrameKind::Response, stranger(*id), 0, payload),
            Self::Ping(id) => frame(FrameKind::Ping, *id, 0, &[]),
            Self::Pong(id) => frame(FrameKind::Pong, *id, 0, &[]),
            Self::GoAway => frame(FrameKind::GoAway, 0, 0, &[]),
            Self::Forbidden(cancel) => {
                let kind = if *cancel {
                    FrameKind::Cancel
                } else {
                    FrameKind::Request
                };
                frame(kind, wire[0], 1, &[])
            }
            Self::Damaged(id, payload, at, xor) => {
                let mut bytes = frame(FrameKind::Response, stranger(*id), 0, payload);
                let at = at.index(bytes.len());
                bytes[at] ^= (*xor).max(1);
                bytes
            }
            Self::Garbage(bytes) => bytes.clone(),
        }
    }
}

/// A wire id whose slot index no call of these tests ever has.
fn stranger(raw: u64) -> u64 {
    let id = CallId::from_u64(raw);
    CallId {
        index: 1_000 + id.index % 1_000_000,
        generation: id.generation,
    }
    .to_u64()
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..80),
        // Past the receive buffer's 4 KiB chunks: frames straddle them.
        1 => prop::collection::vec(any::<u8>(), 4_000..6_000),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    let call = 0..CALLS;
    prop_oneof![
        6 => (call.clone(), payload()).prop_map(|(c, p)| Piece::Reply(c, p)),
        2 => (call.clone(), any::<u32>(), any::<bool>(), payload())
            .prop_map(|(c, code, typed, m)| Piece::Failure(c, code, typed, m)),
        2 => (call, any::<u32>(), payload()).prop_map(|(c, b, p)| Piece::StaleReply(c, b, p)),
        1 => (any::<u64>(), payload()).prop_map(|(id, p)| Piece::Stranger(id, p)),
        1 => any::<u64>().prop_map(Piece::Ping),
        1 => any::<u64>().prop_map(Piece::Pong),
        1 => Just(Piece::GoAway),
        1 => any::<bool>().prop_map(Piece::Forbidden),
        1 => (any::<u64>(), payload(), any::<Index>(), any::<u8>())
            .prop_map(|(id, p, at, x)| Piece::Damaged(id, p, at, x)),
        1 => prop::collection::vec(any::<u8>(), 0..100).prop_map(Piece::Garbage),
    ]
}

/// What one delivery of the stream came to.
#[derive(Debug, PartialEq)]
struct Run {
    /// Per call: `Ok(reply bytes)`, `Err(the error, debug-printed)`, or `None` (still waiting).
    outcomes: Vec<Option<Result<Vec<u8>, String>>>,
    /// The core reported a protocol error.
    failed: bool,
    closed: bool,
    /// The call ids of the pongs the core sent.
    pongs: Vec<u64>,
}

/// Starts `CALLS` calls, then feeds the core the server's `pieces` cut at `cuts`.
fn run(pieces: &[Piece], cuts: &[Index]) -> Run {
    let mut h = Harness::new();
    let ids: Vec<CallId> = (0..CALLS as u64)
        .map(|i| h.call(i, Duration::from_secs(10)))
        .collect();
    let mut wire = vec![0; CALLS];
    for (id, value) in requests(&h.sent()) {
        wire[value as usize] = id;
    }
    let stream: Vec<u8> = pieces.iter().flat_map(|p| p.bytes(&wire)).collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.extend([0, stream.len()]);
    at.sort_unstable();
    at.dedup();
    let mut failed = false;
    for piece in at.windows(2) {
        if h.deliver(&stream[piece[0]..piece[1]]).is_err() {
            failed = true;
            break;
        }
    }
    let closed = h.core.is_closed();
    // Everything the core sends must decode (`sent` panics otherwise).
    let pongs = h
        .sent()
        .iter()
        .filter(|(header, _)| header.kind == FrameKind::Pong)
        .map(|(header, _)| header.call_id)
        .collect();
    let outcomes = ids
        .iter()
        .map(|id| {
            h.try_finished(*id)
                .map(|(result, _)| result.map_err(|e| format!("{e:?}")))
        })
        .collect();
    if closed {
        assert_eq!(h.core.in_flight(), 0, "a closed core holds no call");
    }
    Run {
        outcomes,
        failed,
        closed,
        pongs,
    }
}

/// Checks `run` against what `pieces` say each call's outcome must be.
fn check(pieces: &[Piece], run: &Run) -> Result<(), TestCaseError> {
    let lost = format!("{:?}", Error::ConnectionLost);
    let mut broken = false;
    let mut decided = [false; CALLS];
    for piece in pieces {
        broken |= piece.may_break();
        let Some(call) = piece.decides() else {
            continue;
        };
        if std::mem::replace(&mut decided[call], true) {
            continue; // a later answer to a decided call is stale
        }
        let got = &run.outcomes[call];
        let lost_here = got
            .as_ref()
            .is_some_and(|r| r.as_ref().err() == Some(&lost));
        if broken && run.failed && lost_here {
            continue; // the stream broke before this answer came in
        }
        match (piece, got) {
            (Piece::Reply(_, payload), Some(Ok(bytes))) => prop_assert_eq!(bytes, payload),
            (Piece::Failure(..), Some(Err(e))) => prop_assert_ne!(e, &lost),
            (_, other) => prop_assert!(false, "call {call}: {other:?} after {piece:?}"),
        }
    }
    for (call, got) in run.outcomes.iter().enumerate() {
        if !decided[call] {
            let expected = run.failed.then(|| Err(lost.clone()));
            prop_assert_eq!(got, &expected, "call {} was never answered", call);
        }
    }
    if pieces.iter().any(|p| matches!(p, Piece::Forbidden(_))) {
        prop_assert!(
            run.failed,
            "a request or cancel from the server is a protocol error"
        );
    }
    if run.failed {
        prop_assert!(run.closed, "a protocol error closes the connection");
    } else {
        let pings: Vec<u64> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Ping(id) => Some(*id),
                _ => None,
            })
            .collect();
        if !run.closed {
            prop_assert_eq!(&run.pongs, &pings, "every ping answered, in order");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a server sends, whole or in pieces: the same outcome, every
    /// call ends with its own answer or `ConnectionLost` after a protocol
    /// error, and nothing else.
    #[test]
    fn a_hostile_server_cannot_confuse_the_client(
        pieces in prop::collection::vec(piece(), 0..24),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let whole = run(&pieces, &[]);
        check(&pieces, &whole)?;
        let split = run(&pieces, &cuts);
        prop_assert_eq!(&split, &whole, "the outcome depends on the reads' split");
    }
}

/// Answers only the calls it knows, in a stream that breaks in the middle:
/// the ones answered before the break keep their replies, the rest fail
/// with `ConnectionLost`, and a stale generation completes nothing.
#[test]
fn replies_before_a_break_survive_it_and_stale_generations_complete_nothing() {
    let pieces = [
        Piece::Reply(0, b"zero".to_vec()),
        Piece::StaleReply(1, 0, b"not one".to_vec()),
        Piece::Failure(2, 0, false, b"no".to_vec()),
        Piece::Forbidden(false),
        Piece::Reply(3, b"too late".to_vec()),
    ];
    let run = run(&pieces, &[]);
    let lost = format!("{:?}", Error::ConnectionLost);
    assert!(run.failed && run.closed);
    assert_eq!(run.outcomes[0], Some(Ok(b"zero".to_vec())));
    assert_eq!(run.outcomes[1], Some(Err(lost.clone())));
    assert!(matches!(&run.outcomes[2], Some(Err(e)) if *e != lost));
    assert_eq!(run.outcomes[3], Some(Err(lost)));
    check(&pieces, &run).unwrap();
}
