//! The client: typed, multiplexed calls over a per-core pool of connections.
//!
//! A [`Client`] belongs to the core that created it (it is `!Send`); create one
//! per core per endpoint, from a [`ClientBuilder`] (which is `Send + Clone`).
//! Threads that are not ringrpc cores (a tokio application's) call through a
//! [`Handle`] (`Send + Sync + Clone`), which owns a `Client` per core and gets
//! back [`OwnedReply`]s.
//! The call path is `call()` → pool picks a connection → slab slot + request
//! frame in the send buffer → writer task sends the batch → reader task decodes
//! the reply, completes the slot and wakes the caller → [`Reply`] derefs to the
//! archived response in the receive buffer. Invariants: every call ends with a
//! reply or a typed error no later than its deadline; a call that ends for any
//! reason frees its slot.

mod adaptive;
mod conn;
mod counters;
mod handle;
mod options;
mod pool;
mod sharded;
#[cfg(feature = "tls")]
mod tls;

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::message::{serialize_out, Message, Method, Out, Reply};
use crate::protocol::metadata::Metadata;
use crate::protocol::{ProtocolError, DEFAULT_MAX_FRAME};
use crate::runtime::buf::FrameBytes;
use crate::runtime::io;
use crate::Error;
pub(crate) use counters::Counters;
pub use handle::{Handle, OwnedReply};
pub use options::{CallOptions, DEFAULT_PROPAGATION_MARGIN};
use pool::Pool;
pub use sharded::{shard_of, ShardedClient};

/// A call's slot on its connection, freed if the call's future is dropped
/// before the reply.
struct Forget<'a>(&'a conn::ClientConn, crate::protocol::CallId);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// A call's deadline: `after` from `started` (read now when `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub started: Option<Instant>,
    pub after: Duration,
}

impl From<Duration> for Deadline {
    fn from(after: Duration) -> Self {
        Self {
            started: None,
            after,
        }
    }
}

/// What a call does when every connection is at its in-flight limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadPolicy {
    /// Wait for a free slot, at most until the call's deadline, then fail with
    /// [`Error::Overloaded`].
    Wait,
    /// Fail at once with [`Error::Overloaded`].
    FailFast,
}

/// Client settings; see [`ClientBuilder`] for defaults.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pool_size: usize,
    max_in_flight: usize,
    deadline: Duration,
    overload: OverloadPolicy,
    connect_timeout: Duration,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    max_frame: usize,
    data_digest: bool,
    recv_chunk: usize,
    metrics: bool,
    adaptive: Option<AdaptivePool>,
    /// TLS: the config and the server name (see `ClientBuilder::tls`).
    #[cfg(feature = "tls")]
    tls: Option<tls::ClientTls>,
    /// `insecure_plaintext()` was called (and no TLS config after it).
    plaintext: bool,
}

/// Settings of an adaptive pool (see [`ClientBuilder::adaptive`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptivePool {
    /// Most connections the pool grows to.
    pub max: usize,
    /// Grow while the pool hit rate over a window is below this (default 0.8).
    pub min_hit_rate: f64,
    /// Close a surplus connection after it carried no call for this long (default 30 s).
    pub idle_timeout: Duration,
    /// How often the controller looks at the pool (default 50 ms).
    pub window: Duration,
}

impl AdaptivePool {
    /// Grows up to `max` connections, with the other settings at their defaults.
    pub fn up_to(max: usize) -> Self {
        Self {
            max,
            min_hit_rate: 0.8,
            idle_timeout: Duration::from_secs(30),
            window: Duration::from_millis(50),
        }
    }
}

