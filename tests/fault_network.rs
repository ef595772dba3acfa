//! Fault matrix, part 1: network faults injected by the proxy between client and
//! server: reset, FIN, blackhole (half-open), corrupted bytes (payload, call id,
//! length field), 1-byte segments, stall, added latency.
//!
//! Every test runs a mixed workload of concurrent calls through the fault and
//! ends with the shared invariants: `Report::check` (each call ended with Ok or
//! an allowed typed error no later than its deadline plus one heartbeat
//! interval; every reply echoed its own caller id, sequence number and body) and
//! `Rig::finish` (nothing in flight, server connections back to 0 after the
//! client closes, file descriptors and threads back to the baseline).

mod common;
mod fault;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wait_until;
use fault::cases::{self, FAIL_FAST};
use fault::proxy::{Dir, Target};
use fault::{client_builder, mixed, server_builder, Expect, Outcome, Plan, Rig, HB_TIMEOUT, SLACK};

#[test]
fn connection_reset_fails_in_flight_calls_fast_and_pool_reconnects() {
    let _serial = fault::serial();
    cases::cut_under_load(Rig::proxied(), true);
}

#[test]
fn connection_closed_with_fin_fails_in_flight_calls_fast_and_pool_reconnects() {
    let _serial = fault::serial();
    cases::cut_under_load(Rig::proxied(), false);
}

/// A blackhole (half-open link: bytes vanish, no FIN, no RST) is detected by the
/// heartbeat within heartbeat_interval + heartbeat_timeout of the last byte; the
/// calls in flight fail with ConnectionLost then (not at their deadlines), and the
/// pool reconnects once traffic flows again.
///
/// The blackhole starts 30 ms after one of the heartbeat task's periodic checks
/// (the client connected at the proxy's accept time and, under continuous load,
/// checks every interval from then on), the worst case for detection latency.
/// Interval 200 ms and timeout 100 ms here, so that a detection taking up to one
/// more interval than promised stands out from scheduling noise.
#[test]
fn blackhole_is_detected_by_heartbeat_within_interval_plus_timeout() {
    let _serial = fault::serial();
    let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(100));
    let builder = client_builder()
        .heartbeat_interval(interval)
        .heartbeat_timeout(timeout);
    let rig = Rig::new(1, server_builder, true, builder);
    let load = rig.load(6, mixed());
    // Next check + 30 ms at which caller 0 is early in a 300 ms call. A ping
    // (only on a starved machine: the load leaves no silence) shifts the
    // heartbeat's schedule: start again on a new connection then.
    for attempt in 0.. {
        let lost = rig.client_stats().connections_lost;
        if attempt > 0 {
            rig.proxy().reset_all();
            wait_until(Duration::from_secs(2), "reconnected", || {
                let s = rig.client_stats();
                s.connections_lost > lost && s.live_connections == 1
            });
            load.wait_ok(20, Duration::from_secs(3));
        }
        let (connected, pings) = (rig.proxy().last_accept().unwrap(), rig.client_stats().pings);
        let mut check = connected + interval;
        loop {
            while check < Instant::now() + Duration::from_millis(5) {
                check += interval;
            }
            std::thread::sleep(check + Duration::from_millis(30) - Instant::now());
            if load
                .busy_for(0)
                .is_some_and(|d| d < Duration::from_millis(150))
            {
                break;
            }
        }
        if rig.client_stats().pings == pings || attempt == 4 {
            break;
        }
    }
    let (report, holed, detected, lifted) = cases::blackhole_until_detected(&rig, load);

    let bound = interval + timeout + SLACK;
    let hit: Vec<_> = report.in_flight_at(holed).collect();
    assert!(!hit.is_empty(), "no call in flight at the blackhole");
    let mut worst = Duration::ZERO;
    for r in &hit {
        let after = r.end.saturating_duration_since(holed);
        if r.outcome == Outcome::Ok && after < Duration::from_millis(20) {
            continue; // its reply had already passed the proxy
        }
        assert_eq!(
            r.outcome,
            Outcome::ConnectionLost,
            "call in flight at the blackhole ended after {after:?}"
        );
        assert!(
            after >= timeout,
            "failed after {after:?}: before a heartbeat could tell"
        );
        worst = worst.max(after);
    }
    assert!(report.ok_started_after(lifted) >= 100, "{report:?}");
    let stats = rig.client_stats();
    assert!(stats.pings >= 1, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(stats.heartbeat_timeouts >= 1, "{stats:?}");
    assert!(rig.proxy().blackholed_bytes() > 0);
    // Once the blackhole lifts, the proxy passes the client's FIN of the dead
    // connection on: the server is left with the new connection only.
    rig.server.wait_open(1, Duration::from_secs(2));
    let bound = bound + report.lag_during(holed, holed + detected);
    rig.finish();

    assert!(
        detected <= bound && worst <= bound,
        "blackhole detected {detected:?} after it started (calls in flight failed up \
         to {worst:?} after); want <= heartbeat_interval {interval:?} + \
         heartbeat_timeout {timeout:?} (+{SLACK:?} slack + client core lag)"
    );
}

