//! `rptest`: after the description of rpmalloc's benchmark. Each thread keeps
//! a working set of slots; in each loop it first frees the blocks other
//! threads handed it, then replaces random slots with blocks of a realistic
//! size mix (log-uniform 16..16000 B: mostly small, long tail), then hands a
//! few of its live blocks to the next thread, which frees them.

use super::{Ledger, Outcome, Params};
use crate::rng::SizeTable;
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;
use std::sync::Mutex;

/// Slot replacements at scale 1, all threads together.
const BASE: u64 = 9_000_000;
/// Working-set slots per thread.
const SLOTS: usize = 2000;
/// Loops per thread (each: drain inbox, replace, hand over).
const LOOPS: u64 = 200;
/// Slots handed to the next thread per loop.
const CROSS: usize = 32;

/// Runs the benchmark; see the module docs.
pub fn rptest<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let ops = (p.per_thread(BASE) / LOOPS).max(1);
    let sizes = SizeTable::log_uniform(16, 16000, 0x4970);
    let inboxes: Vec<Mutex<Vec<Block>>> = (0..p.threads).map(|_| Mutex::new(Vec::new())).collect();
    let mut total = Ledger::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                let (inboxes, sizes) = (&inboxes, &sizes);
                s.spawn(move || {
                    p.pin_worker(i);
                    let mut rng = Rng::new(0x4970_0000 + i as u64);
                    let mut ledger = Ledger::default();
                    let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
                    let next = &inboxes[(i + 1) % inboxes.len()];
                    for _ in 0..LOOPS {
                        let received = std::mem::take(&mut *inboxes[i].lock().expect("poisoned"));
                        for b in received {
                            // SAFETY: every block comes from `a`.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                        for _ in 0..ops {
                            let k = rng.below(SLOTS);
                            if let Some(b) = slots[k].take() {
                                // SAFETY: as above.
                                ledger.on_free(unsafe { b.free(a) });
                            }
                            let b = Block::alloc(a, sizes.sample(&mut rng), 16, rng.next_u64());
                            ledger.on_alloc(&b);
                            slots[k] = Some(b);
                        }
                        let mut out = Vec::with_capacity(CROSS);
                        for _ in 0..CROSS {
                            if let Some(b) = slots[rng.below(SLOTS)].take() {
                                out.push(b);
                            }
                        }
                        next.lock().expect("poisoned").append(&mut out);
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
            total.merge(h.join().expect("rptest worker panicked"));
        }
    });
    // Blocks handed over after their receiver finished.
    for m in inboxes {
        for b in m.into_inner().expect("poisoned") {
            // SAFETY: from `a`.
            total.on_free(unsafe { b.free(a) });
        }
    }
    total.finish("rptest")
}
