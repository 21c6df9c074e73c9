//! A burst of small objects past the 2048 entries a CPU's array cache once grew to at
//! most stays on the CPU. One test in its own binary, as `flush_grown`: its growth
//! charges its CPU's budget, which the other slab tests' pinned threads, charging the
//! same CPU's, left too small when it ran beside them (its first round flushed 480).

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use cpuslab::{KmemCache, SlabFlags};

/// Bursts of more objects than the 2048 entries a cache once grew to at most (3000
/// of 64 B, which the CPU's growth budget pays for) stay on the CPU as well: the cache
/// grows to hold them (up to 4096 entries, the largest percpu area), and no round
/// leaves an object at the node. With 2048 every round passed the excess through it.
#[test]
fn a_burst_past_2048_objects_stays_on_the_cpu() {
    let _pinned = common::pin();
    let cache = KmemCache::<[u8; 64]>::new("burst-64", SlabFlags::NONE).unwrap();
    let (.., shared) = common::slab_row("burst-64");
    if shared == 0 {
        eprintln!("one CPU: no shared cache to watch; skipped");
        return;
    }
    common::bursts_stay_on_the_cpu(&cache, "burst-64", 3000);
    cache.shrink();
    cache.destroy().map_err(|(_, e)| e).unwrap();
}
