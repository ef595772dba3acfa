//! A minimal ringrpc server: `cargo run --example echo_server [ADDR]`.
//!
//! Serves `Echo.echo` on ADDR (default 127.0.0.1:7070), prints the address and
//! runs until killed. Pair it with `cargo run --example echo_client ADDR`.

use ringrpc::{Method, Runtime, Server};

/// The request and response message (the client declares the same type).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Echo {
    text: String,
}

/// The method, shared by name and types with the client.
const ECHO: Method<Echo, Echo> = Method::new("Echo.echo");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7070".into());
    let runtime = Runtime::builder().cores(1).pin(false).build()?;
    let server = Server::builder()
        // A sync handler reads the archived request in place, without parsing it.
        .register(ECHO, |req: &ArchivedEcho| -> Result<Echo, String> {
            Ok(Echo {
                text: format!("echo: {}", req.text),
            })
        })?
        .serve(&runtime, addr.parse()?)?;
    println!("listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
