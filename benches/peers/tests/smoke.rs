//! Every peer of the `peers` bench completes a short run without errors
//! (a cheap check that `cargo test` keeps the bench workable).

use std::time::Duration;

use ringrpc_peers::{Spec, Window, PEERS};

#[test]
fn every_peer_echoes() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for in_flight in [1, 8] {
        for (name, run) in PEERS {
            let spec = Spec {
                in_flight,
                payload: 64,
                server_cpu: 0,
                client_cpu: cpus.min(2) - 1,
            };
            let window = Window::after(Duration::from_millis(20), Duration::from_millis(100));
            let tally = run(&spec, window).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tally.errors, 0, "{name}: {:?}", tally.first_error);
            assert!(tally.calls() > 0, "{name}: no calls recorded");
        }
    }
}
