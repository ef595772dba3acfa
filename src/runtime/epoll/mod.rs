//! The per-core epoll driver (on `mio`): the readiness-based twin of the
//! io_uring `driver`, for hosts that refuse io_uring.
//!
//! Each core owns one `mio::Poll` (an epoll instance, edge-triggered) and a
//! slab of registered sockets ([`Source`]), each with a read and a write half:
//! a readiness flag and the waker of the task waiting on it. Socket calls are
//! tried first, non-blocking, straight from the task (`epoll::io`); only a
//! call that would block clears its half's flag and parks the task, and the
//! next turn's `epoll_wait` sets the flag again and wakes it. The cross-thread
//! inbox is the same eventfd as under io_uring, registered for reading. Timers
//! are the wait's timeout, as under io_uring. One `epoll_wait` per scheduler
//! turn (with a zero timeout while tasks are ready).
//!
//! Invariants: a half's flag is cleared only by the task that just saw
//! `EAGAIN`, in the same poll in which it registers its waker, and events are
//! only processed between task polls, so no edge is lost; a registration is
//! keyed by slab index + generation, so an event can never reach a reused
//! slot; nothing is lent to the kernel, so a dropped future frees everything
//! at once. Steady state allocates nothing: the slab, the event buffer and
//! the woken list keep their capacity, and wakers are task handles.

pub(crate) mod io;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io as stdio;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use slab::Slab;

/// The inbox eventfd's token (slab keys never reach it).
const WAKE: Token = Token(usize::MAX);

/// Socket operations one core may complete in a row without an epoll turn
/// before the task doing them yields (a peer that keeps the socket full
/// must not keep the core from its timers and other connections).
const BUDGET: u32 = 64;

/// One direction of a registered socket.
#[derive(Default)]
struct Half {
    /// The last non-blocking call did not hit `EAGAIN`, or an event came since.
    ready: bool,
    /// The peer closed this direction (or the socket failed): no event will
    /// follow, so the half stays ready for good and every call returns at once
    /// (end of stream or the error). Without it, a FIN that came in the same
    /// edge as the last bytes would be lost once a short read marked the half
    /// drained.
    closed: bool,
    waker: Option<Waker>,
}

impl Half {
    /// Marks the half ready (for good if `closed`) and hands out the waiting
    /// task's waker.
    fn fire(&mut self, closed: bool, woken: &mut Vec<Waker>) {
        self.ready = true;
        self.closed |= closed;
        if let Some(w) = self.waker.take() {
            woken.push(w);
        }
    }
}

struct Registered {
    generation: u32,
    read: Half,
    write: Half,
}

/// One core's epoll instance and its registered sockets.
struct Poller {
    poll: mio::Poll,
    events: Events,
    sources: Slab<Registered>,
    next_generation: u32,
    wake_fd: RawFd,
    /// Wakers collected while handling events, woken after the poller is released.
    woken: Vec<Waker>,
}

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
    /// Operations completed without an epoll turn (see [`BUDGET`]).
    static SPENT: Cell<u32> = const { Cell::new(0) };
}

fn with<R>(f: impl FnOnce(&mut Poller) -> R) -> Option<R> {
    POLLER.with(|p| p.borrow_mut().as_mut().map(f))
}

fn not_on_core() -> stdio::Error {
    stdio::Error::other("not on a ringrpc core thread")
}

/// A token's slab index and generation (the generation lives in the upper 32
/// bits, where `usize` has them; a 32-bit target keeps the index only).
fn key(token: Token) -> (usize, u32) {
    let generation = token.0.checked_shr(32).unwrap_or(0);
    (token.0 & 0xffff_ffff, generation as u32)
}

fn token(index: usize, generation: u32) -> Token {
    let generation = usize::try_from(generation).unwrap_or(0);
    Token(generation.checked_shl(32).unwrap_or(0) | index)
}

