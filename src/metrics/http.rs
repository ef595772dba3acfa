//! A minimal `/metrics` HTTP endpoint (feature `metrics-http`, off by default).
//!
//! Serves [`Runtime::metrics`](crate::Runtime::metrics) as Prometheus text
//! with nothing but std: no HTTP crate, no async runtime, no thread on a
//! ringrpc core. What it costs: one std thread that blocks in `accept` while
//! [`Endpoint::serve`] runs, one short-lived thread per scrape (at most
//! [`Limits::max_connections`] at once), and per scrape one
//! [`Runtime::metrics`](crate::Runtime::metrics) (a job on every core, which
//! copies its own metrics) plus the rendering; nothing at all on the call path.
//!
//! One std thread accepts connections and hands each to a thread of its own
//! (at most [`Limits::max_connections`] at once; one more is answered `503`
//! and closed at once), which reads the request head (at most
//! [`MAX_HEAD`] bytes), answers `GET /metrics` (and `HEAD`) with the
//! Prometheus text produced by a render closure (in practice
//! `Runtime::metrics().to_prometheus()`, which must never run on a core
//! thread), any other path with 404 and other methods with 405, then closes
//! the connection. The whole exchange has one deadline ([`Limits::deadline`],
//! reading and writing together), so a scraper that trickles its request or
//! never reads holds only its own thread, and only until the deadline: it
//! cannot block other scrapes. No keep-alive, no chunking: scrapers open one
//! connection per scrape anyway.
//!
//! ```no_run
//! # fn main() -> Result<(), ringrpc::Error> {
//! use ringrpc::metrics::http::Endpoint;
//!
//! let runtime = ringrpc::Runtime::builder().build()?;
//! // ... serve and call on `runtime` ...
//! let endpoint = Endpoint::bind("127.0.0.1:9464".parse().unwrap())?;
//! std::thread::scope(|scope| {
//!     // Blocks its thread until `stop`; scrapes never touch a core thread.
//!     scope.spawn(|| endpoint.serve_runtime(&runtime));
//!     // ... run until it is time to stop ...
//!     endpoint.stop();
//! });
//! # Ok(()) }
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Runtime;

/// Largest request head accepted (request line + headers).
pub const MAX_HEAD: usize = 8 << 10;
/// The Prometheus text exposition content type (format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint's limits against slow or hostile scrapers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a whole exchange, request head in and response out (5 s).
    pub deadline: Duration,
    /// Connections served at once; one more is answered 503 at once (16).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

/// A bound `/metrics` endpoint; [`Endpoint::serve`] runs it until [`Endpoint::stop`].
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    stopped: AtomicBool,
    limits: Limits,
    active: AtomicUsize,
}

impl Endpoint {
    /// Binds `addr` (port 0 picks a free port) with the default [`Limits`].
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with(addr, Limits::default())
    }

    /// Binds `addr` with `limits`.
    pub fn bind_with(addr: SocketAddr, limits: Limits) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            stopped: AtomicBool::new(false),
            limits,
            active: AtomicUsize::new(0),
        })
    }

    /// The bound address (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `runtime`'s metrics ([`Runtime::metrics`] rendered with
    /// [`to_prometheus`](crate::MetricsSnapshot::to_prometheus)) until
    /// [`stop`](Self::stop). Call it on a plain thread, never on one of the
    /// runtime's cores.
    pub fn serve_runtime(&self, runtime: &Runtime) {
        self.serve(|| runtime.metrics().to_prometheus());
    }

    /// Answers requests, each connection on its own thread, with the text
    /// `render` returns, until [`stop`](Self::stop) (which waits for the
    /// connections being served, each bounded by the deadline). Blocks the
    /// calling thread.
    pub fn serve(&self, render: impl Fn() -> String + Sync) {
        let render = &render;
        std::thread::scope(|scope| {
            for stream in self.listener.incoming() {
                if self.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                if self.active.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
                    self.active.fetch_sub(1, Ordering::AcqRel);
                    let _ = busy(stream);
                    continue;
                }
                scope.spawn(move || {
                    let deadline = Instant::now() + self.limits.deadline;
                    if let Err(e) = respond(stream, deadline, render) {
                        tracing::warn!(error = %e, "metrics request failed");
                    }
                    self.active.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
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

/// Answers a connection over the limit with 503 (best effort, no waiting).
fn busy(stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut stream = stream;
    // Take in what the request already sent, so the close is a FIN, not a reset.
    let _ = stream.read(&mut [0u8; 4096]);
    stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
}

/// The time left before `deadline`, as a socket timeout (an error once passed).
fn left(deadline: Instant) -> io::Result<Option<Duration>> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request deadline passed",
        )),
    }
}

/// Reads one request head from `stream` and writes the response, all before `deadline`.
fn respond(
    mut stream: TcpStream,
    deadline: Instant,
    render: &impl Fn() -> String,
) -> io::Result<()> {
    let head = read_head(&mut stream, deadline)?;
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
    write_by(&mut stream, &out, deadline)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

enum Body {
    Text(String),
    /// HEAD: the length of the body a GET would get.
    Len(usize),
}

/// Writes all of `out` before `deadline`.
fn write_by(stream: &mut TcpStream, mut out: &[u8], deadline: Instant) -> io::Result<()> {
    while !out.is_empty() {
        stream.set_write_timeout(left(deadline)?)?;
        match stream.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out = &out[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the blank line ending the request head (or EOF), at most
/// [`MAX_HEAD`] bytes, before `deadline` (one deadline for the whole head,
/// not per read, so trickling does not extend it).
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !ends_head(&head) {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        stream.set_read_timeout(left(deadline)?)?;
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
}
