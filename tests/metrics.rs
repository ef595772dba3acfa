//! Metrics: a scripted scenario (N successes, M timeouts, K remote errors, plus
//! P calls that had to wait for a pool slot) must produce exactly those counts in
//! `Runtime::metrics()` and in its Prometheus text, read back with a real parser
//! (`prometheus-parse`), and every gauge must return to zero afterwards.
//!
//! What the library records (src/client, src/server), and so what is asserted:
//! - client `calls` counts calls that took a slot; each call ends in exactly one
//!   outcome counter (`ok`, `timeouts`, `remote`, ...);
//! - a call the client timed out is also cut off by the server at the same
//!   budget: the server counts it as `deadline_exceeded` (not `ok`, not an
//!   application error) and sends an error frame, which the client either takes
//!   as the call's `Timeout` (if it arrives first) or drops as a stale reply;
//! - every event is counted exactly (a summary's `_count`) and about one in
//!   `PHASE_SAMPLING` is timed (its quantiles), the first always;
//! - `client_total`, `client_deliver` and the client per-method histograms count
//!   successful calls only; `client_remote_handler` counts every successful
//!   response and records the handler time of every one the server timed, and
//!   the server times exactly the responses its `server_handler` / per-method
//!   histograms sample (successes); the server counts `server_queue` per request.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use common::{
    base_server, client_builder, text_for, wait_until, ArchivedMsg, Msg, TestClient, TestServer,
    ECHO,
};
use futures_util::future::join_all;
use prometheus_parse::{Scrape, Value};
use ringrpc::metrics::{ClientCounts, CoreSnapshot, ServerCounts};
use ringrpc::runtime::io::sleep;
use ringrpc::{Client, Error, ErrorCode, Method, MetricsSnapshot, Phase, Request};

/// Sleeps far past any deadline used here (async), then echoes.
const SLOW: Method<Msg, Msg> = Method::new("Test.slow");
/// Always fails with an application error (sync).
const FAIL: Method<Msg, Msg> = Method::new("Test.fail");

/// Successful calls on the main client.
const N: u64 = 40;
/// Calls that time out.
const M: u64 = 3;
/// Calls that fail with a remote application error.
const K: u64 = 5;
/// Successful calls on a second client with one slot per connection: the
/// first finds the slot free (a pool hit), the second waits for it (a miss).
const P: u64 = 2;

/// Every call the scenario makes.
const TOTAL: u64 = N + M + K + P;

const TIMEOUT_DEADLINE: Duration = Duration::from_millis(100);
const CALL_DEADLINE: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(3);

fn msg(id: u64) -> Msg {
    Msg {
        id,
        text: text_for(id),
    }
}

fn server() -> TestServer {
    TestServer::start(
        base_server()
            .register_async(SLOW, |req: Request<Msg>| async move {
                sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(Msg {
                    id: req.id.to_native(),
                    text: String::new(),
                })
            })
            .unwrap()
            .register(FAIL, |req: &ArchivedMsg| -> Result<Msg, String> {
                Err(format!("refused {}", req.id))
            })
            .unwrap(),
    )
}

/// What the client side saw, checked inside the scenario.
#[derive(Debug)]
struct Seen {
    ok: u64,
    timeouts: u64,
    remote: u64,
    other: Vec<String>,
}

/// Calls `method` once per id, all at once; a reply must carry its request's id.
async fn call_all(
    client: &Client,
    method: &Method<Msg, Msg>,
    ids: Range<u64>,
    deadline: Duration,
) -> Vec<Result<(), Error>> {
    let reqs: Vec<Msg> = ids.map(msg).collect();
    join_all(reqs.iter().map(|req| async move {
        let reply = client.call_with_deadline(method, req, deadline).await?;
        assert_eq!(reply.to_owned().expect("deserialise reply"), *req);
        Ok(())
    }))
    .await
}

