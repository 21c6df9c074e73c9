//! `realloc` of a large block (32 KiB to 4 MiB) grows it in place over the free pages
//! after it, as glibc and jemalloc do, instead of allocating anew and copying. In a
//! binary of its own: other tests' page counts would see its pages move.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

/// `realloc` of a large block grows it in place over the free pages after it, as
/// glibc and jemalloc do, instead of allocating anew and copying: a buffer grown by
/// half from 40 KB to 2 MiB keeps its address (every step did before the change: none),
/// and its contents.
#[test]
fn realloc_grows_a_large_block_in_place() {
    use std::alloc::{GlobalAlloc, Layout};
    let mut in_place = 0;
    let mut steps = 0;
    for round in 0..20u8 {
        let mut n = 40_000;
        // SAFETY: every pointer comes from the global allocator with these layouts.
        unsafe {
            let mut p = cpuslab::CpuSlab.alloc(Layout::from_size_align(n, 8).unwrap());
            assert!(!p.is_null());
            p.write_bytes(round, n);
            while n < 2 << 20 {
                let m = n + n / 2;
                let q = cpuslab::CpuSlab.realloc(p, Layout::from_size_align(n, 8).unwrap(), m);
                assert!(!q.is_null());
                steps += 1;
                if q == p {
                    in_place += 1;
                }
                assert!(std::slice::from_raw_parts(q, n).iter().all(|&b| b == round));
                q.add(n).write_bytes(round, m - n);
                p = q;
                n = m;
            }
            cpuslab::CpuSlab.dealloc(p, Layout::from_size_align(n, 8).unwrap());
        }
    }
    // Another thread (the test harness's) may take the pages after a block; most
    // steps still find them free.
    assert!(
        in_place * 2 > steps,
        "{in_place} of {steps} reallocs grew in place"
    );
}

/// C `realloc` of a huge block (above 4 MiB) to a large size shrinks it in place, as
/// glibc's `mremap` shrinks its mapped chunks, and growing it again stays in place
/// too: a buffer resized back and forth across the 4 MiB line keeps its address and
/// its contents (before, each step copied it into a block of the other kind). The C
/// functions are the crate's `capi` feature (on in the workspace's `cargo test`, for
/// the preload library).
#[cfg(feature = "capi")]
#[test]
fn c_realloc_keeps_a_huge_block_across_the_large_line() {
    let big = (4 << 20) + 4096;
    let small = (4 << 20) - 4096;
    // SAFETY: the C interface's blocks, each used only while live.
    unsafe {
        let p = cpuslab::capi::malloc(big).cast::<u8>();
        assert!(!p.is_null());
        p.write_bytes(0x5A, big);
        let mut q = p;
        for step in 0..6 {
            let size = if step % 2 == 0 { small } else { big };
            q = cpuslab::capi::realloc(q.cast(), size).cast();
            assert_eq!(q, p, "step {step}: realloc to {size} moved the block");
            assert!(cpuslab::capi::malloc_usable_size(q.cast()) >= size);
            assert!(std::slice::from_raw_parts(q, small)
                .iter()
                .all(|&b| b == 0x5A));
            q.add(small).write_bytes(0x5A, size - small);
        }
        // Small enough for a slab, it moves, contents and all.
        let r = cpuslab::capi::realloc(q.cast(), 1000).cast::<u8>();
        assert!(!r.is_null() && r != p);
        assert!(std::slice::from_raw_parts(r, 1000)
            .iter()
            .all(|&b| b == 0x5A));
        cpuslab::capi::free(r.cast());
    }
}

/// Rust's `realloc` of a huge block to a large size (`Vec::shrink_to_fit` of a buffer
/// of a few MiB) shrinks it in place too; `realloc` and `dealloc` with the large
/// layout then find it by its address.
#[test]
fn realloc_shrinks_a_huge_block_to_a_large_size_in_place() {
    use std::alloc::{GlobalAlloc, Layout};
    let layout = |n| Layout::from_size_align(n, 8).unwrap();
    let (big, small, smaller) = (9 << 20, 3 << 20, 2 << 20);
    // SAFETY: every pointer comes from the global allocator with these layouts.
    unsafe {
        let p = cpuslab::CpuSlab.alloc(layout(big));
        assert!(!p.is_null());
        p.write_bytes(0x3C, big);
        let q = cpuslab::CpuSlab.realloc(p, layout(big), small);
        assert_eq!(q, p, "the shrink to a large size moved the block");
        let r = cpuslab::CpuSlab.realloc(q, layout(small), smaller);
        assert_eq!(r, p, "the second shrink moved the block");
        assert!(std::slice::from_raw_parts(r, smaller)
            .iter()
            .all(|&b| b == 0x3C));
        let s = cpuslab::CpuSlab.realloc(r, layout(smaller), small);
        assert_eq!(s, p, "growing it back moved the block");
        assert!(std::slice::from_raw_parts(s, smaller)
            .iter()
            .all(|&b| b == 0x3C));
        cpuslab::CpuSlab.dealloc(s, layout(small));
        // Its room is free again: a block of the first size gets it back.
        let t = cpuslab::CpuSlab.alloc(layout(big));
        assert_eq!(t, p, "the freed block's room was not reused");
        cpuslab::CpuSlab.dealloc(t, layout(big));
    }
}
