//! `alloc-test`: after the description of the node-dot-cpp alloc-test
//! benchmark: a large per-thread working set where each step frees the block
//! in a random slot (if any) and allocates a new one there, with
//! Pareto-distributed sizes (mostly tiny, heavy tail) capped at 1 KiB.

use super::{Ledger, Outcome, Params};
use crate::rng::SizeTable;
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;

/// Steps at scale 1, all threads together.
const BASE: u64 = 16_000_000;
/// Working-set slots per thread; starts empty, fills as it runs.
const SLOTS: usize = 1 << 15;
/// Pareto shape: P(size > x) = (8 / x)^ALPHA.
const ALPHA: f64 = 1.0;

/// Runs the benchmark; see the module docs.
pub fn alloc_test<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let steps = p.per_thread(BASE);
    let sizes = SizeTable::pareto(8, 1024, ALPHA, 0xA11C);
    let mut total = Ledger::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                let sizes = &sizes;
                s.spawn(move || {
                    p.pin_worker(i);
                    let mut rng = Rng::new(0xA11C_0000 + i as u64);
                    let mut ledger = Ledger::default();
                    let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
                    for _ in 0..steps {
                        let k = rng.below(SLOTS);
                        if let Some(b) = slots[k].take() {
                            // SAFETY: every block comes from `a`.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                        let b = Block::alloc(a, sizes.sample(&mut rng), 8, rng.next_u64());
                        ledger.on_alloc(&b);
                        slots[k] = Some(b);
                    }
                    for b in slots.into_iter().flatten() {
                        // SAFETY: as above.
                        ledger.on_free(unsafe { b.free(a) });
                    }
                    ledger
                })
            })
            .collect();
        for h in handles {
            total.merge(h.join().expect("alloc-test worker panicked"));
        }
    });
    total.finish("alloc-test")
}
