//! The server: a listener per core (SO_REUSEPORT), each connection served on the
//! core that accepted it.
//!
//! [`ServerBuilder`] collects typed handlers and limits; [`ServerBuilder::serve`]
//! binds one listener per runtime core on the same address and returns a
//! [`ServerHandle`] for graceful shutdown. Invariants: nothing about a connection
//! ever leaves its core; after [`ServerHandle::shutdown`] or
//! [`ServerHandle::abort`] returns, every listener and connection is closed.

mod conn;
mod responder;
mod router;

use std::cell::RefCell;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use slab::Slab;

use crate::message::{Message, Method, Request};
use crate::metrics::{
    self,
    counters::{dec, inc},
};
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::runtime::io::{self, Stream};
use crate::runtime::{CoreRemote, CoreTask, Runtime};
use crate::Error;
use conn::ConnShared;
pub use responder::{Responder, Sent};
use router::Router;

/// Server-wide counters, updated per connection event (never per call).
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    open: AtomicUsize,
    accepted: AtomicU64,
    protocol_errors: AtomicU64,
    read_timeouts: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of a server's connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open right now, across cores.
    pub open_connections: usize,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Connections closed because a partial frame stalled past the read timeout.
    pub read_timeouts: u64,
    /// Connections refused because their core was at its connection limit.
    pub rejected_connections: u64,
    /// Calls refused because their connection had too many calls running.
    pub overloaded_calls: u64,
}

/// The server's limits (see [`ServerBuilder`] for defaults).
#[derive(Debug, Clone)]
struct Limits {
    max_frame: usize,
    recv_chunk: usize,
    max_pending_out: usize,
    read_timeout: Duration,
    max_connections_per_core: usize,
    max_in_flight_per_connection: usize,
    metrics: bool,
    data_digest: bool,
    require_data_digest: bool,
}

pub(crate) struct ServerConfig {
    limits: Limits,
    stats: ServerCounters,
}

/// Builds a server: handlers plus limits.
///
/// | limit | default |
/// |---|---|
/// | `max_frame` (header included; bigger ⇒ connection closed) | 16 MiB |
/// | `recv_chunk` (receive buffer chunk) | 256 KiB |
/// | `max_pending_out` (unsent responses before reading pauses) | 4 MiB |
/// | `read_timeout` (a started frame must complete within) | 10 s |
/// | `max_connections_per_core` (more are closed at accept) | 16384 |
/// | `max_in_flight_per_connection` (async calls running; more get `Overloaded`) | 4096 |
/// | `metrics` (per-phase and per-method latency histograms; counters always kept) | on |
/// | `data_digest` (frames sent carry the CRC32 of their payload) | on |
/// | `require_data_digest` (a frame received without it ⇒ connection closed) | off |
pub struct ServerBuilder {
    router: Router,
    limits: Limits,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Entry point for building servers.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults listed on [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::default(),
            limits: Limits {
                max_frame: DEFAULT_MAX_FRAME,
                recv_chunk: 256 << 10,
                max_pending_out: 4 << 20,
                read_timeout: Duration::from_secs(10),
                max_connections_per_core: 16384,
                max_in_flight_per_connection: 4096,
                metrics: true,
                data_digest: true,
                require_data_digest: false,
            },
        }
    }
}

impl ServerBuilder {
    /// Registers a handler that runs inline on the connection's core and reads the
    /// archived request in place. The fastest kind: no task, no allocation.
    ///
    /// Fails on a malformed, duplicate or id-colliding method name. A handler
    /// error `E` reaches the caller as [`Error::Remote`] with its `Display` text.
    pub fn register<Req, Resp, E, F>(
        self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: Display + 'static,
        F: Fn(&Req::Archived) -> Result<Resp, E> + Send + Sync + 'static,
    {
        // An owned response is sent through a responder like any other.
        self.register_responder(
            method,
            move |req: &Req::Archived, reply: Responder<'_, Resp>| {
                handler(req).map(|resp| reply.send(&resp))
            },
        )
    }

