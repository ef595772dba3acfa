//! The per-core io_uring driver: one ring per core thread, owned by that thread.
//!
//! Operations are pushed onto the submission queue as tasks make them and the
//! whole queue is submitted once per scheduler turn (a send can ask to go out
//! at once with [`submit_now`]); the core then reaps every completion in one
//! pass and wakes the tasks waiting for them. When no task is ready the core
//! waits in the same `io_uring_enter` that submits, with the nearest timer as
//! the wait's timeout, so timers cost no syscall and no operation.
//! The memory ownership rule of in-flight operations is in [`ops`].
//! io_uring types never leave `runtime/`: the rest of the crate sees plain async
//! functions in `runtime::io`.

mod ops;
mod setup;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

pub(crate) use ops::Hold;
use ops::{OpTable, Reaped, CANCEL_USER_DATA, WAKE_USER_DATA};

use super::bufring::{self, RingShape};
pub(crate) use setup::RingConfig;
pub use setup::RingFlags;

/// One core's ring and its table of operations in flight.
pub(crate) struct Driver {
    ring: IoUring,
    ops: OpTable,
    /// Wakers collected while reaping, woken after the driver is released.
    woken: Vec<Waker>,
    /// The eventfd other threads write to wake this core, and its read target.
    wake_fd: RawFd,
    wake_buf: &'static mut [u8; 8],
    wake_armed: bool,
    /// Sends of at least this many bytes go zero-copy (`None`: never).
    send_zc: Option<usize>,
    /// The last busy turn left its arrived completions in the kernel (see
    /// [`turn`]); the next one collects them.
    reap_deferred: bool,
}

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's driver; `None` off a ringrpc core.
fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    DRIVER.with(|d| d.borrow_mut().as_mut().map(f))
}

fn not_on_core() -> io::Error {
    io::Error::other("not on a ringrpc core thread")
}

/// Creates this thread's ring; `wake_fd` is the eventfd that other threads
/// write to wake it. Returns the flags the kernel granted. With `buffers`, a
/// provided-buffer ring of that shape is registered for multishot receives
/// (left out, with a warning, where the kernel has none).
pub(crate) fn install(
    cfg: &RingConfig,
    buffers: Option<RingShape>,
    wake_fd: RawFd,
) -> io::Result<RingFlags> {
    let (ring, mut flags) = setup::build(cfg)?;
    if let Some(shape) = buffers {
        let submitter = ring.submitter();
        let registered = bufring::install(shape, |addr, entries, group, ring_flags| {
            // SAFETY: `addr` is the page-aligned entry array the buffer ring
            // allocated with `entries` entries; it stays allocated until the
            // io_uring is dropped (bufring::uninstall runs after it).
            unsafe { submitter.register_buf_ring_with_flags(addr, entries, group, ring_flags) }
        });
        match registered {
            Ok(()) => flags.buffer_ring = true,
            Err(e) => tracing::warn!(error = %e, "no provided-buffer ring: plain receives"),
        }
    }
    let driver = Driver {
        ring,
        ops: OpTable::default(),
        woken: Vec::with_capacity(256),
        wake_fd,
        // Leaked on purpose (8 bytes per core thread): the kernel may still
        // complete the wake-up read while a dropped ring is torn down.
        wake_buf: Box::leak(Box::new([0; 8])),
        wake_armed: false,
        send_zc: cfg.send_zc,
        reap_deferred: false,
    };
    DRIVER.with(|d| *d.borrow_mut() = Some(driver));
    Ok(flags)
}

/// Removes this thread's ring. It is closed if no operation is in flight;
/// otherwise it is leaked with the memory its operations hold, since the
/// kernel may still write there.
pub(crate) fn uninstall() {
    if let Some(driver) = DRIVER.with(|d| d.borrow_mut().take()) {
        if driver.ops.len() > 0 {
            std::mem::forget(driver);
            return;
        }
        drop(driver);
        bufring::uninstall();
    }
}

/// Operations the kernel has not completed yet (including abandoned ones).
pub(crate) fn in_flight() -> usize {
    with(|d| d.ops.len()).unwrap_or(0)
}

/// Operations the kernel still holds (see `OpTable::kernel_held`).
pub(crate) fn kernel_held() -> usize {
    with(|d| d.ops.kernel_held()).unwrap_or(0)
}

/// Asks the kernel to cancel every operation in flight (at core exit: ops
/// owned by values that outlive the tasks, such as a client kept in a
/// thread-local, would otherwise hold the exit up). Needs Linux 5.19; on an
/// older kernel the request fails and the core waits for them instead.
pub(crate) fn cancel_all() {
    with(|d| {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_USER_DATA);
        // SAFETY: a cancel points to no memory.
        let _ = unsafe { d.push(&cancel) };
    });
}

