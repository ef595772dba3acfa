//! Scale: 10,000 concurrent connections to ONE server core, one call on each,
//! and the server's memory per idle connection.
//!
//! The clients live in a child process (this test binary re-run as the
//! `client_process` helper): plain blocking std sockets sending valid request
//! frames and checking every echo. So the RSS measured here is the server's
//! alone, and each process needs one descriptor per connection, not two. Both
//! processes raise `RLIMIT_NOFILE` (the soft limit up to the hard one; the hard
//! one too when allowed). If the limit still cannot fit 10,000 connections the
//! test uses as many as fit (at least 1,000) and says so, or skips with the reason.
//!
//! The whole cycle (connect all, call on each, hold idle, close all) runs twice.
//! Checked: every call is answered with its own echo, no connection is refused
//! or breaks the protocol, descriptors and open connections return to their
//! baselines after each round, and the live heap after the second round equals
//! the live heap after the first (nothing per connection outlives it). A
//! counting global allocator gives the live heap exactly; RSS depends on how
//! the allocator recycles memory, so it is reported for a fresh heap (round 1)
//! and a recycled one (round 2).
//!
//! Printed: connect / call / close times; RSS and live heap while holding the
//! idle connections and after closing them; per idle connection: live heap,
//! virtual data (VmData) and RSS.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{text_for, wait_until, Msg, TestServer, ECHO};
use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};

const TARGET_CONNECTIONS: usize = 10_000;
/// Descriptors a process needs besides one per connection.
const FD_SLACK: u64 = 256;
/// Set (to "addr count") in the client child process.
const CHILD_ENV: &str = "RINGRPC_SCALE_CLIENT";

#[path = "support/live_heap.rs"]
mod live_heap;

#[global_allocator]
static ALLOCATOR: live_heap::Counting = live_heap::Counting;

fn live_heap() -> usize {
    live_heap::live_bytes()
}

#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

/// `RLIMIT_NOFILE` on Linux (x86_64, aarch64 and the other generic-ABI targets).
const RLIMIT_NOFILE: i32 = 7;

extern "C" {
    fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
}

fn nofile() -> RLimit {
    let mut lim = RLimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit (two u64s, the Linux 64-bit layout).
    let rc = unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim
}

fn set_nofile(cur: u64, max: u64) -> bool {
    let lim = RLimit { cur, max };
    // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
    unsafe { setrlimit(RLIMIT_NOFILE, &lim) == 0 }
}

/// Raises the soft descriptor limit to at least `needed` if allowed; returns the
/// soft limit in force afterwards.
fn raise_nofile(needed: u64) -> u64 {
    let lim = nofile();
    if lim.cur >= needed {
        return lim.cur;
    }
    // As root the hard limit may be raised too; otherwise up to the hard limit.
    if !set_nofile(needed, lim.max.max(needed)) {
        set_nofile(lim.max.min(needed.max(lim.cur)), lim.max);
    }
    nofile().cur
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .count()
}

fn request_frame(call_id: u64) -> Vec<u8> {
    let msg = Msg {
        id: call_id,
        text: text_for(call_id),
    };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&msg).expect("serialise");
    let mut header = FrameHeader::new(FrameKind::Request);
    header.call_id = call_id;
    header.method = ECHO.id();
    let mut frame = Vec::new();
    encode_frame(&mut frame, header, &payload, DEFAULT_MAX_FRAME).expect("encode");
    frame
}

