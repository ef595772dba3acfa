//! The epoll driver's socket operations behind `runtime::io`: each one tries
//! its non-blocking system call first and waits for readiness only when the
//! call would block.
//!
//! Reads land in the same aligned receive buffers as io_uring's plain
//! receives (`RecvBuf::read_target`/`commit`); writes send from the caller's
//! outgoing buffer and hand it back. A read completes in the middle of a
//! turn rather than before it, so it reads the clock again
//! (`executor::refresh_now`): the turn's clock (`io::now`) must never be
//! earlier than bytes the turn handles, or a server would date a request's
//! arrival, and so its deadline, too early. A task that completes [`BUDGET`](super)
//! operations in a row without the core turning yields once, so a peer that
//! keeps a socket full cannot starve the core's timers and other sockets.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use super::{spend, Dir};
use crate::runtime::batch::Batch;
use crate::runtime::buf::RecvBuf;
use crate::runtime::io::{self as rio, Listener, Stream};

/// Yields once when this core's budget of operations without a turn is spent.
async fn pace() {
    if spend() {
        rio::yield_now().await;
    }
}

/// Receives the next bytes into `buf`'s chunk; the byte count (0 = end of stream).
///
/// A receive that comes back shorter than the room it had emptied the
/// socket's queue, so the next read waits for readability before it calls
/// `recv` (saving a call that would only say `EAGAIN`); new bytes raise a new
/// edge-triggered event.
pub(crate) async fn read(stream: &Stream, buf: &mut RecvBuf) -> io::Result<usize> {
    pace().await;
    let source = stream.source()?;
    if !source.is_ready(Dir::Read) {
        // About to wait: a connection waiting for bytes holds no receive
        // memory (its emptied chunks go back to the core's pool).
        buf.release_idle_and_shrink();
    }
    source.ready(Dir::Read).await?;
    loop {
        let tail = buf.read_target();
        let (ptr, len) = tail.raw_parts();
        // SAFETY: `ptr..ptr+len` is the chunk's free tail, ours alone until
        // `commit` (RecvBuf hands out one tail at a time).
        let n = unsafe { libc::recv(stream.as_raw_fd(), ptr.cast(), len, libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            if n > 0 && n < len {
                source.drained(Dir::Read);
            }
            buf.commit(tail, n);
            // The bytes may have come in long after the turn began.
            crate::runtime::executor::refresh_now();
            crate::runtime::busy::note_receive();
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        buf.commit(tail, 0);
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                buf.release_idle_and_shrink();
                source.blocked(Dir::Read).await?;
            }
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Writes all of `batch` (its buffer with its segments in place) in
/// non-blocking sends from the task, waiting for writability when the socket
/// is full; sets `progress` whenever a send takes bytes.
pub(crate) async fn write_batch(
    stream: &Stream,
    mut batch: Batch,
    progress: &Cell<Option<Instant>>,
) -> (io::Result<()>, Batch) {
    let fd = stream.as_raw_fd();
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    let total = batch.len();
    let send = |sent: usize| {
        if batch.segments.is_empty() {
            let rest = &batch.bytes[sent..];
            // SAFETY: `rest` is a live buffer of its length for the call.
            unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), flags) }
        } else {
            let msg = batch.gather(sent);
            // SAFETY: `msg` and its iovecs point into `batch`, alive and
            // unchanged for the call.
            unsafe { libc::sendmsg(fd, msg, flags) }
        }
    };
    let result = send_all(stream, total, progress, send).await;
    (result, batch)
}

/// Calls `send(bytes sent so far)` until `total` bytes are sent.
async fn send_all(
    stream: &Stream,
    total: usize,
    progress: &Cell<Option<Instant>>,
    mut send: impl FnMut(usize) -> isize,
) -> io::Result<()> {
    pace().await;
    let mut sent = 0;
    while sent < total {
        match usize::try_from(send(sent)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                sent += n;
                progress.set(Some(rio::now()));
                continue;
            }
            Err(_) => {}
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => stream.source()?.blocked(Dir::Write).await?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Connects a non-blocking socket to `addr`, waiting for writability while
/// the handshake runs.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    let pending = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(e),
    };
    socket.set_tcp_nodelay(true)?;
    let stream = Stream::new(OwnedFd::from(socket))?;
    if pending {
        stream.source()?.blocked(Dir::Write).await?;
        if let Some(e) = socket2::SockRef::from(&stream).take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Accepts one connection (non-blocking, close-on-exec).
///
/// One accept per scheduler turn, as under io_uring: the tasks that the
/// previous connection woke (an evicted connection closing its descriptor)
/// run first, so a flood of connections cannot outrun the server's limits.
pub(crate) async fn accept(listener: &Listener) -> io::Result<Stream> {
    rio::yield_now().await;
    loop {
        // SAFETY: no address buffer is passed; the result is checked.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd >= 0 {
            // SAFETY: a successful accept returns a new descriptor that we now own.
            return Stream::new(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => listener.source()?.blocked(Dir::Read).await?,
            // A connection that died in the backlog: take the next one.
            Some(libc::EINTR | libc::ECONNABORTED) => {}
            _ => return Err(e),
        }
    }
}
