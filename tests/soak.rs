//! Soak: mixed load for a while, sampling the process RSS every second; fails
//! if RSS keeps growing.
//!
//! Default 30 s (CI). Longer: `RINGRPC_SOAK_SECS=600` (also `600s` or `10m`):
//! `RINGRPC_SOAK_SECS=10m cargo test --release --test soak -- --nocapture`.
//!
//! The load, client and server in this process (one core each):
//! - 16 caller tasks on one pooled client (2 connections), each calling in a
//!   loop with a 1 ms pause: 90 % sync echo (reply identity checked), 8 % an
//!   async handler that sleeps 0..19 ms called with a 10 ms deadline (about
//!   half time out; late replies are dropped as stale), 2 % a handler that panics;
//! - connection churn: every 200 ms a new client connects, makes 10 calls and closes;
//! - a server restart (abort + serve again on the same address) every 5 s,
//!   so the pooled client's connections are lost and re-established;
//! - hostile peers: garbage every 100 ms (closed on the protocol error) and a
//!   half frame that stalls every 500 ms (closed by the 200 ms read timeout).
//!
//! Checked: no call ever gets another call's reply or an unexpected error
//! (allowed: timeouts on the slow method, panics on the panicking one, and
//! connection-lost / unavailable around restarts); afterwards nothing is in
//! flight, the server has no connection and the process's descriptors are back
//! to the baseline; and RSS stays flat over the second half of the run: the
//! least-squares slope of those samples is at most [`MAX_SLOPE_KIB_PER_S`], or
//! the last sample is no more than 5 % + [`GROWTH_SLACK_KIB`] over the largest
//! sample of the first half. (Both must fail for the test to fail: a single
//! allocator step can steepen a 15-sample slope, but a real leak both keeps
//! the slope up and carries the last sample past the first half's peak.)
//!
//! A counting global allocator also samples the live heap, which, unlike RSS,
//! does not depend on how the allocator recycles memory. It cycles with the
//! server restarts but must not trend up: its Theil-Sen slope (median of the
//! pairwise slopes, robust to that saw-tooth) after [`WARMUP_SAMPLES`] s must
//! stay under [`MAX_HEAP_SLOPE_KIB_PER_S`]. Checked by hand: leaking 16 bytes
//! per successful call (~7,500 calls/s here) fails both checks within 30 s
//! (heap slope ~115 KiB/s; RSS slope ~285 KiB/s with the last sample 4 MiB
//! over the first half's peak); without it the heap slope is about 0.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{base_server, client_builder, client_runtime, text_for, Msg, TestServer, ECHO};
use ringrpc::protocol::{encode_frame, FrameHeader, FrameKind, DEFAULT_MAX_FRAME};
use ringrpc::runtime::io::sleep;
use ringrpc::{Client, Error, ErrorCode, Method, Request, ServerBuilder};

/// Sleeps `id % 20` ms, then echoes.
const SLOW: Method<Msg, Msg> = Method::new("Soak.slow");
/// Always panics.
const PANIC: Method<Msg, Msg> = Method::new("Soak.panic");
const PANIC_TEXT: &str = "soak: induced panic";

/// Largest tolerated RSS slope over the second half of the samples.
const MAX_SLOPE_KIB_PER_S: f64 = 64.0;
/// Absolute slack on top of 5 % when comparing the last sample with the first half.
const GROWTH_SLACK_KIB: u64 = 2 << 10;
/// Largest tolerated trend of the live heap (median pairwise slope).
const MAX_HEAP_SLOPE_KIB_PER_S: f64 = 32.0;
/// Samples left out of the live-heap trend (pools and tables still growing).
const WARMUP_SAMPLES: usize = 4;
const CALLERS: usize = 16;

#[path = "support/live_heap.rs"]
mod live_heap;

#[global_allocator]
static ALLOCATOR: live_heap::Counting = live_heap::Counting;

fn live_heap_kib() -> u64 {
    (live_heap::live_bytes() / 1024) as u64
}

