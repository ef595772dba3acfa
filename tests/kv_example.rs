//! The kv example (examples/kv) as a test: the typed service from
//! `#[ringrpc::service]`, per-core state and key routing, over loopback.

#[path = "../examples/kv/service.rs"]
mod service;

use ringrpc::Runtime;

#[test]
fn the_kv_example_stores_every_key_on_its_own_core() {
    let server_rt = Runtime::builder().cores(2).pin(false).build().unwrap();
    let server = service::serve(&server_rt).unwrap();
    assert_eq!(server.shard_addrs().len(), 2);
    assert_ne!(server.shard_addrs()[0], server.shard_addrs()[1]);
    let client_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let addrs = server.shard_addrs().to_vec();
    let per_core = client_rt
        .block_on(0, move || service::demo(addrs, 200))
        .unwrap()
        .unwrap();
    assert_eq!(per_core.iter().sum::<usize>(), 200);
    assert!(
        per_core.iter().all(|&n| n > 50),
        "both shards used: {per_core:?}"
    );
    server.shutdown(std::time::Duration::from_millis(100));
}

#[test]
fn a_key_sent_to_the_wrong_core_is_refused_by_the_service() {
    let server_rt = Runtime::builder().cores(2).pin(false).build().unwrap();
    let server = service::serve(&server_rt).unwrap();
    let client_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let addrs = server.shard_addrs().to_vec();
    let result = client_rt
        .block_on(0, move || async move {
            // Every key to core 0: the ones core 1 owns are refused.
            let c = ringrpc::Client::builder()
                .insecure_plaintext()
                .connect(addrs[0])
                .unwrap();
            let kv = service::KvClient::new(c);
            let mut refused = 0;
            for i in 0..20 {
                let key = format!("k{i}");
                if kv.get(&service::Key { key }).await.is_err() {
                    refused += 1;
                }
            }
            refused
        })
        .unwrap();
    assert!(result > 0 && result < 20, "{result}");
    server.shutdown(std::time::Duration::from_millis(100));
}