    /// Registers a handler that runs inline, like [`register`](Self::register),
    /// but sends its response through a [`Responder`] while it still holds the
    /// request, so the response can borrow from it instead of copying into an
    /// owned value (an echo, a proxy, a cache returning stored bytes).
    ///
    /// The handler returns the [`Sent`] token that [`Responder::send`] gives
    /// back, or an error `E` (sent as [`Error::Remote`] if nothing was sent yet;
    /// an error or a panic after `send` is logged and the response stands).
    ///
    /// ```
    /// use ringrpc::{Method, Server, SliceAsVec};
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// struct Blob { id: u64, data: Vec<u8> }
    ///
    /// // Archives as `ArchivedBlob` (see `SliceAsVec` for the attributes).
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// #[rkyv(as = ArchivedBlob, serialize_bounds(__S: ringrpc::BorrowSerializer))]
    /// struct BlobRef<'a> {
    ///     id: u64,
    ///     #[rkyv(with = SliceAsVec, omit_bounds)]
    ///     data: &'a [u8],
    /// }
    ///
    /// const ECHO: Method<Blob, Blob> = Method::new("Blobs.echo");
    ///
    /// let builder = Server::builder()
    ///     .register_responder(ECHO, |req: &ArchivedBlob, reply| {
    ///         let echo = BlobRef { id: req.id.to_native(), data: req.data.as_slice() };
    ///         Ok::<_, String>(reply.send(&echo))
    ///     })
    ///     .unwrap();
    /// # drop(builder);
    /// ```
    pub fn register_responder<Req, Resp, E, F>(
        mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: Display + 'static,
        F: Fn(&Req::Archived, Responder<'_, Resp>) -> Result<Sent, E> + Send + Sync + 'static,
    {
        self.router.add_responder(method, handler)?;
        Ok(self)
    }

    /// Registers a handler that may await; it runs as its own task on the
    /// connection's core and owns its [`Request`] (still zero-copy).
    pub fn register_async<Req, Resp, E, F, Fut>(
        mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: Display + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + 'static,
    {
        self.router.add_async(method, handler)?;
        Ok(self)
    }

    /// Largest frame accepted or sent, header included. A peer sending a bigger
    /// one is disconnected.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.limits.max_frame = bytes;
        self
    }

    /// Size of receive buffer chunks.
    pub fn recv_chunk(mut self, bytes: usize) -> Self {
        self.limits.recv_chunk = bytes;
        self
    }

    /// Unsent response bytes on one connection above which the server stops
    /// reading from it until the peer catches up.
    pub fn max_pending_out(mut self, bytes: usize) -> Self {
        self.limits.max_pending_out = bytes;
        self
    }

    /// Time within which a frame, once started, must arrive completely (slowloris
    /// defence). Idle connections between frames are not affected.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.read_timeout = timeout;
        self
    }

    /// Connections one core holds at most; further ones are closed at accept.
    pub fn max_connections_per_core(mut self, n: usize) -> Self {
        self.limits.max_connections_per_core = n;
        self
    }

    /// Async calls that may run at once on one connection; more are answered
    /// with an `Overloaded` error frame.
    pub fn max_in_flight_per_connection(mut self, n: usize) -> Self {
        self.limits.max_in_flight_per_connection = n;
        self
    }

    /// Turns per-phase and per-method latency histograms on or off.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.limits.metrics = enabled;
        self
    }

    /// Whether frames sent (responses, errors, pongs, goaway) carry a data
    /// digest, the CRC32 of their payload (default on). Turn it off only on a
    /// trusted link: a corrupted payload is then no longer detected (headers
    /// always carry their own digest).
    pub fn data_digest(mut self, enabled: bool) -> Self {
        self.limits.data_digest = enabled;
        self
    }

    /// Whether every frame received must carry a data digest (default off:
    /// frames without one are accepted, frames with one are always checked).
    /// When on, a frame without it is a protocol error that closes its
    /// connection (counted in [`ServerStats::protocol_errors`]), as a bad digest does.
    pub fn require_data_digest(mut self, required: bool) -> Self {
        self.limits.require_data_digest = required;
        self
    }

    /// Serves on every core of `runtime`, all listening on `addr` (port 0 picks one).
    pub fn serve(self, runtime: &Runtime, addr: SocketAddr) -> Result<ServerHandle, Error> {
        let cores: Vec<usize> = (0..runtime.cores()).collect();
        self.serve_on(runtime, &cores, addr)
    }

    /// Serves on the listed cores of `runtime`.
    pub fn serve_on(
        self,
        runtime: &Runtime,
        cores: &[usize],
        addr: SocketAddr,
    ) -> Result<ServerHandle, Error> {
        let first = io::bind_reuseport(addr)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..cores.len() {
            listeners.push(io::bind_reuseport(addr)?);
        }
        let router = Arc::new(self.router);
        let cfg = Arc::new(ServerConfig {
            limits: self.limits,
            stats: ServerCounters::default(),
        });
        let mut handle = ServerHandle {
            addr,
            cores: Vec::new(),
            cfg: cfg.clone(),
        };
        for (&core, listener) in cores.iter().zip(listeners) {
            let (stop_tx, stop_rx) = oneshot::channel();
            let (router, cfg) = (router.clone(), cfg.clone());
            let task =
                runtime.spawn_on(core, move || core_serve(listener, router, cfg, stop_rx))?;
            let remote = runtime.remote(core).ok_or(Error::Shutdown)?;
            handle.cores.push(CoreControl {
                remote,
                stop: stop_tx,
                task,
            });
        }
        Ok(handle)
    }
}

/// How a core stops serving.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Drain(Duration),
    Abort,
}

