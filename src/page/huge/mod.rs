//! Huge blocks (more than a max-order block), carved from the huge heap (`heap.rs`):
//! each is preceded by a header page that records its range, so it can be freed,
//! resized in place or moved by mremap. Live blocks are also listed in a registry
//! (`registry.rs`), so any pointer can be asked whether it is one of ours without
//! touching memory that may not be mapped.
//!
//! A freed block stays resident as a dirty free extent, so the next huge request,
//! of any size its free neighbours make room for, reuses pages already faulted in (as
//! tcmalloc's page heap and jemalloc's retained extents do) instead of faulting every
//! page of a fresh mapping again. Dirty extents are purged (`MADV_DONTNEED`), oldest
//! first, past a budget (see `budget`: what keeps live and cached huge bytes together
//! within the larger of 16 × `CPUSLAB_RETAIN`, 64 MiB by default, and the recent peak
//! of live ones, plus that peak); and when they were freed
//! `CPUSLAB_DECAY_MS` ago, from the next slow path that looks (a huge alloc or free,
//! a page purge check, the background thread); [`drain_cache`] (from `trim`) purges
//! them all. `CPUSLAB_RETAIN=0` or `CPUSLAB_DECAY_MS=0` keep none. A region left with
//! no live block and nothing resident is unmapped. Dirty extents stay charged to the
//! heap limit (they are resident); a request the limit refuses purges them and tries
//! again.

mod heap;
mod registry;

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use heap::{Carved, Extent, Heap, NoRoom, REGION_ALIGN, REGION_SIZE};
use registry::Registry;

use super::{arena, purge};
use crate::sync::Mutex;
use crate::sys::{self, PAGE_SIZE};
use crate::{cpuset, topology};

/// The registry of live blocks and the heap they are carved from, under one lock.
pub(crate) struct Huge {
    reg: Registry,
    heap: Heap,
}

/// The huge blocks' lock and state.
pub(crate) static HUGE: Mutex<Huge> = Mutex::new(Huge {
    reg: Registry::new(),
    heap: Heap::new(),
});

/// When the oldest dirty extent was freed (`u64::MAX`: none), so that decay checks
/// from the page allocator's slow paths cost one load while nothing is due.
static OLDEST_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Dirty extents purged at a time, between two takings of the lock.
const PURGE_BATCH: usize = 8;

impl Huge {
    fn publish_oldest(&self) {
        OLDEST_MS.store(self.heap.oldest_dirty_ms(), Ordering::Relaxed);
    }

    /// The header of the live block `block`, checked; aborts with one line naming
    /// `op` when `block` is not live (a double free when it was freed lately) or its
    /// header was overwritten.
    fn live_header(&self, block: *mut u8, op: &str) -> *mut HugeHeader {
        if self.reg.find(block as usize).is_none() {
            if self.reg.was_freed(block as usize) {
                sys::io::fatal(format_args!(
                    "{op}: {} {block:p}: huge block already freed",
                    if op == "free()" {
                        "double free"
                    } else {
                        "invalid pointer"
                    }
                ));
            }
            sys::io::fatal(format_args!(
                "{op}: invalid pointer {block:p}: not a live block of cpuslab"
            ));
        }
        let h = header(block);
        // SAFETY: a live block's header page is mapped and only its owner writes it.
        let (magic, base, len, region) =
            unsafe { ((*h).magic, (*h).map_base, (*h).map_len, (*h).region) };
        let (b, start) = (block as usize, base as usize);
        // The range must be whole pages holding the header page and at least one page
        // of the block, inside the region it names: anything else would give back or
        // move a range that is not the block's.
        if magic != HUGE_MAGIC
            || start > b - PAGE_SIZE
            || start.saturating_add(len) <= b
            || (start | len) & (PAGE_SIZE - 1) != 0
            || (region != 0 && !self.heap.covers(region, start, len))
        {
            sys::io::fatal(format_args!(
                "{op}: corrupted header of huge block {block:p}"
            ));
        }
        h
    }

