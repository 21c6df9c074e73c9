//! Huge blocks (more than a max-order block): one mapping each, preceded by a header
//! page so the block can be found, resized with mremap and unmapped.

use core::ptr;

use super::arena;
use crate::sys::{self, PAGE_SIZE};

const HUGE_MAGIC: u64 = 0x6370_7573_6c61_6268; // "cpuslabh"

#[repr(C)]
struct HugeHeader {
    magic: u64,
    /// Start of the whole mapping (may precede the header when the block was aligned).
    map_base: *mut u8,
    /// Length of the whole mapping.
    map_len: usize,
    /// Usable bytes from the block's start to the end of the mapping.
    usable: usize,
}

fn header(block: *mut u8) -> *mut HugeHeader {
    // SAFETY: the header page precedes every huge block.
    unsafe { block.sub(PAGE_SIZE).cast() }
}

/// Maps a huge block of at least `size` bytes aligned to `align`. Null on failure.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    let Some(len) = size
        .checked_add(PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
        .and_then(|s| s.checked_add(PAGE_SIZE))
    else {
        return ptr::null_mut();
    };
    // The header page sits right before the aligned block: map align extra bytes and
    // trim what precedes the header.
    let Some(span) = len.checked_add(align - PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if span > isize::MAX as usize || !arena::charge(span) {
        return ptr::null_mut();
    }
    let raw = sys::mmap::map_aligned(span, PAGE_SIZE, false);
    if raw.is_null() {
        arena::uncharge(span);
        return ptr::null_mut();
    }
    let block = ((raw as usize + PAGE_SIZE + align - 1) & !(align - 1)) as *mut u8;
    let map_base = (block as usize - PAGE_SIZE) as *mut u8;
    let lead = map_base as usize - raw as usize;
    if lead > 0 {
        sys::mmap::unmap(raw, lead);
    }
    let map_len = span - lead;
    arena::uncharge(lead);
    // SAFETY: the header page is mapped and ours.
    unsafe {
        header(block).write(HugeHeader {
            magic: HUGE_MAGIC,
            map_base,
            map_len,
            usable: map_len - PAGE_SIZE,
        });
    }
    block
}

/// Whether `block` heads a live huge block (checks the header's magic).
///
/// # Safety
/// `block` is page-aligned and outside every arena; the page before it must be mapped
/// if it is one of ours.
pub unsafe fn is_huge(block: *mut u8) -> bool {
    (*header(block)).magic == HUGE_MAGIC
}

/// Usable bytes of a huge block.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and not freed.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    (*header(block)).usable
}

/// Unmaps a huge block.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and is not used any more.
pub unsafe fn free(block: *mut u8) {
    let h = header(block);
    if (*h).magic != HUGE_MAGIC {
        sys::io::fatal(format_args!("invalid free of huge block {block:p}"));
    }
    let (base, len) = ((*h).map_base, (*h).map_len);
    (*h).magic = 0;
    sys::mmap::unmap(base, len);
    arena::uncharge(len);
}

/// Resizes a page-aligned huge block with mremap. Returns null, leaving the block
/// intact, when that cannot be done (the caller copies instead).
///
/// # Safety
/// `block` was returned by [`alloc`] with an alignment of at most a page.
pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
    let h = header(block);
    let (base, old_len) = ((*h).map_base, (*h).map_len);
    if base != block.sub(PAGE_SIZE) {
        return ptr::null_mut();
    }
    let Some(new_len) = new_size
        .checked_add(2 * PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
    else {
        return ptr::null_mut();
    };
    if new_len > old_len && !arena::charge(new_len - old_len) {
        return ptr::null_mut();
    }
    let moved = sys::mmap::remap(base, old_len, new_len);
    if moved.is_null() {
        if new_len > old_len {
            arena::uncharge(new_len - old_len);
        }
        return ptr::null_mut();
    }
    if new_len < old_len {
        arena::uncharge(old_len - new_len);
    }
    let h = moved.cast::<HugeHeader>();
    (*h).map_base = moved;
    (*h).map_len = new_len;
    (*h).usable = new_len - PAGE_SIZE;
    moved.add(PAGE_SIZE)
}
