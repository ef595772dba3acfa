//! The per-core provided-buffer ring that multishot receives land in.
//!
//! One ring per core, shared by all its connections: the kernel picks a
//! buffer when bytes arrive, so an idle connection holds no receive memory.
//! Buffers are 16-byte aligned. Each received segment is *leased*: the
//! connection's `RecvBuf` reads frames in place from it and hands out views
//! (`FrameBytes`) that keep the lease; a buffer goes back to the kernel once
//! the kernel is done with it (always after its completion, or, on an
//! incremental ring, after a completion without `BUF_MORE`) and the last lease
//! on it is dropped. Invariants: the kernel never owns a buffer that a lease
//! points into; a buffer is provided at most once at a time; the ring memory
//! is freed only when no lease is left (otherwise it is leaked, never
//! dangling).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The buffer group id of every core's ring (each core has its own io_uring).
pub(crate) const GROUP: u16 = 0;

/// How a core's receive buffers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingShape {
    /// Number of buffers (a power of two, at most 32,768).
    pub count: u16,
    /// Bytes per buffer (a multiple of 16).
    pub size: usize,
}

struct BufState {
    /// Leases (segments and views) on this buffer.
    refs: u32,
    /// The kernel may still write into it.
    in_kernel: bool,
}

/// One core's ring of provided receive buffers.
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    mask: u16,
    tail: u16,
    mem: NonNull<u8>,
    mem_layout: Layout,
    size: usize,
    bufs: Vec<BufState>,
    /// Times the ring was found empty (a receive fell back to a plain read).
    dry: u64,
}

thread_local! {
    static RING: RefCell<Option<BufRing>> = const { RefCell::new(None) };
}

