//! TLS in the connection core (feature `tls`; run with
//! `cargo test --features tls --test tls`): mutual TLS round trips with the
//! peer identity in `Ctx`, clients refused by reason (no certificate, unknown
//! CA, expired, a server name it does not serve) while a legitimate client
//! keeps calling, the authorization hook, handshake slowloris and garbage, a
//! forged and a truncated record after the handshake, certificate reload, and
//! `Blob` requests (copied into the records: no segments under TLS). Every
//! certificate is made at test time (rcgen).

mod common;
mod tls_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    base_server, client_builder, raw_connect, text_for, wait_until, Msg, TestClient, TestServer,
    ECHO,
};
use ringrpc::metrics::ServerCounts;
use ringrpc::{Ctx, Denied, Error, Method, Runtime};
use tls_support::{stranger, Identity, Pki, CLIENT_SPIFFE};

/// Answers with what the server knows of the caller's TLS identity.
const WHOAMI: Method<Msg, Msg> = Method::new("Tls.whoami");

fn whoami(ctx: &Ctx, _req: &common::ArchivedMsg) -> Result<Msg, String> {
    let id = ctx.peer_identity().ok_or("no identity")?;
    Ok(Msg {
        id: id.dns_names().len() as u64,
        text: format!("{}|{}", id.subject(), id.spiffe_id().unwrap_or("-")),
    })
}

fn tls_server(pki: &Pki) -> TestServer {
    TestServer::start(
        base_server()
            .register_with_ctx(WHOAMI, whoami)
            .expect("register whoami")
            .tls(pki.server_config()),
    )
}

fn tls_client(pki: &Pki, identity: Option<&Identity>, addr: SocketAddr) -> TestClient {
    let builder = client_builder()
        .tls(pki.client_config(identity), "localhost")
        .expect("server name");
    TestClient::connect_with(builder, addr)
}

/// Reads one counter of a server's merged metrics.
type Counter = fn(&ServerCounts) -> u64;

fn server_counts(server: &TestServer) -> ServerCounts {
    server.rt.metrics().merged().server
}

#[test]
fn mutual_tls_round_trip_shows_the_client_identity_to_the_handler() {
    let pki = Pki::new();
    let server = tls_server(&pki);
    let client = tls_client(&pki, Some(&pki.client), server.addr());
    for id in 0..50 {
        let reply = client.echo(id).expect("echo over mTLS");
        assert_eq!(reply.text, text_for(id));
    }
    let me = client
        .run(|c| async move {
            let reply = c
                .call(
                    &WHOAMI,
                    &Msg {
                        id: 0,
                        text: String::new(),
                    },
                )
                .await?;
            Ok::<_, Error>((reply.id.to_native(), reply.text.as_str().to_owned()))
        })
        .expect("whoami");
    assert_eq!(me.0, 1, "one DNS SAN");
    assert_eq!(me.1, format!("CN=client|{CLIENT_SPIFFE}"));
    let counts = server_counts(&server);
    assert_eq!(counts.tls_handshakes, 1);
    assert_eq!(counts.handshaking, 0);
}

/// A client runtime that calls echo once and returns the outcome.
/// Many calls in flight with payloads of several records each, from the
/// first flight on: the first ones reach the server with the client's
/// Finished (rustls's record layer), the rest after the hand-over to
/// ringrpc's own, and a record is often cut between two receives.
#[test]
fn large_batches_cross_the_hand_over_to_the_own_record_layer_intact() {
    let pki = Pki::new();
    let server = tls_server(&pki);
    let client = tls_client(&pki, Some(&pki.client), server.addr());
    let failures = client.run(|c| async move {
        let calls = (0..128u64).map(|id| {
            let c = c.clone();
            ringrpc::runtime::io::spawn(async move {
                let mut failed = 0;
                for round in 0..8u64 {
                    let text = format!("{id}-{round}-").repeat(400 + (id as usize % 7) * 300);
                    let req = Msg { id, text };
                    match c.call(&common::ECHO, &req).await {
                        Ok(reply) if reply.text.as_str() == req.text => {}
                        _ => failed += 1,
                    }
                }
                failed
            })
        });
        let mut failed = 0;
        for call in calls.collect::<Vec<_>>() {
            failed += call.await.unwrap_or(8);
        }
        failed
    });
    assert_eq!(failures, 0, "every large call echoed over TLS");
    let counts = server_counts(&server);
    assert_eq!(counts.tls_record_errors, 0);
}

