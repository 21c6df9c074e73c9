//! Checks that are on in every build, not only in debug mode: a free of a pointer that
//! is not the start of an object aborts, and so does a double free, with one
//! `cpuslab:` line on stderr and SIGABRT.
//!
//! Each bad free runs in a child process (the test binary again, see
//! `common::run_child`), which prints `addr=<pointer>` and then does the bad thing. A
//! child that survives prints `survived` and what the allocator handed out after the
//! bad free (the same block twice, an overlapping block), and exits 0: that fails the
//! test. Every case runs on both per-CPU fast paths (restartable sequences and, with
//! `CPUSLAB_RSEQ=0`, the tried lock). The children run with `CPUSLAB_DEBUG=0`
//! whatever the parent's setting: these are the checks of the release paths (debug
//! mode keeps no object per CPU, and reports the same frees in its own words; see
//! `tests/debug.rs`).

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;

use cpuslab::{CpuSlab, KmemCache, SlabFlags};

/// Sizes covering every slab shape and free map place: on-slab freelists of u16
/// indices with the map in the slab (8, 16), of u8 indices with the map in the head
/// page's spare bytes (48, 200, and multi-page 5000, 20000), one-page off-slab
/// freelists with the map in the head page's `info` (256, 1024), a multi-page
/// off-slab freelist (8192); non-power-of-two classes among them (48, 200, 5000,
/// 20000).
const SIZES: [usize; 9] = [8, 16, 48, 200, 256, 1024, 5000, 8192, 20000];

/// The fast paths every case runs on.
const PATHS: [&[(&str, &str)]; 2] = [&[], &[("CPUSLAB_RSEQ", "0")]];

/// The size a child works on, from `HARDENING_SIZE`.
fn child_size() -> usize {
    std::env::var("HARDENING_SIZE").unwrap().parse().unwrap()
}

/// Runs test `name` as a child for every size in `sizes` on both fast paths, expecting
/// each to abort with exactly one `cpuslab:` line that names the address the child
/// printed last and contains every part of `want`.
fn expect_abort(name: &str, sizes: &[usize], want: &[&str]) {
    expect_abort_with(name, sizes, want, &[]);
}

/// [`expect_abort`] with more variables in the children's environment.
fn expect_abort_with(name: &str, sizes: &[usize], want: &[&str], extra: &[(&str, &str)]) {
    for &size in sizes {
        for path in PATHS {
            let size_s = size.to_string();
            let mut env = vec![("HARDENING_SIZE", size_s.as_str()), ("CPUSLAB_DEBUG", "0")];
            env.extend_from_slice(path);
            env.extend_from_slice(extra);
            let (status, err) = common::run_child(name, &env);
            let what = format!("child {name} size {size} env {path:?}");
            assert_eq!(
                status.signal(),
                Some(libc::SIGABRT),
                "{what} did not abort: {status:?}\n{err}"
            );
            let addr = err
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("addr="))
                .unwrap_or_else(|| panic!("{what} printed no address:\n{err}"));
            let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("cpuslab:")).collect();
            assert_eq!(lines.len(), 1, "{what}: want one cpuslab line:\n{err}");
            assert!(
                lines[0].contains(addr),
                "{what}: line lacks {addr}: {}",
                lines[0]
            );
            for w in want {
                assert!(
                    lines[0].contains(w),
                    "{what}: line lacks {w:?}: {}",
                    lines[0]
                );
            }
        }
    }
}

/// In a child: two blocks of `size` bytes. The second stays live, so the first's slab
/// always has an object in use (a slab with none would reveal a double free even
/// without the free map).
fn two_blocks(size: usize) -> (*mut u8, *mut u8, Layout) {
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a valid layout.
    let (p, keep) = unsafe { (CpuSlab.alloc(l), CpuSlab.alloc(l)) };
    assert!(!p.is_null() && !keep.is_null());
    eprintln!("addr={p:p}");
    (p, keep, l)
}

/// Reports, in a child that was not stopped, what the allocator hands out next: two
/// blocks of the layout, and whether they are the same or overlap `p`.
fn survived(p: *mut u8, l: Layout) {
    // SAFETY: a valid layout.
    let (a, b) = unsafe { (CpuSlab.alloc(l), CpuSlab.alloc(l)) };
    let overlaps = |q: *mut u8| (q as usize).abs_diff(p as usize) < l.size() && q != p;
    eprintln!(
        "survived: next blocks {a:p} {b:p} (same: {}, overlapping {p:p}: {})",
        a == b,
        overlaps(a) || overlaps(b)
    );
}

#[test]
fn double_free_is_caught_when_the_cache_is_trimmed() {
    if common::is_child() {
        let (p, _keep, l) = two_blocks(child_size());
        // SAFETY: deliberately wrong: `p` is freed twice. Both copies sit in the
        // CPU's array cache (or the second is caught on top of it); trimming takes
        // them to their slab, whose free map has the first.
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(p, l);
            cpuslab::trim();
        }
        survived(p, l);
        return;
    }
    expect_abort(
        "double_free_is_caught_when_the_cache_is_trimmed",
        &SIZES,
        &["double free of", "cache kmalloc-"],
    );
}

