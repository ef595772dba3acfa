//! Transport security: TLS 1.3 with rustls (feature `tls`), the verified peer
//! identity handlers see, and why handshakes fail.
//!
//! A server is given a [`rustls::ServerConfig`] with
//! [`ServerBuilder::tls`](crate::ServerBuilder::tls), a client a
//! [`rustls::ClientConfig`] with [`ClientBuilder::tls`](crate::ClientBuilder::tls);
//! [`server_config`] and [`client_config`] build them from PEM (certificate
//! chain, private key, CA bundle) the way this crate recommends: TLS 1.3
//! only, the `ring` provider, ALPN [`ALPN`], and with a client CA bundle
//! mutual TLS (a client without a certificate from that CA set is refused).
//! The TLS session lives in the sans-I/O connection core, so every driver
//! carries it unchanged (see `docs/security.md`).
//!
//! Invariants: the identity in [`PeerIdentity`] comes only from a certificate
//! chain the configured verifier accepted; a config given without ALPN gets
//! [`ALPN`] (a peer that offers other protocols only is refused); failures are
//! classified into [`HandshakeFailure`] for the metrics, never unwrapped.

// The module docs name the `tls` feature's items; without it they are absent.
#![cfg_attr(not(feature = "tls"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "tls")]
pub(crate) mod config;

#[cfg(feature = "tls")]
pub use config::{
    client_config, client_config_from_files, require_server_names, server_config,
    server_config_from_files,
};
#[cfg(feature = "tls")]
pub use rustls;

#[cfg(feature = "tls")]
pub(crate) use config::{with_client_alpn, with_server_alpn};

/// The ALPN protocol name of this wire format version.
pub const ALPN: &[u8] = b"ringrpc/1";

/// The verified identity of a TLS peer: what its end-entity certificate says.
/// Handlers read it with [`Ctx::peer_identity`](crate::Ctx::peer_identity);
/// the authorization hook sees it too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    subject: String,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl PeerIdentity {
    /// An identity with these names (for tests of authorization code).
    pub fn new(subject: impl Into<String>, dns_names: Vec<String>, uris: Vec<String>) -> Self {
        Self {
            subject: subject.into(),
            dns_names,
            uris,
        }
    }

    /// The certificate's subject as an RFC 4514 string (e.g. `CN=client`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DNS names of its subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The URIs of its subject alternative names.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The first `spiffe://` URI SAN: the workload's SPIFFE ID, if it has one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uris
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("spiffe://"))
    }

    /// Reads the names of a DER certificate (already verified by rustls); a
    /// certificate x509-parser cannot read gives an empty identity.
    #[cfg(feature = "tls")]
    pub(crate) fn from_der(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        use x509_parser::prelude::FromDer;
        let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
            return Self::default();
        };
        let mut id = Self {
            subject: cert.subject().to_string(),
            ..Self::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => id.dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        id
    }
}

/// Why a TLS handshake (or a later record) failed: the label of
/// `ringrpc_server_tls_handshake_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The client presented no certificate where one is required.
    NoCertificate,
    /// The peer's certificate does not chain to a trusted CA.
    UnknownCa,
    /// The peer's certificate has expired (or is not valid yet).
    Expired,
    /// The server name asked for (SNI) is not one this server serves, or
    /// does not match the server's certificate.
    BadSni,
    /// Bytes that are not TLS, or a record that fails to decrypt or parse.
    Garbage,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// Any other failure (unsupported version, no common ALPN, ...).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in metrics order.
    pub const ALL: [Self; 7] = [
        Self::NoCertificate,
        Self::UnknownCa,
        Self::Expired,
        Self::BadSni,
        Self::Garbage,
        Self::Timeout,
        Self::Other,
    ];

    /// The reason's metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::BadSni => "bad_sni",
            Self::Garbage => "garbage",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// The reason a rustls error is counted under.
    #[cfg(feature = "tls")]
    pub(crate) fn classify(e: &rustls::Error) -> Self {
        use rustls::{CertificateError as C, Error as E};
        match e {
            E::NoCertificatesPresented => Self::NoCertificate,
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature | C::InvalidPurpose => Self::UnknownCa,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => Self::Expired,
                C::NotValidForName | C::NotValidForNameContext { .. } => Self::BadSni,
                _ => Self::Other,
            },
            E::AlertReceived(a) => Self::from_alert(*a),
            E::General(m) if m.contains("no server certificate") => Self::BadSni,
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::DecryptError
            | E::PeerMisbehaved(_) => Self::Garbage,
            _ => Self::Other,
        }
    }

    /// The reason a peer's fatal alert says (what the client side counts).
    #[cfg(feature = "tls")]
    fn from_alert(a: rustls::AlertDescription) -> Self {
        use rustls::AlertDescription as A;
        match a {
            A::CertificateRequired => Self::NoCertificate,
            A::UnknownCA | A::BadCertificate => Self::UnknownCa,
            A::CertificateExpired => Self::Expired,
            A::UnrecognisedName | A::AccessDenied => Self::BadSni,
            A::DecodeError | A::DecryptError | A::UnexpectedMessage | A::BadRecordMac => {
                Self::Garbage
            }
            _ => Self::Other,
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_is_the_first_spiffe_uri() {
        let id = PeerIdentity::new(
            "CN=a",
            vec!["a.example".into()],
            vec!["https://x".into(), "spiffe://td/ns/a/sa/b".into()],
        );
        assert_eq!(id.spiffe_id(), Some("spiffe://td/ns/a/sa/b"));
        assert_eq!(PeerIdentity::default().spiffe_id(), None);
    }

    #[test]
    fn failure_names_are_distinct() {
        let names: std::collections::HashSet<_> =
            HandshakeFailure::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), HandshakeFailure::ALL.len());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rustls_errors_are_classified() {
        use rustls::{CertificateError as C, Error as E};
        let cases = [
            (E::NoCertificatesPresented, HandshakeFailure::NoCertificate),
            (
                E::InvalidCertificate(C::UnknownIssuer),
                HandshakeFailure::UnknownCa,
            ),
            (E::InvalidCertificate(C::Expired), HandshakeFailure::Expired),
            (
                E::InvalidCertificate(C::NotValidForName),
                HandshakeFailure::BadSni,
            ),
            (E::DecryptError, HandshakeFailure::Garbage),
            (E::HandshakeNotComplete, HandshakeFailure::Other),
        ];
        for (e, want) in cases {
            assert_eq!(HandshakeFailure::classify(&e), want, "{e:?}");
        }
    }
}
