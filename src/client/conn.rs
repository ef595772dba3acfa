//! One client connection: the call table, the send buffer, and its three loops.
//!
//! `start_call` puts a call in the slab, serialises the request frame straight
//! into the send buffer and schedules the writer once per scheduler turn, so
//! calls made together leave in one send. The single reader loop decodes replies
//! and completes calls by slab index (generation-checked) and wakes their
//! tasks; a timed-out or dropped call only frees its slot and never cancels a
//! socket read. Invariants: once the connection is closed every call still in
//! the table has been completed with `ConnectionLost`; a reply to a vacant or
//! reused slot is counted as stale and dropped.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{ClientConfig, Counters};
use crate::message::{serialize_into, Message};
use crate::protocol::{
    begin_frame, decode_frame, encode_frame, finish_frame, CallId, CallTable, DecodeOptions,
    Decoded, ErrorCode, FrameHeader, FrameKind, ProtocolError, HEADER_LEN,
};
use crate::runtime::buf::{FrameBytes, RecvBuf};
use crate::runtime::io::{self, Stream};
use crate::runtime::ReadChunk;
use crate::Error;

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

/// A finished call as handed to its caller.
pub(crate) struct Finished {
    pub result: Result<FrameBytes, Error>,
    pub started: Instant,
    pub received: Instant,
}

/// Completion times of the most recent write batches, indexed by `seq % len`.
const WRITTEN_RING: usize = 64;

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

/// A connection's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// The server sent goaway: no new calls; close once the last one completes.
    Draining,
    Closed,
}

/// A multiplexed connection to one endpoint, owned by one core.
pub(crate) struct ClientConn {
    stream: Stream,
    cfg: Rc<ClientConfig>,
    counters: Rc<Counters>,
    calls: RefCell<CallTable<Slot>>,
    out: RefCell<Vec<u8>>,
    writer: RefCell<Option<Waker>>,
    write_scheduled: Cell<bool>,
    state: Cell<State>,
    closed_waker: RefCell<Option<Waker>>,
    last_rx: Cell<Instant>,
    /// Earliest deadline the expiry task is sleeping towards (None: asleep until woken).
    next_deadline: Cell<Option<Instant>>,
    expiry_waker: RefCell<Option<Waker>>,
    /// Sequence number of the batch now being filled.
    batch: Cell<u32>,
    /// Calls ever started here (the adaptive pool watches it for idleness).
    started: Cell<u64>,
    /// (batch, completion time) of recent writes; only kept when timing is on.
    written: RefCell<[(u32, Option<Instant>); WRITTEN_RING]>,
}

impl ClientConn {
    pub fn new(stream: Stream, cfg: Rc<ClientConfig>, counters: Rc<Counters>) -> Rc<Self> {
        Rc::new(Self {
            stream,
            calls: RefCell::new(CallTable::with_capacity(cfg.max_in_flight.min(4096))),
            out: RefCell::new(Vec::new()),
            cfg,
            counters,
            writer: RefCell::new(None),
            write_scheduled: Cell::new(false),
            state: Cell::new(State::Live),
            closed_waker: RefCell::new(None),
            last_rx: Cell::new(Instant::now()),
            next_deadline: Cell::new(None),
            expiry_waker: RefCell::new(None),
            batch: Cell::new(0),
            started: Cell::new(0),
            written: RefCell::new([(u32::MAX, None); WRITTEN_RING]),
        })
    }

    /// True if a new call may be started here now.
    pub fn has_room(&self) -> bool {
        self.state.get() == State::Live && self.calls.borrow().len() < self.cfg.max_in_flight
    }

    /// True while the connection accepts calls (it may be at its in-flight limit).
    pub fn is_live(&self) -> bool {
        self.state.get() == State::Live
    }

    /// Calls ever started on this connection.
    pub fn calls_started(&self) -> u64 {
        self.started.get()
    }

    /// Stops routing new calls here and closes once the calls in flight finish.
    pub fn retire(&self) {
        if self.state.get() == State::Live {
            self.state.set(State::Draining);
            if self.calls.borrow().is_empty() {
                self.close();
            }
        }
    }

    /// Calls in flight on this connection.
    pub fn in_flight(&self) -> usize {
        self.calls.borrow().len()
    }

    /// Registers a call and queues its request frame. The caller must then poll
    /// [`poll_reply`](Self::poll_reply) and call [`forget`](Self::forget) if it gives up.
    /// The call fails with [`Error::Timeout`] at `deadline`; `now` is the current time.
    pub fn start_call<Req: Message>(
        &self,
        method: u32,
        deadline: Instant,
        now: Instant,
        req: &Req,
    ) -> Result<CallId, Error> {
        let budget = deadline.saturating_duration_since(now);
        let slot = Slot {
            deadline,
            started: now,
            batch: self.batch.get(),
            state: SlotState::Waiting(None),
        };
        let id = self.calls.borrow_mut().insert(slot);
        let mut out = self.out.borrow_mut();
        let start = begin_frame(&mut out);
        let mut header = self.header(FrameKind::Request);
        header.call_id = id.to_u64();
        header.method = method;
        header.budget_us = u32::try_from(budget.as_micros()).unwrap_or(u32::MAX).max(1);
        let encoded = serialize_into(req, &mut out)
            .and_then(|()| finish_frame(&mut out, start, header, self.cfg.max_frame));
        drop(out);
        if let Err(e) = encoded {
            self.out.borrow_mut().truncate(start);
            self.calls.borrow_mut().remove(id);
            return Err(e.into());
        }
        self.schedule_write();
        self.counters.call_started();
        self.started.set(self.started.get() + 1);
        if self.next_deadline.get().is_none_or(|next| deadline < next) {
            self.next_deadline.set(Some(deadline));
            if let Some(w) = self.expiry_waker.borrow_mut().take() {
                w.wake();
            }
        }
        Ok(id)
    }