fn one_call(pki: &Pki, identity: Option<&Identity>, addr: SocketAddr) -> Result<Msg, Error> {
    let rt = Runtime::builder().cores(1).pin(false).build().expect("rt");
    let cfg = pki.client_config(identity);
    rt.block_on(0, move || async move {
        let client = client_builder()
            .deadline(Duration::from_millis(500))
            .tls(cfg, "localhost")?
            .connect(addr)?;
        let msg = Msg {
            id: 7,
            text: text_for(7),
        };
        let reply = client.call(&ECHO, &msg).await?;
        Ok(Msg {
            id: reply.id.to_native(),
            text: reply.text.as_str().to_owned(),
        })
    })
    .expect("client core")
}

#[test]
fn clients_without_a_valid_certificate_are_refused_by_reason_and_others_keep_calling() {
    let pki = Pki::new();
    let server = tls_server(&pki);
    let legit = tls_client(&pki, Some(&pki.client), server.addr());
    let expired = pki.sign("old", &["old.test"], &[], true);
    let foreign = stranger();
    let cases: [(&str, Option<&Identity>, Counter); 3] = [
        ("no certificate", None, |c| c.tls_failed_no_certificate),
        ("unknown CA", Some(&foreign), |c| c.tls_failed_unknown_ca),
        ("expired", Some(&expired), |c| c.tls_failed_expired),
    ];
    for (what, identity, counter) in cases {
        let before = counter(&server_counts(&server));
        let outcome = one_call(&pki, identity, server.addr());
        assert!(
            outcome.is_err(),
            "{what}: the call must fail, got {outcome:?}"
        );
        wait_until(Duration::from_secs(2), what, || {
            counter(&server_counts(&server)) > before
        });
        for id in 0..10 {
            assert_eq!(
                legit.echo(id).expect("legit client").text,
                text_for(id),
                "{what}"
            );
        }
    }
    let counts = server_counts(&server);
    assert_eq!(counts.tls_failed_garbage, 0);
    assert_eq!(
        legit.stats().reconnects,
        0,
        "the legit connection never dropped"
    );
}

#[test]
fn a_server_name_the_server_does_not_serve_is_refused_as_bad_sni() {
    let pki = Pki::new();
    let config = ringrpc::tls::require_server_names(pki.server_config(), &["localhost"]);
    let server = TestServer::start(base_server().tls(config));
    let legit = tls_client(&pki, Some(&pki.client), server.addr());
    let rt = Runtime::builder().cores(1).pin(false).build().expect("rt");
    let cfg = pki.client_config(Some(&pki.client));
    let addr = server.addr();
    let outcome = rt
        .block_on(0, move || async move {
            let client = client_builder()
                .deadline(Duration::from_millis(500))
                .tls(cfg, "other.test")?
                .connect(addr)?;
            let msg = Msg {
                id: 1,
                text: String::new(),
            };
            client.call(&ECHO, &msg).await.map(|_| ())
        })
        .expect("client core");
    assert!(outcome.is_err(), "{outcome:?}");
    wait_until(Duration::from_secs(2), "bad SNI counted", || {
        server_counts(&server).tls_failed_bad_sni >= 1
    });
    assert_eq!(legit.echo(3).expect("legit").text, text_for(3));
}

