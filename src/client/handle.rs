//! Calls from any thread: [`Handle`] and its owned, `Send` replies ([`OwnedReply`]).
//!
//! A [`Client`] belongs to one core; a [`Handle`] is what a thread that is not
//! a ringrpc core (a tokio worker, a plain `std::thread`) calls through. It
//! owns one [`Client`] per chosen core, each driven by a *dispatcher* task on
//! its core. A call:
//!
//! 1. serialises the request on the caller's thread (into a `Vec` sized from
//!    the previous request: one allocation), makes a oneshot for the reply
//!    (one allocation) and, when first polled, pushes both onto the next core's
//!    queue, round-robin (a mutex-guarded `Vec`: no allocation per call);
//! 2. wakes that core's dispatcher if it sleeps (through the core's inbox: an
//!    eventfd write when the core had no other news, shared by every message
//!    of the same turn);
//! 3. on the core, the dispatcher spawns one task per call (one allocation),
//!    which makes the call with the core's `Client` (the request bytes are
//!    copied into the connection's send buffer) and copies the reply's frame
//!    once into a 16-byte aligned [`Bytes`] (one allocation), then sends it
//!    back through the oneshot;
//! 4. the caller validates the archive once ([`OwnedReply::new`]), on its own
//!    thread, and reads it in place from then on.
//!
//! About four allocations per call, none on the connection's own path; no
//! `Box<dyn FnOnce>` job per call (the queue carries plain values). Dropping
//! a call's future abandons the call on its core as well (its slot is freed).
//! Invariants: a call pushed onto a queue ends with a reply, a typed error or
//! [`Error::Shutdown`] (its oneshot sender is dropped with its core); once a
//! core's dispatcher is gone its queue refuses calls with `Shutdown`.

use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use rkyv::rancor;

use super::{Client, ClientBuilder};
use crate::message::{access, serialize_into, Message, Method, Reply};
use crate::runtime::{io, Runtime};
use crate::Error;

/// Alignment of the bytes an [`OwnedReply`] reads (that of frame payloads).
const ALIGN: usize = 16;
/// Largest request size remembered as the next request's buffer size.
const MAX_SIZE_HINT: usize = 64 << 10;

/// A call's response, owned: validated once, then read in place, from any thread.
///
/// What [`Handle`] calls return. The archived response lives in a
/// [`Bytes`] (one copy of the received frame, made on the core), so an
/// `OwnedReply` is `Send + Sync`, cheap to clone (a reference count) and may
/// outlive the connection and the runtime. On a ringrpc core, [`Reply`]
/// (read in the receive buffer itself, no copy) stays the fast path.
pub struct OwnedReply<T> {
    bytes: Bytes,
    _type: PhantomData<fn() -> T>,
}

impl<T: Message> OwnedReply<T> {
    /// Validates `bytes` as an archived `T` (they must start 16-byte
    /// aligned, as the ones a [`Handle`] returns do); fails with
    /// [`Error::Protocol`] otherwise.
    pub fn new(bytes: Bytes) -> Result<Self, Error> {
        access::<T>(&bytes)?;
        Ok(Self {
            bytes,
            _type: PhantomData,
        })
    }

    /// Copies a [`Reply`] out of the receive buffer, to send it to another
    /// thread (validated again, in its new place).
    pub fn copy_of(reply: &Reply<T>) -> Result<Self, Error> {
        Self::new(copy_aligned(reply.bytes()))
    }

    /// The archived response, read in place (validated when this was made).
    pub fn get(&self) -> &T::Archived {
        // SAFETY: `new` validated exactly these bytes as a `T::Archived` with
        // `rkyv::access`, and the bytes of a `Bytes` never change.
        unsafe { rkyv::access_unchecked::<T::Archived>(&self.bytes) }
    }

    /// The raw archived bytes (16-byte aligned).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The raw archived bytes, owned.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Deserialises an owned `T` (allocates; the archived view is usually enough).
    pub fn to_owned(&self) -> Result<T, rancor::Error>
    where
        T::Archived: rkyv::Deserialize<T, rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
    {
        rkyv::deserialize::<T, rancor::Error>(self.get())
    }
}

