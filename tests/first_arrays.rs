//! A CPU's array cache starts on a small first array and moves to its full one when it
//! first fills it (`RawCache::widen`): a program that keeps a few objects of many
//! classes on a CPU pays a page for eight classes' entries, not a page for each, and
//! the move keeps every object, also while a retune replaces the arrays.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Barrier, Mutex};

use cpuslab::{KmemCache, SlabFlags};

/// One test at a time: the first counts resident percpu pages, which the others' caches
/// and retunes change.
static SERIAL: Mutex<()> = Mutex::new(());

/// Resident bytes of the percpu chunks.
fn percpu_resident() -> usize {
    cpuslab::stats::memory().breakdown.percpu_bytes
}

/// Frees `objs`, all of `cache`.
fn free_all<T>(cache: &KmemCache<T>, objs: Vec<NonNull<T>>) {
    for o in objs {
        // SAFETY: allocated from this cache by the caller, freed once.
        unsafe { cache.free(o) };
    }
}

/// Empties `cache`'s CPU caches and free slabs, checks that no object is left in use,
/// and destroys it.
fn shrink_and_destroy<T>(cache: KmemCache<T>, what: &str) {
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "{what}");
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// 24 caches of 64 B to 4 KiB objects, whose full arrays (4 to 16 KiB a CPU) are page
/// aligned: with a few objects of each on one CPU, their entries took 24 pages of that
/// CPU's unit when every cache started on its full array; on first arrays of 512 bytes
/// they take 3 or 4.
#[test]
fn a_few_objects_of_many_caches_share_entry_pages() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Pinned, with the global allocator's own caches of this CPU on their full arrays
    // already: none of them moves (and allocates) inside the window counted.
    common::settle_entry_arrays();
    // Each cache with a closure that allocates 8 of its objects and frees them, which
    // leaves them on this CPU's array cache.
    macro_rules! caches {
        ($($n:literal)*) => {
            [$({
                let c = KmemCache::<[u8; $n]>::new(concat!("first-", $n), SlabFlags::NONE)
                    .unwrap();
                Box::new(move || common::alloc_then_free(&c, 8)) as Box<dyn Fn()>
            },)*]
        };
    }
    let cycles = caches!(64 96 128 160 192 224 256 320 384 448 512 640 768 896 1024 1280 1536
        1792 2048 2560 3072 3584 4096 2000);
    // The headers (populated when the caches are made) are in the figure already.
    let before = percpu_resident();
    for cycle in &cycles {
        cycle();
    }
    let grew = percpu_resident().saturating_sub(before);
    assert!(
        grew <= 8 * 4096,
        "24 caches' entries for a few objects each made {} KiB of percpu memory resident",
        grew >> 10
    );
}

/// A CPU that cycles thousands of objects moves to its full array (as a producer whose
/// refills grow) and keeps growing there: every object comes back exactly once, and
/// none is lost.
#[test]
fn moving_to_the_full_array_keeps_every_object() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::pin();
    let cache = KmemCache::<[u64; 8]>::new("first-move", SlabFlags::NONE).unwrap();
    for round in 0..4u64 {
        let objs: Vec<NonNull<[u64; 8]>> = (0..3000u64)
            .map(|i| cache.alloc_with([round << 32 | i; 8]).unwrap())
            .collect();
        let distinct: HashSet<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
        assert_eq!(
            distinct.len(),
            objs.len(),
            "round {round}: an object handed out twice"
        );
        for (i, o) in objs.iter().enumerate() {
            // SAFETY: allocated above and not freed yet.
            let v = unsafe { o.as_ptr().read() };
            assert_eq!(
                v,
                [round << 32 | i as u64; 8],
                "round {round}: object {i} overwritten"
            );
        }
        free_all(&cache, objs);
    }
    shrink_and_destroy(cache, "objects lost");
}

/// 120 objects allocated (two refills of a batch, too few to move as a producer) and
/// freed: the 65th free finds the first array full and moves its 64 entries to the
/// full array, then the rest follow. The next 120 allocations pop exactly the 120
/// objects freed, the copied ones included.
#[test]
fn the_move_copies_the_cached_objects() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::settle_entry_arrays();
    let cache = KmemCache::<[u64; 8]>::new("first-copy", SlabFlags::NONE).unwrap();
    let objs: Vec<NonNull<[u64; 8]>> = (0..120u64)
        .map(|i| cache.alloc_with([i; 8]).unwrap())
        .collect();
    let freed: HashSet<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(freed.len(), 120);
    free_all(&cache, objs);
    let again: Vec<NonNull<[u64; 8]>> = (0..120).map(|_| cache.alloc().unwrap()).collect();
    let got: HashSet<usize> = again.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(
        got, freed,
        "the cache did not hand back what was freed into it"
    );
    free_all(&cache, again);
    shrink_and_destroy(cache, "objects lost");
}

/// Threads move their CPUs' caches of a new cache to the full arrays while another
/// thread retunes it (which replaces every array and frees the first ones): every
/// object stays its holder's alone, and the cache ends empty.
#[test]
fn moving_races_a_retune() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for k in 0..20u64 {
        let cache = KmemCache::<[u64; 16]>::new("first-race", SlabFlags::NONE).unwrap();
        let start = Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let (cache, start) = (&cache, &start);
                s.spawn(move || {
                    start.wait();
                    for round in 0..20u64 {
                        let n = 40 + (round * 37 + t * 11 + k) % 400;
                        let tag = t << 48 | round << 16;
                        let objs: Vec<NonNull<[u64; 16]>> = (0..n)
                            .map(|i| cache.alloc_with([tag | i; 16]).unwrap())
                            .collect();
                        for (i, o) in objs.iter().enumerate() {
                            // SAFETY: allocated above and not freed yet.
                            let v = unsafe { o.as_ptr().read() };
                            assert_eq!(v, [tag | i as u64; 16], "thread {t} round {round}");
                        }
                        free_all(cache, objs);
                    }
                });
            }
            start.wait();
            // The first retune races the threads' first moves (it replaces every
            // array, first ones included); the others race the growth on tuned ones.
            for (i, limit) in [120, 512, 1000].into_iter().enumerate() {
                for _ in 0..i * (k as usize % 4) {
                    std::thread::yield_now();
                }
                cache.tune(limit, 60, 8).unwrap();
            }
        });
        shrink_and_destroy(cache, &format!("cache {k}: objects lost or kept"));
    }
}
