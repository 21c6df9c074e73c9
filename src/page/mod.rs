//! The page pool: arenas per NUMA node, a buddy allocator per node, per-CPU page
//! lists, purging, and the huge heap. The layer under the slab caches.

pub mod arena;
pub mod buddy;
pub mod desc;
pub mod huge;
pub mod list;
pub mod pcp;
pub mod purge;
pub mod setup;
pub mod tag;

pub use desc::{page_address, virt_to_head_page, virt_to_page, Page};

use core::sync::atomic::Ordering;

use desc::{PG_ALLOCATED, PG_BUDDY, PG_FREED, PG_LARGE, PG_TAIL, PG_ZERO};

use crate::cpuset;
use crate::sys::{self, PAGE_SHIFT, PAGE_SIZE};
use crate::topology::{self, MAX_NUMNODES};
use buddy::Zone;

/// Largest buddy order: blocks of 2^MAX_ORDER pages (4 MiB).
pub const MAX_ORDER: usize = 10;

/// Every possible node's zone: zero bytes, in `.bss` (see [`Zone`]).
static ZONES: [Zone; MAX_NUMNODES] = [const { Zone::new() }; MAX_NUMNODES];

/// `node`, or 0 for an out-of-range id (whose zone [`zone`] gives).
#[inline]
fn zone_id(node: usize) -> usize {
    if node < MAX_NUMNODES {
        node
    } else {
        0
    }
}

/// The zone of `node` (node 0's for an out-of-range id).
#[inline]
pub fn zone(node: usize) -> &'static Zone {
    &ZONES[zone_id(node)]
}

/// 2^order pages from the zone of `node` alone (node 0's for an out-of-range id).
fn zone_alloc(node: usize, order: usize) -> *mut Page {
    let node = zone_id(node);
    ZONES[node].alloc(node, order)
}

/// The node an arena page belongs to.
#[inline]
pub fn page_node(page: *const Page) -> usize {
    let arena = (page as usize & !arena::ARENA_MASK) as *const arena::Arena;
    // SAFETY: every arena starts with its header.
    unsafe { (*arena).node }
}

/// The node of the arena holding `addr` (an address inside an arena).
#[inline]
pub fn addr_node(addr: *const u8) -> usize {
    page_node(addr.cast())
}

/// Smallest order whose block holds `bytes`.
pub fn order_for_bytes(bytes: usize) -> usize {
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    pages.next_power_of_two().trailing_zeros() as usize
}

/// Allocates 2^order pages on the node the calling thread's cpuset picks (the CPU's
/// own node when allowed, else the nearest allowed one, or the spread rotor). Order 0
/// on the CPU's own node goes through the CPU's page list. Returns the head descriptor
/// (`PG_ZERO` set when the block reads as zero), or null when memory ran out.
pub fn alloc_pages(order: usize) -> *mut Page {
    let cpu_node = topology::cpu_to_node(sys::cpu::current());
    alloc_pages_node(cpuset::mem_node_for(cpu_node), order)
}

/// 2^order pages from `node`'s zone, else from the other nodes the thread's cpuset
/// allows (`get_page_from_freelist` walking the zonelist; never outside a hardwall).
fn alloc_from_zones(node: usize, order: usize) -> *mut Page {
    with_huge_room(|| alloc_from_zonelist(node, order))
}

/// Spaces out [`with_huge_room`]'s drains of the huge cache, as `kmalloc`'s reclaim:
/// a program that keeps running out of room would otherwise lose its freed huge blocks
/// (and fault their pages in again) at every failed refill.
static HUGE_ROOM: crate::ds::Backoff = crate::ds::Backoff::new(arena::REFUSED_RETRY_MS, 1000);

