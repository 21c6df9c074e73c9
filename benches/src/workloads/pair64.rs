//! `pair64`: the single-thread alloc+free pair of a 64 B block.

use super::{Ledger, Outcome, Params};
use crate::Block;
use core::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

/// Pairs at scale 1 (about 1 s with glibc, pattern check included).
const BASE: u64 = 40_000_000;

/// Allocates a 64 B block, fills and checks it, frees it; `N` times.
pub fn pair64<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let n = p.count(BASE);
    let mut ledger = Ledger::default();
    let mut tag = 0x5EED_0064_u64;
    for _ in 0..n {
        tag = tag.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let b = Block::alloc(a, 64, 8, tag);
        ledger.on_alloc(&b);
        // SAFETY: allocated from `a` just above.
        ledger.on_free(unsafe { b.free(a) });
    }
    ledger.finish("pair64")
}

/// The bare pair with nothing else in the loop: `n` times alloc(64) + one
/// byte written + free. Used by `callgrind.sh` to count instructions per
/// pair; returns the number of pairs for the caller to print.
pub fn bare_pairs<A: GlobalAlloc>(a: &A, n: u64) -> u64 {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    for i in 0..n {
        // SAFETY: non-zero size; the block is freed with its own layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "allocation failed");
            p.write(i as u8);
            a.dealloc(black_box(p), layout);
        }
    }
    n
}

/// [`bare_pairs`] on the static of allocator `kind` (not through the
/// dispatcher, so no dispatch branch is counted).
pub fn bare_pairs_on(kind: crate::AllocKind, n: u64) -> u64 {
    use crate::AllocKind;
    match kind {
        AllocKind::Cpuslab => bare_pairs(&cpuslab::CpuSlab, n),
        AllocKind::System => bare_pairs(&std::alloc::System, n),
        #[cfg(feature = "competitors")]
        AllocKind::Mimalloc => bare_pairs(&mimalloc::MiMalloc, n),
        #[cfg(feature = "competitors")]
        AllocKind::Jemalloc => bare_pairs(&tikv_jemallocator::Jemalloc, n),
    }
}
