//! Certificates for the TLS peers, made once per process (rcgen): a CA and a
//! server certificate for `localhost` it signed. ringrpc-tls and tonic-tls
//! both use them: TLS 1.3, server authentication, rustls with ring on both.

use std::sync::OnceLock;

/// PEM texts of the CA and of the server's certificate and key.
#[derive(Debug)]
pub struct Certs {
    /// The CA's certificate (what clients trust).
    pub ca: String,
    /// The server's certificate (CN and SAN `localhost`).
    pub cert: String,
    /// The server's private key (PKCS#8).
    pub key: String,
}

/// The process's certificates (made on first use).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(make)
}

fn make() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "peers CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    Certs {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}
