//! `--tls-cert/--tls-key/--tls-ca` of `ringrpc serve` and `ringrpc bench`.
//!
//! `serve`: TLS 1.3 with the certificate and key; with `--tls-ca`, mutual
//! TLS (clients need a certificate from that CA set).
//! `bench`: the client uses TLS when `--tls-ca` (the CA to trust) is given,
//! presenting `--tls-cert/--tls-key` as its own certificate if they are set;
//! the embedded server (no `--connect`) serves TLS with `--tls-cert/--tls-key`
//! and requires client certificates from `--tls-ca` — so one certificate
//! valid for `--tls-server-name` and signed by the CA runs the whole job
//! under mutual TLS.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use ringrpc::tls::{self, rustls};
use ringrpc::{ClientBuilder, ServerBuilder};

use crate::CliResult;

/// TLS options.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain: the server's (serve, the embedded server of
    /// bench) and the client's own in bench.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: serve requires client certificates from it (mutual
    /// TLS); bench trusts the server's certificate from it (TLS on).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name bench checks the server's certificate against (and sends as SNI).
    #[arg(long, default_value = "localhost", value_name = "NAME")]
    pub tls_server_name: String,
}

/// A client's TLS settings, ready to apply to every client core's builder.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    name: String,
}

impl ClientTls {
    /// `builder` with TLS on.
    pub fn apply(&self, builder: ClientBuilder) -> Result<ClientBuilder, ringrpc::Error> {
        builder.tls(self.config.clone(), &self.name)
    }
}

/// `builder` with the client TLS of `tls`, if any.
pub fn client_builder(
    builder: ClientBuilder,
    tls: Option<&ClientTls>,
) -> Result<ClientBuilder, ringrpc::Error> {
    match tls {
        Some(tls) => tls.apply(builder),
        None => Ok(builder),
    }
}

impl TlsArgs {
    /// The server's TLS config, if `--tls-cert` is given.
    pub fn server(&self) -> CliResult<Option<Arc<rustls::ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config = tls::server_config_from_files(cert, key, self.tls_ca.as_deref())?;
        Ok(Some(config))
    }

    /// `builder` serving TLS if `--tls-cert` is given.
    pub fn apply_server(&self, builder: ServerBuilder) -> CliResult<ServerBuilder> {
        Ok(match self.server()? {
            Some(config) => builder.tls(config),
            None => builder,
        })
    }

    /// The client's TLS settings, if `--tls-ca` is given.
    pub fn client(&self) -> CliResult<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let config = tls::client_config_from_files(ca, identity)?;
        Ok(Some(ClientTls {
            config,
            name: self.tls_server_name.clone(),
        }))
    }

    /// "TLS", "mutual TLS" or "plaintext", for the banner.
    pub fn describe(&self) -> &'static str {
        match (&self.tls_cert, &self.tls_ca) {
            (Some(_), Some(_)) => "mutual TLS",
            (Some(_), None) | (None, Some(_)) => "TLS",
            (None, None) => "plaintext",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(argv: &[&str]) -> Result<TlsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(argv.iter().copied())).map(|c| c.tls)
    }

    #[test]
    fn cert_and_key_go_together_and_the_mode_follows_the_flags() {
        assert!(
            parse(&["--tls-cert", "a.pem"]).is_err(),
            "a key is required"
        );
        assert!(
            parse(&["--tls-key", "a.key"]).is_err(),
            "a cert is required"
        );
        let plain = parse(&[]).unwrap();
        assert_eq!(plain.describe(), "plaintext");
        assert!(plain.server().unwrap().is_none() && plain.client().unwrap().is_none());
        let mtls = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca"]).unwrap();
        assert_eq!(mtls.describe(), "mutual TLS");
        assert_eq!(mtls.tls_server_name, "localhost");
        // Missing files are a typed error, not a panic.
        assert!(mtls.server().is_err());
        assert!(mtls.client().is_err());
    }
}
