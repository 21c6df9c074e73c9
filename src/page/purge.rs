//! Returning memory to the OS: free buddy blocks that stayed dirty for longer than the
//! decay time, beyond the amount each zone retains, are given back with
//! `madvise(MADV_DONTNEED)` and marked zero. Purging runs from the page allocator's
//! slow paths and the background reclaim thread at most every quarter of the decay
//! time, fully from [`purge_all`](super::purge_all), and beyond the retained amount whatever the age
//! from the reclaim thread once the program is idle. The slow paths also mark the
//! activity by which the reclaim thread tells the program is idle.
//! The same checks purge freed huge blocks kept past the decay time
//! (`huge::decay`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::buddy::{Zone, ZoneInner};
use super::desc::{page_address, Page};
use crate::sync::MutexGuard;
use crate::sys::{self, PAGE_SHIFT, PAGE_SIZE};

/// Decay time in ms (`CPUSLAB_DECAY_MS`).
static DECAY_MS: AtomicU64 = AtomicU64::new(1000);
/// Dirty free pages each zone keeps without purging (`CPUSLAB_RETAIN_KB`).
static RETAIN_PAGES: AtomicUsize = AtomicUsize::new(1024);

/// Sets the decay time and the retained amount.
pub(crate) fn configure(decay_ms: u64, retain_bytes: usize) {
    DECAY_MS.store(decay_ms, Ordering::Relaxed);
    RETAIN_PAGES.store(retain_bytes / PAGE_SIZE, Ordering::Relaxed);
}

/// Sets the decay time alone (run time: the next purge check uses it).
pub(crate) fn set_decay_ms(decay_ms: u64) {
    DECAY_MS.store(decay_ms, Ordering::Relaxed);
}

/// Sets the retained amount alone (run time: the next purge uses it).
pub(crate) fn set_retain_bytes(retain_bytes: usize) {
    RETAIN_PAGES.store(retain_bytes / PAGE_SIZE, Ordering::Relaxed);
}

/// The decay time in ms.
pub(crate) fn decay_ms() -> u64 {
    DECAY_MS.load(Ordering::Relaxed)
}

/// Dirty free bytes each zone retains.
pub(crate) fn retain_bytes() -> usize {
    RETAIN_PAGES.load(Ordering::Relaxed) * PAGE_SIZE
}

/// Set by the allocator's slow paths (slab refills and flushes, page frees to a zone),
/// cleared by the background reclaim thread each time it looks: a slow path that finds
/// it set costs one load of a line that stays shared, so idleness is measured without
/// any work on the inline fast paths and without a counter bounced between CPUs.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The reclaim thread's `thread_id` (0: none): its own frees are no activity.
static RECLAIMER: AtomicUsize = AtomicUsize::new(0);

/// Records allocator activity from a slow path (see [`take_activity`]).
#[inline]
pub(crate) fn note_activity() {
    if !ACTIVE.load(Ordering::Relaxed) {
        note_activity_slow();
    }
}

#[cold]
fn note_activity_slow() {
    if sys::cpu::thread_id() != RECLAIMER.load(Ordering::Relaxed) {
        // SeqCst: the reclaim thread, stopping, stores its state and then reads this
        // flag; a slow path stores the flag and then reads that state (see
        // `background`), so one of the two sees the other.
        ACTIVE.swap(true, Ordering::SeqCst);
    }
}

/// Whether a slow path ran since the last call, clearing the flag.
pub(crate) fn take_activity() -> bool {
    ACTIVE.swap(false, Ordering::SeqCst)
}

/// Whether a slow path ran since the last [`take_activity`], leaving the flag.
pub(crate) fn activity_pending() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Names the calling thread as the reclaim thread (`thread_id`, 0 for none), whose
/// slow paths do not count as activity.
pub(crate) fn set_reclaimer(thread: usize) {
    RECLAIMER.store(thread, Ordering::Relaxed);
}

/// Purges dirty free pages of `zone` beyond what it retains, whatever their age (the
/// program is idle: nothing will reuse them soon). Returns the pages purged.
pub(crate) fn purge_zone_idle(zone: &Zone) -> usize {
    let retain = RETAIN_PAGES.load(Ordering::Relaxed);
    let mut total = 0;
    // `purge_zone` stops after a bounded amount: go on until the zone is down to what
    // it retains or has nothing left to purge (bounded too, should frees keep coming).
    for _ in 0..64 {
        let n = purge_zone(zone, u64::MAX, retain, sys::time::now_ms());
        total += n;
        if n == 0 || zone.lock().dirty_pages <= retain {
            break;
        }
    }
    zone.lock().reset_mark();
    total
}

