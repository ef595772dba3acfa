//! One server connection: a reader loop that dispatches frames and a writer task.
//!
//! The reader decodes every complete frame of each read, runs sync handlers
//! inline (their responses are serialised straight into the send buffer) and
//! spawns async ones; after the batch it wakes the writer once, so responses
//! ready together leave in one send. Invariants: a protocol error closes this
//! connection only; a closed connection drops late responses; the send buffer
//! always holds whole frames and its length stays a multiple of 16.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::router::{Payload, Router};
use super::ServerConfig;
use crate::message::{serialize_into, Message};
use crate::metrics::counters::{add, dec, inc};
use crate::metrics::{self, CoreMetrics, Phase};
use crate::protocol::{
    begin_frame, decode_frame, encode_frame, finish_frame, DecodeOptions, Decoded, ErrorCode,
    FrameHeader, FrameKind, ProtocolError, HANDLER_TIME_UNKNOWN, HEADER_LEN,
};
use crate::runtime::buf::RecvBuf;
use crate::runtime::io::{self, Stream};
use crate::runtime::ReadChunk;

/// Per-request context handed to handlers.
#[derive(Clone, Copy)]
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
    /// The handler runs as its own task (its response is pushed later).
    pub deferred: bool,
}

/// State shared by a connection's reader, writer and async handler tasks.
pub(crate) struct ConnShared {
    stream: Stream,
    out: RefCell<Vec<u8>>,
    writer: RefCell<Option<Waker>>,
    reader: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    draining: Cell<bool>,
    /// The latest clock reading: taken per receive and whenever a call needs the
    /// time (see `dispatch_clock`); calls that do not reuse it.
    clock: Cell<Instant>,
    /// No handler has run since `clock` was read, so it is still "now" for a
    /// deadline check (a check after a handler reads the clock again).
    clock_fresh: Cell<bool>,
    /// Since when the front frame has been incomplete (None: at a frame boundary).
    partial_since: Cell<Option<Instant>>,
    /// Async handlers running for this connection.
    running: Cell<usize>,
    /// True while the writer has a batch in the kernel.
    writing: Cell<bool>,
    /// When the first response of the batch now being filled was queued.
    batch_started: Cell<Option<Instant>>,
    metrics: Rc<CoreMetrics>,
    /// Whether to fill latency histograms (the metrics switch).
    timing: bool,
    max_frame: usize,
    cfg: Arc<ServerConfig>,
}

