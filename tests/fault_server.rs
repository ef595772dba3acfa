//! Fault matrix, part 2: server-side faults: the server killed mid-flight,
//! restarted while clients keep calling, shut down gracefully (goaway) under
//! load, slow, panicking, or blocking its core.
//!
//! Every test runs a mixed workload of concurrent calls through the fault and
//! ends with the shared invariants: `Report::check` (each call ended with Ok or
//! an allowed typed error no later than its deadline plus one heartbeat
//! interval; every reply echoed its own caller id, sequence number and body) and
//! `Rig::finish` (nothing in flight, server connections back to 0 after the
//! client closes, file descriptors and threads back to the baseline).

mod common;
mod fault;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, TestClient};
use fault::cases::{self, FAIL_FAST};
use fault::{
    client_builder, mixed, server_builder, timed_call, Expect, Kind, Outcome, Plan, Rig, SLACK,
};

/// The server is killed (aborted: every socket closed at once) while calls are in
/// flight: they fail with ConnectionLost at once, not at their deadlines; later
/// calls fail fast with Unavailable (or ConnectionLost) while nothing listens.
#[test]
fn killed_server_fails_in_flight_calls_fast() {
    let _serial = fault::serial();
    cases::killed_server_fails_in_flight_calls_fast(Rig::direct());
}

/// The server is aborted and served again on the same address three times while
/// the clients keep calling: calls fail with typed errors in between and resume
/// on a new connection each time.
#[test]
fn server_restarted_while_clients_keep_calling() {
    let _serial = fault::serial();
    let mut rig = Rig::direct();
    let load = rig.load(6, mixed());
    let mut restarts = Vec::new();
    for round in 0..3 {
        load.wait_ok(100, Duration::from_secs(3));
        rig.mark("kill");
        rig.server.abort();
        load.wait_failed(5, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(50));
        let restarted = rig.mark("restart");
        rig.server.restart();
        load.wait_ok(1, Duration::from_secs(2));
        restarts.push((round, restarted, restarted.elapsed()));
    }
    load.wait_ok(100, Duration::from_secs(3));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));
    for &(round, t, resumed) in &restarts {
        let bound = Duration::from_millis(500) + report.lag_during(t, t + resumed);
        assert!(
            resumed < bound,
            "round {round}: first success {resumed:?} after the restart"
        );
        assert!(
            report.ok_started_after(t) >= 100,
            "round {round}: {report:?}"
        );
    }
    // At least one loss per restart (a connect racing an abort can add one).
    let stats = rig.client_stats();
    assert!(stats.connections_lost >= 3, "{stats:?}");
    assert!(stats.reconnects >= 3, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    assert_eq!(
        rig.server.stats().accepted,
        1,
        "the last server saw one connection"
    );
    rig.finish();
}

/// Graceful shutdown (goaway, 300 ms drain) while calls run: the calls in flight
/// finish Ok, new calls fail fast with Unavailable, and a call still running
/// when the drain ends fails with ConnectionLost right then. Nothing hangs or
/// disappears.
#[test]
fn goaway_during_load_drains_calls_in_flight() {
    let _serial = fault::serial();
    let mut rig = Rig::direct();
    // Caller 0 makes 1 s calls (deadline 2 s) that outlive the drain.
    let long = Duration::from_secs(1);
    let load = rig.load(
        6,
        Arc::new(move |caller, seq| {
            if caller == 0 {
                Plan::delayed(1000, 64).deadline(long * 2)
            } else {
                mixed()(caller, seq)
            }
        }),
    );
    load.wait_ok(200, Duration::from_secs(3));
    load.wait_in_flight(0, Duration::from_millis(5), Duration::from_millis(500));
    let drain = Duration::from_millis(300);
    let started = rig.mark("shutdown");
    let took = rig.server.shutdown(drain);
    load.wait_failed(20, Duration::from_secs(2));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));

    let lag = report.lag_during(started, started + took);
    assert!(
        took >= drain - Duration::from_millis(10) && took < drain + FAIL_FAST + lag,
        "shutdown took {took:?} with a {drain:?} drain and a call outliving it"
    );
    let mut long_lost = 0;
    for r in report.in_flight_at(started) {
        let after = r.end.saturating_duration_since(started);
        if r.caller == 0 {
            // Outlived the drain: cut when it ended.
            assert_eq!(r.outcome, Outcome::ConnectionLost, "{r:?}");
            let bound = took + FAIL_FAST + report.lag_during(started, r.end);
            assert!(
                after >= drain - Duration::from_millis(10) && after < bound,
                "long call cut {after:?} after the shutdown began (drain {drain:?})"
            );
            long_lost += 1;
        } else {
            assert_eq!(r.outcome, Outcome::Ok, "call in flight at goaway: {r:?}");
        }
    }
    assert_eq!(long_lost, 1);
    // Only caller 0's call was lost; everything else failed fast as Unavailable.
    assert_eq!(report.count("ConnectionLost"), 1, "{report:?}");
    for r in &report.records {
        if r.outcome == Outcome::Unavailable {
            let bound = FAIL_FAST + report.lag_during(r.start, r.end);
            assert!(r.elapsed() < bound, "{r:?}");
        }
    }
    rig.finish();
}