/// Reads one reply and checks it echoes call `call_id`.
fn expect_echo(stream: &mut TcpStream, call_id: u64) {
    let mut frame = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut frame).expect("reply header");
    let head: &[u8; HEADER_LEN] = frame[..].try_into().unwrap();
    let header = FrameHeader::decode(head).expect("reply header decodes");
    frame.resize(header.frame_len(), 0);
    stream
        .read_exact(&mut frame[HEADER_LEN..])
        .expect("reply body");
    assert_eq!(
        decode_frame(&frame, DecodeOptions::default()),
        Ok(Decoded::Frame(header))
    );
    assert_eq!(header.kind, FrameKind::Response, "{header:?}");
    assert_eq!(header.call_id, call_id);
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&frame[HEADER_LEN..HEADER_LEN + header.len as usize]);
    let reply = rkyv::access::<common::ArchivedMsg, rkyv::rancor::Error>(&payload).expect("Msg");
    assert_eq!(reply.id.to_native(), call_id);
    assert_eq!(reply.text.as_str(), text_for(call_id));
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How many connections fit the descriptor limit of one process, or why none.
fn connections_allowed() -> Result<usize, String> {
    let needed = TARGET_CONNECTIONS as u64 + FD_SLACK;
    let soft = raise_nofile(needed);
    if soft >= needed {
        return Ok(TARGET_CONNECTIONS);
    }
    let fit = soft.saturating_sub(FD_SLACK) as usize;
    if fit < 1_000 {
        return Err(format!(
            "RLIMIT_NOFILE soft limit is {soft} and cannot be raised to {needed}"
        ));
    }
    eprintln!(
        "NOTE: RLIMIT_NOFILE soft limit is {soft} (cannot raise to {needed}); \
         using {fit} connections instead of {TARGET_CONNECTIONS}"
    );
    Ok(fit)
}

/// The client side, run in a child process: connects `count` sockets to `addr`,
/// makes one call on each, reports `READY <connect ms> <call ms>` on stdout,
/// holds the connections until stdin closes, then exits.
#[test]
fn client_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful as the child of `ten_thousand_connections_on_one_core`.
    };
    let (addr, count) = spec.split_once(' ').expect("addr count");
    let addr: SocketAddr = addr.parse().expect("addr");
    let count: usize = count.parse().expect("count");
    raise_nofile(count as u64 + FD_SLACK);

    let start = Instant::now();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(count);
    for i in 0..count {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        streams.push(stream);
        // Pace the connects so the accept queue (backlog 1024) never overflows:
        // a reply on the newest connection means the server has accepted it.
        if i % 512 == 511 {
            let last = streams.last_mut().unwrap();
            last.write_all(&request_frame(i as u64)).unwrap();
            expect_echo(last, i as u64);
        }
    }
    let connect_ms = start.elapsed().as_millis();

    // One call on every connection: all requests out first, then every reply.
    let start = Instant::now();
    let id = |i: usize| (1 << 32) + i as u64;
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(&request_frame(id(i)))
            .unwrap_or_else(|e| panic!("request on #{i}: {e}"));
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        expect_echo(stream, id(i));
    }
    let call_ms = start.elapsed().as_millis();
    println!("READY {connect_ms} {call_ms}");
    std::io::stdout().flush().unwrap();

    // Hold the idle connections until the parent closes our stdin.
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    drop(streams);
}

/// The live heap once it stops shrinking (two readings 20 ms apart agree, or
/// 2 s have passed): a closed connection's descriptor is gone before its
/// last memory is (operations it had in flight keep theirs until the kernel's
/// cancellation completes, a turn or more later on a loaded core).
fn settled_live_heap() -> usize {
    let start = Instant::now();
    let mut last = live_heap();
    while start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        let now = live_heap();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Figures of one connect / call / hold / close round.
struct Round {
    connect_ms: u64,
    call_ms: u64,
    close: Duration,
    rss_held: u64,
    data_held: u64,
    rss_closed: u64,
    heap_held: usize,
    heap_closed: usize,
}

fn round(server: &TestServer, connections: usize) -> Round {
    let fds_before = open_fds();
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "client_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{} {connections}", server.addr()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the client process");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may have printed "test client_process ... " on the same line.
            if let Some((_, ready)) = line.split_once("READY ") {
                let _ = tx.send(ready.to_owned());
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(40)) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("client process did not get ready ({e}); exit: {status:?}");
        }
    };
    let mut times = ready.split(' ').map(|t| t.parse::<u64>().expect("ms"));
    let (connect_ms, call_ms) = (times.next().unwrap(), times.next().unwrap());

    let stats = server.stats();
    assert_eq!(stats.open_connections, connections, "{stats:?}");
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    assert_eq!(stats.rejected_connections, 0, "{stats:?}");
    // The server has answered every call; let it settle, then measure.
    std::thread::sleep(Duration::from_millis(200));
    let (rss_held, data_held, heap_held) = (rss_kib(), status_kib("VmData:"), live_heap());

    let start = Instant::now();
    drop(child.stdin.take());
    let status = child.wait().expect("client process exit");
    assert!(status.success(), "client process failed: {status:?}");
    server.wait_no_connections(Duration::from_secs(15));
    let close = start.elapsed();
    wait_until(
        Duration::from_secs(5),
        "descriptors back to baseline",
        || open_fds() <= fds_before,
    );
    Round {
        connect_ms,
        call_ms,
        close,
        rss_held,
        data_held,
        rss_closed: rss_kib(),
        heap_held,
        heap_closed: settled_live_heap(),
    }
}