/// Controls a running server. Dropping it aborts the server.
pub struct ServerHandle {
    addr: SocketAddr,
    cores: Vec<CoreControl>,
    cfg: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("cores", &self.cores.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// How the handle reaches one serving core.
struct CoreControl {
    remote: CoreRemote,
    stop: oneshot::Sender<Stop>,
    task: CoreTask<()>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connection counters.
    pub fn stats(&self) -> ServerStats {
        let s = &self.cfg.stats;
        ServerStats {
            open_connections: s.open.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            protocol_errors: s.protocol_errors.load(Ordering::Relaxed),
            read_timeouts: s.read_timeouts.load(Ordering::Relaxed),
            rejected_connections: s.rejected.load(Ordering::Relaxed),
            overloaded_calls: s.overloaded.load(Ordering::Relaxed),
        }
    }

    /// Graceful shutdown: stop accepting, send goaway on every connection, let
    /// in-flight calls finish for up to `drain`, then close. Blocks until done;
    /// call it from outside the runtime's cores.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop(Stop::Drain(drain));
    }

    /// Immediate stop: closes every listener and connection now; calls in flight
    /// fail at their callers with connection-lost. Blocks until done.
    pub fn abort(mut self) {
        self.stop(Stop::Abort);
    }

    fn stop(&mut self, how: Stop) {
        for core in self.cores.drain(..) {
            // The stop is sent from the core's own thread (see `CoreRemote`).
            let stop = core.stop;
            if core.remote.run(move || {
                let _ = stop.send(how);
            }) {
                let _ = core.task.join();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop(Stop::Abort);
    }
}

/// One core's connections, for shutdown.
#[derive(Default)]
struct CoreConns {
    conns: RefCell<Slab<Rc<ConnShared>>>,
}

async fn core_serve(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    cfg: Arc<ServerConfig>,
    stop: oneshot::Receiver<Stop>,
) {
    let listener = match io::listener_from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "cannot adopt listener"),
    };
    let conns = Rc::new(CoreConns::default());
    let _sweeper = io::spawn(sweep_stalled(conns.clone(), cfg.clone()));
    let accept = accept_loop(&listener, &router, &cfg, &conns);
    let how = match select(pin!(accept), stop).await {
        Either::Right((Ok(how), _)) => how,
        _ => Stop::Abort,
    };
    drop(listener);
    if let Stop::Drain(drain) = how {
        drain_conns(&conns, Instant::now() + drain).await;
    }
    let all: Vec<_> = conns
        .conns
        .borrow()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    for conn in all {
        conn.close();
    }
    // Let connection tasks observe the close and unregister.
    while !conns.conns.borrow().is_empty() {
        io::sleep(Duration::from_millis(1)).await;
    }
}

async fn drain_conns(conns: &CoreConns, deadline: Instant) {
    for (_, conn) in conns.conns.borrow().iter() {
        conn.go_away();
    }
    // Clients close a connection once its last call completes after goaway.
    while Instant::now() < deadline && !conns.conns.borrow().is_empty() {
        io::sleep(Duration::from_millis(1)).await;
    }
}

async fn accept_loop(
    listener: &io::Listener,
    router: &Arc<Router>,
    cfg: &Arc<ServerConfig>,
    conns: &Rc<CoreConns>,
) {
    loop {
        match io::accept(listener).await {
            Ok((stream, _))
                if conns.conns.borrow().len() >= cfg.limits.max_connections_per_core =>
            {
                bump(&cfg.stats.rejected);
                inc(&metrics::local().server.rejected);
                tracing::warn!("connection limit reached; refusing a connection");
                io::set_linger_zero(&stream);
                drop(stream);
            }
            Ok((stream, peer)) => start_conn(stream, peer, router, cfg, conns),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                io::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Closes connections whose partially received frame has stalled past the read
/// timeout. One timer per core, whatever the number of connections.
async fn sweep_stalled(conns: Rc<CoreConns>, cfg: Arc<ServerConfig>) {
    let timeout = cfg.limits.read_timeout;
    let period = (timeout / 4).max(Duration::from_millis(5));
    loop {
        io::sleep(period).await;
        let now = Instant::now();
        let stalled: Vec<_> = conns
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| {
                c.partial_since()
                    .is_some_and(|t| now.saturating_duration_since(t) > timeout)
            })
            .map(|(_, c)| c.clone())
            .collect();
        for conn in stalled {
            tracing::warn!(?timeout, "closing connection: partial frame stalled");
            bump(&cfg.stats.read_timeouts);
            inc(&metrics::local().server.read_timeouts);
            conn.close();
        }
    }
}

fn start_conn(
    stream: Stream,
    peer: SocketAddr,
    router: &Arc<Router>,
    cfg: &Arc<ServerConfig>,
    conns: &Rc<CoreConns>,
) {
    let conn = Rc::new(ConnShared::new(stream, cfg.clone()));
    let key = conns.conns.borrow_mut().insert(conn.clone());
    cfg.stats.open.fetch_add(1, Ordering::Relaxed);
    cfg.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let core_metrics = metrics::local();
    inc(&core_metrics.server.accepted);
    inc(&core_metrics.server.connections);
    let (router, cfg, conns) = (router.clone(), cfg.clone(), conns.clone());
    let span = tracing::info_span!("conn", %peer);
    let task = async move {
        conn::serve(conn, router, cfg.clone()).await;
        conns.conns.borrow_mut().remove(key);
        cfg.stats.open.fetch_sub(1, Ordering::Relaxed);
        dec(&core_metrics.server.connections);
    };
    io::spawn_in(span, task).detach();
}
