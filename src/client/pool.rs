//! A core's pool of persistent connections to one endpoint.
//!
//! The pool keeps `pool_size` connection slots. Each slot has one maintenance
//! task that connects, runs the connection (reader, writer and timer tasks)
//! until it closes, then reconnects with exponential backoff. Calls are routed
//! round-robin to live connections with a free in-flight slot (first-fit when
//! the pool is adaptive, so surplus connections go idle and can be retired, see
//! `adaptive.rs`); when none has one they wait (bounded by their deadline) or
//! fail fast, per the config. Invariants: a closed or retiring connection is
//! never handed to a new call; a connection is only retired once it has no call
//! in flight; dropping the pool cancels every task and closes every socket.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::conn::{self, ClientConn};
use super::{ClientConfig, Counters, OverloadPolicy};
use crate::runtime::io::{self, Task};
use crate::Error;

/// What a pool slot currently holds.
pub(crate) enum SlotState {
    Connecting,
    Live(Rc<ClientConn>),
    /// The last connect attempt failed; retrying after a backoff.
    Backoff,
    /// Shrunk away by the adaptive controller; the index may be reused.
    Retired,
}

/// The state shared by the pool's callers and its maintenance tasks.
pub(crate) struct PoolShared {
    pub addr: SocketAddr,
    pub cfg: Rc<ClientConfig>,
    pub counters: Rc<Counters>,
    pub slots: RefCell<Vec<SlotState>>,
    /// Slots the adaptive controller asked to retire (their maintenance stops).
    pub retiring: RefCell<Vec<bool>>,
    /// Maintenance task of each slot (dropping one cancels it).
    tasks: RefCell<Vec<Option<Task<()>>>>,
    /// Connections draining after a goaway, whose slot already reconnected;
    /// they close themselves once their last call ends (or with the pool).
    draining: RefCell<Vec<Rc<ClientConn>>>,
    next: Cell<usize>,
}

/// Outcome of looking for a connection.
enum Pick {
    Conn(Rc<ClientConn>),
    /// Live connections exist but all are at their in-flight limit.
    Saturated,
    /// No live connection; at least one slot is still connecting.
    Connecting,
    /// No live connection and every slot's last attempt failed.
    Down,
}

impl PoolShared {
    fn pick(&self) -> Pick {
        let slots = self.slots.borrow();
        let n = slots.len();
        // First-fit when adaptive (lets surplus connections go idle), else round robin.
        let start = if self.cfg.adaptive.is_some() {
            0
        } else {
            self.next.get()
        };
        let (mut saturated, mut connecting) = (false, false);
        for i in 0..n {
            let index = (start + i) % n;
            match &slots[index] {
                SlotState::Live(c) if c.has_room() => {
                    self.next.set(index + 1);
                    return Pick::Conn(c.clone());
                }
                SlotState::Live(c) if c.is_live() => saturated = true,
                // Draining after a goaway: the slot reconnects once its last
                // call ends, so a call waits for that (until its deadline).
                SlotState::Live(_) => connecting = true,
                SlotState::Connecting => connecting = true,
                SlotState::Backoff | SlotState::Retired => {}
            }
        }
        match (saturated, connecting) {
            (true, _) => Pick::Saturated,
            (false, true) => Pick::Connecting,
            (false, false) => Pick::Down,
        }
    }

    /// A connection with room for one more call now: `Ok(None)` when the
    /// call has to wait for one ([`acquire`](Self::acquire)), an error when
    /// it must not (fail-fast overload, endpoint down).
    #[inline]
    pub fn acquire_now(&self) -> Result<Option<Rc<ClientConn>>, Error> {
        match self.pick() {
            Pick::Conn(conn) => {
                self.counters.pool_access(true);
                Ok(Some(conn))
            }
            Pick::Saturated if self.cfg.overload == OverloadPolicy::FailFast => {
                Err(self.refuse(Error::Overloaded))
            }
            Pick::Down => Err(self.refuse(Error::Unavailable)),
            Pick::Saturated | Pick::Connecting => Ok(None),
        }
    }

