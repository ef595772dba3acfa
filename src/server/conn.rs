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

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Display;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::authz::AuthzRequest;
use super::budget::InboundBudget;
use super::ctx::CancelSignal;
use super::router::{Payload, Router};
use super::{Event, ServerConfig};
use crate::app_error::HandlerError;
pub(crate) use crate::conn::CallCtx;
use crate::conn::{Clock, Dispatch, Incoming, ServerCore, ServerCoreConfig};
use crate::message::Message;
use crate::metrics;
use crate::protocol::metadata::MetadataView;
use crate::protocol::{ErrorCode, FrameKind, ProtocolError, HEADER_LEN};
use crate::runtime::buf::RecvBuf;
use crate::runtime::io::{self, Stream};
use crate::runtime::ReadChunk;
use crate::tls::{HandshakeFailure, PeerIdentity};
use futures_util::future::AbortHandle;

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
    /// When the connection was accepted (for the maximum age).
    created: Instant,
    /// While a send is under way: when it last made progress.
    write_stuck: Cell<Option<Instant>>,
    /// The goaway the sweeper sent, if any, and when.
    goaway: Cell<Option<Goaway>>,
    /// The core's inbound budget, and this connection's share of it.
    inbound: Rc<InboundBudget>,
    partial: Cell<usize>,
    /// Reads were paused on the inbound budget since the last complete frame.
    paused: Cell<bool>,
    peer: SocketAddr,
    core_id: usize,
    /// Async handlers running, by call id: their cancel signal and abort handle.
    running: RefCell<HashMap<u64, (Rc<CancelSignal>, AbortHandle)>>,
    /// The core's user state, if the server has one.
    user: Option<Rc<dyn Any>>,
    /// The TLS peer's verified identity, once its handshake finished.
    identity: RefCell<Option<Rc<PeerIdentity>>>,
    /// A TLS handshake runs (counted in the core's `handshaking` gauge).
    handshaking: Cell<bool>,
}

/// Why and when the sweeper sent a connection its goaway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goaway {
    /// Idle past the idle timeout; closed after a short grace.
    Idle(Instant),
    /// Older than the maximum age; closed when idle or after the age grace.
    Age(Instant),
}

impl ConnShared {
    pub fn new(
        stream: Stream,
        peer: SocketAddr,
        cfg: Arc<ServerConfig>,
        inbound: Rc<InboundBudget>,
        user: Option<Rc<dyn Any>>,
    ) -> Self {
        let limits = &cfg.limits;
        let core_cfg = ServerCoreConfig {
            max_frame: limits.max_frame,
            data_digest: limits.data_digest,
            require_data_digest: limits.require_data_digest,
            max_in_flight: limits.max_in_flight_per_connection,
            max_pending_out: limits.max_pending_out,
            timing: limits.metrics,
        };
        let created = Instant::now();
        let mut core = ServerCore::new(created, core_cfg, metrics::local(), MonotonicClock);
        match cfg.security.new_session() {
            Ok(Some(session)) => {
                core = core.with_tls(session);
                metrics::counters::inc(&metrics::local().server.handshaking);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a TLS session; closing");
                core.close();
            }
        }
        let handshaking = core.is_handshaking();
        Self {
            stream,
            core: RefCell::new(core),
            writer: Cell::new(None),
            reader: Cell::new(None),
            shut: Cell::new(false),
            cfg,
            created,
            write_stuck: Cell::new(None),
            goaway: Cell::new(None),
            inbound,
            partial: Cell::new(0),
            paused: Cell::new(false),
            peer,
            core_id: crate::runtime::current_core().unwrap_or(0),
            running: RefCell::new(HashMap::new()),
            user,
            identity: RefCell::new(None),
            handshaking: Cell::new(handshaking),
        }
    }

    /// The TLS peer's verified identity (None: plaintext, or no certificate).
    pub fn peer_identity(&self) -> Option<Rc<PeerIdentity>> {
        self.identity.borrow().clone()
    }

