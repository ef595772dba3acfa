//! The server side of a connection, sans I/O: [`ServerCore`].
//!
//! The core holds the send buffer responses are serialised into (and its
//! spare), the lifecycle (live, draining after its goaway, closed), the
//! async handlers running for the connection and their limit, the per-request
//! deadline checks, the partial-frame tracking the read timeout watches and
//! the timing of write batches. It never runs a handler: a request that must
//! run comes out of [`handle_next`](ServerCore::handle_next) as a
//! [`Dispatch`], the driver hands it to its router, and the handler's answer
//! comes back through [`push_response`](ServerCore::push_response) or
//! [`push_error`](ServerCore::push_error). The driver feeds it:
//! - received bytes: [`received`](ServerCore::received) once per receive (the
//!   instant the bytes arrived), then [`handle_next`](ServerCore::handle_next)
//!   until it says `Incomplete`;
//! - sends: [`poll_transmit`](ServerCore::poll_transmit) hands out everything
//!   queued as one buffer, [`transmit_done`](ServerCore::transmit_done) takes
//!   it back once sent;
//! - async handlers: [`try_start_async`](ServerCore::try_start_async) before
//!   spawning one, [`finish_async`](ServerCore::finish_async) when it ends.
//!
//! After any call the driver checks [`wants_write`](ServerCore::wants_write)
//! (wake the writer), [`has_send_room`](ServerCore::has_send_room) (reading
//! may go on) and [`is_closed`](ServerCore::is_closed) (shut the socket).
//!
//! Time: the instant of each receive comes in through `received`; when the
//! core needs a fresher reading (a deadline check after a handler ran, a
//! sampled latency) it asks its [`Clock`], which the driver implements with
//! `Instant::now` and tests with a fake clock. The reading rule: a deadline
//! check reads the clock again once a handler has run since the last reading
//! (so checks are as exact as with a read per request), while requests
//! without a deadline, and the first of each receive, read nothing.
//!
//! Invariants: a closed connection queues nothing more (late responses are
//! dropped); the send buffer always holds whole frames and its length stays a
//! multiple of 16; a request whose budget is spent when it is dispatched is
//! answered `DeadlineExceeded` and never reaches a handler; no more than
//! `max_in_flight` async handlers run at once (the next one is answered
//! `Overloaded`).

use std::fmt::Display;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::app_error::ErrorPayload;
use crate::message::{serialize_out, Message};
use crate::metrics::counters::{add, dec, inc};
use crate::metrics::{CoreMetrics, Phase};
use crate::protocol::metadata;
use crate::protocol::segment::{self, Segment};
use crate::protocol::{
    begin_frame, decode_frame, encode_frame, DecodeOptions, Decoded, ErrorCode, FrameHeader,
    FrameKind, ProtocolError, HANDLER_TIME_UNKNOWN, HEADER_LEN,
};
use crate::runtime::batch::Batch;
use crate::runtime::buf::{FrameBytes, RecvBuf};
use crate::tls::{HandshakeFailure, PeerIdentity};

use super::tls::{self, Opened, TlsSession};

/// Where a [`ServerCore`] gets a fresh reading of the time when the last one
/// it was given may be stale. The driver reads the real clock; tests use a
/// fake one.
pub(crate) trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// What a server connection needs to know of the server's settings.
#[derive(Debug, Clone)]
pub(crate) struct ServerCoreConfig {
    /// Largest frame sent or accepted.
    pub max_frame: usize,
    /// Whether frames sent carry a data digest.
    pub data_digest: bool,
    /// Whether a frame received without a data digest is a protocol error.
    pub require_data_digest: bool,
    /// Async handlers that may run at once; more are answered `Overloaded`.
    pub max_in_flight: usize,
    /// Unsent bytes above which the driver stops reading.
    pub max_pending_out: usize,
    /// Whether to fill latency histograms (the metrics switch).
    pub timing: bool,
}

/// The little-endian `u32` at the start of `bytes` (at least 4 long).
fn le_u32(bytes: &[u8]) -> u32 {
    bytes
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_le_bytes(*b))
}

/// Per-request context handed to handlers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallCtx {
    pub call_id: u64,
    /// Method id and registered name (for per-method metrics).
    pub method: u32,
    pub name: &'static str,
    /// Local instant after which the caller no longer waits, if it sent a budget.
    pub deadline: Option<Instant>,
    /// When the handler started: read from the clock for the calls whose handler
    /// time is sampled and for async handlers, else the connection's last reading.
    pub started: Instant,
}

