//! Hostile clients and overload (issue 19), in process: a connection flood past
//! the per-core limit, partial frames that would hold memory, peers that never
//! read, garbage shorter than a header, idle and aged connections.
//!
//! Each test runs a legitimate client on the same server core, calling
//! throughout the attack, and asserts it completes calls with 0 errors (after
//! at most one reconnect); that the server's counters moved as expected; and
//! that connections, descriptors and memory return near the baseline after.
//! The descriptor-limit flood runs the server in a child process
//! (`tests/hostile_fds.rs`).

mod common;
mod hostile_support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_server, raw_connect, text_for, wait_until, Msg, TestClient, TestServer, ECHO};
use hostile_support::{closed_by_peer, fds, rss_bytes, serial, Legit, RssPeak};
use ringrpc::protocol::{FrameHeader, FrameKind, HEADER_LEN};
use ringrpc::Error;

#[test]
fn a_flood_past_the_core_limit_evicts_idle_connections_and_live_clients_keep_calling() {
    let _serial = serial();
    const LIMIT: usize = 64;
    const FLOOD: usize = 200;
    let server = TestServer::start(base_server().max_connections_per_core(LIMIT));
    let legit = Legit::start(server.addr());
    let fds_before = fds();
    let rss_before = rss_bytes();
    let sampler = RssPeak::start();
    // Each flood connection sends one ping, then idles.
    let ping = {
        let mut h = [0u8; HEADER_LEN];
        FrameHeader::new(FrameKind::Ping).encode(0, &mut h);
        h
    };
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let mut s = raw_connect(server.addr(), Duration::from_secs(2));
        s.write_all(&ping).expect("ping");
        flood.push(s);
        std::thread::sleep(Duration::from_micros(300));
    }
    wait_until(
        Duration::from_secs(5),
        "every flood connection accepted",
        || server.stats().accepted as usize > FLOOD,
    );
    let stats = server.stats();
    assert!(stats.open_connections <= LIMIT, "{stats:?}");
    assert!(
        stats.evicted as usize >= FLOOD - LIMIT,
        "flood connections past the limit evict idle ones: {stats:?}"
    );
    assert_eq!(stats.rejected_connections, 0, "{stats:?}");
    // The evicted peers were told and closed.
    let closed = flood
        .iter_mut()
        .take(FLOOD - LIMIT)
        .map(|s| closed_by_peer(s, Duration::from_millis(200)))
        .filter(|&c| c)
        .count();
    assert_eq!(
        closed,
        FLOOD - LIMIT,
        "the oldest idle connections were closed"
    );
    drop(flood);
    wait_until(Duration::from_secs(3), "flood connections released", || {
        server.stats().open_connections == 1
    });
    legit.finish(&server);
    assert!(
        fds() <= fds_before + 2,
        "descriptors back near the baseline"
    );
    eprintln!(
        "flood of {FLOOD} past a limit of {LIMIT}: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / 1048576.0,
        sampler.peak() as f64 / 1048576.0,
        rss_bytes() as f64 / 1048576.0
    );
}

#[test]
fn eviction_off_refuses_new_connections_at_the_limit() {
    let _serial = serial();
    let server = TestServer::start(base_server().max_connections_per_core(8).evict_idle(false));
    let mut held: Vec<_> = (0..8)
        .map(|_| raw_connect(server.addr(), Duration::from_secs(2)))
        .collect();
    wait_until(Duration::from_secs(2), "8 accepted", || {
        server.stats().accepted == 8
    });
    let mut refused = raw_connect(server.addr(), Duration::from_secs(2));
    assert!(closed_by_peer(&mut refused, Duration::from_secs(2)));
    assert_eq!(server.stats().rejected_connections, 1);
    assert_eq!(server.stats().evicted, 0);
    held.clear();
    server.wait_no_connections(Duration::from_secs(2));
}

#[test]
fn the_per_peer_limit_refuses_a_peers_extra_connections() {
    let _serial = serial();
    let server = TestServer::start(base_server().max_connections_per_peer(Some(3)));
    let held: Vec<_> = (0..3)
        .map(|_| raw_connect(server.addr(), Duration::from_secs(2)))
        .collect();
    let mut extra = raw_connect(server.addr(), Duration::from_secs(2));
    assert!(closed_by_peer(&mut extra, Duration::from_secs(2)));
    assert_eq!(server.stats().peer_rejected, 1);
    drop(held);
    server.wait_no_connections(Duration::from_secs(2));
    // The count went back down: the same peer may connect again.
    let mut again = raw_connect(server.addr(), Duration::from_secs(2));
    assert!(!closed_by_peer(&mut again, Duration::from_millis(100)));
}

