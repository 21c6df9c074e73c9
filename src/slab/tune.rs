//! Sizing the array caches: `enable_cpucache` picks the kernel's limits by object size,
//! `do_tune_cpucache` changes them on a live cache.

use core::sync::atomic::Ordering;

use super::cache::{CpuCaches, RawCache};
use super::{CacheError, CHAIN};
use crate::page::list::PageList;
use crate::sys::PAGE_SIZE;
use crate::topology;

/// Most entries an array cache may be tuned to.
pub const MAX_LIMIT: u32 = 4096;

/// `enable_cpucache`'s table: `(limit, batchcount, shared)` for objects of `size` bytes.
///
/// The per-CPU limit falls as objects grow (more than 128 KiB: 1; more than a page: 8;
/// more than 1 KiB: 24; more than 256 B: 54; else 120), batchcount is half of it, and
/// caches of objects up to a page get a shared cache of 8 batches per node when there
/// is more than one CPU.
pub fn enable_cpucache_params(size: usize) -> (u32, u32, u32) {
    let limit = if size > 128 * 1024 {
        1
    } else if size > PAGE_SIZE {
        8
    } else if size > 1024 {
        24
    } else if size > 256 {
        54
    } else {
        120
    };
    let shared = if size <= PAGE_SIZE && topology::nr_cpu_ids() > 1 {
        8
    } else {
        0
    };
    (limit, limit.div_ceil(2).max(1), shared)
}

/// `do_tune_cpucache`: gives `cache` new per-CPU array caches of `limit` entries, moving
/// `batchcount` objects at a time, and a shared cache of `shared` batches per node
/// (bounded by the room its node structure has).
///
/// The new caches are published first; each old one is then locked (waiting for a
/// holder to finish), drained back to the slabs and marked dead, so a thread that still
/// holds the old pointer fails its try-lock and takes the node path. The old block
/// stays mapped: a thread may still read it.
pub fn do_tune_cpucache(
    cache: &RawCache,
    limit: u32,
    batchcount: u32,
    shared: u32,
) -> Result<(), CacheError> {
    if limit == 0 || limit > MAX_LIMIT || batchcount == 0 || batchcount > limit {
        return Err(CacheError::Tunables { limit, batchcount });
    }
    let _chain = CHAIN.lock();
    let new = CpuCaches::create(limit, batchcount);
    if new.is_null() {
        return Err(CacheError::NoMemory);
    }
    let old = cache.cpu_cache.swap(new, Ordering::AcqRel);
    let mut to_destroy = PageList::new();
    // SAFETY: `old` stays mapped (retired below); each array cache is drained under its
    // own lock and killed while still held.
    unsafe {
        if !old.is_null() {
            for cpu in 0..(*old).nr_cpus {
                let ac = CpuCaches::ac(old, cpu);
                if (*ac).lock.lock_wait() {
                    let held = cache.drain_array(ac, (*ac).avail, None, None, &mut to_destroy);
                    drop(held);
                    (*ac).lock.kill();
                }
            }
            (*old).next_retired = cache.retired.load(Ordering::Relaxed);
            cache.retired.store(old, Ordering::Release);
        }
        for node in 0..topology::nr_node_ids() {
            let n = cache.node(node);
            let l = n.list_lock.lock();
            let sh = l.shared;
            if sh.is_null() {
                continue;
            }
            let new_limit = (shared * batchcount).min((*sh).capacity);
            (*sh).limit = new_limit;
            (*sh).batchcount = batchcount;
            let excess = (*sh).avail.saturating_sub(new_limit);
            let held = cache.drain_array(sh, excess, Some(node), Some((node, l)), &mut to_destroy);
            drop(held);
        }
        cache.destroy_slabs(&mut to_destroy);
    }
    cache.limit.store(limit, Ordering::Relaxed);
    cache.batchcount.store(batchcount, Ordering::Relaxed);
    cache.shared.store(shared, Ordering::Relaxed);
    Ok(())
}