impl ConnShared {
    pub fn new(stream: Stream, cfg: Arc<ServerConfig>) -> Self {
        let max_frame = cfg.limits.max_frame;
        Self {
            stream,
            out: RefCell::new(Vec::new()),
            writer: RefCell::new(None),
            reader: RefCell::new(None),
            closed: Cell::new(false),
            draining: Cell::new(false),
            clock: Cell::new(Instant::now()),
            clock_fresh: Cell::new(true),
            partial_since: Cell::new(None),
            running: Cell::new(0),
            writing: Cell::new(false),
            batch_started: Cell::new(None),
            metrics: metrics::local(),
            timing: cfg.limits.metrics,
            max_frame,
            cfg,
        }
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
        });
    }

    /// Remembers when the first response of the next write batch was queued
    /// (one clock read per write batch, for the ServerWrite phase).
    fn note_batch_start(&self, out: &[u8]) {
        if out.is_empty() && self.timing {
            self.batch_started.set(Some(Instant::now()));
        }
    }

    /// Since when a partially received frame has been waiting for its rest.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since.get()
    }

    /// Counts an async handler in, unless the connection is at its limit, in
    /// which case the call is answered with `Overloaded` and `false` returned.
    pub fn try_start_async(&self, call_id: u64) -> bool {
        if self.running.get() >= self.cfg.limits.max_in_flight_per_connection {
            super::bump(&self.cfg.stats.overloaded);
            self.push_error(call_id, ErrorCode::Overloaded, &"too many calls in flight");
            return false;
        }
        self.running.set(self.running.get() + 1);
        inc(&self.metrics.server.tasks);
        true
    }

    /// Counts an async handler out.
    pub fn finish_async(&self) {
        self.running.set(self.running.get().saturating_sub(1));
        dec(&self.metrics.server.tasks);
    }

    /// Reads the clock and remembers the reading as fresh.
    fn read_clock(&self) -> Instant {
        let now = Instant::now();
        self.set_clock(now);
        now
    }

    /// Records a clock reading taken by the caller (fresh).
    fn set_clock(&self, now: Instant) {
        self.clock.set(now);
        self.clock_fresh.set(true);
    }

    /// How long the handler of `ctx` ran. Reads the clock for a `timed` call
    /// (dispatch read it for the start) and for an async one; any other call
    /// takes the connection's last reading and gets a meaningless value.
    fn handler_time(&self, ctx: &CallCtx, timed: bool) -> Duration {
        let now = if timed || ctx.deferred {
            self.read_clock()
        } else {
            self.clock.get()
        };
        now.saturating_duration_since(ctx.started)
    }

    /// Serialises a response frame for `call_id` into the send buffer.
    pub fn push_response<T: Message>(&self, ctx: &CallCtx, resp: &T) {
        if self.closed.get() {
            return;
        }
        let call_id = ctx.call_id;
        // Only a response the ServerHandler histogram samples is timed.
        let timed = self.timing && self.metrics.due(Phase::ServerHandler);
        let handler_time = self.handler_time(ctx, timed);
        let mut out = self.out.borrow_mut();
        self.note_batch_start(&out);
        let start = begin_frame(&mut out);
        let mut header = self.header(FrameKind::Response);
        header.call_id = call_id;
        header.budget_us = if timed {
            let us = u32::try_from(handler_time.as_micros()).unwrap_or(u32::MAX);
            us.min(HANDLER_TIME_UNKNOWN - 1)
        } else {
            HANDLER_TIME_UNKNOWN
        };
        let result = serialize_into(resp, &mut out)
            .and_then(|()| finish_frame(&mut out, start, header, self.max_frame));
        match result {
            Ok(()) => {
                inc(&self.metrics.server.ok);
                if self.timing && self.metrics.sampled(Phase::ServerHandler) {
                    self.metrics
                        .server_method(ctx.method, ctx.name, handler_time);
                }
            }
            Err(e) => {
                out.truncate(start);
                drop(out);
                let message = format_args!("response not sent: {e}");
                self.push_error(call_id, ErrorCode::Application, &message);
            }
        }
    }

    /// Appends an error frame for `call_id` carrying `code` and `message`.
    pub fn push_error(&self, call_id: u64, code: ErrorCode, message: &dyn Display) {
        if self.closed.get() {
            return;
        }
        self.read_clock();
        self.count_error(code);
        self.note_batch_start(&self.out.borrow());
        let mut header = self.header(FrameKind::Error);
        header.call_id = call_id;
        header.method = code.to_u32();
        let text = message.to_string();
        let text = &text.as_bytes()[..text.len().min(4096)];
        let _ = encode_frame(&mut self.out.borrow_mut(), header, text, self.max_frame);
    }

    /// A header of `kind` with the data digest flag as configured.
    fn header(&self, kind: FrameKind) -> FrameHeader {
        FrameHeader::new(kind).with_data_digest(self.cfg.limits.data_digest)
    }

    fn push_control(&self, kind: FrameKind, call_id: u64) {
        let mut header = self.header(kind);
        header.call_id = call_id;
        let _ = encode_frame(&mut self.out.borrow_mut(), header, &[], self.max_frame);
    }

    /// Wakes the writer if there is anything to send.
    pub fn flush(&self) {
        if !self.out.borrow().is_empty() {
            if let Some(w) = self.writer.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Tells the peer to stop sending new calls here.
    pub fn go_away(&self) {
        if !self.draining.replace(true) && !self.closed.get() {
            self.push_control(FrameKind::GoAway, 0);
            self.flush();
        }
    }

    /// Closes the socket now; pending reads and writes end, late responses are dropped.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            io::shutdown(&self.stream);
            for waker in [&self.writer, &self.reader] {
                if let Some(w) = waker.borrow_mut().take() {
                    w.wake();
                }
            }
        }
    }
}

