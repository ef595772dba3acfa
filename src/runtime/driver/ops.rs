//! In-flight ring operations: a per-core slab whose slot index + generation is
//! each operation's `user_data`, the call table's pattern applied to the ring.
//!
//! Ownership rule (the driver's one safety invariant): the memory an operation
//! hands the kernel (a receive tail, a send buffer) travels with it as a
//! [`Hold`]. While the operation's future lives, the future owns the hold; if
//! the future is dropped before the completion arrives, the hold moves into
//! the slot ([`Lifecycle::Ignored`]), an async cancel is queued, and the slot
//! (and with it the memory) is freed only when the kernel's completion for
//! that `user_data` comes back. A completion whose generation does not match
//! its slot (a slot freed and reused since) is dropped, so a late completion
//! can never reach a reused slot. An accept that completes after its future
//! was dropped closes the descriptor it produced.
//!
//! No allocation per operation in steady state: the slab keeps its capacity,
//! wakers are task handles (a reference count), and holds are moved, not boxed.

use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::task::{Context, Poll, Waker};

use io_uring::cqueue;

use slab::Slab;

use crate::runtime::buf::TailBuf;

/// `user_data` of async-cancel requests (their completions are ignored).
pub(crate) const CANCEL_USER_DATA: u64 = u64::MAX;
/// `user_data` of the cross-thread wake-up read on the core's eventfd.
pub(crate) const WAKE_USER_DATA: u64 = u64::MAX - 1;

/// Memory (or a promise about a result) that an operation lends the kernel.
pub(crate) enum Hold {
    /// Nothing: the operation reads or writes no user memory.
    None,
    /// A receive's target: the free tail of a receive chunk.
    Tail(TailBuf),
    /// A send's source: a batch of frames (its buffer, its segments, and a
    /// gathering send's iovecs).
    Batch(crate::runtime::batch::Batch),
    /// An accept: a descriptor produced after the future was dropped is closed.
    Accept,
    /// A multishot operation: its slot is freed on the completion without `MORE`.
    Multishot,
}

/// What the driver must do about one completion.
pub(crate) enum Reaped {
    /// Nothing more.
    Done,
    /// Wake this task.
    Wake(Waker),
    /// The completion belongs to a dropped multishot operation: return the
    /// buffer it carries, if any.
    Orphan,
}

/// Where one operation is in its life.
enum Lifecycle {
    /// Submitted; nobody has polled it yet.
    Submitted,
    /// A task waits for the completion.
    Waiting(Waker),
    /// A zero-copy send's result arrived; its buffer is still the kernel's
    /// until the notification completion (`IORING_CQE_F_NOTIF`) follows.
    Notifying { res: i32, waker: Option<Waker> },
    /// The completion arrived and waits for its future to take it.
    Completed { res: i32 },
    /// A multishot operation: its completions queue up until taken.
    Streaming {
        events: VecDeque<(i32, u32)>,
        waker: Option<Waker>,
        ended: bool,
    },
    /// The future was dropped; the slot keeps the memory until the completion.
    Ignored(Hold),
}

struct Slot {
    generation: u32,
    life: Lifecycle,
}

/// The per-core table of operations the kernel has not finished.
#[derive(Default)]
pub(crate) struct OpTable {
    slots: Slab<Slot>,
    next_generation: u32,
}

