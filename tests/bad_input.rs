//! Bad input gets an answer, never a crash: zero sizes, sizes near isize::MAX,
//! alignments up to 1 GiB, and an arena that cannot grow.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::CpuSlab;

#[test]
fn zero_size_gets_a_unique_block() {
    let l = Layout::from_size_align(0, 1).unwrap();
    // SAFETY: cpuslab accepts zero-size layouts and frees them with the same layout.
    unsafe {
        let a = CpuSlab.alloc(l);
        let b = CpuSlab.alloc(l);
        assert!(!a.is_null() && !b.is_null());
        assert_ne!(a, b);
        CpuSlab.dealloc(a, l);
        CpuSlab.dealloc(b, l);
    }
}

#[test]
fn impossible_sizes_return_null() {
    for (size, align) in [
        (isize::MAX as usize - 4095, 4096),
        (isize::MAX as usize / 2, 8),
        (1 << 46, 1 << 20),
    ] {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: valid layouts; a null result is allowed.
        unsafe {
            assert!(CpuSlab.alloc(l).is_null(), "size {size} should fail");
            assert!(CpuSlab.alloc_zeroed(l).is_null());
        }
    }
    // A failed realloc leaves the block intact.
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: live block, valid new size.
    unsafe {
        let p = CpuSlab.alloc(l);
        p.write_bytes(0xAB, 100);
        assert!(CpuSlab.realloc(p, l, isize::MAX as usize - 4095).is_null());
        assert!((0..100).all(|i| *p.add(i) == 0xAB));
        CpuSlab.dealloc(p, l);
    }
}

#[test]
fn alignments_up_to_one_gib() {
    for shift in 0..=30 {
        let align = 1usize << shift;
        for size in [1usize, 24, 4096, 100_000] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: valid layout; the block is written within its size.
            unsafe {
                let p = CpuSlab.alloc(l);
                assert!(!p.is_null(), "size {size} align {align}");
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(0x5A, size);
                assert!(cpuslab::usable_size(p) >= size);
                let q = CpuSlab.realloc(p, l, size * 2);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                assert_eq!(*q.add(size - 1), 0x5A);
                CpuSlab.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
            }
        }
    }
}

#[test]
fn zeroed_memory_is_zero_after_reuse() {
    for size in [8usize, 200, 5000, 40_000, 300_000, 5 << 20] {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: blocks are written within their size and freed with their layout.
        unsafe {
            let p = CpuSlab.alloc(l);
            p.write_bytes(0xFF, size);
            CpuSlab.dealloc(p, l);
            let z = CpuSlab.alloc_zeroed(l);
            assert!((0..size).all(|i| *z.add(i) == 0), "size {size} not zeroed");
            CpuSlab.dealloc(z, l);
        }
    }
}

/// Sets this process's address-space limit (`RLIMIT_AS`, what `ulimit -v` sets)
/// `room` bytes above the address space it holds now.
fn limit_address_space(room: usize) {
    limit_resource(libc::RLIMIT_AS, room);
}

/// Allocates 1 MiB blocks until cpuslab says no, frees them, and does it again: the
/// limit gives null (no abort) and nothing is lost.
fn exhaust_and_recover() -> usize {
    let l = Layout::from_size_align(1 << 20, 8).unwrap();
    let mut rounds = [0usize; 2];
    for round in &mut rounds {
        let mut blocks = Vec::with_capacity(4096);
        loop {
            // SAFETY: valid layout.
            let p = unsafe { CpuSlab.alloc(l) };
            if p.is_null() || blocks.len() == 4096 {
                break;
            }
            // SAFETY: a fresh block of 1 MiB.
            unsafe { p.write_bytes(1, 1 << 20) };
            blocks.push(p);
        }
        *round = blocks.len();
        for p in blocks {
            // SAFETY: live blocks of this layout.
            unsafe { CpuSlab.dealloc(p, l) };
        }
    }
    assert!(
        rounds[0] > 0 && rounds[0] < 4096,
        "limit never hit: {rounds:?}"
    );
    assert!(
        rounds[1] + 4 >= rounds[0],
        "memory lost after failure: {rounds:?}"
    );
    rounds[0]
}

