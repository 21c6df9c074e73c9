//! `mstress`: a stress test after the description of mimalloc's test-stress.
//!
//! Runs in phases; each phase creates `threads` fresh threads and joins them.
//! Every thread mixes short-lived blocks (freed within the phase), long-lived
//! ones (retained and inherited by a *different* thread of the next phase,
//! which frees half of them), reallocs, and swaps blocks with a shared array
//! of transfer slots so that blocks wander between threads. Sizes are mostly
//! small with a tail up to 256 KiB.
//!
//! The transfer slots are pre-filled, so a swap always yields a block: every
//! thread's sequence of requests is independent of timing and the checksum
//! is deterministic.

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;
use std::sync::Mutex;

/// Steps at scale 1, all threads and phases together.
const BASE: u64 = 5_000_000;
/// Threads are created and destroyed this many times.
const PHASES: u64 = 10;
/// Shared transfer slots.
const TRANSFER: usize = 1000;

fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=799 => rng.range(16, 128),
        800..=979 => rng.range(129, 2048),
        980..=998 => rng.range(2049, 32 << 10),
        _ => rng.range((32 << 10) + 1, 256 << 10),
    }
}

struct Worker<'a, A: GlobalAlloc> {
    a: &'a A,
    rng: Rng,
    ledger: Ledger,
    local: Vec<Block>,
    retained: Vec<Block>,
}

impl<A: GlobalAlloc> Worker<'_, A> {
    fn alloc(&mut self) -> Block {
        let b = Block::alloc(self.a, size(&mut self.rng), 16, self.rng.next_u64());
        self.ledger.on_alloc(&b);
        b
    }

    fn free(&mut self, b: Block) {
        // SAFETY: every block in the workload comes from `a`.
        self.ledger.on_free(unsafe { b.free(self.a) });
    }

    fn take_random_local(&mut self) -> Option<Block> {
        if self.local.is_empty() {
            // Keep the stream aligned with the non-empty case.
            self.rng.next_u64();
            return None;
        }
        let k = self.rng.below(self.local.len());
        Some(self.local.swap_remove(k))
    }

    fn step(&mut self, slots: &[Mutex<Option<Block>>]) {
        match self.rng.below(100) {
            0..=44 => {
                let b = self.alloc();
                self.local.push(b);
            }
            45..=74 => {
                if let Some(b) = self.take_random_local() {
                    self.free(b);
                }
            }
            75..=84 => {
                let slot = self.rng.below(slots.len());
                if let Some(b) = self.take_random_local() {
                    let mut g = slots[slot].lock().expect("poisoned");
                    let other = g.replace(b).expect("transfer slot was empty");
                    drop(g);
                    self.local.push(other);
                }
            }
            85..=91 => {
                let new_size = size(&mut self.rng);
                let tag = self.rng.next_u64();
                if let Some(b) = self.take_random_local() {
                    // SAFETY: the block comes from `a`.
                    let (old, nb) = unsafe { b.realloc(self.a, new_size, tag) };
                    self.ledger.on_free(old);
                    self.ledger.on_alloc(&nb);
                    self.local.push(nb);
                }
            }
            _ => {
                if let Some(b) = self.take_random_local() {
                    self.retained.push(b);
                }
            }
        }
    }
}

/// Runs the phases; see the module docs.
pub fn mstress<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let steps = (p.per_thread(BASE) / PHASES).max(1);
    let mut total = Ledger::default();
    let mut rng = Rng::new(0x357E_5500);
    let slots: Vec<Mutex<Option<Block>>> = (0..TRANSFER)
        .map(|_| {
            let b = Block::alloc(a, rng.range(16, 256), 16, rng.next_u64());
            total.on_alloc(&b);
            Mutex::new(Some(b))
        })
        .collect();
    let mut inherited: Vec<Vec<Block>> = (0..p.threads).map(|_| Vec::new()).collect();
    for phase in 0..PHASES {
        let slots = &slots;
        inherited = std::thread::scope(|s| {
            let handles: Vec<_> = inherited
                .into_iter()
                .enumerate()
                .map(|(i, mut inherited)| {
                    s.spawn(move || {
                        p.pin_worker(i);
                        let mut w = Worker {
                            a,
                            rng: Rng::new(0x357E_0000 ^ (phase << 16) ^ i as u64),
                            ledger: Ledger::default(),
                            local: Vec::new(),
                            retained: Vec::new(),
                        };
                        // Long-lived blocks from another thread: free half.
                        for b in inherited.drain(..) {
                            if w.rng.below(2) == 0 {
                                w.free(b);
                            } else {
                                w.retained.push(b);
                            }
                        }
                        for _ in 0..steps {
                            w.step(slots);
                        }
                        for b in std::mem::take(&mut w.local) {
                            w.free(b);
                        }
                        (w.ledger, w.retained)
                    })
                })
                .collect();
            let mut results: Vec<Vec<Block>> = Vec::with_capacity(handles.len());
            for h in handles {
                let (l, r) = h.join().expect("mstress worker panicked");
                total.merge(l);
                results.push(r);
            }
            // Thread i of the next phase inherits from thread i + 1 of this one.
            results.rotate_left(1);
            results
        });
    }
    for b in inherited.into_iter().flatten() {
        // SAFETY: from `a`.
        total.on_free(unsafe { b.free(a) });
    }
    for m in slots {
        let b = m.into_inner().expect("poisoned").expect("slot empty");
        // SAFETY: from `a`.
        total.on_free(unsafe { b.free(a) });
    }
    total.finish("mstress")
}
