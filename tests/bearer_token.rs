//! The bearer-token example (examples/bearer_token) as a test: the
//! authorization hook admits a reader token to `hello` only, an admin token
//! everywhere, and refuses a call without a token with `PermissionDenied`.

#[path = "../examples/bearer_token/auth.rs"]
mod auth;

use auth::{Role, HELLO, RESET};
use ringrpc::{Error, Runtime};

#[test]
fn bearer_tokens_in_metadata_decide_who_may_call_what() {
    let certs = auth::make_certs();
    let server_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let tokens = vec![
        ("r-123".to_owned(), Role::Reader),
        ("a-456".to_owned(), Role::Admin),
    ];
    let server = auth::serve(&server_rt, &certs, tokens).unwrap();
    let addr = server.local_addr();
    let tls = auth::client_tls(&certs).unwrap();
    let client_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let call = |token: Option<&'static str>, method: &'static ringrpc::Method<String, String>| {
        let tls = tls.clone();
        client_rt
            .block_on(0, move || auth::call(addr, tls, token, method))
            .unwrap()
    };
    assert_eq!(call(Some("r-123"), &HELLO).unwrap(), "hello, ringrpc");
    assert_eq!(call(Some("a-456"), &RESET).unwrap(), "reset");
    for (token, method) in [
        (Some("r-123"), &RESET),
        (None, &HELLO),
        (Some("nope"), &HELLO),
    ] {
        match call(token, method) {
            Err(Error::PermissionDenied(_)) => {}
            other => panic!(
                "{token:?} on {}: expected PermissionDenied, got {other:?}",
                method.name()
            ),
        }
    }
    let denied = server_rt.metrics().merged().server.permission_denied;
    assert_eq!(denied, 3);
    server.shutdown(std::time::Duration::from_millis(100));
}