    /// Gives the range of a block (or part of one) back to the heap, dirty; when no
    /// slot takes it, it is lost (see [`Huge::lose`]). A block outside the heap
    /// (region 0) is unmapped.
    fn give_dirty(&mut self, base: usize, len: usize, region: usize, now_ms: u64) {
        if region == 0 {
            // A block outside the heap: its mapping is its own.
            sys::mmap::unmap(base as *mut u8, len);
            arena::uncharge(len);
            return;
        }
        let e = Extent {
            base,
            len,
            region,
            dirty: true,
            freed_ms: now_ms,
        };
        if !self.heap.give(e, true) {
            self.lose(base, len, region, true);
        }
        self.publish_oldest();
    }

    /// Leaves `[base, base + len)` of `region`, which no extent slot took, out of the
    /// heap until the region goes: its pages are given back, but it stays mapped, so
    /// the kernel cannot put another mapping in the hole that unmapping the whole
    /// region later would remove with it. Uncharged when `dirty`.
    fn lose(&mut self, base: usize, len: usize, region: usize, dirty: bool) {
        self.heap.lose(region, len, false);
        sys::mmap::purge(base as *mut u8, len);
        if dirty {
            arena::uncharge(len);
        }
    }
}

/// The most bytes the heap keeps in dirty free extents (0: none): the larger of 16 ×
/// `CPUSLAB_RETAIN` and the most bytes of live huge blocks in the last decay period
/// (the peak), plus what the live blocks are below that peak. Every huge alloc, free
/// and resize settles to it, so the resident bytes of huge blocks, live and cached
/// together, stay within the larger of 16 × `CPUSLAB_RETAIN` and the peak, plus the
/// peak: the bound the first term alone gave.
///
/// A program that cycles through a working set of huge blocks of varied sizes needs
/// about the peak in spare to serve each request from pages already faulted in
/// (malloc-large, 4 live blocks of 5-25 MiB: 76k faults with a fixed 64 MiB, 37k with
/// the peak). The second term lets a free add its block to the spare when it leaves
/// the live bytes below their peak: with the peak alone such frees purged the pages
/// the next, larger, request faulted in again (malloc-large 37k faults and 74 ms, now
/// 31k and 62 ms, tcmalloc 35k and 68 ms, at the same peak RSS). A block carved from
/// fresh pages shrinks the budget as much as it adds, and settles it: dirty extents
/// too small for it go then. What the program stops using goes after
/// `CPUSLAB_DECAY_MS`, and `trim()` restarts the peak from what is live.
fn budget(reg: &Registry) -> usize {
    let retain = purge::retain_bytes();
    if retain == 0 || purge::decay_ms() == 0 {
        return 0;
    }
    let peak = reg.recent_peak;
    retain
        .saturating_mul(16)
        .max(peak)
        .saturating_add(peak.saturating_sub(reg.live_bytes))
}

/// The node whose memory the calling thread's new pages come from.
fn current_node() -> usize {
    if topology::nr_node_ids() == 1 {
        return 0;
    }
    cpuset::mem_node_for(topology::cpu_to_node(sys::cpu::current()))
}

/// Number of live huge blocks.
pub fn live_blocks() -> usize {
    HUGE.lock().reg.live
}

/// Bytes of the ranges of live huge blocks (headers included).
pub fn live_bytes() -> usize {
    HUGE.lock().reg.live_bytes
}

/// Bytes of freed huge blocks kept resident for reuse (dirty free extents, part of the
/// committed bytes).
pub fn cached_bytes() -> usize {
    HUGE.lock().heap.dirty_bytes()
}

/// Purges every dirty extent whose decay time has passed. Called from the page
/// allocator's slow paths with the time already read; one load while nothing is due.
pub fn decay(now_ms: u64) {
    if now_ms
        < OLDEST_MS
            .load(Ordering::Relaxed)
            .saturating_add(purge::decay_ms())
    {
        return;
    }
    settle(now_ms, false);
}