/// One corruption episode: corrupt `target` in the next frame going `dir`; the
/// receiver's digest check (header or data) closes the connection, the calls in
/// flight fail fast with ConnectionLost (never a wrong or corrupted reply), the
/// pool reconnects.
/// Returns when the corruption was requested and how long the close took.
fn corrupt_episode(rig: &Rig, load: &fault::Load, dir: Dir, target: Target) -> (Instant, Duration) {
    let (lost, corrupted) = (rig.client_stats().connections_lost, rig.proxy().corrupted());
    load.in_flight_now();
    let at = rig.mark(&format!("corrupt {dir:?} {target:?}"));
    rig.proxy().corrupt_next(dir, target);
    wait_until(Duration::from_secs(2), "corruption applied", || {
        rig.proxy().corrupted() > corrupted
    });
    wait_until(Duration::from_secs(2), "connection closed", || {
        rig.client_stats().connections_lost > lost
    });
    let closed = at.elapsed();
    load.wait_ok(50, Duration::from_secs(3));
    (at, closed)
}

#[test]
fn corrupted_bytes_are_caught_by_crc_and_the_pool_reconnects() {
    let _serial = fault::serial();
    let rig = Rig::proxied();
    let load = rig.load(6, mixed());
    let episodes = [
        (Dir::ServerToClient, Target::Payload),
        (Dir::ClientToServer, Target::Payload),
        // A flipped call id bit must never deliver a reply to another call.
        (
            Dir::ServerToClient,
            Target::Header {
                offset: 8,
                xor: 0x01,
            },
        ),
        (
            Dir::ClientToServer,
            Target::Header {
                offset: 17,
                xor: 0x10,
            },
        ),
    ];
    let mut times = Vec::new();
    for (dir, target) in episodes {
        times.push(corrupt_episode(&rig, &load, dir, target));
    }
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));
    for (&(t, closed), (dir, target)) in times.iter().zip(episodes) {
        let what = format!("{dir:?} {target:?}");
        report.assert_failed_fast(t, FAIL_FAST, &what);
        let bound = FAIL_FAST + report.lag_during(t, t + closed);
        assert!(
            closed <= bound,
            "{what}: connection closed {closed:?} after"
        );
    }
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 4, "{stats:?}");
    assert_eq!(stats.reconnects, 4, "{stats:?}");
    // The two client→server corruptions were caught by the server.
    assert_eq!(rig.server.stats().protocol_errors, 2);
    assert_eq!(rig.proxy().corrupted(), 4);
    rig.server.wait_open(1, Duration::from_secs(2));
    rig.finish();
}

/// A corrupted length field in a frame from the server: the header digest
/// catches it from the header alone, so the client closes the connection at once
/// instead of waiting for a frame that never ends. The bound checked is the
/// weaker one that held before the header digest (wire v1): closed within
/// heartbeat interval + timeout, calls in flight failing with ConnectionLost, not
/// every call timing out until the bogus length has been filled.
#[test]
fn corrupted_length_field_from_server_closes_the_connection_within_heartbeat() {
    let _serial = fault::serial();
    let rig = Rig::proxied();
    // Small replies only, so the bogus 64 KiB takes long to fill.
    let load = rig.load(6, Arc::new(|_, _| Plan::echo(32)));
    let lost = rig.client_stats().connections_lost;
    let at = rig.mark("corrupt length");
    rig.proxy().corrupt_next(
        Dir::ServerToClient,
        Target::Header {
            offset: 26,
            xor: 0x01,
        },
    );
    let bound = fault::heartbeat_worst_case() + SLACK;
    let deadline = at + Duration::from_millis(1500);
    while rig.client_stats().connections_lost == lost && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let closed_after = (rig.client_stats().connections_lost > lost).then(|| at.elapsed());
    let (stats, corrupted) = (rig.client_stats(), rig.proxy().corrupted());
    // Free a wedged connection so the rest of the checks can run.
    rig.proxy().reset_all();
    load.wait_ok(50, Duration::from_secs(3));
    let report = load.stop();
    rig.check(
        &report,
        &Expect::errors(&["ConnectionLost", "Unavailable", "Timeout"]),
    );
    assert_eq!(corrupted, 1);
    let timeouts = report
        .in_flight_at(at + Duration::from_millis(5))
        .filter(|r| r.outcome == Outcome::Timeout)
        .count();
    let bound = bound + report.lag_during(at, at + Duration::from_millis(1500));
    rig.finish();
    assert!(
        closed_after.is_some_and(|d| d <= bound),
        "corrupted length field: connection closed after {closed_after:?} (want <= \
         {bound:?}, the heartbeat's worst case + slack); calls in flight that \
         timed out at their deadline instead: {timeouts}; client stats then: {stats:?}"
    );
}

/// Every byte forwarded as its own TCP segment, both ways: frames reassembled
/// from 1-byte reads are decoded correctly; nothing fails, nothing reconnects.
#[test]
fn one_byte_segments_are_reassembled_without_errors() {
    let _serial = fault::serial();
    cases::one_byte_segments_are_reassembled_without_errors(Rig::proxied());
}

