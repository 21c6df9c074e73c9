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

/// A program whose footprint grows past free memory that cannot serve it: 32 large
/// blocks freed out of 64 (every other one, so none merge) leave 8 MiB dirty and free,
/// then, once they sat free for a while, 16 blocks of 1 MiB, four times as large, must
/// take clean memory. Those dirty pages would stay resident for the whole decay time
/// (here ten minutes) and add to the peak; instead the zone purges them down to what
/// it keeps under pressure (the 4 MiB it retains, more than an eighth of the ~24 MiB
/// in use). Blocks freed within the last few milliseconds would be spared
/// (`a_churn_of_large_blocks_reuses_what_it_frees`).
#[test]
fn growing_past_dirty_free_memory_purges_it() {
    use std::alloc::{alloc, dealloc, Layout};
    if !common::is_child() {
        let (status, stderr) = common::run_child(
            "growing_past_dirty_free_memory_purges_it",
            &[("CPUSLAB_DECAY_MS", "600000"), ("CPUSLAB_BACKGROUND", "0")],
        );
        assert!(status.success(), "{stderr}");
        return;
    }
    const MIB: usize = 1 << 20;
    let touch = |p: *mut u8, n: usize| {
        assert!(!p.is_null());
        // SAFETY: a live block of n bytes.
        unsafe { p.write_bytes(0x5a, n) };
    };
    let small = Layout::from_size_align(65 * 4096, 8).unwrap();
    let big = Layout::from_size_align(257 * 4096, 8).unwrap();
    cpuslab::trim();
    // SAFETY (all blocks below): allocated with the layout they are freed with, once.
    let first: Vec<*mut u8> = (0..64).map(|_| unsafe { alloc(small) }).collect();
    for &p in &first {
        touch(p, small.size());
    }
    for &p in first.iter().step_by(2) {
        unsafe { dealloc(p, small) };
    }
    let m = cpuslab::stats::memory();
    let (dirty_before, purged_before) = (m.dirty_free_bytes, m.purged_bytes);
    assert!(dirty_before >= 8 * MIB, "{} dirty bytes", dirty_before);
    // Past the age a purge under pressure spares (5 ms).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second: Vec<*mut u8> = (0..16).map(|_| unsafe { alloc(big) }).collect();
    for &p in &second {
        touch(p, big.size());
    }
    let m = cpuslab::stats::memory();
    let purged = (m.purged_bytes - purged_before) as usize;
    assert!(
        m.dirty_free_bytes <= 4 * MIB + MIB / 2 && purged >= 3 * MIB,
        "dirty free {} -> {} bytes, {purged} purged",
        dirty_before,
        m.dirty_free_bytes
    );
    for &p in first.iter().skip(1).step_by(2) {
        unsafe { dealloc(p, small) };
    }
    for &p in &second {
        unsafe { dealloc(p, big) };
    }
}

/// A program that keeps 8 large blocks of varying sizes (64-256 KiB, page counts of no
/// power of two), replacing one at random and writing the new one whole: some sizes
/// fit no run that frees left, so allocations take clean memory, and each of those
/// purged under pressure the blocks just freed, which the next allocations faulted in
/// again (64,808 page faults in this test's 20,000 replacements). Blocks freed within
/// the last few milliseconds are now spared, so the churn keeps its working set:
/// fewer faults than replacements (a bound loose enough for a child descheduled past
/// the spared age a few times), and the resident set within a few MiB of the 1-2 MiB
/// in use.
#[test]
fn a_churn_of_large_blocks_reuses_what_it_frees() {
    use std::alloc::{alloc, dealloc, Layout};
    if !common::is_child() {
        let (status, stderr) = common::run_child(
            "a_churn_of_large_blocks_reuses_what_it_frees",
            &[("CPUSLAB_BACKGROUND", "0")],
        );
        assert!(status.success(), "{stderr}");
        return;
    }
    const REPLACEMENTS: u64 = 20_000;
    let faults = || {
        // SAFETY: getrusage writes the struct it is given.
        let mut u: libc::rusage = unsafe { core::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
        u.ru_minflt as u64
    };
    let mut rng = common::Rng::new(0x1a56e);
    let mut layout = || {
        // 16 to 64 pages, never a power of two: the first-fit path.
        let mut pages = 16 + rng.below(49) as usize;
        if pages.is_power_of_two() {
            pages += 1;
        }
        Layout::from_size_align(pages * 4096 - 100, 8).unwrap()
    };
    cpuslab::trim();
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    let mut slots = common::Rng::new(8);
    let rss_before = common::rss_bytes();
    let before = faults();
    for i in 0..REPLACEMENTS {
        let l = layout();
        // SAFETY: a fresh block of `l` (checked non-null), written whole; every block
        // is freed once with the layout it was allocated with.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        unsafe { p.write_bytes(i as u8, l.size()) };
        if live.len() < 8 {
            live.push((p, l));
        } else {
            let k = slots.below(8) as usize;
            let (old, ol) = std::mem::replace(&mut live[k], (p, l));
            unsafe { dealloc(old, ol) };
        }
    }
    let taken = faults() - before;
    let grown = common::rss_bytes().saturating_sub(rss_before);
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { dealloc(p, l) };
    }
    assert!(
        taken < REPLACEMENTS,
        "{taken} page faults in {REPLACEMENTS} replacements"
    );
    assert!(grown < 8 << 20, "resident set grew by {grown} bytes");
}
