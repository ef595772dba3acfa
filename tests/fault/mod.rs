//! Shared pieces of the fault-injection suite (`tests/fault_*.rs`, `tests/netns_link.rs`).
//!
//! - [`proxy::Proxy`]: the fault-injecting TCP proxy;
//! - the workload: [`Load`] runs caller tasks on a client core, each looping
//!   calls planned by a [`PlanFn`] (sync/async echo, delays, blocking, panics,
//!   payload sizes, per-call deadlines) and recording every call ([`Record`]);
//! - the invariant checker every test ends with: [`Report::check`] (each call
//!   ended with Ok or an allowed typed error no later than its deadline plus one
//!   heartbeat interval; every reply echoed its own caller id, sequence number and
//!   body) and [`Rig::finish`] (nothing in flight, server connections back to 0
//!   after the client closes, file descriptors and threads back to the baseline);
//! - machine-lag accounting: [`lag_monitor`] records, on every client and server
//!   core, the time its thread waited for a CPU (schedstat run delay); timing
//!   bounds add the lag that overlapped the interval ([`Report::lag_during`]), so
//!   an overloaded CI machine does not fail them, while a late call on cores that
//!   were running still does;
//! - [`FaultServer`]: a server on its own runtime with the workload's methods,
//!   that can be aborted, drained and restarted on the same address;
//! - [`cases`]: the cases run both in plaintext and under TLS.
//!
//! Test binaries include it with `mod common; mod fault;` (it uses
//! `common::TestClient` and `common::wait_until`).
#![allow(dead_code)]

pub mod cases;
pub mod proxy;
mod report;
mod rig;

// Not every test binary uses each of them.
#[allow(unused_imports)]
pub use report::Report;
#[allow(unused_imports)]
pub use rig::{FaultServer, Rig};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringrpc::runtime::io::{sleep, spawn};
use ringrpc::runtime::CoreTask;
use ringrpc::{
    Client, ClientBuilder, Error, Method, Request, Runtime, ServerBuilder, ServerHandle,
    ServerStats,
};

use crate::common::{wait_until, TestClient};
use proxy::Proxy;

/// Client heartbeat interval used by the suite.
pub const HB_INTERVAL: Duration = Duration::from_millis(100);
/// Client heartbeat timeout used by the suite: short enough for fault tests to
/// stay fast, long enough that a loaded machine starving a thread for a few
/// hundred ms does not make a healthy connection look dead.
pub const HB_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest time the client's heartbeat, as implemented, takes to close a silent
/// connection with the suite's settings: it sleeps a fixed interval and then
/// checks, so silence starting just after a check is noticed one interval late
/// (2 x interval + timeout), and silence starting while a ping round is under
/// way only after that round and a new one (interval + 2 x timeout). The
/// documented promise, interval + timeout, is checked by
/// `fault_network::blackhole_is_detected_by_heartbeat_within_interval_plus_timeout`.
pub fn heartbeat_worst_case() -> Duration {
    (HB_INTERVAL * 2 + HB_TIMEOUT).max(HB_INTERVAL + HB_TIMEOUT * 2)
}

/// Default per-call deadline of the workload.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// Scheduling allowance added to timing bounds: a loaded 2-CPU CI machine can
/// leave a thread unscheduled for tens of milliseconds.
pub const SLACK: Duration = Duration::from_millis(100);

/// A workload request; the server echoes it with `core` set to the core that ran it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub caller: u32,
    pub seq: u64,
    /// Async method: sleep this long before answering.
    pub delay_ms: u32,
    /// Sync method: block the core this long (only on `block_core`, if set).
    pub block_ms: u32,
    /// `u32::MAX`: any core.
    pub block_core: u32,
    /// Panic instead of answering.
    pub panic: bool,
    pub body: Vec<u8>,
    /// Reply only: the server core that ran the handler.
    pub core: u32,
}

/// Sync echo (runs inline on the connection's core).
pub const ECHO: Method<Call, Call> = Method::new("Fault.echo");
/// Async echo (its own task; may sleep first).
pub const ECHO_ASYNC: Method<Call, Call> = Method::new("Fault.echo_async");

/// Text of the panics the workload asks for (kept out of the test output).
pub const PANIC_TEXT: &str = "intentional fault-suite panic";

