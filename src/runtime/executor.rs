//! The per-core executor: tasks, the run queue and the scheduler turn.
//!
//! Tasks are `async-task` tasks spawned locally; a wake on the core's own
//! thread pushes the task on the core's run queue (no lock, no allocation), a
//! wake from another thread goes through the core's [`Inbox`]. One turn:
//! read the clock once, take the inbox, fire due timers, run the tasks that
//! were ready when the turn began (then, while the kernel has nothing to do,
//! the tasks they woke, a bounded number of batches), run the end-of-turn
//! hooks, then submit all queued operations in one `io_uring_enter` (on an
//! epoll core: one `epoll_wait`), which also waits (up to the nearest timer)
//! when no task is ready. Every live task is listed in a
//! registry so that stopping the core can cancel them all, which drops their
//! futures, closes their sockets and cancels their operations before the ring
//! goes away.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_task::Runnable;
use futures_util::FutureExt;
use slab::Slab;

use super::backend as driver;
use super::inbox::{Inbox, Job};
use super::timer;

/// What a task's join handle yields when the task panicked.
pub type Panic = Box<dyn Any + Send + 'static>;

/// What [`observe_turns`] publishes while the core waits in the kernel.
pub(crate) const TURN_WAITING: u64 = u64::MAX;

thread_local! {
    static QUEUE: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
    static INBOX: RefCell<Option<Arc<Inbox>>> = const { RefCell::new(None) };
    /// The address of this core's inbox (0 off a core): a wake compares it
    /// with its task's home core without touching `INBOX`.
    static HOME: Cell<usize> = const { Cell::new(0) };
    /// Tasks of the running turn's batch still to run (see [`run_ready`]).
    static BATCH_LEFT: Cell<usize> = const { Cell::new(0) };
    static TASKS: RefCell<Slab<Waker>> = const { RefCell::new(Slab::new()) };
    static TURNS: RefCell<Option<(Instant, Arc<AtomicU64>)>> = const { RefCell::new(None) };
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Handle to a task spawned on a core. Awaiting it yields the task's output,
/// or the panic payload if it panicked. Dropping it cancels the task (its
/// future is dropped on its core); [`detach`](Task::detach) lets it run on.
#[must_use = "dropping a Task cancels it; call .detach() to let it run"]
pub struct Task<T>(async_task::Task<Result<T, Panic>>);

impl<T> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("finished", &self.0.is_finished())
            .finish()
    }
}

impl<T> Task<T> {
    /// Lets the task run to completion without a handle.
    pub fn detach(self) {
        self.0.detach();
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, Panic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Removes a task from the registry when its future ends or is dropped.
struct Registered(usize);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = TASKS.try_with(|t| t.borrow_mut().try_remove(self.0));
    }
}

/// Spawns `future` on the current core.
///
/// # Panics
/// Off a ringrpc core thread.
pub(crate) fn spawn<F: Future + 'static>(future: F) -> Task<F::Output> {
    let inbox = INBOX
        .with(|i| i.borrow().clone())
        .expect("ringrpc: spawn called outside a ringrpc core thread");
    // Moved into the future so that it unregisters even if never polled.
    let registered = Registered(TASKS.with(|t| t.borrow().vacant_key()));
    let future = async move {
        let _registered = registered;
        AssertUnwindSafe(future).catch_unwind().await
    };
    let home = Arc::as_ptr(&inbox) as usize;
    let schedule = move |runnable: Runnable| {
        if HOME.try_with(Cell::get) == Ok(home) {
            QUEUE.with(|q| q.borrow_mut().push_back(runnable));
        } else {
            inbox.push_runnable(runnable);
        }
    };
    let (runnable, task) = async_task::spawn_local(future, schedule);
    TASKS.with(|t| t.borrow_mut().insert(runnable.waker()));
    runnable.schedule();
    Task(task)
}

/// True when tasks are waiting to run on this core (the turn is not idle):
/// the rest of the running turn's batch, or tasks woken for the next turn.
pub(crate) fn has_ready_tasks() -> bool {
    BATCH_LEFT.get() > 0 || QUEUE.with(|q| !q.borrow().is_empty())
}

/// The time the current turn began (one clock read per turn).
pub(crate) fn turn_now() -> Instant {
    NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Reads the clock again for the rest of the turn: the epoll driver calls it
/// after a read that completed in the middle of a turn (its bytes may have
/// arrived long after the turn began, say behind a handler that blocked the
/// core), so that `turn_now` stays no earlier than any data the turn handles.
pub(crate) fn refresh_now() {
    NOW.with(|n| n.set(Some(Instant::now())));
}

/// Makes this core publish into `state` when each turn begins (nanoseconds
/// since `epoch`) or [`TURN_WAITING`] while it waits in the kernel.
pub(crate) fn observe_turns(epoch: Instant, state: Arc<AtomicU64>) {
    TURNS.with(|t| *t.borrow_mut() = Some((epoch, state)));
}

fn publish_turn(now: Option<Instant>) {
    TURNS.with(|t| {
        if let Some((epoch, state)) = &*t.borrow() {
            let value = now.map_or(TURN_WAITING, |now| {
                u64::try_from(now.saturating_duration_since(*epoch).as_nanos())
                    .unwrap_or(u64::MAX - 1)
            });
            state.store(value, Ordering::Relaxed);
        }
    });
}

fn run_job(job: Job) {
    if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
        tracing::error!("a job sent to a core panicked");
    }
}