/// `alloc()`; when it failed where the kernel refused an arena, the freed huge blocks
/// kept for reuse give their room back (purged, their regions are unmapped): under an
/// address-space limit they may hold the room the arenas need (a program that freed a
/// big block and goes on with small ones). The arenas take it when they next ask the
/// kernel, `arena::REFUSED_RETRY_MS` after its refusal (asking at once made a scratch
/// stress, 4 threads churning blocks of up to 9 MB under `ulimit -v 800000`, take 1.3
/// times the CPU time: the drains then count as helping, and come every 10 ms); the
/// one retry here serves only what was freed meanwhile.
fn with_huge_room(mut alloc: impl FnMut() -> *mut Page) -> *mut Page {
    let page = alloc();
    if page.is_null()
        && arena::refused()
        && huge::cached_bytes() > 0
        && HUGE_ROOM.start(sys::time::now_ms())
    {
        huge::drain_cache();
        let page = alloc();
        HUGE_ROOM.helped(!page.is_null());
        return page;
    }
    page
}

/// [`alloc_from_zones`] without giving the huge blocks' room back.
fn alloc_from_zonelist(node: usize, order: usize) -> *mut Page {
    let page = zone_alloc(node, order);
    if !page.is_null() || topology::nr_node_ids() == 1 {
        return page;
    }
    // The zonelist: the other nodes nearest first, those the thread's cpuset allows.
    for other in topology::zonelist(node).filter(|&n| n != node) {
        if cpuset::node_allowed(other) {
            let page = zone_alloc(other, order);
            if !page.is_null() {
                return page;
            }
        }
    }
    core::ptr::null_mut()
}

/// Frees 2^order pages headed by `page`.
///
/// # Safety
/// `page` heads a block allocated by [`alloc_pages`] with this order, no longer used.
pub unsafe fn free_pages(page: *mut Page, order: usize) {
    // SAFETY: the caller's contract.
    unsafe { free_pages_temp(page, order, false) }
}

/// [`free_pages`] of a block whose contents nobody touched lately (the kernel's
/// `free_cold_page`): an order-0 page goes to the cold end of the CPU's list, under
/// the hot pages, so the next hot request does not get it.
///
/// # Safety
/// As for [`free_pages`].
pub unsafe fn free_pages_cold(page: *mut Page, order: usize) {
    // SAFETY: the caller's contract.
    unsafe { free_pages_temp(page, order, true) }
}

/// [`free_pages`], at the hot or the cold end of the CPU's list.
unsafe fn free_pages_temp(page: *mut Page, order: usize, cold: bool) {
    // SAFETY: `page` heads a block handed out by `alloc_pages` that nobody uses any more:
    // its descriptor is ours.
    unsafe { (*page).set_flags(PG_ALLOCATED) };
    let node = page_node(page);
    if order == 0 && topology::cpu_to_node(sys::cpu::current()) == node {
        // SAFETY: at order 0, `page` is an allocated order-0 page nobody uses, on this
        // CPU's node.
        let cached = unsafe {
            if cold {
                pcp::free_cold_pcppage(page)
            } else {
                pcp::free_pcppage(page)
            }
        };
        if cached {
            return;
        }
    }
    let z = zone(node);
    // SAFETY: the block came from its node's zone with this order and is no longer used.
    unsafe { z.free(page, order) };
    purge::maybe_purge(z, sys::time::now_ms());
}

/// `alloc_pages_exact`: allocates exactly `npages` pages aligned to 2^min_order pages
/// (the rest of the power-of-two block goes straight back), flagged `PG_LARGE` with the
/// count in `info`. Null for 0 pages, more than 2^MAX_ORDER, or when memory ran out.
///
/// A count that is a power of two with a per-CPU list ([`pcp::rmqueue_large`]) comes
/// off the calling CPU's list when it has a block: no zone lock, split or merge. Other
/// counts are not cached, so that their tails go back to the zone at once and a
/// 36 KiB buffer never holds 64 KiB.
pub fn alloc_pages_exact(npages: usize, min_order: usize) -> *mut Page {
    exact(npages, min_order, false)
}

