//! Thread-per-core runtime: one pinned thread per core, each with its own
//! io_uring (or, where io_uring is refused, its own epoll instance).
//!
//! [`Runtime`] starts N threads; thread `i` is pinned to CPU `cpus[i]` and runs
//! its own executor (`executor`) over its own ring (`driver`) or epoll
//! instance (`epoll`), chosen once at start-up for every core ([`Driver`],
//! `backend`). Work is sent to a
//! core through its `inbox` as a `Send` closure that builds a (possibly `!Send`)
//! future there, so everything a core owns (listeners, pools, metrics) stays on
//! that core and is never shared on the hot path. Invariants: a core thread only
//! exits when the runtime is shut down; dropping the [`Runtime`] stops and joins
//! every core, cancelling their tasks, closing their sockets and waiting for the
//! kernel to finish their operations.

mod backend;
pub(crate) mod batch;
pub(crate) mod buf;
mod bufring;
mod busy;
mod core_task;
mod driver;
mod epoll;
mod executor;
#[cfg(test)]
mod fallback_tests;
mod inbox;
pub mod io;
mod read_chunk;
mod stall;
#[cfg(test)]
mod tests;
mod timer;

use std::cell::Cell;
use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::metrics::MetricsSnapshot;
use crate::Error;
pub use backend::{Driver, DriverInfo, DRIVER_ENV};
pub use core_task::{wait, CoreTask};
use driver::RingConfig;
pub use driver::RingFlags;
use inbox::{Inbox, Job};
pub(crate) use read_chunk::ReadChunk;
use stall::{Beat, Watchdog};

thread_local! {
    static CURRENT_CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the ringrpc core the calling thread is, if it is one.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(Cell::get)
}

/// Configures and starts a [`Runtime`].
///
/// Defaults: one core per available CPU, pinned; 1024 ring entries;
/// `COOP_TASKRUN`, `TASKRUN_FLAG`, `SINGLE_ISSUER` and `DEFER_TASKRUN` on
/// (completions are processed only when the core asks for them, in one batch
/// per wait, instead of interrupting it); `SQPOLL` off; stall detection at
/// 10 ms; busy polling off; driver [`Driver::Auto`] (io_uring, epoll where
/// io_uring is refused; [`DRIVER_ENV`] overrides it).
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    driver: Driver,
    cpus: Option<Vec<usize>>,
    pin: bool,
    ring_entries: u32,
    recv_buffers: Option<(u16, usize)>,
    send_zc: Option<usize>,
    sqpoll_idle: Option<Duration>,
    coop_taskrun: bool,
    defer_taskrun: bool,
    stall_threshold: Option<Duration>,
    busy_poll: Option<Duration>,
    name: String,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self {
            driver: Driver::Auto,
            cpus: None,
            pin: true,
            ring_entries: 1024,
            recv_buffers: Some((64, 64 << 10)),
            send_zc: None,
            sqpoll_idle: None,
            coop_taskrun: true,
            defer_taskrun: true,
            stall_threshold: Some(Duration::from_millis(10)),
            busy_poll: None,
            name: "ringrpc".into(),
        }
    }
}

impl RuntimeBuilder {
    /// The I/O driver every core runs (default [`Driver::Auto`]: io_uring,
    /// or epoll when the kernel refuses io_uring). The environment variable
    /// [`DRIVER_ENV`] (`RINGRPC_DRIVER`), when set, overrides this setting.
    ///
    /// The io_uring settings of this builder (ring entries, receive buffer
    /// ring, `SEND_ZC`, `SQPOLL`, task-run flags) do not apply to epoll
    /// cores; the rest (cores, pinning, stall detection, busy polling) does.
    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    /// Runs `n` cores on CPUs `0..n` (default: every available CPU).
    pub fn cores(mut self, n: usize) -> Self {
        self.cpus = Some((0..n.max(1)).collect());
        self
    }

