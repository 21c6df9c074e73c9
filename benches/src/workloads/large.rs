//! `malloc-large`: after the description of mimalloc-bench's malloc-large:
//! a single thread keeps a few live blocks of 5 to 25 MiB and keeps
//! replacing them; every page of each block is written (see `block`), so the
//! cost of obtaining, faulting in and returning memory is what is measured.

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;

/// Replacements at scale 1.
const BASE: u64 = 400;
/// Live blocks.
const SLOTS: usize = 8;
const MIB: usize = 1 << 20;

/// Runs the benchmark; see the module docs.
pub fn malloc_large<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let n = p.count(BASE);
    let mut rng = Rng::new(0x1A26_E000);
    let mut ledger = Ledger::default();
    let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
    for _ in 0..n {
        let k = rng.below(SLOTS);
        if let Some(b) = slots[k].take() {
            // SAFETY: every block comes from `a`.
            ledger.on_free(unsafe { b.free(a) });
        }
        let size = rng.range(5 * MIB, 25 * MIB);
        let b = Block::alloc(a, size, 64, rng.next_u64());
        ledger.on_alloc(&b);
        slots[k] = Some(b);
    }
    for b in slots.into_iter().flatten() {
        // SAFETY: as above.
        ledger.on_free(unsafe { b.free(a) });
    }
    ledger.finish("malloc-large")
}
