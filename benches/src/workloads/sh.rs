//! `sh6bench` and `sh8bench`: after the descriptions of MicroQuill's
//! SmartHeap benchmarks. Each iteration allocates a batch of blocks with
//! sizes stepping through 1..1000 B and frees it in LIFO order; then
//! allocates another batch, frees its first half in allocation (FIFO) order,
//! allocates half a batch again and frees everything in reverse order.
//! In `sh8bench` the FIFO half goes to the next thread, which frees it at
//! the start of its next iteration (cross-thread frees), unless that thread
//! already has [`INBOX_MAX`] blocks waiting: then this thread frees the half
//! itself. Unbounded, a thread that ran ahead piled up batches in its
//! successor's inbox, and the peak RSS of one build varied from 16 to 346 MiB
//! between runs with whatever allocator (live memory at the peak 125-233 MiB).

use super::{Ledger, Outcome, Params};
use crate::Block;
use core::alloc::GlobalAlloc;
use std::sync::Mutex;

/// Iterations at scale 1, all threads together.
const BASE: u64 = 5_000;
/// Blocks per batch.
const BATCH: usize = 1000;
/// Most blocks waiting in a thread's inbox in `sh8bench`: four handed-over halves.
const INBOX_MAX: usize = 2 * BATCH;

struct Sizes {
    next: usize,
}

impl Sizes {
    /// Steps through 1..=1000 by a stride coprime to the range.
    fn pick(&mut self) -> usize {
        self.next = (self.next + 37) % 1000;
        self.next + 1
    }
}

fn run<A: GlobalAlloc + Sync>(a: &A, p: &Params, cross: bool, name: &str) -> Outcome {
    let iters = p.per_thread(BASE);
    let inboxes: Vec<Mutex<Vec<Block>>> = (0..p.threads).map(|_| Mutex::new(Vec::new())).collect();
    let mut total = Ledger::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                let inboxes = &inboxes;
                s.spawn(move || {
                    p.pin_worker(i);
                    let mut ledger = Ledger::default();
                    let mut sizes = Sizes { next: i * 101 };
                    let mut tag = 0x5B00_0000_0000_0000 | ((i as u64) << 40);
                    let mut new_block = |ledger: &mut Ledger| {
                        tag += 1;
                        let b = Block::alloc(a, sizes.pick(), 8, tag);
                        ledger.on_alloc(&b);
                        b
                    };
                    let mut live: Vec<Block> = Vec::with_capacity(BATCH);
                    for _ in 0..iters {
                        if cross {
                            let got = std::mem::take(&mut *inboxes[i].lock().expect("poisoned"));
                            for b in got {
                                // SAFETY: every block comes from `a`.
                                ledger.on_free(unsafe { b.free(a) });
                            }
                        }
                        // Batch freed LIFO.
                        for _ in 0..BATCH {
                            live.push(new_block(&mut ledger));
                        }
                        while let Some(b) = live.pop() {
                            // SAFETY: as above.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                        // Batch whose first half is freed FIFO (or handed on).
                        for _ in 0..BATCH {
                            live.push(new_block(&mut ledger));
                        }
                        let mut first_half: Vec<Block> = live.drain(..BATCH / 2).collect();
                        if cross {
                            let next = &inboxes[(i + 1) % inboxes.len()];
                            let mut inbox = next.lock().expect("poisoned");
                            if inbox.len() < INBOX_MAX {
                                inbox.append(&mut first_half);
                            }
                        }
                        for b in first_half {
                            // SAFETY: as above.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                        for _ in 0..BATCH / 2 {
                            live.push(new_block(&mut ledger));
                        }
                        while let Some(b) = live.pop() {
                            // SAFETY: as above.
                            ledger.on_free(unsafe { b.free(a) });
                        }
                    }
                    ledger
                })
            })
            .collect();
        for h in handles {
            total.merge(h.join().expect("sh worker panicked"));
        }
    });
    for m in inboxes {
        for b in m.into_inner().expect("poisoned") {
            // SAFETY: from `a`.
            total.on_free(unsafe { b.free(a) });
        }
    }
    total.finish(name)
}

/// LIFO and in-order frees on each thread.
pub fn sh6bench<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, false, "sh6bench")
}

/// As `sh6bench`, with the in-order half freed by the next thread.
pub fn sh8bench<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, true, "sh8bench")
}
