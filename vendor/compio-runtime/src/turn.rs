//! Event-loop turn observer (ringrpc patch).
//!
//! A runtime thread can publish, into an atomic another thread reads, when its
//! current event-loop turn began (nanoseconds since an epoch the observer
//! chose), or [`WAITING`] while it sleeps in the kernel for completions. A
//! watchdog can then tell a loop that is stuck in a task (turn started long
//! ago) from an idle one (waiting) without any timer or wake-up on the
//! observed thread. Costs one clock read and one relaxed store per turn, and
//! nothing when no observer is registered.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Published while the loop waits in the kernel.
pub const WAITING: u64 = u64::MAX;

thread_local! {
    static OBSERVER: RefCell<Option<(Instant, Arc<AtomicU64>)>> = const { RefCell::new(None) };
}

/// Publishes this thread's turns into `state` from now on (nanoseconds since
/// `epoch` when a turn begins, [`WAITING`] while waiting).
pub fn observe(epoch: Instant, state: Arc<AtomicU64>) {
    OBSERVER.with(|o| *o.borrow_mut() = Some((epoch, state)));
}

fn publish(value: impl FnOnce(Instant) -> u64) {
    OBSERVER.with(|o| {
        if let Some((epoch, state)) = &*o.borrow() {
            state.store(value(*epoch), Ordering::Relaxed);
        }
    });
}

/// A turn begins (the loop is about to run tasks).
pub(crate) fn begin() {
    publish(|epoch| {
        u64::try_from(epoch.elapsed().as_nanos())
            .unwrap_or(WAITING - 1)
            .min(WAITING - 1)
    });
}

/// The loop is about to wait in the kernel.
pub(crate) fn waiting() {
    publish(|_| WAITING);
}
