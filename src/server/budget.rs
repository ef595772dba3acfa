//! The server's resource budgets: file descriptors and inbound memory.
//!
//! - **File descriptors.** At start the server raises the process's soft
//!   `RLIMIT_NOFILE` to its hard limit (as Go's runtime does) and lowers each
//!   core's connection limit to what the descriptors allow. Each serving core
//!   keeps one spare descriptor ([`FdReserve`]); when `accept` fails with
//!   `EMFILE`/`ENFILE` it frees the spare, accepts the waiting connection,
//!   closes it with a reset and takes the spare back (nginx's and libuv's
//!   technique), so no connection is ever left unanswered in the kernel's
//!   accept queue.
//! - **Inbound memory** ([`InboundBudget`]): the bytes of partially received
//!   frames held by one core's connections. A connection whose partial frame
//!   is larger than one receive chunk may only read on while the core's total
//!   is under the cap; otherwise its reads pause (its bytes wait in the
//!   kernel's socket buffer, which the kernel bounds) until others complete
//!   their frames, and the read timeout closes it if its frame stalls.
//!
//! Invariants: the budget's total is the sum of what its connections report
//! (each connection reports 0 when it closes); paused readers are woken
//! whenever the total drops.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::poll_fn;
use std::sync::OnceLock;
use std::task::{Poll, Waker};

/// Descriptors kept out of the connection budget for everything else the
/// process holds (listeners, client connections, files, rings, eventfds).
pub(crate) fn fd_headroom(soft_limit: u64) -> u64 {
    (soft_limit / 16).max(64)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, once per process, and
/// returns the soft limit in force afterwards (`u64::MAX` if unlimited).
pub(crate) fn raise_nofile_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return u64::MAX;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: `raised` is a valid rlimit; raising the soft limit up to
            // the hard one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let soft = if lim.rlim_cur == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            lim.rlim_cur
        };
        tracing::info!(before, soft, hard = lim.rlim_max, "file descriptor limit");
        soft
    })
}

/// One spare descriptor per serving core, given up for a moment to answer a
/// connection the process has no descriptor for.
#[derive(Debug)]
pub(crate) struct FdReserve {
    spare: Option<File>,
}

impl FdReserve {
    /// Takes the spare descriptor (on `/dev/null`).
    pub fn new() -> Self {
        Self {
            spare: File::open("/dev/null").ok(),
        }
    }

    /// Frees the spare so the next accept can succeed; false if there was none.
    pub fn release(&mut self) -> bool {
        self.spare.take().is_some()
    }

    /// Takes the spare back (if a descriptor is free again).
    pub fn restore(&mut self) {
        if self.spare.is_none() {
            self.spare = File::open("/dev/null").ok();
        }
    }
}

/// True if `e` says the process or system is out of descriptors.
pub(crate) fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Bytes of partial frames held by one core's connections, under a cap.
#[derive(Debug)]
pub(crate) struct InboundBudget {
    cap: usize,
    held: Cell<usize>,
    paused: RefCell<Vec<Waker>>,
}

impl InboundBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            held: Cell::new(0),
            paused: RefCell::new(Vec::new()),
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// True while the total is over the cap.
    pub fn over(&self) -> bool {
        self.held.get() > self.cap
    }

    /// A connection that held `old` bytes of partial frame now holds `new`.
    /// A drop wakes every paused reader (they check again).
    pub fn update(&self, old: usize, new: usize) {
        let held = self.held.get() - old.min(self.held.get()) + new;
        self.held.set(held);
        if new < old {
            self.paused.borrow_mut().drain(..).for_each(Waker::wake);
        }
    }

    /// Waits until the total is back under the cap or `gone()` says the
    /// connection closed.
    pub async fn wait_room(&self, gone: impl Fn() -> bool) {
        poll_fn(|cx| {
            if !self.over() || gone() {
                return Poll::Ready(());
            }
            self.paused.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Wakes every paused reader (a connection closed: it re-checks `gone`).
    pub fn wake_all(&self) {
        self.paused.borrow_mut().drain(..).for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_sums_what_connections_report_and_knows_when_it_is_over() {
        let b = InboundBudget::new(100);
        b.update(0, 60);
        b.update(0, 40);
        assert_eq!(b.held(), 100);
        assert!(!b.over());
        b.update(40, 70);
        assert!(b.over());
        b.update(70, 0);
        b.update(60, 0);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn paused_readers_wake_when_bytes_are_released() {
        let b = InboundBudget::new(10);
        b.update(0, 20);
        let (count, waker) = crate::test_waker::WakeCount::new();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut wait = std::pin::pin!(b.wait_room(|| false));
        use std::future::Future;
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        b.update(20, 5);
        assert_eq!(count.count(), 1);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn headroom_is_a_sixteenth_of_the_limit_and_at_least_64() {
        assert_eq!(fd_headroom(1024), 64);
        assert_eq!(fd_headroom(1 << 20), 65536);
    }

    #[test]
    fn the_spare_descriptor_is_released_and_restored() {
        let mut r = FdReserve::new();
        assert!(r.release());
        assert!(!r.release());
        r.restore();
        assert!(r.release());
    }
}
