//! Page descriptors: one 64-byte `Page` per 4 KiB page, at the start of its arena, so
//! that `virt_to_page` is arithmetic on the address (no lock, no lookup).

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

#[cfg(not(loom))]
use super::arena::{ARENA_MASK, DESC_SHIFT};
#[cfg(not(loom))]
use crate::sys::PAGE_SHIFT;

/// Head of a free block on a buddy free list; `order` is valid.
pub const PG_BUDDY: u32 = 1 << 0;
/// Head page of a slab; `cache`, `active` and `info` (the first slot's offset in the
/// arena) are valid.
pub const PG_SLAB: u32 = 1 << 1;
/// Tail page of a multi-page allocation; `head` points at its head page.
pub const PG_TAIL: u32 = 1 << 2;
/// Head page of a large kmalloc block; `info` holds its page count.
pub const PG_LARGE: u32 = 1 << 3;
/// The block's contents are known to read as zero (fresh or purged).
pub const PG_ZERO: u32 = 1 << 4;
/// Head page of a block handed out by the page allocator (slab, large or internal).
pub const PG_ALLOCATED: u32 = 1 << 5;
/// Was the head page of a large block, since freed: set by the free, and kept while the
/// page lies inside a merged free block (merging leaves such pages' flags alone), so a
/// second free of the block is reported as a double free.
pub const PG_FREED: u32 = 1 << 6;
/// A dirty free block with clean pages inside (purged or never used, merged in from a
/// buddy): `active` holds how many, and only the rest is resident (see `buddy`).
pub const PG_MIXED: u32 = 1 << 7;

/// The descriptor of one page, `struct page` in the kernel.
///
/// Fields other than `flags` are owned by whoever owns the page: the zone lock for free
/// blocks, the per-CPU list for pages cached there, the cache's node lock for slabs.
/// `flags` is atomic so that lock-free readers (`usable_size`, invalid-free checks) may
/// look at any page.
#[repr(C, align(64))]
pub struct Page {
    /// `PG_*` bits.
    pub flags: AtomicU32,
    /// Buddy order of a free block, or the order of a slab.
    pub order: u8,
    /// The CPU that last took objects of this slab page into its array cache, plus
    /// one (0: none): the slab layer returns small objects freed on another CPU to it
    /// (see `slab::cache::remote`). Atomic: frees read it without a lock.
    pub owner: AtomicU8,
    /// Objects in use in a slab; also the index of the next free slot in its freelist.
    /// A free buddy block's head: its clean pages; kept by the head of the upper half
    /// of a merged free block, for the split that undoes the merge (see `buddy`).
    pub active: u16,
    /// Tail page: the head page of the allocation it belongs to. A head page: itself.
    pub head: *mut Page,
    /// List links: buddy free lists, per-CPU page lists, slab lists.
    pub next: *mut Page,
    /// See `next`.
    pub prev: *mut Page,
    /// The owning cache of a slab (a `slab::RawCache`), opaque at this layer.
    pub cache: *mut (),
    /// Slab: the low half, the offset in its arena of the first slot (its page's offset
    /// plus its colour). Large: page count. Free: free time (ms).
    pub info: u64,
    /// Pads the descriptor to a cache line. A one-page slab keeps its off-slab freelist
    /// here; a larger slab overlays `next..` of its last (tail) page's descriptor (see
    /// `slab::layout`).
    pub spare: [u8; 16],
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Page>() == 1 << DESC_SHIFT);

impl Page {
    /// Reads the flags.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Replaces the flags.
    #[inline]
    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// Resets the descriptor of a page that becomes the head of a fresh allocation.
    #[inline]
    pub fn init_head(&mut self, flags: u32, order: u8) {
        self.set_flags(flags);
        self.order = order;
        self.owner.store(0, Ordering::Relaxed);
        self.active = 0;
        self.head = self;
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
        self.cache = ptr::null_mut();
        self.info = 0;
    }
}

/// The address of the page described by `page`.
#[cfg(not(loom))]
#[inline(always)]
pub fn page_address(page: *const Page) -> *mut u8 {
    let d = page as usize;
    let base = d & !ARENA_MASK;
    (base + (((d - base) >> DESC_SHIFT) << PAGE_SHIFT)) as *mut u8
}

/// The offset, inside its arena, of the page described by `page`: what
/// [`page_address`] adds to the arena's base. For comparing with an address's own
/// offset in the same arena without forming either base.
#[cfg(not(loom))]
#[inline(always)]
pub fn page_offset(page: *const Page) -> usize {
    (page as usize & ARENA_MASK) << (PAGE_SHIFT - DESC_SHIFT)
}

/// The descriptor of the page holding `addr`, which must lie inside an arena.
#[cfg(not(loom))]
#[inline(always)]
pub fn virt_to_page(addr: *const u8) -> *mut Page {
    let a = addr as usize;
    let base = a & !ARENA_MASK;
    (base + (((a - base) >> PAGE_SHIFT) << DESC_SHIFT)) as *mut Page
}

/// The head descriptor of the allocation holding `addr` (inside an arena).
#[cfg(not(loom))]
#[inline(always)]
pub fn virt_to_head_page(addr: *const u8) -> *mut Page {
    let page = virt_to_page(addr);
    // SAFETY: descriptors of arena pages are always mapped (the arena's first block).
    unsafe {
        if (*page).flags() & PG_TAIL != 0 {
            (*page).head
        } else {
            page
        }
    }
}
