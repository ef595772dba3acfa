//! Payload bytes sent by reference: a send buffer with segments.
//!
//! A [`Blob`](crate::Blob) of at least [`MIN_LEN`] bytes in a message is not
//! copied into the connection's send buffer: the buffer keeps a
//! [`Segment`] (a reference-counted handle to the caller's bytes) and where
//! in the buffer those bytes belong. The byte stream a peer receives is the
//! buffer with every segment inserted at its place, identical to what a copy
//! would have sent.
//!
//! Invariants:
//! - segments are listed in stream order (`at` never decreases), and a
//!   segment's `at` lies within the buffer (`at <= bytes.len()`);
//! - every segment's length is a multiple of [`FRAME_ALIGN`](super::FRAME_ALIGN)
//!   (the writer copies a blob's last `len % 16` bytes), so a buffer's length
//!   and the stream's are equal modulo 16, and every alignment computed on
//!   the buffer (frame starts, rkyv's) holds on the stream;
//! - a segment keeps its bytes alive until the send that carries it is done
//!   (it is dropped with the batch), so the caller may drop its `Blob` at once.

use bytes::Bytes;

/// Blobs shorter than this are copied (a reference, its iovec and the
/// kernel's walk over one more piece cost more than copying a few hundred bytes).
pub(crate) const MIN_LEN: usize = 1024;

/// Bytes inserted into a send buffer's stream at offset `at` of the buffer.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// Offset in the buffer (not in the stream) the bytes go before.
    pub(crate) at: usize,
    /// The bytes (a multiple of 16 long).
    pub(crate) bytes: Bytes,
}

/// The stream's length: the buffer plus its segments.
pub(crate) fn stream_len(buf: &[u8], segments: &[Segment]) -> usize {
    buf.len() + segments.iter().map(|s| s.bytes.len()).sum::<usize>()
}

/// The stream's pieces from stream offset `from` on, in order, none empty.
pub(crate) fn pieces<'a>(
    buf: &'a [u8],
    segments: &'a [Segment],
    from: usize,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0; // buffer offset reached
    let mut skip = from; // stream bytes still to skip
    let tail = std::iter::once(None);
    segments
        .iter()
        .map(Some)
        .chain(tail)
        .flat_map(move |seg| {
            let end = seg.map_or(buf.len(), |s| s.at);
            let own = &buf[at..end];
            at = end;
            let theirs: &[u8] = seg.map_or(&[], |s| &s.bytes[..]);
            [own, theirs]
        })
        .filter_map(move |piece| {
            let cut = skip.min(piece.len());
            skip -= cut;
            let rest = &piece[cut..];
            (!rest.is_empty()).then_some(rest)
        })
}

/// The CRC32 of the stream from buffer offset `start` to the buffer's end,
/// with the segments (all at or after `start`) in place.
pub(crate) fn crc32_from(buf: &[u8], segments: &[Segment], start: usize) -> u32 {
    let mut hasher = super::header::crc32_hasher();
    let mut at = start;
    for seg in segments {
        hasher.update(&buf[at..seg.at]);
        hasher.update(&seg.bytes);
        at = seg.at;
    }
    hasher.update(&buf[at..]);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer with two segments and the stream it stands for.
    fn sample() -> (Vec<u8>, Vec<Segment>, Vec<u8>) {
        let buf: Vec<u8> = (0..40).collect();
        let one = Bytes::from(vec![0xA1; 16]);
        let two = Bytes::from(vec![0xB2; 32]);
        let segments = vec![
            Segment {
                at: 8,
                bytes: one.clone(),
            },
            Segment {
                at: 8,
                bytes: two.clone(),
            },
            Segment {
                at: 40,
                bytes: one.clone(),
            },
        ];
        let mut stream = buf[..8].to_vec();
        stream.extend_from_slice(&one);
        stream.extend_from_slice(&two);
        stream.extend_from_slice(&buf[8..]);
        stream.extend_from_slice(&one);
        (buf, segments, stream)
    }

    #[test]
    fn the_pieces_from_any_offset_are_the_stream_from_there() {
        let (buf, segments, stream) = sample();
        assert_eq!(stream_len(&buf, &segments), stream.len());
        for from in 0..=stream.len() {
            let got: Vec<u8> = pieces(&buf, &segments, from).flatten().copied().collect();
            assert_eq!(got, stream[from..], "from {from}");
            assert!(pieces(&buf, &segments, from).all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn the_crc_covers_the_stream_with_its_segments() {
        let (buf, segments, stream) = sample();
        assert_eq!(crc32_from(&buf, &segments, 0), crc32fast::hash(&stream));
        // From a later start: the segments at 8 come first in that stream.
        let later = &segments[2..];
        let expected = crc32fast::hash(&[&buf[20..], &later[0].bytes[..]].concat());
        assert_eq!(crc32_from(&buf, later, 20), expected);
    }
}
