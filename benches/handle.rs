//! A call through a `Handle` from a tokio thread against the same call made
//! by a `Client` on a ringrpc core, in one run: p50/p99 at 1 call in flight
//! and calls/s at 128 in flight, 64-byte echo (`Bench.echo`), loopback.
//!
//! The server runtime is pinned to CPU 0, the client runtime to CPU 1 (the
//! Handle's client lives on that core too); tokio runs one unpinned worker.
//! Rounds alternate between the two paths, so drift and noise from other
//! work on the machine fall on both.
//!
//! Run: `cargo bench --bench handle` (not run by CI; `cargo bench --no-run`
//! only builds it). Optional argument: seconds per measured round (default 2).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringrpc::runtime::io;
use ringrpc::{Client, Handle, Runtime};
use ringrpc_workload::echo::{self, Echo, ECHO};
use ringrpc_workload::pair::Pair;

const PAYLOAD: usize = 64;
const ROUNDS: usize = 3;

/// p50 and p99 of `samples` (nanoseconds).
fn percentiles(mut samples: Vec<u64>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn request(id: u64) -> Echo {
    Echo {
        id,
        payload: vec![0xA5; PAYLOAD],
    }
}

thread_local! {
    static CLIENT: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
}

fn core_client(addr: SocketAddr) -> Client {
    CLIENT.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| {
                Client::builder()
                    .insecure_plaintext()
                    .connect(addr)
                    .expect("on a core")
            })
            .clone()
    })
}

/// On the client core: one caller for `secs`; per-call latencies (ns).
fn core_latency(rt: &Runtime, addr: SocketAddr, run: Duration) -> Vec<u64> {
    rt.block_on(0, move || async move {
        let client = core_client(addr);
        let mut samples = Vec::with_capacity(1 << 20);
        let (mut req, end) = (request(0), Instant::now() + run);
        while Instant::now() < end {
            let t = Instant::now();
            let reply = client.call(&ECHO, &req).await.expect("call");
            samples.push(t.elapsed().as_nanos() as u64);
            echo::matches(&reply, &req).expect("echo");
            req.id += 1;
        }
        samples
    })
    .expect("client core")
}

/// On the client core: `in_flight` callers for `run`; calls/s.
fn core_throughput(rt: &Runtime, addr: SocketAddr, in_flight: usize, run: Duration) -> f64 {
    let calls = rt
        .block_on(0, move || async move {
            let client = core_client(addr);
            let done = Rc::new(Cell::new(0u64));
            let end = Instant::now() + run;
            let tasks: Vec<_> = (0..in_flight)
                .map(|i| {
                    let (client, done) = (client.clone(), done.clone());
                    io::spawn(async move {
                        let mut req = request(i as u64);
                        while Instant::now() < end {
                            let reply = client.call(&ECHO, &req).await.expect("call");
                            echo::matches(&reply, &req).expect("echo");
                            done.set(done.get() + 1);
                            req.id += in_flight as u64;
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            done.get()
        })
        .expect("client core");
    calls as f64 / run.as_secs_f64()
}

/// From a tokio task: one caller through the handle; latencies (ns).
async fn handle_latency(handle: &Handle, run: Duration) -> Vec<u64> {
    let mut samples = Vec::with_capacity(1 << 20);
    let (mut req, end) = (request(0), Instant::now() + run);
    while Instant::now() < end {
        let t = Instant::now();
        let reply = handle.call(&ECHO, &req).await.expect("call");
        samples.push(t.elapsed().as_nanos() as u64);
        echo::matches(&reply, &req).expect("echo");
        req.id += 1;
    }
    samples
}

/// From `in_flight` tokio tasks through the handle; calls/s.
async fn handle_throughput(handle: &Handle, in_flight: usize, run: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + run;
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| {
            let (handle, done) = (handle.clone(), done.clone());
            tokio::spawn(async move {
                let mut req = request(i as u64);
                while Instant::now() < end {
                    let reply = handle.call(&ECHO, &req).await.expect("call");
                    echo::matches(&reply, &req).expect("echo");
                    done.fetch_add(1, Ordering::Relaxed);
                    req.id += in_flight as u64;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    done.load(Ordering::Relaxed) as f64 / run.as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2.0);
    let run = Duration::from_secs_f64(secs);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let client_cpu = usize::from(cpus > 1);
    let pair = Pair::start(0, client_cpu, "hb", echo::server().expect("register"))
        .expect("server and client");
    let (client_rt, addr) = (&pair.client_rt, pair.addr());
    let handle = Client::builder()
        .insecure_plaintext()
        .connect_handle(client_rt, addr)
        .expect("handle");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");

    // Warm-up: both paths, connections up.
    let warm = Duration::from_millis(300);
    core_latency(client_rt, addr, warm);
    tokio.block_on(handle_latency(&handle, warm));

    println!("64 B echo, server core on CPU 0, client core on CPU {client_cpu}, tokio: 1 worker; {secs} s per measurement, {ROUNDS} rounds");
    println!(
        "{:<6} {:<26} {:>10} {:>10} {:>14}",
        "round", "path", "p50 (us)", "p99 (us)", "128: calls/s"
    );
    for round in 1..=ROUNDS {
        let (p50, p99) = percentiles(core_latency(client_rt, addr, run));
        let rate = core_throughput(client_rt, addr, 128, run);
        println!(
            "{round:<6} {:<26} {p50:>10.1} {p99:>10.1} {rate:>14.0}",
            "Client on the core"
        );
        let (p50, p99) = percentiles(tokio.block_on(handle_latency(&handle, run)));
        let rate = tokio.block_on(handle_throughput(&handle, 128, run));
        println!(
            "{round:<6} {:<26} {p50:>10.1} {p99:>10.1} {rate:>14.0}",
            "Handle from a tokio task"
        );
    }
    drop(handle);
    pair.stop();
}
