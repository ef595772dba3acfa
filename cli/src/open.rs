//! `ringrpc bench --rate`: the open-loop load generator.
//!
//! Each client core sends `rate / cores` calls per second on a fixed schedule
//! (call `k` is due at `start + k / rate`), whatever the replies do: a driver
//! task waits for the next due time and spawns that call as its own task, or,
//! when it has fallen behind, spawns every overdue call at once (yielding to
//! the core every [`YIELD_EVERY`] calls). Timers fire up to the kernel's timer
//! slack (50 µs by default) late, so the driver sleeps until `--send-spin`
//! (75 µs) before the due time and yields to the core (which keeps serving
//! replies) for the rest: the driver's own lateness (the send lag, reported)
//! stays a few µs, at the price of keeping the client cores busy. A call due while
//! `--max-outstanding` calls are outstanding on the core is not sent and
//! counts as dropped.
//!
//! Latency counts from the call's *intended* send time, so a stall delays
//! every call that should have been sent during it, not only the one in
//! flight (the correction for coordinated omission that a closed loop lacks).
//! The service time, from the actual send to the reply, is kept in a second
//! histogram. Calls whose intended time is inside the window are recorded.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringrpc::runtime::io;
use ringrpc::Client;
use ringrpc_workload::echo::{self, Echo, ECHO};

use crate::bench::{self, BenchArgs, Target};
use crate::measure::{self, Tally, Window};
use crate::report::{OpenStats, Percentiles, Row, Shape};
use crate::CliResult;

/// Overdue calls the driver spawns back to back before yielding to the core.
const YIELD_EVERY: u32 = 32;
/// How long a core waits for outstanding calls after the window (the client's
/// default call deadline is 5 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(6);
/// Fewest calls in flight a client connection accepts (the client default).
const MIN_PER_CONNECTION: usize = 1024;

/// The fixed send schedule of one client core.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    per_sec: f64,
}

impl Schedule {
    /// Calls at `per_sec` per second, the first one at `start`.
    pub fn new(start: Instant, per_sec: f64) -> Self {
        Self { start, per_sec }
    }

    /// When call `k` (from 0) is due.
    pub fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.per_sec)
    }
}

/// When one open-loop call was due, actually sent, and answered.
#[derive(Debug, Clone, Copy)]
pub struct CallTimes {
    /// Its slot in the schedule.
    pub intended: Instant,
    /// When its task issued the call.
    pub sent: Instant,
    /// When the reply arrived.
    pub done: Instant,
}

impl CallTimes {
    /// Latency from the intended send time (coordinated-omission corrected).
    pub fn corrected(&self) -> Duration {
        self.done.saturating_duration_since(self.intended)
    }

    /// Service time: from the actual send to the reply.
    pub fn service(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }

    /// Send lag: how late the generator sent the call.
    pub fn lag(&self) -> Duration {
        self.sent.saturating_duration_since(self.intended)
    }
}

/// What one core's open loop measured.
#[derive(Debug)]
pub struct OpenTally {
    /// Corrected latencies of successful calls due in the window, and every error.
    pub corrected: Tally,
    /// Service times of the same calls, µs.
    pub service: Histogram<u64>,
    /// Send lags (intended → actual send) of the same calls, µs.
    pub lag: Histogram<u64>,
    /// Calls due in the window but not sent (too many outstanding).
    pub dropped: u64,
    /// Most calls outstanding at once.
    pub peak: usize,
}

impl OpenTally {
    /// An empty tally.
    pub fn new() -> Self {
        Self {
            corrected: Tally::new(),
            service: measure::histogram(),
            lag: measure::histogram(),
            dropped: 0,
            peak: 0,
        }
    }

    /// Records a successful call, if it was due inside `window`.
    pub fn ok(&mut self, window: &Window, times: CallTimes) {
        if window.counts(times.intended) {
            measure::record(&mut self.corrected.hist, times.corrected());
            measure::record(&mut self.service, times.service());
            measure::record(&mut self.lag, times.lag());
        }
    }

    /// Records a call due at `intended` that was not sent.
    pub fn drop_call(&mut self, window: &Window, intended: Instant) {
        if window.counts(intended) {
            self.dropped += 1;
        }
    }

    /// Adds `other` into `self` (peaks are per core: the larger one is kept).
    pub fn merge(&mut self, other: OpenTally) {
        self.corrected.merge(other.corrected);
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
        self.dropped += other.dropped;
        self.peak = self.peak.max(other.peak);
    }
}

/// What an open-loop measurement needs on each client core (`Send + Copy`).
#[derive(Debug, Clone)]
struct OpenSpec {
    addr: SocketAddr,
    pool_size: usize,
    per_core_rate: f64,
    max_outstanding: usize,
    spin: Duration,
    payload: usize,
    window: Window,
    metrics: bool,
    digest: bool,
    tls: Option<crate::tls::ClientTls>,
}