fn this_core() -> u32 {
    ringrpc::runtime::current_core().map_or(u32::MAX, |c| c as u32)
}

fn echo_sync(req: &ArchivedCall) -> Result<Call, String> {
    let core = this_core();
    if req.panic {
        panic!("{}", PANIC_TEXT);
    }
    let block = req.block_ms.to_native();
    let block_core = req.block_core.to_native();
    if block > 0 && (block_core == u32::MAX || block_core == core) {
        std::thread::sleep(Duration::from_millis(u64::from(block)));
    }
    Ok(echoed(req, core))
}

fn echoed(req: &ArchivedCall, core: u32) -> Call {
    Call {
        caller: req.caller.to_native(),
        seq: req.seq.to_native(),
        delay_ms: req.delay_ms.to_native(),
        block_ms: req.block_ms.to_native(),
        block_core: req.block_core.to_native(),
        panic: req.panic,
        body: req.body.as_slice().to_vec(),
        core,
    }
}

/// A server builder with the workload's methods.
pub fn server_builder() -> ServerBuilder {
    quiet_intentional_panics();
    ringrpc::Server::builder()
        .insecure_plaintext()
        .register(ECHO, echo_sync)
        .expect("register echo")
        .register_async(ECHO_ASYNC, |req: Request<Call>| async move {
            let delay = req.delay_ms.to_native();
            if delay > 0 {
                sleep(Duration::from_millis(u64::from(delay))).await;
            }
            if req.panic {
                panic!("{}", PANIC_TEXT);
            }
            Ok::<_, String>(echoed(&req, this_core()))
        })
        .expect("register echo_async")
}

/// Keeps the workload's intentional panics out of the output; others still print.
pub fn quiet_intentional_panics() {
    crate::common::quiet_panics_with(PANIC_TEXT);
}

/// Client settings of the suite: short heartbeat, connect timeout and backoff.
pub fn client_builder() -> ClientBuilder {
    Client::builder()
        .insecure_plaintext()
        .pool_size(1)
        .deadline(DEADLINE)
        .connect_timeout(Duration::from_millis(200))
        .heartbeat_interval(HB_INTERVAL)
        .heartbeat_timeout(HB_TIMEOUT)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
}

/// Deterministic body bytes of call (`caller`, `seq`).
pub fn body_for(caller: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut x = (u64::from(caller) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A cheap deterministic 64-bit mixer (splitmix64 finaliser).
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which method a planned call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync,
    Async,
}

/// One planned call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub deadline: Duration,
    pub delay_ms: u32,
    pub block_ms: u32,
    pub block_core: u32,
    pub panic: bool,
    pub body_len: usize,
    /// Pause after the call (the caller's think time).
    pub pause: Duration,
}

impl Plan {
    /// A sync echo of `body_len` bytes with the default deadline.
    pub fn echo(body_len: usize) -> Self {
        Self {
            kind: Kind::Sync,
            deadline: DEADLINE,
            delay_ms: 0,
            block_ms: 0,
            block_core: u32::MAX,
            panic: false,
            body_len,
            pause: Duration::ZERO,
        }
    }

    /// An async echo answered after `delay_ms`.
    pub fn delayed(delay_ms: u32, body_len: usize) -> Self {
        Self {
            kind: Kind::Async,
            delay_ms,
            ..Self::echo(body_len)
        }
    }

    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    pub fn pause(mut self, d: Duration) -> Self {
        self.pause = d;
        self
    }
}

/// Plans call `seq` of caller `caller`.
pub type PlanFn = Arc<dyn Fn(u32, u64) -> Plan + Send + Sync>;

/// Server time of caller 0's calls in [`mixed`].
pub const LONG_CALL_MS: u32 = 300;

/// The default mixed workload: mostly small sync echoes, some async echoes with
/// a few ms of server time, some 8–24 KiB bodies; caller 0 makes 300 ms async
/// calls (see [`Load::in_flight_now`]: a fault can be injected while one is
/// surely in flight).
pub fn mixed() -> PlanFn {
    Arc::new(|caller, seq| {
        if caller == 0 {
            return Plan::delayed(LONG_CALL_MS, 64);
        }
        let r = mix((u64::from(caller) << 32) ^ seq);
        let small = 16 + (r % 200) as usize;
        match r % 10 {
            0..=5 => Plan::echo(small),
            6 | 7 => Plan::delayed((r >> 8) as u32 % 3, small),
            8 => Plan::echo((8 << 10) + (r >> 16) as usize % (16 << 10)),
            _ => Plan::delayed(1, 4 << 10).deadline(Duration::from_millis(600)),
        }
    })
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Timeout,
    ConnectionLost,
    Unavailable,
    Overloaded,
    Remote(String),
    /// Any other error (not expected by any test).
    Other(String),
    /// A reply that did not echo this call's own request.
    Misdelivered(String),
}

