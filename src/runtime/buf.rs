//! Receive buffers: 16-byte aligned regions that replies and requests borrow in place.
//!
//! A connection's received bytes are in one *region* at a time: either a
//! segment of the core's provided-buffer ring that a multishot receive filled
//! (leased, zero-copy: see `runtime::bufring`), or a heap [`Chunk`] that plain
//! receives append to and that partial frames are assembled in. Every complete
//! frame in `[consumed, filled)` can be handed out as a [`FrameBytes`] (a
//! counted view, no copy) to a caller or handler.
//! Invariants:
//! - a region's bytes below `filled` are never written again while it is in
//!   use; the kernel only ever writes a chunk's `[filled, capacity)` through
//!   [`TailBuf`], and never writes a leased ring segment;
//! - every region starts at a frame boundary at a 16-byte aligned address and
//!   frames are multiples of 16 bytes, so every payload is 16-byte aligned and
//!   rkyv can read it in place (a ring segment that starts mid-frame or
//!   unaligned is copied into a chunk instead);
//! - once all its bytes are consumed a connection lets go of its region (a
//!   ring segment goes back to the ring when its last view drops), so an idle
//!   connection on a buffer ring holds no receive memory;
//! - a chunk still referenced by a `FrameBytes` is retired, not reused, and is
//!   recycled once the last view drops (no allocation in steady state).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;

use super::bufring;
use crate::protocol::{FRAME_ALIGN, HEADER_LEN};

/// Chunks kept for reuse per connection beyond the one in use.
const MAX_SPARE_CHUNKS: usize = 8;
/// First chunk of every connection.
const SMALL_CHUNK: usize = 4096;

/// A fixed-size, 16-byte aligned, zero-initialised byte region.
pub struct Chunk {
    ptr: NonNull<u8>,
    cap: usize,
}

impl Chunk {
    /// The largest chunk: a request past it is clamped, never wrapped, so a
    /// chunk's recorded capacity is always the size of its allocation.
    const MAX: usize = 1 << 30;

    /// The capacity a request for `cap` bytes gets: at least one frame
    /// alignment unit, at most [`Self::MAX`], a multiple of [`FRAME_ALIGN`].
    fn clamp(cap: usize) -> usize {
        cap.clamp(FRAME_ALIGN, Self::MAX)
            .next_multiple_of(FRAME_ALIGN)
    }

