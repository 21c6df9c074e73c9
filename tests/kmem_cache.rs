//! Typed caches: conservation under threads (nothing lost, nothing handed out twice),
//! retuning a live cache, shrink, destroy, and slabinfo.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use common::Rng;
use cpuslab::{CacheError, KmemCache, SlabFlags};

#[repr(C)]
struct Obj {
    owner: AtomicU64,
    payload: [u64; 5],
}

/// The tag thread `t` leaves in an object it holds: the thread's id mixed with the
/// object's own address, so that stale data on a recycled page (another cache's
/// objects, copies of tags taken at other addresses) cannot pass for a holder's tag.
fn holder_tag(p: NonNull<Obj>, t: u64) -> u64 {
    (p.as_ptr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t
}

/// Held for reading around every `cpu_dead` of `hammer`'s tuner, for writing by a test
/// that must see every slab of its own cache come and go on its own thread:
/// `cpu_dead` drains that CPU's array cache of every cache in the process, and the
/// slabs it empties are destroyed on the tuner's thread, after the lock of the array
/// cache is released, out of sight of a `shrink` running meanwhile.
static CPU_DEAD: RwLock<()> = RwLock::new(());

/// Each thread tags the objects it holds with its id and checks the tag before freeing:
/// an object handed out twice would carry another thread's tag. Threads also pass
/// objects to each other so frees land on other CPUs' caches.
fn hammer(cache: &Arc<KmemCache<Obj>>, threads: u64, ops: u64, tune: bool) {
    let exchange: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tuner = tune.then(|| {
        let (c, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            let nr_cpus = cpuslab::topology::nr_cpu_ids();
            // At least one round, however late this thread is scheduled.
            while i == 0 || !stop.load(Ordering::Relaxed) {
                // Cross-CPU work of every kind on caches others are using: retune,
                // drain one CPU (the CPU-dead path), shrink everything.
                match i % 3 {
                    0 => {
                        let limit = [1, 8, 60, 120, 500][(i / 3 % 5) as usize];
                        c.tune(limit, limit.div_ceil(2), 8).unwrap();
                    }
                    1 => {
                        let _g = CPU_DEAD.read().unwrap_or_else(|e| e.into_inner());
                        cpuslab::cpuset::cpu_dead(i as usize % nr_cpus)
                    }
                    _ => {
                        c.shrink();
                    }
                }
                i += 1;
                std::thread::yield_now();
            }
            i
        })
    });
    let handles: Vec<_> = (1..=threads)
        .map(|t| {
            let (c, ex) = (cache.clone(), exchange.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                let mut held: Vec<NonNull<Obj>> = Vec::new();
                for _ in 0..ops {
                    if held.len() < 200 && rng.below(2) == 0 {
                        let p = c.alloc().expect("out of memory");
                        let tag = holder_tag(p, t);
                        // SAFETY: a fresh object, ours alone.
                        unsafe {
                            // A held object carries its holder's tag in both fields; a
                            // slab grown on recycled pages may start with anything else,
                            // even small numbers or copies of other objects' tags, which
                            // the address in the tag tells apart.
                            let prev = (*p.as_ptr()).owner.swap(tag, Ordering::Relaxed);
                            let by = prev ^ holder_tag(p, 0);
                            let held_by =
                                (1..=threads).contains(&by) && (*p.as_ptr()).payload == [prev; 5];
                            assert!(
                                !held_by,
                                "object {p:p} handed out while held by thread {by}"
                            );
                            (*p.as_ptr()).payload = [tag; 5];
                        }
                        held.push(p);
                    } else if let Some(p) = held.pop() {
                        let tag = holder_tag(p, t);
                        // SAFETY: we hold `p`.
                        unsafe {
                            assert_eq!((*p.as_ptr()).payload, [tag; 5]);
                            assert_eq!((*p.as_ptr()).owner.swap(0, Ordering::Relaxed), tag);
                            (*p.as_ptr()).payload = [0; 5];
                        }
                        if rng.below(4) == 0 {
                            ex.lock().unwrap().push(p.as_ptr() as usize);
                        } else {
                            // SAFETY: allocated from `c`, no longer used.
                            unsafe { c.free(p) };
                        }
                    }
                    if rng.below(64) == 0 {
                        let batch: Vec<usize> = std::mem::take(&mut *ex.lock().unwrap());
                        for p in batch {
                            // SAFETY: released by its previous holder.
                            unsafe { c.free(NonNull::new(p as *mut Obj).unwrap()) };
                        }
                    }
                }
                for p in held {
                    // SAFETY: as above.
                    unsafe {
                        (*p.as_ptr()).owner.store(0, Ordering::Relaxed);
                        c.free(p);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = tuner {
        assert!(t.join().unwrap() > 0);
    }
    for p in std::mem::take(&mut *exchange.lock().unwrap()) {
        // SAFETY: released by its holder.
        unsafe { cache.free(NonNull::new(p as *mut Obj).unwrap()) };
    }
}

fn zeroed_cache(name: &str) -> Arc<KmemCache<Obj>> {
    let c = KmemCache::<Obj>::new(name, SlabFlags::NONE).unwrap();
    // Objects start with owner 0: fill every slab object's tag before use by the test.
    Arc::new(c)
}

#[test]
fn conservation_under_threads() {
    let cache = zeroed_cache("test_conserve");
    prime(&cache);
    hammer(&cache, 8, 200_000, false);
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost");
}

/// Many more threads than CPUs (constant preemption and migration) while another
/// thread retunes, drains and shrinks the caches they use: nothing lost, nothing
/// handed out twice, on whichever fast path this process runs (the suite runs again
/// with `CPUSLAB_RSEQ=0`).
#[test]
fn conservation_many_threads_with_cross_cpu_work() {
    let cache = zeroed_cache("test_conserve_many");
    prime(&cache);
    hammer(&cache, 16, 40_000, true);
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost");
}

/// The fast path is chosen once at boot and reported: rseq where the thread has an
/// rseq area and the kernel takes the membarrier RSEQ command, unless
/// `CPUSLAB_RSEQ=0`; the tried lock otherwise.
#[test]
fn fast_path_is_chosen_and_reported() {
    use cpuslab::slab::fastpath::{fast_path, FastPath};
    drop(Box::new(1u8));
    let forced_off = std::env::var("CPUSLAB_RSEQ").is_ok_and(|v| v == "0");
    let p = fast_path();
    if forced_off {
        assert_eq!(p, FastPath::TryLockByRequest);
    } else if cpuslab::sys::rseq::available()
        && cpuslab::sys::cpu::rseq_cpu_valid()
        && std::env::var_os("CPUSLAB_NO_MEMBARRIER").is_none()
    {
        assert_eq!(p, FastPath::Rseq, "{p}");
    } else {
        assert_ne!(p, FastPath::Rseq);
    }
    if !common::is_child() && !forced_off {
        let (status, err) =
            common::run_child("fast_path_is_chosen_and_reported", &[("CPUSLAB_RSEQ", "0")]);
        assert!(status.success(), "child with CPUSLAB_RSEQ=0 failed: {err}");
    }
}

#[test]
fn retune_while_hammered() {
    let cache = zeroed_cache("test_retune");
    prime(&cache);
    hammer(&cache, 6, 100_000, true);
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost across retuning");
}

/// Objects must start with a zero tag: allocate a large batch once and clear it.
fn prime(cache: &KmemCache<Obj>) {
    let mut all = Vec::new();
    for _ in 0..50_000 {
        let p = cache.alloc().unwrap();
        // SAFETY: fresh object.
        unsafe { (*p.as_ptr()).owner.store(0, Ordering::Relaxed) };
        all.push(p);
    }
    for p in all {
        // SAFETY: allocated above.
        unsafe { cache.free(p) };
    }
}

#[test]
fn distinct_objects_and_alignment() {
    #[repr(align(64))]
    struct Line(#[allow(dead_code)] [u8; 64]);
    let cache = KmemCache::<Line>::new("test_lines", SlabFlags::HWCACHE_ALIGN).unwrap();
    assert_eq!(cache.object_size(), 64);
    let mut seen = HashSet::new();
    // The thread walks over every CPU it may run on, as the scheduler may move it, so
    // each CPU's array cache keeps what its last refill left.
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let per_cpu = 10_000 / cpus.len().max(1) + 1;
    let objs: Vec<_> = (0..10_000)
        .map(|i| {
            if i % per_cpu == 0 {
                if let Some(&cpu) = cpus.get(i / per_cpu) {
                    core_affinity::set_for_current(cpu);
                }
            }
            cache.alloc().unwrap()
        })
        .collect();
    for p in &objs {
        assert_eq!(p.as_ptr() as usize % 64, 0);
        assert!(seen.insert(p.as_ptr() as usize), "duplicate object");
    }
    // Objects cached in the CPUs' array caches count as active, as in slabinfo. A
    // refill takes at most half a cache's limit, so each CPU holds less than that.
    let active = cache.active_objects();
    let limit = cpuslab::stats::caches()
        .into_iter()
        .find(|c| c.name == "test_lines")
        .expect("cache in stats")
        .limit as usize;
    let cached = cpuslab::topology::nr_cpu_ids() * (limit / 2);
    assert!(
        (10_000..10_000 + cached).contains(&active),
        "{active} active, {cached} at most cached"
    );
    for p in objs {
        // SAFETY: allocated above.
        unsafe { cache.free(p) };
    }
    assert!(cache.shrink() > 0);
    assert_eq!(cache.active_objects(), 0);
    let info = cpuslab::stats::slabinfo();
    let line = info
        .lines()
        .find(|l| l.starts_with("test_lines "))
        .expect("cache in slabinfo");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], "0", "{line}");
    assert_eq!(fields[3], "64", "{line}");
}

/// `stats::caches()` gives a cache's slabinfo row as numbers that follow its objects.
#[test]
fn cache_stats_count_the_objects_in_use() {
    let cache = KmemCache::<[u8; 200]>::new("test_stats", SlabFlags::NONE).unwrap();
    let row = |name: &str| {
        cpuslab::stats::caches()
            .into_iter()
            .find(|c| c.name == name)
            .expect("cache listed")
    };
    let objs: Vec<_> = (0..1000).map(|_| cache.alloc().unwrap()).collect();
    // The count includes objects cached per CPU, which a drain by another test of this
    // binary (`cpu_dead` in `hammer`) may return to their slabs between two reads: the
    // row's count lies between one read before it and one after.
    let before = cache.active_objects();
    let r = row("test_stats");
    let after = cache.active_objects();
    assert_eq!(r.object_size, cache.object_size());
    assert_eq!(r.objects_per_slab, cache.objects_per_slab());
    assert_eq!(r.pages_per_slab, cache.pages_per_slab());
    assert!(
        (after..=before).contains(&r.active_objs),
        "{after} <= {} <= {before}",
        r.active_objs
    );
    assert!(
        r.active_objs >= 1000 && r.num_objs >= r.active_objs,
        "{r:?}"
    );
    assert!(
        r.num_slabs * r.objects_per_slab == r.num_objs && r.limit > 0,
        "{r:?}"
    );
    for p in objs {
        // SAFETY: allocated above.
        unsafe { cache.free(p) };
    }
    cache.shrink();
    let r = row("test_stats");
    assert_eq!((r.active_objs, r.num_slabs), (0, 0), "{r:?}");
    cache.destroy().unwrap();
    assert!(cpuslab::stats::caches()
        .iter()
        .all(|c| c.name != "test_stats"));
}

#[test]
fn destroy_refuses_while_objects_live() {
    let cache = KmemCache::<[u64; 4]>::new("test_destroy", SlabFlags::NONE).unwrap();
    let p = cache.alloc_with([1, 2, 3, 4]).unwrap();
    let (cache, err) = cache.destroy().unwrap_err();
    assert_eq!(err, CacheError::Busy { live_objects: 1 });
    // SAFETY: allocated above.
    unsafe { cache.free(p) };
    cache.destroy().unwrap();
    assert!(!cpuslab::stats::slabinfo().contains("test_destroy "));
}

#[test]
fn bad_parameters_are_errors() {
    #[repr(align(8192))]
    struct Huge(#[allow(dead_code)] [u8; 8192]);
    assert_eq!(
        KmemCache::<Huge>::new("x", SlabFlags::NONE).unwrap_err(),
        CacheError::Alignment(8192)
    );
    assert_eq!(
        KmemCache::<[u8; 1 << 20]>::new("x", SlabFlags::NONE).unwrap_err(),
        CacheError::TooLarge(1 << 20)
    );
    assert!(matches!(
        KmemCache::<u64>::new("x", SlabFlags(1)).unwrap_err(),
        CacheError::Flags(1)
    ));
    let c = KmemCache::<u64>::new("test_tune_bad", SlabFlags::NONE).unwrap();
    assert!(c.tune(0, 1, 8).is_err());
    assert!(c.tune(10, 11, 8).is_err());
    let msg = c.tune(5000, 10, 8).unwrap_err().to_string();
    assert!(msg.contains("limit 5000"), "{msg}");
}

/// A cache's per-CPU array caches are areas of the percpu allocator (headers, small
/// first entry arrays, and the full ones once a CPU fills its first), sized by the CPUs
/// that exist; retuning swaps the entry areas for one and frees the old ones at once,
/// and destroying the cache frees what is left. Run in a child so no other
/// test's caches move the counts.
#[test]
fn array_caches_live_in_percpu_chunks() {
    if !common::is_child() {
        let (status, err) = common::run_child("array_caches_live_in_percpu_chunks", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    use cpuslab::percpu::stats::percpu_stats;
    // The global allocator's own caches of this CPU move to their full arrays first.
    common::settle_entry_arrays();
    let before = percpu_stats();
    assert_eq!(before.nr_units, cpuslab::topology::nr_cpu_ids());
    let cache = KmemCache::<[u64; 3]>::new("test_percpu_host", SlabFlags::NONE).unwrap();
    let made = percpu_stats();
    // The headers and the small first entry arrays.
    assert_eq!(made.nr_cur_alloc, before.nr_cur_alloc + 2);
    let objs: Vec<_> = (0..500).map(|_| cache.alloc().unwrap()).collect();
    for &o in &objs {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(o) };
    }
    // The allocations (a producer's growing refills) or the frees filled the first
    // array: the full ones (2048 entries for 24-byte objects) are a third area.
    let widened = percpu_stats();
    assert_eq!(widened.nr_cur_alloc, made.nr_cur_alloc + 1);
    cache.tune(1000, 500, 8).unwrap();
    let tuned = percpu_stats();
    assert_eq!(
        tuned.nr_cur_alloc, made.nr_cur_alloc,
        "old entries not freed"
    );
    // The full arrays and the first ones.
    assert_eq!(tuned.nr_dealloc, made.nr_dealloc + 2);
    assert!(tuned.max_alloc_size >= 1000 * 8);
    let objs: Vec<_> = (0..3000).map(|_| cache.alloc().unwrap()).collect();
    let distinct: HashSet<_> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(distinct.len(), objs.len());
    for &o in &objs {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(o) };
    }
    cache.destroy().map_err(|(_, e)| e).unwrap();
    assert_eq!(percpu_stats().nr_cur_alloc, before.nr_cur_alloc);
}

/// `TYPESAFE_BY_RCU`: the pages of slabs emptied while a reader is inside an RCU read
/// section stay allocated (holding the stale objects) until the reader leaves, and go
/// back to the page pool after the grace period; a cache without the flag frees them
/// at once.
#[test]
fn typesafe_by_rcu_defers_slab_freeing() {
    use std::sync::mpsc;
    const MARK: u64 = 0x5afe_b1c0_0000_0001;
    // No `cpu_dead` of another test may drain this cache's slabs on its own thread: it
    // could queue them after the `pending` read below.
    let _no_cpu_dead = CPU_DEAD.write().unwrap_or_else(|e| e.into_inner());
    let cache = KmemCache::<[u64; 8]>::new("test_typesafe", SlabFlags::TYPESAFE_BY_RCU).unwrap();
    let objs: Vec<_> = (0..2000)
        .map(|_| {
            let o = cache.alloc().unwrap();
            // SAFETY: a fresh object of the cache.
            unsafe { o.as_ptr().write([MARK; 8]) };
            o
        })
        .collect();
    let watched = objs[1000].as_ptr() as usize;
    let (locked_tx, locked_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let guard = cpuslab::rcu::read_lock();
        locked_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // SAFETY: the object was freed, but the cache is type-safe by RCU and this
        // thread has been inside one read section since before the free.
        let seen = unsafe { std::ptr::read_volatile(watched as *const u64) };
        drop(guard);
        seen
    });
    locked_rx.recv().unwrap();
    let pending_before = cpuslab::slab::rcu_pending_pages();
    for &o in &objs {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(o) };
    }
    // Frees past the node's free limit and the shrink both give slabs back.
    let freed = cache.shrink();
    assert!(freed > 0, "shrink freed no slab");
    let pending = cpuslab::slab::rcu_pending_pages();
    assert!(pending >= pending_before + freed);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let now = cpuslab::slab::rcu_pending_pages();
    assert!(
        now >= pending,
        "slab pages went back while a reader was inside its read section: {pending} -> {now}"
    );
    assert_eq!(
        now, pending,
        "slabs of this cache were queued for RCU after its shrink returned"
    );
    go_tx.send(()).unwrap();
    assert_eq!(reader.join().unwrap(), MARK);
    cpuslab::rcu::barrier();
    assert_eq!(cpuslab::slab::rcu_pending_pages(), pending_before);
    cache.destroy().map_err(|(_, e)| e).unwrap();

    // Without the flag nothing waits.
    let plain = KmemCache::<[u64; 8]>::new("test_not_typesafe", SlabFlags::NONE).unwrap();
    let objs: Vec<_> = (0..2000).map(|_| plain.alloc().unwrap()).collect();
    for &o in &objs {
        // SAFETY: allocated above, freed once.
        unsafe { plain.free(o) };
    }
    assert!(plain.shrink() > 0);
    assert_eq!(cpuslab::slab::rcu_pending_pages(), pending_before);
    plain.destroy().map_err(|(_, e)| e).unwrap();
}

/// A name longer than slabinfo's 31 bytes is cut at a character boundary, so the
/// shown name is a prefix of the given one (found by the `kmem_cache` fuzz target).
#[test]
fn long_names_are_cut_at_a_character_boundary() {
    let name = "abcdefghijklmnopqrstuvwxyz1234é";
    let c = KmemCache::<u64>::new(name, SlabFlags::NONE).unwrap();
    assert_eq!(c.name(), "abcdefghijklmnopqrstuvwxyz1234");
    c.destroy().map_err(|(_, e)| e).unwrap();
}

/// `free_block` finds an object of the same slab as the object before it by arithmetic
/// on that slab's span: frees in address order, flushed in batches that cross from one
/// slab to the next, must each reach their own slab. One object left in every slab
/// keeps it, so a slab charged with a neighbour's object would come out empty (and be
/// freed) or abort as an invalid or double free.
#[test]
fn flushes_return_runs_of_objects_to_their_own_slabs() {
    let cache = KmemCache::<[u64; 8]>::new("test_runs", SlabFlags::NONE).unwrap();
    // No shared cache, so every flush goes to the slabs, 128 objects at a time.
    cache.tune(256, 128, 0).unwrap();
    let per = cache.objects_per_slab();
    let mut objs: Vec<_> = (0..per * 8).map(|_| cache.alloc().unwrap()).collect();
    objs.sort_by_key(|p| p.as_ptr() as usize);
    let slab_of =
        |p: &NonNull<[u64; 8]>| p.as_ptr() as usize & !(cache.pages_per_slab() * 4096 - 1);
    let slabs: HashSet<usize> = objs.iter().map(slab_of).collect();
    // Keep the first object of each slab; free the rest, in address order.
    let mut kept = HashSet::new();
    let mut keep = Vec::new();
    for p in objs {
        if kept.insert(slab_of(&p)) {
            keep.push(p);
        } else {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(p) };
        }
    }
    cache.shrink();
    let row = || {
        cpuslab::stats::caches()
            .into_iter()
            .find(|c| c.name == "test_runs")
            .expect("cache listed")
    };
    let r = row();
    assert_eq!(r.active_objs, keep.len(), "{r:?}");
    assert_eq!(r.num_slabs, slabs.len(), "{r:?}");
    for p in keep {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(p) };
    }
    cache.shrink();
    let r = row();
    assert_eq!((r.active_objs, r.num_slabs), (0, 0), "{r:?}");
    cache.destroy().unwrap();
}
