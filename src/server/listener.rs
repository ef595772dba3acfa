//! One core's listener: accepting, admitting and shutting down connections.
//!
//! Admission, in order, for each accepted connection: on a TLS server the
//! cap on handshakes running at once on the core (refused), the per-peer-address
//! limit (refused), then the core's connection limit (the longest-idle
//! connection is evicted with a goaway, or the new one is refused). When the
//! process has no descriptor left, the waiting connection is accepted on the
//! core's spare descriptor and closed at once ([`FdReserve`]), so the accept
//! queue never holds connections nobody answers.
//!
//! Invariants: every connection of the core is in [`CoreState::conns`] from
//! its accept until its tasks end; the per-peer counts match the open
//! connections; after `core_serve` returns, no connection of the core is left.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use slab::Slab;

use super::budget::{out_of_fds, FdReserve, InboundBudget};
use super::conn::{self, ConnShared};
use super::router::Router;
use super::{Event, ServerConfig, Stop};
use crate::metrics::{self, counters::dec, counters::inc};
use crate::runtime::io::{self, Stream};

/// One core's connections and budgets.
pub(crate) struct CoreState {
    pub conns: RefCell<Slab<Rc<ConnShared>>>,
    per_peer: RefCell<HashMap<IpAddr, usize>>,
    pub inbound: Rc<InboundBudget>,
    /// The user's per-core state ([`ServerBuilder::with_state`](super::ServerBuilder::with_state)).
    pub user: Option<Rc<dyn Any>>,
}

impl CoreState {
    fn new(cfg: &ServerConfig) -> Self {
        let core = crate::runtime::current_core().unwrap_or(0);
        Self {
            conns: RefCell::default(),
            per_peer: RefCell::default(),
            inbound: Rc::new(InboundBudget::new(cfg.limits.max_inbound_per_core)),
            user: cfg.state.as_ref().map(|make| make(core)),
        }
    }

    /// Every connection, cloned out (so callers may close them).
    pub fn all(&self) -> Vec<Rc<ConnShared>> {
        self.conns.borrow().iter().map(|(_, c)| c.clone()).collect()
    }
}

/// Serves one core until `stop` says how to end.
pub(crate) async fn core_serve(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    cfg: Arc<ServerConfig>,
    stop: oneshot::Receiver<Stop>,
) {
    let listener = match io::listener_from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "cannot adopt listener"),
    };
    let state = Rc::new(CoreState::new(&cfg));
    let _sweeper = io::spawn(super::sweep::sweep(state.clone(), cfg.clone()));
    let accept = accept_loop(&listener, &router, &cfg, &state);
    let how = match select(pin!(accept), stop).await {
        Either::Right((Ok(how), _)) => how,
        _ => Stop::Abort,
    };
    drop(listener);
    if let Stop::Drain(drain) = how {
        drain_conns(&state, Instant::now() + drain).await;
    }
    for conn in state.all() {
        conn.close();
    }
    // Let connection tasks observe the close and unregister.
    while !state.conns.borrow().is_empty() {
        io::sleep(Duration::from_millis(1)).await;
    }
}

async fn drain_conns(state: &CoreState, deadline: Instant) {
    for conn in state.all() {
        conn.go_away();
    }
    // Clients close a connection once its last call completes after goaway.
    while Instant::now() < deadline && !state.conns.borrow().is_empty() {
        io::sleep(Duration::from_millis(1)).await;
    }
}

async fn accept_loop(
    listener: &io::Listener,
    router: &Arc<Router>,
    cfg: &Arc<ServerConfig>,
    state: &Rc<CoreState>,
) {
    let mut reserve = FdReserve::new();
    loop {
        match io::accept(listener).await {
            Ok((stream, peer)) => {
                if admit(peer, cfg, state) {
                    start_conn(stream, peer, router, cfg, state);
                } else {
                    refuse(stream);
                }
            }
            Err(e) if out_of_fds(&e) && reserve.release() => {
                shed_one(listener, cfg).await;
                reserve.restore();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                io::sleep(Duration::from_millis(10)).await;
                reserve.restore();
            }
        }
    }
}

