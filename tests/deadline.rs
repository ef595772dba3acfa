//! Deadlines: client-side timeouts, stale late replies, and server-side refusal of
//! requests whose budget ran out before their handler could start.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_server, finish, text_for, wait_until, ArchivedMsg, Msg, TestClient, TestServer};
use ringrpc::runtime::io::sleep;
use ringrpc::{Error, Method, Request};

/// Sleeps `id` milliseconds (async), then echoes.
const NAP: Method<Msg, Msg> = Method::new("Test.nap");
/// Blocks the server core for `id` milliseconds (sync), then echoes.
const BLOCK: Method<Msg, Msg> = Method::new("Test.block");
/// Counts its executions, then echoes.
const COUNTED: Method<Msg, Msg> = Method::new("Test.counted");
/// Counts its executions in [`SEEN`], then echoes.
const SEEN_ECHO: Method<Msg, Msg> = Method::new("Test.seen");

static SEEN: AtomicUsize = AtomicUsize::new(0);

fn msg(id: u64) -> Msg {
    Msg {
        id,
        text: text_for(id),
    }
}

/// Drops of NAP handler futures that never finished (the server cancelled them).
static NAPS_CANCELLED: AtomicUsize = AtomicUsize::new(0);

struct CountIfCancelled(bool);

impl Drop for CountIfCancelled {
    fn drop(&mut self) {
        if !self.0 {
            NAPS_CANCELLED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn expired_call_times_out_frees_its_slot_and_the_connection_keeps_working() {
    let server = TestServer::start(
        base_server()
            .register_async(NAP, |req: Request<Msg>| async move {
                let mut guard = CountIfCancelled(false);
                let id = req.id.to_native();
                sleep(Duration::from_millis(id)).await;
                guard.0 = true;
                Ok::<_, String>(Msg {
                    id,
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());

    let started = Instant::now();
    let (result, elapsed, after) = client.run(|client| async move {
        let start = Instant::now();
        let result = client
            .call_with_deadline(&NAP, &msg(600), Duration::from_millis(50))
            .await
            .map(|r| r.id.to_native());
        (result, start.elapsed(), client.stats())
    });
    assert!(
        matches!(result, Err(Error::Timeout)),
        "expected Timeout, got {result:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(50),
        "gave up early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(400),
        "timed out late: {elapsed:?}"
    );
    assert_eq!(
        after.in_flight, 0,
        "timed-out call freed its slot: {after:?}"
    );
    assert_eq!(after.timeouts, 1, "{after:?}");

    // The server stops the handler at the call's deadline instead of letting it
    // sleep its full 600 ms.
    wait_until(
        Duration::from_secs(2),
        "server cancels the expired handler",
        || NAPS_CANCELLED.load(Ordering::SeqCst) == 1,
    );
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "handler was not cut off at the deadline ({:?})",
        started.elapsed()
    );

    // The same connection keeps working, for sync and async methods.
    let echoed = client.echo(1).expect("echo after timeout");
    assert_eq!(echoed, msg(1));
    let napped = client.run(|client| async move {
        client
            .call_with_deadline(&NAP, &msg(5), Duration::from_secs(2))
            .await
            .map(|r| r.to_owned().unwrap())
    });
    assert_eq!(napped.expect("short nap within deadline"), msg(5));
    assert_eq!(NAPS_CANCELLED.load(Ordering::SeqCst), 1);

    let stats = client.stats();
    assert!(stats.stale_replies <= 1, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    assert_eq!(server.stats().accepted, 1);
    finish(&client, &server);
}

#[test]
fn late_reply_after_timeout_is_counted_stale_and_dropped() {
    let server = TestServer::start(
        base_server()
            .register(BLOCK, |req: &ArchivedMsg| -> Result<Msg, String> {
                std::thread::sleep(Duration::from_millis(req.id.to_native()));
                Ok(Msg {
                    id: req.id.to_native(),
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());

    // The handler answers 150 ms after the request, long after the 40 ms deadline.
    let (result, after) = client.run(|client| async move {
        let result = client
            .call_with_deadline(&BLOCK, &msg(150), Duration::from_millis(40))
            .await
            .map(|r| r.id.to_native());
        (result, client.stats())
    });
    assert!(
        matches!(result, Err(Error::Timeout)),
        "expected Timeout, got {result:?}"
    );
    assert_eq!(after.in_flight, 0, "{after:?}");
    assert_eq!(
        after.stale_replies, 0,
        "reply cannot be here yet: {after:?}"
    );

    wait_until(Duration::from_secs(3), "stale_replies == 1", || {
        client.stats().stale_replies == 1
    });

    // The connection is still good; the next call (reusing the freed slot) works.
    let next = client.run(|client| async move {
        client
            .call_with_deadline(&BLOCK, &msg(1), Duration::from_secs(2))
            .await
            .map(|r| r.to_owned().unwrap())
    });
    assert_eq!(next.expect("next call"), msg(1));

    let stats = client.stats();
    assert_eq!(stats.stale_replies, 1, "{stats:?}");
    assert_eq!(stats.timeouts, 1, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(server.stats().accepted, 1);
    finish(&client, &server);
}

#[test]
fn request_whose_budget_ran_out_at_the_server_is_refused_unrun() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let server = TestServer::start(
        base_server()
            .register(BLOCK, |req: &ArchivedMsg| -> Result<Msg, String> {
                std::thread::sleep(Duration::from_millis(req.id.to_native()));
                Ok(Msg {
                    id: req.id.to_native(),
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap()
            .register(COUNTED, move |req: &ArchivedMsg| -> Result<Msg, String> {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(Msg {
                    id: req.id.to_native(),
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    // A few calls first, so the pair below is not where the server happens to
    // sample its metrics (a sampled request reads the clock anyway): the check
    // must see the time the blocking handler took on its own.
    for id in 0..3 {
        assert_eq!(client.echo(100 + id).expect("warm-up echo").id, 100 + id);
    }

    // Both requests are queued in the same scheduler turn, so they leave in one
    // write and reach the server together: the 10 ms one waits behind the 50 ms
    // blocking handler, and its budget is gone by the time it is dispatched.
    let (blocked, refused, refused_elapsed) = client.run(|client| async move {
        let block_req = msg(50);
        let blocking = client.call_with_deadline(&BLOCK, &block_req, Duration::from_secs(2));
        let short = async {
            let start = Instant::now();
            let r = client
                .call_with_deadline(&COUNTED, &msg(2), Duration::from_millis(10))
                .await
                .map(|r| r.id.to_native());
            (r, start.elapsed())
        };
        let (blocked, (refused, elapsed)) = futures_util::future::join(blocking, short).await;
        (blocked.map(|r| r.to_owned().unwrap()), refused, elapsed)
    });
    assert_eq!(blocked.expect("blocking call"), msg(50));
    assert!(
        matches!(refused, Err(Error::Timeout)),
        "expected Timeout, got {refused:?}"
    );
    assert!(
        refused_elapsed < Duration::from_millis(45),
        "the short call waited for the blocked core: {refused_elapsed:?}"
    );
    // The blocking call's reply was written after the short request was dispatched
    // (same read batch), so its handler would have run by now.
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "handler ran for a request whose budget had expired"
    );

    // The refusal frame arrives after the client gave up: it is stale.
    wait_until(Duration::from_secs(2), "stale_replies == 1", || {
        client.stats().stale_replies == 1
    });

    // With budget left, the same handler does run (so the counter is live).
    let ok = client.run(|client| async move {
        client
            .call_with_deadline(&COUNTED, &msg(3), Duration::from_secs(1))
            .await
            .map(|r| r.to_owned().unwrap())
    });
    assert_eq!(ok.expect("counted call"), msg(3));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    finish(&client, &server);
}

#[test]
fn reply_read_after_the_deadline_is_delivered_or_counted_stale_never_lost() {
    let server = TestServer::start(
        base_server()
            .register(SEEN_ECHO, |req: &ArchivedMsg| -> Result<Msg, String> {
                SEEN.fetch_add(1, Ordering::SeqCst);
                Ok(Msg {
                    id: req.id.to_native(),
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());

    // Each round: the server answers at once, but the client core is blocked past
    // the call's deadline before it gets to read the reply. When it wakes, the
    // reply and the deadline are both due. Whichever wins, the reply must either
    // reach the caller or be counted stale; it must never vanish.
    let mut outcomes = Vec::new();
    for round in 0..10u64 {
        let outcome = client.run(move |client| async move {
            let stale_before = client.stats().stale_replies;
            let start = Instant::now();
            let caller = client.clone();
            let call = ringrpc::runtime::io::spawn(async move {
                caller
                    .call_with_deadline(&SEEN_ECHO, &msg(round), Duration::from_millis(15))
                    .await
                    .map(|r| r.to_owned().unwrap())
            });
            // Wait until the server has handled the request...
            while SEEN.load(Ordering::SeqCst) <= round as usize {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "request not served"
                );
                sleep(Duration::from_millis(1)).await;
            }
            // ...then keep the core busy until well past the deadline.
            while start.elapsed() < Duration::from_millis(30) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let result = call.await.expect("call task");
            let delivered = match &result {
                Ok(m) => {
                    assert_eq!(*m, msg(round));
                    true
                }
                Err(Error::Timeout) => false,
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            };
            if !delivered {
                let waited = Instant::now();
                while client.stats().stale_replies == stale_before {
                    if waited.elapsed() > Duration::from_secs(1) {
                        return Err(format!(
                            "round {round}: call timed out and its reply was neither \
                             delivered nor counted stale"
                        ));
                    }
                    sleep(Duration::from_millis(1)).await;
                }
            }
            let stale = client.stats().stale_replies - stale_before;
            if stale != u64::from(!delivered) {
                return Err(format!(
                    "round {round}: delivered={delivered}, stale replies +{stale}"
                ));
            }
            Ok(delivered)
        });
        outcomes.push(outcome);
    }
    let errors: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(errors.is_empty(), "replies lost: {errors:#?}");
    assert_eq!(client.stats().reconnects, 0);
    finish(&client, &server);
}

/// Sleeps `id` milliseconds (async), then echoes; counts nothing.
const SLOW: Method<Msg, Msg> = Method::new("Test.slow");

#[test]
fn a_calls_deadline_counts_from_when_the_call_is_made_not_from_its_first_poll() {
    let server = TestServer::start(
        base_server()
            .register_async(SLOW, |req: Request<Msg>| async move {
                let id = req.id.to_native();
                sleep(Duration::from_millis(id)).await;
                Ok::<_, String>(Msg {
                    id,
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    let (result, since_made) = client.run(|client| async move {
        let made = Instant::now();
        // A 200 ms handler, a 250 ms deadline, and the future first polled
        // 150 ms after it was made: counted from when it was made, the call
        // has 100 ms left and times out; counted from its first poll it
        // would have succeeded.
        let request = msg(200);
        let call = client.call_with_deadline(&SLOW, &request, Duration::from_millis(250));
        sleep(Duration::from_millis(150)).await;
        let result = call.await.map(|r| r.id.to_native());
        (result, made.elapsed())
    });
    assert!(
        matches!(result, Err(Error::Timeout)),
        "expected Timeout, got {result:?}"
    );
    assert!(
        since_made >= Duration::from_millis(250),
        "gave up before the deadline: {since_made:?}"
    );
    finish(&client, &server);
}
