//! Connections as sans-I/O state machines (the model is `quinn-proto`).
//!
//! A *core* is everything a connection knows: its calls, what it has queued
//! to send, its lifecycle, its deadlines and heartbeats. It does no I/O and
//! knows no runtime. A *driver* (`client/conn.rs`, `server/conn.rs`) owns
//! the socket and the tasks; it feeds the core what happened (bytes received, a send finished, a
//! timer fired) together with the time it happened, and takes out what the
//! core wants done: a buffer of frames to send, the next instant it must be
//! called back, whether it has closed. The calls' own wakers (std
//! [`Waker`](std::task::Waker)s) are the only thing a core wakes.
//!
//! Invariants of every core:
//! - time only comes in as a `now: Instant` argument (or, for the server
//!   core's fresher readings, from a [`Clock`] the driver supplies): a core
//!   never reads a clock itself, spawns, sleeps or touches a socket, so a
//!   test drives it with a fake clock and in-memory bytes and gets the same
//!   answer every run;
//! - frames leave only through `poll_transmit`, one batch at a time (a
//!   buffer, and on a plaintext client the request blobs it sends by
//!   reference), and the batch comes back through `transmit_done` to be
//!   reused (two per connection, no allocation in steady state);
//! - `poll_timeout` is the earliest instant at which `handle_timeout` has
//!   anything to do; when a new event moves it earlier the core says so
//!   (`timeout_moved_earlier`) so the driver cuts its sleep short (the
//!   server core has no timeouts of its own: the read timeout and the drain
//!   deadline are per core, watched by the server).

pub(crate) mod client;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod segment_tests;
pub(crate) mod server;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;
pub(crate) mod tls;
#[cfg(feature = "tls")]
mod tls_record;

pub(crate) use client::{ClientCore, ClientCoreConfig, Finished};
pub(crate) use server::{CallCtx, Clock, Dispatch, Incoming, ServerCore, ServerCoreConfig};
pub(crate) use tls::TlsSession;

/// What a driver's writer takes from a core.
pub(crate) trait Transmit {
    /// The core has closed: nothing more will be sent.
    fn is_closed(&self) -> bool;
    /// The next buffer of frames to send, if any.
    fn poll_transmit(&mut self) -> Option<crate::runtime::batch::Batch>;
}

/// The next batch `core` wants sent, or `None` once it has closed. While it
/// has nothing to send, the caller's waker is parked in `writer` (the driver
/// wakes it when the core queues frames).
pub(crate) fn poll_batch<C: Transmit>(
    core: &std::cell::RefCell<C>,
    writer: &std::cell::Cell<Option<std::task::Waker>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Option<crate::runtime::batch::Batch>> {
    use std::task::Poll;
    let mut core = core.borrow_mut();
    if core.is_closed() {
        return Poll::Ready(None);
    }
    match core.poll_transmit() {
        Some(batch) => Poll::Ready(Some(batch)),
        None => {
            writer.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Finishes the frame begun at `start` on `out` with the payload `encode`
/// writes. On plaintext (`by_reference`) blobs of 1 KiB and more go into
/// `segments` instead of `out`; under TLS the records copy everything anyway.
/// On error `out` and `segments` are as they were before the frame began.
pub(crate) fn encode_frame_with(
    (out, segments): (&mut Vec<u8>, &mut Vec<crate::protocol::segment::Segment>),
    by_reference: bool,
    (start, header, max_frame): (usize, crate::protocol::FrameHeader, usize),
    encode: impl FnOnce(crate::message::Out<'_>) -> Result<(), crate::protocol::ProtocolError>,
) -> Result<(), crate::protocol::ProtocolError> {
    let first_segment = segments.len();
    let payload = crate::message::Out {
        bytes: out,
        segments: by_reference.then_some(&mut *segments),
    };
    let encoded = encode(payload).and_then(|()| {
        let new = &segments[first_segment..];
        crate::protocol::codec::finish_frame_with(out, start, header, max_frame, new)
    });
    if encoded.is_err() {
        out.truncate(start);
        segments.truncate(first_segment);
    }
    encoded
}

/// Queues a control frame (ping, pong, goaway: no payload) on `out`, with the
/// data digest flag as the connection is configured.
pub(crate) fn push_control(
    out: &mut Vec<u8>,
    kind: crate::protocol::FrameKind,
    call_id: u64,
    data_digest: bool,
    max_frame: usize,
) {
    let mut header = crate::protocol::FrameHeader::new(kind).with_data_digest(data_digest);
    header.call_id = call_id;
    // An empty payload always fits any max_frame (>= one header).
    let _ = crate::protocol::encode_frame(out, header, &[], max_frame);
}
