//! CPU time of the benchmark's own threads over a measurement window, for the
//! "CPU µs per call" columns of `--csv` and `--json`.
//!
//! Same idea as `benches/peers/src/cpu.rs`: read every thread of this process
//! from `/proc/self/task/*`, classify it by name, and sum the CPU time of each
//! side between two samples. Server threads are the runtime cores named
//! `{server}-{core}` (e.g. `bench-server-0`), client threads `{client}-{core}`;
//! io_uring workers (`iou-wrk-<tid>`, `iou-sqp-<tid>`) count for the thread
//! `<tid>` they serve. CPU time comes from `schedstat` (ns) or, where the
//! kernel lacks it, from `stat` (utime + stime, in clock ticks).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::measure::Window;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// Thread-name prefixes of the two sides (`"bench-server"`, `"bench-client"`).
#[derive(Debug, Clone, Copy)]
pub struct Sides {
    /// Runtime name of the server cores.
    pub server: &'static str,
    /// Runtime name of the client cores.
    pub client: &'static str,
}

/// CPU use of each side over a window, in shares of one CPU (1.0 = one CPU
/// fully busy); `None` for a side with no thread in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuShares {
    /// Server threads.
    pub server: Option<f64>,
    /// Client threads.
    pub client: Option<f64>,
}

/// Which side a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// One reading of every classified thread: tid → (side, CPU time).
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    threads: HashMap<u32, (Side, Duration)>,
}

/// Sleeps until `window.start`, samples, sleeps until `window.end`, samples
/// again, and returns each side's CPU share between the two samples. Call it
/// from a thread that is not one of the sides while the measurement runs.
pub fn sample_window(window: &Window, sides: Sides) -> CpuShares {
    sleep_until(window.start);
    let first = Sample::now(sides);
    sleep_until(window.end);
    let last = Sample::now(sides);
    last.shares_since(&first)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

impl Sample {
    /// Reads every thread of this process that belongs to a side.
    fn now(sides: Sides) -> Self {
        let at = Instant::now();
        let mut named: Vec<(u32, String, Duration)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let path = entry.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if let Some(ran) = cpu_time(&path) {
                    named.push((tid, comm.trim().to_string(), ran));
                }
            }
        }
        Self {
            at,
            threads: classify(&named, sides),
        }
    }

    /// Each side's CPU share between `earlier` and `self` (threads alive in both).
    fn shares_since(&self, earlier: &Sample) -> CpuShares {
        let secs = (self.at - earlier.at).as_secs_f64();
        let mut used: [Option<Duration>; 2] = [None, None];
        for (tid, &(side, then)) in &earlier.threads {
            let Some(&(_, now)) = self.threads.get(tid) else {
                continue;
            };
            let slot = &mut used[side as usize];
            *slot = Some(slot.unwrap_or_default() + now.saturating_sub(then));
        }
        let share = |d: Option<Duration>| d.filter(|_| secs > 0.0).map(|d| d.as_secs_f64() / secs);
        CpuShares {
            server: share(used[Side::Server as usize]),
            client: share(used[Side::Client as usize]),
        }
    }
}

/// Assigns threads to sides by name; io_uring workers follow their owner.
fn classify(named: &[(u32, String, Duration)], sides: Sides) -> HashMap<u32, (Side, Duration)> {
    let side_of = |name: &str| {
        if is_core_of(name, sides.server) {
            Some(Side::Server)
        } else if is_core_of(name, sides.client) {
            Some(Side::Client)
        } else {
            None
        }
    };
    let owners: HashMap<u32, Side> = named
        .iter()
        .filter_map(|(tid, name, _)| side_of(name).map(|s| (*tid, s)))
        .collect();
    named
        .iter()
        .filter_map(|(tid, name, ran)| {
            let side = side_of(name).or_else(|| {
                let owner = name
                    .strip_prefix("iou-wrk-")
                    .or_else(|| name.strip_prefix("iou-sqp-"))?;
                owners.get(&owner.parse().ok()?).copied()
            })?;
            Some((*tid, (side, *ran)))
        })
        .collect()
}

/// Whether `name` is `{runtime}-{digits}` (a core thread, not the watchdog).
fn is_core_of(name: &str, runtime: &str) -> bool {
    name.strip_prefix(runtime)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// CPU time of the thread at `path` (`/proc/self/task/<tid>`).
fn cpu_time(path: &std::path::Path) -> Option<Duration> {
    if let Ok(text) = std::fs::read_to_string(path.join("schedstat")) {
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(path.join("stat")).ok()?;
    ticks_from_stat(&stat).map(|t| Duration::from_millis(t * 1000 / USER_HZ))
}

/// utime + stime (fields 14 and 15) of a `/proc/*/stat` line, in clock ticks.
fn ticks_from_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields resume after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDES: Sides = Sides {
        server: "bench-server",
        client: "bench-client",
    };

    #[test]
    fn core_threads_and_their_io_uring_workers_are_classified() {
        let ms = Duration::from_millis;
        let named = [
            (10, "bench-server-0".to_string(), ms(5)),
            (11, "bench-client-1".to_string(), ms(7)),
            (12, "bench-server-wa".to_string(), ms(1)),
            (13, "iou-wrk-11".to_string(), ms(2)),
            (14, "main".to_string(), ms(3)),
        ];
        let map = classify(&named, SIDES);
        assert_eq!(map.len(), 3);
        assert_eq!(map[&10], (Side::Server, ms(5)));
        assert_eq!(map[&13], (Side::Client, ms(2)));
    }

    #[test]
    fn shares_are_cpu_time_over_wall_time() {
        let t0 = Instant::now();
        let sample = |at, server_ms, client_ms| Sample {
            at,
            threads: HashMap::from([
                (1, (Side::Server, Duration::from_millis(server_ms))),
                (2, (Side::Client, Duration::from_millis(client_ms))),
            ]),
        };
        let first = sample(t0, 100, 100);
        let last = sample(t0 + Duration::from_secs(2), 1100, 600);
        let shares = last.shares_since(&first);
        assert_eq!(shares.server, Some(0.5));
        assert_eq!(shares.client, Some(0.25));
    }

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 1 1 0 -1 4194304 99 0 0 0 17 3 0 0 20 0 1 0 1 1 1";
        assert_eq!(ticks_from_stat(stat), Some(20));
    }
}
