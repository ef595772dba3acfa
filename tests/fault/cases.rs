//! Fault cases run both in plaintext (`fault_network.rs`, `fault_server.rs`)
//! and under mutual TLS (`fault_tls.rs`): each takes the test's [`Rig`]
//! (built with [`serial`](super::serial) held) and ends with the suite's
//! invariants ([`Rig::check`], [`Rig::finish`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{mixed, Expect, Load, Outcome, Report, Rig};
use crate::common::wait_until;

/// How fast calls in flight must fail after a fault the client sees at once
/// (RST, FIN, bad frame, the server gone).
pub const FAIL_FAST: Duration = Duration::from_millis(250);

/// The server is killed (aborted: every socket closed at once) while calls are
/// in flight: they fail with ConnectionLost at once, not at their deadlines;
/// later calls fail fast with Unavailable (or ConnectionLost) while nothing
/// listens. `rig`: a direct one (no proxy).
pub fn killed_server_fails_in_flight_calls_fast(mut rig: Rig) {
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
    load.in_flight_now();

    let killed = rig.mark("kill");
    let before = rig.server.abort();
    assert_eq!(before.open_connections, 1, "{before:?}");
    load.wait_failed(20, Duration::from_secs(2));
    // Keep calling a while with nothing listening.
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));

    report.assert_failed_fast(killed, FAIL_FAST, "kill");
    // Nothing listens any more: every later call fails, and fast.
    let later: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.start > killed + Duration::from_millis(50))
        .collect();
    assert!(!later.is_empty());
    for r in later {
        assert_ne!(
            r.outcome,
            Outcome::Ok,
            "call succeeded with the server down"
        );
        let bound = FAIL_FAST + report.lag_during(r.start, r.end);
        assert!(r.elapsed() < bound, "slow failure {r:?}");
    }
    let stats = rig.client_stats();
    assert_eq!(stats.live_connections, 0, "{stats:?}");
    assert!(stats.connections_lost >= 1, "{stats:?}");
    rig.finish();
}

/// Cuts every connection (`rst` or FIN) under load: the calls in flight fail
/// with ConnectionLost at once, the pool reconnects and calls succeed again.
/// `rig`: a proxied one.
pub fn cut_under_load(rig: Rig, rst: bool) {
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
    load.in_flight_now();
    let failed = load.failed();
    let cut = rig.mark(if rst { "reset" } else { "fin" });
    if rst {
        rig.proxy().reset_all();
    } else {
        rig.proxy().close_all();
    }
    load.wait_failed_since(failed, 1, Duration::from_secs(2));
    load.wait_ok(100, Duration::from_secs(3));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));

    report.assert_failed_fast(cut, FAIL_FAST, "cut");
    assert!(report.ok_started_after(cut) >= 100, "{report:?}");
    let stats = rig.client_stats();
    assert!(stats.connections_lost >= 1, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    // The server saw the cut too: only the new connection is open.
    rig.server.wait_open(1, Duration::from_secs(2));
    assert!(rig.server.stats().accepted >= 2);
    rig.finish();
}

/// Blackholes `rig`'s proxy under `load` until the heartbeat closes the
/// connection, lifts it, waits for 100 more successful calls and stops the
/// load; checks the report (only ConnectionLost, Unavailable and Timeout).
/// Returns the report, when the blackhole started, how long the heartbeat
/// took to close the connection, and when the blackhole was lifted.
pub fn blackhole_until_detected(rig: &Rig, load: Load) -> (Report, Instant, Duration, Instant) {
    let lost = rig.client_stats().connections_lost;
    rig.proxy().set_blackhole(true);
    let holed = rig.mark("blackhole");
    wait_until(
        Duration::from_secs(3),
        "heartbeat closes the connection",
        || rig.client_stats().connections_lost > lost,
    );
    let detected = holed.elapsed();
    let lifted = rig.mark("blackhole lifted");
    rig.proxy().set_blackhole(false);
    load.wait_ok(100, Duration::from_secs(3));
    let report = load.stop();
    // Calls whose bytes vanished on the new connection before the blackhole was
    // lifted can only time out.
    rig.check(
        &report,
        &Expect::errors(&["ConnectionLost", "Unavailable", "Timeout"]),
    );
    (report, holed, detected, lifted)
}

/// Every byte forwarded as its own TCP segment, both ways: frames reassembled
/// from 1-byte reads are decoded correctly; nothing fails, nothing reconnects.
/// `rig`: a proxied one.
pub fn one_byte_segments_are_reassembled_without_errors(rig: Rig) {
    rig.proxy().set_split(true);
    // Bodies up to 2 KiB: every byte is a write (and a read) of its own.
    let load = rig.load(
        6,
        Arc::new(|caller, seq| {
            let mut plan = mixed()(caller, seq);
            plan.body_len = plan.body_len.min(2048);
            plan
        }),
    );
    load.wait_ok(200, Duration::from_secs(8));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&[]));
    assert!(
        rig.proxy().split_writes() > 10_000,
        "{}",
        rig.proxy().split_writes()
    );
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(rig.server.stats().protocol_errors, 0);
    rig.finish();
}
