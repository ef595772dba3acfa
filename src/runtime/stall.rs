//! Stall detection: notices a core whose event loop stops turning.
//!
//! Each core runs a tiny beat task that stores the time every `threshold / 2`;
//! a watchdog thread per runtime checks the beats every `threshold / 4`. A core
//! whose beat is older than the threshold is reported once per stall episode (a
//! `tracing` warning naming the core, and its stall counter), however long the
//! stall lasts. Only the watchdog and the beat touch these atomics; no call does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::io;

/// One core's beat, shared with the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Beat {
    last_ns: AtomicU64,
    stalls: AtomicU64,
}

impl Beat {
    /// Stalls reported for this core so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }
}

/// Runs on a core: proves the loop turns by storing the time periodically.
pub(crate) async fn beat_task(beat: Arc<Beat>, base: Instant, period: Duration) {
    loop {
        beat.last_ns.store(nanos_since(base), Ordering::Relaxed);
        io::sleep(period).await;
    }
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The watchdog thread; stops and joins on drop.
pub(crate) struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching `beats` (core `i` is `beats[i]`); `runtime` names the
    /// runtime in warnings (its thread-name prefix).
    pub fn start(
        runtime: String,
        beats: Vec<Arc<Beat>>,
        base: Instant,
        threshold: Duration,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{runtime}-watchdog"))
            .spawn(move || watch(&runtime, &beats, base, threshold, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn watch(
    runtime: &str,
    beats: &[Arc<Beat>],
    base: Instant,
    threshold: Duration,
    stop: &AtomicBool,
) {
    let limit = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
    let mut stalled = vec![false; beats.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(threshold / 4);
        let now = nanos_since(base);
        for (core, (beat, in_stall)) in beats.iter().zip(stalled.iter_mut()).enumerate() {
            let last = beat.last_ns.load(Ordering::Relaxed);
            let late = now.saturating_sub(last);
            if late > limit && last != 0 {
                if !*in_stall {
                    *in_stall = true;
                    beat.stalls.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        runtime,
                        core,
                        stalled_ms = late / 1_000_000,
                        "core event loop stalled"
                    );
                }
            } else {
                *in_stall = false;
            }
        }
    }
}
