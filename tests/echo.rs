//! Typed round trip of a rich struct, read in place and deserialised.

mod common;

use common::{finish, Inner, Record, TestClient, TestServer, ECHO_RECORD};

fn sample(id: u64) -> Record {
    Record {
        id,
        name: format!("record #{id} — ünïcødé ✓"),
        // Long enough to be stored out of line (not an inline small string).
        note: "n".repeat(10_000) + &id.to_string(),
        numbers: vec![0, 1, u64::MAX, 42, id, 1 << 63],
        groups: vec![
            vec!["a".into(), "bb".into(), "ccc".into()],
            vec![],
            vec![String::new(), "x".repeat(100)],
        ],
        inner: Inner {
            names: vec!["alpha".into(), "beta".into(), String::new()],
            flag: true,
        },
        small: 255,
        signed: -123_456,
        big: i64::MIN,
        maybe: Some("present".into()),
    }
}

#[test]
fn echo_round_trip_of_a_rich_struct() {
    let server = TestServer::echo();
    let client = TestClient::connect(server.addr());

    let (sent, owned, second) = client.run(|client| async move {
        let sent = sample(7);
        let reply = client.call(&ECHO_RECORD, &sent).await.expect("echo call");

        // Every field, read in place from the receive buffer.
        assert_eq!(reply.id.to_native(), sent.id);
        assert_eq!(reply.name.as_str(), sent.name);
        assert_eq!(reply.note.as_str(), sent.note);
        let numbers: Vec<u64> = reply.numbers.iter().map(|n| n.to_native()).collect();
        assert_eq!(numbers, sent.numbers);
        assert_eq!(reply.groups.len(), sent.groups.len());
        for (got, want) in reply.groups.iter().zip(&sent.groups) {
            let got: Vec<&str> = got.iter().map(|s| s.as_str()).collect();
            assert_eq!(got, *want);
        }
        let names: Vec<&str> = reply.inner.names.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, sent.inner.names);
        assert!(reply.inner.flag);
        assert_eq!(reply.small, 255);
        assert_eq!(reply.signed.to_native(), -123_456);
        assert_eq!(reply.big.to_native(), i64::MIN);
        assert_eq!(reply.maybe.as_ref().map(|s| s.as_str()), Some("present"));
        assert_eq!(
            reply.bytes().as_ptr() as usize % 16,
            0,
            "payload is aligned"
        );

        let owned = reply.to_owned().expect("deserialise reply");
        drop(reply);

        // A second, different value over the same connection (None, empty vectors).
        let other = Record {
            id: 8,
            numbers: vec![],
            groups: vec![],
            maybe: None,
            inner: Inner {
                names: vec![],
                flag: false,
            },
            ..sample(8)
        };
        let second = client
            .call(&ECHO_RECORD, &other)
            .await
            .expect("second echo")
            .to_owned()
            .expect("deserialise second");
        assert_eq!(second, other);
        (sent, owned, second)
    });
    assert_eq!(owned, sent, ".to_owned() equals what was sent");
    assert_eq!(second.id, 8);
    assert!(second.maybe.is_none());

    let stats = client.stats();
    assert_eq!(stats.live_connections, 1);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(server.stats().accepted, 1);
    finish(&client, &server);
}

/// A call's future is small: it is moved into place whole on every call
/// (its bytes are copied once per call), and it is all the state a call in
/// flight keeps on the caller's side.
#[test]
fn a_call_future_is_small() {
    let server = TestServer::echo();
    let client = TestClient::connect(server.addr());
    let size = client.run(|client| async move {
        let sent = sample(1);
        let call = client.call(&ECHO_RECORD, &sent);
        let size = std::mem::size_of_val(&call);
        drop(call);
        // And a call made after an unpolled one was dropped still works.
        let reply = client.call(&ECHO_RECORD, &sent).await.expect("echo call");
        assert_eq!(reply.id.to_native(), 1);
        size
    });
    // 184 bytes in release builds with rustc 1.95, 256 before the call path
    // stopped keeping two copies of its arguments.
    assert!(size <= 224, "a call's future is {size} bytes");
    finish(&client, &server);
}
