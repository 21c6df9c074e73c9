//! `stats::memory().breakdown`: the figures add up to the process's resident memory
//! and each one moves with its structure. Each test runs in a child process of its
//! own, so nothing else allocates meanwhile.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{alloc, dealloc, Layout};

use cpuslab::stats::{memory, MemoryBreakdown};

fn bd() -> MemoryBreakdown {
    memory().breakdown
}

/// Allocates `n` blocks of `size` bytes and writes every byte.
fn fill(n: usize, size: usize) -> Vec<*mut u8> {
    let layout = Layout::from_size_align(size, 8).unwrap();
    (0..n)
        .map(|i| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: the block just allocated.
            unsafe { p.write_bytes(i as u8 | 1, size) };
            p
        })
        .collect()
}

fn drop_all(v: Vec<*mut u8>, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for p in v {
        // SAFETY: allocated by `fill` with this layout.
        unsafe { dealloc(p, layout) };
    }
}

/// With known allocations of every kind (small and mid-sized objects, large blocks,
/// huge blocks), the growth of the breakdown's `resident` matches the growth of the
/// process's RSS within 2%, and the committed bytes are the arena and huge parts of
/// the breakdown.
#[test]
fn breakdown_adds_up_to_rss() {
    if !common::is_child() {
        let (status, stderr) =
            common::run_child("breakdown_adds_up_to_rss", &[("CPUSLAB_BACKGROUND", "0")]);
        assert!(status.success(), "{stderr}");
        return;
    }
    cpuslab::trim();
    let rss0 = common::rss_bytes();
    let b0 = bd();
    let mut small = fill(300_000, 100);
    let mid = fill(20_000, 1500);
    let large = fill(300, 64 << 10);
    let huge = fill(3, 9 << 20);
    // Free some so that caches, partial slabs and free pages hold memory too (in
    // place: a growing vector would hold capacity it never touches).
    let layout = Layout::from_size_align(100, 8).unwrap();
    for p in small.iter_mut().step_by(3) {
        // SAFETY: allocated by `fill` with this layout; nulled so it is freed once.
        unsafe { dealloc(*p, layout) };
        *p = std::ptr::null_mut();
    }
    let rss1 = common::rss_bytes();
    let m = memory();
    let b1 = m.breakdown;
    let d_rss = rss1 as f64 - rss0 as f64;
    let d_res = b1.resident as f64 - b0.resident as f64;
    eprintln!("rss +{d_rss} breakdown +{d_res}\n{b0}\n{b1}");
    assert!(d_rss > 100e6, "the allocations should be resident: {d_rss}");
    assert!(
        (d_rss - d_res).abs() <= 0.02 * d_rss,
        "breakdown grew by {d_res}, RSS by {d_rss}"
    );
    let arena_part = b1.resident
        - b1.huge_live_bytes
        - b1.huge_cached_bytes
        - b1.desc_bytes
        - b1.percpu_bytes
        - b1.arena_map_bytes;
    assert_eq!(
        arena_part + b1.huge_live_bytes + b1.huge_cached_bytes,
        m.committed_bytes,
        "{b1}"
    );
    small.retain(|p| !p.is_null());
    drop_all(small, 100);
    drop_all(mid, 1500);
    drop_all(large, 64 << 10);
    drop_all(huge, 9 << 20);
}

/// Each figure moves when its structure does: live bytes follow allocations, frees
/// move them to the caches and free slabs, `trim()` empties those, large and huge
/// blocks show in their own figures, and `free_rcu` holds objects until a barrier.
#[test]
fn each_category_moves() {
    if !common::is_child() {
        let (status, stderr) =
            common::run_child("each_category_moves", &[("CPUSLAB_BACKGROUND", "0")]);
        assert!(status.success(), "{stderr}");
        return;
    }
    cpuslab::trim();
    let b0 = bd();
    assert_eq!(b0.alien_bytes, 0);

    // Objects: live bytes grow by at least their class size.
    let objs = fill(50_000, 256);
    let b1 = bd();
    assert!(b1.live_bytes >= b0.live_bytes + 50_000 * 256, "{b0}\n{b1}");
    assert!(b1.live_objects >= b0.live_objects + 50_000);

    // Freeing them moves the bytes to the array caches, shared caches, partial and
    // free slabs, and (slabs given back past the caches' free limits) free pages.
    drop_all(objs, 256);
    let b2 = bd();
    let cached = |b: &MemoryBreakdown| {
        b.cpu_cache_bytes
            + b.shared_cache_bytes
            + b.partial_free_bytes
            + b.free_slab_bytes
            + b.pcp_bytes
            + b.dirty_free_bytes
    };
    assert!(b2.live_bytes + 40_000 * 256 <= b1.live_bytes, "{b1}\n{b2}");
    assert!(cached(&b2) >= cached(&b1) + 40_000 * 256, "{b1}\n{b2}");
    assert!(b2.cpu_cache_bytes > 0, "{b2}");

    // trim() empties the caches and free slabs and purges the free pages.
    cpuslab::trim();
    let b3 = bd();
    assert_eq!(b3.cpu_cache_bytes, 0, "{b3}");
    assert_eq!(b3.shared_cache_bytes, 0, "{b3}");
    assert_eq!(b3.free_slab_bytes, 0, "{b3}");
    assert_eq!(b3.pcp_bytes, 0, "{b3}");
    assert_eq!(b3.dirty_free_bytes, 0, "{b3}");
    assert!(b3.clean_free_bytes > b2.clean_free_bytes, "{b2}\n{b3}");

    // Large blocks, exactly.
    let large = fill(10, 64 << 10);
    let b4 = bd();
    assert_eq!(
        b4.large_bytes,
        b3.large_bytes + 10 * (64 << 10),
        "{b3}\n{b4}"
    );
    drop_all(large, 64 << 10);
    assert_eq!(bd().large_bytes, b3.large_bytes);

    // Huge blocks: live, then cached, then gone.
    let huge = fill(1, 8 << 20);
    let b5 = bd();
    assert!(b5.huge_live_bytes >= b3.huge_live_bytes + (8 << 20), "{b5}");
    drop_all(huge, 8 << 20);
    let b6 = bd();
    assert_eq!(b6.huge_live_bytes, b3.huge_live_bytes, "{b6}");
    assert!(b6.huge_cached_bytes >= 8 << 20, "{b6}");
    cpuslab::trim();
    assert_eq!(bd().huge_cached_bytes, 0);

    // free_rcu: deferred until a grace period has passed and the callbacks ran.
    let objs = fill(1000, 512);
    let b7 = bd();
    let layout = Layout::from_size_align(512, 8).unwrap();
    // A reader holds the grace period back, so no batch is freed before the check.
    let reader = cpuslab::rcu::read_lock();
    for &p in &objs {
        // SAFETY: nothing reaches the blocks any more.
        unsafe { cpuslab::rcu::free_rcu(p, layout) };
    }
    let b8 = bd();
    assert!(b8.rcu_bytes >= b7.rcu_bytes + 1000 * 512, "{b7}\n{b8}");
    assert!(b8.live_bytes + 1000 * 512 <= b7.live_bytes, "{b7}\n{b8}");
    drop(reader);
    cpuslab::rcu::barrier();
    let b9 = bd();
    assert_eq!(b9.rcu_bytes, 0, "{b9}");

    // Descriptors and the arena map are resident once anything is.
    assert!(b9.desc_bytes > 0 && b9.arena_map_bytes > 0 && b9.percpu_bytes > 0);
}