/// [`alloc_pages_exact`] for a large kmalloc block: the same, but its pages are counted
/// as large blocks (`ZoneInner::large_pages`) rather than as cpuslab's own metadata.
pub fn alloc_large(npages: usize, min_order: usize) -> *mut Page {
    exact(npages, min_order, true)
}

/// [`alloc_pages_exact`], counting the pages as large blocks or as metadata.
fn exact(npages: usize, min_order: usize, large: bool) -> *mut Page {
    let order = order_for_bytes(npages << PAGE_SHIFT).max(min_order);
    // No pages is no block (the tail run would be the whole block, freed again).
    if npages == 0 || order > MAX_ORDER {
        return core::ptr::null_mut();
    }
    let cpu_node = topology::cpu_to_node(sys::cpu::current());
    let node = cpuset::mem_node_for(cpu_node);
    // Only large kmalloc blocks are cached on the lists, so every block there is one:
    // the pages stay counted in the zone's `large_pages` while they sit there (the
    // statistics subtract the lists), and leave that count when a list gives them
    // back to the zone.
    if large && npages == 1 << order && node == cpu_node {
        let page = pcp::rmqueue_large(order, node);
        if !page.is_null() {
            // SAFETY: a whole block of 2^order pages just taken off the list, ours; its
            // contents are unknown (no `PG_ZERO`), and its descriptors kept what they
            // held when it was last handed out, its page count included (not written
            // again here: the zone's first-fit walk reads it under the zone lock).
            unsafe {
                debug_assert_eq!((*page).info, npages as u64);
                (*page).set_flags(PG_ALLOCATED | PG_LARGE);
            }
            return page;
        }
    }
    with_huge_room(|| exact_from_zones(node, npages, order, min_order, large))
}

/// [`alloc_pages_exact`] from the zone of `node`, else from the other nodes the
/// thread's cpuset allows.
fn exact_from_zones(
    node: usize,
    npages: usize,
    order: usize,
    min_order: usize,
    large: bool,
) -> *mut Page {
    let page = exact_on(node, npages, order, min_order, large);
    if !page.is_null() || topology::nr_node_ids() == 1 {
        return page;
    }
    // The zonelist: the other nodes nearest first, those the thread's cpuset allows.
    for other in topology::zonelist(node).filter(|&n| n != node) {
        if cpuset::node_allowed(other) {
            let page = exact_on(other, npages, order, min_order, large);
            if !page.is_null() {
                return page;
            }
        }
    }
    core::ptr::null_mut()
}

/// [`alloc_pages_exact`] on one node's zone.
fn exact_on(node: usize, npages: usize, order: usize, min_order: usize, large: bool) -> *mut Page {
    let zone = zone(node);
    let now = sys::time::now_ms();
    let mut z = zone.lock();
    let page = exact_locked(&mut z, node, npages, order, min_order, large, now);
    purge::unlock_after_alloc(zone, z);
    page
}

