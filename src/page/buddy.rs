//! The buddy allocator of one NUMA node: `free_area[order]` lists of free blocks of
//! 2^order pages, split on allocation and merged with their buddy on free, as in the
//! kernel's `__rmqueue_smallest` / `__free_one_page`.
//!
//! Free blocks carry `PG_ZERO` when their contents are known to be zero (never used, or
//! purged) and their free time, for purging after a delay. Dirty blocks go to the front
//! of their list and are reused first, so memory that is already resident is preferred
//! and clean memory stays untouched.
//!
//! Pages are grouped by what they serve, as the kernel groups pageblocks by migrate
//! type: each max-order block, once split, belongs to one group (`GROUP_SLAB` for slab
//! pages, page lists and metadata, `GROUP_LARGE` for large kmalloc blocks), and its
//! free blocks sit on that group's lists. Slabs are long-lived and small; large blocks
//! come and go whole. Kept apart, a freed large block merges back with its freed
//! neighbours into a block the next large request can use, instead of being split by
//! slab pages and leaving only fragments (which is what sent large requests to fresh
//! memory and grew the resident set). A group takes from the other group's lists only
//! when its own and the whole free max-order blocks have nothing (`__rmqueue_fallback`),
//! the smallest block that fits; whole free max-order blocks belong to no group.
//!
//! A free block is clean (`PG_ZERO`), dirty, or mixed (`PG_MIXED`): a dirty block
//! merged with clean buddies, whose head counts its clean pages. The zone's
//! `dirty_pages` counts exactly the free pages that are resident, and taking a block
//! adds its clean pages to `clean_taken`, which is what tells the purge policy that
//! the footprint grows (see `purge::unlock_after_alloc`). Where the clean pages of a
//! mixed block lie is kept by the merge itself: the head of each merged upper half
//! keeps that half's count, so splitting the block again (in the order of the merges
//! undone) hands each half its own count; a dirty or clean block needs none.
//!
//! The heap limit (`arena::charge`) counts what may be resident: pages handed out plus
//! the resident (dirty) pages of free blocks. A clean free page is not charged (the
//! kernel backs it with no memory until it is touched): taking a clean block out
//! charges its pages, and may be refused; taking a mixed one charges its clean part,
//! never refused (the block is mostly resident already); a freed block's clean pages
//! (freed zero, or the unused part of a block taken) are uncharged. So the zone's
//! charge is always `managed_pages - free_pages + dirty_pages` pages.

use core::ptr;

use super::arena::{self, Arena, BLOCK_SIZE};
use super::desc::{
    page_address, virt_to_page, Page, PG_ALLOCATED, PG_BUDDY, PG_FREED, PG_LARGE, PG_MIXED,
    PG_SLAB, PG_ZERO,
};
use super::list::PageList;
use super::MAX_ORDER;
use crate::sync::{Mutex, MutexGuard};
use crate::sys::{self, PAGE_SHIFT, PAGE_SIZE};

/// Free blocks of one order.
pub struct FreeArea {
    /// The blocks, dirty ones first.
    pub list: PageList,
}

/// Descriptors [`ZoneInner::take_first_fit`] reads at most: a few max-order blocks'
/// worth of allocated and free blocks, a few microseconds, against the page faults
/// of the clean memory it saves.
const FIRST_FIT_STEPS: usize = 512;

/// The group of slab pages, the CPUs' page lists and cpuslab's own blocks.
pub const GROUP_SLAB: usize = 0;
/// The group of large kmalloc blocks.
pub const GROUP_LARGE: usize = 1;
/// Number of groups.
pub const NR_GROUPS: usize = 2;

/// The zone's state, under its lock.
pub struct ZoneInner {
    /// Free lists by group and order. Whole max-order blocks belong to no group and sit
    /// on `free_area[GROUP_SLAB][MAX_ORDER]` alone.
    pub free_area: [[FreeArea; MAX_ORDER + 1]; NR_GROUPS],
    /// Newest arena of this node; older ones follow `Arena::next`.
    arenas: *mut Arena,
    /// Pages handed to this zone by its arenas.
    pub managed_pages: usize,
    /// Pages on the free lists.
    pub free_pages: usize,
    /// Pages of live large kmalloc blocks (`page::alloc_large`), for the statistics.
    pub large_pages: usize,
    /// Pages of cpuslab's own blocks from `alloc_pages_exact` (cache nodes, percpu
    /// chunk headers, RCU lists and batches), for the statistics.
    pub meta_pages: usize,
    /// Free pages that are resident: those of dirty blocks and the dirty part of mixed
    /// ones (purge candidates).
    pub dirty_pages: usize,
    /// Pages given back to the kernel by purging, over the zone's life.
    pub purged_pages: u64,
    /// When the zone last purged (ms).
    pub last_purge_ms: u64,
    /// Clean pages (never touched, or purged) handed out since the zone lock was last
    /// released through `purge::unlock_after_alloc`: the dirty free pages could not
    /// serve them, and the program's footprint grows by them when they are touched.
    pub clean_taken: usize,
    /// The most pages this zone has had resident (in use, and dirty free) since it
    /// last purged by age: taking clean memory purges only what would pass it (see
    /// `purge::unlock_after_alloc`).
    pub resident_mark: usize,
    /// Pages of the blocks a purge took off the lists and has not freed back yet:
    /// neither in use nor free meanwhile.
    pub purging_pages: usize,
    /// Where the last large block of no power-of-two size ended, inside the max-order
    /// block it came from (null when it ended at that block's end), or where the last
    /// one was freed: the next such block is packed there
    /// ([`take_at_cursor`](Self::take_at_cursor)).
    large_cursor: *mut Page,
}

// SAFETY: the raw pointers are only followed under the zone lock.
unsafe impl Send for ZoneInner {}

/// The clean pages of the free block of `order` headed by `page`: all, none, or the
/// count the head of a mixed block holds.
///
/// # Safety
/// `page` heads a free block of a zone whose lock the caller holds.
unsafe fn clean_pages(page: *mut Page, order: usize) -> usize {
    // SAFETY: the caller's contract: a free block's descriptor, under the zone lock.
    let flags = unsafe { (*page).flags() };
    if flags & PG_ZERO != 0 {
        1 << order
    } else if flags & PG_MIXED != 0 {
        // SAFETY: as above.
        unsafe { (*page).active as usize }
    } else {
        0
    }
}

/// The clean pages of `half`, the upper half (of `order`) of a free block with
/// `clean` clean pages: none or all of them when that block is dirty or clean, else
/// the count the half's head kept when the halves merged.
///
/// # Safety
/// The block is free (on a list, or taken off one under the zone lock the caller
/// holds, and not yet written to).
unsafe fn upper_clean(half: *mut Page, order: usize, clean: usize) -> usize {
    if clean == 0 {
        0
    } else if clean == 2 << order {
        1 << order
    } else {
        // SAFETY: the caller's contract; a mixed block's upper half has its count.
        unsafe { (*half).active as usize }
    }
}

/// The clean pages of the aligned block `sub` of `sub_order` inside the free block
/// headed by `root` (of `order`, with `clean` clean pages), found down the halves as
/// splits would go.
///
/// # Safety
/// As [`upper_clean`], for the block at `root`, which holds `sub`.
unsafe fn clean_within(
    mut root: *mut Page,
    mut order: usize,
    mut clean: usize,
    sub: *mut Page,
    sub_order: usize,
) -> usize {
    while order > sub_order {
        order -= 1;
        // SAFETY: the upper half lies inside the block; the caller's contract.
        let (half, half_clean) = unsafe {
            let half = root.add(1 << order);
            (half, upper_clean(half, order, clean))
        };
        if sub >= half {
            root = half;
            clean = half_clean;
        } else {
            clean -= half_clean;
        }
    }
    clean
}

/// The clean pages of each block of a run freed with [`ZoneInner::free_run`].
#[derive(Clone, Copy, Debug)]
pub enum RunClean {
    /// Every page was used.
    Dirty,
    /// Every page reads as zero.
    Zero,
    /// The run is the unused part of a block just taken (`take` leaves the count in
    /// its head): each of its blocks has what it had in there.
    Within {
        /// The head of the block taken.
        root: *mut Page,
        /// Its order.
        order: usize,
        /// Its clean pages.
        clean: usize,
    },
}

/// The page allocator of one node. All zero bytes until it first maps an arena, so the
/// static array of every node's zone sits in `.bss` and costs a program no resident
/// page for the nodes it never uses (the node id is therefore the caller's to pass).
pub struct Zone {
    inner: Mutex<ZoneInner>,
}

impl Default for Zone {
    fn default() -> Self {
        Self::new()
    }
}

impl Zone {
    /// An empty zone; it maps arenas when first asked for pages.
    pub const fn new() -> Self {
        Self {
            inner: Mutex::new(ZoneInner {
                free_area: [const {
                    [const {
                        FreeArea {
                            list: PageList::new(),
                        }
                    }; MAX_ORDER + 1]
                }; NR_GROUPS],
                arenas: ptr::null_mut(),
                managed_pages: 0,
                free_pages: 0,
                large_pages: 0,
                meta_pages: 0,
                dirty_pages: 0,
                purged_pages: 0,
                last_purge_ms: 0,
                clean_taken: 0,
                resident_mark: 0,
                purging_pages: 0,
                large_cursor: ptr::null_mut(),
            }),
        }
    }

