//! The cluster's call path: pick, attempt, and on failure maybe retry
//! (budget, deadline, another endpoint); for idempotent methods with hedging
//! on, an attempt is raced against a hedge sent after the method's quantile.
//!
//! Invariants: no attempt starts at or past the call's deadline, and each
//! gets only what is left of it; a retry needs a retryable error (any
//! [`Error::is_retryable`] one for an idempotent call, one that
//! [`Error::did_not_run`] otherwise) and a token of the retry budget; the
//! losing attempt of a hedge is dropped, which cancels it on its server.

use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use super::eject::{endpoint_failure, Verdict};
use super::endpoint::Endpoint;
use super::state::Inner;
use crate::metrics::counters::inc;
use crate::runtime::io;
use crate::{CallOptions, Error, Message, Method, Reply};

/// The options of a call made without any ([`Cluster::call`](super::Cluster::call)).
pub(crate) fn default_options() -> &'static CallOptions {
    static DEFAULT: std::sync::LazyLock<CallOptions> = std::sync::LazyLock::new(CallOptions::new);
    &DEFAULT
}

/// What one call decided when it started (shared by its attempts).
#[derive(Clone, Copy)]
struct Plan {
    /// The first clock reading: the first attempt starts here.
    started: Instant,
    /// The call's whole budget, counted from `started`.
    budget: std::time::Duration,
    idempotent: bool,
    hedged: bool,
}

impl Plan {
    fn deadline(&self) -> Instant {
        self.started + self.budget
    }
}

/// One call through the cluster (see the module docs). The first attempt
/// runs inline; retries (and the rare wait for a first endpoint) run in a
/// boxed future of their own, so the common call's future stays small and
/// pays for no retry bookkeeping.
pub(crate) async fn call<Req: Message, Resp: Message>(
    inner: &Inner,
    method: &Method<Req, Resp>,
    req: &Req,
    opts: &CallOptions,
) -> Result<Reply<Resp>, Error> {
    let idempotent = opts
        .idempotent
        .unwrap_or_else(|| inner.cfg.is_idempotent(method.id()));
    inc(&inner.counts.calls);
    inner.retry.deposit();
    let hedged = match (&inner.hedge, idempotent) {
        (Some(tokens), true) => {
            tokens.deposit();
            true
        }
        _ => false,
    };
    let plan = Plan {
        started: Instant::now(),
        budget: opts.deadline.unwrap_or(inner.cfg.deadline),
        idempotent,
        hedged,
    };
    let args = (method, req, opts);
    let Some(ep) = inner.pick_now(&[]) else {
        // Rare (no endpoint yet).
        return Box::pin(retry(inner, args, plan, Tried::default(), None)).await;
    };
    if hedged && inner.several() {
        // Boxed: the plain path's future stays small (it carries no
        // `Tried` list, no hedge, no retry across its await).
        return Box::pin(hedged_call(inner, ep, args, plan)).await;
    }
    if plan.budget.is_zero() {
        return Err(Error::Timeout);
    }
    // The plain attempt, inline (`attempt` without a future of its own:
    // the call's future stays one level shallower).
    let result = {
        let _in_flight = ep.begin();
        let at = crate::client::Deadline {
            started: Some(plan.started),
            after: plan.budget,
        };
        let result = ep.client.call_opts(method, req, at, opts).await;
        let ended = result.as_ref().map(|_| ());
        record_outcome(inner, &ep, ended, (plan.started, plan.budget), None);
        result
    };
    match result {
        Ok(reply) => Ok(reply),
        Err(error) => {
            let mut tried = Tried::default();
            tried.push(ep.id);
            Box::pin(retry(inner, args, plan, tried, Some((ep, error)))).await
        }
    }
}

/// A call whose first attempt is hedged (several endpoints, an idempotent
/// method, hedging on), then retried like any other.
async fn hedged_call<Req: Message, Resp: Message>(
    inner: &Inner,
    ep: Rc<Endpoint>,
    args: CallArgs<'_, Req, Resp>,
    plan: Plan,
) -> Result<Reply<Resp>, Error> {
    let mut tried = Tried::default();
    tried.push(ep.id);
    let at = (plan.started, plan.deadline());
    match hedged_attempt(inner, &ep, args, at, &mut tried).await {
        Ok(reply) => Ok(reply),
        Err(error) => retry(inner, args, plan, tried, Some((ep, error))).await,
    }
}