/// A double free with two other frees of the same slab between the two: the push's
/// check of the two entries on top passes it, and the trim hands `free_block` all four
/// in one run of the slab, whose map is written once for the run (`slab_put_objs`).
/// The run's own bits must count as set when the second copy comes.
#[test]
fn double_free_is_caught_within_one_run_of_its_slab() {
    if common::is_child() {
        let (p, _keep, l) = pinned_two_blocks();
        // SAFETY: a valid layout.
        let (q, r) = unsafe { (CpuSlab.alloc(l), CpuSlab.alloc(l)) };
        assert!(!q.is_null() && !r.is_null());
        // SAFETY: deliberately wrong: `p` is freed twice, `q` and `r` between the two
        // (two, so that the push's check of the two entries on top lets it through).
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(q, l);
            CpuSlab.dealloc(r, l);
            CpuSlab.dealloc(p, l);
            cpuslab::trim();
        }
        survived(p, l);
        return;
    }
    // Slabs of at least three objects, so that `q` can share `p`'s slab.
    let sizes: Vec<usize> = SIZES.into_iter().filter(|&s| s < 8192).collect();
    expect_abort(
        "double_free_is_caught_within_one_run_of_its_slab",
        &sizes,
        &["double free of", "already free"],
    );
}

#[test]
fn double_free_is_caught_after_the_object_reached_its_slab() {
    if common::is_child() {
        let (p, _keep, l) = two_blocks(child_size());
        // SAFETY: deliberately wrong: `p` is freed, goes back to its slab, and is
        // freed again; the second free reaches the slab at the next trim.
        unsafe {
            CpuSlab.dealloc(p, l);
            cpuslab::trim();
            CpuSlab.dealloc(p, l);
            cpuslab::trim();
        }
        survived(p, l);
        return;
    }
    // Not 8192: its slabs hold one object, so the trim gives the slab back and the
    // second free is of no object at all ("invalid free", tested below).
    let sizes: Vec<usize> = SIZES.into_iter().filter(|&s| s != 8192).collect();
    expect_abort(
        "double_free_is_caught_after_the_object_reached_its_slab",
        &sizes,
        // In its slab's free map, or (objects under a cache line, freed into an empty
        // array cache) among the free objects its node hands that cache.
        &["double free of", "already free"],
    );
}

/// Pins the calling thread to the first CPU it may use, so that consecutive frees meet
/// the same array cache.
fn pin() {
    // SAFETY: plain affinity calls on a zeroed set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size_of_val(&set), &mut set), 0);
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of_val(&set), &set), 0);
    }
}

#[test]
fn double_free_is_caught_by_the_flush_of_a_full_array_cache() {
    if common::is_child() {
        pin();
        let cache = KmemCache::<[u64; 4]>::new("hard_flush", SlabFlags::NONE).unwrap();
        // One object per CPU and no shared cache: the second free finds the array
        // cache full, and its flush finds the same object on top.
        cache.tune(1, 1, 0).unwrap();
        let p = cache.alloc().unwrap();
        let _keep = cache.alloc().unwrap();
        cache.shrink();
        eprintln!("addr={:p}", p.as_ptr());
        // SAFETY: deliberately wrong: `p` is freed twice, with no trim.
        unsafe {
            cache.free(p);
            cache.free(p);
        }
        let (a, b) = (cache.alloc().unwrap(), cache.alloc().unwrap());
        eprintln!("survived: next objects {a:p} {b:p}");
        return;
    }
    expect_abort(
        "double_free_is_caught_by_the_flush_of_a_full_array_cache",
        &[32],
        &["double free of", "cache hard_flush", "array cache"],
    );
}

/// In a child: [`two_blocks`] of `HARDENING_SIZE` bytes taken on a pinned thread
/// after a trim, so that consecutive frees meet the same array cache. The CPU's next
/// refill then takes objects from the slabs and owns them: one from the shared cache
/// could belong to a slab another CPU owns (the harness's threads ran there), and the
/// small classes' frees would send it to that CPU's remote free list, whose own top
/// check would report it (tests/remote_frees.rs).
fn pinned_two_blocks() -> (*mut u8, *mut u8, Layout) {
    pin();
    cpuslab::trim();
    two_blocks(child_size())
}

