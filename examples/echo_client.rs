//! A minimal ringrpc client: `cargo run --example echo_client ADDR`.
//!
//! Calls the echo method of the benchmark workload (`Bench.echo`, the
//! `ringrpc-workload` crate's [`Echo`] message) a few times on the
//! `echo_server` example, or on `ringrpc serve --listen ADDR`, and prints the
//! replies.

use std::time::Duration;

use ringrpc::{Client, Runtime};
use ringrpc_workload::echo::{Echo, ECHO};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: echo_client ADDR")?
        .parse()?;
    let runtime = Runtime::builder().cores(1).pin(false).build()?;
    // Clients live on a core: the closure runs there and builds a !Send future.
    runtime.block_on(0, move || async move {
        let client = Client::builder()
            .insecure_plaintext()
            .deadline(Duration::from_secs(2))
            .connect(addr)
            .expect("connect on a ringrpc core");
        for id in 1..=3 {
            let req = Echo {
                id,
                payload: format!("hello #{id}").into_bytes(),
            };
            let reply = client.call(&ECHO, &req).await?;
            // Read in place in the receive buffer, no copy.
            let text = String::from_utf8_lossy(reply.payload.as_slice());
            println!("reply {}: {text}", reply.id);
        }
        Ok::<_, ringrpc::Error>(())
    })??;
    Ok(())
}
