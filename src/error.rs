//! The one error type callers match on.
//!
//! Every failure a call, a server or the runtime can report is a variant of
//! [`Error`], so `?` works on every fallible call of the crate (I/O errors
//! convert with `From`, and [`Reply::to_owned`](crate::Reply::to_owned) /
//! [`Request::to_owned`](crate::Request::to_owned) fail with [`Error::Decode`]).
//! Call failures are cheap to create (no allocation on the timeout,
//! connection-lost and overloaded paths). [`Error::is_retryable`] says which
//! ones another attempt may cure; each variant's documentation says whether it
//! is retryable and why.

use std::io;

use crate::protocol::{ErrorCode, ProtocolError};

/// Everything that can go wrong in ringrpc.
///
/// "Retryable" below is what [`Error::is_retryable`] answers: whether the same
/// call may succeed if made again (on another connection, another endpoint, or
/// a moment later). It does not say whether the failed attempt ran on the
/// server: a call that is not idempotent should only be retried where the
/// variant says it did not run, or where running it twice is harmless.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call's deadline passed before a reply arrived (or the server
    /// answered `DeadlineExceeded`). Its slot has been freed; a late reply will
    /// be dropped. **Not retryable**: the caller's budget is spent (a caller
    /// with a fresh budget decides that for itself).
    #[error("call timed out")]
    Timeout,
    /// The connection carrying the call died (peer closed, reset, heartbeat missed)
    /// before the reply arrived. The call may or may not have run on the server.
    /// **Retryable** (the pool reconnects, or another endpoint can answer), for
    /// idempotent calls.
    #[error("connection lost")]
    ConnectionLost,
    /// The connection closed before the call's request was handed to the
    /// socket: the request never left this process, so **the call did not
    /// run**. **Retryable** for any call, idempotent or not.
    #[error("connection lost before the request was sent")]
    NotSent,
    /// No connection to the endpoint could be established in time. The call was
    /// never sent. **Retryable**.
    #[error("endpoint unavailable")]
    Unavailable,
    /// Every connection of the pool is at its in-flight limit and the pool is set
    /// to fail fast, or the wait for a free slot ran out, or the server refused
    /// the call over its per-connection in-flight limit. The call did not run.
    /// **Retryable** (later, or elsewhere).
    #[error("overloaded: every connection is at its in-flight limit")]
    Overloaded,
    /// The server answered with an error. **Retryable** only for
    /// [`ErrorCode::Unavailable`] (the server is shutting down or draining: the
    /// call did not run there, another server or a reconnect can take it) and
    /// [`ErrorCode::Overloaded`] (refused before it ran); not for the others
    /// (the handler failed or panicked, the method is unknown, the request is
    /// invalid: the same call fails the same way again).
    #[error("remote error ({code:?}): {message}")]
    Remote {
        /// Why the server failed the call.
        code: ErrorCode,
        /// The server's message (the handler's error text, for application errors).
        message: String,
    },
    /// The server's authorization hook refused the call (wire code
    /// [`ErrorCode::PermissionDenied`]); the call did not run. The message is
    /// the hook's. **Not retryable**: the same caller is refused again.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The handler failed with a typed error ([`Typed`](crate::Typed) on the
    /// server): decode it with [`AppError::decode`](crate::AppError::decode).
    /// **Not retryable**: the server answered.
    #[error("{0}")]
    Application(crate::AppError),
    /// The peer broke the wire protocol, or a message could not be encoded or
    /// validated. **Not retryable**.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A received message, valid as an archive, could not be deserialised into
    /// its owned type by [`Reply::to_owned`](crate::Reply::to_owned) or
    /// [`Request::to_owned`](crate::Request::to_owned) (rkyv's deserialiser
    /// failed, e.g. a custom `Deserialize` refused the value). **Not retryable**.
    #[error("could not deserialise the message: {0}")]
    Decode(#[source] rkyv::rancor::Error),
    /// io_uring could not be set up on this machine, and the runtime was
    /// told to run nothing else ([`Driver::IoUring`](crate::Driver::IoUring);
    /// the default, `Driver::Auto`, runs the epoll driver instead). **Not
    /// retryable**.
    #[error("io_uring is unavailable (kernel too old, disabled, or blocked by seccomp): {0}")]
    IoUringUnavailable(io::Error),
    /// An OS-level I/O error (bind, listen, thread start, the metrics endpoint).
    /// **Not retryable** as a call error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A cluster call failed with a retryable error and the cluster's retry
    /// budget (see `ClusterBuilder::retry_budget`) had no retry left, so it
    /// was not retried: the budget stops a failing endpoint from turning into
    /// a retry storm. `last` is the last attempt's error. **Not retryable**
    /// (retrying it is exactly what the budget refused).
    #[error("retry budget exhausted; last attempt: {last}")]
    RetryBudgetExhausted {
        /// The error of the last attempt made.
        #[source]
        last: Box<Error>,
    },
    /// Invalid configuration or registration (bad or duplicate method name,
    /// zero-sized ring, unknown CPU...). **Not retryable**.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Work was sent to a core index the runtime does not have
    /// ([`Runtime::spawn_on`](crate::Runtime::spawn_on),
    /// [`Runtime::block_on`](crate::Runtime::block_on),
    /// [`ServerBuilder::serve_on`](crate::ServerBuilder::serve_on)). **Not retryable**.
    #[error("no core {core} (the runtime has {cores})")]
    NoSuchCore {
        /// The index asked for.
        core: usize,
        /// How many cores the runtime has.
        cores: usize,
    },
    /// A call or connect was made off a ringrpc core thread (clients and their
    /// connections live on one core; use `Runtime::spawn_on`/`block_on`).
    /// **Not retryable**.
    #[error("not on a ringrpc core thread")]
    NotOnCore,
    /// The runtime, client or server has been shut down (or a task sent to a
    /// core panicked before it produced its output). **Not retryable**.
    #[error("shut down")]
    Shutdown,
}

