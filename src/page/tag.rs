//! Page tags: one byte per page that the page's owner may set, so that a lookup by
//! address reads a dense table instead of the page's 64-byte descriptor.
//!
//! A free of a pointer without its size (C `free`) has to find the pointer's class. Its
//! page descriptor says, but descriptors are a cache line each: a program that frees
//! blocks at random among a few thousand pages (larson, a server's request state) misses
//! on the descriptor, and for a tail page of a multi-page slab on the head's as well,
//! before it can push the block anywhere. The tags of the same pages are a few KiB,
//! which stay in the first-level cache: tcmalloc's page map and size-class map, and
//! mimalloc's page table, keep their per-page answer this dense for the same reason.
//!
//! The table lives in the arena's descriptor block, in the descriptors of that block's
//! own pages, which are never handed out (the arena header takes the first bytes):
//! a page's tag is the byte at the arena's base plus the page's index, always mapped.
//! Tag 0 means "no tag"; the slab layer sets its caches' tags for every page of a slab
//! while the slab lives (see `RawCache::free_fast_tagged`).

use core::sync::atomic::{AtomicU8, Ordering};

use super::arena::{Arena, ARENA_MASK, BLOCK_SIZE, DESC_SHIFT};
use super::desc::Page;
use crate::sys::PAGE_SHIFT;

// The tags of the pages the zones hand out (those past the descriptor block) lie past
// the arena header.
const _: () = assert!(core::mem::size_of::<Arena>() <= BLOCK_SIZE >> PAGE_SHIFT);

/// The tag of the page holding `addr`, whose offset in its arena is `off`
/// (`arena::offset_in(addr)`, which also proved that `addr` lies in a block the zones
/// may hand out).
///
/// # Safety
/// `off` is `arena::offset_in(addr)`, not `None`.
#[inline(always)]
pub unsafe fn tag_at(addr: *const u8, off: u32) -> usize {
    let t = (addr as usize & !ARENA_MASK) + (off as usize >> PAGE_SHIFT);
    // SAFETY: the tag lies in the first page's worth of descriptors of the descriptor
    // block (64 KiB of bytes, one per page of the arena), mapped with every arena; read
    // atomically, as the owner of another page may set its tag beside it.
    usize::from(unsafe { (*(t as *const AtomicU8)).load(Ordering::Relaxed) })
}

/// Sets the tags of the `pages` pages starting at the one `head` describes.
///
/// # Safety
/// `head` is the descriptor of an arena page the caller owns, with `pages - 1` more
/// after it in the same arena, all owned by the caller; a tag other than 0 says what
/// the pages are to every reader of tags (the slab layer's kmalloc caches').
pub(crate) unsafe fn set_tags(head: *const Page, pages: usize, tag: u8) {
    let d = head as usize;
    let first = (d & !ARENA_MASK) + ((d & ARENA_MASK) >> DESC_SHIFT);
    for i in 0..pages {
        // SAFETY: as in `tag_at`: the tag bytes of the caller's pages.
        unsafe { (*((first + i) as *const AtomicU8)).store(tag, Ordering::Relaxed) };
    }
}
