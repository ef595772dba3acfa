//! CPU time of a benchmark's own threads, and of whole CPUs.
//!
//! - [`ThreadSample`]: every thread of this process from `/proc/self/task/*`,
//!   assigned to the server or the client side by its name ([`Naming`]);
//!   io_uring workers (`iou-wrk-<tid>`, `iou-sqp-<tid>`) count for the thread
//!   `<tid>` they serve. CPU time comes from `schedstat` (ns, scheduler-exact;
//!   kernel work done in the thread's context, such as the loopback TCP path
//!   of its sends, counts too) or, where the kernel lacks it, from `stat`
//!   (utime + stime, in clock ticks). Two samples give each side's CPU time
//!   in between ([`ThreadSample::since`]); [`sample_window`] takes them at the
//!   edges of a measurement window.
//! - [`CpuBusy`]: whole-CPU busy time from `/proc/stat`, to tell whether
//!   something else on the machine competes for the benchmark CPUs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// Which side of the benchmark a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server's threads.
    Server,
    /// The client's threads.
    Client,
}

/// How thread names tell the two sides apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// ringrpc runtime core threads, named `{runtime}-{core}`: the server's
    /// runtime is `server`, the client's `client` (e.g. `bench-server-0`; the
    /// runtimes' other threads, such as `bench-server-watchdog`, do not count).
    Cores {
        /// Name of the server runtime.
        server: &'static str,
        /// Name of the client runtime.
        client: &'static str,
    },
    /// Any thread whose name contains `server` (first) or `client` (e.g.
    /// `srv` and `cli` for `tarpc-srv` and `peers-rr-cli-0`).
    Tags {
        /// Tag of the server threads.
        server: &'static str,
        /// Tag of the client threads.
        client: &'static str,
    },
}

impl Naming {
    /// The server's runtime name or tag.
    pub fn server(&self) -> &'static str {
        match *self {
            Naming::Cores { server, .. } | Naming::Tags { server, .. } => server,
        }
    }

    /// The client's runtime name or tag.
    pub fn client(&self) -> &'static str {
        match *self {
            Naming::Cores { client, .. } | Naming::Tags { client, .. } => client,
        }
    }

    /// The side the thread called `name` works for, if any (io_uring workers
    /// are matched to their owner separately).
    pub fn side_of(&self, name: &str) -> Option<Side> {
        let (server, client, is): (_, _, fn(&str, &str) -> bool) = match *self {
            Naming::Cores { server, client } => (server, client, is_core_of),
            Naming::Tags { server, client } => (server, client, |name, tag| name.contains(tag)),
        };
        if is(name, server) {
            Some(Side::Server)
        } else if is(name, client) {
            Some(Side::Client)
        } else {
            None
        }
    }
}

