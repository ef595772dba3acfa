//! Fault matrix, part 3: hostile bytes. Oversize frames and garbage, sent by a
//! raw peer straight to the server and injected by the proxy into the client's
//! own connection in both directions; slowloris peers that start a frame and
//! stall (or trickle), closed after the server's read timeout.
//!
//! Every test runs a mixed workload of concurrent calls through the fault and
//! ends with the shared invariants: `Report::check` (each call ended with Ok or
//! an allowed typed error no later than its deadline plus one heartbeat
//! interval; every reply echoed its own caller id, sequence number and body) and
//! `Rig::finish` (nothing in flight, server connections back to 0 after the
//! client closes, file descriptors and threads back to the baseline).

mod common;
mod fault;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::wait_until;
use fault::proxy::Dir;
use fault::{
    body_for, client_builder, mixed, server_builder, Call, Expect, Report, Rig, ECHO, SLACK,
};
use ringrpc::protocol::{decode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, HEADER_LEN};

/// The server's frame limit in these tests.
const SERVER_MAX_FRAME: usize = 64 << 10;
/// The server's read timeout for partial frames in these tests.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How fast calls in flight must fail once the client sees a bad frame.
const FAIL_FAST: Duration = Duration::from_millis(250);

fn rig() -> Rig {
    Rig::new(
        1,
        || {
            server_builder()
                .max_frame(SERVER_MAX_FRAME)
                .read_timeout(READ_TIMEOUT)
        },
        true,
        client_builder(),
    )
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    common::raw_connect(addr, Duration::from_secs(2))
}

/// A valid echo request frame.
fn request_frame(call_id: u64, call: &Call) -> Vec<u8> {
    common::request_frame(call_id, ECHO.id(), call)
}

fn call(seq: u64, len: usize) -> Call {
    Call {
        caller: 1000,
        seq,
        delay_ms: 0,
        block_ms: 0,
        block_core: u32::MAX,
        panic: false,
        body: body_for(1000, seq, len),
        core: 0,
    }
}

/// Sends a valid request on `raw` and checks the echoed response.
fn raw_echo(raw: &mut TcpStream, call_id: u64, seq: u64) {
    let req = call(seq, 40);
    raw.write_all(&request_frame(call_id, &req))
        .expect("send request");
    let mut frame = vec![0u8; HEADER_LEN];
    raw.read_exact(&mut frame).expect("response header");
    let header = FrameHeader::decode(frame[..].try_into().unwrap()).expect("header");
    frame.resize(header.frame_len(), 0);
    raw.read_exact(&mut frame[HEADER_LEN..])
        .expect("response body");
    assert_eq!(
        decode_frame(&frame, DecodeOptions::default()),
        Ok(Decoded::Frame(header))
    );
    assert_eq!(header.kind, FrameKind::Response, "{header:?}");
    assert_eq!(header.call_id, call_id);
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&frame[HEADER_LEN..HEADER_LEN + header.len as usize]);
    let reply = rkyv::access::<fault::ArchivedCall, rkyv::rancor::Error>(&payload).unwrap();
    assert_eq!(reply.seq.to_native(), seq);
    assert_eq!(reply.body.as_slice(), req.body.as_slice());
}

/// Whether the server has closed `raw` (EOF or reset); never blocks.
fn is_closed(raw: &TcpStream) -> bool {
    raw.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match (&*raw).read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("server sent {n} bytes to a bad peer: {:?}", &buf[..n]),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    raw.set_nonblocking(false).unwrap();
    closed
}

/// Waits (bounded) until the server closes `raw`; returns when.
fn wait_closed(raw: &TcpStream, what: &str) -> Instant {
    wait_until(Duration::from_secs(2), what, || is_closed(raw));
    Instant::now()
}

/// A header claiming a payload of `len` bytes.
fn header_claiming(kind: FrameKind, len: u32) -> [u8; HEADER_LEN] {
    let mut header = FrameHeader::new(kind);
    header.method = ECHO.id();
    header.len = len;
    let mut bytes = [0u8; HEADER_LEN];
    header.encode(0, &mut bytes); // (the payload never arrives)
    bytes
}

fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut bytes = body_for(7, seed, n);
    bytes[0] = 0xff; // never the "RR" magic
    bytes
}

/// Injects `bytes` into the client's connection going `dir`: the receiving side
/// rejects the stream and closes the connection; the calls in flight fail fast
/// with ConnectionLost; the pool reconnects. Returns when the bytes were queued
/// and how long the close took.
fn inject_episode(rig: &Rig, load: &fault::Load, dir: Dir, bytes: &[u8]) -> (Instant, Duration) {
    let (lost, injected) = (rig.client_stats().connections_lost, rig.proxy().injected());
    load.in_flight_now();
    let at = rig.mark(&format!("inject {dir:?}"));
    rig.proxy().inject(dir, bytes);
    wait_until(Duration::from_secs(2), "bytes injected", || {
        rig.proxy().injected() > injected
    });
    wait_until(Duration::from_secs(2), "connection closed", || {
        rig.client_stats().connections_lost > lost
    });
    let closed = at.elapsed();
    load.wait_ok(50, Duration::from_secs(3));
    (at, closed)
}

/// The checks after inject episodes: calls in flight failed fast, the
/// connection closed fast.
fn check_episodes(report: &Report, episodes: &[(Instant, Duration)], what: &str) {
    for &(t, closed) in episodes {
        report.assert_failed_fast(t, FAIL_FAST, what);
        let bound = FAIL_FAST + report.lag_during(t, t + closed);
        assert!(
            closed <= bound,
            "{what}: connection closed {closed:?} after"
        );
    }
}

/// Ends a run with one bad raw peer and two injected episodes (one per
/// direction): only the two broken client connections were lost (and came
/// back), the server counted both protocol errors, and nothing else failed.
fn finish_two_injections(
    rig: Rig,
    load: fault::Load,
    episodes: [(Instant, Duration); 2],
    what: &str,
) {
    let report = load.stop();
    rig.check(&report, &Expect::errors(&["ConnectionLost", "Unavailable"]));
    check_episodes(&report, &episodes, what);
    let stats = rig.client_stats();
    assert_eq!(stats.connections_lost, 2, "{stats:?}");
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    assert_eq!(rig.server.stats().protocol_errors, 2, "raw peer + injected");
    rig.server.wait_open(1, Duration::from_secs(2));
    rig.finish();
}

/// Runs `bad_peer` (a raw connection straight to the server) while the load
/// runs: only that connection is closed, as a protocol error; the load sees
/// no error at all.
fn bad_raw_peer_alone(rig: &Rig, load: &fault::Load, bytes: &[u8], what: &str) -> Instant {
    let errors = rig.server.stats().protocol_errors;
    let failed = load.failed();
    let mut raw = raw_connect(rig.server.addr());
    raw.write_all(bytes).expect("send bad bytes");
    wait_closed(&raw, what);
    wait_until(Duration::from_secs(2), "protocol error counted", || {
        rig.server.stats().protocol_errors == errors + 1
    });
    load.wait_ok(50, Duration::from_secs(3));
    assert_eq!(load.failed(), failed, "{what}: the load saw errors");
    drop(raw);
    rig.server.wait_open(1, Duration::from_secs(2));
    Instant::now()
}

#[test]
fn oversize_frames_close_only_the_offending_connection() {
    let _serial = fault::serial();
    let rig = rig();
    let load = rig.load(6, mixed());

    // A raw peer announces 1 MiB (over the server's 64 KiB) and starts sending it.
    let mut bytes = header_claiming(FrameKind::Request, 1 << 20).to_vec();
    bytes.extend_from_slice(&[0u8; 4096]);
    bad_raw_peer_alone(&rig, &load, &bytes, "raw oversize");

    // Into the client's own connection: a response over the client's 4 MiB, and
    // a request over the server's 64 KiB.
    let to_client = inject_episode(
        &rig,
        &load,
        Dir::ServerToClient,
        &header_claiming(FrameKind::Response, 32 << 20),
    );
    let to_server = inject_episode(
        &rig,
        &load,
        Dir::ClientToServer,
        &header_claiming(FrameKind::Request, 1 << 20),
    );
    finish_two_injections(rig, load, [to_client, to_server], "oversize");
}

