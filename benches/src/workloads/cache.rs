//! `cache-scratch` and `cache-thrash`: false-sharing tests after the
//! descriptions in the Hoard paper (Berger et al., ASPLOS 2000).
//!
//! Both have every thread allocate a small object, write it many times, and
//! free it, over and over. An allocator that places objects used by different
//! threads in the same cache line makes those writes ping-pong the line
//! between cores.
//! * thrash (active false sharing): each thread allocates its own objects;
//!   the allocator itself may hand neighbouring objects to different threads;
//! * scratch (passive false sharing): the main thread allocates one object
//!   per worker, back to back, and hands them out; each worker writes and
//!   frees its object and goes on allocating. An allocator that recycles the
//!   freed neighbour for that worker keeps the false sharing alive.

use super::{Ledger, Outcome, Params};
use crate::{Block, Rng};
use core::alloc::GlobalAlloc;
use core::ptr;

/// Object size, as in the classic runs.
const OBJECT: usize = 8;
/// Alloc/write/free iterations at scale 1, all threads together.
const BASE: u64 = 250_000;
/// Writes per object per iteration (not scaled: it sets the ratio of
/// writing to allocating, which is what the benchmark is about).
const WRITES: u64 = 10_000;

/// Checks the block's pattern, writes `WRITES` values to the object's word, checks the last one stuck,
/// and restores the block's pattern. Volatile so the writes happen.
fn hammer(b: &mut Block, seed: u64) -> u64 {
    b.verify("before the writes");
    let w = b.as_ptr().cast::<u64>();
    for r in 0..WRITES {
        // SAFETY: the block owns 8 bytes, aligned to 8.
        unsafe { ptr::write_volatile(w, seed.wrapping_add(r)) };
    }
    let last = seed.wrapping_add(WRITES - 1);
    // SAFETY: as above.
    let got = unsafe { ptr::read_volatile(w) };
    assert_eq!(got, last, "object {w:p} was written by someone else");
    b.refill();
    last
}

fn worker<A: GlobalAlloc>(a: &A, iters: u64, index: usize, first: Option<Block>) -> (Ledger, u64) {
    let mut rng = Rng::new(0xCAC4_E000 + index as u64);
    let mut ledger = Ledger::default();
    let mut sum = 0u64;
    if let Some(mut b) = first {
        sum = sum.wrapping_add(hammer(&mut b, rng.next_u64()));
        // SAFETY: allocated from `a` by the main thread.
        ledger.on_free(unsafe { b.free(a) });
    }
    for _ in 0..iters {
        let mut b = Block::alloc(a, OBJECT, 8, rng.next_u64());
        ledger.on_alloc(&b);
        sum = sum.wrapping_add(hammer(&mut b, rng.next_u64()));
        // SAFETY: allocated from `a` above.
        ledger.on_free(unsafe { b.free(a) });
    }
    (ledger, sum)
}

fn run<A: GlobalAlloc + Sync>(a: &A, p: &Params, passive: bool, name: &str) -> Outcome {
    let iters = p.per_thread(BASE);
    let mut total = Ledger::default();
    let mut sum = 0u64;
    let mut rng = Rng::new(0x5C2A_7C00);
    let firsts: Vec<Option<Block>> = (0..p.threads)
        .map(|_| {
            passive.then(|| {
                let b = Block::alloc(a, OBJECT, 8, rng.next_u64());
                total.on_alloc(&b);
                b
            })
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = firsts
            .into_iter()
            .enumerate()
            .map(|(i, first)| {
                s.spawn(move || {
                    p.pin_worker(i);
                    worker(a, iters, i, first)
                })
            })
            .collect();
        for h in handles {
            let (l, s) = h.join().expect("worker panicked");
            total.merge(l);
            sum = sum.wrapping_add(s);
        }
    });
    let mut out = total.finish(name);
    out.checksum ^= sum;
    out
}

/// Passive false sharing (objects allocated by main, handed to workers).
pub fn cache_scratch<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, true, "cache-scratch")
}

/// Active false sharing (each worker allocates its own objects).
pub fn cache_thrash<A: GlobalAlloc + Sync>(a: &A, p: &Params) -> Outcome {
    run(a, p, false, "cache-thrash")
}
