//! A panic on a thread that owns a running server must unwind like any other
//! panic (so a failing assertion in a test is reported), not abort the process.
//!
//! Kept in its own test binary: if this regresses, the abort takes down only
//! this binary.

use std::time::{Duration, Instant};

use ringrpc::{Method, Runtime, Server};

const NOOP: Method<u64, u64> = Method::new("Test.noop");

#[test]
fn panic_while_owning_a_server_handle_unwinds_instead_of_aborting() {
    let outcome = std::thread::spawn(|| {
        let rt = Runtime::builder().cores(1).pin(false).build().unwrap();
        let server = Server::builder()
            .insecure_plaintext()
            .register(NOOP, |x: &rkyv::Archived<u64>| -> Result<u64, String> {
                Ok(x.to_native())
            })
            .unwrap()
            .serve(&rt, "127.0.0.1:0".parse().unwrap())
            .unwrap();
        // Make sure the server core task has run (accepted a connection) and is
        // parked again, so the stop signal has to wake it from this thread.
        let _peer = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let start = Instant::now();
        while server.stats().accepted == 0 {
            assert!(start.elapsed() < Duration::from_secs(2), "never accepted");
            std::thread::sleep(Duration::from_millis(1));
        }
        let _server = server;
        // Stands in for a failing assertion: unwinding drops the ServerHandle.
        std::panic::resume_unwind(Box::new("simulated test failure"));
    })
    .join();
    let payload = outcome.expect_err("the thread panicked");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"simulated test failure")
    );
}
