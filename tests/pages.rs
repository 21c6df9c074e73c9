//! The per-CPU page lists (`page::pcp`) on whichever fast path boot chose (CI runs this
//! binary again with `CPUSLAB_RSEQ=0`): nothing lost or handed out twice under more
//! threads than CPUs while other threads drain the lists, the `high` watermark, hot
//! pages reused first, the cold end, and the `low` watermark (`CPUSLAB_PCP_LOW`, in a
//! child process).

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use common::Rng;
use cpuslab::page::{self, pcp, Page};

const FREED: u64 = 0xf4ee_f4ee_f4ee_f4ee;

/// The tag thread `t` writes in the first word of a page it holds: the page's address
/// mixed with `t`, so no stale data (another user's words at another address) passes
/// for a holder's tag.
fn holder_tag(addr: *mut u8, t: u64) -> u64 {
    (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (t + 1)
}

fn is_held_by_anyone(addr: *mut u8, word: u64, threads: u64) -> bool {
    (0..threads).any(|t| word == holder_tag(addr, t))
}

/// One test, so that nothing else in the process takes or gives pages while the
/// first part counts them.
#[test]
fn page_lists() {
    if common::is_child() {
        low_child();
        return;
    }
    pages_are_conserved_under_threads_and_drains();
    page_list_keeps_to_high_and_reuses_hot_pages();
    cold_pages_go_under_hot_ones();
    low_watermark_keeps_pages_ready();
}

/// Threads (four times the CPUs) take and give back order-0 pages at random (at the
/// lists' hot and cold ends), tagging
/// each page they hold and checking the tag before the free, while another thread
/// drains every CPU's list over and over. No page is ever found tagged by another
/// holder, and once everything is freed and drained the zones hold exactly the pages
/// they held before.
fn pages_are_conserved_under_threads_and_drains() {
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
                    let mut rng = Rng::new(0x9a9e_5eed ^ t);
                    let mut held: [*mut Page; 64] = [std::ptr::null_mut(); 64];
                    let mut n = 0;
                    start.wait();
                    for _ in 0..40_000 {
                        // One take and one free in four use the list's cold end.
                        let cold = rng.next().is_multiple_of(4);
                        if n < held.len() && (n == 0 || rng.next().is_multiple_of(2)) {
                            let p = if cold {
                                page::alloc_pages_cold(0)
                            } else {
                                page::alloc_pages(0)
                            };
                            assert!(!p.is_null(), "out of pages");
                            let addr = page::page_address(p);
                            // SAFETY: a page just allocated, ours alone.
                            let word = unsafe { addr.cast::<u64>().read() };
                            assert!(
                                !is_held_by_anyone(addr, word, nthreads),
                                "page {addr:p} handed out while held"
                            );
                            // SAFETY: as above.
                            unsafe { addr.cast::<u64>().write(holder_tag(addr, t)) };
                            held[n] = p;
                            n += 1;
                            handed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let i = rng.next() as usize % n;
                            let p = held[i];
                            held[i] = held[n - 1];
                            n -= 1;
                            let addr = page::page_address(p);
                            // SAFETY: a page this thread holds.
                            unsafe {
                                assert_eq!(
                                    addr.cast::<u64>().read(),
                                    holder_tag(addr, t),
                                    "page {addr:p} changed hands while held"
                                );
                                addr.cast::<u64>().write(FREED);
                                if cold {
                                    page::free_pages_cold(p, 0);
                                } else {
                                    page::free_pages(p, 0);
                                }
                            }
                        }
                    }
                    for &p in &held[..n] {
                        // SAFETY: pages this thread holds.
                        unsafe {
                            page::page_address(p).cast::<u64>().write(FREED);
                            page::free_pages(p, 0);
                        }
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
                for cpu in 0..pcp::nr_lists() {
                    pcp::drain_pages(cpu);
                }
                std::thread::yield_now();
            }
            end.wait();
        });
        // Everyone is spawned and parked: what is free now is the baseline.
        for cpu in 0..pcp::nr_lists() {
            pcp::drain_pages(cpu);
        }
        before = common::pages_accounted(true);
        start.wait();
        end.wait();
        after = common::pages_accounted(true);
        for cpu in 0..pcp::nr_lists() {
            pcp::drain_pages(cpu);
        }
        assert_eq!(
            (0..pcp::nr_lists()).map(pcp::count).sum::<usize>(),
            0,
            "a drained list still holds pages"
        );
    });
    assert!(handed.load(Ordering::Relaxed) >= nthreads * 20_000);
    assert_eq!(after, before, "pages lost or made up");
}

