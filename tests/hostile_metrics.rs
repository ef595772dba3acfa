//! Hostile clients (issue 19) against the metrics endpoint
//! (`ringrpc::metrics::http`, feature `metrics-http`): a scraper trickling
//! its request head, silent connections filling the connection cap, and an
//! oversized head. Legitimate scrapes keep completing quickly throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringrpc::metrics::http::{Endpoint, Limits, MAX_HEAD};

/// Stops the endpoint when dropped, so a failed assertion cannot leave
/// `serve` (and the test's thread scope) running.
struct StopOnDrop<'a>(&'a Endpoint);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What the server sent before closing (a reset ends it too).
fn fetch_lossy(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fetch(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_trickling_scraper_neither_blocks_others_nor_outlives_the_deadline() {
    let limits = Limits {
        deadline: Duration::from_millis(600),
        max_connections: 4,
    };
    let endpoint = Endpoint::bind_with("127.0.0.1:0".parse().unwrap(), limits).unwrap();
    let addr = endpoint.local_addr();
    std::thread::scope(|s| {
        s.spawn(|| endpoint.serve(|| "x_total 1\n".to_string()));
        let _stop = StopOnDrop(&endpoint);
        // One byte every 100 ms: it would take seconds to finish its head.
        let trickler = s.spawn(move || {
            let mut t = TcpStream::connect(addr).unwrap();
            let started = Instant::now();
            for b in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
                if t.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..10 {
            let started = Instant::now();
            let ok = fetch(addr, "GET /metrics HTTP/1.1\r\n\r\n");
            assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
            assert!(started.elapsed() < Duration::from_millis(300));
        }
        // The trickler was cut at the deadline, long before its last byte.
        let took = trickler.join().unwrap();
        assert!(
            took < Duration::from_secs(2),
            "trickler held on for {took:?}"
        );
        endpoint.stop();
    });
}

#[test]
fn connections_over_the_cap_get_503_at_once_and_oversized_heads_are_refused() {
    let limits = Limits {
        deadline: Duration::from_millis(500),
        max_connections: 2,
    };
    let endpoint = Endpoint::bind_with("127.0.0.1:0".parse().unwrap(), limits).unwrap();
    let addr = endpoint.local_addr();
    std::thread::scope(|s| {
        s.spawn(|| endpoint.serve(|| "x_total 1\n".to_string()));
        let _stop = StopOnDrop(&endpoint);
        let silent: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let busy = fetch_lossy(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        assert!(started.elapsed() < Duration::from_millis(200));
        drop(silent);
        // Once the silent ones are gone (closed, or cut at the deadline), scrapes work.
        std::thread::sleep(Duration::from_millis(100));
        let ok = fetch(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        // A head over the size cap gets no answer, just a close.
        let mut big = TcpStream::connect(addr).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = big.write_all(
            format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD)).as_bytes(),
        );
        let mut out = Vec::new();
        let _ = big.read_to_end(&mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    });
}

#[test]
fn serves_metrics_and_404_then_stops() {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr();
    std::thread::scope(|s| {
        s.spawn(|| endpoint.serve(|| "x_total 1\n".to_string()));
        let ok = fetch(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 10\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nx_total 1\n"), "{ok}");
        let head = fetch(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"));
        let missing = fetch(addr, "GET /nope HTTP/1.1\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        endpoint.stop();
    });
}
