//! Misbehaving raw TCP peers are disconnected one by one while a healthy client's
//! calls on its own connection keep succeeding; a frame trickled in one byte at a
//! time is still answered correctly.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    base_server, finish, text_for, wait_until, ArchivedMsg, Msg, TestClient, TestServer, ECHO,
};
use ringrpc::protocol::{decode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, HEADER_LEN};
use ringrpc::runtime::io::sleep;
use ringrpc::runtime::CoreTask;

const SERVER_MAX_FRAME: usize = 64 << 10;

fn start_server() -> TestServer {
    TestServer::start(base_server().max_frame(SERVER_MAX_FRAME))
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    common::raw_connect(addr, Duration::from_secs(3))
}

/// A valid echo request frame.
fn request_frame(call_id: u64, msg: &Msg) -> Vec<u8> {
    common::request_frame(call_id, ECHO.id(), msg)
}

/// Reads one frame; checks its digests (the server sends the data digest by
/// default) and returns its header and (aligned) payload.
fn read_frame(stream: &mut TcpStream) -> (FrameHeader, rkyv::util::AlignedVec) {
    let mut frame = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut frame).expect("read frame header");
    let head: &[u8; HEADER_LEN] = frame[..].try_into().unwrap();
    let header = FrameHeader::decode(head).expect("valid header");
    frame.resize(header.frame_len(), 0);
    stream
        .read_exact(&mut frame[HEADER_LEN..])
        .expect("read frame body");
    assert_eq!(
        decode_frame(
            &frame,
            DecodeOptions {
                require_data_digest: true,
                ..DecodeOptions::default()
            }
        ),
        Ok(Decoded::Frame(header)),
        "frame (with both digests) is valid"
    );
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&frame[HEADER_LEN..HEADER_LEN + header.len as usize]);
    (header, payload)
}

/// Checks a response frame echoes `msg` for `call_id`.
fn expect_echo(stream: &mut TcpStream, call_id: u64, msg: &Msg) {
    let (header, payload) = read_frame(stream);
    assert_eq!(header.kind, FrameKind::Response, "{header:?}");
    assert_eq!(header.call_id, call_id);
    let reply = rkyv::access::<ArchivedMsg, rkyv::rancor::Error>(&payload).expect("valid Msg");
    assert_eq!(reply.id.to_native(), msg.id);
    assert_eq!(reply.text.as_str(), msg.text);
}

/// Asserts the server closes `stream` (EOF or reset) without sending anything.
fn expect_closed_by_server(mut stream: TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Ok(n) => panic!(
            "{what}: server sent {n} bytes instead of closing: {:?}",
            &buf[..n]
        ),
        Err(e) => panic!("{what}: server did not close the connection: {e}"),
    }
}

/// A healthy client calling in a loop on the client core until stopped.
struct Load {
    ok: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: CoreTask<Vec<String>>,
}

impl Load {
    fn start(client: &TestClient) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, stop2) = (ok.clone(), stop.clone());
        let task = client.spawn(move |client| async move {
            let mut errors = Vec::new();
            let mut id = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                id += 1;
                let req = Msg {
                    id,
                    text: text_for(id),
                };
                match client.call(&ECHO, &req).await {
                    Ok(r) if r.id.to_native() == id && r.text.as_str() == req.text => {
                        ok2.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => errors.push(format!("call {id}: wrong reply id {}", r.id)),
                    Err(e) => errors.push(format!("call {id}: {e:?}")),
                }
                sleep(Duration::from_micros(500)).await;
            }
            errors
        });
        let load = Self { ok, stop, task };
        load.wait_for_more_calls(10);
        load
    }

    /// Waits (bounded) until `n` more calls have succeeded.
    fn wait_for_more_calls(&self, n: u64) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        wait_until(
            Duration::from_secs(3),
            "healthy calls keep succeeding",
            || self.ok.load(Ordering::SeqCst) >= target,
        );
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.task.join().expect("load task");
        assert!(errors.is_empty(), "healthy client saw errors: {errors:?}");
    }
}

/// Sends `bytes` on a raw connection and checks only that connection is dropped.
fn bad_peer_is_dropped_alone(what: &str, prelude: impl FnOnce(&mut TcpStream), bytes: &[u8]) {
    let server = start_server();
    let client = TestClient::connect(server.addr());
    let load = Load::start(&client);

    let mut raw = raw_connect(server.addr());
    prelude(&mut raw);
    raw.write_all(bytes).expect("send bad bytes");
    expect_closed_by_server(raw, what);
    wait_until(Duration::from_secs(2), "protocol_errors == 1", || {
        server.stats().protocol_errors == 1
    });
    wait_until(
        Duration::from_secs(2),
        "bad connection unregistered",
        || server.stats().open_connections == 1,
    );

    load.wait_for_more_calls(20);
    load.stop();
    let stats = client.stats();
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(stats.live_connections, 1, "{stats:?}");
    let s = server.stats();
    assert_eq!(s.accepted, 2, "{s:?}");
    assert_eq!(s.protocol_errors, 1, "{s:?}");
    finish(&client, &server);
}

