//! Slab debugging (`CPUSLAB_DEBUG=1`): every detection fires with one `cpuslab:` line
//! naming the problem, the cache and the address, then aborts; a normal workload runs
//! clean under it. Freelist randomization (`CPUSLAB_FREELIST_RANDOM=1`): fresh slabs
//! hand objects out in shuffled, different orders, each object exactly once; without
//! it, in address order.
//!
//! Each detection runs in a child process (the test binary again, see
//! `common::run_child`) that prints `addr=<pointer>` and then does the bad thing.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::ptr::NonNull;
use std::sync::Arc;

use common::Rng;
use cpuslab::{CpuSlab, KmemCache, SlabFlags};

const DEBUG_ON: &[(&str, &str)] = &[("CPUSLAB_DEBUG", "1")];

/// Runs the test `name` as a child with debugging on, expecting it to abort with one
/// `cpuslab:` line that contains every part of `want` and the address the child
/// printed last (`addr=...`).
fn expect_abort(name: &str, want: &[&str]) {
    let (status, err) = common::run_child(name, DEBUG_ON);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "child {name} did not abort: {status:?}\n{err}"
    );
    let addr = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("child {name} printed no address:\n{err}"))
        .to_string();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("cpuslab:")).collect();
    assert_eq!(lines.len(), 1, "want one cpuslab line:\n{err}");
    let line = lines[0];
    assert!(line.contains(&addr), "line does not name {addr}: {line}");
    for w in want {
        assert!(line.contains(w), "line lacks {w:?}: {line}");
    }
}

/// In a child: a 64-byte kmalloc block whose address is printed first.
fn block64() -> (*mut u8, Layout) {
    assert!(
        cpuslab::config::slab_debug(),
        "the child must run with debugging on"
    );
    let l = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a valid layout.
    let p = unsafe { CpuSlab.alloc(l) };
    assert!(!p.is_null());
    eprintln!("addr={p:p}");
    (p, l)
}

