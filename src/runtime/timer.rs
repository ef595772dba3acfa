//! Per-core timers: a heap of deadlines whose nearest one becomes the ring
//! wait's timeout. No syscall and no ring operation per timer.
//!
//! A [`Sleep`] registers in the core's timer slab on its first pending poll
//! (slot index + generation, like the op table) and pushes its deadline on the
//! heap. Dropping it frees the slot; its heap entry becomes stale and is
//! skipped when it surfaces (a generation mismatch), and the heap is compacted
//! when stale entries outnumber live ones, so it stays bounded. Steady state
//! allocates nothing: the slab and heap keep their capacity.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

struct Timer {
    generation: u32,
    fired: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Timers {
    slots: Slab<Timer>,
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    next_generation: u32,
}

thread_local! {
    static TIMERS: RefCell<Timers> = RefCell::new(Timers::default());
}

impl Timers {
    fn live(&self, index: usize, generation: u32) -> bool {
        self.slots
            .get(index)
            .is_some_and(|t| t.generation == generation && !t.fired)
    }

    fn compact_if_stale(&mut self) {
        if self.heap.len() > 64 + 2 * self.slots.len() {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse((_, i, g))| slots.get(*i).is_some_and(|t| t.generation == *g));
        }
    }
}

/// Fires every timer due at `now`, waking its task.
pub(crate) fn fire(now: Instant) {
    loop {
        let waker = TIMERS.with(|t| {
            let mut t = t.borrow_mut();
            while let Some(&Reverse((at, index, generation))) = t.heap.peek() {
                if at > now {
                    return None;
                }
                t.heap.pop();
                if t.live(index, generation) {
                    let timer = &mut t.slots[index];
                    timer.fired = true;
                    return Some(timer.waker.take());
                }
            }
            None
        });
        match waker {
            Some(Some(w)) => w.wake(),
            Some(None) => {}
            None => return,
        }
    }
}

/// The nearest live deadline, if any (stale entries on top are dropped).
pub(crate) fn next_deadline() -> Option<Instant> {
    TIMERS.with(|t| {
        let mut t = t.borrow_mut();
        while let Some(&Reverse((at, index, generation))) = t.heap.peek() {
            if t.live(index, generation) {
                return Some(at);
            }
            t.heap.pop();
        }
        None
    })
}

/// Resolves at its deadline (as seen by the core's clock at the start of a turn).
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub(crate) struct Sleep {
    deadline: Instant,
    key: Option<(usize, u32)>,
}

impl Sleep {
    /// A timer for `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        match self.key {
            None if deadline <= super::executor::turn_now() => Poll::Ready(()),
            None => {
                let key = TIMERS.with(|t| {
                    let mut t = t.borrow_mut();
                    let generation = t.next_generation;
                    t.next_generation = generation.wrapping_add(1);
                    let index = t.slots.insert(Timer {
                        generation,
                        fired: false,
                        waker: Some(cx.waker().clone()),
                    });
                    t.heap.push(Reverse((deadline, index, generation)));
                    (index, generation)
                });
                self.key = Some(key);
                Poll::Pending
            }
            Some((index, _)) => TIMERS.with(|t| {
                let mut t = t.borrow_mut();
                let timer = &mut t.slots[index];
                if timer.fired {
                    return Poll::Ready(());
                }
                if !timer
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    timer.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((index, _)) = self.key {
            // `try_with`: a Sleep dropped while the thread's locals are torn down.
            let _ = TIMERS.try_with(|t| {
                let mut t = t.borrow_mut();
                t.slots.remove(index);
                t.compact_if_stale();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::WakeCount;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_and_dropped_ones_never() {
        let (count, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        let base = Instant::now() + Duration::from_secs(60);
        let mut late = Box::pin(Sleep::until(base + Duration::from_secs(2)));
        let mut early = Box::pin(Sleep::until(base + Duration::from_secs(1)));
        let mut dropped = Box::pin(Sleep::until(base));
        for s in [&mut late, &mut early, &mut dropped] {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        drop(dropped);
        assert_eq!(next_deadline(), Some(base + Duration::from_secs(1)));
        fire(base + Duration::from_millis(1500));
        assert_eq!(count.count(), 1, "only the early one");
        assert!(early.as_mut().poll(&mut cx).is_ready());
        assert!(late.as_mut().poll(&mut cx).is_pending());
        fire(base + Duration::from_secs(3));
        assert!(late.as_mut().poll(&mut cx).is_ready());
        drop((early, late));
        assert_eq!(next_deadline(), None);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let (_, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..10_000 {
            let mut s = Box::pin(Sleep::until(far));
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        TIMERS.with(|t| assert!(t.borrow().heap.len() <= 64 + 2, "heap bounded"));
    }
}
