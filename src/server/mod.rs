//! The server: a listener per core (SO_REUSEPORT), each connection served on the
//! core that accepted it.
//!
//! [`ServerBuilder`] collects typed handlers and limits; [`ServerBuilder::serve`]
//! binds one listener per runtime core on the same address and returns a
//! [`ServerHandle`] for graceful shutdown. Invariants: nothing about a connection
//! ever leaves its core; after [`ServerHandle::shutdown`] or
//! [`ServerHandle::abort`] returns, every listener and connection is closed.

mod authz;
mod budget;
mod conn;
mod ctx;
mod listener;
mod responder;
mod router;
mod security;
mod sweep;

use crate::app_error::HandlerError;
use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::message::{Message, Method, Request};
use crate::metrics::{self, counters::inc};
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::runtime::io;
use crate::runtime::{CoreRemote, CoreTask, Runtime};
use crate::Error;
pub use authz::{AuthzFn, AuthzRequest, Denied};
pub use ctx::Ctx;
pub use responder::{Responder, Sent};
use router::Router;
use security::Security;

/// Server-wide counters, updated per connection event (never per call).
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    open: AtomicUsize,
    accepted: AtomicU64,
    events: [AtomicU64; Event::COUNT],
}

/// A connection event counted in [`ServerStats`] and in the core's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    ProtocolError,
    ReadTimeout,
    Rejected,
    Overloaded,
    FdShed,
    PeerRejected,
    Evicted,
    IdleClosed,
    AgeClosed,
    WriteTimeout,
    InboundPaused,
    InboundClosed,
    HandshakeTimeout,
    HandshakesRefused,
}

impl Event {
    const COUNT: usize = 14;
}

impl ServerConfig {
    /// Counts `event` in the server's stats and the current core's metrics
    /// (protocol errors and overloads are counted in the metrics by the
    /// connection core itself).
    pub(crate) fn count(&self, event: Event) {
        self.stats.events[event as usize].fetch_add(1, Ordering::Relaxed);
        let m = &metrics::local().server;
        let cell = match event {
            Event::ProtocolError | Event::Overloaded => return,
            Event::ReadTimeout => &m.read_timeouts,
            Event::Rejected => &m.rejected,
            Event::FdShed => &m.fd_shed,
            Event::PeerRejected => &m.peer_rejected,
            Event::Evicted => &m.evicted,
            Event::IdleClosed => &m.idle_closed,
            Event::AgeClosed => &m.age_closed,
            Event::WriteTimeout => &m.write_timeouts,
            Event::InboundPaused => &m.inbound_paused,
            Event::InboundClosed => &m.inbound_closed,
            Event::HandshakeTimeout => &m.tls_failed_timeout,
            Event::HandshakesRefused => &m.tls_refused,
        };
        inc(cell);
    }

    fn counted(&self, event: Event) -> u64 {
        self.stats.events[event as usize].load(Ordering::Relaxed)
    }
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
    /// Connections refused because their core was at its connection limit
    /// and had no idle connection to evict.
    pub rejected_connections: u64,
    /// Calls refused because their connection had too many calls running.
    pub overloaded_calls: u64,
    /// Connections accepted and closed at once because the process was out
    /// of file descriptors.
    pub fd_shed: u64,
    /// Connections refused at the per-peer-address limit.
    pub peer_rejected: u64,
    /// Idle connections closed (goaway first) to admit new ones at the limit.
    pub evicted: u64,
    /// Connections closed (goaway first) after the idle timeout.
    pub idle_closed: u64,
    /// Connections closed (goaway first) at their maximum age.
    pub age_closed: u64,
    /// Connections closed because their replies made no progress in time.
    pub write_timeouts: u64,
    /// Times a connection's reads paused on the inbound memory budget.
    pub inbound_paused: u64,
    /// Connections closed while paused on the inbound memory budget.
    pub inbound_closed: u64,
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
    idle_timeout: Option<Duration>,
    max_connection_age: Option<(Duration, Duration)>,
    max_connections_per_peer: Option<usize>,
    evict_idle: bool,
    write_timeout: Duration,
    max_inbound_per_core: usize,
}

pub(crate) struct ServerConfig {
    limits: Limits,
    stats: ServerCounters,
    /// Makes each core's state (see [`ServerBuilder::with_state`]).
    state: Option<StateFactory>,
    security: Security,
}

/// Builds one core's state from the core's index.
type StateFactory = Arc<dyn Fn(usize) -> Rc<dyn Any> + Send + Sync>;