fn split(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

impl OpTable {
    /// Takes a slot for a new operation and returns its `user_data`.
    pub fn insert(&mut self) -> u64 {
        self.insert_with(Lifecycle::Submitted)
    }

    /// Takes a slot for a new multishot operation and returns its `user_data`.
    pub fn insert_multishot(&mut self) -> u64 {
        self.insert_with(Lifecycle::Streaming {
            events: VecDeque::new(),
            waker: None,
            ended: false,
        })
    }

    fn insert_with(&mut self, life: Lifecycle) -> u64 {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let index = self.slots.insert(Slot { generation, life });
        (u64::from(generation) << 32) | index as u64
    }

    /// Operations not yet completed by the kernel (including ignored ones).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Operations whose memory the kernel may still use: not completed yet
    /// (a completion waiting for its future, or a multishot that has ended,
    /// does not count).
    pub fn kernel_held(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, slot)| match &slot.life {
                Lifecycle::Completed { .. } => false,
                Lifecycle::Streaming { ended, .. } => !ended,
                _ => true,
            })
            .count()
    }

    fn slot_mut(&mut self, user_data: u64) -> Option<&mut Slot> {
        let (index, generation) = split(user_data);
        self.slots
            .get_mut(index)
            .filter(|slot| slot.generation == generation)
    }

    /// Records a completion; says whom to wake (or that it is an orphan).
    /// A completion for a slot that is gone or reused is dropped.
    pub fn complete(&mut self, user_data: u64, res: i32, flags: u32) -> Reaped {
        let Some(slot) = self.slot_mut(user_data) else {
            return Reaped::Done;
        };
        if let Lifecycle::Streaming {
            events,
            waker,
            ended,
        } = &mut slot.life
        {
            events.push_back((res, flags));
            *ended |= !cqueue::more(flags);
            return waker.take().map_or(Reaped::Done, Reaped::Wake);
        }
        if let Lifecycle::Ignored(Hold::Multishot) = slot.life {
            if !cqueue::more(flags) {
                self.slots.remove(split(user_data).0);
            }
            return Reaped::Orphan;
        }
        if cqueue::more(flags) {
            // A first completion with a final one to follow (a zero-copy send).
            match &mut slot.life {
                Lifecycle::Ignored(_) => {}
                life => {
                    let waker = match std::mem::replace(life, Lifecycle::Submitted) {
                        Lifecycle::Waiting(w) => Some(w),
                        _ => None,
                    };
                    *life = Lifecycle::Notifying { res, waker };
                }
            }
            return Reaped::Done;
        }
        let res = match slot.life {
            Lifecycle::Notifying { res: first, .. } if cqueue::notif(flags) => first,
            _ => res,
        };
        match std::mem::replace(&mut slot.life, Lifecycle::Completed { res }) {
            Lifecycle::Waiting(waker)
            | Lifecycle::Notifying {
                waker: Some(waker), ..
            } => Reaped::Wake(waker),
            Lifecycle::Ignored(hold) => {
                self.slots.remove(split(user_data).0);
                if matches!(hold, Hold::Accept) && res >= 0 {
                    // SAFETY: a successful accept's result is a new descriptor
                    // that nothing else owns (its future is gone).
                    drop(unsafe { OwnedFd::from_raw_fd(res) });
                }
                Reaped::Done
            }
            _ => Reaped::Done,
        }
    }

    /// Takes the next completion of multishot `user_data`; `Ready(None)` once
    /// the operation has ended and every completion was taken (the slot is
    /// then freed).
    pub fn poll_event(&mut self, user_data: u64, cx: &mut Context<'_>) -> Poll<Option<(i32, u32)>> {
        let Some(Slot {
            life:
                Lifecycle::Streaming {
                    events,
                    waker,
                    ended,
                },
            ..
        }) = self.slot_mut(user_data)
        else {
            return Poll::Ready(None);
        };
        if let Some(event) = events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if *ended {
            self.slots.remove(split(user_data).0);
            return Poll::Ready(None);
        }
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Drops multishot `user_data`'s consumer: returns the completions it did
    /// not take (their buffers must be returned) and whether the kernel still
    /// runs the operation (then a cancel must be queued).
    pub fn abandon_multishot(&mut self, user_data: u64) -> (VecDeque<(i32, u32)>, bool) {
        let Some(slot) = self.slot_mut(user_data) else {
            return (VecDeque::new(), false);
        };
        match std::mem::replace(&mut slot.life, Lifecycle::Ignored(Hold::Multishot)) {
            Lifecycle::Streaming { events, ended, .. } => {
                if ended {
                    self.slots.remove(split(user_data).0);
                }
                (events, !ended)
            }
            other => {
                slot.life = other;
                (VecDeque::new(), false)
            }
        }
    }

    /// Polls operation `user_data`: its result once complete (the slot is freed).
    pub fn poll(&mut self, user_data: u64, cx: &mut Context<'_>) -> Poll<i32> {
        let Some(slot) = self.slot_mut(user_data) else {
            // Unreachable while the future owns the slot; fail safe.
            return Poll::Ready(-libc::ECANCELED);
        };
        match &mut slot.life {
            Lifecycle::Completed { res } => {
                let res = *res;
                self.slots.remove(split(user_data).0);
                Poll::Ready(res)
            }
            Lifecycle::Waiting(waker) if waker.will_wake(cx.waker()) => Poll::Pending,
            Lifecycle::Notifying { waker, .. } => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            life => {
                *life = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The future of `user_data` was dropped. Returns `true` when the kernel
    /// still holds the operation (the caller must queue a cancel); the hold
    /// then stays in the slot until the completion. A completed operation's
    /// slot is freed at once.
    pub fn abandon(&mut self, user_data: u64, hold: Hold) -> bool {
        let Some(slot) = self.slot_mut(user_data) else {
            return false;
        };
        if let Lifecycle::Completed { res } = slot.life {
            self.complete_abandoned(user_data, res, hold);
            return false;
        }
        slot.life = Lifecycle::Ignored(hold);
        true
    }

    fn complete_abandoned(&mut self, user_data: u64, res: i32, hold: Hold) {
        if let Some(slot) = self.slot_mut(user_data) {
            slot.life = Lifecycle::Ignored(hold);
        }
        self.complete(user_data, res, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::WakeCount;

    fn waker() -> (std::sync::Arc<WakeCount>, Waker) {
        WakeCount::new()
    }

    fn batch_of(bytes: Vec<u8>) -> crate::runtime::batch::Batch {
        crate::runtime::batch::Batch::of(bytes)
    }

    #[test]
    fn a_completion_wakes_its_waiter_and_frees_the_slot_when_taken() {
        let mut ops = OpTable::default();
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let ud = ops.insert();
        assert!(ops.poll(ud, &mut cx).is_pending());
        let Reaped::Wake(w) = ops.complete(ud, 42, 0) else {
            panic!("no waiter")
        };
        w.wake();
        assert_eq!(count.count(), 1);
        assert_eq!(ops.poll(ud, &mut cx), Poll::Ready(42));
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn a_late_completion_never_reaches_a_reused_slot() {
        let mut ops = OpTable::default();
        let first = ops.insert();
        assert!(ops.abandon(first, Hold::None), "in flight: cancel needed");
        ops.complete(first, -libc::ECANCELED, 0);
        assert_eq!(ops.len(), 0, "ignored slot freed on its completion");
        let second = ops.insert();
        assert_eq!(split(first).0, split(second).0, "same index reused");
        assert!(
            matches!(ops.complete(first, 7, 0), Reaped::Done),
            "stale generation dropped"
        );
        let (_, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            ops.poll(second, &mut cx).is_pending(),
            "reused slot untouched"
        );
    }

    #[test]
    fn an_ignored_operation_keeps_its_memory_until_the_completion() {
        let mut ops = OpTable::default();
        let ud = ops.insert();
        let bytes = vec![1u8; 64];
        let ptr = bytes.as_ptr();
        assert!(ops.abandon(ud, Hold::Batch(batch_of(bytes))));
        assert_eq!(ops.len(), 1, "slot (and the bytes) kept while in flight");
        match &ops.slot_mut(ud).map(|s| &s.life) {
            Some(Lifecycle::Ignored(Hold::Batch(b))) => assert_eq!(b.bytes.as_ptr(), ptr),
            _ => panic!("hold not kept"),
        }
        ops.complete(ud, 64, 0);
        assert_eq!(ops.len(), 0);
    }

    const MORE: u32 = 1 << 1; // IORING_CQE_F_MORE

    #[test]
    fn multishot_completions_queue_until_taken_and_the_last_frees_the_slot() {
        let mut ops = OpTable::default();
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let ud = ops.insert_multishot();
        assert!(ops.poll_event(ud, &mut cx).is_pending());
        let Reaped::Wake(w) = ops.complete(ud, 10, MORE) else {
            panic!("no waiter")
        };
        w.wake();
        assert!(matches!(ops.complete(ud, 20, MORE), Reaped::Done));
        assert!(matches!(ops.complete(ud, 0, 0), Reaped::Done));
        assert_eq!(count.count(), 1);
        assert_eq!(ops.poll_event(ud, &mut cx), Poll::Ready(Some((10, MORE))));
        assert_eq!(ops.poll_event(ud, &mut cx), Poll::Ready(Some((20, MORE))));
        assert_eq!(ops.poll_event(ud, &mut cx), Poll::Ready(Some((0, 0))));
        assert_eq!(ops.len(), 1);
        assert_eq!(ops.poll_event(ud, &mut cx), Poll::Ready(None));
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn a_dropped_multishot_hands_back_its_events_and_ends_on_its_last_completion() {
        let mut ops = OpTable::default();
        let ud = ops.insert_multishot();
        ops.complete(ud, 10, MORE);
        let (left, cancel) = ops.abandon_multishot(ud);
        assert_eq!(left.len(), 1);
        assert!(cancel);
        assert!(matches!(ops.complete(ud, 30, MORE), Reaped::Orphan));
        assert_eq!(ops.len(), 1);
        assert!(matches!(
            ops.complete(ud, -libc::ECANCELED, 0),
            Reaped::Orphan
        ));
        assert_eq!(ops.len(), 0);
    }

    const NOTIF: u32 = 1 << 3; // IORING_CQE_F_NOTIF

    #[test]
    fn a_zero_copy_send_completes_on_its_notification_with_the_first_result() {
        let mut ops = OpTable::default();
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let ud = ops.insert();
        assert!(ops.poll(ud, &mut cx).is_pending());
        assert!(matches!(ops.complete(ud, 4096, MORE), Reaped::Done));
        assert!(
            ops.poll(ud, &mut cx).is_pending(),
            "buffer still the kernel's"
        );
        let Reaped::Wake(w) = ops.complete(ud, 0, NOTIF) else {
            panic!("no waiter")
        };
        w.wake();
        assert_eq!(count.count(), 1);
        assert_eq!(ops.poll(ud, &mut cx), Poll::Ready(4096));
        // Dropped between the two: the memory stays until the notification.
        let ud = ops.insert();
        ops.complete(ud, 10, MORE);
        assert!(ops.abandon(ud, Hold::Batch(batch_of(vec![0; 10]))));
        ops.complete(ud, 0, NOTIF);
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn abandoning_a_completed_operation_frees_it_at_once() {
        let mut ops = OpTable::default();
        let ud = ops.insert();
        ops.complete(ud, 5, 0);
        assert!(!ops.abandon(ud, Hold::None), "no cancel for a finished op");
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn an_accept_finished_after_its_future_dropped_closes_the_descriptor() {
        let mut ops = OpTable::default();
        let ud = ops.insert();
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        assert!(ops.abandon(ud, Hold::Accept));
        ops.complete(ud, fd, 0);
        // SAFETY: fcntl on a (possibly closed) descriptor number only queries it.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1;
        assert!(closed, "descriptor closed");
    }
}
