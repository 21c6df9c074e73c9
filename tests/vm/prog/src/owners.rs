//! Owner tags past 42 CPUs: the small classes' page tags name an owner CPU for CPUs 0
//! to 41 only (the values a tag byte has room for); a slab that a CPU from 42 on claims
//! keeps its class's own tag, whose entry sends the free without a size to the page
//! descriptor's owner byte. Both kinds must send another CPU's free of the owner's
//! objects to the owner (the fast path turns it away), and both must take the owner's
//! own free onto the right array cache: the owner's next allocations hand the same
//! objects out again.
//!
//! Needs an online CPU from 42 on and one below it on the same node (manycpu); SKIP
//! elsewhere.

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::kmalloc::{self, KMALLOC_SIZES};
use cpuslab::page::{arena, tag};
use cpuslab::CpuSlab;

use crate::util::{cpu_node, free_unsized, info, online_cpus, pin, verdict};

/// CPUs from this one on have no owner tag of their own (`kmalloc`'s 42).
const TAGGED_CPUS: usize = 42;
/// Blocks of the 16-byte class the owner takes: more than one refill.
const N: usize = 600;

fn layout() -> Layout {
    Layout::from_size_align(16, 8).unwrap()
}

/// The page tag of `p`, a block of an arena.
fn tag_of(p: *mut u8) -> u8 {
    let off = arena::offset_in(p).expect("an arena address");
    // SAFETY: `off` is `p`'s offset in its arena.
    unsafe { tag::tag_at(p, off) as u8 }
}

/// The owner byte of `p`'s page descriptor.
fn descriptor_owner(p: *mut u8) -> u8 {
    let page = cpuslab::page::virt_to_page(p);
    // SAFETY: the descriptor of an arena page, always mapped.
    unsafe { &(*page).owner }.load(std::sync::atomic::Ordering::Relaxed)
}

/// `owner` allocates, `other` frees half of it without the size and `owner` frees a
/// few of its own and takes them back. `tagged`: whether `owner` has tags of its own.
fn check(name: &str, owner: usize, other: usize, tagged: bool) {
    let class = KMALLOC_SIZES.iter().position(|&s| s >= 16).unwrap();
    if !pin(owner) {
        verdict(name, false, format_args!("cannot pin to CPU {owner}"));
        return;
    }
    // The CPU's next refills take objects from the slabs, which it claims.
    cpuslab::trim();
    // SAFETY: a valid layout; every block is freed below.
    let blocks: Vec<usize> = (0..N)
        .map(|_| unsafe { CpuSlab.alloc(layout()) } as usize)
        .collect();
    let mine = owner as u32 + 1;
    let mut named = 0;
    let mut class_ok = true;
    for &b in &blocks {
        let p = b as *mut u8;
        let t = tag_of(p);
        let entry = kmalloc::tag_entry(t);
        class_ok &= entry.cache_tag() == class + 1;
        let says = if tagged {
            entry.owner() == mine
        } else {
            // The class's own tag, which asks the descriptor.
            usize::from(t) == class + 1
                && entry.owner() == u32::MAX
                && u32::from(descriptor_owner(p)) == mine
        };
        named += usize::from(says);
    }
    verdict(
        name,
        class_ok && named * 10 >= N * 9,
        format_args!(
            "CPU {owner} ({}): {named} of {N} blocks' pages name it{}",
            if tagged {
                "its own tags"
            } else {
                "the class's tag and the descriptor"
            },
            if class_ok {
                ""
            } else {
                "; a tag of another class"
            }
        ),
    );
    // The other CPU's frees of the owner's blocks: the fast path turns them away.
    let (given, kept) = blocks.split_at(N / 2);
    let wrongly_taken = std::thread::scope(|s| {
        s.spawn(|| {
            if !pin(other) {
                return usize::MAX;
            }
            let mut taken = 0;
            for &b in given {
                let p = b as *mut u8;
                let owned = if tagged {
                    kmalloc::tag_entry(tag_of(p)).owner() == mine
                } else {
                    u32::from(descriptor_owner(p)) == mine
                };
                // SAFETY: a live block, freed once: by the fast path, or by the whole
                // path when the fast path turns it away.
                taken += usize::from(unsafe { free_unsized(p) } && owned);
            }
            taken
        })
        .join()
        .unwrap()
    });
    verdict(
        name,
        wrongly_taken == 0,
        format_args!("CPU {other} kept {wrongly_taken} of CPU {owner}'s blocks it freed"),
    );
    // The owner's own frees go onto its array cache of the class: its next
    // allocations are the same blocks, last freed first. The first may find the cache
    // empty, which the fast path leaves to the slow one for objects under a line
    // (`free_into_empty`: a batch goes on first, the block on top).
    let (back, rest) = kept.split_at(8);
    // SAFETY: live blocks, each freed once.
    let fast = back
        .iter()
        .filter(|&&b| unsafe { free_unsized(b as *mut u8) })
        .count();
    // Without restartable sequences every free takes the whole path.
    let rseq = cpuslab::slab::fastpath::fast_path() == cpuslab::slab::fastpath::FastPath::Rseq;
    let want_fast = if rseq { back.len() - 1 } else { 0 };
    // SAFETY: a valid layout; freed below.
    let again: Vec<usize> = (0..back.len())
        .map(|_| unsafe { CpuSlab.alloc(layout()) } as usize)
        .collect();
    let same = again.iter().filter(|a| back.contains(a)).count();
    verdict(
        name,
        fast >= want_fast && same == back.len(),
        format_args!(
            "CPU {owner} freed {fast} of its {} blocks on the fast path ({}, {} nodes) and \
             got {same} back",
            back.len(),
            cpuslab::slab::fastpath::fast_path(),
            cpuslab::topology::nr_node_ids()
        ),
    );
    for &b in again.iter().chain(rest) {
        // SAFETY: live blocks of the layout, freed once.
        unsafe { CpuSlab.dealloc(b as *mut u8, layout()) };
    }
    let waiting = cpuslab::stats::memory().breakdown.alien_bytes;
    info(name, format_args!("{waiting} bytes wait for their owners"));
}

pub fn run() {
    let online = online_cpus();
    let cpus: Vec<usize> = online.iter().collect();
    // A CPU without tags of its own, and two tagged ones on its node.
    let Some((hi, node)) = cpus
        .iter()
        .filter(|&&c| c >= TAGGED_CPUS)
        .find_map(|&c| Some((c, cpu_node(c)?)))
    else {
        println!("SKIP owner_tags: no online CPU from {TAGGED_CPUS} on");
        return;
    };
    let low: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|&c| c < TAGGED_CPUS && cpu_node(c) == Some(node))
        .take(2)
        .collect();
    let [lo, lo2] = low[..] else {
        println!("SKIP owner_tags: fewer than two tagged CPUs on node {node}");
        return;
    };
    check("owner_tags", lo, hi, true);
    check("owner_tags_past_42", hi, lo2, false);
}
