//! The record layer against rustls itself: what one seals the other opens,
//! in both directions, across any split of the byte stream.

use std::io::{Read, Write};

use rustls::{Connection, SupportedCipherSuite};

use super::*;

/// A finished handshake between a rustls client and a rustls server (both
/// with secret extraction on), from certificates made now.
fn handshake() -> (Connection, Connection) {
    let (server_cfg, client_cfg) = super::super::tls::tests::configs();
    handshake_between(server_cfg, client_cfg)
}

/// [`handshake`] between the configs given.
fn handshake_between(
    server_cfg: std::sync::Arc<rustls::ServerConfig>,
    client_cfg: std::sync::Arc<rustls::ClientConfig>,
) -> (Connection, Connection) {
    let name = "localhost".try_into().unwrap();
    let mut server = Connection::Server(rustls::ServerConnection::new(server_cfg).unwrap());
    let mut client = Connection::Client(rustls::ClientConnection::new(client_cfg, name).unwrap());
    // Stops when both are done: the server's session tickets, queued when
    // the client's Finished arrived, are still waiting in the server.
    loop {
        pump(&mut client, &mut server);
        if !client.is_handshaking() && !server.is_handshaking() {
            return (client, server);
        }
        pump(&mut server, &mut client);
    }
}

/// Moves every record `from` has to send into `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut input = &wire[..];
    while !input.is_empty() {
        to.read_tls(&mut input).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// Takes `conn`'s secrets over into a record layer.
fn take_over(conn: Connection) -> RecordLayer {
    let Some(SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
        panic!("TLS 1.3");
    };
    let limit = suite.common.confidentiality_limit;
    RecordLayer::new(conn.dangerous_extract_secrets().unwrap(), limit).unwrap()
}

/// Everything rustls has to send, as bytes.
fn sent_by(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Opens `wire` in pieces of `step` bytes, as a socket could deliver it.
fn open_in_pieces(layer: &mut RecordLayer, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
    let mut plain = RecvBuf::new(64 << 10);
    let (mut pending, mut closed) = (Vec::new(), false);
    for piece in wire.chunks(step) {
        pending.extend_from_slice(piece);
        let got = layer.open(&pending, &mut plain).unwrap();
        pending.drain(..got.consumed);
        closed |= got.peer_closed;
    }
    assert!(pending.is_empty(), "every record opened");
    (plain.unconsumed().to_vec(), closed)
}

#[test]
fn what_the_layer_seals_rustls_opens() {
    let (client, mut server) = handshake();
    let mut layer = take_over(client);
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    let mut wire = Vec::new();
    layer.seal(b"hello", &mut wire).unwrap();
    layer.seal(&big, &mut wire).unwrap();
    layer.seal(&[], &mut wire).unwrap();
    let mut input = &wire[..];
    let mut got = Vec::new();
    while !input.is_empty() {
        server.read_tls(&mut input).unwrap();
        server.process_new_packets().unwrap();
        // Until no more is buffered (rustls then says "would block").
        let _ = server.reader().read_to_end(&mut got);
    }
    assert_eq!(got.len(), 5 + big.len());
    assert_eq!(&got[..5], b"hello");
    assert_eq!(&got[5..], &big[..]);
}

#[test]
fn what_rustls_seals_the_layer_opens_across_any_split_ignoring_tickets() {
    let (client, mut server) = handshake();
    // The server's session tickets have not been read by the client yet:
    // they reach the layer first, which skips them.
    let tickets = sent_by(&mut server);
    assert!(
        !tickets.is_empty(),
        "rustls sends tickets after its handshake"
    );
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 13) as u8).collect();
    server.writer().write_all(b"frame").unwrap();
    server.writer().write_all(&big).unwrap();
    let mut wire = tickets;
    wire.extend(sent_by(&mut server));
    server.send_close_notify();
    wire.extend(sent_by(&mut server));
    let mut expected = b"frame".to_vec();
    expected.extend_from_slice(&big);
    let mut layer = take_over(client);
    let after = layer.rx.seq;
    let (plain, closed) = open_in_pieces(&mut layer, &wire, wire.len());
    assert_eq!(plain, expected);
    assert!(closed, "close_notify seen");
    assert!(layer.rx.seq > after + 2, "every record counted");
    for step in [1, 5, 17, 4096] {
        let (client, mut server) = handshake();
        let mut wire = sent_by(&mut server);
        server.writer().write_all(&big).unwrap();
        wire.extend(sent_by(&mut server));
        let (plain, _) = open_in_pieces(&mut take_over(client), &wire, step);
        assert_eq!(plain, big, "pieces of {step}");
    }
}