#[test]
fn overflow_past_the_end_aborts() {
    if common::is_child() {
        let (p, l) = block64();
        // SAFETY: deliberately wrong: one byte past the block, into its red zone.
        unsafe {
            *p.add(64) = 0;
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    expect_abort(
        "overflow_past_the_end_aborts",
        &["red zone after object", "cache kmalloc-64", "overwritten"],
    );
}

#[test]
fn underflow_before_the_start_aborts() {
    if common::is_child() {
        let (p, l) = block64();
        // SAFETY: deliberately wrong: the byte before the block, its red zone.
        unsafe {
            *p.sub(1) = 0;
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    expect_abort(
        "underflow_before_the_start_aborts",
        &["red zone before object", "cache kmalloc-64", "overwritten"],
    );
}

#[test]
fn write_after_free_aborts_on_the_next_allocation() {
    if common::is_child() {
        let (p, l) = block64();
        let mut keep = Vec::with_capacity(10_000);
        // SAFETY: deliberately wrong: a write to the freed block. The next
        // allocations of its class hand it out again and find the poison broken.
        unsafe {
            CpuSlab.dealloc(p, l);
            *p.add(10) = 1;
            for _ in 0..10_000 {
                keep.push(CpuSlab.alloc(l));
            }
        }
        return;
    }
    expect_abort(
        "write_after_free_aborts_on_the_next_allocation",
        &["write after free to", "cache kmalloc-64", "byte 10 is 0x01"],
    );
}

#[test]
fn double_free_aborts() {
    if common::is_child() {
        let (p, l) = block64();
        // SAFETY: deliberately wrong: the block is freed twice; the first free left
        // it in a cache (shared or per-node), not yet in its slab.
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    expect_abort(
        "double_free_aborts",
        &["double free of", "cache kmalloc-64", "already freed"],
    );
}

#[test]
fn double_free_from_the_slab_freelist_aborts() {
    if common::is_child() {
        assert!(cpuslab::config::slab_debug());
        let c = KmemCache::<[u64; 6]>::new("dbg-obj", SlabFlags::NONE).unwrap();
        assert!(c.debug());
        let slab_bytes = c.pages_per_slab() * 4096;
        let objs: Vec<NonNull<[u64; 6]>> = (0..64).map(|_| c.alloc().unwrap()).collect();
        // One object whose slab keeps another object in use, so the slab stays.
        let (i, _) = objs
            .iter()
            .enumerate()
            .find(|(i, a)| {
                objs.iter().enumerate().any(|(j, b)| {
                    j != *i && a.as_ptr() as usize / slab_bytes == b.as_ptr() as usize / slab_bytes
                })
            })
            .unwrap();
        let p = objs[i];
        eprintln!("addr={:p}", p.as_ptr());
        // SAFETY: deliberately wrong: `p` is freed, goes back to its slab's freelist
        // (shrink empties the caches), and is freed again.
        unsafe {
            c.free(p);
            c.shrink();
            c.free(p);
        }
        return;
    }
    expect_abort(
        "double_free_from_the_slab_freelist_aborts",
        &["double free of", "cache dbg-obj"],
    );
}

#[test]
fn free_of_a_foreign_pointer_aborts() {
    if common::is_child() {
        let (_, l) = block64();
        let mut local = [0u64; 8];
        let p = local.as_mut_ptr().cast::<u8>();
        eprintln!("addr={p:p}");
        // SAFETY: deliberately wrong: stack memory cpuslab never handed out.
        unsafe { CpuSlab.dealloc(p, l) };
        return;
    }
    expect_abort(
        "free_of_a_foreign_pointer_aborts",
        &[
            "invalid free of",
            "cache kmalloc-64",
            "not a cpuslab address",
        ],
    );
}

#[test]
fn free_of_an_interior_pointer_aborts() {
    if common::is_child() {
        let (p, l) = block64();
        // SAFETY: deliberately wrong: a pointer into the middle of a block.
        unsafe {
            let q = p.add(8);
            eprintln!("addr={q:p}");
            CpuSlab.dealloc(q, l);
        }
        return;
    }
    expect_abort(
        "free_of_an_interior_pointer_aborts",
        &[
            "invalid free of",
            "cache kmalloc-64",
            "not an object of this cache",
        ],
    );
}

#[test]
fn free_with_a_layout_of_another_size_class_aborts() {
    if common::is_child() {
        let (p, _) = block64();
        // SAFETY: deliberately wrong: freed with a layout of the 224-byte class.
        unsafe { CpuSlab.dealloc(p, Layout::from_size_align(200, 8).unwrap()) };
        return;
    }
    expect_abort(
        "free_with_a_layout_of_another_size_class_aborts",
        &[
            "invalid free of",
            "to cache kmalloc-224",
            "in a slab of cache kmalloc-64",
        ],
    );
}

/// One thread of the clean workload: random allocations, zeroed allocations, reallocs
/// and frees of sizes up to 96 KiB and alignments up to 4 KiB, every block's contents
/// checked before it is resized or freed.
fn workload(seed: u64, ops: usize) -> usize {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, Layout, u64)> = Vec::new();
    let mut checked = 0;
    for op in 0..ops {
        let r = rng.below(100);
        if live.len() < 300 && r < 45 {
            let size = match rng.below(10) {
                0 => rng.below(96 << 10) as usize + 1,
                1..=3 => rng.below(4096) as usize + 1,
                _ => rng.below(300) as usize + 1,
            };
            let align = 1usize << [3, 3, 3, 4, 6, 12][rng.below(6) as usize];
            let l = Layout::from_size_align(size, align).unwrap();
            let salt = seed ^ op as u64;
            let zeroed = rng.below(4) == 0;
            // SAFETY: a valid layout; a fresh block is written within its size.
            let p = unsafe {
                let p = if zeroed {
                    CpuSlab.alloc_zeroed(l)
                } else {
                    CpuSlab.alloc(l)
                };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                if zeroed {
                    assert!((0..size).all(|i| *p.add(i) == 0), "not zeroed");
                }
                common::fill(p, size, salt);
                p
            };
            live.push((p, l, salt));
        } else if !live.is_empty() && r < 60 {
            let i = rng.below(live.len() as u64) as usize;
            let (p, l, salt) = live[i];
            let new_size = rng.below(8192) as usize + 1;
            // SAFETY: a live block of layout `l`, checked, then resized.
            unsafe {
                common::check(p, l.size(), salt);
                let q = CpuSlab.realloc(p, l, new_size);
                assert!(!q.is_null());
                common::check_moved(q, p as usize, l.size().min(new_size), salt);
                let nl = Layout::from_size_align(new_size, l.align()).unwrap();
                common::fill(q, new_size, salt);
                live[i] = (q, nl, salt);
            }
            checked += 1;
        } else if !live.is_empty() {
            let (p, l, salt) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: a live block of layout `l`.
            unsafe {
                common::check(p, l.size(), salt);
                CpuSlab.dealloc(p, l);
            }
            checked += 1;
        }
    }
    for (p, l, salt) in live {
        // SAFETY: as above.
        unsafe {
            common::check(p, l.size(), salt);
            CpuSlab.dealloc(p, l);
        }
    }
    checked
}

#[test]
fn workload_runs_clean_under_debug() {
    if common::is_child() {
        assert!(cpuslab::config::slab_debug(), "debugging is not on");
        let cache = Arc::new(KmemCache::<[u64; 4]>::new("dbg-clean", SlabFlags::NONE).unwrap());
        let rcu_cache =
            Arc::new(KmemCache::<[u64; 3]>::new("dbg-rcu", SlabFlags::TYPESAFE_BY_RCU).unwrap());
        assert!(cache.debug() && rcu_cache.debug());
        // A debug cache keeps no per-CPU objects: tuning it is refused, not a silent
        // no-op (bad values are refused as such first).
        assert!(matches!(
            cache.tune(0, 1, 8),
            Err(cpuslab::CacheError::Tunables { .. })
        ));
        assert_eq!(cache.tune(64, 32, 8), Err(cpuslab::CacheError::DebugCache));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (c, rc) = (cache.clone(), rcu_cache.clone());
                std::thread::spawn(move || {
                    let mut n = workload(t + 1, 20_000);
                    let mut held = Vec::new();
                    for i in 0..5_000u64 {
                        let v = [t, i, !i, t ^ i];
                        held.push(c.alloc_with(v).unwrap());
                        held_rcu(&rc, i);
                        if i % 3 == 0 {
                            let p = held.swap_remove((i as usize * 7) % held.len());
                            // SAFETY: our own live object.
                            unsafe {
                                let got = p.as_ptr().read();
                                assert_eq!(got[0], t);
                                assert_eq!(got[3], got[0] ^ got[1]);
                                c.free(p);
                            }
                            n += 1;
                        }
                    }
                    for p in held {
                        // SAFETY: as above.
                        unsafe { c.free(p) };
                    }
                    n
                })
            })
            .collect();
        let checked: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Standard collections, on the debug allocator as well.
        let mut m: HashMap<u64, String> = HashMap::new();
        for i in 0..20_000u64 {
            m.insert(i, format!("value {i}"));
        }
        m.retain(|k, _| k % 3 == 0);
        assert!(m.iter().all(|(k, v)| *v == format!("value {k}")));
        eprintln!("clean run: {checked} blocks checked");
        return;
    }
    let (status, err) = common::run_child("workload_runs_clean_under_debug", DEBUG_ON);
    assert!(status.success(), "child failed: {status:?}\n{err}");
    assert!(err.contains("clean run:"), "{err}");
    assert!(!err.contains("cpuslab:"), "{err}");
}

/// Allocates and frees an object of a `TYPESAFE_BY_RCU` debug cache (not poisoned).
fn held_rcu(c: &KmemCache<[u64; 3]>, i: u64) {
    let p = c.alloc_with([i; 3]).unwrap();
    // SAFETY: our own live object.
    unsafe {
        assert_eq!(p.as_ptr().read(), [i; 3]);
        c.free(p);
    }
}

/// Blocks of the naturally aligned kmalloc classes above a page (8 KiB for 24 KiB
/// objects, 16 KiB, 32 KiB) keep the alignment `classify` promised, with and without
/// debugging (whose slots are larger).
fn aligned_classes() {
    for (size, align) in [
        (8192usize, 8192usize),
        (20000, 8192),
        (24576, 8192),
        (12000, 16384),
        (30000, 32768),
        (64, 64),
        (3000, 1024),
    ] {
        let l = Layout::from_size_align(size, align).unwrap();
        let blocks: Vec<*mut u8> = (0..40)
            .map(|_| {
                // SAFETY: a valid layout.
                let p = unsafe { CpuSlab.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}: {p:p}");
                // SAFETY: a fresh block of `size` bytes.
                unsafe { p.write_bytes(0x3c, size) };
                p
            })
            .collect();
        for p in blocks {
            // SAFETY: live blocks of this layout.
            unsafe { CpuSlab.dealloc(p, l) };
        }
    }
}

#[test]
fn aligned_classes_keep_their_alignment() {
    if common::is_child() {
        assert!(cpuslab::config::slab_debug());
        aligned_classes();
        eprintln!("aligned");
        return;
    }
    aligned_classes();
    let (status, err) = common::run_child("aligned_classes_keep_their_alignment", DEBUG_ON);
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("aligned"), "{err}");
}

#[test]
fn debug_is_off_when_asked() {
    if common::is_child() {
        let c = KmemCache::<u64>::new("dbg-off", SlabFlags::NONE).unwrap();
        assert!(!c.debug(), "CPUSLAB_DEBUG=0 left debugging on");
        assert!(!cpuslab::config::Config::from_env().debug);
        eprintln!("debug off");
        return;
    }
    let (status, err) = common::run_child("debug_is_off_when_asked", &[("CPUSLAB_DEBUG", "0")]);
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("debug off"), "{err}");
}