    /// Takes the zone lock.
    pub fn lock(&self) -> MutexGuard<'_, ZoneInner> {
        self.inner.lock()
    }

    /// The zone's mutex itself, for fork handlers.
    pub fn mutex(&self) -> &Mutex<ZoneInner> {
        &self.inner
    }

    /// Allocates a block of 2^order pages from this zone, which is `node`'s (the node
    /// new arenas are bound to). Returns its head descriptor (flagged `PG_ALLOCATED`,
    /// plus `PG_ZERO` when the block reads as zero), or null when no memory can be had.
    pub fn alloc(&self, node: usize, order: usize) -> *mut Page {
        let mut z = self.lock();
        // SAFETY: under the zone lock.
        let page = unsafe { z.rmqueue(order, node) };
        super::purge::unlock_after_alloc(self, z);
        page
    }

    /// Frees a dirty block of 2^order pages headed by `page`, merging it with free
    /// buddies.
    ///
    /// # Safety
    /// `page` heads a block of this zone allocated with this order and no longer used.
    pub unsafe fn free(&self, page: *mut Page, order: usize) {
        let now = sys::time::now_ms();
        let mut z = self.lock();
        // SAFETY: under the zone lock just taken; `page` heads a block of this zone,
        // handed out with this order and no longer used.
        unsafe { z.free_one(page, order, 0, now) };
    }
}

impl ZoneInner {
    /// `__rmqueue_smallest` for [`GROUP_SLAB`]; see [`rmqueue_group`](Self::rmqueue_group).
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn rmqueue(&mut self, order: usize, node: usize) -> *mut Page {
        // SAFETY: the caller holds the zone lock.
        unsafe { self.rmqueue_group(order, node, GROUP_SLAB) }
    }

    /// The list of free blocks of `order` for `group` (the shared one at max order).
    fn list_index(group: usize, order: usize) -> (usize, usize) {
        if order == MAX_ORDER {
            (GROUP_SLAB, MAX_ORDER)
        } else {
            (group, order)
        }
    }

    /// The list (group, order) of the smallest of `orders` whose list for `group` leads
    /// with a dirty block (`dirty`), or has any block.
    unsafe fn find(
        &self,
        group: usize,
        mut orders: impl Iterator<Item = usize>,
        dirty: bool,
    ) -> Option<(usize, usize)> {
        orders.find_map(|o| {
            let (g, o) = Self::list_index(group, o);
            let f = self.free_area[g][o].list.first();
            // SAFETY: a non-null `f` heads a free block on one of this zone's lists, so
            // its descriptor is mapped; `flags` is atomic.
            (!f.is_null() && (!dirty || unsafe { (*f).flags() } & PG_ZERO == 0)).then_some((g, o))
        })
    }

    /// `__rmqueue`: a block of 2^order pages for `group`, from the group's own lists and
    /// the whole max-order blocks, dirty before clean (a dirty block is resident
    /// already, so splitting a larger one costs no memory, while a clean one adds what
    /// it hands out to the resident set: jemalloc's dirty-before-retained order; dirty
    /// blocks lead their lists); then the other group's dirty blocks
    /// (`__rmqueue_fallback`); then a new max-order block from the arenas; then the
    /// other group's clean blocks. Smallest
    /// order first everywhere: a steal takes the fragment that fits rather than
    /// splitting one of the other group's whole blocks (the kernel steals the largest,
    /// but then moves the rest of the pageblock to the thief's lists; here the rest
    /// would stay behind as fragments that neither group uses). A clean block
    /// is charged to the heap limit; past it only dirty blocks are handed out.
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn rmqueue_group(&mut self, order: usize, node: usize, group: usize) -> *mut Page {
        if order > MAX_ORDER {
            return ptr::null_mut();
        }
        // SAFETY: the caller holds the zone lock; `order <= MAX_ORDER`, checked above.
        let page = unsafe { self.rmqueue_dirty(order, group) };
        if !page.is_null() {
            return page;
        }
        // SAFETY: as above.
        unsafe { self.rmqueue_clean(order, node, group) }
    }

    /// The first choice of [`rmqueue_group`](Self::rmqueue_group): a dirty block of the
    /// group's own lists (the whole max-order blocks' included). Null when there is none.
    ///
    /// # Safety
    /// Called under the zone lock; `order <= MAX_ORDER`.
    pub unsafe fn rmqueue_dirty(&mut self, order: usize, group: usize) -> *mut Page {
        // SAFETY: the caller holds the zone lock.
        match unsafe { self.find(group, order..=MAX_ORDER, true) } {
            // SAFETY: under the zone lock; `find` saw a block on list (`g`, `o`), of an
            // order at or above `order`.
            Some((g, o)) => unsafe { self.take(g, o, order, group) },
            None => ptr::null_mut(),
        }
    }

    /// The rest of [`rmqueue_group`](Self::rmqueue_group), once no dirty block of the
    /// group's own fits.
    ///
    /// # Safety
    /// Called under the zone lock; `order <= MAX_ORDER`.
    pub unsafe fn rmqueue_clean(&mut self, order: usize, node: usize, group: usize) -> *mut Page {
        // The group's own lists (the whole max-order blocks' included), and the other
        // group's below max order.
        let own = || order..=MAX_ORDER;
        let other = group ^ 1;
        let steal = || order..MAX_ORDER;
        // SAFETY: the caller holds the zone lock.
        let own_clean = unsafe { self.find(group, own(), false) };
        if let Some((g, o)) = own_clean {
            // The group's own clean block before the other group's dirty one, which
            // stays whole for that group.
            if arena::charge(PAGE_SIZE << order) {
                // SAFETY: under the zone lock; `find` saw a block on list (`g`, `o`), of
                // an order at or above `order`.
                return unsafe { self.take(g, o, order, group) };
            }
        }
        // A dirty block of the other group: resident already, and charged (so also
        // past the heap limit).
        // SAFETY: the caller holds the zone lock.
        if let Some((g, o)) = unsafe { self.find(other, steal(), true) } {
            // SAFETY: as for the group's own clean block above.
            return unsafe { self.take(g, o, order, group) };
        }
        if own_clean.is_some() {
            // Past the heap limit.
            return ptr::null_mut();
        }
        // Clean memory now: a new block from the arenas before the other group's clean
        // blocks, which would leave fragments there; those when the arenas can give no
        // more (the address space or the heap limit).
        // SAFETY: the caller holds the zone lock.
        let (g, o) = unsafe {
            if self.grow(node, order) {
                (GROUP_SLAB, MAX_ORDER)
            } else if let Some(at) = self.find(other, steal(), false) {
                at
            } else {
                return ptr::null_mut();
            }
        };
        if !arena::charge(PAGE_SIZE << order) {
            return ptr::null_mut();
        }
        // SAFETY: under the zone lock; list (`g`, `o`) holds the max-order block `grow`
        // just added, or the block `find` saw, of an order at or above `order`.
        unsafe { self.take(g, o, order, group) }
    }

    /// Takes the first block of list (`g`, `cur`) and splits it down to `order` for the
    /// group that asked (`expand`). The clean pages of the block handed out are added
    /// to `clean_taken` and left in its head's `active` for the caller (see
    /// [`RunClean::Within`]).
    ///
    /// # Safety
    /// Called under the zone lock; the list is not empty.
    unsafe fn take(&mut self, g: usize, mut cur: usize, order: usize, group: usize) -> *mut Page {
        if cur == MAX_ORDER {
            // A whole block is split, or handed out whole (a large block of 2^MAX_ORDER
            // pages or fewer, whose tail goes back): it joins the group that asked, so
            // that what it frees returns to that group's lists.
            let page = self.free_area[GROUP_SLAB][MAX_ORDER].list.first();
            // SAFETY: the list is not empty: `page` heads a free max-order block of this
            // zone, whose group byte is written under the zone lock.
            unsafe { *arena::group_of(page) = group as u8 };
        }
        let mut page = self.free_area[g][cur].list.pop_front();
        // SAFETY: the list was not empty: `page` heads a free block of this zone, whose
        // descriptor belongs to the zone, under its lock.
        let (mut clean, freed_at) = unsafe { (clean_pages(page, cur), (*page).info) };
        // A clean block's pages are charged by the caller (`rmqueue_clean`), which may
        // be refused; a mixed block's clean part here, never refused.
        let charge_clean = clean != 1 << cur;
        self.free_pages -= 1 << cur;
        self.dirty_pages -= (1 << cur) - clean;
        // expand(): hand one half back at each step, with its clean pages. Of a mixed
        // block, the half with more resident pages is kept (the upper one if need
        // be): the allocation reuses them rather than faulting in the other's.
        while cur > order {
            cur -= 1;
            // SAFETY: the upper half lies inside the block taken, whose descriptors are
            // consecutive in its arena's descriptor block; its count, for a mixed
            // block, was kept by its head when it merged.
            let (upper, upper_clean) = unsafe {
                let upper = page.add(1 << cur);
                (upper, upper_clean(upper, cur, clean))
            };
            let lower_clean = clean - upper_clean;
            let (back, back_clean) = if upper_clean < lower_clean {
                let lower = core::mem::replace(&mut page, upper);
                (lower, lower_clean)
            } else {
                (upper, upper_clean)
            };
            clean -= back_clean;
            // SAFETY: under the zone lock; the half is a block of this zone, free and
            // on no list since its block left its list.
            unsafe { self.add_free(back, cur, back_clean, freed_at) };
        }
        self.clean_taken += clean;
        if charge_clean && clean != 0 {
            arena::charge_always(clean << PAGE_SHIFT);
        }
        let zero = if clean == 1 << order { PG_ZERO } else { 0 };
        // SAFETY: the block is off the lists and not yet handed out: its head's
        // descriptor is the zone's alone, under its lock.
        unsafe {
            (*page).init_head(PG_ALLOCATED | zero, order as u8);
            (*page).active = clean as u16;
        }
        page
    }

