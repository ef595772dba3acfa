//! Hostile clients (issue 19): partial frames that would hold server memory.
//! Alone in its test binary so the process's RSS is the server's and this
//! test's only (the other hostile tests would move it).

mod common;
mod hostile_support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{base_server, raw_connect, wait_until, TestServer};
use hostile_support::{closed_by_peer, header_announcing, rss_bytes, Legit, RssPeak};

#[test]
fn partial_frames_are_capped_by_the_inbound_budget_and_memory_returns() {
    const BUDGET: usize = 8 << 20;
    const PEERS: usize = 6;
    const SENT: usize = 3 << 20; // of a 4 MiB frame, then the peer stalls
    let server = TestServer::start(
        base_server()
            .max_inbound_per_core(BUDGET)
            .read_timeout(Duration::from_millis(600)),
    );
    let legit = Legit::start(server.addr());
    let rss_before = rss_bytes();
    let sampler = RssPeak::start();
    let peers: Vec<_> = (0..PEERS)
        .map(|_| {
            let addr = server.addr();
            std::thread::spawn(move || {
                let mut s = raw_connect(addr, Duration::from_secs(3));
                let _ = s.write_all(&header_announcing((4 << 20) - 64));
                let chunk = vec![0x5a; 64 << 10];
                let mut sent = 0;
                while sent < SENT && s.write_all(&chunk).is_ok() {
                    sent += chunk.len();
                }
                s
            })
        })
        .collect();
    let mut peers: Vec<TcpStream> = peers.into_iter().map(|t| t.join().unwrap()).collect();
    for _ in 0..5 {
        eprintln!("{:?}", server.stats());
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = server.stats();
    assert!(
        stats.inbound_paused >= 1,
        "the budget paused someone: {stats:?}"
    );
    // Every stalled peer is closed by the read timeout, paused or not.
    for s in &mut peers {
        assert!(
            closed_by_peer(s, Duration::from_secs(3)),
            "stalled peer closed"
        );
    }
    let stats = server.stats();
    assert_eq!(
        (stats.read_timeouts + stats.inbound_closed) as usize,
        PEERS,
        "{stats:?}"
    );
    assert!(stats.inbound_closed >= 1, "{stats:?}");
    drop(peers);
    wait_until(Duration::from_secs(3), "stalled peers released", || {
        server.stats().open_connections == 1
    });
    let rss_peak = sampler.peak();
    // Held partial frames stay within the budget plus one read per peer, and
    // the large buffers are freed once their connections are gone.
    let held_peak = rss_peak.saturating_sub(rss_before);
    assert!(
        held_peak < 2 * (BUDGET + PEERS * (1 << 20)) + (8 << 20),
        "peak {held_peak} over the budget"
    );
    let rss_after = rss_bytes();
    eprintln!(
        "inbound budget {} MiB, {PEERS} peers x {} MiB stalled: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        BUDGET >> 20,
        SENT >> 20,
        rss_before as f64 / 1048576.0,
        rss_peak as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    assert!(
        rss_after < rss_before + (4 << 20),
        "RSS after {rss_after} vs before {rss_before}"
    );
    legit.finish(&server);
}
