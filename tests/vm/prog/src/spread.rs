//! Spreading: in a cpuset of every CPU and every memory node, `SPREAD_PAGE` rotates
//! page-pool refills (`page::alloc_pages`) and `SPREAD_SLAB` rotates slab growth over
//! the nodes. Tolerance: each of the k nodes holds an even share, N/k, within N/(5k)
//! (20 % of a share); the rotor is round-robin, so the counts should differ by one.

use std::collections::BTreeSet;

use cpuslab::cpuset::CpusetFlags;
use cpuslab::page;
use cpuslab::{KmemCache, SlabFlags};

use crate::util::{confine, info, memory_nodes, online_cpus, touch, verdict, NodeCounts, PAGE};

/// Whether `counts` spreads `n` items evenly over `nodes` within the tolerance.
fn even(counts: &NodeCounts, nodes: &[usize], n: usize) -> bool {
    let k = nodes.len();
    let (share, slack) = (n / k, n / (5 * k));
    counts.unknown == 0
        && counts.within(&memory_nodes()) == n
        && nodes
            .iter()
            .all(|&node| counts.on[node].abs_diff(share) <= slack)
}

/// Pages from `page::alloc_pages(0)` under `SPREAD_PAGE`.
pub fn page() {
    const N: usize = 512;
    let nodes: Vec<usize> = memory_nodes().iter().collect();
    let r = std::thread::spawn(|| {
        confine(
            "spread_page",
            &online_cpus(),
            &memory_nodes(),
            CpusetFlags::SPREAD_PAGE,
        )?;
        let mut counts = NodeCounts::default();
        let pages: Vec<_> = (0..N).map(|_| page::alloc_pages(0)).collect();
        for &p in &pages {
            if p.is_null() {
                counts.add(None);
                continue;
            }
            let addr = page::page_address(p);
            // SAFETY: a page just allocated for this thread alone.
            unsafe { touch(addr, PAGE) };
            counts.add_range(addr, PAGE);
        }
        for p in pages.into_iter().filter(|p| !p.is_null()) {
            // SAFETY: allocated above with order 0, freed once.
            unsafe { page::free_pages(p, 0) };
        }
        // Page-pool blocks of kmalloc (64 KiB Vecs) under the same flag, for the record.
        let mut large = NodeCounts::default();
        let mut blocks: Vec<Vec<u8>> = (0..32).map(|_| Vec::with_capacity(64 << 10)).collect();
        for b in &mut blocks {
            // SAFETY: the vector's capacity is writable memory it owns.
            unsafe { touch(b.as_mut_ptr(), b.capacity()) };
            large.add(crate::util::page_node(b.as_ptr()));
        }
        Ok::<_, String>((counts, large))
    })
    .join()
    .map_err(|_| "the test thread panicked".to_string())
    .and_then(|r| r);
    match r {
        Ok((counts, large)) => {
            verdict(
                "spread_page",
                even(&counts, &nodes, N),
                format_args!(
                    "{N} pages from page::alloc_pages(0) over nodes {nodes:?}: {counts} \
                     (tolerance: each node {} +- {})",
                    N / nodes.len(),
                    N / (5 * nodes.len())
                ),
            );
            info(
                "spread_page",
                format_args!(
                    "32 kmalloc blocks of 64 KiB under SPREAD_PAGE, first page of each: {large} \
                     (not asserted: kmalloc's page-pool path takes the CPU's node)"
                ),
            );
        }
        Err(e) => verdict("spread_page", false, format_args!("{e}")),
    }
}

/// Slabs of a fresh `KmemCache` grown under `SPREAD_SLAB`.
pub fn slab() {
    const SLABS: usize = 64;
    let nodes: Vec<usize> = memory_nodes().iter().collect();
    let r = std::thread::spawn(|| {
        confine(
            "spread_slab",
            &online_cpus(),
            &memory_nodes(),
            CpusetFlags::SPREAD_SLAB,
        )?;
        let cache =
            KmemCache::<[u64; 32]>::new("vm_spread", SlabFlags::NONE).map_err(|e| e.to_string())?;
        let n = cache.objects_per_slab() * SLABS;
        let objs: Vec<_> = (0..n)
            .map(|i| cache.alloc_with([i as u64; 32]).expect("KmemCache::alloc"))
            .collect();
        let heads: BTreeSet<usize> = objs
            .iter()
            .map(|o| page::virt_to_head_page(o.as_ptr().cast()) as usize)
            .collect();
        let mut counts = NodeCounts::default();
        for &h in &heads {
            counts.add_range(page::page_address(h as *const page::Page), PAGE);
        }
        for o in objs {
            // SAFETY: allocated above from this cache, freed once.
            unsafe { cache.free(o) };
        }
        Ok::<_, String>((heads.len(), counts))
    })
    .join()
    .map_err(|_| "the test thread panicked".to_string())
    .and_then(|r| r);
    match r {
        Ok((slabs, counts)) => verdict(
            "spread_slab",
            slabs >= SLABS && even(&counts, &nodes, slabs),
            format_args!(
                "{slabs} slabs grown for {SLABS} slabs' worth of objects over nodes {nodes:?}: \
                 {counts} (tolerance: each node {} +- {})",
                slabs / nodes.len(),
                slabs / (5 * nodes.len())
            ),
        ),
        Err(e) => verdict("spread_slab", false, format_args!("{e}")),
    }
}
