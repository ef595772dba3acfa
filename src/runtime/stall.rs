//! Stall detection: notices a core whose event loop stops turning.
//!
//! Each core's event loop publishes, into its [`Beat`], when its current turn
//! began, or that it is waiting in the kernel for completions (see
//! `runtime::io::observe_turns`): one clock read and one relaxed store per turn,
//! and no timer, so an idle core is never woken for this. A watchdog thread per
//! runtime looks at them: a core that is not waiting and whose turn began more
//! than `threshold` ago is stuck in a task. It is reported once per stall
//! episode (a `tracing` warning naming the core, and its stall counter),
//! however long the stall lasts. Only the event loop and the watchdog touch
//! these atomics; no call does.
//!
//! The watchdog wakes about once per `threshold`, not on a fixed fraction of
//! it: after each look it sleeps until the oldest turn in progress would reach
//! the threshold (a full `threshold` when every core waits or has just begun
//! a turn; never less than `threshold /` [`MIN_SLEEP_DIVISOR`]). A stall is
//! then seen within that margin of its threshold, and a busy runtime pays one
//! wake-up of this thread per threshold. Each wake-up of the watchdog
//! preempts a core thread when no CPU is idle: checking every `threshold / 4`
//! (400 wake-ups a second at 10 ms) cost ~5 % of calls/s at 128 calls in
//! flight on a 2-CPU VM (docs/benchmarks.md, "The stall watchdog's
//! wake-ups").

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
    let mut ages = Vec::with_capacity(beats.len());
    let mut sleep = threshold;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(sleep);
        let now = nanos_since(base);
        ages.clear();
        ages.extend(beats.iter().map(|beat| beat.turn_age(now)));
        sleep = next_sleep(&ages, limit);
        let looked = beats
            .iter()
            .zip(stalled.iter_mut())
            .zip(ages.iter().copied());
        for (core, ((beat, in_stall), age)) in looked.enumerate() {
            match age {
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

/// Bounds the watchdog's shortest sleep between two looks: never less than
/// `threshold / MIN_SLEEP_DIVISOR`.
const MIN_SLEEP_DIVISOR: u32 = 16;

/// How long the watchdog sleeps after a look that found these turn ages (ns;
/// `None` for a waiting core): until the oldest turn under `limit` would pass
/// it, or `limit` when no core is in a turn (or every turn in progress has
/// passed it already, so it is reported). Never less than
/// `limit / MIN_SLEEP_DIVISOR`, nor 0.
fn next_sleep(ages: &[Option<u64>], limit: u64) -> Duration {
    let until_limit = ages
        .iter()
        .flatten()
        .filter(|&&age| age <= limit)
        .map(|&age| limit - age + 1)
        .min()
        .unwrap_or(limit);
    let floor = (limit / u64::from(MIN_SLEEP_DIVISOR)).max(1);
    Duration::from_nanos(until_limit.max(floor))
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
    fn the_watchdog_sleeps_until_the_oldest_turn_would_reach_the_threshold() {
        let ms = |n: u64| n * 1_000_000;
        let limit = ms(10);
        assert_eq!(
            next_sleep(&[None, None], limit),
            Duration::from_millis(10),
            "all waiting"
        );
        assert_eq!(next_sleep(&[], limit), Duration::from_millis(10));
        assert_eq!(
            next_sleep(&[Some(ms(3)), None, Some(ms(1))], limit),
            Duration::from_nanos(ms(7) + 1),
            "the oldest turn in progress decides"
        );
        assert_eq!(
            next_sleep(&[Some(ms(10))], limit),
            Duration::from_nanos(ms(10) / 16),
            "a turn at the threshold: a short sleep, never a spin"
        );
        assert_eq!(
            next_sleep(&[Some(ms(25)), Some(ms(2))], limit),
            Duration::from_nanos(ms(8) + 1),
            "a stall already past the threshold does not shorten the sleep"
        );
        assert_eq!(
            next_sleep(&[Some(ms(25))], limit),
            Duration::from_millis(10),
            "a lasting stall is looked at once per threshold"
        );
        assert_eq!(
            next_sleep(&[Some(0)], 5),
            Duration::from_nanos(6),
            "tiny limits sleep > 0"
        );
        assert_eq!(next_sleep(&[None], 0), Duration::from_nanos(1));
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