#[test]
fn ten_thousand_connections_on_one_core() {
    let connections = match connections_allowed() {
        Ok(n) => n,
        Err(why) => {
            eprintln!(
                "SKIPPED: {why}; {TARGET_CONNECTIONS} connections need that many descriptors"
            );
            return;
        }
    };
    let test_start = Instant::now();
    let server = TestServer::echo();
    // Warm up the server core and the allocator with one connection and call.
    {
        let mut warm = TcpStream::connect(server.addr()).expect("connect");
        warm.write_all(&request_frame(u64::MAX)).unwrap();
        expect_echo(&mut warm, u64::MAX);
    }
    server.wait_no_connections(Duration::from_secs(5));
    let (rss_before, data_before, heap_before) = (rss_kib(), status_kib("VmData:"), live_heap());

    let first = round(&server, connections);
    let second = round(&server, connections);

    let n = connections as f64;
    let kib_per_conn = |kib: u64, base: u64| kib.saturating_sub(base) as f64 * 1024.0 / n;
    let bytes_per_conn = |bytes: usize, base: usize| bytes.saturating_sub(base) as f64 / n;
    eprintln!("scale: {connections} concurrent connections to one server core, one call on each");
    for (name, r) in [("round 1", &first), ("round 2", &second)] {
        eprintln!(
            "  {name}: connect {} ms, {connections} calls {} ms, close {:.0?}; RSS {:.1} MiB \
             holding them, {:.1} MiB after closing; live heap {:.1} MiB holding, {:.1} MiB after",
            r.connect_ms,
            r.call_ms,
            r.close,
            mib(r.rss_held),
            mib(r.rss_closed),
            r.heap_held as f64 / (1 << 20) as f64,
            r.heap_closed as f64 / (1 << 20) as f64,
        );
    }
    eprintln!(
        "  per idle connection: {:.0} B live heap, {:.0} B virtual (VmData), \
         {:.0} B RSS on a fresh heap (round 1), {:.0} B RSS on a recycled heap (round 2)",
        bytes_per_conn(first.heap_held, heap_before),
        kib_per_conn(first.data_held, data_before),
        kib_per_conn(first.rss_held, rss_before),
        kib_per_conn(second.rss_held, rss_before),
    );
    eprintln!(
        "  server RSS before {:.1} MiB; total {:.2?}",
        mib(rss_before),
        test_start.elapsed()
    );

    // An idle connection holds its state and no receive memory (the buffer
    // ring lends it some only while bytes are in flight): under 4 KiB of heap.
    let per_idle = bytes_per_conn(first.heap_held, heap_before);
    assert!(
        per_idle <= 4096.0,
        "{per_idle:.0} B of live heap per idle connection (want <= 4 KiB)"
    );

    // Nothing per connection outlives it: the second round ends with the same
    // live heap as the first (allowing under 16 bytes per connection of noise).
    let retained = second.heap_closed.saturating_sub(first.heap_closed);
    assert!(
        retained < connections * 16,
        "live heap after closing {connections} connections grew by {retained} B between rounds"
    );
    assert!(
        test_start.elapsed() < Duration::from_secs(60),
        "scale test took {:.1?}",
        test_start.elapsed()
    );
}
