//! The per-CPU page lists of higher orders (`page::pcp`, orders 1 to 6), which cache
//! large blocks whose page count is a power of two: a block freed on a CPU is the next
//! one that CPU gets, a list keeps to `high`, drains and `trim()` empty the lists, and
//! under threads with drains racing them no block is handed out twice or lost. CI runs
//! this binary again with `CPUSLAB_RSEQ=0` for the tried-lock path.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use common::Rng;
use cpuslab::page::pcp;
use cpuslab::CpuSlab;

const PAGE: usize = 4096;

/// One test, so that nothing else in the process takes or gives large blocks while
/// the parts count them.
#[test]
fn large_page_lists() {
    // On a thread of its own, pinned, so the threads spawned later are not.
    std::thread::spawn(|| {
        let Some(cpu) = common::pin() else {
            eprintln!("no CPU to pin to; skipped");
            return;
        };
        lists_are_prepared_by_the_cpus_first_free(cpu);
        large_pair_reuses_the_cpus_block(cpu);
        other_page_counts_are_not_cached(cpu);
        odd_page_counts_are_packed_end_to_end(cpu);
        large_list_keeps_to_high_and_drains(cpu);
    })
    .join()
    .expect("a pinned part failed");
    large_blocks_are_conserved_under_threads_and_drains();
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Blocks on every CPU's higher-order lists.
fn large_cached() -> usize {
    (0..pcp::nr_lists())
        .flat_map(|cpu| {
            (pcp::LARGE_PCP_MIN_ORDER..=pcp::LARGE_PCP_MAX_ORDER)
                .filter_map(move |o| pcp::pcp_order(cpu, o))
        })
        .map(pcp::count_of)
        .sum()
}

fn drain_all() {
    for cpu in 0..pcp::nr_lists() {
        pcp::drain_pages(cpu);
    }
}

/// A CPU's lists exist once a thread worked there: the first block freed on the CPU
/// prepares them, every order's (a CPU no thread ran on has none, and no page for
/// them).
fn lists_are_prepared_by_the_cpus_first_free(cpu: usize) {
    let l = layout(64 << 10);
    // SAFETY: a valid layout; the block is freed once.
    unsafe {
        let p = CpuSlab.alloc(l);
        assert!(!p.is_null());
        CpuSlab.dealloc(p, l);
    }
    for order in pcp::LARGE_PCP_MIN_ORDER..=pcp::LARGE_PCP_MAX_ORDER {
        assert!(
            pcp::pcp_order(cpu, order).is_some(),
            "no list of order {order}"
        );
    }
    assert!(pcp::pcp(cpu).is_some(), "no list of order 0");
}

/// A 64, 128 and 256 KiB block freed through `GlobalAlloc` goes on the CPU's list of
/// its order, and the next allocation of that size on the CPU is the same block
/// (retried, since another thread may share the CPU).
fn large_pair_reuses_the_cpus_block(cpu: usize) {
    for (size, order) in [(64 << 10, 4), (128 << 10, 5), (256 << 10, 6)] {
        let list = pcp::pcp_order(cpu, order).expect("a list of each cached order");
        let l = layout(size);
        let reused = (0..10).any(|_| {
            // SAFETY: a valid layout; each block is written within its size and freed
            // once.
            unsafe {
                let p = CpuSlab.alloc(l);
                assert!(!p.is_null());
                p.write_bytes(0x5A, size);
                let before = pcp::count_of(list);
                CpuSlab.dealloc(p, l);
                let cached = pcp::count_of(list) == before + 1;
                let q = CpuSlab.alloc(l);
                assert!(!q.is_null());
                q.write_bytes(0xA5, size);
                CpuSlab.dealloc(q, l);
                cached && q == p
            }
        });
        assert!(
            reused,
            "a {size}-byte block freed is not the next one taken"
        );
    }
}

/// A block whose page count is not a power of two (36 KiB: 9 pages out of an order-4
/// block) goes back to the zone exactly, tail included, instead of onto a list.
fn other_page_counts_are_not_cached(cpu: usize) {
    let list = pcp::pcp_order(cpu, 4).expect("an order-4 list");
    let cached = pcp::count_of(list);
    let l = layout(36 << 10);
    // SAFETY: a valid layout; the block is written within its size and freed once.
    unsafe {
        let p = CpuSlab.alloc(l);
        assert!(!p.is_null());
        p.write_bytes(1, l.size());
        CpuSlab.dealloc(p, l);
    }
    assert_eq!(pcp::count_of(list), cached, "a 9-page block was cached");
}

/// Blocks whose page count is not a power of two are packed end to end (each starts
/// where the one before ended), not each given its own power-of-two block: a 25-page
/// block took 32 pages of address space, which `ulimit -v` counts. One of them shrunk
/// to 16 pages in place is no aligned 16-page buddy block, so its free goes to the zone
/// rather than onto the order-4 list. A packed block freed is reused by the next one.
fn odd_page_counts_are_packed_end_to_end(cpu: usize) {
    let l = layout(25 * PAGE);
    // SAFETY: a valid layout; every block is written within its size and freed once.
    let blocks: Vec<*mut u8> = (0..12)
        .map(|_| unsafe {
            let p = CpuSlab.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(7, l.size());
            p
        })
        .collect();
    let packed = blocks
        .windows(2)
        .filter(|w| w[1] as usize == w[0] as usize + 25 * PAGE)
        .count();
    // A max-order block (1024 pages) holds 40: one boundary at most may fall in 12.
    assert!(
        packed >= 10,
        "{packed} of 11 blocks start where the one before ended"
    );
    let list = pcp::pcp_order(cpu, 4).expect("an order-4 list");
    let mut freed = 0;
    for &p in &blocks {
        let index = p as usize / PAGE;
        let cached = pcp::count_of(list);
        // SAFETY: `p` is live with layout `l`; shrinking keeps its first 16 pages.
        unsafe {
            let q = CpuSlab.realloc(p, l, 16 * PAGE);
            assert_eq!(q, p, "a large block shrinks in place");
            CpuSlab.dealloc(q, layout(16 * PAGE));
        }
        if !index.is_multiple_of(16) {
            freed += 1;
            assert_eq!(
                pcp::count_of(list),
                cached,
                "a 16-page block at page {index} (not a multiple of 16) was cached"
            );
        }
    }
    assert!(freed > 0, "every block was aligned to 16 pages");
    // A packed block freed between two live ones is where the next one goes: its pages
    // form no aligned buddy block of their size, yet they are resident, and packing on
    // through fresh memory instead would leave them behind.
    // 200 pages (a 256-page buddy block): the earlier parts leave few dirty free blocks
    // that large, which would be taken first; each try keeps its blocks, using them up.
    const N: usize = 200;
    let l = layout(N * PAGE);
    let alloc = || {
        // SAFETY: a valid layout; the block is written within its size.
        unsafe {
            let p = CpuSlab.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(3, l.size());
            p
        }
    };
    let mut kept = Vec::new();
    let (mut cycles, mut tries) = (0, 0);
    while cycles == 0 && tries < 16 {
        tries += 1;
        let (a, d, e) = (alloc(), alloc(), alloc());
        kept.extend([a, e]);
        if d as usize != a as usize + N * PAGE || e as usize != d as usize + N * PAGE {
            kept.push(d);
            continue;
        }
        let mut d = d;
        for _ in 0..20 {
            // SAFETY: `d` is live with layout `l`.
            unsafe { CpuSlab.dealloc(d, l) };
            let again = alloc();
            assert_eq!(again, d, "a freed packed block was not reused");
            d = again;
            cycles += 1;
        }
        kept.push(d);
    }
    assert!(
        cycles > 0,
        "no three blocks were packed end to end in {tries} tries"
    );
    for p in kept {
        // SAFETY: each is live with layout `l`, freed once.
        unsafe { CpuSlab.dealloc(p, l) };
    }
}

/// On one CPU, freeing three times `high` 64 KiB blocks keeps the order-4 list between
/// `high - batch` and `high` blocks (at most `LARGE_PCP_BYTES`), counted in
/// `pcp_bytes`; `drain_pages` and `trim()` each empty every list.
fn large_list_keeps_to_high_and_drains(cpu: usize) {
    let list = pcp::pcp_order(cpu, 4).expect("an order-4 list");
    let (high, batch) = (list.high as usize, list.batch as usize);
    assert!(batch >= 1 && batch <= high);
    assert!(high << 4 << 12 <= pcp::LARGE_PCP_BYTES);
    let l = layout(64 << 10);
    let fill = || {
        // SAFETY: a valid layout; every block is freed once.
        let blocks: Vec<*mut u8> = (0..high * 3).map(|_| unsafe { CpuSlab.alloc(l) }).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let mut most = 0;
        for &p in &blocks {
            // SAFETY: allocated above, freed once.
            unsafe { CpuSlab.dealloc(p, l) };
            most = most.max(pcp::count_of(list));
        }
        assert!(most <= high, "list grew to {most} blocks, past high {high}");
        assert!(
            pcp::count_of(list) + batch >= high,
            "list at {} after {} frees (high {high}, batch {batch})",
            pcp::count_of(list),
            blocks.len()
        );
        assert!(cpuslab::stats::memory().pcp_bytes >= pcp::count_of(list) * (64 << 10));
    };
    fill();
    drain_all();
    assert_eq!(large_cached(), 0, "a drained list still holds blocks");
    assert_eq!(
        cpuslab::stats::memory().pcp_bytes,
        0,
        "pcp_bytes after a drain"
    );
    fill();
    cpuslab::trim();
    assert_eq!(large_cached(), 0, "trim() left blocks on a list");
    assert_eq!(
        cpuslab::stats::memory().pcp_bytes,
        0,
        "pcp_bytes after trim()"
    );
}

/// The tag thread `t` writes in the first word of every page of a block it holds:
/// the page's address mixed with `t`.
fn tag(addr: usize, t: u64) -> u64 {
    (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (t + 1)
}

/// Threads (four times the CPUs, unpinned) allocate and free large blocks of cached
/// and uncached sizes at random, tagging every page of a block they hold and checking
/// every tag before the free, while another thread drains every CPU's lists over and
/// over. No page is ever found tagged by another holder (nor a tag lost), and once all
/// is freed and drained every page is counted where it was before (free, cached, in a
/// slab, or taken).
fn large_blocks_are_conserved_under_threads_and_drains() {
    // Large blocks only (a slab size would leave slabs behind and spoil the count):
    // cached page counts and exact ones.
    const SIZES: [usize; 6] = [40 << 10, 64 << 10, 128 << 10, 256 << 10, 36 << 10, 100_000];
    let threads = (4 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(8);
    let nthreads = threads as u64;
    let start = Barrier::new(threads + 2);
    let end = Barrier::new(threads + 2);
    let done = AtomicU64::new(0);
    let handed = AtomicU64::new(0);
    let mut before = 0;
    let mut after = 0;
    std::thread::scope(|s| {
        for t in 0..nthreads {
            let (start, end, handed, done) = (&start, &end, &handed, &done);
            s.spawn(move || {
                // A failed check still reaches the end barrier, so the others finish.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut rng = Rng::new(0x1a59_e5ed ^ t);
                    let mut held = [(std::ptr::null_mut::<u8>(), 0usize); 8];
                    let mut n = 0;
                    start.wait();
                    for _ in 0..4_000 {
                        if n < held.len() && (n == 0 || rng.next().is_multiple_of(2)) {
                            let size = SIZES[rng.below(SIZES.len() as u64) as usize];
                            // SAFETY: a valid layout; the block is ours until freed.
                            let p = unsafe { CpuSlab.alloc(layout(size)) };
                            assert!(!p.is_null(), "out of memory");
                            for off in (0..size).step_by(PAGE) {
                                let w = p.wrapping_add(off).cast::<u64>();
                                // SAFETY: inside the block just allocated.
                                unsafe {
                                    let old = w.read();
                                    assert!(
                                        (0..nthreads).all(|o| old != tag(w as usize, o)),
                                        "page {w:p} handed out while held"
                                    );
                                    w.write(tag(w as usize, t));
                                }
                            }
                            held[n] = (p, size);
                            n += 1;
                            handed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let i = rng.below(n as u64) as usize;
                            let (p, size) = held[i];
                            held[i] = held[n - 1];
                            n -= 1;
                            free_checked(p, size, t);
                        }
                    }
                    for &(p, size) in &held[..n] {
                        free_checked(p, size, t);
                    }
                }));
                done.fetch_add(1, Ordering::Release);
                end.wait();
                if let Err(e) = r {
                    std::panic::resume_unwind(e);
                }
            });
        }
        let (start, end, done) = (&start, &end, &done);
        s.spawn(move || {
            start.wait();
            while done.load(Ordering::Acquire) < nthreads {
                drain_all();
                std::thread::yield_now();
            }
            end.wait();
        });
        // Everyone is spawned and parked. The zones grow first to twice what the run
        // can hold at once (every thread's blocks at 256 KiB, every CPU's lists full),
        // so that growth does not pass for pages made up; what is free then is the
        // baseline.
        let most = 2 * (threads * 8 + pcp::nr_lists() * 24);
        let l = layout(256 << 10);
        // SAFETY: a valid layout; each block is freed once.
        let warm: Vec<*mut u8> = (0..most).map(|_| unsafe { CpuSlab.alloc(l) }).collect();
        for p in warm {
            assert!(!p.is_null());
            // SAFETY: allocated above.
            unsafe { CpuSlab.dealloc(p, l) };
        }
        drain_all();
        // Large blocks left out: none is held when this counts, and one freed to a
        // CPU's list is counted there.
        before = common::pages_accounted(false);
        start.wait();
        end.wait();
        after = common::pages_accounted(false);
        drain_all();
        assert_eq!(large_cached(), 0, "a drained list still holds blocks");
    });
    assert!(handed.load(Ordering::Relaxed) >= nthreads * 1_000);
    assert_eq!(after, before, "pages lost or made up");
}

/// Checks that every page of thread `t`'s block still carries its tag, clears the
/// tags and frees the block.
fn free_checked(p: *mut u8, size: usize, t: u64) {
    for off in (0..size).step_by(PAGE) {
        let w = p.wrapping_add(off).cast::<u64>();
        // SAFETY: inside a block this thread holds.
        unsafe {
            assert_eq!(
                w.read(),
                tag(w as usize, t),
                "page {w:p} changed hands while held"
            );
            w.write(0);
        }
    }
    // SAFETY: allocated with this layout, freed once.
    unsafe { CpuSlab.dealloc(p, layout(size)) };
}