/// Builds [`Client`]s. `Send + Clone`: configure once, connect on every core.
///
/// | setting | default |
/// |---|---|
/// | `pool_size` (connections per core to the endpoint) | 1 |
/// | `max_in_flight` (calls per connection) | 1024 |
/// | `deadline` (per call, overridable) | 5 s |
/// | `overload` | [`OverloadPolicy::Wait`] |
/// | `connect_timeout` | 1 s |
/// | `heartbeat_interval` (ping after this much silence) | 1 s |
/// | `heartbeat_timeout` (no answer ⇒ connection dead) | 2 s |
/// | `backoff` (reconnect, doubling) | 10 ms ..= 1 s |
/// | `max_frame` | 4 MiB |
/// | `data_digest` (CRC32 of every payload sent, in the frame header) | on |
/// | `recv_chunk` | 256 KiB |
/// | `metrics` (per-phase timing and histograms; counters are always kept) | on |
/// | `adaptive` (grow/shrink the pool between `pool_size` and a maximum) | off |
/// | `tls` (feature `tls`: TLS 1.3, server name checked) or `insecure_plaintext` | none: one of them is required (connecting fails with `Error::Config` otherwise) |
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    cfg: ClientConfig,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            cfg: ClientConfig {
                pool_size: 1,
                max_in_flight: 1024,
                deadline: Duration::from_secs(5),
                overload: OverloadPolicy::Wait,
                connect_timeout: Duration::from_secs(1),
                heartbeat_interval: Duration::from_secs(1),
                heartbeat_timeout: Duration::from_secs(2),
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_secs(1),
                max_frame: DEFAULT_MAX_FRAME,
                data_digest: true,
                recv_chunk: 256 << 10,
                metrics: true,
                adaptive: None,
                #[cfg(feature = "tls")]
                tls: None,
                plaintext: false,
            },
        }
    }
}

impl ClientBuilder {
    setter!(
        /// Persistent connections per core to the endpoint.
        pool_size: usize
    );
    setter!(
        /// Most calls in flight on one connection.
        max_in_flight: usize
    );
    setter!(
        /// Default deadline of a call.
        deadline: Duration
    );
    setter!(
        /// Behaviour when the pool is saturated.
        overload: OverloadPolicy
    );
    setter!(
        /// Longest wait for one TCP connect.
        connect_timeout: Duration
    );
    setter!(
        /// Silence after which a connection is pinged.
        heartbeat_interval: Duration
    );
    setter!(
        /// Time a ping may go unanswered before the connection is declared dead.
        heartbeat_timeout: Duration
    );
    setter!(
        /// Largest frame sent or accepted.
        max_frame: usize
    );
    setter!(
        /// Whether frames sent carry a data digest (the CRC32 of their payload,
        /// default on). Turn it off only on a trusted link: a corrupted payload
        /// is then no longer detected (headers always carry their own digest,
        /// and replies that carry a data digest are still checked). A server
        /// that requires the digest closes a connection whose frames lack it.
        data_digest: bool
    );
    setter!(
        /// Receive buffer chunk size.
        recv_chunk: usize
    );
    setter!(
        /// Per-phase timing and latency histograms (clock reads per call).
        metrics: bool
    );

    /// Makes the pool adaptive: it starts with `pool_size` connections, grows
    /// (one per window, up to `adaptive.max`) while the pool hit rate is below
    /// `min_hit_rate` or every connection is at `max_in_flight`, and closes
    /// connections beyond `pool_size` that carried no call for `idle_timeout`.
    /// Calls go to the first connection with room, so surplus ones go idle.
    pub fn adaptive(mut self, adaptive: AdaptivePool) -> Self {
        self.cfg.adaptive = Some(adaptive);
        self
    }

    /// Connects **without TLS**: every byte crosses the network in clear and
    /// the server is not authenticated. For loopback, tests, or behind a
    /// sidecar that does mutual TLS. A client must be given either this or
    /// `tls` (with the `tls` feature) before it connects: there
    /// is no silent default. The last of the two called wins.
    pub fn insecure_plaintext(mut self) -> Self {
        #[cfg(feature = "tls")]
        {
            self.cfg.tls = None;
        }
        self.cfg.plaintext = true;
        self
    }

