//! Passive false sharing (Hoard's `cache-scratch`): a thread frees an object another
//! CPU allocated, then allocates its own. If the object freed were the next one handed
//! out, the thread would write to a cache line whose other objects belong to the
//! allocating thread. A free into an empty per-CPU cache (its own process: the test
//! pins its threads).

use std::collections::HashSet;

use cpuslab::slab::SlabFlags;
use cpuslab::KmemCache;

/// Cache lines of 64 bytes.
fn line(p: usize) -> usize {
    p / 64
}

#[test]
fn a_free_into_an_empty_cache_is_not_handed_out_next() {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let (Some(&main_cpu), Some(&worker_cpu)) = (cpus.first(), cpus.get(1)) else {
        eprintln!("fewer than two CPUs to pin to; skipped");
        return;
    };
    assert!(core_affinity::set_for_current(main_cpu));
    // A new cache: every CPU's array cache of it is empty.
    let cache = KmemCache::<[u64; 2]>::new("test_scratch", SlabFlags::NONE).unwrap();
    let given: Vec<usize> = (0..16)
        .map(|_| cache.alloc().unwrap().as_ptr() as usize)
        .collect();
    let taken = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(worker_cpu));
            let p = std::ptr::NonNull::new(given[0] as *mut [u64; 2]).unwrap();
            // SAFETY: allocated above, freed once, not used afterwards.
            unsafe { cache.free(p) };
            let taken: Vec<_> = (0..8).map(|_| cache.alloc().unwrap()).collect();
            let addrs: Vec<usize> = taken.iter().map(|p| p.as_ptr() as usize).collect();
            for p in taken {
                // SAFETY: allocated just above, freed once.
                unsafe { cache.free(p) };
            }
            addrs
        })
        .join()
        .unwrap()
    });
    assert!(
        !taken.contains(&given[0]),
        "the object freed into the empty cache was handed out again at once"
    );
    // Shuffled freelists (`CPUSLAB_FREELIST_RANDOM=1`) put any object anywhere: the
    // batch may share lines with the main thread's objects by chance.
    let shuffled = std::env::var("CPUSLAB_FREELIST_RANDOM").is_ok_and(|v| v == "1");
    let given_lines: HashSet<usize> = given.iter().map(|&p| line(p)).collect();
    for &p in taken.iter().filter(|_| !shuffled) {
        assert!(
            !given_lines.contains(&line(p)),
            "the worker's object {p:#x} shares a cache line with the main thread's objects"
        );
    }
    for &p in &given[1..] {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(std::ptr::NonNull::new(p as *mut [u64; 2]).unwrap()) };
    }
    // Nothing lost on the way: every object is back, so the cache can go.
    cache.destroy().map_err(|(_, e)| e).unwrap();
}
