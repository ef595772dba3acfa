//! `ringrpc bench`: a load generator for the `Bench.echo` method, closed loop
//! (the default) or open loop (`--rate`, see `open.rs`).
//!
//! Without `--connect` it starts an embedded loopback server on its own
//! runtime pinned to `--server-cpu`. The client runs on `--cores` pinned cores
//! starting at `--client-cpu`; each core owns one [`Client`] (a pool of
//! `--pool-size` connections) and runs `in-flight` caller tasks, each looping
//! call → check → record. One table row per `--in-flight` value, then one per
//! `--rate` value; `--csv` and `--json` export every row (`export.rs`).
//!
//! Every row runs on fresh client (and embedded server) runtimes, so the
//! metrics read from them after the row (per-phase latency, pool hit rate,
//! stalls; printed under the row) cover exactly that row, warmup included:
//! metrics are cumulative per core and histograms cannot be subtracted.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ringrpc::runtime::io;
use ringrpc::{Client, Driver, MetricsSnapshot, Runtime, Server, ServerHandle};
use ringrpc_floor::Mode;
use ringrpc_workload::cpu::{self, CpuShares, Naming};
use ringrpc_workload::echo;

use crate::driver::{parse_driver, say_once};
use crate::floor::{self, FloorSpec};
use crate::measure::{parse_positive, parse_rate, parse_secs, Switch, Tally, Window};
use crate::report::{self, Row, Shape};
use crate::{compare, export, open, phases, CliResult};

/// How long a client core waits for its first connection.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// In-flight values measured when neither `--in-flight` nor `--rate` is given.
const DEFAULT_IN_FLIGHT: [usize; 2] = [1, 128];
/// Names of the client and embedded server runtimes (their threads are `{name}-{core}`,
/// which is how the CPU sampler tells the two sides apart).
const SIDES: Naming = Naming::Cores {
    server: "bench-server",
    client: "bench-client",
};