/// With the spare descriptor freed: accepts the connection that could not be
/// and closes it with a reset, counted.
async fn shed_one(listener: &io::Listener, cfg: &ServerConfig) {
    if let Ok((stream, _)) = io::accept(listener).await {
        cfg.count(Event::FdShed);
        tracing::warn!("out of file descriptors; refusing a connection");
        refuse(stream);
    }
}

/// Closes a connection at once, with a reset (nothing was sent on it).
fn refuse(stream: Stream) {
    io::set_linger_zero(&stream);
    drop(stream);
}

/// Applies the per-peer and per-core limits to a new connection from `peer`,
/// evicting an idle connection if that makes room. False: refuse it (counted).
fn admit(peer: SocketAddr, cfg: &ServerConfig, state: &CoreState) -> bool {
    let limits = &cfg.limits;
    let security = &cfg.security;
    if security.is_tls()
        && metrics::local().server.handshaking.get() >= security.max_handshakes_per_core as u64
    {
        cfg.count(Event::HandshakesRefused);
        tracing::debug!("too many TLS handshakes running; refusing a connection");
        return false;
    }
    if let Some(max) = limits.max_connections_per_peer {
        if state
            .per_peer
            .borrow()
            .get(&peer.ip())
            .copied()
            .unwrap_or(0)
            >= max
        {
            cfg.count(Event::PeerRejected);
            return false;
        }
    }
    let open = state.conns.borrow().len();
    if open < limits.max_connections_per_core {
        return true;
    }
    if limits.evict_idle {
        if let Some(victim) = longest_idle(state) {
            cfg.count(Event::Evicted);
            tracing::debug!("connection limit reached; evicting the longest-idle connection");
            victim.evict();
            return true;
        }
    }
    cfg.count(Event::Rejected);
    tracing::warn!("connection limit reached; refusing a connection");
    false
}

/// The open connection idle for the longest time, if any is idle.
fn longest_idle(state: &CoreState) -> Option<Rc<ConnShared>> {
    let conns = state.conns.borrow();
    conns
        .iter()
        .filter(|(_, c)| !c.is_closing())
        .filter_map(|(_, c)| c.idle_since().map(|t| (t, c)))
        .min_by_key(|(t, _)| *t)
        .map(|(_, c)| c.clone())
}

fn start_conn(
    stream: Stream,
    peer: SocketAddr,
    router: &Arc<Router>,
    cfg: &Arc<ServerConfig>,
    state: &Rc<CoreState>,
) {
    let conn = Rc::new(ConnShared::new(
        stream,
        peer,
        cfg.clone(),
        state.inbound.clone(),
        state.user.clone(),
    ));
    let key = state.conns.borrow_mut().insert(conn.clone());
    let track_peer = cfg.limits.max_connections_per_peer.is_some();
    if track_peer {
        *state.per_peer.borrow_mut().entry(peer.ip()).or_default() += 1;
    }
    cfg.stats.open.fetch_add(1, Ordering::Relaxed);
    cfg.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let core_metrics = metrics::local();
    inc(&core_metrics.server.accepted);
    inc(&core_metrics.server.connections);
    let (router, cfg, state) = (router.clone(), cfg.clone(), state.clone());
    let span = tracing::info_span!(parent: None, "conn", %peer);
    let task = async move {
        conn::serve(conn, router, cfg.clone()).await;
        state.conns.borrow_mut().remove(key);
        if track_peer {
            let mut per_peer = state.per_peer.borrow_mut();
            if let Some(n) = per_peer.get_mut(&peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    per_peer.remove(&peer.ip());
                }
            }
        }
        cfg.stats.open.fetch_sub(1, Ordering::Relaxed);
        dec(&core_metrics.server.connections);
    };
    io::spawn_in(span, task).detach();
}