/// Runs the scenario on the client core; returns what the callers saw.
fn scenario(client: &TestClient, addr: SocketAddr) -> Seen {
    client.run(move |client| async move {
        let mut seen = Seen {
            ok: 0,
            timeouts: 0,
            remote: 0,
            other: Vec::new(),
        };
        let mut tally = |r: Result<(), Error>| match r {
            Ok(()) => seen.ok += 1,
            Err(Error::Timeout) => seen.timeouts += 1,
            Err(Error::Remote {
                code: ErrorCode::Application,
                ..
            }) => seen.remote += 1,
            Err(e) => seen.other.push(e.to_string()),
        };
        for r in call_all(&client, &ECHO, 0..N, CALL_DEADLINE).await {
            tally(r);
        }
        for r in call_all(&client, &SLOW, 100..100 + M, TIMEOUT_DEADLINE).await {
            tally(r);
        }
        for r in call_all(&client, &FAIL, 200..200 + K, CALL_DEADLINE).await {
            tally(r);
        }
        // A second client to the same endpoint with one call slot per connection.
        let narrow = client_builder()
            .max_in_flight(1)
            .heartbeat_interval(Duration::from_secs(60))
            .connect(addr)
            .expect("connect on a ringrpc core");
        assert!(narrow.wait_connected(Duration::from_secs(2)).await);
        for r in call_all(&narrow, &ECHO, 300..300 + P, CALL_DEADLINE).await {
            tally(r);
        }
        let narrow_stats = narrow.stats();
        assert_eq!(
            (narrow_stats.pool_hits, narrow_stats.pool_misses),
            (1, 1),
            "{narrow_stats:?}"
        );
        narrow.close();
        seen
    })
}

fn merged(rt: &ringrpc::Runtime) -> CoreSnapshot {
    rt.metrics().merged()
}

/// Events the histogram of phase `p` recorded.
fn count(snap: &CoreSnapshot, p: Phase) -> u64 {
    snap.phase(p).count()
}

#[test]
fn scripted_calls_produce_exact_counts_in_snapshot_and_prometheus() {
    let server = server();
    let addr = server.addr();
    let client = TestClient::connect_with(
        // No heartbeats: every byte on the wire is a call or a reply.
        client_builder().heartbeat_interval(Duration::from_secs(60)),
        addr,
    );
    let seen = scenario(&client, addr);
    assert!(seen.other.is_empty(), "unexpected errors: {:?}", seen.other);
    assert_eq!(
        (seen.ok, seen.timeouts, seen.remote),
        (N + P, M, K),
        "{seen:?}"
    );

    // The server cuts the slow handlers off at their deadline; wait for that,
    // and for every byte either side sent to have been read by the other.
    wait_until(SETTLE, "server answered every request", || {
        let s = merged(&server.rt).server;
        s.requests == TOTAL && s.ok + s.app_errors + s.deadline_exceeded == TOTAL && s.tasks == 0
    });
    wait_until(SETTLE, "bytes balance in both directions", || {
        let (c, s) = (merged(&client.rt).client, merged(&server.rt).server);
        c.bytes_out == s.bytes_in && c.bytes_in == s.bytes_out
    });
    let stats = client.stats();
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!(
        (stats.pool_hits, stats.pool_misses),
        (N + M + K, 0),
        "{stats:?}"
    );
    assert_eq!(stats.timeouts, M, "{stats:?}");

    // Close everything; the connection gauges must fall to zero.
    client.close();
    server.wait_no_connections(SETTLE);
    wait_until(SETTLE, "connection gauges back to zero", || {
        merged(&client.rt).client.connections == 0 && merged(&server.rt).server.connections == 0
    });

    let client_snap = client.rt.metrics();
    let server_snap = server.rt.metrics();
    let (c, s) = (client_snap.merged(), server_snap.merged());
    let stale = c.client.stale_replies;
    assert_eq!(stale, stats.stale_replies);
    assert!(stale <= M, "stale replies {stale} > timed-out calls {M}");

    check_client_counts(&c.client);
    check_server_counts(&s.server);
    assert_eq!(
        (c.client.bytes_out, c.client.bytes_in),
        (s.server.bytes_in, s.server.bytes_out)
    );
    check_pool(&c, addr);
    check_histograms(&c, &s, stale);
    check_prometheus(&client_snap, &server_snap, addr);
}