fn soak_builder() -> ServerBuilder {
    base_server()
        .register_async(SLOW, |req: Request<Msg>| async move {
            sleep(Duration::from_millis(req.id.to_native() % 20)).await;
            Ok::<_, String>(Msg {
                id: req.id.to_native(),
                text: req.text.as_str().to_owned(),
            })
        })
        .expect("register slow")
        .register(PANIC, |_req: &common::ArchivedMsg| -> Result<Msg, String> {
            panic!("{}", PANIC_TEXT)
        })
        .expect("register panic")
        .read_timeout(Duration::from_millis(200))
}

/// `RINGRPC_SOAK_SECS`: seconds, or with an `s` / `m` suffix; default 30.
fn soak_secs() -> u64 {
    let Ok(raw) = std::env::var("RINGRPC_SOAK_SECS") else {
        return 30;
    };
    let raw = raw.trim();
    let secs = if let Some(m) = raw.strip_suffix('m') {
        m.trim().parse::<u64>().map(|m| m * 60)
    } else {
        raw.trim_end_matches('s').trim().parse::<u64>()
    };
    let secs = secs.unwrap_or_else(|_| panic!("RINGRPC_SOAK_SECS={raw:?}: want 600, 600s or 10m"));
    secs.max(10)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .expect("VmRSS in /proc/self/status")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .count()
}

