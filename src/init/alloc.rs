//! pilot's global allocator: a fixed arena run by dlmalloc first, musl's malloc after it.
//!
//! musl's mallocng maps and unmaps pages around nearly every burst of allocations (31 mmaps
//! and 23 munmaps, each munmap a TLB flush, for one `pilot run -- /bin/true`): a quarter of
//! that start's CPU (docs/runtime-footprint.md, "Start-up"). dlmalloc over the whole heap
//! removed that but kept whatever it had once held: a refused reload of a 0.9 MB config left
//! 4–31 MB resident (musl: 0.2 MB). So dlmalloc gets one fixed arena, [`ARENA_BYTES`] of
//! `.bss` (resident only as far as it was ever touched): a start, a health check and the
//! supervisor's steady state fit in it and never map or unmap anything; what does not fit
//! (a big config, a burst) goes to musl's malloc, which gives it back. The most pilot can
//! hold beyond musl's behaviour is the arena itself.
//!
//! A block belongs to whichever allocator's memory it is in: inside the arena, dlmalloc's;
//! anywhere else, musl's. Never allocate in spawn's child (init/spawn.rs: it shares pilot's memory):
//! the parent may hold this lock (as it could musl's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The arena's size: more than `pilot run`'s start (about 190 KiB of heap) and a health
/// check's handling need at once.
pub const ARENA_BYTES: usize = 256 << 10;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_BYTES]);

/// The arena's memory, zeroed in `.bss`. Only dlmalloc writes to it, through the pointer it is
/// handed once (`Region::alloc`); nothing else takes a reference to it.
static mut ARENA: Arena = Arena([0; ARENA_BYTES]);

fn arena_start() -> *mut u8 {
    (&raw mut ARENA).cast::<u8>()
}

fn in_arena(ptr: *mut u8) -> bool {
    let start = arena_start() as usize;
    (start..start + ARENA_BYTES).contains(&(ptr as usize))
}

/// dlmalloc's "system": the arena, handed out once, never taken back; every later request
/// for memory fails, and dlmalloc's caller falls back to musl.
struct Region {
    given: Cell<bool>,
}

/// dlmalloc marks a segment it must never unmap or merge with `EXTERN_BIT` (bit 0).
const EXTERN: u32 = 1;

// SAFETY: `alloc` hands out the arena once, whole and unaliased (nothing else uses it), and
// every other request fails; nothing is ever freed or moved, which dlmalloc supports (it is
// how it runs on a fixed region).
unsafe impl dlmalloc::Allocator for Region {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if self.given.get() || size > ARENA_BYTES {
            return (std::ptr::null_mut(), 0, 0);
        }
        self.given.set(true);
        (arena_start(), ARENA_BYTES, EXTERN)
    }
    fn remap(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize, _can_move: bool) -> *mut u8 {
        std::ptr::null_mut()
    }
    fn free_part(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize) -> bool {
        false
    }
    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }
    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        true
    }
    fn page_size(&self) -> usize {
        4096
    }
}

/// dlmalloc's state: pointers into the arena.
struct Heap(dlmalloc::Dlmalloc<Region>);

// SAFETY: the pointers are into the static arena, valid from any thread; the heap is only
// ever used under `Allocator`'s mutex, so never from two threads at once.
unsafe impl Send for Heap {}

/// The allocator for `#[global_allocator]` (main.rs).
pub struct Allocator(Mutex<Heap>);

impl Allocator {
    pub const fn new() -> Allocator {
        Allocator(Mutex::new(Heap(dlmalloc::Dlmalloc::new_with_allocator(Region { given: Cell::new(false) }))))
    }

    /// The arena's heap. A panic while it was held (none is expected: dlmalloc checks only in
    /// debug builds) leaves it as consistent as dlmalloc left it: keep allocating.
    fn heap(&self) -> MutexGuard<'_, Heap> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Allocator {
    fn default() -> Allocator {
        Allocator::new()
    }
}

