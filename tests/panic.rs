//! A panicking handler (sync or async) fails only its own call.

mod common;

use std::time::Duration;

use common::{
    base_server, client_builder, expect_remote, finish, text_for, Msg, TestClient, TestServer,
};
use ringrpc::runtime::io::sleep;
use ringrpc::{ErrorCode, Method, Request};

const PANIC_SYNC: Method<Msg, Msg> = Method::new("Test.panic_sync");
/// Panics inside the future, after an await.
const PANIC_ASYNC: Method<Msg, Msg> = Method::new("Test.panic_async");
/// Panics while building the future, before it is first polled.
const PANIC_ASYNC_EARLY: Method<Msg, Msg> = Method::new("Test.panic_async_early");

const PANIC_TEXT: &str = "intentional test panic";

/// Keeps the intentional panics out of the test output; other panics still print.
fn quiet_intentional_panics() {
    common::quiet_panics_with(PANIC_TEXT);
}

fn panicking_server() -> TestServer {
    quiet_intentional_panics();
    TestServer::start(
        base_server()
            .register(
                PANIC_SYNC,
                |_: &common::ArchivedMsg| -> Result<Msg, String> { panic!("{}", PANIC_TEXT) },
            )
            .unwrap()
            .register_async(PANIC_ASYNC, |req: Request<Msg>| async move {
                sleep(Duration::from_millis(1)).await;
                if req.id.to_native() != u64::MAX {
                    panic!("{}", PANIC_TEXT);
                }
                Ok::<_, String>(Msg {
                    id: 0,
                    text: String::new(),
                })
            })
            .unwrap()
            .register_async(PANIC_ASYNC_EARLY, |req: Request<Msg>| {
                if req.id.to_native() != u64::MAX {
                    panic!("{}", PANIC_TEXT);
                }
                async {
                    Ok::<_, String>(Msg {
                        id: 0,
                        text: String::new(),
                    })
                }
            })
            .unwrap(),
    )
}

#[test]
fn panicking_handlers_fail_only_their_own_call() {
    let server = panicking_server();
    let client = TestClient::connect(server.addr());

    for (round, method) in [PANIC_SYNC, PANIC_ASYNC, PANIC_ASYNC_EARLY, PANIC_SYNC]
        .into_iter()
        .enumerate()
    {
        let id = round as u64;
        let result = client.run(move |client| async move {
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
        });
        let message = expect_remote(result, ErrorCode::Panicked);
        assert!(!message.is_empty(), "{method:?}: empty panic message");

        // The next call on the same connection succeeds.
        let echoed = client.echo(100 + id).expect("call after a panic");
        assert_eq!(echoed.id, 100 + id);
        assert_eq!(echoed.text, text_for(100 + id));
    }

    // Concurrent calls: panicking ones fail, healthy ones in the same batch succeed.
    let (panicked, echoed) = client.run(|client| async move {
        let bad = Msg {
            id: 1,
            text: String::new(),
        };
        let good = Msg {
            id: 2,
            text: text_for(2),
        };
        let (a, b, c, d) = futures_util::future::join4(
            client.call(&PANIC_ASYNC, &bad),
            client.call(&common::ECHO, &good),
            client.call(&PANIC_SYNC, &bad),
            client.call(&common::ECHO, &good),
        )
        .await;
        let panicked = [a, c]
            .into_iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(ringrpc::Error::Remote {
                        code: ErrorCode::Panicked,
                        ..
                    })
                )
            })
            .count();
        let echoed = [b, d]
            .into_iter()
            .filter(|r| r.as_ref().is_ok_and(|m| m.id.to_native() == 2))
            .count();
        (panicked, echoed)
    });
    assert_eq!((panicked, echoed), (2, 2));

    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(server.stats().accepted, 1);
    assert_eq!(server.stats().protocol_errors, 0);

    // The server core still serves new connections.
    let addr = server.addr();
    let fresh = client.run(move |_| async move {
        let other = client_builder()
            .connect(addr)
            .expect("connect on a ringrpc core");
        assert!(other.wait_connected(Duration::from_secs(2)).await);
        let r = other
            .call(
                &common::ECHO,
                &Msg {
                    id: 9,
                    text: text_for(9),
                },
            )
            .await
            .map(|r| r.id.to_native());
        other.close();
        r
    });
    assert_eq!(fresh.expect("call on a new connection"), 9);
    assert_eq!(server.stats().accepted, 2);
    finish(&client, &server);
}
