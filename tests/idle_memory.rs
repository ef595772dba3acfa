//! What an idle connection costs, client and server together, measured with a
//! counting allocator (live heap): right after it connects, and once every
//! connection pinged after a burst of 20 KB calls. A burst grows the
//! send buffers, the call table and (under TLS) the plaintext buffers; an
//! idle connection gives them back (the client when it pings, the server
//! when the ping arrives, the receive buffers before each wait), so
//! thousands of connections that once carried large messages do not each
//! keep hundreds of KiB.
//!
//! Per connection = (heap with 60 connections − heap with 10) / 50, so the
//! runtimes' own memory cancels out, less the chunks the cores keep pooled
//! for reuse (`recv_pool_bytes`, at most 4 MiB per core, whatever the number
//! of connections); the tests take turns (one live heap). The TLS case runs
//! with `--features tls`.

mod common;
#[cfg(feature = "tls")]
mod tls_support;

use std::time::Duration;

use common::{base_server, client_builder, wait_until, Msg, TestClient, TestServer, ECHO};
use ringrpc::{ClientBuilder, ServerBuilder};

#[path = "support/live_heap.rs"]
mod live_heap;

#[global_allocator]
static ALLOCATOR: live_heap::Counting = live_heap::Counting;

/// The live heap once it stopped moving (the previous measurement's
/// runtimes may still be freeing on their threads).
fn settled_heap() -> usize {
    let mut last = live_heap::live_bytes();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(25));
        let now = live_heap::live_bytes();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Heap (KiB) that `n` connections added: connected, then idle after a burst.
fn heap_of(server: ServerBuilder, client: ClientBuilder, n: usize, text: usize) -> (f64, f64) {
    let server = TestServer::start(server);
    let pooled = |client: &TestClient| {
        let pooled = |rt: &ringrpc::Runtime| rt.metrics().merged().recv_pool_bytes as usize;
        pooled(&server.rt) + pooled(&client.rt)
    };
    let before = settled_heap();
    let client = client
        .pool_size(n)
        .heartbeat_interval(Duration::from_millis(100));
    let client = TestClient::connect_with(client, server.addr());
    // Every connection of the pool is up (the pool connects them all).
    std::thread::sleep(Duration::from_millis(300));
    let connected = live_heap::live_bytes() - pooled(&client);
    let failed = client.run(move |client| async move {
        let calls = (0..2 * n as u64).map(|id| {
            let client = client.clone();
            async move {
                let text = "y".repeat(text);
                client.call(&ECHO, &Msg { id, text }).await.is_err()
            }
        });
        let failed = futures_util::future::join_all(calls).await;
        failed.into_iter().filter(|f| *f).count()
    });
    assert_eq!(failed, 0, "every call of the burst answered");
    // A connection pings once quiet for 100 ms (or once a ping from before
    // the burst is a heartbeat timeout old): the client lets go of its
    // buffers then, the server when the ping arrives.
    let pings = || client.rt.metrics().merged().client.pings;
    let after_burst = pings();
    wait_until(Duration::from_secs(5), "a ping on every connection", || {
        pings() >= after_burst + n as u64
    });
    std::thread::sleep(Duration::from_millis(100));
    let idle = live_heap::live_bytes() - pooled(&client);
    drop(client);
    let kib = |bytes: usize| bytes.saturating_sub(before) as f64 / 1024.0;
    (kib(connected), kib(idle))
}

/// The live heap counts the whole process: one measurement at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// KiB per connection (connected, idle after the burst), from 10 and 60.
fn per_connection(
    server: impl Fn() -> ServerBuilder,
    client: impl Fn() -> ClientBuilder,
) -> (f64, f64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let few = heap_of(server(), client(), 10, 20_000);
    let many = heap_of(server(), client(), 60, 20_000);
    ((many.0 - few.0) / 50.0, (many.1 - few.1) / 50.0)
}

#[test]
fn an_idle_connection_gives_back_what_a_burst_of_large_calls_grew() {
    let (connected, idle) = per_connection(base_server, client_builder);
    eprintln!("per connection, client + server: connected {connected:.1} KiB, idle after 20 KB calls {idle:.1} KiB");
    // Before: the call table reserved every slot up front (~100 KiB), the
    // send buffers kept the burst's size (~160 KiB), and on epoll each side
    // kept its 256 KiB receive chunk while waiting.
    assert!(
        connected < 24.0,
        "{connected:.1} KiB per connected connection"
    );
    assert!(
        idle < 24.0,
        "{idle:.1} KiB per idle connection after a burst"
    );
}

#[cfg(feature = "tls")]
#[test]
fn an_idle_tls_connection_gives_back_what_a_burst_of_large_calls_grew() {
    let pki = tls_support::Pki::new();
    let (connected, idle) = per_connection(
        || base_server().tls(pki.server_config()),
        || {
            client_builder()
                .tls(pki.client_config(Some(&pki.client)), "localhost")
                .expect("server name")
        },
    );
    eprintln!("per TLS connection, client + server: connected {connected:.1} KiB, idle after 20 KB calls {idle:.1} KiB");
    // Before: ~127 KiB connected and ~950 KiB idle after the burst (256 KiB
    // plaintext chunks kept on each side). What remains above the plaintext
    // figure is mostly the cores' bounded chunk pools (4 MiB each at most).
    assert!(
        connected < 32.0,
        "{connected:.1} KiB per connected connection"
    );
    assert!(
        idle < 128.0,
        "{idle:.1} KiB per idle connection after a burst"
    );
}
