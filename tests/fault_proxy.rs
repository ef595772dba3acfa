//! Self-tests of the fault-injection suite's own tools: the proxy does what the
//! fault tests rely on (forwarding, delay, 1-byte segments, stall, blackhole,
//! RST, FIN, frame-aligned corruption and injection, and it stops its threads
//! when dropped), and the shared invariant checker catches each kind of
//! violation.

mod common;
mod fault;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use fault::proxy::{Dir, Proxy, Target};
use fault::{Baseline, Expect, Outcome, Plan, Record, Report};
use ringrpc::protocol::{encode_frame, FrameHeader, FrameKind, DEFAULT_MAX_FRAME, HEADER_LEN};

/// A proxy in front of a plain listener; returns (proxy, client end, upstream end).
fn proxied_pair() -> (Proxy, TcpStream, TcpStream, TcpListener) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(upstream.local_addr().unwrap());
    let client = TcpStream::connect(proxy.addr()).unwrap();
    let (server, _) = upstream.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    (proxy, client, server, upstream)
}

fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read");
    buf
}

/// Nothing arrives on `stream` within `wait` (and the connection stays open).
fn nothing_within(stream: &mut TcpStream, wait: Duration) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
}

fn frame(call_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut header = FrameHeader::new(FrameKind::Response);
    header.call_id = call_id;
    let mut out = Vec::new();
    encode_frame(&mut out, header, payload, DEFAULT_MAX_FRAME).unwrap();
    out
}

#[test]
fn proxy_forwards_both_ways_and_stops_its_threads_when_dropped() {
    let _serial = fault::serial();
    let baseline = Baseline::take();
    let (proxy, mut client, mut server, listener) = proxied_pair();
    let up = fault::body_for(1, 1, 200_000);
    let down = fault::body_for(2, 2, 100_000);
    let writer = {
        let (mut c, up) = (client.try_clone().unwrap(), up.clone());
        std::thread::spawn(move || c.write_all(&up).unwrap())
    };
    server.write_all(&down).unwrap();
    assert_eq!(read_n(&mut server, up.len()), up);
    assert_eq!(read_n(&mut client, down.len()), down);
    writer.join().unwrap();
    assert_eq!(proxy.open_connections(), 1);
    // A client FIN is passed on; the upstream's close ends the connection.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0);
    drop(server);
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    common::wait_until(Duration::from_secs(2), "connection unregistered", || {
        proxy.open_connections() == 0
    });
    drop((proxy, client, listener));
    baseline.wait_restored();
}

#[test]
fn proxy_delays_splits_and_stalls_without_losing_bytes() {
    let _serial = fault::serial();
    let baseline = Baseline::take();
    let (proxy, mut client, mut server, listener) = proxied_pair();

    proxy.set_delay(Duration::from_millis(80));
    let start = Instant::now();
    client.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut server, 1), b"x");
    assert!(
        start.elapsed() >= Duration::from_millis(80),
        "{:?}",
        start.elapsed()
    );
    proxy.set_delay(Duration::ZERO);

    proxy.set_split(true);
    let data = fault::body_for(3, 3, 1000);
    server.write_all(&data).unwrap();
    assert_eq!(read_n(&mut client, data.len()), data);
    // (Counted just after each write: the last may still be on its way.)
    common::wait_until(Duration::from_secs(1), "1000 one-byte writes", || {
        proxy.split_writes() == 1000
    });
    proxy.set_split(false);

    proxy.set_stall(true);
    client.write_all(&data).unwrap();
    nothing_within(&mut server, Duration::from_millis(150));
    proxy.set_stall(false);
    assert_eq!(read_n(&mut server, data.len()), data);
    drop((proxy, client, server, listener));
    baseline.wait_restored();
}

