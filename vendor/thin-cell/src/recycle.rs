//! Per-thread recycling of cell allocations (ringrpc patch).
//!
//! compio allocates one `ThinCell` per submitted io_uring operation, so an RPC
//! runtime doing a send and a receive per call made two heap allocations per
//! call. Freed cells are kept in a small per-thread cache keyed by layout and
//! handed out again, so steady-state operation allocates nothing.
//!
//! Invariants: every block in the cache came from `std::alloc::alloc` with
//! exactly the layout it is filed under, so a block may be freed either here or
//! by `Box`/`std::alloc::dealloc` with that layout. The cache holds at most
//! [`CLASSES`] layouts × [`PER_CLASS`] blocks per thread; anything beyond goes
//! back to the global allocator, and the cache is emptied when its thread ends.

use std::alloc::{self, Layout};
use std::cell::RefCell;

/// Distinct layouts cached per thread.
const CLASSES: usize = 8;
/// Blocks cached per layout per thread.
const PER_CLASS: usize = 256;

struct Class {
    layout: Layout,
    blocks: Vec<*mut u8>,
}

#[derive(Default)]
struct Cache {
    classes: Vec<Class>,
}

impl Cache {
    fn class(&mut self, layout: Layout) -> Option<&mut Class> {
        self.classes.iter_mut().find(|c| c.layout == layout)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for class in &self.classes {
            for &block in &class.blocks {
                // SAFETY: every cached block was allocated with `class.layout`
                // (module invariant) and is owned by the cache alone.
                unsafe { alloc::dealloc(block, class.layout) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Allocates a block for `layout` (non-zero size), reusing a cached one if any.
pub(crate) fn alloc(layout: Layout) -> *mut u8 {
    let cached = CACHE
        .try_with(|c| {
            c.try_borrow_mut()
                .ok()
                .and_then(|mut c| c.class(layout).and_then(|class| class.blocks.pop()))
        })
        .ok()
        .flatten();
    if let Some(block) = cached {
        return block;
    }
    // SAFETY: callers pass layouts of non-zero size (cells hold a header).
    let block = unsafe { alloc::alloc(layout) };
    if block.is_null() {
        alloc::handle_alloc_error(layout);
    }
    block
}

/// Frees `block`, keeping it for reuse when the cache has room.
///
/// # Safety
/// `block` must have been allocated by the global allocator (directly, through
/// `Box`, or by [`alloc`]) with exactly `layout`, and must not be used again.
pub(crate) unsafe fn dealloc(block: *mut u8, layout: Layout) {
    let kept = CACHE
        .try_with(|c| {
            let Ok(mut cache) = c.try_borrow_mut() else {
                return false;
            };
            if cache.class(layout).is_none() {
                if cache.classes.len() >= CLASSES {
                    return false;
                }
                cache.classes.push(Class {
                    layout,
                    blocks: Vec::with_capacity(PER_CLASS),
                });
            }
            match cache.class(layout) {
                Some(class) if class.blocks.len() < PER_CLASS => {
                    class.blocks.push(block);
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: guaranteed by the caller.
        unsafe { alloc::dealloc(block, layout) };
    }
}
