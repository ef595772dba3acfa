//! rustls configs built from PEM: TLS 1.3 only, the `ring` provider with
//! AES-128-GCM preferred (`CIPHER_SUITES`), ALPN [`ALPN`](super::ALPN), and
//! mutual TLS when a client CA bundle is given.
//!
//! Invariants: a config from here never accepts a peer without verifying its
//! chain against the CA set given (no "dangerous" verifier); every parse or
//! policy error is an [`Error::Config`] naming what was wrong.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::ALPN;
use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring has no post-quantum key exchange (rustls deprecates its provider
    // for that); it is still the provider with no C toolchain and ISC terms.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = CIPHER_SUITES.to_vec();
    Arc::new(provider)
}

/// The TLS 1.3 cipher suites of the configs built here, most preferred
/// first: AES-128-GCM before AES-256-GCM, as Go's `crypto/tls` (gRPC-Go) and
/// BoringSSL order them on hardware with AES instructions. Both are TLS 1.3's
/// standard AEADs with no known weakness; AES-128 runs 10 rounds per block
/// against AES-256's 14, which on ringrpc's own record layer is ~15 % less
/// CPU per byte (docs/benchmarks.md, "AES-128-GCM first, and the floor in every run"). A
/// deployment that must have AES-256 passes its own rustls config.
const CIPHER_SUITES: [rustls::SupportedCipherSuite; 3] = [
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

fn config_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("tls: {what}: {e}"))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(what, e))?;
    if certs.is_empty() {
        return Err(config_error(what, "no CERTIFICATE block in the PEM"));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| config_error("private key", e))
}

/// The CA certificates of a PEM bundle, as a root store.
pub(crate) fn roots(pem: &[u8]) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs(pem, "CA bundle")? {
        roots
            .add(cert)
            .map_err(|e| config_error("CA certificate", e))?;
    }
    Ok(Arc::new(roots))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| config_error(&path.display().to_string(), e))
}

/// A server config from PEM bytes: the certificate chain (leaf first), its
/// private key (PKCS#8, PKCS#1 or SEC1) and, for mutual TLS, the bundle of
/// CAs client certificates must chain to (then a client without a valid
/// certificate is refused during the handshake).
///
/// Cipher suites: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; the client's
/// order of preference wins. Build your own `rustls::ServerConfig` for
/// another set (docs/security.md).
pub fn server_config(
    cert_chain: &[u8],
    key_pem: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error("protocol versions", e))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider)
                .build()
                .map_err(|e| config_error("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs(cert_chain, "certificate chain")?, key(key_pem)?)
        .map_err(|e| config_error("certificate and key", e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // After the handshake ringrpc seals and opens records itself (no
    // allocation per record): rustls hands its traffic secrets over.
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// [`server_config`] from PEM files (e.g. a Kubernetes secret mounted as
/// `tls.crt`, `tls.key`, `ca.crt`).
pub fn server_config_from_files(
    cert_chain: &Path,
    key_pem: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let ca = client_ca.map(read).transpose()?;
    server_config(&read(cert_chain)?, &read(key_pem)?, ca.as_deref())
}

/// A client config from PEM bytes: the CA bundle server certificates must
/// chain to and, for mutual TLS, the client's own certificate chain and key.
///
/// Cipher suites, most preferred first: AES-128-GCM, AES-256-GCM,
/// ChaCha20-Poly1305 (see [`server_config`]).
pub fn client_config(
    server_ca: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error("protocol versions", e))?
        .with_root_certificates(roots(server_ca)?);
    let mut cfg = match identity {
        Some((chain, key_pem)) => builder
            .with_client_auth_cert(certs(chain, "client certificate chain")?, key(key_pem)?)
            .map_err(|e| config_error("client certificate and key", e))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // After the handshake ringrpc seals and opens records itself (no
    // allocation per record): rustls hands its traffic secrets over.
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// [`client_config`] from PEM files.
pub fn client_config_from_files(
    server_ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let identity = identity
        .map(|(c, k)| Ok::<_, Error>((read(c)?, read(k)?)))
        .transpose()?;
    let identity = identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    client_config(&read(server_ca)?, identity)
}

/// `config`, refusing every handshake whose server name (SNI) is not one of
/// `names` (compared ignoring ASCII case), or that sends none: the client
/// gets an alert before any certificate is shown, and the server counts the
/// failure as `bad_sni`. For a server that must not answer for names it does
/// not serve (a shared address, a virtual-host mix-up).
pub fn require_server_names(
    config: Arc<rustls::ServerConfig>,
    names: &[&str],
) -> Arc<rustls::ServerConfig> {
    let mut owned = (*config).clone();
    owned.cert_resolver = Arc::new(SniGuard {
        inner: config.cert_resolver.clone(),
        names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
    });
    Arc::new(owned)
}

/// A certificate resolver that answers only for the server names it knows.
#[derive(Debug)]
struct SniGuard {
    inner: Arc<dyn rustls::server::ResolvesServerCert>,
    names: Vec<String>,
}

impl rustls::server::ResolvesServerCert for SniGuard {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name()?;
        if !self.names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return None;
        }
        self.inner.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

/// `$cfg` (an `Arc` of a rustls server or client config), with [`ALPN`] as
/// its only protocol if it named none, and secret extraction on (ringrpc's
/// record layer takes over after the handshake); copied only if it changes.
macro_rules! prepared {
    ($cfg:expr) => {{
        let cfg = $cfg;
        if !cfg.alpn_protocols.is_empty() && cfg.enable_secret_extraction {
            return cfg;
        }
        let mut owned = (*cfg).clone();
        if owned.alpn_protocols.is_empty() {
            owned.alpn_protocols = vec![ALPN.to_vec()];
        }
        owned.enable_secret_extraction = true;
        Arc::new(owned)
    }};
}

/// A server config as every ringrpc server uses it (see `prepared!`).
pub(crate) fn with_server_alpn(cfg: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    prepared!(cfg)
}

/// A client config as every ringrpc client uses it (see `prepared!`).
pub(crate) fn with_client_alpn(cfg: Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    prepared!(cfg)
}