/// Options of `ringrpc bench` (also the default command).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Benchmark running `ringrpc serve`s at ADDR instead of an embedded
    /// server; several (`a,b,c`) are called through a cluster client.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub connect: Vec<SocketAddr>,
    /// Embedded servers (on the server CPU, each its own listener); more than
    /// one is called through a cluster client.
    #[arg(long, default_value = "1", value_parser = parse_positive, value_name = "N")]
    pub servers: usize,
    /// Call through a cluster client even with one server.
    #[arg(long)]
    pub cluster: bool,
    /// Cluster balancing: `p2c` (peak-EWMA least load) or `round-robin`.
    #[arg(long, value_enum, default_value_t = BalanceArg::P2c)]
    pub balance: BalanceArg,
    /// Cluster hedging of the echo (declared idempotent): after its p95, 5% budget.
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub hedge: Switch,
    /// Make the first embedded server slow: every N-th call waits --slow-ms (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub slow_every: u64,
    /// The delay of the slow server's slow calls, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub slow_ms: u64,
    /// Client cores (pinned to CPUs from --client-cpu upward).
    #[arg(long, default_value = "1", value_parser = parse_positive)]
    pub cores: usize,
    /// Connections per client core.
    #[arg(long, default_value = "1", value_parser = parse_positive)]
    pub pool_size: usize,
    /// Concurrent callers per client core (closed loop); one measurement per
    /// listed value [default: 1,128 unless --rate is given].
    #[arg(long, value_delimiter = ',', value_parser = parse_positive)]
    pub in_flight: Vec<usize>,
    /// Open loop: calls per second over all client cores (split evenly), sent
    /// on a fixed schedule whatever the replies do; latency counts from each
    /// call's intended send time. One measurement per listed value.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate, value_name = "CALLS_PER_SEC")]
    pub rate: Vec<f64>,
    /// Open loop: most calls outstanding per client core; a call due while
    /// this many are outstanding is not sent and counted as dropped.
    #[arg(long, default_value = "10000", value_parser = parse_positive, value_name = "N")]
    pub max_outstanding: usize,
    /// Open loop: stop sleeping this many microseconds before each send time
    /// and yield to the core until it instead (timers fire up to the 50 µs
    /// timer slack late); 0 = sleep only (less client CPU, later sends).
    #[arg(long, default_value_t = 75, value_name = "MICROS")]
    pub send_spin: u64,
    /// Also write every row of the table to FILE as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also write every row of the table, and the settings, to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Payload bytes per request (echoed back).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,
    /// Measured seconds per row.
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    pub duration: Duration,
    /// Unrecorded seconds before each row's measurement.
    #[arg(long, default_value = "0.5", value_parser = parse_secs, value_name = "SECS")]
    pub warmup: Duration,
    /// CPU of the embedded server.
    #[arg(long, default_value_t = 0, value_name = "CPU")]
    pub server_cpu: usize,
    /// First client CPU [default: 1, or 0 on a one-CPU machine].
    #[arg(long, value_name = "CPU")]
    pub client_cpu: Option<usize>,
    /// Per-phase timing and latency histograms in the client and the embedded
    /// server (`ClientBuilder::metrics` / `ServerBuilder::metrics`).
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub metrics: Switch,
    /// The CRC32 of every payload (data digest) in the client and the embedded
    /// server (`ClientBuilder::data_digest` / `ServerBuilder::data_digest`);
    /// the header digest is always on.
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub data_digest: Switch,
    /// `floor`: also measure raw-socket baselines with the same payload and
    /// duration. `metrics`: measure each row with metrics on and off, alternating,
    /// `--rounds` times each, and print the medians and the on/off ratio.
    /// `cluster`: the same, a plain client vs a cluster of one endpoint.
    #[arg(long, value_enum)]
    pub compare: Option<Compare>,
    /// The targets file `--compare floor` checks [default: $RINGRPC_TARGETS,
    /// else benches/targets.txt of the source tree this binary was built from].
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// Keep every core (client and embedded server) polling its ring for this
    /// many microseconds after each receive instead of sleeping at once
    /// (`RuntimeBuilder::busy_poll`); 0 = off.
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub busy_poll: u64,
    /// Send with `SEND_ZC` (zero-copy) from this many bytes on, on the client
    /// and the embedded server (`RuntimeBuilder::send_zc`); default: never.
    #[arg(long, value_name = "BYTES")]
    pub send_zc: Option<usize>,
    /// Runs per setting for `--compare metrics`.
    #[arg(long, default_value = "5", value_parser = parse_positive, value_name = "N")]
    pub rounds: usize,
    /// The I/O driver of the client and the embedded server: `auto`
    /// (io_uring, or epoll where it is refused), `io_uring` or `epoll`
    /// (`RINGRPC_DRIVER`, when set, overrides it).
    #[arg(long, default_value = "auto", value_parser = parse_driver, value_name = "auto|io_uring|epoll")]
    pub driver: Driver,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// `--balance` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BalanceArg {
    /// Power of two choices over peak-EWMA load.
    P2c,
    /// Round robin.
    RoundRobin,
}

impl BenchArgs {
    /// Whether calls go through a cluster client.
    pub fn uses_cluster(&self) -> bool {
        self.cluster || self.connect.len() > 1 || (self.connect.is_empty() && self.servers > 1)
    }

    /// The busy-poll window, if any.
    pub fn busy(&self) -> Option<Duration> {
        (self.busy_poll > 0).then(|| Duration::from_micros(self.busy_poll))
    }

    /// The closed-loop in-flight values to measure (`--in-flight`, or the
    /// default when there are no `--rate` rows either).
    pub fn in_flights(&self) -> Vec<usize> {
        if self.in_flight.is_empty() && self.rate.is_empty() {
            DEFAULT_IN_FLIGHT.to_vec()
        } else {
            self.in_flight.clone()
        }
    }
}

