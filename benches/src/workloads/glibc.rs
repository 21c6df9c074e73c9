//! `glibc-simple` and `glibc-thread`: after the descriptions of glibc's
//! benchtests `bench-malloc-simple` (tight malloc/free loops over fixed sizes
//! and block counts, single thread) and `bench-malloc-thread` (each thread
//! churns a small working set with random sizes, favouring small ones).

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;

/// Allocations at scale 1 for `glibc-simple`.
const SIMPLE_BASE: u64 = 10_000_000;
const SIMPLE_SIZES: &[usize] = &[16, 32, 64, 128, 256, 512, 1024];
const SIMPLE_COUNTS: &[usize] = &[25, 100, 400, 1600];

/// Replacements at scale 1 for `glibc-thread`, all threads together.
const THREAD_BASE: u64 = 20_000_000;
/// Working-set slots per thread.
const THREAD_SLOTS: usize = 512;

/// For every (size, count): allocate `count` blocks of `size`, then free
/// them in allocation order; repeated so each pair gets an equal share.
pub fn glibc_simple<A: GlobalAlloc>(a: &A, p: &Params) -> Outcome {
    let combos = (SIMPLE_SIZES.len() * SIMPLE_COUNTS.len()) as u64;
    let per_combo = (p.count(SIMPLE_BASE) / combos).max(1);
    let mut ledger = Ledger::default();
    let mut live: Vec<Block> = Vec::with_capacity(*SIMPLE_COUNTS.iter().max().unwrap_or(&1));
    let mut tag = 0x6C1B_C000_0000_0000_u64;
    for &size in SIMPLE_SIZES {
        for &count in SIMPLE_COUNTS {
            let reps = (per_combo / count as u64).max(1);
            for _ in 0..reps {
                for _ in 0..count {
                    tag += 1;
                    let b = Block::alloc(a, size, 8, tag);
                    ledger.on_alloc(&b);
                    live.push(b);
                }
                for b in live.drain(..) {
                    // SAFETY: allocated from `a` above.
                    ledger.on_free(unsafe { b.free(a) });
                }
            }
        }
    }
    ledger.finish("glibc-simple")
}

/// Sizes 1..=1024 with a log-ish spread: pick a power-of-two bound, then a
/// size below it, so small requests dominate.
#[inline]
fn thread_size(rng: &mut Rng) -> usize {
    let bits = rng.range(4, 10);
    rng.range(1, 1 << bits)
}

/// Per-thread random replacement in a small working set.
pub fn glibc_thread<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let steps = p.per_thread(THREAD_BASE);
    let mut total = Ledger::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                s.spawn(move || {
                    p.pin_worker(i);
                    let mut rng = Rng::new(0x6C1B_7000 + i as u64);
                    let mut ledger = Ledger::default();
                    let mut slots: Vec<Option<Block>> = (0..THREAD_SLOTS).map(|_| None).collect();
                    for _ in 0..steps {
                        let k = rng.below(THREAD_SLOTS);
                        if let Some(b) = slots[k].take() {
                            // SAFETY: every block comes from `a`.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                        let b = Block::alloc(a, thread_size(&mut rng), 8, rng.next_u64());
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
            total.merge(h.join().expect("glibc-thread worker panicked"));
        }
    });
    total.finish("glibc-thread")
}
