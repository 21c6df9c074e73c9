//! A CPU that only frees (a consumer's) shrinks its array cache. One test in its own
//! binary: other tests' slab growth runs the growth reap, which drains idle caches,
//! this one's among them (it only frees, so it is idle), and then its frees no longer
//! overflow often enough to count the dry flushes that shrink it. Beside the other
//! slab tests under load it failed 2 times in 20.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::ptr::NonNull;

use cpuslab::{KmemCache, SlabFlags};

/// A CPU that only frees (a consumer's) holds less: after twice its limit's worth of
/// frees without a refill its limit shrinks by a batch, down to one batch. (`shrink`
/// after the allocations empties the cache and forgets its refills.) Freeing
/// 20,000 objects of 64 B in a row leaves at most a batch or two on the CPU (plus the
/// node's shared cache) instead of the 512 its limit allowed.
#[test]
fn a_cache_that_only_frees_shrinks() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 64]>::new("drain-64", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, shared) = common::slab_row("drain-64");
    assert_eq!((limit, batch), (512, 60));
    let objs: Vec<NonNull<[u8; 64]>> = (0..20_000).map(|_| cache.alloc().unwrap()).collect();
    cache.shrink();
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    let (cached, at_node) = common::active_and_shared("drain-64");
    let on_cpu = cached.saturating_sub(at_node);
    assert!(
        on_cpu <= 2 * batch as usize,
        "{on_cpu} objects on the CPU after 20,000 frees (limit {limit}, shared {shared})"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}
