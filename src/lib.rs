//! # ringrpc
//!
//! An io_uring, thread-per-core RPC runtime: one pinned thread per core, each
//! with its own ring, listener, connection pools and counters; persistent,
//! fully multiplexed connections; zero-copy [rkyv] messages read in place in
//! the receive buffer; in-flight calls kept in a slab whose index + generation
//! is the wire call id.
//!
//! Where the kernel refuses io_uring (container seccomp profiles, gVisor,
//! `kernel.io_uring_disabled`), the default [`Driver::Auto`] runs every core
//! on epoll instead, with the same API; [`RuntimeBuilder::driver`] and the
//! `RINGRPC_DRIVER` environment variable choose, [`Runtime::driver`] says
//! which runs and why.
//!
//! Where things live (the call path, in order):
//! [`client`] (`call()`) → `protocol::call_table` (slab slot) →
//! `protocol::codec` (frame) → `runtime::io` (the ring) → `server`
//! (handler) → back through the codec → the slab slot → the caller's waker.
//! A service with many endpoints is called through a [`cluster`]
//! ([`Cluster`]: discovery, balancing, ejection, retries, hedging) on top of
//! one client per endpoint.
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
//! let server = Server::builder().insecure_plaintext()
//!     .register(HELLO, |req: &ArchivedGreeting| -> Result<Greeting, String> {
//!         Ok(Greeting { name: format!("hello, {}", req.name) })
//!     })?
//!     .serve(&runtime, "127.0.0.1:0".parse().unwrap())?;
//!
//! let addr = server.local_addr();
//! let text = runtime.block_on(0, move || async move {
//!     let client = Client::builder().insecure_plaintext().connect(addr)?;
//!     let reply = client.call(&HELLO, &Greeting { name: "ring".into() }).await?;
//!     Ok::<_, ringrpc::Error>(reply.name.to_string()) // read in place, no parse
//! })??;
//! assert_eq!(text, "hello, ring");
//! server.shutdown(std::time::Duration::from_secs(1));
//! # Ok(()) }
//! ```
//!
//! A [`Client`] and its [`Reply`] belong to their core. Other threads (a
//! tokio application's) call through a [`Handle`] (`Send + Sync + Clone`,
//! made by [`ClientBuilder::connect_handle`]), whose calls any executor can
//! await and whose replies are [`OwnedReply`]s; the runtime's blocking calls
//! have async forms too ([`runtime::CoreTask`] is a future,
//! [`Runtime::metrics_async`], [`Runtime::shutdown_async`],
//! [`ServerHandle::shutdown_async`]).
//!
//! Handlers come in three kinds: [`ServerBuilder::register`] (inline, returns an
//! owned response), [`ServerBuilder::register_responder`] (inline, answers
//! through a [`Responder`] while it holds the request, so the response can borrow
//! from it via [`SliceAsVec`] / [`StrAsString`]) and
//! [`ServerBuilder::register_async`] (its own task; may await). The
//! `_with_ctx` forms also hand the handler its call's [`Ctx`]: the deadline
//! (pass the rest on with [`CallOptions::inherit`]), the peer, the core, the
//! call's metadata, this core's state ([`ServerBuilder::with_state`]) and a
//! cancellation signal (a caller that drops its call sends a cancel frame).
//!
//! ## Typed services
//!
//! [`macro@service`] turns a trait of async methods into method constants,
//! a server registration and a typed client (the full example, a sharded
//! key-value store, is `examples/kv`):
//!
//! ```
//! use ringrpc::{Client, Ctx, Request, Runtime, Server};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize)]
//! pub struct Name { name: String }
//!
//! #[ringrpc::service]
//! pub trait Greeter {
//!     async fn hello(&self, ctx: Ctx, req: Request<Name>) -> Result<Name, String>;
//! }
//!
//! struct English;
//! impl Greeter for English {
//!     async fn hello(&self, _ctx: Ctx, req: Request<Name>) -> Result<Name, String> {
//!         Ok(Name { name: format!("hello, {}", req.name) })
//!     }
//! }
//!
//! # fn main() -> Result<(), ringrpc::Error> {
//! let runtime = Runtime::builder().cores(1).pin(false).build()?;
//! let server = Server::builder().insecure_plaintext()
//!     .add_service(GreeterService::new(English))?
//!     .serve(&runtime, "127.0.0.1:0".parse().unwrap())?;
//! assert_eq!(greeter::HELLO.name(), "Greeter.hello");
//! let addr = server.local_addr();
//! let text = runtime.block_on(0, move || async move {
//!     let greeter = GreeterClient::new(Client::builder().insecure_plaintext().connect(addr)?);
//!     let reply = greeter.hello(&Name { name: "ring".into() }).await?;
//!     Ok::<_, ringrpc::Error>(reply.name.to_string())
//! })??;
//! assert_eq!(text, "hello, ring");
//! server.shutdown(std::time::Duration::from_secs(1));
//! # Ok(()) }
//! ```
//!
//! A method that is not `async fn name(&self, ctx: Ctx, req: Request<Req>) ->
//! Result<Resp, E>` is a compile error:
//!
//! ```compile_fail
//! #[ringrpc::service]
//! pub trait Bad {
//!     fn sync_method(&self, req: u64) -> u64;
//! }
//! ```
//!
//! ## Cargo features
//!
//! Two, off by default:
//!
//! - **`metrics-http`**: `ringrpc::metrics::http` (its `Endpoint`), a minimal
//!   `/metrics` endpoint that serves [`Runtime::metrics`] as Prometheus text
//!   over HTTP/1.1. Std only: it adds no dependency. Cost when on: some code,
//!   and while it serves, one std thread blocked in `accept` plus a
//!   short-lived thread per scrape (at most 16 at once by default), each scrape
//!   one `Runtime::metrics()`; nothing on the call path and no thread on a
//!   ringrpc core. Off, none of it is compiled.
//! - **`otel`**: trace context across calls. The caller's OpenTelemetry
//!   context (from its current `tracing` span, via `tracing-opentelemetry`)
//!   travels as W3C `traceparent` metadata, and every handler runs in an
//!   `rpc.server` span continuing it, so one trace crosses ringrpc hops. Cost
//!   when on: the `opentelemetry` and `tracing-opentelemetry` crates; per call
//!   a `traceparent` string and a metadata block on the client and a span on
//!   the server. Off, none of it is compiled.
//!
//! Everything else is always there, and the crate's dependencies are the
//! runtime's own plus `ringrpc-macros` (the `#[ringrpc::service]` proc macro:
//! syn, quote). The `ringrpc` command-line tool (bench, serve, tune, plot)
//! and the benchmark harnesses are other crates of the repository's workspace
//! (`ringrpc-cli`, `ringrpc-workload`, `ringrpc-floor`, `ringrpc-peers`), so
//! depending on ringrpc compiles no clap, plotters, criterion, HTTP stack or
//! C code.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

