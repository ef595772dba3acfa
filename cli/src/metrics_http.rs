//! A minimal HTTP/1.1 responder for `ringrpc serve --metrics ADDR`.
//!
//! One std thread accepts connections one at a time, reads the request head
//! (bounded in size and time), answers `GET /metrics` with the Prometheus text
//! produced by a render closure (in practice `Runtime::metrics().to_prometheus()`,
//! which must never run on a core thread) and anything else with 404, then
//! closes the connection. No keep-alive, no chunking: scrapers open one
//! connection per scrape anyway.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest request head accepted (request line + headers).
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The Prometheus text exposition content type (format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound `/metrics` endpoint; [`Endpoint::serve`] runs it until [`Endpoint::stop`].
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    stopped: AtomicBool,
}

impl Endpoint {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            stopped: AtomicBool::new(false),
        })
    }

    /// The bound address (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests, one connection at a time, until [`stop`](Self::stop).
    pub fn serve(&self, render: impl Fn() -> String) {
        for stream in self.listener.incoming() {
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            let result = stream.and_then(|s| respond(s, &render));
            if let Err(e) = result {
                eprintln!("ringrpc serve: metrics request failed: {e}");
            }
        }
    }

    /// Makes [`serve`](Self::serve) return (wakes its `accept` with a connection).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    }
}

/// Reads one request head from `stream` and writes the response.
fn respond(mut stream: TcpStream, render: &impl Fn() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, body) = match route(&head) {
        Route::Metrics { head_only } => {
            let text = render();
            (
                "200 OK",
                if head_only {
                    Body::Len(text.len())
                } else {
                    Body::Text(text)
                },
            )
        }
        Route::NotFound => (
            "404 Not Found",
            Body::Text("not found; try /metrics\n".into()),
        ),
        Route::BadMethod => (
            "405 Method Not Allowed",
            Body::Text("only GET and HEAD\n".into()),
        ),
        Route::BadRequest => ("400 Bad Request", Body::Text("bad request\n".into())),
    };
    let len = match &body {
        Body::Text(t) => t.len(),
        Body::Len(n) => *n,
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if let Body::Text(t) = body {
        out.extend_from_slice(t.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

enum Body {
    Text(String),
    /// HEAD: the length of the body a GET would get.
    Len(usize),
}

/// Reads until the blank line ending the request head (or EOF), at most [`MAX_HEAD`].
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !ends_head(&head) {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    BadRequest,
}

/// Routes on the request line (`METHOD TARGET HTTP/x.y`); the query string is ignored.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_on_the_request_line() {
        let get = |line: &str| route(&format!("{line}\r\nHost: x\r\n\r\n"));
        assert_eq!(
            get("GET /metrics HTTP/1.1"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            get("GET /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            get("HEAD /metrics HTTP/1.1"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(get("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(get("POST /metrics HTTP/1.1"), Route::BadMethod);
        assert_eq!(get("GET /metrics"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
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
}