/// Every client counter and gauge after the scenario.
fn check_client_counts(cc: &ClientCounts) {
    let expect_client = [
        ("calls", cc.calls, TOTAL),
        ("ok", cc.ok, N + P),
        ("timeouts", cc.timeouts, M),
        ("remote", cc.remote, K),
        ("connection_lost", cc.connection_lost, 0),
        ("unavailable", cc.unavailable, 0),
        ("overloaded", cc.overloaded, 0),
        ("protocol", cc.protocol, 0),
        ("cancelled", cc.cancelled, 0),
        ("reconnects", cc.reconnects, 0),
        ("connects_failed", cc.connects_failed, 0),
        ("pings", cc.pings, 0),
        ("heartbeat_timeouts", cc.heartbeat_timeouts, 0),
        ("in_flight", cc.in_flight, 0),
        ("connections", cc.connections, 0),
    ];
    for (name, got, want) in expect_client {
        assert_eq!(got, want, "client {name}: {cc:?}");
    }
    assert!(cc.bytes_out > 0 && cc.bytes_in > 0, "{cc:?}");
}

/// Every server counter and gauge after the scenario.
fn check_server_counts(sc: &ServerCounts) {
    let expect_server = [
        ("requests", sc.requests, TOTAL),
        ("ok", sc.ok, N + P),
        ("app_errors", sc.app_errors, K),
        ("deadline_exceeded", sc.deadline_exceeded, M),
        ("panics", sc.panics, 0),
        ("unknown_method", sc.unknown_method, 0),
        ("invalid_request", sc.invalid_request, 0),
        ("overloaded", sc.overloaded, 0),
        ("protocol_errors", sc.protocol_errors, 0),
        ("read_timeouts", sc.read_timeouts, 0),
        ("rejected", sc.rejected, 0),
        ("accepted", sc.accepted, 2),
        ("connections", sc.connections, 0),
        ("tasks", sc.tasks, 0),
    ];
    for (name, got, want) in expect_server {
        assert_eq!(got, want, "server {name}: {sc:?}");
    }
}

/// One pool, for `addr`: every call but the first (which had to connect) a hit.
fn check_pool(c: &CoreSnapshot, addr: SocketAddr) {
    assert_eq!(c.pools.len(), 1, "{:?}", c.pools);
    let pool = c.pools[0];
    assert_eq!(pool.endpoint, addr);
    assert_eq!((pool.hits, pool.misses), (TOTAL - 1, 1), "{pool:?}");
    let rate = pool.hit_rate();
    assert!(
        (rate - (TOTAL - 1) as f64 / TOTAL as f64).abs() < 1e-12,
        "{rate}"
    );
}

