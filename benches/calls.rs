//! End-to-end ringrpc calls over loopback (criterion).
//!
//! The server runtime is pinned to CPU 0 and the client runtime to CPU 1, both
//! created once per benchmark group. One criterion iteration is one call:
//! `iter_custom` runs `iters` calls on the client core with `in_flight` caller
//! tasks in a closed loop (each takes the next call from a shared counter) and
//! returns the elapsed time, so criterion's time per iteration is the
//! amortised time per call and `Throughput::Elements(1)` reports calls/s.
//!
//! Groups (a reduced matrix, to keep the run around a minute and a half):
//! - `calls/latency`: 1 in flight, 64 B, pool 1 (the time is the round-trip latency);
//! - `calls/in_flight`: 16, 128, 1024 in flight, 64 B, pool 1;
//! - `calls/pool`: pool 1, 2, 4 at 128 in flight, 64 B;
//! - `calls/payload`: 64 B, 4 KiB, 64 KiB at 128 in flight, pool 1;
//! - `calls/server_cpu`: the server core's CPU time per call (not wall time) at
//!   128 in flight, 64 B and 4 KiB, for a handler returning an owned response
//!   (`register`) and one replying with the request's bytes borrowed
//!   (`register_responder`).
//!
//! Run: `cargo bench --bench calls` (HTML report: target/criterion/report/index.html).

// criterion_group! defines a pub fn without docs (criterion 0.7: the line
// whose rust-version fits the library's; 0.8 needs Rust 1.86).
#![allow(missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringrpc::runtime::io;
use ringrpc::{Client, Method};
use ringrpc_workload::echo::{self, Echo, ECHO, ECHO_OWNED};
use ringrpc_workload::pair::Pair;

/// CPUs of the server and client runtimes (the client falls back to CPU 0 on one CPU).
fn cpus() -> (usize, usize) {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    (0, if n > 1 { 1 } else { 0 })
}

/// A pinned server runtime with the echo server, and a pinned client runtime.
struct Env {
    /// `/proc/.../schedstat` of the server core's thread (its CPU time).
    server_stat: PathBuf,
    /// Taken (and stopped) on drop.
    pair: Option<Pair>,
    addr: SocketAddr,
}

impl Env {
    fn new() -> Self {
        let (server_cpu, client_cpu) = cpus();
        let pair = Pair::start(
            server_cpu,
            client_cpu,
            "calls",
            echo::server().expect("register"),
        )
        .expect("server and client");
        let addr = pair.addr();
        let server_stat = pair
            .server_rt
            .block_on(0, || async {
                // "<pid>/task/<tid>": this core thread's entry in /proc.
                std::fs::read_link("/proc/thread-self").expect("/proc/thread-self")
            })
            .expect("server core");
        Self {
            server_stat: Path::new("/proc").join(server_stat).join("schedstat"),
            pair: Some(pair),
            addr,
        }
    }

    /// Runs `iters` echo calls with `in_flight` concurrent callers over a
    /// client with `pool` connections; returns the elapsed time.
    fn run(&self, pool: usize, in_flight: usize, payload: usize, iters: u64) -> Duration {
        self.run_method(ECHO_OWNED, pool, in_flight, payload, iters)
    }

