//! A core's pool of persistent connections to one endpoint.
//!
//! The pool keeps `pool_size` connection slots. Each slot has one maintenance
//! task that connects, runs the connection (reader, writer, heartbeat tasks)
//! until it closes, then reconnects with exponential backoff. Calls are routed
//! round-robin to live connections with a free in-flight slot; when none has
//! one they wait (bounded by their deadline) or fail fast, per the config.
//! Invariants: a closed connection is never handed to a new call; dropping the
//! pool cancels every task and closes every socket.

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
enum SlotState {
    Connecting,
    Live(Rc<ClientConn>),
    /// The last connect attempt failed; retrying after a backoff.
    Backoff,
}

/// The state shared by the pool's callers and its maintenance tasks.
pub(crate) struct PoolShared {
    addr: SocketAddr,
    pub cfg: Rc<ClientConfig>,
    pub counters: Rc<Counters>,
    slots: RefCell<Vec<SlotState>>,
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
        let start = self.next.get();
        let (mut saturated, mut connecting) = (false, false);
        for i in 0..n {
            let index = (start + i) % n;
            match &slots[index] {
                SlotState::Live(c) if c.has_room() => {
                    self.next.set(index + 1);
                    return Pick::Conn(c.clone());
                }
                SlotState::Live(c) => saturated |= c.is_live(),
                SlotState::Connecting => connecting = true,
                SlotState::Backoff => {}
            }
        }
        match (saturated, connecting) {
            (true, _) => Pick::Saturated,
            (false, true) => Pick::Connecting,
            (false, false) => Pick::Down,
        }
    }

    /// A connection with room for one more call, waiting until `deadline` if
    /// needed; the flag says whether it had to wait.
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

    fn set_slot(&self, index: usize, state: SlotState) {
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
}

/// The pool: shared state plus the maintenance tasks it owns.
pub(crate) struct Pool {
    pub shared: Rc<PoolShared>,
    tasks: RefCell<Vec<Task<()>>>,
}

impl Pool {
    /// Creates the pool and starts connecting every slot (on the current core).
    pub fn start(addr: SocketAddr, cfg: ClientConfig) -> Self {
        let size = cfg.pool_size.max(1);
        let shared = Rc::new(PoolShared {
            addr,
            counters: Rc::new(Counters::new(addr, cfg.metrics)),
            cfg: Rc::new(cfg),
            slots: RefCell::new((0..size).map(|_| SlotState::Connecting).collect()),
            next: Cell::new(0),
        });
        let tasks = (0..size)
            .map(|i| {
                let span = tracing::info_span!("client_conn", endpoint = %addr, slot = i);
                io::spawn(tracing::Instrument::instrument(maintain(shared.clone(), i), span))
            })
            .collect();
        Self {
            shared,
            tasks: RefCell::new(tasks),
        }
    }

    /// Stops maintenance and closes every connection; calls in flight fail.
    pub fn close(&self) {
        self.tasks.borrow_mut().clear();
        for conn in self.shared.live() {
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

/// Keeps slot `index` connected for as long as the pool lives.
async fn maintain(pool: Rc<PoolShared>, index: usize) {
    let cfg = pool.cfg.clone();
    let mut backoff = cfg.backoff_initial;
    loop {
        pool.set_slot(index, SlotState::Connecting);
        match io::until(Instant::now() + cfg.connect_timeout, io::connect(pool.addr)).await {
            Some(Ok(stream)) => {
                backoff = cfg.backoff_initial;
                pool.counters.conn_opened();
                let conn = ClientConn::new(stream, cfg.clone(), pool.counters.clone());
                run_conn(&pool, index, conn).await;
                pool.counters.reconnect();
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
async fn run_conn(pool: &PoolShared, index: usize, conn: Rc<ClientConn>) {
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
        io::spawn(conn::heartbeat_loop(conn.clone()).in_current_span()),
        io::spawn(conn::expiry_loop(conn.clone()).in_current_span()),
    ];
    pool.set_slot(index, SlotState::Live(conn.clone()));
    conn.closed().await;
    pool.set_slot(index, SlotState::Connecting);
    drop(guard);
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
