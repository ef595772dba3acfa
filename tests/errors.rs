//! Handler errors and unknown methods reach the caller as typed remote errors.

mod common;

use std::time::Duration;

use common::{
    base_server, expect_remote, finish, text_for, ArchivedMsg, Msg, TestClient, TestServer,
};
use ringrpc::runtime::io::sleep;
use ringrpc::{Error, ErrorCode, Method, Request};

const FAIL_SYNC: Method<Msg, Msg> = Method::new("Test.fail_sync");
const FAIL_ASYNC: Method<Msg, Msg> = Method::new("Test.fail_async");
/// Never registered on the server.
const MISSING: Method<Msg, Msg> = Method::new("Nowhere.missing");

fn server() -> TestServer {
    TestServer::start(
        base_server()
            .register(FAIL_SYNC, |_: &ArchivedMsg| -> Result<Msg, &'static str> {
                Err("nope")
            })
            .unwrap()
            .register_async(FAIL_ASYNC, |req: Request<Msg>| async move {
                sleep(Duration::from_millis(1)).await;
                Err::<Msg, _>(format!("nope {}", req.id.to_native()))
            })
            .unwrap(),
    )
}

fn call(client: &TestClient, method: Method<Msg, Msg>, id: u64) -> Result<Msg, ringrpc::Error> {
    client.run(move |client| async move {
        client
            .call(
                &method,
                &Msg {
                    id,
                    text: text_for(id),
                },
            )
            .await
            .map(|r| r.to_owned().unwrap())
    })
}

#[test]
fn handler_error_reaches_the_caller_as_application_error() {
    let server = server();
    let client = TestClient::connect(server.addr());

    assert_eq!(
        expect_remote(call(&client, FAIL_SYNC, 1), ErrorCode::Application),
        "nope"
    );
    assert_eq!(
        expect_remote(call(&client, FAIL_ASYNC, 7), ErrorCode::Application),
        "nope 7"
    );
    // Errors do not disturb the connection.
    assert_eq!(client.echo(2).expect("echo after errors").id, 2);
    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    finish(&client, &server);
}

#[test]
fn unknown_method_is_refused_with_unknown_method() {
    let server = server();
    let client = TestClient::connect(server.addr());

    let message = expect_remote(call(&client, MISSING, 1), ErrorCode::UnknownMethod);
    assert!(!message.is_empty());
    assert_eq!(client.echo(2).expect("echo after unknown method").id, 2);
    assert_eq!(client.stats().reconnects, 0);
    assert_eq!(server.stats().protocol_errors, 0);
    finish(&client, &server);
}

#[test]
fn connecting_off_a_core_is_a_typed_error() {
    let result = ringrpc::Client::builder()
        .insecure_plaintext()
        .connect("127.0.0.1:9".parse().unwrap());
    assert!(matches!(result, Err(ringrpc::Error::NotOnCore)));
}

/// Archives a `u32` as itself, but deserialising it always fails: a type whose
/// `to_owned()` fails on a perfectly valid archive.
struct Refuse;

impl rkyv::with::ArchiveWith<u32> for Refuse {
    type Archived = rkyv::Archived<u32>;
    type Resolver = ();

    fn resolve_with(field: &u32, resolver: (), out: rkyv::Place<Self::Archived>) {
        rkyv::Archive::resolve(field, resolver, out);
    }
}

impl<S: rkyv::rancor::Fallible + ?Sized> rkyv::with::SerializeWith<u32, S> for Refuse {
    fn serialize_with(_: &u32, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

impl<D> rkyv::with::DeserializeWith<rkyv::Archived<u32>, u32, D> for Refuse
where
    D: rkyv::rancor::Fallible + ?Sized,
    D::Error: rkyv::rancor::Source,
{
    fn deserialize_with(_: &rkyv::Archived<u32>, _: &mut D) -> Result<u32, D::Error> {
        Err(rkyv::rancor::Source::new(std::io::Error::other(
            "refused on purpose",
        )))
    }
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Picky {
    #[rkyv(with = Refuse)]
    n: u32,
}

const PICKY: Method<Picky, Picky> = Method::new("Test.picky");

/// `Reply::to_owned` fails with a ringrpc error (`Error::Decode`), so `?`
/// works in a function returning `ringrpc::Error`; the reply itself was valid
/// and reads in place.
#[test]
fn a_reply_that_cannot_be_deserialised_is_a_decode_error() {
    let server = TestServer::start(
        base_server()
            .register(PICKY, |req: &ArchivedPicky| -> Result<Picky, String> {
                Ok(Picky {
                    n: req.n.to_native() + 1,
                })
            })
            .unwrap(),
    );
    let client = TestClient::connect(server.addr());
    /// `?` on `to_owned` in a function returning ringrpc's error.
    fn owned_n(reply: &ringrpc::Reply<Picky>) -> Result<u32, ringrpc::Error> {
        let picky = reply.to_owned()?;
        Ok(picky.n)
    }
    let (in_place, owned) = client
        .run(|client| async move {
            let reply = client.call(&PICKY, &Picky { n: 41 }).await?;
            Ok::<_, ringrpc::Error>((reply.n.to_native(), owned_n(&reply)))
        })
        .expect("the call itself succeeds");
    assert_eq!(in_place, 42);
    match owned {
        Err(e @ ringrpc::Error::Decode(_)) => {
            assert!(!e.is_retryable());
            // rancor keeps an error's text only with debug assertions on
            // (release builds say the decode failed, without why).
            if cfg!(debug_assertions) {
                assert!(e.to_string().contains("refused on purpose"), "{e}");
            }
        }
        other => panic!("expected Error::Decode, got {other:?}"),
    }
    finish(&client, &server);
}

/// A core index the runtime does not have is `NoSuchCore`, also in the core
/// list of `serve_on` (the cores already started are stopped again).
#[test]
fn serving_on_a_core_the_runtime_lacks_is_no_such_core() {
    let rt = ringrpc::Runtime::builder()
        .cores(1)
        .pin(false)
        .build()
        .expect("runtime");
    let result = base_server().serve_on(&rt, &[0, 3], "127.0.0.1:0".parse().unwrap());
    assert!(
        matches!(
            result,
            Err(ringrpc::Error::NoSuchCore { core: 3, cores: 1 })
        ),
        "{result:?}"
    );
    // Core 0 is free again: a server on it works.
    let server = base_server()
        .serve_on(&rt, &[0], "127.0.0.1:0".parse().unwrap())
        .expect("serve on core 0");
    server.shutdown(Duration::from_secs(1));
}
/// No silent plaintext: a server or client given neither `tls` nor
/// `insecure_plaintext` refuses to start, with a `Config` error naming both.
#[test]
fn a_server_or_client_without_a_chosen_transport_is_refused() {
    let rt = common::client_runtime();
    let served = ringrpc::Server::builder().serve(&rt, "127.0.0.1:0".parse().unwrap());
    match served {
        Err(Error::Config(msg)) => assert!(msg.contains("insecure_plaintext"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
    let connected = rt
        .block_on(0, || async {
            ringrpc::Client::builder()
                .connect("127.0.0.1:9".parse().unwrap())
                .map(|_| ())
        })
        .unwrap();
    match connected {
        Err(Error::Config(msg)) => assert!(msg.contains("insecure_plaintext"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
    // The choice made, both work (the last of tls / insecure_plaintext wins).
    let server = ringrpc::Server::builder()
        .insecure_plaintext()
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .expect("plaintext server");
    drop(server);
}