    /// True while the connection's TLS handshake runs.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking.get()
    }

    /// The handshake ended (finished or failed): out of the core's gauge.
    fn handshake_over(&self) {
        if self.handshaking.replace(false) {
            metrics::counters::dec(&metrics::local().server.handshaking);
        }
    }

    /// The core's user state.
    pub fn user_state(&self) -> Option<Rc<dyn Any>> {
        self.user.clone()
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The runtime core serving the connection.
    pub fn core_id(&self) -> usize {
        self.core_id
    }

    /// Notes an async handler running for `call_id`, so a cancel can stop it.
    pub fn track_async(&self, call_id: u64, cancel: Rc<CancelSignal>, abort: AbortHandle) {
        self.running.borrow_mut().insert(call_id, (cancel, abort));
    }

    /// The async handler of `call_id` ended.
    pub fn untrack_async(&self, call_id: u64) {
        self.running.borrow_mut().remove(&call_id);
    }

    /// The caller of `call_id` gave up: raise its handler's cancel signal and
    /// drop the handler (counted). Nothing if no handler runs for it.
    fn cancel(&self, call_id: u64) {
        let running = self.running.borrow_mut().remove(&call_id);
        if let Some((signal, abort)) = running {
            signal.cancel();
            abort.abort();
            metrics::counters::inc(&metrics::local().server.cancelled);
        }
    }

    /// When the connection was accepted.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Since when the connection has had no work (see `ServerCore::idle_since`).
    pub fn idle_since(&self) -> Option<Instant> {
        self.core.borrow().idle_since()
    }

    /// Gives back the send buffers of an idle connection (see
    /// `ServerCore::release_idle_buffers`).
    pub fn release_idle_buffers(&self) {
        self.core.borrow_mut().release_idle_buffers();
    }

    /// While a send is under way: when it last made progress.
    pub fn write_stuck_since(&self) -> Option<Instant> {
        self.write_stuck.get()
    }

    /// The goaway the sweeper sent, if any.
    pub fn goaway(&self) -> Option<Goaway> {
        self.goaway.get()
    }

    /// True once the connection was sent a goaway or closed.
    pub fn is_closing(&self) -> bool {
        self.goaway.get().is_some() || self.is_closed()
    }

    /// True if the inbound budget paused this connection's reads while its
    /// current partial frame came in.
    pub fn was_paused(&self) -> bool {
        self.paused.get()
    }

    /// Sends a goaway for idleness or age (the sweeper closes it later).
    pub fn send_goaway(&self, why: Goaway) {
        self.goaway.set(Some(why));
        self.go_away();
    }

    /// Closes an idle connection to make room: its goaway is written at once
    /// (without waiting; it is idle, so nothing else is queued), then closed.
    pub fn evict(&self) {
        let queued = {
            let mut core = self.core.borrow_mut();
            core.go_away();
            core.take_queued()
        };
        if let Some(bytes) = queued {
            let _ = io::send_now(&self.stream, &bytes);
        }
        self.close();
    }

    /// Reports the bytes of this connection's partial frame to the budget.
    fn set_partial(&self, bytes: usize) {
        let old = self.partial.replace(bytes);
        if old != bytes {
            self.inbound.update(old, bytes);
            metrics::counters::add(
                &metrics::local().server.inbound_bytes,
                bytes.wrapping_sub(old) as u64,
            );
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
            self.cfg.count(Event::Overloaded);
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

    /// Appends the Error frame of a handler's error (text or typed).
    pub fn push_app_error(&self, call_id: u64, error: &dyn HandlerError) {
        let payload = error.error_payload();
        self.core.borrow_mut().push_app_error(call_id, payload);
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
        self.handshake_over();
        self.set_partial(0);
        if !self.shut.replace(true) {
            // A paused reader (this one) re-checks and sees the close.
            self.inbound.wake_all();
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
        Err(ConnError::Tls(why)) => {
            tracing::debug!(reason = %why, "closing connection after TLS failure");
        }
        Err(ConnError::Protocol(e)) => {
            // The core counted it in the core's metrics.
            tracing::warn!(error = %e, "closing connection after protocol error");
            cfg.count(Event::ProtocolError);
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
    /// The handshake or a record failed (counted by the core).
    Tls(HandshakeFailure),
}

async fn read_loop(
    conn: &Rc<ConnShared>,
    router: &Router,
    cfg: &ServerConfig,
) -> Result<(), ConnError> {
    let mut buf = RecvBuf::new(cfg.limits.recv_chunk);
    // Under TLS the socket's bytes land here and their plaintext in `buf`
    // (boxed: a plaintext connection's task does not carry a second buffer).
    let mut cipher = conn
        .core
        .borrow()
        .is_tls()
        .then(|| Box::new(RecvBuf::new(cfg.limits.recv_chunk)));
    let mut need = HEADER_LEN;
    loop {
        buf.reserve(need);
        let n = io::read_conn(&conn.stream, &mut buf, cipher.as_deref_mut())
            .await
            .map_err(ConnError::Io)?;
        if n == 0 || conn.is_closed() {
            return Ok(());
        }
        conn.core.borrow_mut().received(io::now(), n);
        if let Some(cipher) = cipher.as_deref_mut() {
            if !open(conn, cipher, &mut buf)? {
                return Ok(());
            }
        }
        let mut chunk = ReadChunk::for_server();
        loop {
            let next = conn.core.borrow_mut().handle_next(&mut buf);
            let frame_len = match next.map_err(ConnError::Protocol)? {
                Incoming::Request(request) => {
                    dispatch(conn, router, &buf, &request);
                    buf.consume(request.frame_len());
                    request.frame_len()
                }
                Incoming::Handled(header) => {
                    if header.kind == FrameKind::Cancel {
                        conn.cancel(header.call_id);
                    }
                    header.frame_len()
                }
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
        drop(chunk);
        conn.flush();
        wait_for_send_room(conn).await;
        hold_partial(conn, &buf, cfg).await;
    }
}

/// Decrypts what `cipher` holds into `buf`. False once the peer has closed
/// its side of the TLS session; a TLS failure sends the alert rustls queued
/// (best effort, without waiting) and ends the connection.
fn open(conn: &ConnShared, cipher: &mut RecvBuf, buf: &mut RecvBuf) -> Result<bool, ConnError> {
    let opened = conn.core.borrow_mut().open(cipher, buf);
    match opened {
        Ok(opened) => {
            if opened.handshake_done {
                let identity = conn.core.borrow().peer_identity().map(Rc::new);
                *conn.identity.borrow_mut() = identity;
                conn.handshake_over();
            }
            // Handshake records to send, if any.
            conn.flush();
            Ok(!opened.peer_closed)
        }
        Err(why) => {
            conn.handshake_over();
            let alert = conn.core.borrow_mut().take_queued();
            if let Some(alert) = alert {
                let _ = io::send_now(&conn.stream, &alert);
            }
            Err(ConnError::Tls(why))
        }
    }
}

/// Reports the partial frame left in `buf` to the core's inbound budget and,
/// if the budget is over its cap and this frame is a large one (over one
/// receive chunk), pauses reading until the budget has room again (or the
/// connection closes: the sweeper closes it once the frame stalls past the
/// read timeout).
async fn hold_partial(conn: &ConnShared, buf: &RecvBuf, cfg: &ServerConfig) {
    let partial = buf.unconsumed().len();
    if partial == 0 {
        conn.paused.set(false);
    }
    conn.set_partial(partial);
    if partial > cfg.limits.recv_chunk && conn.inbound.over() {
        if !conn.paused.replace(true) {
            cfg.count(Event::InboundPaused);
        }
        tracing::debug!(partial, "inbound budget full; pausing reads");
        conn.inbound.wait_room(|| conn.is_closed()).await;
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
        Some((_, name)) if !authorized(conn, buf, request, name) => {}
        Some((handler, name)) => {
            let ctx = CallCtx {
                name,
                ..request.ctx
            };
            let payload = Payload {
                bytes: request.payload(buf),
                keep: &|| request.view(buf),
                metadata: &|| request.metadata_view(buf),
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

/// Runs the server's authorization hooks on `request` (method `name`); a
/// refused call is answered `PermissionDenied` and counted, and false returned.
fn authorized(conn: &ConnShared, buf: &RecvBuf, request: &Dispatch, name: &'static str) -> bool {
    let authz = &conn.cfg.security.authz;
    if authz.is_empty() {
        return true;
    }
    let identity = conn.identity.borrow();
    let req = AuthzRequest {
        method: name,
        method_id: request.ctx.method,
        peer: conn.peer,
        identity: identity.as_deref(),
        metadata: MetadataView::from_validated(request.metadata(buf)),
    };
    match authz.check(&req) {
        Ok(()) => true,
        Err(denied) => {
            metrics::local().server_denied(request.ctx.method, name);
            conn.push_error(request.ctx.call_id, ErrorCode::PermissionDenied, &denied);
            false
        }
    }
}

async fn write_loop(conn: Rc<ConnShared>) {
    loop {
        let batch = poll_fn(|cx| crate::conn::poll_batch(&conn.core, &conn.writer, cx)).await;
        let Some(batch) = batch else {
            return;
        };
        conn.write_stuck.set(Some(io::now()));
        let (result, batch) = io::write_batch(&conn.stream, batch, &conn.write_stuck).await;
        conn.write_stuck.set(None);
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
