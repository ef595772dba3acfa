//! One server connection: the driver of a [`ServerCore`] over a socket.
//!
//! Everything the connection knows (the send buffer, deadline checks, async
//! handler limit, goaway, partial-frame tracking, write timing) is in the
//! sans-I/O core (`crate::conn::server`); this driver owns the socket, the
//! real clock and two tasks that feed the core: the reader (receive, then
//! decode each frame and hand every request the core returns to the router,
//! which runs sync handlers inline, their responses serialised straight into
//! the core's send buffer, and spawns async ones; after the batch it wakes
//! the writer once, so responses ready together leave in one send) and the
//! writer (sends what the core queued, one batch per wake-up). Invariants: a
//! protocol error closes this connection only; once the core is closed the
//! socket is shut down and both tasks end; late responses are dropped.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::router::{Payload, Router};
use super::ServerConfig;
pub(crate) use crate::conn::CallCtx;
use crate::conn::{Clock, Dispatch, Incoming, ServerCore, ServerCoreConfig};
use crate::message::Message;
use crate::metrics;
use crate::protocol::{ErrorCode, ProtocolError, HEADER_LEN};
use crate::runtime::buf::RecvBuf;
use crate::runtime::io::{self, Stream};
use crate::runtime::ReadChunk;

/// The real clock, for the core's fresher readings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonotonicClock;

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A connection's socket and core, shared by its reader, writer and async
/// handler tasks.
pub(crate) struct ConnShared {
    stream: Stream,
    core: RefCell<ServerCore<MonotonicClock>>,
    writer: Cell<Option<Waker>>,
    reader: Cell<Option<Waker>>,
    /// The socket has been shut down (the core closed).
    shut: Cell<bool>,
    cfg: Arc<ServerConfig>,
}

impl ConnShared {
    pub fn new(stream: Stream, cfg: Arc<ServerConfig>) -> Self {
        let limits = &cfg.limits;
        let core_cfg = ServerCoreConfig {
            max_frame: limits.max_frame,
            data_digest: limits.data_digest,
            require_data_digest: limits.require_data_digest,
            max_in_flight: limits.max_in_flight_per_connection,
            max_pending_out: limits.max_pending_out,
            timing: limits.metrics,
        };
        let core = ServerCore::new(Instant::now(), core_cfg, metrics::local(), MonotonicClock);
        Self {
            stream,
            core: RefCell::new(core),
            writer: Cell::new(None),
            reader: Cell::new(None),
            shut: Cell::new(false),
            cfg,
        }
    }

    fn is_closed(&self) -> bool {
        self.core.borrow().is_closed()
    }

    /// Since when a partially received frame has been waiting for its rest.
    pub fn partial_since(&self) -> Option<Instant> {
        self.core.borrow().partial_since()
    }

    /// Counts an async handler in, unless the connection is at its limit, in
    /// which case the call is answered with `Overloaded` and `false` returned.
    pub fn try_start_async(&self, call_id: u64) -> bool {
        let started = self.core.borrow_mut().try_start_async(call_id);
        if !started {
            super::bump(&self.cfg.stats.overloaded);
        }
        started
    }

    /// Counts an async handler out.
    pub fn finish_async(&self) {
        self.core.borrow_mut().finish_async();
    }

    /// Serialises a response frame for `ctx`'s call into the send buffer.
    pub fn push_response<T: Message>(&self, ctx: &CallCtx, resp: &T) {
        self.core.borrow_mut().push_response(ctx, resp);
    }

    /// Appends an error frame for `call_id` carrying `code` and `message`.
    pub fn push_error(&self, call_id: u64, code: ErrorCode, message: &dyn Display) {
        self.core.borrow_mut().push_error(call_id, code, message);
    }