/// Purges `zone` if its last purge is old enough and it holds more dirty free pages
/// than it retains, and purges freed huge blocks whose decay time passed. Called
/// after frees to the zone, with the time already read.
pub fn maybe_purge(zone: &Zone, now_ms: u64) {
    note_activity();
    super::huge::decay(now_ms);
    let decay = DECAY_MS.load(Ordering::Relaxed);
    let retain = RETAIN_PAGES.load(Ordering::Relaxed);
    {
        let z = zone.lock();
        if z.dirty_pages <= retain || now_ms < z.last_purge_ms + (decay / 4).max(1) {
            return;
        }
    }
    purge_zone(zone, now_ms.saturating_sub(decay), retain, now_ms);
    zone.lock().reset_mark();
}

/// Whether the zone whose lock `z` is should purge now that allocations took clean
/// memory, and down to how many dirty pages (clearing the count of clean pages taken
/// either way). Only when what it has resident (in use, and dirty free) passes its
/// mark, the most it had since it last purged by age: below the mark, the program's
/// peak does not grow, and purging there only makes its next allocations fault in
/// what they would have reused. Past it with less in use than the mark allows for
/// ([`pressure_keep`] below it), the dirty pages are purged down to what brings the
/// zone back to its mark. Past it with more (a new high), the mark rises to what it
/// keeps above the pages in use, and when more than that is dirty the purge goes down
/// to half of it: room below the mark for the next frees, rather than a purge again
/// at the next clean page taken.
fn take_clean_pressure(z: &mut super::buddy::ZoneInner) -> Option<usize> {
    if core::mem::replace(&mut z.clean_taken, 0) == 0 {
        return None;
    }
    let in_use = z.in_use();
    if in_use + z.dirty_pages <= z.resident_mark {
        return None;
    }
    let keep = pressure_keep(z);
    let back = z.resident_mark - in_use.min(z.resident_mark);
    if back >= keep {
        // Still below the most it had in use: back down to the mark.
        return Some(back);
    }
    // A new high: the mark rises to what is kept above the pages in use.
    z.resident_mark = in_use + keep;
    (z.dirty_pages > keep).then_some(keep / 2)
}

/// Dirty free pages a zone may keep above its pages in use under pressure: a
/// sixteenth of them (at least [`PRESSURE_KEEP_MIN`]), so that a heap keeps some room
/// to reuse without faulting while its peak stays within a sixteenth of the most it
/// uses. Not the retained amount: a heap of 12 MiB keeping 4 MiB dirty while it grows
/// peaks a third above what it uses. An eighth, with purges that emptied the zone of
/// dirty pages each time, was tried first: `mstress` 5 MiB more at its peak for the
/// same faults.
fn pressure_keep(z: &super::buddy::ZoneInner) -> usize {
    let in_use = z.in_use();
    (in_use / PRESSURE_KEEP_DIV).max(PRESSURE_KEEP_MIN)
}

/// [`pressure_keep`]'s least: 256 KiB, a few blocks of the largest per-CPU list order.
const PRESSURE_KEEP_MIN: usize = 64;

/// [`pressure_keep`]'s share of the pages in use.
const PRESSURE_KEEP_DIV: usize = 16;

/// Dirty free blocks a purge under pressure spares: those freed less than this long
/// ago (ms). A program that keeps a few large blocks of varying sizes, freeing one and
/// allocating another, takes clean memory whenever no freed run fits the next size;
/// a purge at each of those took the blocks just freed, which the next allocations
/// would have reused, and they faulted them in again: 8 live blocks of 64-256 KiB
/// replaced at random, each written whole, ran at 6.9-7.3 us a replacement with 2 page
/// faults each (`capi/ops.sh churn-large`; mimalloc 3.65 us). Sparing the last few
/// milliseconds' frees leaves such a churn its working set (3.40 us, 1 fault per 20
/// replacements), while memory that sat
/// free for longer, which a program that grows past it will not reuse soon, still goes.
/// Free times come from the coarse clock (`sys::time::now_ms`), which advances by the
/// kernel's tick (4 ms at 250 Hz), so the age spared is 5 ms rounded to ticks.
const PRESSURE_AGE_MS: u64 = 5;

/// Drops the zone lock `z` of `zone` after an allocation under it; when
/// [`take_clean_pressure`] says so, then purges the dirty free pages beyond what it
/// keeps, whatever their age past the last few milliseconds'. Every allocation path
/// of the zone unlocks through here.
/// The program's
/// footprint is growing past free memory that did not fit what it asked for; keeping
/// that memory resident while new pages are touched is what raises the peak (the
/// kernel's page allocator, which has no dirty free pages, never does). Blocks freed
/// within the last [`PRESSURE_AGE_MS`] stay: they are what a churn of blocks reuses
/// next. What a later request could have reused of the rest is faulted in again.
pub(crate) fn unlock_after_alloc(zone: &Zone, mut z: MutexGuard<'_, ZoneInner>) {
    let pressure = take_clean_pressure(&mut z);
    drop(z);
    if let Some(keep) = pressure {
        // The allocation made room under pressure: the kernel counts a direct reclaim.
        crate::cpuset::memory_pressure_bump();
        let now = sys::time::now_ms();
        purge_zone(zone, now.saturating_sub(PRESSURE_AGE_MS), keep, now);
    }
}