/// Measures one open-loop row at `rate` calls/s over all cores of `target`.
pub fn measure(args: &BenchArgs, target: &Target<'_>, rate: f64) -> CliResult<Row> {
    let cores = target.runtime.cores();
    let spec = OpenSpec {
        addr: target.addr,
        pool_size: args.pool_size,
        per_core_rate: rate / cores as f64,
        max_outstanding: args.max_outstanding,
        spin: Duration::from_micros(args.send_spin),
        payload: args.payload,
        window: Window::after(args.warmup, args.duration),
        metrics: target.metrics,
        digest: args.data_digest.is_on(),
        tls: args.tls.client()?,
    };
    let for_cores = spec.clone();
    let (tallies, cpu) = bench::on_every_core(target.runtime, &spec.window, move |core| {
        run_core(core, for_cores.clone())
    })?;
    let mut total = OpenTally::new();
    for tally in tallies {
        total.merge(tally);
    }
    if let Some(e) = &total.corrected.first_error {
        let errors = total.corrected.errors;
        eprintln!("ringrpc bench: {errors} failed calls at {rate} calls/s; first: {e}");
    }
    let shape = Shape {
        in_flight: 0,
        cores,
        pool: Some(args.pool_size),
        payload: args.payload,
    };
    let mut row = Row::new("ringrpc/open", shape, &total.corrected, args.duration).with_cpu(cpu);
    row.open = Some(OpenStats {
        target_rate: rate,
        dropped: total.dropped,
        peak_outstanding: total.peak,
        max_outstanding: args.max_outstanding,
        service: Percentiles::of(&total.service),
        send_lag: Percentiles::of(&total.lag),
    });
    Ok(row)
}

/// The state one core's call tasks share.
struct CoreState {
    client: Client,
    window: Window,
    payload: usize,
    tally: RefCell<OpenTally>,
    outstanding: Cell<usize>,
    /// Requests of finished calls, reused by the next ones.
    spare: RefCell<Vec<Echo>>,
}

/// One client core: connect, send on schedule until the window ends, wait for
/// the outstanding calls.
async fn run_core(core: usize, spec: OpenSpec) -> OpenTally {
    // Let the pool hold every outstanding call, so --max-outstanding is the only cap.
    let per_connection = spec
        .max_outstanding
        .div_ceil(spec.pool_size)
        .max(MIN_PER_CONNECTION);
    let builder = Client::builder()
        .insecure_plaintext()
        .pool_size(spec.pool_size)
        .max_in_flight(per_connection)
        .metrics(spec.metrics)
        .data_digest(spec.digest);
    let mut tally = OpenTally::new();
    let builder = match crate::tls::client_builder(builder, spec.tls.as_ref()) {
        Ok(builder) => builder,
        Err(e) => {
            tally.corrected.error(|| format!("core {core}: {e}"));
            return tally;
        }
    };
    let Some(client) = bench::connect(builder, spec.addr, core, &mut tally.corrected).await else {
        return tally;
    };
    let state = Rc::new(CoreState {
        client: client.clone(),
        window: spec.window,
        payload: spec.payload,
        tally: RefCell::new(tally),
        outstanding: Cell::new(0),
        spare: RefCell::new(Vec::new()),
    });
    drive(&state, &spec, (core as u64) << 56).await;
    drain(&state).await;
    client.close();
    state.tally.replace(OpenTally::new())
}

/// Spawns every call of the schedule due before the window ends.
async fn drive(state: &Rc<CoreState>, spec: &OpenSpec, first_id: u64) {
    let schedule = Schedule::new(Instant::now(), spec.per_core_rate);
    let mut back_to_back = 0;
    for k in 0u64.. {
        let intended = schedule.at(k);
        if intended >= spec.window.end {
            return;
        }
        if intended > Instant::now() {
            wait_until(intended, spec.spin).await;
            back_to_back = 0;
        } else if back_to_back >= YIELD_EVERY {
            yield_now().await;
            back_to_back = 0;
        }
        back_to_back += 1;
        issue(
            state,
            first_id.wrapping_add(k),
            intended,
            spec.max_outstanding,
        );
    }
}

/// Spawns the call due at `intended`, or drops it if `max` are outstanding.
fn issue(state: &Rc<CoreState>, id: u64, intended: Instant, max: usize) {
    let outstanding = state.outstanding.get();
    let mut tally = state.tally.borrow_mut();
    if outstanding >= max {
        tally.drop_call(&state.window, intended);
        return;
    }
    state.outstanding.set(outstanding + 1);
    tally.peak = tally.peak.max(outstanding + 1);
    io::spawn(call(state.clone(), id, intended)).detach();
}

/// One call: send, check the echo, record both latencies.
async fn call(state: Rc<CoreState>, id: u64, intended: Instant) {
    let spare = state.spare.borrow_mut().pop();
    let mut req = spare.unwrap_or_else(|| Echo {
        id,
        payload: vec![0xA5; state.payload],
    });
    req.id = id;
    let sent = Instant::now();
    let outcome = match state.client.call(&ECHO, &req).await {
        Ok(reply) => echo::matches(&reply, &req),
        Err(e) => Err(e.to_string()),
    };
    let times = CallTimes {
        intended,
        sent,
        done: Instant::now(),
    };
    match outcome {
        Ok(()) => state.tally.borrow_mut().ok(&state.window, times),
        Err(e) => state.tally.borrow_mut().corrected.error(|| e),
    }
    state.spare.borrow_mut().push(req);
    state.outstanding.set(state.outstanding.get() - 1);
}