/// Purges every dirty extent, and forgets the recent peak of live bytes (the budget
/// starts again from what is live now). Returns the bytes purged.
pub fn drain_cache() -> usize {
    let now = sys::time::now_ms();
    HUGE.lock().reg.reset_peak(now);
    settle(now, true)
}

/// Purges the dirty extents past the budget or their decay time (all of them with
/// `all`), a batch at a time so the lock is not held across the system calls, then
/// unmaps the regions left empty. Returns the bytes purged.
fn settle(now_ms: u64, all: bool) -> usize {
    let decay_ms = purge::decay_ms();
    let mut purged = 0;
    loop {
        let mut batch = [None::<Extent>; PURGE_BATCH];
        {
            let mut h = HUGE.lock();
            let budget = if all { 0 } else { budget(&h.reg) };
            for slot in batch.iter_mut() {
                *slot = h.heap.take_dirty(budget, now_ms, decay_ms);
                if slot.is_none() {
                    break;
                }
            }
            h.publish_oldest();
        }
        let mut taken = 0;
        let mut failed = false;
        for e in batch.iter_mut().flatten() {
            taken += 1;
            if sys::mmap::purge(e.base as *mut u8, e.len) {
                arena::uncharge(e.len);
                purged += e.len;
                e.dirty = false;
            } else {
                failed = true;
            }
        }
        if taken == 0 {
            break;
        }
        {
            let mut h = HUGE.lock();
            for e in batch.iter().flatten() {
                if !h.heap.give(*e, false) {
                    h.lose(e.base, e.len, e.region, e.dirty);
                }
            }
            h.publish_oldest();
        }
        if failed || taken < PURGE_BATCH {
            break;
        }
    }
    // Only purging leaves a region with nothing dirty (a move's clean source aside,
    // which the next purge finds).
    if purged > 0 || all {
        release_empty_regions();
    }
    purged
}

/// Unmaps the regions with no live block and nothing resident.
fn release_empty_regions() {
    loop {
        let Some((base, len)) = HUGE.lock().heap.take_empty_region() else {
            return;
        };
        sys::mmap::unmap(base as *mut u8, len);
    }
}

/// What [`reserve`] did.
enum Reserve {
    /// A region was added to the heap and the request carved, under one lock (so that
    /// no other thread takes the region, or releases it as empty, in between).
    Carved(Carved),
    /// A region was added, but the heap limit refused the request's clean bytes.
    NoCharge,
    /// The heap's tables are full: `(base, len)` was mapped for the request alone.
    Alone(*mut u8, usize),
    /// The kernel refused.
    Refused,
}

/// Reserves a region for a request of `span` bytes (its length with room to align
/// it) for threads of `node`: [`REGION_SIZE`], or `span` rounded up when larger than
/// half of that; just `span` under an address-space limit (`ulimit -v` counts
/// reserved space as it counts used space: a 256 MiB region for a 32 MiB array took
/// half of a 512 MiB limit), or when the kernel refuses the larger size. Carves `len`
/// bytes aligned to `align` (see [`carve`]) from the heap once the region is in.
fn reserve(len_req: usize, align: usize, span: usize, node: usize) -> Reserve {
    if !HUGE.lock().heap.has_region_slot() {
        release_empty_regions();
    }
    let room = HUGE.lock().heap.has_region_slot();
    let mut len = if !room || sys::process::address_space_limit().is_some() {
        span
    } else if span > REGION_SIZE / 2 {
        (span + REGION_ALIGN - 1) & !(REGION_ALIGN - 1)
    } else {
        REGION_SIZE
    };
    // Not MAP_NORESERVE: the kernel's overcommit check sees each region, so an absurd
    // request fails as it does for glibc.
    let mut base = sys::mmap::map_aligned(len, REGION_ALIGN, false);
    if base.is_null() && len > span {
        len = span;
        base = sys::mmap::map_aligned(len, PAGE_SIZE, false);
    }
    if base.is_null() {
        return Reserve::Refused;
    }
    if room {
        let mut h = HUGE.lock();
        if h.heap.add_region(base as usize, len, node) {
            return match h.heap.carve(len_req, align, node, arena::charge) {
                Ok(c) => Reserve::Carved(c),
                // The region stays, empty: the purge that follows releases it.
                Err(_) => Reserve::NoCharge,
            };
        }
    }
    if len > span {
        // SAFETY: the tail past `span` is part of the mapping just made, unused.
        sys::mmap::unmap(unsafe { base.add(span) }, len - span);
    }
    Reserve::Alone(base, span)
}

