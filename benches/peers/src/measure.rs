//! Run parameters, the warmup/measure window (the floors' [`ringrpc_floor::Window`]) and
//! per-worker latency tallies.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Highest recordable latency in nanoseconds (60 s).
const HIGHEST_NS: u64 = 60_000_000_000;

/// One cell of the matrix plus where and how long to run it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Calls kept in flight (closed loop).
    pub in_flight: usize,
    /// Payload bytes per request (echoed back).
    pub payload: usize,
    /// CPU of the server thread.
    pub server_cpu: usize,
    /// CPU of the client thread.
    pub client_cpu: usize,
}

pub use ringrpc_floor::Window;

/// Latencies (ns) of calls started inside the window, plus failures.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency histogram in nanoseconds.
    pub hist: Histogram<u64>,
    /// Failed calls (at any time).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// An empty tally (1 ns ..= 60 s, 3 significant figures).
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds"),
            errors: 0,
            first_error: None,
        }
    }

    /// Records a successful call started at `started` (if inside `window`).
    #[inline]
    pub fn ok(&mut self, window: &Window, started: Instant) {
        if window.counts(started) {
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.hist.saturating_record(ns.max(1));
        }
    }

    /// Records a successful call if `got == want`, a failure otherwise.
    #[inline]
    pub fn check(&mut self, window: &Window, started: Instant, got: u64, want: u64) {
        if got == want {
            self.ok(window, started);
        } else {
            self.error(|| format!("echo id {got:#x}, expected {want:#x}"));
        }
    }

    /// Records a failed call.
    pub fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Successful calls recorded.
    pub fn calls(&self) -> u64 {
        self.hist.len()
    }

    /// Latency at `q` (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// Runs `f` on a new thread pinned to `cpu` (best effort: pinning failures are ignored).
pub fn spawn_pinned<T: Send + 'static>(
    cpu: usize,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            f()
        })
        .expect("spawn a benchmark thread")
}

/// A current-thread tokio runtime (what a thread-per-core tokio deployment uses).
pub fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// One [`Tally`] shared by all caller tasks of a client thread.
///
/// Each caller recording into a histogram of its own would spread 128
/// histograms (~0.4 MB each at 3 significant figures) over the cache and cost a
/// cache miss per call, a harness artefact the single-threaded floors do not
/// pay. All callers of a thread record here instead; the lock is uncontended
/// (the callers share one thread).
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Tally>>);

impl Recorder {
    /// An empty shared tally.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Tally) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// See [`Tally::ok`].
    #[inline]
    pub fn ok(&self, window: &Window, started: Instant) {
        self.with(|t| t.ok(window, started));
    }

    /// See [`Tally::check`].
    #[inline]
    pub fn check(&self, window: &Window, started: Instant, got: u64, want: u64) {
        self.with(|t| t.check(window, started, got, want));
    }

    /// See [`Tally::error`].
    pub fn error(&self, what: impl FnOnce() -> String) {
        self.with(|t| t.error(what));
    }

    /// The tally recorded so far.
    pub fn take(&self) -> Tally {
        self.with(std::mem::take)
    }
}

/// Starts `in_flight` caller tasks with `spawn(recorder, first_id)` (ids spaced
/// 2^40 apart), waits for all of them and returns what they recorded; a caller
/// task that panicked counts as one error.
pub async fn run_callers<H, T, E>(
    in_flight: usize,
    peer: &str,
    mut spawn: impl FnMut(Recorder, u64) -> H,
) -> Tally
where
    H: std::future::Future<Output = Result<T, E>>,
{
    let rec = Recorder::new();
    let callers: Vec<H> = (0..in_flight)
        .map(|i| spawn(rec.clone(), (i as u64) << 40))
        .collect();
    for caller in callers {
        if caller.await.is_err() {
            rec.error(|| format!("a {peer} caller task panicked"));
        }
    }
    rec.take()
}