    /// A connection with room for one more call, waiting until `deadline` if
    /// needed; the flag says whether it had to wait. Callers try
    /// [`acquire_now`](Self::acquire_now) first and box this (rare) wait,
    /// so that the call's future does not carry it.
    pub async fn acquire(&self, deadline: Instant) -> Result<(Rc<ClientConn>, bool), Error> {
        let mut waited = false;
        loop {
            let error = match self.pick() {
                Pick::Conn(conn) => {
                    self.counters.pool_access(!waited);
                    return Ok((conn, waited));
                }
                Pick::Saturated if self.cfg.overload == OverloadPolicy::FailFast => {
                    return Err(self.refuse(Error::Overloaded));
                }
                Pick::Down => return Err(self.refuse(Error::Unavailable)),
                Pick::Saturated => Error::Overloaded,
                Pick::Connecting => Error::Unavailable,
            };
            waited = true;
            if io::until(deadline, self.counters.changed()).await.is_none() {
                self.counters.pool_access(false);
                self.counters.call_ended(Err(&error));
                return Err(error);
            }
        }
    }

    fn refuse(&self, error: Error) -> Error {
        self.counters.pool_access(false);
        self.counters.call_ended(Err(&error));
        error
    }

    /// True if a connection is up and takes calls (it may be at its limit).
    pub fn is_up(&self) -> bool {
        self.slots
            .borrow()
            .iter()
            .any(|s| matches!(s, SlotState::Live(c) if c.is_live()))
    }

    /// True if no connection is up and every slot's last connect failed
    /// (none is connecting): the endpoint is down.
    pub fn is_down(&self) -> bool {
        self.slots
            .borrow()
            .iter()
            .all(|s| matches!(s, SlotState::Backoff | SlotState::Retired))
    }

    pub fn set_slot(&self, index: usize, state: SlotState) {
        self.slots.borrow_mut()[index] = state;
        self.counters.notify_waiters();
    }

