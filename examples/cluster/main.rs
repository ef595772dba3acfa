//! A service with three replicas called through a [`ringrpc::cluster::Cluster`]:
//! power-of-two-choices balancing over peak-EWMA latency, a replica stopped
//! mid-way (its calls fail over, it is ejected), and the per-endpoint
//! metrics in Prometheus format. Run with `cargo run --example cluster`.

mod replicas;

use std::sync::Mutex;

use ringrpc::Runtime;

fn main() -> Result<(), ringrpc::Error> {
    let server_rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .name("replicas")
        .build()?;
    let replicas = replicas::serve_replicas(&server_rt, 3)?;
    let addrs: Vec<_> = replicas.iter().map(|r| r.local_addr()).collect();
    println!("cluster: replicas on {addrs:?}");
    // The replica the demo stops half-way (a handle is not `Clone`: hand it
    // over); dropping a handle stops its server, so the others are kept.
    let mut replicas = replicas.into_iter();
    let victim = Mutex::new(replicas.next());
    let _others: Vec<_> = replicas.collect();
    let client_rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .name("client")
        .build()?;
    let report = client_rt.block_on(0, move || {
        replicas::demo(addrs, 2000, move || {
            if let Some(replica) = victim.lock().expect("victim").take() {
                // Abort on another thread: it blocks until the replica's core
                // closed its connections, and this is the client's core.
                std::thread::spawn(move || replica.abort());
            }
        })
    })??;
    println!(
        "cluster: calls per replica before the stop {:?}, after {:?}",
        report.before, report.after
    );
    println!("cluster: {} failed; {:?}", report.failed, report.stats);
    for line in client_rt.metrics().to_prometheus().lines() {
        if line.starts_with("ringrpc_endpoint_calls_total")
            || line.starts_with("ringrpc_endpoint_ejections_total")
        {
            println!("  {line}");
        }
    }
    Ok(())
}
