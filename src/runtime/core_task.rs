//! Waiting for work sent to a core from outside it: [`CoreTask`] (a `Send`
//! future over a oneshot channel) and [`wait`], a minimal park-and-poll
//! executor for threads that have none.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_channel::oneshot;

use crate::Error;

/// The result of work sent to a core with [`Runtime::spawn_on`](super::Runtime::spawn_on).
///
/// Wait for it by blocking ([`join`](Self::join)) or by awaiting it: a
/// `CoreTask` is a `Send` future that any executor can poll (a tokio task
/// does not block its worker thread on it). Dropping it does **not** cancel
/// the task: the future runs to completion on its core and its output is
/// discarded.
#[must_use = "dropping a CoreTask discards the task's output (the task still runs); await it or call .join()"]
pub struct CoreTask<T> {
    rx: oneshot::Receiver<T>,
}

impl<T> std::fmt::Debug for CoreTask<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTask").finish_non_exhaustive()
    }
}

impl<T> CoreTask<T> {
    /// The task whose output arrives on `rx`.
    pub(super) fn new(rx: oneshot::Receiver<T>) -> Self {
        Self { rx }
    }

    /// Blocks until the task finishes. Fails with [`Error::Shutdown`] if the task
    /// panicked or its core stopped first. Do not call it on a thread that
    /// runs an async executor (await the `CoreTask` there instead).
    pub fn join(self) -> Result<T, Error> {
        wait(self)
    }
}

impl<T> Future for CoreTask<T> {
    /// The task's output, or [`Error::Shutdown`] as for [`CoreTask::join`].
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| Error::Shutdown))
    }
}

/// Wakes a thread parked in [`wait`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on the calling thread, parking it between
/// polls: a minimal executor for a thread that has none, e.g. to wait for a
/// `Handle` call or a [`CoreTask`] from plain synchronous
/// code. Not for a thread that runs an executor (a tokio worker: await there)
/// nor a ringrpc core (it would stop the core's loop).
pub fn wait<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