/// Whether `name` is `{runtime}-{digits}` (a core thread, not the watchdog).
fn is_core_of(name: &str, runtime: &str) -> bool {
    name.strip_prefix(runtime)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One classified thread in a [`ThreadSample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Thread {
    side: Side,
    /// An io_uring worker (they come and go; their exit loses nothing that matters).
    worker: bool,
    ran: Duration,
}

/// One reading of every thread of this process that belongs to a side.
#[derive(Debug, Clone)]
pub struct ThreadSample {
    at: Instant,
    threads: HashMap<u32, Thread>,
}

/// Each side's CPU time between two [`ThreadSample`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadCpu {
    /// Server threads alive in both samples (`None`: there were none).
    pub server: Option<Duration>,
    /// Client threads alive in both samples (`None`: there were none).
    pub client: Option<Duration>,
    /// Wall time between the samples.
    pub wall: Duration,
    /// Named threads (not io_uring workers) of the first sample gone by the
    /// second: their time since the first sample is lost.
    pub exited: usize,
}

/// CPU use of each side over a window, in shares of one CPU (1.0 = one CPU
/// fully busy); `None` for a side with no thread.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuShares {
    /// Server threads.
    pub server: Option<f64>,
    /// Client threads.
    pub client: Option<f64>,
}

impl ThreadCpu {
    /// CPU time over wall time, per side.
    pub fn shares(&self) -> CpuShares {
        let secs = self.wall.as_secs_f64();
        let share = |d: Option<Duration>| d.filter(|_| secs > 0.0).map(|d| d.as_secs_f64() / secs);
        CpuShares {
            server: share(self.server),
            client: share(self.client),
        }
    }
}

impl ThreadSample {
    /// Reads every thread of this process that belongs to a side under `naming`.
    pub fn now(naming: Naming) -> Self {
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
            threads: classify(&named, naming),
        }
    }

    /// Each side's CPU time between `earlier` and `self` (threads alive in both).
    pub fn since(&self, earlier: &ThreadSample) -> ThreadCpu {
        let mut out = ThreadCpu {
            wall: self.at.saturating_duration_since(earlier.at),
            ..ThreadCpu::default()
        };
        for (tid, then) in &earlier.threads {
            let Some(now) = self.threads.get(tid) else {
                out.exited += usize::from(!then.worker);
                continue;
            };
            let slot = match then.side {
                Side::Server => &mut out.server,
                Side::Client => &mut out.client,
            };
            *slot = Some(slot.unwrap_or_default() + now.ran.saturating_sub(then.ran));
        }
        out
    }
}

/// Sleeps until `start`, samples, sleeps until `end`, samples again, and
/// returns each side's CPU share between the two samples. Call it from a
/// thread that is not one of the sides while the measurement runs.
pub fn sample_window(start: Instant, end: Instant, naming: Naming) -> CpuShares {
    sleep_until(start);
    let first = ThreadSample::now(naming);
    sleep_until(end);
    ThreadSample::now(naming).since(&first).shares()
}

/// Sleeps until `t` (returns at once if it has passed).
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Assigns threads to sides by name; io_uring workers follow their owner.
fn classify(named: &[(u32, String, Duration)], naming: Naming) -> HashMap<u32, Thread> {
    let owners: HashMap<u32, Side> = named
        .iter()
        .filter_map(|(tid, name, _)| naming.side_of(name).map(|s| (*tid, s)))
        .collect();
    named
        .iter()
        .filter_map(|(tid, name, ran)| {
            let thread = |side, worker| Thread {
                side,
                worker,
                ran: *ran,
            };
            if let Some(side) = owners.get(tid) {
                return Some((*tid, thread(*side, false)));
            }
            let owner = name
                .strip_prefix("iou-wrk-")
                .or_else(|| name.strip_prefix("iou-sqp-"))?;
            let side = owners.get(&owner.parse().ok()?)?;
            Some((*tid, thread(*side, true)))
        })
        .collect()
}

/// CPU time of the thread at `path` (`/proc/self/task/<tid>`).
fn cpu_time(path: &Path) -> Option<Duration> {
    if let Ok(text) = std::fs::read_to_string(path.join("schedstat")) {
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(path.join("stat")).ok()?;
    ticks_from_stat(&stat).map(ticks)
}

/// `n` clock ticks as a duration.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / USER_HZ)
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

/// Busy time of each CPU since boot, from `/proc/stat`.
#[derive(Debug, Clone, Default)]
pub struct CpuBusy {
    busy: Vec<Duration>,
}

impl CpuBusy {
    /// Reads `/proc/stat`; empty when unavailable.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(&text)
    }

    /// The busy time of every `cpuN` line of a `/proc/stat` text.
    fn parse(text: &str) -> Self {
        let mut busy = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(index) = fields
                .next()
                .and_then(|name| name.strip_prefix("cpu"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            if busy.len() <= index {
                busy.resize(index + 1, Duration::ZERO);
            }
            busy[index] = ticks(at(0) + at(1) + at(2) + at(5) + at(6));
        }
        Self { busy }
    }

    /// Busy time of `cpu` between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuBusy, cpu: usize) -> Option<Duration> {
        let now = self.busy.get(cpu)?;
        let then = earlier.busy.get(cpu)?;
        Some(now.saturating_sub(*then))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: Naming = Naming::Cores {
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
        let map = classify(&named, CORES);
        assert_eq!(map.len(), 3);
        assert_eq!(map[&10].side, Side::Server);
        assert_eq!((map[&13].side, map[&13].worker), (Side::Client, true));
    }

    #[test]
    fn tags_match_anywhere_in_the_name() {
        let tags = Naming::Tags {
            server: "srv",
            client: "cli",
        };
        assert_eq!(tags.side_of("peers-rr-srv-0"), Some(Side::Server));
        assert_eq!(tags.side_of("tarpc-cli"), Some(Side::Client));
        assert_eq!(tags.side_of("main"), None);
        assert_eq!(CORES.side_of("bench-client-12"), Some(Side::Client));
        assert_eq!(CORES.side_of("bench-client-"), None);
    }

    fn thread(side: Side, worker: bool, ms: u64) -> Thread {
        Thread {
            side,
            worker,
            ran: Duration::from_millis(ms),
        }
    }

    #[test]
    fn shares_are_cpu_time_over_wall_time_and_exits_are_counted() {
        let t0 = Instant::now();
        let first = ThreadSample {
            at: t0,
            threads: HashMap::from([
                (1, thread(Side::Server, false, 100)),
                (2, thread(Side::Client, false, 100)),
                (3, thread(Side::Client, true, 5)),
            ]),
        };
        let mut last = ThreadSample {
            at: t0 + Duration::from_secs(2),
            threads: HashMap::from([
                (1, thread(Side::Server, false, 1100)),
                (2, thread(Side::Client, false, 600)),
            ]),
        };
        let used = last.since(&first);
        assert_eq!(used.exited, 0, "an io_uring worker's exit does not count");
        let shares = used.shares();
        assert_eq!(shares.server, Some(0.5));
        assert_eq!(shares.client, Some(0.25));
        last.threads.remove(&2);
        let used = last.since(&first);
        assert_eq!((used.exited, used.client), (1, None));
    }

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 1 1 0 -1 4194304 99 0 0 0 17 3 0 0 20 0 1 0 1 1 1";
        assert_eq!(ticks_from_stat(stat), Some(20));
    }

    #[test]
    fn cpu_busy_sums_the_busy_columns() {
        let text = "cpu  1 1 1 1 1 1 1\ncpu0 100 0 50 900 7 10 5 0\ncpu1 0 0 0 1000 0 0 0 0\n";
        let (then, now) = (CpuBusy::default(), CpuBusy::parse(text));
        assert_eq!(now.since(&CpuBusy::parse(text), 0), Some(Duration::ZERO));
        assert_eq!(now.busy, vec![ticks(165), ticks(0)]);
        assert_eq!(now.since(&then, 0), None);
    }
}
