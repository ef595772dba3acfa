//! Blobs sent by reference through the client and server cores: the frames a
//! request (or response) with [`Blob`] fields makes are, byte for byte, the
//! frames the same message with `Vec<u8>` fields makes, while the core's
//! batch refers to the blob's own bytes instead of holding a copy.

use std::time::Duration;

use super::tests::{Harness, METHOD};
use crate::message::serialize_out;
use crate::protocol::{decode_frame, DecodeOptions, Decoded, FrameKind, HEADER_LEN};
use crate::Blob;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct WithVec {
    id: u64,
    payload: Vec<u8>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedWithVec)]
struct WithBlob {
    id: u64,
    payload: Blob,
}

/// The payloads of the request frames in `stream`, checked as they are received.
fn request_payloads(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let opts = DecodeOptions {
            require_data_digest: true,
            ..DecodeOptions::default()
        };
        let Ok(Decoded::Frame(h)) = decode_frame(&stream[pos..], opts) else {
            panic!("a broken frame at {pos}");
        };
        assert_eq!(h.kind, FrameKind::Request);
        let start = pos + HEADER_LEN;
        payloads.push(stream[start..start + h.len as usize].to_vec());
        pos += h.frame_len();
    }
    payloads
}

/// Makes a call whose request is `blob` and one whose request is the same
/// bytes in a `Vec`, after a small call that offsets the buffer.
fn call_both(h: &mut Harness, blob: &Blob) {
    let (now, deadline) = (h.now, Duration::from_secs(1));
    let at = (h.now + deadline, deadline);
    h.call(1, deadline);
    let req = WithBlob {
        id: 7,
        payload: blob.clone(),
    };
    h.core
        .start_call_with(now, METHOD, at, |out| serialize_out(&req, out), None)
        .unwrap();
    let copy = WithVec {
        id: 7,
        payload: blob.to_vec(),
    };
    h.core
        .start_call_with(now, METHOD, at, |out| serialize_out(&copy, out), None)
        .unwrap();
}

#[test]
fn a_blob_is_sent_by_reference_and_arrives_as_its_copy_would() {
    // Miri interprets every byte of the digests: the small sizes only.
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 1023, 1025]
    } else {
        &[0, 16, 1000, 1023, 1024, 1025, 4096, 4100, 70_001]
    };
    for &len in sizes {
        let mut h = Harness::new();
        let blob = Blob::from((0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
        call_both(&mut h, &blob);
        let batch = h.core.poll_transmit().expect("a batch");
        if len >= 1024 {
            assert_eq!(batch.segments.len(), 1, "{len} bytes: one segment");
            let segment = &batch.segments[0];
            assert_eq!(segment.bytes.as_ptr(), blob.as_ptr(), "by reference");
            assert_eq!(segment.bytes.len(), len & !15, "a multiple of 16");
        } else {
            assert!(batch.segments.is_empty(), "{len} bytes are copied");
        }
        assert_eq!(batch.bytes.len() % 16, batch.len() % 16);
        let payloads = request_payloads(&batch.to_stream());
        assert_eq!(payloads.len(), 3);
        assert_eq!(payloads[1], payloads[2], "{len} bytes: the same archive");
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&payloads[1]);
        let archived = rkyv::access::<ArchivedWithVec, rkyv::rancor::Error>(&aligned).unwrap();
        assert_eq!(archived.payload.as_slice(), &blob[..]);
        h.core.transmit_done(h.now, batch);
    }
}

#[test]
fn many_blobs_in_one_batch_keep_their_order_and_their_digests() {
    let mut h = Harness::new();
    let count = if cfg!(miri) { 3 } else { 40 };
    let blobs: Vec<Blob> = (0..count)
        .map(|i| Blob::from(vec![i; 1500 + 17 * i as usize]))
        .collect();
    for blob in &blobs {
        call_both(&mut h, blob);
    }
    let batch = h.core.poll_transmit().expect("a batch");
    assert_eq!(batch.segments.len(), blobs.len());
    let payloads = request_payloads(&batch.to_stream());
    for (i, pair) in payloads.chunks(3).enumerate() {
        assert_eq!(pair[1], pair[2], "call {i}");
    }
}

#[test]
fn a_response_blob_is_sent_by_reference_and_arrives_as_its_copy_would() {
    use super::server_tests::{config, request, Handle, Server};
    let mut s = Server::new(config(16));
    s.deliver_with(&request(1, 5, Duration::from_secs(1)), |_| Handle::Defer)
        .unwrap();
    s.deliver_with(&request(2, 6, Duration::from_secs(1)), |_| Handle::Defer)
        .unwrap();
    let blob = Blob::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let (by_reference, copied) = (s.deferred[0].0, s.deferred[1].0);
    let resp = WithBlob {
        id: 7,
        payload: blob.clone(),
    };
    s.core.push_response(&by_reference, &resp);
    let copy = WithVec {
        id: 7,
        payload: blob.to_vec(),
    };
    s.core.push_response(&copied, &copy);
    let batch = s.core.poll_transmit().expect("a batch");
    assert_eq!(batch.segments.len(), 1);
    assert_eq!(
        batch.segments[0].bytes.as_ptr(),
        blob.as_ptr(),
        "by reference"
    );
    let stream = batch.to_stream();
    let frames = super::server_tests::split(&stream);
    assert_eq!(frames.len(), 2);
    let payload = |(h, frame): &(crate::protocol::FrameHeader, Vec<u8>)| {
        frame[HEADER_LEN..HEADER_LEN + h.len as usize].to_vec()
    };
    assert!(
        payload(&frames[0]) == payload(&frames[1]),
        "the same archive"
    );
    s.core.transmit_done(batch);
}