/// [`exact_on`] under the zone lock `z`.
fn exact_locked(
    z: &mut buddy::ZoneInner,
    node: usize,
    npages: usize,
    order: usize,
    min_order: usize,
    large: bool,
    now: u64,
) -> *mut Page {
    // SAFETY: under the zone lock; the tail run is part of the block just taken.
    unsafe {
        // Large blocks keep to blocks of their own group (see `buddy`), where they
        // merge back whole when freed.
        let group = if large {
            buddy::GROUP_LARGE
        } else {
            buddy::GROUP_SLAB
        };
        // A large block of no power-of-two size: the first run of dirty pages that
        // holds it (`take_first_fit`), else a dirty block of its order, both resident
        // already; else it is packed after the last such block (see `take_at_cursor`,
        // which takes exactly `npages`) rather than given a clean power-of-two block of
        // its own; else a clean block.
        let pack = large && !npages.is_power_of_two();
        let mut packed = false;
        let page = if pack {
            let mut page = z.take_first_fit(npages, 1 << min_order, now);
            packed = !page.is_null();
            if page.is_null() {
                page = z.rmqueue_dirty(order, group);
            }
            if page.is_null() {
                page = z.take_at_cursor(npages, 1 << min_order, now);
                packed = !page.is_null();
            }
            if page.is_null() {
                page = z.rmqueue_clean(order, node, group);
            }
            page
        } else {
            z.rmqueue_group(order, node, group)
        };
        // Out of blocks of its order, and the arenas refused to grow: a run of smaller
        // free blocks side by side, as a block of no power-of-two size is placed.
        let page = if page.is_null() {
            packed = true;
            z.take_any_fit(npages, 1 << min_order, now)
        } else {
            page
        };
        if page.is_null() {
            return page;
        }
        let mut zero = (*page).flags() & PG_ZERO;
        let extra = (1 << order) - npages;
        if extra > 0 && !packed {
            // The block's clean pages, left by `take` in its head: the tail's go back
            // with it, and the rest are what this allocation takes.
            let clean = (*page).active as usize;
            let run = buddy::RunClean::Within {
                root: page,
                order,
                clean,
            };
            let freed_clean = z.free_run(page.add(npages), extra, run, now);
            z.clean_taken -= freed_clean;
            zero = if clean - freed_clean == npages {
                PG_ZERO
            } else {
                0
            };
        }
        if pack {
            z.set_cursor(page, npages);
        }
        (*page).set_flags(PG_ALLOCATED | PG_LARGE | zero);
        (*page).info = npages as u64;
        // Counted under the zone lock already held, so the statistics cost nothing.
        if large {
            z.large_pages += npages;
        } else {
            z.meta_pages += npages;
        }
        page
    }
}

/// Frees a block from [`alloc_pages_exact`]: onto the calling CPU's list of its order
/// when its page count is a power of two with a list and the CPU is on its node, else
/// to the zone.
///
/// # Safety
/// `page` heads such a block, no longer used.
pub unsafe fn free_pages_exact(page: *mut Page) {
    // SAFETY: `page` heads a block from `alloc_pages_exact` that nobody uses any more:
    // its head's descriptor is ours.
    let npages = unsafe { (*page).info } as usize;
    // A large kmalloc block reaches here through `free_large`, which has just set its
    // head's flags to `PG_FREED`; cpuslab's own blocks still carry `PG_LARGE`.
    // SAFETY: as above.
    let large = unsafe { (*page).flags() } & PG_FREED != 0;
    let node = page_node(page);
    let index = page_address(page) as usize >> PAGE_SHIFT;
    if large
        && npages.is_power_of_two()
        && index.is_multiple_of(npages)
        && topology::cpu_to_node(sys::cpu::current()) == node
    {
        let order = npages.trailing_zeros() as usize;
        // The head reads as freed while cached (`PG_FREED`, set above), so
        // `large_block` turns away a second free or a realloc of it. Only an aligned
        // buddy block of its order goes on a list: a packed block (`take_at_cursor`)
        // shrunk to a power of two need not be one.
        // SAFETY: an unused block of 2^order pages, aligned to its size (checked above).
        if unsafe { pcp::free_large_pcppage(page, order) } {
            return;
        }
    }
    let zone = zone(node);
    let now = sys::time::now_ms();
    {
        let mut z = zone.lock();
        if large {
            z.large_pages -= npages;
        } else {
            z.meta_pages -= npages;
        }
        // SAFETY: under the zone lock; the block's pages are of this zone (its node's),
        // handed out and no longer used.
        unsafe { z.free_run(page, npages, buddy::RunClean::Dirty, now) };
        if large && !npages.is_power_of_two() {
            // SAFETY: under the zone lock; `page` is a page of this zone.
            unsafe { z.set_cursor_freed(page) };
        }
    }
    purge::maybe_purge(zone, now);
}

