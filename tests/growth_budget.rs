//! The budget of array-cache growth: what one CPU's caches hold room for beyond their
//! tuned limits stays within `growth::cpu_budget()` however many classes cycle there,
//! all CPUs' within `growth::pool()`, and `shrink` pays it back. One test in its own binary, so that no other test's
//! caches charge the same CPU meanwhile.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::ptr::NonNull;

use cpuslab::slab::growth;
use cpuslab::{KmemCache, SlabFlags};

/// Objects of 8 KiB: tuned limit 8, batch 4, room to grow to 256 (2 MiB).
type Big = [u8; 8192];

/// Allocates `n` objects from each cache in turn, then frees them all, so that every
/// cache stays in use (the growth reap drains caches nobody allocated from).
fn alloc_then_free(caches: &[KmemCache<Big>], n: usize) {
    let objs: Vec<Vec<NonNull<Big>>> = (0..n)
        .map(|_| caches.iter().map(|c| c.alloc().unwrap()).collect())
        .collect();
    for row in objs {
        for (c, o) in caches.iter().zip(row) {
            // SAFETY: allocated above from this cache.
            unsafe { c.free(o) };
        }
    }
}

#[test]
fn growth_stays_within_the_cpu_budget_and_is_paid_back() {
    let cpu = common::pin().expect("no CPU to pin to");
    let budget = growth::cpu_budget();
    let nr = cpuslab::topology::nr_online_cpus();
    assert_eq!(budget, growth::cpu_budget_for(nr));
    let pool = growth::pool();
    assert_eq!(pool, growth::pool_for(nr));
    let caches: Vec<KmemCache<Big>> = (0..4)
        .map(|i| KmemCache::new(&format!("budget-{i}"), SlabFlags::NONE).unwrap())
        .collect();
    let before = growth::charged(cpu);
    // Each cache would grow by 248 entries of 8 KiB: 7.75 MiB for the four, more than
    // any CPU's budget.
    let wanted = 4 * 248 * 8192;
    for round in 0..4 {
        alloc_then_free(&caches, 256);
        let charged = growth::charged(cpu);
        assert!(
            charged <= budget,
            "round {round}: {charged} bytes of growth on CPU {cpu}, budget {budget}"
        );
        let total = growth::total_charged();
        assert!(
            charged <= total && total <= pool,
            "round {round}: {total} bytes of growth on all CPUs ({charged} on CPU {cpu}), pool {pool}"
        );
    }
    let charged = growth::charged(cpu);
    // The caches take what the budget has, to within a few batches (of 4 objects).
    assert!(
        charged + 256 * 1024 >= budget.min(before + wanted),
        "the caches grew by only {} of {budget} bytes",
        charged - before
    );
    for c in &caches {
        c.shrink();
    }
    let after = growth::charged(cpu);
    assert!(
        after <= before + 64 * 1024,
        "{after} bytes still charged after shrinking (before the rounds {before})"
    );
    assert!(
        growth::total_charged() >= after,
        "the pool lost count: {} given out, CPU {cpu} alone holds {after}",
        growth::total_charged()
    );
    for c in caches {
        c.destroy().map_err(|(_, e)| e).unwrap();
    }
}
