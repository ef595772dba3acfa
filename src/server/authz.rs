//! The authorization hook: who may call what, decided before the handler runs.
//!
//! A server may have one server-wide hook ([`ServerBuilder::authorize`]) and
//! one per service ([`ServerBuilder::authorize_service`], matched on the
//! method name's `Service.` prefix). Each sees an [`AuthzRequest`]: the
//! method, the peer's address, its verified TLS identity (if any) and the
//! call's metadata (e.g. a bearer token). A call runs only if every hook that
//! applies returns `Ok`; otherwise the caller gets
//! [`Error::PermissionDenied`](crate::Error::PermissionDenied) (wire code
//! `PermissionDenied`) and the refusal is counted per method
//! (`ringrpc_server_method_permission_denied_total`).
//!
//! Invariants: a refused call never reaches its handler; hooks run on the
//! connection's core, inline, in registration order (server-wide first); a
//! hook sees the metadata in place (no copy, no allocation on the allowed path).
//!
//! [`ServerBuilder::authorize`]: crate::ServerBuilder::authorize
//! [`ServerBuilder::authorize_service`]: crate::ServerBuilder::authorize_service

use std::net::SocketAddr;
use std::sync::Arc;

use crate::protocol::metadata::MetadataView;
use crate::tls::PeerIdentity;

/// What an authorization hook sees of a call.
#[derive(Debug)]
pub struct AuthzRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) method_id: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) identity: Option<&'a PeerIdentity>,
    pub(crate) metadata: MetadataView<'a>,
}

impl<'a> AuthzRequest<'a> {
    /// The method's registered name (`"Service.method"`).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The method's wire id.
    pub fn method_id(&self) -> u32 {
        self.method_id
    }

    /// The caller's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The caller's verified TLS identity (`None` on a plaintext connection
    /// or when the client presented no certificate).
    pub fn identity(&self) -> Option<&'a PeerIdentity> {
        self.identity
    }

    /// The call's metadata, read in place.
    pub fn metadata(&self) -> MetadataView<'a> {
        self.metadata
    }
}

/// Why a hook refused a call: the message the caller gets with
/// `PermissionDenied` (keep it free of secrets; it crosses the network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl Denied {
    /// A refusal with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authorization hook.
pub type AuthzFn = dyn Fn(&AuthzRequest<'_>) -> Result<(), Denied> + Send + Sync;

/// The hooks of one server.
#[derive(Clone, Default)]
pub(crate) struct Authorizers {
    /// (service prefix with its dot, or `None` for every method; the hook).
    hooks: Vec<(Option<String>, Arc<AuthzFn>)>,
}

impl std::fmt::Debug for Authorizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizers")
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl Authorizers {
    /// Adds a hook for every method (`service` `None`) or for `service`'s.
    pub fn add(&mut self, service: Option<&str>, hook: Arc<AuthzFn>) {
        let prefix = service.map(|s| format!("{s}."));
        // Server-wide hooks run first.
        let at = match prefix {
            None => self.hooks.iter().take_while(|(p, _)| p.is_none()).count(),
            Some(_) => self.hooks.len(),
        };
        self.hooks.insert(at, (prefix, hook));
    }

    /// True when no hook is set (the check is skipped).
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Runs every hook that applies to `req`; the first refusal wins.
    pub fn check(&self, req: &AuthzRequest<'_>) -> Result<(), Denied> {
        for (prefix, hook) in &self.hooks {
            if prefix.as_deref().is_none_or(|p| req.method.starts_with(p)) {
                hook(req)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str) -> AuthzRequest<'_> {
        AuthzRequest {
            method,
            method_id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            identity: None,
            metadata: MetadataView::default(),
        }
    }

    #[test]
    fn service_hooks_apply_to_their_service_only_and_server_hooks_run_first() {
        let mut a = Authorizers::default();
        a.add(
            Some("Kv"),
            Arc::new(|r: &AuthzRequest<'_>| match r.method() {
                "Kv.put" => Err(Denied::new("read-only")),
                _ => Ok(()),
            }),
        );
        a.add(
            None,
            Arc::new(|r: &AuthzRequest<'_>| match r.method() {
                "Admin.stop" | "Kv.put" => Err(Denied::new("server")),
                _ => Ok(()),
            }),
        );
        assert_eq!(a.check(&req("Kv.get")), Ok(()));
        assert_eq!(a.check(&req("Kv.put")), Err(Denied::new("server")));
        assert_eq!(a.check(&req("Admin.stop")), Err(Denied::new("server")));
        assert_eq!(a.check(&req("Kvx.put")), Ok(()), "prefix includes the dot");
    }
}