    /// Takes one more max-order block from this node's arenas, mapping a new arena when
    /// the current one is used up. Not when the heap limit would refuse the 2^order
    /// pages wanted from it anyway.
    unsafe fn grow(&mut self, node: usize, order: usize) -> bool {
        if arena::limit() != 0 && arena::committed() + (PAGE_SIZE << order) > arena::limit() {
            return false;
        }
        // The newest arena's next block, or a block an older one gave back
        // (`release_free_tails`) and can map again.
        let mut block: *mut u8 = ptr::null_mut();
        let mut a = self.arenas;
        while block.is_null() && !a.is_null() {
            // SAFETY: arenas are never unmapped (only blocks of them), and the caller
            // holds this zone's lock.
            unsafe {
                block = arena::take_block(a);
                a = (*a).next;
            }
        }
        if block.is_null() {
            let fresh = arena::create(node);
            if fresh.is_null() {
                return false;
            }
            // SAFETY: the arena was just mapped and is not yet linked anywhere: ours.
            unsafe { (*fresh).next = self.arenas };
            self.arenas = fresh;
            // SAFETY: as above; this zone's lock is held.
            block = unsafe { arena::take_block(fresh) };
            if block.is_null() {
                return false;
            }
        }
        self.managed_pages += BLOCK_SIZE / PAGE_SIZE;
        // SAFETY: under the zone lock; a block fresh from its arena is on no list, and
        // the arena maps the descriptors of every block it hands out.
        unsafe { self.add_free(virt_to_page(block), MAX_ORDER, 1 << MAX_ORDER, 0) };
        true
    }

    /// Gives back to the kernel the address space of the whole free max-order blocks
    /// at the end of each arena, and of blocks an arena mapped but never handed out
    /// (`arena::release_last`): under an address-space limit, the room a program's
    /// freed memory held serves its next mapping, as glibc's freed memory does. Their
    /// dirty pages go with them. Returns the blocks released.
    ///
    /// # Safety
    /// Called under the zone lock (`&mut self`).
    pub unsafe fn release_free_tails(&mut self) -> usize {
        let mut released = 0;
        let mut a = self.arenas;
        while !a.is_null() {
            // SAFETY: arenas live for the process (only their blocks go); their counts
            // and the descriptors of free blocks are the zone's, under its lock.
            unsafe {
                while let Some((block, handed)) = arena::last_block(a) {
                    if handed && !self.unmanage_free_block(block) {
                        break;
                    }
                    arena::release_last(a);
                    released += 1;
                }
                a = (*a).next;
            }
        }
        released
    }

    /// Takes the max-order block at `block` out of the zone when it is free and whole
    /// (off its list, out of the managed, free and dirty counts, its dirty pages
    /// uncharged, the packing cursor out of it), for its arena to give back; false,
    /// and nothing done, when any of it is in use.
    ///
    /// # Safety
    /// Called under the zone lock; `block` is a max-order block this zone was handed.
    unsafe fn unmanage_free_block(&mut self, block: *mut u8) -> bool {
        let head = virt_to_page(block);
        // SAFETY: the caller's contract: the block's descriptors are mapped, and a free
        // block's head is the zone's under its lock.
        unsafe {
            if (*head).flags() & PG_BUDDY == 0 || (*head).order as usize != MAX_ORDER {
                return false;
            }
            let dirty = (1 << MAX_ORDER) - clean_pages(head, MAX_ORDER);
            self.dirty_pages -= dirty;
            arena::uncharge(dirty << PAGE_SHIFT);
            self.del_free(head, MAX_ORDER);
        }
        self.managed_pages -= 1 << MAX_ORDER;
        let cur = self.large_cursor;
        if !cur.is_null() && page_address(cur) as usize & !(BLOCK_SIZE - 1) == block as usize {
            self.large_cursor = ptr::null_mut();
        }
        true
    }

    /// The list a free block of `order` headed by `page` belongs on: its block's group's,
    /// or the shared one of whole max-order blocks.
    ///
    /// # Safety
    /// `page` heads a block of this zone.
    unsafe fn list_of(&mut self, page: *mut Page, order: usize) -> &mut PageList {
        // SAFETY: `page` heads a block of this zone; its group byte is read under the
        // zone lock (`&mut self`).
        let (g, o) = Self::list_index(unsafe { *arena::group_of(page) } as usize, order);
        &mut self.free_area[g][o].list
    }

    /// Puts a free block with `clean` clean pages on its list (no merging): clean at
    /// the back, dirty and mixed in front.
    unsafe fn add_free(&mut self, page: *mut Page, order: usize, clean: usize, freed_at: u64) {
        let pages = 1usize << order;
        debug_assert!(clean <= pages);
        let state = if clean == pages {
            PG_ZERO
        } else if clean == 0 {
            0
        } else {
            PG_MIXED
        };
        // SAFETY: callers pass the head of a block of this zone that is free and on no
        // list: its descriptor is the zone's, under its lock.
        unsafe {
            (*page).set_flags(PG_BUDDY | state);
            (*page).order = order as u8;
            (*page).active = clean as u16;
            (*page).info = freed_at;
        }
        // SAFETY: `page` heads a block of this zone.
        let list = unsafe { self.list_of(page, order) };
        if state == PG_ZERO {
            // SAFETY: `page` is a valid descriptor on no list.
            unsafe { list.push_back(page) };
        } else {
            // SAFETY: as above.
            unsafe { list.push_front(page) };
        }
        self.dirty_pages += pages - clean;
        self.free_pages += pages;
    }

    /// Removes a free block from its list.
    unsafe fn del_free(&mut self, page: *mut Page, order: usize) {
        // SAFETY: callers pass the head of a free block of `order` of this zone, which
        // sits on the list of its group and order.
        unsafe { self.list_of(page, order).remove(page) };
        // SAFETY: off the lists, the block's descriptor is still the zone's, under its
        // lock.
        unsafe { (*page).set_flags(0) };
        self.free_pages -= 1 << order;
    }

    /// `__free_one_page`: merge with free buddies while possible, then list the block.
    /// The block was handed out (so charged); `clean` of its pages read as zero now
    /// (all of them for a block never touched or purged), and are uncharged (see the
    /// module's comment).
    ///
    /// # Safety
    /// Called under the zone lock with a block of this zone.
    pub unsafe fn free_one(
        &mut self,
        mut page: *mut Page,
        mut order: usize,
        clean: usize,
        now_ms: u64,
    ) {
        // Its clean pages are resident no more: they stop counting.
        arena::uncharge(clean << PAGE_SHIFT);
        let mut clean = clean;
        let mut addr = page_address(page) as usize;
        while order < MAX_ORDER {
            let buddy_addr = addr ^ (PAGE_SIZE << order);
            let buddy = virt_to_page(buddy_addr as *const u8);
            // SAFETY: below max order the buddy lies in the same max-order block of this
            // zone, whose descriptors are mapped; `flags` is atomic.
            let bflags = unsafe { (*buddy).flags() };
            // SAFETY: `order` is read only of a free block's head (`PG_BUDDY`), which the
            // zone lock guards.
            if bflags & PG_BUDDY == 0 || unsafe { (*buddy).order } as usize != order {
                break;
            }
            // SAFETY: as above: the buddy heads a free block.
            let buddy_clean = unsafe { clean_pages(buddy, order) };
            self.dirty_pages -= (1 << order) - buddy_clean;
            // SAFETY: under the zone lock; the buddy heads a free block of `order`.
            unsafe { self.del_free(buddy, order) };
            if buddy_addr < addr {
                // The block so far is the upper half: its head keeps its count for the
                // split that undoes this merge (the buddy's head, an upper half, has
                // its count already).
                // SAFETY: `page` heads the block so far, off the lists: the zone's.
                unsafe { (*page).active = clean as u16 };
            }
            clean += buddy_clean;
            addr &= buddy_addr;
            page = virt_to_page(addr as *const u8);
            order += 1;
        }
        // SAFETY: under the zone lock; `page` heads the freed block with the buddies
        // merged into it, taken off their lists: a block of this zone on no list.
        unsafe { self.add_free(page, order, clean, now_ms) };
    }

