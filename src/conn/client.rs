//! The client side of a connection, sans I/O: [`ClientCore`].
//!
//! The core holds the call table (slab slot + generation = wire call id), the
//! send buffer requests are serialised into, the lifecycle (live, draining
//! after a goaway or a retire, closed), the per-call deadlines, the heartbeat
//! and the timing of recent write batches. The driver feeds it:
//! - received bytes: [`handle_next`](ClientCore::handle_next) decodes and
//!   handles the frame at the front of a [`RecvBuf`] (call it until it says
//!   `Incomplete`);
//! - sends: [`poll_transmit`](ClientCore::poll_transmit) hands out everything
//!   queued as one buffer, [`transmit_done`](ClientCore::transmit_done) takes
//!   it back once sent;
//! - time: [`poll_timeout`](ClientCore::poll_timeout) says when
//!   [`handle_timeout`](ClientCore::handle_timeout) must run next;
//!   [`timeout_moved_earlier`](ClientCore::timeout_moved_earlier) says a new
//!   call made that earlier than what the driver sleeps towards.
//!
//! After any call the driver checks [`wants_write`](ClientCore::wants_write)
//! (wake the writer) and [`is_closed`](ClientCore::is_closed) (shut the socket).
//!
//! Invariants: once closed, every call still in the table has been completed
//! with `ConnectionLost`, or `NotSent` when its request had not been handed
//! to the driver yet (it never left the process); a call fails with `Timeout` only when the `now` it
//! is handled at has reached its deadline, never before; a reply to a vacant,
//! reused or already finished slot is counted as stale and dropped; a ping is
//! sent `heartbeat_interval` after the last complete frame, and the connection
//! is closed if no complete frame arrived `heartbeat_timeout` after the ping.

use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::app_error::AppError;
use crate::client::Counters;
use crate::message::Out;
#[cfg(test)]
use crate::message::{serialize_out, Message};
use crate::protocol::metadata::Metadata;
use crate::protocol::segment::Segment;
use crate::protocol::{
    begin_frame, decode_frame, CallId, CallTable, DecodeOptions, Decoded, ErrorCode, FrameHeader,
    FrameKind, ProtocolError, HEADER_LEN,
};
use crate::runtime::batch::Batch;
use crate::runtime::buf::{FrameBytes, RecvBuf};
use crate::tls::HandshakeFailure;
use crate::Error;

#[cfg(feature = "tls")]
use super::tls::TlsSession;
use super::tls::{self, Opened};

/// What a client connection needs to know of the client's settings.
#[derive(Debug, Clone)]
pub(crate) struct ClientCoreConfig {
    /// Most calls in flight (`has_room` is false at the limit).
    pub max_in_flight: usize,
    /// Largest frame sent or accepted.
    pub max_frame: usize,
    /// Whether frames sent carry a data digest.
    pub data_digest: bool,
    /// Silence after which a ping is sent.
    pub heartbeat_interval: Duration,
    /// Time a ping may go without any frame back before the connection is dead.
    pub heartbeat_timeout: Duration,
}

/// A call's slot: its deadline, timing, and its reply (once it has one).
struct Slot {
    deadline: Instant,
    started: Instant,
    /// The write batch its request went out in (for the queue/wire split).
    batch: u32,
    state: SlotState,
}

/// Waiting for the reply, or holding it (and when it came) until the caller takes it.
enum SlotState {
    Waiting(Option<Waker>),
    Done(Result<FrameBytes, Error>, Instant),
}

impl SlotState {
    /// Completes a waiting call and wakes its task; a finished one is left alone.
    fn complete(&mut self, result: Result<FrameBytes, Error>, at: Instant) -> bool {
        match std::mem::replace(self, SlotState::Done(result, at)) {
            SlotState::Waiting(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
                true
            }
            done => {
                *self = done;
                false
            }
        }
    }
}

/// A finished call as handed to its caller.
pub(crate) struct Finished {
    pub result: Result<FrameBytes, Error>,
    pub started: Instant,
    pub received: Instant,
}

/// Completion times of the most recent write batches, indexed by `seq % len`.
const WRITTEN_RING: usize = 64;

/// Call slots a new connection reserves. The table grows (doubling) up to
/// `max_in_flight` as calls pile up and keeps what it grew to, so a busy
/// connection stops allocating once warm, while an idle or lightly used one
/// holds a few KiB rather than `max_in_flight` slots (~120 KiB at the
/// default 1024).
pub(super) const INITIAL_CALL_SLOTS: usize = 16;

