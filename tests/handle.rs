//! `Handle`: calls from a tokio application (multi-thread runtime, many tasks
//! at once), typed errors (timeout, unknown method, server gone, runtime
//! shut down), a dropped call freeing its slot on the core, the async forms
//! (`CoreTask` awaited, `metrics_async`, `shutdown_async`) and `OwnedReply`.

mod common;

use std::time::{Duration, Instant};

use common::{base_server, client_builder, text_for, Msg, ECHO};
use ringrpc::runtime::io;
use ringrpc::{
    Client, Error, ErrorCode, Handle, Method, OwnedReply, Request, Runtime, ServerHandle,
};

/// Sleeps `id` milliseconds, then echoes (an async handler).
const SLOW: Method<Msg, Msg> = Method::new("Test.slow");
/// Registered nowhere.
const MISSING: Method<Msg, Msg> = Method::new("Test.missing");

const _: () = {
    const fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    send_sync_clone::<Handle>();
    send_sync_clone::<OwnedReply<Msg>>();
};

/// The future of a handle call is `Send + 'static` (a tokio task can own it).
fn assert_send_static<T: Send + 'static>(_: &T) {}

fn runtime(cores: usize, name: &str) -> Runtime {
    Runtime::builder()
        .cores(cores)
        .pin(false)
        .name(name)
        .build()
        .expect("runtime")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The echo server plus [`SLOW`], on every core of `rt`.
fn serve(rt: &Runtime) -> ServerHandle {
    base_server()
        .register_async(SLOW, |req: Request<Msg>| async move {
            io::sleep(Duration::from_millis(req.id.to_native())).await;
            Ok::<_, String>(Msg {
                id: req.id.to_native(),
                text: req.text.to_string(),
            })
        })
        .expect("register slow")
        .serve(rt, "127.0.0.1:0".parse().unwrap())
        .expect("serve")
}

fn msg(id: u64) -> Msg {
    Msg {
        id,
        text: text_for(id),
    }
}

#[test]
fn many_tokio_tasks_call_through_one_handle() {
    let server_rt = runtime(1, "h-server");
    let server = serve(&server_rt);
    let client_rt = runtime(2, "h-client");
    let handle = client_builder()
        .connect_handle(&client_rt, server.local_addr())
        .expect("handle");
    assert_eq!(handle.cores(), [0, 1]);
    assert_eq!(handle.endpoint(), server.local_addr());

    let call = handle.call(&ECHO, &msg(0));
    assert_send_static(&call);
    drop(call); // never polled: nothing was sent

    const TASKS: u64 = 16;
    const CALLS: u64 = 200;
    let tokio = tokio_runtime();
    let ok: u64 = tokio.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut ok = 0;
                    for i in 0..CALLS {
                        let id = t * 1_000_000 + i;
                        let reply = handle.call(&ECHO, &msg(id)).await.expect("echo");
                        assert_eq!(reply.id, id);
                        assert_eq!(reply.text, text_for(id));
                        ok += 1;
                    }
                    ok
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            ok += task.await.expect("task");
        }
        ok
    });
    assert_eq!(ok, TASKS * CALLS);

    // Round-robin: both cores' clients made half the calls (+ none lost).
    let metrics = tokio.block_on(client_rt.metrics_async());
    let calls: Vec<u64> = metrics.cores.iter().map(|c| c.client.calls).collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls.iter().sum::<u64>(), TASKS * CALLS, "{calls:?}");
    assert!(calls.iter().all(|&c| c == TASKS * CALLS / 2), "{calls:?}");

    tokio.block_on(async {
        server.shutdown_async(Duration::from_secs(1)).await;
        client_rt.shutdown_async().await;
        server_rt.shutdown_async().await;
    });
}

#[test]
fn errors_come_back_typed() {
    let server_rt = runtime(1, "h-server");
    let server = serve(&server_rt);
    let client_rt = runtime(1, "h-client");
    let handle = client_builder()
        .deadline(Duration::from_millis(500))
        .connect_handle(&client_rt, server.local_addr())
        .expect("handle");
    let tokio = tokio_runtime();
    tokio.block_on(async {
        assert_eq!(handle.call(&ECHO, &msg(1)).await.expect("echo").id, 1);

        // The handler takes 300 ms; the call allows 50.
        let started = Instant::now();
        let timeout = handle
            .call_with_deadline(&SLOW, &msg(300), Duration::from_millis(50))
            .await;
        assert!(matches!(timeout, Err(Error::Timeout)), "{timeout:?}");
        assert!(started.elapsed() < Duration::from_millis(250));

        match handle.call(&MISSING, &msg(2)).await {
            Err(Error::Remote { code, .. }) => assert_eq!(code, ErrorCode::UnknownMethod),
            other => panic!("expected UnknownMethod, got {other:?}"),
        }

        // A deadline that has passed before the call reaches its core.
        let zero = handle
            .call_with_deadline(&ECHO, &msg(3), Duration::ZERO)
            .await;
        assert!(matches!(zero, Err(Error::Timeout)), "{zero:?}");
    });

    // Server gone: the connection is lost, reconnecting is refused.
    server.abort();
    tokio.block_on(async {
        let gone = handle.call(&ECHO, &msg(4)).await;
        assert!(
            matches!(
                gone,
                Err(Error::ConnectionLost | Error::NotSent | Error::Unavailable)
            ),
            "{gone:?}"
        );
        assert!(gone.unwrap_err().is_retryable());
    });
}

