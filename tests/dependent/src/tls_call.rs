//! With the `tls` feature (`cargo run --release --features tls`): a mutual-TLS
//! call from this outside crate, certificates made now (rcgen), the handler
//! reading the client's SPIFFE ID from its `Ctx`, and an authorization hook
//! refusing a call without it with `PermissionDenied`.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use ringrpc::{Client, Ctx, Denied, Error, Method, Runtime, Server};

const WHO: Method<u64, String> = Method::new("Dependent.who");
const SPIFFE: &str = "spiffe://dependent/client";

/// (CA PEM, server cert, server key, client cert, client key).
fn pki() -> (String, String, String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "dependent CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let leaf = |names: Vec<String>, uri: Option<&str>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        if let Some(uri) = uri {
            let uri = uri.try_into().expect("uri");
            params.subject_alt_names.push(SanType::URI(uri));
        }
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()], None);
    let (client_cert, client_key) = leaf(vec!["client.dependent".into()], Some(SPIFFE));
    (ca.pem(), server_cert, server_key, client_cert, client_key)
}

/// Runs the mutual-TLS checks on `runtime` (core 1 serves, core 0 calls).
pub fn check(runtime: &Runtime) -> Result<(), String> {
    let (ca, cert, key, client_cert, client_key) = pki();
    let server_tls =
        ringrpc::tls::server_config(cert.as_bytes(), key.as_bytes(), Some(ca.as_bytes()))
            .map_err(|e| e.to_string())?;
    let server = Server::builder()
        .register_with_ctx(WHO, |ctx: &Ctx, _: &rkyv::rend::u64_le| {
            let id = ctx.peer_identity().and_then(|id| id.spiffe_id());
            Ok::<_, String>(id.unwrap_or("-").to_owned())
        })
        .map_err(|e| e.to_string())?
        .tls(server_tls)
        .authorize(|req| match req.metadata().get("deny") {
            Some(_) => Err(Denied::new("told to")),
            None => Ok(()),
        })
        .serve_on(runtime, &[1], "127.0.0.1:0".parse().expect("addr"))
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let client_tls: Arc<_> = ringrpc::tls::client_config(
        ca.as_bytes(),
        Some((client_cert.as_bytes(), client_key.as_bytes())),
    )
    .map_err(|e| e.to_string())?;
    let outcome = runtime
        .block_on(0, move || async move {
            let client = Client::builder()
                .tls(client_tls, "localhost")?
                .connect(addr)?;
            let who = client.call(&WHO, &7u64).await?.as_str().to_owned();
            let opts = ringrpc::CallOptions::new().metadata("deny", "1")?;
            let denied = client.call_with(&WHO, &7u64, &opts).await.map(|_| ());
            client.close();
            Ok::<_, Error>((who, denied))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("mTLS call: {e}"))?;
    server.shutdown(std::time::Duration::from_millis(200));
    match outcome {
        (who, Err(Error::PermissionDenied(_))) if who == SPIFFE => Ok(()),
        other => Err(format!("mTLS: unexpected {other:?}")),
    }
}