/// Serves one accepted connection until the peer closes it, it breaks the
/// protocol, or the server closes it.
pub(crate) async fn serve(conn: Rc<ConnShared>, router: Arc<Router>, cfg: Arc<ServerConfig>) {
    let writer = io::spawn(write_loop(conn.clone()));
    match read_loop(&conn, &router, &cfg).await {
        Ok(()) if !conn.closed.get() => {
            // The peer half-closed: answer what it already sent, then close.
            tracing::debug!("peer finished sending");
            finish_pending(&conn, cfg.limits.read_timeout).await;
        }
        Ok(()) => tracing::debug!("connection closed"),
        Err(ConnError::Io(e)) => tracing::debug!(error = %e, "connection read failed"),
        Err(ConnError::Protocol(e)) => {
            tracing::warn!(error = %e, "closing connection after protocol error");
            super::bump(&cfg.stats.protocol_errors);
            inc(&conn.metrics.server.protocol_errors);
        }
    }
    conn.close();
    drop(writer);
}

/// Waits (at most `limit`) until no handler runs and every response is written.
async fn finish_pending(conn: &ConnShared, limit: Duration) {
    let give_up = Instant::now() + limit;
    while !conn.closed.get() && Instant::now() < give_up {
        let idle = conn.running.get() == 0 && conn.out.borrow().is_empty() && !conn.writing.get();
        if idle {
            return;
        }
        io::sleep(Duration::from_millis(1)).await;
    }
}

enum ConnError {
    Io(std::io::Error),
    Protocol(ProtocolError),
}

async fn read_loop(
    conn: &Rc<ConnShared>,
    router: &Router,
    cfg: &ServerConfig,
) -> Result<(), ConnError> {
    let mut buf = RecvBuf::new(cfg.limits.recv_chunk);
    let mut need = HEADER_LEN;
    let opts = DecodeOptions {
        max_frame: cfg.limits.max_frame,
        require_data_digest: cfg.limits.require_data_digest,
    };
    loop {
        buf.reserve(need);
        let n = io::read(&conn.stream, &mut buf)
            .await
            .map_err(ConnError::Io)?;
        if n == 0 || conn.closed.get() {
            return Ok(());
        }
        add(&conn.metrics.server.bytes_in, n as u64);
        let arrived = io::now();
        conn.set_clock(arrived);
        let mut progressed = false;
        let mut chunk = ReadChunk::default();
        loop {
            match decode_frame(buf.unconsumed(), opts).map_err(ConnError::Protocol)? {
                Decoded::Frame(header) => {
                    dispatch(conn, router, &buf, header, arrived).map_err(ConnError::Protocol)?;
                    buf.consume(header.frame_len());
                    progressed = true;
                    if chunk.handled(header.frame_len()) && !buf.unconsumed().is_empty() {
                        conn.flush();
                        io::yield_now().await;
                        if conn.closed.get() {
                            return Ok(());
                        }
                    }
                }
                Decoded::Incomplete { total } => {
                    need = total;
                    break;
                }
            }
        }
        track_partial(conn, buf.unconsumed().is_empty(), progressed, arrived);
        conn.flush();
        wait_for_send_room(conn, cfg.limits.max_pending_out).await;
    }
}

/// Records since when the front frame has been incomplete (for the read timeout).
fn track_partial(conn: &ConnShared, at_boundary: bool, progressed: bool, now: Instant) {
    if at_boundary {
        conn.partial_since.set(None);
    } else if progressed || conn.partial_since.get().is_none() {
        conn.partial_since.set(Some(now));
    }
}

