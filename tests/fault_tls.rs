//! The fault-matrix cases that make sense under TLS, with mutual TLS on
//! (feature `tls`; `cargo test --features tls --test fault_tls`): the server
//! killed under load, connections reset under load, a blackhole found by the
//! heartbeat, and 1-byte segments (every TLS record reassembled byte by byte).
//! All but the blackhole are the cases of `fault::cases` their plaintext
//! versions in `fault_server.rs` and `fault_network.rs` run; each ends with
//! the suite's invariants (`Report::check`, `Rig::finish`).

mod common;
mod fault;
mod tls_support;

use std::time::Duration;

use fault::{cases, client_builder, mixed, server_builder, Rig, SLACK};
use tls_support::Pki;

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
    cases::killed_server_fails_in_flight_calls_fast(tls_rig(false, client_builder()));
}

#[test]
fn tls_connection_reset_fails_in_flight_calls_fast_and_pool_reconnects() {
    let _serial = fault::serial();
    cases::cut_under_load(tls_rig(true, client_builder()), true);
}

#[test]
fn tls_blackhole_is_detected_by_heartbeat_and_calls_resume() {
    let _serial = fault::serial();
    let rig = tls_rig(true, client_builder());
    let load = rig.load(6, mixed());
    load.wait_ok(100, Duration::from_secs(3));
    let (report, holed, detected, lifted) = cases::blackhole_until_detected(&rig, load);
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
    cases::one_byte_segments_are_reassembled_without_errors(tls_rig(true, client_builder()));
}
