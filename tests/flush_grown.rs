//! A flush of an array cache grown past its free growth: an eighth of its limit
//! leaves at once. One test in its own binary: it reads slabinfo after every free,
//! and its growth charges its CPU's budget, neither of which should run beside the
//! other slab tests' pinned threads.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::ptr::NonNull;

use cpuslab::{KmemCache, SlabFlags};

/// A cache grown past eight batches flushes an eighth of its limit at a time, not the
/// kernel's batch: a flush slides the objects it keeps down the array, 33 entries for
/// every object flushed from 2048 by batches of 60. After bursts of 6000 of 64 B grow
/// the limit towards its capacity (4096), each overflow of the final round's frees
/// moves at least 200 objects to the node at once (to the shared cache, or to the
/// slabs, which shows as a drop of the objects in use); it moved 60.
#[test]
fn a_grown_cache_flushes_an_eighth_of_its_limit() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 64]>::new("flush-grown", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, _) = common::slab_row("flush-grown");
    assert_eq!((limit, batch), (512, 60));
    for _ in 0..3 {
        common::alloc_then_free(&cache, 6000);
    }
    let objs: Vec<NonNull<[u8; 64]>> = (0..6000).map(|_| cache.alloc().unwrap()).collect();
    let (mut in_use, ..) = common::slab_row("flush-grown");
    let mut shared = common::shared_avail("flush-grown");
    let mut largest = 0;
    for o in objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
        let (now_in_use, ..) = common::slab_row("flush-grown");
        let now_shared = common::shared_avail("flush-grown");
        let moved = in_use.saturating_sub(now_in_use) + now_shared.saturating_sub(shared);
        largest = largest.max(moved);
        (in_use, shared) = (now_in_use, now_shared);
    }
    assert!(
        largest >= 200,
        "the grown cache flushed at most {largest} objects at a time (batch {batch})"
    );
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost in the flushes");
    cache.destroy().map_err(|(_, e)| e).unwrap();
}