#[test]
fn heap_limit_gives_null_then_recovers() {
    if common::is_child() {
        if std::env::var_os("CPUSLAB_HEAP_LIMIT").is_some() {
            let n = exhaust_and_recover();
            eprintln!("blocks before the limit: {n}");
            // Small allocations still work after large ones failed.
            let v: Vec<u32> = (0..10_000).collect();
            assert_eq!(v.len(), 10_000);
        }
        return;
    }
    let (status, err) = common::run_child(
        "heap_limit_gives_null_then_recovers",
        &[("CPUSLAB_HEAP_LIMIT", "96M")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("blocks before the limit"), "{err}");
}

/// The heap limit bounds what is committed now, not the high-water mark: memory
/// purged by `trim()` is uncharged, and charged again when its pages are handed out.
/// (With a 64M limit, 503 blocks of 100 KB freed and trimmed left a 32 MiB request
/// refused with nothing live.)
#[test]
fn heap_limit_counts_what_is_committed_now() {
    if common::is_child() {
        let small = Layout::from_size_align(100 * 1024, 8).unwrap();
        let big = Layout::from_size_align(32 << 20, 8).unwrap();
        let fill = |n: usize| -> Vec<*mut u8> {
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                // SAFETY: a valid layout; a fresh block is written within its size.
                let p = unsafe { CpuSlab.alloc(small) };
                if p.is_null() {
                    break;
                }
                // SAFETY: as above.
                unsafe { p.write_bytes(1, small.size()) };
                blocks.push(p);
            }
            blocks
        };
        let free = |blocks: Vec<*mut u8>| {
            for p in blocks {
                // SAFETY: live blocks of this layout.
                unsafe { CpuSlab.dealloc(p, small) };
            }
        };
        let blocks = fill(503);
        assert_eq!(blocks.len(), 503, "the first round fits the limit");
        free(blocks);
        let purged = cpuslab::trim();
        assert!(purged >= 40 << 20, "trim purged only {purged} bytes");
        let m = cpuslab::stats::memory();
        assert!(
            m.committed_bytes < 16 << 20,
            "purged memory still counts: {m:?}"
        );
        // SAFETY: a valid layout; the block is written within its size and freed.
        let q = unsafe { CpuSlab.alloc(big) };
        assert!(!q.is_null(), "32 MiB refused with nothing live: {m:?}");
        // SAFETY: as above.
        unsafe { q.write_bytes(2, big.size()) };
        // The purged blocks are charged again when reused: with 32 MiB live, the
        // 100 KB blocks stop short of the first round's count.
        let blocks = fill(503);
        let n = blocks.len();
        let committed = cpuslab::stats::memory().committed_bytes;
        free(blocks);
        // SAFETY: as above.
        unsafe { CpuSlab.dealloc(q, big) };
        assert!(
            (200..400).contains(&n),
            "{n} blocks of 100 KB beside 32 MiB under a 64M limit"
        );
        assert!(
            committed <= 64 << 20,
            "committed {committed} past the limit"
        );
        // And with the 32 MiB gone, a whole round fits again.
        cpuslab::trim();
        let blocks = fill(503);
        assert_eq!(blocks.len(), 503, "memory lost to the limit");
        free(blocks);
        eprintln!("child done: {n} blocks beside 32 MiB");
        return;
    }
    let (status, err) = common::run_child(
        "heap_limit_counts_what_is_committed_now",
        &[("CPUSLAB_HEAP_LIMIT", "64M"), ("RUST_BACKTRACE", "0")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("child done"), "{err}");
}

#[test]
fn address_space_limit_gives_null_then_recovers() {
    if common::is_child() {
        if std::env::var_os("CPUSLAB_RLIMIT_CHILD").is_some() {
            // Room for what exists now plus one more arena, not two.
            limit_address_space(600 << 20);
            let n = exhaust_and_recover();
            eprintln!("blocks before mmap failed: {n}");
        }
        return;
    }
    let (status, err) = common::run_child(
        "address_space_limit_gives_null_then_recovers",
        &[("CPUSLAB_RLIMIT_CHILD", "1")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("blocks before mmap failed"), "{err}");
}

/// A new arena needs its own size of address space, not its size and 256 MiB more to
/// align it: under an address-space limit 400 MiB above the program's size,
/// allocating blocks of 1 MiB until null gets past 300 of them, in arenas of 8, 16,
/// 32, 64 and 128 MiB and part of a 256 MiB one. (While each arena mapped 256 MiB more
/// than its size to align itself, the sizes allow about 130; with one arena of 256 MiB
/// mapped as 512, it stopped at the first arena.)
#[test]
fn a_new_arena_fits_an_address_space_limit_of_its_size() {
    if common::is_child() {
        if std::env::var_os("CPUSLAB_RLIMIT_CHILD").is_some() {
            limit_address_space(400 << 20);
            let n = exhaust_and_recover();
            eprintln!("blocks before mmap failed: {n}");
            assert!(
                n > 300,
                "only {n} blocks of 1 MiB: arenas took more address space than their size"
            );
        }
        return;
    }
    let (status, err) = common::run_child(
        "a_new_arena_fits_an_address_space_limit_of_its_size",
        &[("CPUSLAB_RLIMIT_CHILD", "1"), ("RUST_BACKTRACE", "0")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("blocks before mmap failed"), "{err}");
}

/// The smallest arena (the descriptors of two blocks and one 4 MiB block, 4.1 MiB) is
/// mapped in two parts, never more at a time: with 6 MiB of address space left under
/// `RLIMIT_AS`, `arena::create` still gets one. It used to map the whole 8 MiB span
/// first and trim the descriptor block's unused tail after, so it failed there, and a
/// Rust program under `ulimit -v 65536` got 17-19 MiB of blocks before null where the
/// system allocator gave 26-29 (21-23 now).
#[test]
fn the_smallest_arena_needs_only_its_own_size() {
    if common::is_child() {
        if std::env::var_os("CPUSLAB_RLIMIT_CHILD").is_some() {
            let v: Vec<u8> = vec![1; 1000];
            assert_eq!(v.len(), 1000);
            limit_address_space(6 << 20);
            let arena = cpuslab::page::arena::create(0);
            eprintln!("arena created: {}", !arena.is_null());
        }
        return;
    }
    let (status, err) = common::run_child(
        "the_smallest_arena_needs_only_its_own_size",
        &[("CPUSLAB_RLIMIT_CHILD", "1"), ("RUST_BACKTRACE", "0")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("arena created: true"), "{err}");
}

/// Once the kernel refuses cpuslab an arena under an address-space limit, `CpuSlab`
/// hands out glibc's blocks, so `alloc` returns null only where glibc's `malloc` has
/// nothing left either; the blocks of both kinds then free, grow and zero as they
/// should (the sized frees leave every block to the paths that tell them apart).
/// Before, `alloc` returned null after 219,132 blocks with room left that glibc could
/// use (1000 more blocks and beyond), and a program that then needed one more block
/// aborted where the system allocator would not; now 820,293 blocks, glibc's thread
/// arenas holding reserved room cpuslab cannot use.
#[test]
fn rust_alloc_falls_back_to_glibc_under_an_address_space_limit() {
    if common::is_child() {
        if std::env::var_os("CPUSLAB_RLIMIT_CHILD").is_some() {
            let l = Layout::from_size_align(100, 8).unwrap();
            let mut blocks: Vec<*mut u8> = Vec::with_capacity(1 << 20);
            limit_address_space(24 << 20);
            loop {
                // SAFETY: a valid layout.
                let p = unsafe { CpuSlab.alloc(l) };
                if p.is_null() || blocks.len() == blocks.capacity() {
                    break;
                }
                // SAFETY: a fresh block of 100 bytes.
                unsafe { p.write_bytes(blocks.len() as u8, 100) };
                blocks.push(p);
            }
            // How many more blocks glibc's own malloc has: a few at most (glibc may
            // find one more after a failure, as its arenas retry), where before
            // cpuslab left it megabytes. Kept in a stack array, freed after.
            let mut more = [core::ptr::null_mut::<libc::c_void>(); 1000];
            let mut glibc_had = 0;
            for m in &mut more {
                // SAFETY: glibc's own malloc.
                *m = unsafe { libc::malloc(100) };
                if m.is_null() {
                    break;
                }
                glibc_had += 1;
            }
            for m in more {
                // SAFETY: null or glibc's live block.
                unsafe { libc::free(m) };
            }
            // Counted without allocating: nothing is left to allocate from.
            let foreign = blocks
                .iter()
                .filter(|&&p| !cpuslab::page::arena::contains(p))
                .count();
            // Every other block freed, then the foreign ones left grown (by glibc's
            // realloc) and checked.
            for i in (0..blocks.len()).step_by(2) {
                // SAFETY: a live block of this layout.
                unsafe { CpuSlab.dealloc(blocks[i], l) };
            }
            let grown: Vec<usize> = (1..blocks.len())
                .step_by(2)
                .filter(|&i| !cpuslab::page::arena::contains(blocks[i]))
                .take(1000)
                .collect();
            for &i in &grown {
                // SAFETY: a live block of this layout, replaced by the result.
                let q = unsafe { CpuSlab.realloc(blocks[i], l, 300) };
                assert!(!q.is_null());
                // SAFETY: the first 100 bytes moved with the block.
                assert!((0..100).all(|k| unsafe { *q.add(k) } == i as u8));
                // SAFETY: the grown block, its layout.
                unsafe { CpuSlab.dealloc(q, Layout::from_size_align(300, 8).unwrap()) };
                blocks[i] = core::ptr::null_mut();
            }
            for i in (1..blocks.len()).step_by(2) {
                if !blocks[i].is_null() {
                    // SAFETY: a live block of this layout.
                    unsafe { CpuSlab.dealloc(blocks[i], l) };
                }
            }
            for _ in 0..1000 {
                // SAFETY: a valid layout; the block is read and freed.
                unsafe {
                    let z = CpuSlab.alloc_zeroed(l);
                    assert!(!z.is_null() && (0..100).all(|k| *z.add(k) == 0));
                    CpuSlab.dealloc(z, l);
                }
            }
            eprintln!(
                "blocks {} foreign {} glibc-had {}",
                blocks.len(),
                foreign,
                glibc_had
            );
        }
        return;
    }
    let (status, err) = common::run_child(
        "rust_alloc_falls_back_to_glibc_under_an_address_space_limit",
        &[("CPUSLAB_RLIMIT_CHILD", "1"), ("RUST_BACKTRACE", "0")],
    );
    assert!(status.success(), "child failed: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("blocks "))
        .unwrap_or_else(|| panic!("{err}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let more: usize = f[5].parse().unwrap();
    assert!(
        more < 1000,
        "alloc gave null while glibc had memory: {line}"
    );
    assert!(
        f[3].parse::<usize>().unwrap() > 0,
        "glibc served nothing: {line}"
    );
}

#[test]
fn invalid_config_is_reported_not_fatal() {
    if common::is_child() {
        let v: Vec<u8> = vec![1; 1000];
        assert_eq!(v.len(), 1000);
        return;
    }
    let (status, err) = common::run_child(
        "invalid_config_is_reported_not_fatal",
        &[("CPUSLAB_DECAY_MS", "soon")],
    );
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("ignoring CPUSLAB_DECAY_MS=soon"), "{err}");
}

#[test]
fn invalid_free_aborts_with_a_message() {
    if common::is_child() {
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: deliberately wrong: a pointer into the middle of a block. The
        // allocator must abort with a message instead of corrupting its lists.
        unsafe {
            let p = CpuSlab.alloc(l);
            cpuslab::trim();
            CpuSlab.dealloc(p.add(8), l);
            // Push it out of the per-CPU cache, where it is checked.
            cpuslab::trim();
        }
        return;
    }
    let (status, err) = common::run_child("invalid_free_aborts_with_a_message", &[]);
    assert!(!status.success());
    assert!(err.contains("cpuslab: invalid free of"), "{err}");
}

/// `alloc_pages_exact` of no pages is null, not a page that also sits on a free list
/// (found by the `buddy` fuzz target).
#[test]
fn alloc_pages_exact_of_zero_pages_is_null() {
    drop(Box::new(0u8)); // boot
    assert!(cpuslab::page::alloc_pages_exact(0, 0).is_null());
    assert!(cpuslab::page::alloc_pages_exact(0, 3).is_null());
    let p = cpuslab::page::alloc_pages_exact(1, 0);
    assert!(!p.is_null());
    // SAFETY: allocated above, freed once.
    unsafe { cpuslab::page::free_pages_exact(p) };
}

/// Sets `resource` (`RLIMIT_AS` or `RLIMIT_DATA`) `room` bytes above what this process
/// holds now (its whole address space: more than the data limit counts).
fn limit_resource(resource: libc::__rlimit_resource_t, room: usize) {
    let vsz: usize = std::fs::read_to_string("/proc/self/statm")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 4096;
    let lim = libc::rlimit {
        rlim_cur: (vsz + room) as u64,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(resource, &lim) }, 0);
}

/// A huge block grown by `realloc` in steps of 1 MiB to well past half of the room an
/// address-space or data limit leaves, as under glibc, whose `mremap` grows its mapped
/// chunks: a block that fills its region alone is grown by `mremap` too, which needs
/// only the growth in room, not the old range and the new one at once. Before, the
/// growth stopped (null) at 428 MiB of the 600 under `RLIMIT_AS`.
#[test]
fn a_huge_block_grows_past_half_of_an_address_space_or_data_limit() {
    if common::is_child() {
        if let Some(which) = std::env::var_os("CPUSLAB_RLIMIT_CHILD") {
            let resource = if which == "data" {
                libc::RLIMIT_DATA
            } else {
                libc::RLIMIT_AS
            };
            const STEP: usize = 1 << 20;
            let mut size = 8 << 20;
            // SAFETY: valid layouts; the block is written within its size, resized and
            // freed with the layout it has.
            unsafe {
                let mut p = CpuSlab.alloc(Layout::from_size_align(size, 8).unwrap());
                assert!(!p.is_null());
                limit_resource(resource, 600 << 20);
                while size < 560 << 20 {
                    let q =
                        CpuSlab.realloc(p, Layout::from_size_align(size, 8).unwrap(), size + STEP);
                    if q.is_null() {
                        break;
                    }
                    p = q;
                    p.add(size).write(1);
                    size += STEP;
                }
                eprintln!("grew to {} MiB", size >> 20);
                CpuSlab.dealloc(p, Layout::from_size_align(size, 8).unwrap());
            }
        }
        return;
    }
    for which in ["as", "data"] {
        let (status, err) = common::run_child(
            "a_huge_block_grows_past_half_of_an_address_space_or_data_limit",
            &[("CPUSLAB_RLIMIT_CHILD", which), ("RUST_BACKTRACE", "0")],
        );
        assert!(status.success(), "{which}: child failed: {err}");
        assert!(err.contains("grew to 560 MiB"), "{which}: {err}");
    }
}
