//! The page allocator against a model: `alloc_pages` / `free_pages` and
//! `alloc_pages_exact` / `free_pages_exact` with arbitrary orders and page counts.
//!
//! Checked: orders past `MAX_ORDER` get null; every block is aligned to its order (an
//! exact block to `min_order`), distinct from every other live block, reads as zero
//! when its head says `PG_ZERO`, and keeps its contents; the pages the pool holds out
//! (`committed - dirty free - per-CPU cached`) move exactly with the model; after freeing
//! everything and draining the per-CPU page lists the buddy free lists are what they
//! were before (plus whole max-order blocks the zone grew by).

#![no_main]

use arbitrary::Arbitrary;
use cpuslab::page::desc::PG_ZERO;
use cpuslab::page::{
    alloc_pages, alloc_pages_exact, free_pages, free_pages_exact, page_address, pcp, zone, Page,
    MAX_ORDER,
};
use cpuslab::topology::nr_node_ids;
use cpuslab_fuzz::{boot, check, check_zero, fill, Ranges};
use libfuzzer_sys::fuzz_target;

const PAGE: usize = 4096;
/// Pages live at most (16 MiB); an op that would pass it is skipped.
const MAX_LIVE_PAGES: usize = 4096;

#[derive(Arbitrary, Debug)]
enum Op {
    /// `alloc_pages(order % (MAX_ORDER + 3))`: past `MAX_ORDER` must fail.
    Alloc {
        order: u8,
    },
    /// `alloc_pages_exact(npages, min_order)`, npages 0 to 1100 (past 1024 must fail;
    /// 0 may fail, or give a block of its own of 0 or 1 page).
    AllocExact {
        npages: u16,
        min_order: u8,
    },
    Free {
        slot: u8,
    },
    CheckAll,
}

#[derive(Clone, Copy)]
enum Kind {
    Order(usize),
    Exact,
}

struct Block {
    page: *mut Page,
    kind: Kind,
    pages: usize,
    id: u64,
}

fn seed(id: u64) -> u64 {
    id.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 0x3C3C
}

/// Pages the pool has handed out: committed (handed out or dirty free), not dirty
/// free, not cached on a per-CPU list.
fn held_pages() -> isize {
    let m = cpuslab::stats::memory();
    (m.committed_bytes as isize - m.dirty_free_bytes as isize - m.pcp_bytes as isize)
        / PAGE as isize
}

/// Empties every per-CPU page list and returns each node's free block counts by order
/// and managed pages.
fn free_lists() -> Vec<([usize; MAX_ORDER + 1], usize)> {
    (0..pcp::nr_lists()).for_each(pcp::drain_pages);
    (0..nr_node_ids())
        .map(|n| {
            let z = zone(n).lock();
            (z.nr_free(), z.managed_pages)
        })
        .collect()
}

fn check_block(b: &Block, what: &str) {
    // SAFETY: a live block of `pages` pages.
    unsafe { check(page_address(b.page), 0, b.pages * PAGE, seed(b.id), what) };
}

/// Checks and records a block just allocated.
fn admit(
    page: *mut Page,
    kind: Kind,
    pages: usize,
    align_pages: usize,
    id: u64,
    ranges: &mut Ranges,
    what: &str,
) -> Block {
    let addr = page_address(page);
    assert_eq!(
        addr as usize % (align_pages * PAGE),
        0,
        "{what}: {addr:p} not aligned to {align_pages} pages"
    );
    ranges.insert(addr as usize, pages * PAGE, id, what);
    // SAFETY: a fresh block of `pages` pages; its head descriptor is ours.
    unsafe {
        if (*page).flags() & PG_ZERO != 0 {
            check_zero(addr, pages * PAGE, &format!("{what} (PG_ZERO)"));
        }
        fill(addr, 0, pages * PAGE, seed(id));
    }
    Block {
        page,
        kind,
        pages,
        id,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    boot();
    let lists_before = free_lists();
    let held_before = held_pages();
    let mut live: Vec<Block> = Vec::new();
    let mut ranges = Ranges::new();
    let mut live_pages = 0usize;
    let mut next_id = 0u64;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Alloc { order } => {
                let order = usize::from(order) % (MAX_ORDER + 3);
                let what = format!("alloc_pages({order})");
                if order > MAX_ORDER {
                    assert!(alloc_pages(order).is_null(), "{what} must fail");
                    continue;
                }
                if live_pages + (1 << order) > MAX_LIVE_PAGES {
                    continue;
                }
                let page = alloc_pages(order);
                assert!(!page.is_null(), "{what} returned null");
                let b = admit(
                    page,
                    Kind::Order(order),
                    1 << order,
                    1 << order,
                    next_id,
                    &mut ranges,
                    &what,
                );
                next_id += 1;
                live_pages += b.pages;
                live.push(b);
            }
            Op::AllocExact { npages, min_order } => {
                let npages = usize::from(npages) % 1101;
                let min_order = usize::from(min_order) % (MAX_ORDER + 3);
                let what = format!("alloc_pages_exact({npages}, {min_order})");
                let order = npages.max(1).next_power_of_two().trailing_zeros() as usize;
                if order.max(min_order) > MAX_ORDER {
                    assert!(
                        alloc_pages_exact(npages, min_order).is_null(),
                        "{what} must fail"
                    );
                    continue;
                }
                if live_pages + npages > MAX_LIVE_PAGES {
                    continue;
                }
                let page = alloc_pages_exact(npages, min_order);
                if page.is_null() && npages == 0 {
                    continue;
                }
                assert!(!page.is_null(), "{what} returned null");
                // The head's `info` is the page count; 0 pages may be served as 0 or 1.
                // SAFETY: the head descriptor of the block just allocated.
                let pages = unsafe { (*page).info } as usize;
                assert!(
                    pages == npages || (npages == 0 && pages == 1),
                    "{what}: head page records {pages} pages"
                );
                let b = admit(
                    page,
                    Kind::Exact,
                    pages,
                    1 << min_order,
                    next_id,
                    &mut ranges,
                    &what,
                );
                next_id += 1;
                live_pages += pages;
                live.push(b);
            }
            Op::Free { slot } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(usize::from(slot) % live.len());
                check_block(&b, "before free");
                // SAFETY: `b` is live, allocated as `kind` says, and not used again.
                unsafe {
                    match b.kind {
                        Kind::Order(order) => free_pages(b.page, order),
                        Kind::Exact => free_pages_exact(b.page),
                    }
                }
                ranges.remove(page_address(b.page) as usize);
                live_pages -= b.pages;
            }
            Op::CheckAll => live.iter().for_each(|b| check_block(b, "check")),
        }
        assert_eq!(
            held_pages() - held_before,
            live_pages as isize,
            "pages held out by the pool vs pages live in the model"
        );
    }
    for b in live.drain(..) {
        check_block(&b, "at the end");
        // SAFETY: as above.
        unsafe {
            match b.kind {
                Kind::Order(order) => free_pages(b.page, order),
                Kind::Exact => free_pages_exact(b.page),
            }
        }
    }
    assert_eq!(
        held_pages(),
        held_before,
        "pages held after freeing everything"
    );
    let lists_after = free_lists();
    for (node, ((before, managed_before), (after, managed_after))) in
        lists_before.iter().zip(&lists_after).enumerate()
    {
        let grown = (managed_after - managed_before) >> MAX_ORDER;
        let mut want = *before;
        want[MAX_ORDER] += grown;
        assert_eq!(
            *after, want,
            "node {node}: free lists after freeing everything (zone grew by {grown} blocks)"
        );
    }
});