/// On one CPU, freeing more pages than `high` keeps the list at or below `high` (the
/// coldest `batch` go back to the zone), and a page freed is the next one taken (hot
/// first; retried, since another thread may share the CPU).
fn page_list_keeps_to_high_and_reuses_hot_pages() {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let Some(&cpu) = cpus.first() else {
        eprintln!("no CPU to pin to; skipped");
        return;
    };
    assert!(core_affinity::set_for_current(cpu));
    let list = pcp::pcp(cpu.id).expect("a list for every CPU");
    let (high, batch) = (list.high as usize, list.batch as usize);
    assert!(batch >= 1 && batch <= high);
    let pages: Vec<*mut Page> = (0..high * 3).map(|_| page::alloc_pages(0)).collect();
    assert!(pages.iter().all(|p| !p.is_null()));
    let mut most = 0;
    for &p in &pages {
        // SAFETY: allocated above, freed once.
        unsafe { page::free_pages(p, 0) };
        most = most.max(pcp::count_of(list));
    }
    assert!(most <= high, "list grew to {most} pages, past high {high}");
    assert!(
        pcp::count_of(list) + batch >= high,
        "list at {} after {} frees (high {high}, batch {batch})",
        pcp::count_of(list),
        pages.len()
    );
    let hot = (0..10).any(|_| {
        let p = page::alloc_pages(0);
        // SAFETY: allocated just now, freed once.
        unsafe { page::free_pages(p, 0) };
        let q = page::alloc_pages(0);
        // SAFETY: allocated just now, freed once.
        unsafe { page::free_pages(q, 0) };
        q == p
    });
    assert!(hot, "a page just freed is not the next one taken");
}

/// On one CPU: a cold free goes under the hot pages, so the hot take after it gets the
/// page freed hot and the cold take gets the cold one; a cold take gets the page at
/// the bottom, the one freed first. Retried, since another thread may share the CPU.
fn cold_pages_go_under_hot_ones() {
    let Some(cpu) = common::pin() else {
        eprintln!("no CPU to pin to; skipped");
        return;
    };
    let ok = (0..10).any(|_| {
        let [a, b, c, d] = [0; 4].map(|_| page::alloc_pages(0));
        assert!([a, b, c, d].iter().all(|p| !p.is_null()));
        // The takes refilled the list: empty it, so the four are all it holds.
        pcp::drain_pages(cpu);
        // SAFETY: pages allocated above, each freed once, here or below.
        unsafe {
            page::free_pages(a, 0);
            page::free_pages_cold(b, 0);
            page::free_pages(c, 0);
            page::free_pages_cold(d, 0);
        }
        // The list, bottom to top: d, b, a, c.
        let list = pcp::pcp(cpu).expect("a list for every CPU");
        let four = pcp::count_of(list) == 4;
        let got = [
            page::alloc_pages(0),
            page::alloc_pages_cold(0),
            page::alloc_pages(0),
            page::alloc_pages_cold(0),
        ];
        for &p in &got {
            // SAFETY: allocated just now, freed once.
            unsafe { page::free_pages(p, 0) };
        }
        four && got == [c, d, a, b]
    });
    assert!(
        ok,
        "cold frees did not go under hot ones, or cold takes not from the bottom"
    );
}

/// The child's `CPUSLAB_PCP_LOW` (its `CPUSLAB_PCP_BATCH` is 16 and `HIGH` 96).
const LOW: usize = 40;

/// With `CPUSLAB_PCP_LOW` set, every take (hot or cold) leaves more than `low` pages on
/// the CPU's list, topped up under the pages already there: the pages a free left are
/// still the next hot ones. Without it the takes would empty the list.
fn low_watermark_keeps_pages_ready() {
    // The child runs `page_lists`, which hands over to `low_child`. Nothing drains the
    // lists behind its back.
    let (status, stderr) = common::run_child(
        "page_lists",
        &[
            ("CPUSLAB_PCP_LOW", &LOW.to_string()),
            ("CPUSLAB_PCP_BATCH", "16"),
            ("CPUSLAB_PCP_HIGH", "96"),
            ("CPUSLAB_BACKGROUND", "0"),
        ],
    );
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("pcp low child: ok"), "{stderr}");
}

fn low_child() {
    let Some(cpu) = common::pin() else {
        eprintln!("pcp low child: ok (no CPU to pin to; skipped)");
        return;
    };
    let list = pcp::pcp(cpu).expect("a list for every CPU");
    assert_eq!(list.low as usize, LOW);
    pcp::drain_pages(cpu);
    // A page freed hot on a list that is then topped up stays the next hot page.
    let hot = page::alloc_pages(0);
    assert!(
        pcp::count_of(list) > LOW,
        "the first take left {}",
        pcp::count_of(list)
    );
    // SAFETY: allocated above, freed once.
    unsafe { page::free_pages(hot, 0) };
    let mut held = Vec::new();
    let mut reused = false;
    for i in 0..200 {
        let p = if i % 3 == 2 {
            page::alloc_pages_cold(0)
        } else {
            page::alloc_pages(0)
        };
        assert!(!p.is_null());
        reused |= i == 0 && p == hot;
        held.push(p);
        let n = pcp::count_of(list);
        assert!(n > LOW, "take {i} left {n} pages, low is {LOW}");
        assert!(n <= list.high as usize);
    }
    assert!(reused, "the page freed hot was not the next hot take");
    for p in held {
        // SAFETY: pages allocated above, freed once.
        unsafe { page::free_pages(p, 0) };
    }
    eprintln!("pcp low child: ok");
}
