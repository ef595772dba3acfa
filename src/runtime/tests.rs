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