impl Error {
    /// True for errors after which making the same call again (later, on
    /// another connection or endpoint) may succeed: [`ConnectionLost`],
    /// [`NotSent`], [`Unavailable`], [`Overloaded`], and [`Remote`] with
    /// [`ErrorCode::Unavailable`] (a draining or stopping server) or
    /// [`ErrorCode::Overloaded`]. See each variant for why; after
    /// `ConnectionLost` the first attempt may have run, so retry only calls
    /// that are safe to run twice ([`did_not_run`](Self::did_not_run) says
    /// which errors prove the call did not run).
    ///
    /// [`ConnectionLost`]: Error::ConnectionLost
    /// [`NotSent`]: Error::NotSent
    /// [`Unavailable`]: Error::Unavailable
    /// [`Overloaded`]: Error::Overloaded
    /// [`Remote`]: Error::Remote
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ConnectionLost => true,
            _ => self.did_not_run(),
        }
    }

    /// True for errors that prove the call did not run on any server, so
    /// making it again is safe even when it is not idempotent: [`NotSent`]
    /// (never written), [`Unavailable`] (no connection), [`Overloaded`]
    /// (refused before it ran, here or by the server) and [`Remote`] with
    /// [`ErrorCode::Unavailable`] (a draining server refused it) or
    /// [`ErrorCode::Overloaded`]. Every such error is also
    /// [`is_retryable`](Self::is_retryable); [`ConnectionLost`] is retryable
    /// but not here (the request may have run).
    ///
    /// [`NotSent`]: Error::NotSent
    /// [`Unavailable`]: Error::Unavailable
    /// [`Overloaded`]: Error::Overloaded
    /// [`Remote`]: Error::Remote
    /// [`ConnectionLost`]: Error::ConnectionLost
    pub fn did_not_run(&self) -> bool {
        match self {
            Self::NotSent | Self::Unavailable | Self::Overloaded => true,
            Self::Remote { code, .. } => {
                matches!(code, ErrorCode::Unavailable | ErrorCode::Overloaded)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(code: ErrorCode) -> Error {
        Error::Remote {
            code,
            message: String::new(),
        }
    }

    #[test]
    fn retryable_errors_are_the_ones_another_attempt_may_cure() {
        let retryable = [
            Error::ConnectionLost,
            Error::NotSent,
            Error::Unavailable,
            Error::Overloaded,
            remote(ErrorCode::Unavailable),
            remote(ErrorCode::Overloaded),
        ];
        for e in &retryable {
            assert!(e.is_retryable(), "{e:?}");
            // Only ConnectionLost is retryable without proof the call did not run.
            let lost = matches!(e, Error::ConnectionLost);
            assert_eq!(e.did_not_run(), !lost, "{e:?}");
        }
        let final_ = [
            Error::Timeout,
            remote(ErrorCode::Application),
            remote(ErrorCode::UnknownMethod),
            remote(ErrorCode::Panicked),
            remote(ErrorCode::DeadlineExceeded),
            remote(ErrorCode::InvalidRequest),
            Error::PermissionDenied("no".into()),
            Error::Protocol(ProtocolError::BadHeaderDigest),
            Error::Decode(<rkyv::rancor::Error as rkyv::rancor::Source>::new(
                io::Error::other("refused"),
            )),
            Error::IoUringUnavailable(io::Error::other("old kernel")),
            Error::Io(io::Error::other("bind")),
            Error::Config("bad".into()),
            Error::RetryBudgetExhausted {
                last: Box::new(Error::Unavailable),
            },
            Error::NoSuchCore { core: 3, cores: 2 },
            Error::NotOnCore,
            Error::Shutdown,
        ];
        for e in &final_ {
            assert!(!e.is_retryable(), "{e:?}");
            assert!(!e.did_not_run(), "{e:?}");
        }
    }

    #[test]
    fn question_mark_converts_io_and_protocol_errors() {
        fn io_fails() -> Result<(), Error> {
            Err(io::Error::from(io::ErrorKind::AddrInUse))?;
            Ok(())
        }
        fn protocol_fails() -> Result<(), Error> {
            Err(ProtocolError::BadDataDigest)?;
            Ok(())
        }
        assert!(matches!(io_fails(), Err(Error::Io(e)) if e.kind() == io::ErrorKind::AddrInUse));
        assert!(matches!(
            protocol_fails(),
            Err(Error::Protocol(ProtocolError::BadDataDigest))
        ));
        // The error is usable where callers box errors (Send + Sync + 'static).
        let boxed: Box<dyn std::error::Error + Send + Sync> = Error::Shutdown.into();
        assert_eq!(boxed.to_string(), "shut down");
    }
}