/// The cheap check every push makes, as glibc's tcache does: freeing the object that
/// is on top of the CPU's array cache (the one freed last) aborts at once, with no
/// trim or flush, on both fast paths and through the C ABI's unsized free (the
/// `kmalloc` calls `free` makes).
#[test]
fn double_free_on_top_of_the_array_cache_aborts_at_once() {
    if common::is_child() {
        let (p, _keep, l) = pinned_two_blocks();
        // SAFETY: deliberately wrong: `p` is freed twice in a row.
        unsafe {
            if std::env::var_os("HARDENING_UNSIZED").is_some() {
                // What C's `free` does: the inline fast path, else the whole one.
                for _ in 0..2 {
                    if !cpuslab::kmalloc::kfree_unsized_fast(p) {
                        cpuslab::kmalloc::kfree_unsized(p);
                    }
                }
            } else {
                CpuSlab.dealloc(p, l);
                CpuSlab.dealloc(p, l);
            }
        }
        survived(p, l);
        return;
    }
    let name = "double_free_on_top_of_the_array_cache_aborts_at_once";
    let want = ["double free of", "array cache"];
    expect_abort(name, &SIZES, &want);
    expect_abort_with(name, &SIZES, &want, &[("HARDENING_UNSIZED", "1")]);
}

/// The same check one entry deeper for the C ABI's unsized free: `free(a); free(b);
/// free(a)` (the double free glibc's fastbins once let through, how2heap's
/// `fastbin_dup`) aborts at the third free, on both fast paths. Before, the cache took
/// `a` again and handed it out twice. Rust's sized `dealloc` checks the top only: safe
/// code cannot free a block twice, and the 64 B pair's loop was 3-10% slower with the
/// deeper check.
#[test]
fn double_free_under_the_last_free_aborts_at_once() {
    if common::is_child() {
        let (p, keep, l) = pinned_two_blocks();
        // SAFETY: deliberately wrong: `p` is freed twice, `keep` freed in between,
        // as C's `free` does (the inline fast path, else the whole one).
        unsafe {
            for q in [p, keep, p] {
                if !cpuslab::kmalloc::kfree_unsized_fast(q) {
                    cpuslab::kmalloc::kfree_unsized(q);
                }
            }
        }
        survived(p, l);
        return;
    }
    expect_abort(
        "double_free_under_the_last_free_aborts_at_once",
        &SIZES,
        &["double free of", "array cache"],
    );
}

#[test]
fn interior_free_of_a_power_of_two_class_aborts_at_once() {
    if common::is_child() {
        let (p, _keep, l) = two_blocks(child_size());
        // SAFETY: deliberately wrong: a pointer 8 bytes into a block, with no trim
        // after it: the free itself must refuse it.
        unsafe {
            let q = p.add(8);
            eprintln!("addr={q:p}");
            CpuSlab.dealloc(q, l);
        }
        survived(p, l);
        return;
    }
    expect_abort(
        "interior_free_of_a_power_of_two_class_aborts_at_once",
        &[16, 64, 256, 1024],
        &["invalid free of", "cache kmalloc-"],
    );
}

#[test]
fn interior_free_of_any_class_aborts_by_its_slab() {
    if common::is_child() {
        let size = child_size();
        let (p, _keep, l) = two_blocks(size);
        // SAFETY: deliberately wrong: a pointer 16 bytes into a block (aligned as the
        // class's objects are for 48 and 80 bytes: only its slab can tell).
        unsafe {
            let q = p.add(16);
            eprintln!("addr={q:p}");
            CpuSlab.dealloc(q, l);
            cpuslab::trim();
        }
        survived(p, l);
        return;
    }
    expect_abort(
        "interior_free_of_any_class_aborts_by_its_slab",
        &[48, 80, 200, 5000],
        &[
            "invalid free of",
            "cache kmalloc-",
            "not an object of this cache",
        ],
    );
}

/// A clean workload with the checks on: many classes, frees in and out of order and
/// from other threads, trims between rounds; nothing aborts and every block keeps its
/// contents.
#[test]
fn clean_workload_passes_the_checks() {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(t + 1);
                let mut live: Vec<(*mut u8, Layout)> = Vec::new();
                let mut handed = 0usize;
                for round in 0..20 {
                    for _ in 0..5000 {
                        if live.len() < 2000 && rng.below(3) != 0 {
                            let size = SIZES[rng.below(SIZES.len() as u64) as usize]
                                + rng.below(8) as usize;
                            let l = Layout::from_size_align(size, 8).unwrap();
                            // SAFETY: valid layout; the block is filled within its size.
                            let p = unsafe { CpuSlab.alloc(l) };
                            assert!(!p.is_null());
                            // SAFETY: a fresh block of `size` bytes.
                            unsafe { common::fill(p, size, t) };
                            live.push((p, l));
                            handed += 1;
                        } else if !live.is_empty() {
                            let i = rng.below(live.len() as u64) as usize;
                            let (p, l) = live.swap_remove(i);
                            // SAFETY: a live block of this layout, filled by `fill`.
                            unsafe {
                                common::check(p, l.size(), t);
                                CpuSlab.dealloc(p, l);
                            }
                        }
                    }
                    if round % 5 == 4 {
                        cpuslab::trim();
                    }
                }
                for (p, l) in live {
                    // SAFETY: as above.
                    unsafe {
                        common::check(p, l.size(), t);
                        CpuSlab.dealloc(p, l);
                    }
                }
                handed
            })
        })
        .collect();
    let handed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(handed > 100_000, "only {handed} blocks");
    cpuslab::trim();
}