#[test]
fn a_record_cut_short_is_left_for_later() {
    let (client, mut server) = handshake();
    let tickets = sent_by(&mut server).len();
    server.writer().write_all(b"0123456789").unwrap();
    let wire = sent_by(&mut server);
    let mut layer = take_over(client);
    let mut plain = RecvBuf::new(4096);
    let got = layer.open(&wire[..wire.len() - 1], &mut plain).unwrap();
    assert_eq!(
        (got.consumed, got.plaintext),
        (0, 0),
        "the tickets were read already"
    );
    let mut layer = {
        let (client, mut server) = handshake();
        let mut all = sent_by(&mut server);
        server.writer().write_all(b"0123456789").unwrap();
        all.extend(sent_by(&mut server));
        let mut layer = take_over(client);
        let got = layer.open(&all[..all.len() - 1], &mut plain).unwrap();
        assert_eq!((got.consumed, got.plaintext), (tickets, 0), "tickets only");
        let got = layer.open(&all[tickets..], &mut plain).unwrap();
        assert_eq!((got.consumed, got.plaintext), (all.len() - tickets, 10));
        layer
    };
    assert_eq!(plain.unconsumed(), b"0123456789");
    let got = layer.open(&[], &mut plain).unwrap();
    assert_eq!(got, Opened::default());
}

#[test]
fn a_tampered_record_fails_to_open() {
    let (client, mut server) = handshake();
    let mut wire = sent_by(&mut server);
    server.writer().write_all(b"payload").unwrap();
    wire.extend(sent_by(&mut server));
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let mut plain = RecvBuf::new(4096);
    let mut layer = take_over(client);
    assert_eq!(layer.open(&wire, &mut plain), Err(RecordError::Decrypt));
    assert!(plain.unconsumed().is_empty());
}

#[test]
fn bad_headers_and_key_updates_are_refused() {
    let mut plain = RecvBuf::new(4096);
    for header in [
        [22u8, 3, 3, 0, 20],
        [23, 3, 1, 0, 20],
        [23, 3, 3, 0, 3],
        [23, 3, 3, 0x48, 0x01],
    ] {
        let (client, _) = handshake();
        let got = take_over(client).open(&header, &mut plain);
        assert_eq!(got, Err(RecordError::Malformed), "{header:?}");
    }
    // rustls asked to update its keys: the layer cannot follow.
    let (client, mut server) = handshake();
    let mut wire = sent_by(&mut server);
    server.refresh_traffic_keys().unwrap();
    wire.extend(sent_by(&mut server));
    let got = take_over(client).open(&wire, &mut plain);
    assert_eq!(got, Err(RecordError::Unsupported));
}

#[test]
fn nothing_is_sealed_past_the_limit_and_rotation_starts_at_half() {
    let (client, _) = handshake();
    let mut layer = take_over(client);
    let first = layer.tx.seq;
    layer.tx.limit = first + 4;
    let mut out = Vec::new();
    layer.seal(b"a", &mut out).unwrap();
    assert!(!layer.should_rotate() || first + 1 >= layer.tx.limit / 2);
    for _ in 0..3 {
        layer.seal(b"b", &mut out).unwrap();
    }
    assert!(layer.should_rotate());
    let before = out.len();
    assert_eq!(layer.seal(b"c", &mut out), Err(RecordError::Exhausted));
    assert_eq!(out.len(), before, "nothing sealed under a reused nonce");
}

