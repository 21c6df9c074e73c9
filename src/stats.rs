//! Reports in the kernel's formats: `/proc/slabinfo` (version 2.1) and
//! `/proc/buddyinfo`, plus a summary of the memory cpuslab holds.
//!
//! The `write_*` functions format into any `fmt::Write` and take each lock only to copy
//! numbers out, so they can write into a `String` (which allocates through cpuslab).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::Ordering;

use crate::page::{self, arena, pcp};
pub use crate::percpu::stats::{percpu_stats, write_percpu_stats, PercpuStats};
pub use crate::slab::fastpath::{fast_path, FastPath};
use crate::slab::{self, RawCache};
use crate::topology;

/// Writes the slabinfo table.
pub fn write_slabinfo(w: &mut dyn Write) -> fmt::Result {
    crate::init::ensure();
    w.write_str("slabinfo - version: 2.1\n")?;
    w.write_str(
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> \
         : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n",
    )?;
    let mut result = Ok(());
    slab::for_each_cache(|cache: &RawCache| {
        let c = slab::cache_counts(cache);
        let g = cache.geom();
        if result.is_ok() {
            result = writeln!(
                w,
                "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                cache.name(),
                c.active_objs,
                c.num_objs,
                g.size,
                g.num,
                1usize << g.order,
                cache.limit.load(Ordering::Relaxed),
                cache.batchcount.load(Ordering::Relaxed),
                cache.shared.load(Ordering::Relaxed),
                c.active_slabs,
                c.num_slabs,
                c.shared_avail,
            );
        }
    });
    result
}

/// One cache's slabinfo row as numbers ([`caches`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's name (`kmalloc-64`, or the name given to `KmemCache::new`).
    pub name: String,
    /// Bytes an object takes in its slab.
    pub object_size: usize,
    /// Objects a slab holds.
    pub objects_per_slab: usize,
    /// Pages a slab spans.
    pub pages_per_slab: usize,
    /// Objects in use, counting those cached per CPU and in the shared caches.
    pub active_objs: usize,
    /// Objects in all slabs.
    pub num_objs: usize,
    /// Slabs with at least one object in use.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Objects in the nodes' shared caches.
    pub shared_avail: usize,
    /// The per-CPU array caches' limit, batch count and shared factor (`tune`).
    pub limit: u32,
    /// Objects a refill or flush moves.
    pub batchcount: u32,
    /// The shared cache's size, in batches.
    pub shared: u32,
    /// Frees that the CPUs' restartable push refused (a full, empty or stopped array
    /// cache) and that took the slow path, since the cache was set up: the kernel's
    /// `freemiss` statistic (`CONFIG_DEBUG_SLAB`). 0 on the tried-lock path.
    pub free_misses: u64,
}

/// Every cache's slabinfo row as numbers, for a metrics exporter: each cache's counts
/// under its node locks, as [`write_slabinfo`] reads them. It allocates the `Vec` and
/// the names through cpuslab.
pub fn caches() -> Vec<CacheStats> {
    crate::init::ensure();
    let mut v = Vec::new();
    slab::for_each_cache(|cache: &RawCache| {
        let c = slab::cache_counts(cache);
        let g = cache.geom();
        v.push(CacheStats {
            name: cache.name().into(),
            object_size: g.size,
            objects_per_slab: g.num,
            pages_per_slab: 1 << g.order,
            active_objs: c.active_objs,
            num_objs: c.num_objs,
            active_slabs: c.active_slabs,
            num_slabs: c.num_slabs,
            shared_avail: c.shared_avail,
            limit: cache.limit.load(Ordering::Relaxed),
            batchcount: cache.batchcount.load(Ordering::Relaxed),
            shared: cache.shared.load(Ordering::Relaxed),
            free_misses: slab::free_misses(cache),
        });
    });
    v
}

/// The slabinfo table as a string.
pub fn slabinfo() -> String {
    let mut s = String::new();
    let _ = write_slabinfo(&mut s);
    s
}

