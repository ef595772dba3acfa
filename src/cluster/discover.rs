//! Endpoint discovery: where a cluster's endpoints come from.
//!
//! A [`Discover`] answers "which endpoints now?"; an [`EndpointSource`] runs
//! one on a background thread (never on a core: resolution may block),
//! every `refresh` interval, and publishes each new answer under a new
//! generation. Each core's cluster checks the generation on a timer (one
//! atomic load) and, when it moved, reads the list (one short lock, off the
//! call path) and reconciles: new endpoints are connected and warmed (the
//! balancer prefers endpoints with a live connection), removed ones drain
//! (they get no new calls; calls in flight finish, then their connections
//! close).
//!
//! [`Dns`] re-resolves a `host:port` name, taking every A and AAAA record
//! (a Kubernetes headless service lists one per pod), through a [`Resolve`]:
//! [`SystemResolver`] is the C library's `getaddrinfo`, which honours
//! `/etc/hosts`, `nsswitch.conf` and the `resolv.conf` search list and
//! `ndots` (which Kubernetes service names rely on). Why not hickory-resolver:
//! its resolver runs on tokio, which the library does not depend on; on a
//! background thread the blocking system resolver costs nothing on the call
//! path, and a [`Resolve`] implementation can plug any other resolver in
//! (tests use one whose answers change, without network).
//!
//! Invariants: a failed resolution or discovery keeps the last answer (a DNS
//! outage does not empty the cluster); the thread stops soon after the last
//! handle to its source is dropped.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::Error;

/// A source of endpoints a cluster can follow (Consul, etcd, xDS, a file...).
///
/// Called on the source's own background thread, first at once, then every
/// refresh interval; it may block. An `Err` keeps the previous answer.
pub trait Discover: Send + 'static {
    /// The endpoints now (order and duplicates do not matter).
    fn endpoints(&mut self) -> io::Result<Vec<SocketAddr>>;
}

impl<F> Discover for F
where
    F: FnMut() -> io::Result<Vec<SocketAddr>> + Send + 'static,
{
    fn endpoints(&mut self) -> io::Result<Vec<SocketAddr>> {
        self()
    }
}

/// Resolves a host name to addresses (every A and AAAA record).
pub trait Resolve: Send + 'static {
    /// Every address of `host`, with `port`.
    fn resolve(&mut self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo`, see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&mut self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Discovery by DNS name: every address `host` resolves to, with `port`.
#[derive(Debug, Clone)]
pub struct Dns<R = SystemResolver> {
    host: String,
    port: u16,
    resolver: R,
}

impl Dns<SystemResolver> {
    /// `name` is `host:port` (`[v6]:port` for a literal IPv6 address).
    pub fn new(name: &str) -> Result<Self, Error> {
        Self::with_resolver(name, SystemResolver)
    }
}

impl<R: Resolve> Dns<R> {
    /// Like [`Dns::new`] with another resolver.
    pub fn with_resolver(name: &str, resolver: R) -> Result<Self, Error> {
        let bad = || Error::Config(format!("not a host:port name: {name:?}"));
        let (host, port) = name.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            resolver,
        })
    }
}

impl<R: Resolve> Discover for Dns<R> {
    fn endpoints(&mut self) -> io::Result<Vec<SocketAddr>> {
        self.resolver.resolve(&self.host, self.port)
    }
}

/// What the background thread publishes.
#[derive(Default)]
struct Published {
    generation: AtomicU64,
    list: Mutex<Vec<SocketAddr>>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// Stops the thread when the last [`EndpointSource`] clone is dropped.
struct Owner {
    published: Arc<Published>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut stopped = self
            .published
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        self.published.wake.notify_all();
    }
}

/// A running discovery, shared by the clusters of every core (`Send + Sync
/// + Clone`): the background thread's latest answer.
#[derive(Clone)]
pub struct EndpointSource {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for EndpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSource")
            .field("generation", &self.generation())
            .finish()
    }
}

impl EndpointSource {
    /// A fixed list (no thread).
    pub fn fixed(endpoints: &[SocketAddr]) -> Self {
        let published = Arc::new(Published::default());
        *published.list.lock().unwrap_or_else(|e| e.into_inner()) = normalise(endpoints.to_vec());
        published.generation.store(1, Ordering::Release);
        Self {
            owner: Arc::new(Owner { published }),
        }
    }

