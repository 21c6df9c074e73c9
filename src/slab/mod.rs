//! SLAB caches in the kernel's shape: `kmem_cache` with per-CPU `array_cache`s, per-node
//! `kmem_cache_node` lists and shared caches, slabs with out-of-line freelists and
//! colouring and randomized freelists, `enable_cpucache` tuning, periodic reaping, and
//! debug checks (red zones, poison, double and invalid frees) under `CPUSLAB_DEBUG=1`.

pub mod alien;
pub mod array_cache;
pub mod cache;
pub mod debug;
pub mod fastpath;
mod flags;
pub mod growth;
pub mod layout;
pub mod node;
pub mod reap;
pub mod transfer;
pub mod tune;

pub use cache::{RawCache, TagCheck};
pub use flags::SlabFlags;

/// Pages of `TYPESAFE_BY_RCU` slabs waiting for a grace period before they go back to
/// the page pool.
pub fn rcu_pending_pages() -> usize {
    cache::RCU_PENDING_PAGES.load(Ordering::Relaxed)
}

use core::fmt;
use core::ptr;
use core::sync::atomic::Ordering;

use crate::sync::Mutex;

/// Why a cache could not be created, tuned or destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// The alignment is not a power of two or exceeds a page.
    Alignment(usize),
    /// Objects of this size do not fit the largest slab.
    TooLarge(usize),
    /// The page pool could not supply the cache's structures.
    NoMemory,
    /// Tunables out of range (`1 <= batchcount <= limit <= 4096`).
    Tunables {
        /// Requested per-CPU limit.
        limit: u32,
        /// Requested batch count.
        batchcount: u32,
    },
    /// Objects are still allocated from the cache.
    Busy {
        /// Objects still in use.
        live_objects: usize,
    },
    /// Unknown flag bits.
    Flags(u32),
    /// A shared cache of `shared` batches does not fit the room each node keeps for
    /// one (`max` batches of this batchcount).
    Shared {
        /// Requested batches.
        shared: u32,
        /// The most that fit.
        max: u32,
    },
    /// A debug cache keeps no object per CPU (every operation takes its checked
    /// path), so it has nothing to tune.
    DebugCache,
    /// cpuslab cannot run here (another operating system, or a kernel page size it
    /// does not use: see [`crate::supported`]); the system allocator serves instead.
    Unsupported,
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Alignment(a) => write!(f, "alignment {a} is not a power of two up to 4096"),
            Self::TooLarge(s) => write!(f, "objects of {s} bytes do not fit a slab"),
            Self::NoMemory => f.write_str("out of memory for the cache's structures"),
            Self::Tunables { limit, batchcount } => write!(
                f,
                "tunables limit {limit} batchcount {batchcount} outside 1 <= batchcount <= limit <= 4096"
            ),
            Self::Busy { live_objects } => {
                write!(f, "cache still has {live_objects} objects in use")
            }
            Self::Flags(bits) => write!(f, "unknown slab flags {bits:#x}"),
            Self::Shared { shared, max } => write!(
                f,
                "a shared cache of {shared} batches does not fit (at most {max} of this batchcount)"
            ),
            Self::DebugCache => f.write_str("a debug cache keeps no per-CPU objects to tune"),
            Self::Unsupported => f.write_str("cpuslab does not run on this platform"),
        }
    }
}

impl core::error::Error for CacheError {}

/// The head of the cache chain (`slab_caches`), under [`CHAIN`].
pub struct ChainHead {
    /// Newest cache; older ones follow `RawCache::next`.
    pub first: *mut RawCache,
}

// SAFETY: followed only under the chain lock.
unsafe impl Send for ChainHead {}

/// The cache chain and the lock that serialises creating, tuning and destroying caches
/// (`slab_mutex`).
pub static CHAIN: Mutex<ChainHead> = Mutex::new(ChainHead {
    first: ptr::null_mut(),
});

/// The cache of caches: serves the `RawCache` of every cache created at run time.
pub static KMEM_CACHE: RawCache = RawCache::new();

/// The node cache (SLUB's `kmem_cache_node`): serves the `KmemCacheNode` of every cache
/// but its own, which it sets up from page blocks before it can serve. Set up first.
pub static KMEM_CACHE_NODE: RawCache = RawCache::new();

/// Adds a set-up cache to the chain.
pub fn link(cache: &'static RawCache) {
    let mut chain = CHAIN.lock();
    cache.next.store(chain.first, Ordering::Relaxed);
    chain.first = (cache as *const RawCache).cast_mut();
}

