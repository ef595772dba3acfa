//! Handler errors and unknown methods reach the caller as typed remote errors.

mod common;

use std::time::Duration;

use common::{
    base_server, expect_remote, finish, text_for, ArchivedMsg, Msg, TestClient, TestServer,
};
use ringrpc::runtime::io::sleep;
use ringrpc::{ErrorCode, Method, Request};

const FAIL_SYNC: Method<Msg, Msg> = Method::new("Test.fail_sync");
const FAIL_ASYNC: Method<Msg, Msg> = Method::new("Test.fail_async");
/// Never registered on the server.
const MISSING: Method<Msg, Msg> = Method::new("Nowhere.missing");

fn server() -> TestServer {
    TestServer::start(
        base_server()
            .register(FAIL_SYNC, |_: &ArchivedMsg| -> Result<Msg, &'static str> {
                Err("nope")
            })
            .unwrap()
            .register_async(FAIL_ASYNC, |req: Request<Msg>| async move {
                sleep(Duration::from_millis(1)).await;
                Err::<Msg, _>(format!("nope {}", req.id.to_native()))
            })
            .unwrap(),
    )
}

fn call(client: &TestClient, method: Method<Msg, Msg>, id: u64) -> Result<Msg, ringrpc::Error> {
    client.run(move |client| async move {
        client
            .call(
                &method,
                &Msg {
                    id,
                    text: text_for(id),
                },
            )
            .await
            .map(|r| r.to_owned().unwrap())
    })
}

#[test]
fn handler_error_reaches_the_caller_as_application_error() {
    let server = server();
    let client = TestClient::connect(server.addr());

    assert_eq!(
        expect_remote(call(&client, FAIL_SYNC, 1), ErrorCode::Application),
        "nope"
    );
    assert_eq!(
        expect_remote(call(&client, FAIL_ASYNC, 7), ErrorCode::Application),
        "nope 7"
    );
    // Errors do not disturb the connection.
    assert_eq!(client.echo(2).expect("echo after errors").id, 2);
    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    finish(&client, &server);
}

#[test]
fn unknown_method_is_refused_with_unknown_method() {
    let server = server();
    let client = TestClient::connect(server.addr());

    let message = expect_remote(call(&client, MISSING, 1), ErrorCode::UnknownMethod);
    assert!(!message.is_empty());
    assert_eq!(client.echo(2).expect("echo after unknown method").id, 2);
    assert_eq!(client.stats().reconnects, 0);
    assert_eq!(server.stats().protocol_errors, 0);
    finish(&client, &server);
}

#[test]
fn connecting_off_a_core_is_a_typed_error() {
    let result = ringrpc::Client::builder().connect("127.0.0.1:9".parse().unwrap());
    assert!(matches!(result, Err(ringrpc::Error::NotOnCore)));
}
