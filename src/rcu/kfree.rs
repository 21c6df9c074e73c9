//! `free_rcu` (kfree_rcu without a head): pointers are gathered in per-CPU pages of
//! batches; a full batch (or any batch when flushed) is queued as one callback that
//! frees every pointer after the grace period.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::callbacks::{self, CbList};
use super::head::RcuHead;
use crate::page;
use crate::sys::PAGE_SIZE;

/// Pointers per batch page.
const BATCH: usize = (PAGE_SIZE - 32) / 24;

/// One page of deferred frees.
#[repr(C)]
pub(crate) struct KfreeBatch {
    head: RcuHead,
    n: usize,
    /// Bytes of slab objects (class sizes) among the entries, set when the batch is
    /// queued and subtracted from [`QUEUED_SLAB_BYTES`] when it is freed.
    slab_bytes: usize,
    entries: [(usize, usize, usize); BATCH],
}

const _: () = assert!(core::mem::size_of::<KfreeBatch>() <= PAGE_SIZE);

/// How the blocks `free_rcu` defers are freed: the layer above RCU that made them
/// (kmalloc) registers its free and its slab class sizes at boot, so RCU calls no layer
/// above it by name.
#[derive(Clone, Copy)]
pub struct BlockFree {
    /// Frees a block of `(size, align)`: `kmalloc::kfree`.
    pub free: unsafe fn(*mut u8, usize, usize),
    /// The bytes a block of `(size, align)` takes in a slab (its class size), 0 for a
    /// larger block: for the statistics of deferred slab objects.
    pub slab_bytes: fn(usize, usize) -> usize,
}

/// The [`BlockFree`] registered, as the address of a static one; 0 before.
static BLOCK_FREE: AtomicUsize = AtomicUsize::new(0);

/// Registers how deferred blocks are freed (kmalloc, at boot, before any block it
/// made can reach `free_rcu`).
pub fn set_block_free(f: &'static BlockFree) {
    BLOCK_FREE.store(f as *const BlockFree as usize, Ordering::Release);
}

/// The registered [`BlockFree`]. Blocks reach `free_rcu` only once kmalloc made them,
/// after it registered.
fn block_free() -> &'static BlockFree {
    let f = BLOCK_FREE.load(Ordering::Acquire);
    assert!(f != 0, "free_rcu before kmalloc registered its free");
    // SAFETY: a non-zero value is the address of a `&'static BlockFree`.
    unsafe { &*(f as *const BlockFree) }
}

/// Batches not yet queued, across CPUs.
static PARTIAL: AtomicUsize = AtomicUsize::new(0);

/// Class bytes of the slab objects in queued batches, waiting for their grace period.
/// Counted once per batch (not per `free_rcu`), when it is queued.
static QUEUED_SLAB_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Batch pages queued for a grace period.
static QUEUED_BATCHES: AtomicUsize = AtomicUsize::new(0);

/// Class bytes of the slab objects among a batch's entries.
///
/// # Safety
/// `b` is a batch no other thread changes.
unsafe fn slab_bytes_of(b: *const KfreeBatch) -> usize {
    // SAFETY: no other thread changes the batch (the caller's contract), and `n` counts
    // its filled entries.
    let slab_bytes = block_free().slab_bytes;
    // SAFETY: as above.
    unsafe { (&(*b).entries)[..(*b).n].iter() }
        .map(|&(_, size, align)| slab_bytes(size, align))
        .sum()
}

/// Queues a detached batch for a grace period, counting it as deferred.
///
/// # Safety
/// `b` is a detached batch page.
unsafe fn queue(b: *mut KfreeBatch) {
    // SAFETY: a detached batch is this thread's alone.
    let bytes = unsafe { slab_bytes_of(b) };
    // SAFETY: as above.
    unsafe { (*b).slab_bytes = bytes };
    QUEUED_SLAB_BYTES.fetch_add(bytes, Ordering::Relaxed);
    QUEUED_BATCHES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: as above; the page stays, untouched, until `free_batch` frees it, and its
    // head is queued once.
    unsafe { callbacks::call_rcu(&mut (*b).head, free_batch) };
}

/// What `free_rcu` holds back: the class bytes of the slab objects waiting (in batches
/// being filled or queued for a grace period) and the batch pages themselves. Large
/// and huge blocks waiting are not counted here: they stay in their own figures.
pub fn deferred() -> (usize, usize) {
    let mut bytes = QUEUED_SLAB_BYTES.load(Ordering::Relaxed);
    let mut pages = QUEUED_BATCHES.load(Ordering::Relaxed);
    if PARTIAL.load(Ordering::Relaxed) > 0 {
        callbacks::for_each_list(|l| {
            // SAFETY: the list's lock is held, and with it its batch.
            unsafe {
                let b = *l.kfree.get();
                if !b.is_null() {
                    bytes += slab_bytes_of(b);
                    pages += 1;
                }
            }
        });
    }
    (bytes, pages)
}