/// The head descriptor of the live large block (from [`alloc_pages_exact`]) that
/// starts at `p`, an address inside an arena; `op` (`"free()"`, `"realloc()"`, ...)
/// names the call for the message. Aborts with one `cpuslab:` line when `p` is not
/// such a block's start (an interior or stray pointer) or the block is not live.
///
/// # Safety
/// `p` lies inside an arena (its descriptor is mapped).
pub unsafe fn large_block(p: *mut u8, op: &str) -> *mut Page {
    let page = virt_to_page(p);
    // SAFETY: `p` lies inside an arena, so its descriptor is mapped; `flags` is atomic,
    // for lock-free readers of any page.
    let flags = unsafe { (*page).flags() };
    if p as usize & (PAGE_SIZE - 1) != 0 || flags & (PG_LARGE | PG_TAIL) != PG_LARGE {
        bad_large(p, op, flags);
    }
    page
}

/// Frees the large block that starts at `p` after [`large_block`]'s checks. The head's
/// flags become `PG_FREED` with one compare-and-swap before its pages go back, so of
/// two frees of one block (in turn or racing) the second finds no large block and
/// aborts as a double free, even when the head was merged into a lower free buddy
/// (which leaves a merged page's flags as they were).
///
/// # Safety
/// `p` lies inside an arena; if it is a live large block, nothing uses it any more.
pub unsafe fn free_large(p: *mut u8) {
    // SAFETY: `p` lies inside an arena.
    let page = unsafe { large_block(p, "free()") };
    // SAFETY: `page` is the descriptor of `p`'s page, mapped; `flags` is atomic, so
    // racing frees of the block may both read and swap it.
    let flags = unsafe { (*page).flags() };
    // SAFETY: as above.
    if unsafe {
        (*page)
            .flags
            .compare_exchange(flags, PG_FREED, Ordering::AcqRel, Ordering::Relaxed)
    }
    .is_err()
    {
        bad_large(p, "free()", PG_FREED);
    }
    // SAFETY: `page` heads a live large block (`large_block`), whose free this call
    // claimed with the swap; nobody uses it any more (the caller's contract).
    unsafe { free_pages_exact(page) };
}

/// Aborts for a call `op` on `p`, an arena address that is no live large block's start
/// (its page's flags were `flags`).
#[cold]
fn bad_large(p: *mut u8, op: &str, flags: u32) -> ! {
    let aligned = p as usize & (PAGE_SIZE - 1) == 0;
    if aligned && (flags & (PG_BUDDY | PG_FREED) != 0 || page_is_free(p)) {
        // The page heads a free block, or headed a large block since freed (a racing
        // free that just claimed it reads as the flags it set), or lies in a free
        // block: a freed block's head that merged into a free buddy below it after
        // its own buddy above had merged into it reads as neither.
        let what = if op == "free()" {
            "double free"
        } else {
            "invalid pointer"
        };
        sys::io::fatal(format_args!("{op}: {what} {p:p}: block already freed"));
    }
    sys::io::fatal(format_args!(
        "{op}: invalid pointer {p:p}: not the start of a live block"
    ))
}

/// Whether the page at `p`, in an arena, lies in a free block of its zone.
fn page_is_free(p: *mut u8) -> bool {
    let z = zone(page_node(virt_to_page(p))).lock();
    // SAFETY: under the zone lock; `p` lies in an arena block of its node's zone.
    unsafe { z.holds_free(p as usize) }
}

