//! A client's TLS settings (feature `tls`): the rustls config and the server
//! name its certificate is checked against (and sent as SNI).
//!
//! Invariant: the name is validated when it is set, so every connection of
//! the pool can start its session; a session that cannot start closes its
//! connection (the pool reconnects with backoff).

use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::ClientBuilder;
use crate::conn::TlsSession;
use crate::Error;

/// The TLS part of a client's configuration.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl ClientTls {
    /// A session for a new connection.
    pub fn session(&self) -> Result<TlsSession, rustls::Error> {
        TlsSession::client(self.config.clone(), self.name.clone())
    }
}

impl ClientBuilder {
    /// Connects with TLS 1.3 using `config` (build one with
    /// [`tls::client_config`](crate::tls::client_config), or bring your own;
    /// one without ALPN gets [`tls::ALPN`](crate::tls::ALPN)), checking the
    /// server's certificate against `server_name` (a DNS name or an IP
    /// address), which is also sent as SNI. Fails on an invalid name.
    pub fn tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, Error> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| Error::Config(format!("tls server name {server_name:?}: {e}")))?;
        self.cfg.tls = Some(ClientTls {
            config: crate::tls::with_client_alpn(config),
            name,
        });
        self.cfg.plaintext = false;
        Ok(self)
    }
}