impl BufRing {
    fn new(shape: RingShape) -> io::Result<Self> {
        let count = usize::from(shape.count);
        if !shape.count.is_power_of_two() || shape.size % 16 != 0 || shape.size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad buffer ring shape",
            ));
        }
        let entries_layout = Layout::from_size_align(count * size_of::<BufRingEntry>(), 4096)
            .map_err(io::Error::other)?;
        let mem_layout =
            Layout::from_size_align(count * shape.size, 4096).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 16).
        let (entries, mem) = unsafe { (alloc_zeroed(entries_layout), alloc_zeroed(mem_layout)) };
        let (Some(entries), Some(mem)) = (NonNull::new(entries), NonNull::new(mem)) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        Ok(Self {
            entries: entries.cast(),
            entries_layout,
            mask: shape.count - 1,
            tail: 0,
            mem,
            mem_layout,
            size: shape.size,
            bufs: (0..count)
                .map(|_| BufState {
                    refs: 0,
                    in_kernel: false,
                })
                .collect(),
            dry: 0,
        })
    }

    fn buffer(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset lies inside `mem`.
        unsafe { self.mem.as_ptr().add(usize::from(bid) * self.size) }
    }

    /// Gives buffer `bid` (whole) to the kernel.
    fn provide(&mut self, bid: u16) {
        let state = &mut self.bufs[usize::from(bid)];
        debug_assert!(!state.in_kernel && state.refs == 0);
        state.in_kernel = true;
        let addr = self.buffer(bid) as u64;
        let len = u32::try_from(self.size).unwrap_or(u32::MAX);
        // SAFETY: the slot index is masked into the ring, which we allocated
        // with `mask + 1` entries; the kernel only reads entries up to the tail,
        // which we publish after writing this one.
        unsafe {
            let entry = &mut *self
                .entries
                .as_ptr()
                .add(usize::from(self.tail & self.mask));
            entry.set_addr(addr);
            entry.set_len(len);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays the first entry's reserved word, as
        // the kernel defines it; it is a u16 the kernel reads concurrently.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn recycle_if_free(&mut self, bid: u16) {
        let state = &self.bufs[usize::from(bid)];
        if state.refs == 0 && !state.in_kernel {
            self.provide(bid);
        }
    }

    /// Takes the segment a receive completion put in `bid` (`len` bytes from
    /// its start) and leases it once; the kernel is done with the buffer.
    fn take(&mut self, bid: u16, len: usize) -> Option<NonNull<u8>> {
        let base = self.buffer(bid);
        let state = self.bufs.get_mut(usize::from(bid))?;
        if len > self.size || !state.in_kernel {
            return None;
        }
        state.in_kernel = false;
        state.refs += 1;
        NonNull::new(base)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.bufs.iter().any(|b| b.refs > 0) {
            // A lease outlives the core: keep the memory it points into.
            return;
        }
        // SAFETY: allocated in `new` with these layouts; no lease is left and
        // the ring (and its kernel registration) is gone before this runs.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

/// Creates this core's ring and registers it with `register`, which gets the
/// ring address, entry count, group and flags.
///
/// The ring is not incremental (`IOU_PBUF_RING_INC`, 6.12): with it, one
/// buffer takes receives of several sockets and the data of each completion
/// sits at an offset only the order of completions tells; on 6.18 that order
/// did not always match the order the kernel consumed the buffer in (calls
/// lost their bytes under load in `tests/adaptive_pool.rs`), so every
/// completion here gets a whole buffer.
pub(crate) fn install(
    shape: RingShape,
    register: impl Fn(u64, u16, u16, u16) -> io::Result<()>,
) -> io::Result<()> {
    let mut ring = BufRing::new(shape)?;
    register(ring.entries.as_ptr() as u64, shape.count, GROUP, 0)?;
    for bid in 0..shape.count {
        ring.provide(bid);
    }
    RING.with(|r| *r.borrow_mut() = Some(ring));
    Ok(())
}

/// Whether this core receives through a buffer ring.
pub(crate) fn enabled() -> bool {
    RING.with(|r| r.borrow().is_some())
}

/// Drops this core's ring (after the io_uring that used it is gone or idle).
pub(crate) fn uninstall() {
    let ring = RING.with(|r| r.borrow_mut().take());
    drop(ring);
}

/// Leases the segment a completion delivered: `len` bytes in buffer `bid`.
/// `None` if the completion does not fit the ring (never from a sane kernel).
pub(crate) fn take(bid: u16, len: usize) -> Option<NonNull<u8>> {
    RING.with(|r| r.borrow_mut().as_mut()?.take(bid, len))
}

/// Adds a lease on `bid`.
pub(crate) fn retain(bid: u16) {
    RING.with(|r| {
        if let Some(ring) = r.borrow_mut().as_mut() {
            ring.bufs[usize::from(bid)].refs += 1;
        }
    });
}

/// Drops a lease on `bid`; the buffer goes back to the kernel when it was the last.
pub(crate) fn release(bid: u16) {
    let _ = RING.try_with(|r| {
        if let Some(ring) = r.borrow_mut().as_mut() {
            let state = &mut ring.bufs[usize::from(bid)];
            state.refs = state.refs.saturating_sub(1);
            ring.recycle_if_free(bid);
        }
    });
}

/// Notes that a receive found the ring empty.
pub(crate) fn note_dry() {
    RING.with(|r| {
        if let Some(ring) = r.borrow_mut().as_mut() {
            ring.dry += 1;
        }
    });
}

/// Times a receive found this core's ring empty.
pub(crate) fn dry_count() -> u64 {
    RING.with(|r| r.borrow().as_ref().map_or(0, |ring| ring.dry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(ring: &BufRing) -> u16 {
        // SAFETY: reads the published tail of a ring we own.
        unsafe { *BufRingEntry::tail(ring.entries.as_ptr()) }
    }

    #[test]
    fn a_buffer_returns_to_the_kernel_after_its_last_lease() {
        let mut ring = BufRing::new(RingShape { count: 4, size: 64 }).unwrap();
        (0..4).for_each(|b| ring.provide(b));
        assert_eq!(tail(&ring), 4);
        let seg = ring.take(2, 40).unwrap();
        assert_eq!(seg.as_ptr() as usize % 16, 0, "aligned segment");
        assert!(ring.take(2, 40).is_none(), "not the kernel's any more");
        ring.bufs[2].refs += 1; // a view
        ring.bufs[2].refs -= 1;
        ring.recycle_if_free(2);
        assert_eq!(tail(&ring), 4, "still leased");
        ring.bufs[2].refs -= 1;
        ring.recycle_if_free(2);
        assert_eq!(tail(&ring), 5, "provided again");
        assert!(ring.bufs[2].in_kernel);
        assert!(ring.take(3, 65).is_none(), "longer than a buffer");
    }
}
