//! `ringrpc bench --compare cluster-turns`: what a cluster of one endpoint
//! costs over a plain client, measured with both on one client core, one
//! server and one pair of runtimes, taking turns.
//!
//! `--in-flight` callers call through the plain `Client` in one phase and as
//! many through the `Cluster` in the next (each side with its own connection
//! to the same server, its own caller tasks, parked while the other side's
//! phase runs), in the order plain, cluster, cluster, plain, ... so that a
//! drift of the machine hits both alike; a phase lasts `--duration` seconds
//! and there are `--rounds` pairs of them after `--warmup`. Per phase it counts
//! the calls that completed and the client core thread's CPU time; it prints
//! each pair's ratios and their medians. Phases a fraction of a second apart
//! on the same runtimes see far less of the host's run-to-run spread than
//! separate runs on fresh runtimes do (`--compare cluster`).
//!
//! For a count that does not depend on the host at all, [`ONLY_ENV`]
//! (`RINGRPC_TURNS_ONLY=plain|cluster`) makes every phase use one of the two;
//! run each under `valgrind --tool=callgrind` (epoll driver) for two
//! durations and divide the difference in the client thread's instructions
//! by the difference in the calls made in all, which the report prints
//! (`docs/benchmarks.md` has the recipe).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ringrpc::cluster::Cluster;
use ringrpc::runtime::io;
use ringrpc::{Client, Error, Reply};
use ringrpc_workload::echo::{Echo, ECHO};

use crate::bench::{start_runtimes, BenchArgs, CpuPlan};
use crate::cluster_bench::ClusterSpec;
use crate::compare::median;
use crate::CliResult;

/// Environment variable that makes every phase call through one of the two:
/// `plain` or `cluster` (for instruction counts; no pairs are reported then).
pub const ONLY_ENV: &str = "RINGRPC_TURNS_ONLY";

/// How long the client waits for its connections.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// One phase's outcome.
#[derive(Debug, Clone, Copy)]
struct Phase {
    cluster: bool,
    calls: u64,
    secs: f64,
    cpu_secs: f64,
}

/// Runs the comparison; `Ok(false)` when a call failed.
pub fn run(args: &BenchArgs, cpus: &CpuPlan) -> CliResult<bool> {
    if cpus.client.len() != 1 {
        return Err("--compare cluster-turns runs on one client core".into());
    }
    let (server, runtime, addrs) = start_runtimes(args, cpus, args.metrics.is_on())?;
    let addr = *addrs.first().ok_or("no server address")?;
    let plan = Plan {
        in_flight: args.in_flights().first().copied().unwrap_or(128),
        payload: args.payload,
        warmup: args.warmup,
        phase: args.duration,
        pairs: args.rounds.max(1),
        digest: args.data_digest.is_on(),
        metrics: args.metrics.is_on(),
        cluster: ClusterSpec::new(args),
    };
    let task = runtime.spawn_on(0, {
        let plan = plan.clone();
        move || turns(addr, plan)
    })?;
    let outcome = task.join()?;
    runtime.shutdown();
    if let Some(server) = server {
        server.stop();
    }
    let outcome = outcome?;
    report(&plan, &outcome);
    Ok(outcome.errors == 0)
}

/// The settings of one comparison (`Send`).
#[derive(Debug, Clone)]
struct Plan {
    in_flight: usize,
    payload: usize,
    warmup: Duration,
    phase: Duration,
    pairs: usize,
    digest: bool,
    metrics: bool,
    /// Balancer and hedging (`--balance`, `--hedge`).
    cluster: ClusterSpec,
}

/// What the client core measured.
struct Outcome {
    phases: Vec<Phase>,
    errors: u64,
    /// Calls completed in all, warm-up included.
    calls: u64,
    /// The size of a plain call's and a cluster call's future, in bytes.
    future_sizes: [usize; 2],
}

/// Which caller the callers use now, and what they did.
#[derive(Default)]
struct Shared {
    cluster: Cell<bool>,
    stop: Cell<bool>,
    done: [Cell<u64>; 2],
    errors: Cell<u64>,
    /// Callers waiting for their side's phase.
    parked: RefCell<Vec<Waker>>,
}

impl Shared {
    fn wake_parked(&self) {
        for w in self.parked.take() {
            w.wake();
        }
    }
}