    /// Runs one core on each listed CPU, in order (core `i` on `cpus[i]`).
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Whether to pin each core thread to its CPU (default `true`).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Submission queue entries per ring (default 1024).
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// Each core's provided-buffer ring for multishot receives: `count`
    /// buffers of `size` bytes, shared by all the core's connections (default
    /// 64 × 64 KiB; `None`: plain receives into per-connection buffers).
    ///
    /// Bytes stay in a buffer while a [`Reply`](crate::Reply) or request
    /// still reads them, and an idle connection holds none. When the ring runs
    /// dry, a receive falls back to a plain one (counted as `recv_ring_dry`).
    /// `count` is rounded up to a power of two (at most 32,768); `size` to a
    /// multiple of 16 (4 KiB at least).
    pub fn recv_buffers(mut self, buffers: Option<(u16, usize)>) -> Self {
        self.recv_buffers = buffers;
        self
    }

    /// Sends of at least `min_bytes` use `IORING_OP_SEND_ZC` (zero-copy: the
    /// kernel sends from the connection's buffer instead of copying it);
    /// default `None` (never). Worth it only on a NIC with zero-copy transmit
    /// and for large sends: on loopback and veth the kernel copies anyway and
    /// zero-copy is slower (docs/benchmarks.md, "SEND_ZC").
    pub fn send_zc(mut self, min_bytes: Option<usize>) -> Self {
        self.send_zc = min_bytes;
        self
    }

    fn buffer_shape(&self) -> Option<bufring::RingShape> {
        self.recv_buffers.map(|(count, size)| bufring::RingShape {
            count: count.clamp(1, 1 << 15).next_power_of_two(),
            size: size.clamp(4096, 1 << 30).next_multiple_of(16),
        })
    }

    /// Enables `IORING_SETUP_SQPOLL` with this idle time (default off).
    pub fn sqpoll(mut self, idle: Duration) -> Self {
        self.sqpoll_idle = Some(idle);
        self
    }

    /// Enables `COOP_TASKRUN` + `TASKRUN_FLAG` (default on).
    pub fn coop_taskrun(mut self, enable: bool) -> Self {
        self.coop_taskrun = enable;
        self
    }

    /// Enables `SINGLE_ISSUER` + `DEFER_TASKRUN` (default on; needs Linux 6.1).
    ///
    /// With it, a core that waits for its next completion is woken once
    /// enough completions are ready, and completion work runs in that wait
    /// rather than interrupting the core; on this project's loopback
    /// benchmark it lowered the 1-call-in-flight p50 by ~15 %.
    pub fn defer_taskrun(mut self, enable: bool) -> Self {
        self.defer_taskrun = enable;
        self
    }

    /// Reports a core whose loop does not turn for this long (default 10 ms;
    /// `None` disables the detector; `build` refuses zero). The runtime's
    /// watchdog thread wakes about once per threshold (more often only while
    /// a turn nears it), so a lower threshold costs proportionally more
    /// wake-ups, each of which preempts a core thread when no CPU is idle.
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// Keeps each core polling its ring for `window` after its last receive
    /// before it sleeps (default off). Lowers latency on hosts where waking an
    /// idle CPU is slow (VMs), at the cost of CPU time while spinning.
    pub fn busy_poll(mut self, window: Option<Duration>) -> Self {
        self.busy_poll = window;
        self
    }

