//! A sharded in-memory key-value store as a typed ringrpc service.
//!
//! `#[ringrpc::service]` turns the `Kv` trait (examples/kv/service.rs) into
//! method constants, a server registration (`KvService`) and a typed client
//! (`KvClient`); each server core owns a shard of the keys in its own state
//! (`with_state`, no locks) and listens on its own address
//! (`serve_sharded`), and the client sends each key to the core that owns it
//! (`ShardedClient`). Run with `cargo run --example kv`.

mod service;

use ringrpc::Runtime;

fn main() -> Result<(), ringrpc::Error> {
    let server_rt = Runtime::builder()
        .cores(2)
        .pin(false)
        .name("kv-server")
        .build()?;
    let server = service::serve(&server_rt)?;
    println!("kv: serving on {:?}", server.shard_addrs());
    let client_rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .name("kv-client")
        .build()?;
    let addrs = server.shard_addrs().to_vec();
    let per_core = client_rt.block_on(0, move || service::demo(addrs, 1000))??;
    println!("kv: 1000 keys stored and read back; keys per server core: {per_core:?}");
    server.shutdown(std::time::Duration::from_millis(100));
    Ok(())
}
