//! The echo workload: [`Echo`] (a `u64` id and opaque bytes) sent to a method
//! that sends both back.
//!
//! [`ECHO`] replies through a [`Responder`] with the request's bytes borrowed
//! (no copy first); [`ECHO_OWNED`] builds an owned [`Echo`] (one copy). The
//! `ringrpc` CLI, the benches and the examples use these, so a
//! `ringrpc serve` answers `ringrpc bench --connect` and the `echo_client`
//! example, and the `echo_server` example answers `ringrpc bench --connect`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringrpc::{
    Blob, Client, Cluster, Error, Method, Reply, Request, Responder, Sent, Server, ServerBuilder,
    SliceAsVec,
};

/// An echo request, and its response (the server sends the same fields back).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Echo {
    /// Caller-chosen id; the reply must carry the same one.
    pub id: u64,
    /// Opaque bytes, echoed verbatim.
    pub payload: Vec<u8>,
}

/// The caller's twin of [`Echo`] whose payload is a [`Blob`]: the same
/// archive, the payload sent by reference (from 1 KiB, on plaintext).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEcho)]
pub struct EchoBlob {
    /// Caller-chosen id; the reply must carry the same one.
    pub id: u64,
    /// Opaque bytes, echoed verbatim.
    pub payload: Blob,
}

/// The echo method, answered by [`echo`] (the reply borrows the request's bytes).
pub const ECHO: Method<Echo, Echo> = Method::new("Bench.echo");

/// The same echo answered by [`echo_owned`] (an owned reply: one copy of the bytes).
pub const ECHO_OWNED: Method<Echo, Echo> = Method::new("Bench.echo_owned");

/// Registers [`ECHO`] and [`ECHO_OWNED`] on `builder` (inline handlers).
pub fn register(builder: ServerBuilder) -> Result<ServerBuilder, ringrpc::Error> {
    builder
        .register_responder(ECHO, echo)?
        .register(ECHO_OWNED, echo_owned)
}

/// A server builder with both echo methods registered.
pub fn server() -> Result<ServerBuilder, ringrpc::Error> {
    register(Server::builder().insecure_plaintext())
}

/// A server builder whose [`ECHO`] is slow on purpose: every `every`-th call
/// (counted over the server's cores) waits `delay` before answering (an
/// async handler; the others answer at once). [`ECHO_OWNED`] is as usual.
/// What the cluster benchmark's slow server runs (`ringrpc serve --slow-ms`).
pub fn slow_server(every: u64, delay: Duration) -> Result<ServerBuilder, ringrpc::Error> {
    let calls = Arc::new(AtomicU64::new(0));
    Server::builder()
        .insecure_plaintext()
        .register_async(ECHO, move |req: Request<Echo>| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let slow = every > 0 && n % every == every - 1;
            async move {
                if slow {
                    ringrpc::runtime::io::sleep(delay).await;
                }
                Ok::<_, Infallible>(Echo {
                    id: req.id.to_native(),
                    payload: req.payload.as_slice().to_vec(),
                })
            }
        })?
        .register(ECHO_OWNED, echo_owned)
}

/// The echo response, borrowing the request's payload (archives as an `Echo`).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEcho, serialize_bounds(__S: ringrpc::BorrowSerializer))]
struct EchoRef<'a> {
    id: u64,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    payload: &'a [u8],
}

/// The handler of [`ECHO`]: sends the request's id and payload back without
/// copying them first.
pub fn echo(req: &ArchivedEcho, reply: Responder<'_, Echo>) -> Result<Sent, Infallible> {
    Ok(reply.send(&EchoRef {
        id: req.id.to_native(),
        payload: req.payload.as_slice(),
    }))
}

/// The handler of [`ECHO_OWNED`]: copies the request into an owned response.
pub fn echo_owned(req: &ArchivedEcho) -> Result<Echo, Infallible> {
    Ok(Echo {
        id: req.id.to_native(),
        payload: req.payload.as_slice().to_vec(),
    })
}

/// What [`call_loop`] calls [`ECHO`] through: a [`Client`] or a [`Cluster`]
/// (the loop is generic over it, so each gets its own call path's future,
/// nothing boxed).
pub trait EchoCaller {
    /// Calls [`ECHO`] with `req`.
    fn call_echo<'a>(
        &'a self,
        req: &'a Echo,
    ) -> impl Future<Output = Result<Reply<Echo>, Error>> + 'a;
}

/// The impl for a type whose `call` has the client's signature.
macro_rules! echo_caller {
    ($($ty:ty),*) => {$(
        impl EchoCaller for $ty {
            fn call_echo<'a>(
                &'a self,
                req: &'a Echo,
            ) -> impl Future<Output = Result<Reply<Echo>, Error>> + 'a {
                self.call(&ECHO, req)
            }
        }
    )*};
}

echo_caller!(Client, Cluster);

/// A closed-loop caller of [`ECHO`] through `caller` (a [`Client`] or a
/// [`Cluster`]): one call at a time, `payload` bytes each, ids counting up
/// from `first_id`, until `end`. Hands each call's start time and outcome to
/// `record`: `Err` for a failed call or a reply that does not echo its
/// request ([`matches()`]).
pub async fn call_loop(
    caller: &impl EchoCaller,
    first_id: u64,
    payload: usize,
    end: Instant,
    mut record: impl FnMut(Instant, Result<(), String>),
) {
    let mut req = Echo {
        id: first_id,
        payload: vec![0xA5; payload],
    };
    loop {
        let started = Instant::now();
        if started >= end {
            return;
        }
        let outcome = match caller.call_echo(&req).await {
            Ok(reply) => matches(&reply, &req),
            Err(e) => Err(e.to_string()),
        };
        record(started, outcome);
        req.id = req.id.wrapping_add(1);
    }
}

/// [`call_loop`] on a [`Client`] with the payload in a [`Blob`]
/// ([`EchoBlob`]): one blob per caller, sent by reference on every call (no
/// copy into the send buffer from 1 KiB on, on plaintext).
pub async fn call_loop_blob(
    client: &Client,
    first_id: u64,
    payload: usize,
    end: Instant,
    mut record: impl FnMut(Instant, Result<(), String>),
) {
    let mut req = EchoBlob {
        id: first_id,
        payload: Blob::from(vec![0xA5; payload]),
    };
    loop {
        let started = Instant::now();
        if started >= end {
            return;
        }
        let outcome = match client.call_borrowed(&ECHO, &req).await {
            Ok(reply) => matches_parts(&reply, req.id, payload),
            Err(e) => Err(e.to_string()),
        };
        record(started, outcome);
        req.id = req.id.wrapping_add(1);
    }
}

/// Whether `reply` echoes `req` (same id, same payload length).
pub fn matches(reply: &ArchivedEcho, req: &Echo) -> Result<(), String> {
    matches_parts(reply, req.id, req.payload.len())
}

/// Whether `reply` echoes a request of id `id` with `len` bytes of payload.
pub fn matches_parts(reply: &ArchivedEcho, id: u64, len: usize) -> Result<(), String> {
    let got_id = reply.id.to_native();
    if got_id != id {
        return Err(format!("reply id {got_id:#x} for request id {id:#x}"));
    }
    let got = reply.payload.len();
    if got != len {
        return Err(format!("reply payload of {got} bytes, sent {len}"));
    }
    Ok(())
}