/// Grows a block from [`alloc_large`] in place to `npages` pages when the pages after
/// it are free. False, with the block unchanged, when they are not, or when the block
/// would no longer start at a multiple of its size rounded up to a power of two (which
/// the per-CPU lists of whole blocks rely on, see [`free_pages_exact`]).
///
/// # Safety
/// `page` heads such a block of fewer than `npages` pages, which the caller owns.
pub unsafe fn grow_pages_exact(page: *mut Page, npages: usize) -> bool {
    // SAFETY: `page` heads a block the caller owns: its head's descriptor is ours.
    let old = unsafe { (*page).info } as usize;
    let span = npages.next_power_of_two();
    let index = page_address(page) as usize >> PAGE_SHIFT;
    if span > 1 << MAX_ORDER || !index.is_multiple_of(span) {
        return false;
    }
    let zone = zone(page_node(page));
    let now = sys::time::now_ms();
    let mut z = zone.lock();
    // SAFETY: under the zone lock; `page` heads a block of `old` pages of this zone,
    // and `[page, page + npages)` lies in the aligned `span` pages, inside one max-order
    // block.
    if !unsafe { z.take_following(page, old, npages, now) } {
        return false;
    }
    z.large_pages += npages - old;
    // SAFETY: as for `old`.
    unsafe { (*page).info = npages as u64 };
    purge::unlock_after_alloc(zone, z);
    true
}

/// Shrinks a block from [`alloc_large`] in place to `npages` pages.
///
/// # Safety
/// `page` heads such a block of more than `npages` pages; the tail is no longer used.
pub unsafe fn shrink_pages_exact(page: *mut Page, npages: usize) {
    // SAFETY: `page` heads a block the caller owns: its head's descriptor is ours.
    let old = unsafe { (*page).info } as usize;
    let zone = zone(page_node(page));
    let now = sys::time::now_ms();
    let mut z = zone.lock();
    // SAFETY: under the zone lock; `npages < old`, so the tail's first page lies in the
    // block, and the tail's pages are of this zone and no longer used.
    unsafe { z.free_run(page.add(npages), old - npages, buddy::RunClean::Dirty, now) };
    z.large_pages -= old - npages;
    // SAFETY: as for `old`.
    unsafe { (*page).info = npages as u64 };
}

/// Gives every cached and free dirty page back to the OS: drains the per-CPU page
/// lists and purges every zone. Returns the bytes purged.
pub fn purge_all() -> usize {
    for cpu in 0..pcp::nr_lists() {
        pcp::drain_pages(cpu);
    }
    let mut pages = 0;
    for node in 0..topology::nr_node_ids() {
        pages += purge::purge_zone_all(zone(node));
    }
    purge::pages_to_bytes(pages)
}

/// Gives back to the kernel the address space of the arenas' free blocks at their
/// ends (after draining the per-CPU page lists, whose pages keep blocks split), for a
/// mapping the kernel refused under an address-space limit; their dirty pages go with
/// them. Blocks are mapped again as the zones need them. Returns the bytes released.
pub fn release_address_space() -> usize {
    for cpu in 0..pcp::nr_lists() {
        pcp::drain_pages(cpu);
    }
    let mut blocks = 0;
    for node in 0..topology::nr_node_ids() {
        // SAFETY: under the zone's lock.
        blocks += unsafe { zone(node).lock().release_free_tails() };
    }
    blocks * arena::BLOCK_SIZE
}

/// Takes every zone lock (fork: prepare), in node order.
pub(crate) fn lock_all() {
    for node in 0..topology::nr_node_ids() {
        zone(node).mutex().lock_raw();
    }
    huge::HUGE.lock_raw();
}

/// Releases the zone locks taken by [`lock_all`].
///
/// # Safety
/// Only after [`lock_all`], by the thread that called it (in the parent or the child).
pub(crate) unsafe fn unlock_all() {
    // SAFETY: `lock_all` took the registry lock, on this thread or the forked child's
    // only one.
    unsafe { huge::HUGE.force_unlock() };
    for node in 0..topology::nr_node_ids() {
        // SAFETY: as above, for every zone lock.
        unsafe { zone(node).mutex().force_unlock() };
    }
}

/// Allocates 2^order pages on `node`: through the calling CPU's page list when the CPU
/// is on that node and the order is 0, else from the node's zone.
pub fn alloc_pages_node(node: usize, order: usize) -> *mut Page {
    if order == 0 && topology::cpu_to_node(sys::cpu::current()) == node {
        let page = pcp::rmqueue_pcplist(node);
        if !page.is_null() {
            return page;
        }
    }
    alloc_from_zones(node, order)
}