/// A slow server: caller 0's sync calls block the core 80 ms with a 50 ms deadline,
/// caller 1's async calls sleep 300 ms with a 100 ms deadline. They time out at
/// their deadline (not earlier, not much later); their late replies are dropped
/// and counted stale; the other callers' calls (1 s deadline) succeed, delayed.
#[test]
fn slow_server_deadlines_fire_and_late_replies_are_counted_stale() {
    let _serial = fault::serial();
    let rig = Rig::direct();
    let load = rig.load(
        6,
        Arc::new(|caller, seq| match caller {
            0 => Plan {
                block_ms: 80,
                ..Plan::echo(64)
            }
            .deadline(Duration::from_millis(50))
            .pause(Duration::from_millis(100)),
            1 => Plan::delayed(300, 64).deadline(Duration::from_millis(100)),
            _ => mixed()(caller, seq),
        }),
    );
    std::thread::sleep(Duration::from_millis(1200));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["Timeout"]));

    let (mut sync_slow, mut slow) = (0, 0);
    for r in &report.records {
        if r.caller <= 1 {
            match r.outcome {
                Outcome::Timeout => {
                    assert!(r.elapsed() >= r.plan.deadline, "timed out early: {r:?}");
                    slow += 1;
                    sync_slow += u64::from(r.caller == 0);
                }
                // Only if the machine held the client core back from the deadline
                // until the reply was there too (it then takes the reply first).
                Outcome::Ok => assert!(
                    report.lag_during(r.start + r.plan.deadline, r.end) > Duration::ZERO,
                    "slow call answered Ok after its deadline on a running core: {r:?}"
                ),
                _ => panic!("slow call {r:?}"),
            }
        } else {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        }
    }
    assert!(sync_slow >= 5 && slow > sync_slow, "{report:?}");
    // Each slow call gets exactly one late frame: the sync ones their real reply
    // (80 ms > 50 ms), the async ones a deadline-exceeded frame that races the
    // client's own expiry. Each is dropped and counted stale, unless it completed
    // the call (as Timeout) first.
    wait_until(Duration::from_secs(2), "late replies counted stale", || {
        rig.client_stats().stale_replies >= sync_slow
    });
    std::thread::sleep(Duration::from_millis(100));
    let stats = rig.client_stats();
    assert!(
        stats.stale_replies >= sync_slow && stats.stale_replies <= slow,
        "stale {} for {sync_slow} sync and {slow} total slow calls: {stats:?}",
        stats.stale_replies
    );
    assert_eq!(stats.timeouts, slow, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    rig.finish();
}

/// Handlers that panic (sync, async after an await) fail only their own calls,
/// with Remote(Panicked); every other call on the same connection succeeds.
#[test]
fn panicking_handlers_fail_only_their_own_calls() {
    let _serial = fault::serial();
    let rig = Rig::direct();
    let load = rig.load(
        6,
        Arc::new(|caller, seq| {
            let mut plan = mixed()(caller, seq);
            if seq % 5 == 0 {
                plan.panic = true;
                plan.kind = if caller % 2 == 0 {
                    Kind::Sync
                } else {
                    Kind::Async
                };
            }
            plan
        }),
    );
    load.wait_ok(500, Duration::from_secs(5));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["Remote(Panicked)"]));
    let mut panicked = [0; 2];
    for r in &report.records {
        if r.plan.panic {
            assert_eq!(r.outcome, Outcome::Remote("Panicked".into()), "{r:?}");
            panicked[usize::from(r.plan.kind == Kind::Async)] += 1;
        } else {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        }
    }
    assert!(panicked[0] >= 10 && panicked[1] >= 10, "{panicked:?}");
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    rig.finish();
}

