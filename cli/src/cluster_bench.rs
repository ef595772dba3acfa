//! `ringrpc bench` through a cluster client: with several servers
//! (`--connect a,b,c` or `--servers N`), or with `--cluster` for one.
//!
//! Each client core builds one [`Cluster`] over every server (each endpoint a
//! pool of `--pool-size` connections), with `Bench.echo` declared idempotent
//! so it can be hedged (`--hedge on|off`), balanced by `--balance`. Under
//! each row it prints what the clusters did, read from the client runtime's
//! per-endpoint metrics: calls, hedges and retries per endpoint and the
//! extra load they added.

use std::time::Duration;

use ringrpc::cluster::{Balance, Cluster, ClusterBuilder, Hedging};
use ringrpc::runtime::io;
use ringrpc::{ClientBuilder, MetricsSnapshot};
use ringrpc_workload::echo;

use crate::bench::{BalanceArg, BenchArgs, Spec};
use crate::measure::{Tally, Window};

/// How long a client core waits for every endpoint to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The cluster settings of a row (`Send + Clone`).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    balance: Balance,
    hedge: bool,
}

impl ClusterSpec {
    /// The settings `args` ask for.
    pub fn new(args: &BenchArgs) -> Self {
        Self {
            balance: match args.balance {
                BalanceArg::P2c => Balance::P2c,
                BalanceArg::RoundRobin => Balance::RoundRobin,
            },
            hedge: args.hedge.is_on(),
        }
    }

    /// The row label: the balancer and whether hedging is on.
    pub fn label(&self) -> &'static str {
        match (self.balance, self.hedge) {
            (Balance::P2c, false) => "cluster p2c",
            (Balance::P2c, true) => "cluster p2c+hedge",
            (Balance::RoundRobin, false) => "cluster rr",
            (_, true) => "cluster rr+hedge",
        }
    }

    /// A cluster builder with these settings over `client`'s.
    pub fn builder(&self, client: ClientBuilder) -> ClusterBuilder {
        Cluster::builder()
            .insecure_plaintext()
            .client(client)
            .balance(self.balance)
            .idempotent(&echo::ECHO)
            .hedging(self.hedge.then(Hedging::default))
    }
}

/// One client core: build the cluster, run the callers, merge their tallies.
pub async fn run_core(
    core: usize,
    spec: &Spec,
    cluster: &ClusterSpec,
    client: ClientBuilder,
) -> Tally {
    let mut total = Tally::new();
    let cluster = match cluster.builder(client).connect_static(&spec.addrs) {
        Ok(c) => c,
        Err(e) => {
            total.error(|| format!("core {core}: cluster: {e}"));
            return total;
        }
    };
    if !cluster.wait_connected(spec.addrs.len(), CONNECT_WAIT).await {
        total
            .error(|| format!("core {core}: not every endpoint connected within {CONNECT_WAIT:?}"));
        cluster.close();
        return total;
    }
    let callers: Vec<_> = (0..spec.in_flight)
        .map(|i| {
            let first_id = ((core as u64) << 56) | ((i as u64) << 32);
            io::spawn(caller(cluster.clone(), spec.window, first_id, spec.payload))
        })
        .collect();
    for caller in callers {
        match caller.await {
            Ok(tally) => total.merge(tally),
            Err(_) => total.error(|| format!("core {core}: a caller task panicked")),
        }
    }
    cluster.close();
    total
}

async fn caller(cluster: Cluster, window: Window, first_id: u64, payload: usize) -> Tally {
    let mut tally = Tally::new();
    let record = |started, outcome| match outcome {
        Ok(()) => tally.ok(&window, started),
        Err(e) => tally.error(|| e),
    };
    echo::call_loop(&cluster, first_id, payload, window.end, record).await;
    tally
}

/// Prints the clusters' per-endpoint counters (nothing without a cluster).
pub fn print(client: &MetricsSnapshot) {
    let merged = client.merged();
    if merged.endpoints.is_empty() {
        return;
    }
    let calls: u64 = merged.endpoints.iter().map(|e| e.calls).sum();
    let hedges: u64 = merged.endpoints.iter().map(|e| e.hedges).sum();
    let retries: u64 = merged.endpoints.iter().map(|e| e.retries).sum();
    let first = calls.saturating_sub(hedges + retries).max(1);
    println!(
        "    cluster (row + warmup): {calls} attempts, {hedges} hedges, {retries} retries: {:.2}% extra load",
        (hedges + retries) as f64 * 100.0 / first as f64
    );
    println!(
        "    {:<22} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "endpoint", "attempts", "hedges", "won", "retries", "ejections", "p99 µs"
    );
    for e in &merged.endpoints {
        let p99 = if e.latency.count() == 0 {
            "-".to_string()
        } else {
            e.latency.quantile(0.99).as_micros().to_string()
        };
        println!(
            "    {:<22} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}",
            e.endpoint.to_string(),
            e.calls,
            e.hedges,
            e.hedges_won,
            e.retries,
            e.ejections,
            p99
        );
    }
}
