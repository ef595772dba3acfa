//! Frame encoding into an outgoing buffer and incremental decoding from a receive buffer.
//!
//! Encoding appends whole frames to a `Vec<u8>` whose length is kept a multiple of
//! [`FRAME_ALIGN`], so every payload starts 16-byte aligned relative to the buffer
//! start and rkyv can serialise straight into it. The header's
//! [`DATA_DIGEST`](FrameHeader::DATA_DIGEST) flag decides whether the payload's
//! CRC32 is computed and sent. Decoding is stateless: given the unconsumed bytes
//! it reports either a complete, digest-checked frame or how many bytes are still
//! missing; the header (and its digest) is checked as soon as its 32 bytes are
//! in. Feeding the same stream in any split therefore yields the same frames
//! (property-tested below).

use super::header::{
    check_prefix, data_digest, padded_len, stored_data_digest, FrameHeader, FRAME_ALIGN, HEADER_LEN,
};
use super::segment::{crc32_from, stream_len, Segment};
use super::ProtocolError;

/// Default maximum frame size (header + padded payload): 4 MiB, gRPC's
/// default maximum message size. It bounds what one connection can make a
/// server hold for a partial frame (see `docs/reliability.md`, limits).
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// Starts a frame at the end of `out` by reserving its header; returns the frame start.
///
/// Append the payload to `out`, then call [`finish_frame`] with the returned start.
///
/// # Panics
/// If `out.len()` is not a multiple of 16: frames must start aligned, which holds
/// for any buffer that contains only frames written by this module.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    assert_eq!(
        out.len() % FRAME_ALIGN,
        0,
        "frames must start 16-byte aligned"
    );
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    start
}

/// Completes the frame begun at `start`: pads the payload and writes the header
/// with its digests (the data digest only if `header` has the
/// [`DATA_DIGEST`](FrameHeader::DATA_DIGEST) flag).
///
/// On error (payload over `max_frame`) the partial frame is removed from `out`.
pub fn finish_frame(
    out: &mut Vec<u8>,
    start: usize,
    header: FrameHeader,
    max_frame: usize,
) -> Result<(), ProtocolError> {
    finish_frame_with(out, start, header, max_frame, &[])
}

/// [`finish_frame`] for a payload with `segments` (all past `start`) sent by
/// reference: they count in the frame's length and digest, and the padding
/// follows the stream's length. On error, the caller drops the segments.
pub(crate) fn finish_frame_with(
    out: &mut Vec<u8>,
    start: usize,
    mut header: FrameHeader,
    max_frame: usize,
    segments: &[Segment],
) -> Result<(), ProtocolError> {
    let payload_len = stream_len(&out[start + HEADER_LEN..], segments);
    if HEADER_LEN + padded_len(payload_len) > max_frame || payload_len > u32::MAX as usize {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge {
            len: HEADER_LEN + padded_len(payload_len),
            max: max_frame,
        });
    }
    header.len = payload_len as u32;
    let digest = match (header.has_data_digest(), segments) {
        (false, _) => 0,
        (true, []) => data_digest(&out[start + HEADER_LEN..]),
        (true, segments) => crc32_from(out, segments, start + HEADER_LEN),
    };
    let mut head = [0u8; HEADER_LEN];
    header.encode(digest, &mut head);
    out[start..start + HEADER_LEN].copy_from_slice(&head);
    let padding = padded_len(payload_len) - payload_len;
    out.resize(out.len() + padding, 0);
    Ok(())
}

/// Appends a complete frame with the given raw payload bytes.
///
/// # Panics
/// If `out.len()` is not a multiple of 16 (see [`begin_frame`]).
pub fn encode_frame(
    out: &mut Vec<u8>,
    header: FrameHeader,
    payload: &[u8],
    max_frame: usize,
) -> Result<(), ProtocolError> {
    let start = begin_frame(out);
    out.extend_from_slice(payload);
    finish_frame(out, start, header, max_frame)
}

/// What a receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest frame accepted (header + padded payload); checked from the header.
    pub max_frame: usize,
    /// Reject a frame without a data digest ([`ProtocolError::MissingDataDigest`]).
    pub require_data_digest: bool,
}

impl DecodeOptions {
    /// Frames up to `max_frame` bytes, with or without a data digest.
    pub const fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            require_data_digest: false,
        }
    }
}

