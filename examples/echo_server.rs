//! A minimal ringrpc server: `cargo run --example echo_server [ADDR]`.
//!
//! Serves the echo method of the benchmark workload (`Bench.echo`, the
//! `ringrpc-workload` crate's [`Echo`] message) on ADDR (default
//! 127.0.0.1:7070), prints the address and runs until killed. Pair it with
//! `cargo run --example echo_client ADDR`, or load it with
//! `ringrpc bench --connect ADDR`.

use ringrpc::{Runtime, Server};
use ringrpc_workload::echo::{ArchivedEcho, Echo, ECHO};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7070".into());
    let runtime = Runtime::builder().cores(1).pin(false).build()?;
    let server = Server::builder()
        .insecure_plaintext()
        // A sync handler reads the archived request in place, without parsing it.
        .register(ECHO, |req: &ArchivedEcho| -> Result<Echo, String> {
            let payload = req.payload.as_slice().to_vec();
            Ok(Echo {
                id: req.id.to_native(),
                payload,
            })
        })?
        .serve(&runtime, addr.parse()?)?;
    // io_uring, or epoll where the kernel refuses it (RINGRPC_DRIVER=epoll forces it).
    println!(
        "listening on {} (driver {})",
        server.local_addr(),
        runtime.driver().kind
    );
    loop {
        std::thread::park();
    }
}
