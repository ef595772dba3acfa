//! CPU time accounting for the `peers` bench.
//!
//! - [`ThreadSample`]: CPU time of this process's server-side and client-side
//!   threads, from `/proc/self/task/*/schedstat` (ns, scheduler-exact; kernel
//!   work done in the thread's context such as the loopback TCP path of its
//!   sends counts too). Threads are classified by name: every peer names its
//!   server threads `*srv*` and its client threads `*cli*`; io_uring workers
//!   (`iou-wrk-<tid>`, `iou-sqp-<tid>`) count for the thread `<tid>` they serve.
//! - [`CpuBusy`]: whole-CPU busy time from `/proc/stat`, to tell whether
//!   something else on the machine is competing for the benchmark CPUs.

use std::collections::HashMap;
use std::time::Duration;

/// Which side of the benchmark a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// CPU time of the server-side and client-side threads over some interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpu {
    /// Server threads (and their io_uring workers).
    pub server: Duration,
    /// Client threads (and their io_uring workers).
    pub client: Duration,
}

/// One sample of every classified thread of this process: (tid, side, io_uring worker?, CPU time).
#[derive(Debug, Clone, Default)]
pub struct ThreadSample {
    threads: Vec<(u32, Side, bool, Duration)>,
}

impl ThreadSample {
    /// Samples every live thread of this process.
    pub fn now() -> Self {
        let mut all: Vec<(u32, String, Duration)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let path = entry.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let Some(ran) = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                else {
                    continue;
                };
                all.push((tid, comm.trim().to_string(), Duration::from_nanos(ran)));
            }
        }
        let side_of_name = |name: &str| {
            if name.contains("srv") {
                Some(Side::Server)
            } else if name.contains("cli") {
                Some(Side::Client)
            } else {
                None
            }
        };
        let by_tid: HashMap<u32, Side> = all
            .iter()
            .filter_map(|(tid, name, _)| side_of_name(name).map(|s| (*tid, s)))
            .collect();
        let threads = all
            .iter()
            .filter_map(|(tid, name, ran)| {
                if let Some(side) = side_of_name(name) {
                    return Some((*tid, side, false, *ran));
                }
                let owner = name
                    .strip_prefix("iou-wrk-")
                    .or_else(|| name.strip_prefix("iou-sqp-"))?;
                let side = by_tid.get(&owner.parse().ok()?)?;
                Some((*tid, *side, true, *ran))
            })
            .collect();
        Self { threads }
    }

    /// CPU time used between `earlier` and `self` by threads alive in both;
    /// `None` if a named (non-io_uring-worker) thread of `earlier` has exited
    /// since, which would lose its time.
    pub fn since(&self, earlier: &ThreadSample) -> Option<ThreadCpu> {
        let mut out = ThreadCpu::default();
        for &(tid, side, worker, then) in &earlier.threads {
            let now = self.threads.iter().find(|t| t.0 == tid).map(|t| t.3);
            let Some(now) = now else {
                if worker {
                    continue;
                }
                return None;
            };
            let used = now.saturating_sub(then);
            match side {
                Side::Server => out.server += used,
                Side::Client => out.client += used,
            }
        }
        Some(out)
    }
}

/// Busy time of each CPU since boot, from `/proc/stat`.
#[derive(Debug, Clone, Default)]
pub struct CpuBusy {
    busy: Vec<Duration>,
}

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

impl CpuBusy {
    /// Reads `/proc/stat`; empty when unavailable.
    pub fn now() -> Self {
        let Ok(text) = std::fs::read_to_string("/proc/stat") else {
            return Self::default();
        };
        let mut busy = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            let Some(index) = name
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            let ticks = |i: usize| v.get(i).copied().unwrap_or(0);
            let used = ticks(0) + ticks(1) + ticks(2) + ticks(5) + ticks(6);
            if busy.len() <= index {
                busy.resize(index + 1, Duration::ZERO);
            }
            busy[index] = Duration::from_secs_f64(used as f64 / USER_HZ);
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