/// Carves `len` bytes whose block (a page in) is aligned to `align` for a thread of
/// `node`, reserving a region when no free run holds it, and purging the dirty
/// extents once when the heap limit refuses the clean bytes, or when the kernel
/// refuses a region (an address-space limit, which counts the regions of freed blocks
/// kept for reuse as it counts live ones: after a program freed its blocks, glibc,
/// which unmaps them, served a block of half the limit where cpuslab served 7 MiB).
/// When the heap's tables are full (hundreds of regions, or of free extents between
/// live blocks), the block gets a mapping of its own outside the heap (region 0):
/// unmapped when freed, copied when resized. None on failure.
fn carve(len: usize, align: usize, node: usize) -> Option<Carved> {
    let span = len.checked_add(align - PAGE_SIZE)?;
    let mut purged = false;
    // Twice at most: again after the dirty extents were purged and the empty regions
    // unmapped.
    loop {
        let got = HUGE.lock().heap.carve(len, align, node, arena::charge);
        match got {
            Ok(c) => return Some(c),
            Err(NoRoom::Charge) => {}
            Err(NoRoom::Space) => match reserve(len, align, span, node) {
                Reserve::Carved(c) => return Some(c),
                Reserve::NoCharge => {}
                Reserve::Refused if purged => return None,
                // Whatever was purged, regions may have been released.
                Reserve::Refused => {
                    drain_cache();
                    purged = true;
                    continue;
                }
                Reserve::Alone(base, len) => {
                    if !arena::charge(len) {
                        sys::mmap::unmap(base, len);
                        return None;
                    }
                    return Some(Carved {
                        base: base as usize,
                        len,
                        region: 0,
                        zero: true,
                    });
                }
            },
        }
        // The heap limit refused the clean bytes.
        if purged || drain_cache() == 0 {
            return None;
        }
        purged = true;
    }
}

/// A huge block of at least `size` bytes aligned to `align`. Null on failure.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    let Some(len) = size
        .checked_add(PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
        .and_then(|s| s.checked_add(PAGE_SIZE))
    else {
        return ptr::null_mut();
    };
    if len
        .checked_add(align - PAGE_SIZE)
        .is_none_or(|s| s > isize::MAX as usize)
    {
        return ptr::null_mut();
    }
    let Some(c) = carve(len, align, current_node()) else {
        return ptr::null_mut();
    };
    let block = (heap::aligned_start(c.base, align) + PAGE_SIZE) as *mut u8;
    let now = sys::time::now_ms();
    {
        let mut h = HUGE.lock();
        if !h.reg.insert(block as usize) {
            h.give_dirty(c.base, c.len, c.region, now);
            return ptr::null_mut();
        }
        h.reg.live_bytes += c.len;
        h.reg.note_peak(now, purge::decay_ms());
    }
    // SAFETY: the header page lies in the carved range, which is this block's alone.
    unsafe {
        header(block).write(HugeHeader {
            magic: HUGE_MAGIC,
            map_base: c.base as *mut u8,
            map_len: c.len,
            usable: c.base + c.len - block as usize,
            region: c.region,
            zero: c.zero,
        });
    }
    // The budget shrinks as live bytes grow (see `budget`): a block carved from fresh
    // pages, with dirty extents too small for it left over, purges what they are over.
    settle(now, false);
    block
}

