//! Per-call settings: [`CallOptions`] (a deadline other than the client's
//! default, metadata) and deadline propagation from a handler's [`Ctx`].
//!
//! Invariant: options never allocate per call; metadata is encoded once when
//! it is built and copied into each request frame that carries it.

use std::time::Duration;

use crate::protocol::metadata::Metadata;
use crate::server::Ctx;
use crate::Error;

/// What a call made from inside a handler keeps back from the handler's
/// remaining budget by default (for the handler's own work after the call).
pub const DEFAULT_PROPAGATION_MARGIN: Duration = Duration::from_millis(1);

/// Settings of one call (see [`Client::call_with`](crate::Client::call_with)).
///
/// | setting | default |
/// |---|---|
/// | `deadline` | the client's ([`ClientBuilder::deadline`](crate::ClientBuilder::deadline)) |
/// | `metadata` | none |
/// | `idempotent` (a [`Cluster`](crate::cluster::Cluster) may retry and hedge it) | the cluster's list ([`ClusterBuilder::idempotent`](crate::cluster::ClusterBuilder::idempotent)) |
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) deadline: Option<Duration>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: Option<bool>,
}

impl CallOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up after `deadline` (the budget travels to the server).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Declares this call safe to run more than once (`true`) or not
    /// (`false`), overriding the cluster's list of idempotent methods: a
    /// [`Cluster`](crate::cluster::Cluster) retries an idempotent call after
    /// any retryable error and may hedge it; a call that is not idempotent is
    /// retried only after errors that prove it did not run
    /// ([`Error::did_not_run`]) and never hedged. A plain
    /// [`Client`](crate::Client) ignores it (it never retries).
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Adds a metadata entry the handler reads with
    /// [`Ctx::metadata`](crate::Ctx::metadata). Keys are 1–64 bytes of lowercase
    /// ASCII letters, digits, `-`, `_`, `.`; values up to 1 KiB; at most 16
    /// entries (see `docs/wire-format.md`).
    pub fn metadata(mut self, key: &str, value: impl AsRef<[u8]>) -> Result<Self, Error> {
        self.metadata.insert(key, value.as_ref())?;
        Ok(self)
    }

    /// Options for a call made while handling the call of `ctx`: its deadline
    /// is the handler's remaining budget minus [`DEFAULT_PROPAGATION_MARGIN`]
    /// (zero if that is spent: the call then times out at once).
    pub fn inherit(ctx: &Ctx) -> Self {
        Self::inherit_with_margin(ctx, DEFAULT_PROPAGATION_MARGIN)
    }

    /// [`inherit`](Self::inherit) with an explicit margin.
    pub fn inherit_with_margin(ctx: &Ctx, margin: Duration) -> Self {
        Self {
            deadline: ctx.remaining().map(|left| left.saturating_sub(margin)),
            metadata: Metadata::new(),
            idempotent: None,
        }
    }
}
