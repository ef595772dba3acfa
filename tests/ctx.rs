//! The handler context (issue 15): metadata from caller to handler, the
//! deadline propagated through a nested call, the cancel frame stopping a
//! slow handler, and the peer and core a handler sees.

mod common;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_server, client_builder, wait_until, Msg, TestClient, TestServer, ECHO};
use ringrpc::runtime::io;
use ringrpc::{CallOptions, Client, Ctx, Error, Method, Request};

/// Answers with what the call's metadata holds under "tenant", and where it ran.
const WHO: Method<Msg, Msg> = Method::new("Ctx.who");
/// Sleeps `id` ms (async), watching for cancellation.
const SLOW: Method<Msg, Msg> = Method::new("Ctx.slow");
/// Answers with its remaining budget in µs as `id`.
const BUDGET: Method<Msg, Msg> = Method::new("Ctx.budget");
/// Calls `BUDGET` on the downstream server with the inherited deadline.
const RELAY: Method<Msg, Msg> = Method::new("Ctx.relay");

fn msg(id: u64, text: &str) -> Msg {
    Msg {
        id,
        text: text.to_string(),
    }
}

#[test]
fn metadata_peer_and_core_reach_the_handler() {
    let server = TestServer::start(
        base_server()
            .register_with_ctx(WHO, |ctx: &Ctx, req: &<Msg as rkyv::Archive>::Archived| {
                let tenant = ctx.metadata().get("tenant").unwrap_or(b"none");
                let text = format!(
                    "{} {} {} {}",
                    String::from_utf8_lossy(tenant),
                    ctx.peer().ip(),
                    ctx.core(),
                    ctx.metadata().iter().count()
                );
                Ok::<_, String>(msg(req.id.to_native(), &text))
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    let (with, without) = client.run(|c| async move {
        let opts = CallOptions::new()
            .metadata("tenant", "acme")
            .unwrap()
            .metadata("trace-id", [1u8, 2, 3])
            .unwrap();
        let with = c.call_with(&WHO, &msg(1, ""), &opts).await.unwrap();
        let without = c.call(&WHO, &msg(2, "")).await.unwrap();
        (with.text.to_string(), without.text.to_string())
    });
    assert_eq!(with, "acme 127.0.0.1 0 2");
    assert_eq!(without, "none 127.0.0.1 0 0");
    // Bad keys are refused before anything is sent.
    assert!(CallOptions::new().metadata("Bad Key", "x").is_err());
    common::finish(&client, &server);
}

#[test]
fn a_nested_call_inherits_the_remaining_budget_minus_the_margin() {
    // Downstream: reports the budget it was given, or sleeps past it.
    let downstream = TestServer::start(
        base_server()
            .register_async_with_ctx(BUDGET, |ctx: Ctx, req: Request<Msg>| async move {
                let left = ctx.remaining().expect("a deadline came").as_micros() as u64;
                let sleep = req.id.to_native();
                if sleep > 0 {
                    io::sleep(Duration::from_millis(sleep)).await;
                }
                Ok::<_, String>(msg(left, ""))
            })
            .unwrap(),
    );
    let down_addr = downstream.addr();
    // Middle: relays to downstream with CallOptions::inherit(&ctx).
    let middle = TestServer::start(
        base_server()
            .register_async_with_ctx(RELAY, move |ctx: Ctx, req: Request<Msg>| {
                let sleep = req.id.to_native();
                async move {
                    let client = downstream_client(down_addr).await;
                    let sent_with = ctx.remaining().unwrap();
                    let reply = client
                        .call_with(&BUDGET, &msg(sleep, ""), &CallOptions::inherit(&ctx))
                        .await;
                    match reply {
                        Ok(r) => Ok(msg(r.id.to_native(), &format!("{}", sent_with.as_micros()))),
                        Err(e) => Err(format!("nested: {e}")),
                    }
                }
            })
            .unwrap(),
    );
    let client = TestClient::connect(middle.addr());
    // A 400 ms budget: downstream sees less than the middle had, by at least the margin.
    let (got, middle_had) = client.run(|c| async move {
        let r = c
            .call_with(
                &RELAY,
                &msg(0, ""),
                &CallOptions::new().deadline(Duration::from_millis(400)),
            )
            .await
            .unwrap();
        (r.id.to_native(), r.text.parse::<u64>().unwrap())
    });
    assert!(got <= 400_000 - 1_000, "downstream budget {got} µs");
    assert!(
        got + 1_000 <= middle_had,
        "margin kept: {got} vs {middle_had}"
    );
    assert!(got > 300_000, "budget not lost on the way: {got} µs");
    // A slow downstream: the nested call times out at the inherited deadline,
    // long before the client's default 2 s.
    let started = Instant::now();
    let err = client.run(|c| async move {
        c.call_with(
            &RELAY,
            &msg(500, ""),
            &CallOptions::new().deadline(Duration::from_millis(100)),
        )
        .await
        .map(|_| ())
    });
    let took = started.elapsed();
    assert!(
        matches!(err, Err(Error::Timeout | Error::Remote { .. })),
        "{err:?}"
    );
    assert!(took < Duration::from_millis(400), "took {took:?}");
    common::finish(&client, &middle);
}

thread_local! {
    static DOWNSTREAM: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
}

/// One client per server core to the downstream server, made on first use.
async fn downstream_client(addr: SocketAddr) -> Client {
    if let Some(c) = DOWNSTREAM.with(|d| d.borrow().clone()) {
        return c;
    }
    let c = client_builder().connect(addr).expect("on a core");
    c.wait_connected(Duration::from_secs(2)).await;
    DOWNSTREAM.with(|d| *d.borrow_mut() = Some(c.clone()));
    c
}

#[test]
fn dropping_a_call_sends_a_cancel_that_stops_the_slow_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicU64::new(0));
    let (d, o) = (dropped.clone(), observed.clone());
    let server = TestServer::start(
        base_server()
            .register_async_with_ctx(SLOW, move |ctx: Ctx, req: Request<Msg>| {
                struct Guard(Arc<AtomicBool>);
                impl Drop for Guard {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let guard = Guard(d.clone());
                let observed = o.clone();
                let ms = req.id.to_native();
                async move {
                    let _guard = guard;
                    let ctx = Rc::new(ctx);
                    // Watch the signal too: a handler may also check it itself.
                    let watch = ctx.clone();
                    io::spawn(async move {
                        watch.cancelled().await;
                        observed.store(1, Ordering::SeqCst);
                    })
                    .detach();
                    io::sleep(Duration::from_millis(ms)).await;
                    Ok::<_, String>(msg(ms, ""))
                }
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    let gave_up = client.run(|c| async move {
        // The caller stops waiting after 50 ms: its call future is dropped.
        io::until(
            Instant::now() + Duration::from_millis(50),
            c.call(&SLOW, &msg(5_000, "")),
        )
        .await
        .is_none()
    });
    assert!(gave_up);
    wait_until(Duration::from_secs(2), "the handler was dropped", || {
        dropped.load(Ordering::SeqCst)
    });
    wait_until(
        Duration::from_secs(2),
        "the handler's ctx saw the cancel",
        || observed.load(Ordering::SeqCst) == 1,
    );
    let m = server.rt.metrics();
    let sc = &m.cores[0].server;
    assert_eq!((sc.cancels, sc.cancelled), (1, 1), "{sc:?}");
    // The connection is fine: other calls go on.
    assert_eq!(client.echo(9).unwrap().id, 9);
    // A call that completes sends no cancel.
    client
        .run(|c| async move { c.call(&SLOW, &msg(1, "")).await.map(|_| ()) })
        .unwrap();
    let m = server.rt.metrics();
    assert_eq!(m.cores[0].server.cancels, 1);
    let _ = ECHO;
    common::finish(&client, &server);
}

/// Fails with a typed error for id 0, a text error for id 1, else echoes.
const FIND: Method<Msg, Msg> = Method::new("Ctx.find");

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct NotFound {
    key: String,
    shard: u32,
}

#[test]
fn a_typed_application_error_comes_back_typed() {
    let server = TestServer::start(
        base_server()
            .register(FIND, |req: &<Msg as rkyv::Archive>::Archived| {
                match req.id.to_native() {
                    0 => Err(ringrpc::Typed(NotFound {
                        key: req.text.to_string(),
                        shard: 3,
                    })),
                    id => Ok(msg(id, "found")),
                }
            })
            .unwrap()
            .register_async_with_ctx(SLOW, |_ctx: Ctx, req: Request<Msg>| async move {
                if req.id.to_native() == 1 {
                    return Err("plain text".to_string());
                }
                Ok(msg(2, ""))
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    let (typed, text, ok) = client.run(|c| async move {
        let typed = c.call(&FIND, &msg(0, "k7")).await.map(|_| ());
        let text = c.call(&SLOW, &msg(1, "")).await.map(|_| ());
        let ok = c.call(&FIND, &msg(5, "")).await.map(|r| r.id.to_native());
        (typed, text, ok)
    });
    match typed {
        Err(Error::Application(app)) => {
            assert_eq!(app.access::<NotFound>().unwrap().key.as_str(), "k7");
            let owned: NotFound = app.decode().unwrap();
            assert_eq!(
                owned,
                NotFound {
                    key: "k7".into(),
                    shard: 3
                }
            );
            // The wrong type is a validation error, never garbage.
            assert!(app.access::<u64>().is_err() || app.bytes().len() >= 8);
        }
        other => panic!("expected a typed error, got {other:?}"),
    }
    assert!(
        matches!(&text, Err(Error::Remote { code: ringrpc::ErrorCode::Application, message }) if message == "plain text"),
        "{text:?}"
    );
    assert_eq!(ok.unwrap(), 5);
    common::finish(&client, &server);
}
