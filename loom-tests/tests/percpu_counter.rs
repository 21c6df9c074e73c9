//! The percpu counter's fold: adds on per-CPU deltas folded into the global count
//! past a batch, against exact sums. No sum sees a delta in both places or in
//! neither, and once the adders are done the exact sum is the total added.
#![cfg(loom)]

use std::cell::Cell;

use cpuslab::percpu::CounterFold;
use cpuslab::sync::atomic::{AtomicI64, Ordering};
use cpuslab_loom_tests::model;
use loom::sync::Arc;
use loom::thread;

const BATCH: i64 = 2;
const ADDS: i64 = 3;

/// A counter as `PercpuCounter` keeps one, with an array of two CPUs' deltas in
/// place of its percpu area.
struct Counter {
    fold: CounterFold,
    deltas: [AtomicI64; 2],
}

impl Counter {
    fn sum(&self) -> i64 {
        self.fold.sum(self.deltas.iter())
    }
}

#[test]
fn folds_race_adds_and_sums_and_lose_nothing() {
    model(|| {
        let c = Arc::new(Counter {
            fold: CounterFold::new(0),
            deltas: [AtomicI64::new(0), AtomicI64::new(0)],
        });
        // A thread that stays on CPU 0.
        let steady = {
            let c = c.clone();
            thread::spawn(move || {
                for _ in 0..ADDS {
                    c.fold.add(|| &c.deltas[0], 1, BATCH);
                }
            })
        };
        // A thread that migrates between every look at its CPU: it adds to one
        // delta and folds the other.
        let migrating = {
            let c = c.clone();
            thread::spawn(move || {
                let cpu = Cell::new(1);
                let this_cpu = || {
                    let now = cpu.get();
                    cpu.set(now ^ 1);
                    &c.deltas[now]
                };
                for _ in 0..ADDS {
                    c.fold.add(this_cpu, 1, BATCH);
                }
            })
        };
        // Exact sums while they add: the count only grows, so neither may go back.
        let first = c.sum();
        let second = c.sum();
        assert!(
            (0..=2 * ADDS).contains(&first) && first <= second && second <= 2 * ADDS,
            "sums {first} then {second} while adding {} in all",
            2 * ADDS
        );
        steady.join().unwrap();
        migrating.join().unwrap();
        assert_eq!(c.sum(), 2 * ADDS, "the exact sum lost or doubled a delta");
        let deltas: i64 = c.deltas.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        assert_eq!(c.fold.read() + deltas, 2 * ADDS);
    });
}