const HUGE_MAGIC: u64 = 0x6370_7573_6c61_6268; // "cpuslabh"

#[repr(C)]
struct HugeHeader {
    magic: u64,
    /// Start of the block's range (may precede the header when the block was aligned).
    map_base: *mut u8,
    /// Length of the range.
    map_len: usize,
    /// Usable bytes from the block's start to the end of the range.
    usable: usize,
    /// Base of the region the range lies in.
    region: usize,
    /// Whether the block read as zero when it was handed out (carved from clean
    /// extents only).
    zero: bool,
}

fn header(block: *mut u8) -> *mut HugeHeader {
    // SAFETY: the header page precedes every huge block.
    unsafe { block.sub(PAGE_SIZE).cast() }
}

/// Whether `block` heads a live huge block. Safe for any address.
pub fn is_huge(block: *const u8) -> bool {
    HUGE.lock().reg.find(block as usize).is_some()
}

/// Usable bytes of a huge block; aborts with one line when `block` is not a live huge
/// block with an intact header.
///
/// # Safety
/// None beyond the block being live, which is checked; unsafe as the caller's
/// promise that it is.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    let r = HUGE.lock();
    let h = r.live_header(block, "malloc_usable_size()");
    // SAFETY: `block` is live (checked), so its header page is mapped; only the block's
    // owner, the caller, rewrites it.
    unsafe { (*h).usable }
}

/// Aborts with one line naming `op` unless `block` is a live huge block with an
/// intact header.
pub fn check_live(block: *mut u8, op: &str) {
    HUGE.lock().live_header(block, op);
}

/// For `p`, which is neither an arena address nor a live huge block and is about to
/// go to glibc (`op` on a block glibc's malloc served): aborts with one line when it
/// is a huge block freed lately (a double free, whose mapping may be cached or gone)
/// or points into a huge block, live or freed (a stray pointer that glibc would take
/// for its own, reading a size from the block's data).
pub fn check_foreign(p: *const u8, op: &str) {
    let a = p as usize;
    let r = HUGE.lock();
    if r.reg.was_freed(a) {
        drop(r);
        let what = if op == "free()" {
            "double free"
        } else {
            "invalid pointer"
        };
        sys::io::fatal(format_args!("{op}: {what} {p:p}: huge block already freed"));
    }
    let down = a & !(PAGE_SIZE - 1);
    let up = down.wrapping_add(PAGE_SIZE);
    if r.reg.find(down).is_some() || r.reg.find(up).is_some() || r.heap.owns(a) {
        drop(r);
        sys::io::fatal(format_args!(
            "{op}: invalid pointer {p:p}: inside a huge block of cpuslab"
        ));
    }
}

/// Whether a block just returned by [`alloc`](fn@alloc) reads as zero (carved from clean
/// extents only; a reused one holds what its last user left).
///
/// # Safety
/// `block` was returned by [`alloc`](fn@alloc) and not freed.
pub unsafe fn is_zero(block: *mut u8) -> bool {
    // SAFETY: `block` is live, from `alloc`: its header page is mapped, and `zero` is
    // written only when the block is registered.
    unsafe { (*header(block)).zero }
}

/// Pages [`zero`] decides for at a time: 256 KiB, a few microseconds to write.
const ZERO_CHUNK: usize = 64;

