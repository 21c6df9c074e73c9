//! Process-level behaviour: fork while other threads allocate, thousands of short-lived
//! threads, memory given back to the OS, and the reports.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cpuslab::CpuSlab;

#[test]
fn fork_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(t + 11);
                let mut v: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    v.push(vec![t as u8; rng.below(5000) as usize]);
                    if v.len() > 300 {
                        v.drain(..150);
                    }
                }
            })
        })
        .collect();
    for i in 0..100 {
        // SAFETY: the child only allocates, checks and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(|| {
                let v: Vec<String> = (0..2000).map(|j| format!("{i}-{j}")).collect();
                let big = vec![7u8; 3 << 20];
                v.iter().enumerate().all(|(j, s)| *s == format!("{i}-{j}"))
                    && big.iter().all(|&b| b == 7)
            });
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {i} failed: status {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn ten_thousand_short_threads_leave_nothing_behind() {
    let run = |n: usize| {
        for chunk in 0..n / 50 {
            let hs: Vec<_> = (0..50)
                .map(|t| {
                    std::thread::spawn(move || {
                        let v: Vec<u64> = (0..(t * 37 + chunk) as u64 % 2000).collect();
                        let s: String = v.iter().take(50).map(|x| x.to_string()).collect();
                        v.len() + s.len()
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
    };
    run(1000);
    let before = cpuslab::stats::memory().committed_bytes;
    run(10_000);
    let after = cpuslab::stats::memory().committed_bytes;
    assert!(
        after <= before + (32 << 20),
        "committed grew from {before} to {after}"
    );
}

#[test]
fn freed_memory_goes_back_to_the_os() {
    if !common::is_child() {
        let (status, err) = common::run_child("freed_memory_goes_back_to_the_os", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let l = Layout::from_size_align(256 << 10, 8).unwrap();
    let base = common::rss_bytes();
    // SAFETY: blocks written within their size and freed with their layout.
    let blocks: Vec<*mut u8> = (0..512)
        .map(|_| unsafe {
            let p = CpuSlab.alloc(l);
            p.write_bytes(3, l.size());
            p
        })
        .collect();
    let peak = common::rss_bytes();
    assert!(peak >= base + (100 << 20), "{base} -> {peak}");
    for p in blocks {
        // SAFETY: allocated above.
        unsafe { CpuSlab.dealloc(p, l) };
    }
    let purged = cpuslab::trim();
    let after = common::rss_bytes();
    assert!(purged >= 100 << 20, "purged only {purged}");
    assert!(after < base + (16 << 20), "rss {base} -> {peak} -> {after}");
    let m = cpuslab::stats::memory();
    assert_eq!(m.dirty_free_bytes, 0);
    assert!(m.purged_bytes >= 100 << 20);
}

#[test]
fn decay_purges_without_trim() {
    if !common::is_child() {
        let (status, err) = common::run_child(
            "decay_purges_without_trim",
            &[("CPUSLAB_DECAY_MS", "20"), ("CPUSLAB_RETAIN", "0")],
        );
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let l = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: as above.
    unsafe {
        let blocks: Vec<*mut u8> = (0..64).map(|_| CpuSlab.alloc(l)).collect();
        for &p in &blocks {
            p.write_bytes(1, l.size());
        }
        for p in blocks {
            CpuSlab.dealloc(p, l);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The next frees to the zone purge what aged past the decay time.
        for _ in 0..4 {
            let p = CpuSlab.alloc(l);
            CpuSlab.dealloc(p, l);
        }
    }
    let m = cpuslab::stats::memory();
    assert!(m.purged_bytes >= 60 << 20, "{m:?}");
}

#[test]
fn reports_have_the_kernel_layout() {
    let v: Vec<Box<[u8; 64]>> = (0..1000).map(|_| Box::new([0u8; 64])).collect();
    let info = cpuslab::stats::slabinfo();
    let mut lines = info.lines();
    assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
    assert!(lines
        .next()
        .unwrap()
        .starts_with("# name            <active_objs> <num_objs> <objsize>"));
    let k64: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("kmalloc-64 "))
        .unwrap()
        .split_whitespace()
        .collect();
    // name active num objsize objperslab pagesperslab : tunables limit batch shared : slabdata a n s
    assert_eq!(k64.len(), 16, "{k64:?}");
    assert!(k64[1].parse::<usize>().unwrap() >= 1000);
    assert_eq!(k64[3], "64");
    assert_eq!((k64[6], k64[7], k64[8]), (":", "tunables", "512"));
    assert!(info.contains("kmem_cache "));
    let buddy = cpuslab::stats::buddyinfo();
    let first = buddy.lines().next().unwrap();
    assert!(first.starts_with("Node 0, zone   Normal"), "{first}");
    assert_eq!(first.split_whitespace().count(), 4 + 11, "{first}");
    drop(v);
}

/// A thread that exits with objects cached on its CPU loses nothing: per-CPU caches
/// belong to the CPU, not the thread, so the objects it freed are handed out again
/// (and a shrink accounts for every one).
#[test]
fn thread_exit_with_cached_objects_loses_nothing() {
    let cache =
        cpuslab::KmemCache::<[u64; 6]>::new("test_exit_cached", cpuslab::SlabFlags::NONE).unwrap();
    let cache = std::sync::Arc::new(cache);
    let freed: Vec<usize> = {
        let c = cache.clone();
        std::thread::spawn(move || {
            let objs: Vec<_> = (0..100).map(|_| c.alloc().unwrap()).collect();
            let addrs = objs.iter().map(|p| p.as_ptr() as usize).collect();
            for o in objs {
                // SAFETY: allocated above, freed once.
                unsafe { c.free(o) };
            }
            addrs
        })
        .join()
        .unwrap()
    };
    // The objects sit in array caches (the CPU's, or the node's shared one) or slabs.
    assert!(cache.active_objects() >= freed.len());
    cache.shrink();
    assert_eq!(cache.active_objects(), 0, "objects lost with the thread");
    let again: std::collections::HashSet<usize> = (0..100)
        .map(|_| cache.alloc().unwrap().as_ptr() as usize)
        .collect();
    assert_eq!(again.len(), 100);
    for &p in &again {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(std::ptr::NonNull::new(p as *mut [u64; 6]).unwrap()) };
    }
    match std::sync::Arc::try_unwrap(cache) {
        Ok(c) => c.destroy().map_err(|(_, e)| e).unwrap(),
        Err(_) => panic!("cache still shared"),
    }
}