/// Writes free block counts per order for every node, as `/proc/buddyinfo`.
pub fn write_buddyinfo(w: &mut dyn Write) -> fmt::Result {
    crate::init::ensure();
    for node in 0..topology::nr_node_ids() {
        let counts = page::zone(node).lock().nr_free();
        write!(w, "Node {node}, zone {:>8} ", "Normal")?;
        for n in counts {
            write!(w, "{n:>6} ")?;
        }
        w.write_char('\n')?;
    }
    Ok(())
}

/// The buddyinfo table as a string.
pub fn buddyinfo() -> String {
    let mut s = String::new();
    let _ = write_buddyinfo(&mut s);
    s
}

/// How much memory cpuslab holds, and where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Address space reserved for arenas.
    pub reserved_bytes: usize,
    /// Bytes that may be resident, what `CPUSLAB_HEAP_LIMIT` bounds: arena pages
    /// handed out (per-CPU page lists included) or free but dirty, plus huge blocks
    /// (live, and freed but dirty). Purged and never-touched free pages are not counted.
    pub committed_bytes: usize,
    /// Bytes on the buddy free lists.
    pub free_bytes: usize,
    /// Free bytes not known to be zero (resident until purged).
    pub dirty_free_bytes: usize,
    /// Bytes cached on the per-CPU page lists.
    pub pcp_bytes: usize,
    /// Bytes given back to the OS by purging so far.
    pub purged_bytes: u64,
    /// Bytes of freed huge blocks kept, faulted in, for reuse: the huge heap's dirty
    /// free extents (part of `committed_bytes`; purged after the decay time, past
    /// their budget, or by `trim()`).
    pub huge_cached_bytes: usize,
    /// Where the resident bytes sit, structure by structure.
    pub breakdown: MemoryBreakdown,
}

/// Where cpuslab's resident memory sits. Every field is bytes; the fields other than
/// `clean_free_bytes` and `live_objects` add up to [`resident`](Self::resident).
///
/// Figures are read structure by structure, each under its own lock (the per-CPU
/// array caches' counts without one), so while other threads allocate they are a
/// snapshot of each structure, not of the whole at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// Objects in use, at their slot (class) size. Requested sizes are not recorded
    /// anywhere (a free is told its size by its caller), so they cannot be had for
    /// free; the difference is internal fragmentation hidden in this figure.
    pub live_bytes: usize,
    /// Objects in use.
    pub live_objects: usize,
    /// Free objects cached in the per-CPU array caches.
    pub cpu_cache_bytes: usize,
    /// Free objects in the nodes' shared caches.
    pub shared_cache_bytes: usize,
    /// Remote frees in flight: in the alien caches (objects of one node freed on
    /// another, waiting to go home; none on a machine of one node) and in the CPUs'
    /// inboxes (small objects freed on another CPU than the one that took them from
    /// their slab, waiting for its next refill).
    pub alien_bytes: usize,
    /// Free objects in partial slabs (slots, at their slot size).
    pub partial_free_bytes: usize,
    /// Whole free slabs kept by the caches.
    pub free_slab_bytes: usize,
    /// The part of partial and full slabs that holds no object slot (colour, on-slab
    /// freelists, the tail that fits no further object).
    pub slab_overhead_bytes: usize,
    /// Pages on the per-CPU page lists.
    pub pcp_bytes: usize,
    /// Free buddy pages not yet purged (resident).
    pub dirty_free_bytes: usize,
    /// Free buddy pages purged or never touched: not resident, not in `resident`.
    pub clean_free_bytes: usize,
    /// Freed huge blocks kept resident for reuse (the huge heap's dirty extents).
    pub huge_cached_bytes: usize,
    /// Ranges of live huge blocks (headers included).
    pub huge_live_bytes: usize,
    /// Large kmalloc blocks in use (whole pages from the buddy zones).
    pub large_bytes: usize,
    /// Page descriptors resident (64 bytes per page the zones have touched, in whole
    /// pages of descriptors, arena headers included).
    pub desc_bytes: usize,
    /// Resident pages of the percpu chunks, every CPU's unit (the per-CPU array
    /// caches' headers and the entry arrays their CPUs touched, the per-CPU page lists,
    /// percpu counters).
    pub percpu_bytes: usize,
    /// Resident pages of the arena map.
    pub arena_map_bytes: usize,
    /// cpuslab's own blocks from the zones: cache node structures with their shared
    /// caches' arrays, percpu chunk headers, RCU callback lists.
    pub internal_bytes: usize,
    /// Frees deferred by RCU: slab objects (class size) waiting in `free_rcu` batches
    /// with the batch pages, and slabs of `TYPESAFE_BY_RCU` caches waiting for their
    /// grace period. Large and huge blocks waiting stay in their own figures.
    pub rcu_bytes: usize,
    /// The sum of the resident fields above.
    pub resident: usize,
}