/// Baselines `--compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// Blocking and pipelined echo over one plain TCP socket.
    Floor,
    /// The same rows with metrics on and off (medians of `--rounds` runs each).
    Metrics,
    /// The same rows through a plain client and a cluster of one (medians of
    /// `--rounds` runs each): what balancing costs.
    Cluster,
    /// A plain client and a cluster of one on the same client core, server
    /// and runtimes, taking turns in `--rounds` pairs of `--duration`-long
    /// phases (the finer measure of what balancing costs).
    ClusterTurns,
}

/// Which CPUs the server and the client cores run on.
#[derive(Debug, Clone)]
pub struct CpuPlan {
    /// CPU of the embedded server.
    pub server: usize,
    /// CPU of each client core.
    pub client: Vec<usize>,
}

impl CpuPlan {
    /// The CPUs `args` ask for.
    pub fn new(args: &BenchArgs) -> Self {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        let first = args.client_cpu.unwrap_or(if n > 1 { 1 } else { 0 });
        Self {
            server: args.server_cpu,
            client: (0..args.cores)
                .map(|i| (first + i) % n.max(first + 1))
                .collect(),
        }
    }
}

/// Loopback servers (`--servers`) on one pinned runtime.
pub struct EmbeddedServer {
    handles: Vec<ServerHandle>,
    runtime: Runtime,
}

impl EmbeddedServer {
    fn start(cpu: usize, metrics: bool, args: &BenchArgs) -> CliResult<Self> {
        let runtime = Runtime::builder()
            .cpus([cpu])
            .name(SIDES.server())
            .busy_poll(args.busy())
            .send_zc(args.send_zc)
            .driver(args.driver)
            .build()?;
        say_once(runtime.driver());
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut handles = Vec::new();
        for i in 0..args.servers {
            let builder = if i == 0 && args.slow_every > 0 {
                let delay = Duration::from_millis(args.slow_ms);
                echo::slow_server(args.slow_every, delay)?
            } else {
                echo::register(Server::builder().insecure_plaintext())?
            };
            let builder = args.tls.apply_server(builder)?;
            let builder = builder
                .data_digest(args.data_digest.is_on())
                .metrics(metrics);
            handles.push(builder.serve(&runtime, addr)?);
        }
        Ok(Self { handles, runtime })
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.handles.iter().map(ServerHandle::local_addr).collect()
    }

    /// Reads the server runtime's metrics, then stops it.
    pub fn stop(self) -> MetricsSnapshot {
        let metrics = self.runtime.metrics();
        for handle in self.handles {
            handle.shutdown(Duration::from_millis(200));
        }
        self.runtime.shutdown();
        metrics
    }
}

/// What a closed-loop measurement needs on each client core (`Send + Clone`).
#[derive(Debug, Clone)]
pub struct Spec {
    pub addrs: Vec<SocketAddr>,
    pub cluster: Option<crate::cluster_bench::ClusterSpec>,
    pub pool_size: usize,
    pub in_flight: usize,
    pub payload: usize,
    pub window: Window,
    pub metrics: bool,
    pub digest: bool,
    pub tls: Option<crate::tls::ClientTls>,
}

/// Where one row's client runtime sends its calls.
pub struct Target<'a> {
    /// The client runtime (fresh for this row).
    pub runtime: &'a Runtime,
    /// The (first) server's address.
    pub addr: SocketAddr,
    /// Every server's address.
    pub addrs: Vec<SocketAddr>,
    /// Whether metrics are on in client and server.
    pub metrics: bool,
}

/// One measured row and the metrics its runtimes recorded.
#[derive(Debug)]
pub struct Measured {
    /// The table row (latency as seen by the callers).
    pub row: Row,
    /// The client runtime's metrics for this row.
    pub client: MetricsSnapshot,
    /// The embedded server runtime's metrics (`None` with `--connect`).
    pub server: Option<MetricsSnapshot>,
}

