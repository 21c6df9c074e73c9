//! Purging statistics, in a binary of its own: the page-list test in `pages.rs`
//! counts every free page of its process and must not share it.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use cpuslab::page::{self, Page};

/// `stats::memory().purged_bytes` counts each purged page once: 200 scattered dirty
/// free pages (every other one of 400, so none merge) take several purge batches,
/// and the count grows by those pages, not by a running total added per batch.
#[test]
fn purged_bytes_count_each_page_once() {
    if !common::is_child() {
        let (status, stderr) = common::run_child("purged_bytes_count_each_page_once", &[]);
        assert!(status.success(), "{stderr}");
        return;
    }
    cpuslab::trim();
    let before = cpuslab::stats::memory().purged_bytes;
    let pages: Vec<*mut Page> = (0..400).map(|_| page::alloc_pages(0)).collect();
    for &p in &pages {
        assert!(!p.is_null());
        // SAFETY: a page this test holds.
        unsafe { page::page_address(p).write_bytes(0x5a, 4096) };
    }
    for &p in pages.iter().step_by(2) {
        // SAFETY: allocated above, freed once.
        unsafe { page::free_pages(p, 0) };
    }
    cpuslab::trim();
    let purged = (cpuslab::stats::memory().purged_bytes - before) / 4096;
    // The 200 pages, and a little the harness itself freed meanwhile.
    assert!(
        (200..=264).contains(&purged),
        "{purged} pages counted as purged"
    );
    for &p in pages.iter().skip(1).step_by(2) {
        // SAFETY: allocated above, freed once.
        unsafe { page::free_pages(p, 0) };
    }
}
