//! Bearer tokens through call metadata, checked by the server's
//! authorization hook, over TLS (feature `tls`):
//! `cargo run --features tls --example bearer_token`.
//!
//! Calls with a reader token, an admin token and no token; prints what each
//! got (`PermissionDenied` for the refused ones). Runs on loopback.

mod auth;

use auth::{Role, HELLO, RESET};
use ringrpc::Runtime;

fn main() -> Result<(), ringrpc::Error> {
    let certs = auth::make_certs();
    let server_rt = Runtime::builder().cores(1).pin(false).build()?;
    let tokens = vec![
        ("reader-token".to_owned(), Role::Reader),
        ("admin-token".to_owned(), Role::Admin),
    ];
    let server = auth::serve(&server_rt, &certs, tokens)?;
    let addr = server.local_addr();
    let tls = auth::client_tls(&certs)?;
    let client_rt = Runtime::builder().cores(1).pin(false).build()?;
    for (who, token, method) in [
        ("reader", Some("reader-token"), &HELLO),
        ("reader", Some("reader-token"), &RESET),
        ("admin", Some("admin-token"), &RESET),
        ("anonymous", None, &HELLO),
    ] {
        let tls = tls.clone();
        let outcome = client_rt.block_on(0, move || async move {
            auth::call(addr, tls, token, method).await
        })?;
        println!("{who:>9} {:<14} -> {outcome:?}", method.name());
    }
    server.shutdown(std::time::Duration::from_millis(100));
    Ok(())
}
