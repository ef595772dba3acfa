//! What the rest of the crate uses of the runtime: sockets, reads, writes,
//! timers and spawning, as plain async functions.
//!
//! Client, server and pool see only these functions and the opaque
//! `Stream`/`Listener` types. Two drivers sit behind them: io_uring
//! (`runtime::driver`, the code in this file) and epoll (`runtime::epoll`,
//! readiness-based, on `mio`); each function dispatches on the driver the
//! calling core runs (`runtime::backend`), one branch per call. Timers,
//! spawning and yielding are the executor's and the same for both. All of
//! them must be called on a ringrpc core thread; off a core, I/O functions
//! return an error and `spawn` panics.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::backend::is_epoll;
use super::batch::Batch;
use super::buf::RecvBuf;
use super::bufring;
use super::driver::{self, Hold, Multishot, Op, Received};
use super::epoll::{self, Source};
use super::executor;
use super::timer::Sleep;

pub(crate) use super::executor::{observe_turns, TURN_WAITING};
pub use super::executor::{Panic, Task};

/// A connected TCP socket owned by one core, with its multishot receive
/// (io_uring: armed on the first read when the core has a buffer ring) or its
/// epoll registration (epoll: made here, dropped before the descriptor).
#[derive(Debug)]
pub(crate) struct Stream {
    recv: RefCell<Option<Multishot>>,
    source: Option<Source>,
    fd: OwnedFd,
}

impl Stream {
    /// Wraps a connected socket (registered with the core's epoll instance
    /// on an epoll core: it must then be non-blocking).
    pub(super) fn new(fd: OwnedFd) -> io::Result<Self> {
        let source = if is_epoll() {
            Some(Source::register(fd.as_raw_fd())?)
        } else {
            None
        };
        Ok(Self {
            recv: RefCell::new(None),
            source,
            fd,
        })
    }

    /// The socket's epoll registration (an error on an io_uring core).
    pub(super) fn source(&self) -> io::Result<&Source> {
        self.source.as_ref().ok_or_else(not_registered)
    }
}

fn not_registered() -> io::Error {
    io::Error::other("socket not registered with an epoll core")
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// A listening TCP socket owned by one core (registered with its epoll
/// instance on an epoll core).
#[derive(Debug)]
pub(crate) struct Listener {
    source: Option<Source>,
    inner: std::net::TcpListener,
}

impl Listener {
    /// The listener's epoll registration (an error on an io_uring core).
    pub(super) fn source(&self) -> io::Result<&Source> {
        self.source.as_ref().ok_or_else(not_registered)
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

fn fd_of(s: &impl AsRawFd) -> types::Fd {
    types::Fd(s.as_raw_fd())
}

/// Spawns a task on the current core.
///
/// # Panics
/// When called off a ringrpc core thread.
pub fn spawn<F: Future + 'static>(future: F) -> Task<F::Output> {
    executor::spawn(future)
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
    Sleep::until(Instant::now() + duration).await
}

/// Sleeps until `deadline`.
pub async fn sleep_until(deadline: Instant) {
    Sleep::until(deadline).await
}

/// Runs `future` until `deadline`; `None` if the deadline came first (the future is dropped).
pub async fn until<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut timer = pin!(Sleep::until(deadline));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// The time the core's current scheduler turn began: one clock read per turn,
/// shared by everything that runs in it. It is never earlier than any
/// completion the turn handles (completions are reaped before the turn
/// starts; on an epoll core, a read that completes during the turn reads the
/// clock again), and at most one turn behind the true time.
pub(crate) fn now() -> Instant {
    executor::turn_now()
}

/// Lets every other scheduled task on this core run once before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Waits until `fd` is ready for `events` (a `poll(2)` mask).
async fn ready(fd: types::Fd, events: i16) -> io::Result<()> {
    let entry = opcode::PollAdd::new(fd, events as u32).build();
    // SAFETY: a poll lends the kernel no memory.
    let op = unsafe { Op::submit(entry, Hold::None) }.map_err(|(e, _)| e)?;
    op.await.0.map(drop)
}

/// Connects to `addr` with `TCP_NODELAY` set.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    if is_epoll() {
        return epoll::io::connect(addr).await;
    }
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            ready(fd_of(&socket), libc::POLLOUT).await?;
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    socket.set_nonblocking(false)?;
    socket.set_tcp_nodelay(true)?;
    Stream::new(OwnedFd::from(socket))
}