/// Makes the first `size` bytes of the live block `block` read as zero, each run of
/// 64 pages (`ZERO_CHUNK`) by whichever costs less for it: written where most of its
/// pages are resident (a block reused just as its last user filled it, whose pages
/// the new user will touch again), given back to the kernel (`MADV_DONTNEED`, as a
/// fresh mapping reads) where most are not; written throughout where the kernel
/// refuses both.
///
/// A freed huge block stays dirty as a whole however few of its pages were touched,
/// and a `calloc` that reused one wrote every byte: a program that asked for 64 MiB of
/// zeros and touched one page of it took 3 ms a call and kept 64 MiB resident (glibc,
/// which maps such a block afresh, and jemalloc, which purges a reused extent, 12-18
/// µs and nothing resident). Giving everything back instead cost a program that
/// filled its 64 MiB each time 14 times the time (41 ms a call against 3, each page
/// faulted in again), as under glibc.
///
/// # Safety
/// `block` was returned by [`alloc`](fn@alloc) for at least `size` bytes and not freed;
/// nothing else uses its contents.
pub unsafe fn zero(block: *mut u8, size: usize) {
    // The block is page-aligned (`alloc` aligns to a page at least) and its range
    // ends at a page boundary, so whole pages cover the `size` bytes.
    let len = size.next_multiple_of(PAGE_SIZE);
    // Zeroes a run of `pages` pages from page `first`: given back, or written.
    let zero_run = |first: usize, pages: usize, give: bool| {
        let (at, bytes) = (block.wrapping_add(first * PAGE_SIZE), pages * PAGE_SIZE);
        if pages > 0 && !(give && sys::mmap::purge(at, bytes)) {
            // SAFETY: these pages lie in the block's range (the contract).
            unsafe { ptr::write_bytes(at, 0, bytes) };
        }
    };
    // Consecutive chunks decided alike make one run: one system call, or one memset,
    // which for many MiB writes past the caches (glibc's memset of 256 KiB at a time
    // took twice as long over 64 MiB).
    let mut run = (0, 0, false);
    let walked = sys::mmap::resident_by_chunk(block, len, ZERO_CHUNK, |first, pages, resident| {
        let give = resident * 2 <= pages;
        if run.1 > 0 && run.2 != give {
            zero_run(run.0, run.1, run.2);
            run = (first, 0, give);
        }
        run = (run.0, run.1 + pages, give);
    });
    if walked {
        zero_run(run.0, run.1, run.2);
    } else {
        zero_run(0, len / PAGE_SIZE, true);
    }
}

/// Frees a huge block: its range goes back to the heap, dirty, and the dirty extents
/// past the budget are purged.
///
/// # Safety
/// `block` was returned by [`alloc`](fn@alloc) or [`realloc`] and is not used any more.
pub unsafe fn free(block: *mut u8) {
    let now = sys::time::now_ms();
    {
        let mut h = HUGE.lock();
        let hd = h.live_header(block, "free()");
        h.reg.remove(block as usize);
        h.reg.note_freed(block as usize);
        // SAFETY: `block` was live (checked), so its header page is mapped; the caller
        // no longer uses the block, and its range goes back to the heap only below.
        let (base, len, region) = unsafe { ((*hd).map_base as usize, (*hd).map_len, (*hd).region) };
        // SAFETY: as above.
        unsafe { (*hd).magic = 0 };
        h.reg.live_bytes -= len;
        h.give_dirty(base, len, region, now);
    }
    settle(now, false);
}

/// Writes into the header of `block`, moved or resized, its range `[base, base +
/// len)` (header page included) and its region.
///
/// # Safety
/// `block` is a live huge block of the caller's, its header page mapped at `base`.
unsafe fn set_range(block: *mut u8, base: usize, len: usize, region: usize) {
    let hd = header(block);
    // SAFETY: the caller's block's header, which only its owner writes.
    unsafe {
        (*hd).map_base = base as *mut u8;
        (*hd).map_len = len;
        (*hd).usable = len - PAGE_SIZE;
        (*hd).region = region;
    }
}