/// A request whose handler must run now. Its frame stays at the front of the
/// receive buffer until the driver has handed it to its handler and consumed
/// it (`buf.consume(dispatch.frame_len())`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatch {
    /// The call's context (`name` empty: the router knows it).
    pub ctx: CallCtx,
    /// The payload length.
    len: usize,
    /// Where the message starts in the payload (after a metadata block).
    msg_offset: usize,
    /// Length of the metadata entries (they start 4 bytes into the payload).
    meta_len: usize,
    /// The frame's length, padding included.
    frame_len: usize,
}

impl Dispatch {
    /// The request message, in place at the front of `buf`.
    pub fn payload<'b>(&self, buf: &'b RecvBuf) -> &'b [u8] {
        &buf.unconsumed()[HEADER_LEN + self.msg_offset..HEADER_LEN + self.len]
    }

    /// The request message as a view that keeps its buffer (async handlers).
    pub fn view(&self, buf: &RecvBuf) -> FrameBytes {
        buf.view(HEADER_LEN + self.msg_offset, self.len - self.msg_offset)
    }

    /// The metadata entries, in place at the front of `buf` (empty if none).
    pub fn metadata<'b>(&self, buf: &'b RecvBuf) -> &'b [u8] {
        &buf.unconsumed()[HEADER_LEN + 4..HEADER_LEN + 4 + self.meta_len]
    }

    /// The metadata entries as a view that keeps its buffer (async handlers).
    pub fn metadata_view(&self, buf: &RecvBuf) -> Option<FrameBytes> {
        (self.meta_len > 0).then(|| buf.view(HEADER_LEN + 4, self.meta_len))
    }

    /// Bytes the request's frame occupies at the front of the buffer.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }
}

/// What [`ServerCore::handle_next`] found at the front of the receive buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Incoming {
    /// A request to run (not consumed yet, see [`Dispatch`]).
    Request(Dispatch),
    /// A frame the core handled itself and consumed: a ping (answered), a
    /// pong, a goaway, or a request refused for its spent budget.
    Handled(FrameHeader),
    /// Not enough bytes: the front frame needs `total` bytes in all.
    Incomplete {
        /// Bytes the front frame occupies once complete.
        total: usize,
    },
}

/// The server side of one connection, without its socket.
pub(crate) struct ServerCore<C> {
    cfg: ServerCoreConfig,
    clock_source: C,
    metrics: Rc<CoreMetrics>,
    /// Frames queued for the next send.
    out: Vec<u8>,
    /// The blobs `out`'s responses send by reference (plaintext only).
    segments: Vec<Segment>,
    /// The batch `out` and `segments` move into when handed out (kept empty).
    spare: Batch,
    /// True while a batch from `poll_transmit` is being sent.
    writing: bool,
    closed: bool,
    /// Goaway was queued: the peer is to send no new calls.
    draining: bool,
    /// The latest clock reading: the receive instant, or taken whenever a call
    /// needs the time (see `dispatch_clock`).
    clock: Instant,
    /// No handler has run since `clock` was read, so it is still "now" for a
    /// deadline check (a check after a handler reads the clock again).
    clock_fresh: bool,
    /// When the bytes being handled arrived.
    arrived: Instant,
    /// A complete frame was handled since the last receive.
    progressed: bool,
    /// Since when the front frame has been incomplete (None: at a frame boundary).
    partial_since: Option<Instant>,
    /// Async handlers running for this connection.
    running: usize,
    /// When the first response of the batch now being filled was queued.
    batch_started: Option<Instant>,
    /// When the first response of the batch being sent was queued.
    sending_started: Option<Instant>,
    /// When the connection last had work: the arrival of its latest request,
    /// or the end of its latest send (for the idle timeout and eviction).
    last_active: Instant,
    /// The TLS session, on a TLS connection: `out` then holds plaintext
    /// frames and `poll_transmit` hands out the records sealing them.
    tls: tls::TlsSlot,
}