/// Allocates whole slabs' worth of objects from a fresh cache of `T`, twice (freeing
/// everything and shrinking the cache in between), and returns, for each round, every
/// whole slab's allocation order as its objects' address ranks. Checks that no object
/// is handed out twice.
fn slab_orders<T>(name: &str) -> Vec<Vec<Vec<usize>>> {
    let c = KmemCache::<T>::new(name, SlabFlags::NONE).unwrap();
    let per = c.objects_per_slab();
    let slab_bytes = c.pages_per_slab() * 4096;
    assert!(
        per >= 3,
        "{name}: {per} objects per slab cannot show an order"
    );
    // 96 slabs: with 3 objects a slab a random order is monotone with probability
    // 1/3, so the bound in `check_shuffled` (2/3 of the slabs) is 7 standard
    // deviations away.
    let n = per * 96;
    let mut rounds = Vec::new();
    for round in 0..2 {
        let objs: Vec<NonNull<T>> = (0..n).map(|_| c.alloc().unwrap()).collect();
        let addrs: Vec<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
        let distinct: HashSet<usize> = addrs.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            n,
            "{name} round {round}: an object handed out twice"
        );
        // Allocation order within each slab, as the objects' index (address rank).
        let mut slabs: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &a in &addrs {
            slabs.entry(a / slab_bytes).or_default().push(a);
        }
        let orders: Vec<Vec<usize>> = slabs
            .values()
            .filter(|v| v.len() == per)
            .map(|v| {
                let mut sorted = v.clone();
                sorted.sort_unstable();
                v.iter().map(|a| sorted.binary_search(a).unwrap()).collect()
            })
            .collect();
        assert!(
            orders.len() >= 64,
            "{name}: only {} whole slabs of {per} objects among {n}",
            orders.len()
        );
        for p in objs {
            // SAFETY: live objects of this cache.
            unsafe { c.free(p) };
        }
        c.shrink();
        rounds.push(orders);
    }
    rounds
}