/// Grows a huge block that is a mapping of its own (region 0: the heap's tables were
/// full) or fills its region alone, as glibc grows its mapped chunks: one `mremap(2)`
/// that the kernel serves in place when the address space after it is free, else by
/// moving the pages, the old range unmapped in the same call. Under an address-space or
/// data limit this is what lets a buffer grow past half the limit: the heap's own move
/// needs the old range and the new one mapped at once (a block grown to 1 GB in steps
/// of 64 KiB failed at 624 MiB under `ulimit -v 1300000`, glibc reached 1 GB). Null,
/// with the block as it was, when the kernel refuses (a source of several kernel
/// mappings, the limit) or the heap limit does.
///
/// # Safety
/// `block` is the caller's live huge block, whose header says `[base, base + old_len)`
/// in `region`, which holds nothing else (checked by the caller under the lock, and
/// nothing can join a region with no free extent while its block lives).
unsafe fn resize_mapping(
    block: *mut u8,
    base: usize,
    old_len: usize,
    new_len: usize,
    region: usize,
    now: u64,
) -> *mut u8 {
    let grow = new_len - old_len;
    if !arena::charge(grow) {
        return ptr::null_mut();
    }
    let p = sys::mmap::remap(base as *mut u8, old_len, new_len) as usize;
    if p == 0 {
        arena::uncharge(grow);
        return ptr::null_mut();
    }
    let moved = (p + PAGE_SIZE) as *mut u8;
    let new_region = if region == 0 { 0 } else { p };
    {
        let mut h = HUGE.lock();
        if region != 0 {
            h.heap.resize_region(region, p, new_len);
        }
        if p != base {
            h.reg.moved(block as usize, moved as usize);
        }
        h.reg.live_bytes += grow;
        h.reg.note_peak(now, purge::decay_ms());
    }
    // SAFETY: the header page moved with the block (or stayed), the caller's alone.
    unsafe { set_range(moved, p, new_len, new_region) };
    settle(now, false);
    moved
}

