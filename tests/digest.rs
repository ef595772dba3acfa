//! Data digest switches on loopback: on by default on both sides, off on both
//! sides for a trusted link, and a server that requires it closing (only) the
//! connection of a client that does not send it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    base_server, client_builder, finish, text_for, wait_until, Msg, TestClient, TestServer, ECHO,
};
use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};
use ringrpc::Error;

/// An echo request frame, with or without the data digest.
fn request_frame(call_id: u64, digest: bool) -> Vec<u8> {
    let msg = Msg {
        id: call_id,
        text: text_for(call_id),
    };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&msg).expect("serialise");
    let mut header = FrameHeader::new(FrameKind::Request).with_data_digest(digest);
    header.call_id = call_id;
    header.method = ECHO.id();
    let mut frame = Vec::new();
    encode_frame(&mut frame, header, &payload, DEFAULT_MAX_FRAME).expect("encode");
    frame
}

/// Sends an echo request on a raw connection; returns the reply's header.
fn raw_echo(raw: &mut TcpStream, call_id: u64, digest: bool) -> FrameHeader {
    raw.write_all(&request_frame(call_id, digest))
        .expect("send request");
    let mut frame = vec![0u8; HEADER_LEN];
    raw.read_exact(&mut frame).expect("reply header");
    let header = FrameHeader::decode(frame[..].try_into().unwrap()).expect("reply header");
    frame.resize(header.frame_len(), 0);
    raw.read_exact(&mut frame[HEADER_LEN..])
        .expect("reply body");
    assert_eq!(
        decode_frame(&frame, DecodeOptions::default()),
        Ok(Decoded::Frame(header))
    );
    assert_eq!(header.kind, FrameKind::Response, "{header:?}");
    assert_eq!(header.call_id, call_id);
    header
}

fn echo_ok(client: &TestClient, id: u64) {
    let reply = client.echo(id).expect("echo call");
    assert_eq!(reply.id, id);
    assert_eq!(reply.text, text_for(id));
}

#[test]
fn data_digest_is_on_by_default_on_both_sides() {
    let server = TestServer::echo();
    let client = TestClient::connect(server.addr());
    for id in 1..=20 {
        echo_ok(&client, id);
    }
    // Responses carry the digest; a request without one is still served.
    let mut raw = common::raw_connect(server.addr(), Duration::from_secs(2));
    assert!(raw_echo(&mut raw, 1, true).has_data_digest());
    assert!(raw_echo(&mut raw, 2, false).has_data_digest());
    drop(raw);
    finish_clean(&client, &server);
}

#[test]
fn data_digest_off_on_both_sides_works() {
    let server = TestServer::start(base_server().data_digest(false));
    let client = TestClient::connect_with(client_builder().data_digest(false), server.addr());
    for id in 1..=20 {
        echo_ok(&client, id);
    }
    let mut raw = common::raw_connect(server.addr(), Duration::from_secs(2));
    assert!(!raw_echo(&mut raw, 1, false).has_data_digest());
    drop(raw);
    finish_clean(&client, &server);
}

#[test]
fn a_client_without_the_digest_is_served_unless_the_server_requires_it() {
    // Not required (the default): a digest-less client is served.
    let server = TestServer::echo();
    let client = TestClient::connect_with(client_builder().data_digest(false), server.addr());
    for id in 1..=10 {
        echo_ok(&client, id);
    }
    assert_eq!(server.stats().protocol_errors, 0);
    finish(&client, &server);
    drop(server);

    // Required: a default client keeps working, the digest-less one's
    // connection is closed as a protocol error.
    let server = TestServer::start(base_server().require_data_digest(true));
    let good = TestClient::connect(server.addr());
    echo_ok(&good, 1);
    let bad = TestClient::connect_with(client_builder().data_digest(false), server.addr());
    match bad.echo(2) {
        Err(Error::ConnectionLost) => {}
        other => panic!("a call without the required digest: {other:?}"),
    }
    wait_until(Duration::from_secs(2), "protocol error counted", || {
        server.stats().protocol_errors >= 1
    });
    bad.close();
    drop(bad);
    for id in 3..=20 {
        echo_ok(&good, id);
    }
    let stats = good.stats();
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");

    // The same on a raw connection: a frame with the digest is answered, one
    // without closes the connection with nothing sent back.
    let errors = server.stats().protocol_errors;
    let mut raw = common::raw_connect(server.addr(), Duration::from_secs(2));
    assert!(raw_echo(&mut raw, 7, true).has_data_digest());
    raw.write_all(&request_frame(8, false)).expect("send");
    let mut buf = [0u8; 64];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => {}
        other => panic!("server did not just close: {other:?}"),
    }
    wait_until(Duration::from_secs(2), "raw protocol error counted", || {
        server.stats().protocol_errors == errors + 1
    });
    echo_ok(&good, 21);
    assert_eq!(good.stats().connections_lost, 0);
    finish(&good, &server);
}

/// No protocol error and no lost connection; once the raw connection the test
/// dropped is gone, the client finishes as usual.
fn finish_clean(client: &TestClient, server: &TestServer) {
    assert_eq!(server.stats().protocol_errors, 0);
    let stats = client.stats();
    assert_eq!(stats.connections_lost, 0, "{stats:?}");
    wait_until(Duration::from_secs(2), "raw connection closed", || {
        server.stats().open_connections == 1
    });
    finish(client, server);
}
