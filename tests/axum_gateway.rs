//! examples/axum_gateway.rs, run in-process: the example's own `Gateway` and
//! `router` serve HTTP on 127.0.0.1:0 from a tokio multi-thread runtime, and
//! a minimal hand-written HTTP/1.1 client (std `TcpStream`, on plain
//! threads) stores and reads values through it, concurrently.

#[path = "../examples/axum_gateway.rs"]
#[allow(dead_code)] // the example's `main` is not called here
mod gateway;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One request on its own connection (`Connection: close`): (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");

    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&response[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.split(' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().expect("status").parse().expect("status code");
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().expect("length"))
        .expect("a content-length header");
    let body = response[split + 4..].to_vec();
    assert_eq!(body.len(), length, "body of {method} {path}");
    (status, body)
}

#[test]
fn the_gateway_serves_http_through_the_handle() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let services = gateway::Gateway::start(2).expect("ringrpc side");
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = gateway::router(services.handle.clone());
    let server = tokio.spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });

    assert_eq!(http(addr, "GET", "/kv/greeting", b"").0, 404);
    assert_eq!(http(addr, "PUT", "/kv/greeting", b"hello ringrpc").0, 200);
    assert_eq!(
        http(addr, "GET", "/kv/greeting", b""),
        (200, b"hello ringrpc".to_vec())
    );
    assert_eq!(http(addr, "GET", "/nowhere", b"").0, 404);

    // Several HTTP clients at once (tokio spreads them over its workers, the
    // handle over the ringrpc cores).
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..20 {
                    let (path, value) = (format!("/kv/k{c}-{i}"), format!("value {c} {i}"));
                    assert_eq!(http(addr, "PUT", &path, value.as_bytes()).0, 200);
                    assert_eq!(
                        http(addr, "GET", &path, b""),
                        (200, value.into_bytes()),
                        "{path}"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    server.abort();
    tokio.block_on(async {
        let _ = server.await;
        services.shutdown().await;
    });
}
