//! Method registration and dispatch: method id → type-erased handler.
//!
//! Handlers are stored sorted by method id and found by binary search (no
//! hashing). Registration rejects malformed names, duplicate names and two names
//! whose derived ids collide. A handler validates its request with rkyv's checked
//! access, runs the user function with panics contained, and writes its response
//! frame straight into the connection's send buffer.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

use futures_util::future::{abortable, Aborted};
use futures_util::FutureExt;

use super::conn::{CallCtx, ConnShared};
use super::ctx::{CancelSignal, Ctx};
use super::responder::{Responder, Sent};
use crate::app_error::HandlerError;
use crate::message::{access, Message, Method, Request};
use crate::protocol::method::is_valid_method_name;
use crate::protocol::ErrorCode;
use crate::runtime::{buf::FrameBytes, io};
use crate::Error;

/// A request's payload as the handler sees it: the message bytes, a way to
/// keep them, and a way to keep its metadata entries (if it has any).
pub(crate) struct Payload<'a> {
    pub bytes: &'a [u8],
    pub keep: &'a dyn Fn() -> FrameBytes,
    pub metadata: &'a dyn Fn() -> Option<FrameBytes>,
}

impl Payload<'_> {
    /// The handler's [`Ctx`] for the call of `ctx` on `conn`.
    fn ctx(&self, conn: &ConnShared, ctx: &CallCtx, cancel: Option<Rc<CancelSignal>>) -> Ctx {
        Ctx {
            call_id: ctx.call_id,
            deadline: ctx.deadline,
            peer: conn.peer(),
            core: conn.core_id(),
            metadata: (self.metadata)(),
            cancel,
            state: conn.user_state(),
            identity: conn.peer_identity(),
        }
    }

    /// The handler's `rpc.server` span, continuing the caller's trace.
    #[cfg(feature = "otel")]
    fn span(&self, method: &'static str) -> tracing::Span {
        let metadata = (self.metadata)();
        let view = crate::protocol::metadata::MetadataView::from_validated(
            metadata.as_deref().unwrap_or_default(),
        );
        crate::trace_context::server_span(view, method)
    }
}

/// Answers a call with what its handler ended with: the response, the
/// handler's error, or `Panicked`.
fn answer<Resp: Message, E: HandlerError>(
    conn: &ConnShared,
    ctx: &CallCtx,
    outcome: std::thread::Result<Result<Resp, E>>,
) {
    match outcome {
        Ok(Ok(resp)) => conn.push_response(ctx, &resp),
        Ok(Err(e)) => conn.push_app_error(ctx.call_id, &e),
        Err(_) => conn.push_error(ctx.call_id, ErrorCode::Panicked, &"handler panicked"),
    }
}

/// A handler with its types erased, callable by method id.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Handles one request; the response (or error) frame is pushed onto `conn`.
    fn call(&self, conn: &Rc<ConnShared>, ctx: CallCtx, payload: Payload<'_>);
}

struct ResponderHandler<Req, Resp, F> {
    f: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, E, F> ErasedHandler for ResponderHandler<Req, Resp, F>
where
    Req: Message,
    Resp: Message,
    E: HandlerError,
    F: Fn(&Req::Archived, Responder<'_, Resp>) -> Result<Sent, E> + Send + Sync,
{
    fn call(&self, conn: &Rc<ConnShared>, ctx: CallCtx, payload: Payload<'_>) {
        let req = match access::<Req>(payload.bytes) {
            Ok(req) => req,
            Err(e) => return conn.push_error(ctx.call_id, ErrorCode::InvalidRequest, &e),
        };
        let sent = Cell::new(false);
        #[cfg(feature = "otel")]
        let _span = payload.span(ctx.name).entered();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (self.f)(req, Responder::new(conn, &ctx, &sent))
        }));
        match outcome {
            Ok(Ok(_)) => {}
            // The response stands: one call never gets two answers.
            Ok(Err(e)) if sent.get() => {
                tracing::debug!(call = ctx.call_id, error = ?e.error_payload(), "handler failed after responding")
            }
            Err(_) if sent.get() => {
                tracing::debug!(call = ctx.call_id, "handler panicked after responding")
            }
            Ok(Err(e)) => conn.push_app_error(ctx.call_id, &e),
            Err(_) => conn.push_error(ctx.call_id, ErrorCode::Panicked, &"handler panicked"),
        }
    }
}