    /// Thread name prefix (default `"ringrpc"`); threads are named `{name}-{core}`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn ring_config(&self) -> RingConfig {
        RingConfig {
            entries: self.ring_entries,
            coop_taskrun: self.coop_taskrun,
            defer_taskrun: self.defer_taskrun,
            sqpoll_idle: self.sqpoll_idle,
            send_zc: self.send_zc,
        }
    }

    /// Checks the settings against each other and this machine.
    fn validate(&self, cpus: &[usize]) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Config(why));
        if cpus.is_empty() {
            return bad("a runtime needs at least one core".into());
        }
        if !(1..=32_768).contains(&self.ring_entries) {
            return bad(format!(
                "ring_entries {} is not in 1..=32768",
                self.ring_entries
            ));
        }
        if self.stall_threshold.is_some_and(|t| t.is_zero()) {
            return bad("stall_threshold must be above zero (None turns the detector off)".into());
        }
        if let Some((count, size)) = self.recv_buffers {
            if count == 0 || size == 0 || size > 1 << 30 {
                return bad(format!(
                    "recv_buffers ({count} x {size} B): need at least one buffer of 1 B ..= 1 GiB"
                ));
            }
        }
        if self.pin {
            let allowed = allowed_cpus()?;
            if let Some(cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
                return bad(format!(
                    "cpu {cpu} is not available to this process (allowed: {allowed:?})"
                ));
            }
        }
        Ok(())
    }

    /// Starts the cores. Fails with [`Error::Config`] for settings that cannot
    /// work (no core, a CPU this process may not run on, a zero-sized ring, a
    /// zero stall threshold, a bad [`DRIVER_ENV`] value), and, with
    /// [`Driver::IoUring`], with [`Error::IoUringUnavailable`] when a ring
    /// cannot be created (old kernel, seccomp, `io_uring_disabled` sysctl).
    /// With [`Driver::Auto`] such a host runs epoll instead (a warning says
    /// so, once).
    pub fn build(self) -> Result<Runtime, Error> {
        let env = std::env::var(DRIVER_ENV).ok();
        self.build_with(env.as_deref())
    }

    /// [`build`](Self::build) with `env` as the value of [`DRIVER_ENV`].
    fn build_with(self, env: Option<&str>) -> Result<Runtime, Error> {
        let cpus = self.cpus.clone().unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
        });
        self.validate(&cpus)?;
        let requested = backend::requested(self.driver, env)?;
        let (cores, info) = self.start_cores(&cpus, requested)?;
        let mut runtime = Runtime {
            cores,
            driver: info,
            beats: Vec::new(),
            watchdog: None,
        };
        if let Some(threshold) = self.stall_threshold {
            runtime.start_watchdog(&self.name, threshold)?;
        }
        if let Some(window) = self.busy_poll {
            for core in 0..runtime.cores() {
                // Runs for the core's life; nothing to join.
                let _spinner = runtime.spawn_on(core, move || busy::spinner(window))?;
            }
        }
        Ok(runtime)
    }

    /// Starts a core per CPU on the driver `requested` asks for: with
    /// [`Driver::Auto`], io_uring, unless core 0's ring setup says io_uring
    /// is unavailable here; then every core runs epoll.
    fn start_cores(
        &self,
        cpus: &[usize],
        requested: Driver,
    ) -> Result<(Vec<Core>, DriverInfo), Error> {
        let mut info = DriverInfo {
            kind: match requested {
                Driver::Epoll => Driver::Epoll,
                _ => Driver::IoUring,
            },
            requested,
            fallback: None,
        };
        let mut cores = Vec::with_capacity(cpus.len());
        for (index, &cpu) in cpus.iter().enumerate() {
            let core = match self.start_core(index, cpu, info.kind) {
                Err(Error::IoUringUnavailable(e))
                    if index == 0 && requested == Driver::Auto && backend::falls_back(&e) =>
                {
                    backend::warn_fallback(&e);
                    info.kind = Driver::Epoll;
                    info.fallback = Some(e.to_string());
                    self.start_core(index, cpu, Driver::Epoll)?
                }
                other => other?,
            };
            cores.push(core);
        }
        if info.fallback.is_none() {
            tracing::info!(driver = %info.kind, requested = %requested, "ringrpc driver");
        }
        Ok((cores, info))
    }

    fn start_core(&self, index: usize, cpu: usize, kind: Driver) -> Result<Core, Error> {
        let inbox = Arc::new(Inbox::new().map_err(Error::Io)?);
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (ring, pin, core_inbox) = (self.ring_config(), self.pin.then_some(cpu), inbox.clone());
        let setup = CoreSetup {
            kind,
            ring,
            buffers: self.buffer_shape(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{}-{index}", self.name))
            .spawn(move || core_main(index, pin, setup, core_inbox, ready_tx))
            .map_err(Error::Io)?;
        match ready_rx.recv() {
            Ok(Ok(flags)) => Ok(Core {
                inbox,
                flags,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(match kind {
                    Driver::Epoll => Error::Io(e),
                    _ => Error::IoUringUnavailable(e),
                })
            }
            Err(_) => Err(Error::Io(std::io::Error::other(
                "core thread died at start",
            ))),
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Result<Vec<usize>, Error> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a core thread sets up before it runs.
struct CoreSetup {
    kind: Driver,
    ring: RingConfig,
    buffers: Option<bufring::RingShape>,
}

fn core_main(
    index: usize,
    pin: Option<usize>,
    setup: CoreSetup,
    inbox: Arc<Inbox>,
    ready: std_mpsc::Sender<std::io::Result<RingFlags>>,
) {
    if let Some(cpu) = pin {
        if let Err(e) = pin_to(cpu) {
            tracing::warn!(core = index, cpu, error = %e, "cannot pin core thread");
        }
    }
    // The ring is created here, on its thread: with SINGLE_ISSUER and
    // DEFER_TASKRUN only the creating thread may submit and reap.
    let installed = match setup.kind {
        Driver::Epoll => epoll::install(inbox.event_fd()).map(|()| RingFlags::default()),
        _ => driver::install(&setup.ring, setup.buffers, inbox.event_fd()),
    };
    let flags = match installed {
        Ok(flags) => flags,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    backend::set_current(setup.kind);
    tracing::info!(core = index, driver = %setup.kind, ?flags, "core started");
    CURRENT_CORE.with(|c| c.set(Some(index)));
    let _ = ready.send(Ok(flags));
    executor::run(inbox);
    tracing::debug!(core = index, "core stopped");
}

struct Core {
    inbox: Arc<Inbox>,
    flags: RingFlags,
    thread: Option<JoinHandle<()>>,
}

/// A set of pinned cores, each with its own io_uring or epoll driver.
///
/// **Dropping it stops the runtime**, as [`shutdown`](Self::shutdown) does:
/// every core stops, tasks still running on them (servers, clients, spawned
/// work) are cancelled, and the drop blocks until every core thread has
/// exited. Keep it for as long as anything should run on its cores.
#[must_use = "dropping a Runtime stops every core and cancels the tasks on them"]
pub struct Runtime {
    cores: Vec<Core>,
    driver: DriverInfo,
    beats: Vec<Arc<Beat>>,
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags: Vec<_> = self.cores.iter().map(|c| c.flags).collect();
        f.debug_struct("Runtime")
            .field("cores", &self.cores.len())
            .field("driver", &self.driver)
            .field("ring_flags", &flags)
            .field("stall_watchdog", &self.watchdog.is_some())
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults listed on [`RuntimeBuilder`].
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The driver every core runs, what was asked for and, when
    /// [`Driver::Auto`] fell back to epoll, why.
    pub fn driver(&self) -> &DriverInfo {
        &self.driver
    }

    /// Runs `make()` on core `core` and spawns the future it returns there.
    ///
    /// The returned [`CoreTask`] yields the output, either blocking
    /// ([`CoreTask::join`]) or awaited from any executor (it is a `Future`);
    /// dropping it does not cancel the task. Fails with
    /// [`Error::NoSuchCore`] for a core index the runtime does not have, and
    /// [`Error::Shutdown`] once the core has stopped.
    pub fn spawn_on<F, Fut>(&self, core: usize, make: F) -> Result<CoreTask<Fut::Output>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            io::spawn(async move {
                let output = make().await;
                let _ = tx.send(output);
            })
            .detach();
        });
        let target = self.cores.get(core).ok_or(Error::NoSuchCore {
            core,
            cores: self.cores.len(),
        })?;
        if !target.inbox.push_job(job) {
            return Err(Error::Shutdown);
        }
        Ok(CoreTask::new(rx))
    }

    fn start_watchdog(&mut self, name: &str, threshold: Duration) -> Result<(), Error> {
        let base = Instant::now();
        for core in 0..self.cores.len() {
            let beat = Arc::new(Beat::default());
            self.beats.push(beat.clone());
            self.block_on(core, move || async move { beat.attach_current_core(base) })?;
        }
        self.watchdog = Some(Watchdog::start(
            name.to_owned(),
            self.beats.clone(),
            base,
            threshold,
        )?);
        Ok(())
    }

    /// Collects every core's metrics (each core copies its own, on its thread).
    ///
    /// Blocks until all cores answered; call it from outside the runtime's
    /// cores. From an async context use [`metrics_async`](Self::metrics_async).
    pub fn metrics(&self) -> MetricsSnapshot {
        wait(self.metrics_async())
    }

    /// Collects every core's metrics without blocking: the request goes to
    /// every core now, and the returned future (`Send`, borrowing nothing from
    /// the runtime) resolves once they all answered. Await it from any
    /// executor (a tokio task, or a task on one of this runtime's cores). A
    /// core that has stopped is left out of the snapshot.
    pub fn metrics_async(&self) -> impl Future<Output = MetricsSnapshot> + Send + 'static {
        let tasks: Vec<_> = (0..self.cores.len())
            .filter_map(|core| {
                self.spawn_on(core, move || async move {
                    let mut snap = crate::metrics::local().snapshot(Some(core));
                    snap.recv_ring_dry = bufring::dry_count();
                    snap.recv_pool_bytes = buf::pooled_bytes() as u64;
                    snap.driver = Some(backend::current());
                    snap
                })
                .ok()
            })
            .collect();
        let beats = self.beats.clone();
        async move {
            let mut cores = Vec::with_capacity(tasks.len());
            for task in tasks {
                if let Ok(snap) = task.await {
                    cores.push(snap);
                }
            }
            for snap in &mut cores {
                if let Some(beat) = snap.core.and_then(|c| beats.get(c)) {
                    snap.stalls = beat.stalls();
                }
            }
            MetricsSnapshot { cores }
        }
    }

    /// Runs a future on `core` and blocks the calling thread until it finishes.
    ///
    /// Do not call this from a core thread of the same runtime (it would deadlock).
    /// Fails as [`spawn_on`](Self::spawn_on) does ([`Error::NoSuchCore`] for a
    /// bad index), and with [`Error::Shutdown`] if the future panicked.
    pub fn block_on<F, Fut>(&self, core: usize, make: F) -> Result<Fut::Output, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.spawn_on(core, make)?.join()
    }

    /// The io_uring setup flags core `core`'s ring runs with (what the kernel
    /// granted of those asked for; see [`RuntimeBuilder::defer_taskrun`]);
    /// all off on an epoll core.
    pub fn ring_flags(&self, core: usize) -> Option<RingFlags> {
        self.cores.get(core).map(|c| c.flags)
    }

    /// A handle that runs closures on core `core`'s thread (outside any task);
    /// `None` for a core index the runtime does not have (public entry points
    /// check the index first and report [`Error::NoSuchCore`]).
    pub(crate) fn remote(&self, core: usize) -> Option<CoreRemote> {
        self.cores.get(core).map(|c| CoreRemote {
            inbox: c.inbox.clone(),
        })
    }

    /// Stops every core and joins its thread. Tasks still running are cancelled.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// [`shutdown`](Self::shutdown) without blocking the caller: the cores
    /// are told to stop at once, and their threads are joined on a helper
    /// thread; the returned future (`Send`) resolves once every core thread
    /// has exited. For a tokio application, whose executor threads must not
    /// block on the cores' last turn (up to a few seconds while the kernel
    /// finishes their operations). Dropping the future does not undo the stop.
    pub fn shutdown_async(mut self) -> impl Future<Output = ()> + Send + 'static {
        self.watchdog = None;
        for core in &self.cores {
            core.inbox.stop();
        }
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let joiner = std::thread::Builder::new()
            .name("ringrpc-shutdown".into())
            .spawn(move || {
                drop(self); // joins every core thread
                let _ = done_tx.send(());
            });
        if let Err(e) = joiner {
            // The closure, and with it the runtime, was dropped on this
            // thread (joining the cores here); the future is ready at once.
            tracing::warn!(error = %e, "no helper thread for shutdown_async");
        }
        async move {
            let _ = done_rx.await;
        }
    }

    fn stop(&mut self) {
        self.watchdog = None;
        for core in &self.cores {
            core.inbox.stop();
        }
        for core in &mut self.cores {
            if let Some(thread) = core.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs closures on one core's thread from any thread.
#[derive(Clone)]
pub(crate) struct CoreRemote {
    inbox: Arc<Inbox>,
}

impl CoreRemote {
    /// Queues `job` to run on the core; false if the core has stopped.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.inbox.push_job(Box::new(job))
    }
}
