//! # ringrpc
//!
//! An io_uring, thread-per-core RPC runtime: one pinned thread per core, each
//! with its own ring, listener, connection pools and counters; persistent,
//! fully multiplexed connections; zero-copy [rkyv] messages read in place in
//! the receive buffer; in-flight calls kept in a slab whose index + generation
//! is the wire call id.
//!
//! Where things live (the call path, in order):
//! [`client`] (`call()`) → `protocol::call_table` (slab slot) →
//! `protocol::codec` (frame) → `runtime::io` (the ring) → `server`
//! (handler) → back through the codec → the slab slot → the caller's waker.
//!
//! ## Quick start
//!
//! ```
//! use ringrpc::{Client, Method, Runtime, Server};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! struct Greeting {
//!     name: String,
//! }
//!
//! const HELLO: Method<Greeting, Greeting> = Method::new("Greeter.hello");
//!
//! # fn main() -> Result<(), ringrpc::Error> {
//! let runtime = Runtime::builder().cores(1).pin(false).build()?;
//! let server = Server::builder()
//!     .register(HELLO, |req: &ArchivedGreeting| -> Result<Greeting, String> {
//!         Ok(Greeting { name: format!("hello, {}", req.name) })
//!     })?
//!     .serve(&runtime, "127.0.0.1:0".parse().unwrap())?;
//!
//! let addr = server.local_addr();
//! let text = runtime.block_on(0, move || async move {
//!     let client = Client::builder().connect(addr)?;
//!     let reply = client.call(&HELLO, &Greeting { name: "ring".into() }).await?;
//!     Ok::<_, ringrpc::Error>(reply.name.to_string()) // read in place, no parse
//! })??;
//! assert_eq!(text, "hello, ring");
//! server.shutdown(std::time::Duration::from_secs(1));
//! # Ok(()) }
//! ```
//!
//! Handlers come in three kinds: [`ServerBuilder::register`] (inline, returns an
//! owned response), [`ServerBuilder::register_responder`] (inline, answers
//! through a [`Responder`] while it holds the request, so the response can borrow
//! from it via [`SliceAsVec`] / [`StrAsString`]) and
//! [`ServerBuilder::register_async`] (its own task; may await).
//!
//! ## Cargo features
//!
//! None: nothing in the crate is optional, and its dependencies are the
//! runtime's own. The `ringrpc` command-line tool (bench, serve, tune, plot)
//! and the benchmark harnesses are other crates of the repository's workspace
//! (`ringrpc-cli`, `ringrpc-workload`, `ringrpc-floor`, `ringrpc-peers`), so
//! depending on ringrpc compiles no clap, plotters, criterion, HTTP stack or
//! C code.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
mod conn;
mod error;
mod message;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;
#[cfg(test)]
mod test_waker;

pub use client::{CallOptions, Client, ClientBuilder, ClientStats, OverloadPolicy};
pub use error::Error;
pub use message::{BorrowSerializer, Message, Method, Reply, Request, SliceAsVec, StrAsString};
pub use metrics::{MetricsSnapshot, Phase};
pub use protocol::ErrorCode;
pub use runtime::{Runtime, RuntimeBuilder};
pub use server::{Ctx, Responder, Sent, Server, ServerBuilder, ServerHandle, ServerStats};