#[cfg(test)]
impl ServerConfig {
    /// The default limits, for unit tests.
    pub(crate) fn for_tests() -> Self {
        Self {
            limits: Server::builder().limits,
            stats: ServerCounters::default(),
            state: None,
            security: Security::default(),
        }
    }
}

/// Builds a server: handlers plus limits.
///
/// | limit | default |
/// |---|---|
/// | `max_frame` (header included; bigger ⇒ connection closed) | 4 MiB |
/// | `recv_chunk` (receive buffer chunk) | 256 KiB |
/// | `max_pending_out` (unsent responses before reading pauses) | 4 MiB |
/// | `read_timeout` (a started frame must complete within) | 10 s |
/// | `write_timeout` (queued replies must make progress within) | 30 s |
/// | `idle_timeout` (no call for this long ⇒ goaway, then close) | 5 min |
/// | `max_connection_age` (goaway at this age, close after a grace) | none |
/// | `max_connections_per_core` (lowered to fit the fd limit) | 16384 |
/// | `evict_idle` (at the limit, evict the longest-idle connection) | on |
/// | `max_connections_per_peer` (per IP address, per core) | none |
/// | `max_inbound_per_core` (bytes of partial frames; above, large ones pause) | 64 MiB |
/// | `max_in_flight_per_connection` (async calls running; more get `Overloaded`) | 4096 |
/// | `metrics` (per-phase and per-method latency histograms; counters always kept) | on |
/// | `data_digest` (frames sent carry the CRC32 of their payload) | on |
/// | `require_data_digest` (a frame received without it ⇒ connection closed) | off |
pub struct ServerBuilder {
    router: Router,
    limits: Limits,
    state: Option<StateFactory>,
    security: Security,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A set of methods registered together: what `#[ringrpc::service]`
/// generates for a service trait (`<Trait>Service<S>`). Register one with
/// [`ServerBuilder::add_service`].
pub trait Service {
    /// Registers the service's methods on `builder`.
    fn register(self, builder: ServerBuilder) -> Result<ServerBuilder, Error>;
}

/// Entry point for building servers.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults listed on [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::default(),
            state: None,
            security: Security::default(),
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
                idle_timeout: Some(Duration::from_secs(300)),
                max_connection_age: None,
                max_connections_per_peer: None,
                evict_idle: true,
                write_timeout: Duration::from_secs(30),
                max_inbound_per_core: 64 << 20,
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
        E: HandlerError + 'static,
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
    /// let builder = Server::builder().insecure_plaintext()
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
        E: HandlerError + 'static,
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
        E: HandlerError + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + 'static,
    {
        self.router
            .add_async(method, move |_ctx: Ctx, req| handler(req))?;
        Ok(self)
    }

