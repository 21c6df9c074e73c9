//! Remote frees: objects allocated by a thread on the first node and freed by a thread
//! on the last node must go back to the first node's slab lists (the kernel's alien
//! caches), so that the last node's own allocations never get them back.
//!
//! Checked by what the freeing side allocates next from the same cache: every object
//! must be on its own node; the remote frees wait in the alien caches (12 per pair of
//! nodes) and go home in batches, and the cache is destroyed afterwards (every object
//! came back). Figures: the objects the freeing node's CPU array caches and shared
//! caches hold right after the frees.

use cpuslab::cpuset::CpusetFlags;
use cpuslab::page::{self, arena};
use cpuslab::slab::{self, reap};
use cpuslab::topology::CpuMask;
use cpuslab::{KmemCache, SlabFlags};

use crate::util::{
    confine, cpu_nodes, free_unsized, info, node_cpus, one_node, touch, verdict, NodeCounts,
};

const N: usize = 3000;
const CACHE: &str = "vm_alien";

type Obj = [u64; 16];

/// Objects held by the array caches of `cpus` (all caches), and by the shared caches
/// and the alien caches of every node of the test's cache.
fn cached(cpus: &CpuMask) -> (usize, usize, usize) {
    let per_cpu = cpus.iter().map(reap::cpu_cached_objects).sum();
    let (mut shared, mut alien) = (0, 0);
    slab::for_each_cache(|c| {
        if c.name() == CACHE {
            let counts = slab::cache_counts(c);
            (shared, alien) = (counts.shared_avail, counts.alien_avail);
        }
    });
    (per_cpu, shared, alien)
}

/// Zone node (cpuslab's page descriptor) and kernel node of an object.
fn nodes_of(obj: *mut Obj, zone: &mut NodeCounts, kernel: &mut NodeCounts) {
    let p = obj.cast::<u8>();
    zone.add(arena::contains(p).then(|| page::page_node(page::virt_to_head_page(p))));
    kernel.add_range(p, core::mem::size_of::<Obj>());
}

/// Node a allocates, node b frees, node b allocates again: none of node a's objects
/// may come back to node b.
/// The first and the last node with CPUs, or a failed verdict for `name` where there
/// are not two.
fn two_nodes(name: &str) -> Option<(usize, usize)> {
    let nodes = cpu_nodes();
    let (Some(&a), Some(&b)) = (nodes.first(), nodes.last()) else {
        verdict(name, false, format_args!("no node with CPUs"));
        return None;
    };
    if a == b {
        verdict(name, false, format_args!("needs 2 nodes with CPUs"));
        return None;
    }
    Some((a, b))
}

