//! The fault-matrix cases that make sense under TLS, with mutual TLS on
//! (feature `tls`; `cargo test --features tls --test fault_tls`): the server
//! killed under load, connections reset under load, a blackhole found by the
//! heartbeat, and 1-byte segments (every TLS record reassembled byte by byte).
//! Each ends with the suite's invariants (`Report::check`, `Rig::finish`), as
//! their plaintext versions in `fault_server.rs` and `fault_network.rs` do.

mod common;
mod fault;
mod tls_support;

use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use fault::{client_builder, mixed, server_builder, Expect, Outcome, Rig, SLACK};
use tls_support::Pki;

/// How fast calls in flight must fail after a fault the client sees at once.
const FAIL_FAST: Duration = Duration::from_millis(250);

/// A 1-core mutual-TLS server (behind the proxy if `proxied`) and a client
/// presenting its certificate, built from `client`.
fn tls_rig(proxied: bool, client: ringrpc::ClientBuilder) -> Rig {
    let pki = Pki::new();
    let server_tls = pki.server_config();
    let client = client
        .tls(pki.client_config(Some(&pki.client)), "localhost")
        .expect("server name");
    Rig::new(
        1,
        move || server_builder().tls(server_tls.clone()),
        proxied,
        client,
    )
}

#[test]
fn tls_killed_server_fails_in_flight_calls_fast() {
    let _serial = fault::serial();
    let mut rig = tls_rig(false, client_builder());
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
    load.in_flight_now();
    let killed = rig.mark("kill");
    let before = rig.server.abort();
    assert_eq!(before.open_connections, 1, "{before:?}");
    load.wait_failed(20, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));
    report.assert_failed_fast(killed, FAIL_FAST, "kill");
    let later = report
        .records
        .iter()
        .filter(|r| r.start > killed + Duration::from_millis(50));
    for r in later {
        assert_ne!(
            r.outcome,
            Outcome::Ok,
            "call succeeded with the server down"
        );
    }
    let stats = rig.client_stats();
    assert_eq!(stats.live_connections, 0, "{stats:?}");
    rig.finish();
}

#[test]
fn tls_connection_reset_fails_in_flight_calls_fast_and_pool_reconnects() {
    let _serial = fault::serial();
    let rig = tls_rig(true, client_builder());
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
    load.in_flight_now();
    let failed = load.failed();
    let cut = rig.mark("reset");
    rig.proxy().reset_all();
    load.wait_failed_since(failed, 1, Duration::from_secs(2));
    load.wait_ok(100, Duration::from_secs(3));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));
    report.assert_failed_fast(cut, FAIL_FAST, "reset");
    assert!(report.ok_started_after(cut) >= 100, "{report:?}");
    let stats = rig.client_stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    rig.server.wait_open(1, Duration::from_secs(2));
    rig.finish();
}

#[test]
fn tls_blackhole_is_detected_by_heartbeat_and_calls_resume() {
    let _serial = fault::serial();
    let rig = tls_rig(true, client_builder());
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
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
    rig.check(
        &report,
        &Expect::errors(&["ConnectionLost", "Unavailable", "Timeout"]),
    );
    let bound = fault::heartbeat_worst_case() + SLACK + report.lag_during(holed, holed + detected);
    assert!(
        detected <= bound,
        "blackhole detected after {detected:?} (bound {bound:?})"
    );
    assert!(report.ok_started_after(lifted) >= 100, "{report:?}");
    rig.server.wait_open(1, Duration::from_secs(2));
    rig.finish();
}

#[test]
fn tls_one_byte_segments_are_reassembled_without_errors() {
    let _serial = fault::serial();
    let rig = tls_rig(true, client_builder());
    rig.proxy().set_split(true);
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
