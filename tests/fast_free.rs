//! The free fast paths. A free into a CPU's empty array cache stays on the fast path
//! for objects of a cache line or more (the push sequence's `INTO_EMPTY` word); only
//! smaller ones, which could share a line with another CPU's, go to the slow path to be
//! put under a batch of the CPU's own (`RawCache::free_into_empty`). And a kmalloc
//! free writes the block, so that its line leaves the free in the freeing CPU's cache
//! (`own_line`). In their own binary, so that no other test's frees count in the
//! caches they watch.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::slab::fastpath::{fast_path, FastPath};
use cpuslab::CpuSlab;

/// The frees cache `name` sent to the slow path so far.
fn free_misses(name: &str) -> u64 {
    cpuslab::stats::caches()
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.free_misses)
        .unwrap_or_else(|| panic!("no cache {name}"))
}

/// An 8 KiB slab holds one object, so a refill of an empty cache brings one: an
/// allocation and a free in turn keep the CPU's cache at zero and one object. Before
/// the `INTO_EMPTY` word every one of those frees missed (15 ns a 4 KiB pair through
/// the C interface instead of 4).
#[test]
fn frees_into_an_empty_cache_stay_fast_for_large_objects() {
    if fast_path() != FastPath::Rseq {
        // The tried-lock path has no push sequence to refuse.
        return;
    }
    // One CPU, so that every allocation and free meets the same array cache.
    common::pin();
    let big = Layout::from_size_align(8192, 16).unwrap();
    // SAFETY: a valid layout; each block is written, then freed once with its layout.
    let pair = |layout: Layout| unsafe {
        let p = CpuSlab.alloc(layout);
        assert!(!p.is_null());
        p.write(1);
        CpuSlab.dealloc(p, layout);
    };
    pair(big);
    let before = free_misses("kmalloc-8192");
    for _ in 0..1000 {
        pair(big);
    }
    let missed = free_misses("kmalloc-8192") - before;
    assert!(
        missed < 50,
        "{missed} of 1000 frees of 8 KiB took the slow path"
    );
}

/// The free fast paths, sized (`GlobalAlloc`) and unsized (C `free`), and C `free`'s
/// slow path store to the first word of the block they free: its line leaves the free
/// modified in the freeing CPU's cache, as a free list's link leaves it (a producer's
/// stores into a block its consumer had only read stalled). Before, the word kept its
/// last value.
#[test]
fn a_free_writes_the_block() {
    common::pin();
    // The 896-byte class, which the harness's own allocations on this CPU, which could
    // take a block back between its free and the read, hardly use.
    let layout = Layout::from_size_align(840, 8).unwrap();
    // SAFETY: a valid layout; each block is written, freed once, and its first word
    // read after the free, which is the point of the test (the block stays mapped in
    // its slab, cached on this CPU or back in the slab).
    unsafe {
        // C `free`'s slow path, the only one where restartable sequences are off.
        let r = CpuSlab.alloc(layout);
        assert!(!r.is_null());
        r.cast::<u64>().write(u64::MAX);
        cpuslab::kmalloc::kfree_unsized(r);
        assert_eq!(
            r.cast::<u64>().read_volatile(),
            0,
            "the slow free left the block"
        );
        if fast_path() != FastPath::Rseq {
            // The fast paths are restartable sequences.
            return;
        }
        // Several in turn, so that the cache is not empty (an empty one may send the
        // free to the slow path) when the ones watched are freed.
        let warm: Vec<*mut u8> = (0..8).map(|_| CpuSlab.alloc(layout)).collect();
        for &p in &warm {
            CpuSlab.dealloc(p, layout);
        }
        let p = CpuSlab.alloc(layout);
        let q = CpuSlab.alloc(layout);
        assert!(!p.is_null() && !q.is_null());
        p.cast::<u64>().write(u64::MAX);
        q.cast::<u64>().write(u64::MAX);
        CpuSlab.dealloc(p, layout);
        assert_eq!(
            p.cast::<u64>().read_volatile(),
            0,
            "the sized free left the block"
        );
        assert!(
            cpuslab::kmalloc::kfree_unsized_fast(q),
            "the unsized free was not fast"
        );
        assert_eq!(
            q.cast::<u64>().read_volatile(),
            0,
            "the unsized free left the block"
        );
    }
}