/// On the client core: connects both, runs the callers and the phases.
async fn turns(addr: std::net::SocketAddr, plan: Plan) -> Result<Outcome, String> {
    let only = match std::env::var(ONLY_ENV).ok().as_deref() {
        None | Some("") => None,
        Some("plain") => Some(false),
        Some("cluster") => Some(true),
        Some(other) => return Err(format!("{ONLY_ENV}={other}: expected plain or cluster")),
    };
    let builder = Client::builder()
        .insecure_plaintext()
        .metrics(plan.metrics)
        .data_digest(plan.digest);
    let client = builder.clone().connect(addr).map_err(|e| e.to_string())?;
    let cluster = plan
        .cluster
        .builder(builder)
        .connect_static(&[addr])
        .map_err(|e| e.to_string())?;
    if !client.wait_connected(CONNECT_WAIT).await || !cluster.wait_connected(1, CONNECT_WAIT).await
    {
        return Err(format!("no connection to {addr} within {CONNECT_WAIT:?}"));
    }
    let shared = Rc::new(Shared::default());
    // A caller task per side and slot: each side's call path is compiled
    // into a poll function of its own, so neither's code is inlined (or
    // not) according to the other's size.
    let mut callers = Vec::with_capacity(2 * plan.in_flight);
    for i in 0..plan.in_flight {
        let first = (i as u64) << 32;
        let (sh, payload) = (&shared, plan.payload);
        callers.push(io::spawn(caller(
            client.clone(),
            sh.clone(),
            first,
            payload,
        )));
        callers.push(io::spawn(caller(
            cluster.clone(),
            sh.clone(),
            first,
            payload,
        )));
    }
    io::sleep(plan.warmup).await;
    let mut phases = Vec::with_capacity(2 * plan.pairs);
    for i in 0..2 * plan.pairs {
        // plain, cluster, cluster, plain, plain, cluster, ...
        let on = only.unwrap_or(matches!(i % 4, 1 | 2));
        phases.push(phase(&shared, on, plan.phase).await);
    }
    shared.stop.set(true);
    shared.wake_parked();
    for c in callers {
        let _ = c.await;
    }
    let req = Echo {
        id: 0,
        payload: Vec::new(),
    };
    let future_sizes = [
        std::mem::size_of_val(&client.call(&ECHO, &req)),
        std::mem::size_of_val(&cluster.call(&ECHO, &req)),
    ];
    client.close();
    cluster.close();
    Ok(Outcome {
        phases,
        errors: shared.errors.get(),
        calls: shared.done.iter().map(Cell::get).sum(),
        future_sizes,
    })
}

/// One phase with the cluster `on` (or the plain client).
async fn phase(shared: &Shared, on: bool, length: Duration) -> Phase {
    shared.cluster.set(on);
    shared.wake_parked();
    let counter = &shared.done[usize::from(on)];
    let (calls0, cpu0, t0) = (counter.get(), thread_cpu(), Instant::now());
    io::sleep(length).await;
    Phase {
        cluster: on,
        calls: counter.get() - calls0,
        secs: t0.elapsed().as_secs_f64(),
        cpu_secs: thread_cpu() - cpu0,
    }
}

/// One side of the comparison: the plain client or the cluster.
trait Side {
    /// Whether this is the cluster.
    const CLUSTER: bool;

    fn call<'a>(&'a self, req: &'a Echo) -> impl Future<Output = Result<Reply<Echo>, Error>> + 'a;
}

impl Side for Client {
    const CLUSTER: bool = false;

    fn call<'a>(&'a self, req: &'a Echo) -> impl Future<Output = Result<Reply<Echo>, Error>> + 'a {
        Client::call(self, &ECHO, req)
    }
}

impl Side for Cluster {
    const CLUSTER: bool = true;

    fn call<'a>(&'a self, req: &'a Echo) -> impl Future<Output = Result<Reply<Echo>, Error>> + 'a {
        Cluster::call(self, &ECHO, req)
    }
}

