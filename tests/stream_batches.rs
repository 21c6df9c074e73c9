//! A producer moves more objects per trip to the node: a thread that keeps emptying its
//! CPU's cache refills more at a time. A binary of its own: the test reads slabinfo
//! after every allocation, and a pinned thread of another test on the same CPU would
//! take turns at the cache (a refill by another thread starts the count again).

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::ptr::NonNull;

use cpuslab::{KmemCache, SlabFlags};

/// A thread that only allocates refills its CPU's cache from the node's slabs, which
/// shows as a jump of the objects in use. The first refills take a batch (60 of 64 B);
/// later ones half of what it took since the cache last overflowed, up to half the
/// limit (256). With the kernel's fixed batch every jump was 60.
#[test]
fn a_producer_refills_more_at_a_time() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 64]>::new("producer-64", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, _) = common::slab_row("producer-64");
    assert_eq!((limit, batch), (512, 60));
    let mut objs: Vec<NonNull<[u8; 64]>> = Vec::with_capacity(5000);
    let mut jumps = Vec::new();
    let (mut in_use, ..) = common::slab_row("producer-64");
    for _ in 0..5000 {
        objs.push(cache.alloc().unwrap());
        let (now, ..) = common::slab_row("producer-64");
        if now > in_use {
            jumps.push(now - in_use);
        }
        in_use = now;
    }
    assert_eq!(jumps.first(), Some(&60), "refills: {jumps:?}");
    let largest = jumps.iter().copied().max().unwrap();
    assert_eq!(largest, 256, "refills: {jumps:?}");
    for o in objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
    }
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost in the refills");
    cache.destroy().map_err(|(_, e)| e).unwrap();
}