    /// Polls for the reply to `id`; on `Ready` the slot has been freed.
    pub fn poll_reply(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Finished> {
        let mut calls = self.calls.borrow_mut();
        match calls.get_mut(id).map(|slot| &mut slot.state) {
            Some(SlotState::Waiting(waker)) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(SlotState::Done(..)) => match calls.remove(id) {
                Some(Slot {
                    started,
                    state: SlotState::Done(result, received),
                    ..
                }) => {
                    drop(calls);
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
        let now = Instant::now();
        Finished {
            result: Err(Error::ConnectionLost),
            started: now,
            received: now,
        }
    }

    /// Frees the slot of a call whose caller gave up (timeout or drop).
    ///
    /// Only a call still in the table (its caller dropped the future before
    /// taking the result) is removed here; that counts as cancelled.
    pub fn forget(&self, id: CallId) {
        let removed = self.calls.borrow_mut().remove(id).is_some();
        if removed {
            self.counters.cancelled();
            self.after_removal();
        }
    }

    fn after_removal(&self) {
        self.counters.slot_freed();
        if self.state.get() == State::Draining && self.calls.borrow().is_empty() {
            self.close();
        }
    }

    fn schedule_write(&self) {
        if !self.write_scheduled.replace(true) {
            if let Some(w) = self.writer.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// A header of `kind` with the data digest flag as configured.
    fn header(&self, kind: FrameKind) -> FrameHeader {
        FrameHeader::new(kind).with_data_digest(self.cfg.data_digest)
    }

    fn push_control(&self, kind: FrameKind, call_id: u64) {
        let mut header = self.header(kind);
        header.call_id = call_id;
        let _ = encode_frame(&mut self.out.borrow_mut(), header, &[], self.cfg.max_frame);
        self.schedule_write();
    }

    /// Closes the connection and fails every call in flight with `ConnectionLost` now.
    pub fn close(&self) {
        if self.state.replace(State::Closed) == State::Closed {
            return;
        }
        io::shutdown(&self.stream);
        let now = Instant::now();
        for (_, slot) in self.calls.borrow_mut().iter_mut() {
            slot.state.complete(Err(Error::ConnectionLost), now);
        }
        for waker in [&self.writer, &self.closed_waker, &self.expiry_waker] {
            if let Some(w) = waker.borrow_mut().take() {
                w.wake();
            }
        }
        self.counters.conn_lost();
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            if self.state.get() == State::Closed {
                Poll::Ready(())
            } else {
                *self.closed_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn complete(&self, header: &FrameHeader, result: Result<FrameBytes, Error>) {
        let id = CallId::from_u64(header.call_id);
        let mut calls = self.calls.borrow_mut();
        let received = self.last_rx.get();
        let Some(slot) = calls.get_mut(id) else {
            return self.counters.stale();
        };
        if !slot.state.complete(result, received) {
            return self.counters.stale();
        }
        if self.counters.timing {
            let written = self.written_at(slot.batch);
            self.counters.reply_phases(slot.started, written, received);
            if header.kind == FrameKind::Response {
                self.counters.remote_handler(header.budget_us);
            }
        }
    }

    fn written_at(&self, batch: u32) -> Option<Instant> {
        match self.written.borrow()[batch as usize % WRITTEN_RING] {
            (b, at) if b == batch => at,
            _ => None,
        }
    }

    fn on_frame(&self, buf: &RecvBuf, header: FrameHeader) -> Result<(), ProtocolError> {
        match header.kind {
            FrameKind::Response => {
                self.complete(&header, Ok(buf.view(HEADER_LEN, header.len as usize)))
            }
            FrameKind::Error => {
                let text = &buf.unconsumed()[HEADER_LEN..HEADER_LEN + header.len as usize];
                let error = match ErrorCode::from_u32(header.method) {
                    ErrorCode::DeadlineExceeded => Error::Timeout,
                    ErrorCode::Overloaded => Error::Overloaded,
                    code => Error::Remote {
                        code,
                        message: String::from_utf8_lossy(text).into_owned(),
                    },
                };
                self.complete(&header, Err(error));
            }
            FrameKind::Ping => self.push_control(FrameKind::Pong, header.call_id),
            FrameKind::Pong => {}
            FrameKind::GoAway => self.retire(),
            FrameKind::Request => return Err(ProtocolError::Unexpected(FrameKind::Request)),
        }
        Ok(())
    }
}

/// The connection's only reader: decodes replies and completes calls until the
/// connection fails or closes.
pub(crate) async fn read_loop(conn: Rc<ClientConn>) {
    let mut buf = RecvBuf::new(conn.cfg.recv_chunk);
    let mut need = HEADER_LEN;
    loop {
        buf.reserve(need);
        match io::read(&conn.stream, &mut buf).await {
            Ok(n) if n > 0 && conn.state.get() != State::Closed => conn.counters.bytes_in(n),
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "client read failed");
                break;
            }
        }
        let arrived = io::now();
        let mut chunk = ReadChunk::default();
        loop {
            match decode_frame(buf.unconsumed(), DecodeOptions::new(conn.cfg.max_frame)) {
                Ok(Decoded::Frame(header)) => {
                    // Liveness counts complete frames only: bytes of a frame whose
                    // (corrupted) length never completes must not keep it alive.
                    conn.last_rx.set(arrived);
                    if let Err(e) = conn.on_frame(&buf, header) {
                        tracing::warn!(error = %e, "server broke the protocol");
                        return conn.close();
                    }
                    buf.consume(header.frame_len());
                    if chunk.handled(header.frame_len()) && !buf.unconsumed().is_empty() {
                        // Let the woken callers queue their next requests and
                        // the writer send them while the rest is handled.
                        io::yield_now().await;
                        if conn.state.get() == State::Closed {
                            return conn.close();
                        }
                    }
                }
                Ok(Decoded::Incomplete { total }) => {
                    need = total;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame from server");
                    return conn.close();
                }
            }
        }
    }
    conn.close();
}

/// The connection's writer: sends everything queued, one batch per wake-up.
pub(crate) async fn write_loop(conn: Rc<ClientConn>) {
    // Send buffers grow on demand and are then reused: idle connections stay small.
    let mut spare = Vec::new();
    loop {
        let ready = poll_fn(|cx| {
            if conn.state.get() == State::Closed {
                Poll::Ready(false)
            } else if !conn.out.borrow().is_empty() {
                Poll::Ready(true)
            } else {
                conn.write_scheduled.set(false);
                *conn.writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !ready {
            return;
        }
        let batch = std::mem::replace(&mut *conn.out.borrow_mut(), spare);
        let seq = conn.batch.get();
        conn.batch.set(seq.wrapping_add(1));
        conn.counters.bytes_out(batch.len());
        let (result, mut batch) = io::write_all(&conn.stream, batch).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "client write failed");
            return conn.close();
        }
        if conn.counters.timing {
            conn.written.borrow_mut()[seq as usize % WRITTEN_RING] = (seq, Some(Instant::now()));
        }
        batch.clear();
        spare = batch;
    }
}

/// Fails calls whose deadline has passed. Sleeps until the earliest deadline in
/// the table (one timer per connection, not per call) and rescans then.
pub(crate) async fn expiry_loop(conn: Rc<ClientConn>) {
    while conn.state.get() != State::Closed {
        match conn.next_deadline.get() {
            Some(at) => {
                let woken = poll_fn(|cx| {
                    if conn.next_deadline.get() != Some(at) || conn.state.get() == State::Closed {
                        Poll::Ready(())
                    } else {
                        *conn.expiry_waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                });
                io::until(at, woken).await;
            }
            None => {
                poll_fn(|cx| {
                    if conn.next_deadline.get().is_some() || conn.state.get() == State::Closed {
                        Poll::Ready(())
                    } else {
                        *conn.expiry_waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
                continue;
            }
        }
        conn.expire(Instant::now());
    }
}

impl ClientConn {
    /// Times out every waiting call due by `now` and records the next deadline.
    fn expire(&self, now: Instant) {
        let mut next: Option<Instant> = None;
        for (_, slot) in self.calls.borrow_mut().iter_mut() {
            if !matches!(slot.state, SlotState::Waiting(_)) {
                continue;
            }
            if slot.deadline <= now {
                slot.state.complete(Err(Error::Timeout), now);
            } else if next.is_none_or(|n| slot.deadline < n) {
                next = Some(slot.deadline);
            }
        }
        self.next_deadline.set(next);
    }
}

/// Pings an idle connection and closes it when the peer stays silent past the timeout.
pub(crate) async fn heartbeat_loop(conn: Rc<ClientConn>) {
    let (interval, timeout) = (conn.cfg.heartbeat_interval, conn.cfg.heartbeat_timeout);
    let mut seq = 0u64;
    while conn.state.get() != State::Closed {
        // Ping exactly `interval` after the last complete frame, so a dead link
        // is noticed within interval + timeout.
        let idle_at = conn.last_rx.get() + interval;
        if Instant::now() < idle_at {
            io::sleep_until(idle_at).await;
            continue;
        }
        seq += 1;
        let sent = Instant::now();
        conn.push_control(FrameKind::Ping, seq);
        conn.counters.ping();
        io::sleep(timeout).await;
        if conn.last_rx.get() < sent && conn.state.get() != State::Closed {
            tracing::warn!(?timeout, "no answer to heartbeat; closing connection");
            return conn.close();
        }
    }
}