/// Applies backpressure: stop reading while the peer is not draining our responses.
async fn wait_for_send_room(conn: &ConnShared, limit: usize) {
    poll_fn(|cx| {
        if conn.out.borrow().len() <= limit || conn.closed.get() {
            Poll::Ready(())
        } else {
            *conn.reader.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

fn dispatch(
    conn: &Rc<ConnShared>,
    router: &Router,
    buf: &RecvBuf,
    header: FrameHeader,
    arrived: Instant,
) -> Result<(), ProtocolError> {
    match header.kind {
        FrameKind::Request => {
            let deadline = (header.budget_us != 0)
                .then(|| arrived + Duration::from_micros(u64::from(header.budget_us)));
            inc(&conn.metrics.server.requests);
            let now = dispatch_clock(conn, arrived, deadline.is_some());
            let route = router.get(header.method);
            let ctx = CallCtx {
                call_id: header.call_id,
                method: header.method,
                name: route.map_or("", |(_, name)| name),
                deadline,
                started: now,
                deferred: false,
            };
            if deadline.is_some_and(|d| now >= d) {
                conn.push_error(
                    ctx.call_id,
                    ErrorCode::DeadlineExceeded,
                    &"deadline exceeded",
                );
            } else if let Some((handler, _)) = route {
                let len = header.len as usize;
                let payload = Payload {
                    bytes: &buf.unconsumed()[HEADER_LEN..HEADER_LEN + len],
                    keep: &|| buf.view(HEADER_LEN, len),
                };
                handler.call(conn, ctx, payload);
            } else {
                conn.push_error(
                    ctx.call_id,
                    ErrorCode::UnknownMethod,
                    &format_args!("unknown method id {:#010x}", header.method),
                );
            }
            Ok(())
        }
        FrameKind::Ping => {
            conn.push_control(FrameKind::Pong, header.call_id);
            Ok(())
        }
        FrameKind::Pong | FrameKind::GoAway => Ok(()),
        kind @ (FrameKind::Response | FrameKind::Error) => Err(ProtocolError::Unexpected(kind)),
    }
}

/// The time a request is dispatched at, for its deadline check and metrics.
///
/// Reads the clock only if the last reading may be stale for a deadline check (a
/// handler ran since, and the request has a deadline) or the request's queue
/// time or handler time will be sampled; otherwise the last reading is "now".
/// So deadline checks are as exact as with a read per request, while requests
/// without a deadline, and the first of each receive, read nothing.
fn dispatch_clock(conn: &ConnShared, arrived: Instant, has_deadline: bool) -> Instant {
    let queue_sampled = conn.timing && conn.metrics.sampled(Phase::ServerQueue);
    let handler_due = conn.timing && conn.metrics.due(Phase::ServerHandler);
    let stale = has_deadline && !conn.clock_fresh.get();
    let now = if queue_sampled || handler_due || stale {
        conn.read_clock()
    } else {
        conn.clock.get()
    };
    if queue_sampled {
        conn.metrics
            .record(Phase::ServerQueue, now.saturating_duration_since(arrived));
    }
    // The handler about to run makes this reading stale for the next request.
    conn.clock_fresh.set(false);
    now
}

async fn write_loop(conn: Rc<ConnShared>) {
    // Send buffers grow on demand and are then reused: idle connections stay small.
    let mut spare = Vec::new();
    loop {
        let ready = poll_fn(|cx| {
            if conn.closed.get() {
                Poll::Ready(false)
            } else if !conn.out.borrow().is_empty() {
                Poll::Ready(true)
            } else {
                *conn.writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !ready {
            return;
        }
        let batch = std::mem::replace(&mut *conn.out.borrow_mut(), spare);
        let queued_at = conn.batch_started.take();
        add(&conn.metrics.server.bytes_out, batch.len() as u64);
        conn.writing.set(true);
        let (result, mut batch) = io::write_all(&conn.stream, batch).await;
        conn.writing.set(false);
        if let (true, Some(at)) = (conn.timing, queued_at) {
            conn.metrics.phase(Phase::ServerWrite, || at.elapsed());
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection write failed");
            conn.close();
            return;
        }
        batch.clear();
        spare = batch;
        if let Some(w) = conn.reader.borrow_mut().take() {
            w.wake();
        }
    }
}