/// Runs the benchmark; `Ok(false)` when any call failed.
pub fn run(args: &BenchArgs) -> CliResult<bool> {
    check_args(args)?;
    let cpus = CpuPlan::new(args);
    describe(args, &cpus);
    let mut rows = Vec::new();
    let healthy = if args.compare == Some(Compare::Metrics) {
        compare::metrics(args, &cpus, &mut rows)?
    } else if args.compare == Some(Compare::Cluster) {
        compare::cluster(args, &cpus, &mut rows)?
    } else if args.compare == Some(Compare::ClusterTurns) {
        crate::cluster_turns::run(args, &cpus)?
    } else {
        run_table(args, &cpus, &mut rows)?
    };
    export::write(args, &cpus, &rows)?;
    Ok(healthy)
}

/// The comparisons made of closed-loop rows only.
fn closed_loop_compare(c: Compare) -> bool {
    matches!(
        c,
        Compare::Metrics | Compare::Cluster | Compare::ClusterTurns
    )
}

/// Rejects option combinations that cannot be measured.
fn check_args(args: &BenchArgs) -> CliResult<()> {
    if !args.connect.is_empty() && args.compare.is_some() {
        return Err("--compare measures against the embedded loopback server; \
                    it cannot be combined with --connect"
            .into());
    }
    if matches!(args.compare, Some(c) if closed_loop_compare(c)) && !args.rate.is_empty() {
        return Err("--compare metrics|cluster measures closed-loop rows; drop --rate".into());
    }
    if args.uses_cluster() && !args.rate.is_empty() {
        return Err("--rate (open loop) calls one server; drop --rate with several".into());
    }
    Ok(())
}

/// Measures and prints the closed-loop rows, the open-loop rows and the
/// floors, appending each to `rows`; `Ok(false)` when any call failed.
fn run_table(args: &BenchArgs, cpus: &CpuPlan, rows: &mut Vec<Row>) -> CliResult<bool> {
    report::header();
    let metrics = args.metrics.is_on();
    for in_flight in args.in_flights() {
        let measured = run_row(args, cpus, in_flight, metrics)?;
        show(&measured, rows);
    }
    for &rate in &args.rate {
        let measured = run_open_row(args, cpus, rate)?;
        show(&measured, rows);
    }
    let mut healthy = rows.iter().all(|r| r.errors == 0);
    if args.compare == Some(Compare::Floor) {
        healthy &= run_floor(args, cpus, rows)?;
        healthy &= crate::targets::run(args, cpus)?;
    }
    Ok(healthy)
}

/// Prints a measured row and its metrics block, and keeps the row.
fn show(measured: &Measured, rows: &mut Vec<Row>) {
    report::row(&measured.row);
    phases::print(&measured.client, measured.server.as_ref());
    crate::cluster_bench::print(&measured.client);
    rows.push(measured.row.clone());
}

/// Prints what is about to run.
fn describe(args: &BenchArgs, cpus: &CpuPlan) {
    let server = match args.connect.as_slice() {
        [] if args.servers > 1 => format!("{} embedded on cpu {}", args.servers, cpus.server),
        [] => format!("embedded on cpu {}", cpus.server),
        addrs => format!("{addrs:?} (remote)"),
    };
    println!(
        "ringrpc bench: server {server}, client cpus {:?}, {:.1} s per row after {:.1} s warmup, metrics {}, busy poll {}{}, {}",
        cpus.client,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        if args.metrics.is_on() { "on" } else { "off" },
        if args.busy_poll > 0 { format!("{} µs", args.busy_poll) } else { "off".into() },
        if args.data_digest.is_on() { "" } else { ", data digest off" },
        args.tls.describe(),
    );
}

/// Measures one closed-loop row at `in_flight` on fresh runtimes (client, and
/// the embedded server unless `--connect`) with the metrics switch set to `metrics`.
pub fn run_row(
    args: &BenchArgs,
    cpus: &CpuPlan,
    in_flight: usize,
    metrics: bool,
) -> CliResult<Measured> {
    run_row_with(args, cpus, in_flight, metrics, args.uses_cluster())
}

