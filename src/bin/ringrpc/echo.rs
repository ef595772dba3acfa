//! The benchmark workload: one echo message type and the `Bench.echo` method.
//!
//! Shared by `ringrpc bench` (the embedded server and the callers) and
//! `ringrpc serve`, so the two processes of a `serve` + `bench --connect` run
//! agree on the wire types.

use std::convert::Infallible;

use ringrpc::{Method, Server, ServerBuilder};

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

/// A server builder with `Bench.echo` registered as a sync (inline) handler.
pub fn server() -> Result<ServerBuilder, ringrpc::Error> {
    Server::builder().register(ECHO, echo)
}

/// Copies the archived request into a response.
fn echo(req: &ArchivedEcho) -> Result<Echo, Infallible> {
    Ok(Echo {
        id: req.id.to_native(),
        payload: req.payload.as_slice().to_vec(),
    })
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