#[test]
fn proxy_blackholes_resets_and_closes() {
    let _serial = fault::serial();
    let baseline = Baseline::take();
    let (proxy, mut client, mut server, listener) = proxied_pair();

    // Blackhole: bytes and the FIN vanish; lifting it passes the FIN on.
    proxy.set_blackhole(true);
    client.write_all(b"lost").unwrap();
    server.write_all(b"lost too").unwrap();
    nothing_within(&mut server, Duration::from_millis(100));
    nothing_within(&mut client, Duration::from_millis(100));
    client.shutdown(std::net::Shutdown::Write).unwrap();
    nothing_within(&mut server, Duration::from_millis(100));
    assert!(proxy.blackholed_bytes() >= 12);
    proxy.set_blackhole(false);
    assert_eq!(
        server.read(&mut [0u8; 8]).unwrap(),
        0,
        "FIN after the blackhole"
    );
    drop((client, server));

    // RST: both ends see a reset.
    let client = TcpStream::connect(proxy.addr()).unwrap();
    let (server, _) = listener.accept().unwrap();
    common::wait_until(Duration::from_secs(2), "proxied", || {
        proxy.open_connections() == 1
    });
    proxy.reset_all();
    for mut end in [client, server] {
        end.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let got = end.read(&mut [0u8; 8]);
        assert!(
            matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "{got:?}"
        );
    }
    common::wait_until(Duration::from_secs(2), "connection unregistered", || {
        proxy.open_connections() == 0
    });

    // FIN: both ends see EOF.
    let client = TcpStream::connect(proxy.addr()).unwrap();
    let (server, _) = listener.accept().unwrap();
    common::wait_until(Duration::from_secs(2), "proxied", || {
        proxy.open_connections() == 1
    });
    proxy.close_all();
    for mut end in [client, server] {
        end.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(end.read(&mut [0u8; 8]).unwrap(), 0);
    }
    drop((proxy, listener));
    baseline.wait_restored();
}

#[test]
fn proxy_corrupts_and_injects_at_frame_boundaries() {
    let _serial = fault::serial();
    let baseline = Baseline::take();
    let (proxy, mut client, mut server, listener) = proxied_pair();
    let (a, b, c) = (
        frame(1, b""),
        frame(2, b"payload-b"),
        frame(3, b"payload-c"),
    );

    // Payload corruption skips the payload-less frame and hits b's first byte.
    proxy.corrupt_next(Dir::ServerToClient, Target::Payload);
    server.write_all(&[a.clone(), b.clone()].concat()).unwrap();
    let got = read_n(&mut client, a.len() + b.len());
    let mut want = [a.clone(), b.clone()].concat();
    want[a.len() + HEADER_LEN] ^= 0xff;
    assert_eq!(got, want);

    // Header corruption at an offset of the next frame only.
    proxy.corrupt_next(
        Dir::ServerToClient,
        Target::Header {
            offset: 26,
            xor: 0x01,
        },
    );
    server.write_all(&[c.clone(), a.clone()].concat()).unwrap();
    let got = read_n(&mut client, c.len() + a.len());
    let mut want = [c.clone(), a.clone()].concat();
    want[26] ^= 0x01;
    assert_eq!(got, want);
    assert_eq!(proxy.corrupted(), 2);

    // Injection lands between frames, even when the frames arrive in pieces.
    client.write_all(&b[..10]).unwrap();
    assert_eq!(read_n(&mut server, 10), &b[..10]);
    proxy.inject(Dir::ClientToServer, b"INJECTED");
    client.write_all(&b[10..]).unwrap();
    client.write_all(&c).unwrap();
    let got = read_n(&mut server, b.len() - 10 + 8 + c.len());
    assert_eq!(got, [&b[10..], b"INJECTED", &c[..]].concat());
    assert_eq!(proxy.injected(), 1);
    drop((proxy, client, server, listener));
    baseline.wait_restored();
}

/// The shared checker flags each kind of violation (and passes a clean run).
#[test]
fn invariant_checker_catches_each_kind_of_violation() {
    let t0 = Instant::now();
    let record = |outcome: Outcome, took_ms: u64| Record {
        caller: 1,
        seq: 7,
        plan: Plan::echo(16).deadline(Duration::from_millis(100)),
        start: t0,
        end: t0 + Duration::from_millis(took_ms),
        outcome,
        core: None,
    };
    let report = |records| Report {
        records,
        lags: Vec::new(),
        started: t0,
    };
    let expect = Expect::errors(&["ConnectionLost"]);
    let fails = |records: Vec<Record>, what: &str| {
        let r = report(records);
        let panic = catch_unwind(AssertUnwindSafe(|| r.check(&expect)))
            .expect_err("the checker let it pass");
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(text.contains(what), "{what:?} not in {text}");
    };
    report(vec![
        record(Outcome::Ok, 10),
        record(Outcome::ConnectionLost, 150),
    ])
    .check(&expect);
    fails(
        vec![record(Outcome::Misdelivered("wrong caller".into()), 5)],
        "MISDELIVERED",
    );
    fails(
        vec![record(Outcome::Other("Io(..)".into()), 5)],
        "untyped/unexpected",
    );
    fails(vec![record(Outcome::Timeout, 100)], "unexpected Timeout");
    fails(vec![record(Outcome::Ok, 300)], "past deadline");
    fails(Vec::new(), "no calls");
}
