//! Certificates made at test time (rcgen) and TLS configs built from them.
//!
//! - [`Pki::new`]: a CA, a server certificate for `localhost`/127.0.0.1, and
//!   a client certificate with a SPIFFE URI SAN, all signed by the CA;
//! - [`Pki::client`] / [`Pki::expired_client`]: more client identities.
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A PEM certificate and its key.
pub struct Identity {
    pub cert: String,
    pub key: String,
}

/// A CA and the identities it signed.
pub struct Pki {
    ca_cert: Certificate,
    ca_key: KeyPair,
    pub ca_pem: String,
    pub server: Identity,
    pub client: Identity,
}

/// The SPIFFE ID of the default client.
pub const CLIENT_SPIFFE: &str = "spiffe://cluster.local/ns/test/sa/client";

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, key)
}

impl Pki {
    pub fn new() -> Self {
        let (ca_cert, ca_key) = ca("ringrpc test CA");
        let ca_pem = ca_cert.pem();
        let mut pki = Self {
            ca_cert,
            ca_key,
            ca_pem,
            server: Identity {
                cert: String::new(),
                key: String::new(),
            },
            client: Identity {
                cert: String::new(),
                key: String::new(),
            },
        };
        pki.server = pki.sign("server", &["localhost"], &[], false);
        pki.client = pki.sign("client", &["client.test"], &[CLIENT_SPIFFE], false);
        pki
    }

    /// A certificate for `cn` with these DNS and URI SANs, signed by this CA
    /// (valid now, or expired in 2001).
    pub fn sign(&self, cn: &str, dns: &[&str], uris: &[&str], expired: bool) -> Identity {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("uri")));
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server config requiring client certificates from this CA.
    pub fn server_config(&self) -> Arc<ringrpc::tls::rustls::ServerConfig> {
        ringrpc::tls::server_config(
            self.server.cert.as_bytes(),
            self.server.key.as_bytes(),
            Some(self.ca_pem.as_bytes()),
        )
        .expect("server config")
    }

    /// A client config trusting this CA and presenting `identity`, if any.
    pub fn client_config(
        &self,
        identity: Option<&Identity>,
    ) -> Arc<ringrpc::tls::rustls::ClientConfig> {
        ringrpc::tls::client_config(
            self.ca_pem.as_bytes(),
            identity.map(|i| (i.cert.as_bytes(), i.key.as_bytes())),
        )
        .expect("client config")
    }
}

/// An identity from another CA (unknown to the server).
pub fn stranger() -> Identity {
    Pki::new().client
}
