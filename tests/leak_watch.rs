//! Leak watch: after load with timeouts, remote errors, cancelled calls, a
//! server abort + restart and a client closed mid-call, every gauge returns to
//! zero: in-flight calls (the client `in_flight` gauge and `Client::stats`),
//! live async handler tasks (the server `tasks` gauge) and open connections
//! (client and server `connections` gauges, `ServerHandle::stats`), also when
//! an adaptive pool grows and retires connections.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    base_server, client_builder, text_for, wait_until, ArchivedMsg, Msg, TestClient, TestServer,
    ECHO,
};
use ringrpc::metrics::CoreSnapshot;
use ringrpc::runtime::io;
use ringrpc::{AdaptivePool, Client, ClientStats, Error, Method, Request, Runtime, ServerBuilder};

/// Sleeps `id` milliseconds (async), then echoes.
const SLOW: Method<Msg, Msg> = Method::new("Test.slow");
/// Always fails with an application error.
const FAIL: Method<Msg, Msg> = Method::new("Test.fail");

/// Caller tasks on the client core.
const WORKERS: usize = 32;
/// How long the callers keep calling.
const LOAD: Duration = Duration::from_millis(1200);
/// When the server is aborted, and for how long it stays down.
const ABORT_AT: Duration = Duration::from_millis(400);
const DOWN_FOR: Duration = Duration::from_millis(100);
/// When the side client (every fourth caller uses it) is closed.
const SIDE_CLOSE_AT: Duration = Duration::from_millis(800);
/// Bound on every wait for the system to settle.
const SETTLE: Duration = Duration::from_secs(5);

fn builder() -> ServerBuilder {
    base_server()
        .register_async(SLOW, |req: Request<Msg>| async move {
            let ms = req.id.to_native();
            io::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(Msg {
                id: ms,
                text: String::new(),
            })
        })
        .unwrap()
        .register(FAIL, |req: &ArchivedMsg| -> Result<Msg, String> {
            Err(format!("refused {}", req.id))
        })
        .unwrap()
}

/// How the callers' calls ended.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    ok: u64,
    timeout: u64,
    remote: u64,
    lost: u64,
    unavailable: u64,
    overloaded: u64,
    cancelled: u64,
    other: u64,
}

impl Outcomes {
    fn add(&mut self, o: &Outcomes) {
        self.ok += o.ok;
        self.timeout += o.timeout;
        self.remote += o.remote;
        self.lost += o.lost;
        self.unavailable += o.unavailable;
        self.overloaded += o.overloaded;
        self.cancelled += o.cancelled;
        self.other += o.other;
    }

    fn record(&mut self, result: Option<Result<(), Error>>) {
        match result {
            None => self.cancelled += 1,
            Some(Ok(())) => self.ok += 1,
            Some(Err(Error::Timeout)) => self.timeout += 1,
            Some(Err(Error::Remote { .. })) => self.remote += 1,
            Some(Err(Error::ConnectionLost | Error::NotSent)) => self.lost += 1,
            Some(Err(Error::Unavailable)) => self.unavailable += 1,
            Some(Err(Error::Overloaded)) => self.overloaded += 1,
            Some(Err(_)) => self.other += 1,
        }
    }
}

/// One caller: a fixed mix of calls until `end`.
async fn worker(client: Client, seed: usize, end: Instant) -> Outcomes {
    let mut out = Outcomes::default();
    let mut i = seed;
    while Instant::now() < end {
        i += 1;
        let req = |id: u64| Msg {
            id,
            text: text_for(id),
        };
        let result = match i % 8 {
            // Times out on the client; the server cuts the handler off at the budget.
            5 => Some(
                client
                    .call_with_deadline(&SLOW, &req(200), Duration::from_millis(30))
                    .await
                    .map(|_| ()),
            ),
            6 => Some(client.call(&FAIL, &req(i as u64)).await.map(|_| ())),
            // Cancelled by the caller: the call future is dropped mid-flight.
            7 => {
                let nap = req(50);
                let call = client.call_with_deadline(&SLOW, &nap, Duration::from_millis(500));
                io::until(Instant::now() + Duration::from_millis(10), call)
                    .await
                    .map(|r| r.map(|_| ()))
            }
            _ => Some(
                client
                    .call(&ECHO, &req(i as u64))
                    .await
                    .map(|r| assert_eq!(r.id.to_native(), i as u64)),
            ),
        };
        let failed = !matches!(result, Some(Ok(())) | None);
        out.record(result);
        if failed {
            // Fail-fast errors (a closed client) must not spin the core.
            io::sleep(Duration::from_millis(1)).await;
        }
    }
    out
}

