//! Responders: how a handler registered with
//! [`ServerBuilder::register_responder`](super::ServerBuilder::register_responder)
//! sends its response.
//!
//! A [`Responder`] serialises the response straight into the connection's send
//! buffer while the handler still holds the request, so the response may borrow
//! from it (or from anything else the handler can reach) instead of copying into
//! an owned value first. Invariants: a responder sends at most one response (it
//! is consumed by [`Responder::send`]); [`Sent`] can only be obtained from
//! `send`, so a handler that returns `Ok` has answered; once a response is sent,
//! nothing else is ever sent for that call (a later error or panic of the
//! handler is logged and dropped).

use std::cell::Cell;
use std::marker::PhantomData;

use rkyv::Archive;

use super::conn::{CallCtx, ConnShared};
use crate::message::Message;

/// Sends the response of one call; see
/// [`ServerBuilder::register_responder`](super::ServerBuilder::register_responder).
pub struct Responder<'a, Resp> {
    conn: &'a ConnShared,
    ctx: &'a CallCtx,
    sent: &'a Cell<bool>,
    _resp: PhantomData<fn(Resp)>,
}

/// Proof that a [`Responder`] sent its response (the `Ok` value of a responder handler).
///
/// Dropping it changes nothing (the response is already queued); it exists to
/// be returned, so a handler that returns `Ok` is known to have answered.
#[must_use = "return the Sent from the responder handler (Ok(sent))"]
#[derive(Debug)]
pub struct Sent(());

impl<'a, Resp: Message> Responder<'a, Resp> {
    pub(crate) fn new(conn: &'a ConnShared, ctx: &'a CallCtx, sent: &'a Cell<bool>) -> Self {
        Self {
            conn,
            ctx,
            sent,
            _resp: PhantomData,
        }
    }

    /// Serialises `value` as the response and queues it for sending.
    ///
    /// `value` may be the method's response type itself or any type that
    /// archives exactly as it does (`#[rkyv(as = ArchivedResp)]`), typically one
    /// that borrows its bytes with [`SliceAsVec`](crate::SliceAsVec). If
    /// serialisation fails, the caller gets an application error instead.
    pub fn send<T>(self, value: &T) -> Sent
    where
        T: Message + Archive<Archived = Resp::Archived>,
    {
        self.sent.set(true);
        self.conn.push_response(self.ctx, value);
        Sent(())
    }
}

impl<Resp> std::fmt::Debug for Responder<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Responder(call {:#x})", self.ctx.call_id)
    }
}