/// Resizes a page-aligned huge block: shrinks it in place (the tail goes back to the
/// heap), grows one that fills its region alone (or is a mapping of its own) by
/// `mremap` (`resize_mapping`), grows it in place over the free extents right after
/// it, or moves its pages without copying them to a range carved elsewhere with room
/// after it (`MREMAP_DONTUNMAP`, see `sys::mmap::move_pages`). Returns null,
/// leaving the block intact, when none of that can be done (the caller copies).
///
/// # Safety
/// `block` was returned by [`alloc`](fn@alloc) with an alignment of at most a page.
pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
    let Some(new_len) = new_size
        .checked_add(2 * PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
    else {
        return ptr::null_mut();
    };
    let now = sys::time::now_ms();
    let mut h = HUGE.lock();
    let hd = h.live_header(block, "realloc()");
    // SAFETY: `block` is live (checked), so its header page is mapped; the caller owns
    // the block, and only the owner rewrites its header.
    let (base, old_len, region) = unsafe { ((*hd).map_base as usize, (*hd).map_len, (*hd).region) };
    if base != block as usize - PAGE_SIZE {
        return ptr::null_mut();
    }
    if new_len > old_len && (region == 0 || h.heap.holds_alone(region, base, old_len)) {
        drop(h);
        // SAFETY: the caller's live block, with an alignment of at most a page.
        let resized = unsafe { resize_mapping(block, base, old_len, new_len, region, now) };
        if !resized.is_null() || region == 0 {
            return resized;
        }
        h = HUGE.lock();
    }
    if new_len <= old_len {
        if new_len < old_len {
            h.give_dirty(base + new_len, old_len - new_len, region, now);
            h.reg.live_bytes -= old_len - new_len;
            // SAFETY: as above.
            unsafe {
                (*hd).map_len = new_len;
                (*hd).usable = new_len - PAGE_SIZE;
            }
        }
        drop(h);
        settle(now, false);
        return block;
    }
    if h.heap
        .carve_at(region, base + old_len, new_len - old_len, arena::charge)
    {
        h.reg.live_bytes += new_len - old_len;
        h.reg.note_peak(now, purge::decay_ms());
        // SAFETY: as above.
        unsafe {
            (*hd).map_len = new_len;
            (*hd).usable = new_len - PAGE_SIZE;
        }
        drop(h);
        // As in `alloc`: grown live bytes shrink the budget.
        settle(now, false);
        return block;
    }
    drop(h);
    // Room to grow in place after the move: half the new length more, given back to
    // the heap right after the block, so that a block grown step by step moves a
    // number of times logarithmic in its size, not once per region's worth. Without
    // it a block grown to 1 GB in steps of 64 KiB moved 375 times (one page-table move
    // of the whole block each) and left a kernel mapping behind at each. Not under an
    // address-space or data limit, which counts the room.
    let room = if sys::process::address_space_limit().is_some() {
        new_len
    } else {
        new_len.saturating_add((new_len / 2) & !(PAGE_SIZE - 1))
    };
    let Some(c) = carve(room, PAGE_SIZE, current_node())
        .or_else(|| (room > new_len).then(|| carve(new_len, PAGE_SIZE, current_node()))?)
    else {
        return ptr::null_mut();
    };
    let moved_pages = sys::mmap::move_pages(base as *mut u8, old_len, c.base as *mut u8);
    if !moved_pages {
        // The kernel may have unmapped the destination before it refused (it does so
        // first): map it afresh before it is written or goes back to the heap.
        if !sys::mmap::map_fixed(c.base as *mut u8, c.len) {
            let mut h = HUGE.lock();
            if c.region == 0 {
                h.give_dirty(c.base, c.len, c.region, now);
            } else {
                arena::uncharge(c.len);
                // Not even that: the range is lost; what the region still maps of it
                // holds nothing.
                h.heap.lose_hole(c.region, c.len);
            }
            return ptr::null_mut();
        }
        // A source of several kernel mappings (see `move_pages`): copied, the header
        // page with it, into the fresh mapping, which then holds the block and its
        // room as one mapping, so that the next move of it moves its pages.
        // SAFETY: `[base, base + old_len)` is the live block with its header page, the
        // caller's; `[c.base, c.base + c.len)` was just carved (and mapped afresh) for
        // it, at least `new_len >= old_len` bytes; they do not overlap.
        unsafe { ptr::copy_nonoverlapping(base as *const u8, c.base as *mut u8, old_len) };
    }
    let moved = (c.base + PAGE_SIZE) as *mut u8;
    // The block's own length, the room after it going back to the heap (a mapping of
    // its own, region 0, stays whole).
    let len = if c.region == 0 { c.len } else { new_len };
    // The old range, emptied by the move, still holds the kernel mappings the block was
    // made of (`MREMAP_DONTUNMAP` leaves them): mapped afresh, it is one mapping that
    // merges with its free neighbours. Otherwise a block later grown over such ranges
    // is made of as many mappings, and moves in as many pieces: two blocks grown side
    // by side next to a 1 GB one moved in 11 pieces on average, and 8 times past
    // `move_pages`' bound, copied.
    let remapped = moved_pages && sys::mmap::map_fixed(base as *mut u8, old_len);
    {
        let mut h = HUGE.lock();
        h.reg.moved(block as usize, moved as usize);
        h.reg.live_bytes = h.reg.live_bytes - old_len + len;
        h.reg.note_peak(now, purge::decay_ms());
        if remapped {
            // The old range reads as zero now: clean, and no longer committed.
            let old = Extent {
                base,
                len: old_len,
                region,
                dirty: false,
                freed_ms: now,
            };
            if !h.heap.give(old, true) {
                h.lose(base, old_len, region, false);
            }
            arena::uncharge(old_len);
        } else if moved_pages {
            // The kernel refused the fresh mapping, having perhaps unmapped the range
            // already: lost, as a failed move's destination.
            h.heap.lose_hole(region, old_len);
            arena::uncharge(old_len);
        } else {
            h.give_dirty(base, old_len, region, now);
        }
        if len < c.len {
            // Carved dirty or clean, it goes back dirty: a later purge makes it clean.
            h.give_dirty(c.base + len, c.len - len, c.region, now);
        }
    }
    // SAFETY: the header page moved with the block to the start of the carved range,
    // which is the caller's block alone.
    unsafe { set_range(moved, c.base, len, c.region) };
    settle(now, false);
    moved
}
