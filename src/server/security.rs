//! A server's transport security and authorization settings: TLS (feature
//! `tls`), the handshake limits, the authorization hooks, and reloading the
//! TLS config of a running server.
//!
//! Invariants: a new TLS config applies to connections accepted after
//! [`ServerHandle::reload_tls`] returns, never to open ones; the handshake
//! limits only apply to TLS connections; with no hook set, calls are not
//! checked at all (no cost on the call path).

use std::sync::Arc;
use std::time::Duration;

use super::authz::{Authorizers, AuthzRequest, Denied};
use super::{ServerBuilder, ServerHandle};
#[cfg(feature = "tls")]
use crate::Error;

/// The security part of a server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Security {
    /// The TLS config new connections use (swapped by `reload_tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>>,
    /// A TLS handshake must finish within this after the accept.
    pub handshake_timeout: Duration,
    /// TLS handshakes that may run at once on one core; more connections are
    /// closed at once (counted).
    pub max_handshakes_per_core: usize,
    pub authz: Authorizers,
    /// `insecure_plaintext()` was called (and no TLS config after it).
    pub plaintext: bool,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            #[cfg(feature = "tls")]
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes_per_core: 256,
            authz: Authorizers::default(),
            plaintext: false,
        }
    }
}

impl Security {
    /// Refuses to start a server whose transport was not chosen: no silent
    /// plaintext default.
    pub fn check_transport(&self) -> Result<(), crate::Error> {
        if self.is_tls() || self.plaintext {
            return Ok(());
        }
        Err(crate::Error::Config(
            "no transport chosen: call ServerBuilder::tls(config) (feature `tls`) or \
             ServerBuilder::insecure_plaintext()"
                .into(),
        ))
    }

    /// True if connections are TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// A TLS session for a new connection, if the server is TLS (`Err`: the
    /// session could not be made; the connection is refused).
    #[cfg(feature = "tls")]
    pub fn new_session(&self) -> Result<Option<crate::conn::TlsSession>, rustls::Error> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let cfg = match tls.read() {
            Ok(cfg) => cfg.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        crate::conn::TlsSession::server(cfg).map(Some)
    }

    /// Without the `tls` feature there is never a session.
    #[cfg(not(feature = "tls"))]
    pub fn new_session(&self) -> Result<Option<crate::conn::TlsSession>, std::convert::Infallible> {
        Ok(None)
    }
}

/// Security settings.
///
/// | setting | default |
/// |---|---|
/// | `tls` or `insecure_plaintext` | none: one of them is required (`serve` fails with `Error::Config` otherwise) |
/// | `tls_handshake_timeout` (a handshake must finish within) | 10 s |
/// | `max_handshakes_per_core` (more waiting connections are closed) | 256 |
/// | `authorize`, `authorize_service` | no hook: every call is allowed |
impl ServerBuilder {
    /// Serves TLS 1.3 with `config` (build one with
    /// [`tls::server_config`](crate::tls::server_config), or bring your own;
    /// one without ALPN gets [`tls::ALPN`](crate::tls::ALPN)). With a client
    /// certificate verifier in it, this is mutual TLS and handlers see the
    /// client's identity in [`Ctx::peer_identity`](crate::Ctx::peer_identity).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        let config = crate::tls::with_server_alpn(config);
        self.security.tls = Some(Arc::new(std::sync::RwLock::new(config)));
        self.security.plaintext = false;
        self
    }

    /// Serves **without TLS**: every byte crosses the network in clear and any
    /// client that can connect may call (subject to the authorization hooks).
    /// For loopback, tests, or behind a sidecar that terminates mutual TLS.
    /// A server must be given either this or `tls` (with the
    /// `tls` feature) before it serves: there is no silent default. The last
    /// of the two called wins.
    pub fn insecure_plaintext(mut self) -> Self {
        #[cfg(feature = "tls")]
        {
            self.security.tls = None;
        }
        self.security.plaintext = true;
        self
    }

    /// How long a TLS handshake may take from the accept (default 10 s);
    /// a connection still handshaking then is closed and counted
    /// (`ringrpc_server_tls_failed_timeout_total`).
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.security.handshake_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many TLS handshakes may run at once on one core (default 256, at
    /// least 1); a connection accepted beyond it is closed at once and counted
    /// (`ringrpc_server_tls_handshakes_refused_total`).
    pub fn max_handshakes_per_core(mut self, n: usize) -> Self {
        self.security.max_handshakes_per_core = n.max(1);
        self
    }

    /// Adds an authorization hook run before every call's handler; a call it
    /// refuses fails at the caller with
    /// [`PermissionDenied`](crate::Error::PermissionDenied).
    pub fn authorize(
        mut self,
        hook: impl Fn(&AuthzRequest<'_>) -> Result<(), Denied> + Send + Sync + 'static,
    ) -> Self {
        self.security.authz.add(None, Arc::new(hook));
        self
    }

    /// Adds an authorization hook for the methods of `service` only (names
    /// `service.*`), run after the server-wide ones.
    pub fn authorize_service(
        mut self,
        service: &str,
        hook: impl Fn(&AuthzRequest<'_>) -> Result<(), Denied> + Send + Sync + 'static,
    ) -> Self {
        self.security.authz.add(Some(service), Arc::new(hook));
        self
    }
}

impl ServerHandle {
    /// Replaces the TLS config (a renewed certificate, a new CA bundle)
    /// without a restart: connections accepted from now on use `config`,
    /// open ones keep theirs. Fails on a server started without TLS.
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, config: Arc<rustls::ServerConfig>) -> Result<(), Error> {
        let Some(slot) = &self.cfg.security.tls else {
            return Err(Error::Config(
                "reload_tls: the server was started without TLS".into(),
            ));
        };
        let config = crate::tls::with_server_alpn(config);
        match slot.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}
