//! Reports in the kernel's formats: `/proc/slabinfo` (version 2.1) and
//! `/proc/buddyinfo`, plus a summary of the memory cpuslab holds.
//!
//! The `write_*` functions format into any `fmt::Write` and take each lock only to copy
//! numbers out, so they can write into a `String` (which allocates through cpuslab).

use core::fmt::{self, Write};
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
    /// handed out (per-CPU page lists included) or free but dirty, plus huge mappings
    /// (live and cached). Purged and never-touched free pages are not counted.
    pub committed_bytes: usize,
    /// Bytes on the buddy free lists.
    pub free_bytes: usize,
    /// Free bytes not known to be zero (resident until purged).
    pub dirty_free_bytes: usize,
    /// Bytes cached on the per-CPU page lists.
    pub pcp_bytes: usize,
    /// Bytes given back to the OS by purging so far.
    pub purged_bytes: u64,
    /// Bytes of freed huge mappings kept, faulted in, for reuse (part of
    /// `committed_bytes`; unmapped after the decay time or by `trim()`).
    pub huge_cached_bytes: usize,
}

/// A snapshot of [`MemoryStats`].
pub fn memory() -> MemoryStats {
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
