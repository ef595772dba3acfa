//! Stall detection: notices a core whose event loop stops turning.
//!
//! Each core's event loop publishes, into its [`Beat`], when its current turn
//! began, or that it is waiting in the kernel for completions (see
//! `runtime::io::observe_turns`): one clock read and one relaxed store per turn,
//! and no timer, so an idle core is never woken for this. A watchdog thread per
//! runtime checks every `threshold / 4`: a core that is not waiting and whose
//! turn began more than `threshold` ago is stuck in a task. It is reported once
//! per stall episode (a `tracing` warning naming the core, and its stall
//! counter), however long the stall lasts. Only the event loop and the watchdog
//! touch these atomics; no call does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::io::{self, TURN_WAITING};

/// One core's turn state, shared with the watchdog.
#[derive(Debug)]
pub(crate) struct Beat {
    turn_ns: Arc<AtomicU64>,
    stalls: AtomicU64,
}

impl Default for Beat {
    fn default() -> Self {
        Self {
            turn_ns: Arc::new(AtomicU64::new(TURN_WAITING)),
            stalls: AtomicU64::new(0),
        }
    }
}

impl Beat {
    /// Stalls reported for this core so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Runs on the core: makes its event loop publish its turns into this beat.
    pub fn attach_current_core(&self, base: Instant) {
        io::observe_turns(base, self.turn_ns.clone());
    }

    /// How long the core's current turn has lasted at `now_ns`, or `None` while
    /// the core waits in the kernel.
    fn turn_age(&self, now_ns: u64) -> Option<u64> {
        match self.turn_ns.load(Ordering::Relaxed) {
            TURN_WAITING => None,
            began => Some(now_ns.saturating_sub(began)),
        }
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
            match beat.turn_age(now) {
                Some(late) if late > limit => {
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
                }
                _ => *in_stall = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_core_has_no_turn_age_and_busy_core_ages() {
        let beat = Beat::default();
        assert_eq!(
            beat.turn_age(1_000_000),
            None,
            "a fresh core counts as waiting"
        );
        beat.turn_ns.store(400, Ordering::Relaxed);
        assert_eq!(beat.turn_age(1_000), Some(600));
        assert_eq!(beat.turn_age(100), Some(0), "clock skew never underflows");
        beat.turn_ns.store(TURN_WAITING, Ordering::Relaxed);
        assert_eq!(beat.turn_age(u64::MAX - 1), None);
    }

    #[test]
    fn idle_runtime_reports_no_stall() {
        let rt = crate::Runtime::builder()
            .cores(1)
            .pin(false)
            .stall_threshold(Some(Duration::from_millis(20)))
            .build()
            .unwrap();
        // Idle for 5× the threshold: a waiting core is never a stalled one.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rt.metrics().cores[0].stalls, 0);
        rt.block_on(0, || async {
            std::thread::sleep(Duration::from_millis(30))
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            rt.metrics().cores[0].stalls,
            1,
            "a 30 ms block is one stall"
        );
    }
}