impl MemoryBreakdown {
    /// Sums the resident fields into `resident`.
    fn total(&mut self) {
        self.resident = self.live_bytes
            + self.cpu_cache_bytes
            + self.shared_cache_bytes
            + self.alien_bytes
            + self.partial_free_bytes
            + self.free_slab_bytes
            + self.slab_overhead_bytes
            + self.pcp_bytes
            + self.dirty_free_bytes
            + self.huge_cached_bytes
            + self.huge_live_bytes
            + self.large_bytes
            + self.desc_bytes
            + self.percpu_bytes
            + self.arena_map_bytes
            + self.internal_bytes
            + self.rcu_bytes;
    }

    /// Writes the breakdown on one line, in KiB.
    pub fn write(&self, w: &mut dyn Write) -> fmt::Result {
        write!(
            w,
            "resident {} KiB: live {} ({} objs), cpu caches {}, shared {}, alien {}, \
             partial free {}, free slabs {}, slab overhead {}, pcp {}, free dirty {} \
             (clean {} not resident), huge live {} cached {}, large {}, descriptors {}, \
             percpu {}, arena map {}, internal {}, rcu {}",
            self.resident >> 10,
            self.live_bytes >> 10,
            self.live_objects,
            self.cpu_cache_bytes >> 10,
            self.shared_cache_bytes >> 10,
            self.alien_bytes >> 10,
            self.partial_free_bytes >> 10,
            self.free_slab_bytes >> 10,
            self.slab_overhead_bytes >> 10,
            self.pcp_bytes >> 10,
            self.dirty_free_bytes >> 10,
            self.clean_free_bytes >> 10,
            self.huge_live_bytes >> 10,
            self.huge_cached_bytes >> 10,
            self.large_bytes >> 10,
            self.desc_bytes >> 10,
            self.percpu_bytes >> 10,
            self.arena_map_bytes >> 10,
            self.internal_bytes >> 10,
            self.rcu_bytes >> 10,
        )
    }
}

impl fmt::Display for MemoryBreakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