impl Default for DecodeOptions {
    /// [`DEFAULT_MAX_FRAME`], data digest optional.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

/// Result of looking at the front of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame whose digests matched; its payload is
    /// `bytes[HEADER_LEN..HEADER_LEN + len]` and it occupies `header.frame_len()` bytes.
    Frame(FrameHeader),
    /// Not enough bytes yet: the front frame needs `total` bytes in all.
    Incomplete {
        /// Bytes the front frame occupies once complete (at least a header).
        total: usize,
    },
}

/// Decodes the frame at the front of `bytes`, if it is all there.
///
/// The magic and version bytes are checked as soon as they arrive (a foreign
/// protocol is refused at its first byte). Once 32 bytes are in, the header is checked (magic, version, header digest,
/// kind), then the data digest requirement and `max_frame`, all before any
/// payload byte is awaited; the data digest, if the frame has one, is checked
/// when the payload is in. Errors are final for the connection.
pub fn decode_frame(bytes: &[u8], opts: DecodeOptions) -> Result<Decoded, ProtocolError> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        check_prefix(bytes)?;
        return Ok(Decoded::Incomplete { total: HEADER_LEN });
    };
    let header = FrameHeader::decode(head)?;
    if opts.require_data_digest && !header.has_data_digest() {
        return Err(ProtocolError::MissingDataDigest);
    }
    let total = header.frame_len();
    if total > opts.max_frame {
        return Err(ProtocolError::FrameTooLarge {
            len: total,
            max: opts.max_frame,
        });
    }
    if bytes.len() < total {
        return Ok(Decoded::Incomplete { total });
    }
    if header.has_data_digest() {
        let payload = &bytes[HEADER_LEN..HEADER_LEN + header.len as usize];
        if data_digest(payload) != stored_data_digest(head) {
            return Err(ProtocolError::BadDataDigest);
        }
    }
    Ok(Decoded::Frame(header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::FrameKind;
    use proptest::prelude::*;

    const ANY: DecodeOptions = DecodeOptions::new(DEFAULT_MAX_FRAME);
    const REQUIRED: DecodeOptions = DecodeOptions {
        max_frame: DEFAULT_MAX_FRAME,
        require_data_digest: true,
    };

    fn request(call: u64, payload: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut h = FrameHeader::new(FrameKind::Request);
        h.call_id = call;
        h.method = 5;
        (h, payload.to_vec())
    }

    fn frame(payload: &[u8], digest: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = request(9, payload).0.with_data_digest(digest);
        encode_frame(&mut buf, header, payload, DEFAULT_MAX_FRAME).unwrap();
        buf
    }

    /// Decodes every complete frame of `stream`, returning (header, payload) pairs.
    fn decode_all(stream: &[u8]) -> Result<Vec<(FrameHeader, Vec<u8>)>, ProtocolError> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Decoded::Frame(h) = decode_frame(&stream[pos..], ANY)? {
            let p = &stream[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
            out.push((h, p.to_vec()));
            pos += h.frame_len();
        }
        Ok(out)
    }

    #[test]
    fn encoded_frames_decode_with_payload_and_padding() {
        for digest in [true, false] {
            let buf = frame(b"abc", digest);
            assert_eq!(buf.len(), 48);
            let frames = decode_all(&buf).unwrap();
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].1, b"abc");
            assert_eq!(frames[0].0.len, 3);
            assert_eq!(frames[0].0.has_data_digest(), digest);
        }
    }

    #[test]
    fn incomplete_reports_total_needed() {
        let buf = frame(&[7; 40], true);
        assert_eq!(
            decode_frame(&buf[..10], ANY),
            Ok(Decoded::Incomplete { total: HEADER_LEN })
        );
        assert_eq!(
            decode_frame(&buf[..40], ANY),
            Ok(Decoded::Incomplete { total: 80 })
        );
    }

    #[test]
    fn corruption_anywhere_is_caught_with_the_data_digest() {
        let buf = frame(b"payload", true);
        for i in 0..(HEADER_LEN + 7) {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let decoded = decode_frame(&bad, ANY);
                assert!(decoded.is_err(), "byte {i} bit {bit}: {decoded:?}");
            }
        }
    }

    #[test]
    fn header_corruption_is_caught_before_the_payload_arrives() {
        let buf = frame(&[3; 100], true);
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = buf[..HEADER_LEN].to_vec();
                bad[i] ^= 1 << bit;
                let decoded = decode_frame(&bad, ANY);
                assert!(decoded.is_err(), "byte {i} bit {bit}: {decoded:?}");
                if i >= 3 {
                    assert_eq!(decoded, Err(ProtocolError::BadHeaderDigest), "byte {i}");
                }
            }
        }
        // The length field in particular: no waiting for a bogus payload.
        let mut bad = buf[..HEADER_LEN].to_vec();
        bad[26] ^= 0x01;
        assert_eq!(decode_frame(&bad, ANY), Err(ProtocolError::BadHeaderDigest));
    }

    #[test]
    fn payload_corruption_without_the_data_digest_is_not_caught() {
        let mut bad = frame(b"payload", false);
        bad[HEADER_LEN + 2] ^= 0x20;
        let Ok(Decoded::Frame(h)) = decode_frame(&bad, ANY) else {
            panic!("a digest-less frame is accepted as it is");
        };
        assert!(!h.has_data_digest());
        assert_eq!(&bad[HEADER_LEN..HEADER_LEN + 7], b"paYload");
        // ... but its header is still covered.
        bad[17] ^= 0x01;
        assert_eq!(decode_frame(&bad, ANY), Err(ProtocolError::BadHeaderDigest));
        // With the digest, the same flip is a data digest error.
        let mut bad = frame(b"payload", true);
        bad[HEADER_LEN + 2] ^= 0x20;
        assert_eq!(decode_frame(&bad, ANY), Err(ProtocolError::BadDataDigest));
    }

    #[test]
    fn a_required_data_digest_is_enforced_at_header_time() {
        let with = frame(b"payload", true);
        let without = frame(b"payload", false);
        assert!(matches!(
            decode_frame(&with, REQUIRED),
            Ok(Decoded::Frame(_))
        ));
        assert!(matches!(decode_frame(&without, ANY), Ok(Decoded::Frame(_))));
        assert_eq!(
            decode_frame(&without[..HEADER_LEN], REQUIRED),
            Err(ProtocolError::MissingDataDigest)
        );
        // Empty payloads (pings) carry the digest too: the CRC of nothing is 0.
        let mut ping = Vec::new();
        encode_frame(
            &mut ping,
            FrameHeader::new(FrameKind::Ping),
            &[],
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        assert_eq!(
            decode_frame(&ping, REQUIRED),
            Ok(Decoded::Frame(FrameHeader::new(FrameKind::Ping)))
        );
    }

    #[test]
    fn oversize_frames_are_rejected_on_both_sides() {
        let mut buf = Vec::new();
        let err = encode_frame(&mut buf, request(1, &[0; 100]).0, &[0; 100], 64).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
        assert!(buf.is_empty(), "failed frame is removed");
        encode_frame(&mut buf, request(1, &[0; 100]).0, &[0; 100], 1024).unwrap();
        assert!(matches!(
            decode_frame(&buf[..HEADER_LEN], DecodeOptions::new(64)),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_split_decodes_to_the_same_frames(
            payloads in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..100), any::<bool>()),
                1..20,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let mut stream = Vec::new();
            for (i, (p, digest)) in payloads.iter().enumerate() {
                let (h, p) = request(i as u64, p);
                encode_frame(&mut stream, h.with_data_digest(*digest), &p, DEFAULT_MAX_FRAME)
                    .unwrap();
            }
            let expected = decode_all(&stream).unwrap();
            prop_assert_eq!(expected.len(), payloads.len());

            // Deliver the stream in arbitrary reads; decode as bytes arrive.
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(stream.len());
            points.sort_unstable();
            let (mut buffer, mut got, mut delivered) = (Vec::new(), Vec::new(), 0);
            for point in points {
                buffer.extend_from_slice(&stream[delivered..point]);
                delivered = point;
                while let Decoded::Frame(h) = decode_frame(&buffer, ANY).unwrap() {
                    got.push((h, buffer[HEADER_LEN..HEADER_LEN + h.len as usize].to_vec()));
                    buffer.drain(..h.frame_len());
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn garbage_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            require_data_digest in any::<bool>(),
        ) {
            let opts = DecodeOptions { max_frame: 4096, require_data_digest };
            let _ = decode_frame(&bytes, opts);
        }
    }
}