#[test]
fn runtime_shutdown_fails_calls_with_shutdown_and_nothing_hangs() {
    let server_rt = runtime(1, "h-server");
    let server = serve(&server_rt);
    let client_rt = runtime(1, "h-client");
    let handle = client_builder()
        .deadline(Duration::from_secs(30))
        .connect_handle(&client_rt, server.local_addr())
        .expect("handle");
    let tokio = tokio_runtime();
    tokio.block_on(async {
        assert_eq!(handle.call(&ECHO, &msg(1)).await.expect("echo").id, 1);
        // In flight on the core when it stops: the handler takes 5 s.
        let in_flight: Vec<_> = (0..8)
            .map(|_| tokio::spawn(handle.call(&SLOW, &msg(5_000))))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), client_rt.shutdown_async())
            .await
            .expect("the runtime shuts down");
        for call in in_flight {
            let result = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .expect("the call ends")
                .expect("task");
            assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(4));
        // Later calls are refused at once.
        let late = handle.call(&ECHO, &msg(2)).await;
        assert!(matches!(late, Err(Error::Shutdown)), "{late:?}");
    });
    server.abort();
}

#[test]
fn dropping_a_call_abandons_it_on_its_core() {
    let server_rt = runtime(1, "h-server");
    let server = serve(&server_rt);
    let client_rt = runtime(1, "h-client");
    let handle = client_builder()
        .connect_handle(&client_rt, server.local_addr())
        .expect("handle");
    let tokio = tokio_runtime();
    tokio.block_on(async {
        assert_eq!(handle.call(&ECHO, &msg(1)).await.expect("echo").id, 1);
        let calls: Vec<_> = (0..16).map(|_| handle.call(&SLOW, &msg(1_500))).collect();
        let all = futures_join_all(calls);
        assert!(tokio::time::timeout(Duration::from_millis(100), all)
            .await
            .is_err());
        // The 16 calls were dropped while their handler still sleeps: the
        // core's client frees their slots at once, without waiting for replies.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let m = client_rt.metrics_async().await;
            let client = m.cores[0].client;
            if client.in_flight == 0 && client.calls == 17 {
                break;
            }
            assert!(Instant::now() < deadline, "slots still held: {client:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    drop(handle);
    server.abort();
}

/// Polls every future to completion (so they are all sent, then dropped together).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}

#[test]
fn async_forms_and_typed_setup_errors() {
    let rt = runtime(2, "h-both");
    let server = serve(&rt);
    let addr = server.local_addr();
    let tokio = tokio_runtime();
    tokio.block_on(async {
        // A CoreTask is a future: awaited on a tokio worker, no blocking.
        let core = rt
            .spawn_on(1, || async { ringrpc::runtime::current_core() })
            .expect("spawn");
        assert_eq!(core.await.expect("task"), Some(1));
        let failed = rt
            .spawn_on(0, || async { panic!("boom") })
            .expect("spawn")
            .await;
        assert!(matches!(failed, Err::<(), _>(Error::Shutdown)));

        // Off a ringrpc core (a tokio worker), a Client cannot be made.
        assert!(matches!(
            Client::builder().insecure_plaintext().connect(addr),
            Err(Error::NotOnCore)
        ));

        // A handle on core 1 only; bad core lists are typed errors.
        let handle = client_builder()
            .connect_handle_on(&rt, &[1], addr)
            .expect("handle");
        assert_eq!(handle.cores(), [1]);
        assert_eq!(handle.call(&ECHO, &msg(9)).await.expect("echo").id, 9);
        assert!(matches!(
            client_builder().connect_handle_on(&rt, &[2], addr),
            Err(Error::NoSuchCore { core: 2, cores: 2 })
        ));
        assert!(matches!(
            client_builder().connect_handle_on(&rt, &[], addr),
            Err(Error::Config(_))
        ));

        let metrics = rt.metrics_async().await;
        assert_eq!(metrics.cores.len(), 2);
        assert_eq!(metrics.cores[1].client.calls, 1);
        assert_eq!(metrics.cores[0].client.calls, 0);
        assert!(metrics.merged().server.requests >= 1);

        let started = Instant::now();
        server.shutdown_async(Duration::from_secs(1)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        let after = handle.call(&ECHO, &msg(10)).await;
        assert!(after.is_err(), "{after:?}");
    });
    tokio.block_on(rt.shutdown_async());
}

#[test]
fn owned_replies_are_validated_views_that_outlive_the_runtime() {
    let rt = runtime(1, "h-owned");
    let server = serve(&rt);
    let handle = client_builder()
        .connect_handle(&rt, server.local_addr())
        .expect("handle");
    let reply = ringrpc::runtime::wait(handle.call(&ECHO, &msg(77))).expect("echo");
    drop(server);
    drop(handle);
    rt.shutdown();

    let copy = reply.clone();
    std::thread::spawn(move || assert_eq!(copy.text, text_for(77)))
        .join()
        .unwrap();
    assert_eq!(reply.to_owned().expect("deserialise"), msg(77));
    let bytes = reply.bytes().clone();
    assert_eq!(bytes.as_ptr().align_offset(16), 0);
    assert_eq!(OwnedReply::<Msg>::new(bytes.clone()).expect("valid").id, 77);
    // Garbage is refused, not read.
    // Too short for the archive's root, or not 16-byte aligned: refused, not read.
    for bad in [bytes.slice(..8), bytes.slice(1..)] {
        let refused = OwnedReply::<Msg>::new(bad);
        assert!(matches!(refused, Err(Error::Protocol(_))), "{refused:?}");
    }
    assert_eq!(reply.into_bytes(), bytes);
}