/// Walks the caches, zones, arenas and the rest for [`MemoryBreakdown`].
fn breakdown(m: &MemoryStats) -> MemoryBreakdown {
    let page_size = crate::sys::PAGE_SIZE;
    let mut b = MemoryBreakdown {
        pcp_bytes: m.pcp_bytes,
        dirty_free_bytes: m.dirty_free_bytes,
        clean_free_bytes: m.free_bytes - m.dirty_free_bytes,
        huge_cached_bytes: m.huge_cached_bytes,
        huge_live_bytes: page::huge::live_bytes(),
        arena_map_bytes: arena::map_resident_bytes(),
        ..Default::default()
    };
    let mut live_slab_objs_bytes = 0;
    slab::for_each_cache(|cache: &RawCache| {
        if cache.cpu_cache.load(Ordering::Acquire).is_null() {
            return;
        }
        let g = cache.geom();
        let slab_bytes = page_size << g.order;
        let mut cpu_objs = 0usize;
        for cpu in 0..topology::nr_cpu_ids() {
            if let Some(ac) = cache.cpu_ac(cpu) {
                // SAFETY: the header lives as long as the cache; a racy read of its
                // count is good enough for statistics (and never dereferences).
                cpu_objs += unsafe { ptr::read_volatile(ptr::addr_of!((*ac).avail)) } as usize;
            }
        }
        let mut shared_objs = 0usize;
        let mut in_slabs = 0usize;
        for node in 0..topology::nr_node_ids() {
            let l = cache.node(node).list_lock.lock();
            let free_slabs = l.slabs_free.len();
            let used_slabs = l.total_slabs - free_slabs;
            b.free_slab_bytes += free_slabs * slab_bytes;
            b.partial_free_bytes += (l.free_objects - free_slabs * g.num) * g.size;
            b.slab_overhead_bytes += used_slabs * (slab_bytes - g.num * g.size);
            in_slabs += used_slabs * g.num - (l.free_objects - free_slabs * g.num);
            if !l.shared.is_null() {
                // SAFETY: the shared cache is guarded by the list lock held here.
                shared_objs += unsafe { (*l.shared).avail } as usize;
            }
        }
        // A per-CPU count read without its lock may be ahead of the slabs' counts.
        let shared_objs = shared_objs.min(in_slabs);
        let alien_objs =
            (cache.alien_objects() + cache.inbox_objects()).min(in_slabs - shared_objs);
        let cpu_objs = cpu_objs.min(in_slabs - shared_objs - alien_objs);
        let live = in_slabs - shared_objs - alien_objs - cpu_objs;
        b.cpu_cache_bytes += cpu_objs * g.size;
        b.shared_cache_bytes += shared_objs * g.size;
        b.alien_bytes += alien_objs * g.size;
        b.live_objects += live;
        live_slab_objs_bytes += live * g.size;
    });
    let (rcu_slab, rcu_batches) = crate::rcu::deferred();
    let rcu_slab = rcu_slab.min(live_slab_objs_bytes);
    b.live_bytes = live_slab_objs_bytes - rcu_slab;
    b.rcu_bytes = rcu_slab + slab::rcu_pending_pages() * page_size;
    for node in 0..topology::nr_node_ids() {
        let z = page::zone(node).lock();
        b.large_bytes += z.large_pages * page_size;
        b.internal_bytes += z.meta_pages * page_size;
        let mut a = z.arenas();
        while !a.is_null() {
            // SAFETY: arenas live for the process; the zone lock is held.
            unsafe {
                b.desc_bytes += arena::desc_resident_bytes(a);
                a = (*a).next;
            }
        }
    }
    // Large blocks cached on the per-CPU lists above order 0 stay in the zones' large
    // count until a list gives them back; they are shown with the lists.
    let mut pcp_large = 0;
    for cpu in 0..pcp::nr_lists() {
        for l in pcp::lists(cpu).filter(|l| l.order > 0) {
            pcp_large += pcp::count_of(l) << l.order;
        }
    }
    b.large_bytes = b.large_bytes.saturating_sub(pcp_large * page_size);
    // The batch pages (order-0 pages, in no zone count) go with the deferred frees.
    b.rcu_bytes += rcu_batches * page_size;
    let p = crate::percpu::stats::percpu_stats();
    b.percpu_bytes = p.resident_pages * page_size;
    b.total();
    b
}

/// A snapshot of [`MemoryStats`].
pub fn memory() -> MemoryStats {
    let mut m = memory_counters();
    m.breakdown = breakdown(&m);
    m
}

/// [`memory`] without its breakdown (left at its default): the counters alone, which
/// cost no walk of the caches and no `mincore(2)` of the metadata.
pub(crate) fn memory_counters() -> MemoryStats {
    let mut m = MemoryStats {
        reserved_bytes: arena::reserved(),
        committed_bytes: arena::committed(),
        huge_cached_bytes: page::huge::cached_bytes(),
        ..Default::default()
    };
    for node in 0..topology::nr_node_ids() {
        let z = page::zone(node).lock();
        m.free_bytes += z.free_pages * crate::sys::PAGE_SIZE;
        m.dirty_free_bytes += z.dirty_pages * crate::sys::PAGE_SIZE;
        m.purged_bytes += z.purged_pages * crate::sys::PAGE_SIZE as u64;
    }
    for cpu in 0..pcp::nr_lists() {
        m.pcp_bytes += pcp::count(cpu) * crate::sys::PAGE_SIZE;
    }
    m
}