#[test]
fn the_authorization_hook_denies_one_method_allows_another_and_counts_per_method() {
    let pki = Pki::new();
    let server =
        TestServer::start(base_server().tls(pki.server_config()).authorize(|req| {
            match (req.method(), req.identity()) {
                ("Test.echo", Some(id)) if id.spiffe_id() == Some(CLIENT_SPIFFE) => Ok(()),
                _ => Err(Denied::new("not for you")),
            }
        }));
    let client = tls_client(&pki, Some(&pki.client), server.addr());
    assert_eq!(client.echo(1).expect("allowed").text, text_for(1));
    let denied = client.run(|c| async move {
        let rec = common::Record {
            id: 3,
            name: "n".into(),
            note: String::new(),
            numbers: vec![1],
            groups: vec![],
            inner: common::Inner {
                names: vec![],
                flag: false,
            },
            small: 1,
            signed: -1,
            big: 2,
            maybe: None,
        };
        c.call(&common::ECHO_RECORD, &rec).await.map(|_| ())
    });
    match denied {
        Err(Error::PermissionDenied(msg)) => assert_eq!(msg, "not for you"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(!Error::PermissionDenied(String::new()).is_retryable());
    let merged = server.rt.metrics().merged();
    assert_eq!(merged.server.permission_denied, 1);
    let per_method = merged
        .server_methods
        .iter()
        .find(|m| m.name == "Test.echo_record")
        .expect("method counted");
    assert_eq!(per_method.denied, 1);
    let text = server.rt.metrics().to_prometheus();
    assert!(text
        .contains("ringrpc_server_method_permission_denied_total{method=\"Test.echo_record\"} 1"));
}

#[test]
fn a_handshake_slowloris_is_closed_at_the_deadline_and_garbage_closes_only_its_connection() {
    let pki = Pki::new();
    let server = TestServer::start(
        base_server()
            .tls(pki.server_config())
            .tls_handshake_timeout(Duration::from_millis(300)),
    );
    let legit = tls_client(&pki, Some(&pki.client), server.addr());
    // Slowloris: the first 3 bytes of a record header, then nothing.
    let mut slow = raw_connect(server.addr(), Duration::from_secs(3));
    slow.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let start = Instant::now();
    let mut sink = [0u8; 64];
    let n = slow.read(&mut sink).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(server_counts(&server).tls_failed_timeout, 1);
    // Garbage: an HTTP request on the TLS port.
    let mut junk = raw_connect(server.addr(), Duration::from_secs(3));
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = junk.read_to_end(&mut reply);
    assert_eq!(
        reply.first(),
        Some(&0x15),
        "a TLS alert record, then the close"
    );
    wait_until(Duration::from_secs(2), "garbage counted", || {
        server_counts(&server).tls_failed_garbage == 1
    });
    for id in 0..10 {
        assert_eq!(legit.echo(id).expect("legit").text, text_for(id));
    }
    assert_eq!(legit.stats().reconnects, 0);
}

/// A TCP connection that completed a mutual-TLS handshake with rustls itself
/// (so the test can then send raw records on it).
fn handshaken(pki: &Pki, addr: SocketAddr) -> std::net::TcpStream {
    use ringrpc::tls::rustls;
    let mut tcp = raw_connect(addr, Duration::from_secs(3));
    let cfg = pki.client_config(Some(&pki.client));
    let name = "localhost".try_into().expect("name");
    let mut tls = rustls::ClientConnection::new(cfg, name).expect("client");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("handshake");
    }
    // The client's Finished (and certificate) may still be queued.
    while tls.wants_write() {
        tls.write_tls(&mut tcp).expect("flush");
    }
    tcp
}

/// Reads until the peer closes (EOF or reset); false if it stays open.
fn closed_by_server(tcp: &mut std::net::TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match tcp.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_forged_record_and_a_truncated_record_close_only_their_connection() {
    let pki = Pki::new();
    // A record cut short is a partial frame to the read timeout.
    let server = TestServer::start(
        base_server()
            .tls(pki.server_config())
            .read_timeout(Duration::from_millis(300)),
    );
    let legit = tls_client(&pki, Some(&pki.client), server.addr());
    // A full application-data record whose bytes are not what the keys seal.
    let mut forged = handshaken(&pki, server.addr());
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    forged.write_all(&record).unwrap();
    assert!(closed_by_server(&mut forged), "forged record: still open");
    wait_until(Duration::from_secs(2), "record error counted", || {
        server_counts(&server).tls_record_errors == 1
    });
    // A record cut short, then the end of the stream: closed at the end of
    // the stream, or by the read timeout at the latest.
    let mut cut = handshaken(&pki, server.addr());
    cut.write_all(&record[..20]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut cut), "truncated record: still open");
    // A record cut short, the stream left open: the read timeout closes it.
    let mut stalled = handshaken(&pki, server.addr());
    stalled.write_all(&record[..20]).unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut stalled), "stalled record: still open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(server.stats().read_timeouts >= 1);
    for id in 0..10 {
        assert_eq!(legit.echo(id).expect("legit").text, text_for(id));
    }
    assert_eq!(legit.stats().reconnects, 0);
    wait_until(
        Duration::from_secs(2),
        "only the legit connection left",
        || server.stats().open_connections == 1,
    );
    assert_eq!(server_counts(&server).tls_handshakes, 4);
}

