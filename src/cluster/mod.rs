//! The cluster client: one logical service behind many endpoints.
//!
//! A [`Cluster`] belongs to the core that made it (`!Send`, like a
//! [`Client`](crate::Client)); build one per core from a [`ClusterBuilder`]
//! (`Send + Clone`). Per endpoint it keeps a `Client` — today's per-core pool
//! of persistent multiplexed connections, unchanged — and on top:
//! - **discovery** (`discover.rs`): a fixed list, a DNS name re-resolved on a
//!   background thread, or any [`Discover`]; new endpoints are connected and
//!   warmed, removed ones drain;
//! - **balancing** (`balancer.rs`): power of two choices over peak-EWMA
//!   latency × in-flight calls (Finagle/linkerd), or round robin;
//! - **outlier ejection** (`eject.rs`): consecutive failures or a failure
//!   rate eject an endpoint for a growing period, at most a share of them,
//!   re-admitted only with a live (heartbeat-checked) connection;
//! - **retries** with a budget (`budget.rs`): only after errors that prove
//!   the call did not run ([`Error::did_not_run`]), or any retryable error
//!   ([`Error::is_retryable`]) for idempotent methods; never past the call's
//!   deadline, to another endpoint when one exists; an exhausted budget
//!   fails the call with [`Error::RetryBudgetExhausted`];
//! - **hedging** (`hedge.rs`) of idempotent methods after the method's p95,
//!   within a hedging budget; the loser is cancelled;
//! - **metrics** per endpoint ([`EndpointCounts`](crate::metrics::EndpointCounts),
//!   Prometheus families `ringrpc_endpoint_*` with an `endpoint` label).
//!
//! Invariants: everything is core-local (`Rc`, `Cell`), the call path takes
//! no lock and makes no system call of its own; the only cross-thread state
//! is the discovery source, read on the cluster's timer, never per call.
//! Every call ends with a reply or an error no later than its deadline
//! (attempts get what is left of it).

mod balancer;
mod budget;
mod builder;
mod call;
mod discover;
mod eject;
mod endpoint;
mod hedge;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use balancer::Balance;
pub use budget::Budget;
pub use builder::ClusterBuilder;
pub use discover::{Discover, Dns, EndpointSource, Resolve, SystemResolver};
pub use eject::Ejection;
pub use hedge::Hedging;

use crate::runtime::io::{self, Task};
use crate::{CallOptions, Error, Message, Method, Reply};
use builder::ClusterConfig;
use state::Inner;

/// A core-local client of a service with many endpoints. Cheap to clone
/// (clones share everything); dropping the last clone closes its connections.
///
/// ```no_run
/// use std::time::Duration;
/// use ringrpc::cluster::Cluster;
/// use ringrpc::{Method, Runtime};
///
/// const GET: Method<u64, u64> = Method::new("Kv.get");
///
/// # fn main() -> Result<(), ringrpc::Error> {
/// let rt = Runtime::builder().cores(1).build()?;
/// let builder = Cluster::builder().insecure_plaintext()
///     .idempotent(&GET) // retried after any retryable error, hedged
///     .deadline(Duration::from_millis(100));
/// let value = rt.block_on(0, move || async move {
///     let cluster = builder.connect_dns("kv.default.svc.cluster.local:7000")?;
///     let reply = cluster.call(&GET, &42).await?;
///     Ok::<_, ringrpc::Error>(reply.to_native())
/// })??;
/// # let _ = value;
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the last clone of a Cluster closes its connections"]
#[derive(Clone)]
pub struct Cluster {
    inner: Rc<Inner>,
    /// The maintenance task (discovery, ejection ends); dropped with the last clone.
    _task: Rc<Task<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stats", &self.stats())
            .finish()
    }
}

/// One endpoint as a cluster on one core sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Its address.
    pub addr: SocketAddr,
    /// The cluster's attempts in flight there.
    pub in_flight: u32,
    /// Whether outlier detection has it ejected.
    pub ejected: bool,
    /// Whether its pool has a live connection.
    pub connected: bool,
    /// Its peak-EWMA latency estimate.
    pub latency_estimate: Duration,
}

/// A snapshot of one cluster's state on its core.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The current endpoints (draining ones excluded).
    pub endpoints: Vec<EndpointStats>,
    /// Calls made.
    pub calls: u64,
    /// Retries sent.
    pub retries: u64,
    /// Hedged copies sent.
    pub hedges: u64,
    /// Hedged copies that answered first.
    pub hedges_won: u64,
    /// Retries the retry budget refused (each failed its call with
    /// [`Error::RetryBudgetExhausted`]).
    pub retry_budget_exhausted: u64,
    /// Hedges the hedging budget refused.
    pub hedge_budget_exhausted: u64,
    /// Ejections so far.
    pub ejections: u64,
}

impl Cluster {
    /// A builder with the defaults listed on [`ClusterBuilder`].
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub(crate) fn start(cfg: ClusterConfig, source: EndpointSource) -> Self {
        let inner = Rc::new(Inner::new(cfg, source));
        inner.sync(Instant::now());
        let weak = Rc::downgrade(&inner);
        let tick = inner.cfg.tick;
        let task = io::spawn(async move {
            loop {
                io::sleep(tick).await;
                match weak.upgrade() {
                    Some(inner) => inner.sync(Instant::now()),
                    None => return,
                }
            }
        });
        Self {
            inner,
            _task: Rc::new(task),
        }
    }

    /// Calls `method` with the cluster's default deadline (for all attempts
    /// together, counted from the future's first poll).
    pub fn call<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &'a Method<Req, Resp>,
        req: &'a Req,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + 'a {
        // No async layer of its own: the call's future is the call path's.
        call::call(&self.inner, method, req, call::default_options())
    }

    /// Calls `method` with per-call settings: deadline (for every attempt
    /// together), metadata, and whether the call is idempotent.
    pub fn call_with<'a, Req: Message, Resp: Message>(
        &'a self,
        method: &'a Method<Req, Resp>,
        req: &'a Req,
        opts: &'a CallOptions,
    ) -> impl Future<Output = Result<Reply<Resp>, Error>> + 'a {
        call::call(&self.inner, method, req, opts)
    }

    /// Waits until at least `n` endpoints have a live connection, or
    /// `timeout` passes (false then).
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.connected() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            io::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Current endpoints and counters.
    pub fn stats(&self) -> ClusterStats {
        self.inner.stats(Instant::now())
    }

    /// Closes every endpoint's connections; later calls fail.
    pub fn close(&self) {
        self.inner.close();
    }
}