/// Frees `ptr` (allocated by cpuslab with `layout`) after a grace period. Never waits
/// for a grace period and never allocates through the global allocator.
///
/// # Safety
/// `ptr` is a live block of `layout` that no new reader can reach; it is not used again
/// by the caller.
pub unsafe fn free_rcu(ptr: *mut u8, layout: Layout) {
    let full = callbacks::with_local_list(|l: &CbList| {
        // SAFETY: `with_local_list` holds the list's lock, and with it its batch.
        let slot = unsafe { &mut *l.kfree.get() };
        if slot.is_null() {
            // Written one entry per deferred free and read once, after the grace
            // period: a cold page, which leaves the hot ones to slabs.
            let pg = page::alloc_pages_cold(0);
            if pg.is_null() {
                return Err(());
            }
            let b = page::page_address(pg).cast::<KfreeBatch>();
            // SAFETY: a page just taken, ours alone; a batch fits in it (asserted above).
            unsafe {
                (*b).head = RcuHead::new();
                (*b).n = 0;
                (*b).slab_bytes = 0;
            }
            *slot = b;
            PARTIAL.fetch_add(1, Ordering::Relaxed);
        }
        let b = *slot;
        // SAFETY: the slot's batch, guarded by the list's lock; it leaves the slot when
        // full, so `n` is below `BATCH` here.
        unsafe {
            (*b).entries[(*b).n] = (ptr as usize, layout.size(), layout.align());
            (*b).n += 1;
        }
        // SAFETY: as above.
        if unsafe { (*b).n } == BATCH {
            *slot = ptr::null_mut();
            PARTIAL.fetch_sub(1, Ordering::Relaxed);
            return Ok(b);
        }
        Ok(ptr::null_mut())
    });
    match full {
        // SAFETY: a full batch, taken out of its slot: detached.
        Ok(b) if !b.is_null() => unsafe { queue(b) },
        Ok(_) => {}
        Err(()) => {
            // No page for a batch: wait for the grace period here, unless this thread
            // is a reader (then the block is leaked rather than freed early).
            if super::reader::in_read_section() {
                crate::sys::io::warn(format_args!(
                    "rcu: free_rcu({ptr:p}) out of memory inside a read section; block leaked"
                ));
            } else {
                super::gp::synchronize();
                // SAFETY: the caller's live block of `layout`, given up; after the grace
                // period no reader holds it.
                unsafe { (block_free().free)(ptr, layout.size(), layout.align()) };
            }
        }
    }
}

/// The callback of a batch: frees its pointers, then its page.
unsafe fn free_batch(head: *mut RcuHead) {
    let b = head.cast::<KfreeBatch>();
    let free = block_free().free;
    // SAFETY: `head` is the head of a batch `queue` queued, invoked once: the batch is
    // ours alone, its first `n` entries filled.
    for &(p, size, align) in unsafe { (&(*b).entries)[..(*b).n].iter() } {
        // SAFETY: a block `free_rcu` was given with its layout, whose grace period has
        // ended.
        unsafe { free(p as *mut u8, size, align) };
    }
    // SAFETY: as above.
    QUEUED_SLAB_BYTES.fetch_sub(unsafe { (*b).slab_bytes }, Ordering::Relaxed);
    QUEUED_BATCHES.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: the batch's page, from `alloc_pages_cold(0)` in `free_rcu`, is not used
    // again; nobody read it since its last entry, so it goes back cold.
    unsafe { page::free_pages_cold(page::virt_to_page(b.cast()), 0) };
}

/// Queues every partly filled batch. Returns how many were queued.
pub fn flush_all() -> usize {
    let mut total = 0;
    loop {
        let n = flush_some();
        total += n;
        if n == 0 {
            return total;
        }
    }
}

fn flush_some() -> usize {
    if PARTIAL.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut batches = [ptr::null_mut::<KfreeBatch>(); 64];
    let mut n = 0;
    callbacks::for_each_list(|l| {
        // SAFETY: the list's lock is held.
        let slot = unsafe { &mut *l.kfree.get() };
        if !slot.is_null() && n < batches.len() {
            batches[n] = *slot;
            *slot = ptr::null_mut();
            n += 1;
            PARTIAL.fetch_sub(1, Ordering::Relaxed);
        }
    });
    for &b in &batches[..n] {
        // SAFETY: a detached batch page.
        unsafe { queue(b) };
    }
    n
}

/// Whether partly filled batches wait to be queued.
pub fn pending() -> bool {
    PARTIAL.load(Ordering::Relaxed) > 0
}