struct CtxHandler<Req, Resp, F> {
    f: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, E, F> ErasedHandler for CtxHandler<Req, Resp, F>
where
    Req: Message,
    Resp: Message,
    E: HandlerError,
    F: Fn(&Ctx, &Req::Archived) -> Result<Resp, E> + Send + Sync,
{
    fn call(&self, conn: &Rc<ConnShared>, ctx: CallCtx, payload: Payload<'_>) {
        let req = match access::<Req>(payload.bytes) {
            Ok(req) => req,
            Err(e) => return conn.push_error(ctx.call_id, ErrorCode::InvalidRequest, &e),
        };
        let handler_ctx = payload.ctx(conn, &ctx, None);
        #[cfg(feature = "otel")]
        let _span = crate::trace_context::server_span(handler_ctx.metadata(), ctx.name).entered();
        answer(
            conn,
            &ctx,
            catch_unwind(AssertUnwindSafe(|| (self.f)(&handler_ctx, req))),
        );
    }
}

struct AsyncHandler<Req, Resp, F> {
    f: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, E, F, Fut> ErasedHandler for AsyncHandler<Req, Resp, F>
where
    Req: Message,
    Resp: Message,
    E: HandlerError,
    F: Fn(Ctx, Request<Req>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Resp, E>> + 'static,
{
    fn call(&self, conn: &Rc<ConnShared>, ctx: CallCtx, payload: Payload<'_>) {
        let req = match Request::<Req>::new((payload.keep)()) {
            Ok(req) => req,
            Err(e) => return conn.push_error(ctx.call_id, ErrorCode::InvalidRequest, &e),
        };
        if !conn.try_start_async(ctx.call_id) {
            return;
        }
        // An async handler's time is worth a clock read (it spans awaits).
        let ctx = CallCtx {
            started: Instant::now(),
            ..ctx
        };
        let cancel = Rc::new(CancelSignal::default());
        let handler_ctx = payload.ctx(conn, &ctx, Some(cancel.clone()));
        let future = match catch_unwind(AssertUnwindSafe(|| (self.f)(handler_ctx, req))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind(),
            Err(_) => {
                conn.finish_async();
                return conn.push_error(ctx.call_id, ErrorCode::Panicked, &"handler panicked");
            }
        };
        #[cfg(feature = "otel")]
        let future = tracing::Instrument::instrument(future, payload.span(ctx.name));
        let (future, abort) = abortable(future);
        conn.track_async(ctx.call_id, cancel, abort);
        let conn = conn.clone();
        io::spawn(async move {
            let outcome = match ctx.deadline {
                Some(deadline) => io::until(deadline, future).await,
                None => Some(future.await),
            };
            match outcome {
                Some(Ok(finished)) => answer(&conn, &ctx, finished),
                // Cancelled by the caller: it no longer waits for an answer.
                Some(Err(Aborted)) => {}
                None => conn.push_error(
                    ctx.call_id,
                    ErrorCode::DeadlineExceeded,
                    &"deadline exceeded",
                ),
            }
            conn.untrack_async(ctx.call_id);
            conn.finish_async();
            conn.flush();
        })
        .detach();
    }
}

struct Route {
    id: u32,
    name: &'static str,
    handler: Box<dyn ErasedHandler>,
}

/// The registered methods of a server, sorted by id.
#[derive(Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Finds the handler for a method id.
    /// Finds the handler and registered name for a method id.
    pub fn get(&self, id: u32) -> Option<(&dyn ErasedHandler, &'static str)> {
        let i = self.routes.binary_search_by_key(&id, |r| r.id).ok()?;
        Some((&*self.routes[i].handler, self.routes[i].name))
    }

    fn insert(
        &mut self,
        name: &'static str,
        id: u32,
        handler: Box<dyn ErasedHandler>,
    ) -> Result<(), Error> {
        if !is_valid_method_name(name) {
            return Err(Error::Config(format!(
                "method name {name:?} is not \"Service.method\""
            )));
        }
        match self.routes.binary_search_by_key(&id, |r| r.id) {
            Ok(i) if self.routes[i].name == name => {
                Err(Error::Config(format!("method {name:?} registered twice")))
            }
            Ok(i) => Err(Error::Config(format!(
                "method {name:?} collides with {:?} (id {id:#010x})",
                self.routes[i].name
            ))),
            Err(i) => {
                self.routes.insert(i, Route { id, name, handler });
                Ok(())
            }
        }
    }

    /// Registers a handler that runs inline and answers through a [`Responder`].
    pub fn add_responder<Req, Resp, E, F>(
        &mut self,
        method: Method<Req, Resp>,
        f: F,
    ) -> Result<(), Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: HandlerError + 'static,
        F: Fn(&Req::Archived, Responder<'_, Resp>) -> Result<Sent, E> + Send + Sync + 'static,
    {
        let handler = ResponderHandler::<Req, Resp, F> {
            f,
            _types: PhantomData,
        };
        self.insert(method.name(), method.id(), Box::new(handler))
    }

    /// Registers an inline handler that sees the call's [`Ctx`].
    pub fn add_ctx<Req, Resp, E, F>(&mut self, method: Method<Req, Resp>, f: F) -> Result<(), Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: HandlerError + 'static,
        F: Fn(&Ctx, &Req::Archived) -> Result<Resp, E> + Send + Sync + 'static,
    {
        let handler = CtxHandler::<Req, Resp, F> {
            f,
            _types: PhantomData,
        };
        self.insert(method.name(), method.id(), Box::new(handler))
    }

    /// Registers a handler that runs as its own task on the connection's core.
    pub fn add_async<Req, Resp, E, F, Fut>(
        &mut self,
        method: Method<Req, Resp>,
        f: F,
    ) -> Result<(), Error>
    where
        Req: Message + 'static,
        Resp: Message + 'static,
        E: HandlerError + 'static,
        F: Fn(Ctx, Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + 'static,
    {
        let handler = AsyncHandler::<Req, Resp, F> {
            f,
            _types: PhantomData,
        };
        self.insert(method.name(), method.id(), Box::new(handler))
    }

    /// Registers a handler under an explicit id (tests of id collisions).
    #[cfg(test)]
    fn add_raw(&mut self, name: &'static str, id: u32) -> Result<(), Error> {
        let f =
            |_: &rkyv::Archived<u32>, reply: Responder<'_, u32>| Ok::<_, String>(reply.send(&0u32));
        let handler = ResponderHandler::<u32, u32, _> {
            f,
            _types: PhantomData,
        };
        self.insert(name, id, Box::new(handler))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Method<u32, u32> = Method::new("Svc.a");

    fn echo(x: &rkyv::Archived<u32>, reply: Responder<'_, u32>) -> Result<Sent, String> {
        Ok(reply.send(&x.to_native()))
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut r = Router::default();
        r.add_responder(A, echo).unwrap();
        let err = r.add_responder(A, echo).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn colliding_ids_are_rejected() {
        let mut r = Router::default();
        r.add_raw("Svc.one", 42).unwrap();
        let err = r.add_raw("Svc.two", 42).unwrap_err();
        assert!(err.to_string().contains("collides"), "{err}");
    }

    #[test]
    fn malformed_names_are_rejected() {
        let mut r = Router::default();
        assert!(r
            .add_responder(Method::<u32, u32>::new("nodot"), echo)
            .is_err());
    }

    #[test]
    fn lookup_finds_every_route() {
        let mut r = Router::default();
        for (i, name) in ["A.a", "B.b", "C.c", "D.d"].into_iter().enumerate() {
            r.add_raw(name, (i as u32 + 1) * 1000).unwrap();
        }
        for i in 1..=4 {
            assert!(r.get(i * 1000).is_some());
        }
        assert!(r.get(7).is_none());
    }
}