/// Each slab's objects appear in an order that is neither ascending nor descending in
/// address, and two slabs differ.
fn check_shuffled<T>(name: &str) {
    for (round, orders) in slab_orders::<T>(name).into_iter().enumerate() {
        let monotone = orders
            .iter()
            .filter(|o| o.windows(2).all(|w| w[0] < w[1]) || o.windows(2).all(|w| w[0] > w[1]))
            .count();
        // A random order of k objects is monotone with probability 2/k!; an unshuffled
        // freelist makes every slab monotone.
        assert!(
            monotone * 3 < orders.len() * 2,
            "{name}: {monotone} of {} slabs hand out objects in address order: {orders:?}",
            orders.len()
        );
        assert!(
            orders.iter().any(|o| o != &orders[0]),
            "{name} round {round}: every slab hands out objects in the same order: {orders:?}"
        );
    }
}

/// Objects allocated one after the other are address neighbours: a slab hands out
/// its lowest free objects first, and each refill leaves the per-CPU stack in
/// ascending address order.
fn check_ordered<T>(name: &str) {
    for (round, orders) in slab_orders::<T>(name).into_iter().enumerate() {
        let steps: usize = orders.iter().map(|o| o.len() - 1).sum();
        let neighbours: usize = orders
            .iter()
            .map(|o| o.windows(2).filter(|w| w[0].abs_diff(w[1]) == 1).count())
            .sum();
        // Refills that end inside a slab break a run; a shuffled order of k objects
        // has about 2/k neighbour steps.
        assert!(
            neighbours * 4 >= steps * 3,
            "{name} round {round}: {neighbours} of {steps} steps go to a neighbour: {orders:?}"
        );
    }
}