/// Binds a non-blocking listener with `SO_REUSEADDR` and `SO_REUSEPORT`, so every
/// core can listen on the same address and a restarted server can rebind at once.
pub(crate) fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Adopts a std listener (bound elsewhere) into the current core.
pub(crate) fn listener_from_std(listener: std::net::TcpListener) -> io::Result<Listener> {
    let epoll = is_epoll();
    listener.set_nonblocking(epoll)?;
    let source = if epoll {
        Some(Source::register(listener.as_raw_fd())?)
    } else {
        None
    };
    Ok(Listener {
        source,
        inner: listener,
    })
}

/// Accepts one connection, with `TCP_NODELAY` and TCP keepalive (probes after
/// 30 s idle, every 10 s, 3 tries), so a client that vanished without FIN or RST
/// does not hold its server connection forever.
pub(crate) async fn accept(listener: &Listener) -> io::Result<(Stream, SocketAddr)> {
    let stream = if is_epoll() {
        epoll::io::accept(listener).await?
    } else {
        accept_uring(listener).await?
    };
    let sock = socket2::SockRef::from(&stream);
    let peer = sock
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a non-IP socket"))?;
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    Ok((stream, peer))
}

async fn accept_uring(listener: &Listener) -> io::Result<Stream> {
    let entry = opcode::Accept::new(
        fd_of(&listener.inner),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .flags(libc::SOCK_CLOEXEC)
    .build();
    // SAFETY: no address buffer is passed; `Hold::Accept` closes a descriptor
    // that arrives after this future is gone.
    let op = unsafe { Op::submit(entry, Hold::Accept) }.map_err(|(e, _)| e)?;
    let fd = op.await.0?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("accept: bad descriptor"))?;
    // SAFETY: a successful accept returns a new descriptor that we now own.
    Stream::new(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives the next bytes into `buf`; returns the byte count (0 = end of stream).
///
/// On a core with a buffer ring the socket's multishot receive delivers leased
/// ring segments (armed on first use, re-armed when it ends); when the ring
/// is dry, or without a ring, this is a plain receive into `buf`'s chunk.
/// On an epoll core it is a non-blocking `recv` into `buf`'s chunk, waiting
/// for readability when the socket has nothing.
pub(crate) async fn read(stream: &Stream, buf: &mut RecvBuf) -> io::Result<usize> {
    if is_epoll() {
        return epoll::io::read(stream, buf).await;
    }
    if !bufring::enabled() {
        return read_plain(stream, buf).await;
    }
    buf.release_idle();
    loop {
        if stream.recv.borrow().is_none() {
            *stream.recv.borrow_mut() = Some(Multishot::recv(stream.as_raw_fd())?);
        }
        let next = poll_fn(|cx| match stream.recv.borrow_mut().as_mut() {
            Some(recv) => recv.poll_next(cx),
            None => Poll::Ready(None),
        })
        .await;
        let Some(Received { res, buffer }) = next else {
            // The multishot ended (it says why in the event before); re-arm.
            stream.recv.borrow_mut().take();
            continue;
        };
        if res == -libc::ENOBUFS {
            bufring::note_dry();
            stream.recv.borrow_mut().take();
            return read_plain(stream, buf).await;
        }
        let n = usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))?;
        if n == 0 {
            if let Some(bid) = buffer {
                // An end of stream that still took a buffer: give it back.
                if bufring::take(bid, 0).is_some() {
                    bufring::release(bid);
                }
            }
            return Ok(0);
        }
        let bid = buffer.ok_or_else(|| io::Error::other("receive without a buffer"))?;
        let ptr =
            bufring::take(bid, n).ok_or_else(|| io::Error::other("receive outside its buffer"))?;
        buf.push_segment(bid, ptr, n);
        super::busy::note_receive();
        return Ok(n);
    }
}

/// [`read`] for a connection that may speak TLS: the ciphertext goes into
/// `cipher` when there is one (its plaintext, all handled by now, gives its
/// chunks back to the core's pool while the connection waits), else into
/// `plain`.
pub(crate) async fn read_conn(
    stream: &Stream,
    plain: &mut RecvBuf,
    cipher: Option<&mut RecvBuf>,
) -> io::Result<usize> {
    match cipher {
        Some(cipher) => {
            plain.release_idle();
            read(stream, cipher).await
        }
        None => read(stream, plain).await,
    }
}

/// Receives once into the tail of `buf`'s chunk.
/// The receive is armed after the core's ready tasks had their turn, so the sends they
/// queue reach the kernel first (`sends_first`).
async fn read_plain(stream: &Stream, buf: &mut RecvBuf) -> io::Result<usize> {
    sends_first().await;
    let tail = buf.read_target();
    let (ptr, len) = tail.raw_parts();
    let entry =
        opcode::Recv::new(fd_of(stream), ptr, u32::try_from(len).unwrap_or(u32::MAX)).build();
    // SAFETY: the entry points into `tail`, which the op holds until completion.
    let op = unsafe { Op::submit(entry, Hold::Tail(tail)) }.map_err(|(e, _)| e)?;
    let (res, hold) = op.await;
    let Hold::Tail(tail) = hold else {
        return Err(io::Error::other("receive lost its buffer"));
    };
    let n = res.as_ref().map_or(0, |n| *n as usize);
    buf.commit(tail, n);
    super::busy::note_receive();
    res.map(|n| n as usize)
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
        if !executor::has_ready_tasks() {
            return;
        }
        yield_now().await;
    }
}

