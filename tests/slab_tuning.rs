//! SLAB's tuning as the kernel's mm/slab.c does it: `enable_cpucache`'s table for
//! every size row, slab colouring, and `cache_reap` shrinking a cache left alone.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use cpuslab::{KmemCache, SlabFlags};

/// Every row of `enable_cpucache`: what 64 KiB holds, from the kernel's limit (120 or
/// 54) to 512 for objects up to 1 KiB and from 2 to the kernel's (24 up to a page, 8
/// above) for larger ones; batchcount half of the kernel's limit, or of the limit where
/// that is less; and a shared cache of 8 batches for objects up to a page when there
/// is more than one CPU.
#[test]
fn every_enable_cpucache_row() {
    let multi = cpuslab::topology::nr_cpu_ids() > 1;
    fn check<const N: usize>(name: &str, (limit, kernel): (u32, u32), small: bool, multi: bool) {
        let cache = KmemCache::<[u8; N]>::new(name, SlabFlags::NONE).unwrap();
        let obj = cache.alloc().unwrap();
        let (_, size, l, b, s) = common::slab_row(name);
        assert!(size >= N, "{name}: object size {size}");
        assert_eq!(l, limit, "{name} ({size} B): limit");
        assert_eq!(
            b,
            kernel.div_ceil(2).min(limit.div_ceil(2)),
            "{name}: batchcount (the kernel's, at most half the limit)"
        );
        assert_eq!(s, if small && multi { 8 } else { 0 }, "{name}: shared");
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(obj) };
        cache.destroy().map_err(|(_, e)| e).unwrap();
    }
    // Up to 1 KiB: 64 KiB of objects, from the kernel's 120 (54 above 256 B) to 512.
    check::<16>("tune-16", (512, 120), true, multi);
    check::<64>("tune-64", (512, 120), true, multi);
    check::<128>("tune-128", (512, 120), true, multi);
    check::<200>("tune-200", (327, 120), true, multi);
    check::<256>("tune-256", (256, 120), true, multi);
    check::<257>("tune-257", (248, 54), true, multi); // 264-byte objects
    check::<1024>("tune-1024", (64, 54), true, multi);
    // Above 1 KiB: 64 KiB of objects, from 2 to the kernel's 24 (8 above a page).
    check::<1025>("tune-1025", (24, 24), true, multi);
    check::<2048>("tune-2048", (24, 24), true, multi);
    check::<4096>("tune-4096", (16, 24), true, multi);
    check::<4097>("tune-4097", (8, 8), false, multi);
    check::<16384>("tune-16k", (4, 8), false, multi);
    check::<131072>("tune-128k", (2, 8), false, multi);
    // Objects above 128 KiB need slabs past the largest order: no cache takes them
    // (`TooLarge`), so their row is the table's alone.
    assert!(matches!(
        KmemCache::<[u8; 131073]>::new("tune-128k+1", SlabFlags::NONE),
        Err(cpuslab::CacheError::TooLarge(_))
    ));
    assert_eq!(
        cpuslab::slab::tune::enable_cpucache_params(131073),
        (1, 1, 0)
    );
}