pub fn run() {
    let Some((a, b)) = two_nodes("alien") else {
        return;
    };
    let cache = KmemCache::<Obj>::new(CACHE, SlabFlags::NONE).expect("KmemCache::new");
    let (cpus_a, cpus_b) = (node_cpus(a), node_cpus(b));

    let r = std::thread::scope(|s| {
        // Node a allocates.
        let (ptrs, zone_a, kernel_a) = s
            .spawn(|| {
                confine("alien_a", &cpus_a, &one_node(a), CpusetFlags::NONE)?;
                let (mut zone, mut kernel) = (NodeCounts::default(), NodeCounts::default());
                let mut ptrs = Vec::with_capacity(N);
                for i in 0..N {
                    let o = cache.alloc_with([i as u64; 16]).ok_or("KmemCache::alloc")?;
                    // SAFETY: a fresh object of this cache.
                    unsafe { touch(o.as_ptr().cast(), core::mem::size_of::<Obj>()) };
                    nodes_of(o.as_ptr(), &mut zone, &mut kernel);
                    ptrs.push(o.as_ptr() as usize);
                }
                Ok::<_, String>((ptrs, zone, kernel))
            })
            .join()
            .map_err(|_| "node-a thread panicked".to_string())??;

        // Node b frees them, then allocates as many.
        let (cache, cpus_b) = (&cache, &cpus_b);
        s.spawn(move || {
            confine("alien_b", cpus_b, &one_node(b), CpusetFlags::NONE)?;
            let before = cached(cpus_b);
            for &p in &ptrs {
                // SAFETY: allocated by node a's thread from this cache, freed once.
                unsafe { cache.free(core::ptr::NonNull::new_unchecked(p as *mut Obj)) };
            }
            let after = cached(cpus_b);
            // The remote frees went home in batches: what still waits in the cache's
            // alien caches is less than one batch per pair of nodes.
            let in_flight = after.2;
            let (mut zone, mut kernel) = (NodeCounts::default(), NodeCounts::default());
            let mut again = Vec::with_capacity(N);
            for i in 0..N {
                let o = cache.alloc_with([i as u64; 16]).ok_or("KmemCache::alloc")?;
                nodes_of(o.as_ptr(), &mut zone, &mut kernel);
                again.push(o);
            }
            for o in again {
                // SAFETY: allocated just above, freed once.
                unsafe { cache.free(o) };
            }
            Ok::<_, String>((zone_a, kernel_a, before, after, zone, kernel, in_flight))
        })
        .join()
        .map_err(|_| "node-b thread panicked".to_string())?
    });

    match r {
        Ok((zone_a, kernel_a, before, after, zone_b, kernel_b, in_flight)) => {
            info(
                "alien",
                format_args!(
                    "node {a} allocated {N}: pages {kernel_a} (zones {zone_a}); after node {b} \
                     freed them, node {b}'s CPUs' array caches held {} more objects \
                     ({} -> {}), the cache's shared caches {}, its alien caches {}",
                    after.0.saturating_sub(before.0),
                    before.0,
                    after.0,
                    after.1,
                    in_flight
                ),
            );
            // At most 12 objects (ALIEN_LIMIT) per pair of nodes wait: node b's alien
            // cache for node a's objects, 3000 frees later.
            verdict(
                "alien.batched",
                in_flight <= 12,
                format_args!(
                    "after {N} remote frees {in_flight} objects wait in the cache's alien \
                     caches (at most 12: one batch)"
                ),
            );
            let home = kernel_a.on.get(a).copied().unwrap_or(0) == N;
            let foreign = zone_b.on.get(a).copied().unwrap_or(0);
            verdict(
                "alien",
                home && foreign == 0 && zone_b.within(&one_node(b)) == N,
                format_args!(
                    "node {b} freed {N} objects of node {a}, then allocated {N}: {foreign} of \
                     them came from node {a} (zones {zone_b}; pages {kernel_b}); expected 0 \
                     - remote frees must go back to node {a}'s lists (alien caches){}",
                    if foreign > 0 {
                        "; a remote free stayed on the freeing node"
                    } else {
                        ""
                    }
                ),
            );
        }
        Err(e) => verdict("alien", false, format_args!("{e}")),
    }
    if let Err((_, e)) = cache.destroy() {
        verdict("alien.destroy", false, format_args!("{e}"));
    }
}

/// Blocks of each kmalloc size [`fast`] allocates on the first node.
const FAST_N: usize = 400;
/// The sizes: a class with its page tag and no owner (64 B, inline fast paths) and one
/// above 1 KiB (the sized free's out-of-line `free_fast`).
const FAST_SIZES: [usize; 2] = [64, 2048];