    fn layout(cap: usize) -> Layout {
        match Layout::from_size_align(cap, FRAME_ALIGN) {
            Ok(layout) => layout,
            // `new` clamps `cap` so this cannot happen; never hand out a layout
            // smaller than `cap`.
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<[u8; 16]>()),
        }
    }

    /// Chunks above this size are mapped from the kernel directly, so their
    /// memory goes back to it when they are freed (a large frame's buffer;
    /// the allocator could keep it in its heap instead).
    const MAPPED_ABOVE: usize = POOLED_CHUNK_MAX;

    /// Whether a chunk of `cap` bytes is mapped (see [`Self::MAPPED_ABOVE`]).
    fn mapped(cap: usize) -> bool {
        cap > Self::MAPPED_ABOVE && !cfg!(miri)
    }

    /// Allocates a zeroed chunk of at least `cap` bytes (at most [`Self::MAX`]).
    fn new(cap: usize) -> Rc<Self> {
        let cap = Self::clamp(cap);
        let layout = Self::layout(cap);
        if Self::mapped(cap) {
            // SAFETY: an anonymous private mapping of `cap` (> 0) bytes; the
            // kernel zeroes it and aligns it to a page (>= FRAME_ALIGN).
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                std::alloc::handle_alloc_error(layout)
            }
            let Some(ptr) = NonNull::new(raw.cast::<u8>()) else {
                std::alloc::handle_alloc_error(layout)
            };
            return Rc::new(Self { ptr, cap });
        }
        // SAFETY: the layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Rc::new(Self { ptr, cap })
    }

    /// Capacity in bytes.
    fn capacity(&self) -> usize {
        self.cap
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if Self::mapped(self.cap) {
            // SAFETY: mapped in `new` with exactly this length; no view
            // outlives the chunk (views hold an `Rc` of it).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
            return;
        }
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

/// Who keeps a region's memory alive.
enum Owner {
    /// A heap chunk (reference counted).
    Heap(Rc<Chunk>),
    /// A leased buffer of the core's buffer ring (its id).
    Ring(u16),
}

impl Owner {
    fn share(&self) -> Self {
        match self {
            Owner::Heap(chunk) => Owner::Heap(chunk.clone()),
            Owner::Ring(bid) => {
                bufring::retain(*bid);
                Owner::Ring(*bid)
            }
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Owner::Ring(bid) = *self {
            bufring::release(bid);
        }
    }
}

/// An immutable view of received bytes (usually one frame's payload).
///
/// Cloning is a reference-count increment. The bytes stay valid and unchanged for
/// as long as the view lives, however far the connection reads on; a view into
/// the core's buffer ring keeps that buffer from the kernel until it drops.
pub struct FrameBytes {
    owner: Owner,
    ptr: NonNull<u8>,
    len: usize,
}

impl Clone for FrameBytes {
    fn clone(&self) -> Self {
        Self {
            owner: self.owner.share(),
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl Deref for FrameBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: views are only created over `[consumed, filled)` of a region,
        // which is never written again while `owner` keeps it alive (module
        // invariant), and `ptr + len` stays inside it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for FrameBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameBytes({} bytes)", self.len)
    }
}

/// The part of a chunk the kernel may write into during one read.
///
/// Only [`RecvBuf::read_target`] makes one, and `RecvBuf` hands out at most
/// one at a time (its `&mut self` methods take it back through
/// [`RecvBuf::commit`]), so the free tail is never aliased.
pub(crate) struct TailBuf {
    chunk: Rc<Chunk>,
    start: usize,
}

impl TailBuf {
    /// The writable region: its start and length (for the kernel).
    pub(crate) fn raw_parts(&self) -> (*mut u8, usize) {
        let len = self.chunk.capacity() - self.start;
        // SAFETY: `start <= capacity`, so the offset stays inside the allocation.
        (unsafe { self.chunk.ptr.as_ptr().add(self.start) }, len)
    }
}

/// Chunks a core keeps for the connections that need one for a moment (to
/// assemble a frame that straddles ring segments).
const CORE_POOL_CHUNKS: usize = 64;

thread_local! {
    static CORE_POOL: std::cell::RefCell<Vec<Rc<Chunk>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A free pooled chunk of at least `cap` bytes, or a new one.
fn pooled_chunk(cap: usize) -> Rc<Chunk> {
    CORE_POOL
        .with(|p| {
            let mut pool = p.borrow_mut();
            let i = pool
                .iter()
                .position(|c| Rc::strong_count(c) == 1 && c.capacity() >= cap)?;
            Some(pool.swap_remove(i))
        })
        .unwrap_or_else(|| Chunk::new(cap))
}

/// Largest chunk the core's pool keeps: a bigger one (a large frame's) is
/// freed once its frame is consumed, so memory returns after large frames.
const POOLED_CHUNK_MAX: usize = 256 << 10;

/// Most bytes the core's pool keeps in all.
const POOLED_BYTES_MAX: usize = 4 << 20;

/// Bytes of the chunks in this core's pool.
pub(crate) fn pooled_bytes() -> usize {
    CORE_POOL
        .try_with(|p| p.borrow().iter().map(|c| c.capacity()).sum())
        .unwrap_or(0)
}

/// Gives a chunk back to the core's pool (dropped when the pool is full, the
/// chunk is larger than [`POOLED_CHUNK_MAX`] or the pool would hold more than
/// [`POOLED_BYTES_MAX`]).
fn pool_chunk(chunk: Rc<Chunk>) {
    if chunk.capacity() > POOLED_CHUNK_MAX {
        return;
    }
    let pooled = pooled_bytes();
    let _ = CORE_POOL.try_with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < CORE_POOL_CHUNKS && pooled + chunk.capacity() <= POOLED_BYTES_MAX {
            pool.push(chunk);
        }
    });
}

/// A leased segment of the core's buffer ring.
struct Segment {
    bid: u16,
    ptr: NonNull<u8>,
}

/// A connection's receive buffer: its current region plus recycled spares.
pub(crate) struct RecvBuf {
    /// The chunk plain receives append to and straddling frames are
    /// assembled in; `None` while not needed (ring receives, idle).
    chunk: Option<Rc<Chunk>>,
    /// A leased ring segment holding the current bytes; when set it is the
    /// active region (the chunk then holds nothing).
    seg: Option<Segment>,
    /// A segment whose first bytes completed the frame the chunk holds: it
    /// becomes the active region, read in place from `start`, once that frame
    /// is consumed (see [`push_segment`](Self::push_segment)).
    next: Option<(Segment, usize, usize)>,
    consumed: usize,
    filled: usize,
    /// Total length of the frame being completed (from [`reserve`](Self::reserve)).
    need: usize,
    chunk_size: usize,
    /// The size new chunks get now: small until the connection gets busy.
    class: usize,
    /// The last read filled all the room it had (more data is likely waiting).
    filled_tail: bool,
    spare: Vec<Rc<Chunk>>,
    /// Bytes moved between chunks so far (tests check growth is geometric).
    #[cfg(test)]
    moved: usize,
    /// Bytes copied out of ring segments so far.
    #[cfg(test)]
    copied: usize,
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take() {
            bufring::release(seg.bid);
        }
        if let Some((seg, ..)) = self.next.take() {
            bufring::release(seg.bid);
        }
    }
}

impl RecvBuf {
    /// A buffer whose chunks hold `chunk_size` bytes (bigger for bigger frames).
    ///
    /// The buffer starts with no memory; its first chunk is small and it moves
    /// to `chunk_size` chunks the first time a plain read fills all the room it
    /// was given, so idle connections stay small and busy ones read in large
    /// batches.
    pub fn new(chunk_size: usize) -> Self {
        let chunk_size = Chunk::clamp(chunk_size.max(SMALL_CHUNK));
        Self {
            chunk: None,
            seg: None,
            next: None,
            consumed: 0,
            filled: 0,
            need: 0,
            chunk_size,
            class: SMALL_CHUNK,
            filled_tail: false,
            spare: Vec::new(),
            #[cfg(test)]
            moved: 0,
            #[cfg(test)]
            copied: 0,
        }
    }

    /// The active region's start, if any.
    fn base(&self) -> Option<NonNull<u8>> {
        match (&self.seg, &self.chunk) {
            (Some(seg), _) => Some(seg.ptr),
            (None, Some(chunk)) => Some(chunk.ptr),
            (None, None) => None,
        }
    }

    /// Received bytes not yet consumed; always starts at a frame boundary.
    pub fn unconsumed(&self) -> &[u8] {
        match self.base() {
            // SAFETY: `[consumed, filled)` of the active region is written and is
            // never written again while the region is active (module invariant);
            // no TailBuf is outstanding while `&self` is borrowed.
            Some(base) => unsafe {
                std::slice::from_raw_parts(
                    base.as_ptr().add(self.consumed),
                    self.filled - self.consumed,
                )
            },
            None => &[],
        }
    }

    /// A shared view of `len` unconsumed bytes starting `offset` bytes in.
    pub fn view(&self, offset: usize, len: usize) -> FrameBytes {
        assert!(
            self.consumed + offset + len <= self.filled,
            "view past filled"
        );
        let (owner, base) = match (&self.seg, &self.chunk) {
            (Some(seg), _) => {
                bufring::retain(seg.bid);
                (Owner::Ring(seg.bid), seg.ptr)
            }
            (None, Some(chunk)) => (Owner::Heap(chunk.clone()), chunk.ptr),
            (None, None) => unreachable!("a view past filled was refused above"),
        };
        // SAFETY: consumed + offset + len <= filled <= the region's length.
        let ptr = unsafe { base.add(self.consumed + offset) };
        FrameBytes { owner, ptr, len }
    }

    /// Marks `n` bytes as consumed; a fully consumed ring segment is let go,
    /// and a segment waiting behind the region takes its place.
    pub fn consume(&mut self, n: usize) {
        self.consumed += n;
        debug_assert!(self.consumed <= self.filled);
        if self.consumed >= self.filled {
            if let Some(seg) = self.seg.take() {
                bufring::release(seg.bid);
                (self.consumed, self.filled) = (0, 0);
            }
            if let Some((seg, start, len)) = self.next.take() {
                if let Some(chunk) = self.chunk.take() {
                    pool_chunk(chunk);
                }
                self.seg = Some(seg);
                (self.consumed, self.filled) = (start, len);
            }
        }
    }

    /// Notes that the next frame to complete is `total` bytes long.
    pub fn reserve(&mut self, total: usize) {
        self.need = total;
    }

    /// Lets go of all memory while nothing is pending: called between
    /// receives on a buffer ring, so an idle connection holds no buffer.
    pub fn release_idle(&mut self) {
        if self.consumed == self.filled && self.seg.is_none() && self.next.is_none() {
            if let Some(chunk) = self.chunk.take() {
                pool_chunk(chunk);
            }
            self.spare.drain(..).for_each(pool_chunk);
            (self.consumed, self.filled) = (0, 0);
        }
    }

    /// [`release_idle`](Self::release_idle), and plain receives start small
    /// again (until one fills what it is given): for a connection that reads
    /// into its own chunks (epoll), so that one woken for a few bytes does not
    /// take a full-size chunk from the pool.
    pub fn release_idle_and_shrink(&mut self) {
        if self.consumed == self.filled && self.seg.is_none() && self.next.is_none() {
            self.release_idle();
            (self.class, self.filled_tail) = (SMALL_CHUNK, false);
        }
    }

    /// Takes `len` bytes a ring receive put at `ptr` in buffer `bid` (one
    /// lease, which this buffer now owns). Read in place when they start a
    /// frame at an aligned address. When they continue a frame whose length
    /// is known (its header is in, [`reserve`](Self::reserve)d) and the rest
    /// of them starts aligned, only the bytes that complete it are copied (to
    /// the chunk, after its first part) and the rest is read in place once
    /// that frame is consumed: a stream of large frames that straddle
    /// segments copies one partial frame per segment, not every byte.
    /// Otherwise the bytes are appended to the chunk.
    pub fn push_segment(&mut self, bid: u16, ptr: NonNull<u8>, len: usize) {
        let pending = self.filled - self.consumed;
        debug_assert!(self.next.is_none(), "a segment waits behind a frame");
        let rest = self.need.saturating_sub(pending);
        if pending >= HEADER_LEN
            && (1..len).contains(&rest)
            && (ptr.as_ptr() as usize + rest) % FRAME_ALIGN == 0
        {
            self.append_segment(ptr, rest);
            self.next = Some((Segment { bid, ptr }, rest, len));
            return;
        }
        if pending == 0 && ptr.as_ptr() as usize % FRAME_ALIGN == 0 {
            if let Some(old) = self.seg.replace(Segment { bid, ptr }) {
                bufring::release(old.bid);
            }
            if let Some(chunk) = self.chunk.take() {
                pool_chunk(chunk);
            }
            (self.consumed, self.filled) = (0, len);
            return;
        }
        self.append_segment(ptr, len);
        bufring::release(bid);
    }

    /// Copies the first `len` bytes of a leased segment to the chunk, after
    /// the pending bytes.
    fn append_segment(&mut self, ptr: NonNull<u8>, len: usize) {
        self.make_room(len);
        let chunk = self.chunk.as_ref().expect("make_room leaves a chunk");
        // SAFETY: make_room left `len` free bytes past `filled` in the chunk,
        // which no view covers; the segment is leased (the kernel does not
        // write it), holds at least `len` bytes and lies in another allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), chunk.ptr.as_ptr().add(self.filled), len);
        }
        self.filled += len;
        #[cfg(test)]
        {
            self.copied += len;
        }
    }

    /// Makes the chunk the active region with its pending bytes at an aligned
    /// place and at least `room` free bytes after them.
    fn make_room(&mut self, room: usize) {
        let pending = self.filled - self.consumed;
        let want = (pending + room).max(self.need.min((2 * (pending + room)).max(self.class)));
        if !self.room_in_place(room) {
            self.switch_chunk(want);
        }
    }

    /// True when the chunk is the active region and has `room` free bytes
    /// after the unconsumed ones, compacting it first if it is unshared and
    /// that makes them fit.
    fn room_in_place(&mut self, room: usize) -> bool {
        let pending = self.filled - self.consumed;
        match (&self.seg, &self.chunk) {
            (None, Some(chunk)) if chunk.capacity() - self.filled >= room => true,
            (None, Some(chunk))
                if Rc::strong_count(chunk) == 1 && chunk.capacity() >= pending + room =>
            {
                self.compact();
                true
            }
            _ => false,
        }
    }

    /// Moves the unconsumed bytes to the front of the (unshared) current chunk.
    fn compact(&mut self) {
        let pending = self.filled - self.consumed;
        if let Some(chunk) = &self.chunk {
            // SAFETY: the chunk is unshared (no views), so nothing else reads or
            // writes it; `copy` handles overlapping ranges within capacity.
            unsafe {
                let base = chunk.ptr.as_ptr();
                std::ptr::copy(base.add(self.consumed), base, pending);
            }
        }
        (self.consumed, self.filled) = (0, pending);
    }

    /// Moves the unconsumed bytes (of the chunk or the segment) to the front of
    /// a free chunk of at least `cap` bytes; a segment is let go.
    fn switch_chunk(&mut self, cap: usize) {
        let fresh = match self
            .spare
            .iter()
            .position(|c| Rc::strong_count(c) == 1 && c.capacity() >= cap)
        {
            Some(i) => self.spare.swap_remove(i),
            None => pooled_chunk(cap),
        };
        let pending = self.filled - self.consumed;
        #[cfg(test)]
        {
            self.moved += pending;
        }
        if let Some(base) = self.base() {
            // SAFETY: `fresh` is unshared (count 1, or new), so we may write its
            // front; the source range is written and lives in another allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    base.as_ptr().add(self.consumed),
                    fresh.ptr.as_ptr(),
                    pending,
                );
            }
        }
        if let Some(seg) = self.seg.take() {
            bufring::release(seg.bid);
        }
        if let Some(old) = self.chunk.replace(fresh) {
            let reusable = old.capacity() >= self.class && old.capacity() <= self.chunk_size * 4;
            if self.spare.len() < MAX_SPARE_CHUNKS && reusable {
                self.spare.push(old);
            }
        }
        (self.consumed, self.filled) = (0, pending);
    }

    /// Makes room for a plain read towards the frame of [`reserve`](Self::reserve)d
    /// length: keeps the chunk while the whole frame fits and the free tail is
    /// worth a read; otherwise compacts in place (chunk unshared) or moves the
    /// partial frame to a recycled chunk.
    fn prepare_plain(&mut self) {
        let pending = self.filled - self.consumed;
        if self.seg.is_some() {
            return self.switch_chunk(self.need.min((2 * pending).max(self.class)));
        }
        let Some(chunk) = &self.chunk else {
            return self.switch_chunk(self.class);
        };
        let unshared = Rc::strong_count(chunk) == 1;
        let cap = chunk.capacity();
        if pending == 0 && unshared {
            (self.consumed, self.filled) = (0, 0);
        }
        if self.filled_tail && self.class < self.chunk_size {
            self.class = self.chunk_size;
        }
        // A frame's header never reserves more than twice what has arrived (or
        // one chunk): a huge claimed length grows the buffer as bytes come in.
        let target = self.need.min((2 * pending).max(self.class));
        let needed = target.saturating_sub(pending).max(1);
        let room = cap - self.filled;
        let small = cap < self.class;
        if !small && cap - self.consumed >= target && room >= needed.min(self.class / 8) {
            return;
        }
        if !small && unshared && cap >= target {
            self.compact();
        } else {
            self.switch_chunk(target.max(self.class));
        }
    }

    /// The writable tail for the next plain read (room made for the reserved
    /// frame). Pass it to the read, then [`commit`](Self::commit).
    pub fn read_target(&mut self) -> TailBuf {
        self.prepare_plain();
        let chunk = self.chunk.clone().expect("prepare_plain leaves a chunk");
        TailBuf {
            chunk,
            start: self.filled,
        }
    }

    /// Records `n` bytes received into the tail handed out by `read_target`.
    pub fn commit(&mut self, tail: TailBuf, n: usize) {
        let Some(chunk) = &self.chunk else { return };
        debug_assert!(Rc::ptr_eq(&tail.chunk, chunk) && tail.start == self.filled);
        let room = chunk.capacity() - self.filled;
        self.filled_tail = n > 0 && n >= room;
        self.filled = (self.filled + n.min(room)).min(chunk.capacity());
    }
}

