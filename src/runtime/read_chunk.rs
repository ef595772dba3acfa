//! How much a connection's reader handles from one receive before it lets
//! the core's other tasks run (see [`ReadChunk`]).

/// Counts what a connection's reader handled from one receive and says when
/// to let the core's other tasks (its writer, the callers it woke) run.
///
/// With 128 calls arriving in one receive, handling them all before the first
/// send made client and server take turns on the whole batch; in chunks of
/// [`ReadChunk::FRAMES`] frames or [`ReadChunk::BYTES`] bytes, the writer sends
/// the first replies (see [`io::write_all`]) while the reader works on the
/// rest, so both sides work at once.
#[derive(Debug, Default)]
pub(crate) struct ReadChunk {
    frames: usize,
    bytes: usize,
}

impl ReadChunk {
    /// Frames per chunk.
    pub const FRAMES: usize = 32;
    /// Bytes per chunk (large frames hand over sooner).
    pub const BYTES: usize = 64 << 10;

    /// Notes one handled frame of `len` bytes; `true` when the chunk is full
    /// (the count starts again).
    pub fn handled(&mut self, len: usize) -> bool {
        self.frames += 1;
        self.bytes += len;
        if self.frames >= Self::FRAMES || self.bytes >= Self::BYTES {
            *self = Self::default();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_chunk_fills_by_frames_or_bytes() {
        let mut chunk = ReadChunk::default();
        for _ in 1..ReadChunk::FRAMES {
            assert!(!chunk.handled(96));
        }
        assert!(chunk.handled(96), "the 32nd small frame fills the chunk");
        assert!(!chunk.handled(96), "and the count starts again");
        let mut chunk = ReadChunk::default();
        assert!(!chunk.handled(ReadChunk::BYTES / 2));
        assert!(
            chunk.handled(ReadChunk::BYTES / 2),
            "two half-chunk frames fill it"
        );
    }
}
