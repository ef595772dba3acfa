//! Responder handlers (`ServerBuilder::register_responder`): the response may
//! borrow from the request (`SliceAsVec`, `StrAsString`) and arrives intact; an
//! error or panic before `send` reaches the caller as a remote error; after
//! `send` the response stands and no second frame is ever sent for the call.

mod common;

use common::{expect_remote, quiet_panics_with, TestClient, TestServer};
use ringrpc::{ErrorCode, Method, Server, SliceAsVec, StrAsString};

#[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Blob {
    id: u64,
    note: String,
    data: Vec<u8>,
}

/// Archives exactly as a `Blob`, borrowing its text and bytes.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedBlob, serialize_bounds(__S: ringrpc::BorrowSerializer))]
struct BlobRef<'a> {
    id: u64,
    #[rkyv(with = StrAsString, omit_bounds)]
    note: &'a str,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    data: &'a [u8],
}

impl<'a> BlobRef<'a> {
    fn echo(req: &'a ArchivedBlob) -> Self {
        Self {
            id: req.id.to_native(),
            note: req.note.as_str(),
            data: req.data.as_slice(),
        }
    }
}

/// Echoes the request, borrowing from it.
const ECHO: Method<Blob, Blob> = Method::new("Blobs.echo");
/// Fails before responding when `id` is odd.
const PICKY: Method<Blob, Blob> = Method::new("Blobs.picky");
/// Responds, then fails (`id` 0) or panics (`id` 1).
const LATE: Method<Blob, Blob> = Method::new("Blobs.late");
/// Panics before responding.
const BROKEN: Method<Blob, Blob> = Method::new("Blobs.broken");

const PANIC_TEXT: &str = "responder test panic";

fn blob(id: u64, len: usize) -> Blob {
    Blob {
        id,
        note: format!("note number {id}, long enough to live out of line"),
        data: (0..len).map(|i| (i as u64 * 31 + id) as u8).collect(),
    }
}

fn server() -> TestServer {
    let builder = Server::builder()
        .insecure_plaintext()
        .register_responder(ECHO, |req: &ArchivedBlob, reply| {
            Ok::<_, String>(reply.send(&BlobRef::echo(req)))
        })
        .and_then(|b| {
            b.register_responder(PICKY, |req: &ArchivedBlob, reply| {
                if req.id.to_native() % 2 == 1 {
                    return Err(format!("odd id {}", req.id));
                }
                Ok(reply.send(&BlobRef::echo(req)))
            })
        })
        .and_then(|b| {
            b.register_responder(LATE, |req: &ArchivedBlob, reply| {
                let _sent = reply.send(&BlobRef::echo(req));
                if req.id.to_native() == 1 {
                    panic!("{PANIC_TEXT}");
                }
                Err::<ringrpc::Sent, _>("failed after responding")
            })
        })
        .and_then(|b| {
            b.register_responder(BROKEN, |_: &ArchivedBlob, _reply| -> Result<_, String> {
                panic!("{PANIC_TEXT}")
            })
        })
        .expect("register");
    TestServer::start(builder)
}

fn call(
    client: &TestClient,
    method: Method<Blob, Blob>,
    req: Blob,
) -> Result<Blob, ringrpc::Error> {
    client.run(move |client| async move {
        let reply = client.call(&method, &req).await?;
        Ok(reply.to_owned().expect("deserialise reply"))
    })
}

#[test]
fn borrowed_responses_arrive_intact_at_every_size() {
    let server = server();
    let client = TestClient::connect(server.addr());
    for (id, len) in [(0, 0), (1, 1), (2, 64), (3, 4096), (4, 70_000)] {
        let sent = blob(id, len);
        let back = call(&client, ECHO, blob(id, len)).expect("echo");
        assert_eq!(back, sent, "payload of {len} bytes");
    }
    common::finish(&client, &server);
}

#[test]
fn errors_and_panics_before_send_reach_the_caller() {
    quiet_panics_with(PANIC_TEXT);
    let server = server();
    let client = TestClient::connect(server.addr());
    assert_eq!(
        call(&client, PICKY, blob(2, 8)).expect("even id"),
        blob(2, 8)
    );
    let message = expect_remote(call(&client, PICKY, blob(3, 8)), ErrorCode::Application);
    assert!(message.contains("odd id 3"), "{message}");
    expect_remote(call(&client, BROKEN, blob(4, 8)), ErrorCode::Panicked);
    common::finish(&client, &server);
}

#[test]
fn after_send_the_response_stands_and_nothing_else_is_sent() {
    quiet_panics_with(PANIC_TEXT);
    let server = server();
    let client = TestClient::connect(server.addr());
    // A failure, then a panic, each after its handler already responded.
    for id in [0, 1] {
        assert_eq!(
            call(&client, LATE, blob(id, 100)).expect("late"),
            blob(id, 100)
        );
    }
    // The connection is still in step: the next call gets its own answer.
    assert_eq!(call(&client, ECHO, blob(9, 10)).expect("echo"), blob(9, 10));
    let counts = server.rt.metrics().merged().server;
    assert_eq!(counts.ok, 3, "{counts:?}");
    assert_eq!(counts.app_errors + counts.panics, 0, "{counts:?}");
    let stats = client.stats();
    assert_eq!(stats.stale_replies, 0, "{stats:?}");
    common::finish(&client, &server);
}