/// Runs the tasks that were ready when the turn began: `batch` (empty) and
/// the run queue trade places, so the tasks they wake queue up for the next
/// turn and the queue is not looked up per task. Both keep their capacity.
fn run_ready(batch: &mut VecDeque<Runnable>) {
    QUEUE.with(|q| std::mem::swap(&mut *q.borrow_mut(), batch));
    while let Some(runnable) = batch.pop_front() {
        BATCH_LEFT.set(batch.len());
        runnable.run();
    }
    BATCH_LEFT.set(0);
}

/// Most batches of newly woken tasks [`run_chained`] runs in one turn: enough
/// for a reply to wake its caller and the caller's request to wake the writer
/// (reader → caller → writer on a client, reader → handler → writer on a
/// server), bounded so that timers, the inbox and the kernel are never held
/// off for long.
pub(crate) const MAX_CHAINED_BATCHES: usize = 4;

/// Runs the tasks the turn's batch woke, batch after batch, while the core has
/// nothing to hand the kernel and nothing has arrived from it (so entering it
/// would only cost a system call; `backend::quiet`), at most
/// [`MAX_CHAINED_BATCHES`] times. A chained batch skips the turn's preamble
/// (clock, inbox, timers): at one call in flight a request's path from the
/// receive to the send is one turn instead of three.
fn run_chained(batch: &mut VecDeque<Runnable>) {
    for _ in 0..MAX_CHAINED_BATCHES {
        if !has_ready_tasks() || !driver::quiet() {
            return;
        }
        run_ready(batch);
    }
}

/// Runs the core until its inbox is stopped, then cancels every task and
/// waits for the kernel to finish every operation.
pub(crate) fn run(inbox: Arc<Inbox>) {
    INBOX.with(|i| *i.borrow_mut() = Some(inbox.clone()));
    HOME.with(|h| h.set(Arc::as_ptr(&inbox) as usize));
    let (mut jobs, mut remote, mut batch) = (Vec::new(), Vec::new(), VecDeque::new());
    loop {
        let now = Instant::now();
        NOW.with(|n| n.set(Some(now)));
        publish_turn(Some(now));
        inbox.take(&mut jobs, &mut remote);
        if inbox.is_stopped() {
            break;
        }
        if !jobs.is_empty() {
            jobs.drain(..).for_each(run_job);
        }
        if !remote.is_empty() {
            QUEUE.with(|q| q.borrow_mut().extend(remote.drain(..)));
        }
        timer::fire(now);
        run_ready(&mut batch);
        run_chained(&mut batch);
        let wait = (!has_ready_tasks())
            .then(|| timer::next_deadline().map(|at| at.saturating_duration_since(Instant::now())));
        if wait.is_some() {
            publish_turn(None);
        }
        if let Err(e) = driver::turn(wait) {
            tracing::error!(error = %e, driver = %driver::current(), "driver wait failed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop((jobs, remote, batch));
    shut_down(&inbox);
    INBOX.with(|i| i.borrow_mut().take());
    HOME.with(|h| h.set(0));
}

/// Cancels every task (dropping their futures), then drains the ring.
fn shut_down(inbox: &Inbox) {
    for _ in 0..1000 {
        // Tasks woken from other threads since: their runnables hold the
        // inbox (through their schedule function), so drop them here too.
        let (mut jobs, mut remote) = (Vec::new(), Vec::new());
        inbox.drain(&mut jobs, &mut remote);
        drop(jobs);
        QUEUE.with(|q| q.borrow_mut().extend(remote));
        let wakers: Vec<Waker> = TASKS.with(|t| t.borrow_mut().drain().collect());
        let had_tasks = !wakers.is_empty();
        wakers.into_iter().for_each(Waker::wake);
        let mut dropped = false;
        while let Some(runnable) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
            drop(runnable);
            dropped = true;
        }
        if !had_tasks && !dropped {
            break;
        }
    }
    if driver::kernel_held() > 0 {
        driver::cancel_all();
    }
    let give_up = Instant::now() + Duration::from_secs(5);
    while driver::kernel_held() > 0 && Instant::now() < give_up {
        let _ = driver::turn(Some(Some(Duration::from_millis(10))));
    }
    if driver::kernel_held() > 0 {
        tracing::error!(
            left = driver::in_flight(),
            "operations still in flight at core exit; leaking their memory"
        );
    }
    driver::uninstall();
}
