//! Optional busy polling: a core keeps polling its ring for a short while after
//! the last received data instead of sleeping in the kernel at once.
//!
//! On virtual machines, putting a vCPU to sleep and waking it again for the next
//! packet costs tens of microseconds; a core that keeps polling (non-blocking
//! `io_uring_enter`) for a configured window after each receive answers the next
//! message without that round trip, at the cost of CPU while it spins. Off by
//! default. Invariant: a core spins at most `window` past its last receive, then
//! parks until the next one; it never delays other tasks (the spinner yields on
//! every turn of the loop).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static RECEIVES: Cell<u64> = const { Cell::new(0) };
    static PARKED: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Notes that this core received data (called by every socket read).
#[inline]
pub(crate) fn note_receive() {
    if ENABLED.with(Cell::get) {
        RECEIVES.with(|r| r.set(r.get().wrapping_add(1)));
        if let Some(w) = PARKED.with(|p| p.borrow_mut().take()) {
            w.wake();
        }
    }
}

/// Parks until the next receive on this core.
async fn park() {
    let start = RECEIVES.with(Cell::get);
    poll_fn(|cx| {
        if RECEIVES.with(Cell::get) != start {
            Poll::Ready(())
        } else {
            PARKED.with(|p| *p.borrow_mut() = Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await
}

/// The per-core spinner task (runs for the runtime's lifetime).
pub(crate) async fn spinner(window: Duration) {
    ENABLED.with(|e| e.set(true));
    loop {
        park().await;
        let mut seen = RECEIVES.with(Cell::get);
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < window {
            super::io::yield_now().await;
            let now = RECEIVES.with(Cell::get);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
        }
    }
}
