//! One core's sweeper: the connection timeouts, checked by one timer per
//! core whatever the number of connections.
//!
//! Each round closes (in this order of precedence) TLS connections still
//! handshaking past the handshake timeout, connections whose partial
//! frame stalled past the read timeout (counted as an inbound-budget close if
//! the budget had paused it), whose replies made no progress within the
//! write timeout, which were sent a goaway for idleness or age and whose
//! grace is over; and sends a goaway to connections idle past the idle
//! timeout or older than the maximum age. The period is a quarter of the
//! shortest timeout (at least 5 ms), so a timeout fires at most 25 % late.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{ConnShared, Goaway};
use super::listener::CoreState;
use super::{Event, ServerConfig};
use crate::runtime::io;

/// Once an idle connection has been sent its goaway, how long the peer has
/// to close it before the server does.
const IDLE_GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// How long a connection must have been idle before a sweep gives back its
/// send buffers (clients that never ping; a ringrpc client's ping does it
/// after its heartbeat interval).
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Runs the sweeps of one core forever (the core's serve task drops it).
pub(crate) async fn sweep(state: Rc<CoreState>, cfg: Arc<ServerConfig>) {
    let period = period(&cfg);
    loop {
        io::sleep(period).await;
        let now = Instant::now();
        for conn in state.all() {
            match verdict(&conn, &cfg, now) {
                Verdict::Keep => {
                    let quiet = conn.idle_since().map(|t| now.saturating_duration_since(t));
                    if quiet.is_some_and(|q| q >= IDLE_RELEASE) {
                        conn.release_idle_buffers();
                    }
                }
                Verdict::Close(event) => {
                    tracing::debug!(?event, "closing connection");
                    cfg.count(event);
                    conn.close();
                }
                Verdict::CloseAfterGoaway => conn.close(),
            }
        }
    }
}

/// A quarter of the shortest timeout, at least 5 ms.
fn period(cfg: &ServerConfig) -> Duration {
    let l = &cfg.limits;
    let shortest = [
        Some(l.read_timeout),
        Some(l.write_timeout),
        l.idle_timeout,
        l.max_connection_age.map(|(age, grace)| age.min(grace)),
        cfg.security
            .is_tls()
            .then_some(cfg.security.handshake_timeout),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(l.read_timeout);
    (shortest / 4).max(Duration::from_millis(5))
}

/// What a sweep does to a connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Close it now, counting why.
    Close(Event),
    /// Close it: the grace after its goaway (counted when sent) is over.
    CloseAfterGoaway,
}

/// What this round does to `conn`: close it, or keep it (maybe after sending
/// it a goaway for idleness or age, counted then).
fn verdict(conn: &ConnShared, cfg: &ServerConfig, now: Instant) -> Verdict {
    let l = &cfg.limits;
    let over = |since: Option<Instant>, limit: Duration| {
        since.is_some_and(|t| now.saturating_duration_since(t) > limit)
    };
    if conn.is_handshaking() && over(Some(conn.created()), cfg.security.handshake_timeout) {
        return Verdict::Close(Event::HandshakeTimeout);
    }
    if over(conn.partial_since(), l.read_timeout) {
        return Verdict::Close(if conn.was_paused() {
            Event::InboundClosed
        } else {
            Event::ReadTimeout
        });
    }
    if over(conn.write_stuck_since(), l.write_timeout) {
        return Verdict::Close(Event::WriteTimeout);
    }
    match conn.goaway() {
        Some(Goaway::Idle(at)) if over(Some(at), IDLE_GOAWAY_GRACE) => Verdict::CloseAfterGoaway,
        Some(Goaway::Age(at)) => {
            let grace = l.max_connection_age.map_or(Duration::ZERO, |(_, g)| g);
            if over(Some(at), grace) || conn.idle_since().is_some() {
                Verdict::CloseAfterGoaway
            } else {
                Verdict::Keep
            }
        }
        Some(Goaway::Idle(_)) => Verdict::Keep,
        None => {
            if let Some((age, _)) = l.max_connection_age {
                if over(Some(conn.created()), age) {
                    cfg.count(Event::AgeClosed);
                    conn.send_goaway(Goaway::Age(now));
                    return Verdict::Keep;
                }
            }
            if l.idle_timeout.is_some_and(|t| over(conn.idle_since(), t)) {
                cfg.count(Event::IdleClosed);
                conn.send_goaway(Goaway::Idle(now));
            }
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_quarter_of_the_shortest_timeout() {
        let mut cfg = ServerConfig::for_tests();
        assert_eq!(
            period(&cfg),
            Duration::from_millis(2500),
            "read timeout 10 s"
        );
        cfg.limits.idle_timeout = Some(Duration::from_millis(400));
        assert_eq!(period(&cfg), Duration::from_millis(100));
        cfg.limits.max_connection_age = Some((Duration::from_secs(60), Duration::from_millis(8)));
        assert_eq!(period(&cfg), Duration::from_millis(5), "never under 5 ms");
    }
}