/// A stall shorter than heartbeat interval + timeout only delays calls; a longer
/// one is detected by the heartbeat (ConnectionLost, well before the deadline)
/// and the pool reconnects; after the stall nothing is delivered twice or wrongly.
#[test]
fn stall_delays_calls_and_a_long_stall_is_detected_by_heartbeat() {
    let _serial = fault::serial();
    let rig = Rig::proxied();
    let load = rig.load(6, mixed());

    // Short stall: calls wait, none fails.
    let short = Duration::from_millis(150);
    let stalled = rig.mark("short stall");
    rig.proxy().set_stall(true);
    std::thread::sleep(short);
    rig.proxy().set_stall(false);
    load.wait_ok(100, Duration::from_secs(3));
    assert_eq!(load.failed(), 0, "a {short:?} stall failed calls");
    assert_eq!(rig.client_stats().connections_lost, 0);

    // Long stall: the heartbeat gives up on the connection.
    load.in_flight_now();
    let long_stall = rig.mark("long stall");
    rig.proxy().set_stall(true);
    wait_until(
        Duration::from_secs(2),
        "heartbeat closes the connection",
        || rig.client_stats().connections_lost >= 1,
    );
    let detected = long_stall.elapsed();
    rig.mark("long stall detected, resumed");
    rig.proxy().set_stall(false);
    load.wait_ok(100, Duration::from_secs(3));
    let report = load.stop();
    // Calls with a deadline shorter than the detection time time out first.
    rig.check(
        &report,
        &Expect::errors(&["ConnectionLost", "Unavailable", "Timeout"]),
    );

    let delayed = report
        .in_flight_at(stalled + Duration::from_millis(5))
        .filter(|r| {
            r.outcome == Outcome::Ok && r.end - stalled >= short - Duration::from_millis(10)
        })
        .count();
    assert!(delayed >= 1, "no call was held up by the short stall");
    // Worst case of the heartbeat as implemented (sleep a fixed interval, then
    // check; see the blackhole test): 2 x interval + timeout, or interval +
    // 2 x timeout when a ping round (here: the short stall's) is under way.
    let bound = fault::heartbeat_worst_case()
        + SLACK
        + report.lag_during(long_stall, long_stall + detected);
    assert!(
        detected >= HB_TIMEOUT && detected <= bound,
        "long stall detected after {detected:?}"
    );
    for r in report.in_flight_at(long_stall) {
        let after = r.end.saturating_duration_since(long_stall);
        let ok = match r.outcome {
            Outcome::Ok => after < Duration::from_millis(20),
            Outcome::ConnectionLost => after <= bound,
            Outcome::Timeout => r.elapsed() >= r.plan.deadline && after <= bound,
            _ => false,
        };
        assert!(
            ok,
            "call in flight at the long stall: {r:?}, {after:?} after"
        );
    }
    assert!(
        report
            .in_flight_at(long_stall)
            .any(|r| r.outcome == Outcome::ConnectionLost),
        "no call in flight at the long stall failed with ConnectionLost"
    );
    // Calls sent into the stalled connection before it was declared dead with a
    // deadline shorter than that time out; no other call does.
    let detected_at = long_stall + detected;
    for r in &report.records {
        if r.outcome == Outcome::Timeout {
            assert!(
                r.start <= detected_at && r.end >= long_stall,
                "timeout outside the long stall: {r:?}"
            );
        }
    }
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 1, "{stats:?}");
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    rig.server.wait_open(1, Duration::from_secs(2));
    rig.finish();
}

/// 40 ms each way: calls with a 50 ms deadline time out (never earlier than the
/// deadline, never much later), their replies arrive late and are counted stale
/// and dropped; calls with a 1 s deadline succeed after at least one round trip.
#[test]
fn added_latency_times_out_short_deadlines_and_late_replies_are_counted_stale() {
    let _serial = fault::serial();
    let rig = Rig::proxied();
    let one_way = Duration::from_millis(40);
    rig.proxy().set_delay(one_way);
    let short = Duration::from_millis(50);
    let load = rig.load(
        6,
        Arc::new(move |caller, seq| {
            if caller < 3 {
                Plan::echo(64).deadline(short)
            } else {
                Plan::echo(16 + (seq % 300) as usize)
            }
        }),
    );
    load.wait_ok(30, Duration::from_secs(5));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["Timeout"]));

    let mut timeouts = 0;
    for r in &report.records {
        if r.caller < 3 {
            assert_eq!(r.outcome, Outcome::Timeout, "short-deadline call {r:?}");
            assert!(r.elapsed() >= short, "timed out early: {:?}", r.elapsed());
            timeouts += 1;
        } else {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            assert!(r.elapsed() >= one_way * 2, "faster than the link: {r:?}");
        }
    }
    // Every timed-out call's reply arrives afterwards, and only those are stale.
    wait_until(Duration::from_secs(2), "late replies counted", || {
        rig.client_stats().stale_replies == timeouts
    });
    let stats = rig.client_stats();
    assert_eq!(stats.timeouts, timeouts, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    rig.finish();
}