/// Waits (at most [`DRAIN_LIMIT`]) for the outstanding calls; counts any left as errors.
async fn drain(state: &CoreState) {
    let give_up = Instant::now() + DRAIN_LIMIT;
    while state.outstanding.get() > 0 && Instant::now() < give_up {
        io::sleep(Duration::from_millis(1)).await;
    }
    let left = state.outstanding.get();
    if left > 0 {
        let mut tally = state.tally.borrow_mut();
        for _ in 0..left {
            tally.corrected.error(|| {
                format!("{left} calls still outstanding {DRAIN_LIMIT:?} after the window")
            });
        }
    }
}

/// Sleeps until `spin` before `due`, then yields to the core until `due`.
async fn wait_until(due: Instant, spin: Duration) {
    if let Some(early) = due.checked_sub(spin) {
        if early > Instant::now() {
            io::sleep_until(early).await;
        }
    }
    while Instant::now() < due {
        yield_now().await;
    }
}

/// Returns to the core's executor once, so spawned calls get to run.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn the_schedule_spaces_calls_evenly() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        assert_eq!(
            (s.at(0), s.at(1), s.at(1000)),
            (t0, t0 + MS, t0 + 1000 * MS)
        );
        assert_eq!(Schedule::new(t0, 3.0).at(3), t0 + Duration::from_secs(1));
    }

    #[test]
    fn latency_counts_from_the_intended_time_service_from_the_send() {
        let t0 = Instant::now();
        let times = CallTimes {
            intended: t0,
            sent: t0 + 3 * MS,
            done: t0 + 4 * MS,
        };
        assert_eq!(
            (times.corrected(), times.service(), times.lag()),
            (4 * MS, MS, 3 * MS)
        );
        let window = Window {
            start: t0 + MS,
            end: t0 + 10 * MS,
        };
        let mut tally = OpenTally::new();
        tally.ok(&window, times); // due before the window: not recorded
        tally.drop_call(&window, t0 + 2 * MS);
        assert_eq!((tally.corrected.hist.len(), tally.dropped), (0, 1));
    }

    /// Fake clock: a sender that waits for each reply (as a closed loop does)
    /// meets a 200 ms server stall. Service times hide it (one slow call in
    /// 1000); latencies from the intended send times show every call the
    /// stall delayed.
    #[test]
    fn a_stall_shows_in_corrected_latency_not_in_service_time() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 1000.0);
        let window = Window {
            start: t0,
            end: t0 + 1000 * MS,
        };
        let (stall_from, stall_to) = (t0 + 500 * MS, t0 + 700 * MS);
        let mut tally = OpenTally::new();
        let mut free_at = t0;
        for k in 0..1000 {
            let intended = schedule.at(k);
            let sent = intended.max(free_at);
            let begins = if sent >= stall_from && sent < stall_to {
                stall_to
            } else {
                sent
            };
            free_at = begins + 100 * US;
            tally.ok(
                &window,
                CallTimes {
                    intended,
                    sent,
                    done: free_at,
                },
            );
        }
        let (corrected, service) = (&tally.corrected.hist, &tally.service);
        assert_eq!(corrected.len(), 1000);
        assert!(corrected.value_at_quantile(0.99) > 150_000, "{corrected:?}");
        assert!(service.value_at_quantile(0.99) < 1_000);
        assert!(service.max() > 150_000);
    }

    /// `ringrpc bench` options parsed as on the command line.
    fn bench_args(argv: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("ringrpc").chain(argv.iter().copied());
        <Cmd as clap::Parser>::try_parse_from(argv)
            .expect("valid options")
            .bench
    }

    /// Live: 2000 calls/s for 0.5 s, far below what one core answers (tens
    /// of thousands per second at one in flight): every scheduled call is
    /// sent and answered, so the achieved rate is the target.
    #[test]
    fn an_open_loop_below_capacity_achieves_its_rate() {
        let args = bench_args(&["--rate", "2000", "--warmup", "0.1", "--duration", "0.5"]);
        let cpus = bench::CpuPlan::new(&args);
        let row = bench::run_open_row(&args, &cpus, 2000.0)
            .expect("measured")
            .row;
        let open = row.open.expect("an open-loop row");
        assert_eq!((row.errors, open.dropped), (0, 0));
        assert!((row.calls_per_sec - 2000.0).abs() <= 20.0, "{row:?}");
        // Each call's service time is part of its corrected latency.
        assert!(open.service.p50 <= row.p50 && open.service.p99 <= row.p99);
        assert!(open.peak_outstanding >= 1);
    }
}