/// The call slots a connection of `cfg` starts with (and keeps when idle).
fn initial_slots(cfg: &ClientCoreConfig) -> usize {
    cfg.max_in_flight.min(INITIAL_CALL_SLOTS)
}

/// A connection's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// The server sent goaway (or the pool retired it): no new calls; close
    /// once the last one completes.
    Draining,
    Closed,
}

/// The client side of one multiplexed connection, without its socket.
pub(crate) struct ClientCore {
    cfg: ClientCoreConfig,
    counters: Rc<Counters>,
    calls: CallTable<Slot>,
    /// Frames queued for the next send.
    out: Vec<u8>,
    /// The blobs `out`'s requests send by reference (plaintext only).
    segments: Vec<Segment>,
    /// The batch `out` and `segments` move into when they are handed out (kept empty).
    spare: Batch,
    /// Sequence number of the batch the driver is sending, if any.
    sending: Option<u32>,
    state: State,
    /// When the last complete frame arrived (liveness).
    last_rx: Instant,
    /// The latest time the core was told (for events that carry none).
    clock: Instant,
    /// Earliest deadline of a waiting call, or later (lowered by new calls,
    /// recomputed when calls expire).
    next_deadline: Option<Instant>,
    /// What `poll_timeout` last returned: the instant the driver sleeps towards.
    armed: Option<Instant>,
    /// A new call's deadline fell before `armed`.
    moved_earlier: bool,
    /// When the unanswered ping was sent.
    ping_sent: Option<Instant>,
    ping_seq: u64,
    /// Sequence number of the batch now being filled.
    batch: u32,
    /// Calls ever started here (the adaptive pool watches it for idleness).
    started: u64,
    /// (batch, completion time) of recent writes; only kept when timing is on.
    written: [(u32, Option<Instant>); WRITTEN_RING],
    /// The TLS session, on a TLS connection: `out` then holds plaintext
    /// frames (kept there until the handshake finishes) and `poll_transmit`
    /// hands out the records sealing them.
    tls: tls::TlsSlot,
}

impl ClientCore {
    /// A live connection that came up at `now` (its heartbeat counts from then).
    pub fn new(now: Instant, cfg: ClientCoreConfig, counters: Rc<Counters>) -> Self {
        Self {
            calls: CallTable::with_capacity(initial_slots(&cfg)),
            cfg,
            counters,
            out: Vec::new(),
            segments: Vec::new(),
            spare: Batch::default(),
            sending: None,
            state: State::Live,
            last_rx: now,
            clock: now,
            next_deadline: None,
            armed: None,
            moved_earlier: false,
            ping_sent: None,
            ping_seq: 0,
            batch: 0,
            started: 0,
            written: [(u32::MAX, None); WRITTEN_RING],
            tls: None,
        }
    }