    /// Fails unless a transport was chosen (`tls` or `insecure_plaintext`).
    pub(crate) fn check_transport(&self) -> Result<(), Error> {
        #[cfg(feature = "tls")]
        let tls = self.cfg.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        if tls || self.cfg.plaintext {
            return Ok(());
        }
        Err(Error::Config(
            "no transport chosen: call ClientBuilder::tls(config, name) (feature `tls`) or \
             ClientBuilder::insecure_plaintext()"
                .into(),
        ))
    }

    /// First and largest reconnect backoff (doubling in between, with jitter).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.cfg.backoff_initial = initial;
        self.cfg.backoff_max = max.max(initial);
        self
    }

    /// Creates a client on the current core and starts connecting its pool
    /// (calls made before a connection is up wait for it, up to their deadline).
    ///
    /// A client belongs to the core it was made on. Off a ringrpc core (any
    /// thread that is not running inside [`Runtime::spawn_on`](crate::Runtime::spawn_on)
    /// or [`Runtime::block_on`](crate::Runtime::block_on)) this fails with
    /// [`Error::NotOnCore`]; there, use [`connect_handle`](Self::connect_handle).
    pub fn connect(&self, addr: SocketAddr) -> Result<Client, Error> {
        if crate::runtime::current_core().is_none() {
            return Err(Error::NotOnCore);
        }
        self.check_transport()?;
        Ok(Client {
            pool: Rc::new(Pool::start(addr, self.cfg.clone())),
        })
    }
}

/// A snapshot of one client's state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls in flight across the pool's live connections.
    pub in_flight: usize,
    /// Connections currently open.
    pub live_connections: usize,
    /// Replies that arrived for a call that had already ended (dropped).
    pub stale_replies: u64,
    /// Connections re-established after one closed.
    pub reconnects: u64,
    /// Connections that closed or died.
    pub connections_lost: u64,
    /// Calls that ended with [`Error::Timeout`] on this side.
    pub timeouts: u64,
    /// Heartbeat pings sent.
    pub pings: u64,
    /// Connections closed because a heartbeat went unanswered (the peer
    /// or the path to it stopped answering; the cluster ejects the endpoint).
    pub heartbeat_timeouts: u64,
    /// Calls that found a connection with room at once.
    pub pool_hits: u64,
    /// Times a call had to wait for a connection or a free slot.
    pub pool_misses: u64,
}

/// A core-local client for one endpoint. Cheap to clone (shares the pool).
///
/// **Dropping the last clone closes the client**, as [`close`](Self::close)
/// does: the pool stops reconnecting and its connections are closed (a call in
/// flight borrows the client, so none can be running then). Keep a clone for
/// as long as calls will be made; clones made on the same core share one pool.
#[must_use = "dropping the last clone of a Client closes its connections"]
#[derive(Clone)]
pub struct Client {
    pool: Rc<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.pool.shared.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client {
    /// A builder with the defaults listed on [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Calls `method` with the default deadline.
    ///
    /// The returned future is the call path's own (no layer per call
    /// variant): it is small and is polled without indirection. The
    /// deadline counts from this call, not from the future's first poll
    /// (so futures made now and awaited together later share one clock).
    pub fn call<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &Method<Req, Resp>,
        req: &'a Req,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp> {
        self.call_with_deadline(method, req, self.pool.shared.cfg.deadline)
    }

    /// Calls `method` with a request that borrows its data: any `B` that
    /// archives exactly like `Req` ([`ArchivesAs`](crate::ArchivesAs)), so a
    /// `&str` or `&[u8]` the caller holds is serialised straight into the
    /// send buffer, never cloned into an owned `Req`.
    ///
    /// ```
    /// use ringrpc::{Method, StrAsString};
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// struct Key { key: String }
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// #[rkyv(as = ArchivedKey, serialize_bounds(__S: ringrpc::BorrowSerializer))]
    /// struct KeyRef<'a> {
    ///     #[rkyv(with = StrAsString, omit_bounds)]
    ///     key: &'a str,
    /// }
    ///
    /// const GET: Method<Key, u64> = Method::new("Kv.get");
    /// async fn get(client: &ringrpc::Client, key: &str) -> Result<u64, ringrpc::Error> {
    ///     let reply = client.call_borrowed(&GET, &KeyRef { key }).await?;
    ///     Ok(reply.to_native())
    /// }
    /// ```
    pub fn call_borrowed<'a, Req, Resp, B>(
        &'a self,
        method: &Method<Req, Resp>,
        req: &'a B,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp, B>
    where
        Req: Message,
        Resp: Message,
        B: crate::ArchivesAs<Req>,
    {
        let method = method.with_request::<B>();
        self.call_with_deadline(&method, req, self.pool.shared.cfg.deadline)
    }