    /// Frees a run of `npages` pages starting at `page`, as aligned power-of-two blocks,
    /// each with the clean pages `run` says. Returns the clean pages freed.
    ///
    /// # Safety
    /// As [`free_one`](Self::free_one), for every page of the run; for
    /// [`RunClean::Within`], the run lies in that block, untouched since it was taken.
    pub unsafe fn free_run(
        &mut self,
        page: *mut Page,
        npages: usize,
        run: RunClean,
        now_ms: u64,
    ) -> usize {
        let mut freed_clean = 0;
        let mut addr = page_address(page) as usize;
        let end = addr + (npages << PAGE_SHIFT);
        while addr < end {
            let align_order = ((addr >> PAGE_SHIFT).trailing_zeros() as usize).min(MAX_ORDER);
            let mut order = align_order;
            while addr + (PAGE_SIZE << order) > end {
                order -= 1;
            }
            let block = virt_to_page(addr as *const u8);
            let clean = match run {
                RunClean::Dirty => 0,
                RunClean::Zero => 1 << order,
                RunClean::Within {
                    root,
                    order: o,
                    clean,
                } => {
                    // SAFETY: the block taken is off the lists and its unused part
                    // untouched (the caller's contract).
                    unsafe { clean_within(root, o, clean, block, order) }
                }
            };
            freed_clean += clean;
            // SAFETY: the caller's contract, for this aligned block of the run.
            unsafe { self.free_one(block, order, clean, now_ms) };
            addr += PAGE_SIZE << order;
        }
        freed_clean
    }

    /// Takes the pages `[have, want)` after the start of the allocated block headed by
    /// `page` off the free lists, so the block grows in place (jemalloc's extent
    /// expansion): when they are all free in this zone, as whole free blocks from the
    /// block's end, the last of which may reach past `want` (that rest is freed again).
    /// False, with nothing changed, when a page is not free or a clean one cannot be
    /// charged.
    ///
    /// # Safety
    /// Called under the zone lock; `page` heads an allocated block of `have` pages of
    /// this zone, and `[page, page + want)` lies inside one max-order block.
    pub unsafe fn take_following(
        &mut self,
        page: *mut Page,
        have: usize,
        want: usize,
        now_ms: u64,
    ) -> bool {
        let start = page_address(page) as usize;
        // SAFETY: the caller holds the zone lock; `[page + have, page + want)` lies in
        // the max-order block of this zone that holds `[page, page + want)`.
        unsafe {
            self.take_range(
                start + (have << PAGE_SHIFT),
                start + (want << PAGE_SHIFT),
                now_ms,
            )
        }
        .is_some()
    }

    /// Takes the pages `[start, end)` (addresses) off the free lists when they are all
    /// free: whole free blocks from the one holding `start` (the part of it before
    /// `start` stays free, as smaller blocks), the last of which may reach past `end`
    /// (that rest is freed again). Returns `PG_ZERO` when every block taken from reads
    /// as zero, else 0; `None`, with nothing changed, when a page is not free or a
    /// clean one cannot be charged.
    ///
    /// # Safety
    /// Called under the zone lock; `[start, end)` lies inside one max-order block of
    /// this zone.
    unsafe fn take_range(&mut self, start: usize, end: usize, now_ms: u64) -> Option<u32> {
        // SAFETY: the caller holds the zone lock; `start` lies in a max-order block of
        // this zone.
        let first = unsafe { self.free_block_holding(start) }?;
        // Nothing free can hold an allocated page, so each free block in the range
        // starts where the one before ended.
        let mut addr = first;
        let mut clean = 0usize;
        let mut zero = PG_ZERO;
        while addr < end {
            let p = virt_to_page(addr as *const u8);
            // SAFETY: `first <= addr < end`: inside the caller's max-order block, whose
            // descriptors are mapped; `flags` is atomic.
            let flags = unsafe { (*p).flags() };
            if flags & PG_BUDDY == 0 {
                return None;
            }
            // SAFETY: `p` heads a free block (`PG_BUDDY`), guarded by the zone lock.
            let order = unsafe { (*p).order } as usize;
            // SAFETY: as above.
            clean += unsafe { clean_pages(p, order) };
            zero &= flags;
            addr += PAGE_SIZE << order;
        }
        let head = virt_to_page(first as *const u8);
        // SAFETY: `head` heads the free block holding `start`, guarded by the zone lock.
        let (first_order, first_freed_at) = unsafe { ((*head).order as usize, (*head).info) };
        // SAFETY: as above.
        let first_clean = unsafe { clean_pages(head, first_order) };
        // Every clean page of the blocks taken is charged, as if handed out: those
        // given back below are uncharged again (`free_one`, or with the pieces before
        // `start`).
        if clean != 0 && !arena::charge(clean << PAGE_SHIFT) {
            return None;
        }
        let mut addr = first;
        let mut taken_clean = 0;
        let mut last = (head, first_order, first_clean);
        while addr < end {
            let p = virt_to_page(addr as *const u8);
            // SAFETY: the first walk found `p` heading a free block, and nothing changed
            // since but the blocks before it leaving their lists: the zone lock guards it.
            let (order, block_clean) = unsafe {
                let order = (*p).order as usize;
                (order, clean_pages(p, order))
            };
            self.dirty_pages -= (1 << order) - block_clean;
            taken_clean += block_clean;
            last = (p, order, block_clean);
            // SAFETY: under the zone lock; `p` heads a free block of `order`.
            unsafe { self.del_free(p, order) };
            addr += PAGE_SIZE << order;
        }
        // The part before `start` goes back unmerged: each of its blocks' buddies
        // holds pages just taken.
        let mut at = first;
        while at < start {
            let mut order = ((at >> PAGE_SHIFT).trailing_zeros() as usize).min(MAX_ORDER);
            while at + (PAGE_SIZE << order) > start {
                order -= 1;
            }
            let piece = virt_to_page(at as *const u8);
            // SAFETY: a piece of the first block, off the lists and untouched.
            let piece_clean = unsafe { clean_within(head, first_order, first_clean, piece, order) };
            arena::uncharge(piece_clean << PAGE_SHIFT);
            taken_clean -= piece_clean;
            // SAFETY: under the zone lock; a piece of the first block, which left its
            // list above, and on no list.
            unsafe { self.add_free(piece, order, piece_clean, first_freed_at) };
            at += PAGE_SIZE << order;
        }
        if addr > end {
            let rest = (addr - end) >> PAGE_SHIFT;
            let (root, order, clean) = last;
            let run = RunClean::Within { root, order, clean };
            // SAFETY: under the zone lock; `[end, addr)` is the end of the last block
            // taken, off the lists, of this zone and used by nobody.
            taken_clean -=
                unsafe { self.free_run(virt_to_page(end as *const u8), rest, run, now_ms) };
        }
        self.clean_taken += taken_clean;
        Some(zero)
    }