#[test]
fn sealing_reuses_the_output_buffer() {
    let (client, _) = handshake();
    let mut layer = take_over(client);
    let mut out = Vec::with_capacity(1 << 16);
    let ptr = out.as_ptr();
    for _ in 0..100 {
        out.clear();
        layer.seal(&[7u8; 3000], &mut out).unwrap();
    }
    assert_eq!(out.as_ptr(), ptr, "no reallocation");
    assert_eq!(out.len(), 5 + 3000 + 1 + 16);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Bytes from the network that are not records sealed under the keys
    /// never panic the layer and never yield plaintext: a header or length TLS
    /// 1.3 does not allow, or a body that fails authentication, is an error;
    /// a record cut short waits.
    #[test]
    fn garbage_never_opens(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let mut layer = fresh_layer();
        let mut plain = RecvBuf::new(4096);
        match layer.open(&bytes, &mut plain) {
            Ok(got) => proptest::prop_assert_eq!((got.consumed, got.plaintext), (0, 0)),
            Err(e) => proptest::prop_assert!(matches!(e, RecordError::Malformed | RecordError::Decrypt)),
        }
        proptest::prop_assert!(plain.unconsumed().is_empty());
    }
}

/// A layer taken over from a new handshake.
fn fresh_layer() -> RecordLayer {
    take_over(handshake().0)
}

#[test]
fn an_inner_plaintext_over_the_record_limit_is_refused() {
    let (client, mut server) = handshake();
    let _tickets = sent_by(&mut server);
    let (mut tx, mut rx) = (take_over(client), take_over(server));
    // What seal never makes: 2^14 + 1 bytes of content, then the type.
    let mut inner = vec![7u8; MAX_PLAINTEXT + 1];
    inner.push(APPLICATION_DATA);
    let len = inner.len() + TAG_LEN;
    let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
    let nonce = tx.tx.next_nonce().unwrap();
    let tag = tx
        .tx
        .key
        .seal_in_place_separate_tag(nonce, Aad::from(header), &mut inner)
        .unwrap();
    let mut wire = header.to_vec();
    wire.extend_from_slice(&inner);
    wire.extend_from_slice(tag.as_ref());
    let mut plain = RecvBuf::new(64 << 10);
    assert_eq!(rx.open(&wire, &mut plain), Err(RecordError::Malformed));
    // A pair of layers like these agree on a record seal makes.
    let (mut tx2, mut rx2) = {
        let (client, mut server) = handshake();
        let _tickets = sent_by(&mut server);
        (take_over(client), take_over(server))
    };
    let mut ok = Vec::new();
    tx2.seal(b"fits", &mut ok).unwrap();
    let got = rx2.open(&ok, &mut plain).unwrap();
    assert_eq!((got.consumed, got.plaintext), (ok.len(), 4));
}

#[test]
fn the_helpers_negotiate_aes_128_gcm_and_honour_a_client_that_prefers_aes_256() {
    let suite = |conn: &Connection| conn.negotiated_cipher_suite().map(|s| s.suite());
    let (client, server) = handshake();
    let aes_128 = Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert_eq!((suite(&client), suite(&server)), (aes_128, aes_128));
    // A client with rustls's own order (AES-256-GCM first), as tonic's is:
    // the helpers' server follows the client's preference.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let aes_256 = rustls::CipherSuite::TLS13_AES_256_GCM_SHA384;
    assert_eq!(provider.cipher_suites[0].suite(), aes_256);
    let (server_cfg, ca) = super::super::tls::tests::server_and_ca();
    let roots = crate::tls::config::roots(ca.as_bytes()).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client, server) = handshake_between(server_cfg, client_cfg.into());
    assert_eq!(
        (suite(&client), suite(&server)),
        (Some(aes_256), Some(aes_256))
    );
}
