//! One client connection: the driver of a [`ClientCore`] over a socket.
//!
//! Everything the connection knows (calls, deadlines, heartbeat, goaway and
//! drain, stale replies) is in the sans-I/O core (`crate::conn::client`);
//! this driver owns the socket and three tasks that feed the core: the reader
//! (receive, then decode and handle each frame, handing over to the core
//! after every `ReadChunk`), the writer (sends what the core queued, one
//! batch per wake-up, so calls made in one scheduler turn leave in one send)
//! and the timer (sleeps until the core's next timeout: call deadlines and
//! heartbeats, one timer per connection, not per call). Invariants: after any
//! call into the core the driver wakes the writer if the core has frames
//! queued and the timer if its timeout moved earlier; once the core is closed
//! the socket is shut down and every task ends.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{ClientConfig, Counters};
use crate::conn::{ClientCore, ClientCoreConfig, Finished};
use crate::message::Out;
use crate::protocol::metadata::Metadata;
use crate::protocol::{CallId, Decoded, ProtocolError, HEADER_LEN};
use crate::runtime::buf::RecvBuf;
use crate::runtime::io::{self, Stream};
use crate::runtime::ReadChunk;
use crate::Error;

/// A multiplexed connection to one endpoint, owned by one core.
pub(crate) struct ClientConn {
    stream: Stream,
    cfg: Rc<ClientConfig>,
    counters: Rc<Counters>,
    core: RefCell<ClientCore>,
    writer: Cell<Option<Waker>>,
    timer: Cell<Option<Waker>>,
    closed_waker: Cell<Option<Waker>>,
    /// The socket has been shut down (the core closed).
    shut: Cell<bool>,
}