impl<C: Clock> ServerCore<C> {
    /// A live connection accepted at `now`.
    pub fn new(now: Instant, cfg: ServerCoreConfig, metrics: Rc<CoreMetrics>, clock: C) -> Self {
        Self {
            cfg,
            clock_source: clock,
            metrics,
            out: Vec::new(),
            segments: Vec::new(),
            spare: Batch::default(),
            writing: false,
            closed: false,
            draining: false,
            clock: now,
            clock_fresh: true,
            arrived: now,
            progressed: false,
            partial_since: None,
            running: 0,
            batch_started: None,
            sending_started: None,
            last_active: now,
            tls: None,
        }
    }

    /// Makes this a TLS connection: nothing is read or sent in clear.
    pub fn with_tls(mut self, session: TlsSession) -> Self {
        self.tls = Some(Box::new(session));
        self
    }

    /// True on a TLS connection whose handshake has not finished.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// True on a TLS connection (its bytes go through [`open`](Self::open)).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Decrypts the ciphertext in `cipher` (received at the instant last
    /// given to [`received`](Self::received)) into `plain`, where
    /// [`handle_next`](Self::handle_next) then finds the frames. A failure
    /// closes the connection; its alert can still be taken with
    /// [`take_queued`](Self::take_queued).
    pub fn open(
        &mut self,
        cipher: &mut RecvBuf,
        plain: &mut RecvBuf,
    ) -> Result<Opened, HandshakeFailure> {
        let Some(session) = self.tls.as_mut() else {
            return Ok(Opened::default());
        };
        let was_handshaking = session.is_handshaking();
        match session.open(cipher, plain) {
            Ok(opened) => {
                if opened.handshake_done {
                    inc(&self.metrics.server.tls_handshakes);
                }
                Ok(opened)
            }
            Err(failure) => {
                if session.is_handshaking() {
                    self.metrics.tls_failure(failure);
                } else {
                    if was_handshaking {
                        // It finished, then a record failed in the same receive.
                        inc(&self.metrics.server.tls_handshakes);
                    }
                    inc(&self.metrics.server.tls_record_errors);
                }
                self.closed = true;
                Err(failure)
            }
        }
    }