    /// Calls `method` with per-call settings: a deadline (for example the
    /// remaining budget of the handler making this call, see
    /// [`CallOptions::inherit`]) and metadata.
    pub fn call_with<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &Method<Req, Resp>,
        req: &'a Req,
        opts: &'a CallOptions,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp> {
        let deadline = opts.deadline.unwrap_or(self.pool.shared.cfg.deadline);
        self.call_opts(method, req, deadline.into(), opts)
    }

    /// [`call_with`](Self::call_with) with the deadline given (a cluster's
    /// attempt: what is left of the call's deadline, from when it started).
    pub(crate) fn call_opts<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &Method<Req, Resp>,
        req: &'a Req,
        deadline: Deadline,
        opts: &'a CallOptions,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp> {
        #[cfg(feature = "otel")]
        {
            let (id, name) = (method.id(), method.name());
            async move {
                let mut metadata = opts.metadata.clone();
                crate::trace_context::inject(&mut metadata);
                let metadata = (!metadata.is_empty()).then_some(&metadata);
                self.call_inner((id, name), req, deadline, metadata).await
            }
        }
        #[cfg(not(feature = "otel"))]
        {
            let metadata = (!opts.metadata.is_empty()).then_some(&opts.metadata);
            self.call_inner((method.id(), method.name()), req, deadline, metadata)
        }
    }

    /// Calls `method`, giving up after `deadline`. The remaining budget travels to
    /// the server, which skips work whose budget has run out.
    pub fn call_with_deadline<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &Method<Req, Resp>,
        req: &'a Req,
        deadline: Duration,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp> {
        let method = (method.id(), method.name());
        #[cfg(feature = "otel")]
        {
            async move {
                let mut metadata = Metadata::new();
                crate::trace_context::inject(&mut metadata);
                let metadata = (!metadata.is_empty()).then_some(&metadata);
                self.call_inner(method, req, deadline.into(), metadata)
                    .await
            }
        }
        #[cfg(not(feature = "otel"))]
        self.call_inner(method, req, deadline.into(), None)
    }

    /// The call path's future for a typed request: [`call_encoded`](Self::call_encoded)
    /// serialising `req` and validating the reply, in a `call` span when
    /// TRACE is on (otherwise not even a disabled span is made).
    fn call_inner<'a, Req: Message, Resp: Message>(
        &'a self,
        (method_id, method_name): (u32, &'static str),
        req: &'a Req,
        deadline: Deadline,
        metadata: Option<&'a Metadata>,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + use<'a, Req, Resp> {
        let span = if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace_span!("call", method = method_name)
        } else {
            tracing::Span::none()
        };
        let call = self.call_encoded(
            (method_id, method_name),
            deadline,
            move |out| serialize_out(req, out),
            |bytes| Ok(Reply::new(bytes)?),
            metadata,
        );
        tracing::Instrument::instrument(call, span)
    }

    /// The call path under [`call`](Self::call) and [`Handle`]'s calls: the
    /// request payload is written by `encode` (into the send buffer), the
    /// reply's bytes are turned into the result by `finish` (on this core,
    /// before the call is counted as ended).
    pub(crate) fn call_encoded<'a, R, E, F>(
        &'a self,
        (method_id, method_name): (u32, &'static str),
        deadline: Deadline,
        encode: E,
        finish: F,
        metadata: Option<&'a Metadata>,
    ) -> impl Future<Output = Result<R, Error>> + use<'a, R, E, F>
    where
        E: FnOnce(Out<'_>) -> Result<(), ProtocolError>,
        F: FnOnce(FrameBytes) -> Result<R, Error>,
    {
        // A fresh reading, not the turn's clock, taken when the call is made:
        // a call must never time out before its deadline counted from then (a
        // cluster hands over the fresh reading it took when its attempt
        // started).
        let started = deadline.started.unwrap_or_else(Instant::now);
        let deadline_at = started + deadline.after;
        // An `async` block, not an `async fn`: an `async fn` keeps a second
        // copy of every argument in its future (the argument, and the local
        // it is moved into); the block captures each once. A call's future
        // is moved into place whole, so every byte of it is copied per call.
        async move {
            let pool = &self.pool.shared;
            pool.counters.call_made();
            let (conn, waited) = match pool.acquire_now()? {
                Some(conn) => (conn, false),
                // Boxed: the (rare) wait for a connection would otherwise make
                // every call's future larger.
                None => Box::pin(pool.acquire(deadline_at)).await?,
            };
            // The budget sent to the server counts from now; metrics from `started`.
            let (now, budget) = if waited {
                let now = Instant::now();
                (now, deadline_at.saturating_duration_since(now))
            } else {
                (started, deadline.after)
            };
            let id = conn
                .start_call(method_id, (deadline_at, budget), now, encode, metadata)
                .inspect_err(|e| pool.counters.call_ended(Err(e)))?;
            let forget = Forget(&conn, id);
            // No timer per call: the connection's expiry task completes overdue calls.
            let finished = poll_fn(|cx| conn.poll_reply(id, cx)).await;
            // The reply freed the slot: nothing left to forget.
            std::mem::forget(forget);
            let counters = &pool.counters;
            let result = finished.result.and_then(finish);
            counters.call_ended(result.as_ref().map(|_| ()));
            // Every successful call is counted under its method; the clock is only
            // read for the timed ones.
            if counters.timing && result.is_ok() && counters.call_ok(method_id, method_name) {
                let (started, received) = (finished.started, finished.received);
                counters.delivered(method_id, method_name, started, received, Instant::now());
            }
            result
        }
    }

    /// True if at least one connection of the pool is up and takes calls
    /// (cheap: no allocation; the cluster's balancer asks it per pick).
    pub(crate) fn is_up(&self) -> bool {
        self.pool.shared.is_up()
    }

    /// True if no connection is up and the pool's last connect attempts all
    /// failed (the cluster's active health check).
    pub(crate) fn is_down(&self) -> bool {
        self.pool.shared.is_down()
    }

    /// Connections of the pool closed because a heartbeat went unanswered.
    pub(crate) fn heartbeat_timeouts(&self) -> u64 {
        self.pool.shared.counters.heartbeat_timeouts.get()
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> SocketAddr {
        self.pool.shared.addr
    }

    /// Waits until at least one connection of the pool is up, or `timeout` passes.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.pool.shared.live().is_empty() {
                return true;
            }
            if io::until(deadline, self.pool.shared.counters.changed())
                .await
                .is_none()
            {
                return false;
            }
        }
    }

    /// Current counters and gauges.
    pub fn stats(&self) -> ClientStats {
        let live = self.pool.shared.live();
        let c = &self.pool.shared.counters;
        ClientStats {
            in_flight: live.iter().map(|c| c.in_flight()).sum(),
            live_connections: live.len(),
            stale_replies: c.stale.get(),
            reconnects: c.reconnects.get(),
            connections_lost: c.lost.get(),
            timeouts: c.timeouts.get(),
            pings: c.pings.get(),
            heartbeat_timeouts: c.heartbeat_timeouts.get(),
            pool_hits: c.hits.get(),
            pool_misses: c.misses.get(),
        }
    }

    /// Closes every connection and stops reconnecting; calls in flight fail with
    /// [`Error::ConnectionLost`], later calls with [`Error::Unavailable`].
    pub fn close(&self) {
        self.pool.close();
    }
}
