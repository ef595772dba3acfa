//! [`ClusterBuilder`]: a cluster's settings, their defaults and validation,
//! and the ways to connect one (a fixed list, a DNS name, any [`Discover`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::balancer::Balance;
use super::budget::Budget;
use super::discover::{Discover, EndpointSource};
use super::eject::Ejection;
use super::hedge::Hedging;
use super::Cluster;
use crate::message::Method;
use crate::{Client, ClientBuilder, Error};

/// A cluster's settings (see [`ClusterBuilder`] for the defaults).
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    pub client: ClientBuilder,
    pub balance: Balance,
    pub deadline: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub retry_budget: Budget,
    pub hedging: Option<Hedging>,
    pub ejection: Ejection,
    pub ewma_decay: Duration,
    pub ewma_initial: Duration,
    pub refresh: Duration,
    pub tick: Duration,
    /// Sorted wire ids of the methods declared idempotent.
    pub idempotent: Vec<u32>,
}

impl ClusterConfig {
    #[inline]
    pub fn is_idempotent(&self, method: u32) -> bool {
        !self.idempotent.is_empty() && self.idempotent.binary_search(&method).is_ok()
    }
}

/// Builds [`Cluster`]s. `Send + Clone`: configure once, connect on every core.
///
/// | setting | default |
/// |---|---|
/// | `client` (each endpoint's per-core pool: size, in-flight limit, heartbeat...) | [`Client::builder()`] defaults |
/// | `balance` | [`Balance::P2c`] (power of two choices, peak-EWMA load) |
/// | `deadline` (per call, all attempts included) | 5 s |
/// | `idempotent` (methods that may be retried after any retryable error, and hedged) | none |
/// | `max_retries` (per call, after the first attempt) | 2 |
/// | `retry_backoff` (before retrying on the same endpoint, when it is the only one) | 5 ms |
/// | `retry_budget` | 10% of calls + 10 per second, over 10 s |
/// | `hedging` (idempotent methods only) | on: after the method's p95, budget 5% of calls |
/// | `ejection` | 5 failures in a row or > 50% of ≥ 20 in 1 s; 1 s doubling to 30 s; at most half the endpoints |
/// | `ewma_decay` (τ of the peak-EWMA latency) | 10 s |
/// | `ewma_initial` (latency assumed for the first endpoints before their first reply; later ones start at the others' mean) | 1 ms |
/// | `refresh` (discovery: how often the name or [`Discover`] is asked again) | 5 s |
/// | `tick` (how often a core applies discovery and ends ejections) | 10 ms |
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    cfg: ClusterConfig,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            cfg: ClusterConfig {
                client: Client::builder(),
                balance: Balance::P2c,
                deadline: Duration::from_secs(5),
                max_retries: 2,
                retry_backoff: Duration::from_millis(5),
                retry_budget: Budget::new(0.1, 10.0),
                hedging: Some(Hedging::default()),
                ejection: Ejection::default(),
                ewma_decay: Duration::from_secs(10),
                ewma_initial: Duration::from_millis(1),
                refresh: Duration::from_secs(5),
                tick: Duration::from_millis(10),
                idempotent: Vec::new(),
            },
        }
    }
}

impl ClusterBuilder {
    /// The endpoints' connections in plaintext: shorthand for
    /// `.client(client.insecure_plaintext())` on the current client settings
    /// (see [`ClientBuilder::insecure_plaintext`]). A cluster's client
    /// settings need this or a TLS config before it connects.
    pub fn insecure_plaintext(mut self) -> Self {
        self.cfg.client = self.cfg.client.insecure_plaintext();
        self
    }