impl Outcome {
    fn from_error(e: &Error) -> Self {
        match e {
            Error::Timeout => Outcome::Timeout,
            // A loss that caught the request before it was written: still the
            // connection's loss for these tests (it just provably did not run).
            Error::ConnectionLost | Error::NotSent => Outcome::ConnectionLost,
            Error::Unavailable => Outcome::Unavailable,
            Error::Overloaded => Outcome::Overloaded,
            Error::Remote { code, .. } => Outcome::Remote(format!("{code:?}")),
            other => Outcome::Other(format!("{other:?}")),
        }
    }

    /// A short name for counting (`Remote(Panicked)` keeps its code).
    pub fn name(&self) -> String {
        match self {
            Outcome::Remote(code) => format!("Remote({code})"),
            Outcome::Other(_) => "Other".into(),
            Outcome::Misdelivered(_) => "Misdelivered".into(),
            o => format!("{o:?}"),
        }
    }
}

/// One finished call.
#[derive(Debug, Clone)]
pub struct Record {
    pub caller: u32,
    pub seq: u64,
    pub plan: Plan,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
    /// Server core that answered (Ok only).
    pub core: Option<u32>,
}

impl Record {
    pub fn elapsed(&self) -> Duration {
        self.end - self.start
    }

    /// Whether the call was in flight at `t`.
    pub fn spans(&self, t: Instant) -> bool {
        self.start <= t && self.end >= t
    }
}

/// Checks a reply echoes `req` exactly.
fn check_echo(req: &Call, reply: &ArchivedCall) -> Result<u32, String> {
    let (caller, seq) = (reply.caller.to_native(), reply.seq.to_native());
    if caller != req.caller || seq != req.seq {
        return Err(format!(
            "caller {} seq {} got the reply of caller {caller} seq {seq}",
            req.caller, req.seq
        ));
    }
    if reply.body.as_slice() != req.body.as_slice() {
        return Err(format!(
            "caller {} seq {}: body differs ({} bytes, sent {})",
            req.caller,
            req.seq,
            reply.body.len(),
            req.body.len()
        ));
    }
    Ok(reply.core.to_native())
}

/// One call of the workload, timed.
pub async fn timed_call(client: &Client, caller: u32, seq: u64, plan: Plan) -> Record {
    let req = Call {
        caller,
        seq,
        delay_ms: plan.delay_ms,
        block_ms: plan.block_ms,
        block_core: plan.block_core,
        panic: plan.panic,
        body: body_for(caller, seq, plan.body_len),
        core: 0,
    };
    let method = match plan.kind {
        Kind::Sync => &ECHO,
        Kind::Async => &ECHO_ASYNC,
    };
    let start = Instant::now();
    let result = client.call_with_deadline(method, &req, plan.deadline).await;
    let end = Instant::now();
    let (outcome, core) = match &result {
        Ok(reply) => match check_echo(&req, reply) {
            Ok(core) => (Outcome::Ok, Some(core)),
            Err(e) => (Outcome::Misdelivered(e), None),
        },
        Err(e) => (Outcome::from_error(e), None),
    };
    Record {
        caller,
        seq,
        plan,
        start,
        end,
        outcome,
        core,
    }
}

/// Counters a running [`Load`] shares with the test thread.
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    stop: AtomicBool,
    /// Caller tasks still running.
    active: AtomicU64,
    epoch: Instant,
    /// Per caller: when its current call started (µs since `epoch`, + 1), 0 if idle.
    busy: Vec<AtomicU64>,
}

