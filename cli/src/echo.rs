//! The benchmark workload: one echo message type and the `Bench.echo` method.
//!
//! Shared by `ringrpc bench` (the embedded server and the callers) and
//! `ringrpc serve`, so the two processes of a `serve` + `bench --connect` run
//! agree on the wire types.

use std::convert::Infallible;

use ringrpc::{Method, Responder, Sent, Server, ServerBuilder, SliceAsVec};

/// An echo request, and its response (the server sends the same fields back).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Echo {
    /// Caller-chosen id; the reply must carry the same one.
    pub id: u64,
    /// Opaque bytes, echoed verbatim.
    pub payload: Vec<u8>,
}

/// The one method the benchmark calls.
pub const ECHO: Method<Echo, Echo> = Method::new("Bench.echo");

/// A server builder with `Bench.echo` registered as an inline handler that
/// replies with the request's bytes (`register_responder`, no copy first).
pub fn server() -> Result<ServerBuilder, ringrpc::Error> {
    Server::builder().register_responder(ECHO, echo)
}

/// The echo response, borrowing the request's payload (archives as an `Echo`).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEcho, serialize_bounds(__S: ringrpc::BorrowSerializer))]
struct EchoRef<'a> {
    id: u64,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    payload: &'a [u8],
}

/// Sends the request's id and payload back.
fn echo(req: &ArchivedEcho, reply: Responder<'_, Echo>) -> Result<Sent, Infallible> {
    Ok(reply.send(&EchoRef {
        id: req.id.to_native(),
        payload: req.payload.as_slice(),
    }))
}

/// Whether `reply` echoes `req` (same id, same payload length).
pub fn matches(reply: &ArchivedEcho, req: &Echo) -> Result<(), String> {
    let id = reply.id.to_native();
    if id != req.id {
        return Err(format!("reply id {id:#x} for request id {:#x}", req.id));
    }
    let (got, want) = (reply.payload.len(), req.payload.len());
    if got != want {
        return Err(format!("reply payload of {got} bytes, sent {want}"));
    }
    Ok(())
}