/// Bytes from elsewhere, as if plain receives had brought them: the plaintext
/// a TLS session decrypted (and test input).
impl RecvBuf {
    /// Appends `data` after the unconsumed bytes (aligned as received bytes are).
    #[cfg(any(test, feature = "tls"))]
    pub(crate) fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.need = self.filled - self.consumed + data.len();
            let tail = self.read_target();
            let (ptr, room) = tail.raw_parts();
            let n = room.min(data.len());
            // SAFETY: the tail's `room` bytes are ours alone until `commit`
            // (no view covers them) and `n <= room`; `data` is another allocation.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, n) };
            self.commit(tail, n);
            data = &data[n..];
        }
    }

    /// Makes the chunk the active region with `len` free bytes after the
    /// unconsumed ones: in place if they fit, by compacting an unshared chunk,
    /// or in a recycled chunk of the connection's chunk size once a piece
    /// larger than the small first chunk came (as plain receives grow).
    #[cfg(any(test, feature = "tls"))]
    fn room_in_chunk(&mut self, len: usize) {
        if self.room_in_place(len) {
            return;
        }
        let want = self.filled - self.consumed + len;
        if want > self.class {
            self.class = self.chunk_size;
        }
        // Towards the frame being completed, room for twice what is here (at
        // most the frame): a large frame's bytes move O(log n) times as its
        // records come in, not once per record.
        self.switch_chunk(want.max(self.need.min(2 * want)).max(self.class));
    }

    /// Hands `fill` the `len` bytes right after the unconsumed ones, in one
    /// piece, and keeps the first `n` of them when it returns `Ok(n)` (at most
    /// `len`; nothing on an error). A TLS record is opened this way: its
    /// ciphertext is copied here and decrypted in place, so its plaintext
    /// lands where frames are read, with no copy in between.
    #[cfg(any(test, feature = "tls"))]
    pub(crate) fn append_with<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        self.room_in_chunk(len);
        let chunk = self.chunk.as_ref().expect("room_in_chunk leaves a chunk");
        // SAFETY: room_in_chunk left at least `len` bytes past `filled` in the
        // chunk, which is the active region (no segment is leased). No view
        // covers them (views end at or below `filled`) and nothing else writes
        // them; chunk memory is initialised (zeroed when allocated).
        let tail =
            unsafe { std::slice::from_raw_parts_mut(chunk.ptr.as_ptr().add(self.filled), len) };
        let n = fill(tail)?;
        self.filled += n.min(len);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "buf_tests.rs"]
mod tests;