    /// Makes this a TLS connection: nothing is read or sent in clear.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, session: TlsSession) -> Self {
        self.tls = Some(Box::new(session));
        self
    }

    /// True on a TLS connection (its bytes go through [`open`](Self::open)).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Decrypts the ciphertext in `cipher`, received at `now`, into `plain`,
    /// where [`handle_next`](Self::handle_next) then finds the frames. A
    /// failure closes the connection (every call fails with `ConnectionLost`).
    pub fn open(
        &mut self,
        now: Instant,
        cipher: &mut RecvBuf,
        plain: &mut RecvBuf,
    ) -> Result<Opened, HandshakeFailure> {
        let Some(session) = self.tls.as_mut() else {
            return Ok(Opened::default());
        };
        let opened = session.open(cipher, plain);
        if opened.is_err() {
            self.close(now);
        }
        opened
    }

    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    /// True if a new call may be started here now.
    pub fn has_room(&self) -> bool {
        self.state == State::Live && self.calls.len() < self.cfg.max_in_flight
    }

    /// True while the connection accepts calls (it may be at its in-flight limit).
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// True once the connection is closed (the driver then shuts its socket).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Calls ever started on this connection.
    pub fn calls_started(&self) -> u64 {
        self.started
    }

    /// Calls in flight on this connection.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Stops accepting new calls; closes once the calls in flight finish.
    pub fn retire(&mut self) {
        if self.state == State::Live {
            self.state = State::Draining;
            if self.calls.is_empty() {
                self.close(self.clock);
            }
        }
    }

    /// Closes the connection at `now` and fails every call in flight: with
    /// `NotSent` if its request is still in the batch being filled (never
    /// handed to the socket, so it did not run), else with `ConnectionLost`.
    pub fn close(&mut self, now: Instant) {
        self.tick(now);
        if std::mem::replace(&mut self.state, State::Closed) == State::Closed {
            return;
        }
        let filling = self.batch;
        for (_, slot) in self.calls.iter_mut() {
            let error = if slot.batch == filling {
                Error::NotSent
            } else {
                Error::ConnectionLost
            };
            slot.state.complete(Err(error), now);
        }
        self.counters.conn_lost();
    }

    /// Registers a call made at `now` that fails with [`Error::Timeout`] at
    /// `deadline`, and queues its request frame. The caller must then poll
    /// [`poll_reply`](Self::poll_reply), and call [`forget`](Self::forget) if
    /// it gives up first. A closed connection refuses with `NotSent`.
    #[cfg(test)]
    pub fn start_call<Req: Message>(
        &mut self,
        now: Instant,
        method: u32,
        deadline: Instant,
        req: &Req,
        metadata: Option<&Metadata>,
    ) -> Result<CallId, Error> {
        self.start_call_with(
            now,
            method,
            (deadline, deadline.saturating_duration_since(now)),
            |out| serialize_out(req, out),
            metadata,
        )
    }

    /// Like `start_call` (which serialises a typed request, used by the
    /// tests) with the payload written by `encode` at the end of the send
    /// buffer (16-byte aligned there): the request serialised in place, or an
    /// archive serialised earlier on another thread.
    ///
    /// `(deadline, budget)`: when the call times out here, and the budget the
    /// server is told it has, `deadline - now` (the caller passes it so that
    /// the call path, which knows it already, does no clock arithmetic).
    pub fn start_call_with(
        &mut self,
        now: Instant,
        method: u32,
        (deadline, budget): (Instant, Duration),
        encode: impl FnOnce(Out<'_>) -> Result<(), ProtocolError>,
        metadata: Option<&Metadata>,
    ) -> Result<CallId, Error> {
        if self.state == State::Closed {
            return Err(Error::NotSent);
        }
        self.tick(now);
        let slot = Slot {
            deadline,
            started: now,
            batch: self.batch,
            state: SlotState::Waiting(None),
        };
        let id = self.calls.insert(slot);
        let start = begin_frame(&mut self.out);
        let mut header = self.header(FrameKind::Request);
        header.call_id = id.to_u64();
        header.method = method;
        header.budget_us = u32::try_from(budget.as_micros()).unwrap_or(u32::MAX).max(1);
        if let Some(md) = metadata.filter(|md| !md.is_empty()) {
            header.flags |= FrameHeader::METADATA;
            md.encode_into(&mut self.out);
        }
        let encoded = super::encode_frame_with(
            (&mut self.out, &mut self.segments),
            self.tls.is_none(),
            (start, header, self.cfg.max_frame),
            encode,
        );
        if let Err(e) = encoded {
            self.calls.remove(id);
            return Err(e.into());
        }
        self.counters.call_started();
        self.started += 1;
        if self.next_deadline.is_none_or(|next| deadline < next) {
            self.next_deadline = Some(deadline);
            if self.armed.is_none_or(|armed| deadline < armed) {
                self.moved_earlier = true;
            }
        }
        Ok(id)
    }

    /// Polls for the reply to `id`; on `Ready` the slot has been freed.
    pub fn poll_reply(&mut self, id: CallId, cx: &mut Context<'_>) -> Poll<Finished> {
        match self.calls.get_mut(id).map(|slot| &mut slot.state) {
            Some(SlotState::Waiting(waker)) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(SlotState::Done(..)) => match self.calls.remove(id) {
                Some(Slot {
                    started,
                    state: SlotState::Done(result, received),
                    ..
                }) => {
                    self.after_removal();
                    Poll::Ready(Finished {
                        result,
                        started,
                        received,
                    })
                }
                _ => Poll::Ready(self.vanished()),
            },
            None => Poll::Ready(self.vanished()),
        }
    }

    fn vanished(&self) -> Finished {
        Finished {
            result: Err(Error::ConnectionLost),
            started: self.clock,
            received: self.clock,
        }
    }

    /// Frees the slot of a call whose caller gave up (its future was dropped).
    ///
    /// Only a call still in the table (its caller dropped the future before
    /// taking the result) is removed here; that counts as cancelled.
    pub fn forget(&mut self, id: CallId) {
        if self.calls.remove(id).is_some() {
            self.counters.cancelled();
            // Tell the server, so a handler still running for it stops (the
            // frame leaves with the next write; nothing if already closed).
            if self.state != State::Closed {
                self.push_control(FrameKind::Cancel, id.to_u64());
            }
            self.after_removal();
        }
    }

    fn after_removal(&mut self) {
        self.counters.slot_freed();
        if self.state == State::Draining && self.calls.is_empty() {
            self.close(self.clock);
        }
    }

    /// A header of `kind` with the data digest flag as configured.
    fn header(&self, kind: FrameKind) -> FrameHeader {
        FrameHeader::new(kind).with_data_digest(self.cfg.data_digest)
    }

    fn push_control(&mut self, kind: FrameKind, call_id: u64) {
        let (digest, max) = (self.cfg.data_digest, self.cfg.max_frame);
        super::push_control(&mut self.out, kind, call_id, digest, max);
    }

    /// True when frames are queued and the driver's writer is idle: wake it.
    pub fn wants_write(&self) -> bool {
        self.state != State::Closed
            && self.sending.is_none()
            && tls::has_output(&self.tls, &self.out)
    }

    /// Everything queued, as one batch to send (at most one is out at a time).
    /// Hand it back with [`transmit_done`](Self::transmit_done) once sent.
    pub fn poll_transmit(&mut self) -> Option<Batch> {
        if !self.wants_write() {
            return None;
        }
        let seq = self.batch;
        self.batch = seq.wrapping_add(1);
        self.sending = Some(seq);
        let mut batch = std::mem::take(&mut self.spare);
        batch.bytes = tls::take_batch(&mut self.tls, &mut self.out, batch.bytes);
        std::mem::swap(&mut batch.segments, &mut self.segments);
        self.counters.bytes_out(batch.len());
        self.rotate_keys();
        Some(batch)
    }

    /// Under TLS, when the keys have protected half the records their cipher
    /// allows: takes no new calls here (the pool opens a fresh connection)
    /// and closes once the calls in flight are answered; at the limit itself,
    /// at once.
    fn rotate_keys(&mut self) {
        match &self.tls {
            Some(tls) if tls.is_lost() => self.close(self.clock),
            Some(tls) if tls.should_rotate() => self.retire(),
            _ => {}
        }
    }

    /// The buffer from [`poll_transmit`](Self::poll_transmit) was sent
    /// completely at `now`; it is kept for reuse.
    pub fn transmit_done(&mut self, now: Instant, mut sent: Batch) {
        self.tick(now);
        if let Some(seq) = self.sending.take() {
            if self.counters.timing {
                self.written[seq as usize % WRITTEN_RING] = (seq, Some(now));
            }
        }
        sent.clear();
        self.spare = sent;
    }

    /// Decodes and handles the frame at the front of `buf`, received at `now`,
    /// and consumes it. `Incomplete` says how many bytes the front frame needs
    /// in all. An error closes the connection (every call fails).
    pub fn handle_next(
        &mut self,
        now: Instant,
        buf: &mut RecvBuf,
    ) -> Result<Decoded, ProtocolError> {
        let opts = DecodeOptions::new(self.cfg.max_frame);
        let header = match decode_frame(buf.unconsumed(), opts) {
            Ok(Decoded::Frame(header)) => header,
            Ok(incomplete) => return Ok(incomplete),
            Err(e) => return Err(self.fail(now, e)),
        };
        let payload = buf.view(HEADER_LEN, header.len as usize);
        buf.consume(header.frame_len());
        match self.handle_frame(now, header, payload) {
            Ok(()) => Ok(Decoded::Frame(header)),
            Err(e) => Err(self.fail(now, e)),
        }
    }

    fn fail(&mut self, now: Instant, e: ProtocolError) -> ProtocolError {
        self.close(now);
        e
    }

    /// Handles one complete frame received at `now` (its digests checked).
    /// An error is a protocol violation: the caller closes the connection.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        header: FrameHeader,
        payload: FrameBytes,
    ) -> Result<(), ProtocolError> {
        self.tick(now);
        // Liveness counts complete frames only: bytes of a frame whose
        // (corrupted) length never completes must not keep it alive.
        self.last_rx = now;
        match header.kind {
            FrameKind::Response => self.complete(&header, Ok(payload)),
            FrameKind::Error if header.flags & FrameHeader::TYPED != 0 => {
                let error = Error::Application(AppError::new(&payload));
                self.complete(&header, Err(error));
            }
            FrameKind::Error => {
                let error = match ErrorCode::from_u32(header.method) {
                    ErrorCode::DeadlineExceeded => Error::Timeout,
                    ErrorCode::Overloaded => Error::Overloaded,
                    ErrorCode::PermissionDenied => {
                        Error::PermissionDenied(String::from_utf8_lossy(&payload).into_owned())
                    }
                    code => Error::Remote {
                        code,
                        message: String::from_utf8_lossy(&payload).into_owned(),
                    },
                };
                self.complete(&header, Err(error));
            }
            FrameKind::Ping => self.push_control(FrameKind::Pong, header.call_id),
            FrameKind::Pong => {}
            FrameKind::GoAway => self.retire(),
            kind @ (FrameKind::Request | FrameKind::Cancel) => {
                return Err(ProtocolError::Unexpected(kind))
            }
        }
        Ok(())
    }

    fn complete(&mut self, header: &FrameHeader, result: Result<FrameBytes, Error>) {
        let id = CallId::from_u64(header.call_id);
        let received = self.last_rx;
        let Some(slot) = self.calls.get_mut(id) else {
            return self.counters.stale();
        };
        if !slot.state.complete(result, received) {
            return self.counters.stale();
        }
        if self.counters.timing {
            let written = written_at(&self.written, slot.batch);
            self.counters.reply_phases(slot.started, written, received);
            if header.kind == FrameKind::Response {
                self.counters.remote_handler(header.budget_us);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run: the
    /// earliest call deadline or heartbeat instant; `None` once closed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.moved_earlier = false;
        self.armed = if self.state == State::Closed {
            None
        } else {
            let heartbeat = match self.ping_sent {
                Some(sent) => sent + self.cfg.heartbeat_timeout,
                None => self.last_rx + self.cfg.heartbeat_interval,
            };
            Some(self.next_deadline.map_or(heartbeat, |d| d.min(heartbeat)))
        };
        self.armed
    }

    /// True when a call made since the last [`poll_timeout`](Self::poll_timeout)
    /// is due before the instant it returned: the driver must call it again.
    pub fn timeout_moved_earlier(&self) -> bool {
        self.moved_earlier
    }

    /// Runs what is due at `now`: fails overdue calls with `Timeout`, sends a
    /// ping on an idle connection, closes one whose ping went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.state == State::Closed {
            return;
        }
        if self.next_deadline.is_some_and(|next| next <= now) {
            self.expire(now);
        }
        self.heartbeat(now);
    }

    /// Times out every waiting call due by `now` and records the next deadline.
    fn expire(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for (_, slot) in self.calls.iter_mut() {
            if !matches!(slot.state, SlotState::Waiting(_)) {
                continue;
            }
            if slot.deadline <= now {
                slot.state.complete(Err(Error::Timeout), now);
            } else if next.is_none_or(|n| slot.deadline < n) {
                next = Some(slot.deadline);
            }
        }
        self.next_deadline = next;
    }

    /// Pings exactly `interval` after the last complete frame; closes when no
    /// complete frame arrived within `timeout` of the ping.
    fn heartbeat(&mut self, now: Instant) {
        if let Some(sent) = self.ping_sent {
            let timeout = self.cfg.heartbeat_timeout;
            if now < sent + timeout {
                return;
            }
            if self.last_rx < sent {
                tracing::warn!(?timeout, "no answer to heartbeat; closing connection");
                self.counters.heartbeat_timed_out();
                return self.close(now);
            }
            self.ping_sent = None;
        }
        if now >= self.last_rx + self.cfg.heartbeat_interval {
            self.release_idle_memory();
            self.ping_seq += 1;
            self.push_control(FrameKind::Ping, self.ping_seq);
            self.counters.ping();
            self.ping_sent = Some(now);
        }
    }

    /// Call slots, and the capacities of the send buffer and its spare (for
    /// the deterministic tests).
    #[cfg(test)]
    pub(super) fn room(&self) -> (usize, usize, usize) {
        (
            self.calls.capacity(),
            self.out.capacity(),
            self.spare.capacity(),
        )
    }

    /// After a heartbeat interval of silence, with no call in flight and
    /// nothing being sent: gives back the send buffers and the call slots a
    /// burst grew (they grow again when calls come), so an idle connection
    /// holds a few KiB whatever it carried before.
    fn release_idle_memory(&mut self) {
        if self.calls.is_empty() && self.out.is_empty() && self.sending.is_none() {
            self.out = Vec::new();
            self.segments = Vec::new();
            self.spare = Batch::default();
            self.calls.release_room(initial_slots(&self.cfg));
        }
    }
}

fn written_at(written: &[(u32, Option<Instant>); WRITTEN_RING], batch: u32) -> Option<Instant> {
    match written[batch as usize % WRITTEN_RING] {
        (b, at) if b == batch => at,
        _ => None,
    }
}

impl super::Transmit for ClientCore {
    fn is_closed(&self) -> bool {
        ClientCore::is_closed(self)
    }

    fn poll_transmit(&mut self) -> Option<Batch> {
        ClientCore::poll_transmit(self)
    }
}