/// The call after its first attempt failed at an endpoint with an error
/// (`failed`), or before any attempt (`None`: no endpoint yet): attempts
/// while the error is retryable, the retry budget allows and time is left.
async fn retry<Req: Message, Resp: Message>(
    inner: &Inner,
    (method, req, opts): CallArgs<'_, Req, Resp>,
    plan: Plan,
    mut tried: Tried,
    mut failed: Option<(Rc<Endpoint>, Error)>,
) -> Result<Reply<Resp>, Error> {
    let deadline = plan.deadline();
    let mut retries = 0;
    // Before any attempt the first starts with the call (one clock reading).
    let mut start = failed.is_none().then_some(plan.started);
    loop {
        if let Some((ep, error)) = failed.take() {
            may_retry(inner, &plan, &ep, error, retries)?;
            retries += 1;
        }
        let ep = match inner.pick_now(tried.ids()) {
            Some(ep) => ep,
            None => inner.pick(tried.ids(), deadline).await?,
        };
        if tried.contains(ep.id) {
            // No other endpoint to go to: give this one a moment.
            let at = (Instant::now() + inner.cfg.retry_backoff).min(deadline);
            io::sleep_until(at).await;
            start = None;
        }
        if retries > 0 {
            inc(&ep.cells.retries);
            inc(&inner.counts.retries);
        }
        tried.push(ep.id);
        let start = start.take().unwrap_or_else(Instant::now);
        let args = (method, req, opts);
        // A hedge needs another endpoint to go to.
        let result = if plan.hedged && inner.several() {
            hedged_attempt(inner, &ep, args, (start, deadline), &mut tried).await
        } else {
            attempt(inner, &ep, args, start, deadline, false).await
        };
        match result {
            Ok(reply) => return Ok(reply),
            Err(error) => failed = Some((ep, error)),
        }
    }
}

/// Whether a call whose attempt at `ep` failed with `error` may try again
/// (its `retries` so far): the error is retryable for the call, retries and
/// time are left, and the retry budget gives a token (taken here).
/// Otherwise the error to fail the call with.
fn may_retry(
    inner: &Inner,
    plan: &Plan,
    ep: &Endpoint,
    error: Error,
    retries: u32,
) -> Result<(), Error> {
    let retryable = if plan.idempotent {
        error.is_retryable()
    } else {
        error.did_not_run()
    };
    let now = Instant::now();
    if !retryable || retries >= inner.cfg.max_retries || now >= plan.deadline() {
        return Err(error);
    }
    if !inner.retry.try_withdraw(now) {
        inc(&ep.cells.retry_budget_exhausted);
        inc(&inner.counts.retry_budget_exhausted);
        return Err(Error::RetryBudgetExhausted {
            last: Box::new(error),
        });
    }
    Ok(())
}

/// The endpoints one call has tried (inline up to [`Tried::INLINE`]; a call
/// never tries more than `max_retries` + 2 in practice).
#[derive(Default)]
struct Tried {
    ids: [u64; Tried::INLINE],
    len: usize,
}

impl Tried {
    const INLINE: usize = 4;

    fn ids(&self) -> &[u64] {
        &self.ids[..self.len]
    }

    fn contains(&self, id: u64) -> bool {
        self.ids().contains(&id)
    }

    /// Adds `id`; past the inline capacity the oldest is forgotten.
    fn push(&mut self, id: u64) {
        if self.len == Self::INLINE {
            self.ids.rotate_left(1);
            self.len -= 1;
        }
        self.ids[self.len] = id;
        self.len += 1;
    }
}

/// A call's method, request and options.
type CallArgs<'a, Req, Resp> = (&'a Method<Req, Resp>, &'a Req, &'a CallOptions);

/// One attempt at `ep` started at `start` (a fresh clock reading), with what
/// is left of `deadline`; records its outcome (latency estimate, health,
/// metrics, the method's quantiles if `timed`). Its end is read from the
/// scheduler turn's clock (no clock read: the reply's turn).
async fn attempt<Req: Message, Resp: Message>(
    inner: &Inner,
    ep: &Rc<Endpoint>,
    (method, req, opts): CallArgs<'_, Req, Resp>,
    start: Instant,
    deadline: Instant,
    timed: bool,
) -> Result<Reply<Resp>, Error> {
    let left = deadline.saturating_duration_since(start);
    if left.is_zero() {
        return Err(Error::Timeout);
    }
    let _in_flight = ep.begin();
    let at = crate::client::Deadline {
        started: Some(start),
        after: left,
    };
    let result = ep.client.call_opts(method, req, at, opts).await;
    record_outcome(
        inner,
        ep,
        result.as_ref().map(|_| ()),
        (start, left),
        timed.then_some(method.id()),
    );
    result
}