#[test]
fn oversized_frame_header_closes_only_that_connection() {
    // A well-formed frame whose payload is far over the server's 64 KiB limit;
    // the server must give up after the header, without buffering the payload.
    let msg = Msg {
        id: 1,
        text: "x".repeat(1 << 20),
    };
    let frame = request_frame(1, &msg);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&frame[..HEADER_LEN]);
    let claimed = u32::from_le_bytes(header[24..28].try_into().unwrap()) as usize;
    assert!(claimed > SERVER_MAX_FRAME);
    bad_peer_is_dropped_alone("oversized frame", |_| {}, &frame[..HEADER_LEN + 4096]);
}

#[test]
fn corrupted_data_digest_closes_only_that_connection() {
    let good = Msg {
        id: 5,
        text: text_for(5),
    };
    let mut bad = request_frame(6, &good);
    bad[HEADER_LEN + 3] ^= 0x20; // flip a payload bit; the data digest no longer matches
    bad_peer_is_dropped_alone(
        "corrupted payload",
        |raw| {
            // The same connection first carries a valid call, which is answered.
            raw.write_all(&request_frame(5, &good)).unwrap();
            expect_echo(raw, 5, &good);
        },
        &bad,
    );
}

#[test]
fn corrupted_header_closes_that_connection_before_its_payload() {
    // A flipped length bit: the header digest fails at once, so the server does
    // not wait for the (never sent) payload, nor for its read timeout.
    let msg = Msg {
        id: 7,
        text: text_for(7),
    };
    let mut bad = request_frame(7, &msg);
    bad[25] ^= 0x01;
    bad_peer_is_dropped_alone("corrupted length", |_| {}, &bad[..HEADER_LEN]);
}

#[test]
fn garbage_bytes_close_only_that_connection() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut garbage: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    garbage[0] = 0xff; // never the "RR" magic
    bad_peer_is_dropped_alone("garbage", |_| {}, &garbage);
}

#[test]
fn frames_trickled_one_byte_at_a_time_are_answered() {
    let server = start_server();
    let client = TestClient::connect(server.addr());

    let first = Msg {
        id: 11,
        text: text_for(11),
    };
    let second = Msg {
        id: 12,
        text: "y".repeat(300),
    };
    let mut bytes = request_frame(0xdead_0001, &first);
    bytes.extend_from_slice(&request_frame(0xdead_0002, &second));

    let mut raw = raw_connect(server.addr());
    for (i, byte) in bytes.iter().enumerate() {
        raw.write_all(std::slice::from_ref(byte))
            .expect("write a byte");
        if i % 4 == 0 {
            // Give the server a chance to read partial headers and payloads.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    expect_echo(&mut raw, 0xdead_0001, &first);
    expect_echo(&mut raw, 0xdead_0002, &second);

    // The connection is still usable as a whole frame, too.
    let third = Msg {
        id: 13,
        text: text_for(13),
    };
    raw.write_all(&request_frame(0xdead_0003, &third)).unwrap();
    expect_echo(&mut raw, 0xdead_0003, &third);
    assert_eq!(server.stats().protocol_errors, 0);

    // The healthy client is unaffected.
    assert_eq!(client.echo(3).expect("healthy call").id, 3);
    drop(raw);
    wait_until(
        Duration::from_secs(2),
        "raw connection unregistered",
        || server.stats().open_connections == 1,
    );
    assert_eq!(client.stats().reconnects, 0);
    finish(&client, &server);
}

/// A request and the peer's FIN arriving together (one readiness event on
/// epoll): the request is answered and the end of stream is seen at once, not
/// when some timeout fires.
#[test]
fn a_request_followed_by_fin_is_answered_and_closed() {
    let server = start_server();
    let client = TestClient::connect(server.addr());
    for round in 0..5u64 {
        let msg = Msg {
            id: round,
            text: text_for(round),
        };
        let mut raw = raw_connect(server.addr());
        raw.write_all(&request_frame(0xfeed_0000 + round, &msg))
            .expect("write request");
        raw.shutdown(std::net::Shutdown::Write).expect("send FIN");
        expect_echo(&mut raw, 0xfeed_0000 + round, &msg);
        // raw_connect's read timeout (3 s) is far below the server's idle
        // timeout: a server that missed the FIN leaves this read hanging.
        expect_closed_by_server(raw, "after FIN");
        wait_until(
            Duration::from_secs(2),
            "half-closed connection unregistered",
            || server.stats().open_connections == 1,
        );
    }
    assert_eq!(server.stats().protocol_errors, 0);
    finish(&client, &server);
}
