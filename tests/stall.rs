//! Stall detection: a sync handler that blocks its core for 50 ms is reported
//! exactly once for that core (its stall counter and one `tracing` warning naming
//! the core), and not for any other core; the threshold is configurable.
//!
//! Flakiness: on a loaded VM a core thread can be descheduled for more than the
//! 10 ms threshold, which the watchdog rightly reports as a stall too. So the
//! test measures deltas across the blocking call only, checks idle cores as
//! witnesses (the server's other core, the client's core), and when any delta
//! is off runs the whole measurement once more; the second attempt must be
//! exact. A real double or missed report fails both attempts.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{base_server, text_for, ArchivedMsg, Msg, TestClient};
use ringrpc::{Method, Runtime, ServerHandle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Blocks the server core (std::thread::sleep) for `id` milliseconds, then echoes.
const BLOCK: Method<Msg, Msg> = Method::new("Test.block");

/// The warning the watchdog emits (src/runtime/stall.rs).
const STALL_MESSAGE: &str = "core event loop stalled";

/// Every bound the test runs under.
const TEST_BOUND: Duration = Duration::from_secs(2);

/// Collects the `core` field of every stall warning, process-wide.
#[derive(Default)]
struct StallWarnings {
    cores: Mutex<Vec<u64>>,
}

impl StallWarnings {
    fn count(&self, core: u64) -> usize {
        self.cores
            .lock()
            .unwrap()
            .iter()
            .filter(|&&c| c == core)
            .count()
    }
}

#[derive(Default)]
struct Fields {
    core: Option<u64>,
    message: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "core" {
            self.core = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value as u64);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// A minimal subscriber: WARN and above; stall warnings are recorded.
struct Capture(Arc<StallWarnings>);

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == STALL_MESSAGE {
            if let Some(core) = fields.core {
                self.0.cores.lock().unwrap().push(core);
            }
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The process-wide stall warning collector (installed once).
fn warnings() -> Arc<StallWarnings> {
    static CAPTURE: OnceLock<Arc<StallWarnings>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let warnings = Arc::new(StallWarnings::default());
            tracing::subscriber::set_global_default(Capture(warnings.clone()))
                .expect("no other global subscriber in this test binary");
            warnings
        })
        .clone()
}

/// Runs `body` on its own thread and fails if it takes longer than `limit`.
fn bounded(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) => thread.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?}"),
    }
}

/// A server runtime of `cores` unpinned cores with `threshold`, serving BLOCK on `serve_core`.
fn block_server(
    cores: usize,
    serve_core: usize,
    threshold: Option<Duration>,
) -> (Runtime, ServerHandle) {
    let rt = Runtime::builder()
        .cores(cores)
        .pin(false)
        .stall_threshold(threshold)
        .name("stall-server")
        .build()
        .expect("server runtime");
    let handle = base_server()
        .register(BLOCK, |req: &ArchivedMsg| -> Result<Msg, String> {
            let ms = req.id.to_native();
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Msg {
                id: ms,
                text: req.text.as_str().to_owned(),
            })
        })
        .expect("register")
        .serve_on(&rt, &[serve_core], "127.0.0.1:0".parse().unwrap())
        .expect("serve");
    (rt, handle)
}

/// One BLOCK call of `ms` milliseconds; returns how long it took.
fn block_call(client: &TestClient, ms: u64) -> Duration {
    client.run(move |client| async move {
        let started = Instant::now();
        let req = Msg {
            id: ms,
            text: text_for(ms),
        };
        let reply = client
            .call_with_deadline(&BLOCK, &req, Duration::from_secs(1))
            .await
            .expect("block call");
        assert_eq!(reply.id.to_native(), ms);
        started.elapsed()
    })
}

fn stalls(rt: &Runtime) -> Vec<u64> {
    rt.metrics().cores.iter().map(|c| c.stalls).collect()
}

/// Stall deltas across one 50 ms block on server core 1.
#[derive(Debug, PartialEq, Eq)]
struct Deltas {
    /// Server core 0 (idle), server core 1 (blocked), client core 0.
    server: [u64; 2],
    client: u64,
    /// Stall warnings naming core 1 (only the server runtime has a core 1).
    warnings_core1: usize,
}

const EXPECTED: Deltas = Deltas {
    server: [0, 1],
    client: 0,
    warnings_core1: 1,
};

fn measure_block(
    server_rt: &Runtime,
    client: &TestClient,
    warnings: &StallWarnings,
) -> (Deltas, Duration) {
    let (s0, c0, w0) = (stalls(server_rt), stalls(&client.rt), warnings.count(1));
    let took = block_call(client, 50);
    // The watchdog reports within threshold + threshold/4 of the stall's start,
    // i.e. while the handler still blocks; give it a few more checks anyway.
    std::thread::sleep(Duration::from_millis(15));
    let (s1, c1, w1) = (stalls(server_rt), stalls(&client.rt), warnings.count(1));
    let deltas = Deltas {
        server: [s1[0] - s0[0], s1[1] - s0[1]],
        client: c1[0] - c0[0],
        warnings_core1: w1 - w0,
    };
    (deltas, took)
}

#[test]
fn a_50ms_blocking_handler_is_reported_once_for_its_core() {
    let warnings = warnings();
    bounded(TEST_BOUND, move || {
        let (server_rt, handle) = block_server(2, 1, Some(Duration::from_millis(10)));
        let client = TestClient::connect(handle.local_addr());
        // Let both runtimes settle (first beats, connection set-up) before measuring.
        std::thread::sleep(Duration::from_millis(30));
        let (first, took) = measure_block(&server_rt, &client, &warnings);
        assert!(
            took >= Duration::from_millis(50),
            "handler blocked {took:?}"
        );
        if first != EXPECTED {
            eprintln!(
                "stall measurement disturbed or wrong ({first:?}, call took {took:?}); retrying once"
            );
            let (second, took) = measure_block(&server_rt, &client, &warnings);
            assert_eq!(second, EXPECTED, "second attempt (call took {took:?})");
        }
        client.close();
        drop(handle);
    });
}

#[test]
fn the_threshold_is_configurable_and_the_detector_can_be_disabled() {
    bounded(TEST_BOUND, || {
        // 200 ms threshold: a 50 ms block is not a stall, a 300 ms one is.
        let (rt, handle) = block_server(1, 0, Some(Duration::from_millis(200)));
        let client = TestClient::connect(handle.local_addr());
        block_call(&client, 50);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(stalls(&rt), [0], "50 ms < 200 ms threshold");
        block_call(&client, 300);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(stalls(&rt), [1], "300 ms > 200 ms threshold");
        client.close();
        drop(handle);
        drop(rt);

        // No detector: never any stall.
        let (rt, handle) = block_server(1, 0, None);
        let client = TestClient::connect(handle.local_addr());
        block_call(&client, 50);
        assert_eq!(stalls(&rt), [0]);
        client.close();
        drop(handle);
    });
}