impl Driver {
    /// Pushes one entry, submitting first if the queue is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid until its completion
    /// (the [`ops`] ownership rule).
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded to the caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit(false)?;
        }
    }

    fn submit(&mut self, wait: bool) -> io::Result<()> {
        let res = if wait {
            self.ring.submit_and_wait(1)
        } else {
            self.ring.submit()
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What the kernel has to do for this core: whether entries are queued
    /// to submit (or completions overflowed), and whether completions have
    /// arrived that only an enter collects (`IORING_SQ_TASKRUN`).
    fn kernel_work(&mut self) -> (bool, bool) {
        let sq = self.ring.submission();
        (!sq.is_empty() || sq.cq_overflow(), sq.taskrun())
    }

    fn arm_wake_read(&mut self) {
        if self.wake_armed {
            return;
        }
        let entry = opcode::Read::new(types::Fd(self.wake_fd), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE_USER_DATA);
        // SAFETY: `wake_buf` is leaked, so it outlives the ring and the read.
        if unsafe { self.push(&entry) }.is_ok() {
            self.wake_armed = true;
        }
    }

    /// Moves every completion into the op table; the wakers go to `self.woken`.
    fn reap(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            match cqe.user_data() {
                CANCEL_USER_DATA => {}
                WAKE_USER_DATA => self.wake_armed = false,
                user_data => match self.ops.complete(user_data, cqe.result(), cqe.flags()) {
                    Reaped::Wake(waker) => self.woken.push(waker),
                    Reaped::Done => {}
                    Reaped::Orphan => return_buffer(cqe.result(), cqe.flags()),
                },
            }
        }
    }
}

/// Submits what is queued and reaps completions without blocking, or, with
/// `wait`, blocks until a completion, a cross-thread wake-up or `wait`'s
/// timeout (`Some(None)`: no timeout). Wakes the tasks whose operations finished.
pub(crate) fn turn(wait: Option<Option<Duration>>) -> io::Result<()> {
    let mut woken = with(|d| -> io::Result<Vec<Waker>> {
        d.arm_wake_read();
        match wait {
            None => {
                let (must_enter, arrived) = d.kernel_work();
                // Completions wait in the kernel until an enter collects them.
                // With tasks still ready and nothing to submit, one turn goes
                // without: what arrives meanwhile comes back in the same batch
                // (fewer, larger batches; docs/benchmarks.md, "Read chunks").
                if must_enter || (arrived && d.reap_deferred) {
                    d.reap_deferred = false;
                    d.submit(false)?;
                } else {
                    d.reap_deferred = arrived;
                }
            }
            Some(None) => {
                d.reap_deferred = false;
                d.submit(true)?;
            }
            Some(Some(timeout)) => {
                d.reap_deferred = false;
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                match d.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        d.reap();
        Ok(std::mem::take(&mut d.woken))
    })
    .ok_or_else(not_on_core)??;
    for waker in woken.drain(..) {
        waker.wake();
    }
    // Give the (now empty) vector back so its capacity is reused.
    with(|d| {
        if d.woken.capacity() < woken.capacity() {
            d.woken = woken;
        }
    });
    Ok(())
}

/// True when nothing is queued for the kernel and no completion waits to be
/// collected: no submission queue entries, no completion queue entries or
/// overflow, and no deferred completion work flagged (`IORING_SQ_TASKRUN`).
pub(crate) fn quiet() -> bool {
    with(|d| d.kernel_work() == (false, false) && d.ring.completion().is_empty()).unwrap_or(false)
}

/// Whether a send of `len` bytes should go zero-copy on this core.
pub(crate) fn use_send_zc(len: usize) -> bool {
    with(|d| d.send_zc.is_some_and(|min| len >= min)).unwrap_or(false)
}

/// Stops using `SEND_ZC` on this core (the socket type does not support it).
pub(crate) fn disable_send_zc() {
    with(|d| d.send_zc = None);
}

/// Submits the queued operations now instead of at the end of the turn, so the
/// kernel starts on them while this core works on.
pub(crate) fn submit_now() {
    with(|d| d.submit(false));
}

/// An operation in flight: resolves to its result and gives back its hold.
#[must_use = "an operation does nothing useful unless awaited"]
pub(crate) struct Op {
    user_data: u64,
    hold: Hold,
    done: bool,
}

impl Op {
    /// Queues `entry` with `hold` as the memory it uses.
    ///
    /// # Safety
    /// Every buffer `entry` points to must lie inside `hold` (or be memory that
    /// outlives the operation): the driver keeps `hold` alive until the kernel
    /// completes the entry, even if the `Op` is dropped first.
    pub unsafe fn submit(entry: squeue::Entry, hold: Hold) -> Result<Op, (io::Error, Hold)> {
        let pushed = with(|d| {
            let user_data = d.ops.insert();
            // SAFETY: the hold is kept until the completion (caller + ops rule).
            match unsafe { d.push(&entry.user_data(user_data)) } {
                Ok(()) => Ok(user_data),
                Err(e) => {
                    d.ops.complete(user_data, 0, 0);
                    let _ = d.ops.abandon(user_data, Hold::None);
                    Err(e)
                }
            }
        });
        match pushed {
            Some(Ok(user_data)) => Ok(Op {
                user_data,
                hold,
                done: false,
            }),
            Some(Err(e)) => Err((e, hold)),
            None => Err((not_on_core(), hold)),
        }
    }
}

impl Future for Op {
    type Output = (io::Result<u32>, Hold);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let user_data = self.user_data;
        let polled = with(|d| d.ops.poll(user_data, cx)).unwrap_or(Poll::Ready(-libc::ECANCELED));
        polled.map(|res| {
            self.done = true;
            let hold = std::mem::replace(&mut self.hold, Hold::None);
            let result = u32::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res));
            (result, hold)
        })
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let hold = std::mem::replace(&mut self.hold, Hold::None);
        let user_data = self.user_data;
        with(|d| {
            if d.ops.abandon(user_data, hold) {
                let cancel = opcode::AsyncCancel::new(user_data)
                    .build()
                    .user_data(CANCEL_USER_DATA);
                // SAFETY: a cancel points to no memory.
                let _ = unsafe { d.push(&cancel) };
            }
        });
    }
}