/// Phase and per-method counts (exact) and samples (about one event in
/// `PHASE_SAMPLING`, the first always) on the side that records them;
/// `stale` replies never reached a call.
fn check_histograms(c: &CoreSnapshot, s: &CoreSnapshot, stale: u64) {
    let events = |snap: &CoreSnapshot, p: Phase| snap.phase_count(p);
    // A sample: at least the first event, at most every event.
    let is_sample = |snap: &CoreSnapshot, p: Phase| {
        let (n, of) = (count(snap, p), events(snap, p));
        assert!(
            n >= 1 && n <= of,
            "{}: {n} samples of {of} events",
            p.name()
        );
    };
    assert_eq!(events(c, Phase::ClientTotal), N + P);
    assert_eq!(events(c, Phase::ClientDeliver), N + P);
    is_sample(c, Phase::ClientTotal);
    // Delivery is timed for exactly the calls whose total is.
    assert_eq!(count(c, Phase::ClientDeliver), count(c, Phase::ClientTotal));
    // Handler time comes with successful responses only, timed by the server:
    // the client records every time the server reported.
    assert_eq!(events(c, Phase::ClientRemoteHandler), N + P);
    assert_eq!(
        count(c, Phase::ClientRemoteHandler),
        count(s, Phase::ServerHandler)
    );
    let replies = N + P + K + (M - stale);
    for p in [Phase::ClientQueue, Phase::ClientWire] {
        // Only recorded when the write batch's completion time is still known.
        let n = events(c, p);
        assert!(n > 0 && n <= replies, "{}: {n} of {replies}", p.name());
        is_sample(c, p);
    }
    assert_eq!(events(s, Phase::ServerQueue), TOTAL);
    is_sample(s, Phase::ServerQueue);
    assert_eq!(events(s, Phase::ServerHandler), N + P);
    is_sample(s, Phase::ServerHandler);
    let writes = events(s, Phase::ServerWrite);
    assert!(writes > 0 && writes <= TOTAL, "server_write {writes}");
    is_sample(s, Phase::ServerWrite);
    for p in Phase::ALL {
        let other_side = if p.name().starts_with("client") { s } else { c };
        assert_eq!(count(other_side, p), 0, "{} on the wrong runtime", p.name());
        assert_eq!(
            events(other_side, p),
            0,
            "{} on the wrong runtime",
            p.name()
        );
    }
    let methods = |list: &[ringrpc::metrics::MethodHistogram]| {
        list.iter()
            .map(|m| (m.name.clone(), m.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        methods(&c.client_methods),
        [("Test.echo".to_string(), N + P)]
    );
    assert_eq!(
        methods(&s.server_methods),
        [("Test.echo".to_string(), N + P)]
    );
    let total_h = c.phase(Phase::ClientTotal);
    assert!(total_h.quantile(0.5) <= total_h.quantile(0.99));
    assert!(total_h.quantile(0.999) <= total_h.max());
    assert!(
        total_h.max() < Duration::from_secs(2),
        "{:?}",
        total_h.max()
    );
}

/// The same numbers through the Prometheus text, read back by a real parser.
fn check_prometheus(
    client_snap: &MetricsSnapshot,
    server_snap: &MetricsSnapshot,
    addr: SocketAddr,
) {
    let (c, s) = (client_snap.merged(), server_snap.merged());
    let (cc, sc) = (&c.client, &s.server);
    let prom_c = parse(client_snap);
    let prom_s = parse(server_snap);
    check_counter_family(&prom_c, ClientCounts::INFO, &cc.values());
    check_counter_family(
        &prom_c,
        ServerCounts::INFO,
        &ServerCounts::default().values(),
    );
    check_counter_family(&prom_s, ServerCounts::INFO, &sc.values());
    check_counter_family(
        &prom_s,
        ClientCounts::INFO,
        &ClientCounts::default().values(),
    );
    let one = |p: &Parsed, name: &str| p.sum(name, &[]);
    assert_eq!(one(&prom_c, "ringrpc_client_calls_total"), TOTAL as f64);
    assert_eq!(
        one(&prom_c, "ringrpc_client_calls_ok_total"),
        (N + P) as f64
    );
    assert_eq!(
        one(&prom_c, "ringrpc_client_errors_timeout_total"),
        M as f64
    );
    assert_eq!(one(&prom_c, "ringrpc_client_errors_remote_total"), K as f64);
    assert_eq!(one(&prom_s, "ringrpc_server_requests_total"), TOTAL as f64);
    assert_eq!(
        one(&prom_s, "ringrpc_server_responses_ok_total"),
        (N + P) as f64
    );
    assert_eq!(
        one(&prom_s, "ringrpc_server_errors_application_total"),
        K as f64
    );
    assert_eq!(
        one(&prom_s, "ringrpc_server_errors_deadline_total"),
        M as f64
    );
    for gauge in ["ringrpc_server_connections", "ringrpc_server_tasks"] {
        assert_eq!(one(&prom_s, gauge), 0.0, "{gauge}");
    }
    for gauge in ["ringrpc_client_in_flight", "ringrpc_client_connections"] {
        assert_eq!(one(&prom_c, gauge), 0.0, "{gauge}");
    }
    // The driver gauge: 1 for the one the cores run (RINGRPC_DRIVER picks it
    // in CI's second run), 0 for the other.
    let running = client_snap.driver().expect("every core reports its driver");
    assert_eq!(server_snap.driver(), Some(running));
    for prom in [&prom_c, &prom_s] {
        for kind in [ringrpc::Driver::IoUring, ringrpc::Driver::Epoll] {
            let on = f64::from(u8::from(kind == running));
            assert_eq!(
                prom.sum("ringrpc_driver", &[("kind", kind.name())]),
                on,
                "{kind}"
            );
        }
    }
    let endpoint = addr.to_string();
    let ep = [("endpoint", endpoint.as_str())];
    assert_eq!(
        prom_c.sum("ringrpc_pool_hits_total", &ep),
        (TOTAL - 1) as f64
    );
    assert_eq!(prom_c.sum("ringrpc_pool_misses_total", &ep), 1.0);
    assert_eq!(one(&prom_c, "ringrpc_core_stalls_total"), c.stalls as f64);
    assert_eq!(
        one(&prom_c, "ringrpc_core_recv_pool_bytes"),
        c.recv_pool_bytes as f64
    );

    let summary_count =
        |p: &Parsed, name: &str, label: (&str, &str)| p.sum(&format!("{name}_count"), &[label]);
    let phase = "ringrpc_phase_latency_seconds";
    for (snap, prom) in [(&c, &prom_c), (&s, &prom_s)] {
        for p in Phase::ALL {
            // `_count` is every event, not the samples.
            assert_eq!(
                summary_count(prom, phase, ("phase", p.name())),
                snap.phase_count(p) as f64,
                "{} count in Prometheus",
                p.name()
            );
            let quantiles = prom.quantiles(phase, ("phase", p.name()));
            assert_eq!(quantiles.len(), 4, "{}: {quantiles:?}", p.name());
            let h = snap.phase(p);
            for (q, v) in quantiles {
                if h.count() == 0 {
                    assert!(v.is_nan(), "{} q{q}: {v} with nothing timed", p.name());
                } else {
                    assert_eq!(v, h.quantile(q).as_secs_f64(), "{} q{q}", p.name());
                }
            }
        }
    }
    let echo = ("method", "Test.echo");
    for (prom, name) in [
        (&prom_c, "ringrpc_client_method_latency_seconds"),
        (&prom_s, "ringrpc_server_method_latency_seconds"),
    ] {
        assert_eq!(summary_count(prom, name, echo), (N + P) as f64, "{name}");
    }
}

/// A parsed scrape with helpers to sum samples across cores.
struct Parsed {
    scrape: Scrape,
}

fn parse(snap: &MetricsSnapshot) -> Parsed {
    let text = snap.to_prometheus();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid text format");
    // Every sample line of the text became a sample (summaries group their quantiles).
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Summary(q) => q.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, lines, "every sample line parsed:\n{text}");
    Parsed { scrape }
}

impl Parsed {
    /// Sum over every sample named `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut found = false;
        let total = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| {
                found = true;
                match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    ref other => panic!("{name}: unexpected value {other:?}"),
                }
            })
            .sum();
        assert!(found, "no sample {name}{labels:?}");
        total
    }

    /// The (quantile, seconds) pairs of the summary `name` with `label`.
    fn quantiles(&self, name: &str, label: (&str, &str)) -> Vec<(f64, f64)> {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("no summary {name}{{{}={}}}", label.0, label.1));
        match &sample.value {
            Value::Summary(q) => q.iter().map(|c| (c.quantile, c.count)).collect(),
            other => panic!("{name}: not a summary: {other:?}"),
        }
    }
}

