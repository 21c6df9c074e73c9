//! Sizing the array caches: `enable_cpucache` picks the kernel's limits by object size,
//! `do_tune_cpucache` changes them on a live cache.

use super::node::KmemCacheNode;
use core::sync::atomic::Ordering;

use super::cache::RawCache;
use super::{CacheError, CHAIN};
use crate::page::list::PageList;
use crate::percpu;
use crate::sys::PAGE_SIZE;
use crate::topology;

/// Most entries an array cache may be tuned to.
pub const MAX_LIMIT: u32 = 4096;

/// Bytes of objects of up to 1 KiB a CPU's array cache may hold, for the limit of
/// those classes (see [`enable_cpucache_params`]).
pub const SMALL_CACHE_BYTES: usize = 64 * 1024;

/// Most objects a CPU's array cache of small objects holds by default.
pub const SMALL_CACHE_MAX: u32 = 512;

/// Bytes of objects of more than 1 KiB a CPU's array cache of their class holds at its
/// tuned limit (see [`enable_cpucache_params`]).
pub const LARGE_CACHE_BYTES: usize = 64 * 1024;

/// `enable_cpucache`'s table: `(limit, batchcount, shared)` for objects of `size` bytes.
///
/// The kernel's per-CPU limit falls as objects grow (more than 128 KiB: 1; more than a
/// page: 8; more than 1 KiB: 24; more than 256 B: 54; else 120), batchcount is half of
/// it, and caches of objects up to a page get a shared cache of 8 batches per node when
/// there is more than one CPU.
///
/// Here objects of up to 1 KiB may keep more on the CPU: what [`SMALL_CACHE_BYTES`]
/// holds, at least the kernel's limit and at most [`SMALL_CACHE_MAX`] (128 B: 512,
/// 256 B: 256, 512 B: 128, 1 KiB: 64), while the batchcount, and with it the shared
/// cache, stays the kernel's: a refill fetches no more than before, and frees
/// accumulate. With the kernel's limits, a thread that frees a few hundred blocks of
/// one class at a time overflows its CPU's cache, and the flush and the refill after
/// it pass the objects through the node's shared cache to the other CPUs, whose
/// accesses then miss: a C workload freeing batches of 1000 blocks of 64–120 B ran
/// 1.6x slower, most of it in the program's own accesses to the blocks.
///
/// Larger objects keep less: what [`LARGE_CACHE_BYTES`] holds, at least 2 (the
/// kernel's 1 past 128 KiB) and at most the kernel's limit (4 KiB: 16, 8 KiB: 8,
/// 16 KiB: 4, 32 KiB and up: 2), with the kernel's batchcount or half the limit,
/// rounded up, where that is less. The kernel's count of 8 for every class from 4 to
/// 32 KiB kept up to 1.5 MiB a CPU in the twelve classes there; a C program cycling a
/// few of each (`mstress`) peaked 10% lower with this (17.4 against 15.8 MiB, medians
/// of 7 runs, with the page lists' smaller bound) and took the same time, as did
/// `rptest`, whose sizes spread over those classes.
pub fn enable_cpucache_params(size: usize) -> (u32, u32, u32) {
    let kernel: u32 = if size > 128 * 1024 {
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
    let limit = if size <= 1024 {
        (SMALL_CACHE_BYTES / size.max(1)).clamp(kernel as usize, SMALL_CACHE_MAX as usize)
    } else {
        (LARGE_CACHE_BYTES / size).clamp(kernel.min(2) as usize, kernel as usize)
    } as u32;
    let shared = if size <= PAGE_SIZE && topology::nr_cpu_ids() > 1 {
        8
    } else {
        0
    };
    (
        limit,
        kernel.div_ceil(2).min(limit.div_ceil(2)).max(1),
        shared,
    )
}

/// `do_tune_cpucache`: gives `cache` new per-CPU array caches of `limit` entries, moving
/// `batchcount` objects at a time, and a shared cache of `shared` batches per node
/// (bounded by the room its node structure has).
///
/// The array cache headers stay where they are; new entry arrays are allocated for
/// every CPU, every CPU's cache is stopped (its lock taken, waiting for a holder, and
/// on the rseq path every sequence in flight restarted), drained back to the slabs and
/// switched to its new array. The entries are only reached under that lock or inside a
/// sequence that checks it, so once every CPU has switched nobody can reach the old
/// arrays (full and first ones) and they are freed at once.
pub fn do_tune_cpucache(
    cache: &RawCache,
    limit: u32,
    batchcount: u32,
    shared: u32,
) -> Result<(), CacheError> {
    if limit == 0 || limit > MAX_LIMIT || batchcount == 0 || batchcount > limit {
        return Err(CacheError::Tunables { limit, batchcount });
    }
    if cache.debug() {
        // A debug cache keeps no object per CPU, so every operation is checked.
        return Err(CacheError::DebugCache);
    }
    let _chain = CHAIN.lock();
    if !cache.is_set_up() {
        return Err(CacheError::NoMemory);
    }
    // Refuse before changing anything what no node could hold, so the settings
    // slabinfo reports are the ones in effect.
    if shared.saturating_mul(batchcount) > KmemCacheNode::MAX_SHARED {
        return Err(CacheError::Shared {
            shared,
            max: KmemCacheNode::MAX_SHARED / batchcount,
        });
    }
    let Some(new) = super::cache::alloc_entries(limit) else {
        return Err(CacheError::NoMemory);
    };
    let mut to_destroy = PageList::new();
    let mut failed = false;
    // SAFETY: the chain lock is held, so the entry area is ours to replace; each array
    // cache is drained and switched under its own lock.
    unsafe {
        cache.with_stopped_caches(0..topology::nr_cpu_ids(), true, |cpu, ac| {
            drop(cache.drain_array(ac, (*ac).avail, None, None, &mut to_destroy));
            (*ac).entry = new.per_cpu_ptr(cpu).cast();
            (*ac).capacity = limit;
            (*ac).first_array = 0;
            // A retuned cache does not grow: exactly `limit`, its growth paid back.
            super::growth::set_limit(ac, cpu, cache.geom().size, limit, limit);
            (*ac).batchcount = batchcount;
        });
        let (old, first) = cache.replace_entries(new, limit);
        for area in [old, first].into_iter().flatten() {
            percpu::free_percpu(area);
        }
        let num = cache.geom().num;
        for node in 0..topology::nr_node_ids() {
            let n = cache.node(node);
            let mut l = n.list_lock.lock();
            // `free_limit` follows the batchcount, as at setup.
            let cpus_on_node = (0..topology::nr_cpu_ids())
                .filter(|&c| topology::cpu_to_node(c) == node)
                .count();
            l.free_limit = (1 + cpus_on_node) * batchcount as usize + num;
            // Past the new limit the shared cache's objects go back to their slabs;
            // then it is set to the new size (added, or grown, where needed).
            let sh = l.shared;
            let new_limit = shared * batchcount;
            let held = if sh.is_null() {
                Some((node, l))
            } else {
                // Lowered first, so no flush fills it past the new limit meanwhile.
                (*sh).limit = new_limit.min((*sh).capacity);
                let excess = (*sh).avail.saturating_sub(new_limit);
                cache.drain_array(sh, excess, Some(node), Some((node, l)), &mut to_destroy)
            };
            let mut l = match held {
                Some((_, l)) => l,
                None => n.list_lock.lock(),
            };
            // SAFETY: the list lock is held; the excess was drained just above, and
            // with the limit lowered first nothing refilled past it meanwhile.
            if !n.set_shared(&mut l, new_limit, batchcount) {
                failed = true;
            }
        }
        cache.destroy_slabs(&mut to_destroy, false);
    }
    cache.limit.store(limit, Ordering::Relaxed);
    cache.batchcount.store(batchcount, Ordering::Relaxed);
    if failed {
        // Some node kept its old shared cache: no memory for the larger one.
        return Err(CacheError::NoMemory);
    }
    cache.shared.store(shared, Ordering::Relaxed);
    Ok(())
}
