//! A core's inbox: how other threads reach it.
//!
//! Jobs (closures sent by [`Runtime`](super::Runtime) and server handles) and
//! tasks woken from another thread are queued here under a mutex, and the core
//! is kicked through an eventfd that its ring keeps a read armed on. The kick
//! is written only when the inbox goes from "seen" to "has news" (`notified`),
//! so a burst of messages costs one write. Nothing on a core's hot path goes
//! through here. Invariant: after `stop`, no job is accepted; jobs still queued
//! are dropped with the core (their result channels report shutdown).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_task::Runnable;

/// Work sent to a core from any thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queued {
    jobs: Vec<Job>,
    runnables: Vec<Runnable>,
}

/// One core's cross-thread queue and its eventfd.
pub(crate) struct Inbox {
    queued: Mutex<Queued>,
    notified: AtomicBool,
    stopped: AtomicBool,
    event: OwnedFd,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("stopped", &self.stopped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            queued: Mutex::default(),
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The eventfd the core's ring reads.
    pub fn event_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; `false` once the core has stopped.
    pub fn push_job(&self, job: Job) -> bool {
        {
            let mut q = self.lock();
            if self.stopped.load(Ordering::Acquire) {
                return false;
            }
            q.jobs.push(job);
        }
        self.kick();
        true
    }

    /// Queues a task woken on another thread.
    pub fn push_runnable(&self, runnable: Runnable) {
        self.lock().runnables.push(runnable);
        self.kick();
    }

    /// Asks the core to stop after its current turn.
    pub fn stop(&self) {
        let _guard = self.lock();
        self.stopped.store(true, Ordering::Release);
        drop(_guard);
        self.notified.store(false, Ordering::Release);
        self.kick();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn kick(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            let _ =
                unsafe { libc::write(self.event.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
        }
    }

    /// Takes everything queued, news or not (used when the core stops, so no
    /// task is left behind in the queue holding this inbox alive).
    pub fn drain(&self, jobs: &mut Vec<Job>, runnables: &mut Vec<Runnable>) {
        let mut q = self.lock();
        jobs.append(&mut q.jobs);
        runnables.append(&mut q.runnables);
    }

    /// Takes everything queued if there is news (called once per turn).
    pub fn take(&self, jobs: &mut Vec<Job>, runnables: &mut Vec<Runnable>) {
        // A plain load first: the locked swap only when there is news (a
        // push seen late is seen next turn; its kick wakes the core anyway).
        if !self.notified.load(Ordering::Relaxed) || !self.notified.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut q = self.lock();
        jobs.append(&mut q.jobs);
        runnables.append(&mut q.runnables);
    }
}