    setter!(
        /// Settings of each endpoint's per-core connection pool.
        client: ClientBuilder
    );
    setter!(
        /// How calls are spread over endpoints.
        balance: Balance
    );
    setter!(
        /// Default deadline of a call, every attempt included.
        deadline: Duration
    );
    setter!(
        /// Most retries of one call (0: never retry).
        max_retries: u32
    );
    setter!(
        /// Wait before retrying on the endpoint that just failed, when the
        /// cluster has no other (a retry to another endpoint goes at once).
        retry_backoff: Duration
    );
    setter!(
        /// Budget of retries ([`Budget::none`] turns retries off).
        retry_budget: Budget
    );
    setter!(
        /// Hedging of idempotent methods (`None` turns it off).
        hedging: Option<Hedging>
    );
    setter!(
        /// Outlier ejection ([`Ejection::off`] turns it off).
        ejection: Ejection
    );
    setter!(
        /// Time constant τ of the peak-EWMA latency estimate.
        ewma_decay: Duration
    );
    setter!(
        /// Latency assumed for an endpoint before its first reply.
        ewma_initial: Duration
    );
    setter!(
        /// How often discovery is asked again (DNS, [`Discover`]).
        refresh: Duration
    );
    setter!(
        /// How often each core applies discovery changes and ends ejections.
        tick: Duration
    );

    /// Declares `method` idempotent (safe to run twice): its calls are retried
    /// after any retryable error ([`Error::is_retryable`]) and may be hedged.
    /// Other calls are retried only after errors that prove they did not run
    /// ([`Error::did_not_run`]). [`CallOptions::idempotent`](crate::CallOptions::idempotent)
    /// overrides this per call.
    pub fn idempotent<Req, Resp>(mut self, method: &Method<Req, Resp>) -> Self {
        if let Err(i) = self.cfg.idempotent.binary_search(&method.id()) {
            self.cfg.idempotent.insert(i, method.id());
        }
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let c = &self.cfg;
        c.retry_budget.validate("retry budget")?;
        c.ejection.validate()?;
        if let Some(h) = &c.hedging {
            h.validate()?;
        }
        for (name, d) in [
            ("deadline", c.deadline),
            ("ewma_decay", c.ewma_decay),
            ("refresh", c.refresh),
            ("tick", c.tick),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("cluster {name} must be > 0")));
            }
        }
        Ok(())
    }

    /// Creates a cluster of the fixed `endpoints` on the current core and
    /// starts connecting them. Fails with [`Error::Config`] if the list is
    /// empty or a setting is invalid, [`Error::NotOnCore`] off a core.
    pub fn connect_static(&self, endpoints: &[SocketAddr]) -> Result<Cluster, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config(
                "a cluster needs at least one endpoint".into(),
            ));
        }
        self.connect(&EndpointSource::fixed(endpoints))
    }

    /// Creates a cluster that follows DNS name `name` (`host:port`, every A
    /// and AAAA record), re-resolved every [`refresh`](Self::refresh) on a
    /// background thread. Calls made before the first answer wait for it
    /// (up to their deadline). To share one resolver thread among the cores,
    /// make an [`EndpointSource::dns`] and [`connect`](Self::connect) it.
    pub fn connect_dns(&self, name: &str) -> Result<Cluster, Error> {
        self.validate()?;
        self.connect(&EndpointSource::dns(name, self.cfg.refresh)?)
    }

    /// Creates a cluster that follows `discover`, asked every
    /// [`refresh`](Self::refresh) on a background thread.
    pub fn discover(&self, discover: impl Discover) -> Result<Cluster, Error> {
        self.validate()?;
        self.connect(&EndpointSource::spawn(discover, self.cfg.refresh)?)
    }

    /// Creates a cluster on the current core that follows `source` (which
    /// clusters on several cores can share).
    pub fn connect(&self, source: &EndpointSource) -> Result<Cluster, Error> {
        self.validate()?;
        self.cfg.client.check_transport()?;
        if crate::runtime::current_core().is_none() {
            return Err(Error::NotOnCore);
        }
        Ok(Cluster::start(self.cfg.clone(), source.clone()))
    }
}