    /// CPU time the server core's thread has used so far.
    fn server_cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(&self.server_stat).expect("server schedstat");
        let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
        Duration::from_nanos(ns.expect("schedstat run time"))
    }

    /// [`run`](Self::run) calling `method` (an echo).
    fn run_method(
        &self,
        method: Method<Echo, Echo>,
        pool: usize,
        in_flight: usize,
        payload: usize,
        iters: u64,
    ) -> Duration {
        let addr = self.addr;
        let rt = &self.pair.as_ref().expect("running").client_rt;
        rt.block_on(0, move || {
            calls(method, addr, pool, in_flight, payload, iters)
        })
        .expect("client core")
        .unwrap_or_else(|e| panic!("calls failed: {e}"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Clients live in a client-core thread local; stopping the runtime drops them.
        if let Some(pair) = self.pair.take() {
            pair.stop();
        }
    }
}

thread_local! {
    /// Connected clients on the client core, by pool size (reused across samples).
    static CLIENTS: RefCell<HashMap<usize, Client>> = RefCell::new(HashMap::new());
}

/// The client core's client with `pool` connections, connecting it on first use.
async fn client(addr: SocketAddr, pool: usize) -> Result<Client, String> {
    if let Some(c) = CLIENTS.with(|m| m.borrow().get(&pool).cloned()) {
        return Ok(c);
    }
    let c = Client::builder()
        .insecure_plaintext()
        .pool_size(pool)
        .max_in_flight(4096)
        .connect(addr)
        .expect("connect on a ringrpc core");
    if !c.wait_connected(Duration::from_secs(5)).await {
        return Err(format!("no connection to {addr}"));
    }
    // Let every pooled connection come up before measuring.
    for _ in 0..100 {
        if c.stats().live_connections >= pool {
            break;
        }
        io::sleep(Duration::from_millis(10)).await;
    }
    CLIENTS.with(|m| m.borrow_mut().insert(pool, c.clone()));
    Ok(c)
}

async fn calls(
    method: Method<Echo, Echo>,
    addr: SocketAddr,
    pool: usize,
    in_flight: usize,
    payload: usize,
    iters: u64,
) -> Result<Duration, String> {
    let client = client(addr, pool).await?;
    let remaining = Rc::new(Cell::new(iters));
    let workers = (in_flight as u64).min(iters).max(1) as usize;
    let reqs: Vec<Echo> = (0..workers)
        .map(|i| Echo {
            id: (i as u64) << 40,
            payload: vec![0xA5; payload],
        })
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|mut req| {
            let (client, remaining) = (client.clone(), remaining.clone());
            io::spawn(async move {
                while remaining.get() > 0 {
                    remaining.set(remaining.get() - 1);
                    let reply = client
                        .call(&method, &req)
                        .await
                        .map_err(|e| e.to_string())?;
                    if reply.id.to_native() != req.id {
                        return Err(format!("echo id {} for {}", reply.id, req.id));
                    }
                    req.id += 1;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|_| "caller panicked".to_string())??;
    }
    Ok(start.elapsed())
}

fn size_label(n: usize) -> String {
    if n >= 1024 {
        format!("{}KiB", n / 1024)
    } else {
        format!("{n}B")
    }
}

/// 1 call in flight, 64 B, pool 1: the time per iteration is the round-trip latency.
fn latency(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("calls/latency");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_in_flight/64B/pool1", |b| {
        b.iter_custom(|iters| env.run(1, 1, 64, iters))
    });
    g.finish();
}

/// Throughput with 16, 128 and 1024 calls in flight (64 B, pool 1).
fn in_flight(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("calls/in_flight");
    g.throughput(Throughput::Elements(1));
    for n in [16, 128, 1024] {
        g.bench_with_input(BenchmarkId::new("64B/pool1", n), &n, |b, &n| {
            b.iter_custom(|iters| env.run(1, n, 64, iters))
        });
    }
    g.finish();
}

/// Pool sizes 1, 2, 4 at 128 in flight, 64 B.
fn pool(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("calls/pool");
    g.throughput(Throughput::Elements(1));
    for p in [1, 2, 4] {
        g.bench_with_input(BenchmarkId::new("128_in_flight/64B", p), &p, |b, &p| {
            b.iter_custom(|iters| env.run(p, 128, 64, iters))
        });
    }
    g.finish();
}

/// Payloads of 64 B, 4 KiB and 64 KiB at 128 in flight, pool 1.
fn payload(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("calls/payload");
    g.throughput(Throughput::Elements(1));
    for size in [64, 4096, 65536] {
        g.bench_with_input(
            BenchmarkId::new("128_in_flight/pool1", size_label(size)),
            &size,
            |b, &size| b.iter_custom(|iters| env.run(1, 128, size, iters)),
        );
    }
    g.finish();
}

/// Server CPU time per call (not wall time) of the echo at 128 in flight, 64 B
/// and 4 KiB, answered by a handler returning an owned response (`register`,
/// copies the payload with `to_vec`) and by one replying through a `Responder`
/// with the request's bytes borrowed (`register_responder`). Throughput is bound
/// by the client core here, so the handler's cost shows in the server's CPU time,
/// which `iter_custom` returns instead of the elapsed time.
fn server_cpu(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("calls/server_cpu");
    g.throughput(Throughput::Elements(1));
    for size in [64, 4096] {
        for (name, method) in [("owned", ECHO_OWNED), ("responder", ECHO)] {
            let id = BenchmarkId::new(format!("128_in_flight/{}", size_label(size)), name);
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let before = env.server_cpu();
                    env.run_method(method, 1, 128, size, iters);
                    env.server_cpu().saturating_sub(before)
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = calls_benches;
    config = config();
    targets = latency, in_flight, pool, payload, server_cpu
}
criterion_main!(calls_benches);
