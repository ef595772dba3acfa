//! The cluster example's parts, shared with its test (tests/cluster_example.rs):
//! replicas of a small lookup service and a client that calls them through a
//! [`Cluster`] while one replica goes away.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc::cluster::{Cluster, ClusterStats};
use ringrpc::{Error, Method, Runtime, Server, ServerHandle};

/// Squares a number; answers with the replica's index in the high bits, so
/// the demo can count which replica answered.
pub const SQUARE: Method<u64, u64> = Method::new("Math.square");

/// Starts `n` replicas on `rt`, each on its own loopback port.
pub fn serve_replicas(rt: &Runtime, n: u64) -> Result<Vec<ServerHandle>, Error> {
    (0..n)
        .map(|replica| {
            Server::builder()
                .insecure_plaintext()
                .register(SQUARE, move |x: &rkyv::Archived<u64>| {
                    let x = x.to_native() & 0xffff;
                    Ok::<_, String>((replica << 48) | (x * x))
                })?
                .serve(rt, "127.0.0.1:0".parse().expect("loopback"))
        })
        .collect()
}

/// What the demo saw.
#[derive(Debug)]
pub struct Report {
    /// Calls answered by each replica, before and after the stop.
    pub before: Vec<u64>,
    /// Calls answered by each replica after `stop` ran.
    pub after: Vec<u64>,
    /// Calls that failed.
    pub failed: u64,
    /// The cluster's counters at the end.
    pub stats: ClusterStats,
}

/// Runs on a client core: `calls` calls through a cluster of `addrs`, then
/// `stop()` (which takes a replica away), then `calls` more. `SQUARE` is
/// declared idempotent, so a call caught by the stop is retried on another
/// replica, and the stopped one is ejected.
pub async fn demo(
    addrs: Vec<SocketAddr>,
    calls: u64,
    stop: impl FnOnce(),
) -> Result<Report, Error> {
    let cluster = Cluster::builder()
        .insecure_plaintext()
        .idempotent(&SQUARE)
        .deadline(Duration::from_millis(500))
        .connect_static(&addrs)?;
    cluster
        .wait_connected(addrs.len(), Duration::from_secs(5))
        .await;
    let n = addrs.len();
    let (mut before, mut after, mut failed) = (vec![0; n], vec![0; n], 0);
    for x in 0..calls {
        tally(cluster.call(&SQUARE, &x).await, x, &mut before, &mut failed)?;
    }
    stop();
    for x in 0..calls {
        tally(cluster.call(&SQUARE, &x).await, x, &mut after, &mut failed)?;
    }
    let stats = cluster.stats();
    cluster.close();
    Ok(Report {
        before,
        after,
        failed,
        stats,
    })
}

fn tally(
    reply: Result<ringrpc::Reply<u64>, Error>,
    x: u64,
    per_replica: &mut [u64],
    failed: &mut u64,
) -> Result<(), Error> {
    match reply {
        Ok(reply) => {
            let v = reply.to_native();
            if v & 0xffff_ffff_ffff != x * x {
                return Err(Error::Config(format!("wrong square of {x}: {v:#x}")));
            }
            per_replica[(v >> 48) as usize] += 1;
        }
        Err(_) => *failed += 1,
    }
    Ok(())
}