impl Progress {
    fn new(callers: u32) -> Self {
        Self {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            active: AtomicU64::new(u64::from(callers)),
            epoch: Instant::now(),
            busy: (0..callers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set_busy(&self, caller: u32, since: Option<Instant>) {
        let v = since.map_or(0, |t| (t - self.epoch).as_micros() as u64 + 1);
        self.busy[caller as usize].store(v, Ordering::SeqCst);
    }

    /// How long `caller`'s current call has been running (None: between calls).
    fn busy_for(&self, caller: u32) -> Option<Duration> {
        match self.busy[caller as usize].load(Ordering::SeqCst) {
            0 => None,
            v => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(v - 1)),
            ),
        }
    }
}

/// A running workload: `callers` tasks on the client core, looping until stopped.
pub struct Load {
    progress: Arc<Progress>,
    task: CoreTask<Vec<Record>>,
    started: Instant,
}

impl Load {
    /// Starts the workload and waits (bounded) for 20 successful calls.
    pub fn start(client: &TestClient, callers: u32, plan: PlanFn) -> Self {
        let progress = Arc::new(Progress::new(callers));
        let p = progress.clone();
        let task = client.spawn(move |client| run_callers(client, callers, plan, p));
        let load = Self {
            progress,
            task,
            started: Instant::now(),
        };
        load.wait_ok(20, Duration::from_secs(3));
        load
    }