/// Consecutive slabs start their objects at different offsets (colours step by a
/// cache line through the slab's spare bytes), so the first objects of different
/// slabs do not compete for the same cache sets.
#[test]
fn consecutive_slabs_are_coloured() {
    // 1200-byte objects: three to a page, about 490 spare bytes, seven colours (the
    // classes from 512 bytes to 1 KiB take slabs that leave almost nothing spare).
    let cache = KmemCache::<[u8; 1200]>::new("colour-1200", SlabFlags::NONE).unwrap();
    let objs: Vec<NonNull<[u8; 1200]>> = (0..200).map(|_| cache.alloc().unwrap()).collect();
    let mut first_offset = std::collections::BTreeMap::new();
    for o in &objs {
        let a = o.as_ptr() as usize;
        let e = first_offset.entry(a & !4095).or_insert(usize::MAX);
        *e = (*e).min(a & 4095);
    }
    let colours: std::collections::BTreeSet<usize> = first_offset.values().copied().collect();
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    assert!(first_offset.len() >= 10, "{} slabs", first_offset.len());
    assert!(
        colours.len() >= 3,
        "first-object offsets of {} slabs: {colours:?}",
        first_offset.len()
    );
    assert!(colours.iter().all(|c| c % 64 == 0), "{colours:?}");
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// `cache_reap` (every 2 s, from other caches' slow paths or the background thread)
/// drains a cache nobody touches: the objects its array caches hold go back.
#[test]
fn an_idle_cache_shrinks() {
    let cache = KmemCache::<[u8; 64]>::new("reap-64", SlabFlags::NONE).unwrap();
    let objs: Vec<NonNull<[u8; 64]>> = (0..4000).map(|_| cache.alloc().unwrap()).collect();
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    let (held, ..) = common::slab_row("reap-64");
    assert!(held > 0, "the freed objects stay cached at first");
    let start = Instant::now();
    let mut now_held = held;
    while start.elapsed() < Duration::from_secs(15) && now_held >= held {
        // Slow paths of another size keep the periodic reap running.
        churn_another_size();
        now_held = common::slab_row("reap-64").0;
    }
    assert!(
        now_held < held,
        "still {now_held} of {held} objects cached after {:?}",
        start.elapsed()
    );
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// Slow paths of another size for a tenth of a second, which keep the periodic reap
/// running.
fn churn_another_size() {
    for _ in 0..50 {
        let v: Vec<Box<[u8; 3000]>> = (0..200).map(|_| Box::new([1u8; 3000])).collect();
        drop(std::hint::black_box(v));
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// `tune` applies what slabinfo then reports: a shared cache larger than the room a
/// node keeps for one is grown into a block of its own (and holds that many objects),
/// one is added to a cache that had none, and what no node could hold is refused.
#[test]
fn tune_applies_what_it_reports() {
    // Objects above a page get no shared cache by default.
    let cache = KmemCache::<[u8; 5000]>::new("tune-big", SlabFlags::NONE).unwrap();
    assert_eq!(common::slab_row("tune-big").4, 0);
    cache.tune(16, 8, 4).unwrap();
    let (_, _, l, b, s) = common::slab_row("tune-big");
    assert_eq!((l, b, s), (16, 8, 4));
    common::alloc_then_free(&cache, 200);
    assert!(
        common::shared_avail("tune-big") > 0,
        "no shared cache was added"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();

    // 120 x 8 = 960 shared entries: more than a node block's room (about 490).
    let cache = KmemCache::<[u8; 64]>::new("tune-grow", SlabFlags::NONE).unwrap();
    cache.tune(240, 120, 8).unwrap();
    let (_, _, l, b, s) = common::slab_row("tune-grow");
    assert_eq!((l, b, s), (240, 120, 8));
    // Fill it: every object freed beyond the CPUs' caches can sit in the shared cache.
    common::alloc_then_free(&cache, 3000);
    let held = common::shared_avail("tune-grow");
    assert!(held > 490, "the grown shared cache holds only {held}");
    assert!(matches!(
        cache.tune(4096, 4096, 64),
        Err(cpuslab::CacheError::Shared { .. })
    ));
    assert_eq!(
        common::slab_row("tune-grow").4,
        8,
        "a refused tune changes nothing"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// A full per-CPU cache sends its oldest objects (the bottom of the stack) to the node
/// and keeps the ones freed last, as the kernel's `cache_flusharray`: after 16 frees
/// fill a cache of 16 and a 17th overflows it, the next allocations return the 17th,
/// then the 16th, 15th... The rseq path popped the top batch instead (the 16th to 13th
/// went to the node, and the second allocation was the 12th).
#[test]
fn an_overflow_flushes_the_oldest_objects() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 1024]>::new("flush-oldest", SlabFlags::NONE).unwrap();
    // An explicit tune fixes the limit (no room to grow) and drops the shared cache.
    cache.tune(16, 4, 0).unwrap();
    let objs: Vec<NonNull<[u8; 1024]>> = (0..17).map(|_| cache.alloc().unwrap()).collect();
    // What the refills left on the CPU goes back first, so the cache starts empty.
    cache.shrink();
    for &o in &objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
    }
    let again: Vec<NonNull<[u8; 1024]>> = (0..13).map(|_| cache.alloc().unwrap()).collect();
    let want: Vec<NonNull<[u8; 1024]>> = objs[4..].iter().rev().copied().collect();
    for &o in &again {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    assert_eq!(
        again, want,
        "the objects freed last did not stay on the CPU (objs: {objs:?})"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// A refill hands objects out in ascending address order: objects freed in a shuffled
/// order pass through the node's shared cache, and each batch a refill brings back from
/// there comes out lowest address first (`order_for_pops`). Without the ordering a
/// batch came out in the order the frees had put it in, and the first refill here was
/// not ascending, in every round.
///
/// The batches are told by the drops of the shared cache's count, which a reap from
/// elsewhere can also make (another test's slab growth drains idle caches, the shared
/// cache with them): a round that sees a batch out of order, or no batch, runs again
/// on a fresh cache, up to five times; one in about ten runs of this binary (on the
/// tried-lock path) had its one round misread so.
#[test]
fn a_refill_hands_objects_out_in_address_order() {
    let _pinned = common::pin();
    let mut last = String::new();
    let ordered = (0..5).any(|round| {
        // A cache of its own each round: the one before grew its CPU's array cache.
        let cache = KmemCache::<[u8; 64]>::new("refill-order", SlabFlags::NONE).unwrap();
        // A limit of 16, batches of 8, and a shared cache of 8 batches: room for every
        // object this test frees past the CPU's cache, so none goes back to a slab
        // (whose refills are in address order anyway).
        cache.tune(16, 8, 8).unwrap();
        let outcome = refill_round(&cache, round);
        cache.shrink();
        cache.destroy().map_err(|(_, e)| e).unwrap();
        outcome.map_err(|e| last = e).is_ok()
    });
    assert!(
        ordered,
        "every round saw a batch out of order; the last: {last}"
    );
}

/// One round of [`a_refill_hands_objects_out_in_address_order`] on a fresh cache: 64
/// objects freed in a shuffled order and allocated again, each batch a refill took
/// from the shared cache checked for ascending addresses.
fn refill_round(cache: &KmemCache<[u8; 64]>, round: u64) -> Result<(), String> {
    let mut objs: Vec<NonNull<[u8; 64]>> = (0..64).map(|_| cache.alloc().unwrap()).collect();
    cache.shrink();
    let mut rng = common::Rng::new(0x5eed + round);
    for i in (1..objs.len()).rev() {
        objs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &o in &objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
    }
    // Each allocation that takes a batch from the shared cache shows as a drop of its
    // count; that allocation and the ones after it from the batch must ascend.
    let mut again = Vec::new();
    let mut shared = common::shared_avail("refill-order");
    if shared < 8 {
        return Err(format!(
            "round {round}: nothing reached the shared cache ({shared})"
        ));
    }
    let mut batches = 0;
    let mut run: Option<(usize, usize)> = None;
    let mut out_of_order = None;
    while again.len() < objs.len() {
        let o = cache.alloc().unwrap();
        again.push(o);
        let now = common::shared_avail("refill-order");
        if now < shared {
            run = Some((again.len() - 1, shared - now));
            batches += 1;
        }
        shared = now;
        if let Some((start, n)) = run {
            if again.len() == start + n {
                let batch = &again[start..];
                if out_of_order.is_none() && !batch.windows(2).all(|w| w[0] < w[1]) {
                    out_of_order = Some(format!(
                        "round {round}, refill {batches} came out of address order: {batch:?}"
                    ));
                }
                run = None;
            }
        }
    }
    for o in again {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    if batches == 0 {
        return Err(format!(
            "round {round}: no allocation refilled from the shared cache"
        ));
    }
    out_of_order.map_or(Ok(()), Err)
}

/// Small objects allocated in turn never share a cache line (`Geometry::per_line`): a
/// refill keeps the order the slab hands them out in. Sorted by address after the
/// refill, 24 of 31 consecutive 16-byte objects shared a line.
#[test]
fn small_objects_allocated_in_turn_keep_to_their_own_lines() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 16]>::new("per-line-16", SlabFlags::NONE).unwrap();
    let objs: Vec<NonNull<[u8; 16]>> = (0..32).map(|_| cache.alloc().unwrap()).collect();
    let shared = objs
        .windows(2)
        .filter(|w| w[0].as_ptr() as usize / 64 == w[1].as_ptr() as usize / 64)
        .count();
    for &o in &objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
    }
    assert_eq!(
        shared, 0,
        "{shared} of 31 objects allocated in turn share a line: {objs:?}"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// A CPU that cycles through more objects of a class than its cache's limit (bursts of
/// 1600 of 64 B against 512) grows that limit while it frees the burst, instead of
/// passing the overflow through the node's shared cache to whichever CPU refills next:
/// no round, the first included, leaves an object at the node. (Growing a batch per
/// refill-and-overflow, as before, kept flushing: the frees of one burst overflowed
/// often enough to shrink the limit back.) Left idle, the reaper lowers it again, and
/// the objects beyond the tuned limit leave the CPU.
#[test]
fn a_cycling_cache_grows_and_an_idle_one_shrinks_back() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 64]>::new("grow-64", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, shared) = common::slab_row("grow-64");
    assert_eq!((limit, batch), (512, 60));
    if shared == 0 {
        eprintln!("one CPU: no shared cache to watch; skipped");
        return;
    }
    common::bursts_stay_on_the_cpu(&cache, "grow-64", 1600);
    // Idle: two reaps (every 2 s, driven by other caches' slow paths) find it
    // untouched and lower its limit, with the objects beyond it.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        churn_another_size();
    }
    let (after, ..) = common::slab_row("grow-64");
    assert!(
        after <= limit as usize,
        "the idle cache still holds {after} objects (tuned limit {limit})"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// A shortfall within the growth every class gets free (128 KiB of objects: 128 of
/// 1 KiB) grows the limit a batch at a time, as a class whose use wanders or a CPU
/// shared by producers and consumers sees it. From a full cache of 64 (batch 27), a
/// round of 100 objects refills twice: the limit grows to 91, not 118, so the round
/// still flushes to the node; the next rounds grow it further and stop flushing.
#[test]
fn a_shortfall_within_the_free_growth_grows_a_batch_at_a_time() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 1024]>::new("walk-1024", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, shared) = common::slab_row("walk-1024");
    assert_eq!((limit, batch), (64, 27));
    if shared == 0 {
        eprintln!("one CPU: no shared cache to watch; skipped");
        return;
    }
    // A full cache with no refill counted: 64 objects allocated, the cache emptied
    // and reset by `shrink`, then the 64 freed into it.
    let objs: Vec<NonNull<[u8; 1024]>> = (0..64).map(|_| cache.alloc().unwrap()).collect();
    cache.shrink();
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
    assert_eq!(common::shared_avail("walk-1024"), 0);
    let round = || {
        common::alloc_then_free(&cache, 100);
        common::shared_avail("walk-1024")
    };
    assert!(
        round() > 0,
        "the first round grew the limit past 100 at once"
    );
    assert!(
        (0..4).any(|_| round() == 0),
        "the limit never grew past 100 a batch at a time"
    );
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// Refills by another thread are no burst of the thread that frees: a producer that
/// allocates 1600 objects of 64 B and a consumer on the same CPU that frees them grow
/// the CPU's cache a batch per round, not to the whole 1600 at once, so every round
/// still passes objects through the node. (The same 1600 allocated and freed by one
/// thread stay on the CPU from the first round: `a_cycling_cache_grows_...`.)
#[test]
fn another_threads_refills_are_no_burst() {
    use std::sync::mpsc;
    let owned = KmemCache::<[u8; 64]>::new("handed-64", SlabFlags::NONE).unwrap();
    let (_, _, limit, batch, shared) = common::slab_row("handed-64");
    assert_eq!((limit, batch), (512, 60));
    if shared == 0 {
        eprintln!("one CPU: no shared cache to watch; skipped");
        return;
    }
    let cache = &owned;
    let (to_consumer, objs) = mpsc::channel::<Vec<usize>>();
    let (to_producer, done) = mpsc::channel::<usize>();
    std::thread::scope(|s| {
        // Both live for the whole test, so their ids differ.
        s.spawn(move || {
            let _pinned = common::pin();
            for _ in 0..4 {
                let v = (0..1600)
                    .map(|_| cache.alloc().unwrap().as_ptr() as usize)
                    .collect();
                to_consumer.send(v).unwrap();
                let at_node = done.recv().unwrap();
                assert!(at_node > 0, "a handed-over round left nothing at the node");
            }
        });
        s.spawn(move || {
            let _pinned = common::pin();
            for v in objs {
                for p in v {
                    // SAFETY: allocated from this cache by the producer, freed once.
                    unsafe { cache.free(NonNull::new(p as *mut [u8; 64]).unwrap()) };
                }
                to_producer.send(common::shared_avail("handed-64")).unwrap();
            }
        });
    });
    owned.shrink();
    owned.destroy().map_err(|(_, e)| e).unwrap();
}

/// A cache cycling through the same slabs is not the program growing: one that builds
/// and drops 2048 objects of 1 KiB, more than its caches keep, frees slabs at the end
/// of every round and grows them back in the next. Those 20 rounds leave an idle
/// cache's objects where they are, where its first round, the growth, drains them
/// (see `slab_growth_drains_idle_caches`). In a child process, so that no other test's
/// growth reaps this CPU's caches meanwhile.
#[test]
fn slab_cycling_leaves_idle_caches_alone() {
    if !common::is_child() {
        let (status, err) = common::run_child("slab_cycling_leaves_idle_caches_alone", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let _pinned = common::pin();
    let b = KmemCache::<[u8; 1024]>::new("cycle-b", SlabFlags::NONE).unwrap();
    let mut objs: Vec<NonNull<[u8; 1024]>> = Vec::with_capacity(2048);
    let mut round = || {
        objs.extend((0..2048).map(|_| b.alloc().unwrap()));
        for o in objs.drain(..) {
            // SAFETY: allocated above from this cache.
            unsafe { b.free(o) };
        }
    };
    round();
    let a = KmemCache::<[u8; 256]>::new("idle-c", SlabFlags::NONE).unwrap();
    common::alloc_then_free(&a, 1000);
    let (held, ..) = common::slab_row("idle-c");
    assert!(held >= 500, "only {held} objects stayed cached");
    for _ in 0..20 {
        round();
    }
    let (after, ..) = common::slab_row("idle-c");
    assert!(
        after >= held / 2,
        "{after} of {held} idle objects left after 20 rounds of one cache's cycling"
    );
    a.destroy().map_err(|(_, e)| e).unwrap();
    b.shrink();
    b.destroy().map_err(|(_, e)| e).unwrap();
}

/// Slab growth reaps what idle caches keep: after cache A's 1000 objects are freed
/// (they stay in its per-CPU and shared caches and free slabs), 2 MiB of another
/// cache's new slabs give them back (a growth reap every 256 KiB: the first finds A
/// touched, the next drains it), without waiting for the two-second reap, which would
/// drain a fifth at a time.
#[test]
fn slab_growth_drains_idle_caches() {
    let _pinned = common::pin();
    let a = KmemCache::<[u8; 256]>::new("idle-a", SlabFlags::NONE).unwrap();
    common::alloc_then_free(&a, 1000);
    let (held, ..) = common::slab_row("idle-a");
    assert!(held >= 500, "only {held} objects stayed cached");
    let b = KmemCache::<[u8; 1024]>::new("grow-b", SlabFlags::NONE).unwrap();
    let objs: Vec<NonNull<[u8; 1024]>> = (0..2048).map(|_| b.alloc().unwrap()).collect();
    let (after, ..) = common::slab_row("idle-a");
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { b.free(o) };
    }
    assert!(
        after < held / 4,
        "{after} of {held} objects still cached after 2 MiB of growth"
    );
    b.shrink();
    b.destroy().map_err(|(_, e)| e).unwrap();
    a.destroy().map_err(|(_, e)| e).unwrap();
}