/// Runs the callers: three in four on the main client (adaptive pool), one in
/// four on a side client that is closed mid-load; returns how their calls
/// ended and the side client's final stats.
async fn load(client: Client, addr: SocketAddr) -> (Outcomes, ClientStats) {
    let side = client_builder()
        .deadline(Duration::from_millis(500))
        .connect(addr)
        .expect("connect on a ringrpc core");
    assert!(side.wait_connected(Duration::from_secs(2)).await);
    let end = Instant::now() + LOAD;
    let closer = {
        let side = side.clone();
        io::spawn(async move {
            io::sleep(SIDE_CLOSE_AT).await;
            side.close();
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let c = if w % 4 == 3 {
                side.clone()
            } else {
                client.clone()
            };
            io::spawn(worker(c, w, end))
        })
        .collect();
    let mut total = Outcomes::default();
    for w in workers {
        total.add(&w.await.expect("worker panicked"));
    }
    let _ = closer.await;
    let side_stats = side.stats();
    (total, side_stats)
}

/// The load really hit every path it is meant to exercise, and the closed
/// side client holds nothing.
fn check_outcomes(outcomes: &Outcomes, side_stats: &ClientStats) {
    assert!(outcomes.ok > 0, "{outcomes:?}");
    assert!(outcomes.timeout > 0, "{outcomes:?}");
    assert!(outcomes.remote > 0, "{outcomes:?}");
    assert!(outcomes.cancelled > 0, "{outcomes:?}");
    assert!(outcomes.lost + outcomes.unavailable > 0, "{outcomes:?}");
    assert_eq!(outcomes.other, 0, "{outcomes:?}");
    assert_eq!(side_stats.in_flight, 0, "{side_stats:?}");
    assert_eq!(side_stats.live_connections, 0, "{side_stats:?}");
}

/// In-flight calls: none left, and every call ended in exactly one outcome
/// counter that matches what the callers saw.
fn check_every_call_counted(client: &TestClient, outcomes: &Outcomes) {
    // In-flight calls: none left, by the client's own count and the core gauge.
    let stats = client.stats();
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    let c = metrics(&client.rt).client;
    assert_eq!(c.in_flight, 0, "client gauge: {c:?}");
    // Every call is accounted for: each ends in exactly one outcome counter,
    // refusals (unavailable, overloaded) and cancellations included.
    assert_eq!(
        c.calls,
        c.ok + c.timeouts
            + c.connection_lost
            + c.unavailable
            + c.overloaded
            + c.remote
            + c.protocol
            + c.cancelled,
        "{c:?} vs {outcomes:?}"
    );
    assert_eq!(c.cancelled, outcomes.cancelled, "{c:?} vs {outcomes:?}");
    assert_eq!(
        (c.ok, c.timeouts, c.remote, c.connection_lost, c.unavailable),
        (
            outcomes.ok,
            outcomes.timeout,
            outcomes.remote,
            outcomes.lost,
            outcomes.unavailable
        ),
        "{c:?} vs {outcomes:?}"
    );
}

fn metrics(rt: &Runtime) -> CoreSnapshot {
    rt.metrics().merged()
}

#[test]
fn gauges_return_to_zero_after_load_with_timeouts_and_faults() {
    let mut server = TestServer::start(builder());
    let addr: SocketAddr = server.addr();
    // The main client's pool is adaptive: it grows while calls miss (the abort)
    // and retires its surplus connections once they idle, which must not leak
    // connection gauges either.
    let mut adaptive = AdaptivePool::up_to(3);
    adaptive.idle_timeout = Duration::from_millis(200);
    adaptive.window = Duration::from_millis(20);
    let client = TestClient::connect_with(
        client_builder()
            .deadline(Duration::from_millis(500))
            .adaptive(adaptive),
        addr,
    );

    let load = client.spawn(move |client| load(client, addr));

    // Fault: abort the server mid-load (every connection closed at once), then
    // restart it on the same address; the clients reconnect.
    std::thread::sleep(ABORT_AT);
    server.abort();
    std::thread::sleep(DOWN_FOR);
    server.serve_again(builder());
    let (outcomes, side_stats) = load.join().expect("load task");
    eprintln!("outcomes: {outcomes:?}");

    check_outcomes(&outcomes, &side_stats);
    check_every_call_counted(&client, &outcomes);

    // Live tasks: every async handler (also those whose connection the abort
    // closed) ends by its deadline, at most 500 ms after the load.
    wait_until(SETTLE, "server tasks gauge back to 0", || {
        metrics(&server.rt).server.tasks == 0
    });

    // Open connections: the gauges match the live connections, then reach 0.
    wait_until(SETTLE, "client back to one connection", || {
        client.stats().live_connections == 1
    });
    assert_eq!(metrics(&client.rt).client.connections, 1);
    wait_until(
        SETTLE,
        "server sees exactly the main client's connection",
        || metrics(&server.rt).server.connections == 1 && server.stats().open_connections == 1,
    );

    client.close();
    server.wait_no_connections(SETTLE);
    wait_until(SETTLE, "connection gauges back to 0", || {
        metrics(&client.rt).client.connections == 0 && metrics(&server.rt).server.connections == 0
    });

    let (c, s) = (metrics(&client.rt), metrics(&server.rt));
    assert_eq!(
        (c.client.in_flight, c.client.connections),
        (0, 0),
        "{:?}",
        c.client
    );
    assert_eq!(
        (s.server.tasks, s.server.connections),
        (0, 0),
        "{:?}",
        s.server
    );
    assert_eq!(server.stats().open_connections, 0);
    eprintln!("client: {:?}\nserver: {:?}", c.client, s.server);
}
