//! The cluster example (examples/cluster) as a test: three replicas behind a
//! cluster client, one stopped mid-way.

#[path = "../examples/cluster/replicas.rs"]
mod replicas;

use std::sync::Mutex;

use ringrpc::Runtime;

#[test]
fn the_cluster_example_spreads_calls_and_fails_over_a_stopped_replica() {
    let server_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let handles = replicas::serve_replicas(&server_rt, 3).unwrap();
    let addrs: Vec<_> = handles.iter().map(|h| h.local_addr()).collect();
    let mut handles = handles.into_iter();
    let victim = Mutex::new(handles.next());
    let client_rt = Runtime::builder().cores(1).pin(false).build().unwrap();
    let report = client_rt
        .block_on(0, move || {
            replicas::demo(addrs, 500, move || {
                let replica = victim.lock().unwrap().take().unwrap();
                std::thread::spawn(move || replica.abort());
            })
        })
        .unwrap()
        .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.before.iter().sum::<u64>(), 500);
    assert_eq!(report.after.iter().sum::<u64>(), 500);
    assert_eq!(report.stats.calls, 1000, "{report:?}");
    assert!(
        report.before.iter().filter(|&&n| n > 0).count() >= 2,
        "{report:?}"
    );
    // The stopped replica answers nothing once it is gone (a call or two may
    // still have been answered before the abort took effect).
    assert!(report.after[0] < 50, "{report:?}");
    assert!(report.after[1] + report.after[2] > 450, "{report:?}");
    let text = client_rt.metrics().to_prometheus();
    assert!(text.contains("ringrpc_endpoint_calls_total{core=\"0\",endpoint=\""));
    for h in handles {
        h.shutdown(std::time::Duration::from_millis(100));
    }
}