    /// Every live connection (for stats and close).
    pub fn live(&self) -> Vec<Rc<ClientConn>> {
        self.slots
            .borrow()
            .iter()
            .filter_map(|s| match s {
                SlotState::Live(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Starts (or restarts) maintenance of slot `index`, growing the pool if needed.
    pub fn start_slot(self: &Rc<Self>, index: usize) {
        let mut slots = self.slots.borrow_mut();
        if index == slots.len() {
            slots.push(SlotState::Connecting);
            self.retiring.borrow_mut().push(false);
            self.tasks.borrow_mut().push(None);
        }
        slots[index] = SlotState::Connecting;
        drop(slots);
        self.retiring.borrow_mut()[index] = false;
        // A root span: a connection outlives the request (span) it was opened in.
        let span =
            tracing::info_span!(parent: None, "client_conn", endpoint = %self.addr, slot = index);
        let task = io::spawn_in(span, maintain(self.clone(), index));
        self.tasks.borrow_mut()[index] = Some(task);
    }
}

/// The pool: shared state plus the adaptive controller, if any.
pub(crate) struct Pool {
    pub shared: Rc<PoolShared>,
    controller: RefCell<Option<Task<()>>>,
}

impl Pool {
    /// Creates the pool and starts connecting every slot (on the current core).
    pub fn start(addr: SocketAddr, cfg: ClientConfig) -> Self {
        let size = cfg.pool_size.max(1);
        let shared = Rc::new(PoolShared {
            addr,
            counters: Rc::new(Counters::new(addr, cfg.metrics)),
            cfg: Rc::new(cfg),
            slots: RefCell::new(Vec::new()),
            retiring: RefCell::new(Vec::new()),
            tasks: RefCell::new(Vec::new()),
            draining: RefCell::new(Vec::new()),
            next: Cell::new(0),
        });
        for i in 0..size {
            shared.start_slot(i);
        }
        let controller = shared
            .cfg
            .adaptive
            .map(|adaptive| io::spawn(super::adaptive::control(shared.clone(), adaptive)));
        Self {
            shared,
            controller: RefCell::new(controller),
        }
    }

    /// Stops maintenance and closes every connection; calls in flight fail.
    pub fn close(&self) {
        self.controller.borrow_mut().take();
        // Take the tasks out first: dropping them may touch the pool's state.
        let tasks = std::mem::take(&mut *self.shared.tasks.borrow_mut());
        drop(tasks);
        let draining = std::mem::take(&mut *self.shared.draining.borrow_mut());
        for conn in self.shared.live().into_iter().chain(draining) {
            conn.close();
        }
        let n = self.shared.slots.borrow().len();
        for i in 0..n {
            self.shared.set_slot(i, SlotState::Backoff);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Keeps slot `index` connected until the pool drops or the slot is retired.
async fn maintain(pool: Rc<PoolShared>, index: usize) {
    let cfg = pool.cfg.clone();
    let mut backoff = cfg.backoff_initial;
    loop {
        if pool.retiring.borrow()[index] {
            return pool.set_slot(index, SlotState::Retired);
        }
        pool.set_slot(index, SlotState::Connecting);
        match io::until(Instant::now() + cfg.connect_timeout, io::connect(pool.addr)).await {
            Some(Ok(stream)) => {
                backoff = cfg.backoff_initial;
                pool.counters.conn_opened();
                let conn = ClientConn::new(stream, cfg.clone(), pool.counters.clone());
                run_conn(&pool, index, conn).await;
                if !pool.retiring.borrow()[index] {
                    pool.counters.reconnect();
                }
            }
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::debug!(addr = %pool.addr, error = %e, "connect failed");
                }
                pool.counters.connect_failed();
                pool.set_slot(index, SlotState::Backoff);
                io::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
    }
}

/// Runs one connection until it closes; closes it if this task is cancelled.
async fn run_conn(pool: &Rc<PoolShared>, index: usize, conn: Rc<ClientConn>) {
    struct CloseOnDrop(Rc<ClientConn>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let guard = CloseOnDrop(conn.clone());
    // The connection's loops run in this slot's span (endpoint, slot).
    use tracing::Instrument as _;
    let _tasks = [
        io::spawn(conn::read_loop(conn.clone()).in_current_span()),
        io::spawn(conn::write_loop(conn.clone()).in_current_span()),
        io::spawn(conn::timer_loop(conn.clone()).in_current_span()),
    ];
    pool.set_slot(index, SlotState::Live(conn.clone()));
    conn.stopped_taking_calls().await;
    pool.set_slot(index, SlotState::Connecting);
    if conn.is_closed() {
        return drop(guard);
    }
    // Draining after a goaway: its calls finish on it in the background
    // while the slot connects again at once, so new calls wait only for a
    // connect (and fail fast if the server is gone), as gRPC clients do.
    pool.draining.borrow_mut().push(conn.clone());
    let pool = pool.clone();
    io::spawn(async move {
        conn.closed().await;
        pool.draining.borrow_mut().retain(|c| !Rc::ptr_eq(c, &conn));
        drop((_tasks, guard));
    })
    .detach();
}

/// Spreads reconnect attempts of many connections (±25%, from the clock's low bits).
fn jitter(d: Duration) -> Duration {
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let nanos = clock.map_or(0, |c| c.subsec_nanos()) ^ std::process::id();
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

/// Waits until the pool's waiters are next notified.
pub(crate) async fn wait_for(waiters: &RefCell<Vec<Waker>>) {
    let mut registered = false;
    poll_fn(|cx| {
        if registered {
            Poll::Ready(())
        } else {
            registered = true;
            waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}