/// A closed-loop caller through `side`, while the phase is that side's
/// (parked otherwise).
async fn caller<S: Side>(side: S, shared: Rc<Shared>, first: u64, payload: usize) {
    let mut req = Echo {
        id: first,
        payload: vec![0xA5; payload],
    };
    let done = &shared.done[usize::from(S::CLUSTER)];
    loop {
        std::future::poll_fn(|cx| {
            if shared.stop.get() || shared.cluster.get() == S::CLUSTER {
                Poll::Ready(())
            } else {
                shared.parked.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if shared.stop.get() {
            return;
        }
        match side.call(&req).await {
            Ok(reply) if reply.id.to_native() == req.id => done.set(done.get() + 1),
            _ => shared.errors.set(shared.errors.get() + 1),
        }
        req.id = req.id.wrapping_add(1);
    }
}

/// This thread's CPU time, in seconds (the first field of its schedstat:
/// nanoseconds on the CPU; 0 where it cannot be read).
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

/// Prints every pair and the medians.
fn report(plan: &Plan, outcome: &Outcome) {
    let (phases, errors) = (&outcome.phases, outcome.errors);
    println!();
    println!(
        "{} (1 endpoint) vs plain client at {} in flight × {} B: {} pairs of {:.2} s phases, taking turns on one client core",
        plan.cluster.label(),
        plan.in_flight,
        plan.payload,
        plan.pairs,
        plan.phase.as_secs_f64()
    );
    println!(
        "  pair   plain calls/s  cluster calls/s   ratio   plain µs/call  cluster µs/call   ratio"
    );
    let pairs = pairs(phases);
    for (n, p) in pairs.iter().enumerate() {
        println!(
            "  {n:>4} {:>15.0} {:>16.0} {:>7.4} {:>15.3} {:>16.3} {:>7.4}",
            p.rate[0],
            p.rate[1],
            p.rate[1] / p.rate[0],
            p.cpu[0],
            p.cpu[1],
            p.cpu[1] / p.cpu[0]
        );
    }
    let rates: Vec<f64> = pairs.iter().map(|p| p.rate[1] / p.rate[0]).collect();
    let cpus: Vec<f64> = pairs.iter().map(|p| p.cpu[1] / p.cpu[0]).collect();
    let (r, c) = (median(&rates), median(&cpus));
    println!(
        "  median of {} pairs: calls/s cluster/plain = {r:.4} ({:+.2}%), client CPU per call = {c:.4} ({:+.2}%); {errors} failed calls",
        rates.len(),
        (r - 1.0) * 100.0,
        (c - 1.0) * 100.0
    );
    println!(
        "  {} calls in all (warm-up included); a call's future: plain {} B, cluster {} B",
        outcome.calls, outcome.future_sizes[0], outcome.future_sizes[1]
    );
}

/// One pair of adjacent phases: calls/s and client CPU µs per call,
/// `[plain, cluster]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair {
    rate: [f64; 2],
    cpu: [f64; 2],
}

/// The phases two by two (each pair has one of each setting, in either order).
fn pairs(phases: &[Phase]) -> Vec<Pair> {
    phases
        .chunks_exact(2)
        .filter_map(|pair| {
            let (plain, cluster) = match pair {
                [a, b] if b.cluster && !a.cluster => (a, b),
                [a, b] if a.cluster && !b.cluster => (b, a),
                _ => return None,
            };
            let rate = |p: &Phase| p.calls as f64 / p.secs;
            let cpu = |p: &Phase| p.cpu_secs * 1e6 / p.calls.max(1) as f64;
            Some(Pair {
                rate: [rate(plain), rate(cluster)],
                cpu: [cpu(plain), cpu(cluster)],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_pair_up_whatever_their_order() {
        let phase = |cluster, calls, cpu_secs| Phase {
            cluster,
            calls,
            secs: 1.0,
            cpu_secs,
        };
        let phases = [
            phase(false, 100, 1e-4),
            phase(true, 90, 1e-4),
            phase(true, 50, 1e-4),
            phase(false, 100, 1e-4),
            phase(true, 1, 1.0),
        ];
        let got = pairs(&phases);
        assert_eq!(got.len(), 2, "the odd phase is left out");
        assert_eq!(got[0].rate, [100.0, 90.0]);
        assert_eq!(got[1].rate, [100.0, 50.0]);
        assert!(
            (got[1].cpu[1] - 2.0).abs() < 1e-9,
            "µs per call: {:?}",
            got[1]
        );
    }
}