/// [`run_row`] through a cluster client (`cluster`) or a plain one.
pub fn run_row_with(
    args: &BenchArgs,
    cpus: &CpuPlan,
    in_flight: usize,
    metrics: bool,
    cluster: bool,
) -> CliResult<Measured> {
    with_runtimes(args, cpus, metrics, |target| {
        let spec = Spec {
            addrs: target.addrs.clone(),
            cluster: cluster.then(|| crate::cluster_bench::ClusterSpec::new(args)),
            pool_size: args.pool_size,
            in_flight,
            payload: args.payload,
            window: Window::after(args.warmup, args.duration),
            metrics,
            digest: args.data_digest.is_on(),
            tls: args.tls.client()?,
        };
        measure(target.runtime, spec)
    })
}

/// Measures one open-loop row at `rate` calls/s on fresh runtimes.
pub fn run_open_row(args: &BenchArgs, cpus: &CpuPlan, rate: f64) -> CliResult<Measured> {
    with_runtimes(args, cpus, args.metrics.is_on(), |target| {
        open::measure(args, &target, rate)
    })
}

/// Starts fresh runtimes (client, and the embedded server unless `--connect`),
/// measures one row with `measure`, and collects both runtimes' metrics.
fn with_runtimes(
    args: &BenchArgs,
    cpus: &CpuPlan,
    metrics: bool,
    measure: impl FnOnce(Target<'_>) -> CliResult<Row>,
) -> CliResult<Measured> {
    let (server, runtime, addrs) = start_runtimes(args, cpus, metrics)?;
    let addr = *addrs.first().ok_or("no server address")?;
    let row = measure(Target {
        runtime: &runtime,
        addr,
        addrs,
        metrics,
    });
    // Read after every caller finished and every client closed.
    let client = runtime.metrics();
    runtime.shutdown();
    let server = server.map(EmbeddedServer::stop);
    Ok(Measured {
        row: row?,
        client,
        server,
    })
}

/// Starts the embedded server (unless `--connect`) and a fresh client
/// runtime; returns them with the servers' addresses.
pub fn start_runtimes(
    args: &BenchArgs,
    cpus: &CpuPlan,
    metrics: bool,
) -> CliResult<(Option<EmbeddedServer>, Runtime, Vec<SocketAddr>)> {
    let server = match args.connect.is_empty() {
        false => None,
        true => Some(EmbeddedServer::start(cpus.server, metrics, args)?),
    };
    let addrs = match &server {
        Some(s) => s.addrs(),
        None => args.connect.clone(),
    };
    let runtime = Runtime::builder()
        .cpus(cpus.client.iter().copied())
        .name(SIDES.client())
        .busy_poll(args.busy())
        .send_zc(args.send_zc)
        .driver(args.driver)
        .build()?;
    say_once(runtime.driver());
    Ok((server, runtime, addrs))
}

/// Runs `make(core)` on every core of `runtime` and waits for all of them,
/// sampling the CPU time of the client and embedded server threads over
/// `window` meanwhile.
pub fn on_every_core<T, F, Fut>(
    runtime: &Runtime,
    window: &Window,
    make: F,
) -> CliResult<(Vec<T>, CpuShares)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let tasks = (0..runtime.cores())
        .map(|core| {
            let make = make.clone();
            runtime.spawn_on(core, move || make(core))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cpu = cpu::sample_window(window.start, window.end, SIDES);
    let outputs = tasks
        .into_iter()
        .map(|task| task.join())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((outputs, cpu))
}

/// Runs one configuration on every core of `runtime` and merges the results.
fn measure(runtime: &Runtime, spec: Spec) -> CliResult<Row> {
    let window = spec.window;
    let (tallies, cpu) = on_every_core(runtime, &window, {
        let spec = spec.clone();
        move |core| run_core(core, spec.clone())
    })?;
    let mut total = Tally::new();
    for tally in tallies {
        total.merge(tally);
    }
    if let Some(e) = &total.first_error {
        eprintln!("ringrpc bench: {} failed calls; first: {e}", total.errors);
    }
    let shape = Shape {
        in_flight: spec.in_flight,
        cores: runtime.cores(),
        pool: Some(spec.pool_size),
        payload: spec.payload,
    };
    let duration = spec.window.end - spec.window.start;
    let label = spec
        .cluster
        .as_ref()
        .map_or("ringrpc", crate::cluster_bench::ClusterSpec::label);
    Ok(Row::new(label, shape, &total, duration).with_cpu(cpu))
}

/// Connects a client on this core and waits for its first connection; on
/// failure, records why in `tally`.
pub async fn connect(
    builder: ringrpc::ClientBuilder,
    addr: SocketAddr,
    core: usize,
    tally: &mut Tally,
) -> Option<Client> {
    let client = builder.connect(addr).expect("connect on a ringrpc core");
    if client.wait_connected(CONNECT_WAIT).await {
        return Some(client);
    }
    tally.error(|| format!("core {core}: no connection to {addr} within {CONNECT_WAIT:?}"));
    client.close();
    None
}

/// One client core: connect, run the callers, merge their tallies.
async fn run_core(core: usize, spec: Spec) -> Tally {
    let builder = Client::builder()
        .insecure_plaintext()
        .pool_size(spec.pool_size)
        .metrics(spec.metrics)
        .data_digest(spec.digest);
    if let Some(cluster) = &spec.cluster {
        return crate::cluster_bench::run_core(core, &spec, cluster, builder).await;
    }
    let mut total = Tally::new();
    let builder = match crate::tls::client_builder(builder, spec.tls.as_ref()) {
        Ok(builder) => builder,
        Err(e) => {
            total.error(|| format!("core {core}: {e}"));
            return total;
        }
    };
    let Some(client) = connect(builder, spec.addrs[0], core, &mut total).await else {
        return total;
    };
    let callers: Vec<_> = (0..spec.in_flight)
        .map(|i| {
            let first_id = ((core as u64) << 56) | ((i as u64) << 32);
            io::spawn(caller(client.clone(), spec.window, first_id, spec.payload))
        })
        .collect();
    for caller in callers {
        match caller.await {
            Ok(tally) => total.merge(tally),
            Err(_) => total.error(|| format!("core {core}: a caller task panicked")),
        }
    }
    client.close();
    total
}

/// One closed-loop caller: call, check the echo, record, until the window ends.
pub async fn caller(client: Client, window: Window, first_id: u64, payload: usize) -> Tally {
    let mut tally = Tally::new();
    let record = |started, outcome| match outcome {
        Ok(()) => tally.ok(&window, started),
        Err(e) => tally.error(|| e),
    };
    echo::call_loop(&client, first_id, payload, window.end, record).await;
    tally
}

/// Runs the raw-socket floors with the same payload and CPUs, prints them and
/// the ratios, and appends them to `rows`.
fn run_floor(args: &BenchArgs, cpus: &CpuPlan, rows: &mut Vec<Row>) -> CliResult<bool> {
    let spec = FloorSpec {
        server_cpu: cpus.server,
        client_cpu: cpus.client.first().copied().unwrap_or(cpus.server),
        payload: args.payload,
        window: args
            .in_flights()
            .into_iter()
            .max()
            .unwrap_or(DEFAULT_IN_FLIGHT[1]),
        warmup: args.warmup,
        duration: args.duration,
    };
    let [blocking, pipelined] = floor::run(&spec, [Mode::Blocking, Mode::Pipelined])?;
    report::row(&blocking);
    report::row(&pipelined);
    report::ratios(rows, &blocking, &pipelined);
    let healthy = blocking.errors == 0 && pipelined.errors == 0;
    rows.push(blocking);
    rows.push(pipelined);
    Ok(healthy)
}
