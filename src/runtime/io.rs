//! The only place that touches compio: sockets, reads, writes, timers and spawning.
//!
//! Everything above this module (client, server, pool) sees plain async
//! functions, so the io_uring runtime could be swapped by rewriting this file and
//! `runtime/mod.rs` alone. All functions must be called on a ringrpc core thread
//! (or any thread running a compio runtime).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compio::io::AsyncWriteExt;
use compio::BufResult;

use super::buf::{RecvBuf, TailBuf};

/// A connected TCP stream; clones share the socket.
pub type Stream = compio::net::TcpStream;
/// A listening TCP socket.
pub type Listener = compio::net::TcpListener;
/// Handle to a spawned local task; dropping it cancels the task.
pub type Task<T> = compio::runtime::JoinHandle<T>;

/// What [`observe_turns`] publishes while the core waits in the kernel.
pub(crate) const TURN_WAITING: u64 = compio::runtime::turn::WAITING;

/// Makes the current core's event loop publish into `state` when each turn
/// begins (nanoseconds since `epoch`) or [`TURN_WAITING`] while it waits.
pub(crate) fn observe_turns(epoch: Instant, state: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    compio::runtime::turn::observe(epoch, state);
}

/// Spawns a task on the current core.
pub fn spawn<F: Future + 'static>(future: F) -> Task<F::Output> {
    compio::runtime::spawn(future)
}

/// Spawns `future` to run inside `span`.
///
/// A disabled span (no `tracing` subscriber wants it) is left out, so polls do
/// not pay for entering and leaving it: with `tracing`'s `log` feature on (any
/// crate in the build can turn it on), entering even a disabled span asks the
/// `log` logger whether it is enabled, on every poll of the task.
pub fn spawn_in<F: Future + 'static>(span: tracing::Span, future: F) -> Task<F::Output> {
    if span.is_disabled() {
        spawn(future)
    } else {
        spawn(tracing::Instrument::instrument(future, span))
    }
}

/// Sleeps for `duration`.
pub async fn sleep(duration: Duration) {
    compio::runtime::time::sleep(duration).await
}

/// Sleeps until `deadline`.
pub async fn sleep_until(deadline: Instant) {
    compio::runtime::time::sleep_until(deadline).await
}

/// Runs `future` until `deadline`; `None` if the deadline came first (the future is dropped).
pub async fn until<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    compio::runtime::time::timeout_at(deadline, future)
        .await
        .ok()
}

/// Connects to `addr` with `TCP_NODELAY` set.
pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    let stream = Stream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Binds a non-blocking listener with `SO_REUSEADDR` and `SO_REUSEPORT`, so every
/// core can listen on the same address and a restarted server can rebind at once.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Adopts a std listener (bound elsewhere) into the current core's ring.
pub fn listener_from_std(listener: std::net::TcpListener) -> io::Result<Listener> {
    Listener::from_std(listener)
}

/// Accepts one connection, with `TCP_NODELAY` and TCP keepalive (probes after
/// 30 s idle, every 10 s, 3 tries), so a client that vanished without FIN or RST
/// does not hold its server connection forever.
pub async fn accept(listener: &Listener) -> io::Result<(Stream, SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    Ok((stream, peer))
}

/// Reads once into the tail of `buf`; returns the byte count (0 = end of stream).
/// The receive is armed after the core's ready tasks had their turn, so the sends they
/// queue reach the kernel first (`sends_first`).
pub async fn read(stream: &Stream, buf: &mut RecvBuf) -> io::Result<usize> {
    sends_first().await;
    let tail: TailBuf = buf.read_target();
    let mut reader = stream;
    let BufResult(res, tail) = compio::io::AsyncRead::read(&mut reader, tail).await;
    let n = res.as_ref().map_or(0, |n| *n);
    buf.commit(tail, n);
    super::busy::note_receive();
    res
}

/// Most turns a receive waits for ready tasks before it is armed: enough for a
/// reply to wake its caller, the caller to queue the next request and the writer
/// to send it (two turns), bounded so a busy core cannot hold a receive back.
pub(crate) const MAX_TURNS_BEFORE_RECEIVE: usize = 3;

/// Lets the tasks that are ready run before a receive is armed (at most
/// [`MAX_TURNS_BEFORE_RECEIVE`] turns), so the sends they queue in answer to what
/// was just received reach the kernel ahead of this receive instead of behind
/// it: a reader re-arms as soon as it has handled a chunk, which is before the
/// writer it woke has run. At one call in flight this takes the receive's
/// submission (a failed attempt and a poll arm, ~1–2 µs here) off the
/// request → response path on both sides.
pub(crate) async fn sends_first() {
    for _ in 0..MAX_TURNS_BEFORE_RECEIVE {
        if !compio::runtime::Runtime::with_current(|rt| rt.has_scheduled_tasks()) {
            return;
        }
        yield_now().await;
    }
}

/// Writes all of `data`, handing the buffer back for reuse.
///
/// If other tasks are still scheduled on this core when the send is queued,
/// it is submitted to the kernel at once instead of with the core's next wait,
/// so the peer can start on these bytes while this core works on the rest
/// (one extra non-blocking `io_uring_enter`; none when the core is idle).
pub async fn write_all(stream: &Stream, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let mut writer = stream;
    let mut write = std::pin::pin!(writer.write_all(data));
    let mut first = true;
    let BufResult(res, data) = std::future::poll_fn(|cx| {
        let polled = write.as_mut().poll(cx);
        if std::mem::take(&mut first) && polled.is_pending() {
            compio::runtime::Runtime::with_current(|rt| {
                if rt.has_scheduled_tasks() {
                    rt.submit_now();
                }
            });
        }
        polled
    })
    .await;
    (res, data)
}

/// Lets every other scheduled task on this core run once before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Shuts both directions of the socket so any pending read or write ends now.
pub fn shutdown(stream: &Stream) {
    // Errors mean the socket is already closed, which is what we want.
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
}

/// Closes with an RST instead of a FIN (used by fault tests and aborts).
pub fn set_linger_zero(stream: &Stream) {
    let _ = stream.set_zero_linger();
}