    /// The verified identity of the TLS peer's certificate, if any.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        self.tls.as_ref()?.peer_identity()
    }

    /// Since when the connection has been idle: no handler running, nothing
    /// queued or being written, no partial frame, and no request since then.
    /// Pings do not count as work. `None` while it has work.
    pub fn idle_since(&self) -> Option<Instant> {
        (self.is_idle() && self.partial_since.is_none() && !self.closed).then_some(self.last_active)
    }

    /// Takes the queued frames out to be sent at once, when no send is under
    /// way (used to push a goaway out just before closing an idle connection).
    /// Under TLS the records sealing them (or a failed handshake's alert).
    pub fn take_queued(&mut self) -> Option<Vec<u8>> {
        // Blobs by reference need the writer's gathering send.
        let by_reference = !self.segments.is_empty();
        if self.writing || by_reference || !tls::has_output(&self.tls, &self.out) {
            return None;
        }
        Some(tls::take_batch(&mut self.tls, &mut self.out, Vec::new()))
    }

    /// True once the connection is closed (the driver then shuts its socket).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Since when a partially received frame has been waiting for its rest.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Gives back the send buffers a burst grew, if the connection is idle
    /// (they grow again with the next replies). Called when a ping arrives
    /// (a ringrpc client pings after a heartbeat interval of silence) and by
    /// the core's sweep for connections idle longer than that.
    pub fn release_idle_buffers(&mut self) {
        if self.is_idle() {
            self.out = Vec::new();
            self.segments = Vec::new();
            self.spare = Batch::default();
        }
    }

    /// Capacities of the send buffer and its spare (for tests).
    #[cfg(test)]
    pub(crate) fn send_room(&self) -> (usize, usize) {
        (self.out.capacity(), self.spare.capacity())
    }

    /// True when nothing is left to do before the connection may close: no
    /// handler runs, nothing is queued and nothing is being written.
    pub fn is_idle(&self) -> bool {
        self.running == 0 && self.out.is_empty() && !self.writing
    }

    /// True while the queued bytes are within `max_pending_out` (or the
    /// connection is closed): the driver may read on.
    pub fn has_send_room(&self) -> bool {
        segment::stream_len(&self.out, &self.segments) <= self.cfg.max_pending_out || self.closed
    }

    /// Closes the connection: nothing more is queued or sent.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Queues a goaway (once): the peer is to send no new calls here.
    pub fn go_away(&mut self) {
        if !std::mem::replace(&mut self.draining, true) && !self.closed {
            self.push_control(FrameKind::GoAway, 0);
        }
    }

    /// Reads the clock and remembers the reading as fresh.
    fn read_clock(&mut self) -> Instant {
        let now = self.clock_source.now();
        self.set_clock(now);
        now
    }

    /// Records a clock reading taken by the caller (fresh).
    fn set_clock(&mut self, now: Instant) {
        self.clock = now;
        self.clock_fresh = true;
    }

    /// `bytes` arrived at `now`: the reading every frame of this receive starts from.
    pub fn received(&mut self, now: Instant, bytes: usize) {
        add(&self.metrics.server.bytes_in, bytes as u64);
        self.arrived = now;
        self.progressed = false;
        self.set_clock(now);
    }

    /// Decodes the frame at the front of `buf`, received at the instant last
    /// given to [`received`](Self::received). A request to run is returned
    /// unconsumed; every other frame is handled and consumed. At
    /// `Incomplete` the partial-frame clock is updated. An error is a
    /// protocol violation: the connection is closed.
    pub fn handle_next(&mut self, buf: &mut RecvBuf) -> Result<Incoming, ProtocolError> {
        let opts = DecodeOptions {
            max_frame: self.cfg.max_frame,
            require_data_digest: self.cfg.require_data_digest,
        };
        let header = match decode_frame(buf.unconsumed(), opts) {
            Ok(Decoded::Frame(header)) => header,
            Ok(Decoded::Incomplete { total }) => {
                // Under TLS a record cut short counts as a partial frame too.
                let tls_whole = self.tls.as_ref().is_none_or(|t| t.at_record_boundary());
                self.track_partial(buf.unconsumed().is_empty() && tls_whole);
                return Ok(Incoming::Incomplete { total });
            }
            Err(e) => return Err(self.fail(e)),
        };
        self.progressed = true;
        let handled = match header.kind {
            FrameKind::Request => match self.dispatch(&header, buf.unconsumed())? {
                Some(dispatch) => return Ok(Incoming::Request(dispatch)),
                None => Incoming::Handled(header),
            },
            FrameKind::Ping => {
                // A client pings after a second of silence.
                self.release_idle_buffers();
                self.push_control(FrameKind::Pong, header.call_id);
                Incoming::Handled(header)
            }
            FrameKind::Pong | FrameKind::GoAway => Incoming::Handled(header),
            // The driver stops the call's handler, if one still runs.
            FrameKind::Cancel => {
                inc(&self.metrics.server.cancels);
                Incoming::Handled(header)
            }
            kind @ (FrameKind::Response | FrameKind::Error) => {
                return Err(self.fail(ProtocolError::Unexpected(kind)))
            }
        };
        buf.consume(header.frame_len());
        Ok(handled)
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        inc(&self.metrics.server.protocol_errors);
        self.close();
        e
    }

    /// Records since when the front frame has been incomplete (for the read timeout).
    fn track_partial(&mut self, at_boundary: bool) {
        if at_boundary {
            self.partial_since = None;
        } else if self.progressed || self.partial_since.is_none() {
            self.partial_since = Some(self.arrived);
        }
    }

    /// Checks a request's deadline: its context if its handler is to run,
    /// `None` once it has been answered `DeadlineExceeded`.
    fn dispatch(
        &mut self,
        header: &FrameHeader,
        frame: &[u8],
    ) -> Result<Option<Dispatch>, ProtocolError> {
        let arrived = self.arrived;
        self.last_active = arrived;
        let (msg_offset, meta_len) = if header.has_metadata() {
            let payload = &frame[HEADER_LEN..HEADER_LEN + header.len as usize];
            match metadata::split(payload) {
                // `split` checked the 4-byte length prefix is there.
                Ok((_, offset)) => (offset, le_u32(payload) as usize),
                Err(e) => return Err(self.fail(e)),
            }
        } else {
            (0, 0)
        };
        let deadline = (header.budget_us != 0)
            .then(|| arrived + Duration::from_micros(u64::from(header.budget_us)));
        inc(&self.metrics.server.requests);
        let now = self.dispatch_clock(deadline.is_some());
        if deadline.is_some_and(|d| now >= d) {
            self.push_error(
                header.call_id,
                ErrorCode::DeadlineExceeded,
                &"deadline exceeded",
            );
            return Ok(None);
        }
        Ok(Some(Dispatch {
            ctx: CallCtx {
                call_id: header.call_id,
                method: header.method,
                name: "",
                deadline,
                started: now,
            },
            len: header.len as usize,
            msg_offset,
            meta_len,
            frame_len: header.frame_len(),
        }))
    }

    /// The time a request is dispatched at, for its deadline check and metrics.
    ///
    /// Reads the clock only if the last reading may be stale for a deadline
    /// check (a handler ran since, and the request has a deadline) or the
    /// request's queue time or handler time will be sampled; otherwise the
    /// last reading is "now". So deadline checks are as exact as with a read
    /// per request, while requests without a deadline, and the first of each
    /// receive, read nothing.
    fn dispatch_clock(&mut self, has_deadline: bool) -> Instant {
        let queue_sampled = self.cfg.timing && self.metrics.sampled(Phase::ServerQueue);
        let handler_due = self.cfg.timing && self.metrics.due(Phase::ServerHandler);
        let stale = has_deadline && !self.clock_fresh;
        let now = if queue_sampled || handler_due || stale {
            self.read_clock()
        } else {
            self.clock
        };
        if queue_sampled {
            self.metrics.record(
                Phase::ServerQueue,
                now.saturating_duration_since(self.arrived),
            );
        }
        // The handler about to run makes this reading stale for the next request.
        self.clock_fresh = false;
        now
    }

    /// Counts an async handler in, unless the connection is at its limit, in
    /// which case the call is answered with `Overloaded` and `false` returned.
    pub fn try_start_async(&mut self, call_id: u64) -> bool {
        if self.running >= self.cfg.max_in_flight {
            self.push_error(call_id, ErrorCode::Overloaded, &"too many calls in flight");
            return false;
        }
        self.running += 1;
        inc(&self.metrics.server.tasks);
        true
    }

    /// Counts an async handler out.
    pub fn finish_async(&mut self) {
        self.running = self.running.saturating_sub(1);
        dec(&self.metrics.server.tasks);
    }

    fn count_error(&self, code: ErrorCode) {
        let m = &self.metrics.server;
        inc(match code {
            ErrorCode::Application => &m.app_errors,
            ErrorCode::Panicked => &m.panics,
            ErrorCode::UnknownMethod => &m.unknown_method,
            ErrorCode::DeadlineExceeded => &m.deadline_exceeded,
            ErrorCode::InvalidRequest => &m.invalid_request,
            ErrorCode::Overloaded | ErrorCode::Unavailable => &m.overloaded,
            // Counted per method by the server (it knows the method's name).
            ErrorCode::PermissionDenied => return,
        });
    }

    /// Remembers when the first response of the next write batch was queued
    /// (one clock read per write batch, for the ServerWrite phase).
    fn note_batch_start(&mut self) {
        if self.out.is_empty() && self.cfg.timing {
            self.batch_started = Some(self.clock_source.now());
        }
    }

    /// How long the handler of `ctx` ran, for a `timed` call (dispatch read
    /// the clock for its start); zero, without reading or subtracting
    /// anything, for the others, whose time nothing records.
    fn handler_time(&mut self, ctx: &CallCtx, timed: bool) -> Duration {
        if !timed {
            return Duration::ZERO;
        }
        self.read_clock().saturating_duration_since(ctx.started)
    }

    /// Serialises a response frame for `ctx`'s call into the send buffer
    /// (an `Application` error frame instead if it cannot be encoded).
    pub fn push_response<T: Message>(&mut self, ctx: &CallCtx, resp: &T) {
        if self.closed {
            return;
        }
        // Only a response the ServerHandler histogram samples is timed.
        let timed = self.cfg.timing && self.metrics.due(Phase::ServerHandler);
        let handler_time = self.handler_time(ctx, timed);
        self.note_batch_start();
        let start = begin_frame(&mut self.out);
        let mut header = self.header(FrameKind::Response);
        header.call_id = ctx.call_id;
        header.budget_us = if timed {
            let us = u32::try_from(handler_time.as_micros()).unwrap_or(u32::MAX);
            us.min(HANDLER_TIME_UNKNOWN - 1)
        } else {
            HANDLER_TIME_UNKNOWN
        };
        let result = super::encode_frame_with(
            (&mut self.out, &mut self.segments),
            self.tls.is_none(),
            (start, header, self.cfg.max_frame),
            |out| serialize_out(resp, out),
        );
        match result {
            Ok(()) => {
                inc(&self.metrics.server.ok);
                if self.cfg.timing && self.metrics.sampled(Phase::ServerHandler) {
                    self.metrics
                        .server_method(ctx.method, ctx.name, handler_time);
                }
            }
            Err(e) => {
                let message = format_args!("response not sent: {e}");
                self.push_error(ctx.call_id, ErrorCode::Application, &message);
            }
        }
    }

    /// Appends an error frame for `call_id` carrying `code` and `message`.
    pub fn push_error(&mut self, call_id: u64, code: ErrorCode, message: &dyn Display) {
        if self.closed {
            return;
        }
        let text = message.to_string();
        let text = &text.as_bytes()[..text.len().min(4096)];
        let _ = self.push_error_frame(call_id, code, 0, text);
    }

    /// Counts and queues one Error frame for `call_id` with `code`, extra
    /// header `flags` and `payload` (the closed check is the caller's).
    fn push_error_frame(
        &mut self,
        call_id: u64,
        code: ErrorCode,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        self.read_clock();
        self.count_error(code);
        self.note_batch_start();
        let mut header = self.header(FrameKind::Error);
        header.call_id = call_id;
        header.method = code.to_u32();
        header.flags |= flags;
        encode_frame(&mut self.out, header, payload, self.cfg.max_frame)
    }

    /// Appends the Error frame of a handler's error: its text, or its typed
    /// archive (with the `TYPED` flag).
    pub fn push_app_error(&mut self, call_id: u64, error: ErrorPayload) {
        let bytes = match error {
            ErrorPayload::Text(text) => {
                return self.push_error(call_id, ErrorCode::Application, &text)
            }
            ErrorPayload::Typed(bytes) => bytes,
        };
        if self.closed {
            return;
        }
        let typed =
            self.push_error_frame(call_id, ErrorCode::Application, FrameHeader::TYPED, &bytes);
        if typed.is_err() {
            let message = "typed error over the frame limit";
            self.push_error(call_id, ErrorCode::Application, &message);
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

    /// True when frames are queued and no send is under way: wake the writer.
    pub fn wants_write(&self) -> bool {
        !self.closed && !self.writing && tls::has_output(&self.tls, &self.out)
    }

    /// Everything queued, as one buffer to send (at most one is out at a time).
    /// Hand it back with [`transmit_done`](Self::transmit_done) once sent.
    pub fn poll_transmit(&mut self) -> Option<Batch> {
        if !self.wants_write() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.spare);
        batch.bytes = tls::take_batch(&mut self.tls, &mut self.out, batch.bytes);
        std::mem::swap(&mut batch.segments, &mut self.segments);
        self.rotate_keys();
        self.sending_started = self.batch_started.take();
        add(&self.metrics.server.bytes_out, batch.len() as u64);
        self.writing = true;
        Some(batch)
    }

    /// Under TLS, when the keys have protected half the records their cipher
    /// allows: a goaway moves the client's new calls to a fresh connection;
    /// at the limit itself, the connection closes.
    fn rotate_keys(&mut self) {
        match &self.tls {
            Some(tls) if tls.is_lost() => self.closed = true,
            Some(tls) if tls.should_rotate() => self.go_away(),
            _ => {}
        }
    }

    /// The buffer from [`poll_transmit`](Self::poll_transmit) is done with
    /// (sent, or its send failed); it is kept for reuse.
    pub fn transmit_done(&mut self, mut sent: Batch) {
        self.last_active = self.last_active.max(self.clock);
        if std::mem::replace(&mut self.writing, false) {
            if let (true, Some(at)) = (self.cfg.timing, self.sending_started.take()) {
                let clock = &self.clock_source;
                self.metrics.phase(Phase::ServerWrite, || {
                    clock.now().saturating_duration_since(at)
                });
            }
        }
        sent.clear();
        self.spare = sent;
    }
}

impl<C: Clock> super::Transmit for ServerCore<C> {
    fn is_closed(&self) -> bool {
        ServerCore::is_closed(self)
    }

    fn poll_transmit(&mut self) -> Option<Batch> {
        ServerCore::poll_transmit(self)
    }
}
