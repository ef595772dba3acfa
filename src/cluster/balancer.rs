//! Picking an endpoint for an attempt, per core, without locks.
//!
//! [`Balance::P2c`] (default): power of two choices — draw two distinct
//! endpoints at random, take the one with the lower load (peak-EWMA latency ×
//! (in-flight + 1), see `endpoint.rs`). [`Balance::RoundRobin`]: the next one
//! in turn. Either way only *available* endpoints are candidates: not ejected,
//! with a live connection (a new endpoint is warmed: it gets calls once its
//! pool has connected), and not among the endpoints this call already tried
//! (a retry or a hedge goes elsewhere when another endpoint exists).
//! If no endpoint is available the pick relaxes in steps — endpoints not yet
//! connected, then tried ones, then ejected ones (Envoy's panic mode) — so a
//! call is only refused when the cluster has no endpoint at all.
//! One endpoint: no draw, no load computed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use super::endpoint::Endpoint;

/// How a cluster spreads calls over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Power of two choices over least load (peak-EWMA latency × in-flight).
    P2c,
    /// Each available endpoint in turn.
    RoundRobin,
}

/// How strict a candidate check is (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Available,
    Connecting,
    Tried,
    Any,
}

fn eligible(e: &Endpoint, tried: &[u64], level: Level) -> bool {
    match level {
        Level::Available => !e.health.is_ejected() && !tried.contains(&e.id) && e.client.is_up(),
        Level::Connecting => !e.health.is_ejected() && !tried.contains(&e.id),
        Level::Tried => !e.health.is_ejected(),
        Level::Any => true,
    }
}

/// The balancer's per-core state.
pub(crate) struct Balancer {
    pub mode: Balance,
    rng: Cell<u64>,
    next: Cell<usize>,
}

impl Balancer {
    pub fn new(mode: Balance, seed: u64) -> Self {
        Self {
            mode,
            rng: Cell::new(seed | 1),
            next: Cell::new(0),
        }
    }

    fn random(&self, n: usize) -> usize {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize) % n
    }

    /// The endpoint for the next attempt, avoiding `tried`; `None` only if
    /// `endpoints` is empty.
    pub fn pick(&self, endpoints: &[Rc<Endpoint>], tried: &[u64]) -> Option<Rc<Endpoint>> {
        match endpoints {
            [] => None,
            [only] => Some(only.clone()),
            _ => self.pick_among(endpoints, tried),
        }
    }

    fn pick_among(&self, endpoints: &[Rc<Endpoint>], tried: &[u64]) -> Option<Rc<Endpoint>> {
        // The turn's clock: loads need no fresher reading.
        let now = crate::runtime::io::now();
        let levels = [
            Level::Available,
            Level::Connecting,
            Level::Tried,
            Level::Any,
        ];
        levels.into_iter().find_map(|level| match self.mode {
            Balance::P2c => self.p2c(endpoints, tried, level, now),
            Balance::RoundRobin => self.round_robin(endpoints, tried, level),
        })
    }

    fn p2c(
        &self,
        eps: &[Rc<Endpoint>],
        tried: &[u64],
        level: Level,
        now: Instant,
    ) -> Option<Rc<Endpoint>> {
        let n = eps.len();
        // A few draws of two distinct endpoints; both eligible: the lighter.
        for _ in 0..3 {
            let a = self.random(n);
            let b = (a + 1 + self.random(n - 1)) % n;
            let (ea, eb) = (&eps[a], &eps[b]);
            match (eligible(ea, tried, level), eligible(eb, tried, level)) {
                (true, true) => {
                    let pick = if ea.load(now) <= eb.load(now) { ea } else { eb };
                    return Some(pick.clone());
                }
                (true, false) => return Some(ea.clone()),
                (false, true) => return Some(eb.clone()),
                (false, false) => {}
            }
        }
        // Few eligible ones: the lightest of them.
        eps.iter()
            .filter(|e| eligible(e, tried, level))
            .min_by(|a, b| a.load(now).total_cmp(&b.load(now)))
            .cloned()
    }

    fn round_robin(
        &self,
        eps: &[Rc<Endpoint>],
        tried: &[u64],
        level: Level,
    ) -> Option<Rc<Endpoint>> {
        let n = eps.len();
        let start = self.next.get();
        (0..n).map(|i| (start + i) % n).find_map(|i| {
            let e = &eps[i];
            eligible(e, tried, level).then(|| {
                self.next.set(i + 1);
                e.clone()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cluster::eject::{Ejection, Health};
    use crate::cluster::endpoint::PeakEwma;
    use crate::{Client, Runtime};

    /// Endpoints whose pools point at a closed port (never connected, so
    /// every pick happens at the "connecting" level), with the given
    /// latency estimates.
    fn endpoints(costs_ms: &[u64]) -> Vec<Rc<Endpoint>> {
        let now = Instant::now();
        costs_ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                let addr = format!("127.0.0.1:{}", 1 + i).parse().unwrap();
                Rc::new(Endpoint {
                    id: i as u64,
                    client: Client::builder()
                        .insecure_plaintext()
                        .connect(addr)
                        .unwrap(),
                    in_flight: Cell::new(0),
                    ewma: PeakEwma::new(Duration::from_secs(10), Duration::from_millis(ms), now),
                    health: Health::new(now),
                    cells: crate::metrics::local().endpoint_cells(addr),
                    silent: Cell::new(0),
                })
            })
            .collect()
    }

    fn on_core(test: impl FnOnce() + Send + 'static) {
        let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
        rt.block_on(0, move || async move { test() }).unwrap();
    }

    #[test]
    fn p2c_takes_the_lighter_of_two_and_weighs_in_flight_calls() {
        on_core(|| {
            let eps = endpoints(&[1, 10]);
            let b = Balancer::new(Balance::P2c, 7);
            for _ in 0..50 {
                assert_eq!(b.pick(&eps, &[]).unwrap().id, 0, "1 ms beats 10 ms");
            }
            // 1 ms × 20 in flight is heavier than 10 ms × 1.
            eps[0].in_flight.set(19);
            assert_eq!(b.pick(&eps, &[]).unwrap().id, 1);
        });
    }

    #[test]
    fn picks_avoid_tried_and_ejected_endpoints_until_none_is_left() {
        on_core(|| {
            let eps = endpoints(&[1, 2, 3]);
            for mode in [Balance::P2c, Balance::RoundRobin] {
                let b = Balancer::new(mode, 11);
                for _ in 0..30 {
                    assert_ne!(b.pick(&eps, &[0]).unwrap().id, 0, "{mode:?}: tried");
                }
                eps[1].health.eject(&Ejection::default(), Instant::now());
                for _ in 0..30 {
                    assert_eq!(b.pick(&eps, &[0]).unwrap().id, 2, "{mode:?}");
                }
                // Everything tried or ejected: a tried one (panic mode after that).
                assert_ne!(b.pick(&eps, &[0, 2]).unwrap().id, 1, "{mode:?}");
                eps[1].health.readmit(Instant::now());
            }
            assert!(Balancer::new(Balance::P2c, 1).pick(&[], &[]).is_none());
        });
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        on_core(|| {
            let eps = endpoints(&[5, 1, 9]);
            let b = Balancer::new(Balance::RoundRobin, 3);
            let order: Vec<u64> = (0..6).map(|_| b.pick(&eps, &[]).unwrap().id).collect();
            assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        });
    }
}