/// Writes all of `data`, handing the buffer back for reuse (see [`write_batch`]).
#[cfg(test)]
pub(crate) async fn write_all(stream: &Stream, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let (result, batch) = write_batch(stream, Batch::of(data), &Cell::new(None)).await;
    (result, batch.bytes)
}

/// Writes all of `batch` (its buffer with its segments in place), handing it
/// back for reuse, and sets `progress` to the core's time whenever a partial
/// send completes (so a caller can tell a slow reader from a stuck one).
///
/// A batch without segments goes out with plain sends, zero-copy at or
/// above the core's `SEND_ZC` threshold (the buffer is handed back only
/// after the kernel's notification that it let go of the pages; a socket
/// that cannot do it turns zero-copy off for the core). A batch with
/// segments goes out with gathering sends (`sendmsg`), the kernel copying
/// each blob straight from the caller's memory.
///
/// If other tasks are still scheduled on this core when the send is queued,
/// it is submitted to the kernel at once instead of with the core's next wait,
/// so the peer can start on these bytes while this core works on the rest
/// (one extra non-blocking `io_uring_enter`; none when the core is idle).
///
/// On an epoll core the bytes go out in non-blocking sends straight from
/// the task, waiting for writability when the socket is full (`SEND_ZC` does
/// not apply).
pub(crate) async fn write_batch(
    stream: &Stream,
    batch: Batch,
    progress: &Cell<Option<Instant>>,
) -> (io::Result<()>, Batch) {
    if is_epoll() {
        return epoll::io::write_batch(stream, batch, progress).await;
    }
    let mut batch = batch;
    let total = batch.len();
    let mut sent = 0;
    let mut first = true;
    while sent < total {
        let (entry, zero_copy) = send_entry(stream, &mut batch, sent);
        // SAFETY: the entry points into `batch`: its buffer's and its
        // segments' heap bytes, and for a gathering send the msghdr and
        // iovecs in its box. The op holds the batch until completion, and
        // moving a batch moves none of them.
        let op = match unsafe { Op::submit(entry, Hold::Batch(batch)) } {
            Ok(op) => op,
            Err((e, hold)) => return (Err(e), into_batch(hold)),
        };
        if std::mem::take(&mut first) && executor::has_ready_tasks() {
            driver::submit_now();
        }
        let (res, hold) = op.await;
        batch = into_batch(hold);
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), batch),
            Ok(n) => {
                sent += n as usize;
                progress.set(Some(now()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if zero_copy && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                driver::disable_send_zc();
            }
            Err(e) => return (Err(e), batch),
        }
    }
    (Ok(()), batch)
}

/// The send of `batch` from stream offset `sent` on, and whether it is zero-copy.
fn send_entry(stream: &Stream, batch: &mut Batch, sent: usize) -> (io_uring::squeue::Entry, bool) {
    let flags = libc::MSG_NOSIGNAL;
    if !batch.segments.is_empty() {
        let msg = batch.gather(sent);
        let entry = opcode::SendMsg::new(fd_of(stream), msg)
            .flags(flags as u32)
            .build();
        return (entry, false);
    }
    let rest = batch.bytes[sent..].as_ptr();
    let len = u32::try_from(batch.bytes.len() - sent).unwrap_or(u32::MAX);
    if driver::use_send_zc(len as usize) {
        let entry = opcode::SendZc::new(fd_of(stream), rest, len)
            .flags(flags)
            .build();
        (entry, true)
    } else {
        (
            opcode::Send::new(fd_of(stream), rest, len)
                .flags(flags)
                .build(),
            false,
        )
    }
}

fn into_batch(hold: Hold) -> Batch {
    match hold {
        Hold::Batch(batch) => batch,
        _ => Batch::default(),
    }
}

/// Sends what the socket takes of `bytes` now, without waiting (a goaway
/// pushed out just before a close).
pub(crate) fn send_now(stream: &Stream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is a valid buffer of its length for the call's duration.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Shuts both directions of the socket so any pending read or write ends now.
pub(crate) fn shutdown(stream: &Stream) {
    // Errors mean the socket is already closed, which is what we want.
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
}

/// Closes with an RST instead of a FIN (used by fault tests and aborts).
pub(crate) fn set_linger_zero(stream: &Stream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
