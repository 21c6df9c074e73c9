//! `xmalloc-test`: producer/consumer, after the description of Lever and
//! Boreham's xmalloc test. Producer threads allocate blocks and pass them in
//! batches to consumer threads, which verify and free them, so every block
//! (and every batch vector) is freed by a thread other than its allocator.

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;
use std::sync::mpsc::sync_channel;

/// Blocks at scale 1, all producers together.
const BASE: u64 = 5_000_000;
/// Blocks per batch handed over.
const BATCH: usize = 64;
/// Batches in flight per producer/consumer pair (bounds memory).
const DEPTH: usize = 16;

/// Runs `max(1, threads / 2)` producer/consumer pairs.
pub fn xmalloc_test<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    let pairs = (p.threads / 2).max(1);
    let per_producer = (p.count(BASE) / pairs as u64).max(1);
    let mut total = Ledger::default();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..pairs {
            let (tx, rx) = sync_channel::<Vec<Block>>(DEPTH);
            let producer = s.spawn(move || {
                p.pin_worker(2 * i);
                let mut rng = Rng::new(0x3A11_0C00 + i as u64);
                let mut ledger = Ledger::default();
                let mut left = per_producer;
                while left > 0 {
                    let n = left.min(BATCH as u64) as usize;
                    left -= n as u64;
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        let b = Block::alloc(a, rng.range(16, 512), 8, rng.next_u64());
                        ledger.on_alloc(&b);
                        batch.push(b);
                    }
                    tx.send(batch).expect("consumer died");
                }
                ledger
            });
            let consumer = s.spawn(move || {
                p.pin_worker(2 * i + 1);
                let mut ledger = Ledger::default();
                for batch in rx {
                    for b in batch {
                        // SAFETY: produced from `a`.
                        ledger.on_free(unsafe { b.free(a) });
                    }
                }
                ledger
            });
            handles.push((producer, consumer));
        }
        for (pr, co) in handles {
            total.merge(pr.join().expect("producer panicked"));
            total.merge(co.join().expect("consumer panicked"));
        }
    });
    total.finish("xmalloc-test")
}
