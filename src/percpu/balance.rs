//! Balance work, `pcpu_balance_workfn`: keep a few empty populated pages ready, give
//! the rest back with `madvise(MADV_DONTNEED)`, and free wholly empty chunks beyond
//! one.
//!
//! The kernel runs this from a workqueue. Here it runs on the slow path, under
//! `pcpu_lock`: after a free that leaves more than [`PCPU_EMPTY_POP_PAGES_HIGH`] empty
//! populated pages or a second empty chunk, and after an allocation that leaves fewer
//! than [`PCPU_EMPTY_POP_PAGES_LOW`]; [`balance`] runs it on demand. The hysteresis
//! between the two watermarks keeps an alloc/free pair from populating and
//! depopulating the same page every time.

use super::alloc::{size_to_slot, PcpuState, PCPU_FREE_SLOT, PCPU_LOCK};
use super::chunk::{Chunk, ChunkKind};
use crate::sys::PAGE_SIZE;

/// Below this many empty populated pages, populate ahead (up to the high watermark).
pub const PCPU_EMPTY_POP_PAGES_LOW: usize = 2;
/// Above this many empty populated pages, depopulate down to it.
pub const PCPU_EMPTY_POP_PAGES_HIGH: usize = 4;

/// Whether a free left work for [`pcpu_balance`].
pub(super) fn needed(st: &PcpuState) -> bool {
    let head = st.slot_head[PCPU_FREE_SLOT];
    // SAFETY: under the lock; chunks on the lists are live.
    let two_empty = !head.is_null() && unsafe { !(*head).next.is_null() };
    st.nr_empty_pop_pages > PCPU_EMPTY_POP_PAGES_HIGH || two_empty
}

/// The whole balance work, under the lock.
pub(super) fn pcpu_balance(st: &mut PcpuState) {
    balance_free(st);
    reclaim_populated(st);
    if st.nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW {
        populate_ahead(st);
    }
}

/// Runs the balance work now: frees wholly empty chunks beyond one and keeps between
/// [`PCPU_EMPTY_POP_PAGES_LOW`] and [`PCPU_EMPTY_POP_PAGES_HIGH`] empty pages
/// populated (within the chunks that exist). For tests and for trimming.
pub fn balance() {
    if !super::alloc::ready() {
        return;
    }
    pcpu_balance(&mut PCPU_LOCK.lock());
}

/// `pcpu_balance_free`: destroys every wholly empty chunk but one. The first chunk is
/// never destroyed; when it is empty it is the one kept.
fn balance_free(st: &mut PcpuState) {
    let first = st.first;
    let mut keep = st.slot_head[PCPU_FREE_SLOT];
    let mut chunk = keep;
    while !chunk.is_null() {
        if chunk == first {
            keep = first;
        }
        // SAFETY: under the lock; the list is live.
        chunk = unsafe { (*chunk).next };
    }
    chunk = st.slot_head[PCPU_FREE_SLOT];
    while !chunk.is_null() {
        // SAFETY: as above; the next link is read before the chunk goes.
        unsafe {
            let next = (*chunk).next;
            if chunk != keep && (*chunk).kind == ChunkKind::Dynamic {
                st.destroy_chunk(chunk);
            }
            chunk = next;
        }
    }
}

/// `pcpu_reclaim_populated`: depopulates empty populated pages, emptiest chunks first
/// and last pages first, until at most [`PCPU_EMPTY_POP_PAGES_HIGH`] remain.
fn reclaim_populated(st: &mut PcpuState) {
    for slot in (0..=PCPU_FREE_SLOT).rev() {
        let mut chunk = st.slot_head[slot];
        while !chunk.is_null() {
            if st.nr_empty_pop_pages <= PCPU_EMPTY_POP_PAGES_HIGH {
                return;
            }
            // SAFETY: under the lock; depopulating does not move the chunk.
            unsafe {
                let excess = st.nr_empty_pop_pages - PCPU_EMPTY_POP_PAGES_HIGH;
                st.with_pages(chunk, |c| depopulate_tail(c, excess));
                chunk = (*chunk).next;
            }
        }
    }
}

/// Depopulates up to `max` empty populated pages of `c`, from its last page down, in
/// runs.
fn depopulate_tail(c: &mut Chunk, mut max: usize) {
    let mut p = c.nr_pages;
    while p > 0 && max > 0 {
        if !c.is_empty_pop_page(p - 1) {
            p -= 1;
            continue;
        }
        let end = p;
        while p > 0 && end - p < max && c.is_empty_pop_page(p - 1) {
            p -= 1;
        }
        c.depopulate(p, end);
        max -= end - p;
    }
}

/// `pcpu_balance_populated`: populates empty pages of existing chunks until
/// [`PCPU_EMPTY_POP_PAGES_HIGH`] are ready, fullest chunks (that still have a free
/// page) first so that empty chunks stay cheap to free. Creates no chunk.
pub(super) fn populate_ahead(st: &mut PcpuState) {
    for slot in size_to_slot(PAGE_SIZE)..=PCPU_FREE_SLOT {
        let mut chunk = st.slot_head[slot];
        while !chunk.is_null() {
            if st.nr_empty_pop_pages >= PCPU_EMPTY_POP_PAGES_HIGH {
                return;
            }
            // SAFETY: under the lock; populating does not move the chunk.
            unsafe {
                let want = PCPU_EMPTY_POP_PAGES_HIGH - st.nr_empty_pop_pages;
                st.with_pages(chunk, |c| populate_head(c, want));
                chunk = (*chunk).next;
            }
        }
    }
}

/// Populates up to `max` empty unpopulated pages of `c`, from its first page up, in
/// runs.
fn populate_head(c: &mut Chunk, mut max: usize) {
    let mut p = 0;
    while p < c.nr_pages && max > 0 {
        if c.is_populated(p) || !c.blocks[p].is_empty() {
            p += 1;
            continue;
        }
        let start = p;
        while p < c.nr_pages && p - start < max && !c.is_populated(p) && c.blocks[p].is_empty() {
            p += 1;
        }
        c.populate(start, p);
        max -= p - start;
    }
}
