//! A client's bookkeeping: its own counters (for [`ClientStats`](super::ClientStats)),
//! the core's shared metrics, and the waiters for pool changes.
//!
//! Every event is recorded in both the client's cells and the core's
//! [`CoreMetrics`]; latency histograms are only updated when metrics are on.
//! Everything here is core-local (`Cell`), never atomic.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::metrics::counters::{add, dec, inc};
use crate::metrics::{self, CoreMetrics, Phase};
use crate::protocol::HANDLER_TIME_UNKNOWN;
use crate::Error;

/// Per-client counters plus the core's metrics.
pub(crate) struct Counters {
    pub stale: Cell<u64>,
    pub reconnects: Cell<u64>,
    pub lost: Cell<u64>,
    pub timeouts: Cell<u64>,
    pub pings: Cell<u64>,
    /// Connections closed because a heartbeat went unanswered.
    pub heartbeat_timeouts: Cell<u64>,
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
    core: Rc<CoreMetrics>,
    pool_index: usize,
    /// Whether to read clocks and fill histograms (the metrics switch).
    pub timing: bool,
}

impl Counters {
    pub fn new(endpoint: SocketAddr, timing: bool) -> Self {
        let core = metrics::local();
        let pool_index = core.pool_index(endpoint);
        Self {
            stale: Cell::new(0),
            reconnects: Cell::new(0),
            lost: Cell::new(0),
            timeouts: Cell::new(0),
            pings: Cell::new(0),
            heartbeat_timeouts: Cell::new(0),
            hits: Cell::new(0),
            misses: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            core,
            pool_index,
            timing,
        }
    }

    pub fn stale(&self) {
        inc(&self.stale);
        inc(&self.core.client.stale_replies);
    }

    pub fn reconnect(&self) {
        inc(&self.reconnects);
        inc(&self.core.client.reconnects);
    }

    pub fn connect_failed(&self) {
        inc(&self.core.client.connects_failed);
    }

    pub fn conn_opened(&self) {
        inc(&self.core.client.connections);
    }

    pub fn conn_lost(&self) {
        inc(&self.lost);
        dec(&self.core.client.connections);
    }

    pub fn ping(&self) {
        inc(&self.pings);
        inc(&self.core.client.pings);
    }

    /// A connection closed because its peer did not answer a heartbeat.
    pub fn heartbeat_timed_out(&self) {
        inc(&self.heartbeat_timeouts);
        inc(&self.core.client.heartbeat_timeouts);
    }

    pub fn pool_access(&self, hit: bool) {
        inc(if hit { &self.hits } else { &self.misses });
        self.core.pool_access(self.pool_index, hit);
    }

    pub fn bytes_in(&self, n: usize) {
        add(&self.core.client.bytes_in, n as u64);
    }

    pub fn bytes_out(&self, n: usize) {
        add(&self.core.client.bytes_out, n as u64);
    }

    /// A call was made (every call counts, whatever its outcome).
    pub fn call_made(&self) {
        inc(&self.core.client.calls);
    }

    /// A call took a slot.
    pub fn call_started(&self) {
        inc(&self.core.client.in_flight);
    }

    /// A call slot was freed: update the gauge and wake callers waiting for room.
    pub fn slot_freed(&self) {
        dec(&self.core.client.in_flight);
        if !self.waiters.borrow().is_empty() {
            self.notify_waiters();
        }
    }

    /// Counts how a call ended.
    pub fn call_ended(&self, result: Result<(), &Error>) {
        let c = &self.core.client;
        let cell = match result {
            Ok(()) => &c.ok,
            Err(Error::Timeout) => {
                inc(&self.timeouts);
                &c.timeouts
            }
            Err(Error::ConnectionLost | Error::NotSent) => &c.connection_lost,
            Err(Error::Unavailable) => &c.unavailable,
            Err(Error::Overloaded) => &c.overloaded,
            Err(Error::Remote { .. }) => &c.remote,
            Err(_) => &c.protocol,
        };
        inc(cell);
    }

    /// Records the reply-side phases of a call (when timing is on; sampled).
    pub fn reply_phases(&self, started: Instant, written: Option<Instant>, received: Instant) {
        if let Some(written) = written {
            let core = &self.core;
            core.phase(Phase::ClientQueue, || {
                written.saturating_duration_since(started)
            });
            core.phase(Phase::ClientWire, || {
                received.saturating_duration_since(written)
            });
        }
    }

    /// Counts a response and records the handler time the server reported in
    /// it. The server times a sample of its calls and marks the others
    /// [`HANDLER_TIME_UNKNOWN`], so every reported time is recorded.
    pub fn remote_handler(&self, handler_us: u32) {
        self.core.count(Phase::ClientRemoteHandler);
        if handler_us != HANDLER_TIME_UNKNOWN {
            let d = Duration::from_micros(u64::from(handler_us));
            self.core.record(Phase::ClientRemoteHandler, d);
        }
    }

    /// Counts a call of `method` that returned a reply (exactly, per method)
    /// and says whether it is one whose latency is timed (its method's
    /// sampling countdown is due): then read the clock and call
    /// [`delivered`](Self::delivered).
    pub fn call_ok(&self, method: u32, name: &'static str) -> bool {
        self.core.client_call(method, name)
    }

    /// Records delivery and end-to-end latency per method of a timed call.
    pub fn delivered(
        &self,
        method: u32,
        name: &'static str,
        started: Instant,
        received: Instant,
        now: Instant,
    ) {
        let deliver = now.saturating_duration_since(received);
        self.core.record(Phase::ClientDeliver, deliver);
        let total = now.saturating_duration_since(started);
        self.core.client_method(method, name, total);
    }

    /// A call's future was dropped before it finished.
    pub fn cancelled(&self) {
        inc(&self.core.client.cancelled);
    }

    pub fn notify_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    pub async fn changed(&self) {
        super::pool::wait_for(&self.waiters).await
    }
}