    pub fn ok(&self) -> u64 {
        self.progress.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.progress.failed.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` more calls have succeeded.
    pub fn wait_ok(&self, n: u64, timeout: Duration) {
        let target = self.ok() + n;
        wait_until(timeout, &format!("{n} more successful calls"), || {
            self.ok() >= target
        });
    }

    /// Waits (bounded) until `caller`'s current call has run for `min..max`; a
    /// fault injected right then finds it in flight (for a call the server
    /// holds longer than `max`).
    pub fn wait_in_flight(&self, caller: u32, min: Duration, max: Duration) {
        wait_until(
            Duration::from_secs(3),
            &format!("caller {caller} mid-call"),
            || {
                self.progress
                    .busy_for(caller)
                    .is_some_and(|d| d >= min && d < max)
            },
        );
    }

    /// How long `caller`'s current call has been running (None: between calls).
    pub fn busy_for(&self, caller: u32) -> Option<Duration> {
        self.progress.busy_for(caller)
    }

    /// Waits (bounded) until caller 0 of [`mixed`] is early in one of its 300 ms
    /// calls: a fault injected now surely catches that call in flight.
    pub fn in_flight_now(&self) {
        self.wait_in_flight(0, Duration::from_millis(5), Duration::from_millis(100));
    }

    /// Waits (bounded) until `n` more calls have failed than `before` (a count
    /// taken with [`failed`](Self::failed) before the fault).
    pub fn wait_failed_since(&self, before: u64, n: u64, timeout: Duration) {
        let target = before + n;
        wait_until(timeout, &format!("{n} more failed calls"), || {
            self.failed() >= target
        });
    }

    /// Waits (bounded) until `n` more calls have failed.
    pub fn wait_failed(&self, n: u64, timeout: Duration) {
        let target = self.failed() + n;
        wait_until(timeout, &format!("{n} more failed calls"), || {
            self.failed() >= target
        });
    }

    /// Stops the callers (each finishes its current call) and collects the records.
    ///
    /// Bounded: a call still running 5 s later (longer than any deadline the
    /// suite uses) never ended, which fails the test.
    pub fn stop(self) -> Report {
        self.progress.stop.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while self.progress.active.load(Ordering::SeqCst) > 0 {
            if start.elapsed() > Duration::from_secs(5) {
                let hung: Vec<_> = (0..self.progress.busy.len() as u32)
                    .filter_map(|c| self.progress.busy_for(c).map(|d| (c, d)))
                    .collect();
                panic!("calls never ended (caller, running for): {hung:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let records = self.task.join().expect("workload task (see panic above)");
        Report {
            records,
            lags: lags_since(self.started),
            started: self.started,
        }
    }
}

/// A stretch of time a core thread waited for a CPU (see [`lag_monitor`]).
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    /// When the monitor finally ran.
    pub woke: Instant,
    /// How late it was.
    pub late: Duration,
}

/// Lags recorded by every monitored core (client and server cores) of this
/// process; the tests of a binary run one at a time ([`serial`]).
static LAGS: Mutex<Vec<Lag>> = Mutex::new(Vec::new());

/// Time the calling thread has spent runnable but not running (waiting for a
/// CPU), from `/proc/thread-self/schedstat`; None if the kernel lacks it.
fn run_delay() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Monitors the current core's scheduling until `stop`: every 2 ms, records in
/// [`LAGS`] how long the core thread waited for a CPU (runnable, not running)
/// if that exceeded 3 ms. This is the machine holding the core back, never
/// ringrpc or a handler (a thread blocked in a handler is not runnable), and the
/// timing bounds allow for it. Without schedstat, late wake-ups are used.
pub async fn lag_monitor(stop: Arc<AtomicBool>) {
    let period = Duration::from_millis(2);
    while !stop.load(Ordering::SeqCst) {
        let (before, delay) = (Instant::now(), run_delay());
        sleep(period).await;
        let woke = Instant::now();
        let late = match (delay, run_delay()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => (woke - before).saturating_sub(period),
        };
        if late > Duration::from_millis(3) {
            LAGS.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Lag { woke, late });
        }
    }
}

/// The lags recorded from `since` on.
fn lags_since(since: Instant) -> Vec<Lag> {
    let lags = LAGS.lock().unwrap_or_else(|e| e.into_inner());
    lags.iter().filter(|l| l.woke >= since).copied().collect()
}

/// The caller tasks (plus a lag monitor); returns every call's record.
pub async fn run_callers(
    client: Client,
    callers: u32,
    plan: PlanFn,
    progress: Arc<Progress>,
) -> Vec<Record> {
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let monitor = spawn(lag_monitor(stop_monitor.clone()));
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (client, plan, progress) = (client.clone(), plan.clone(), progress.clone());
            spawn(async move {
                let mut records = Vec::new();
                let mut seq = 0u64;
                while !progress.stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let plan = plan(caller, seq);
                    progress.set_busy(caller, Some(Instant::now()));
                    let record = timed_call(&client, caller, seq, plan).await;
                    progress.set_busy(caller, None);
                    let ok = record.outcome == Outcome::Ok;
                    if ok {
                        progress.ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        progress.failed.fetch_add(1, Ordering::SeqCst);
                    }
                    records.push(record);
                    if !plan.pause.is_zero() {
                        sleep(plan.pause).await;
                    } else if !ok {
                        // Don't spin on fail-fast errors (Unavailable) while the pool reconnects.
                        sleep(Duration::from_millis(2)).await;
                    }
                }
                progress.active.fetch_sub(1, Ordering::SeqCst);
                records
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("caller task"));
    }
    stop_monitor.store(true, Ordering::SeqCst);
    monitor.await.expect("lag monitor");
    all
}

/// What a test allows.
pub struct Expect<'a> {
    /// Outcome names allowed besides `Ok` (see [`Outcome::name`]).
    pub errors: &'a [&'a str],
    /// Allowance past a call's deadline (one heartbeat interval).
    pub past_deadline: Duration,
}

impl<'a> Expect<'a> {
    pub fn errors(errors: &'a [&'a str]) -> Self {
        Self {
            errors,
            past_deadline: HB_INTERVAL,
        }
    }
}

/// Serialises the tests of one binary (they compare process-wide FD and thread counts).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Threads of this process started by the suite (proxies, runtimes), by name.
pub fn suite_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(task) = task else { continue };
        if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
            let comm = comm.trim();
            if ["fproxy", "fault-srv", "test-client", "test-server"]
                .iter()
                .any(|p| comm.starts_with(p))
            {
                names.push(comm.to_owned());
            }
        }
    }
    names
}

/// The process's FD count before a test; see [`Baseline::wait_restored`].
pub struct Baseline {
    fds: usize,
}

impl Baseline {
    pub fn take() -> Self {
        LAGS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let threads = suite_threads();
        assert!(
            threads.is_empty(),
            "suite threads left over from an earlier test: {threads:?}"
        );
        Self { fds: fd_count() }
    }

    /// Waits (bounded) until the FD count is back to the baseline and no suite
    /// thread is left.
    pub fn wait_restored(&self) {
        let start = Instant::now();
        loop {
            let (fds, threads) = (fd_count(), suite_threads());
            if fds <= self.fds && threads.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "after the test: {fds} open fds (baseline {}), suite threads {threads:?}; \
                 fds: {:?}",
                self.fds,
                list_fds()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn list_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}
