//! How much a connection's reader handles from one receive before it lets
//! the core's other tasks run (see [`ReadChunk`]).

use std::cell::Cell;

/// Counts what a connection's reader handled from one receive and says when
/// to let the core's other tasks (its writer, the callers it woke) run.
///
/// With 128 calls arriving in one receive, handling them all before the first
/// send made client and server take turns on the whole batch. Handing over
/// part-way, the writer sends the first replies (see [`io::write_batch`]) while
/// the reader works on the rest, so both sides work at once. But every
/// hand-over is one more send on each side, and on loopback a send is most of
/// a small call's kernel work: chunks of a fixed 32 frames split 128 calls in
/// flight into four batches that each paid a send, a receive and a wake-up.
///
/// So a client splits what arrives in two: a chunk is half of the
/// connection's calls in flight (between [`ReadChunk::MIN_FRAMES`] and
/// [`ReadChunk::MAX_FRAMES`]), which keeps two batches travelling, one on each
/// side. A server hands over sooner, after [`ReadChunk::SERVER_FRAMES`]:
/// facing a pipelining client it is the less loaded side (half the client's
/// CPU per call), so it spends a few more sends to get the first replies of a
/// batch back while the client still works on its half. At 128 calls in
/// flight × 64 B that took calls/s from ~0.87× to ~1.0× of a raw pipelined
/// socket for +0.06–0.09 µs of server CPU per call (docs/benchmarks.md, "Server
/// chunks"). Those sends cost the client receives too, so a server chunk
/// widens to [`ReadChunk::MAX_FRAMES`] while other connections of its core
/// have input: their batches already keep both sides busy.
/// Either side hands over after [`ReadChunk::BYTES`] (large frames sooner;
/// 32 KiB kept 128 × 4 KiB steadier than 64 KiB).
///
/// [`io::write_batch`]: super::io::write_batch
#[derive(Debug)]
pub(crate) struct ReadChunk {
    frames: usize,
    bytes: usize,
    max_frames: usize,
    /// A server chunk's mark that its reader holds input (`None` for a client).
    mark: Option<ServerInput>,
}

thread_local! {
    /// Server readers on this core holding received input not yet handled.
    static SERVER_INPUT: Cell<usize> = const { Cell::new(0) };
}

/// A server reader's mark, held by its chunk while it handles what it
/// received, that it has input: when several connections of a core have input
/// at once the core is busy, and its readers hand over after
/// [`ReadChunk::MAX_FRAMES`] rather than [`ReadChunk::SERVER_FRAMES`] (sends
/// for the bigger batches, not for the early replies of one connection).
/// Dropping it takes the mark back.
#[derive(Debug)]
struct ServerInput(());

impl ServerInput {
    /// Marks one more reader of this core as holding input.
    fn mark() -> Self {
        SERVER_INPUT.with(|n| n.set(n.get() + 1));
        Self(())
    }
}

impl Drop for ServerInput {
    fn drop(&mut self) {
        SERVER_INPUT.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Whether another server reader of this core holds input too.
fn others_have_input() -> bool {
    SERVER_INPUT.with(Cell::get) > 1
}

impl ReadChunk {
    /// The fewest frames a chunk holds (a client with at most this many calls
    /// in flight handles a receive whole).
    pub const MIN_FRAMES: usize = 8;
    /// The most frames a client's chunk holds.
    pub const MAX_FRAMES: usize = 128;
    /// The frames of a server's chunk.
    pub const SERVER_FRAMES: usize = 16;
    /// Bytes per chunk (large frames hand over sooner).
    pub const BYTES: usize = 32 << 10;

    /// A client connection's chunk with `in_flight` calls outstanding: half
    /// of them, within [`Self::MIN_FRAMES`]..=[`Self::MAX_FRAMES`].
    pub fn for_client(in_flight: usize) -> Self {
        Self::of(
            (in_flight / 2).clamp(Self::MIN_FRAMES, Self::MAX_FRAMES),
            None,
        )
    }

    /// A server connection's chunk for what one receive brought, marking its
    /// reader as holding input until it is dropped: [`Self::SERVER_FRAMES`],
    /// or [`Self::MAX_FRAMES`] from the first time it fills while another
    /// server reader of the core holds input.
    pub fn for_server() -> Self {
        Self::of(Self::SERVER_FRAMES, Some(ServerInput::mark()))
    }

    fn of(max_frames: usize, mark: Option<ServerInput>) -> Self {
        Self {
            frames: 0,
            bytes: 0,
            max_frames,
            mark,
        }
    }

    /// Notes one handled frame of `len` bytes; `true` when the chunk is full
    /// (the count starts again).
    pub fn handled(&mut self, len: usize) -> bool {
        self.frames += 1;
        self.bytes += len;
        if self.frames < self.max_frames && self.bytes < Self::BYTES {
            return false;
        }
        let widen = self.max_frames == Self::SERVER_FRAMES
            && self.mark.is_some()
            && self.bytes < Self::BYTES
            && others_have_input();
        (self.frames, self.bytes) = (0, 0);
        if widen {
            self.max_frames = Self::MAX_FRAMES;
        }
        !widen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many frames of `len` bytes the chunk takes before it is full.
    fn frames_until_full(mut chunk: ReadChunk, len: usize) -> usize {
        (1..=1 << 20).find(|_| chunk.handled(len)).unwrap_or(0)
    }

    #[test]
    fn a_client_splits_its_calls_in_flight_in_two_within_bounds() {
        assert_eq!(frames_until_full(ReadChunk::for_client(128), 96), 64);
        assert_eq!(frames_until_full(ReadChunk::for_client(32), 96), 16);
        assert_eq!(frames_until_full(ReadChunk::for_client(1), 96), 8);
        assert_eq!(frames_until_full(ReadChunk::for_client(4096), 96), 128);
    }

    #[test]
    fn a_server_hands_over_after_its_frames_or_the_bytes() {
        assert_eq!(frames_until_full(ReadChunk::for_server(), 96), 16);
        assert_eq!(frames_until_full(ReadChunk::for_server(), 4096 + 32), 8);
        assert_eq!(frames_until_full(ReadChunk::for_server(), 8192 + 32), 4);
        assert_eq!(frames_until_full(ReadChunk::for_client(128), 4096 + 32), 8);
    }

    #[test]
    fn a_server_chunk_widens_while_another_reader_has_input() {
        assert_eq!(frames_until_full(ReadChunk::for_server(), 96), 16, "alone");
        let other = ReadChunk::for_server();
        assert_eq!(
            frames_until_full(ReadChunk::for_server(), 96),
            16 + 128,
            "crowded: the first fill widens the chunk"
        );
        assert_eq!(
            frames_until_full(ReadChunk::for_server(), 4096 + 32),
            8,
            "bytes still hand over"
        );
        assert_eq!(frames_until_full(ReadChunk::for_client(32), 96), 16);
        drop(other);
        assert_eq!(frames_until_full(ReadChunk::for_server(), 96), 16);
    }

    #[test]
    fn the_count_starts_again_after_a_full_chunk() {
        let mut chunk = ReadChunk::for_client(16);
        for _ in 1..8 {
            assert!(!chunk.handled(96));
        }
        assert!(chunk.handled(96), "the 8th frame fills the chunk");
        assert!(!chunk.handled(96), "and the count starts again");
        let mut chunk = ReadChunk::for_server();
        assert!(!chunk.handled(ReadChunk::BYTES / 2));
        assert!(
            chunk.handled(ReadChunk::BYTES / 2),
            "two half-chunk frames fill it"
        );
    }
}