// SAFETY: a block is served by dlmalloc (from the arena) or by musl's malloc (`System`), each
// with GlobalAlloc's size and alignment contract, and is returned to the one whose memory it
// is in; dlmalloc is only used under the mutex.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as GlobalAlloc::alloc: layout has a non-zero size.
        let p = unsafe { self.heap().0.malloc(layout.size(), layout.align()) };
        // SAFETY: as above.
        if p.is_null() { unsafe { System.alloc(layout) } } else { p }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as alloc.
        let p = unsafe { self.heap().0.calloc(layout.size(), layout.align()) };
        // SAFETY: as alloc.
        if p.is_null() { unsafe { System.alloc_zeroed(layout) } } else { p }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_arena(ptr) {
            // SAFETY: the caller passes a block from this allocator with its layout; in the
            // arena, so dlmalloc's.
            unsafe { self.heap().0.free(ptr, layout.size(), layout.align()) }
        } else {
            // SAFETY: outside the arena, so musl's, with the layout it was allocated with.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_arena(ptr) {
            // SAFETY: musl's block, passed on with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: dlmalloc's block with its layout; new_size is non-zero and valid for it. On
        // failure dlmalloc leaves the old block as it was.
        let p = unsafe { self.heap().0.realloc(ptr, layout.size(), layout.align(), new_size) };
        if !p.is_null() {
            return p;
        }
        // The arena is full: move the block to musl's heap.
        // SAFETY: the caller guarantees new_size rounded to align does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: non-zero size, as above.
        let q = unsafe { System.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size)) };
            // SAFETY: dlmalloc's block, no longer used.
            unsafe { self.heap().0.free(ptr, layout.size(), layout.align()) };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test only: the arena is one static, so a second `Allocator` would share it. (The
    /// test binary's own allocator is the system's; only this instance uses the arena.)
    #[test]
    fn blocks_move_from_the_arena_to_musl_and_back_intact() {
        let a = Allocator::new();
        let fill = |p: *mut u8, n: usize, seed: usize| {
            for i in 0..n {
                // SAFETY: p is a live block of at least n bytes.
                unsafe { *p.add(i) = (i + seed) as u8 };
            }
        };
        let check = |p: *mut u8, n: usize, seed: usize| {
            // SAFETY: p is a live block of at least n bytes.
            (0..n).all(|i| unsafe { *p.add(i) } == (i + seed) as u8)
        };
        // More than the arena holds: the first blocks are dlmalloc's, the rest musl's.
        let mut blocks: Vec<(*mut u8, Layout)> = (0..400)
            .map(|i| {
                let layout = Layout::from_size_align(16 + (i * 97) % 4000, [8, 16, 64, 4096][i % 4]).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % layout.align(), 0);
                fill(p, layout.size(), i);
                (p, layout)
            })
            .collect();
        let inside = blocks.iter().filter(|(p, _)| in_arena(*p)).count();
        assert!(inside > 10 && inside < blocks.len(), "{inside} of {} in the arena", blocks.len());
        // Growing moves arena blocks to musl when the arena is full; contents come along.
        for (i, (p, layout)) in blocks.iter_mut().enumerate() {
            let grown = layout.size() * 3;
            // SAFETY: a live block of this allocator with its layout; non-zero new size.
            let q = unsafe { a.realloc(*p, *layout, grown) };
            assert!(!q.is_null());
            assert!(check(q, layout.size(), i), "block {i} lost its contents");
            *layout = Layout::from_size_align(grown, layout.align()).unwrap();
            *p = q;
        }
        for (p, layout) in blocks.drain(..) {
            // SAFETY: live blocks of this allocator with their layouts.
            unsafe { a.dealloc(p, layout) };
        }
        // Everything was given back: the arena serves again, zeroed where asked.
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(in_arena(p));
        // SAFETY: p is a live block of 1000 bytes.
        assert!((0..1000).all(|i| unsafe { *p.add(i) } == 0));
        // SAFETY: as above.
        unsafe { a.dealloc(p, layout) };
    }
}