impl<T: Message> Deref for OwnedReply<T> {
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        self.get()
    }
}

impl<T> Clone for OwnedReply<T> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for OwnedReply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnedReply({} bytes)", self.bytes.len())
    }
}

/// `src` copied into a fresh, 16-byte aligned buffer: one allocation when the
/// allocator returns an aligned block for its exact size (the system
/// allocator on x86_64 and aarch64 does), two otherwise.
fn copy_aligned(src: &[u8]) -> Bytes {
    if src.is_empty() {
        return Bytes::new();
    }
    let mut exact = Vec::<u8>::with_capacity(src.len());
    if exact.as_ptr().align_offset(ALIGN) == 0 {
        exact.extend_from_slice(src);
        // Length == capacity: the block becomes the `Bytes` as it is.
        return Bytes::from(exact);
    }
    drop(exact);
    let mut padded = Vec::<u8>::with_capacity(src.len() + ALIGN - 1);
    let offset = padded.as_ptr().align_offset(ALIGN);
    padded.resize(offset, 0);
    padded.extend_from_slice(src);
    Bytes::from(padded).slice(offset..)
}

/// One call on its way to a core.
struct Pending {
    method: (u32, &'static str),
    payload: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Bytes, Error>>,
}

#[derive(Default)]
struct QueueState {
    calls: Vec<Pending>,
    /// The dispatcher's waker while it waits for calls.
    waker: Option<Waker>,
    /// No more calls: the handle is gone, or the dispatcher (its core stopped).
    closed: bool,
}

/// One core's calls from other threads, drained by its dispatcher.
#[derive(Default)]
struct CallQueue {
    state: Mutex<QueueState>,
}

impl CallQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `call` and wakes the dispatcher if it waits; `Shutdown` once closed.
    fn push(&self, call: Pending) -> Result<(), Error> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(Error::Shutdown);
            }
            state.calls.push(call);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Refuses calls from now on and drops those still queued (their callers
    /// get `Shutdown`); wakes the dispatcher so that it ends.
    fn close(&self) {
        let (calls, waker) = {
            let mut state = self.lock();
            state.closed = true;
            (std::mem::take(&mut state.calls), state.waker.take())
        };
        drop(calls);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves the queued calls into `batch` (empty); `Ready(false)` once the
    /// queue is closed and empty.
    fn poll_take(&self, batch: &mut Vec<Pending>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if !state.calls.is_empty() {
            std::mem::swap(&mut state.calls, batch);
            return Poll::Ready(true);
        }
        if state.closed {
            return Poll::Ready(false);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Closes its queue when dropped: with the dispatcher (its task ended or was
/// cancelled by its core stopping), or with the job that would have started
/// it (the core stopped before running it).
struct CloseOnDrop(Arc<CallQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A core's dispatcher: starts a task per queued call, until the queue closes.
async fn dispatch(client: Client, queue: CloseOnDrop) {
    let mut batch = Vec::new();
    while poll_fn(|cx| queue.0.poll_take(&mut batch, cx)).await {
        for call in batch.drain(..) {
            io::spawn(run_call(client.clone(), call)).detach();
        }
    }
}

/// Makes one queued call on this core and sends its reply back; gives up
/// (freeing the call's slot) if the caller dropped its future.
async fn run_call(client: Client, call: Pending) {
    let Pending {
        method,
        payload,
        deadline,
        mut reply,
    } = call;
    let budget = deadline.saturating_duration_since(Instant::now());
    if budget.is_zero() {
        let _ = reply.send(Err(Error::Timeout));
        return;
    }
    let encode = move |out: crate::message::Out<'_>| {
        out.bytes.extend_from_slice(&payload);
        Ok(())
    };
    let finish = |bytes: crate::runtime::buf::FrameBytes| Ok(copy_aligned(&bytes));
    let mut call = pin!(client.call_encoded(method, budget.into(), encode, finish, None));
    let outcome = poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending => reply.poll_canceled(cx).map(|()| None),
    })
    .await;
    if let Some(result) = outcome {
        let _ = reply.send(result);
    }
}

/// A client usable from any thread: `Send + Sync + Clone`, its calls are
/// futures any executor (tokio, a plain thread blocking on them) can await.
///
/// Made by [`ClientBuilder::connect_handle`] (a [`Client`] with the builder's
/// settings on every core of a [`Runtime`]) or
/// [`ClientBuilder::connect_handle_on`] (on chosen cores). Each call goes to
/// the next core, round-robin, through that core's queue; the core makes it
/// with its own [`Client`] and sends back an [`OwnedReply`]. The module docs
/// of `ringrpc::client::handle` list what a call costs on the way.
///
/// ```
/// use ringrpc::{Client, Method, Runtime, Server};
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Num {
///     n: u64,
/// }
/// const DOUBLE: Method<Num, Num> = Method::new("Math.double");
///
/// # fn main() -> Result<(), ringrpc::Error> {
/// let runtime = Runtime::builder().cores(1).pin(false).build()?;
/// let server = Server::builder().insecure_plaintext()
///     .register(DOUBLE, |r: &ArchivedNum| Ok::<_, String>(Num { n: r.n.to_native() * 2 }))?
///     .serve(&runtime, "127.0.0.1:0".parse().unwrap())?;
/// let handle = Client::builder().insecure_plaintext().connect_handle(&runtime, server.local_addr())?;
///
/// // From any thread or executor: here a plain thread, blocking on the future.
/// let reply = std::thread::spawn(move || {
///     let call = handle.call(&DOUBLE, &Num { n: 21 });
///     ringrpc::runtime::wait(call)
/// })
/// .join()
/// .unwrap()?;
/// assert_eq!(reply.n, 42);
/// # server.shutdown(std::time::Duration::from_secs(1));
/// # Ok(()) }
/// ```
///
/// Dropping the last clone (and every call future) closes its clients on
/// their cores, once their calls in flight ended. When the runtime shuts
/// down, calls in flight and later calls fail with [`Error::Shutdown`].
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    /// (core index, its queue)
    cores: Vec<(usize, Arc<CallQueue>)>,
    next: AtomicUsize,
    deadline: Duration,
    /// The size of the last request, for the next one's buffer.
    size_hint: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No handle and no call future left: nobody waits for queued calls.
        for (_, queue) in &self.cores {
            queue.close();
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("endpoint", &self.inner.addr)
            .field("cores", &self.cores())
            .finish()
    }
}

impl Handle {
    /// Starts a dispatcher with a client for `addr` on each of `cores`.
    fn start(
        builder: &ClientBuilder,
        runtime: &Runtime,
        cores: &[usize],
        addr: SocketAddr,
    ) -> Result<Self, Error> {
        if cores.is_empty() {
            return Err(Error::Config("a handle needs at least one core".into()));
        }
        if let Some(&core) = cores.iter().find(|&&c| c >= runtime.cores()) {
            return Err(Error::NoSuchCore {
                core,
                cores: runtime.cores(),
            });
        }
        // Built first: if a core refuses its dispatcher, dropping it closes
        // the queues of the dispatchers already started.
        let handle = Self {
            inner: Arc::new(Inner {
                addr,
                cores: cores.iter().map(|&c| (c, Arc::default())).collect(),
                next: AtomicUsize::new(0),
                deadline: builder.cfg.deadline,
                size_hint: AtomicUsize::new(128),
            }),
        };
        for (core, queue) in &handle.inner.cores {
            let (builder, queue) = (builder.clone(), CloseOnDrop(queue.clone()));
            // The task runs until the queue closes; its CoreTask is not needed.
            let _detached = runtime.spawn_on(*core, move || async move {
                match builder.connect(addr) {
                    Ok(client) => dispatch(client, queue).await,
                    Err(e) => tracing::error!(error = %e, "handle: no client on its core"),
                }
            })?;
        }
        Ok(handle)
    }

    /// The endpoint the handle's clients call.
    pub fn endpoint(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The runtime cores whose clients make the handle's calls.
    pub fn cores(&self) -> Vec<usize> {
        self.inner.cores.iter().map(|(core, _)| *core).collect()
    }

    /// Calls `method` with the builder's default deadline.
    ///
    /// The request is serialised now, on the calling thread; the returned
    /// future (`Send + 'static`: it borrows neither `self` nor `req`) sends
    /// it to a core when first polled and resolves to the reply, validated.
    /// Errors are those of [`Client::call`], plus [`Error::Shutdown`] once
    /// the runtime (or the handle's core) has stopped. Dropping the future
    /// abandons the call.
    pub fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        req: &Req,
    ) -> impl Future<Output = Result<OwnedReply<Resp>, Error>> + Send + 'static + use<Req, Resp>
    where
        Req: Message,
        Resp: Message + 'static,
    {
        self.call_with_deadline(method, req, self.inner.deadline)
    }

    /// Calls `method`, giving up after `deadline`, counted from the future's
    /// first poll (time spent reaching the core counts; the rest travels to
    /// the server as with [`Client::call_with_deadline`]).
    pub fn call_with_deadline<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        req: &Req,
        deadline: Duration,
    ) -> impl Future<Output = Result<OwnedReply<Resp>, Error>> + Send + 'static + use<Req, Resp>
    where
        Req: Message,
        Resp: Message + 'static,
    {
        let payload = self.encode(req);
        let inner = self.inner.clone();
        let method = (method.id(), method.name());
        async move {
            let payload = payload?;
            let (reply, rx) = oneshot::channel();
            let call = Pending {
                method,
                payload,
                deadline: Instant::now() + deadline,
                reply,
            };
            inner.pick().push(call)?;
            let bytes = rx.await.map_err(|_| Error::Shutdown)??;
            OwnedReply::new(bytes)
        }
    }

    /// `req` serialised into a buffer of its own (the payload of its frame).
    fn encode<Req: Message>(&self, req: &Req) -> Result<Vec<u8>, Error> {
        let hint = &self.inner.size_hint;
        let mut out = Vec::with_capacity(hint.load(Ordering::Relaxed));
        serialize_into(req, &mut out)?;
        hint.store(out.len().min(MAX_SIZE_HINT), Ordering::Relaxed);
        Ok(out)
    }
}

impl Inner {
    /// The next core's queue, round-robin.
    fn pick(&self) -> &CallQueue {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.cores.len();
        &self.cores[i].1
    }
}

impl ClientBuilder {
    /// A [`Handle`] to `addr` with these settings, calling through a client on
    /// every core of `runtime` (a pool of `pool_size` connections each).
    ///
    /// Callable from any thread; it does not wait for the connections (calls
    /// made before one is up wait for it, up to their deadline). Fails with
    /// [`Error::Shutdown`] if the runtime has stopped.
    pub fn connect_handle(&self, runtime: &Runtime, addr: SocketAddr) -> Result<Handle, Error> {
        let cores: Vec<usize> = (0..runtime.cores()).collect();
        Handle::start(self, runtime, &cores, addr)
    }

    /// Like [`connect_handle`](Self::connect_handle), with clients on the
    /// listed cores only (e.g. the cores a server does not use); fails with
    /// [`Error::NoSuchCore`] for an index the runtime does not have.
    pub fn connect_handle_on(
        &self,
        runtime: &Runtime,
        cores: &[usize],
        addr: SocketAddr,
    ) -> Result<Handle, Error> {
        self.check_transport()?;
        Handle::start(self, runtime, cores, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_aligned_and_equal() {
        for len in [1, 3, 15, 16, 17, 100, 4096, 70_000] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let copy = copy_aligned(&src);
            assert_eq!(copy.as_ptr().align_offset(ALIGN), 0, "{len} bytes");
            assert_eq!(&copy[..], &src[..]);
        }
        assert!(copy_aligned(&[]).is_empty());
    }

    #[test]
    fn a_closed_queue_refuses_and_drops_its_calls() {
        let queue = CallQueue::default();
        let call = || {
            let (reply, rx) = oneshot::channel();
            let pending = Pending {
                method: (1, "T.m"),
                payload: Vec::new(),
                deadline: Instant::now(),
                reply,
            };
            (pending, rx)
        };
        let (queued, mut rx) = call();
        queue.push(queued).unwrap();
        queue.close();
        assert!(
            rx.try_recv().is_err(),
            "the queued call's sender was dropped"
        );
        let (late, _rx) = call();
        assert!(matches!(queue.push(late), Err(Error::Shutdown)));
    }
}
