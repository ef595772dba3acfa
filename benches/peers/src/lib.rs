//! The `peers` benchmark: one echo workload run against ringrpc and the RPC
//! stacks (and raw-socket floors) it is compared with.
//!
//! Workload: a request is a `u64` id plus an N-byte payload; the server sends
//! both back; the client checks the id. Every peer runs its server on one
//! pinned CPU and its client on another, over one loopback TCP connection, as
//! a closed loop with a fixed number of calls in flight. Each peer module
//! exposes `run(&Spec, Window) -> Result<Tally, String>`.
//!
//! - [`raw`]: blocking ping-pong and a pipelined loop over a plain socket (the
//!   floors), and the pipelined loop with a CRC32 on every message (`raw-crc`);
//! - [`ringrpc_peer`]: ringrpc (io_uring, thread per core, rkyv); also
//!   `ringrpc-epoll` (the same on the epoll driver), `ringrpc-typed` (the client `#[ringrpc::service]` generates) and
//!   `ringrpc-handle` (tokio tasks calling through a `Handle`);
//! - [`tarpc_peer`]: tarpc with its bincode serde transport on tokio;
//! - [`tonic_peer`]: tonic gRPC (HTTP/2, prost) on tokio;
//! - `ringrpc-tls` and `tonic-tls`: the same two over TLS 1.3 (rustls with
//!   ring on both, server authentication, certificates from [`tls_certs`]):
//!   what TLS costs each, per call; [`aead_floor`]: the least any TLS
//!   could cost, measured in the same run.
//!
//! tokio peers use a current-thread runtime on a pinned std thread per side.

pub mod aead_floor;
pub mod measure;
pub mod raw;
pub mod ringrpc_peer;
pub mod tarpc_peer;
pub mod tls_certs;
pub mod tonic_peer;

pub use measure::{Spec, Tally, Window};

/// A peer's entry point: run the workload of `spec`, recording calls started inside `window`.
pub type RunFn = fn(&Spec, Window) -> Result<Tally, String>;

/// Every peer, in the order the summary prints them.
pub const PEERS: &[(&str, RunFn)] = &[
    ("raw-blocking", raw::run_blocking),
    ("raw-pipelined", raw::run_pipelined),
    ("raw-crc", raw::run_pipelined_crc),
    ("ringrpc", ringrpc_peer::run),
    ("ringrpc-epoll", ringrpc_peer::run_epoll),
    ("ringrpc-tls", ringrpc_peer::run_tls),
    ("ringrpc-nodigest", ringrpc_peer::run_no_digest),
    ("ringrpc-blob", ringrpc_peer::run_blob),
    ("ringrpc-blob-nodigest", ringrpc_peer::run_blob_no_digest),
    (
        "ringrpc-nodigest-plainrecv",
        ringrpc_peer::run_no_digest_plain_recv,
    ),
    ("ringrpc-typed", ringrpc_peer::run_typed),
    ("ringrpc-handle", ringrpc_peer::run_handle),
    ("tarpc", tarpc_peer::run),
    ("tonic", tonic_peer::run),
    ("tonic-tls", tonic_peer::run_tls),
];