impl ClientConn {
    pub fn new(stream: Stream, cfg: Rc<ClientConfig>, counters: Rc<Counters>) -> Rc<Self> {
        let core_cfg = ClientCoreConfig {
            max_in_flight: cfg.max_in_flight,
            max_frame: cfg.max_frame,
            data_digest: cfg.data_digest,
            heartbeat_interval: cfg.heartbeat_interval,
            heartbeat_timeout: cfg.heartbeat_timeout,
        };
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut core = ClientCore::new(Instant::now(), core_cfg, counters.clone());
        #[cfg(feature = "tls")]
        if let Some(tls) = &cfg.tls {
            match tls.session() {
                Ok(session) => core = core.with_tls(session),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TLS session; closing");
                    core.close(Instant::now());
                }
            }
        }
        Rc::new(Self {
            stream,
            core: RefCell::new(core),
            cfg,
            counters,
            writer: Cell::new(None),
            timer: Cell::new(None),
            closed_waker: Cell::new(None),
            shut: Cell::new(false),
        })
    }

    /// Does what the core asks for after it changed: wakes the writer when
    /// frames are queued, the timer when its timeout moved earlier, and shuts
    /// the socket (waking every task) once it closed.
    fn sync(&self, core: &ClientCore) {
        if core.is_closed() {
            if !self.shut.replace(true) {
                io::shutdown(&self.stream);
                for waker in [&self.writer, &self.timer, &self.closed_waker] {
                    if let Some(w) = waker.take() {
                        w.wake();
                    }
                }
            }
            return;
        }
        if core.wants_write() {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
        if !core.is_live() {
            // Draining (goaway or retire): the slot may start its replacement.
            if let Some(w) = self.closed_waker.take() {
                w.wake();
            }
        }
        if core.timeout_moved_earlier() {
            if let Some(w) = self.timer.take() {
                w.wake();
            }
        }
    }

    /// True if a new call may be started here now.
    pub fn has_room(&self) -> bool {
        self.core.borrow().has_room()
    }

    /// True while the connection accepts calls (it may be at its in-flight limit).
    pub fn is_live(&self) -> bool {
        self.core.borrow().is_live()
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.core.borrow().is_closed()
    }

    /// Calls ever started on this connection.
    pub fn calls_started(&self) -> u64 {
        self.core.borrow().calls_started()
    }

    /// Calls in flight on this connection.
    pub fn in_flight(&self) -> usize {
        self.core.borrow().in_flight()
    }

    /// Stops routing new calls here and closes once the calls in flight finish.
    pub fn retire(&self) {
        let mut core = self.core.borrow_mut();
        core.retire();
        self.sync(&core);
    }

    /// Closes the connection and fails every call in flight with `ConnectionLost` now.
    pub fn close(&self) {
        let mut core = self.core.borrow_mut();
        core.close(Instant::now());
        self.sync(&core);
    }

    /// Registers a call made at `now` and queues its request frame. The caller
    /// must then poll [`poll_reply`](Self::poll_reply) and call
    /// [`forget`](Self::forget) if it gives up. The call fails with
    /// [`Error::Timeout`] at `deadline.0`; the server is told it has
    /// `deadline.1`. The payload is written by `encode` (see
    /// `ClientCore::start_call_with`).
    pub fn start_call(
        &self,
        method: u32,
        deadline: (Instant, Duration),
        now: Instant,
        encode: impl FnOnce(Out<'_>) -> Result<(), ProtocolError>,
        metadata: Option<&Metadata>,
    ) -> Result<CallId, Error> {
        let mut core = self.core.borrow_mut();
        let id = core.start_call_with(now, method, deadline, encode, metadata)?;
        self.sync(&core);
        Ok(id)
    }

    /// Polls for the reply to `id`; on `Ready` the slot has been freed.
    pub fn poll_reply(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Finished> {
        let mut core = self.core.borrow_mut();
        let poll = core.poll_reply(id, cx);
        if poll.is_ready() {
            self.sync(&core);
        }
        poll
    }

    /// Frees the slot of a call whose caller gave up (timeout or drop).
    pub fn forget(&self, id: CallId) {
        let mut core = self.core.borrow_mut();
        core.forget(id);
        self.sync(&core);
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            if self.is_closed() {
                Poll::Ready(())
            } else {
                self.closed_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves once the connection takes no new calls (draining after a
    /// goaway, retired, or closed).
    pub async fn stopped_taking_calls(&self) {
        poll_fn(|cx| {
            if !self.is_live() {
                Poll::Ready(())
            } else {
                self.closed_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Handles the complete frames in `buf` (received at `arrived`), handing
    /// over to the core after every chunk. Returns the length the next frame
    /// needs, or `None` once the connection is closed.
    async fn handle_input(&self, buf: &mut RecvBuf, arrived: Instant) -> Option<usize> {
        let mut chunk = ReadChunk::for_client(self.core.borrow().in_flight());
        loop {
            let len = match self.handle_next(buf, arrived) {
                Ok(Decoded::Frame(header)) => header.frame_len(),
                Ok(Decoded::Incomplete { total }) => return Some(total),
                Err(()) => return None,
            };
            if chunk.handled(len) && !buf.unconsumed().is_empty() {
                // Let the woken callers queue their next requests and the
                // writer send them while the rest is handled.
                io::yield_now().await;
                if self.is_closed() {
                    return None;
                }
            }
        }
    }

    /// Decrypts what `cipher` holds into `buf`; false once the session failed
    /// (the connection is then closed) or the server closed its side.
    fn open(&self, cipher: &mut RecvBuf, buf: &mut RecvBuf) -> bool {
        let mut core = self.core.borrow_mut();
        let opened = core.open(io::now(), cipher, buf);
        self.sync(&core);
        match opened {
            Ok(opened) => !opened.peer_closed,
            Err(why) => {
                tracing::warn!(reason = %why, "TLS session with the server failed");
                false
            }
        }
    }

    /// Feeds the core the frame at the front of `buf`; `Err` once closed.
    fn handle_next(&self, buf: &mut RecvBuf, arrived: Instant) -> Result<Decoded, ()> {
        let mut core = self.core.borrow_mut();
        let next = core.handle_next(arrived, buf);
        self.sync(&core);
        match next {
            Ok(decoded) if !core.is_closed() => Ok(decoded),
            Ok(_) => Err(()),
            Err(e) => {
                tracing::warn!(error = %e, "server broke the protocol");
                Err(())
            }
        }
    }
}

/// The connection's only reader: receives and feeds the core until the
/// connection fails or closes.
pub(crate) async fn read_loop(conn: Rc<ClientConn>) {
    let mut buf = RecvBuf::new(conn.cfg.recv_chunk);
    // Under TLS the socket's bytes land here and their plaintext in `buf`
    // (boxed: a plaintext connection's task does not carry a second buffer).
    let mut cipher = conn
        .core
        .borrow()
        .is_tls()
        .then(|| Box::new(RecvBuf::new(conn.cfg.recv_chunk)));
    let mut need = HEADER_LEN;
    loop {
        buf.reserve(need);
        match io::read_conn(&conn.stream, &mut buf, cipher.as_deref_mut()).await {
            Ok(n) if n > 0 && !conn.is_closed() => conn.counters.bytes_in(n),
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "client read failed");
                break;
            }
        }
        if let Some(cipher) = cipher.as_deref_mut() {
            if !conn.open(cipher, &mut buf) {
                break;
            }
        }
        match conn.handle_input(&mut buf, io::now()).await {
            Some(total) => need = total,
            None => break,
        }
    }
    conn.close();
}

/// The connection's writer: sends everything queued, one batch per wake-up.
pub(crate) async fn write_loop(conn: Rc<ClientConn>) {
    loop {
        let batch = poll_fn(|cx| crate::conn::poll_batch(&conn.core, &conn.writer, cx)).await;
        let Some(batch) = batch else { return };
        let (result, batch) = io::write_batch(&conn.stream, batch, &Cell::new(None)).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "client write failed");
            return conn.close();
        }
        // The batch's completion time feeds the queue/wire split of its calls.
        let now = if conn.counters.timing {
            Instant::now()
        } else {
            io::now()
        };
        conn.core.borrow_mut().transmit_done(now, batch);
    }
}

/// Runs the core's timeouts (call deadlines, heartbeats): sleeps until the
/// next one, or until a new call moves it earlier.
pub(crate) async fn timer_loop(conn: Rc<ClientConn>) {
    loop {
        let Some(at) = conn.core.borrow_mut().poll_timeout() else {
            return;
        };
        let moved = poll_fn(|cx| {
            let core = conn.core.borrow();
            if core.is_closed() || core.timeout_moved_earlier() {
                Poll::Ready(())
            } else {
                conn.timer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        if io::until(at, moved).await.is_none() {
            // A fresh reading: a call never times out before its deadline.
            let mut core = conn.core.borrow_mut();
            core.handle_timeout(Instant::now());
            conn.sync(&core);
        }
    }
}