/// The descriptors of `now` that `before` does not have (as a multiset;
/// the listing's own `/proc/self/fd` handle left out).
fn fd_diff(now: &[String], before: &[String]) -> Vec<String> {
    let mut rest: Vec<&String> = before.iter().collect();
    now.iter()
        .filter(|t| !t.starts_with("/proc/"))
        .filter(|t| match rest.iter().position(|b| b == t) {
            Some(i) => {
                rest.swap_remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

/// What each open descriptor is (sockets by inode), for a failure message.
fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Outcome counters shared by the load tasks and the sampler.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    timeouts: AtomicU64,
    panics: AtomicU64,
    restart_errors: AtomicU64,
    churned: AtomicU64,
    hostile: AtomicU64,
    unexpected: Mutex<Vec<String>>,
}

impl Counts {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn unexpected(&self, what: String) {
        let mut list = self.unexpected.lock().unwrap();
        if list.len() < 20 {
            list.push(what);
        }
    }

    /// Records the outcome of a call of `method` carrying `id`.
    fn record(&self, method: u32, id: u64, result: Result<(u64, String), Error>) {
        let restart_error = |e: &Error| {
            matches!(
                e,
                Error::ConnectionLost | Error::NotSent | Error::Unavailable | Error::Timeout
            ) || matches!(
                e,
                Error::Remote {
                    code: ErrorCode::Unavailable,
                    ..
                }
            )
        };
        match result {
            Ok((got, text)) if method != PANIC.id() && got == id && text == text_for(id) => {
                Self::bump(&self.ok)
            }
            Ok((got, _)) => self.unexpected(format!("call {id}: reply for {got}")),
            Err(Error::Timeout) if method == SLOW.id() => Self::bump(&self.timeouts),
            Err(Error::Remote {
                code: ErrorCode::Panicked,
                ..
            }) if method == PANIC.id() => Self::bump(&self.panics),
            Err(e) if restart_error(&e) => Self::bump(&self.restart_errors),
            Err(e) => self.unexpected(format!("call {id} (method {method:#x}): {e:?}")),
        }
    }
}

async fn call(
    client: &Client,
    method: Method<Msg, Msg>,
    id: u64,
    deadline: Duration,
) -> Result<(u64, String), Error> {
    let msg = Msg {
        id,
        text: text_for(id),
    };
    let reply = client.call_with_deadline(&method, &msg, deadline).await?;
    Ok((reply.id.to_native(), reply.text.as_str().to_owned()))
}

/// The client-side load: callers on a pooled client plus connection churn.
async fn client_load(addr: SocketAddr, counts: Arc<Counts>, stop: Arc<AtomicBool>) -> String {
    let client = client_builder()
        .pool_size(2)
        .connect(addr)
        .expect("connect on a ringrpc core");
    client.wait_connected(Duration::from_secs(2)).await;
    let next_id = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (client, counts, stop, next_id) = (
            client.clone(),
            counts.clone(),
            stop.clone(),
            next_id.clone(),
        );
        tasks.push(ringrpc::runtime::io::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let id = next_id.get() + 1;
                next_id.set(id);
                let (method, deadline) = match id % 50 {
                    0 => (PANIC, Duration::from_secs(2)),
                    1..=4 => (SLOW, Duration::from_millis(10)),
                    _ => (ECHO, Duration::from_secs(2)),
                };
                let result = call(&client, method, id, deadline).await;
                counts.record(method.id(), id, result);
                sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    // Connection churn: short-lived clients.
    let churn_builder = client_builder();
    while !stop.load(Ordering::Relaxed) {
        let churn = churn_builder
            .connect(addr)
            .expect("connect on a ringrpc core");
        if churn.wait_connected(Duration::from_secs(1)).await {
            for _ in 0..10 {
                let id = next_id.get() + 1;
                next_id.set(id);
                let result = call(&churn, ECHO, id, Duration::from_secs(1)).await;
                counts.record(ECHO.id(), id, result);
            }
        }
        churn.close();
        Counts::bump(&counts.churned);
        sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        if task.await.is_err() {
            counts.unexpected("a caller task panicked".into());
        }
    }
    let stats = client.stats();
    client.close();
    format!("{stats:?}")
}

/// Hostile peers on raw sockets until `stop`: garbage, and stalled half frames.
fn hostile_peers(addr: SocketAddr, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let mut frame = Vec::new();
    let mut header = FrameHeader::new(FrameKind::Request);
    header.method = ECHO.id();
    encode_frame(&mut frame, header, &[7u8; 200], DEFAULT_MAX_FRAME).unwrap();
    let mut stalled: Vec<(Instant, TcpStream)> = Vec::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: ringrpc\r\n\r\n-- not a frame --");
            let _ = s.read(&mut [0u8; 64]); // until the server closes it
            Counts::bump(&counts.hostile);
        }
        if round % 5 == 0 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&frame[..frame.len() / 2]);
                stalled.push((Instant::now(), s));
                Counts::bump(&counts.hostile);
            }
        }
        stalled.retain(|(since, _)| since.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Theil-Sen slope of `ys` (one sample per second): the median of the slopes
/// between every pair of samples. Unlike least squares it ignores the saw-tooth
/// the periodic server restarts put into the live heap.
fn median_slope(ys: &[u64]) -> f64 {
    let mut slopes = Vec::new();
    for i in 0..ys.len() {
        for j in i + 1..ys.len() {
            slopes.push((ys[j] as f64 - ys[i] as f64) / (j - i) as f64);
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    slopes[slopes.len() / 2]
}

/// Least-squares slope of `ys` (one sample per second), per second.
fn slope(ys: &[u64]) -> f64 {
    let n = ys.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = ys.iter().map(|&y| y as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, &y) in ys.iter().enumerate() {
        let dx = x as f64 - mean_x;
        num += dx * (y as f64 - mean_y);
        den += dx * dx;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[test]
fn soak_rss_stays_flat() {
    let secs = soak_secs();
    // The panicking handler's panics are expected; keep them off stderr.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied());
        if text != Some(PANIC_TEXT) {
            default_hook(info);
        }
    }));

    let mut server = TestServer::start(soak_builder());
    let addr = server.addr();
    let client_rt = client_runtime();
    // The baseline once the server's accept loop runs: it holds a spare
    // descriptor (on /dev/null, for running out of them) that it opens when
    // it starts, after `serve` has returned. One accepted connection shows it.
    {
        let probe = TcpStream::connect(addr).expect("probe connect");
        common::wait_until(Duration::from_secs(5), "the probe accepted", || {
            server.stats().open_connections == 1
        });
        drop(probe);
        server.wait_no_connections(Duration::from_secs(5));
    }
    let fds_before = open_fds();
    let targets_before = fd_targets();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));

    let load = {
        let (counts, stop) = (counts.clone(), stop.clone());
        client_rt
            .spawn_on(0, move || client_load(addr, counts, stop))
            .expect("client core")
    };
    let hostile = {
        let (counts, stop) = (counts.clone(), stop.clone());
        std::thread::spawn(move || hostile_peers(addr, counts, stop))
    };

    eprintln!("soak: {secs} s; samples (t, RSS, fds, ok calls, timeouts, panics, restart errors, churned clients, hostile peers):");
    let start = Instant::now();
    let (mut rss, mut heap) = (Vec::new(), Vec::new());
    for t in 1..=secs {
        let wake = start + Duration::from_secs(t);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        if t % 5 == 0 && t < secs {
            server.abort();
            server.serve_again(soak_builder());
        }
        let sample = rss_kib();
        rss.push(sample);
        heap.push(live_heap_kib());
        let c = &counts;
        eprintln!(
            "  t={t:>4}s rss={:>8.1} MiB heap={:>8.1} MiB fds={:>4} ok={:>8} timeouts={:>6} panics={:>5} restart_errors={:>4} churned={:>4} hostile={:>4}",
            sample as f64 / 1024.0,
            *heap.last().unwrap() as f64 / 1024.0,
            open_fds(),
            c.ok.load(Ordering::Relaxed),
            c.timeouts.load(Ordering::Relaxed),
            c.panics.load(Ordering::Relaxed),
            c.restart_errors.load(Ordering::Relaxed),
            c.churned.load(Ordering::Relaxed),
            c.hostile.load(Ordering::Relaxed),
        );
    }

    stop.store(true, Ordering::Relaxed);
    hostile.join().expect("hostile peers thread");
    let client_stats = load.join().expect("client load task");
    server.wait_no_connections(Duration::from_secs(5));
    let fds_deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() != fds_before {
        assert!(
            Instant::now() < fds_deadline,
            "descriptors not back to baseline after 5 s: {fds_before} before, {} now; \
             opened since: {:?}, closed since: {:?}",
            open_fds(),
            fd_diff(&fd_targets(), &targets_before),
            fd_diff(&targets_before, &fd_targets()),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let unexpected = counts.unexpected.lock().unwrap().clone();
    eprintln!("soak: client {client_stats}; server {:?}", server.stats());
    assert!(
        unexpected.is_empty(),
        "unexpected outcomes: {unexpected:#?}"
    );
    let ok = counts.ok.load(Ordering::Relaxed);
    assert!(ok >= secs * 100, "only {ok} successful calls in {secs} s");
    assert!(counts.timeouts.load(Ordering::Relaxed) > 0, "no timeouts");
    assert!(
        counts.panics.load(Ordering::Relaxed) > 0,
        "no handler panics"
    );
    assert!(client_stats.contains("in_flight: 0"), "{client_stats}");

    let half = rss.len() / 2;
    let first_max = *rss[..half].iter().max().unwrap();
    let last = *rss.last().unwrap();
    let second_slope = slope(&rss[half..]);
    let growth_limit = first_max + first_max / 20 + GROWTH_SLACK_KIB;
    eprintln!(
        "soak: RSS first-half max {:.1} MiB, last {:.1} MiB (limit {:.1} MiB), second-half slope {second_slope:.1} KiB/s (limit {MAX_SLOPE_KIB_PER_S})",
        first_max as f64 / 1024.0,
        last as f64 / 1024.0,
        growth_limit as f64 / 1024.0,
    );
    let heap_slope = median_slope(&heap[WARMUP_SAMPLES.min(heap.len() - 2)..]);
    eprintln!(
        "soak: live heap {:.2}..{:.2} MiB, median pairwise slope {heap_slope:.1} KiB/s (limit {MAX_HEAP_SLOPE_KIB_PER_S})",
        *heap.iter().min().unwrap() as f64 / 1024.0,
        *heap.iter().max().unwrap() as f64 / 1024.0,
    );
    assert!(
        heap_slope <= MAX_HEAP_SLOPE_KIB_PER_S,
        "live heap keeps growing: {heap_slope:.1} KiB/s; samples (KiB): {heap:?}"
    );
    assert!(
        second_slope <= MAX_SLOPE_KIB_PER_S || last <= growth_limit,
        "RSS keeps growing: second-half slope {second_slope:.1} KiB/s and last sample {last} KiB \
         over the first half's max {first_max} KiB + 10 % + {GROWTH_SLACK_KIB} KiB; samples (KiB): {rss:?}"
    );
}
