//! Shared by the hostile-client tests (`tests/hostile*.rs`): a legitimate
//! client that keeps calling during an attack, raw-peer helpers, and process
//! readings (descriptors, RSS).

#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, text_for, Msg, TestClient, TestServer, ECHO};
use ringrpc::protocol::{FrameHeader, FrameKind, HEADER_LEN};
use ringrpc::runtime::CoreTask;

/// A client calling echo in a loop (1 ms apart) until told to stop.
pub struct Legit {
    pub client: TestClient,
    stop: Arc<AtomicBool>,
    task: CoreTask<(u64, Vec<String>)>,
}

impl Legit {
    pub fn start(addr: SocketAddr) -> Self {
        let client = TestClient::connect(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = client.spawn(move |c| async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            let mut id = 0;
            while !flag.load(Ordering::Relaxed) {
                id += 1;
                let msg = Msg {
                    id,
                    text: text_for(id),
                };
                match c.call(&ECHO, &msg).await {
                    Ok(reply) if reply.id == id => ok += 1,
                    Ok(_) => errors.push(format!("call {id}: someone else's reply")),
                    Err(e) => errors.push(format!("call {id}: {e}")),
                }
                ringrpc::runtime::io::sleep(Duration::from_millis(1)).await;
            }
            (ok, errors)
        });
        Self { client, stop, task }
    }

    /// Stops calling; asserts calls succeeded throughout with no error and at
    /// most one reconnect. Returns the calls made.
    pub fn finish(self, server: &TestServer) -> u64 {
        let (ok, client) = self.stop();
        common::finish(&client, server);
        ok
    }

    /// Stops calling; asserts calls succeeded throughout with no error and at
    /// most one reconnect. Returns the calls made and the (open) client.
    pub fn stop(self) -> (u64, TestClient) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, errors) = self.task.join().expect("legit caller");
        let stats = self.client.stats();
        assert!(errors.is_empty(), "legit client errors: {errors:?}");
        assert!(ok > 50, "legit client made only {ok} calls");
        assert!(stats.reconnects <= 1, "legit client reconnects: {stats:?}");
        assert_eq!(stats.in_flight, 0, "{stats:?}");
        (ok, self.client)
    }
}

pub fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A request header announcing a payload of `len` bytes (without the payload).
pub fn header_announcing(len: u32) -> [u8; HEADER_LEN] {
    let mut h = FrameHeader::new(FrameKind::Request).with_data_digest(false);
    h.call_id = 1;
    h.method = ECHO.id();
    h.len = len;
    let mut out = [0u8; HEADER_LEN];
    h.encode(0, &mut out);
    out
}

/// True once the peer has closed `stream` (EOF or reset) within `timeout`.
pub fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Samples the process's RSS every 5 ms until dropped; `peak()` is the highest.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(rss_bytes()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the tests of one binary one at a time, so descriptor and memory
/// readings are not moved by a neighbour test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
