//! The adaptive pool controller: grows a pool under pressure, shrinks it when idle.
//!
//! Every window it compares the pool's hit/miss counters with the previous
//! window. It adds one connection when the hit rate fell below the threshold or
//! every live connection is at its in-flight limit (up to the maximum). A
//! connection beyond the minimum (`pool_size`) that started no call for the idle
//! timeout is retired: it takes no new calls and closes once its last call has
//! completed, so shrinking never fails a call. Retired slots are reused when
//! the pool grows again.

use std::rc::Rc;
use std::time::Duration;

use super::pool::{PoolShared, SlotState};
use super::AdaptivePool;
use crate::runtime::io;

/// Idle bookkeeping for one slot.
#[derive(Clone, Copy, Default)]
struct Watch {
    last_started: u64,
    idle: Duration,
}

/// Runs for the pool's lifetime (cancelled when the pool closes).
pub(crate) async fn control(pool: Rc<PoolShared>, cfg: AdaptivePool) {
    let min = pool.cfg.pool_size.max(1);
    let max = cfg.max.max(min);
    let mut watches: Vec<Watch> = Vec::new();
    let (mut hits, mut misses) = (pool.counters.hits.get(), pool.counters.misses.get());
    loop {
        io::sleep(cfg.window).await;
        let (h, m) = (pool.counters.hits.get(), pool.counters.misses.get());
        let (dh, dm) = (h - hits, m - misses);
        (hits, misses) = (h, m);
        let active = active_slots(&pool);
        let low_hit_rate = dh + dm > 0 && (dh as f64) < cfg.min_hit_rate * (dh + dm) as f64;
        if active < max && (low_hit_rate || all_saturated(&pool)) {
            grow(&pool);
            tracing::debug!(size = active + 1, "adaptive pool grew");
            continue;
        }
        if active > min {
            shrink_idle(&pool, &mut watches, cfg, min);
        }
    }
}

fn active_slots(pool: &PoolShared) -> usize {
    let retiring = pool.retiring.borrow();
    let slots = pool.slots.borrow();
    slots
        .iter()
        .zip(retiring.iter())
        .filter(|(s, r)| !matches!(s, SlotState::Retired) && !**r)
        .count()
}

fn all_saturated(pool: &PoolShared) -> bool {
    let live = pool.live();
    !live.is_empty() && live.iter().all(|c| !c.has_room() && c.is_live())
}

fn grow(pool: &Rc<PoolShared>) {
    let free = pool
        .slots
        .borrow()
        .iter()
        .position(|s| matches!(s, SlotState::Retired));
    let index = free.unwrap_or_else(|| pool.slots.borrow().len());
    pool.start_slot(index);
}

/// Retires at most one idle surplus connection (the highest index first).
fn shrink_idle(pool: &PoolShared, watches: &mut Vec<Watch>, cfg: AdaptivePool, min: usize) {
    let slots = pool.slots.borrow();
    watches.resize(slots.len(), Watch::default());
    let mut victim = None;
    for (index, slot) in slots.iter().enumerate() {
        let SlotState::Live(conn) = slot else {
            watches[index] = Watch::default();
            continue;
        };
        let started = conn.calls_started();
        let watch = &mut watches[index];
        if started == watch.last_started && conn.in_flight() == 0 {
            watch.idle += cfg.window;
        } else {
            *watch = Watch {
                last_started: started,
                idle: Duration::ZERO,
            };
        }
        if index >= min && watch.idle >= cfg.idle_timeout && !pool.retiring.borrow()[index] {
            victim = Some((index, conn.clone()));
        }
    }
    drop(slots);
    if let Some((index, conn)) = victim {
        tracing::debug!(slot = index, "adaptive pool retiring an idle connection");
        pool.retiring.borrow_mut()[index] = true;
        watches[index] = Watch::default();
        conn.retire();
    }
}