/// Each counter/gauge of `info` appears once per core with a `core` label, has
/// the declared type and help text, and sums to the snapshot's value.
fn check_counter_family(
    prom: &Parsed,
    info: &[ringrpc::metrics::counters::MetricInfo],
    values: &[u64],
) {
    for (metric, &want) in info.iter().zip(values) {
        let samples: Vec<_> = prom
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric.name)
            .collect();
        assert_eq!(samples.len(), 1, "{}: one sample per core", metric.name);
        let mut by_core = HashMap::new();
        for s in &samples {
            let core = s.labels.get("core").expect("core label");
            let v = match (metric.kind, &s.value) {
                ("counter", Value::Counter(v)) | ("gauge", Value::Gauge(v)) => *v,
                (kind, other) => panic!("{}: declared {kind}, parsed {other:?}", metric.name),
            };
            by_core.insert(core.to_owned(), v);
        }
        assert_eq!(by_core.get("0"), Some(&(want as f64)), "{}", metric.name);
        assert_eq!(
            prom.scrape.docs.get(metric.name).map(String::as_str),
            Some(metric.help),
            "{} help",
            metric.name
        );
    }
}

/// A sync handler that takes `SPIN_FOR` (it blocks its core; fine in a test).
const SPIN: Method<Msg, Msg> = Method::new("Test.spin");
const SPIN_FOR: Duration = Duration::from_millis(3);

