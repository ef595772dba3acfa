//! `Blob` fields over loopback: a request whose blobs are sent by reference
//! (1 KiB and up, on plaintext) reaches a handler declared with `Vec<u8>`
//! fields intact, at every size (one send, several sends, a partial
//! gathering send), many in one batch (past the kernel's iovec limit per
//! send), and when the caller gives up on a call whose blob is still queued;
//! a response with a blob (a responder handler's twin type) likewise; and a
//! method whose own request type has a `Blob` field.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use common::{base_server, finish, TestClient, TestServer};
use ringrpc::{Blob, Method, Responder, Sent};

/// What the server is sent: an id and some bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Chunk {
    id: u64,
    data: Vec<u8>,
}

/// The caller's twin of [`Chunk`]: the same archive, the bytes in a [`Blob`].
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedChunk)]
struct BlobChunk {
    id: u64,
    data: Blob,
}

/// What the server answers: the id, the length and a checksum of the bytes.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, PartialEq, Eq)]
struct Seen {
    id: u64,
    len: u64,
    sum: u64,
}

const SEE: Method<Chunk, Seen> = Method::new("Blobs.see");

/// An order-sensitive checksum (a swapped or shifted byte changes it).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn see(req: &ArchivedChunk) -> Result<Seen, String> {
    Ok(Seen {
        id: req.id.to_native(),
        len: req.data.len() as u64,
        sum: checksum(&req.data),
    })
}

/// What [`FETCH`] answers: a chunk of a stored blob.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Fetched {
    id: u64,
    data: Vec<u8>,
}

/// The server's twin of [`Fetched`], the bytes in a [`Blob`].
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedFetched)]
struct FetchedBlob {
    id: u64,
    data: Blob,
}

/// Answers `n` with the first `n` bytes of [`stored`].
const FETCH: Method<u64, Fetched> = Method::new("Blobs.fetch");

/// The blob [`FETCH`] serves from (made once, shared by every response).
fn stored() -> &'static Blob {
    static STORED: std::sync::OnceLock<Blob> = std::sync::OnceLock::new();
    STORED.get_or_init(|| Blob::from(bytes(1 << 20, 77)))
}

fn fetch(n: &rkyv::Archived<u64>, reply: Responder<'_, Fetched>) -> Result<Sent, String> {
    let n = (n.to_native() as usize).min(stored().len());
    let data = Blob::new(stored().as_bytes().slice(..n));
    Ok(reply.send(&FetchedBlob { id: n as u64, data }))
}

fn server() -> TestServer {
    let builder = base_server().register(SEE, see).expect("register");
    TestServer::start(builder.register_responder(FETCH, fetch).expect("register"))
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

#[test]
fn blobs_of_every_size_arrive_intact() {
    let server = server();
    let client = TestClient::connect(server.addr());
    client.run(|client| async move {
        for (i, len) in [0, 15, 1023, 1024, 1025, 4096 + 5, 64 << 10, (1 << 20) + 3]
            .into_iter()
            .enumerate()
        {
            let data = bytes(len, i as u64);
            let want = Seen {
                id: i as u64,
                len: len as u64,
                sum: checksum(&data),
            };
            let req = BlobChunk {
                id: i as u64,
                data: Blob::from(data),
            };
            let reply = client.call_borrowed(&SEE, &req).await.expect("call");
            let got = Seen {
                id: reply.id.to_native(),
                len: reply.len.to_native(),
                sum: reply.sum.to_native(),
            };
            assert_eq!(got, want, "{len} bytes");
        }
    });
    finish(&client, &server);
}

#[test]
fn many_blobs_in_flight_share_batches_and_arrive_intact() {
    let server = server();
    let client = TestClient::connect(server.addr());
    client.run(|client| async move {
        // 800 calls queued in one turn: one batch of 1,600+ pieces, more
        // than one gathering send may carry.
        let shared = Blob::from(bytes(2000, 9));
        let want = checksum(&shared);
        let reqs: Vec<BlobChunk> = (0..800)
            .map(|id| BlobChunk {
                id,
                data: shared.clone(),
            })
            .collect();
        let calls = reqs.iter().map(|req| client.call_borrowed(&SEE, req));
        for (id, reply) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            let reply = reply.expect("call");
            assert_eq!(reply.id.to_native(), id as u64);
            assert_eq!((reply.len.to_native(), reply.sum.to_native()), (2000, want));
        }
    });
    finish(&client, &server);
}

#[test]
fn a_call_given_up_while_its_blob_is_queued_harms_nothing() {
    let server = server();
    let client = TestClient::connect(server.addr());
    client.run(|client| async move {
        for round in 0..20u64 {
            let req = BlobChunk {
                id: round,
                data: Blob::from(bytes(256 << 10, round)),
            };
            {
                // Made (its frame queued, the blob referenced), then dropped
                // before the writer ran: the batch keeps the bytes alive.
                let mut call = pin!(client.call_borrowed(&SEE, &req));
                let mut cx = Context::from_waker(std::task::Waker::noop());
                assert!(matches!(call.as_mut().poll(&mut cx), Poll::Pending));
            }
            drop(req);
            let data = bytes(3000, round);
            let sum = checksum(&data);
            let req = BlobChunk {
                id: round,
                data: Blob::from(data),
            };
            let reply = client
                .call_borrowed(&SEE, &req)
                .await
                .expect("the next call");
            assert_eq!((reply.id.to_native(), reply.sum.to_native()), (round, sum));
        }
    });
    finish(&client, &server);
}

#[test]
fn responses_with_blobs_arrive_intact() {
    let server = server();
    let client = TestClient::connect(server.addr());
    client.run(|client| async move {
        let sizes = [0u64, 100, 1024, 4096 + 9, 200_000, 1 << 20];
        // One at a time, then all at once (one batch of several blobs).
        for n in sizes {
            let reply = client.call(&FETCH, &n).await.expect("fetch");
            assert_eq!(reply.id.to_native(), n);
            assert_eq!(reply.data.as_slice(), &stored()[..n as usize], "{n} bytes");
        }
        let calls = sizes.iter().map(|n| client.call(&FETCH, n));
        for (n, reply) in sizes
            .iter()
            .zip(futures_util::future::join_all(calls).await)
        {
            let reply = reply.expect("fetch");
            assert_eq!(reply.data.as_slice(), &stored()[..*n as usize], "{n} bytes");
        }
    });
    finish(&client, &server);
}

/// A method whose own request type has a `Blob` field (no twin type).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Upload {
    name: String,
    data: Blob,
}

const UPLOAD: Method<Upload, u64> = Method::new("Blobs.upload");

fn upload(req: &ArchivedUpload) -> Result<u64, String> {
    Ok(checksum(&req.data) ^ req.name.len() as u64)
}

#[test]
fn a_method_declared_with_a_blob_field_is_called_and_served_as_usual() {
    let server = TestServer::start(base_server().register(UPLOAD, upload).expect("register"));
    let client = TestClient::connect(server.addr());
    client.run(|client| async move {
        let data = Blob::from(bytes(10_000, 3));
        let want = checksum(&data) ^ 4;
        let req = Upload {
            name: "file".into(),
            data,
        };
        let reply = client.call(&UPLOAD, &req).await.expect("upload");
        assert_eq!(reply.to_native(), want);
    });
    finish(&client, &server);
}
