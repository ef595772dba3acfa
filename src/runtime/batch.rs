//! A batch of frames on its way out: a connection's send buffer, the
//! segments it sends by reference (`protocol::segment`), and the scratch of
//! a gathering send, all reused from one batch to the next.
//!
//! A core hands a `Batch` to its driver's writer and gets it back once the
//! bytes are sent. Invariants: while a send of the batch is in the kernel,
//! the op holds the batch (its buffer, its segments' bytes, and the
//! iovecs and `msghdr` the kernel reads, which live in one heap box that
//! does not move with the batch); a batch without segments is sent as one
//! plain buffer and never touches the scratch.

use std::fmt;

use crate::protocol::segment::{self, Segment};

/// At most this many iovecs per send (the kernel's `UIO_MAXIOV`); a longer
/// batch goes out in several sends.
const MAX_IOVECS: usize = 1024;

/// Frames to send: `bytes` with `segments` in place.
#[derive(Default)]
pub(crate) struct Batch {
    /// The send buffer.
    pub(crate) bytes: Vec<u8>,
    /// Bytes sent by reference, in stream order (empty for most batches).
    pub(crate) segments: Vec<Segment>,
    /// Made at the first gathering send, then kept with the batch.
    gather: Option<Box<Gather>>,
}

/// What the kernel reads for a gathering send.
struct Gather {
    msg: libc::msghdr,
    iov: Vec<libc::iovec>,
}

impl Batch {
    /// A batch of `bytes`, without segments.
    #[cfg(test)]
    pub(crate) fn of(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            ..Self::default()
        }
    }

    /// The stream's length: the buffer and its segments.
    pub(crate) fn len(&self) -> usize {
        segment::stream_len(&self.bytes, &self.segments)
    }

    /// The whole stream, segments copied in place (for the tests).
    #[cfg(test)]
    pub(crate) fn to_stream(&self) -> Vec<u8> {
        segment::pieces(&self.bytes, &self.segments, 0)
            .flatten()
            .copied()
            .collect()
    }

    /// Empties the batch (dropping its segments' references), keeping its
    /// buffers for the next one.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.segments.clear();
    }

    /// Capacity held by the send buffer (for the deterministic tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// A `msghdr` whose iovecs cover the stream from offset `sent` on (up to
    /// [`MAX_IOVECS`] pieces). It points into this batch and stays valid
    /// until the batch is next changed; the box it lives in does not move
    /// when the batch does.
    pub(crate) fn gather(&mut self, sent: usize) -> *const libc::msghdr {
        let gather = self.gather.get_or_insert_with(|| {
            Box::new(Gather {
                // SAFETY: an all-zero msghdr is valid (no name, no control, no iovecs).
                msg: unsafe { std::mem::zeroed() },
                iov: Vec::new(),
            })
        });
        gather.iov.clear();
        let pieces = segment::pieces(&self.bytes, &self.segments, sent).take(MAX_IOVECS);
        gather.iov.extend(pieces.map(|piece| libc::iovec {
            iov_base: piece.as_ptr().cast_mut().cast(),
            iov_len: piece.len(),
        }));
        gather.msg.msg_iov = gather.iov.as_mut_ptr();
        gather.msg.msg_iovlen = gather.iov.len() as _;
        &gather.msg
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("bytes", &self.bytes.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_iovecs_cover_the_stream_from_any_offset() {
        let blob = Bytes::from(vec![9u8; 32]);
        let mut batch = Batch::of((0..48).collect());
        batch.segments.push(Segment {
            at: 16,
            bytes: blob.clone(),
        });
        let mut stream: Vec<u8> = (0..16).collect();
        stream.extend_from_slice(&blob);
        stream.extend(16..48u8);
        assert_eq!(batch.len(), stream.len());
        for sent in [0, 5, 16, 40, 48, 79, 80] {
            let msg = batch.gather(sent);
            // SAFETY: `gather` just filled the msghdr and its iovecs, which
            // point into `batch`, untouched until the next call.
            let got: Vec<u8> = unsafe {
                let msg = &*msg;
                // `msg_iovlen` is a `size_t` on glibc, an `int` on musl.
                #[allow(clippy::unnecessary_cast)]
                let len = msg.msg_iovlen as usize;
                std::slice::from_raw_parts(msg.msg_iov, len)
                    .iter()
                    .flat_map(|v| std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len))
                    .copied()
                    .collect()
            };
            assert_eq!(got, stream[sent..], "from {sent}");
        }
        assert_eq!(
            blob.as_ptr(),
            batch.segments[0].bytes.as_ptr(),
            "by reference"
        );
    }
}
