//! Tests of the runtime as a whole: its cores' scheduling order, builder
//! validation, start-up and shutdown, on real cores (not pinned).

use super::*;

/// Tasks that yield take turns in the order they were woken (the run
/// queue is first in, first out; that a task woken during a turn waits
/// for the next one is what `tests/concurrency.rs`'s spinner test pins).
#[test]
fn tasks_that_yield_take_turns_in_the_order_they_were_woken() {
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let log = rt
        .block_on(0, || async {
            let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let tasks: Vec<_> = ['a', 'b']
                .into_iter()
                .map(|name| {
                    let log = log.clone();
                    io::spawn(async move {
                        for _ in 0..3 {
                            log.borrow_mut().push(name);
                            io::yield_now().await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            let log = log.borrow().iter().collect::<String>();
            log
        })
        .unwrap();
    assert_eq!(log, "ababab");
    rt.shutdown();
}

/// A task that runs while others of its turn are still to run sees the
/// core as busy (what decides that a writer submits its send at once).
#[test]
fn the_rest_of_a_turns_batch_counts_as_ready_work() {
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let seen = rt
        .block_on(0, || async {
            let first = io::spawn(async { executor::has_ready_tasks() });
            let second = io::spawn(async {});
            let seen = first.await.unwrap();
            second.await.unwrap();
            seen
        })
        .unwrap();
    assert!(seen, "the second task was still to run");
    rt.shutdown();
}

/// A task woken while nothing is queued for the kernel runs in the same turn
/// (same turn clock) as the task that woke it, chain after chain up to
/// `MAX_CHAINED_BATCHES`; a longer chain goes on in the next turn. (Before
/// chained batches every link of the chain saw a turn of its own.)
#[test]
fn woken_tasks_run_in_the_same_turn_while_the_kernel_has_nothing_to_do() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let clocks = rt
        .block_on(0, || async {
            let clocks = Rc::new(RefCell::new(Vec::new()));
            // Task i records its turn's clock and spawns task i + 1 (a spawn
            // is a wake: the new task is queued for the next batch).
            fn link(i: usize, last: usize, clocks: Rc<RefCell<Vec<Instant>>>) {
                io::spawn(async move {
                    clocks.borrow_mut().push(executor::turn_now());
                    if i < last {
                        link(i + 1, last, clocks);
                    }
                })
                .detach();
            }
            link(0, 2 * executor::MAX_CHAINED_BATCHES + 1, clocks.clone());
            while clocks.borrow().len() < 2 * executor::MAX_CHAINED_BATCHES + 2 {
                io::yield_now().await;
            }
            clocks.take()
        })
        .unwrap();
    // Lengths of the runs of tasks that saw the same turn clock.
    let mut runs = vec![1usize];
    for pair in clocks.windows(2) {
        if pair[0] == pair[1] {
            *runs.last_mut().unwrap() += 1;
        } else {
            runs.push(1);
        }
    }
    let longest = runs.iter().max().copied().unwrap_or(0);
    assert_eq!(
        longest,
        executor::MAX_CHAINED_BATCHES + 1,
        "a turn runs its batch and then up to MAX_CHAINED_BATCHES chained ones: {runs:?}"
    );
    assert!(
        runs.len() >= 2,
        "a longer chain goes on in a later turn: {runs:?}"
    );
    rt.shutdown();
}

#[test]
fn work_runs_on_the_chosen_core() {
    let rt = Runtime::builder().cores(2).pin(false).build().unwrap();
    for core in 0..2 {
        assert_eq!(
            rt.block_on(core, || async { current_core() }).unwrap(),
            Some(core)
        );
    }
    assert!(matches!(
        rt.spawn_on(5, || async {}),
        Err(Error::NoSuchCore { core: 5, cores: 2 })
    ));
    assert!(matches!(
        rt.block_on(2, || async {}),
        Err(Error::NoSuchCore { core: 2, cores: 2 })
    ));
    assert!(rt.remote(2).is_none() && rt.ring_flags(2).is_none());
    rt.shutdown();
}

#[test]
fn busy_polling_cores_run_work_and_shut_down() {
    let rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .busy_poll(Some(Duration::from_micros(200)))
        .build()
        .unwrap();
    let slept = rt.block_on(0, || async {
        let t = Instant::now();
        io::sleep(Duration::from_millis(2)).await;
        t.elapsed()
    });
    assert!(slept.unwrap() >= Duration::from_millis(2));
    rt.shutdown();
}

/// A reader that woke a caller, which wakes the writer, arms its next
/// receive only after both ran; a task that never stops yielding holds it
/// back for at most `MAX_TURNS_BEFORE_RECEIVE` turns.
#[test]
fn a_receive_waits_for_the_tasks_it_woke_but_not_forever() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let order = rt.block_on(0, || async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let (caller_log, writer_log) = (log.clone(), log.clone());
        let caller = io::spawn(async move {
            caller_log.borrow_mut().push("caller");
            io::spawn(async move { writer_log.borrow_mut().push("writer") }).detach();
        });
        caller.detach();
        io::sends_first().await;
        log.borrow_mut().push("receive");
        log.take()
    });
    assert_eq!(order.unwrap(), ["caller", "writer", "receive"]);

    let turns = rt.block_on(0, || async {
        let spins = Rc::new(Cell::new(0usize));
        let seen = spins.clone();
        let spinner = io::spawn(async move {
            loop {
                seen.set(seen.get() + 1);
                io::yield_now().await;
            }
        });
        io::sends_first().await;
        let turns = spins.get();
        drop(spinner);
        turns
    });
    assert_eq!(turns.unwrap(), io::MAX_TURNS_BEFORE_RECEIVE);
    rt.shutdown();
}

#[test]
fn builders_refuse_settings_that_cannot_work() {
    let config_error = |b: RuntimeBuilder| matches!(b.build(), Err(Error::Config(_)));
    assert!(config_error(Runtime::builder().cpus([])));
    assert!(config_error(Runtime::builder().cores(1).ring_entries(0)));
    assert!(config_error(
        Runtime::builder().cores(1).ring_entries(1 << 20)
    ));
    assert!(config_error(
        Runtime::builder().cores(1).recv_buffers(Some((0, 4096)))
    ));
    assert!(config_error(Runtime::builder().cpus([100_000])));
    assert!(config_error(
        Runtime::builder()
            .cores(1)
            .stall_threshold(Some(std::time::Duration::ZERO))
    ));
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    assert!(rt.ring_flags(0).is_some());
    assert!(rt.ring_flags(1).is_none());
    assert!(format!("{rt:?}").contains("ring_flags"));
}

#[test]
fn a_panicking_task_reports_shutdown_and_the_core_survives() {
    let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let r = rt.block_on(0, || async { panic!("boom") });
    assert!(matches!(r, Err(Error::Shutdown)));
    assert_eq!(rt.block_on(0, || async { 7 }).unwrap(), 7);
}