#[test]
fn garbage_closes_only_the_offending_connection() {
    let _serial = fault::serial();
    let rig = rig();
    let load = rig.load(6, mixed());

    bad_raw_peer_alone(&rig, &load, &garbage(512, 1), "raw garbage");
    let to_client = inject_episode(&rig, &load, Dir::ServerToClient, &garbage(100, 2));
    let to_server = inject_episode(&rig, &load, Dir::ClientToServer, &garbage(100, 3));
    finish_two_injections(rig, load, [to_client, to_server], "garbage");
}

/// Slowloris peers (half a header; a header and half its payload; a frame
/// trickled a byte every 20 ms) are closed once their partial frame is older
/// than the read timeout, and counted; an idle peer between frames is not; the
/// client's calls on its own connection are unaffected meanwhile.
#[test]
fn slowloris_peers_are_closed_after_the_read_timeout_without_holding_others_back() {
    let _serial = fault::serial();
    let rig = rig();
    let load = rig.load(6, mixed());
    let failed = load.failed();
    let addr = rig.server.addr();

    let full = request_frame(1, &call(1, 300));
    let mut idle = raw_connect(addr);
    raw_echo(&mut idle, 10, 10);
    let mut half_header = raw_connect(addr);
    let mut half_payload = raw_connect(addr);
    let mut trickle = raw_connect(addr);
    let start = Instant::now();
    half_header.write_all(&full[..16]).unwrap();
    half_payload.write_all(&full[..HEADER_LEN + 100]).unwrap();
    trickle.write_all(&full[..1]).unwrap();

    let mut peers = [
        ("half a header", &half_header, None),
        ("header and half the payload", &half_payload, None),
        ("trickle", &trickle, None),
    ];
    let mut sent = 1;
    while peers.iter().any(|p| p.2.is_none()) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "slowloris peers still open after 2 s"
        );
        for (_, raw, closed) in &mut peers {
            if closed.is_none() && is_closed(raw) {
                *closed = Some(start.elapsed());
            }
        }
        if peers[2].2.is_none() && start.elapsed() >= Duration::from_millis(20) * sent {
            // Ignore write errors: the server may have closed it just now.
            let _ = peers[2]
                .1
                .write_all(&full[sent as usize..sent as usize + 1]);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The sweeper runs every read_timeout / 4.
    let latest = READ_TIMEOUT + READ_TIMEOUT / 4 + SLACK * 2;
    for (what, _, closed) in &peers {
        let closed = closed.unwrap();
        assert!(
            closed >= READ_TIMEOUT && closed <= latest,
            "{what}: closed after {closed:?} (read timeout {READ_TIMEOUT:?})"
        );
    }
    assert!(sent > 5, "the trickle sent {sent} bytes");
    let s = rig.server.stats();
    assert_eq!(s.read_timeouts, 3, "{s:?}");
    assert_eq!(s.protocol_errors, 0, "{s:?}");

    // An idle connection between frames is left alone, and still works.
    std::thread::sleep(READ_TIMEOUT * 2 - start.elapsed().min(READ_TIMEOUT));
    assert!(!is_closed(&idle), "idle connection was closed");
    raw_echo(&mut idle, 11, 11);
    drop((idle, half_header, half_payload, trickle));
    rig.server.wait_open(1, Duration::from_secs(2));

    load.wait_ok(50, Duration::from_secs(3));
    assert_eq!(load.failed(), failed, "the load saw errors");
    let report = load.stop();
    rig.check(&report, &Expect::errors(&[]));
    // Calls stayed fast while the slowloris peers were connected, never waiting
    // for a stalled peer's read timeout (latencies minus the time the machine
    // held the cores back, percentiles: a loaded machine does not count).
    let mut fast: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.caller != 0 && r.plan.body_len < 1024)
        .map(|r| report.adjusted(r))
        .collect();
    fast.sort();
    let pct = |p: usize| fast[(fast.len() - 1) * p / 100];
    assert!(
        pct(50) < Duration::from_millis(20) && pct(99) < READ_TIMEOUT / 4,
        "small calls: p50 {:?} p99 {:?}",
        pct(50),
        pct(99)
    );
    assert_eq!(rig.client_stats().connections_lost, 0);
    rig.finish();
}
