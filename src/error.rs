//! The one error type callers match on.
//!
//! Every failure a call, a server or the runtime can report is a variant of
//! [`Error`]. Call failures are cheap to create (no allocation on the timeout,
//! connection-lost and overloaded paths).

use std::io;

use crate::protocol::{ErrorCode, ProtocolError};

/// Everything that can go wrong in ringrpc.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call's deadline passed before a reply arrived. Its slot has been freed;
    /// a late reply will be dropped.
    #[error("call timed out")]
    Timeout,
    /// The connection carrying the call died (peer closed, reset, heartbeat missed)
    /// before the reply arrived. The call may or may not have run on the server.
    #[error("connection lost")]
    ConnectionLost,
    /// No connection to the endpoint could be established in time.
    #[error("endpoint unavailable")]
    Unavailable,
    /// Every connection of the pool is at its in-flight limit and the pool is set
    /// to fail fast, or the wait for a free slot ran out.
    #[error("overloaded: every connection is at its in-flight limit")]
    Overloaded,
    /// The server answered with an error.
    #[error("remote error ({code:?}): {message}")]
    Remote {
        /// Why the server failed the call.
        code: ErrorCode,
        /// The server's message (the handler's error text, for application errors).
        message: String,
    },
    /// The handler failed with a typed error ([`Typed`](crate::Typed) on the
    /// server): decode it with [`AppError::decode`](crate::AppError::decode).
    #[error("{0}")]
    Application(crate::AppError),
    /// The peer broke the wire protocol, or a message could not be encoded or validated.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// io_uring could not be set up on this machine.
    #[error("io_uring is unavailable (kernel too old, disabled, or blocked by seccomp): {0}")]
    IoUringUnavailable(io::Error),
    /// An OS-level I/O error (bind, listen, thread start).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Invalid configuration or registration (bad or duplicate method name,
    /// zero-sized ring, unknown CPU...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Work was sent to a core index the runtime does not have.
    #[error("no core {core} (the runtime has {cores})")]
    NoSuchCore {
        /// The index asked for.
        core: usize,
        /// How many cores the runtime has.
        cores: usize,
    },
    /// A call or connect was made off a ringrpc core thread (clients and their
    /// connections live on one core; use `Runtime::spawn_on`/`block_on`).
    #[error("not on a ringrpc core thread")]
    NotOnCore,
    /// The runtime, client or server has been shut down.
    #[error("shut down")]
    Shutdown,
}

impl Error {
    /// True for errors after which retrying the same call elsewhere is reasonable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost | Self::Unavailable | Self::Overloaded
        )
    }
}