/// Records an attempt's outcome: the endpoint's counters and sampled
/// latency; with more than one endpoint also its latency estimate, its
/// health (maybe ejecting it) and, for a `timed` method, its quantiles. With
/// one endpoint there is nothing to choose between, so no estimate or failure
/// accounting is kept (that is the whole cost of a cluster of one).
fn record_outcome(
    inner: &Inner,
    ep: &Endpoint,
    result: Result<(), &Error>,
    (start, left): (Instant, std::time::Duration),
    timed: Option<u32>,
) {
    // The turn's clock: the reply's turn, no clock read (and read only when
    // the latency is: a sampled call, or several endpoints to weigh).
    let end = || io::now().max(start);
    let failed = result.err().is_some_and(endpoint_failure);
    ep.cells
        .finished_with(!failed, || end().saturating_duration_since(start));
    if !inner.several() {
        return;
    }
    let end = end();
    let latency = end.saturating_duration_since(start);
    if failed {
        // A failure weighs like a peak at least twice the estimate (at most
        // a timeout), so an endpoint that fails fast does not attract traffic.
        let doubled = super::state::secs(2.0 * ep.ewma.cost(end));
        ep.ewma.observe(latency.max(doubled.min(left)), end);
    } else {
        ep.ewma.observe(latency, end);
        if let Some(method) = timed {
            inner.record_latency(method, latency);
        }
    }
    let verdict = ep.health.record(&inner.cfg.ejection, failed);
    // A connection failure that left the pool without a live connection: the
    // endpoint is down, eject it now rather than after more failures.
    let down = matches!(
        result,
        Err(Error::ConnectionLost | Error::NotSent | Error::Unavailable)
    ) && !ep.client.is_up();
    if verdict == Verdict::Eject || down {
        inner.eject(ep, end);
    }
}

/// An attempt at `first`, raced after the method's hedge delay against a
/// copy at another endpoint (within the hedging budget); the first reply
/// wins. Endpoints tried are added to `tried`.
async fn hedged_attempt<Req: Message, Resp: Message>(
    inner: &Inner,
    first: &Rc<Endpoint>,
    (method, req, opts): CallArgs<'_, Req, Resp>,
    (started, deadline): (Instant, Instant),
    tried: &mut Tried,
) -> Result<Reply<Resp>, Error> {
    let primary = attempt(inner, first, (method, req, opts), started, deadline, true);
    let Some(delay) = inner.hedge_delay(method.id()) else {
        return primary.await;
    };
    let hedge_at = started + delay;
    if hedge_at >= deadline {
        return primary.await;
    }
    let mut primary = pin!(primary);
    if let Some(result) = io::until(hedge_at, primary.as_mut()).await {
        return result;
    }
    let now = Instant::now();
    let second = match inner.pick_now(tried.ids()) {
        Some(second) if !tried.contains(second.id) => second,
        _ => return primary.await,
    };
    let budget = inner.hedge.as_ref();
    if !budget.is_some_and(|b| b.try_withdraw(now)) {
        inc(&first.cells.hedge_budget_exhausted);
        inc(&inner.counts.hedge_budget_exhausted);
        return primary.await;
    }
    inc(&second.cells.hedges);
    inc(&inner.counts.hedges);
    tried.push(second.id);
    let hedge = pin!(attempt(
        inner,
        &second,
        (method, req, opts),
        now,
        deadline,
        true
    ));
    let winner = race(primary, hedge).await;
    if let (Ok(_), Winner::Hedge) = (&winner.0, winner.1) {
        inc(&second.cells.hedges_won);
        inc(&inner.counts.hedges_won);
        // The cancelled primary took at least this long: keep the method's
        // quantiles and its endpoint's estimate honest (else hedging hides
        // the tail it is timed from, and the slow endpoint keeps its share).
        let now = io::now();
        let elapsed = now.saturating_duration_since(started);
        inner.record_latency(method.id(), elapsed);
        first.ewma.observe(elapsed, now);
    }
    winner.0
}

#[derive(Clone, Copy)]
enum Winner {
    Primary,
    Hedge,
}

/// The first success of `a` and `b`, or the later failure if both fail.
/// The other future is dropped by the caller (which cancels its call).
async fn race<T, A, B>(
    mut a: std::pin::Pin<&mut A>,
    mut b: std::pin::Pin<&mut B>,
) -> (Result<T, Error>, Winner)
where
    A: std::future::Future<Output = Result<T, Error>>,
    B: std::future::Future<Output = Result<T, Error>>,
{
    let (mut a_failed, mut b_failed) = (None, None);
    poll_fn(|cx| {
        if a_failed.is_none() {
            if let Poll::Ready(r) = a.as_mut().poll(cx) {
                match r {
                    Ok(v) => return Poll::Ready((Ok(v), Winner::Primary)),
                    Err(e) => a_failed = Some(e),
                }
            }
        }
        if b_failed.is_none() {
            if let Poll::Ready(r) = b.as_mut().poll(cx) {
                match r {
                    Ok(v) => return Poll::Ready((Ok(v), Winner::Hedge)),
                    Err(e) => b_failed = Some(e),
                }
            }
        }
        match (a_failed.take(), b_failed.take()) {
            (Some(_), Some(e)) => Poll::Ready((Err(e), Winner::Hedge)),
            (a, b) => {
                (a_failed, b_failed) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}