/// Connects `client` until its pool has connections on both server cores.
fn client_on_both_cores(rig: &mut Rig) {
    for _ in 0..10 {
        let cores: BTreeSet<u32> = rig.client.run(|client| async move {
            let mut cores = BTreeSet::new();
            for seq in 0..64 {
                let r = timed_call(&client, 99, seq, Plan::echo(16)).await;
                assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
                cores.extend(r.core);
            }
            cores
        });
        if cores.len() == 2 {
            return;
        }
        rig.client.close();
        rig.client = TestClient::connect_with(client_builder().pool_size(4), rig.server.addr());
        wait_until(Duration::from_secs(2), "pool complete", || {
            rig.client_stats().live_connections == 4
        });
    }
    panic!("10 pools of 4 connections all landed on one server core");
}

/// A 2-core server whose handler blocks core 0 for 50 ms at a time: calls served
/// by core 1 are unaffected, calls served by core 0 are delayed (by up to one
/// block), none is lost.
#[test]
fn handler_blocking_its_core_delays_only_that_core() {
    let _serial = fault::serial();
    let mut rig = Rig::new(2, server_builder, false, client_builder().pool_size(4));
    wait_until(Duration::from_secs(2), "pool complete", || {
        rig.client_stats().live_connections == 4
    });
    client_on_both_cores(&mut rig);
    let block = Duration::from_millis(50);
    let load = rig.load(
        6,
        Arc::new(move |caller, _| {
            if caller == 0 {
                Plan {
                    block_ms: block.as_millis() as u32,
                    block_core: 0,
                    ..Plan::echo(16)
                }
                .pause(Duration::from_millis(30))
            } else {
                Plan::echo(64).pause(Duration::from_millis(1))
            }
        }),
    );
    std::thread::sleep(Duration::from_millis(2000));
    let report = load.stop();
    rig.check(&report, &Expect::errors(&[]));

    let blocks: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.caller == 0 && r.core == Some(0))
        .map(|r| (r.start, r.end))
        .collect();
    assert!(
        blocks.len() >= 5,
        "core 0 was blocked only {} times",
        blocks.len()
    );
    // Latencies of the other callers' calls that overlapped a block, per core.
    let mut during = [Vec::new(), Vec::new()];
    for r in report.records.iter().filter(|r| r.caller != 0) {
        let core = r.core.expect("all calls succeeded") as usize;
        assert!(core < 2, "answered by core {core}");
        if blocks.iter().any(|&(s, e)| r.start < e && r.end > s) {
            during[core].push(report.adjusted(r));
        }
    }
    for d in &mut during {
        d.sort();
    }
    let pct = |d: &[Duration], p: usize| d[(d.len() - 1) * p / 100];
    let [on0, on1] = &during;
    assert!(
        on0.len() >= 10 && on1.len() >= 20,
        "calls overlapping a block: {} on core 0, {} on core 1",
        on0.len(),
        on1.len()
    );
    // Core 1 keeps answering at its usual speed while core 0 is blocked, calls
    // on core 0 wait for the block to end (latencies minus the time the machine
    // held the cores back, percentiles: a loaded machine does not count).
    let detail = format!(
        "calls overlapping core 0's {block:?} blocks: core 0 p50 {:?} p90 {:?} max {:?}; \
         core 1 p50 {:?} p90 {:?} max {:?}",
        pct(on0, 50),
        pct(on0, 90),
        pct(on0, 100),
        pct(on1, 50),
        pct(on1, 90),
        pct(on1, 100)
    );
    assert!(pct(on0, 50) >= block / 5, "core 0 not delayed: {detail}");
    assert!(
        pct(on1, 50) * 2 < pct(on0, 50) && pct(on1, 90) < block / 2,
        "core 1 delayed: {detail}"
    );
    assert!(
        pct(on0, 100) < block * 2 + SLACK,
        "a call on core 0 took {:?}",
        pct(on0, 100)
    );
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    rig.finish();
}