#[test]
fn a_peer_that_never_reads_is_closed_by_the_write_timeout() {
    let _serial = serial();
    let server = TestServer::start(
        base_server()
            .write_timeout(Duration::from_millis(300))
            .max_pending_out(1 << 20),
    );
    let legit = Legit::start(server.addr());
    let fds_before = fds();
    let rss_before = rss_bytes();
    let sampler = RssPeak::start();
    let mut sink = raw_connect(server.addr(), Duration::from_secs(3));
    // Big echo requests whose replies fill the socket buffers; never read.
    let body = "x".repeat(60 << 10);
    let started = Instant::now();
    for id in 0..400u64 {
        let frame = common::request_frame(
            id,
            ECHO.id(),
            &Msg {
                id,
                text: body.clone(),
            },
        );
        if sink.write_all(&frame).is_err() {
            break;
        }
    }
    wait_until(Duration::from_secs(5), "write timeout fired", || {
        server.stats().write_timeouts == 1
    });
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = server.stats();
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    drop(sink);
    wait_until(Duration::from_secs(3), "sink released", || {
        server.stats().open_connections == 1
    });
    // The connection is counted closed when its reader ends; its cancelled
    // writer task lets go of the socket on the core's next turn.
    wait_until(
        Duration::from_secs(3),
        "descriptors back to the baseline",
        || fds() <= fds_before,
    );
    let (peak, after) = (sampler.peak(), rss_bytes());
    eprintln!(
        "never-reading peer: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    // Held replies: max_pending_out (1 MiB) plus one batch being written.
    assert!(peak < rss_before + (8 << 20), "peak {peak} vs {rss_before}");
    legit.finish(&server);
}

#[test]
fn garbage_shorter_than_a_header_is_refused_at_once() {
    let _serial = serial();
    let server = TestServer::echo();
    let legit = Legit::start(server.addr());
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = fds();
    let mut s = raw_connect(server.addr(), Duration::from_secs(2));
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    assert!(closed_by_peer(&mut s, Duration::from_secs(2)));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "closed after {took:?}, not at the read timeout"
    );
    wait_until(Duration::from_secs(2), "counted", || {
        server.stats().protocol_errors == 1
    });
    drop(s);
    wait_until(Duration::from_secs(2), "descriptors back", || {
        fds() <= fds_before
    });
    std::thread::sleep(Duration::from_millis(200));
    legit.finish(&server);
}

#[test]
fn idle_connections_get_a_goaway_then_are_closed_and_the_client_reconnects() {
    let _serial = serial();
    let server = TestServer::start(base_server().idle_timeout(Some(Duration::from_millis(300))));
    let client = TestClient::connect(server.addr());
    let mut raw = raw_connect(server.addr(), Duration::from_secs(2));
    // A raw peer that only pings is idle too: it is sent a goaway and closed.
    assert!(closed_by_peer(&mut raw, Duration::from_secs(3)));
    wait_until(Duration::from_secs(3), "idle connections closed", || {
        server.stats().idle_closed >= 2
    });
    // The ringrpc client, idle but heartbeating, also got its goaway; its next call
    // goes out on a new connection.
    assert_eq!(client.echo(7).expect("call after idle close").id, 7);
    common::finish(&client, &server);
}

#[test]
fn connections_past_their_maximum_age_rotate_without_failing_calls() {
    let _serial = serial();
    let server = TestServer::start(
        base_server().max_connection_age(Duration::from_millis(300), Duration::from_millis(500)),
    );
    let client = TestClient::connect(server.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = client.spawn(move |c| async move {
        let mut errors = Vec::new();
        let mut id = 0;
        while !flag.load(Ordering::Relaxed) {
            id += 1;
            let msg = Msg {
                id,
                text: text_for(id),
            };
            if let Err(e) = c.call(&ECHO, &msg).await {
                errors.push(e);
            }
            ringrpc::runtime::io::sleep(Duration::from_millis(1)).await;
        }
        errors
    });
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<Error> = task.join().expect("caller");
    assert!(errors.is_empty(), "{errors:?}");
    let stats = server.stats();
    assert!(stats.age_closed >= 2, "{stats:?}");
    assert!(client.stats().reconnects >= 2);
    common::finish(&client, &server);
}