/// Purges every dirty free page of `zone`. Returns the pages purged.
pub fn purge_zone_all(zone: &Zone) -> usize {
    let purged = purge_zone(zone, u64::MAX, 0, sys::time::now_ms());
    zone.lock().reset_mark();
    purged
}

/// Purges dirty free blocks freed at or before `before_ms` until at most `retain`
/// dirty pages remain. The blocks are taken off the free lists, advised away without
/// the lock, then freed back as zero. Returns the pages purged.
fn purge_zone(zone: &Zone, before_ms: u64, retain: usize, now_ms: u64) -> usize {
    let mut purged = 0;
    let mut batch: [(*mut Page, usize); 32] = [(core::ptr::null_mut(), 0); 32];
    // Bounded: a zone that keeps refilling with dirty pages is purged again later.
    for _ in 0..64 {
        let n = {
            let mut z = zone.lock();
            z.last_purge_ms = now_ms;
            if z.dirty_pages <= retain {
                break;
            }
            let need = z.dirty_pages - retain;
            // SAFETY: under the zone lock.
            unsafe { z.take_dirty(before_ms, need, &mut batch) }
        };
        if n == 0 {
            break;
        }
        let mut zeroed = [false; 32];
        for (i, &(page, order)) in batch[..n].iter().enumerate() {
            zeroed[i] = sys::mmap::purge(page_address(page), PAGE_SIZE << order);
        }
        let mut z = zone.lock();
        let mut this_batch = 0;
        for (i, &(page, order)) in batch[..n].iter().enumerate() {
            // SAFETY: the block was taken off this zone's lists above, its head still
            // holding its clean pages (`take_dirty`); it keeps its free time so it
            // ages as before.
            let clean = unsafe {
                let (freed_at, clean) = ((*page).info, (*page).active as usize);
                // `free_one` takes a block whose pages were all charged, as one handed
                // out: the clean part of a mixed one was not.
                super::arena::charge_always(clean << PAGE_SHIFT);
                z.free_one(
                    page,
                    order,
                    if zeroed[i] { 1 << order } else { clean },
                    freed_at,
                );
                clean
            };
            if zeroed[i] {
                this_batch += (1 << order) - clean;
            }
            z.purging_pages -= 1 << order;
        }
        // The batch's pages only: `purged` is the running total of this call.
        z.purged_pages += this_batch as u64;
        purged += this_batch;
    }
    purged
}

/// Bytes represented by `pages`.
pub fn pages_to_bytes(pages: usize) -> usize {
    pages << PAGE_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::buddy::Zone;

    /// The mark rule, on a zone whose counts are set by hand: 10 000 pages, 6 000 in
    /// use (a sixteenth: 375), 3 000 dirty free (9 000 resident).
    #[test]
    fn clean_memory_taken_purges_only_past_the_mark() {
        let zone = Zone::new();
        let mut z = zone.lock();
        z.managed_pages = 10_000;
        z.free_pages = 4_000;
        z.dirty_pages = 3_000;
        z.resident_mark = 9_500;
        assert_eq!(take_clean_pressure(&mut z), None, "nothing taken clean");
        z.clean_taken = 16;
        assert_eq!(take_clean_pressure(&mut z), None, "below the mark");
        assert_eq!((z.clean_taken, z.resident_mark), (0, 9_500));
        // Past a mark of 8 000 with less in use: back down to it, 2 000 dirty pages.
        z.resident_mark = 8_000;
        z.clean_taken = 16;
        assert_eq!(take_clean_pressure(&mut z), Some(2_000));
        assert_eq!(z.resident_mark, 8_000);
        // In use past the mark (9 000, a sixteenth 562): the mark rises to a sixteenth
        // above it, and the purge goes down to half of that.
        z.free_pages = 1_000;
        z.clean_taken = 16;
        assert_eq!(take_clean_pressure(&mut z), Some(281));
        assert_eq!(z.resident_mark, 9_000 + 562);
        // A new high with fewer dirty pages than a sixteenth: the mark rises, nothing to
        // purge.
        z.free_pages = 100;
        z.dirty_pages = 400;
        z.clean_taken = 16;
        assert_eq!(take_clean_pressure(&mut z), None);
        assert_eq!(z.resident_mark, 9_900 + 618);
        // Blocks a purge has off the lists are not in use.
        z.purging_pages = 200;
        assert_eq!(z.in_use(), 9_700);
        z.purging_pages = 0;
        // A purge by age lowers the mark to what is resident.
        z.dirty_pages = 100;
        z.reset_mark();
        assert_eq!(z.resident_mark, 10_000);
        z.managed_pages = 0;
        z.free_pages = 0;
        z.dirty_pages = 0;
    }
}
