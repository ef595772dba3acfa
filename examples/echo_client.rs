//! A minimal ringrpc client: `cargo run --example echo_client ADDR`.
//!
//! Calls `Echo.echo` on the `echo_server` example a few times and prints the replies.

use std::time::Duration;

use ringrpc::{Client, Method, Runtime};

/// The request and response message (the server declares the same type).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Echo {
    text: String,
}

/// The method, shared by name and types with the server.
const ECHO: Method<Echo, Echo> = Method::new("Echo.echo");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: echo_client ADDR")?
        .parse()?;
    let runtime = Runtime::builder().cores(1).pin(false).build()?;
    // Clients live on a core: the closure runs there and builds a !Send future.
    runtime.block_on(0, move || async move {
        let client = Client::builder()
            .deadline(Duration::from_secs(2))
            .connect(addr)
            .expect("connect on a ringrpc core");
        for i in 1..=3 {
            let req = Echo {
                text: format!("hello #{i}"),
            };
            let reply = client.call(&ECHO, &req).await?;
            println!("reply: {}", reply.text); // read in place, no copy
        }
        Ok::<_, ringrpc::Error>(())
    })??;
    Ok(())
}