/// Creates this thread's epoll instance; `wake_fd` is the eventfd that other
/// threads write to wake it (made non-blocking here: the core drains it).
pub(crate) fn install(wake_fd: RawFd) -> stdio::Result<()> {
    let poll = mio::Poll::new()?;
    // SAFETY: fcntl on a descriptor the inbox owns for the core's life; only
    // its status flags change.
    let set = unsafe {
        let flags = libc::fcntl(wake_fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(wake_fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !set {
        return Err(stdio::Error::last_os_error());
    }
    poll.registry()
        .register(&mut SourceFd(&wake_fd), WAKE, Interest::READABLE)?;
    let poller = Poller {
        poll,
        events: Events::with_capacity(1024),
        sources: Slab::with_capacity(64),
        next_generation: 0,
        wake_fd,
        woken: Vec::with_capacity(256),
    };
    POLLER.with(|p| *p.borrow_mut() = Some(poller));
    Ok(())
}

/// Removes this thread's epoll instance (sockets still open keep working as
/// plain descriptors; their registrations go with the instance).
pub(crate) fn uninstall() {
    let poller = POLLER.with(|p| p.borrow_mut().take());
    drop(poller);
}

/// Waits for events (up to `wait`'s timeout; `None`: do not block, `Some(None)`:
/// no timeout) and wakes the tasks whose sockets became ready.
pub(crate) fn turn(wait: Option<Option<Duration>>) -> stdio::Result<()> {
    SPENT.with(|s| s.set(0));
    let mut woken = with(|p| -> stdio::Result<Vec<Waker>> {
        let timeout = wait.unwrap_or(Some(Duration::ZERO));
        match p.poll.poll(&mut p.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == stdio::ErrorKind::Interrupted => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        let mut drain = false;
        for event in p.events.iter() {
            if event.token() == WAKE {
                drain = true;
                continue;
            }
            let (index, generation) = key(event.token());
            let Some(source) = p
                .sources
                .get_mut(index)
                .filter(|s| s.generation == generation || usize::BITS < 64)
            else {
                continue;
            };
            let error = event.is_error();
            if error || event.is_readable() || event.is_read_closed() {
                source
                    .read
                    .fire(error || event.is_read_closed(), &mut p.woken);
            }
            if error || event.is_writable() || event.is_write_closed() {
                source
                    .write
                    .fire(error || event.is_write_closed(), &mut p.woken);
            }
        }
        if drain {
            let mut counter = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live local array from the
            // (non-blocking) eventfd; the result does not matter.
            let _ = unsafe { libc::read(p.wake_fd, counter.as_mut_ptr().cast(), 8) };
        }
        Ok(std::mem::take(&mut p.woken))
    })
    .ok_or_else(not_on_core)??;
    for waker in woken.drain(..) {
        waker.wake();
    }
    with(|p| {
        if p.woken.capacity() < woken.capacity() {
            p.woken = woken;
        }
    });
    Ok(())
}

/// Which half of a [`Source`] an operation waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Readable (data, a peer's FIN, an error, a pending connection).
    Read,
    /// Writable (room in the send buffer, a finished connect, an error).
    Write,
}

/// A socket registered with its core's epoll instance (read and write,
/// edge-triggered); dropping it removes the registration.
#[derive(Debug)]
pub(crate) struct Source {
    fd: RawFd,
    index: usize,
    generation: u32,
}

impl Source {
    /// Registers `fd` (which must outlive the `Source`) with this core's poller.
    pub fn register(fd: RawFd) -> stdio::Result<Self> {
        with(|p| {
            let generation = p.next_generation;
            p.next_generation = generation.wrapping_add(1);
            let entry = p.sources.vacant_entry();
            let index = entry.key();
            p.poll.registry().register(
                &mut SourceFd(&fd),
                token(index, generation),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            entry.insert(Registered {
                generation,
                read: Half {
                    ready: true,
                    closed: false,
                    waker: None,
                },
                write: Half {
                    ready: true,
                    closed: false,
                    waker: None,
                },
            });
            Ok(Source {
                fd,
                index,
                generation,
            })
        })
        .ok_or_else(not_on_core)?
    }

    fn half<R>(&self, dir: Dir, f: impl FnOnce(&mut Half) -> R) -> Option<R> {
        with(|p| {
            p.sources
                .get_mut(self.index)
                .filter(|s| s.generation == self.generation)
                .map(|s| match dir {
                    Dir::Read => f(&mut s.read),
                    Dir::Write => f(&mut s.write),
                })
        })
        .flatten()
    }

    /// Waits until `dir` is ready, after a call that would have blocked:
    /// clears the flag and parks until the next event for it.
    pub async fn blocked(&self, dir: Dir) -> stdio::Result<()> {
        self.drained(dir);
        self.ready(dir).await
    }

    /// Notes that `dir` has nothing more for now (a call would block, or a
    /// receive came back short: the socket's queue is empty); the next call
    /// waits for an event first.
    pub fn drained(&self, dir: Dir) {
        self.half(dir, |h| h.ready = h.closed);
    }

    /// True unless a call found `dir` drained since its last event (then
    /// [`ready`](Self::ready) would wait).
    pub fn is_ready(&self, dir: Dir) -> bool {
        self.half(dir, |h| h.ready).unwrap_or(true)
    }

    /// Waits until `dir` is ready (at once if no call found it drained since
    /// its last event).
    pub async fn ready(&self, dir: Dir) -> stdio::Result<()> {
        poll_fn(|cx| {
            let ready = self.half(dir, |h| {
                if h.ready {
                    return true;
                }
                if !h.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    h.waker = Some(cx.waker().clone());
                }
                false
            });
            match ready {
                Some(true) => Poll::Ready(Ok(())),
                Some(false) => Poll::Pending,
                None => Poll::Ready(Err(not_on_core())),
            }
        })
        .await
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // `try_with`: a socket dropped while the thread's locals are torn down.
        let _ = POLLER.try_with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                if p.sources
                    .get(self.index)
                    .is_some_and(|s| s.generation == self.generation)
                {
                    p.sources.remove(self.index);
                    let _ = p.poll.registry().deregister(&mut SourceFd(&self.fd));
                }
            }
        });
    }
}

/// Counts one operation finished without waiting; `true` once the core's
/// budget between two turns is spent (the caller yields, then goes on).
pub(crate) fn spend() -> bool {
    SPENT.with(|s| {
        let n = s.get() + 1;
        s.set(n);
        n > BUDGET
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_index_and_generation() {
        assert_eq!(key(token(42, 7)), (42, 7));
        assert_ne!(key(WAKE), key(Token(0)));
    }
}
