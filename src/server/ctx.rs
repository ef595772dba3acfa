//! A handler's view of its call: [`Ctx`].
//!
//! It carries the call's deadline (so a handler can pass the remaining
//! budget on: [`CallOptions::inherit`](crate::CallOptions::inherit)), the
//! peer's address, the core the call runs on, the call's metadata (read in
//! place in the receive buffer), the caller's verified TLS identity (mutual
//! TLS) and, for async handlers, the cancellation
//! signal a cancel frame from the caller raises.
//!
//! Invariants: a `Ctx` never allocates for a call without metadata; once
//! cancelled it stays cancelled; the handler future of a cancelled call is
//! dropped right after the signal is raised (so drop guards in the handler
//! see it) and its answer is never sent.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::protocol::metadata::MetadataView;
use crate::runtime::buf::FrameBytes;
use crate::tls::PeerIdentity;

/// The context of one call, handed to handlers registered with
/// [`ServerBuilder::register_with_ctx`](crate::ServerBuilder::register_with_ctx)
/// or [`ServerBuilder::register_async_with_ctx`](crate::ServerBuilder::register_async_with_ctx).
pub struct Ctx {
    pub(crate) call_id: u64,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: SocketAddr,
    pub(crate) core: usize,
    pub(crate) metadata: Option<FrameBytes>,
    pub(crate) cancel: Option<Rc<CancelSignal>>,
    pub(crate) state: Option<Rc<dyn Any>>,
    pub(crate) identity: Option<Rc<PeerIdentity>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("call_id", &self.call_id)
            .field("deadline", &self.deadline)
            .field("peer", &self.peer)
            .field("core", &self.core)
            .field("metadata", &self.metadata().iter().count())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Ctx {
    /// The call's wire id (unique among the calls in flight on its connection).
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// When the caller stops waiting, if it sent a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The budget left now (zero once spent), if the caller sent a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The caller's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The caller's verified TLS identity: its certificate's subject, DNS and
    /// URI SANs (so its SPIFFE ID). `None` on a plaintext connection or when
    /// the client presented no certificate (a server without mutual TLS).
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }

    /// The index of the runtime core the call runs on.
    pub fn core(&self) -> usize {
        self.core
    }

    /// This core's state, made by
    /// [`ServerBuilder::with_state`](crate::ServerBuilder::with_state), if it
    /// has one of type `S`.
    pub fn state<S: 'static>(&self) -> Option<&S> {
        self.state.as_deref()?.downcast_ref::<S>()
    }

    /// The call's metadata (empty if it sent none), read in place.
    pub fn metadata(&self) -> MetadataView<'_> {
        self.metadata
            .as_deref()
            .map(MetadataView::from_validated)
            .unwrap_or_default()
    }

    /// True once the caller cancelled the call (async handlers only; an
    /// inline handler finishes before a cancel can be read).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.cancelled.get())
    }

    /// Resolves when the caller cancels the call (never, for inline handlers).
    pub async fn cancelled(&self) {
        let Some(cancel) = &self.cancel else {
            return std::future::pending().await;
        };
        poll_fn(|cx| {
            if cancel.cancelled.get() {
                Poll::Ready(())
            } else {
                cancel.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The cancellation signal shared by an async handler's `Ctx` and its connection.
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    cancelled: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl CancelSignal {
    /// Raises the signal (once) and wakes whoever waits on it.
    pub fn cancel(&self) {
        if !self.cancelled.replace(true) {
            self.wakers.borrow_mut().drain(..).for_each(Waker::wake);
        }
    }
}