/// Creates a cache for objects of `size` bytes aligned to `align` (`kmem_cache_create`).
pub fn create_cache(
    name: &str,
    size: usize,
    align: usize,
    flags: u32,
) -> Result<&'static RawCache, CacheError> {
    let slot = KMEM_CACHE.alloc().cast::<RawCache>();
    if slot.is_null() {
        return Err(CacheError::NoMemory);
    }
    // SAFETY: a fresh object of the cache of caches, sized and aligned for RawCache.
    unsafe {
        slot.write(RawCache::new());
        let cache = &*slot;
        if let Err(e) = cache.setup(name, size, align, flags) {
            KMEM_CACHE.free(slot.cast());
            return Err(e);
        }
        link(cache);
        Ok(cache)
    }
}

/// Destroys a cache created by [`create_cache`] (`kmem_cache_destroy`). Refuses, leaving
/// the cache intact, while objects are still in use.
///
/// # Safety
/// No other thread uses the cache, and it is not used after a successful return.
pub unsafe fn destroy_cache(cache: &'static RawCache) -> Result<(), CacheError> {
    reap::shrink(cache);
    let live = cache_counts(cache).active_objs;
    if live > 0 {
        return Err(CacheError::Busy { live_objects: live });
    }
    if cache.flags.load(Ordering::Relaxed) & SlabFlags::TYPESAFE_BY_RCU.0 != 0 {
        // As kmem_cache_destroy: the slabs queued for a grace period are gone before
        // the cache is.
        crate::rcu::barrier();
    }
    {
        let mut chain = CHAIN.lock();
        let me = (cache as *const RawCache).cast_mut();
        let mut link = &mut chain.first as *mut *mut RawCache;
        // SAFETY: the chain is held: `link` is its head or the `next` of a cache on it,
        // and caches on the chain live while it is held.
        unsafe {
            while !(*link).is_null() {
                if *link == me {
                    *link = cache.next.load(Ordering::Relaxed);
                    break;
                }
                link = (**link).next.as_ptr();
            }
        }
    }
    // SAFETY: no other thread uses the cache (the contract) and it is off the chain.
    // With no object in use, `shrink` gave every slab back (and `rcu::barrier` waited
    // for those queued for a grace period), so it holds none.
    unsafe { cache.teardown() };
    // SAFETY: `create_cache` took the cache from the cache of caches, and it is not
    // used after this successful return (the contract).
    unsafe { KMEM_CACHE.free((cache as *const RawCache).cast_mut().cast()) };
    Ok(())
}

/// A cache's counts, as slabinfo reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheCounts {
    /// Objects in use (including those cached in array caches).
    pub active_objs: usize,
    /// Objects in all slabs.
    pub num_objs: usize,
    /// Slabs with at least one object in use.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Objects in the nodes' shared caches.
    pub shared_avail: usize,
    /// Remote frees waiting: objects of one node freed on another, in the alien
    /// caches, and small objects freed on another CPU than their slab's owner, in the
    /// CPUs' inboxes.
    pub alien_avail: usize,
    /// Objects in the CPUs' array caches, each count read without its lock (a racy
    /// figure, at most the objects in use).
    pub cpu_avail: usize,
}

/// Counts a cache's slabs and objects, node by node under each list lock.
pub fn cache_counts(cache: &RawCache) -> CacheCounts {
    let mut c = CacheCounts::default();
    if cache.cpu_cache.load(Ordering::Acquire).is_null() {
        return c;
    }
    let num = cache.geom().num;
    for node in 0..crate::topology::nr_node_ids() {
        let l = cache.node(node).list_lock.lock();
        c.num_slabs += l.total_slabs;
        c.active_slabs += l.total_slabs - l.slabs_free.len();
        c.num_objs += l.total_slabs * num;
        c.active_objs += l.total_slabs * num - l.free_objects;
        if !l.shared.is_null() {
            // SAFETY: the shared cache is guarded by the list lock held here.
            c.shared_avail += unsafe { (*l.shared).avail } as usize;
        }
    }
    c.alien_avail = cache.alien_objects() + cache.inbox_objects();
    let cpu_avail: usize = (0..crate::topology::nr_cpu_ids())
        .filter_map(|cpu| cache.cpu_ac(cpu))
        // SAFETY: the header lives as long as the cache; a racy read of its count is
        // good enough for statistics (and never dereferences).
        .map(|ac| unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ac).avail)) } as usize)
        .sum();
    c.cpu_avail = cpu_avail.min(c.active_objs);
    c
}

/// The frees `cache`'s CPUs sent to the slow path, summed over the CPUs (see
/// `ArrayCache::free_misses`).
pub fn free_misses(cache: &RawCache) -> u64 {
    (0..crate::topology::nr_cpu_ids())
        .filter_map(|cpu| cache.cpu_ac(cpu))
        // SAFETY: the headers live as long as the cache; the count is atomic.
        .map(|ac| u64::from(unsafe { (*ac).free_misses.load(Ordering::Relaxed) }))
        .sum()
}

