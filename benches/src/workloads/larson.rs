//! `larson` and `larson-sized`: the server-churn benchmark after Larson and
//! Krishnan's description ("Memory allocation for long-running server
//! applications", ISMM 1998).
//!
//! Each of `threads` lineages owns an array of live blocks. A lineage's
//! thread repeatedly frees a random block and allocates a new one of random
//! size in its place; after its share of operations it spawns a successor
//! thread, hands it the array, and exits. The successor therefore frees
//! blocks another thread allocated (the first generation frees blocks the
//! main thread allocated), while the other lineages keep running.

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;
use std::sync::Mutex;
use std::thread::Scope;

/// Replacements at scale 1, all threads together.
const BASE: u64 = 16_000_000;
/// Live blocks per lineage.
const SLOTS: usize = 1000;
/// Threads per lineage (each hands its array to the next).
const GENERATIONS: u64 = 20;

/// Common size classes for `larson-sized`.
const CLASSES: &[usize] = &[16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024];

#[derive(Clone, Copy)]
enum Sizes {
    /// Uniform in `16..=1000`.
    Uniform,
    /// One of [`CLASSES`].
    Classes,
}

impl Sizes {
    #[inline]
    fn pick(self, rng: &mut Rng) -> usize {
        match self {
            Sizes::Uniform => rng.range(16, 1000),
            Sizes::Classes => CLASSES[rng.below(CLASSES.len())],
        }
    }
}

/// Classic larson: random sizes in 16..=1000 B.
pub fn larson<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, Sizes::Uniform, "larson")
}

/// C's "sized" larson variant passes the size to `free`; Rust's `dealloc`
/// always gets the exact layout, so that distinction does not exist here.
/// Instead this variant requests only exact common size classes, so every
/// request maps to a class without rounding: it isolates the per-class fast
/// path from size-to-class computation and internal fragmentation.
pub fn larson_sized<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, Sizes::Classes, "larson-sized")
}

struct Lineage {
    blocks: Vec<Block>,
    rng: Rng,
    ledger: Ledger,
}

fn run<A: GlobalAlloc + Sync>(a: &A, p: &Params, sizes: Sizes, name: &str) -> Outcome {
    let ops = (p.per_thread(BASE) / GENERATIONS).max(1);
    let done = Mutex::new(Vec::new());
    let lineages: Vec<Lineage> = (0..p.threads)
        .map(|i| {
            let mut rng = Rng::new(0x1A25_0000 + i as u64);
            let mut ledger = Ledger::default();
            let blocks = (0..SLOTS)
                .map(|_| {
                    let b = Block::alloc(a, sizes.pick(&mut rng), 8, rng.next_u64());
                    ledger.on_alloc(&b);
                    b
                })
                .collect();
            Lineage {
                blocks,
                rng,
                ledger,
            }
        })
        .collect();
    std::thread::scope(|s| {
        for (i, l) in lineages.into_iter().enumerate() {
            let done = &done;
            s.spawn(move || generation(s, a, p, sizes, ops, i, 0, l, done));
        }
    });
    let mut total = Ledger::default();
    for mut l in done.into_inner().expect("a larson thread panicked") {
        for b in l.blocks.drain(..) {
            // SAFETY: every block came from `a`.
            l.ledger.on_free(unsafe { b.free(a) });
        }
        total.merge(l.ledger);
    }
    total.finish(name)
}

#[allow(clippy::too_many_arguments)]
fn generation<'scope, 'env, A: GlobalAlloc + Sync>(
    s: &'scope Scope<'scope, 'env>,
    a: &'env A,
    p: &'env Params,
    sizes: Sizes,
    ops: u64,
    index: usize,
    gen: u64,
    mut l: Lineage,
    done: &'env Mutex<Vec<Lineage>>,
) {
    p.pin_worker(index);
    for _ in 0..ops {
        let k = l.rng.below(l.blocks.len());
        let old = l.blocks.swap_remove(k);
        // SAFETY: every block came from `a`.
        l.ledger.on_free(unsafe { old.free(a) });
        let size = sizes.pick(&mut l.rng);
        let b = Block::alloc(a, size, 8, l.rng.next_u64());
        l.ledger.on_alloc(&b);
        l.blocks.push(b);
    }
    if gen + 1 < GENERATIONS {
        s.spawn(move || generation(s, a, p, sizes, ops, index, gen + 1, l, done));
    } else {
        done.lock().expect("poisoned").push(l);
    }
}