    /// Starts a thread that asks `discover` at once, then every `refresh`.
    pub fn spawn(mut discover: impl Discover, refresh: Duration) -> Result<Self, Error> {
        if refresh.is_zero() {
            return Err(Error::Config("discovery refresh must be > 0".into()));
        }
        let published = Arc::new(Published::default());
        let shared = published.clone();
        std::thread::Builder::new()
            .name("ringrpc-discover".into())
            .spawn(move || loop {
                match discover.endpoints() {
                    Ok(list) => publish(&shared, normalise(list)),
                    Err(e) => {
                        tracing::warn!(error = %e, "discovery failed; keeping the last endpoints")
                    }
                }
                let stopped = shared.stopped.lock().unwrap_or_else(|e| e.into_inner());
                let (stopped, _) = shared
                    .wake
                    .wait_timeout_while(stopped, refresh, |stopped| !*stopped)
                    .unwrap_or_else(|e| e.into_inner());
                if *stopped {
                    return;
                }
            })?;
        Ok(Self {
            owner: Arc::new(Owner { published }),
        })
    }

    /// Follows DNS name `name` (`host:port`), re-resolved every `refresh`.
    pub fn dns(name: &str, refresh: Duration) -> Result<Self, Error> {
        Self::spawn(Dns::new(name)?, refresh)
    }

    /// Changes each time the endpoint list changes (0: no answer yet).
    pub fn generation(&self) -> u64 {
        self.owner.published.generation.load(Ordering::Acquire)
    }

    /// The latest endpoint list (sorted, without duplicates).
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.owner
            .published
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn normalise(mut list: Vec<SocketAddr>) -> Vec<SocketAddr> {
    list.sort_unstable();
    list.dedup();
    list
}

fn publish(p: &Published, list: Vec<SocketAddr>) {
    let mut current = p.list.lock().unwrap_or_else(|e| e.into_inner());
    if *current != list || p.generation.load(Ordering::Acquire) == 0 {
        *current = list;
        p.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_parse_host_and_port() {
        let d = Dns::new("svc.ns.svc.cluster.local:7000").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port),
            ("svc.ns.svc.cluster.local", 7000)
        );
        let d = Dns::new("[::1]:80").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 80));
        assert!(Dns::new("no-port").is_err());
        assert!(Dns::new(":80").is_err());
        assert!(Dns::new("host:99999").is_err());
    }

    #[test]
    fn localhost_resolves_through_the_system_resolver() {
        let mut dns = Dns::new("localhost:4000").unwrap();
        let addrs = dns.endpoints().unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.port() == 4000 && a.ip().is_loopback()));
    }

    #[test]
    fn a_source_publishes_changes_and_keeps_the_last_answer_on_failure() {
        let first: Vec<SocketAddr> = vec!["10.0.0.2:1".parse().unwrap()];
        let answers = Arc::new(Mutex::new(Ok::<_, ()>(first)));
        let feed = answers.clone();
        let source = EndpointSource::spawn(
            move || match &*feed.lock().unwrap() {
                Ok(list) => Ok(list.clone()),
                Err(()) => Err(io::Error::other("outage")),
            },
            Duration::from_millis(2),
        )
        .unwrap();
        let wait = |gen: u64| {
            let start = std::time::Instant::now();
            while source.generation() <= gen {
                assert!(start.elapsed() < Duration::from_secs(5), "no new answer");
                std::thread::sleep(Duration::from_millis(1));
            }
            source.generation()
        };
        let g1 = wait(0);
        assert_eq!(
            source.endpoints(),
            vec!["10.0.0.2:1".parse::<SocketAddr>().unwrap()]
        );
        *answers.lock().unwrap() = Err(());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(source.generation(), g1, "a failure publishes nothing");
        let two: Vec<SocketAddr> =
            vec!["10.0.0.3:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
        *answers.lock().unwrap() = Ok(two);
        wait(g1);
        assert_eq!(source.endpoints().len(), 2);
    }
}