/// Handler times are sampled: the server reads the clock only for the calls
/// whose `server_handler` sample is due and sends "not timed" in the others;
/// the sampled times must still be the handler's real duration, on both sides.
#[test]
fn sampled_handler_times_are_the_handlers_real_duration() {
    let server = TestServer::start(
        base_server()
            .register(SPIN, |req: &ArchivedMsg| -> Result<Msg, String> {
                std::thread::sleep(SPIN_FOR);
                Ok(msg(req.id.to_native()))
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    let calls = 2 * u64::from(ringrpc::metrics::PHASE_SAMPLING) + 1;
    client.run(move |client| async move {
        for id in 0..calls {
            let reply = client.call(&SPIN, &msg(id)).await.expect("spin call");
            assert_eq!(reply.id.to_native(), id);
        }
    });
    let (c, s) = (merged(&client.rt), merged(&server.rt));
    let remote = c.phase(Phase::ClientRemoteHandler).clone();
    let local = s.phase(Phase::ServerHandler).clone();
    assert_eq!(c.phase_count(Phase::ClientRemoteHandler), calls);
    assert_eq!(s.phase_count(Phase::ServerHandler), calls);
    // The first call is timed; the client records every time the server sent.
    assert!(local.count() >= 1 && local.count() <= calls, "{local:?}");
    assert_eq!(remote.count(), local.count());
    for (side, h) in [("client", &remote), ("server", &local)] {
        let (min, max) = (h.quantile(0.0), h.max());
        assert!(min >= SPIN_FOR.mul_f64(0.98), "{side}: min {min:?}");
        assert!(max < Duration::from_secs(1), "{side}: max {max:?}");
    }
    client.close();
}

const PUT: Method<Msg, Msg> = Method::new("Kv.put");
const GET: Method<Msg, Msg> = Method::new("Kv.get");

/// A client alternating two methods (`put`, `get`, `put`, ...): both methods
/// appear in `Runtime::metrics()` and in the Prometheus text, on the client and
/// on the server, with `_count` exactly the calls made (a shared 1-in-8 counter
/// used to time only `put`, and `_count` was the number of samples).
#[test]
fn alternating_methods_are_all_counted_exactly_on_both_sides() {
    let echo = |req: &ArchivedMsg| -> Result<Msg, String> { Ok(msg(req.id.to_native())) };
    let server = TestServer::start(
        base_server()
            .register(PUT, echo)
            .unwrap()
            .register(GET, echo)
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    // Rounds of put then get, one call at a time.
    const ROUNDS: u64 = 100;
    client.run(move |client| async move {
        for id in 0..ROUNDS {
            for method in [&PUT, &GET] {
                let reply = client.call(method, &msg(id)).await.expect("call");
                assert_eq!(reply.id.to_native(), id);
            }
        }
    });
    wait_until(SETTLE, "the server answered every call", || {
        merged(&server.rt).server.ok == 2 * ROUNDS
    });
    let (client_snap, server_snap) = (client.rt.metrics(), server.rt.metrics());
    let (c, s) = (client_snap.merged(), server_snap.merged());
    for (side, methods) in [("client", &c.client_methods), ("server", &s.server_methods)] {
        let mut seen: Vec<_> = methods.iter().map(|m| (m.name.as_str(), m.count)).collect();
        seen.sort();
        assert_eq!(seen, [("Kv.get", ROUNDS), ("Kv.put", ROUNDS)], "{side}");
    }
    // The client times each method on its own countdown: both are timed.
    for m in &c.client_methods {
        assert!(m.latency.count() >= 1, "client {} never timed", m.name);
        let mean = m.sum().as_secs_f64() / m.count as f64;
        assert!(mean > 0.0 && mean < 1.0, "client {}: mean {mean}", m.name);
    }
    for (snap, name) in [
        (&client_snap, "ringrpc_client_method_latency_seconds"),
        (&server_snap, "ringrpc_server_method_latency_seconds"),
    ] {
        let prom = parse(snap);
        for method in ["Kv.put", "Kv.get"] {
            let count = prom.sum(&format!("{name}_count"), &[("method", method)]);
            assert_eq!(count, ROUNDS as f64, "{name} {method}");
            let quantiles = prom.quantiles(name, ("method", method));
            assert_eq!(quantiles.len(), 4, "{name} {method}");
        }
    }
    let prom_c = parse(&client_snap);
    assert_eq!(
        prom_c.sum(
            "ringrpc_phase_latency_seconds_count",
            &[("phase", "client_total")]
        ),
        (2 * ROUNDS) as f64
    );
    client.close();
}
