//! Frame encoding into an outgoing buffer and incremental decoding from a receive buffer.
//!
//! Encoding appends whole frames to a `Vec<u8>` whose length is kept a multiple of
//! [`FRAME_ALIGN`], so every payload starts 16-byte aligned relative to the buffer
//! start and rkyv can serialise straight into it. Decoding is stateless: given the
//! unconsumed bytes it reports either a complete, CRC-checked frame or how many
//! bytes are still missing. Feeding the same stream in any split therefore yields
//! the same frames (property-tested below).

use super::header::{
    frame_crc, padded_len, store_crc, stored_crc, FrameHeader, FRAME_ALIGN, HEADER_LEN,
};
use super::ProtocolError;

/// Default maximum frame size (header + padded payload): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

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

/// Completes the frame begun at `start`: pads the payload, writes the header and CRC.
///
/// On error (payload over `max_frame`) the partial frame is removed from `out`.
pub fn finish_frame(
    out: &mut Vec<u8>,
    start: usize,
    mut header: FrameHeader,
    max_frame: usize,
) -> Result<(), ProtocolError> {
    let payload_len = out.len() - start - HEADER_LEN;
    if HEADER_LEN + padded_len(payload_len) > max_frame || payload_len > u32::MAX as usize {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge {
            len: HEADER_LEN + padded_len(payload_len),
            max: max_frame,
        });
    }
    header.len = payload_len as u32;
    let mut head = [0u8; HEADER_LEN];
    header.encode(&mut head);
    let crc = frame_crc(&head, &out[start + HEADER_LEN..]);
    store_crc(&mut head, crc);
    out[start..start + HEADER_LEN].copy_from_slice(&head);
    out.resize(start + header.frame_len(), 0);
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

/// Result of looking at the front of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A complete, CRC-valid frame; its payload is `bytes[HEADER_LEN..HEADER_LEN + len]`
    /// and it occupies `header.frame_len()` bytes.
    Frame(FrameHeader),
    /// Not enough bytes yet: the front frame needs `total` bytes in all.
    Incomplete {
        /// Bytes the front frame occupies once complete (at least a header).
        total: usize,
    },
}

/// Decodes the frame at the front of `bytes`, if it is all there.
///
/// Errors (bad magic, version, kind, oversize, CRC) are final for the connection.
pub fn decode_frame(bytes: &[u8], max_frame: usize) -> Result<Decoded, ProtocolError> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete { total: HEADER_LEN });
    };
    let header = FrameHeader::decode(head)?;
    let total = header.frame_len();
    if total > max_frame {
        return Err(ProtocolError::FrameTooLarge {
            len: total,
            max: max_frame,
        });
    }
    if bytes.len() < total {
        return Ok(Decoded::Incomplete { total });
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + header.len as usize];
    if frame_crc(head, payload) != stored_crc(head) {
        return Err(ProtocolError::BadCrc);
    }
    Ok(Decoded::Frame(header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::FrameKind;
    use proptest::prelude::*;

    fn request(call: u64, payload: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut h = FrameHeader::new(FrameKind::Request);
        h.call_id = call;
        h.method = 5;
        (h, payload.to_vec())
    }

    /// Decodes every complete frame of `stream`, returning (header, payload) pairs.
    fn decode_all(stream: &[u8]) -> Result<Vec<(FrameHeader, Vec<u8>)>, ProtocolError> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Decoded::Frame(h) = decode_frame(&stream[pos..], DEFAULT_MAX_FRAME)? {
            let p = &stream[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
            out.push((h, p.to_vec()));
            pos += h.frame_len();
        }
        Ok(out)
    }

    #[test]
    fn encoded_frames_decode_with_payload_and_padding() {
        let mut buf = Vec::new();
        let (h, p) = request(1, b"abc");
        encode_frame(&mut buf, h, &p, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(buf.len(), 48);
        let frames = decode_all(&buf).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1, b"abc");
        assert_eq!(frames[0].0.len, 3);
    }

    #[test]
    fn incomplete_reports_total_needed() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            request(1, &[7; 40]).0,
            &[7; 40],
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        assert_eq!(
            decode_frame(&buf[..10], DEFAULT_MAX_FRAME),
            Ok(Decoded::Incomplete { total: HEADER_LEN })
        );
        assert_eq!(
            decode_frame(&buf[..40], DEFAULT_MAX_FRAME),
            Ok(Decoded::Incomplete { total: 80 })
        );
    }

    #[test]
    fn corruption_anywhere_is_caught() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            request(9, b"payload").0,
            b"payload",
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        for i in 0..(HEADER_LEN + 7) {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            // A corrupted length may first look incomplete; it never yields a frame.
            let decoded = decode_frame(&bad, DEFAULT_MAX_FRAME);
            assert!(
                !matches!(decoded, Ok(Decoded::Frame(_))),
                "byte {i}: {decoded:?}"
            );
        }
    }

    #[test]
    fn oversize_frames_are_rejected_on_both_sides() {
        let mut buf = Vec::new();
        let err = encode_frame(&mut buf, request(1, &[0; 100]).0, &[0; 100], 64).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
        assert!(buf.is_empty(), "failed frame is removed");
        encode_frame(&mut buf, request(1, &[0; 100]).0, &[0; 100], 1024).unwrap();
        assert!(matches!(
            decode_frame(&buf[..HEADER_LEN], 64),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_split_decodes_to_the_same_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..20),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let mut stream = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                let (h, p) = request(i as u64, p);
                encode_frame(&mut stream, h, &p, DEFAULT_MAX_FRAME).unwrap();
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
                while let Decoded::Frame(h) = decode_frame(&buffer, DEFAULT_MAX_FRAME).unwrap() {
                    got.push((h, buffer[HEADER_LEN..HEADER_LEN + h.len as usize].to_vec()));
                    buffer.drain(..h.frame_len());
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes, 4096);
        }
    }
}