    /// Wakes the writer if there is anything to send.
    pub fn flush(&self) {
        if self.core.borrow().wants_write() {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }

    /// Tells the peer to stop sending new calls here.
    pub fn go_away(&self) {
        self.core.borrow_mut().go_away();
        self.flush();
    }

    /// Closes the socket now; pending reads and writes end, late responses are dropped.
    pub fn close(&self) {
        self.core.borrow_mut().close();
        if !self.shut.replace(true) {
            io::shutdown(&self.stream);
            for waker in [&self.writer, &self.reader] {
                if let Some(w) = waker.take() {
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
        Ok(()) if !conn.is_closed() => {
            // The peer half-closed: answer what it already sent, then close.
            tracing::debug!("peer finished sending");
            finish_pending(&conn, cfg.limits.read_timeout).await;
        }
        Ok(()) => tracing::debug!("connection closed"),
        Err(ConnError::Io(e)) => tracing::debug!(error = %e, "connection read failed"),
        Err(ConnError::Protocol(e)) => {
            // The core counted it in the core's metrics.
            tracing::warn!(error = %e, "closing connection after protocol error");
            super::bump(&cfg.stats.protocol_errors);
        }
    }
    conn.close();
    drop(writer);
}

/// Waits (at most `limit`) until no handler runs and every response is written.
async fn finish_pending(conn: &ConnShared, limit: Duration) {
    let give_up = Instant::now() + limit;
    while !conn.is_closed() && Instant::now() < give_up {
        if conn.core.borrow().is_idle() {
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
    loop {
        buf.reserve(need);
        let n = io::read(&conn.stream, &mut buf)
            .await
            .map_err(ConnError::Io)?;
        if n == 0 || conn.is_closed() {
            return Ok(());
        }
        conn.core.borrow_mut().received(io::now(), n);
        let mut chunk = ReadChunk::default();
        loop {
            let next = conn.core.borrow_mut().handle_next(&mut buf);
            let frame_len = match next.map_err(ConnError::Protocol)? {
                Incoming::Request(request) => {
                    dispatch(conn, router, &buf, &request);
                    buf.consume(request.frame_len());
                    request.frame_len()
                }
                Incoming::Handled(header) => header.frame_len(),
                Incoming::Incomplete { total } => {
                    need = total;
                    break;
                }
            };
            if chunk.handled(frame_len) && !buf.unconsumed().is_empty() {
                conn.flush();
                io::yield_now().await;
                if conn.is_closed() {
                    return Ok(());
                }
            }
        }
        conn.flush();
        wait_for_send_room(conn).await;
    }
}

/// Applies backpressure: stop reading while the peer is not draining our responses.
async fn wait_for_send_room(conn: &ConnShared) {
    poll_fn(|cx| {
        if conn.core.borrow().has_send_room() {
            Poll::Ready(())
        } else {
            conn.reader.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await
}

/// Hands a request the core let through to its handler (or answers
/// `UnknownMethod`). Its frame is still at the front of `buf`.
fn dispatch(conn: &Rc<ConnShared>, router: &Router, buf: &RecvBuf, request: &Dispatch) {
    let method = request.ctx.method;
    match router.get(method) {
        Some((handler, name)) => {
            let ctx = CallCtx {
                name,
                ..request.ctx
            };
            let payload = Payload {
                bytes: request.payload(buf),
                keep: &|| request.view(buf),
            };
            handler.call(conn, ctx, payload);
        }
        None => conn.push_error(
            request.ctx.call_id,
            ErrorCode::UnknownMethod,
            &format_args!("unknown method id {method:#010x}"),
        ),
    }
}

async fn write_loop(conn: Rc<ConnShared>) {
    loop {
        let batch = poll_fn(|cx| crate::conn::poll_batch(&conn.core, &conn.writer, cx)).await;
        let Some(batch) = batch else {
            return;
        };
        let (result, batch) = io::write_all(&conn.stream, batch).await;
        conn.core.borrow_mut().transmit_done(batch);
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection write failed");
            conn.close();
            return;
        }
        if let Some(w) = conn.reader.take() {
            w.wake();
        }
    }
}