/// Returns the buffer a completion nobody will read carries.
fn return_buffer(res: i32, flags: u32) {
    if let Some(bid) = consumed_buffer(res, flags) {
        if bufring::take(bid, res as usize).is_some() {
            bufring::release(bid);
        }
    }
}

/// The ring buffer a receive completion took from the ring, if any.
///
/// A completion can name a buffer (`IORING_CQE_F_BUFFER`) that the kernel did
/// not take: on an error result it leaves the buffer at the ring's head (it
/// commits only results >= 0). Treating that buffer as ours and providing it
/// again would put it in the ring twice, so two receives could fill it at once.
pub(crate) fn consumed_buffer(res: i32, flags: u32) -> Option<u16> {
    io_uring::cqueue::buffer_select(flags).filter(|_| res >= 0)
}

/// One completion of a multishot receive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes received, or the negated errno (`0`: end of stream).
    pub res: i32,
    /// The ring buffer the kernel took for this completion (the bytes are in
    /// it; it is ours to return even when `res` is 0).
    pub buffer: Option<u16>,
}

/// A multishot receive on one socket; dropping it cancels the operation and
/// returns the buffers of completions nobody took.
pub(crate) struct Multishot {
    user_data: u64,
    ended: bool,
}

impl std::fmt::Debug for Multishot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multishot")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Multishot {
    /// Arms a multishot receive on `fd` into this core's buffer ring.
    pub fn recv(fd: RawFd) -> io::Result<Self> {
        let entry = opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP).build();
        with(|d| {
            let user_data = d.ops.insert_multishot();
            // SAFETY: the receive writes only into provided buffers, which the
            // buffer ring owns and lends out per completion.
            match unsafe { d.push(&entry.user_data(user_data)) } {
                Ok(()) => Ok(Multishot {
                    user_data,
                    ended: false,
                }),
                Err(e) => {
                    d.ops.abandon_multishot(user_data);
                    d.ops.complete(user_data, 0, 0);
                    Err(e)
                }
            }
        })
        .ok_or_else(not_on_core)?
    }

    /// The next completion; `None` once the operation has ended (re-arm then).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let user_data = self.user_data;
        let polled = with(|d| d.ops.poll_event(user_data, cx)).unwrap_or(Poll::Ready(None));
        polled.map(|event| {
            let Some((res, flags)) = event else {
                self.ended = true;
                return None;
            };
            let buffer = consumed_buffer(res, flags);
            Some(Received { res, buffer })
        })
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let user_data = self.user_data;
        let left = with(|d| {
            let (left, running) = d.ops.abandon_multishot(user_data);
            if running {
                let cancel = opcode::AsyncCancel::new(user_data)
                    .build()
                    .user_data(CANCEL_USER_DATA);
                // SAFETY: a cancel points to no memory.
                let _ = unsafe { d.push(&cancel) };
            }
            left
        });
        for (res, flags) in left.into_iter().flatten() {
            return_buffer(res, flags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::consumed_buffer;

    const F_BUFFER: u32 = 1; // IORING_CQE_F_BUFFER; the id is in the top 16 bits

    #[test]
    fn only_a_completion_with_a_result_took_its_buffer() {
        let flags = F_BUFFER | (7 << 16);
        assert_eq!(consumed_buffer(100, flags), Some(7), "data");
        assert_eq!(
            consumed_buffer(0, flags),
            Some(7),
            "end of stream still took it"
        );
        assert_eq!(
            consumed_buffer(-libc::ECANCELED, flags),
            None,
            "an error leaves the buffer in the ring"
        );
        assert_eq!(consumed_buffer(100, 0), None, "no buffer flag");
    }
}
