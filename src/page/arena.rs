//! Arenas: 256 MiB reservations of address space, aligned to their size, one list per
//! NUMA node. The first 4 MiB of an arena hold the page descriptors of all its pages
//! (64 B per 4 KiB page), so `virt_to_page` is arithmetic; the rest is handed to the
//! node's buddy zone one max-order block at a time, as it is needed. Pages are
//! committed by the kernel when first touched (`MAP_NORESERVE`).

use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::MAX_ORDER;
use crate::sys::{self, PAGE_SHIFT};

/// log2 of the arena size.
pub const ARENA_SHIFT: u32 = 28;
/// Bytes in an arena.
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// Mask of the offset inside an arena.
pub const ARENA_MASK: usize = ARENA_SIZE - 1;
/// log2 of the page descriptor size.
pub const DESC_SHIFT: u32 = 6;
/// Bytes in one max-order block.
pub const BLOCK_SIZE: usize = 1 << (MAX_ORDER as u32 + PAGE_SHIFT);
/// Max-order blocks per arena; block 0 holds the descriptors.
pub const BLOCKS_PER_ARENA: usize = ARENA_SIZE / BLOCK_SIZE;

const _: () = assert!((ARENA_SIZE >> PAGE_SHIFT) << DESC_SHIFT == BLOCK_SIZE);

/// One byte per possible arena slot of a 48-bit address space: non-zero where an arena
/// of cpuslab lies, so any address can be recognised as ours without a lock.
static ARENA_MAP: [AtomicU8; 1 << (48 - ARENA_SHIFT)] =
    [const { AtomicU8::new(0) }; 1 << (48 - ARENA_SHIFT)];

/// Bytes that may be resident: arena pages handed out by the zones or free but dirty
/// (not purged), plus huge mappings (live and cached). See `buddy`'s module comment.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
/// Bytes of address space reserved by arenas.
static RESERVED: AtomicUsize = AtomicUsize::new(0);
/// Refuse to commit past this many bytes (`CPUSLAB_HEAP_LIMIT`); 0 means no limit.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// The header of an arena, kept in the descriptors of the descriptor block itself
/// (those pages are never handed out, so their descriptors are free to reuse).
#[repr(C)]
pub struct Arena {
    /// Node whose zone owns this arena.
    pub node: usize,
    /// Next max-order block not yet handed to the zone.
    pub next_block: usize,
    /// Next arena of the same zone (older).
    pub next: *mut Arena,
}

/// Whether `addr` lies inside one of cpuslab's arenas.
#[inline]
pub fn contains(addr: *const u8) -> bool {
    let slot = addr as usize >> ARENA_SHIFT;
    let map: &[AtomicU8; 1 << (48 - ARENA_SHIFT)] = crate::sys::local_static!(ARENA_MAP);
    slot < map.len() && map[slot].load(Ordering::Acquire) != 0
}

/// Maps a new arena for `node`. Returns null when the kernel refuses.
pub fn create(node: usize) -> *mut Arena {
    let base = sys::mmap::map_aligned(ARENA_SIZE, ARENA_SIZE, true);
    if base.is_null() {
        return ptr::null_mut();
    }
    let slot = base as usize >> ARENA_SHIFT;
    if slot >= ARENA_MAP.len() {
        // An address beyond 48 bits (LA57 with a hint): not representable in the map.
        sys::mmap::unmap(base, ARENA_SIZE);
        return ptr::null_mut();
    }
    if crate::topology::nr_node_ids() > 1 {
        sys::numa::bind_preferred(base, ARENA_SIZE, node);
    }
    RESERVED.fetch_add(ARENA_SIZE, Ordering::Relaxed);
    let arena = base.cast::<Arena>();
    // SAFETY: the mapping is fresh, writable and large enough for the header.
    unsafe {
        arena.write(Arena {
            node,
            next_block: 1,
            next: ptr::null_mut(),
        });
    }
    ARENA_MAP[slot].store(1, Ordering::Release);
    arena
}

/// Takes the next unused max-order block of `arena`. Returns null when the arena is
/// exhausted. The block is not charged: its pages are untouched (clean) until the
/// zone hands them out, which charges them.
///
/// # Safety
/// `arena` is live and the caller holds its zone's lock.
pub unsafe fn take_block(arena: *mut Arena) -> *mut u8 {
    if (*arena).next_block >= BLOCKS_PER_ARENA {
        return ptr::null_mut();
    }
    let block = (*arena).next_block;
    (*arena).next_block += 1;
    arena.cast::<u8>().add(block * BLOCK_SIZE)
}

/// Counts `bytes` as committed; false (and nothing counted) past the heap limit.
pub fn charge(bytes: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    let prev = COMMITTED.fetch_add(bytes, Ordering::Relaxed);
    if limit != 0 && prev + bytes > limit {
        COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
        return false;
    }
    note_peak(prev + bytes);
    true
}

/// The most bytes ever committed at once (`malloc_info`'s "max" system memory).
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Raises the peak to `now` (a read-modify-write only when it rises).
#[inline]
fn note_peak(now: usize) {
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// The most bytes committed at once so far.
pub fn peak_committed() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Counts `bytes` as committed even past the heap limit: for pages that become
/// resident where nothing may fail (clean pages merged into a dirty free block).
pub fn charge_always(bytes: usize) {
    note_peak(COMMITTED.fetch_add(bytes, Ordering::Relaxed) + bytes);
}

/// Returns `bytes` charged by [`charge`] or [`charge_always`].
pub fn uncharge(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes committed: arena pages handed out or free but dirty, plus huge mappings.
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

/// Bytes of address space reserved by arenas.
pub fn reserved() -> usize {
    RESERVED.load(Ordering::Relaxed)
}

/// Sets the heap limit in bytes (0: none).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The heap limit in bytes (0: none).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}
