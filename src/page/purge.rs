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
use super::desc::{page_address, Page, PG_ZERO};
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
}

/// Whether the zone whose lock `z` is should purge now that an allocation took clean
/// memory, and down to how many dirty pages: it holds more than it keeps
/// ([`pressure_keep`]), none of which could serve that allocation. Clears the mark
/// either way.
fn take_clean_pressure(z: &mut super::buddy::ZoneInner) -> Option<usize> {
    let taken = core::mem::replace(&mut z.clean_taken, false);
    let keep = pressure_keep(z);
    (taken && z.dirty_pages > keep).then_some(keep)
}

/// Dirty free pages a zone keeps when it purges under pressure: an eighth of its pages
/// in use (at least [`PRESSURE_KEEP_MIN`]), so that a heap keeps some room to reuse
/// without faulting while its peak stays within an eighth of what it uses. Not the
/// retained amount: a heap of 12 MiB keeping 4 MiB dirty while it grows peaks a third
/// above what it uses.
fn pressure_keep(z: &super::buddy::ZoneInner) -> usize {
    let in_use = z.managed_pages - z.free_pages;
    (in_use / PRESSURE_KEEP_DIV).max(PRESSURE_KEEP_MIN)
}

/// [`pressure_keep`]'s least: 256 KiB, a few blocks of the largest per-CPU list order.
const PRESSURE_KEEP_MIN: usize = 64;

/// [`pressure_keep`]'s share of the pages in use.
const PRESSURE_KEEP_DIV: usize = 8;

/// Drops the zone lock `z` of `zone` after an allocation under it; when
/// [`take_clean_pressure`] says so, then purges the dirty free pages beyond what it
/// keeps, whatever their age. Every allocation path of the zone unlocks through here.
/// The program's
/// footprint is growing past free memory that did not fit what it asked for; keeping
/// that memory resident while new pages are touched is what raises the peak (the
/// kernel's page allocator, which has no dirty free pages, never does). The oldest
/// blocks go first; what a later request could have reused is faulted in again.
pub(crate) fn unlock_after_alloc(zone: &Zone, mut z: MutexGuard<'_, ZoneInner>) {
    let pressure = take_clean_pressure(&mut z);
    drop(z);
    if let Some(keep) = pressure {
        // The allocation made room under pressure: the kernel counts a direct reclaim.
        crate::cpuset::memory_pressure_bump();
        purge_zone(zone, u64::MAX, keep, sys::time::now_ms());
    }
}

/// Purges every dirty free page of `zone`. Returns the pages purged.
pub fn purge_zone_all(zone: &Zone) -> usize {
    purge_zone(zone, u64::MAX, 0, sys::time::now_ms())
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
            // SAFETY: under the zone lock.
            unsafe { z.take_dirty(before_ms, &mut batch) }
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
            // SAFETY: the block was taken off this zone's lists above; it keeps its
            // free time so it ages as before.
            unsafe {
                let freed_at = (*page).info;
                let zero = if zeroed[i] { PG_ZERO } else { 0 };
                z.free_one(page, order, zero, freed_at);
            }
            if zeroed[i] {
                this_batch += 1 << order;
            }
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
