//! The parts of the bearer-token example: a TLS server whose authorization
//! hook checks an `authorization: Bearer <token>` metadata entry against the
//! tokens it knows (one for readers, one for admins), and a client that sends
//! its token with every call. Shared by `main.rs` and `tests/bearer_token.rs`.
//!
//! The token only travels inside TLS (the client checks the server's
//! certificate); on a plaintext connection anyone on the path could copy it.

use std::net::SocketAddr;
use std::sync::Arc;

use ringrpc::tls::rustls;
use ringrpc::{AuthzRequest, CallOptions, Denied, Error, Method, Runtime, Server, ServerHandle};

/// Anyone with a valid token may greet.
pub const HELLO: Method<String, String> = Method::new("Greeter.hello");
/// Only an admin token may reset.
pub const RESET: Method<String, String> = Method::new("Greeter.reset");

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May call `Greeter.hello`.
    Reader,
    /// May call everything.
    Admin,
}

/// A CA, and a server certificate for `localhost` it signed (PEM). A real
/// deployment loads files instead (`ringrpc::tls::server_config_from_files`).
pub struct Certs {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Makes [`Certs`] now (rcgen).
pub fn make_certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    Certs {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The role of the call's bearer token, if it carries a known one.
fn role_of(req: &AuthzRequest<'_>, tokens: &[(String, Role)]) -> Option<Role> {
    let header = req.metadata().get("authorization")?;
    let token = std::str::from_utf8(header).ok()?.strip_prefix("Bearer ")?;
    // A real check compares in constant time (e.g. with `subtle`).
    tokens.iter().find(|(t, _)| t == token).map(|(_, r)| *r)
}

/// Serves the greeter over TLS on `rt`, on 127.0.0.1 (port 0: any free
/// port), admitting calls whose bearer token is in `tokens`.
pub fn serve(
    rt: &Runtime,
    certs: &Certs,
    tokens: Vec<(String, Role)>,
) -> Result<ServerHandle, Error> {
    let tls = ringrpc::tls::server_config(certs.cert.as_bytes(), certs.key.as_bytes(), None)?;
    Server::builder()
        .register(HELLO, |name: &rkyv::string::ArchivedString| {
            Ok::<_, String>(format!("hello, {name}"))
        })?
        .register(RESET, |_: &rkyv::string::ArchivedString| {
            Ok::<_, String>("reset".to_owned())
        })?
        .tls(tls)
        .authorize(move |req| match (role_of(req, &tokens), req.method()) {
            (None, _) => Err(Denied::new("missing or unknown bearer token")),
            (Some(Role::Reader), "Greeter.reset") => Err(Denied::new("admin only")),
            (Some(_), _) => Ok(()),
        })
        .serve(rt, "127.0.0.1:0".parse().expect("addr"))
}

/// The client's TLS config: trust the example CA.
pub fn client_tls(certs: &Certs) -> Result<Arc<rustls::ClientConfig>, Error> {
    ringrpc::tls::client_config(certs.ca.as_bytes(), None)
}

/// Calls `method` with `token` (if any) in the `authorization` metadata
/// (run on a ringrpc core).
pub async fn call(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: Option<&str>,
    method: &Method<String, String>,
) -> Result<String, Error> {
    let client = ringrpc::Client::builder()
        .tls(tls, "localhost")?
        .connect(addr)?;
    let mut opts = CallOptions::new();
    if let Some(token) = token {
        opts = opts.metadata("authorization", format!("Bearer {token}"))?;
    }
    let reply = client
        .call_with(method, &"ringrpc".to_owned(), &opts)
        .await?;
    Ok(reply.as_str().to_owned())
}
