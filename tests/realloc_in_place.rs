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