/// Runs `check` in a child with `CPUSLAB_FREELIST_RANDOM` set to `value` (the option
/// is read at boot).
fn with_freelist_random(test: &str, value: &str, check: impl FnOnce()) {
    if common::is_child() {
        check();
        eprintln!("checked");
        return;
    }
    let (status, err) = common::run_child(test, &[("CPUSLAB_FREELIST_RANDOM", value)]);
    assert!(
        status.success() && err.contains("checked"),
        "child failed: {err}"
    );
}

#[test]
fn freelists_are_shuffled_on_slab() {
    with_freelist_random("freelists_are_shuffled_on_slab", "1", || {
        check_shuffled::<[u8; 256]>("shuffle-256")
    });
}

#[test]
fn freelists_are_shuffled_off_slab() {
    with_freelist_random("freelists_are_shuffled_off_slab", "1", || {
        // 1 KiB objects: 4 to a one-page slab, the freelist in the page descriptor.
        check_shuffled::<[u8; 1024]>("shuffle-1k");
        // 5 KiB objects: a multi-page slab, the freelist in a tail page's descriptor.
        check_shuffled::<[u8; 5120]>("shuffle-5k");
    });
}

/// Without shuffling a slab keeps its free objects in its free map alone and hands
/// the lowest out first, whatever order they were freed in: three objects freed out of
/// order and drained back to their slab come back in ascending address order.
#[test]
fn freed_objects_leave_their_slab_lowest_first() {
    with_freelist_random("freed_objects_leave_their_slab_lowest_first", "0", || {
        let c = KmemCache::<[u8; 256]>::new("lowest-first", SlabFlags::NONE).unwrap();
        let per = c.objects_per_slab();
        let mut objs: Vec<NonNull<[u8; 256]>> = (0..per * 4).map(|_| c.alloc().unwrap()).collect();
        objs.sort_unstable();
        let slab_bytes = c.pages_per_slab() * 4096;
        // A slab all of whose objects are live: the second whole one.
        let base = objs[per].as_ptr() as usize / slab_bytes * slab_bytes;
        let mine: Vec<usize> = objs
            .iter()
            .map(|p| p.as_ptr() as usize)
            .filter(|&a| a / slab_bytes * slab_bytes == base)
            .collect();
        assert_eq!(mine.len(), per);
        let picked = [mine[3], mine[per - 2], mine[7]];
        for &a in &picked {
            // SAFETY: a live object of this cache, freed once.
            unsafe { c.free(NonNull::new(a as *mut [u8; 256]).unwrap()) };
        }
        c.shrink();
        // Other slabs may have free objects too (the last refill of a thread that kept
        // allocating took more than a slab's worth), and a refill may take from them
        // first: what counts is the order in which the three come back.
        let mut again = Vec::new();
        let mut back = Vec::new();
        while back.len() < 3 && again.len() < 8 * per {
            let a = c.alloc().unwrap().as_ptr() as usize;
            again.push(a);
            if picked.contains(&a) {
                back.push(a);
            }
        }
        // Lowest first: a refill pushes the batch highest first onto the per-CPU
        // stack, and a debug cache (no stack) takes the lowest each time.
        let want = [mine[3], mine[7], mine[per - 2]];
        assert_eq!(back, want, "freed {picked:x?}");
        for p in objs {
            let a = p.as_ptr() as usize;
            if !picked.contains(&a) {
                // SAFETY: live objects of this cache.
                unsafe { c.free(p) };
            }
        }
        for a in again {
            // SAFETY: reallocated above, live.
            unsafe { c.free(NonNull::new(a as *mut [u8; 256]).unwrap()) };
        }
    });
}

#[test]
fn freelists_are_in_address_order_unless_asked() {
    with_freelist_random("freelists_are_in_address_order_unless_asked", "0", || {
        check_ordered::<[u8; 256]>("ordered-256");
        check_ordered::<[u8; 1024]>("ordered-1k");
        check_ordered::<[u8; 5120]>("ordered-5k");
    });
    // Unset, the default: off.
    if std::env::var_os("CPUSLAB_FREELIST_RANDOM").is_none() {
        assert!(!cpuslab::config::Config::from_env().freelist_random);
    }
}
