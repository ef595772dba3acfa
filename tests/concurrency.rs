//! 10,000 concurrent calls over one connection, answered out of order.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{base_server, finish, mix, text_for, Msg, TestClient, TestServer};
use ringrpc::runtime::io::{sleep, spawn};
use ringrpc::{Method, Request};

/// Echoes after a pseudo-random 0..5 ms delay derived from the request id.
const SHUFFLE: Method<Msg, Msg> = Method::new("Test.shuffle");

const CALLS: u64 = 10_000;

fn delay_for(id: u64) -> Duration {
    Duration::from_micros(mix(id) % 5_000)
}

#[test]
fn ten_thousand_concurrent_calls_on_one_connection_answered_out_of_order() {
    let server = TestServer::start(
        base_server()
            .register_async(SHUFFLE, |req: Request<Msg>| async move {
                let id = req.id.to_native();
                sleep(delay_for(id)).await;
                // Read the request again after the await: it must still be intact.
                Ok::<_, String>(Msg {
                    id,
                    text: req.text.as_str().to_owned(),
                })
            })
            .unwrap()
            // All 10,000 calls may be running in the handler at once.
            .max_in_flight_per_connection(CALLS as usize),
    );
    let builder = common::client_builder()
        .pool_size(1)
        .max_in_flight(10_000)
        .deadline(Duration::from_secs(8));
    let client = TestClient::connect_with(builder, server.addr());

    let (failures, order, peak) = client.run(|client| async move {
        let order = Rc::new(RefCell::new(Vec::with_capacity(CALLS as usize)));
        let peak = Rc::new(RefCell::new(0usize));
        let tasks: Vec<_> = (0..CALLS)
            .map(|id| {
                let (client, order, peak) = (client.clone(), order.clone(), peak.clone());
                spawn(async move {
                    let req = Msg {
                        id,
                        text: text_for(id),
                    };
                    let call = client.call(&SHUFFLE, &req);
                    let in_flight = client.stats().in_flight;
                    let result = call.await;
                    {
                        let mut p = peak.borrow_mut();
                        *p = (*p).max(in_flight);
                    }
                    let reply = result.map_err(|e| format!("call {id}: {e:?}"))?;
                    if reply.id.to_native() != id || reply.text.as_str() != req.text {
                        return Err(format!(
                            "call {id} got reply ({}, {:?})",
                            reply.id.to_native(),
                            reply.text.as_str()
                        ));
                    }
                    order.borrow_mut().push(id);
                    Ok(())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("task panicked".to_string()),
            }
        }
        let order = order.borrow().clone();
        let peak = *peak.borrow();
        (failures, order, peak)
    });

    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(order.len() as u64, CALLS);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert!(
        sorted.iter().copied().eq(0..CALLS),
        "every call completed once"
    );
    // The replies really came back out of order.
    let displaced = order
        .iter()
        .enumerate()
        .filter(|(i, id)| *i as u64 != **id)
        .count();
    assert!(
        displaced > (CALLS / 2) as usize,
        "only {displaced} replies out of order; the server did not reorder"
    );

    let stats = client.stats();
    assert_eq!(stats.live_connections, 1);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(stats.connections_lost, 0);
    assert_eq!(stats.timeouts, 0);
    assert_eq!(server.stats().accepted, 1, "all calls on one connection");
    assert!(
        peak > 1_000,
        "calls were not concurrent (peak in flight seen {peak})"
    );
    finish(&client, &server);
}

/// A core whose task never stops yielding still collects its replies: a busy
/// turn may leave arrived completions for the next enter, but only for one
/// turn (`runtime::driver::turn`), so the spinner cannot starve the receives.
#[test]
fn calls_complete_while_another_task_on_the_core_never_stops_yielding() {
    let server = TestServer::echo();
    let client = TestClient::connect(server.addr());
    let (took, spins) = client.run(|client| async move {
        let stop = Rc::new(std::cell::Cell::new(false));
        let spins = Rc::new(std::cell::Cell::new(0u64));
        let started = Instant::now();
        let spinner = {
            let (stop, spins) = (stop.clone(), spins.clone());
            // Gives up after 10 s, so a starved core fails the test instead
            // of hanging it.
            spawn(async move {
                while !stop.get() && started.elapsed() < Duration::from_secs(10) {
                    spins.set(spins.get() + 1);
                    ringrpc::runtime::io::yield_now().await;
                }
            })
        };
        for id in 0..200u64 {
            let msg = Msg {
                id,
                text: text_for(id),
            };
            let reply = client.call(&common::ECHO, &msg).await.expect("echo call");
            assert_eq!(reply.id.to_native(), id);
        }
        let took = started.elapsed();
        stop.set(true);
        let _ = spinner.await;
        (took, spins.get())
    });
    assert!(
        took < Duration::from_secs(5),
        "200 calls took {took:?} beside a spinning task"
    );
    assert!(spins > 200, "the spinner ran throughout ({spins} turns)");
    finish(&client, &server);
}