/// A builder setter: `pub fn $name(mut self, value: $ty) -> Self` that stores
/// `value` in `self.cfg.$name` (the client's and the cluster's builders).
macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.cfg.$name = value;
            self
        }
    };
}

mod app_error;
mod blob;
pub mod client;
pub mod cluster;
mod conn;
mod error;
mod message;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;
#[cfg(test)]
mod test_waker;
pub mod tls;
#[cfg(feature = "otel")]
mod trace_context;

// Every type a user names when configuring, calling, serving or handling
// errors is here at the root; the modules hold the rest (metrics details,
// the wire protocol, the runtime's I/O functions).
pub use app_error::{AppError, HandlerError, Typed};
pub use blob::Blob;
pub use client::{
    shard_of, AdaptivePool, CallOptions, Client, ClientBuilder, ClientStats, Handle,
    OverloadPolicy, OwnedReply, ShardedClient,
};
pub use cluster::{Cluster, ClusterBuilder};
pub use error::Error;
pub use message::{
    ArchivesAs, BorrowSerializer, Message, Method, Reply, Request, SliceAsVec, StrAsString,
};
pub use metrics::{MetricsSnapshot, Phase};
pub use protocol::{ErrorCode, ProtocolError};
pub use ringrpc_macros::service;
pub use runtime::{CoreTask, Driver, DriverInfo, RingFlags, Runtime, RuntimeBuilder};
pub use server::{
    AuthzFn, AuthzRequest, Ctx, Denied, Responder, Sent, Server, ServerBuilder, ServerHandle,
    ServerStats, Service,
};