    /// Gives each serving core a state of its own, made on that core by
    /// `make(core_index)` when the server starts; handlers reach it with
    /// [`Ctx::state`] as `&S`, without locks (nothing is shared between
    /// cores). Replaces an earlier `with_state`.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::collections::HashMap;
    /// use ringrpc::{Ctx, Method, Server};
    ///
    /// struct Shard { core: usize, map: RefCell<HashMap<u64, u64>> }
    /// const GET: Method<u64, u64> = Method::new("Kv.get");
    ///
    /// let builder = Server::builder().insecure_plaintext()
    ///     .with_state(|core| Shard { core, map: RefCell::default() })
    ///     .register_with_ctx(GET, |ctx: &Ctx, key: &rkyv::Archived<u64>| {
    ///         let shard = ctx.state::<Shard>().expect("with_state");
    ///         Ok::<_, String>(shard.map.borrow().get(&key.to_native()).copied().unwrap_or(0))
    ///     })
    ///     .unwrap();
    /// # drop(builder);
    /// ```
    pub fn with_state<S: 'static>(
        mut self,
        make: impl Fn(usize) -> S + Send + Sync + 'static,
    ) -> Self {
        self.state = Some(Arc::new(move |core| Rc::new(make(core)) as Rc<dyn Any>));
        self
    }

    /// Registers every method of a typed service (what `#[ringrpc::service]`
    /// generates: `KvService::new(my_impl)`).
    pub fn add_service(self, service: impl Service) -> Result<Self, Error> {
        service.register(self)
    }

    /// Registers an inline handler, like [`register`](Self::register), that
    /// also sees the call's [`Ctx`] (deadline, peer, core, metadata).
    pub fn register_with_ctx<Req, Resp, E, F>(
        mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: HandlerError + 'static,
        F: Fn(&Ctx, &Req::Archived) -> Result<Resp, E> + Send + Sync + 'static,
    {
        self.router.add_ctx(method, handler)?;
        Ok(self)
    }

    /// Registers an async handler, like [`register_async`](Self::register_async),
    /// that also gets the call's [`Ctx`]: its deadline (pass the remaining
    /// budget on with [`CallOptions::inherit`](crate::CallOptions::inherit)),
    /// peer, core, metadata, and a cancellation signal raised when the caller
    /// drops its call (the handler's future is then dropped; its answer is
    /// never sent).
    pub fn register_async_with_ctx<Req, Resp, E, F, Fut>(
        mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: HandlerError + 'static,
        F: Fn(Ctx, Request<Req>) -> Fut + Send + Sync + 'static,
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

    /// Connections one core holds at most. At the limit a new connection
    /// evicts the longest-idle one (see [`evict_idle`](Self::evict_idle)) or
    /// is closed at accept. At start the limit is lowered, with a warning, to
    /// what the process's file descriptor limit allows (the server raises its
    /// soft `RLIMIT_NOFILE` to the hard limit first).
    pub fn max_connections_per_core(mut self, n: usize) -> Self {
        self.limits.max_connections_per_core = n;
        self
    }

    /// Whether a core at its connection limit closes its longest-idle
    /// connection (no call running, nothing queued; goaway first) to admit a
    /// new one (default on). Off: the new connection is refused instead.
    pub fn evict_idle(mut self, enabled: bool) -> Self {
        self.limits.evict_idle = enabled;
        self
    }

    /// Connections one peer IP address may hold on one core (default: no
    /// limit); more are refused at accept and counted.
    pub fn max_connections_per_peer(mut self, n: Option<usize>) -> Self {
        self.limits.max_connections_per_peer = n;
        self
    }

    /// A connection with no call for this long (pings do not count) is sent
    /// a goaway and closed, like gRPC's `max_connection_idle` (default 5 min;
    /// `None`: never). Clients reconnect on their next call.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// A connection older than `age` is sent a goaway; it is closed once its
    /// calls finish, or `grace` later at the latest, like gRPC's
    /// `max_connection_age` and its grace (default: no age limit). Spreads
    /// clients over new servers and rotates long-lived connections.
    pub fn max_connection_age(mut self, age: Duration, grace: Duration) -> Self {
        self.limits.max_connection_age = Some((age, grace));
        self
    }

    /// A connection whose queued replies make no progress (the peer does not
    /// read) for this long is closed (default 30 s); its handlers' later
    /// results are dropped.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.write_timeout = timeout;
        self
    }

    /// Bytes of partially received frames one core holds across all its
    /// connections (default 64 MiB). Above it, connections whose partial
    /// frame is larger than one receive chunk pause their reads until the
    /// total drops; one that stays paused past the read timeout is closed.
    pub fn max_inbound_per_core(mut self, bytes: usize) -> Self {
        self.limits.max_inbound_per_core = bytes;
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
        self.start(runtime, cores, listeners)
    }

    /// Serves every core of `runtime` on an address of its own, so a client
    /// can choose the core (and so the [`with_state`](Self::with_state)
    /// shard) that serves a call: core `i` listens on `addr`'s port + `i`,
    /// or on a free port each when `addr`'s port is 0. The addresses, in core
    /// order, are [`ServerHandle::shard_addrs`]; `ShardedClient` routes keys
    /// over them the same way on every client.
    pub fn serve_sharded(self, runtime: &Runtime, addr: SocketAddr) -> Result<ServerHandle, Error> {
        let cores: Vec<usize> = (0..runtime.cores()).collect();
        let listeners = cores
            .iter()
            .map(|&i| {
                let mut at = addr;
                if addr.port() != 0 {
                    let port = u16::try_from(usize::from(addr.port()) + i)
                        .map_err(|_| Error::Config(format!("no port {} + {i}", addr.port())))?;
                    at.set_port(port);
                }
                Ok(io::bind_reuseport(at)?)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.start(runtime, &cores, listeners)
    }

    /// Starts serving `listeners[i]` on `cores[i]`.
    fn start(
        self,
        runtime: &Runtime,
        cores: &[usize],
        listeners: Vec<std::net::TcpListener>,
    ) -> Result<ServerHandle, Error> {
        self.security.check_transport()?;
        let shard_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let router = Arc::new(self.router);
        let mut limits = self.limits;
        limits.max_connections_per_core =
            fit_fd_limit(limits.max_connections_per_core, cores.len());
        let cfg = Arc::new(ServerConfig {
            limits,
            stats: ServerCounters::default(),
            state: self.state,
            security: self.security,
        });
        let mut handle = ServerHandle {
            addr: shard_addrs[0],
            shard_addrs,
            cores: Vec::new(),
            cfg: cfg.clone(),
        };
        for (&core, listener) in cores.iter().zip(listeners) {
            let (stop_tx, stop_rx) = oneshot::channel();
            let (router, cfg) = (router.clone(), cfg.clone());
            let task = runtime.spawn_on(core, move || {
                listener::core_serve(listener, router, cfg, stop_rx)
            })?;
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

/// The per-core connection limit lowered, with a warning, so that `cores`
/// cores at their limit stay within the process's descriptors (raised to the
/// hard limit first) minus a headroom for everything else.
fn fit_fd_limit(per_core: usize, cores: usize) -> usize {
    let soft = budget::raise_nofile_limit();
    let usable = soft.saturating_sub(budget::fd_headroom(soft));
    let fits = usize::try_from(usable / cores.max(1) as u64)
        .unwrap_or(usize::MAX)
        .max(1);
    if per_core > fits {
        tracing::warn!(
            configured = per_core,
            allowed = fits,
            nofile = soft,
            "max_connections_per_core lowered to fit the file descriptor limit"
        );
    }
    per_core.min(fits)
}

/// How a core stops serving.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Drain(Duration),
    Abort,
}

/// Controls a running server.
///
/// **Dropping it aborts the server**, exactly as [`abort`](Self::abort) does:
/// every core stops accepting, every connection is closed at once (no goaway,
/// no drain) and calls in flight fail at their callers with
/// [`Error::ConnectionLost`]; the drop blocks until every serving core has
/// stopped. Keep the handle for as long as the server should run, and end it
/// with [`shutdown`](Self::shutdown) for a graceful drain.
#[must_use = "dropping a ServerHandle aborts the server at once; keep it while the server should run"]
pub struct ServerHandle {
    addr: SocketAddr,
    /// Each serving core's address, in core order (all equal unless sharded).
    shard_addrs: Vec<SocketAddr>,
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

    /// Each serving core's address, in core order: distinct for a server
    /// started with [`ServerBuilder::serve_sharded`], all
    /// [`local_addr`](Self::local_addr) otherwise.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// Connection counters.
    pub fn stats(&self) -> ServerStats {
        let s = &self.cfg.stats;
        ServerStats {
            open_connections: s.open.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            protocol_errors: self.cfg.counted(Event::ProtocolError),
            read_timeouts: self.cfg.counted(Event::ReadTimeout),
            rejected_connections: self.cfg.counted(Event::Rejected),
            overloaded_calls: self.cfg.counted(Event::Overloaded),
            fd_shed: self.cfg.counted(Event::FdShed),
            peer_rejected: self.cfg.counted(Event::PeerRejected),
            evicted: self.cfg.counted(Event::Evicted),
            idle_closed: self.cfg.counted(Event::IdleClosed),
            age_closed: self.cfg.counted(Event::AgeClosed),
            write_timeouts: self.cfg.counted(Event::WriteTimeout),
            inbound_paused: self.cfg.counted(Event::InboundPaused),
            inbound_closed: self.cfg.counted(Event::InboundClosed),
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

    /// [`shutdown`](Self::shutdown) without blocking: the returned future
    /// (`Send`, borrowing nothing) asks every core to drain, then resolves once
    /// every core has closed its listener and connections. Await it from any
    /// executor (a tokio task, say); the cores drain at the same time, so it
    /// takes about `drain` at most. Nothing happens until it is first polled:
    /// dropping it unpolled aborts the server (as dropping the handle does),
    /// dropping it later lets the drain finish in the background.
    pub fn shutdown_async(mut self, drain: Duration) -> impl Future<Output = ()> + Send + 'static {
        let cores = std::mem::take(&mut self.cores);
        async move {
            let mut stopping = Vec::with_capacity(cores.len());
            for core in cores {
                let stop = core.stop;
                if core.remote.run(move || {
                    let _ = stop.send(Stop::Drain(drain));
                }) {
                    stopping.push(core.task);
                }
            }
            for task in stopping {
                let _ = task.await;
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop(Stop::Abort);
    }
}
