//! Zero-copy sends (`SEND_ZC`) on both sides: large echoes round-trip intact,
//! and calls below the threshold still go through plain sends.
//!
//! Driver-aware: `SEND_ZC` is an io_uring operation. Under the epoll driver
//! (`RINGRPC_DRIVER=epoll`, the CI's second run) the setting is accepted and
//! has no effect, so the same echoes check that epoll's plain sends carry
//! the large and small frames intact; the test says which it checked.

mod common;

use std::net::SocketAddr;

use common::{base_server, text_for, Msg, ECHO};
use ringrpc::{Client, Driver, Runtime};

fn runtime() -> Runtime {
    Runtime::builder()
        .cores(1)
        .pin(false)
        .send_zc(Some(4096))
        .build()
        .expect("runtime")
}

#[test]
fn large_echoes_round_trip_over_zero_copy_sends() {
    let server_rt = runtime();
    let server = base_server()
        .serve(&server_rt, "127.0.0.1:0".parse().unwrap())
        .expect("serve");
    let addr: SocketAddr = server.local_addr();
    let client_rt = runtime();
    let driver = server_rt.driver().kind;
    assert_eq!(client_rt.driver().kind, driver);
    match driver {
        Driver::IoUring => eprintln!("send_zc: io_uring, sends of 4 KiB and more go zero-copy"),
        _ => eprintln!("send_zc: {driver} driver: SEND_ZC does not apply; plain sends checked"),
    }
    let checked = client_rt
        .block_on(0, move || async move {
            let client = Client::builder()
                .insecure_plaintext()
                .connect(addr)
                .expect("connect on a ringrpc core");
            let mut checked = 0;
            for id in 0..200u64 {
                // Alternate small (plain send) and large (zero-copy) requests.
                let text = if id % 2 == 0 {
                    text_for(id).repeat(1 + (id as usize % 7) * 2000)
                } else {
                    text_for(id)
                };
                let reply = client
                    .call(
                        &ECHO,
                        &Msg {
                            id,
                            text: text.clone(),
                        },
                    )
                    .await;
                let reply = reply.expect("echo");
                assert_eq!(reply.id.to_native(), id);
                assert_eq!(reply.text.as_str(), text, "call {id} came back intact");
                checked += 1;
            }
            client.close();
            checked
        })
        .expect("client core");
    assert_eq!(checked, 200);
    server.shutdown(std::time::Duration::from_secs(1));
}