/// Empties every cache's array caches and free slabs. Returns the pages freed.
pub fn shrink_all() -> usize {
    let chain = CHAIN.lock();
    // One look for a sandbox before the fences of every cache, not one each.
    crate::sys::process::with_one_look(|| {
        let mut pages = 0;
        let mut cache = chain.first;
        while !cache.is_null() {
            // SAFETY: caches on the chain live while the chain is held.
            unsafe {
                pages += reap::shrink(&*cache);
                cache = (*cache).next.load(Ordering::Relaxed);
            }
        }
        pages
    })
}

/// Calls `f` for every cache on the chain, under the chain lock.
pub fn for_each_cache(mut f: impl FnMut(&RawCache)) {
    let chain = CHAIN.lock();
    let mut cache = chain.first;
    while !cache.is_null() {
        // SAFETY: caches on the chain live while the chain is held.
        unsafe {
            f(&*cache);
            cache = (*cache).next.load(Ordering::Relaxed);
        }
    }
}

/// fork, prepare: takes the chain, every per-CPU array cache lock, the page lists'
/// locks, every node's alien cache locks and node lock, and the zone locks, in that
/// order (the order every path takes them in), so the child inherits consistent
/// structures.
pub(crate) fn fork_prepare() {
    CHAIN.lock_raw();
    // SAFETY: the chain is held, so no cache comes or goes.
    let first = unsafe { (*CHAIN.data_ptr()).first };
    let each = |f: &mut dyn FnMut(&RawCache)| {
        let mut c = first;
        while !c.is_null() {
            // SAFETY: as above.
            unsafe {
                f(&*c);
                c = (*c).next.load(Ordering::Relaxed);
            }
        }
    };
    each(&mut |c| {
        for cpu in 0..crate::topology::nr_cpu_ids() {
            if let Some(ac) = c.cpu_ac(cpu) {
                // SAFETY: the headers live as long as the cache.
                unsafe { (*ac).lock.lock_wait() };
            }
        }
    });
    crate::page::pcp::fork_hold_prepare();
    for cpu in 0..crate::page::pcp::nr_lists() {
        for p in crate::page::pcp::lists(cpu) {
            p.lock.lock_wait();
        }
    }
    each(&mut |c| {
        for node in 0..crate::topology::nr_node_ids() {
            // An alien cache's holder takes no other lock while it holds it.
            let aliens = &c.node(node).aliens;
            for home in aliens.nodes() {
                if let Some(a) = aliens.get(home) {
                    a.lock.lock_raw();
                }
            }
            c.node(node).list_lock.lock_raw();
        }
    });
    // pcpu_lock is taken before a zone lock when a chunk gets its header.
    crate::percpu::lock_all();
    crate::page::lock_all();
}

/// fork, parent and child: releases everything [`fork_prepare`] took.
///
/// # Safety
/// Only after [`fork_prepare`].
pub(crate) unsafe fn fork_release() {
    // SAFETY: `fork_prepare` took the zone locks and then `pcpu_lock` (the contract),
    // on this thread: the fork handlers run on the thread that forks.
    unsafe {
        crate::page::unlock_all();
        crate::percpu::unlock_all();
    }
    // SAFETY: `fork_prepare` took the chain, so no cache comes or goes.
    let first = unsafe { (*CHAIN.data_ptr()).first };
    let mut c = first;
    while !c.is_null() {
        // SAFETY: caches on the chain live while the chain is held.
        let cache = unsafe { &*c };
        for node in 0..crate::topology::nr_node_ids() {
            // SAFETY: `fork_prepare` took every node lock of every cache on the chain.
            unsafe { cache.node(node).list_lock.force_unlock() };
            let aliens = &cache.node(node).aliens;
            for home in aliens.nodes() {
                if let Some(a) = aliens.get(home) {
                    // SAFETY: `fork_prepare` took every alien cache lock too.
                    unsafe { a.lock.force_unlock() };
                }
            }
        }
        for cpu in 0..crate::topology::nr_cpu_ids() {
            if let Some(ac) = cache.cpu_ac(cpu) {
                // SAFETY: the headers live as long as the cache.
                unsafe { (*ac).lock.unlock() };
            }
        }
        c = cache.next.load(Ordering::Relaxed);
    }
    for cpu in 0..crate::page::pcp::nr_lists() {
        for p in crate::page::pcp::lists(cpu) {
            p.lock.unlock();
        }
    }
    crate::page::pcp::fork_release_prepare();
    // SAFETY: `fork_prepare` took the chain first, and this thread (or, in the child,
    // the only thread) holds it still.
    unsafe { CHAIN.force_unlock() };
}