#[test]
fn handshakes_past_the_per_core_cap_are_refused_and_established_calls_go_on() {
    let pki = Pki::new();
    let server = TestServer::start(
        base_server()
            .register_with_ctx(WHOAMI, whoami)
            .expect("register whoami")
            .tls(pki.server_config())
            .max_handshakes_per_core(2),
    );
    let legit = tls_client(&pki, Some(&pki.client), server.addr());
    // A call: the legit connection's handshake is over (it holds no slot).
    assert_eq!(legit.echo(100).expect("legit").text, text_for(100));
    // Two handshakes that never finish hold both slots.
    let mut slow: Vec<_> = (0..2)
        .map(|_| {
            let mut s = raw_connect(server.addr(), Duration::from_secs(1));
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    wait_until(Duration::from_secs(2), "two handshakes running", || {
        server_counts(&server).handshaking == 2
    });
    let mut third = raw_connect(server.addr(), Duration::from_secs(2));
    let _ = third.write_all(&[0x16, 0x03, 0x01]);
    assert!(
        closed_by_server(&mut third),
        "the third handshake was let in"
    );
    assert_eq!(server_counts(&server).tls_refused, 1);
    for id in 0..5 {
        assert_eq!(legit.echo(id).expect("legit").text, text_for(id));
    }
    slow.clear();
    wait_until(Duration::from_secs(2), "slots free again", || {
        server_counts(&server).handshaking == 0
    });
    let again = one_call(&pki, Some(&pki.client), server.addr()).expect("room again");
    assert_eq!(again.text, text_for(7));
}

#[test]
fn a_plaintext_client_on_a_tls_port_fails_and_a_reloaded_config_applies_to_new_connections() {
    let pki = Pki::new();
    let server = tls_server(&pki);
    let plain = one_call_plain(server.addr());
    assert!(
        plain.is_err(),
        "plaintext frames are garbage to a TLS server"
    );
    // A new CA: after the reload, only clients of the new PKI get in.
    let next = Pki::new();
    server
        .handle()
        .reload_tls(next.server_config())
        .expect("reload");
    assert!(one_call(&pki, Some(&pki.client), server.addr()).is_err());
    let ok = one_call(&next, Some(&next.client), server.addr()).expect("new PKI");
    assert_eq!(ok.text, text_for(7));
}

fn one_call_plain(addr: SocketAddr) -> Result<Msg, Error> {
    let rt = Runtime::builder().cores(1).pin(false).build().expect("rt");
    rt.block_on(0, move || async move {
        let client = client_builder()
            .deadline(Duration::from_millis(500))
            .connect(addr)?;
        let reply = client
            .call(
                &ECHO,
                &Msg {
                    id: 1,
                    text: String::new(),
                },
            )
            .await?;
        Ok(Msg {
            id: reply.id.to_native(),
            text: String::new(),
        })
    })
    .expect("client core")
}

/// A request whose bytes a caller may send in a `Blob`.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Chunk {
    data: Vec<u8>,
}

/// [`Chunk`] with its bytes in a `Blob` (the same archive).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedChunk)]
struct BlobChunk {
    data: ringrpc::Blob,
}

/// Answers with the sum of the chunk's bytes.
const SUM: Method<Chunk, u64> = Method::new("Tls.sum");

fn sum(req: &ArchivedChunk) -> Result<u64, String> {
    Ok(req.data.iter().map(|&b| u64::from(b)).sum())
}

#[test]
fn blobs_under_tls_are_sealed_with_their_frames_and_arrive_intact() {
    let pki = Pki::new();
    let server = TestServer::start(
        base_server()
            .register(SUM, sum)
            .expect("register sum")
            .tls(pki.server_config()),
    );
    let client = tls_client(&pki, Some(&pki.client), server.addr());
    client.run(|c| async move {
        for len in [1024usize, 5000, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
            let req = BlobChunk {
                data: ringrpc::Blob::from(data),
            };
            let reply = c.call_borrowed(&SUM, &req).await.expect("sum over TLS");
            assert_eq!(reply.to_native(), want, "{len} bytes");
        }
    });
    assert_eq!(server_counts(&server).tls_record_errors, 0);
}
