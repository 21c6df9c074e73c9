//! The portable path: built with `--cfg cpuslab_unsupported` (CI does, in a target
//! directory of its own), `sys` is the `unsupported` implementation that every
//! platform but Linux gets. Boot stops at once, `supported()` says so, and the global
//! allocator hands every request to `std::alloc::System`, which must serve a program
//! whole: every size and alignment, zeroed blocks, reallocation, blocks freed by
//! other threads. Without the cfg this file is empty.
#![cfg(cpuslab_unsupported)]

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::CpuSlab;

#[test]
fn supported_says_no() {
    assert!(!cpuslab::supported());
}

#[test]
fn every_size_and_alignment_is_served_whole() {
    let sizes = [
        1,
        7,
        8,
        16,
        24,
        100,
        1000,
        4096,
        5000,
        65536,
        1 << 20,
        5 << 20,
    ];
    for &size in &sizes {
        for align in [1, 8, 16, 64, 4096, 1 << 16] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; every block is written within its size and freed
            // with its layout.
            unsafe {
                let p = CpuSlab.alloc(l);
                assert!(!p.is_null(), "{size} B aligned to {align}");
                assert_eq!(p as usize % align, 0, "{size} B aligned to {align}");
                p.write_bytes(0xa5, size);
                let z = CpuSlab.alloc_zeroed(l);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                assert!(cpuslab::usable_size(p) >= size);
                CpuSlab.dealloc(z, l);
                let q = CpuSlab.realloc(p, l, size * 3);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                assert!(std::slice::from_raw_parts(q, size)
                    .iter()
                    .all(|&b| b == 0xa5));
                let r = CpuSlab.realloc(
                    q,
                    Layout::from_size_align(size * 3, align).unwrap(),
                    size.div_ceil(2),
                );
                assert!(std::slice::from_raw_parts(r, size.div_ceil(2))
                    .iter()
                    .all(|&b| b == 0xa5));
                CpuSlab.dealloc(r, Layout::from_size_align(size.div_ceil(2), align).unwrap());
            }
        }
    }
}

#[test]
fn collections_and_cross_thread_frees() {
    let blocks: Vec<Vec<u64>> = (0..10_000u64)
        .map(|i| vec![i; (i % 300) as usize + 1])
        .collect();
    let handle = std::thread::spawn(move || {
        // Freed on another thread than the one that allocated them.
        blocks
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u64))
    });
    assert!(handle.join().unwrap());
    let mut map = std::collections::HashMap::new();
    for i in 0..50_000u32 {
        map.insert(i.to_string(), i);
    }
    assert_eq!(map["4242"], 4242);
}

#[test]
fn the_kernel_style_interfaces_say_they_cannot_run() {
    let err = cpuslab::KmemCache::<u64>::new("portable", cpuslab::SlabFlags::NONE);
    assert_eq!(err.err(), Some(cpuslab::CacheError::Unsupported));
    // The statistics still answer (nothing is cpuslab's).
    let m = cpuslab::stats::memory();
    assert_eq!(m.huge_cached_bytes, 0);
}

/// No grace-period thread can be started here, so whoever waits drives the grace
/// periods and invokes the callbacks itself (`rcu::barrier` waited forever for a
/// thread that never came).
#[test]
fn rcu_runs_without_its_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Counted(u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let cell = cpuslab::rcu::RcuCell::new(Counted(0));
        for v in 1..=100 {
            cell.replace(Counted(v));
        }
        {
            let g = cpuslab::rcu::read_lock();
            assert_eq!(cell.read(&g).0, 100);
        }
        cpuslab::rcu::synchronize();
        cpuslab::rcu::barrier();
        tx.send(DROPPED.load(Ordering::Relaxed)).unwrap();
    });
    let dropped = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("rcu::barrier did not return: no grace period without the RCU thread");
    assert_eq!(
        dropped, 100,
        "replaced values not dropped after the barrier"
    );
}