/// The push fast paths on several nodes: a free of the CPU's own node's block goes onto
/// its array cache (C `free`'s inline path takes it), another node's is turned away
/// and goes home (neither the C nor the Rust fast path keeps it: the freeing node's
/// next allocations of the class are none of them).
pub fn fast() {
    use std::alloc::{GlobalAlloc, Layout};

    use cpuslab::slab::fastpath::{fast_path, FastPath};
    use cpuslab::CpuSlab;

    let Some((a, b)) = two_nodes("alien_fast") else {
        return;
    };
    if fast_path() != FastPath::Rseq {
        println!(
            "SKIP alien_fast: no restartable sequences ({})",
            fast_path()
        );
        return;
    }
    // One CPU of each node: a thread that moved between CPUs of its node would leave
    // a block wrongly kept on one CPU's cache out of the next allocations' reach.
    let first_cpu = |node: usize| {
        let mut m = CpuMask::new();
        if let Some(c) = node_cpus(node).iter().next() {
            m.set(c);
        }
        m
    };
    let (cpus_a, cpus_b) = (first_cpu(a), first_cpu(b));
    for size in FAST_SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let name = format!("alien_fast.{size}");
        let r = std::thread::scope(|s| {
            // Node a allocates, and frees a few of its own through C `free`'s fast path.
            let (ptrs, local_fast) = s
                .spawn(|| {
                    confine(
                        &format!("fast_a{size}"),
                        &cpus_a,
                        &one_node(a),
                        CpusetFlags::NONE,
                    )?;
                    // SAFETY: a valid layout; each block is freed once, here or by b.
                    let ptrs: Vec<usize> = (0..FAST_N)
                        .map(|_| unsafe { CpuSlab.alloc(layout) } as usize)
                        .collect();
                    if ptrs.contains(&0) {
                        return Err("out of memory".to_string());
                    }
                    let (own, rest) = ptrs.split_at(8);
                    // SAFETY: live blocks of cpuslab, each freed once.
                    let local_fast = own
                        .iter()
                        .filter(|&&p| unsafe { free_unsized(p as *mut u8) })
                        .count();
                    Ok::<_, String>((rest.to_vec(), local_fast))
                })
                .join()
                .map_err(|_| "node-a thread panicked".to_string())??;
            // Node b frees the rest, half without their size (C) and half with (Rust),
            // then allocates as many.
            let cpus_b = &cpus_b;
            s.spawn(move || {
                confine(
                    &format!("fast_b{size}"),
                    cpus_b,
                    &one_node(b),
                    CpusetFlags::NONE,
                )?;
                let (unsized_, sized) = ptrs.split_at(ptrs.len() / 2);
                // SAFETY: live blocks of cpuslab, each freed once.
                let kept = unsized_
                    .iter()
                    .filter(|&&p| unsafe { free_unsized(p as *mut u8) })
                    .count();
                for &p in sized {
                    // SAFETY: a live block of this layout, freed once.
                    unsafe { CpuSlab.dealloc(p as *mut u8, layout) };
                }
                // SAFETY: a valid layout; freed below.
                let again: Vec<usize> = (0..ptrs.len())
                    .map(|_| unsafe { CpuSlab.alloc(layout) } as usize)
                    .collect();
                let foreign = again
                    .iter()
                    .filter(|&&p| p != 0 && page::addr_node(p as *const u8) == a)
                    .count();
                for p in again.into_iter().filter(|&p| p != 0) {
                    // SAFETY: allocated just above, freed once.
                    unsafe { CpuSlab.dealloc(p as *mut u8, layout) };
                }
                Ok::<_, String>((local_fast, kept, foreign, ptrs.len()))
            })
            .join()
            .map_err(|_| "node-b thread panicked".to_string())?
        });
        match r {
            Ok((local_fast, kept, foreign, n)) => {
                // The first free may find the cache empty, which a push leaves to the
                // slow path for some classes; the other 7 go on.
                verdict(
                    &name,
                    local_fast >= 7,
                    format_args!(
                        "node {a}'s CPU freed {local_fast} of 8 of its own node's blocks on \
                         C free's fast path (at least 7)"
                    ),
                );
                verdict(
                    &name,
                    kept == 0 && foreign == 0,
                    format_args!(
                        "node {b}'s CPU kept {kept} of node {a}'s blocks on C free's fast \
                         path, and {foreign} of its next {n} allocations were node {a}'s \
                         (0 and 0: another node's block goes home)"
                    ),
                );
            }
            Err(e) => verdict(&name, false, format_args!("{e}")),
        }
    }
}
