//! A server killed under load: in-flight calls fail fast with ConnectionLost, and
//! the client reconnects to a new server on the same address.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_server, finish, text_for, wait_until, Msg, TestClient, TestServer};
use ringrpc::runtime::io::{sleep, spawn};
use ringrpc::{Error, Method, Request, ServerBuilder};

/// Sleeps 30 s (async) before answering: calls to it stay in flight.
const SLOW: Method<Msg, Msg> = Method::new("Test.slow");

const CALLS: u64 = 100;

fn routes(entered: Arc<AtomicUsize>) -> ServerBuilder {
    base_server()
        .register_async(SLOW, move |req: Request<Msg>| {
            entered.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(Duration::from_secs(30)).await;
                Ok::<_, String>(Msg {
                    id: req.id.to_native(),
                    text: String::new(),
                })
            }
        })
        .unwrap()
}

#[test]
fn killed_server_fails_in_flight_calls_fast_and_client_reconnects_to_its_successor() {
    let entered = Arc::new(AtomicUsize::new(0));
    let mut server = TestServer::start(routes(entered.clone()));
    let addr = server.addr();
    let client = TestClient::connect(server.addr());

    // 100 calls with a 10 s deadline, all parked in the slow handler.
    let calls = client.spawn(|client| async move {
        let tasks: Vec<_> = (0..CALLS)
            .map(|id| {
                let client = client.clone();
                spawn(async move {
                    let start = Instant::now();
                    let req = Msg {
                        id,
                        text: text_for(id),
                    };
                    let result = client
                        .call_with_deadline(&SLOW, &req, Duration::from_secs(10))
                        .await
                        .map(|r| r.id.to_native());
                    (result, start.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("call task"));
        }
        out
    });
    wait_until(
        Duration::from_secs(5),
        "all calls reach the handler",
        || entered.load(Ordering::SeqCst) == CALLS as usize,
    );
    assert_eq!(client.stats().in_flight, CALLS as usize);

    let killed = Instant::now();
    server.abort();
    let results = calls.join().expect("client core");
    let failed_within = killed.elapsed();

    assert_eq!(results.len(), CALLS as usize);
    for (id, (result, elapsed)) in results.iter().enumerate() {
        assert!(
            matches!(result, Err(Error::ConnectionLost)),
            "call {id}: expected ConnectionLost, got {result:?}"
        );
        assert!(
            *elapsed < Duration::from_secs(2),
            "call {id} took {elapsed:?} to fail (deadline 10 s)"
        );
    }
    assert!(
        failed_within < Duration::from_secs(2),
        "calls failed {failed_within:?} after the kill"
    );
    let after_kill = client.stats();
    assert_eq!(after_kill.in_flight, 0, "{after_kill:?}");
    assert!(after_kill.connections_lost >= 1, "{after_kill:?}");

    // A new server on the same address; the same client reconnects to it.
    server.serve_again(routes(entered.clone()));
    assert_eq!(server.addr(), addr);
    let start = Instant::now();
    let mut attempts = 0u32;
    let echoed = loop {
        attempts += 1;
        let id = 1000 + u64::from(attempts);
        let result = client.run(move |client| async move {
            client
                .call_with_deadline(
                    &common::ECHO,
                    &Msg {
                        id,
                        text: text_for(id),
                    },
                    Duration::from_millis(250),
                )
                .await
                .map(|r| r.to_owned().unwrap())
        });
        match result {
            Ok(m) => break m,
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        Error::Unavailable
                            | Error::ConnectionLost
                            | Error::NotSent
                            | Error::Timeout
                    ),
                    "unexpected error while reconnecting: {e:?}"
                );
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "no successful call within 3 s of the restart ({attempts} attempts, last {e:?})"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    assert_eq!(echoed.id, 1000 + u64::from(attempts));
    assert_eq!(echoed.text, text_for(echoed.id));

    // Subsequent calls keep succeeding on the new connection.
    for id in 0..10 {
        assert_eq!(client.echo(id).expect("call after reconnect").id, id);
    }
    let stats = client.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    assert_eq!(server.stats().accepted, 1, "new server saw one connection");
    finish(&client, &server);
}