    /// Whether the page at `addr` lies in a free block.
    ///
    /// # Safety
    /// Called under the zone lock; `addr` lies in an arena block of this zone.
    pub unsafe fn holds_free(&self, addr: usize) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.free_block_holding(addr) }.is_some()
    }

    /// The address of the free block that holds the page at `addr`, if that page is
    /// free: the head, aligned to some order at or below it, whose free block is of
    /// that order or more (free blocks do not overlap, so at most one holds it).
    ///
    /// # Safety
    /// Called under the zone lock; `addr` lies in a max-order block of this zone.
    unsafe fn free_block_holding(&self, addr: usize) -> Option<usize> {
        (0..=MAX_ORDER).find_map(|order| {
            let head = addr & !((PAGE_SIZE << order) - 1);
            let p = virt_to_page(head as *const u8);
            // SAFETY: `head` lies in the caller's max-order block, whose descriptors are
            // mapped; `order` is read only of a free block's head, under the zone lock.
            unsafe { (*p).flags() & PG_BUDDY != 0 && (*p).order as usize >= order }.then_some(head)
        })
    }

    /// Next-fit packing of large blocks whose page count is no power of two (glibc's
    /// heap and jemalloc's extents place them end to end): `npages` pages at the
    /// cursor, that is, over the free tail the previous such block left of its
    /// power-of-two block and on into the free pages after it, inside one max-order
    /// block of the large group, starting at a multiple of `align` pages (a power of
    /// two). Without it each block holds its whole power-of-two block's address space
    /// (a 25-page block 32 pages), which an address-space limit counts. Returns the run's head
    /// descriptor (flagged `PG_ALLOCATED`, plus `PG_ZERO` when all of it reads as
    /// zero), or null when the pages there are not free or cannot be charged.
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn take_at_cursor(&mut self, npages: usize, align: usize, now_ms: u64) -> *mut Page {
        let cur = self.large_cursor;
        if cur.is_null() {
            return ptr::null_mut();
        }
        let start = page_address(cur) as usize;
        let end = start + (npages << PAGE_SHIFT);
        let fits = end <= (start | (BLOCK_SIZE - 1)) + 1;
        if !fits
            || (start >> PAGE_SHIFT) & (align - 1) != 0
            // SAFETY: the cursor is a page of this zone (see `set_cursor`); its group
            // byte is read under the zone lock.
            || unsafe { *arena::group_of(cur) } as usize != GROUP_LARGE
        {
            return ptr::null_mut();
        }
        // SAFETY: under the zone lock; `fits` keeps `[start, end)` inside the cursor's
        // max-order block, of this zone.
        unsafe { self.take_run(start, end, now_ms) }
    }

    /// [`take_range`](Self::take_range) of `[start, end)` as one allocated block: its
    /// head descriptor (flagged `PG_ALLOCATED`, plus `PG_ZERO` when all of it reads as
    /// zero), or null when a page there is not free or cannot be charged.
    ///
    /// # Safety
    /// As for `take_range`.
    unsafe fn take_run(&mut self, start: usize, end: usize, now_ms: u64) -> *mut Page {
        // SAFETY: the caller's contract.
        let Some(zero) = (unsafe { self.take_range(start, end, now_ms) }) else {
            return ptr::null_mut();
        };
        let head = virt_to_page(start as *const u8);
        // SAFETY: `head` heads the run just taken off the lists, not yet handed out: the
        // zone's alone.
        unsafe { (*head).init_head(PG_ALLOCATED | zero, 0) };
        head
    }

    /// First fit of `npages` pages (no power of two) at a multiple of `align` pages,
    /// over runs of free blocks in the large group's max-order blocks, in address
    /// order within each arena (the newest arena first): glibc's and jemalloc's
    /// placement for such blocks. Runs of wholly dirty blocks first; then runs that
    /// may hold mixed blocks (dirty ones with clean pages merged in, as purges under
    /// pressure leave them), never wholly clean ones. A table grown by doubling (each
    /// made before the one it replaces is freed) then lands where the same table
    /// landed in the last round, every round:
    /// the smaller ones in the run the last round's smaller ones left, the largest in
    /// the run the largest left. Taking dirty blocks by order instead (the buddy's own
    /// choice) scatters the smaller ones over the run the largest needs, which then
    /// takes clean memory and makes the zone purge what it frees (`purge`'s pressure
    /// rule): in the suite's `hashmap-churn`, 22.8 k page faults where glibc has 2.7 k.
    ///
    /// The walk steps over free blocks by their order and allocated large or internal
    /// blocks by their page count, and leaves a max-order block at a slab or a page it
    /// cannot size; it stops after `FIRST_FIT_STEPS` descriptors. Returns the run's head
    /// descriptor as [`take_at_cursor`](Self::take_at_cursor) does, or null.
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn take_first_fit(&mut self, npages: usize, align: usize, now_ms: u64) -> *mut Page {
        // SAFETY: the caller holds the zone lock.
        let page = unsafe { self.first_fit_pass(npages, align, now_ms, false) };
        if !page.is_null() {
            return page;
        }
        // SAFETY: as above.
        unsafe { self.first_fit_pass(npages, align, now_ms, true) }
    }

    /// One pass of [`take_first_fit`](Self::take_first_fit): over runs of wholly dirty
    /// free blocks, or, with `mixed`, of free blocks with dirty pages in them.
    ///
    /// # Safety
    /// Called under the zone lock.
    unsafe fn first_fit_pass(
        &mut self,
        npages: usize,
        align: usize,
        now_ms: u64,
        mixed: bool,
    ) -> *mut Page {
        let bytes = npages << PAGE_SHIFT;
        let align_bytes = align << PAGE_SHIFT;
        let mut steps = 0;
        let mut a = self.arenas;
        while !a.is_null() {
            // SAFETY: arenas live for the process; their block counts and group bytes
            // change under the zone lock, which the caller holds.
            let handed = unsafe { (*a).next_block };
            for b in 1..handed {
                // SAFETY: as above.
                if unsafe { (*a).groups[b] } as usize != GROUP_LARGE {
                    continue;
                }
                let block = a as usize + b * BLOCK_SIZE;
                let end = block + BLOCK_SIZE;
                let mut addr = block;
                // The start of the free run `addr` is in, if any.
                let mut run = None;
                while addr < end {
                    steps += 1;
                    if steps > FIRST_FIT_STEPS {
                        return ptr::null_mut();
                    }
                    let p = virt_to_page(addr as *const u8);
                    // SAFETY: `addr` lies in a block this zone manages (handed to it),
                    // whose descriptors are mapped; `flags` is atomic.
                    let flags = unsafe { (*p).flags() };
                    let len = if flags & PG_BUDDY != 0 {
                        // SAFETY: `p` heads a free block, whose `order` is written
                        // under the zone lock, which the caller holds.
                        let order = unsafe { (*p).order } as usize;
                        let next = addr + (PAGE_SIZE << order);
                        if flags & PG_ZERO != 0 || (flags & PG_MIXED != 0 && !mixed) {
                            // Clean pages, which a dirty run elsewhere saves faulting in.
                            run = None;
                        } else {
                            let start = *run.get_or_insert(addr);
                            let at = (start + align_bytes - 1) & !(align_bytes - 1);
                            if at + bytes <= next && at + bytes <= end {
                                // SAFETY: under the zone lock; `[at, at + bytes)` lies
                                // inside this max-order block, on the free blocks just
                                // walked. Null only past the heap limit (a mixed run's
                                // clean pages are charged).
                                return unsafe { self.take_run(at, at + bytes, now_ms) };
                            }
                        }
                        PAGE_SIZE << order
                    } else if flags & PG_SLAB == 0 && flags & (PG_LARGE | PG_FREED) != 0 {
                        run = None;
                        // SAFETY: `p` heads a large or internal block, handed out or on a
                        // CPU's list: its page count is written when it is handed out
                        // or resized, under the zone lock.
                        let info = unsafe { (*p).info };
                        if !(1..=1 << MAX_ORDER).contains(&info) {
                            break;
                        }
                        (info as usize) << PAGE_SHIFT
                    } else {
                        // A slab (whose head's words its cache writes under its own
                        // lock), or a page this walk cannot size (on a CPU's list).
                        break;
                    };
                    addr += len;
                }
            }
            // SAFETY: as above.
            a = unsafe { (*a).next };
        }
        ptr::null_mut()
    }

    /// The last resort for a block of `npages` pages at a multiple of `align` pages (a
    /// power of two), once no free block of its order is left and the arenas cannot
    /// grow (an address-space or data limit): the first run of free blocks side by
    /// side, of either group, dirty or clean, that holds it inside one max-order
    /// block. The buddy merges only buddies, so a zone that blocks of no power-of-two
    /// size fragmented holds runs of smaller free blocks that no request of a larger
    /// order finds; glibc's heap, which merges any neighbours, uses them. A scratch
    /// program churning blocks of up to 70 KB on 4 threads failed a `malloc` under
    /// `ulimit -d 300000` with 62 MB free in blocks of at most 32 KiB (glibc ran it
    /// under 260000).
    ///
    /// Walks the free lists; a run is walked once, from its first block (a block
    /// whose page before is free belongs to the run of the block that holds that
    /// page), so the cost is a few descriptor reads per free block. No step bound:
    /// the alternative is a null.
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn take_any_fit(&mut self, npages: usize, align: usize, now_ms: u64) -> *mut Page {
        let bytes = npages << PAGE_SHIFT;
        let align_bytes = align.max(1) << PAGE_SHIFT;
        for lists in &self.free_area {
            for area in lists {
                let mut p = area.list.first();
                while !p.is_null() {
                    let start = page_address(p) as usize;
                    // SAFETY: `p` heads a free block on one of this zone's lists, under
                    // the zone lock the caller holds: its descriptor and links are
                    // mapped and guarded by it.
                    let next = unsafe { (*p).next };
                    let at = (start + align_bytes - 1) & !(align_bytes - 1);
                    let block_end = (start | (BLOCK_SIZE - 1)) + 1;
                    // A block whose page before lies in a free block of the same
                    // max-order block is walked from that block's run instead.
                    let first = start & (BLOCK_SIZE - 1) == 0
                        // SAFETY: the page before `start` lies in the same max-order
                        // block, of this zone; under its lock.
                        || unsafe { self.free_block_holding(start - PAGE_SIZE) }.is_none();
                    if first && at + bytes <= block_end {
                        let mut end = start;
                        while end < at + bytes {
                            let q = virt_to_page(end as *const u8);
                            // SAFETY: `end` lies in the max-order block of `start`, whose
                            // descriptors are mapped, and starts a block (free blocks do
                            // not overlap, so what follows one starts where it ends);
                            // `order` is read only of a free block's head.
                            let order = unsafe {
                                if (*q).flags() & PG_BUDDY == 0 {
                                    break;
                                }
                                (*q).order as usize
                            };
                            end += PAGE_SIZE << order;
                        }
                        if end >= at + bytes {
                            // SAFETY: under the zone lock; `[at, at + bytes)` lies inside
                            // this max-order block, on the free blocks just walked.
                            return unsafe { self.take_run(at, at + bytes, now_ms) };
                        }
                    }
                    p = next;
                }
            }
        }
        ptr::null_mut()
    }

    /// Moves the packing cursor to a large block of no power-of-two size just freed at
    /// `page`: the next such block is packed over its pages, which are resident, rather
    /// than the cursor walking on through clean memory while freed blocks are left
    /// behind as fragments no aligned request fits.
    ///
    /// # Safety
    /// Called under the zone lock; `page` is a page of this zone.
    pub unsafe fn set_cursor_freed(&mut self, page: *mut Page) {
        self.large_cursor = page;
    }

    /// Moves the packing cursor to just past a large block of `npages` pages headed by
    /// `page` (nowhere when that is the end of its max-order block).
    ///
    /// # Safety
    /// Called under the zone lock; `page` heads a block of this zone.
    pub unsafe fn set_cursor(&mut self, page: *mut Page, npages: usize) {
        let end = page_address(page) as usize + (npages << PAGE_SHIFT);
        self.large_cursor = if end & (BLOCK_SIZE - 1) == 0 {
            ptr::null_mut()
        } else {
            // SAFETY: the block does not end its max-order block, so the page after it
            // lies in that block, whose descriptors are consecutive.
            unsafe { page.add(npages) }
        };
    }

    /// Number of free blocks of each order, for buddyinfo.
    pub fn nr_free(&self) -> [usize; MAX_ORDER + 1] {
        core::array::from_fn(|o| self.free_area.iter().map(|g| g[o].list.len()).sum())
    }

    /// Takes dirty or mixed free blocks freed at or before `before_ms` off the free
    /// lists, for purging outside the lock, as many as `out` holds and no more than
    /// `need` resident pages' worth, the largest first. A block with more resident
    /// pages than what is left of `need` is passed over: a purge down to some number of
    /// dirty pages stops within a block of it instead of emptying the zone (it took
    /// every dirty block before, up to 32 at a time). Each head keeps its clean pages
    /// in `active`. Returns how many blocks it took.
    ///
    /// # Safety
    /// Called under the zone lock.
    pub unsafe fn take_dirty(
        &mut self,
        before_ms: u64,
        need: usize,
        out: &mut [(*mut Page, usize)],
    ) -> usize {
        let mut n = 0;
        let mut left = need;
        for order in (0..=MAX_ORDER).rev() {
            for group in 0..NR_GROUPS {
                // SAFETY: the caller holds the zone lock.
                n += unsafe {
                    self.take_dirty_from(group, order, before_ms, &mut left, &mut out[n..])
                };
            }
        }
        n
    }

    /// [`take_dirty`](Self::take_dirty) from one list, within `left` resident pages
    /// (lowered by what it takes).
    ///
    /// # Safety
    /// Called under the zone lock.
    unsafe fn take_dirty_from(
        &mut self,
        group: usize,
        order: usize,
        before_ms: u64,
        left: &mut usize,
        out: &mut [(*mut Page, usize)],
    ) -> usize {
        let mut n = 0;
        let mut page = self.free_area[group][order].list.first();
        while !page.is_null() && n < out.len() && *left > 0 {
            // SAFETY: `page` is on this zone's free list, guarded by the zone lock.
            let (next, flags, freed_at, resident) = unsafe {
                let clean = clean_pages(page, order);
                (
                    (*page).next,
                    (*page).flags(),
                    (*page).info,
                    (1 << order) - clean,
                )
            };
            if flags & PG_ZERO != 0 {
                // Dirty blocks sit in front of clean ones: the rest are clean.
                break;
            }
            if freed_at <= before_ms && resident <= *left {
                *left -= resident;
                self.dirty_pages -= resident;
                // SAFETY: under the zone lock; `page` heads a free block of `order`.
                unsafe { self.del_free(page, order) };
                self.purging_pages += 1 << order;
                out[n] = (page, order);
                n += 1;
            }
            page = next;
        }
        n
    }

    /// Pages in use: handed out, on the CPUs' page lists included (not the blocks a
    /// purge has off the lists).
    pub fn in_use(&self) -> usize {
        self.managed_pages - self.free_pages - self.purging_pages
    }

    /// Lowers [`resident_mark`](Self::resident_mark) to what is resident now, after a
    /// purge by age or a full one.
    pub fn reset_mark(&mut self) {
        self.resident_mark = self.in_use() + self.dirty_pages;
    }

    /// The newest arena of this zone.
    pub fn arenas(&self) -> *mut Arena {
        self.arenas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random split and merge against a model of which pages are in use: no block is
    /// handed out twice or overlaps another, alignment holds, and freeing everything
    /// merges the zone back into max-order blocks.
    #[test]
    fn split_and_merge_against_a_model() {
        let zone = Zone::new();
        let mut rng = Xs(0x1234_5678);
        let mut live: Vec<(*mut Page, usize)> = Vec::new();
        let mut used = std::collections::BTreeMap::<usize, usize>::new();
        for step in 0..20_000 {
            if live.is_empty() || !rng.next().is_multiple_of(3) {
                let order = (rng.next() % 6) as usize;
                let page = zone.alloc(0, order);
                assert!(!page.is_null());
                let addr = page_address(page) as usize;
                let len = PAGE_SIZE << order;
                assert_eq!(addr % len, 0, "order {order} block misaligned");
                if let Some((&a, &l)) = used.range(..addr + len).next_back() {
                    assert!(a + l <= addr, "step {step}: overlap with block at {a:#x}");
                }
                used.insert(addr, len);
                live.push((page, order));
            } else {
                let i = (rng.next() % live.len() as u64) as usize;
                let (page, order) = live.swap_remove(i);
                used.remove(&(page_address(page) as usize));
                // SAFETY: allocated above from this zone with this order.
                unsafe { zone.free(page, order) };
            }
            let z = zone.lock();
            let in_use: usize = used.values().map(|l| l / PAGE_SIZE).sum();
            assert_eq!(
                z.free_pages + in_use,
                z.managed_pages,
                "step {step}: pages lost"
            );
        }
        for (page, order) in live {
            // SAFETY: as above.
            unsafe { zone.free(page, order) };
        }
        let z = zone.lock();
        let counts = z.nr_free();
        assert_eq!(
            counts[MAX_ORDER] << MAX_ORDER,
            z.managed_pages,
            "not merged: {counts:?}"
        );
        assert!(counts[..MAX_ORDER].iter().all(|&c| c == 0), "{counts:?}");
    }

    /// A block grows in place over the free pages after it, whole free blocks at a
    /// time, the rest of the last one freed again; not over pages in use.
    #[test]
    fn take_following_grows_a_block_over_free_pages() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; the block's pages are ours until freed.
        unsafe {
            let a = z.rmqueue_group(5, 0, GROUP_LARGE);
            assert!(!a.is_null());
            // An exact allocation of 16 pages: the upper half goes back.
            z.free_run(a.add(16), 16, RunClean::Dirty, 0);
            let free = z.free_pages;
            assert!(z.take_following(a, 16, 32, 0));
            assert_eq!(z.free_pages, free - 16);
            // Past the block's buddy: its 32-page buddy is taken, 24 pages freed again.
            assert!(z.take_following(a, 32, 40, 0));
            assert_eq!(z.free_pages, free - 24);
            // Pages in use are not free.
            assert!(!z.take_following(a, 16, 48, 0));
            assert_eq!(z.free_pages, free - 24);
            z.free_run(a, 40, RunClean::Dirty, 0);
            assert_eq!(z.free_pages, z.managed_pages, "everything merged back");
        }
    }

    /// The packing cursor: a 25-page block is placed where the last one ended, over the
    /// free tail of its 32-page block and the free pages after it; not over pages in
    /// use, not past its max-order block, and not at a misaligned start.
    #[test]
    fn take_at_cursor_packs_blocks_end_to_end() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its size.
        unsafe {
            let a = z.rmqueue_group(5, 0, GROUP_LARGE);
            assert!(!a.is_null());
            z.free_run(a.add(25), 7, RunClean::Zero, 0);
            z.set_cursor(a, 25);
            let free = z.free_pages;
            let b = z.take_at_cursor(25, 1, 0);
            assert_eq!(b, a.add(25), "packed right after the first block");
            assert_eq!(z.free_pages, free - 25);
            assert_ne!((*b).flags() & PG_ZERO, 0, "all of it was never used");
            z.set_cursor(b, 25);
            // Aligned to 2 pages: page 50 is, 51 is not.
            let c = z.take_at_cursor(3, 2, 0);
            assert_eq!(c, a.add(50));
            z.set_cursor(c, 3);
            assert!(z.take_at_cursor(3, 2, 0).is_null(), "page 53 is odd");
            // A block in use at the cursor.
            let d = z.take_at_cursor(4, 1, 0);
            assert_eq!(d, a.add(53));
            z.set_cursor(c, 3);
            assert!(z.take_at_cursor(1, 1, 0).is_null(), "page 53 is in use");
            // Up to the end of the max-order block (the upper half is one free block
            // of order 9 after the split), and then no cursor.
            let base = a.sub((page_address(a) as usize & (BLOCK_SIZE - 1)) >> PAGE_SHIFT);
            z.set_cursor(base.add(500), 12);
            assert!(
                z.take_at_cursor(513, 1, 0).is_null(),
                "crosses the max-order block"
            );
            let e = z.take_at_cursor(512, 1, 0);
            assert_eq!(e, base.add(512));
            z.set_cursor(e, 512);
            assert!(
                z.take_at_cursor(1, 1, 0).is_null(),
                "no cursor past the block's end"
            );
            z.free_run(e, 512, RunClean::Dirty, 0);
            z.free_run(a, 25, RunClean::Dirty, 0);
            z.free_run(b, 25, RunClean::Dirty, 0);
            z.free_run(c, 3, RunClean::Dirty, 0);
            z.free_run(d, 4, RunClean::Dirty, 0);
            assert_eq!(z.free_pages, z.managed_pages, "everything merged back");
        }
    }

    /// The last resort finds a run of free blocks that are no buddies of each other
    /// (so never merge into one of the run's order), at the alignment asked, of
    /// either group; not across pages in use.
    #[test]
    fn take_any_fit_finds_a_run_of_smaller_free_blocks() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its size.
        unsafe {
            let a = z.rmqueue_group(MAX_ORDER, 0, GROUP_SLAB);
            assert!(!a.is_null());
            assert_eq!(z.free_pages, 0, "the zone holds the one block taken");
            // Pages 100..700 free: blocks of orders 2 to 8, none of more than 256
            // pages, so no order-10 request is served from them.
            z.free_run(a.add(100), 600, RunClean::Dirty, 0);
            assert!(z.find(GROUP_SLAB, 9..=MAX_ORDER, false).is_none());
            assert!(z.find(GROUP_LARGE, 9..=MAX_ORDER, false).is_none());
            assert!(z.take_any_fit(601, 1, 0).is_null(), "more than is free");
            assert!(
                z.take_any_fit(600, 64, 0).is_null(),
                "aligned to 64 pages, the run starts at page 128 and ends past 700"
            );
            assert_eq!(z.free_pages, 600, "nothing taken by a failed fit");
            let b = z.take_any_fit(500, 64, 0);
            assert_eq!(b, a.add(128));
            assert_eq!(z.free_pages, 100);
            // What is left: pages 100..128 and 628..700. A request that only both
            // together would hold is refused, one of them serves.
            assert!(z.take_any_fit(73, 1, 0).is_null(), "pages in use between");
            let c = z.take_any_fit(72, 1, 0);
            assert_eq!(c, a.add(628));
            let d = z.take_any_fit(28, 4, 0);
            assert_eq!(d, a.add(100));
            assert_eq!(z.free_pages, 0);
            z.free_run(a, 100, RunClean::Dirty, 0);
            z.free_run(d, 28, RunClean::Dirty, 0);
            z.free_run(b, 500, RunClean::Dirty, 0);
            z.free_run(c, 72, RunClean::Dirty, 0);
            z.free_run(a.add(700), 324, RunClean::Dirty, 0);
            assert_eq!(z.free_pages, z.managed_pages, "everything merged back");
            assert_eq!(z.nr_free()[MAX_ORDER], 1);
        }
    }

    /// The cursor may point inside a free block (a freed packed block merged with a
    /// free neighbour below it): the part of that block before the cursor stays free,
    /// and freeing everything merges the zone back whole.
    #[test]
    fn take_at_cursor_inside_a_free_block() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its size.
        unsafe {
            let a = z.rmqueue_group(5, 0, GROUP_LARGE);
            assert!(!a.is_null());
            // Pages 24..32 free as one order-3 block; the cursor at page 27.
            z.free_run(a.add(24), 8, RunClean::Dirty, 0);
            let (free, dirty) = (z.free_pages, z.dirty_pages);
            z.set_cursor_freed(a.add(27));
            let b = z.take_at_cursor(3, 1, 0);
            assert_eq!(b, a.add(27));
            assert_eq!(z.free_pages, free - 3);
            assert_eq!(
                z.dirty_pages,
                dirty - 3,
                "24..27 and 30..32 stay free, dirty"
            );
            assert_eq!((*b).flags() & PG_ZERO, 0, "dirty pages taken");
            // Pages 24..27 are free blocks again: a cursor at 24 takes them.
            z.set_cursor_freed(a.add(24));
            let c = z.take_at_cursor(3, 1, 0);
            assert_eq!(c, a.add(24));
            z.set_cursor_freed(a.add(26));
            assert!(z.take_at_cursor(2, 1, 0).is_null(), "page 27 is in use");
            z.free_run(a, 24, RunClean::Dirty, 0);
            z.free_run(b, 3, RunClean::Dirty, 0);
            z.free_run(c, 3, RunClean::Dirty, 0);
            assert_eq!(z.free_pages, z.managed_pages, "everything merged back");
            assert_eq!(z.nr_free()[MAX_ORDER] << MAX_ORDER, z.managed_pages);
        }
    }

    /// A freed large block stays whole for the next large request while slab pages
    /// come and go: slab pages are taken from their own group's block (clean), not by
    /// splitting the large group's free dirty block, so the zone does not grow for the
    /// second large block. Without groups, the dirty block was split first.
    #[test]
    fn slab_pages_leave_a_freed_large_block_whole() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its order.
        unsafe {
            // The slab group splits a block of its own first, then large blocks theirs.
            let first = z.rmqueue(0, 0);
            let large = z.rmqueue_group(6, 0, GROUP_LARGE);
            // A live neighbour keeps the freed block from merging into a whole block.
            let neighbour = z.rmqueue_group(6, 0, GROUP_LARGE);
            assert!(!large.is_null() && !neighbour.is_null());
            page_address(large).write(1);
            z.free_one(large, 6, 0, 0);
            let managed = z.managed_pages;
            let slabs: Vec<*mut Page> = (0..200).map(|_| z.rmqueue(0, 0)).collect();
            for &p in &slabs {
                assert!(
                    !(large..large.add(64)).contains(&p),
                    "a slab page split the freed large block"
                );
            }
            let again = z.rmqueue_group(6, 0, GROUP_LARGE);
            assert_eq!(again, large, "the large block is handed out again whole");
            assert_eq!(z.managed_pages, managed, "the zone did not grow");
            z.free_one(again, 6, 0, 0);
            z.free_one(neighbour, 6, 0, 0);
            for p in slabs {
                z.free_one(p, 0, 0, 0);
            }
            z.free_one(first, 0, 0, 0);
            assert_eq!(z.free_pages, z.managed_pages, "everything merged back");
        }
    }

    #[test]
    fn zero_state_survives_split_and_merge() {
        let zone = Zone::new();
        let a = zone.alloc(0, 3);
        // SAFETY: `a` heads a fresh 8-page block.
        unsafe {
            assert_ne!((*a).flags() & PG_ZERO, 0, "fresh memory is zero");
            page_address(a).write(1);
            zone.free(a, 3);
        }
        let b = zone.alloc(0, 3);
        // SAFETY: as above.
        unsafe {
            assert_eq!(b, a, "dirty blocks are reused first");
            assert_eq!((*b).flags() & PG_ZERO, 0, "a used block is dirty");
            zone.free(b, 3);
        }
    }

    /// Two 8-page buddies of a fresh block: A (pages 0..8) and B (8..16).
    ///
    /// # Safety
    /// Under the lock of a fresh zone.
    unsafe fn buddies(z: &mut ZoneInner) -> (*mut Page, *mut Page) {
        // SAFETY: the caller's contract.
        let (a, b) = unsafe { (z.rmqueue(3, 0), z.rmqueue(3, 0)) };
        // SAFETY: `a` heads a block of 8 pages of this zone.
        assert_eq!(b, unsafe { a.add(8) }, "B is A's buddy");
        (a, b)
    }

    /// A dirty block merged with clean buddies (here B, never touched, and the rest
    /// of its max-order block) is mixed: only its own pages count as dirty, and the
    /// splits that take it apart again give each part its own state. Before mixed
    /// blocks, the merged block counted all 1024 pages dirty and handed B out dirty.
    #[test]
    fn a_mixed_block_counts_only_its_dirty_pages() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its order.
        unsafe {
            let (a, b) = buddies(&mut z);
            page_address(a).write(1);
            z.free_one(a, 3, 0, 0);
            assert_eq!(z.dirty_pages, 8);
            z.free_one(b, 3, 8, 0);
            assert_eq!(z.free_pages, z.managed_pages, "merged whole");
            assert_eq!(z.dirty_pages, 8, "only A's pages are resident");
            z.clean_taken = 0;
            let c = z.rmqueue(3, 0);
            assert_eq!(c, a, "A's resident pages are reused");
            assert_eq!((*c).flags() & PG_ZERO, 0);
            assert_eq!((z.clean_taken, z.dirty_pages), (0, 0));
            let d = z.rmqueue(3, 0);
            assert_eq!(d, b);
            assert_ne!((*d).flags() & PG_ZERO, 0, "B comes back clean");
            assert_eq!(z.clean_taken, 8, "and counts as clean memory taken");
            z.free_one(c, 3, 0, 0);
            z.free_one(d, 3, 0, 0);
            assert_eq!(z.dirty_pages, 16);
        }
    }

    /// Of a mixed block, the split keeps the half with the resident pages, the upper
    /// one too: B (dirty) is handed out before A (clean), below it.
    #[test]
    fn a_mixed_block_hands_out_its_dirty_half_first() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its order.
        unsafe {
            let (a, b) = buddies(&mut z);
            page_address(b).write(1);
            z.free_one(a, 3, 8, 0);
            z.free_one(b, 3, 0, 0);
            assert_eq!(z.dirty_pages, 8);
            z.clean_taken = 0;
            let c = z.rmqueue(3, 0);
            assert_eq!(c, b, "the dirty upper half");
            assert_eq!(z.clean_taken, 0);
            let d = z.rmqueue(3, 0);
            assert_eq!(d, a);
            assert_ne!((*d).flags() & PG_ZERO, 0);
            z.free_one(c, 3, 0, 0);
            z.free_one(d, 3, 0, 0);
        }
    }

    /// A mixed block taken whole counts its clean pages as taken; the unused tail of a
    /// block taken (`free_run` with [`RunClean::Within`]) goes back with the clean
    /// pages it had: here pages 5..8 dirty (A's), 8..16 clean (B's).
    #[test]
    fn a_mixed_block_taken_and_its_tail_freed_keep_their_counts() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its size.
        unsafe {
            let (a, b) = buddies(&mut z);
            page_address(a).write(1);
            z.free_one(a, 3, 0, 0);
            z.free_one(b, 3, 8, 0);
            z.clean_taken = 0;
            let block = z.rmqueue(4, 0);
            assert_eq!(block, a);
            assert_eq!(z.clean_taken, 8, "B's pages are faulted in");
            assert_eq!((*block).flags() & PG_ZERO, 0);
            let clean = (*block).active as usize;
            assert_eq!(clean, 8);
            let run = RunClean::Within {
                root: block,
                order: 4,
                clean,
            };
            assert_eq!(z.free_run(block.add(5), 11, run, 0), 8);
            assert_eq!(z.dirty_pages, 3, "pages 5, 6 and 7");
            assert_ne!((*b).flags() & PG_ZERO, 0, "B is free and clean again");
            z.free_run(block, 5, RunClean::Dirty, 0);
            assert_eq!(z.dirty_pages, 8);
            assert_eq!(z.free_pages, z.managed_pages);
        }
    }

    /// Blocks a purge has off the lists count neither as free nor as in use: an
    /// allocation made meanwhile (on another thread, under the lock) would otherwise
    /// see the whole block as in use and move the zone's mark up by it.
    #[test]
    fn blocks_being_purged_are_not_in_use() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; the block is freed with its order.
        unsafe {
            let a = z.rmqueue(3, 0);
            page_address(a).write(1);
            z.free_one(a, 3, 0, 7);
            let in_use = z.in_use();
            // The mixed max-order block A merged into.
            let mut out = [(ptr::null_mut(), 0); 4];
            assert_eq!(z.take_dirty(u64::MAX, usize::MAX, &mut out), 1);
            assert_eq!(out[0].1, MAX_ORDER);
            let all = 1 << MAX_ORDER;
            assert_eq!(
                (z.in_use(), z.purging_pages, z.dirty_pages),
                (in_use, all, 0)
            );
            z.purging_pages -= all;
            z.free_one(out[0].0, MAX_ORDER, all, 7);
            assert_eq!((z.in_use(), z.dirty_pages), (in_use, 0));
        }
    }

    /// A freed block's head can end up inside a free block without `PG_BUDDY`: B
    /// freed alone, then its buddy U, whose merge takes B off its list, and the pair
    /// merges on into L below it. `holds_free` still finds B's page free, which is how
    /// a second free of B is told from an invalid pointer (`page::bad_large`).
    #[test]
    fn a_head_merged_below_is_still_found_free() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its order.
        unsafe {
            let l = z.rmqueue(4, 0);
            let (b, u) = (z.rmqueue(3, 0), z.rmqueue(3, 0));
            assert_eq!((b, u), (l.add(16), l.add(24)));
            let b_addr = page_address(b) as usize;
            assert!(!z.holds_free(b_addr));
            z.free_one(l, 4, 0, 0);
            z.free_one(b, 3, 0, 0);
            z.free_one(u, 3, 0, 0);
            assert_eq!((*b).flags() & PG_BUDDY, 0, "B's head merged away");
            assert!(z.holds_free(b_addr));
            assert_eq!(z.free_pages, z.managed_pages);
        }
    }

    /// A purge down to some number of dirty pages takes blocks up to what it needs,
    /// the largest that fit first, and passes over a block larger than what is left:
    /// of dirty blocks of 8, 4 and 1 pages, a need of 6 takes the 4 and the 1. Before,
    /// it took all three.
    #[test]
    fn a_purge_takes_only_what_it_needs() {
        let zone = Zone::new();
        let mut z = zone.lock();
        // SAFETY: under the zone lock; every block is freed with its order.
        unsafe {
            let (a, b) = buddies(&mut z);
            let (c, d) = (z.rmqueue(2, 0), z.rmqueue(2, 0));
            let (e, f) = (z.rmqueue(0, 0), z.rmqueue(0, 0));
            assert_eq!((c, d, e, f), (a.add(16), a.add(20), a.add(24), a.add(25)));
            for (p, order) in [(a, 3), (c, 2), (e, 0)] {
                page_address(p).write(1);
                z.free_one(p, order, 0, 0);
            }
            assert_eq!(z.dirty_pages, 13, "no dirty block merged");
            let in_use = z.in_use();
            let mut out = [(ptr::null_mut(), 0); 8];
            assert_eq!(z.take_dirty(u64::MAX, 6, &mut out), 2);
            assert_eq!(&out[..2], &[(c, 2), (e, 0)]);
            assert_eq!((z.dirty_pages, z.purging_pages, z.in_use()), (8, 5, in_use));
            z.purging_pages = 0;
            z.free_one(c, 2, 4, 0);
            z.free_one(e, 0, 1, 0);
            for (p, order) in [(b, 3), (d, 2), (f, 0)] {
                z.free_one(p, order, 0, 0);
            }
            assert_eq!(z.free_pages, z.managed_pages);
        }
    }

    /// Whole free blocks at an arena's end give their address space back (the blocks
    /// never handed out too), up to the first block in use; the arena map stops
    /// covering them, and the zone maps them again in place when it grows. A block
    /// whose room another mapping took meanwhile is not: the zone maps a new arena, and
    /// that mapping is left alone.
    #[test]
    fn free_blocks_at_an_arena_end_give_their_room_back() {
        use crate::sys::mmap::{map_exact_at, MapExact};
        let zone = Zone::new();
        let block = |page: *mut Page| page_address(page) as usize;
        // SAFETY: under the zone lock; blocks are freed with the order they were
        // taken with, and the test's own mapping is unmapped by it alone.
        unsafe {
            let mut z = zone.lock();
            let a = z.rmqueue(MAX_ORDER, 0);
            let b = z.rmqueue(MAX_ORDER, 0);
            let c = z.rmqueue(MAX_ORDER, 0);
            assert!(!a.is_null() && !b.is_null() && !c.is_null());
            assert_eq!(
                (block(b) - block(a), block(c) - block(b)),
                (BLOCK_SIZE, BLOCK_SIZE)
            );
            page_address(c).write(1);
            z.free_one(c, MAX_ORDER, 0, 7);
            z.free_one(a, MAX_ORDER, 0, 7);
            let dirty = z.dirty_pages;
            assert!(z.release_free_tails() >= 1);
            // C went, and the blocks after it; B, in use, kept A.
            assert!(!arena::contains(block(c) as *const u8));
            assert!(arena::contains(block(b) as *const u8));
            assert!(arena::contains(block(a) as *const u8));
            let all = 1 << MAX_ORDER;
            assert_eq!((z.managed_pages, z.free_pages), (2 * all, all));
            assert_eq!(z.dirty_pages, dirty - all, "C's dirty pages went with it");
            // The room is the kernel's again: a mapping of exactly C's range fits.
            assert_eq!(
                map_exact_at(block(c) as *mut u8, BLOCK_SIZE, true),
                MapExact::Mapped
            );
            sys::mmap::unmap(block(c) as *mut u8, BLOCK_SIZE);
            // A first (free), then C mapped again in place, reading as zero.
            assert_eq!(z.rmqueue(MAX_ORDER, 0), a);
            let c2 = z.rmqueue(MAX_ORDER, 0);
            assert_eq!(block(c2), block(c));
            assert!(arena::contains(block(c) as *const u8));
            assert_eq!(page_address(c2).read(), 0);
            assert_eq!(z.free_pages + z.in_use(), z.managed_pages);
            // C given back again, and its room taken by someone else.
            z.free_one(c2, MAX_ORDER, 0, 7);
            assert!(z.release_free_tails() >= 1);
            assert_eq!(
                map_exact_at(block(c) as *mut u8, BLOCK_SIZE, true),
                MapExact::Mapped
            );
            (block(c) as *mut u64).write(0x5eed);
            let d = z.rmqueue(MAX_ORDER, 0);
            assert!(!d.is_null());
            assert_ne!(block(d), block(c), "the taken room is not the zone's");
            assert!(!arena::contains(block(c) as *const u8));
            assert_eq!((block(c) as *const u64).read(), 0x5eed);
            sys::mmap::unmap(block(c) as *mut u8, BLOCK_SIZE);
            for p in [a, b, d] {
                z.free_one(p, MAX_ORDER, 0, 7);
            }
            assert_eq!(z.free_pages, z.managed_pages);
        }
    }
}