/// [`alloc_pages`] for a `__GFP_COLD` request, memory the CPU will not read soon: an
/// order-0 page comes from the cold end of the CPU's list, leaving the hot pages to
/// requests about to fill them.
pub fn alloc_pages_cold(order: usize) -> *mut Page {
    let cpu_node = topology::cpu_to_node(sys::cpu::current());
    let node = cpuset::mem_node_for(cpu_node);
    if order == 0 && node == cpu_node {
        let page = pcp::rmqueue_pcplist_cold(node);
        if !page.is_null() {
            return page;
        }
    }
    alloc_from_zones(node, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::buddy::{RunClean, Zone};

    /// A large block of `npages` pages from the zone whose lock `z` is, as `alloc_large`
    /// takes one.
    fn take(z: &mut buddy::ZoneInner, npages: usize) -> *mut Page {
        let order = order_for_bytes(npages << PAGE_SHIFT);
        let page = exact_locked(z, 0, npages, order, 0, true, 0);
        assert!(!page.is_null());
        page
    }

    /// A large block of no power-of-two size goes to the lowest run of dirty free pages
    /// that holds it, though no dirty buddy block of its order exists and the packing
    /// cursor was moved elsewhere: a 529-page table where a 600-page one was freed (as
    /// blocks of 512, 64, 16 and 8 pages), not over a 9-page block freed later in
    /// another max-order block, whose other pages are clean.
    #[test]
    fn a_large_block_fits_the_lowest_dirty_run() {
        let zone = Zone::new();
        let mut z = zone.lock();
        let free = |z: &mut buddy::ZoneInner, page: *mut Page, npages: usize| {
            // SAFETY: under the zone lock; `page` heads a block of `npages` pages taken
            // by `take` and no longer used.
            unsafe {
                z.large_pages -= npages;
                z.free_run(page, npages, RunClean::Dirty, 0);
                z.set_cursor_freed(page);
            }
        };
        // A fills a max-order block with X; C sits in another.
        let a = take(&mut z, 600);
        let x = take(&mut z, 424);
        // SAFETY: both in one max-order block, whose descriptors are consecutive.
        assert_eq!(x, unsafe { a.add(600) }, "packed end to end");
        let c = take(&mut z, 9);
        free(&mut z, a, 600);
        free(&mut z, c, 9);
        z.clean_taken = 0;
        let d = take(&mut z, 529);
        assert_eq!(d, a, "placed over the 600 pages freed");
        assert_eq!(z.clean_taken, 0, "no clean page taken");
        free(&mut z, d, 529);
        free(&mut z, x, 424);
    }

    /// The first fit takes dirty pages only: a 600-page block goes to a whole dirty
    /// max-order block, not to an earlier one that is mostly clean (8 dirty pages
    /// merged with 1016 never touched), which would fault in 592 pages.
    #[test]
    fn a_large_block_takes_no_mostly_clean_run() {
        let zone = Zone::new();
        let mut z = zone.lock();
        let a = take(&mut z, 8);
        let b = take(&mut z, 1 << MAX_ORDER);
        assert!(a < b);
        // SAFETY: under the zone lock; both blocks were taken above and are unused.
        unsafe {
            z.large_pages -= 8 + (1 << MAX_ORDER);
            z.free_run(a, 8, RunClean::Dirty, 0);
            z.free_run(b, 1 << MAX_ORDER, RunClean::Dirty, 0);
        }
        z.clean_taken = 0;
        let c = take(&mut z, 600);
        assert_eq!(c, b, "placed in the dirty block");
        assert_eq!(z.clean_taken, 0, "no clean page taken");
        // SAFETY: as above.
        unsafe {
            z.large_pages -= 600;
            z.free_run(c, 600, RunClean::Dirty, 0);
        }
    }
}
