//! The adaptive pool grows under load and shrinks afterwards, failing no call.

mod common;

use std::time::{Duration, Instant};

use common::{client_builder, finish, Msg, TestClient, TestServer};
use ringrpc::runtime::io;
use ringrpc::AdaptivePool;
use ringrpc::{Method, Request};

const SLOW_ECHO: Method<Msg, Msg> = Method::new("Test.slow_echo");

/// Runs `callers` tasks calling SLOW_ECHO in a loop for `dur`; returns (ok, failed,
/// largest pool size seen while it ran).
fn load(client: &TestClient, callers: u64, dur: Duration, pause: Duration) -> (u64, u64, usize) {
    client.run(move |client| async move {
        let stop = Instant::now() + dur;
        let tasks: Vec<_> = (0..callers)
            .map(|id| {
                let client = client.clone();
                io::spawn(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut seq = 0;
                    while Instant::now() < stop {
                        seq += 1;
                        let msg = Msg {
                            id: id * 1_000_000 + seq,
                            text: format!("c{id}"),
                        };
                        match client.call(&SLOW_ECHO, &msg).await {
                            Ok(r) if r.id == msg.id && r.text == msg.text => ok += 1,
                            _ => failed += 1,
                        }
                        if !pause.is_zero() {
                            io::sleep(pause).await;
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let mut peak = 0;
        let watcher = {
            let client = client.clone();
            io::spawn(async move {
                let mut peak = 0;
                while Instant::now() < stop {
                    peak = peak.max(client.stats().live_connections);
                    io::sleep(Duration::from_millis(5)).await;
                }
                peak
            })
        };
        let (mut ok, mut failed) = (0, 0);
        for t in tasks {
            let (o, f) = t.await.expect("caller task");
            ok += o;
            failed += f;
        }
        peak = peak.max(watcher.await.expect("watcher"));
        (ok, failed, peak)
    })
}

#[test]
fn pool_grows_under_load_and_shrinks_when_idle() {
    let server = TestServer::start(
        common::base_server()
            .register_async(SLOW_ECHO, |req: Request<Msg>| async move {
                io::sleep(Duration::from_millis(2)).await;
                Ok::<_, String>(Msg {
                    id: req.id.to_native(),
                    text: req.text.to_string(),
                })
            })
            .expect("register"),
    );
    let adaptive = AdaptivePool {
        max: 6,
        min_hit_rate: 0.8,
        idle_timeout: Duration::from_millis(150),
        window: Duration::from_millis(20),
    };
    let builder = client_builder()
        .pool_size(1)
        .max_in_flight(4)
        .adaptive(adaptive);
    let client = TestClient::connect_with(builder, server.addr());
    assert_eq!(client.stats().live_connections, 1);

    // 32 callers against 4 slots per connection: the pool must grow.
    let (ok, failed, peak) = load(&client, 32, Duration::from_millis(800), Duration::ZERO);
    assert_eq!(failed, 0, "no call may fail while the pool grows");
    assert!(ok > 100, "load made progress ({ok} calls)");
    assert!(peak >= 4, "pool grew under load: peak {peak} connections");
    assert!(peak <= 6, "pool respects its maximum: peak {peak}");

    // One slow caller keeps the first connection busy; the surplus must go.
    let (ok, failed, _) = load(
        &client,
        1,
        Duration::from_millis(1200),
        Duration::from_millis(5),
    );
    assert_eq!(failed, 0, "no call may fail while the pool shrinks");
    assert!(ok > 20);
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.stats().live_connections > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        client.stats().live_connections,
        1,
        "pool shrank back to its minimum"
    );
    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "retiring is not a reconnect");
    assert!(stats.pool_misses > 0, "growth was driven by misses");
    finish(&client, &server);
}
